"""``lionk.minimize``: constrained problems solved with Lion-κ, checked against SciPy.

References are independent solvers (``scipy.optimize.lsq_linear``, SLSQP, L-BFGS-B, closed forms,
FISTA), never lionk itself. The certificate of the stopping rule (for convex f,
``F(x) − min F ≤ result.gap``) is checked against those references.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import math
import runpy
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import lionk
from lionk.analysis.minimize import OptimizeResult, default_lr, minimize

scipy_optimize = pytest.importorskip("scipy.optimize")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_JAX = importlib.util.find_spec("jax") is not None
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


def load_example(name: str) -> dict:
    return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name=f"example_{name}")


# ---------------------------------------------------------------------------------------------
# A small least-squares problem shared by the κ tests.


@pytest.fixture(scope="module")
def lsq() -> dict:
    rng = np.random.default_rng(5)
    A = rng.standard_normal((30, 10))
    b = A @ rng.uniform(-3.0, 3.0, 10) + 0.3 * rng.standard_normal(30)
    return {
        "A": A,
        "b": b,
        "f": lambda x: 0.5 * float(np.sum((A @ x - b) ** 2)),
        "jac": lambda x: A.T @ (A @ x - b),
        "L": float(np.linalg.norm(A, 2) ** 2),
    }


def check_against_reference(res: OptimizeResult, F_ref: float, *, rel: float) -> None:
    """lionk's F agrees with the reference optimum, and its certificate bounds the difference."""
    F = res.F
    assert math.isfinite(F) and math.isfinite(res.gap)
    assert abs(F - F_ref) <= rel * abs(F_ref), (F, F_ref, (F - F_ref) / F_ref)
    # for convex f, F(x) − min F ≤ gap (the reference is optimal up to its own ~1e-12 accuracy)
    assert F - F_ref <= res.gap + 1e-12 * abs(F_ref), (F - F_ref, res.gap)
    assert F - F_ref >= -1e-9 * abs(F_ref)  # lionk's point is feasible: not below the optimum


# ---------------------------------------------------------------------------------------------
# Known answers and every built-in κ against an independent solver.


def test_one_dimensional_known_answer() -> None:
    """theory.md §7: f(x) = (x − 2)², radius 1 → x = 1 (the box edge), from a Python float."""
    res = minimize(lambda x: float((x - 2.0) ** 2), 0.0, jac=lambda x: 2.0 * (x - 2.0),
                   radius=1.0, maxiter=500)
    assert isinstance(res.x, np.ndarray) and res.x.shape == () and res.x.dtype == np.float64
    assert res.success and res.certified, res.message
    # stopped by the rule: gap = |f'(x)|·(1 − x) = 2(2 − x)(1 − x) ≤ tol·|F| with F ≈ 1
    assert 0.0 <= 1.0 - float(res.x) <= 0.5e-6
    assert res.gap <= 1e-6 * abs(res.F)
    assert res.gap == pytest.approx(2.0 * (2.0 - float(res.x)) * (1.0 - float(res.x)), rel=1e-6)
    assert res.constraint_violation == 0.0
    res = minimize(lambda x: float((x - 2.0) ** 2), 5.0, jac=lambda x: 2.0 * (x - 2.0),
                   radius=1.0, maxiter=500, tol=0)
    assert res.nit == 500 and abs(float(res.x) - 1.0) < 1e-9


def test_sign_box_matches_lsq_linear(lsq: dict) -> None:
    ref = scipy_optimize.lsq_linear(lsq["A"], lsq["b"], bounds=(-1.0, 1.0), method="bvls", tol=1e-15)
    res = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], radius=1.0, maxiter=3000)
    assert res.success, res.message
    assert res.kkt_residual <= 1e-6
    check_against_reference(res, lsq["f"](ref.x), rel=1e-8)
    assert np.max(np.abs(res.x)) <= 1.0
    active = np.abs(ref.x) >= 1.0 - 1e-12
    assert active.any() and not active.all()  # the constraint matters, and not everywhere
    assert np.all(np.abs(res.x[active]) >= 1.0 - 1e-9)


def test_huber_is_box_plus_ridge(lsq: dict) -> None:
    """huber(δ): F = f + (δλ/2)‖x‖² on the box = lsq_linear on [A; √(δλ)·I]."""
    delta, r = 0.5, 1.0
    A_aug = np.vstack([lsq["A"], math.sqrt(delta / r) * np.eye(10)])
    b_aug = np.concatenate([lsq["b"], np.zeros(10)])
    ref = scipy_optimize.lsq_linear(A_aug, b_aug, bounds=(-r, r), method="bvls", tol=1e-15)
    F_ref = 0.5 * float(np.sum((A_aug @ ref.x - b_aug) ** 2))
    res = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"],
                   kappa=lionk.kappa.get("huber", delta=delta), radius=r, maxiter=3000, tol=1e-8)
    assert res.success, res.message
    check_against_reference(res, F_ref, rel=1e-7)
    assert res.F == pytest.approx(res.fun + 0.5 * delta / r * float(res.x @ res.x), rel=1e-14)


