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
  (:mod:`lionk.execution.kernels`), compiled by numba (NumPy; the elements split between
  ``threads``, the kernel releasing the GIL) or by CuPy (NVRTC), with no FMA contraction, and
  checked byte for byte against the eager step on probe values before use: bitwise.
* ``"packed"`` — several small torch tensors with an elementwise κ stepped as one flat array per
  dtype and device (:mod:`lionk.execution.packed`); bitwise equal to ``"eager"``.
* ``"auto"`` — NumPy: the numba kernel (``"compiled"``) from ``NUMPY_KERNEL_MIN_ELEMENTS``
  elements when numba is installed and the kernel applies (elementwise κ, contiguous float32 or
  float64 leaves), else ``"chunked"`` where it applies, else ``"eager"``; torch on CPU with a
  built-in elementwise κ: the same numba kernel on the tensors' memory at every size (it
  receives their addresses), reported as ``"compiled"`` / ``"numba kernel"``; other torch
  steps (GPU, a norm or user κ, no numba): ``torch.compile`` from 2^20 elements, chunked from
  2^18, packed below; CuPy: compiled for an elementwise κ.

Which path ran, and any fallback with its reason, is recorded per optimizer in an
:class:`ExecutionRecord` (``opt.execution_report()``) when the step is written; nothing in this
module switches paths for the whole process.

For JAX, :func:`jit_step` is the compiled path of the functional API: ``jax.jit`` of the same
step with the parameter and momentum buffers donated.

Every path is atomic: :func:`prepare_inplace` does everything that can fail (validation, the κ
or its recording, result shapes, NumPy's floating-point traps of the caller, on every thread,
with a dry run on copies where they could raise) and writes nothing; :func:`commit_all` writes,
and cannot fail (copies of validated results, or code that runs no Python κ, traps off), with a
Ctrl-C held back meanwhile by :func:`interrupts_deferred`. torch's compiled groups run as one
``torch.compile`` call that computes all of them before its first write, ahead of every other
commit. See docs/execution.md ("Every path is atomic").

The conformance suite runs every path against the reference.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import functools
import os
import signal
import sys
import threading
import types
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..core import kappa as _kappa_module
from ..core import validation as _check
from ..core.array_api import Array, _plain_torch_types, array_namespace, write_inplace
from ..core.caches import BoundedCache, register_clear_hook
from ..core.step import Hyper, update_leaves
from . import kernels as _kernels
from .packed import PACKED_MAX_ELEMENTS, compute_packed, packable, write_packed

__all__ = ["EXECUTIONS", "DEFAULT_CHUNK", "run_inplace", "chunkable", "prepare_inplace",
           "commit_all", "Pending", "interrupts_deferred", "ExecutionRecord"]

