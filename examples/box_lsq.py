"""Box-constrained least squares with ``lionk.minimize`` (NumPy), checked against SciPy.

    minimise ½‖Ax − b‖²  subject to  ‖x‖_∞ ≤ r          (A: 200 × 50, r = 1)

is what Lion (``kappa="sign"``) solves with weight decay λ = 1/r (docs/theory.md). The right-hand
side is built so that the unconstrained solution leaves the box: about half of the coordinates
end on the box edge. Everything but the radius and ``maxiter=1000`` is left at its default: the
learning rate (``radius · min(0.1, 50/maxiter)`` here, the box binding), the cosine schedule.

``scipy.optimize.lsq_linear`` with bounds solves the same problem; the objectives agree to far
better than 1e-6 relative. The result also carries its own certificate: for convex f,
``F(x) − min F ≤ result.gap`` (docs/minimize.md), checked here against SciPy's optimum.

Run: ``python examples/box_lsq.py``
"""

from __future__ import annotations

import numpy as np

from lionk import minimize


def make_problem(seed: int = 0, rows: int = 200, cols: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """A, b whose unconstrained least-squares solution has entries outside [-1, 1]."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((rows, cols))
    x_true = rng.uniform(-2.0, 2.0, cols)
    b = A @ x_true + 0.5 * rng.standard_normal(rows)
    return A, b


def objective(A: np.ndarray, b: np.ndarray, x: np.ndarray) -> float:
    r = A @ x - b
    return 0.5 * float(r @ r)


def main(maxiter: int = 1000, tol: float = 1e-6, radius: float = 1.0, verbose: bool = True) -> dict:
    A, b = make_problem()

    res = minimize(
        lambda x: objective(A, b, x),
        np.zeros(A.shape[1]),
        jac=lambda x: A.T @ (A @ x - b),
        radius=radius,
        maxiter=maxiter,
        tol=tol,
    )
    x = res.x
    out = {
        "x": x,
        "objective": res.fun,
        "gap": res.gap,
        "kkt_residual": res.kkt_residual,
        "success": res.success,
        "nit": res.nit,
        "violation": res.constraint_violation,
        "active": int(np.sum(np.abs(x) >= radius * (1 - 1e-9))),
        "radius": radius,
        "lr": res.lr,
        "history": res.history,
    }
    if verbose:
        print(f"lionk: f(x) = {res.fun:.12g}  {out['active']} of {x.size} coordinates on the "
              f"box edge  nit = {res.nit}  success = {res.success}")
        print(f"       certificate: f(x) - min f <= gap = {res.gap:.3g}   ({res.message})")

    from scipy.optimize import lsq_linear

    ref = lsq_linear(A, b, bounds=(-radius, radius), method="bvls", tol=1e-14)
    out["scipy_objective"] = objective(A, b, ref.x)
    out["rel_objective_diff"] = abs(res.fun - out["scipy_objective"]) / out["scipy_objective"]
    out["max_abs_diff"] = float(np.max(np.abs(x - ref.x)))
    out["x_free_outside"] = float(np.max(np.abs(np.linalg.lstsq(A, b, rcond=None)[0])))
    if verbose:
        print(f"scipy: f(x) = {out['scipy_objective']:.12g}  relative difference "
              f"{out['rel_objective_diff']:.1e}  max |x_lionk - x_scipy| = {out['max_abs_diff']:.1e}")
    return out


if __name__ == "__main__":
    main()
