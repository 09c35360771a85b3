"""Watch the Lyapunov function of Lion-κ along a run (docs/theory.md §5).

For a linear f(x) = aᵀx (L = 0), 0 ≤ b1 ≤ b2 < 1, lr·wd < 1 and λx₀ inside dom K*, the function

    H(x, m) = f(x) + (1/λ)K*(λx) + c·(K*(λx) + K(m) + λ mᵀx),
    c = ε'·b1 / (ε'·λ·(1 − b1) + 1 − b2),   ε' = lr / (1 − lr·wd),

never increases along Lion's iterates. This script prints H at a few steps, checks every step,
and then repeats the run with a wrong coefficient (c without its leading ε'), one of the negative
controls of the conformance suite, to show that the check can fail.

Run: ``python examples/lyapunov_monitor.py``
"""

from __future__ import annotations

import numpy as np

import lionk
from lionk import lyapunov

LR, BETAS, WD = 0.05, (0.9, 0.99), 0.5


def run(steps: int, coefficient_value: float | None = None, seed: int = 0) -> list[float]:
    """H(x_t, m_t) for t = 0..steps of Lion on f(x) = a·x (float64)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(8)
    x = rng.uniform(-0.9, 0.9, 8) / WD                  # λx₀ inside the box: H is finite
    state = lionk.init(x)
    hs = []
    for _ in range(steps + 1):
        hs.append(lyapunov.discrete(float(a @ x), x, state, lr=LR, betas=BETAS, weight_decay=WD,
                                    coefficient_value=coefficient_value))
        x, state = lionk.step(x, a, state, lr=LR, betas=BETAS, weight_decay=WD)
    return hs


def main(steps: int = 200) -> dict:
    c = lyapunov.coefficient(lr=LR, betas=BETAS, weight_decay=WD)
    hs = run(steps)
    increases = np.diff(hs)
    print(f"lr={LR}, betas={BETAS}, weight_decay={WD}: c = {c:.6f}")
    for t in (0, 1, 2, 5, 10, 20, 50, 100, steps):
        print(f"  step {t:4d}: H = {hs[t]: .10f}")
    print(f"largest one-step change of H: {increases.max():.3e} (must be <= 0)")

    eps_p = LR / (1.0 - LR * WD)
    wrong_c = BETAS[0] / (eps_p * WD * (1.0 - BETAS[0]) + 1.0 - BETAS[1])   # ε' dropped
    wrong = np.diff(run(steps, coefficient_value=wrong_c))
    print(f"negative control (c without its leading ε' = {wrong_c:.4f}): H increased at "
          f"{int(np.sum(wrong > 0))} of {steps} steps, by up to {wrong.max():.3e}")
    return {
        "coefficient": c,
        "H": hs,
        "max_increase": float(increases.max()),
        "control_max_increase": float(wrong.max()),
        "control_increases": int(np.sum(wrong > 0)),
    }


if __name__ == "__main__":
    main()
