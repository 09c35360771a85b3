"""Execution paths of LionK: every path runs the one step and gives bitwise the same result."""

from __future__ import annotations

import numpy as np
import pytest

import lionk

from ._util import bits, textbook


def _problem(shapes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    xs = {f"p{i}": rng.uniform(-1.5, 1.5, size=s).astype(dtype) for i, s in enumerate(shapes)}
    a = {k: rng.uniform(-1, 1, size=v.shape).astype(dtype) for k, v in xs.items()}
    return xs, a


def _run(execution, kappa, dtype, shapes, steps=15, **kw):
    xs, a = _problem(shapes, dtype)
    opt = lionk.LionK(xs, lr=0.01, weight_decay=0.5, kappa=kappa, execution=execution, **kw)
    for _ in range(steps):
        grads = {k: ((x * x) * x - x) + a[k] for k, x in xs.items()}
        opt.step(grads)
    return xs, opt


SHAPES = [(1000,), (37, 29), (), (0,), (5,)]


# the textbook forms: elementwise (the defaults of the others measure RMS(y) per array)
ELEMENTWISE = ["sign"] + [pytest.param(textbook(k), id=k)
                          for k in ("huber", "deadzone", "quadratic", "relativistic")]


@pytest.mark.parametrize("kappa", ELEMENTWISE)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("chunk_size,threads", [(7, 1), (64, 2), (1 << 14, 2)])
def test_chunked_is_bitwise_equal_to_eager(kappa, dtype, chunk_size, threads) -> None:
    ref, ref_opt = _run("eager", kappa, dtype, SHAPES)
    got, opt = _run("chunked", kappa, dtype, SHAPES, chunk_size=chunk_size, threads=threads)
    assert opt.last_execution == "chunked" and ref_opt.last_execution == "eager"
    for k in ref:
        assert np.array_equal(bits(ref[k]), bits(got[k])), k
        m_ref = ref_opt.state.momentum[k]
        m_got = opt.state.momentum[k]
        assert np.array_equal(bits(m_ref), bits(m_got)), k


def test_auto_chunks_large_numpy_with_a_separable_kappa_only(monkeypatch) -> None:
    from lionk.execution import kernels
    from lionk.execution.paths import NUMPY_CHUNK_MIN_ELEMENTS

    # without numba (with it, auto runs the numba kernel: tests/test_numba_kernel.py)
    monkeypatch.setattr(kernels, "numba_available", lambda: False)
    big = [(NUMPY_CHUNK_MIN_ELEMENTS,)]
    _, opt = _run("auto", "sign", "float32", big, steps=1)
    assert opt.last_execution == "chunked"
    assert "numba is not installed" in opt.execution_report()["fallbacks"][0]
    _, opt = _run("auto", "l2", "float32", big, steps=1)
    assert opt.last_execution == "eager"
    _, opt = _run("auto", "huber", "float32", big, steps=1)  # δ = 0.1·RMS(y): not separable
    assert opt.last_execution == "eager"
    _, opt = _run("auto", textbook("huber"), "float32", big, steps=1)
    assert opt.last_execution == "chunked"
    # small arrays: one whole-array step beats many Python-level chunk calls
    _, opt = _run("auto", "sign", "float32", [(100,)], steps=1)
    assert opt.last_execution == "eager"


def test_auto_falls_back_to_eager_for_non_contiguous_views() -> None:
    base = np.zeros((10, 10), np.float32)
    view = base[:, ::2]
    opt = lionk.LionK(view, lr=0.1, execution="auto")
    opt.step(np.ones_like(view))
    assert opt.last_execution == "eager"
    assert np.all(base[:, ::2] == -0.1) and np.all(base[:, 1::2] == 0)


def test_chunked_refuses_a_norm_kappa_with_a_clear_error() -> None:
    x = np.zeros(10, np.float32)
    opt = lionk.LionK(x, lr=0.1, kappa="l2", execution="chunked")
    before = x.copy()
    with pytest.raises(ValueError, match="separable"):
        opt.step(np.ones_like(x))
    assert np.array_equal(x, before) and opt.state.count == 0


@pytest.mark.parametrize("bad", [{"execution": "fast"}, {"chunk_size": 0}, {"chunk_size": 1.5},
                                 {"threads": 0}])
def test_invalid_execution_options(bad) -> None:
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        lionk.LionK(np.zeros(3, np.float32), **bad)


def _peak_extra_bytes(n: int, chunk: int) -> int:
    import tracemalloc

    x = np.zeros(n, np.float32)
    g = np.ones(n, np.float32)
    opt = lionk.LionK(x, lr=1e-3, weight_decay=0.1, execution="chunked", chunk_size=chunk,
                      threads=1)
    opt.step(g)  # warm-up (the momentum exists from init on)
    tracemalloc.start()
    try:
        opt.step(g)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_chunked_allocates_nothing_proportional_to_n() -> None:
    """Peak extra memory of a chunked step is set by the chunk, not by the parameter count:
    eight times more parameters do not raise it, and it stays under 2% of the parameter bytes
    (the target of the speed issue) at 2^21 float32 parameters."""
    chunk = 1 << 12
    small = _peak_extra_bytes(1 << 18, chunk)
    large = _peak_extra_bytes(1 << 21, chunk)
    assert large <= 1.25 * small + 4096, (small, large)
    assert large < 0.02 * (1 << 21) * 4, large
