"""Per-call overhead of lionk.step / lionk.LionK.step on small NumPy problems (issue 12).

Interleaves, in one process (CPU time of the thread), a hand-written NumPy Lion (the same formulas, new arrays), the
functional ``lionk.step`` and the in-place ``lionk.LionK(...).step`` on: one array of 40 and of
1,000 float32 elements, and the six arrays of the digits MLP. Prints the best of several repeats
(µs per call) and the ratios to the hand-written Lion.

    PYTHONPATH=. python -m benchmarks.small_overhead [--repeats 15] [--number 1000] [--dtype float32]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

import lionk

DIGITS = [(64, 128), (128,), (128, 64), (64,), (64, 10), (10,)]


def hand_lion(xs: list[Any], gs: list[Any], ms: list[Any], lr: float = 1e-4,
              wd: float = 0.0) -> tuple[list[Any], list[Any]]:
    new_x, new_m = [], []
    for x, g, m in zip(xs, gs, ms):
        c = 0.9 * m + 0.1 * g
        new_x.append((1 - lr * wd) * x - lr * np.sign(c))
        new_m.append(0.99 * m + 0.01 * g)
    return new_x, new_m


def cases() -> dict[str, list[tuple[int, ...]]]:
    return {"40": [(40,)], "1000": [(1000,)], "digits MLP (6 arrays)": DIGITS}


def _best(fn: Any, number: int) -> float:
    # CPU time of this thread: on a shared machine, wall time also counts other processes'
    # turns; NumPy runs these small ufuncs in this thread
    t0 = time.thread_time()
    for _ in range(number):
        fn()
    return (time.thread_time() - t0) / number * 1e6


def contenders(shapes: list[tuple[int, ...]], rng: Any, dtype: Any) -> dict[str, Any]:
    xs = [rng.standard_normal(s).astype(dtype) for s in shapes]
    gs = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ms = [rng.standard_normal(s).astype(dtype) for s in shapes]
    params = xs[0] if len(xs) == 1 else list(xs)
    grads = gs[0] if len(gs) == 1 else list(gs)
    state = lionk.State(0, ms[0] if len(ms) == 1 else list(ms), 0)
    opt = lionk.LionK([x.copy() for x in xs] if len(xs) > 1 else xs[0].copy())
    return {
        "hand": lambda: hand_lion(xs, gs, ms),
        "step": lambda: lionk.step(params, grads, state),
        "LionK": lambda: opt.step(grads),
    }


def run(repeats: int, number: int, dtype: Any = np.float32) -> list[tuple[str, float, float, float]]:
    rng = np.random.default_rng(0)
    rows = []
    for name, shapes in cases().items():
        fns = contenders(shapes, rng, dtype)
        for f in fns.values():  # warm up (kernels, caches)
            for _ in range(20):
                f()
        best = dict.fromkeys(fns, float("inf"))
        for _ in range(repeats):
            for k, f in fns.items():
                best[k] = min(best[k], _best(f, number))
        rows.append((name, best["hand"], best["step"], best["LionK"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--number", type=int, default=1000)
    ap.add_argument("--dtype", default="float32", choices=["float16", "float32", "float64"])
    a = ap.parse_args()
    print(f"{'case':24s} {'hand µs':>9s} {'step µs':>9s} {'LionK µs':>9s} "
          f"{'step/hand':>10s} {'LionK/hand':>10s}")
    for name, h, s, k in run(a.repeats, a.number, np.dtype(a.dtype)):
        print(f"{name:24s} {h:9.1f} {s:9.1f} {k:9.1f} {s / h:10.2f} {k / h:10.2f}")


if __name__ == "__main__":
    main()
