"""NumPy's fused kernel on numba: generated Python scalar code, bitwise equal to eager NumPy.

The kernel (lionk.execution.kernels.numba_kernel) is the recorded step written as Python scalar
code and compiled by numba with ``fastmath=False`` (no ``a*b + c`` contraction) and
``error_model="numpy"``, run by one or more threads on pieces of the leaves (``nogil``). These
tests compare it with eager ``update_leaves`` on data holding NaN, ±inf, ±0 and subnormals, check
that the data would expose an FMA, and check the path choice of ``LionK`` with and without numba.
"""

from __future__ import annotations

import numpy as np
import pytest

import lionk
from lionk import kappa as K
from lionk.core.step import make_hyper, update_leaves
from lionk.execution import kernels as _kernel
from lionk.execution import paths as _paths

from ._util import bits, textbook

pytest.importorskip("numba")

# run in their textbook forms: elementwise (the defaults of the others measure RMS(y) per array)
SEPARABLE = ["sign", "huber", "deadzone", "quadratic", "relativistic"]
H = make_hyper(1e-3, (0.9, 0.99), 0.1)


def _data(n, dtype, seed, mdtype=None):
    rng = np.random.default_rng(seed)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 0.1, -0.1, 1.0,
                        5e-324, 1e-45])
    out = []
    for k in range(3):
        v = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 3, size=n)
        v[rng.integers(0, n, size=n // 10)] = rng.choice(special, size=n // 10)
        with np.errstate(all="ignore"):
            out.append(v.astype(mdtype if (k == 2 and mdtype) else dtype))
    return out


def _eager(x, g, m, h, kap):
    with np.errstate(all="ignore"):
        (ex,), (em,) = update_leaves([x.copy()], [g.copy()], [m.copy()], h, kap)
    return np.asarray(ex), np.asarray(em)


@pytest.mark.parametrize("kappa", SEPARABLE)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_numba_kernel_is_the_eager_step_bit_for_bit(kappa, dtype) -> None:
    kap = textbook(kappa)
    kernel, why = _kernel.numba_kernel(update_leaves, H, kap, dtype, dtype)
    assert kernel is not None, why
    for h in (H, make_hyper(3e-2, (0.5, 0.999), 0.0)):  # one build, any coefficients
        x, g, m = _data(50_000, dtype, seed=len(kappa))
        ex, em = _eager(x, g, m, h, kap)
        with np.errstate(all="ignore"):
            kernel(x, g, m, h)
        assert np.array_equal(bits(x), bits(ex))
        assert np.array_equal(bits(m), bits(em))


def test_the_data_would_expose_a_contracted_multiply_add() -> None:
    """``(1 - lr*wd)*x - lr*u`` and ``b2*m + (1 - b2)*g`` rounded once (FMA) differ from two
    roundings on many of these float32 elements, so the bitwise test above would catch a kernel
    whose multiply-adds were contracted."""
    x, g, m = (np.nan_to_num(a, nan=0.5, posinf=2.0, neginf=-2.0) for a in _data(20_000, "float32", 1))
    b2 = np.float32(H.b2)
    c2 = np.float32(H.one_minus_b2)
    two = (b2 * m) + (c2 * g)  # float32, two roundings
    once = (np.float64(b2) * m.astype(np.float64) + (c2 * g).astype(np.float64)).astype(np.float32)
    assert np.mean(bits(two) != bits(once)) > 0.01
    kernel, _ = _kernel.numba_kernel(update_leaves, H, K.resolve("sign"), "float32", "float32")
    ex, em = _eager(x, g, m, H, K.resolve("sign"))
    kernel(x, g, m, H)
    assert np.array_equal(bits(m), bits(em)) and np.array_equal(bits(x), bits(ex))


def test_the_generated_module_is_plain_python_without_fast_math() -> None:
    source = _kernel.kernel_source(update_leaves, H, textbook("deadzone"), "float32", "float32",
                                   dialect="python")
    module = _kernel.numba_module_source(source)
    assert "fastmath=False" in module and "error_model='numpy'" in module
    assert "cache=True" in module and "nogil=True" in module
    assert "fma" not in module
    for name in _kernel.COEFFICIENTS:  # coefficients: arguments rounded once to float32
        assert f"np.float32(c_{name})" in source.body
    assert "0.9" not in source.body  # no coefficient baked in as a constant
    assert "np.float32(0.10000000149011612)" in source.body  # deadzone's e, as NumPy rounds it


def test_mixed_float32_params_and_float64_momentum() -> None:
    kap = textbook("huber")
    kernel, why = _kernel.numba_kernel(update_leaves, H, kap, "float32", "float64")
    assert kernel is not None, why
    x, g, m = _data(10_000, "float32", 4, mdtype="float64")
    ex, em = _eager(x, g, m, H, kap)
    kernel(x, g, m, H)
    assert m.dtype == np.float64
    assert np.array_equal(bits(x), bits(ex)) and np.array_equal(bits(m), bits(em))


@pytest.mark.parametrize("dtype,mdtype", [("float16", "float16"), ("float32", "float16")])
def test_no_numba_kernel_for_half_precision(dtype, mdtype) -> None:
    kernel, why = _kernel.numba_kernel(update_leaves, H, K.resolve("sign"), dtype, mdtype)
    assert kernel is None and "float32 and float64 only" in why


def test_a_kernel_that_differs_on_the_probes_is_refused(monkeypatch, request) -> None:
    real = _kernel._PythonDialect.expression

    def wrong(self, fn, args, out_dtype):  # subtract becomes add
        return real(self, np.add if fn is np.subtract else fn, args, out_dtype)

    monkeypatch.setattr(_kernel._PythonDialect, "expression", wrong)
    for cache in (_kernel._CACHE, _kernel._NUMBA_BUILT, _kernel._CHECKED, _paths._NUMBA_READY):
        cache.clear()
        request.addfinalizer(cache.clear)
    kernel, why = _kernel.numba_kernel(update_leaves, H, K.resolve("sign"), "float32", "float32")
    assert kernel is None and "differ from the eager step" in why
    # auto falls back (bitwise, chunked or eager) and says why; compiled refuses, writes nothing
    x = np.linspace(-1, 1, 1 << 16, dtype=np.float32)
    ref = x.copy()
    opt = lionk.LionK(x, lr=1e-3, weight_decay=0.1)
    opt.step(np.cos(ref * 3))
    lionk.LionK(ref, lr=1e-3, weight_decay=0.1, execution="eager").step(np.cos(ref * 3))
    assert opt.last_execution != "compiled" and np.array_equal(bits(x), bits(ref))
    assert "differ from the eager step" in opt.execution_report()["fallbacks"][0]
    y = np.zeros(100, np.float32)
    with pytest.raises(ValueError, match="differ from the eager step"):
        lionk.LionK(y, lr=1e-3, execution="compiled").step(np.ones_like(y))
    assert not y.any()


# ---------------------------------------------------------------------------------------------
# LionK on NumPy arrays: "compiled" is the numba kernel; "auto" uses it where it applies.


def _leaves(dtype, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(200_000,), (37, 29), (), (0,), (70_000,), (5,)]  # 2 threads: a span boundary
    # falls inside the first leaf
    xs = {f"p{i}": rng.uniform(-1.5, 1.5, size=s).astype(dtype) for i, s in enumerate(shapes)}
    a = {k: rng.uniform(-1, 1, size=v.shape).astype(dtype) for k, v in xs.items()}
    return xs, a


def _train(execution, kappa, dtype, steps=6, lrs=None, **kw):
    xs, a = _leaves(dtype)
    opt = lionk.LionK(xs, lr=0.01, weight_decay=0.5, kappa=kappa, execution=execution, **kw)
    for t in range(steps):
        if lrs is not None:
            opt.lr = lrs[t]
        opt.step({k: ((x * x) * x - x) + a[k] for k, x in xs.items()})
    return xs, opt


@pytest.mark.parametrize("kappa", SEPARABLE)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_compiled_is_bitwise_equal_to_eager(kappa, dtype) -> None:
    ref, ref_opt = _train("eager", textbook(kappa), dtype)
    got, opt = _train("compiled", textbook(kappa), dtype, threads=2)
    assert opt.last_execution == "compiled"
    assert opt.execution_report()["detail"] == "numba kernel"
    for k in ref:
        assert np.array_equal(bits(ref[k]), bits(got[k])), k
        assert np.array_equal(bits(ref_opt.state.momentum[k]), bits(opt.state.momentum[k])), k


def test_auto_runs_the_numba_kernel_from_its_threshold_on() -> None:
    n = _paths.NUMPY_KERNEL_MIN_ELEMENTS
    x = np.linspace(-1, 1, n, dtype=np.float32)
    opt = lionk.LionK(x, lr=1e-3)
    opt.step(np.ones_like(x))
    assert opt.last_execution == "compiled"
    assert opt.execution_report() == {"requested": "auto", "path": "compiled",
                                      "detail": "numba kernel", "fallbacks": [], "steps": 1}
    small = np.zeros(n // 2, np.float32)
    opt = lionk.LionK(small, lr=1e-3)
    opt.step(np.ones_like(small))
    assert opt.last_execution == "eager"


def test_auto_without_numba_still_runs_chunked_and_says_why(monkeypatch) -> None:
    monkeypatch.setattr(_kernel, "numba_available", lambda: False)
    ref, _ = _train("eager", "sign", "float32", steps=3)
    got, opt = _train("auto", "sign", "float32", steps=3)
    assert opt.last_execution == "chunked"
    (why,) = opt.execution_report()["fallbacks"]
    assert "numba is not installed" in why and "lionk[numba]" in why
    for k in ref:
        assert np.array_equal(bits(ref[k]), bits(got[k])), k
    x = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="numba is not installed"):
        lionk.LionK(x, lr=0.01, execution="compiled").step(np.ones_like(x))
    assert not x.any()


def test_auto_with_half_precision_falls_back_and_says_why() -> None:
    x = np.linspace(-1, 1, 1 << 18).astype(np.float16)
    opt = lionk.LionK(x, lr=1e-3)
    opt.step(np.ones_like(x))
    assert opt.last_execution == "chunked"
    assert "float32 and float64 only" in opt.execution_report()["fallbacks"][0]


@pytest.mark.parametrize("kappa,dtype,match", [
    ("l2", "float32", "elementwise"),
    ("huber", "float32", "elementwise"),  # the default δ = 0.1·RMS(y) is a per-array sum
    ("sign", "float16", "float32 and float64 only"),
])
def test_numpy_compiled_refuses_clearly_and_writes_nothing(kappa, dtype, match) -> None:
    xs, _ = _leaves(dtype)
    before = {k: v.copy() for k, v in xs.items()}
    opt = lionk.LionK(xs, lr=0.01, kappa=kappa, execution="compiled")
    with pytest.raises(ValueError, match=match):
        opt.step({k: np.ones_like(v) for k, v in xs.items()})
    assert all(np.array_equal(before[k], xs[k]) for k in xs)
    assert all(not np.any(m) for m in opt.state.momentum.values())


def test_kernels_are_kept_on_disk_and_numba_caches_them(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LIONK_CACHE_DIR", str(tmp_path))
    source = _kernel.kernel_source(update_leaves, H, textbook("quadratic"), "float64",
                                   "float64", dialect="python")
    code = _kernel.numba_module_source(source) + f"\n# {tmp_path}\n"  # a module of its own
    module = _kernel._load_module(code)
    x, g, m = _data(100, "float64", 9)
    module.kernel(x, g, m, *H)
    files = sorted(p.name for p in (tmp_path / "kernels").iterdir())
    assert any(f.startswith("lionk_kernel_") and f.endswith(".py") for f in files)
    cached = list((tmp_path / "kernels" / "__pycache__").glob("*.nbi"))
    assert cached, "numba wrote no cache index for the generated module"
    assert _kernel._load_module(code) is module


# ---------------------------------------------------------------------------------------------
# CPU torch tensors: "auto" runs the same kernel on the tensors' memory (addresses only).


def _torch_model(torch, dtype, seed=0, mdtype=None):
    """Leaves of many sizes (0-d, empty, odd, one above the two-thread threshold), data with
    NaN, ±inf, ±0 and subnormals, as nn.Parameters with gradients."""
    shapes = [(), (0,), (7, 5), (129,), (3, 4, 5), (2 * _paths.NUMPY_KERNEL_MIN_PER_THREAD + 3,)]
    params, grads, moms = [], [], []
    for i, s in enumerate(shapes):
        n = int(np.prod(s))
        x, g, m = _data(max(n, 1), dtype, seed + i, mdtype)
        params.append(torch.nn.Parameter(torch.from_numpy(x[:n].reshape(s).copy())))
        grads.append(torch.from_numpy(g[:n].reshape(s).copy()))
        moms.append(torch.from_numpy(m[:n].reshape(s).copy()))
    return params, grads, moms


def _torch_run(torch, execution, kappa, dtype, steps=3, state_dtype=None):
    params, grads, moms = _torch_model(torch, dtype)
    opt = lionk.torch.LionK(params, lr=1e-3, weight_decay=0.1, kappa=kappa, execution=execution,
                            state_dtype=state_dtype)
    for p, m in zip(params, moms):  # start from a non-zero momentum holding special values
        opt.state[p] = {"step": 0, "exp_avg": m.to(state_dtype or p.dtype)}
    for _ in range(steps):
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
    return params, opt


@pytest.mark.parametrize("kappa", SEPARABLE)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_auto_runs_the_numba_kernel_bitwise_equal_to_eager(kappa, dtype) -> None:
    """Bitwise equal to torch's eager step for every κ of the bitwise tier; a κ of the ulp
    tier (relativistic: a square root and a division, computed by torch's own vectorised
    kernels eagerly) equals eager NumPy bitwise (the probes) and torch within a few ulps."""
    torch = pytest.importorskip("torch")
    kap = textbook(kappa)
    exact = kap.tier == "bitwise"
    steps = 3 if exact else 1  # the ulp tier is teacher-forced: one step from the same state
    ref, ref_opt = _torch_run(torch, "eager", kap, dtype, steps=steps)
    got, opt = _torch_run(torch, "auto", kap, dtype, steps=steps)
    assert opt.last_execution == ["compiled"]
    assert opt.execution_report()["groups"][0]["detail"] == "numba kernel"
    eps = float(np.finfo(dtype).eps)
    for a, b in zip(ref, got):
        pairs = [(a.detach().numpy(), b.detach().numpy()),
                 (ref_opt.state[a]["exp_avg"].numpy(), opt.state[b]["exp_avg"].numpy())]
        for want, have in pairs:
            if exact:
                assert np.array_equal(bits(want), bits(have))
            else:
                # x' = decay*x - lr*u: a few ulps of u (|u| <= 1) move x' by lr*eps each
                assert np.array_equal(np.isnan(want), np.isnan(have))
                np.testing.assert_allclose(np.nan_to_num(have), np.nan_to_num(want),
                                           rtol=2 * eps, atol=4 * 1e-3 * eps)


def test_torch_auto_with_a_float64_momentum_for_float32_params() -> None:
    torch = pytest.importorskip("torch")
    ref, ref_opt = _torch_run(torch, "eager", "sign", "float32", state_dtype=torch.float64)
    got, opt = _torch_run(torch, "auto", "sign", "float32", state_dtype=torch.float64)
    assert opt.execution_report()["groups"][0]["detail"] == "numba kernel"
    for a, b in zip(ref, got):
        assert np.array_equal(bits(a.detach().numpy()), bits(b.detach().numpy()))
        assert opt.state[b]["exp_avg"].dtype == torch.float64
        assert np.array_equal(bits(ref_opt.state[a]["exp_avg"].numpy()),
                              bits(opt.state[b]["exp_avg"].numpy()))


def test_torch_numba_writes_bump_the_autograd_version_counter() -> None:
    """The kernel writes behind torch's back; like torch's own in-place ops it bumps the
    version counters, so autograd still refuses a backward through values the step changed."""
    torch = pytest.importorskip("torch")
    w = torch.nn.Parameter(torch.ones(10))
    opt = lionk.torch.LionK([w], lr=0.1)
    loss = (w * w).sum()  # saves w for the backward
    w.grad = torch.ones(10)
    before = w._version
    opt.step()
    assert opt.execution_report()["groups"][0]["detail"] == "numba kernel"
    assert w._version > before
    assert torch.all(w == 0.9)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_torch_auto_falls_back_for_what_the_kernel_cannot_run() -> None:
    torch = pytest.importorskip("torch")
    base = torch.zeros(6, 6)
    view = torch.nn.Parameter(base[:, ::2])  # not contiguous
    view.grad = torch.ones(6, 3)
    opt = lionk.torch.LionK([view], lr=0.1)
    opt.step()
    report = opt.execution_report()["groups"][0]
    assert report["path"] != "compiled"
    assert "the numba kernel needs C-contiguous arrays" in report["fallbacks"][0]
    assert torch.all(view == -0.1)
    half = torch.nn.Parameter(torch.zeros(5, dtype=torch.bfloat16))
    half.grad = torch.ones(5, dtype=torch.bfloat16)
    opt = lionk.torch.LionK([half], lr=0.5)
    opt.step()
    report = opt.execution_report()["groups"][0]
    assert "float32 and float64 only" in report["fallbacks"][0]
    assert torch.all(half == -0.5)
    # a user κ runs torch's own operations (its code may treat torch tensors differently)
    user = K.Kappa("user-sign-for-torch", grad=K.exact_sign, separable=True)
    w = torch.nn.Parameter(torch.zeros(5))
    w.grad = torch.ones(5)
    opt = lionk.torch.LionK([w], lr=0.5, kappa=user)
    opt.step()
    assert opt.execution_report()["groups"][0]["detail"] != "numba kernel"
    assert torch.all(w == -0.5)


def test_torch_numba_group_is_not_written_when_a_later_group_fails() -> None:
    torch = pytest.importorskip("torch")
    a = torch.nn.Parameter(torch.zeros(1000))
    b = torch.nn.Parameter(torch.zeros(10))
    a.grad, b.grad = torch.ones(1000), torch.ones(10)
    opt = lionk.torch.LionK([{"params": [a]}, {"params": [b]}], lr=0.1)
    opt.param_groups[1]["lr"] = -1.0
    with pytest.raises(ValueError, match=r"param_groups\[1\].*lr"):
        opt.step()
    assert torch.all(a == 0) and torch.all(b == 0) and not opt.state
    opt.param_groups[1]["lr"] = 0.1
    opt.step()
    assert opt.last_execution == ["compiled", "compiled"]
    assert torch.all(a == -0.1) and torch.all(b == -0.1)