def test_deadzone_is_box_plus_l1(lsq: dict) -> None:
    """deadzone(e): F = f + e‖x‖₁ on the box; reference: L-BFGS-B on x = u − v, 0 ≤ u, v ≤ r."""
    e, r, n = 2.0, 1.0, 10

    def split(uv):
        x = uv[:n] - uv[n:]
        g = lsq["jac"](x)
        return lsq["f"](x) + e * float(np.sum(uv)), np.concatenate([g + e, -g + e])

    ref = scipy_optimize.minimize(split, np.zeros(2 * n), jac=True, method="L-BFGS-B",
                                  bounds=[(0.0, r)] * (2 * n),
                                  options={"ftol": 1e-16, "gtol": 1e-13, "maxiter": 10000})
    x_ref = ref.x[:n] - ref.x[n:]
    res = minimize(lsq["f"], np.zeros(n), jac=lsq["jac"], kappa=lionk.kappa.get("deadzone", e=e),
                   radius=r, maxiter=3000, tol=1e-7)
    assert res.success, res.message
    check_against_reference(res, lsq["f"](x_ref) + e * float(np.sum(np.abs(x_ref))), rel=1e-8)
    assert res.F == pytest.approx(res.fun + e * float(np.sum(np.abs(res.x))), rel=1e-14)


def test_relativistic_is_box_barrier(lsq: dict) -> None:
    """relativistic(δ): F = f + (δ/λ)Σ(1 − √(1 − λ²x_i²)); reference: L-BFGS-B inside the box."""
    delta, r = 1.0, 1.0
    lam = 1.0 / r

    def F_and_grad(x):
        s = np.sqrt(1.0 - (lam * x) ** 2)
        return (lsq["f"](x) + (delta / lam) * float(np.sum(1.0 - s)),
                lsq["jac"](x) + delta * lam * x / s)

    inner = r * (1.0 - 1e-12)
    ref = scipy_optimize.minimize(F_and_grad, np.zeros(10), jac=True, method="L-BFGS-B",
                                  bounds=[(-inner, inner)] * 10,
                                  options={"ftol": 1e-16, "gtol": 1e-12, "maxiter": 10000})
    res = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"],
                   kappa=lionk.kappa.get("relativistic", delta=delta), radius=r, maxiter=3000,
                   tol=1e-8)
    assert res.success, res.message
    check_against_reference(res, F_and_grad(ref.x)[0], rel=1e-7)


def test_l2_ball_matches_the_secular_equation(lsq: dict) -> None:
    """l2: min f s.t. ‖x‖₂ ≤ r; x(μ) = (AᵀA + μI)⁻¹Aᵀb with ‖x(μ)‖ = r (brentq on μ)."""
    A, b, r = lsq["A"], lsq["b"], 1.0

    def x_of(mu):
        return np.linalg.solve(A.T @ A + mu * np.eye(10), A.T @ b)

    mu = scipy_optimize.brentq(lambda m: np.linalg.norm(x_of(m)) - r, 0.0, 1e6, xtol=1e-15)
    x_ref = x_of(mu)
    res = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], kappa="l2", radius=r, maxiter=3000,
                   tol=1e-9)
    assert res.success, res.message
    check_against_reference(res, lsq["f"](x_ref), rel=1e-8)
    assert np.linalg.norm(res.x) <= r * (1 + 1e-12)
    assert np.max(np.abs(res.x - x_ref)) < 1e-5


def test_lp_ball_matches_slsqp(lsq: dict) -> None:
    """lp(p=3): min f s.t. ‖x‖_q ≤ r, q = 3/2; reference: SLSQP with that constraint."""
    q, r = 1.5, 2.0
    ref = scipy_optimize.minimize(
        lsq["f"], np.zeros(10), jac=lsq["jac"], method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda x: r**q - np.sum(np.abs(x) ** q),
                      "jac": lambda x: -q * np.sign(x) * np.abs(x) ** (q - 1)}],
        options={"ftol": 1e-15, "maxiter": 1000})
    assert np.sum(np.abs(ref.x) ** q) ** (1 / q) == pytest.approx(r, rel=1e-10)
    res = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], kappa=lionk.kappa.textbook("lp", p=3.0),
                   radius=r, maxiter=3000, tol=1e-9)
    assert res.success, res.message
    # SLSQP's point may sit ~1e-12 outside the ball: scaled onto the sphere it is feasible, so
    # its f is >= min F and the certificate F − f(x_ref) ≤ gap must hold
    x_ref = ref.x * (r / np.sum(np.abs(ref.x) ** q) ** (1 / q))
    check_against_reference(res, lsq["f"](x_ref), rel=1e-8)
    assert res.history["x_norm"][-1] == pytest.approx(np.sum(np.abs(res.x) ** q) ** (1 / q))


