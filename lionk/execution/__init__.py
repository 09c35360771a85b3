"""Execution: *how* the one step of :mod:`lionk.core.step` runs, never *what* it computes.

* :mod:`lionk.execution.paths` — the path choice (eager, chunked, compiled), the in-place
  runners, and the per-optimizer record of what ran (``ExecutionRecord``);
* :mod:`lionk.execution.tape` — the step recorded once per (κ, dtypes) and replayed on chunks
  with ``out=`` buffers, the coefficients as arguments;
* :mod:`lionk.execution.kernels` — one fused elementwise kernel generated from the recorded step
  (numba for NumPy, CuPy for CUDA, an experimental XLA FFI handler for JAX).

Every path is checked against eager :func:`lionk.core.step.update_leaves` (probes before use, and
the conformance suite). Depends on :mod:`lionk.core` only.
"""
