"""Benchmark harness for lionk: ``python -m benchmarks`` (see benchmarks/README.md).

Times one Lion-κ step of every lionk execution path and of its peers (lion_pytorch, torch AdamW
fused, optax.lion, hand-written references) against the memory-bandwidth floor measured in the
same run, and writes ``results.md``, ``results.json`` and ``results.png``.
"""