def test_relativistic_l2_matches_its_secular_equation(lsq: dict) -> None:
    """relativistic-l2(δ): F = f + (δ/λ)(1 − √(1 − λ²‖x‖²)). Its stationarity condition is
    (AᵀA + μI)x = Aᵀb with μ = δλ/√(1 − λ²‖x‖²): a 1-D root in μ (brentq), strictly inside."""
    A, b, delta, r = lsq["A"], lsq["b"], 1.0, 1.0
    lam = 1.0 / r

    def x_of(mu):
        return np.linalg.solve(A.T @ A + mu * np.eye(10), A.T @ b)

    def phi(mu):  # μ·√(1 − λ²‖x(μ)‖²) − δλ, increasing where ‖x(μ)‖ < r
        return mu * math.sqrt(max(1.0 - lam**2 * float(x_of(mu) @ x_of(mu)), 0.0)) - delta * lam

    mu_edge = scipy_optimize.brentq(lambda m: np.linalg.norm(x_of(m)) - r, 0.0, 1e6, xtol=1e-15)
    mu = scipy_optimize.brentq(phi, mu_edge, 1e6, xtol=1e-15, rtol=1e-15)
    x_ref = x_of(mu)
    assert np.linalg.norm(x_ref) < r * (1 - 1e-6)  # the barrier keeps the optimum inside
    F_ref = lsq["f"](x_ref) + (delta / lam) * (1.0 - math.sqrt(1.0 - lam**2 * float(x_ref @ x_ref)))
    res = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"],
                   kappa=lionk.kappa.textbook("relativistic-l2", delta=delta), radius=r,
                   maxiter=3000, tol=1e-9)
    assert res.success, res.message
    check_against_reference(res, F_ref, rel=1e-8)


def test_quadratic_is_ridge_regression(lsq: dict) -> None:
    """quadratic: F = f + (λ/2)‖x‖², solved in closed form; lr must be given."""
    A, b, lam = lsq["A"], lsq["b"], 5.0
    x_ref = np.linalg.solve(A.T @ A + lam * np.eye(10), A.T @ b)
    F_ref = lsq["f"](x_ref) + 0.5 * lam * float(x_ref @ x_ref)
    res = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], kappa="quadratic", weight_decay=lam,
                   lr=0.5 / lsq["L"], maxiter=2000, tol=1e-10)
    assert res.success, res.message
    check_against_reference(res, F_ref, rel=1e-9)
    # the certificate is ‖∇F‖²/(2λ) here, up to the rounding of its three terms
    g = lsq["jac"](res.x)
    terms = (0.5 * lam**2 * float(res.x @ res.x) + 0.5 * float(g @ g) + lam * abs(float(g @ res.x)))
    grad_F = g + lam * res.x
    assert abs(res.gap - float(grad_F @ grad_F) / (2 * lam)) <= 64 * np.finfo(float).eps * terms / lam
    with pytest.raises(ValueError, match=r"lr: kappa='quadratic'"):
        minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], kappa="quadratic", weight_decay=lam)


def test_user_kappa_with_conjugate_gets_a_certificate(lsq: dict) -> None:
    """A user κ (2·‖y‖₁: box of radius 2/λ) is certified by the same Fenchel–Young gap."""
    sign = lionk.kappa.get("sign")
    scaled = lionk.kappa.Kappa(
        "twice-sign",
        grad=lambda y: 2.0 * sign.grad(y),
        value=lambda y: 2.0 * sign.value(y),
        conjugate=lambda z: sign.conjugate(z * 0.5),
        domain_distance=lambda z: sign.domain_distance(z * 0.5),
    )
    ref = scipy_optimize.lsq_linear(lsq["A"], lsq["b"], bounds=(-0.5, 0.5), method="bvls", tol=1e-15)
    res = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], kappa=scaled, weight_decay=4.0,
                   maxiter=3000, tol=1e-7)
    assert res.success, res.message
    check_against_reference(res, lsq["f"](ref.x), rel=1e-8)
    assert np.all(np.isnan(res.history["x_norm"]))  # lionk does not know this κ's norm


def test_user_kappa_without_conjugate_is_not_certified(lsq: dict) -> None:
    bare = lionk.kappa.Kappa("bare-sign", grad=lionk.kappa.exact_sign)
    res = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], kappa=bare, radius=1.0, maxiter=50)
    assert not res.success and res.status == 1
    assert "no value or conjugate" in res.message
    assert math.isnan(res.kkt_residual) and math.isnan(res.H)
    assert np.all(np.isnan(res.history["H"]))
    # the iterates are still Lion's: the same as with the built-in sign κ
    ref = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], radius=1.0, maxiter=50, tol=0)
    np.testing.assert_array_equal(res.x, ref.x)


