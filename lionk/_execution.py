"""Execution paths: *how* the one Lion-κ step (``_step.update_leaves``) is run in place.

The math is never re-written here. Every path calls :func:`lionk._step.update_leaves`, on whole
leaves or on pieces of them, and copies the results into the parameter and momentum arrays:

* ``"eager"`` — one call over all leaves; temporaries as large as the parameters.
* ``"chunked"`` — for an elementwise (``separable``) κ the step of an element depends only on that
  element, so each leaf is cut into contiguous pieces of ``chunk_size`` elements and the step runs
  piece by piece: the temporaries stay in cache and no memory proportional to the number of
  parameters is allocated per step. NumPy's ufuncs release the GIL, so pieces are spread over
  ``threads`` threads. Results are bitwise identical to ``"eager"`` (same operations, same
  elements).
* ``"auto"`` — ``"chunked"`` for NumPy arrays where it applies (separable κ, C-contiguous
  leaves), else ``"eager"``.

The conformance suite runs every path against the reference.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._array_api import Array, write_inplace
from ._step import Hyper, update_leaves

__all__ = ["EXECUTIONS", "DEFAULT_CHUNK", "run_inplace", "chunkable"]

EXECUTIONS = ("auto", "eager", "chunked")
DEFAULT_CHUNK = 1 << 14  # elements; 16K float32 = 64 KiB per temporary, well inside L2

_POOL: ThreadPoolExecutor | None = None


def _pool(threads: int) -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None or _POOL._max_workers < threads:  # noqa: SLF001
        _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lionk")
    return _POOL


def default_threads() -> int:
    try:
        return max(1, min(len(os.sched_getaffinity(0)), 8))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, min(os.cpu_count() or 1, 8))


def _flat_view(a: Array) -> Array | None:
    """A 1-D view sharing memory with ``a`` (None where no such view exists)."""
    if type(a).__module__.startswith("numpy"):
        import numpy as np

        if isinstance(a, np.generic):  # numpy's result of arithmetic on 0-d arrays (read only)
            return np.asarray(a).reshape(-1)
        if not isinstance(a, np.ndarray) or not a.flags.c_contiguous:
            return None
        return a.reshape(-1)
    is_contig = getattr(a, "is_contiguous", None)
    if is_contig is not None and is_contig():  # torch
        return a.view(-1)
    return None


def chunkable(xs: Sequence[Array], gs: Sequence[Array], ms: Sequence[Array], kappa: Any) -> bool:
    """True when the chunked path applies: elementwise κ and flat views of every array."""
    if not kappa.separable:
        return False
    return all(_flat_view(a) is not None for group in (xs, gs, ms) for a in group)


def run_inplace(xs: Sequence[Array], gs: Sequence[Array], ms: Sequence[Array], h: Hyper,
                kappa: Any, *, execution: str = "auto", chunk_size: int = DEFAULT_CHUNK,
                threads: int | None = None) -> str:
    """Compute the step and write it into ``xs`` and ``ms``; returns the path that ran."""
    if execution not in EXECUTIONS:
        raise ValueError(f"execution: expected one of {EXECUTIONS}; received {execution!r}")
    path = execution
    if execution == "auto":
        # chunking pays off where per-operation overhead is small next to a cache-sized piece:
        # NumPy. torch (per-op dispatch) and JAX (immutable) run eagerly unless asked.
        numpy_only = all(type(a).__module__ == "numpy" for a in xs)
        path = "chunked" if numpy_only and chunkable(xs, gs, ms, kappa) else "eager"
    elif execution == "chunked" and not chunkable(xs, gs, ms, kappa):
        raise ValueError(
            "execution='chunked' needs an elementwise (separable) kappa and contiguous arrays; "
            f"received kappa {kappa.name!r} (separable={kappa.separable})"
        )
    if path == "eager":
        new_xs, new_ms = update_leaves(xs, gs, ms, h, kappa)
        for dst, src in zip(xs, new_xs):
            write_inplace(dst, src)
        for dst, src in zip(ms, new_ms):
            write_inplace(dst, src)
        return path
    flats = [(_flat_view(x), _flat_view(g), _flat_view(m)) for x, g, m in zip(xs, gs, ms)]
    # Split the concatenated index range [0, total) into one span per thread; each thread walks
    # its span chunk by chunk, making views as it goes (nothing proportional to N is built).
    sizes = [int(fx.shape[0]) for fx, _, _ in flats]
    total = sum(sizes)
    nthreads = default_threads() if threads is None else max(1, int(threads))
    nthreads = max(1, min(nthreads, total // (2 * chunk_size)))
    bounds = [total * i // nthreads for i in range(nthreads + 1)]
    spans = list(zip(bounds[:-1], bounds[1:]))
    if nthreads == 1:
        _run_span(flats, sizes, spans[0], chunk_size, h, kappa)
        return path
    pool = _pool(nthreads)
    futures = [pool.submit(_run_span, flats, sizes, sp, chunk_size, h, kappa) for sp in spans]
    for f in futures:
        f.result()
    return path


def _run_span(flats: list[tuple[Array, Array, Array]], sizes: list[int], span: tuple[int, int],
              chunk_size: int, h: Hyper, kappa: Any) -> None:
    """Run the step on elements ``span`` of the leaves laid end to end, chunk by chunk."""
    lo, hi = span
    offset = 0
    for (fx, fg, fm), n in zip(flats, sizes):
        a, b = max(lo, offset), min(hi, offset + n)
        for s in range(a, b, chunk_size):
            e = min(s + chunk_size, b)
            sl = slice(s - offset, e - offset)
            x, m = fx[sl], fm[sl]
            (nx,), (nm,) = update_leaves([x], [fg[sl]], [m], h, kappa)
            write_inplace(x, nx)
            write_inplace(m, nm)
        offset += n


