"""The same Lion run three ways on NumPy: eager, chunked, compiled — bit for bit the same.

A separable problem with many parameters, min Σ ½ d_i (x_i − t_i)² subject to ‖x‖_∞ ≤ 1/λ, whose
solution is known in closed form: x* = clip(t, −1/λ, 1/λ). Lion (κ = sign, weight decay λ)
solves it; the learning rate is constant, then decays geometrically so that the iterates settle.

`LionK(..., execution=...)` chooses *how* the one step runs (docs/execution.md):

* "eager"    — the step over whole arrays;
* "chunked"  — the step recorded once and replayed on cache-sized pieces with reused buffers;
* "compiled" — one fused kernel generated from the recorded step, compiled by numba (skipped when
  numba is not installed: pip install 'lionk[numba]').

All three give the same bits; the printed times show what each costs (no promise: machines
differ and are shared).

Run: python examples/fast_numpy.py
"""

from __future__ import annotations

import time

import numpy as np

import lionk
from lionk.execution.kernels import numba_available

N = 1 << 18
LAMBDA = 2.0  # the box is |x_i| <= 0.5
STEPS = 600


def make_problem(n: int = N, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = rng.uniform(0.5, 2.0, n).astype(np.float32)
    t = rng.uniform(-1.0, 1.0, n).astype(np.float32)
    return d, t


def run(execution: str, d: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, float]:
    x = np.zeros_like(t)
    opt = lionk.LionK(x, lr=0.01, weight_decay=LAMBDA, execution=execution)
    start = time.perf_counter()
    for k in range(STEPS):
        opt.lr = 0.01 * 0.97 ** max(0, k - 400)  # constant, then a geometric decay
        opt.step(d * (x - t))
    assert opt.last_execution == execution
    return x, (time.perf_counter() - start) / STEPS


def main() -> dict:
    d, t = make_problem()
    paths = ["eager", "chunked"] + (["compiled"] if numba_available() else [])
    results = {p: run(p, d, t) for p in paths}
    x_star = np.clip(t, -1 / LAMBDA, 1 / LAMBDA)
    ref = results["eager"][0]
    out = {"paths": paths, "x_star": x_star, "x": ref}
    for p, (x, per_step) in results.items():
        same = bool(np.array_equal(x.view(np.uint32), ref.view(np.uint32)))
        out[p] = {"bitwise_equal_to_eager": same, "ms_per_step": 1e3 * per_step}
        print(f"{p:9s} {1e3 * per_step:7.2f} ms/step   bitwise equal to eager: {same}")
    out["max_error"] = float(np.max(np.abs(ref - x_star)))
    print(f"max |x - x*| = {out['max_error']:.2e}  (x* = clip(t, -1/λ, 1/λ), {N:,} parameters)")
    return out


if __name__ == "__main__":
    main()
