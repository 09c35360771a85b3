"""The fast loop of ``lionk.minimize``: same results, less work per iteration.

* Bitwise: on NumPy (and torch CPU eager) every field of the result, history included, equals
  the output of the implementation before the fast loop (per-step ``lionk.step`` with full
  validation), saved in ``tests/data/minimize_reference.npz`` by ``python
  tests/test_minimize_fast.py --write`` on that implementation; and the iterates equal a plain
  loop of ``lionk.step`` calls (an independent reference, written here).
* JAX: the evaluator is traced once per run (a Python side effect counts the traces), the run
  is one jitted function per chunk of iterations, and the stopping rules fire at the same
  iteration as when checked after every step.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lionk
from lionk.analysis.minimize import minimize

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_JAX = importlib.util.find_spec("jax") is not None
DATA = Path(__file__).resolve().parent / "data" / "minimize_reference.npz"

_rng = np.random.default_rng(11)
A = _rng.standard_normal((30, 10))
B = A @ _rng.uniform(-3.0, 3.0, 10) + 0.3 * _rng.standard_normal(30)


def f_np(x: Any) -> float:
    return 0.5 * float(np.sum((A @ x - B) ** 2))


def g_np(x: Any) -> Any:
    return A.T @ (A @ x - B)


def _nan_f(x: Any) -> float:
    return math.nan if x[0] < 0.9 else float(np.sum(x * x))


def _cases() -> dict[str, Callable[[], dict]]:
    """name -> a function returning minimize's result for that configuration."""
    sign2 = lionk.kappa.get("sign")
    user = lionk.kappa.Kappa(
        "twice-sign-fast",
        grad=lambda y: 2.0 * sign2.grad(y),
        value=lambda y: 2.0 * sign2.value(y),
        conjugate=lambda z: sign2.conjugate(z * 0.5),
        domain_distance=lambda z: sign2.domain_distance(z * 0.5),
    )
    bare = lionk.kappa.Kappa("bare-sign-fast", grad=lionk.kappa.exact_sign)
    z = np.zeros(10)
    c: dict[str, Callable[[], dict]] = {
        "default": lambda: minimize(f_np, z, jac=g_np, radius=1.0, maxiter=400),
        "sign_tol0": lambda: minimize(f_np, z, jac=g_np, radius=0.3, lr=0.01, maxiter=300, tol=0),
        "certified": lambda: minimize(f_np, z, jac=g_np, radius=0.3, maxiter=2000, tol=1e-4),
        "l2": lambda: minimize(f_np, z, jac=g_np, kappa="l2", radius=1.0, maxiter=300),
        "lp": lambda: minimize(f_np, z, jac=g_np, kappa=lionk.kappa.textbook("lp", p=3.0),
                               radius=1.0, maxiter=300),
        "huber": lambda: minimize(f_np, z, jac=g_np, kappa=lionk.kappa.get("huber", delta=0.5),
                                  radius=0.5, maxiter=300),
        "deadzone": lambda: minimize(f_np, z, jac=g_np,
                                     kappa=lionk.kappa.get("deadzone", e=0.5), radius=1.0,
                                     maxiter=300),
        "relativistic": lambda: minimize(f_np, z, jac=g_np,
                                         kappa=lionk.kappa.get("relativistic", delta=0.5),
                                         radius=1.0, maxiter=300),
        "relativistic_l2": lambda: minimize(f_np, z, jac=g_np,
                                            kappa=lionk.kappa.textbook("relativistic-l2", delta=0.5),
                                            radius=1.0, maxiter=300),
        "quadratic": lambda: minimize(f_np, z, jac=g_np, kappa="quadratic", weight_decay=0.5,
                                      lr=0.005, maxiter=300),
        "user_kappa": lambda: minimize(f_np, z, jac=g_np, kappa=user, weight_decay=4.0,
                                       maxiter=300),
        "bare_kappa": lambda: minimize(f_np, z, jac=g_np, kappa=bare, radius=1.0, maxiter=60),
        "bounds": lambda: minimize(
            f_np, z, jac=g_np, radius=5.0, maxiter=400,
            bounds=([-1.0, 0.0, 0.0, -np.inf, -0.2, -3.0, 0.5, -1.0, 0.0, -0.5],
                    [1.0, 0.3, np.inf, 0.0, 0.2, 3.0, 0.6, 1.0, 0.4, 0.5])),
        "float32": lambda: minimize(
            lambda x: 0.5 * float(np.sum((A.astype(np.float32) @ x - B.astype(np.float32)) ** 2)),
            z.astype(np.float32),
            jac=lambda x: A.astype(np.float32).T @ (A.astype(np.float32) @ x - B.astype(np.float32)),
            radius=1.0, maxiter=300),
        "callable_schedule": lambda: minimize(f_np, z, jac=g_np, radius=1.0, maxiter=200,
                                              schedule=lambda k: 0.02 / (1 + k), lr=None),
        "linear_constant": lambda: minimize(f_np, z, jac=g_np, radius=1.0, maxiter=200,
                                            schedule="constant", lr=0.01, tol=0),
        "callback_stop": lambda: minimize(f_np, z, jac=g_np, radius=1.0, maxiter=200,
                                          callback=lambda info: info.nit >= 7),
        "outside": lambda: minimize(f_np, np.full(10, 3.0), jac=g_np, radius=0.3, maxiter=500),
        "nonfinite": lambda: minimize(_nan_f, np.ones(3), jac=lambda x: 2 * x, radius=2.0,
                                      maxiter=100),
        "matrix": lambda: minimize(lambda x: 0.5 * float(np.sum((x - 0.3) ** 2)), np.zeros((3, 4)),
                                   jac=lambda x: x - 0.3, kappa="l2", radius=0.5, maxiter=150),
        "jac_true": lambda: minimize(lambda x: (f_np(x), g_np(x)), z, jac=True, radius=1.0,
                                     maxiter=150, betas=(0.95, 0.98)),
    }
    if HAVE_TORCH:
        import torch

        At, Bt = torch.from_numpy(A), torch.from_numpy(B)

        def f_t(x: Any) -> Any:
            r = At @ x - Bt
            return 0.5 * torch.sum(r * r)

        c["torch64"] = lambda: minimize(f_t, torch.zeros(10, dtype=torch.float64), radius=1.0,
                                        maxiter=300)
        c["torch32"] = lambda: minimize(
            lambda x: 0.5 * torch.sum((At.float() @ x - Bt.float()) ** 2),
            torch.zeros(10, dtype=torch.float32), radius=1.0, maxiter=300)
    return c


