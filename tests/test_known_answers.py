"""Checks with known answers (theory.md §3, §4, §7), all in numpy float64.

The references are independent: scipy.optimize.lsq_linear for the box-constrained least
squares, the analytic solution of a 1-D problem, hand-written numpy for the implicit update and
for the Lyapunov function H, and values computed by hand for the Lyapunov constants.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import lsq_linear

import lionk

from ._util import np_sign, textbook

EPS64 = float(np.finfo(np.float64).eps)


# ---------------------------------------------------------------------------------------------
# §7: 1-D problem.


@pytest.mark.parametrize("x0", [-3.0, 0.0, 0.5, 1.0, 5.0, 12.0])
def test_one_dimensional_box_edge(x0) -> None:
    """f(x) = (x − 2)², λ = 1, lr = 0.01, Lion: the unconstrained minimum 2 lies outside the
    box |x| ≤ 1, so x → 1 (the box edge) from any start, within lr."""
    lr = 0.01
    x = np.array([x0])
    state = lionk.init(x)
    for _ in range(3000):
        x, state = lionk.step(x, 2.0 * (x - 2.0), state, lr=lr, weight_decay=1.0)
    assert abs(float(x[0]) - 1.0) <= lr


# ---------------------------------------------------------------------------------------------
# §7: box-constrained least squares against scipy.


def test_box_constrained_least_squares_matches_lsq_linear() -> None:
    """Lion with λ = 2 and a cosine-decayed lr (3000 steps, full gradients) solves
    min ½‖Ax − b‖² s.t. ‖x‖_∞ ≤ 1/λ: its objective is within 1e-6 (relative) of
    scipy.optimize.lsq_linear's, and x is within the distance that strong convexity allows:
    ½σ_min²‖x − x*‖² ≤ f(x) − f(x*) for feasible x (the linear term is ≥ 0 at the optimum)."""
    rng = np.random.default_rng(40)
    A = rng.standard_normal((200, 50))
    b = rng.standard_normal(200) * 3.0
    lam = 2.0
    ref = lsq_linear(A, b, bounds=(-1 / lam, 1 / lam), method="bvls", tol=1e-14)
    assert ref.success
    x_star = ref.x
    f = lambda x: 0.5 * float(np.sum((A @ x - b) ** 2))  # noqa: E731
    f_star = f(x_star)
    active = np.sum(np.abs(x_star) >= 1 / lam - 1e-12)
    assert 0 < active < 50  # a genuinely constrained problem, not a vertex nor interior
    T, lr0 = 3000, 0.01
    x = np.zeros(50)
    state = lionk.init(x)
    for t in range(T):
        lr = lr0 * 0.5 * (1 + math.cos(math.pi * t / T)) + 1e-9  # lr must stay > 0
        x, state = lionk.step(x, A.T @ (A @ x - b), state, lr=lr, weight_decay=lam)
    assert np.max(np.abs(x)) <= (1 / lam) * (1 + 4 * EPS64)  # feasible up to rounding
    gap = (f(x) - f_star) / f_star
    assert gap <= 1e-6
    assert gap >= -1e-12  # lsq_linear's optimum cannot be beaten (up to rounding)
    sigma_min = np.linalg.svd(A, compute_uv=False).min()
    bound = math.sqrt(2 * max(f(x) - f_star, 0.0)) / sigma_min + 1e-9
    assert np.linalg.norm(x - x_star) <= bound


# ---------------------------------------------------------------------------------------------
# §3: phase 1.


@pytest.mark.parametrize("pull", ["inward", "outward", "random"])
def test_phase_one_contraction(pull) -> None:
    """Start at ‖x0‖_∞ = 10/λ. At every t, constraint_violation(x_t) ≤ (1 − ελ)^t·v0·(1+1e-12)
    + rounding, and once 0 it stays 0. With lr = 2^-5, λ = 2^-1 the box is exactly invariant
    (see test_properties); the rounding term is ≤ 2 roundings per step of values ≤ 10/λ,
    i.e. (t + 1)·2·eps·10/λ in absolute terms, which the multiplicative 1e-12 of v0 alone may
    not cover once the bound has decayed. 'outward' pushes every coordinate away from the box
    (the worst case, v_t = (1 − ελ)^t v0 exactly in real arithmetic)."""
    lam, lr = 0.5, 2.0**-5
    rng = np.random.default_rng(41)
    n = 12
    x = rng.uniform(-1, 1, n) * 10 / lam
    x[0] = 10 / lam
    x[1] = -10 / lam
    v0 = lionk.lyapunov.constraint_violation(x, weight_decay=lam)
    assert v0 == pytest.approx(9 / lam)  # max(|x_i| − 1/λ) = 10/λ − 1/λ (by hand)
    rho = 1 - lr * lam
    state = lionk.init(x)
    reached = False
    for t in range(1, 301):
        if pull == "inward":
            g = x.copy()  # f = ½‖x‖²: gradients point outward, steps inward
        elif pull == "outward":
            g = -np.sign(x) + 0.0
        else:
            g = rng.standard_normal(n)
        x, state = lionk.step(x, g, state, lr=lr, betas=(0.9, 0.99), weight_decay=lam)
        v = lionk.lyapunov.constraint_violation(x, weight_decay=lam)
        # hand-written violation as an independent check of constraint_violation
        assert v == max(float(np.max(np.abs(x) * lam - 1.0)), 0.0) / lam
        assert v <= rho**t * v0 * (1 + 1e-12) + (t + 1) * 2 * EPS64 * 10 / lam
        if reached:
            assert v == 0.0
        reached = reached or v == 0.0
    if pull != "outward":
        assert reached
    else:
        assert v == pytest.approx(rho**300 * v0, rel=1e-9)  # the bound is attained


# ---------------------------------------------------------------------------------------------
# §1: explicit decay equals implicit decay with ε' = ε/(1 − ελ).


@pytest.mark.parametrize("kappa", ["sign", "huber"])
def test_explicit_equals_implicit(kappa) -> None:
    """Along a 100-step lionk trajectory (explicit decay, ε = 0.03, λ = 0.7), the hand-written
    implicit step x' = (x − ε'∇K(c))/(1 + ε'λ) with ε' = ε/(1 − ελ), applied to the same
    (x_t, m_t, g_t), reproduces x_{t+1} to rounding: both sides take ≤ 5 correctly rounded
    operations on values ≤ |x| + ε', so |Δ| ≤ 8·eps·(|x| + ε')."""
    lr, lam, b1 = 0.03, 0.7, 0.9
    lr_i = lr / (1 - lr * lam)
    grad_k = np_sign if kappa == "sign" else (lambda y: np.clip(y, -1.0, 1.0))  # huber δ = 1
    rng = np.random.default_rng(42)
    A = rng.standard_normal((20, 8))
    bvec = rng.standard_normal(20)
    x = rng.uniform(-1, 1, 8)
    state = lionk.init(x)
    for _ in range(100):
        g = A.T @ (A @ x - bvec)
        c = b1 * state.momentum + (1 - b1) * g
        x_impl = (x - lr_i * grad_k(c)) / (1 + lr_i * lam)
        x_new, state = lionk.step(x, g, state, lr=lr, betas=(b1, 0.99), weight_decay=lam,
                                  kappa=textbook(kappa))
        assert np.all(np.abs(x_new - x_impl) <= 8 * EPS64 * (np.abs(x) + lr_i))
        x = x_new


# ---------------------------------------------------------------------------------------------
# §4: the Lyapunov function.


def _coefficient_by_hand(lr, b1, b2, lam):
    eps_p = lr / (1 - lr * lam)
    return eps_p * b1 / (eps_p * lam * (1 - b1) + 1 - b2)


def test_coefficient_by_hand() -> None:
    """coefficient(): with ε = 0.1, λ = 5 (ελ = 1/2), ε' = 0.2, b1 = 0.5, b2 = 0.75:
    c = 0.2·0.5 / (0.2·5·0.5 + 0.25) = 0.1/0.75 = 2/15."""
    assert lionk.lyapunov.coefficient(lr=0.1, betas=(0.5, 0.75), weight_decay=5.0) == pytest.approx(
        2 / 15, rel=4 * EPS64)
    with pytest.raises(ValueError, match="weight_decay"):  # λ = 0: H (with its 1/λ) is undefined
        lionk.lyapunov.coefficient(lr=0.01, betas=(0.9, 0.99), weight_decay=0.0)
    with pytest.raises(ValueError):
        lionk.lyapunov.coefficient(lr=0.5, betas=(0.9, 0.99), weight_decay=2.0)


def _H_by_hand(f, x, m, *, lr, betas, lam, kappa, delta=1.0):
    """H(x, m) = f + (1/λ)K*(λx) + c(K*(λx) + K(m) + λ mᵀx), theory.md §4, written out."""
    c = _coefficient_by_hand(lr, betas[0], betas[1], lam)
    z = lam * x
    if np.max(np.abs(z)) > 1:
        return math.inf
    if kappa == "sign":
        kstar, km = 0.0, np.sum(np.abs(m))
    else:
        kstar = delta / 2 * np.sum(z * z)
        a = np.abs(m)
        km = np.sum(np.where(a <= delta, m * m / (2 * delta), a - delta / 2))
    return f + kstar / lam + c * (kstar + km + lam * m @ x)


@pytest.mark.parametrize(("kappa", "kparams"), [("sign", {}), ("huber", {"delta": 0.5})])
def test_discrete_matches_hand_written_H(kappa, kparams) -> None:
    """lyapunov.discrete equals the hand-written H at random states inside the domain (sums of
    ≤ 3·10 terms: 64 eps relative to the magnitudes), is +inf outside, accepts the momentum
    tree or a State, and uses coefficient_value when given."""
    rng = np.random.default_rng(43)
    lr, betas, lam = 0.02, (0.9, 0.99), 0.8
    k = lionk.kappa.get(kappa, **kparams)
    for _ in range(5):
        x = rng.uniform(-1, 1, 10) / lam
        m = rng.standard_normal(10)
        fval = float(rng.standard_normal())
        expected = _H_by_hand(fval, x, m, lr=lr, betas=betas, lam=lam, kappa=kappa, **kparams)
        scale = abs(fval) + np.sum(np.abs(m)) + np.sum(np.abs(m * x)) + np.sum(x * x) + 1
        got = lionk.lyapunov.discrete(fval, x, lionk.State(0, m, 0), lr=lr, betas=betas,
                                      weight_decay=lam, kappa=k)
        assert got == pytest.approx(expected, abs=64 * EPS64 * scale)
        assert lionk.lyapunov.discrete(fval, x, m, lr=lr, betas=betas, weight_decay=lam, kappa=k) == got
        # a given coefficient replaces c (here c = 0: H = f + K*(λx)/λ)
        c0 = lionk.lyapunov.discrete(fval, x, m, lr=lr, betas=betas, weight_decay=lam, kappa=k,
                                     coefficient_value=0.0)
        kstar = 0.0 if kappa == "sign" else 0.25 * np.sum((lam * x) ** 2)
        assert c0 == pytest.approx(fval + kstar / lam, abs=64 * EPS64 * scale)
    x_out = np.full(10, 1.5 / lam)
    assert lionk.lyapunov.discrete(0.0, x_out, m, lr=lr, betas=betas, weight_decay=lam, kappa=k) == math.inf
    # domain_tol: just outside by 1e-10 counts as inside with tol 1e-9, K* taken on the domain
    x_edge = np.full(10, (1 + 1e-10) / lam)
    assert lionk.lyapunov.discrete(0.0, x_edge, m, lr=lr, betas=betas, weight_decay=lam, kappa=k) == math.inf
    assert math.isfinite(lionk.lyapunov.discrete(0.0, x_edge, m, lr=lr, betas=betas, weight_decay=lam,
                                                 kappa=k, domain_tol=1e-9))


@pytest.mark.parametrize(("kappa", "kparams"), [("sign", {}), ("huber", {"delta": 0.5}), ("deadzone", {"e": 0.1})])
def test_H_non_increasing_for_linear_f(kappa, kparams) -> None:
    """For linear f (L = 0), b1 ≤ b2 and λx0 in the box, H(x_t, m_t) never increases over 200
    float64 steps beyond rounding, and decreases overall. Rounding: H sums ≤ 4·10 terms whose
    magnitudes add to S_t, and each step's own rounding moves f by ≤ eps·Σ|a_i x_i|; so the
    allowed increase is 64·eps·S_t (S_t the sum of absolute values of all terms of H)."""
    rng = np.random.default_rng(44)
    n, lr, betas, lam = 10, 0.05, (0.9, 0.99), 0.5
    a = rng.standard_normal(n)
    x = rng.uniform(-0.9, 0.9, n) / lam
    state = lionk.State(0, rng.standard_normal(n), 0)
    k = lionk.kappa.get(kappa, **kparams)
    c = _coefficient_by_hand(lr, *betas, lam)

    def H(x, m):
        return lionk.lyapunov.discrete(float(a @ x), x, m, lr=lr, betas=betas, weight_decay=lam, kappa=k)

    def scale(x, m):
        return (np.sum(np.abs(a * x)) + np.sum((lam * x) ** 2) / lam
                + c * (np.sum(np.abs(m)) + np.sum((lam * x) ** 2) + lam * np.sum(np.abs(m * x))) + 1)

    h0 = h = H(x, state.momentum)
    for _ in range(200):
        x, state = lionk.step(x, a, state, lr=lr, betas=betas, weight_decay=lam, kappa=k)
        h_new = H(x, state.momentum)
        assert h_new <= h + 64 * EPS64 * scale(x, state.momentum)
        h = h_new
    assert h < h0 - 1.0


def test_H_increase_bounded_for_smooth_f() -> None:
    """For an L-smooth quadratic f = ½‖Ax − b‖² (L = σ_max²), each step satisfies
    H' − H ≤ bound(x, x', L) = (L/2)‖x' − x‖² (plus rounding as above)."""
    rng = np.random.default_rng(45)
    A = rng.standard_normal((15, 6))
    b = rng.standard_normal(15)
    L = np.linalg.norm(A, 2) ** 2
    lr, betas, lam = 0.01, (0.9, 0.99), 1.0
    f = lambda x: 0.5 * float(np.sum((A @ x - b) ** 2))  # noqa: E731
    x = rng.uniform(-1, 1, 6) * 0.9
    state = lionk.init(x)
    for _ in range(150):
        h = lionk.lyapunov.discrete(f(x), x, state, lr=lr, betas=betas, weight_decay=lam)
        x_new, state = lionk.step(x, A.T @ (A @ x - b), state, lr=lr, betas=betas, weight_decay=lam)
        h_new = lionk.lyapunov.discrete(f(x_new), x_new, state, lr=lr, betas=betas, weight_decay=lam)
        allowed = lionk.lyapunov.bound(x, x_new, L)
        assert allowed == pytest.approx(0.5 * L * np.sum((x_new - x) ** 2), rel=8 * EPS64)
        assert h_new - h <= allowed + 64 * EPS64 * (abs(h) + f(x) + 1)
        x = x_new


