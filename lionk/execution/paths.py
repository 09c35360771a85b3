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
  On NumPy each piece runs the step recorded once (:mod:`lionk._tape`) with ``out=`` buffers.
* ``"compiled"`` — torch tensors: ``torch.compile`` of the same ``update_leaves`` followed by the
  in-place copies, so inductor fuses the whole step into one loop over memory. Coefficients enter
  as 0-d float64 tensors (computed in double precision, rounded once to the dtype inside), so a
  learning-rate schedule does not recompile. Compiled kernels may contract ``a*b + c`` into FMA:
  this path is in the ulp tier (the conformance suite measures it).
  NumPy and CuPy arrays: one fused elementwise kernel generated from the recorded step
  (:mod:`lionk._kernel`), compiled by the system C compiler (NumPy; elements split between
  threads) or by CuPy (NVRTC), with no FMA contraction, and checked byte for byte against the
  eager step on probe values before use: bitwise.
* ``"auto"`` — ``"chunked"`` for NumPy arrays where it applies (separable κ, C-contiguous
  leaves), else ``"eager"``; torch: compiled from 2^20 elements; CuPy: compiled for an
  elementwise κ. (NumPy's compiled path needs a C compiler at run time, so it is never chosen
  automatically.)

For JAX, :func:`jit_step` is the compiled path of the functional API: ``jax.jit`` of the same
step with the parameter and momentum buffers donated.

The conformance suite runs every path against the reference.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..core.array_api import Array, write_inplace
from ..core.step import Hyper, update_leaves
from .packed import PACKED_MAX_ELEMENTS, packable, run_packed

__all__ = ["EXECUTIONS", "DEFAULT_CHUNK", "run_inplace", "chunkable"]

EXECUTIONS = ("auto", "eager", "chunked", "compiled", "packed")
# NumPy chunks (elements). Measured on a 2-core EPYC (2 MiB L2 per core), 2^24 float32, sign:
# the recorded program (lionk._tape) ran 2.6-4.4x the floor at 32K, 1.7-3.5x at 64K, no better
# at 128K; per-call Python costs dominate below 16K. The default is the largest chunk whose
# scratch (2-3 buffers per thread) stays within 1% of the parameters' bytes.
MIN_CHUNK = 1 << 13
MAX_CHUNK = 1 << 16
SCRATCH_FRACTION = 0.01
DEFAULT_CHUNK = MAX_CHUNK
NUMPY_CHUNK_MIN_ELEMENTS = 1 << 18  # below this a whole-array step is faster than chunks

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
    if type(a) is np.ndarray and a.flags.c_contiguous:
        return a.reshape(-1)
    if type(a).__module__.startswith("numpy"):
        if isinstance(a, np.generic):  # numpy's result of arithmetic on 0-d arrays (read only)
            return np.asarray(a).reshape(-1)
        if not isinstance(a, np.ndarray) or not a.flags.c_contiguous:
            return None
        return a.reshape(-1)
    is_contig = getattr(a, "is_contiguous", None)
    if is_contig is not None and is_contig():  # torch
        return a.view(-1)
    return None


def _flat_views(xs: Sequence[Array], gs: Sequence[Array],
                ms: Sequence[Array]) -> list[tuple[Array, Array, Array]] | None:
    """Flat views ``(x, g, m)`` of every leaf, or None when one of the arrays has none."""
    out = []
    for x, g, m in zip(xs, gs, ms):
        views = (_flat_view(x), _flat_view(g), _flat_view(m))
        if views[0] is None or views[1] is None or views[2] is None:
            return None
        out.append(views)
    return out


def chunkable(xs: Sequence[Array], gs: Sequence[Array], ms: Sequence[Array], kappa: Any) -> bool:
    """True when the chunked path applies: elementwise κ and flat views of every array."""
    return bool(kappa.separable) and _flat_views(xs, gs, ms) is not None


COMPILE_MIN_ELEMENTS = 1 << 20  # below this, torch.compile's one-off cost does not pay back
_COMPILE_FAILED: list[str] = []