SCALARS = ("fun", "F", "success", "certified", "status", "nit", "nfev", "njev", "kkt_residual",
           "gap", "H", "constraint_violation", "radius", "weight_decay", "lr")


def _flatten(res: dict) -> dict[str, np.ndarray]:
    x = res["x"]
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    out = {"x": np.asarray(x)}
    for k in SCALARS:
        out[k] = np.asarray(res[k], dtype=np.float64)
    out["message"] = np.asarray(res["message"])
    for k, v in res["history"].items():
        out[f"history.{k}"] = v
    return out


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "US":
        return bool(np.all(a == b))
    return a.tobytes() == b.tobytes()


def _write() -> None:
    arrays = {}
    for name, run in _cases().items():
        with np.errstate(all="ignore"):
            for k, v in _flatten(run()).items():
                arrays[f"{name}/{k}"] = v
    arrays["platform/probe"] = _probe()
    np.savez(DATA, **arrays)
    print(f"wrote {len(arrays)} arrays to {DATA}")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    if not DATA.exists():
        pytest.skip(f"{DATA} is missing")
    with np.load(DATA) as data:
        return {k: data[k] for k in data.files}


# The reference was recorded on one machine; the objective's matrix products (OpenBLAS, or
# torch's BLAS) and lionk's diagnostics (np.dot, sums) round differently on a CPU whose BLAS
# kernels differ (reproducibility.md: BLAS reductions are not bitwise across machines). The
# probe below (g_np at a fixed point, BLAS only) was recorded with the reference's OpenBLAS
# kernel (``OPENBLAS_CORETYPE=SkylakeX``, which reproduces every NumPy field of the reference on
# an AMD EPYC): where this machine computes it with the same bytes the NumPy cases must match
# bit for bit; elsewhere, and for the torch cases (whose recording platform has no probe), every
# non-float field must still match exactly and every float field to the rounding a different
# summation order explains (measured on AMD EPYC: ≤ 1.4e-10 relative to the field's largest
# value in float64, ≤ 1.1e-4 in float32, where kkt and gap are differences of nearly equal
# numbers).
PROBE_X = np.linspace(-1.0, 1.0, 10)
REL = {np.dtype(np.float64): 1e-8, np.dtype(np.float32): 1e-3}