def test_bound_by_hand() -> None:
    """bound(before, after, L) = (L/2)·Σ‖x' − x‖² over a tree: here ‖Δ‖² = 1 + 4 + 9 = 14,
    L = 3 → 21."""
    before = {"a": np.array([1.0, 2.0]), "b": np.array([0.0])}
    after = {"a": np.array([2.0, 0.0]), "b": np.array([3.0])}
    assert lionk.lyapunov.bound(before, after, 3.0) == 21.0
    assert lionk.lyapunov.bound(before, before, 3.0) == 0.0


def test_constraint_violation_by_hand() -> None:
    """constraint_violation = dist(λx, dom K*)/λ: box for sign, ℓ2 ball for l2 (per tensor)."""
    x = {"a": np.array([3.0, -1.0]), "b": np.array([0.5])}
    assert lionk.lyapunov.constraint_violation(x, weight_decay=0.5) == 1.0  # max(|x|) − 2
    assert lionk.lyapunov.constraint_violation(x, weight_decay=0.25) == 0.0
    # l2 (textbook, scale=1): ‖(3, −1)‖ = √10 > 1/λ = 2 → √10 − 2
    v = lionk.lyapunov.constraint_violation(x, weight_decay=0.5, kappa=textbook("l2"))
    assert v == pytest.approx(math.sqrt(10) - 2, rel=4 * EPS64)
    # l2 at its default scale="rms": dom K* is ‖z‖₂ ≤ √n, so the ball of x is ‖x‖₂ ≤ √n/λ:
    # a (n = 2): √10 > 2√2 → √10 − 2√2; b (n = 1): 0.5 ≤ 2, inside (the difference cancels:
    # an ulp of √10 is ≈ 6 eps of it, on either side; measured 6 eps)
    v = lionk.lyapunov.constraint_violation(x, weight_decay=0.5, kappa="l2")
    assert v == pytest.approx(math.sqrt(10) - 2 * math.sqrt(2), rel=16 * EPS64)
    with pytest.raises(ValueError, match="weight_decay"):
        lionk.lyapunov.constraint_violation(x, weight_decay=0.0)


def test_continuous_by_hand() -> None:
    """continuous(): H = α f + (γ/λ)K*(λx) + ((1 − εγ)/(1 + ελ))(K*(λx) + K(m̂) − λ m̂ᵀx) with
    m̂ = −m (lionk's m is the positive average). Lion inside the box: K* = 0, K(m̂) = ‖m‖₁,
    −λ m̂ᵀx = λ mᵀx. Numbers: α = 2, γ = 0.5, ε = 0.2, λ = 1, f = 3, x = (0.5, −0.25),
    m = (1, 2): 6 + (0.9/1.2)·(3 + 0.5 − 0.5) = 6 + 2.25 = 8.25."""
    x = np.array([0.5, -0.25])
    m = np.array([1.0, 2.0])
    got = lionk.lyapunov.continuous(3.0, x, m, alpha=2.0, gamma=0.5, lr=0.2, weight_decay=1.0)
    assert got == pytest.approx(8.25, rel=8 * EPS64)
    assert lionk.lyapunov.continuous(3.0, x * 4, m, alpha=2.0, gamma=0.5, lr=0.2, weight_decay=1.0) == math.inf