# ---------------------------------------------------------------------------------------------
# The Lyapunov record, the phases and the schedules.


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
@pytest.mark.parametrize("kappa", ["sign", "l2", "deadzone", "relativistic"])
def test_H_never_increases_for_linear_f(kappa: str, schedule: str) -> None:
    """f linear (L = 0): H_k from lionk.lyapunov.discrete with lr_k is non-increasing, also
    under a decaying schedule (c ∝ lr_k shrinks and multiplies a Fenchel–Young gap ≥ 0)."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal(20)
    res = minimize(lambda x: float(a @ x), rng.uniform(-0.4, 0.4, 20), jac=lambda x: a,
                   kappa=kappa, radius=2.0, maxiter=300, schedule=schedule, tol=0)
    H = res.history["H"]
    assert np.all(np.isfinite(H))
    assert np.all(np.diff(H) <= 1e-12 * np.max(np.abs(H)))
    assert H[-1] < H[0]


def test_H_increase_is_bounded_by_the_smoothness(lsq: dict) -> None:
    """f L-smooth: H_{k+1} − H_k ≤ (L/2)‖x_{k+1} − x_k‖² (theory.md §4)."""
    for kappa in ("sign", "l2", "huber"):
        res = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], kappa=kappa, radius=0.3,
                       maxiter=400, tol=0)
        H, s = res.history["H"], res.history["step_norm"]
        assert math.isnan(s[0]) and np.all(np.isfinite(s[1:]))
        excess = np.diff(H) - 0.5 * lsq["L"] * s[1:] ** 2
        assert np.max(excess) <= 1e-10 * np.max(np.abs(H)), kappa


def test_phase_one_from_outside_the_box(lsq: dict) -> None:
    """Started at 10·r: the violation shrinks by (1 − lr_k·λ) per step at least, H is +inf
    until the iterate is inside, and the run still ends at the constrained optimum."""
    r, tol = 0.3, 1e-6
    res = minimize(lsq["f"], np.full(10, 10 * r), jac=lsq["jac"], radius=r, maxiter=2000, tol=tol)
    v, lrs = res.history["violation"], res.history["lr"]
    assert v[0] == pytest.approx(9 * r)
    bound = v[0] * np.concatenate([[1.0], np.cumprod(1.0 - lrs[:-1] / r)])
    assert np.all(v <= bound * (1 + 1e-12) + 1e-15)
    # coordinates pushed outward approach the edge from outside: (1 − λlr_k)-contraction, no
    # exact arrival; H (and the gap) are +inf until dist(λx, box) ≤ max(16·eps, tol)
    near = v / r <= tol
    first = int(np.argmax(near))
    assert first > 0 and np.all(near[first:])
    H = res.history["H"]
    assert np.all(np.isinf(H[:first])) and np.all(np.isfinite(H[first:]))
    assert np.all(res.history["kkt"][first:] >= v[first:] / r)  # feasibility is part of kkt
    assert res.success and res.constraint_violation / r <= tol
    ref = scipy_optimize.lsq_linear(lsq["A"], lsq["b"], bounds=(-r, r), method="bvls", tol=1e-15)
    assert res.fun == pytest.approx(lsq["f"](ref.x), rel=1e-7)


def test_decaying_schedules_converge_and_constant_lr_oscillates(lsq: dict) -> None:
    ref = scipy_optimize.lsq_linear(lsq["A"], lsq["b"], bounds=(-1.0, 1.0), method="bvls", tol=1e-15)
    F_ref = lsq["f"](ref.x)
    errs = {}
    for schedule in ("cosine", "linear", "constant"):
        res = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], radius=1.0, schedule=schedule,
                       maxiter=2000, tol=0)
        assert res.lr == default_lr(1.0, 2000) == 0.025
        errs[schedule] = ((res.fun - F_ref) / F_ref, float(np.max(np.abs(res.x - ref.x))))
    assert errs["cosine"][0] < 1e-9 and errs["linear"][0] < 1e-8
    # at a constant lr Lion settles within O(lr) of the optimum, but not at it
    assert errs["constant"][0] > 1e-8
    assert 1e-3 * 0.025 < errs["constant"][1] < 0.025


def test_callable_schedule_and_history(lsq: dict) -> None:
    lrs = [0.05 / (1 + k) for k in range(31)]
    res = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], radius=1.0, schedule=lambda k: lrs[k],
                   maxiter=30, tol=0)
    assert res.nit == 30 and not res.success and res.status == 1
    assert "maxiter (30) reached" in res.message
    for key in ("f", "F", "H", "violation", "kkt", "gap", "step_norm", "lr", "x_norm"):
        assert res.history[key].shape == (31,) and res.history[key].dtype == np.float64
    np.testing.assert_array_equal(res.history["lr"], lrs)
    assert res.lr == lrs[0]
    # the history is the run: replay it with lionk.step
    x, state = np.zeros(10), lionk.init(np.zeros(10))
    for k in range(30):
        x, state = lionk.step(x, lsq["jac"](x), state, lr=lrs[k], weight_decay=1.0)
        assert res.history["f"][k + 1] == lsq["f"](x)
    np.testing.assert_array_equal(res.x, x)


def test_stopping_rule_and_certificate_values(lsq: dict) -> None:
    """kkt = gap / max(|F|, 1e-3·|f(x0) − F|) with gap = Σ r|g_i| + g_i x_i for the box."""
    res = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], radius=1.0, maxiter=3000, tol=1e-6)
    assert res.success and res.certified and res.status == 0 and res.nit < 3000
    g = lsq["jac"](res.x)
    assert res.gap == pytest.approx(float(np.sum(np.abs(g)) + g @ res.x), rel=1e-9, abs=1e-12)
    f0 = lsq["f"](np.zeros(10))
    assert res.kkt_residual == pytest.approx(res.gap / max(abs(res.F), 1e-3 * abs(f0 - res.F)))
    assert res.kkt_residual <= 1e-6
    # one step earlier the rule did not hold
    assert not res.history["kkt"][res.nit - 1] <= 1e-6
    # the evaluations: one per iterate, plus those of the line search that chose lr_0
    assert res.nfev == res.njev >= res.nit + 1


def test_maxiter_reached_is_not_success(lsq: dict) -> None:
    res = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], radius=1.0, maxiter=5)
    assert res.nit == 5 and not res.success and res.status == 1
    assert "maxiter (5) reached" in res.message and "KKT residual" in res.message


def test_callback(lsq: dict) -> None:
    seen = []

    def cb(info):
        seen.append((info.nit, info.fun, info.kkt_residual))
        assert isinstance(info, OptimizeResult) and isinstance(info.x, np.ndarray)
        if info.nit == 7:
            raise StopIteration

    res = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], radius=1.0, callback=cb)
    assert [s[0] for s in seen] == list(range(1, 8))
    assert res.status == 2 and not res.success and res.nit == 7 and "callback" in res.message
    assert [s[1] for s in seen] == list(res.history["f"][1:])
    res = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], radius=1.0,
                   callback=lambda info: info.nit >= 3)
    assert res.status == 2 and res.nit == 3


def test_jac_true_and_x0_conversions(lsq: dict) -> None:
    res1 = minimize(lambda x: (lsq["f"](x), lsq["jac"](x)), [0.0] * 10, jac=True, radius=1.0,
                    maxiter=100)
    res2 = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], radius=1.0, maxiter=100)
    assert isinstance(res1.x, np.ndarray) and res1.x.dtype == np.float64 and res1.x.shape == (10,)
    np.testing.assert_array_equal(res1.x, res2.x)
    # a jac returning a list or another dtype is converted to x's library and dtype
    res3 = minimize(lsq["f"], np.zeros(10), jac=lambda x: lsq["jac"](x).tolist(), radius=1.0,
                    maxiter=100)
    np.testing.assert_array_equal(res3.x, res2.x)


def test_x0_is_not_mutated_and_float32_is_kept(lsq: dict) -> None:
    x0 = np.zeros(10, dtype=np.float32)
    A32, b32 = lsq["A"].astype(np.float32), lsq["b"].astype(np.float32)
    res = minimize(lambda x: 0.5 * float(np.sum((A32 @ x - b32) ** 2)), x0,
                   jac=lambda x: A32.T @ (A32 @ x - b32), radius=1.0, maxiter=1500)
    assert np.all(x0 == 0)
    assert res.x.dtype == np.float32 and res.x.shape == (10,)
    ref = scipy_optimize.lsq_linear(lsq["A"], lsq["b"], bounds=(-1.0, 1.0), method="bvls", tol=1e-15)
    assert res.fun == pytest.approx(lsq["f"](ref.x), rel=1e-5)  # float32 gradients
    assert res.constraint_violation == 0.0


def test_optimize_result_is_a_dict_with_attributes(lsq: dict) -> None:
    res = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], radius=1.0, maxiter=10)
    assert isinstance(res, dict) and res["nit"] == res.nit == 10
    for key in ("x", "fun", "F", "nit", "nfev", "njev", "success", "status", "message",
                "kkt_residual", "gap", "H", "constraint_violation", "radius", "weight_decay",
                "lr", "kappa", "history"):
        assert key in res and key in dir(res)
    with pytest.raises(AttributeError):
        _ = res.not_a_key
    res.extra = 1
    assert res["extra"] == 1
    text = repr(res)
    assert "kkt_residual" in text and "history" in text and "array(11)" in text
    assert res.radius == 1.0 and res.weight_decay == 1.0 and res.kappa == "sign"


# ---------------------------------------------------------------------------------------------
# Other array libraries.


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_torch_autodiff_keeps_library_dtype_and_device(lsq: dict) -> None:
    import torch

    A = torch.tensor(lsq["A"], dtype=torch.float32)
    b = torch.tensor(lsq["b"], dtype=torch.float32)
    x0 = torch.zeros(10, dtype=torch.float32, requires_grad=True)
    res = minimize(lambda x: 0.5 * torch.sum((A @ x - b) ** 2), x0, radius=1.0, maxiter=1000)
    assert isinstance(res.x, torch.Tensor) and res.x.dtype == torch.float32
    assert res.x.device == x0.device and tuple(res.x.shape) == (10,) and not res.x.requires_grad
    assert torch.all(x0 == 0)
    assert isinstance(res.fun, float)
    ref = scipy_optimize.lsq_linear(lsq["A"], lsq["b"], bounds=(-1.0, 1.0), method="bvls", tol=1e-15)
    assert res.fun == pytest.approx(lsq["f"](ref.x), rel=1e-5)
    with pytest.raises(TypeError, match=r"fun: with a torch x0 and jac=None.*received float"):
        minimize(lambda x: 3.0, torch.zeros(3, dtype=torch.float64), radius=1.0)
    with pytest.raises(TypeError, match=r"received Tensor that does not depend on x"):
        minimize(lambda x: torch.tensor(3.0), torch.zeros(3, dtype=torch.float64), radius=1.0)


@pytest.mark.skipif(not HAVE_JAX, reason="jax is not installed")
def test_jax_autodiff_with_and_without_jit(lsq: dict) -> None:
    import jax.numpy as jnp

    A, b = jnp.asarray(lsq["A"]), jnp.asarray(lsq["b"])
    res = minimize(lambda x: 0.5 * jnp.sum((A @ x - b) ** 2), jnp.zeros(10), radius=1.0,
                   maxiter=150)
    assert type(res.x).__module__.startswith("jax") and res.x.dtype == jnp.float64
    ref = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], radius=1.0, maxiter=150)
    assert res.fun == pytest.approx(ref.fun, rel=1e-9)

    def untraceable(x):  # boolean indexing: jax.jit fails, the eager value_and_grad works
        v = x[x == x]  # all of x (no NaN), but a data-dependent shape for the tracer
        return 0.5 * jnp.sum((A @ v - b) ** 2)

    res2 = minimize(untraceable, jnp.zeros(10), radius=1.0, maxiter=40, tol=0)
    ref2 = minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], radius=1.0, maxiter=40, tol=0)
    assert res2.nit == 40 and res2.fun == pytest.approx(ref2.fun, rel=1e-12)


def test_numpy_without_jac_says_how_to_pass_one() -> None:
    with pytest.raises(TypeError, match=r"jac: numpy\.ndarray arrays have no autodiff; pass jac="):
        minimize(lambda x: float(x @ x), np.zeros(3), radius=1.0)


# ---------------------------------------------------------------------------------------------
# Bad input.


def _f(x):
    return float(np.sum(x * x))


def _g(x):
    return 2.0 * x


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"radius": 1.0, "weight_decay": 1.0}, ValueError, r"radius, weight_decay: give one"),
        ({}, ValueError, r"radius: .*received neither"),
        ({"radius": -1.0}, ValueError, r"radius: expected a finite number > 0; received -1.0"),
        ({"radius": math.inf}, ValueError, r"radius: expected a finite number > 0"),
        ({"weight_decay": 0.0}, ValueError, r"weight_decay: expected a finite number > 0"),
        ({"radius": "1"}, TypeError, r"radius: expected a real number"),
        ({"radius": 1.0, "maxiter": 0}, ValueError, r"maxiter: expected an int >= 1; received 0"),
        ({"radius": 1.0, "maxiter": 10.0}, TypeError, r"maxiter: expected an int >= 1; received 10.0"),
        ({"radius": 1.0, "schedule": "exponential"}, ValueError,
         r"schedule: expected one of \('cosine', 'linear', 'constant'\) .*received 'exponential'"),
        ({"radius": 1.0, "schedule": lambda k: 0.1, "lr": 0.1}, ValueError,
         r"lr: a callable schedule returns the learning rate"),
        ({"radius": 1.0, "schedule": lambda k: 0.1 - 0.01 * k, "maxiter": 20}, ValueError,
         r"schedule: expected lr_10 = schedule\(10\) finite and > 0; received"),
        ({"radius": 1.0, "schedule": lambda k: "fast"}, TypeError,
         r"schedule: expected schedule\(k\) to return a real number"),
        ({"radius": 1.0, "lr": 1.0}, ValueError, r"lr: expected lr·weight_decay < 1, i\.e\. lr < radius"),
        ({"radius": 1.0, "lr": -0.1}, ValueError, r"lr: expected a finite number > 0; received -0.1"),
        ({"radius": 1.0, "tol": -1e-6}, ValueError, r"tol: expected a finite number >= 0"),
        ({"radius": 1.0, "betas": (0.9, 1.0)}, ValueError, r"betas\[1\]: expected a value in \[0, 1\)"),
        ({"radius": 1.0, "kappa": "no-such-kappa"}, KeyError, r"unknown kappa 'no-such-kappa'"),
        ({"radius": 1.0, "callback": 3}, TypeError, r"callback: expected a callable or None"),
        ({"radius": 1.0, "jac": "2-point"}, TypeError, r"jac: expected a callable jac\(x\)"),
    ],
)
def test_bad_arguments(kwargs: dict, exc: type, pattern: str) -> None:
    kwargs = {"jac": _g, **kwargs}
    with pytest.raises(exc, match=pattern):
        minimize(_f, np.ones(3), **kwargs)


def test_bad_fun_x0_and_jac() -> None:
    with pytest.raises(TypeError, match=r"fun: expected a callable f\(x\) -> float; received int"):
        minimize(3, np.ones(3), jac=_g, radius=1.0)
    with pytest.raises(TypeError, match=r"x0: expected an array .*received str"):
        minimize(_f, "1, 2", jac=_g, radius=1.0)
    with pytest.raises(TypeError, match=r"x0: expected an array .*received NoneType"):
        minimize(_f, None, jac=_g, radius=1.0)
    with pytest.raises(TypeError, match=r"x0: expected a Python number or a \(nested\) list"):
        minimize(_f, [1.0, [2.0, 3.0]], jac=_g, radius=1.0)
    with pytest.raises(TypeError, match=r"x0: expected a real floating dtype .*received int64"):
        minimize(_f, np.ones(3, dtype=np.int64), jac=_g, radius=1.0)
    with pytest.raises(ValueError, match=r"jac: expected the gradient to have shape \(3,\) "
                                         r"\(the shape of x0\); received \(2,\)"):
        minimize(_f, np.ones(3), jac=lambda x: np.ones(2), radius=1.0)
    with pytest.raises(ValueError, match=r"fun: expected a finite f\(x0\); received nan"):
        minimize(lambda x: float("nan"), np.ones(3), jac=_g, radius=1.0)
    with pytest.raises(ValueError, match=r"fun: expected a finite f\(x0\); received inf"):
        minimize(lambda x: math.inf, np.ones(3), jac=_g, radius=1.0)
    with pytest.raises(ValueError, match=r"fun: expected a scalar .*f\(x0\) has shape \(3,\)"):
        minimize(lambda x: x * x, np.ones(3), jac=_g, radius=1.0)
    with pytest.raises(TypeError, match=r"fun: expected a scalar .*f\(x0\) is str"):
        minimize(lambda x: "1.0", np.ones(3), jac=_g, radius=1.0)
    with pytest.raises(TypeError, match=r"fun: with jac=True, expected fun\(x\) to return a pair"):
        minimize(_f, np.ones(3), jac=True, radius=1.0)


def test_b1_above_b2_warns_once_at_the_callers_line(lsq: dict) -> None:
    with pytest.warns(lionk.LionKWarning) as record:
        minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], radius=1.0, betas=(0.99, 0.9),
                 maxiter=20)
    lion = [w for w in record if issubclass(w.category, lionk.LionKWarning)]
    assert len(lion) == 1 and lion[0].filename == __file__
    assert "b1=0.99 > b2=0.9" in str(lion[0].message)


def test_non_finite_f_during_the_run_stops() -> None:
    def f(x):
        return math.nan if x[0] < 0.9 else float(np.sum(x * x))

    res = minimize(f, np.ones(3), jac=_g, radius=2.0, maxiter=100)
    assert res.status == 3 and not res.success and "f is not finite at iteration" in res.message


# ---------------------------------------------------------------------------------------------
# Progress display, imports, plots.


def test_nothing_is_printed_by_default(lsq: dict, capsys: pytest.CaptureFixture) -> None:
    minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], radius=1.0, maxiter=20)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_progress_line_without_tqdm(lsq: dict, capsys: pytest.CaptureFixture,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tqdm" else real(name, *a))
    minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], radius=1.0, maxiter=20, progress=True)
    out = capsys.readouterr()
    assert out.out == ""
    assert "\rlionk.minimize 20/20" in out.err and "f=" in out.err and "H=" in out.err
    assert "violation=" in out.err and out.err.endswith("\n")


def test_progress_uses_tqdm_when_installed(lsq: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict = {"postfix": [], "update": 0, "closed": False}

    class FakeBar:
        def __init__(self, total, desc, leave):
            calls["total"], self.n = total, 0

        def set_postfix(self, refresh=True, **kw):
            calls["postfix"].append(kw)

        def update(self, n):
            self.n += n
            calls["update"] = self.n

        def close(self):
            calls["closed"] = True

    fake = types.ModuleType("tqdm")
    fake.__spec__ = importlib.machinery.ModuleSpec("tqdm", None)
    fake.tqdm = FakeBar
    monkeypatch.setitem(sys.modules, "tqdm", fake)
    minimize(lsq["f"], np.zeros(10), jac=lsq["jac"], radius=1.0, maxiter=15, progress=True)
    assert calls["total"] == 15 and calls["update"] == 15 and calls["closed"]
    assert set(calls["postfix"][-1]) == {"f", "H", "viol"}


def test_import_pulls_in_no_optional_library() -> None:
    code = (
        "import sys, lionk, lionk.analysis.minimize, lionk.plot\n"
        "bad = {'torch', 'jax', 'cupy', 'matplotlib', 'tqdm', 'scipy'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib is not installed")
def test_plot_history(lsq: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import lionk.plot

    res = minimize(lsq["f"], np.full(10, 2.0), jac=lsq["jac"], radius=1.0, maxiter=400)
    fig = lionk.plot.history(res)
    try:
        axes = fig.get_axes()
        assert len(axes) == 3
        f_line = axes[0].get_lines()[0]
        np.testing.assert_array_equal(f_line.get_ydata(), res.history["f"])
        labels = [ln.get_label() for ax in axes for ln in ax.get_lines()]
        assert {"f(x_k)", "H_k (Lyapunov)", "constraint violation", "KKT residual", "‖x‖_∞",
                "radius 1"} <= set(labels)
        radius_line = [ln for ln in axes[2].get_lines() if ln.get_label() == "radius 1"][0]
        assert list(radius_line.get_ydata()) == [1.0, 1.0]
    finally:
        plt.close(fig)
    fig2, axs = plt.subplots(1, 3)
    try:
        assert lionk.plot.history(res, ax=axs) is fig2
        with pytest.raises(TypeError, match=r"ax: expected None or a sequence of three"):
            lionk.plot.history(res, ax=axs[:2])
    finally:
        plt.close(fig2)
    with pytest.raises(TypeError, match=r"result: expected the OptimizeResult"):
        lionk.plot.history({"x": 1})


# ---------------------------------------------------------------------------------------------
# The examples, with real assertions.


def test_example_box_lsq_matches_lsq_linear() -> None:
    ex = load_example("box_lsq")
    out = ex["main"](verbose=False)  # every default but the radius
    assert out["x_free_outside"] > 1.0  # the unconstrained solution leaves the box
    assert out["rel_objective_diff"] <= 1e-6
    assert out["objective"] >= out["scipy_objective"] * (1 - 1e-12)
    assert out["objective"] - out["scipy_objective"] <= out["gap"]
    assert out["violation"] == 0.0 and 10 <= out["active"] < 50
    assert out["lr"] == default_lr(1.0, 1000) == 0.05
    # run longer and the stopping rule certifies the result
    long = ex["main"](maxiter=5000, tol=1e-5, verbose=False)
    assert long["success"] and long["kkt_residual"] <= 1e-5
    assert long["objective"] - long["scipy_objective"] <= long["gap"]
    assert long["rel_objective_diff"] <= 1e-9


def test_example_l2_logistic_matches_slsqp() -> None:
    out = load_example("l2_logistic")["main"](verbose=False)
    assert out["scipy_success"]
    assert out["unconstrained_norm"] > 10 * out["radius"]  # the ball constraint is active
    assert out["success"] and out["kkt_residual"] <= 1e-9
    assert out["rel_objective_diff"] <= 1e-6
    assert out["objective"] - out["scipy_objective"] <= out["gap"] + 1e-13
    assert out["objective"] >= out["scipy_objective"] - 1e-12
    assert out["norm"] <= out["radius"] * (1 + 1e-12)
    assert out["scipy_norm"] == pytest.approx(out["radius"], rel=1e-9)


def test_example_sparse_deadzone_matches_fista_and_lbfgsb() -> None:
    out = load_example("sparse_deadzone")["main"](verbose=False)
    assert out["F"] == pytest.approx(out["F_recomputed"], rel=1e-14)  # F = f + e‖x‖₁
    assert out["F_fista"] == pytest.approx(out["F_lbfgsb"], rel=1e-12)  # the references agree
    assert out["rel_diff_fista"] <= 1e-8 and out["rel_diff_lbfgsb"] <= 1e-8
    assert out["F"] - min(out["F_fista"], out["F_lbfgsb"]) <= out["gap"] + 1e-12
    # sparse, with the references' support (their smallest nonzero is far above lionk's error)
    assert out["min_nonzero_fista"] > 100 * out["max_abs_diff_fista"]
    np.testing.assert_array_equal(out["support"], out["support_fista"])
    assert len(out["support"]) <= 10 and out["exact_zeros"] >= 35
    assert out["on_edge"] >= 1 and out["violation"] == 0.0


@pytest.mark.skipif(not (HAVE_TORCH and HAVE_JAX), reason="needs torch and jax")
def test_example_same_on_every_backend() -> None:
    out = load_example("same_on_every_backend")["main"](verbose=False)
    assert out["backends"] == ["numpy", "torch", "jax"]
    runs = out["runs"]
    assert runs["torch"]["type"] == "torch.Tensor" and runs["jax"]["type"].startswith("jax")
    # bitwise tier with identical gradients: x, nit and the recorded f
    assert all(out["bitwise_x"].values()), out["bitwise_x"]
    assert all(out["bitwise_f"].values()) and all(out["same_nit"].values())
    # H involves reductions: ulp tier
    assert max(out["H_rel_diff"].values()) <= 1e-12
    # each library's own autodiff: semantic tier
    assert max(out["autodiff_rel_objective_diff"].values()) <= 1e-9
