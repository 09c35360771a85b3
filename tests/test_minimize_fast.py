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
from pathlib import Path
from typing import Any, Callable

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
        "lp": lambda: minimize(f_np, z, jac=g_np, kappa=lionk.kappa.get("lp", p=3.0),
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
                                            kappa=lionk.kappa.get("relativistic-l2", delta=0.5),
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
    np.savez(DATA, **arrays)
    print(f"wrote {len(arrays)} arrays to {DATA}")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    if not DATA.exists():
        pytest.skip(f"{DATA} is missing")
    with np.load(DATA) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("name", list(_cases()))
def test_bitwise_equal_to_the_saved_reference(name: str, reference: dict) -> None:
    """Every field (x, the scalars, the message and each history array) has the bytes of the
    implementation that validated and stepped with ``lionk.step`` at every iteration."""
    if f"{name}/x" not in reference:
        pytest.skip(f"no reference for {name}")
    with np.errstate(all="ignore"):
        got = _flatten(_cases()[name]())
    for k, v in got.items():
        ref = reference[f"{name}/{k}"]
        assert _same_bits(v, ref), (name, k, v, ref)


if __name__ == "__main__" and "--write" in sys.argv:
    _write()