def _probe() -> np.ndarray:
    return np.asarray(g_np(PROBE_X))


def _close(a: np.ndarray, b: np.ndarray, rel: float) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind not in "fc":
        return _same_bits(a, b)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if not np.array_equal(np.isfinite(a64), np.isfinite(b64)) or not np.array_equal(
            a64[~np.isfinite(a64)], b64[~np.isfinite(b64)], equal_nan=True):
        return False
    fin = np.isfinite(b64)
    if not fin.any():
        return True
    scale = float(np.max(np.abs(b64[fin])))
    return bool(np.all(np.abs(a64[fin] - b64[fin]) <= rel * max(scale, 1e-300)))


@pytest.mark.parametrize("name", list(_cases()))
def test_bitwise_equal_to_the_saved_reference(name: str, reference: dict) -> None:
    """Every field (x, the scalars, the message and each history array) has the bytes of the
    implementation that validated and stepped with ``lionk.step`` at every iteration, on a
    machine whose BLAS rounds as the recording one did (the probe); elsewhere the same fields,
    non-floats exactly and floats to a reordered summation's rounding."""
    if f"{name}/x" not in reference:
        pytest.skip(f"no reference for {name}")
    with np.errstate(all="ignore"):
        got = _flatten(_cases()[name]())
    same_platform = (not name.startswith("torch") and "platform/probe" in reference
                     and _same_bits(_probe(), reference["platform/probe"]))
    rel = REL[got["x"].dtype]  # the run's precision (its scalars are reported as float64)
    for k, v in got.items():
        ref = reference[f"{name}/{k}"]
        ok = _same_bits(v, ref) if same_platform else _close(v, ref, rel)
        assert ok, (name, k, "bitwise" if same_platform else "rounding", v, ref)


if __name__ == "__main__" and "--write" in sys.argv:
    _write()


# ---------------------------------------------------------------------------------------------
# The iterates are those of a plain loop of lionk.step (an independent reference).


def test_iterates_equal_a_plain_loop_of_lionk_step() -> None:
    """minimize's iterates (seen by the callback) are, bit for bit, those of ``lionk.step``
    called with full validation at every step with the same learning rates."""
    seen: list[np.ndarray] = []
    res = minimize(f_np, np.zeros(10), jac=g_np, radius=0.4, maxiter=120, tol=0,
                   callback=lambda info: seen.append(np.array(info.x)))
    lrs = res.history["lr"]
    x = np.zeros(10)
    state = lionk.init(x)
    for k in range(res.nit):
        x, state = lionk.step(x, g_np(x), state, lr=float(lrs[k]), betas=(0.9, 0.99),
                              weight_decay=1.0 / 0.4, kappa="sign")
        assert x.tobytes() == seen[k].tobytes(), k
    assert x.tobytes() == res.x.tobytes()


def test_a_jac_returning_x_itself_is_accepted() -> None:
    """The step is pure (nothing is written in place), so a gradient that is x itself is fine
    (the per-step validation of lionk.step refused it as aliasing)."""
    res = minimize(lambda x: 0.5 * float(x @ x), np.ones(3), jac=lambda x: x, radius=2.0,
                   maxiter=50, tol=0)
    assert res.nit == 50 and np.all(np.abs(res.x) < 1.0)


def test_bad_dtype_is_still_refused_once() -> None:
    with pytest.raises(TypeError, match="x0"):
        minimize(f_np, np.zeros(10, dtype=np.int64), jac=g_np, radius=1.0)


# ---------------------------------------------------------------------------------------------
# JAX: one trace, one jitted chunk of iterations per call, exact stopping iteration.


