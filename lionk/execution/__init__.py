"""Execution: *how* the one step of :mod:`lionk.core.step` runs, never *what* it computes.

* :mod:`lionk.execution.paths` — the path choice (eager, chunked, compiled) and the in-place
  runners;
* :mod:`lionk.execution.tape` — the step recorded once and replayed on chunks with ``out=``
  buffers;
* :mod:`lionk.execution.kernels` — one fused elementwise kernel generated from the recorded step.

Every path is checked against eager :func:`lionk.core.step.update_leaves` (probes before use, and
the conformance suite). Depends on :mod:`lionk.core` only.
"""