def _is_torch(a: Array) -> bool:
    return type(a).__module__.startswith("torch")


def _is_cupy(a: Array) -> bool:
    return type(a).__module__.startswith("cupy")


def _auto_path(xs: Sequence[Array], gs: Sequence[Array], ms: Sequence[Array], kappa: Any) -> str:
    if getattr(kappa, "auto_eager", False):
        # matrix κ (nuclear: SVD or Newton-Schulz, whose rounding is part of its definition)
        return "eager"
    if xs and all(_is_cupy(a) for a in xs):
        return "compiled" if kappa.separable else "eager"
    if all(type(a).__module__ == "numpy" for a in xs):
        big = sum(int(a.size) for a in xs) >= NUMPY_CHUNK_MIN_ELEMENTS
        return "chunked" if big and chunkable(xs, gs, ms, kappa) else "eager"
    if xs and all(_is_torch(a) for a in xs):
        n = sum(int(a.numel()) for a in xs)
        if n >= COMPILE_MIN_ELEMENTS and not _COMPILE_FAILED:
            return "compiled"
        if n >= 4 * TORCH_CHUNK and chunkable(xs, gs, ms, kappa):
            return "chunked"
        if len(xs) > 1 and n < PACKED_MAX_ELEMENTS and packable(xs, kappa):
            return "packed"
    return "eager"


TORCH_CHUNK = 1 << 16  # torch's per-operation dispatch cost wants larger pieces than numpy's


