"""Lion solves a box-constrained least-squares problem (NumPy).

With weight decay λ, Lion minimises f(x) subject to ‖x‖_∞ ≤ 1/λ (docs/theory.md). Here
f(x) = ½‖Ax − b‖² with a right-hand side whose unconstrained solution leaves the box, so the
constraint is active. A linearly decaying learning rate removes the O(lr) band in which Lion
settles at a constant learning rate. When SciPy is installed, the result is compared with
``scipy.optimize.lsq_linear``, which solves the same problem with bounds.

Run: ``python examples/quickstart_numpy.py``
"""

from __future__ import annotations

import numpy as np

import lionk


def make_problem(seed: int = 0, rows: int = 40, cols: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A, b with an unconstrained least-squares solution that has entries outside [-1, 1]."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((rows, cols))
    x_true = rng.uniform(-2.0, 2.0, cols)
    b = A @ x_true + 0.1 * rng.standard_normal(rows)
    return A, b


def objective(A: np.ndarray, b: np.ndarray, x: np.ndarray) -> float:
    r = A @ x - b
    return 0.5 * float(r @ r)


def main(steps: int = 4000, lr0: float = 0.05, weight_decay: float = 1.0) -> dict:
    A, b = make_problem()
    x = np.zeros(A.shape[1])
    opt = lionk.LionK(x, lr=lr0, betas=(0.9, 0.99), weight_decay=weight_decay)
    for t in range(steps):
        opt.lr = lr0 * (1.0 - t / steps) + 1e-6          # linear decay; LionK reads it each step
        opt.step(A.T @ (A @ x - b))

    result = {
        "objective": objective(A, b, x),
        "violation": lionk.lyapunov.constraint_violation(x, weight_decay=weight_decay),
        "radius": 1.0 / weight_decay,
        "active": int(np.sum(np.abs(x) >= 1.0 / weight_decay - 1e-9)),
        "x": x,
    }
    print(f"Lion:  f(x) = {result['objective']:.8f}   max(|x_i| - 1/λ)_+ = {result['violation']:.1e}"
          f"   {result['active']} of {x.size} coordinates on the box edge")

    try:
        from scipy.optimize import lsq_linear
    except ImportError:
        print("SciPy is not installed: no reference solution")
        return result
    ref = lsq_linear(A, b, bounds=(-result["radius"], result["radius"]))
    result["scipy_objective"] = objective(A, b, ref.x)
    result["max_abs_diff"] = float(np.max(np.abs(x - ref.x)))
    print(f"SciPy: f(x) = {result['scipy_objective']:.8f}   "
          f"max |x_lion - x_scipy| = {result['max_abs_diff']:.1e}")
    return result


if __name__ == "__main__":
    main()