def _jax_problem() -> tuple[Any, Any, list[int]]:
    import jax.numpy as jnp

    Aj, Bj = jnp.asarray(A), jnp.asarray(B)
    traces = [0]

    def f(x: Any) -> Any:
        traces[0] += 1  # a Python side effect: runs once per trace, never per jitted call
        r = Aj @ x - Bj
        return 0.5 * jnp.sum(r * r)
    return f, jnp, traces


@pytest.mark.skipif(not HAVE_JAX, reason="jax is not installed")
def test_jax_evaluator_is_traced_once_per_run() -> None:
    f, jnp, traces = _jax_problem()
    res = minimize(f, jnp.zeros(10), radius=1.0, maxiter=300, tol=0)  # 5 chunks of 64
    assert res.nit == 300 and traces[0] == 1  # x0, the default lr's search and the chunks
    res = minimize(f, jnp.zeros(10), radius=1.0, lr=0.01, maxiter=300, tol=0)
    assert res.nit == 300 and res.nfev == 301
    assert traces[0] == 1
    res2 = minimize(f, jnp.zeros(10), radius=1.0, lr=0.01, maxiter=300, tol=0)  # reuses the executable
    assert traces[0] == 1
    assert res2.x.tobytes() == res.x.tobytes()


@pytest.mark.skipif(not HAVE_JAX, reason="jax is not installed")
def test_jax_run_matches_numpy_and_keeps_x0() -> None:
    """The jitted iteration is in the ulp tier (XLA may contract a·b + c): the same run as
    NumPy's to rounding, the same stopping iteration; x0 is not donated."""
    f, jnp, _ = _jax_problem()
    x0 = jnp.zeros(10)
    res = minimize(f, x0, radius=0.3, maxiter=2000, tol=1e-4)
    ref = minimize(f_np, np.zeros(10), jac=g_np, radius=0.3, maxiter=2000, tol=1e-4)
    assert res.status == ref.status == 0 and res.certified
    assert abs(res.nit - ref.nit) <= 2
    assert res.fun == pytest.approx(ref.fun, rel=1e-9)
    np.testing.assert_allclose(np.asarray(res.x), ref.x, rtol=0, atol=1e-9)
    for key in ("F", "H", "gap", "violation", "x_norm", "step_norm"):
        n = min(res.nit, ref.nit) + 1
        np.testing.assert_allclose(res.history[key][1:n], ref.history[key][1:n], rtol=1e-6,
                                   atol=1e-9, err_msg=key)
    assert len(res.history["F"]) == res.nit + 1
    assert bool(jnp.all(x0 == 0))  # the user's array is untouched (and not deleted)


@pytest.mark.skipif(not HAVE_JAX, reason="jax is not installed")
@pytest.mark.parametrize("stop_at", [1, 37, 64, 65, 130])
def test_jax_callback_stops_at_the_exact_iteration(stop_at: int) -> None:
    """A rule that holds in the middle of a chunk stops the run there: nit, x, the history and
    nfev are those of that iteration (the chunk's later iterates are discarded)."""
    f, jnp, _ = _jax_problem()
    seen: list[np.ndarray] = []

    def cb(info: Any) -> bool:
        seen.append(np.asarray(info.x))
        return info.nit >= stop_at

    res = minimize(f, jnp.zeros(10), radius=1.0, lr=0.01, maxiter=500, callback=cb)
    full = minimize(f, jnp.zeros(10), radius=1.0, lr=0.01, maxiter=500, tol=0)
    assert res.status == 2 and res.nit == stop_at == len(seen)
    assert len(res.history["f"]) == stop_at + 1 and res.nfev == stop_at + 1
    assert np.asarray(res.x).tobytes() == seen[-1].tobytes()
    np.testing.assert_array_equal(res.history["f"], full.history["f"][: stop_at + 1])
    # the callback's iterates are the run's
    np.testing.assert_array_equal(np.asarray(res.x), seen[-1])