EXECUTIONS = _check.EXECUTIONS
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
_POOL_LOCK = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """The thread pool of the chunked NumPy path and the numba kernel (made on first use, grown
    when more threads are asked for; shut down at exit and by :func:`lionk.clear_caches`)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < threads:  # noqa: SLF001
            old, _POOL = _POOL, ThreadPoolExecutor(max_workers=threads,
                                                   thread_name_prefix="lionk")
            if old is not None:
                old.shutdown(wait=False)
        return _POOL


def shutdown_pool() -> None:
    """Shut the thread pool down (waiting for running pieces); the next chunked step makes a
    new one. Registered with :mod:`atexit` and :func:`lionk.clear_caches`."""
    global _POOL
    with _POOL_LOCK:
        old, _POOL = _POOL, None
    if old is not None:
        old.shutdown(wait=True)


atexit.register(shutdown_pool)
register_clear_hook(shutdown_pool)


class ExecutionRecord:
    """How one optimizer's steps run: the path asked for, the path the last step took (with
    the kernel or program behind it), and every fallback with its reason. Kept per optimizer
    (``lionk.LionK``; per param group in ``lionk.torch.LionK``) and passed to
    :func:`prepare_inplace`; :func:`commit_all` updates it when the step is written (a step
    that raises records nothing). A failure (``torch.compile`` raising, a kernel refused)
    changes this optimizer's path only. ``as_dict()`` is what ``opt.execution_report()``
    returns."""

    __slots__ = ("requested", "path", "detail", "fallbacks", "compile_failed", "steps")

    def __init__(self, requested: str = "auto") -> None:
        self.requested = requested
        self.path: str | None = None
        self.detail = ""
        self.fallbacks: list[str] = []  # distinct reasons, oldest first (at most 8)
        self.compile_failed: str | None = None  # torch.compile raised: not tried again
        self.steps = 0

    def ran(self, path: str, detail: str = "") -> str:
        self.path, self.detail = path, detail
        self.steps += 1
        return path

    def fell_back(self, why: str) -> None:
        if why not in self.fallbacks:
            self.fallbacks.append(why)
            del self.fallbacks[:-8]

    def as_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "path": self.path, "detail": self.detail,
                "fallbacks": list(self.fallbacks), "steps": self.steps}


@functools.lru_cache(maxsize=1)
def default_threads() -> int:
    """The cores this process may run on (at most 8); looked up once (a system call per step
    costs more than a small step), again after :func:`lionk.clear_caches`."""
    try:
        return max(1, min(len(os.sched_getaffinity(0)), 8))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, min(os.cpu_count() or 1, 8))


register_clear_hook(default_threads.cache_clear)


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
# NumPy "auto" runs the numba kernel from this many elements on: below it the first step's
# compilation (about 1 s per (κ, dtypes) and process; numba's disk cache makes later processes
# faster) outweighs what it saves over eager NumPy (a few µs per 64K elements)
NUMPY_KERNEL_MIN_ELEMENTS = 1 << 16


def _is_torch(a: Array) -> bool:
    return type(a).__module__.startswith("torch")


def _is_cupy(a: Array) -> bool:
    return type(a).__module__.startswith("cupy")


def _auto_path(xs: Sequence[Array], gs: Sequence[Array], ms: Sequence[Array], kappa: Any,
               record: ExecutionRecord) -> str:
    if getattr(kappa, "auto_eager", False):
        # matrix κ (nuclear: SVD or Newton-Schulz, whose rounding is part of its definition)
        return "eager"
    if xs and all(_is_cupy(a) for a in xs):
        return "compiled" if kappa.separable else "eager"
    if all(type(a).__module__ == "numpy" for a in xs):
        n = sum(int(a.size) for a in xs)
        if n >= NUMPY_KERNEL_MIN_ELEMENTS and kappa.separable:
            return "compiled"  # the numba kernel; prepare_inplace falls back when it cannot
        return _numpy_fallback(xs, gs, ms, kappa)
    if xs and all(_is_torch(a) for a in xs):
        if (kappa.separable and _builtin_kappa(kappa) and xs[0].device.type == "cpu"
                and _kernels.numba_available()):
            return "numba"  # the numba kernel on the tensors' memory; _torch_auto if it cannot
        return _torch_auto(xs, gs, ms, kappa, record)
    return "eager"


def _torch_auto(xs: Sequence[Array], gs: Sequence[Array], ms: Sequence[Array], kappa: Any,
                record: ExecutionRecord) -> str:
    """torch "auto" without the numba kernel (GPU tensors, a norm or user κ, no numba):
    torch.compile for large steps, chunks for medium ones, one flat array per dtype for
    several small tensors, else eager."""
    n = sum(int(a.numel()) for a in xs)
    if n >= COMPILE_MIN_ELEMENTS and record.compile_failed is None:
        return "compiled"
    if n >= 4 * TORCH_CHUNK and chunkable(xs, gs, ms, kappa):
        return "chunked"
    if len(xs) > 1 and n < PACKED_MAX_ELEMENTS and packable(xs, kappa):
        return "packed"
    return "eager"


TORCH_CHUNK = 1 << 16  # torch's per-operation dispatch cost wants larger pieces than numpy's


def _numpy_fallback(xs: Sequence[Array], gs: Sequence[Array], ms: Sequence[Array],
                    kappa: Any) -> str:
    """NumPy "auto" without the numba kernel: chunked where it applies and pays, else eager."""
    big = sum(int(a.size) for a in xs) >= NUMPY_CHUNK_MIN_ELEMENTS
    return "chunked" if big and chunkable(xs, gs, ms, kappa) else "eager"


def run_inplace(xs: Sequence[Array], gs: Sequence[Array], ms: Sequence[Array], h: Hyper,
                kappa: Any, *, execution: str = "auto", chunk_size: int | None = None,
                threads: int | None = None, names: Any = None,
                record: ExecutionRecord | None = None) -> str:
    """Compute the step and write it into ``xs`` and ``ms``; returns the path that ran.

    ``"auto"`` follows the rule in this module's docstring (and docs/execution.md).
    ``chunk_size``/``threads`` default per backend (NumPy: sized from a scratch budget of 1% of
    the parameters, 8K-64K elements, over all cores; torch: 64K elements, one Python thread,
    torch's own intra-op threads). ``record`` (one per optimizer) receives the path that ran,
    what ran it and the reason of any fallback.

    Atomic: :func:`prepare_inplace` (everything that can fail) then :func:`commit_all`
    (writes only), with a Ctrl-C that arrives while writing delivered after the write. A call
    that raises has written nothing. ``names`` label the leaves in error messages.
    """
    pending = prepare_inplace(xs, gs, ms, h, kappa, execution=execution, chunk_size=chunk_size,
                              threads=threads, names=names, record=record)
    with interrupts_deferred():
        return commit_all([pending])[0]


# ---------------------------------------------------------------------------------------------
# Atomic steps: compute (may fail, writes nothing), then commit (writes, cannot fail).


class Pending:
    """A step computed (or made ready) but not yet written; :func:`commit_all` writes it.

    Everything that can fail ran in :func:`prepare_inplace`: validation, κ evaluation (or its
    recording), the result shapes, the caller's floating-point traps, scratch allocation. The
    commit copies computed results, or runs code that evaluates no Python κ (a recorded NumPy
    program, the numba kernel) with floating-point traps off. The one exception is the torch
    ``torch.compile`` path, whose compiled function computes everything before its first write
    (so a failure inside it, e.g. a κ raising while traced, writes nothing): :func:`commit_all`
    runs it before any other commit.

    ``detail`` (what runs the step: ``"numba kernel"``, ``"recorded program"``, ...) and
    ``fallbacks`` (why another path than the one chosen first runs) go into ``record`` (the
    optimizer's :class:`ExecutionRecord`) when the step is written.
    """

    __slots__ = ("path", "write", "compiled", "detail", "fallbacks", "record")

    def __init__(self, path: str, write: Any = None, compiled: Any = None,
                 detail: str = "") -> None:
        self.path = path
        self.write = write  # () -> None, cannot fail
        self.compiled = compiled  # torch.compile: (xs, gs, ms, h, kappa, execution, names)
        self.detail = detail
        self.fallbacks: list[str] = []
        self.record: ExecutionRecord | None = None


def commit_all(pendings: Sequence[Pending]) -> list[str]:
    """Write every pending step; returns each one's path. Each pending's
    :class:`ExecutionRecord` then receives the path that ran, what ran it and its fallbacks.

    The torch ``torch.compile`` steps among them run first, in one compiled call that computes
    every one of them before writing any; if it raises, nothing at all has been written. (With
    ``execution="auto"`` a compilation failure falls back to computing those steps another way,
    still before anything is written, and is kept in each of their records: those optimizers
    do not try ``torch.compile`` again.) The other commits cannot fail. Call it inside
    :func:`interrupts_deferred` together with the caller's own counters.
    """
    pendings = list(pendings)
    compiled = [i for i, p in enumerate(pendings) if p.compiled is not None]
    if compiled:
        groups = [pendings[i].compiled for i in compiled]
        try:
            _run_torch_compiled_groups(groups)
        except Exception as exc:
            if any(g[5] != "auto" for g in groups):
                raise
            reason = f"{type(exc).__name__}: {exc}"
            for i in compiled:
                rec = pendings[i].record
                if rec is not None:
                    rec.compile_failed = reason
            warnings.warn(f"lionk: torch.compile failed ({reason}); this optimizer runs the "
                          "step eagerly from now on (opt.execution_report())", RuntimeWarning,
                          stacklevel=3)
            for i, (xs, gs, ms, h, kappa, _, names) in zip(compiled, groups):
                old = pendings[i]
                path = "chunked" if chunkable(xs, gs, ms, kappa) else "eager"
                new = prepare_inplace(xs, gs, ms, h, kappa, execution=path, names=names,
                                      record=old.record)
                new.fallbacks[:0] = [*old.fallbacks, (
                    f"compiled -> {path}: torch.compile failed ({reason[:300]}); not tried "
                    "again by this optimizer")]
                pendings[i] = new
    for p in pendings:
        if p.write is not None:
            p.write()
    for p in pendings:
        if p.record is not None:
            for why in p.fallbacks:
                p.record.fell_back(why)
            p.record.ran(p.path, p.detail)
    return [p.path for p in pendings]


class interrupts_deferred:  # noqa: N801 - used as a function: ``with interrupts_deferred():``
    """Hold back Ctrl-C (SIGINT) while a step is written: a ``KeyboardInterrupt`` that arrives
    meanwhile is raised when the block ends (the step then complete, counters included). A
    second Ctrl-C raises at once. Only in the main thread and when SIGINT has Python's default
    handler (a program's own handler is left alone). Costs about 6 µs (two ``signal.signal``)."""

    __slots__ = ("old", "received")

    def __enter__(self) -> None:
        self.old: Any = None
        self.received = False
        if threading.get_ident() != _MAIN_THREAD_ID:
            return
        old = _set_handler(signal.SIGINT, self._handler)
        if old is not signal.default_int_handler:  # the program's own handler: leave it be
            _set_handler(signal.SIGINT, old)
            return
        self.old = old

    def _handler(self, signum: int, frame: Any) -> None:
        if self.received:
            raise KeyboardInterrupt
        self.received = True

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.old is None:
            return
        _set_handler(signal.SIGINT, self.old)
        if self.received and exc_type is None:
            raise KeyboardInterrupt


_MAIN_THREAD_ID = threading.main_thread().ident
try:  # the C function under signal.signal, without its enum conversions (about 2 µs a call)
    from _signal import signal as _set_handler  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - not CPython
    _set_handler = signal.signal


def _label(names: Any, i: int) -> str:
    """The name of leaf ``i``: ``names[i]``, or ``names(i)`` for a function (names are built
    only for an error message)."""
    if callable(names):
        return str(names(i))
    return names[i] if names is not None and i < len(names) else f"leaf {i}"


def _chunk_label(names: Any, leaf: int, sl: slice, i: int = 0) -> str:
    """The name of elements ``sl`` of leaf ``leaf`` (built only for an error message)."""
    return f"{_label(names, leaf)} (elements {sl.start}:{sl.stop})"


def check_results(xs: Sequence[Array], ms: Sequence[Array], new_xs: Sequence[Array],
                  new_ms: Sequence[Array], kappa: Any, names: Any) -> None:
    """Raise (naming κ and the leaf) unless every result has its destination's shape and
    dtype. Single-process paths do not need it (``update_leaves`` checks each ∇K output before
    it computes x' and m'); distributed Lion does, for the aggregated directions it applies."""
    for i, (x, m, nx, nm) in enumerate(zip(xs, ms, new_xs, new_ms)):
        for label, dst, src in (("params", x, nx), ("momentum", m, nm)):
            shape = getattr(src, "shape", None)
            if shape is None or tuple(shape) != tuple(dst.shape):
                raise ValueError(
                    f"kappa {getattr(kappa, 'name', kappa)!r}: the step's new {label} for "
                    f"{_label(names, i)} has shape {None if shape is None else tuple(shape)}; "
                    f"expected {tuple(dst.shape)}: does the kappa's grad return an array of its "
                    "input's shape? Nothing was written"
                )
            if getattr(src, "dtype", None) != dst.dtype:
                raise TypeError(
                    f"kappa {getattr(kappa, 'name', kappa)!r}: the step's new {label} for "
                    f"{_label(names, i)} has dtype {getattr(src, 'dtype', None)}; expected "
                    f"{dst.dtype}. Nothing was written"
                )


def _fp_settings() -> tuple[Any, Any]:
    return np.geterr(), np.geterrcall()


def _runtime_warnings_raise() -> bool:
    """True when a ``warnings`` filter may turn a RuntimeWarning (numpy's "overflow encountered
    in ...") into an exception (conservative: any "error" filter that may match)."""
    for action, msg, category, module, lineno in warnings.filters:
        if not issubclass(RuntimeWarning, category):
            continue
        if action == "error":
            return True
        if msg is None and module is None and not lineno:
            return False  # a catch-all for RuntimeWarning decides first
    return False


def fp_may_raise(err: dict[str, str]) -> bool:
    """True when NumPy's floating-point settings ``err`` (``np.geterr()``) may turn a
    floating-point event into an exception (or a user callback)."""
    modes = set(err.values())
    if modes & {"raise", "call", "log"}:
        return True
    return "warn" in modes and _runtime_warnings_raise()


def prepare_inplace(xs: Sequence[Array], gs: Sequence[Array], ms: Sequence[Array], h: Hyper,
                    kappa: Any, *, execution: str = "auto", chunk_size: int | None = None,
                    threads: int | None = None, names: Any = None,
                    record: ExecutionRecord | None = None) -> Pending:
    """The compute phase of :func:`run_inplace`: everything that can fail, nothing written.
    ``record`` (the optimizer's, else a new one) decides ``"auto"`` with what it remembers (a
    ``torch.compile`` failure) and is updated by :func:`commit_all`."""
    _check.execution(execution)
    if record is None:
        record = ExecutionRecord(execution)
    fallbacks: list[str] = []
    pending = _prepare(xs, gs, ms, h, kappa, execution, chunk_size, threads, names, record,
                       fallbacks)
    pending.record = record
    pending.fallbacks[:0] = fallbacks
    return pending


def _prepare(xs: Sequence[Array], gs: Sequence[Array], ms: Sequence[Array], h: Hyper,
             kappa: Any, execution: str, chunk_size: int | None, threads: int | None,
             names: Any, record: ExecutionRecord,
             fallbacks: list[str]) -> Pending:
    path = _auto_path(xs, gs, ms, kappa, record) if execution == "auto" else execution
    if path == "chunked" and not chunkable(xs, gs, ms, kappa):
        if not kappa.separable:
            raise ValueError(
                "execution='chunked' needs an elementwise (separable) kappa; received kappa "
                f"{kappa.name!r} (separable=False); use 'eager' or 'auto'"
            )
        bad = next(i for i, (x, g, m) in enumerate(zip(xs, gs, ms))
                   if _flat_views([x], [g], [m]) is None)
        raise ValueError(
            f"{_label(names, bad)}: execution='chunked' needs contiguous arrays (it walks flat "
            "views of them); received a non-contiguous param, gradient or momentum; use "
            "'eager' or 'auto' for it"
        )
    if path == "numba":
        # torch CPU tensors under "auto": the numba kernel reads and writes their memory
        ready = _numba_kernel(xs, gs, ms, h, kappa, threads, names)
        if not isinstance(ready, str):
            return Pending("compiled", ready, detail="numba kernel")
        path = _torch_auto(xs, gs, ms, kappa, record)
        fallbacks.append(f"compiled -> {path}: the numba kernel {ready}")
    torch_arrays = bool(xs) and _is_torch(xs[0])
    if chunk_size is None and torch_arrays:
        chunk_size = TORCH_CHUNK
    if threads is None and torch_arrays:
        threads = 1
    if path == "compiled" and xs and _is_cupy(xs[0]):
        kernels = _cupy_kernels(xs, ms, h, kappa)
        if kernels is not None:
            def write_cupy() -> None:
                for kernel, x, g, m in zip(kernels, xs, gs, ms):
                    kernel(g, x, m)  # reads x, g, m once and writes x and m in place: one pass
            return Pending(path, write_cupy, detail="fused CuPy ElementwiseKernel")
        if execution == "compiled":
            raise ValueError(
                "execution='compiled' on CuPy arrays runs one fused elementwise kernel and needs "
                f"an elementwise (separable) kappa and float32/float64 arrays; received kappa "
                f"{kappa.name!r} (separable={kappa.separable}), dtypes "
                f"{sorted({str(x.dtype) for x in xs} | {str(m.dtype) for m in ms})}"
            )
        fallbacks.append("compiled -> eager: no fused CuPy kernel for this kappa and dtypes")
        path = "eager"
    if path == "compiled" and xs and type(xs[0]) is np.ndarray:
        if execution == "compiled":
            for i, (x, g, m) in enumerate(zip(xs, gs, ms)):
                if _flat_views([x], [g], [m]) is None:
                    raise ValueError(
                        f"{_label(names, i)}: execution='compiled' on NumPy arrays needs "
                        "C-contiguous arrays; received a non-contiguous param, gradient or "
                        "momentum; use 'eager' or 'auto' for it"
                    )
        ready = _numba_kernel(xs, gs, ms, h, kappa, threads, names)
        if not isinstance(ready, str):
            return Pending(path, ready, detail="numba kernel")
        if execution == "compiled":
            raise ValueError(f"execution='compiled' on NumPy arrays {ready}")
        path = _numpy_fallback(xs, gs, ms, kappa)
        fallbacks.append(f"compiled -> {path}: the numba kernel {ready}")
    if path == "compiled":
        _check_torch_compilable(xs, gs, ms)
        fails = getattr(kappa, "torch_compile_fails", None)
        if fails:  # a κ that states torch.compile cannot run its step ("auto" runs it eagerly)
            raise ValueError(
                f"execution='compiled' cannot run kappa {kappa.name!r} on torch tensors: "
                f"{fails}; use 'eager' or 'auto'"
            )
        return Pending(path, compiled=(xs, gs, ms, h, kappa, execution, names),
                       detail="torch.compile")
    if path == "packed":
        if not (all(_is_torch(a) for a in (*xs, *gs, *ms)) and packable(xs, kappa)):
            raise ValueError(
                "execution='packed' steps torch tensors as one flat array per dtype and device "
                "and needs an elementwise (separable) kappa and torch tensors; received kappa "
                f"{kappa.name!r} (separable={kappa.separable}), array types "
                f"{sorted({type(a).__name__ for a in (*xs, *gs, *ms)})}"
            )
        packed = compute_packed(xs, gs, ms, h, kappa, names)
        return Pending(path, lambda: write_packed(xs, ms, packed),
                       detail="one flat array per dtype and device")
    if path == "eager":
        # update_leaves checks every ∇K output (check_directions) before it computes x', m'
        new_xs, new_ms = update_leaves(xs, gs, ms, h, kappa, paths=names)
        return Pending(path, lambda: _write_all(xs, ms, new_xs, new_ms))
    return _prepare_chunked(xs, gs, ms, h, kappa, chunk_size, threads, names)


def _write_all(xs: Sequence[Array], ms: Sequence[Array], new_xs: Sequence[Array],
               new_ms: Sequence[Array]) -> None:
    """Copy validated results (same shapes and dtypes) into place: cannot fail."""
    with np.errstate(all="ignore"):
        for dst, src in zip(xs, new_xs):
            write_inplace(dst, src)
        for dst, src in zip(ms, new_ms):
            write_inplace(dst, src)


def _prepare_chunked(xs: Sequence[Array], gs: Sequence[Array], ms: Sequence[Array], h: Hyper,
                     kappa: Any, chunk_size: int | None, threads: int | None,
                     names: Any) -> Pending:
    flats = _flat_views(xs, gs, ms)
    assert flats is not None  # checked by chunkable
    # Split the concatenated index range [0, total) into one span per thread; each thread walks
    # its span chunk by chunk, making views as it goes (nothing proportional to N is built).
    sizes = [int(fx.shape[0]) for fx, _, _ in flats]
    nthreads = default_threads() if threads is None else max(1, int(threads))
    programs = _per_dtype_pair(flats, lambda dt, mdt: _tape_program(h, kappa, dt, mdt))
    if chunk_size is None:
        chunk_size = _numpy_chunk(flats, programs, nthreads)
    chunk = chunk_size
    nthreads = max(1, min(nthreads, sum(sizes) // (2 * chunk)))
    err, call = _fp_settings()
    if all(p is not None for p in programs):
        # Recorded programs (NumPy): the κ was evaluated when recording; running a program runs
        # NumPy ufuncs only. Scratch made now; the caller's floating-point traps checked by a
        # dry run on copies when they could raise; then the commit runs in place, traps off.
        if fp_may_raise(err):
            _run_in_threads(sizes, nthreads, lambda lo, hi: _dry_span(
                flats, sizes, lo, hi, chunk, programs, err, call, names))
            err, call = {k: "ignore" for k in err}, None
        bounds = _bounds(sum(sizes), nthreads)
        scratch = [_span_scratch(flats, sizes, lo, hi, chunk, programs)
                   for lo, hi in zip(bounds, bounds[1:])]

        def write_programs() -> None:
            _run_in_threads(sizes, nthreads, lambda lo, hi: _run_span(
                flats, sizes, lo, hi, chunk, programs, scratch[bounds.index(lo)], err, call))
        return Pending("chunked", write_programs, detail="recorded program")
    if _builtin_kappa(kappa) and not (type(flats[0][0]) is np.ndarray and fp_may_raise(err)):
        # A built-in κ on validated arrays runs elementwise array operations only, and cannot
        # fail (no floating-point traps on torch; none that can raise here on NumPy): the
        # chunks are computed and written in place in the commit (the temporaries stay
        # chunk-sized; full-size results would cost page faults: measured 10x on torch CPU).
        def write_chunks() -> None:
            _run_in_threads(sizes, nthreads, lambda lo, hi: _inplace_span(
                flats, sizes, lo, hi, chunk, h, kappa, err, call))
        return Pending("chunked", write_chunks, detail="built-in κ, chunks written in the commit")
    # A user κ evaluated chunk by chunk (it may raise at any chunk): the results are computed
    # into new arrays first (the temporaries stay chunk-sized), then copied into place.
    outs = [(_empty_like(fx), _empty_like(fm)) for fx, _, fm in flats]
    _run_in_threads(sizes, nthreads, lambda lo, hi: _compute_span(
        flats, outs, sizes, lo, hi, chunk, h, kappa, err, call, names))
    return Pending("chunked", lambda: _write_all([fx for fx, _, _ in flats],
                                                 [fm for _, _, fm in flats],
                                                 [o[0] for o in outs], [o[1] for o in outs]),
                   detail="update_leaves per chunk")


def _empty_like(a: Array) -> Array:
    if type(a) is np.ndarray:
        return np.empty_like(a)
    return array_namespace(a).empty_like(a)


def _bounds(total: int, nthreads: int) -> list[int]:
    return [total * i // nthreads for i in range(nthreads + 1)]


def _run_in_threads(sizes: list[int], nthreads: int, run_span: Any) -> None:
    """Split the elements of leaves of ``sizes`` laid end to end into ``nthreads`` contiguous
    spans and call ``run_span(lo, hi)`` on each, in the shared thread pool. Waits for every span
    before raising the first span's error."""
    total = sum(sizes)
    nthreads = max(1, nthreads)
    bounds = _bounds(total, nthreads)
    if nthreads == 1:
        run_span(0, total)
        return
    futures = [_pool(nthreads).submit(run_span, lo, hi) for lo, hi in zip(bounds, bounds[1:])]
    concurrent.futures.wait(futures)
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
    """The recorded program of the step for NumPy chunks (lionk._tape), bound to these
    coefficients, or None (a step that cannot be recorded: then update_leaves runs per chunk)."""
    from . import tape as _tape

    program = _tape.program_for(update_leaves, h, kappa, dtype, mdtype)
    return None if program is None else program.bind(h)


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


def _span_scratch(flats: list[tuple[Array, Array, Array]], sizes: list[int], lo: int, hi: int,
                  chunk_size: int, programs: list[Any]) -> dict[int, list[Array]]:
    """The scratch buffers of span ``[lo, hi)``: per program it meets, made before any write."""
    scratch: dict[int, list[Array]] = {}
    for leaf, _, _ in _pieces(sizes, lo, hi):
        program = programs[leaf]
        if id(program) not in scratch:
            scratch[id(program)] = program.buffers(min(chunk_size, hi - lo))
    return scratch


def _run_span(flats: list[tuple[Array, Array, Array]], sizes: list[int], lo: int, hi: int,
              chunk_size: int, programs: list[Any], scratch: dict[int, list[Array]],
              err: Any, call: Any) -> None:
    """Run the recorded step in place on elements ``[lo, hi)`` of the leaves laid end to end,
    chunk by chunk (NumPy's floating-point settings ``err``/``call`` in this thread)."""
    with np.errstate(call=call, **err):
        for leaf, a, b in _pieces(sizes, lo, hi):
            fx, fg, fm = flats[leaf]
            program = programs[leaf]
            bufs = scratch[id(program)]
            run, full = program.run, len(bufs[0]) if bufs else chunk_size
            for s in range(a, b, chunk_size):
                e = min(s + chunk_size, b)
                if e - s == full:
                    run(fx[s:e], fg[s:e], fm[s:e], *bufs)
                else:
                    run(fx[s:e], fg[s:e], fm[s:e], *[buf[: e - s] for buf in bufs])


def _dry_span(flats: list[tuple[Array, Array, Array]], sizes: list[int], lo: int, hi: int,
              chunk_size: int, programs: list[Any], err: Any, call: Any,
              names: Any) -> None:
    """The recorded step on copies of elements ``[lo, hi)``, under the caller's floating-point
    settings: raises (naming the leaf) where the step would trap; writes nothing."""
    with np.errstate(call=call, **err):
        for leaf, a, b in _pieces(sizes, lo, hi):
            fx, fg, fm = flats[leaf]
            program = programs[leaf]
            bufs = program.buffers(min(chunk_size, b - a))
            for s in range(a, b, chunk_size):
                e = min(s + chunk_size, b)
                try:
                    program.run(fx[s:e].copy(), fg[s:e], fm[s:e].copy(),
                                *[buf[: e - s] for buf in bufs])
                except FloatingPointError as exc:
                    raise FloatingPointError(
                        f"{_label(names, leaf)}: {exc} (np.seterr); nothing was written"
                    ) from None


def _builtin_kappa(kappa: Any) -> bool:
    """True for lionk's own κ (the classes of ``lionk.core.kappa`` other than the generic
    ``Kappa`` built from user callables), not modified on the instance."""
    t = type(kappa)
    return (t.__module__ == _KAPPA_MODULE and t is not _Kappa
            and not (vars(kappa).keys() & _OVERRIDES))


_KAPPA_MODULE = _kappa_module.__name__
_Kappa = _kappa_module.Kappa
_OVERRIDES = frozenset({"grad", "tree_grad", "grad_given"})


def _inplace_span(flats: list[tuple[Array, Array, Array]], sizes: list[int], lo: int, hi: int,
                  chunk_size: int, h: Hyper, kappa: Any, err: Any, call: Any) -> None:
    """The step on elements ``[lo, hi)``, chunk by chunk, written in place (a built-in κ)."""
    with np.errstate(call=call, **err):
        for leaf, a, b in _pieces(sizes, lo, hi):
            fx, fg, fm = flats[leaf]
            for s in range(a, b, chunk_size):
                sl = slice(s, min(s + chunk_size, b))
                x, m = fx[sl], fm[sl]
                (nx,), (nm,) = update_leaves([x], [fg[sl]], [m], h, kappa)
                write_inplace(x, nx)
                write_inplace(m, nm)


def _compute_span(flats: list[tuple[Array, Array, Array]], outs: list[tuple[Array, Array]],
                  sizes: list[int], lo: int, hi: int, chunk_size: int, h: Hyper, kappa: Any,
                  err: Any, call: Any, names: Any) -> None:
    """The step on elements ``[lo, hi)``, chunk by chunk, results into ``outs`` (not in place)."""
    with np.errstate(call=call, **err):
        for leaf, a, b in _pieces(sizes, lo, hi):
            fx, fg, fm = flats[leaf]
            ox, om = outs[leaf]
            for s in range(a, b, chunk_size):
                sl = slice(s, min(s + chunk_size, b))
                x, m = fx[sl], fm[sl]
                (nx,), (nm,) = update_leaves(
                    [x], [fg[sl]], [m], h, kappa,
                    paths=functools.partial(_chunk_label, names, leaf, sl))
                write_inplace(ox[sl], nx)
                write_inplace(om[sl], nm)


# ---------------------------------------------------------------------------------------------
# NumPy: the fused kernel compiled by numba (lionk.execution.kernels).

NUMPY_KERNEL_MIN_PER_THREAD = 1 << 16  # elements; below this one thread is faster than two

_NUMPY_FLOATS = (np.dtype("float32"), np.dtype("float64"))


def _address(a: Any) -> tuple[int, np.dtype] | None:
    """``(address of the first element, dtype)`` of a NumPy array the numba kernel can read and
    write through that address (C-contiguous, aligned, native float32/float64), else None.
    (CPU torch tensors are tested in :func:`_numba_kernel`, three at a time.)"""
    if isinstance(a, np.ndarray):
        flags = a.flags
        if flags.c_contiguous and flags.aligned and a.dtype in _NUMPY_FLOATS:
            return int(a.__array_interface__["data"][0]), a.dtype
    return None


def _torch_floats() -> tuple[tuple[type, ...], dict[Any, np.dtype], Any]:
    """(plain torch tensor types, {torch float32/float64: NumPy dtype}, torch.strided); empty
    before torch is imported (never imports it)."""
    global _TORCH_FLOATS
    if not _TORCH_FLOATS[0]:
        types = _plain_torch_types()
        if types:
            torch = sys.modules["torch"]
            _TORCH_FLOATS = (types, {torch.float32: np.dtype("float32"),
                                     torch.float64: np.dtype("float64")}, torch.strided)
    return _TORCH_FLOATS


_TORCH_FLOATS: tuple[tuple[type, ...], dict[Any, np.dtype], Any] = ((), {}, None)


def _dtype_name(a: Any) -> str:
    return str(a.dtype).rpartition(".")[2]


def _why_no_kernel(x: Any, g: Any, m: Any) -> str:
    """Why the numba kernel cannot step the leaf ``(x, g, m)``: its dtypes, or its memory."""
    dts = sorted({_dtype_name(a) for a in (x, g, m)} - {"float32", "float64"})
    if dts:
        return f"has no kernel for dtypes {'/'.join(dts)} (float32 and float64 only)"
    if _dtype_name(g) != _dtype_name(x):
        return (f"needs gradients of the params' dtype; received {_dtype_name(g)} for "
                f"{_dtype_name(x)}")
    return "needs C-contiguous arrays"


def _numba_kernel(xs: Sequence[Array], gs: Sequence[Array], ms: Sequence[Array], h: Hyper,
                  kappa: Any, threads: int | None, names: Any) -> Any:
    """The compute phase of the numba kernel over every leaf (NumPy arrays, or CPU torch
    tensors: the kernel receives addresses only): a function that runs it, or why it cannot
    (a str; nothing written either way).

    Everything that can fail happens here: the kernel is generated, compiled and checked on the
    probes (once per κ and dtypes); when the caller's NumPy settings could raise
    (``np.seterr``), a dry run of the recorded step on copies checks them. The write runs the
    kernel only: it evaluates no Python κ, raises nothing and, like every compiled code,
    ignores NumPy's floating-point settings (traps off).

    The leaves of one (param dtype, momentum dtype) are laid end to end and the kernel steps
    them in one call (``kernel_leaves``: it receives their addresses), split into one
    contiguous span per thread when there are enough elements (the kernel releases the GIL).
    Why Python threads and not numba's ``parallel=True``/``prange``: measured on the 2-core
    machine under load, a ``prange`` region per leaf took 29x the floor on a 148-tensor model
    (each region waits for every OpenMP thread) against 0.7x for these spans, and 1.13x
    against 1.07x on one 2^24 tensor; GNU OpenMP, numba's usual threading layer, is also not
    fork-safe (a training loop's data-loader workers fork)."""
    if not kappa.separable:
        return (f"runs one fused elementwise kernel and needs an elementwise (separable) kappa; "
                f"received kappa {kappa.name!r}")
    if not _kernels.numba_available():
        return "is not available: numba is not installed (pip install 'lionk[numba]')"
    # per (param dtype, momentum dtype): the addresses of params, grads, momenta and the sizes
    groups: dict[tuple[np.dtype, np.dtype], tuple[list[int], list[int], list[int], list[int]]] = {}
    held = []  # arrays made here whose addresses the kernel reads: kept alive until the write
    torch_types, torch_floats, strided = _torch_floats()
    for x, g, m in zip(xs, gs, ms):
        if type(x) in torch_types and type(g) in torch_types and type(m) in torch_types:
            # CPU, float32/float64, dense, contiguous, no lazy negation (real tensors have no
            # lazy conjugation): the three tensors of a leaf at once (a model has hundreds)
            dx, dm = torch_floats.get(x.dtype), torch_floats.get(m.dtype)
            if (dx is not None and dm is not None and g.dtype is x.dtype and x.is_cpu
                    and g.is_cpu and m.is_cpu and x.layout is strided and g.layout is strided
                    and m.layout is strided and x.is_contiguous() and g.is_contiguous()
                    and m.is_contiguous() and not (x.is_neg() or g.is_neg() or m.is_neg())):
                group = groups.get((dx, dm))
                if group is None:
                    group = groups[(dx, dm)] = ([], [], [], [0])
                group[0].append(x.data_ptr())
                group[1].append(g.data_ptr())
                group[2].append(m.data_ptr())
                group[3].append(group[3][-1] + x.numel())
                continue
            return _why_no_kernel(x, g, m)
        if isinstance(g, np.generic):  # numpy's result of arithmetic on 0-d arrays
            g = np.asarray(g)
            held.append(g)
        ax, ag, am = _address(x), _address(g), _address(m)
        if ax is None or ag is None or am is None or ag[1] != ax[1]:
            return _why_no_kernel(x, g, m)
        group = groups.get((ax[1], am[1]))
        if group is None:
            group = groups[(ax[1], am[1])] = ([], [], [], [0])
        group[0].append(ax[0])
        group[1].append(ag[0])
        group[2].append(am[0])
        group[3].append(group[3][-1] + _numel(x))
    coefs = tuple(float(c) for c in h)
    runs: list[tuple[Any, tuple[Any, ...], int]] = []
    for (dt, mdt), (px, pg, pm, starts) in groups.items():  # every kernel ready before a write
        key = (kappa, dt, mdt, type(h.lr) is float)
        kernel = _NUMBA_READY.lookup(key)
        if kernel is None:
            kernel, why = _kernels.numba_kernel(update_leaves, h, kappa, dt, mdt)
            if kernel is None:
                return f"has no kernel for dtypes {dt}/{mdt}: {why}"
            _NUMBA_READY.put(key, kernel)
        args = (np.array(px, dtype=np.int64), np.array(pg, dtype=np.int64),
                np.array(pm, dtype=np.int64), np.array(starts, dtype=np.int64))
        runs.append((kernel.leaves, args, starts[-1]))
    nthreads = default_threads() if threads is None else max(1, int(threads))
    numpy_leaves = isinstance(xs[0], np.ndarray)
    err, call = _fp_settings() if numpy_leaves else ({}, None)
    if numpy_leaves and fp_may_raise(err):
        flats = _flat_views(xs, gs, ms)
        assert flats is not None  # every leaf is C-contiguous (checked above)
        sizes = [int(fx.shape[0]) for fx, _, _ in flats]
        programs = _per_dtype_pair(flats, lambda dt, mdt: _tape_program(h, kappa, dt, mdt))
        if all(p is not None for p in programs):
            _run_in_threads(sizes, 1, lambda lo, hi: _dry_span(
                flats, sizes, lo, hi, DEFAULT_CHUNK, programs, err, call, names))
        else:
            outs = [(np.empty_like(fx), np.empty_like(fm)) for fx, _, fm in flats]
            _run_in_threads(sizes, 1, lambda lo, hi: _compute_span(
                flats, outs, sizes, lo, hi, DEFAULT_CHUNK, h, kappa, err, call, names))
    written = None if numpy_leaves else [*xs, *ms]

    def write() -> None:
        assert held is not None  # referenced here: alive as long as this function
        for leaves, args, total in runs:
            n = max(1, min(nthreads, total // NUMPY_KERNEL_MIN_PER_THREAD))
            if n == 1:
                leaves(*args, 0, total, *coefs)
            else:
                _run_in_threads([total], n, lambda lo, hi, leaves=leaves, args=args:
                                leaves(*args, lo, hi, *coefs))
        if written is not None:
            # torch did not see these writes: tell autograd, as torch's own in-place ops do
            _increment_version(written)

    return write


def _increment_version(tensors: list[Any]) -> None:
    sys.modules["torch"].autograd.graph.increment_version(tensors)


# (κ, param dtype, momentum dtype, float coefficients) -> a numba kernel built and checked on
# the probes: one lookup per step instead of generating the kernel source again
_NUMBA_READY: BoundedCache[Any] = BoundedCache("execution.paths: numba kernels ready", 64)


def _numel(a: Any) -> int:
    return int(a.size) if isinstance(a, np.ndarray) else int(a.numel())


# ---------------------------------------------------------------------------------------------
# CuPy: one fused elementwise kernel per leaf, generated from the recorded step (lionk._kernel).


def _cupy_kernels(xs: Sequence[Array], ms: Sequence[Array], h: Hyper, kappa: Any) -> Any:
    """The fused kernel of every leaf, or None (nothing written) when a leaf has none."""
    if not kappa.separable:
        return None
    from . import kernels as _kernel

    kernels = []
    for x, m in zip(xs, ms):
        kernel = _kernel.cupy_kernel(update_leaves, h, kappa, x.dtype, m.dtype)
        if kernel is None:
            return None
        kernels.append(kernel)
    return kernels


# ---------------------------------------------------------------------------------------------
# torch: torch.compile of the same step.

_TORCH_COMPILED: BoundedCache[Any] = BoundedCache("execution.paths: torch.compile functions", 16)


def _torch_compiled_fn(kappas: tuple[Any, ...]) -> Any:
    """One compiled function for param groups with these κ: it computes every group's update,
    then copies them all into place (a failure while tracing or computing writes nothing)."""
    fn = _TORCH_COMPILED.get(kappas)
    if fn is None:
        import torch

        def fused(groups: list[Any]) -> None:
            results = [update_leaves(xs, gs, ms, Hyper(*coefs), kappa)
                       for (xs, gs, ms, coefs), kappa in zip(groups, kappas)]
            for (xs, _, ms, _), (new_xs, new_ms) in zip(groups, results):
                for dst, src in zip(xs, new_xs):
                    dst.copy_(src)
                for dst, src in zip(ms, new_ms):
                    dst.copy_(src)

        # dynamo keeps its compiled variants (and counts them against its recompile limit) per
        # code object: a code object per κ tuple, so that the variants of one κ (dtypes,
        # shapes) do not evict another's (the conformance suite steps 10 κ in one process)
        global _COMPILED_CODES
        _COMPILED_CODES += 1
        fused = types.FunctionType(
            fused.__code__.replace(co_name=f"lionk_step_{_COMPILED_CODES}"), fused.__globals__,
            f"lionk_step_{_COMPILED_CODES}", fused.__defaults__, fused.__closure__)
        fn = _TORCH_COMPILED.put(kappas, torch.compile(fused, dynamic=False))
    return fn


_COMPILED_CODES = 0


def _check_torch_compilable(xs: Sequence[Array], gs: Sequence[Array],
                            ms: Sequence[Array]) -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not all(isinstance(a, torch.Tensor) for a in (*xs, *gs, *ms)):
        kind = f"{type(xs[0]).__module__}.{type(xs[0]).__name__}" if xs else "no arrays"
        raise ValueError(
            "execution='compiled' needs torch tensors (torch.compile) or NumPy/CuPy arrays (a "
            f"fused kernel); received {kind}; for JAX arrays use lionk.jit_step"
        )


def _plain(t: Any) -> Any:
    """``t`` detached, and a 0-d tensor as a 1-element view of its storage."""
    t = t.detach()
    return t.view(1) if t.dim() == 0 else t


def _run_torch_compiled_groups(groups: Sequence[Any]) -> None:
    """``torch.compile`` of the step over every group ``(xs, gs, ms, h, kappa, ...)`` at once."""
    import sys
    import warnings as _warnings

    torch = sys.modules["torch"]
    packed = []
    for xs, gs, ms, h, _kappa, *_ in groups:
        dev = xs[0].device
        coefs = [c if isinstance(c, torch.Tensor)
                 else torch.tensor(c, dtype=torch.float64, device=dev) for c in h]
        # detach(): plain tensors sharing the parameters' storage, so the compiled code's guards
        # see the same types whether LionK or lionk.torch.LionK (nn.Parameter) calls it. A 0-d
        # tensor goes in as a 1-element view: inductor takes 0-d CPU tensors for scalars, and
        # its copy_ into a 0-d float64 param was lost (the param silently never moved)
        packed.append(([_plain(x) for x in xs], [_plain(g) for g in gs],
                       [_plain(m) for m in ms], coefs))
    kappas = tuple(g[4] for g in groups)
    with _warnings.catch_warnings():
        # dynamo notes that it traces through array-api-compat's lru_cache'd helpers: benign
        _warnings.filterwarnings("ignore",
                                 message="Dynamo detected a call to a `functools.lru_cache`")
        with torch.no_grad():
            _torch_compiled_fn(kappas)(packed)
