"""lionk.execution.kernels: the fused elementwise kernel (CuPy on a GPU) generated from the recorded step.

Its CuPy body is C. Compiled here by the system C compiler with no FMA contraction (a test
helper, tests/_c_kernel.py: lionk itself compiles no C on the host), it must give the eager
NumPy step bit for bit — that checks the translation of every recorded call on a machine without
a GPU. The CuPy glue is checked with a stand-in ``cupy`` module whose ElementwiseKernel compiles
the same body with the C compiler. NumPy's kernel (numba) is tested in tests/test_numba_kernel.py.
"""

from __future__ import annotations

import sys
import types
import warnings

import numpy as np
import pytest

from lionk import kappa as K
from lionk.core.step import make_hyper, update_leaves
from lionk.execution import kernels as _kernel
from lionk.execution import tape as _tape

from ._c_kernel import c_compiler, c_kernel
from ._util import bits, textbook

# the textbook forms: elementwise (the defaults of the others measure RMS(y) per array)
SEPARABLE = ["sign", "huber", "deadzone", "quadratic", "relativistic"]
H = make_hyper(1e-3, (0.9, 0.99), 0.1)

needs_cc = pytest.mark.skipif(c_compiler() is None, reason="no C compiler")


def _data(n, dtype, seed):
    rng = np.random.default_rng(seed)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 0.1, -0.1, 1.0,
                        5e-324, 1e-45])
    out = []
    for _ in range(3):
        v = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 3, size=n)
        v[rng.integers(0, n, size=n // 10)] = rng.choice(special, size=n // 10)
        with np.errstate(all="ignore"):
            out.append(v.astype(dtype))
    return out


@needs_cc
@pytest.mark.parametrize("kappa", SEPARABLE)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_kernel_compiled_as_c_is_the_eager_step_bit_for_bit(kappa, dtype) -> None:
    kap = textbook(kappa)
    source = _kernel.kernel_source(update_leaves, H, kap, dtype, dtype)
    assert source is not None, _kernel.why_not(update_leaves, H, kap, dtype, dtype)
    run = c_kernel(source)
    for x, g, m in (_tape.probes(np.dtype(dtype), np.dtype(dtype)), _data(20_000, dtype, 3)):
        with np.errstate(all="ignore"):
            (ex,), (em,) = update_leaves([x.copy()], [g.copy()], [m.copy()], H, kap)
        cx, cm = x.copy(), m.copy()
        run(cx, g, cm, H)
        assert np.array_equal(bits(cx), bits(np.asarray(ex)))
        assert np.array_equal(bits(cm), bits(np.asarray(em)))


def test_coefficients_are_parameters_rounded_once_and_constants_are_bit_patterns() -> None:
    source = _kernel.kernel_source(update_leaves, H, textbook("deadzone"), "float32", "float32")
    for name in _kernel.COEFFICIENTS:  # the step's coefficients: doubles rounded once, as NumPy
        assert f"= (float)c_{name};" in source.body
    e = int(np.float32(0.1).view(np.uint32))  # deadzone's threshold: a constant of the κ
    assert f"LIONK_F32(0x{e:08x})" in source.body
    assert "fma" not in source.body
    last = source.body.splitlines()[-2:]  # the outputs are assigned once, at the end
    assert last[0].startswith("x = ") and last[1].startswith("m = ")


@needs_cc
def test_one_build_serves_every_learning_rate() -> None:
    kap = textbook("huber")
    h2 = make_hyper(3e-2, (0.5, 0.999), 0.0)
    s1 = _kernel.kernel_source(update_leaves, H, kap, "float64", "float64")
    s2 = _kernel.kernel_source(update_leaves, h2, kap, "float64", "float64")
    assert s1 is s2  # one record per (kappa, dtypes), not per coefficients
    kernel = c_kernel(s1)
    for h in (H, h2):
        x, g, m = _data(5000, "float64", 11)
        (ex,), (em,) = update_leaves([x.copy()], [g.copy()], [m.copy()], h, kap)
        kernel(x, g, m, h)
        assert np.array_equal(bits(x), bits(ex)) and np.array_equal(bits(m), bits(em))


@pytest.mark.parametrize("kappa,dtype,mdtype,reason", [
    ("l2", "float32", "float32", "not elementwise"),
    ("huber", "float32", "float32", "not elementwise"),  # the default δ = 0.1·RMS(y)
    ("sign", "float16", "float16", "float32 and float64 only"),
    ("sign", "float32", "float16", "float32 and float64 only"),
])
def test_no_kernel_where_the_step_is_not_elementwise_or_the_dtype_has_no_c_type(
        kappa, dtype, mdtype, reason) -> None:
    kap = K.resolve(kappa)
    assert _kernel.kernel_source(update_leaves, H, kap, dtype, mdtype) is None
    assert reason in _kernel.why_not(update_leaves, H, kap, dtype, mdtype)


# ---------------------------------------------------------------------------------------------
# The CuPy glue with a stand-in cupy: ElementwiseKernel compiles the body as C.


class _FakeElementwiseKernel:
    made: list[dict] = []

    def __init__(self, in_params, out_params, operation, name, preamble="", options=()):
        type(self).made.append(dict(in_params=in_params, out_params=out_params, name=name,
                                    preamble=preamble, options=options))
        dt = np.dtype(in_params.split(",")[-1].split()[0])
        mdt = np.dtype(out_params.split(",")[1].split()[0])
        self._run = c_kernel(_kernel.KernelSource(operation, dt, mdt))

    def __call__(self, *args):
        *coefs, g, x, m = args
        assert len(coefs) == len(_kernel.COEFFICIENTS)
        self._run(x, g, m, coefs)


@pytest.fixture
def fake_cupy(monkeypatch):
    mod = types.ModuleType("cupy")
    mod.ElementwiseKernel = _FakeElementwiseKernel
    mod.asarray = lambda a: np.array(a, copy=True)
    mod.asnumpy = lambda a: np.asarray(a)
    monkeypatch.setitem(sys.modules, "cupy", mod)
    _kernel._CUPY_BUILT.clear()
    _kernel._CHECKED.clear()
    _FakeElementwiseKernel.made = []
    yield mod
    for cache in (_kernel._CACHE, _kernel._CHECKED, _kernel._CUPY_BUILT):
        cache.clear()  # nothing built with the stand-in (or a broken translation) outlives it


@needs_cc
def test_cupy_kernel_is_built_without_fma_and_checked_on_the_probes(fake_cupy) -> None:
    kernel = _kernel.cupy_kernel(update_leaves, H, textbook("huber"), "float32", "float32")
    assert kernel is not None
    (made,) = _FakeElementwiseKernel.made
    assert made["in_params"] == "float64 c_lr, float64 c_b1, float64 c_one_minus_b1, " \
        "float64 c_b2, float64 c_one_minus_b2, float64 c_decay, float32 g"
    assert made["out_params"] == "float32 x, float32 m"
    assert "--fmad=false" in made["options"] and "__int_as_float" in made["preamble"]
    x, g, m = _data(1000, "float32", 8)
    with np.errstate(all="ignore"):
        (ex,), (em,) = update_leaves([x.copy()], [g.copy()], [m.copy()], H, textbook("huber"))
    kernel(g, x, m)
    assert np.array_equal(bits(x), bits(np.asarray(ex))) and np.array_equal(bits(m), bits(np.asarray(em)))
    # one build for every learning rate: another lr compiles nothing
    h2 = make_hyper(5e-2, (0.9, 0.99), 0.1)
    assert _kernel.cupy_kernel(update_leaves, h2, textbook("huber"), "float32", "float32")
    assert len(_FakeElementwiseKernel.made) == 1


@needs_cc
def test_a_kernel_that_differs_on_the_probes_is_not_used(fake_cupy, monkeypatch) -> None:
    real = _kernel._translate

    def wrong(*args):  # one sign flipped in the generated code
        body = real(*args)
        assert ") - (" in body
        return body.replace(") - (", ") + (", 1)

    monkeypatch.setattr(_kernel, "_translate", wrong)
    _kernel._CACHE.clear()
    _kernel._CHECKED.clear()
    _kernel._CUPY_BUILT.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _kernel.cupy_kernel(update_leaves, H, K.resolve("sign"), "float32", "float32") is None
    assert any("differs from the eager step" in str(w.message) for w in caught)


@needs_cc
def test_the_cupy_execution_path_runs_one_kernel_per_leaf(fake_cupy, monkeypatch) -> None:
    """lionk.execution.paths's CuPy branch, driven with NumPy arrays standing in for CuPy's."""
    from lionk.execution import paths as _execution

    monkeypatch.setattr(_execution, "_is_cupy", lambda a: True)
    xs = [np.linspace(-1, 1, 300, dtype=np.float32), np.linspace(-2, 2, 50, dtype=np.float64)]
    gs = [np.cos(x * 7) for x in xs]
    ms = [np.sin(x * 3) for x in xs]
    ref_x, ref_m = update_leaves([x.copy() for x in xs], gs, [m.copy() for m in ms], H,
                                 K.resolve("sign"))
    ran = _execution.run_inplace(xs, gs, ms, H, K.resolve("sign"), execution="auto")
    assert ran == "compiled"
    for got, want in zip([*xs, *ms], [*ref_x, *ref_m]):
        assert np.array_equal(bits(got), bits(np.asarray(want)))
    # a norm kappa: auto runs eagerly; forcing "compiled" names what is needed, writes nothing
    before = [x.copy() for x in xs]
    with pytest.raises(ValueError, match="fused elementwise kernel"):
        _execution.run_inplace(xs, gs, ms, H, K.resolve("l2"), execution="compiled")
    assert all(np.array_equal(a, b) for a, b in zip(xs, before))
    assert _execution.run_inplace(xs, gs, ms, H, K.resolve("l2"), execution="auto") == "eager"