@pytest.mark.skipif(not HAVE_JAX, reason="jax is not installed")
def test_jax_chunk_size_does_not_change_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checking the rules once per chunk of 64 gives the run of checking them after every
    step (chunks of 1): same stopping iteration, same iterate, same history."""
    import lionk.analysis.minimize as mz

    f, jnp, _ = _jax_problem()
    res = minimize(f, jnp.zeros(10), radius=0.3, maxiter=1000, tol=1e-4)
    monkeypatch.setattr(mz, "_CHUNK", 1)
    one = minimize(f, jnp.zeros(10), radius=0.3, maxiter=1000, tol=1e-4)
    assert res.certified and one.nit == res.nit and one.nfev == res.nfev
    assert np.asarray(one.x).tobytes() == np.asarray(res.x).tobytes()
    for key, v in res.history.items():
        np.testing.assert_array_equal(one.history[key], v, err_msg=key)


@pytest.mark.skipif(not HAVE_JAX, reason="jax is not installed")
def test_jax_bounds_and_non_finite_f_in_a_chunk() -> None:
    import jax.numpy as jnp

    f, _, _ = _jax_problem()
    lo = np.array([-1.0, 0.0, 0.0, -0.5, -0.2, -3.0, 0.5, -1.0, 0.0, -0.5])
    hi = np.array([1.0, 0.3, 0.8, 0.0, 0.2, 3.0, 0.6, 1.0, 0.4, 0.5])
    res = minimize(f, jnp.zeros(10), bounds=(lo, hi), maxiter=800)
    ref = minimize(f_np, np.zeros(10), jac=g_np, bounds=(lo, hi), maxiter=800)
    assert res.status == ref.status and abs(res.fun - ref.fun) <= 1e-9 * abs(ref.fun)
    x = np.asarray(res.x)
    assert np.all((lo <= x) & (x <= hi))

    def g(x: Any) -> Any:  # NaN once x[0] has moved below 0.9: inside the first chunk
        return jnp.where(x[0] < 0.9, jnp.nan, jnp.sum(x * x))

    bad = minimize(g, jnp.ones(3), radius=2.0, lr=0.05, maxiter=100)
    ref_bad = minimize(lambda x: math.nan if x[0] < 0.9 else float(np.sum(x * x)), np.ones(3),
                       jac=lambda x: 2 * x, radius=2.0, lr=0.05, maxiter=100)
    assert bad.status == ref_bad.status == 3 and bad.nit == ref_bad.nit < 64
    assert f"f is not finite at iteration {bad.nit}" in bad.message
    assert len(bad.history["f"]) == bad.nit + 1


@pytest.mark.skipif(not HAVE_JAX, reason="jax is not installed")
def test_jax_untraceable_fun_still_runs_step_by_step() -> None:
    import jax.numpy as jnp

    Aj, Bj = jnp.asarray(A), jnp.asarray(B)

    def untraceable(x: Any) -> Any:  # boolean indexing: a data-dependent shape under jit
        v = x[x == x]
        return 0.5 * jnp.sum((Aj @ v - Bj) ** 2)

    res = minimize(untraceable, jnp.zeros(10), radius=1.0, maxiter=30, tol=0)
    ref = minimize(f_np, np.zeros(10), jac=g_np, radius=1.0, maxiter=30, tol=0)
    assert res.nit == 30 and res.fun == pytest.approx(ref.fun, rel=1e-12)


@pytest.mark.skipif(not HAVE_JAX, reason="jax is not installed")
def test_jax_without_x64_copies_the_iterates_to_the_host() -> None:
    """Without x64 the chunk returns the iterates and the host computes the diagnostics in
    float64 (as before); a subprocess, since x64 is a global, sticky flag."""
    import subprocess

    code = (
        "import numpy as np, jax, jax.numpy as jnp, lionk\n"
        "assert not jax.config.jax_enable_x64\n"
        "rng = np.random.default_rng(11); A = rng.standard_normal((30, 10)).astype(np.float32)\n"
        "b = (A @ rng.uniform(-3, 3, 10)).astype(np.float32)\n"
        "n = [0]\n"
        "def f(x):\n"
        "    n[0] += 1\n"
        "    return 0.5 * jnp.sum((jnp.asarray(A) @ x - jnp.asarray(b)) ** 2)\n"
        "res = lionk.minimize(f, jnp.zeros(10), radius=1.0, maxiter=300)\n"
        "ref = lionk.minimize(lambda x: 0.5 * float(np.sum((A @ x - b) ** 2)),\n"
        "                     np.zeros(10, np.float32), jac=lambda x: A.T @ (A @ x - b),\n"
        "                     radius=1.0, maxiter=300)\n"
        "assert n[0] == 1, n\n"
        "assert res.x.dtype == jnp.float32 and res.nit == ref.nit, (res.nit, ref.nit)\n"
        "assert abs(res.fun - ref.fun) <= 1e-5 * abs(ref.fun), (res.fun, ref.fun)\n"
        "print('ok')\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=root, env={**__import__("os").environ, "JAX_ENABLE_X64": "0",
                                        "PYTHONPATH": str(root)})
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_gradient_checks_run_at_every_step_not_only_the_first() -> None:
    """Validation once per run covers what cannot change; the gradient is checked after every
    evaluation (shape, library, dtype), so a jac that goes wrong later is still refused."""
    calls = [0]

    def jac(x: Any) -> Any:
        calls[0] += 1
        return g_np(x) if calls[0] < 5 else g_np(x)[:5]

    with pytest.raises(ValueError, match=r"jac: expected the gradient to have shape \(10,\)"):
        minimize(f_np, np.zeros(10), jac=jac, radius=1.0, lr=0.01, maxiter=50)
    calls[0] = 0

    def jac32(x: Any) -> Any:  # another dtype later: converted to x's dtype, as before
        calls[0] += 1
        return g_np(x) if calls[0] < 5 else g_np(x).astype(np.float32)

    res = minimize(f_np, np.zeros(10), jac=jac32, radius=1.0, lr=0.01, maxiter=20, tol=0)
    assert res.x.dtype == np.float64 and res.nit == 20


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_torch_gradient_on_another_device_is_refused() -> None:
    import torch

    meta = torch.zeros(10, dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match=r"jac: expected the gradient on x0's device cpu"):
        minimize(lambda x: float(torch.sum(x * x)), torch.zeros(10, dtype=torch.float64),
                 jac=lambda x: meta, radius=1.0, lr=0.01, maxiter=5)


@pytest.mark.skipif(not HAVE_JAX, reason="jax is not installed")
@pytest.mark.parametrize("stop", [False, True])
def test_jax_run_leaves_the_warning_filters_as_they_were(stop: bool) -> None:
    import warnings

    f, jnp, _ = _jax_problem()
    before = list(warnings.filters)
    minimize(f, jnp.zeros(10), radius=1.0, lr=0.01, maxiter=100,
             callback=(lambda info: info.nit >= 10) if stop else None)
    assert warnings.filters == before


def test_inputs_are_validated_once_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The full check of x, ∇f and m (``core.step.check_trees``, what ``lionk.step`` runs at
    every call) runs once per run; lionk.step itself is not called by the loop."""
    import lionk.analysis.minimize as mz
    import lionk.core.step as core_step

    calls = {"check_trees": 0, "step": 0}
    real_check, real_step = mz._check_trees, core_step.step

    def counting_check(*a: Any, **k: Any) -> Any:
        calls["check_trees"] += 1
        return real_check(*a, **k)

    def counting_step(*a: Any, **k: Any) -> Any:  # pragma: no cover - must not run
        calls["step"] += 1
        return real_step(*a, **k)

    monkeypatch.setattr(mz, "_check_trees", counting_check)
    monkeypatch.setattr(core_step, "step", counting_step)
    monkeypatch.setattr(lionk, "step", counting_step)
    res = minimize(f_np, np.zeros(10), jac=g_np, radius=1.0, lr=0.01, maxiter=200, tol=0)
    assert res.nit == 200 and calls == {"check_trees": 1, "step": 0}


@pytest.mark.skipif(not HAVE_JAX, reason="jax is not installed")
def test_jax_run_is_one_jitted_call_per_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    import lionk.analysis.minimize as mz

    f, jnp, traces = _jax_problem()
    calls = [0]
    real = mz._jax_chunk

    def counting(*a: Any, **k: Any) -> Any:
        jitted = real(*a, **k)

        def call(*args: Any) -> Any:
            calls[0] += 1
            return jitted(*args)
        return call

    monkeypatch.setattr(mz, "_jax_chunk", counting)
    res = minimize(f, jnp.zeros(10), radius=1.0, lr=0.01, maxiter=300, tol=0)
    assert res.nit == 300 and calls[0] == math.ceil(300 / mz._CHUNK) and traces[0] == 1
