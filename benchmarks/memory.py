"""Peak extra memory of one step, in bytes, and how it was measured.

* NumPy (and anything allocating through Python/NumPy): ``tracemalloc`` peak during one step
  (NumPy reports its data buffers to tracemalloc).
* torch CPU: torch has no CPU allocator statistics outside the profiler, so the step runs once
  under ``torch.profiler`` with ``profile_memory=True``; every CPU allocation and free is an
  event with its size, and the peak of their running sum is the step's peak extra memory.
* torch CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
* JAX: XLA's own accounting of the compiled step, ``compiled.memory_analysis()``: temporaries
  plus outputs not aliased to (donated) inputs. Where the step is a Python function calling
  jitted functions (``lionk.jit_step`` may return one), the jitted functions found in its
  closure are intercepted for one step and each call is analysed the same way; the step's peak
  is the largest call's extra plus the non-aliased outputs of the calls before it. Where no
  jitted function is found the net change of ``jax.live_arrays()`` bytes is reported instead
  (not a peak).

Every function returns ``(bytes or None, method)``; None means "could not be measured" and the
method says why.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import tracemalloc
from collections.abc import Callable
from typing import Any


def tracemalloc_peak(step: Callable[[], None]) -> tuple[int | None, str]:
    was_tracing = tracemalloc.is_tracing()
    if was_tracing:  # pragma: no cover - someone else is tracing
        return None, "n/a (tracemalloc already in use)"
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return max(0, peak - base), "tracemalloc peak"


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the profiler's C++ start/stop lines (fd 2), restore afterwards."""
    try:
        fd = os.dup(2)
    except OSError:  # pragma: no cover
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


def torch_cpu_peak(step: Callable[[], None]) -> tuple[int | None, str]:
    from torch.profiler import ProfilerActivity, profile

    path = tempfile.mktemp(prefix="lionk-bench-", suffix=".json")
    try:
        with _quiet_stderr():
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                step()
            prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f).get("traceEvents", [])
    except Exception as exc:  # noqa: BLE001 - report, never fail the benchmark on this
        return None, f"n/a (torch.profiler memory events unavailable: {type(exc).__name__})"
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)
    mem = [e for e in events if e.get("name") == "[memory]"
           and int(e.get("args", {}).get("Device Type", 0)) == 0]
    running = peak = 0
    for e in sorted(mem, key=lambda e: float(e.get("ts", 0.0))):
        running += int(e["args"].get("Bytes", 0))
        peak = max(peak, running)
    return peak, "torch.profiler CPU allocation events (peak of running sum)"


def torch_cuda_peak(step: Callable[[], None], sync: Callable[[], None]) -> tuple[int | None, str]:
    import torch

    sync()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    sync()
    return max(0, torch.cuda.max_memory_allocated() - base), "torch.cuda.max_memory_allocated"


def jax_compiled_extra(fn: Any, args: tuple[Any, ...]) -> tuple[int | None, str]:
    """temp + output - alias bytes of ``fn.lower(*args).compile()`` (XLA's accounting)."""
    lower = getattr(fn, "lower", None)
    if lower is None:
        return None, "n/a (not a jitted function)"
    try:
        ma = lower(*args).compile().memory_analysis()
    except Exception as exc:  # noqa: BLE001
        return None, f"n/a (memory_analysis failed: {type(exc).__name__})"
    if ma is None:
        return None, "n/a (memory_analysis unavailable)"
    extra = int(ma.temp_size_in_bytes) + int(ma.output_size_in_bytes) - int(ma.alias_size_in_bytes)
    return max(0, extra), "XLA memory_analysis (temp + output - aliased)"


def _is_jitted(obj: Any) -> bool:
    return callable(obj) and hasattr(obj, "lower") and hasattr(obj, "trace")


def _extra_of(ma: Any) -> tuple[int, int]:
    """(extra bytes while the call runs, bytes of its outputs not aliased to inputs)."""
    out = int(ma.output_size_in_bytes) - int(ma.alias_size_in_bytes)
    return max(0, int(ma.temp_size_in_bytes) + out), max(0, out)


def jax_intercepted_extra(fn: Any, step: Callable[[], None]) -> tuple[int | None, str]:
    """Peak extra of one ``step()`` whose function ``fn`` calls jitted functions held in its
    closure: each such call is lowered with its actual arguments and analysed."""
    cells = [c for c in (getattr(fn, "__closure__", None) or ())
             if _is_jitted(getattr(c, "cell_contents", None))]
    if not cells:
        return None, "n/a (no jitted function found)"
    calls: list[tuple[int, int]] = []
    errors: list[str] = []

    def wrap(orig: Any) -> Any:
        def recorder(*args: Any, **kwargs: Any) -> Any:
            try:
                ma = orig.lower(*args, **kwargs).compile().memory_analysis()
                if ma is not None:
                    calls.append(_extra_of(ma))
            except Exception as exc:  # noqa: BLE001
                errors.append(type(exc).__name__)
            return orig(*args, **kwargs)

        return recorder

    originals = [c.cell_contents for c in cells]
    try:
        for c, orig in zip(cells, originals):
            c.cell_contents = wrap(orig)
        step()
    finally:
        for c, orig in zip(cells, originals):
            c.cell_contents = orig
    if errors or not calls:
        return None, f"n/a (memory_analysis of the inner jitted calls failed: {errors})"
    running = peak = 0
    for extra, kept in calls:
        peak = max(peak, running + extra)
        running += kept
    return peak, f"XLA memory_analysis of the {len(calls)} jitted calls of one step"


def jax_live_delta(step: Callable[[], None], sync: Callable[[], None]) -> tuple[int | None, str]:
    import jax

    def live() -> int:
        return sum(a.nbytes for a in jax.live_arrays() if not a.is_deleted())

    sync()
    before = live()
    step()
    sync()
    return max(0, live() - before), "jax.live_arrays net change (not a peak)"