def run_inplace(xs: Sequence[Array], gs: Sequence[Array], ms: Sequence[Array], h: Hyper,
                kappa: Any, *, execution: str = "auto", chunk_size: int | None = None,
                threads: int | None = None) -> str:
    """Compute the step and write it into ``xs`` and ``ms``; returns the path that ran.

    ``"auto"``: NumPy → chunked (elementwise κ, contiguous) else eager; torch → compiled from
    ``COMPILE_MIN_ELEMENTS`` elements on (chunked from 2^18 below that, and if compilation ever
    failed in this process, with a warning); below that, several tensors with an elementwise κ
    → packed (one flat array per dtype and device, :mod:`lionk.execution.packed`); else eager. ``chunk_size``/``threads`` default per
    backend (NumPy: sized from a scratch budget of 1% of the parameters, 8K-64K elements, over
    all cores; torch: 64K elements, one Python thread, torch's
    own intra-op threads).
    """
    if execution not in EXECUTIONS:
        raise ValueError(f"execution: expected one of {EXECUTIONS}; received {execution!r}")
    path = _auto_path(xs, gs, ms, kappa) if execution == "auto" else execution
    if path == "chunked" and not chunkable(xs, gs, ms, kappa):
        raise ValueError(
            "execution='chunked' needs an elementwise (separable) kappa and contiguous arrays; "
            f"received kappa {kappa.name!r} (separable={kappa.separable})"
        )
    torch_arrays = bool(xs) and _is_torch(xs[0])
    if chunk_size is None and torch_arrays:
        chunk_size = TORCH_CHUNK
    if threads is None and torch_arrays:
        threads = 1
    if path == "compiled" and xs and _is_cupy(xs[0]):
        if _run_cupy_fused(xs, gs, ms, h, kappa):
            return path
        if execution == "compiled":
            raise ValueError(
                "execution='compiled' on CuPy arrays runs one fused elementwise kernel and needs "
                f"an elementwise (separable) kappa and float32/float64 arrays; received kappa "
                f"{kappa.name!r} (separable={kappa.separable}), dtypes "
                f"{sorted({str(x.dtype) for x in xs} | {str(m.dtype) for m in ms})}"
            )
        path = "eager"
    if path == "compiled" and xs and type(xs[0]) is np.ndarray:
        why = _run_numpy_c_kernel(xs, gs, ms, h, kappa, threads)
        if why is None:
            return path
        raise ValueError(f"execution='compiled' on NumPy arrays {why}")
    if path == "compiled" and execution == "auto":
        try:
            _run_torch_compiled(xs, gs, ms, h, kappa)
            return path
        except Exception as exc:  # no C++ compiler, an unsupported op, ...: run it another way
            import warnings

            _COMPILE_FAILED.append(repr(exc))
            warnings.warn(f"lionk: torch.compile failed ({type(exc).__name__}: {exc}); "
                          "running the step eagerly from now on", RuntimeWarning, stacklevel=3)
            path = "chunked" if chunkable(xs, gs, ms, kappa) else "eager"
    if path == "compiled":
        _run_torch_compiled(xs, gs, ms, h, kappa)
        return path
    if path == "packed":
        if not (all(_is_torch(a) for a in (*xs, *gs, *ms)) and packable(xs, kappa)):
            raise ValueError(
                "execution='packed' steps torch tensors as one flat array per dtype and device "
                "and needs an elementwise (separable) kappa and torch tensors; received kappa "
                f"{kappa.name!r} (separable={kappa.separable}), array types "
                f"{sorted({type(a).__name__ for a in (*xs, *gs, *ms)})}"
            )
        run_packed(xs, gs, ms, h, kappa)
        return path
    if path == "eager":
        new_xs, new_ms = update_leaves(xs, gs, ms, h, kappa)
        for dst, src in zip(xs, new_xs):
            write_inplace(dst, src)
        for dst, src in zip(ms, new_ms):
            write_inplace(dst, src)
        return path
    flats = _flat_views(xs, gs, ms)
    assert flats is not None  # checked by chunkable above
    # Split the concatenated index range [0, total) into one span per thread; each thread walks
    # its span chunk by chunk, making views as it goes (nothing proportional to N is built).
    sizes = [int(fx.shape[0]) for fx, _, _ in flats]
    nthreads = default_threads() if threads is None else max(1, int(threads))
    programs = _per_dtype_pair(flats, lambda dt, mdt: _tape_program(h, kappa, dt, mdt))
    if chunk_size is None:
        chunk_size = _numpy_chunk(flats, programs, nthreads)
    chunk = chunk_size
    _run_in_threads(sizes, min(nthreads, sum(sizes) // (2 * chunk)),
                    lambda lo, hi: _run_span(flats, sizes, lo, hi, chunk, h, kappa, programs))
    return path


def _run_in_threads(sizes: list[int], nthreads: int, run_span: Any) -> None:
    """Split the elements of leaves of ``sizes`` laid end to end into ``nthreads`` contiguous
    spans and call ``run_span(lo, hi)`` on each, in the shared thread pool."""
    total = sum(sizes)
    nthreads = max(1, nthreads)
    bounds = [total * i // nthreads for i in range(nthreads + 1)]
    if nthreads == 1:
        run_span(0, total)
        return
    futures = [_pool(nthreads).submit(run_span, lo, hi) for lo, hi in zip(bounds, bounds[1:])]
    for f in futures:
        f.result()


def _pieces(sizes: list[int], lo: int, hi: int) -> Any:
    """``(leaf, start, stop)`` for the part of elements ``[lo, hi)`` (of the leaves laid end to
    end) in each leaf it meets, start and stop counted within the leaf."""
    offset = 0
    for leaf, n in enumerate(sizes):
        a, b = max(lo, offset), min(hi, offset + n)
        if a < b:
            yield leaf, a - offset, b - offset
        offset += n


def _per_dtype_pair(flats: list[tuple[Array, Array, Array]], make: Any) -> list[Any]:
    """Per leaf, ``make(x dtype, m dtype)`` for NumPy leaves (one call per pair), else None."""
    found: dict[tuple[Any, Any], Any] = {}
    out: list[Any] = []
    for fx, _, fm in flats:
        if type(fx) is np.ndarray and type(fm) is np.ndarray:
            key = (fx.dtype, fm.dtype)
            if key not in found:
                found[key] = make(*key)
            out.append(found[key])
        else:
            out.append(None)
    return out


def _tape_program(h: Hyper, kappa: Any, dtype: Any, mdtype: Any) -> Any:
    """The recorded program of the step for NumPy chunks (lionk._tape), or None (a step that
    cannot be recorded: then update_leaves runs per chunk)."""
    from . import tape as _tape

    return _tape.program_for(update_leaves, h, kappa, dtype, mdtype)


def _numpy_chunk(flats: list[tuple[Array, Array, Array]], programs: list[Any],
                 nthreads: int) -> int:
    """The default NumPy chunk: the largest multiple of 4K elements, between
    ``MIN_CHUNK`` and ``MAX_CHUNK``, whose scratch buffers over all threads stay within
    ``SCRATCH_FRACTION`` of the parameters' bytes."""
    param_bytes = sum(int(fx.nbytes) for fx, _, _ in flats)
    per_element = max([p.buffer_bytes_per_element for p in programs if p is not None],
                      default=0)
    if per_element == 0:  # no recorded program: update_leaves per chunk (about 10 temporaries)
        per_element = 10 * max(int(fx.itemsize) for fx, _, _ in flats)
    chunk = int(SCRATCH_FRACTION * param_bytes) // (per_element * nthreads)
    return max(MIN_CHUNK, min(MAX_CHUNK, chunk // 4096 * 4096))


def _run_span(flats: list[tuple[Array, Array, Array]], sizes: list[int], lo: int, hi: int,
              chunk_size: int, h: Hyper, kappa: Any, programs: list[Any]) -> None:
    """Run the step on elements ``[lo, hi)`` of the leaves laid end to end, chunk by chunk."""
    scratch: dict[int, list[Array]] = {}  # per program: its buffers, made once per span
    for leaf, a, b in _pieces(sizes, lo, hi):
        fx, fg, fm = flats[leaf]
        program = programs[leaf]
        if program is not None:
            bufs = scratch.get(id(program))
            if bufs is None:
                bufs = scratch[id(program)] = program.buffers(min(chunk_size, hi - lo))
            run, full = program.run, len(bufs[0]) if bufs else chunk_size
            for s in range(a, b, chunk_size):
                e = min(s + chunk_size, b)
                if e - s == full:
                    run(fx[s:e], fg[s:e], fm[s:e], *bufs)
                else:
                    run(fx[s:e], fg[s:e], fm[s:e], *[buf[: e - s] for buf in bufs])
            continue
        for s in range(a, b, chunk_size):
            sl = slice(s, min(s + chunk_size, b))
            x, m = fx[sl], fm[sl]
            (nx,), (nm,) = update_leaves([x], [fg[sl]], [m], h, kappa)
            write_inplace(x, nx)
            write_inplace(m, nm)


# ---------------------------------------------------------------------------------------------
# NumPy: the fused kernel's C body, compiled by the system C compiler (lionk._kernel).

C_KERNEL_MIN_PER_THREAD = 1 << 16  # elements; below this one thread is faster than two


def _run_numpy_c_kernel(xs: Sequence[Array], gs: Sequence[Array], ms: Sequence[Array], h: Hyper,
                        kappa: Any, threads: int | None) -> str | None:
    """Run the compiled kernel over every leaf, the elements split between threads (ctypes
    releases the GIL). Returns None when it ran, else why it cannot (nothing is written)."""
    from . import kernels as _kernel

    if not kappa.separable:
        return (f"runs one fused elementwise kernel and needs an elementwise (separable) kappa; "
                f"received kappa {kappa.name!r}")
    flats = _flat_views(xs, gs, ms)
    if flats is None:
        return "needs C-contiguous arrays"
    if _kernel.c_compiler() is None:
        return "compiles the step with the system C compiler and found none (install cc or set CC)"
    kernels = _per_dtype_pair(flats, lambda dt, mdt: _kernel.checked_c_kernel(
        update_leaves, h, kappa, dt, mdt))
    for (fx, _, fm), kernel in zip(flats, kernels):
        if kernel is None:
            why = _kernel.why_not(update_leaves, h, kappa, fx.dtype, fm.dtype)
            why = why or "these arguments: it differs from the eager step on the probes"
            return f"has no kernel for {why} (dtypes {fx.dtype}/{fm.dtype})"
    coef = np.array([float(c) for c in h], dtype=np.float64)
    sizes = [int(fx.shape[0]) for fx, _, _ in flats]
    nthreads = default_threads() if threads is None else max(1, int(threads))
    # element addresses, once per step (a view's .ctypes costs microseconds per leaf)
    address = [(fx.ctypes.data, fg.ctypes.data, fm.ctypes.data, fx.itemsize, fm.itemsize)
               for fx, fg, fm in flats]
    pcoef = coef.ctypes.data

    def run_span(lo: int, hi: int) -> None:
        for leaf, a, b in _pieces(sizes, lo, hi):
            px, pg, pm, sx, sm = address[leaf]
            kernels[leaf].raw(b - a, px + a * sx, pg + a * sx, pm + a * sm, pcoef)

    _run_in_threads(sizes, min(nthreads, sum(sizes) // C_KERNEL_MIN_PER_THREAD), run_span)
    return None


# ---------------------------------------------------------------------------------------------
# CuPy: one fused elementwise kernel per leaf, generated from the recorded step (lionk._kernel).


def _run_cupy_fused(xs: Sequence[Array], gs: Sequence[Array], ms: Sequence[Array], h: Hyper,
                    kappa: Any) -> bool:
    """Run the fused kernel on every leaf; False (nothing written) when a leaf has none."""
    if not kappa.separable:
        return False
    from . import kernels as _kernel

    kernels = []
    for x, m in zip(xs, ms):
        kernel = _kernel.cupy_kernel(update_leaves, h, kappa, x.dtype, m.dtype)
        if kernel is None:
            return False
        kernels.append(kernel)
    for kernel, x, g, m in zip(kernels, xs, gs, ms):
        kernel(g, x, m)  # reads x, g, m once and writes x and m in place: one pass
    return True


# ---------------------------------------------------------------------------------------------
# torch: torch.compile of the same step.

_TORCH_COMPILED: dict[Any, Any] = {}


def _torch_compiled_fn(kappa: Any) -> Any:
    fn = _TORCH_COMPILED.get(kappa)
    if fn is None:
        import torch

        def fused(xs: list[Any], gs: list[Any], ms: list[Any], coefs: list[Any]) -> None:
            new_xs, new_ms = update_leaves(xs, gs, ms, Hyper(*coefs), kappa)
            for dst, src in zip(xs, new_xs):
                dst.copy_(src)
            for dst, src in zip(ms, new_ms):
                dst.copy_(src)

        fn = torch.compile(fused, dynamic=False)
        _TORCH_COMPILED[kappa] = fn
    return fn


def _run_torch_compiled(xs: Sequence[Array], gs: Sequence[Array], ms: Sequence[Array], h: Hyper,
                        kappa: Any) -> None:
    import sys
    import warnings

    torch = sys.modules.get("torch")
    if torch is None or not all(isinstance(a, torch.Tensor) for a in (*xs, *gs, *ms)):
        kind = f"{type(xs[0]).__module__}.{type(xs[0]).__name__}" if xs else "no arrays"
        raise ValueError(
            "execution='compiled' needs torch tensors (torch.compile) or NumPy/CuPy arrays (a "
            f"fused kernel); received {kind}; for JAX arrays use lionk.jit_step"
        )
    dev = xs[0].device
    coefs = [c if isinstance(c, torch.Tensor) else torch.tensor(c, dtype=torch.float64, device=dev)
             for c in h]
    # detach(): plain tensors sharing the parameters' storage, so the compiled code's guards see
    # the same types whether LionK or lionk.torch.LionK (nn.Parameter) calls it (no recompile)
    xs = [x.detach() for x in xs]
    ms = [m.detach() for m in ms]
    gs = [g.detach() for g in gs]
    with warnings.catch_warnings():
        # dynamo notes that it traces through array-api-compat's lru_cache'd helpers: benign
        warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`")
        with torch.no_grad():
            _torch_compiled_fn(kappa)(list(xs), list(gs), list(ms), coefs)
