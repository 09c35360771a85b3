"""Sparse regression with the deadzone κ: ℓ1 penalty plus a box, checked against two solvers.

The deadzone κ, K(y) = Σ_i max(|y_i| − e, 0), has the conjugate K*(z) = e‖z‖₁ on the box
‖z‖_∞ ≤ 1 (+∞ outside; docs/theory.md §6). With λ = 1/r, Lion-κ minimises

    F(x) = f(x) + (1/λ)·K*(λx) = f(x) + (1/λ)·e‖λx‖₁ = f(x) + e‖x‖₁   subject to ‖x‖_∞ ≤ r,

a box-constrained lasso whose ℓ1 weight e does not depend on λ. Here f(x) = ½‖Ax − b‖²
(A: 100 × 50 with unit-norm columns on average, b from a 6-sparse x_true plus noise), e = 0.3,
r = 1 (five of the six true coefficients exceed 1 in magnitude, so the box binds as well).

Independent references, both in float64:

* ``scipy.optimize.minimize(method="L-BFGS-B")`` on the smooth split x = u − v with
  0 ≤ u, v ≤ r, minimising f(u − v) + e·Σ(u + v) (at the optimum u_i·v_i = 0, so Σ(u + v) = ‖x‖₁);
* FISTA (accelerated proximal gradient) written out here: the prox of e‖·‖₁ + box is
  ``clip(soft_threshold(v, e/L), −r, r)``.

Lion-κ's coordinates whose |momentum| stays within the deadzone get no sign step, only the decay
x ← (1 − lr·λ)·x: the ones that start at 0 and never leave the deadzone stay exactly 0, the ones
that moved decay geometrically toward 0 (docs/kappa.md, "The deadzone's zeros"). The solution is
sparse, with the same support as the references (read with a threshold 1e-8·radius).

Run: ``python examples/sparse_deadzone.py``
"""

from __future__ import annotations

import numpy as np

import lionk
from lionk import minimize


def make_problem(seed: int = 2, rows: int = 100, cols: int = 50, k: int = 6):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((rows, cols)) / np.sqrt(rows)
    x_true = np.zeros(cols)
    support = rng.choice(cols, k, replace=False)
    x_true[support] = rng.choice([-1.0, 1.0], k) * rng.uniform(0.5, 2.0, k)
    b = A @ x_true + 0.05 * rng.standard_normal(rows)
    return A, b, x_true


def f(A, b, x) -> float:
    r = A @ x - b
    return 0.5 * float(r @ r)


def grad(A, b, x) -> np.ndarray:
    return A.T @ (A @ x - b)


def F(A, b, x, e: float) -> float:
    """The exact objective Lion-κ minimises (x inside the box)."""
    return f(A, b, x) + e * float(np.sum(np.abs(x)))


def fista(A, b, e: float, r: float, iters: int = 10000) -> np.ndarray:
    L = float(np.linalg.norm(A, 2) ** 2)
    x = np.zeros(A.shape[1])
    y, t = x.copy(), 1.0
    for _ in range(iters):
        v = y - grad(A, b, y) / L
        x_new = np.clip(np.sign(v) * np.maximum(np.abs(v) - e / L, 0.0), -r, r)
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        y = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return x


def lbfgsb_split(A, b, e: float, r: float) -> np.ndarray:
    from scipy.optimize import minimize as scipy_minimize

    n = A.shape[1]

    def fg(uv):
        x = uv[:n] - uv[n:]
        g = grad(A, b, x)
        return f(A, b, x) + e * float(np.sum(uv)), np.concatenate([g + e, -g + e])

    res = scipy_minimize(fg, np.zeros(2 * n), jac=True, method="L-BFGS-B",
                         bounds=[(0.0, r)] * (2 * n),
                         options={"ftol": 1e-16, "gtol": 1e-13, "maxiter": 20000})
    return res.x[:n] - res.x[n:]


def main(maxiter: int = 2000, e: float = 0.3, radius: float = 1.0, verbose: bool = True) -> dict:
    A, b, x_true = make_problem()
    res = minimize(
        lambda x: f(A, b, x),
        np.zeros(A.shape[1]),
        jac=lambda x: grad(A, b, x),
        kappa=lionk.kappa.get("deadzone", e=e),
        radius=radius,
        maxiter=maxiter,
    )
    x = res.x
    zero_tol = 1e-8 * radius
    out = {
        "x": x,
        "F": res.F,
        "F_recomputed": F(A, b, x, e),
        "gap": res.gap,
        "kkt_residual": res.kkt_residual,
        "violation": res.constraint_violation,
        "exact_zeros": int(np.sum(x == 0.0)),
        "support": np.flatnonzero(np.abs(x) > zero_tol),
        "true_support": np.flatnonzero(x_true),
        "on_edge": int(np.sum(np.abs(x) >= radius * (1 - 1e-9))),
        "e": e,
        "radius": radius,
    }
    x_fista = fista(A, b, e, radius)
    x_split = lbfgsb_split(A, b, e, radius)
    out["F_fista"] = F(A, b, x_fista, e)
    out["F_lbfgsb"] = F(A, b, x_split, e)
    out["support_fista"] = np.flatnonzero(x_fista)
    out["min_nonzero_fista"] = float(np.min(np.abs(x_fista[x_fista != 0])))
    out["rel_diff_fista"] = abs(res.F - out["F_fista"]) / out["F_fista"]
    out["rel_diff_lbfgsb"] = abs(res.F - out["F_lbfgsb"]) / out["F_lbfgsb"]
    out["max_abs_diff_fista"] = float(np.max(np.abs(x - x_fista)))
    if verbose:
        print(f"lionk : F = {res.F:.12g}  {len(out['support'])} nonzero of {x.size} "
              f"({out['exact_zeros']} exact zeros), {out['on_edge']} on the box edge, "
              f"certificate gap {res.gap:.2g}")
        print(f"FISTA : F = {out['F_fista']:.12g}  relative difference {out['rel_diff_fista']:.1e}"
              f"  max |x - x_fista| = {out['max_abs_diff_fista']:.1e}  "
              f"same support: {np.array_equal(out['support'], out['support_fista'])}")
        print(f"L-BFGS-B (split): F = {out['F_lbfgsb']:.12g}  relative difference "
              f"{out['rel_diff_lbfgsb']:.1e}")
        print(f"true support {out['true_support'].tolist()}, recovered "
              f"{out['support'].tolist()}")
    return out


if __name__ == "__main__":
    main()
