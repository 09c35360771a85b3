"""The κ registry and the built-in κ, checked against independent references.

References are numpy float64 formulas written out here from theory.md §6, scipy's scalar and
vector optimizers (for the conjugates, which are computed as a supremum numerically), and
values computed by hand. lionk's own output is only compared against itself where two lionk
entry points must agree (per-backend ∇K versus numpy ∇K).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize, minimize_scalar

import lionk
from lionk.kappa import Kappa, KappaValidationError

from ._util import assert_bitwise_equal, ulps

EPS64 = float(np.finfo(np.float64).eps)

# ---------------------------------------------------------------------------------------------
# Hand-written float64 references (theory.md §6). Each entry: K, ∇K, K*, domain distance.


def _box_dist(z):
    return max(float(np.max(np.abs(z) - 1.0, initial=0.0)), 0.0)


def _indicator(d, val):
    return math.inf if d > 0 else val


def ref_sign():
    return dict(
        value=lambda y: np.sum(np.abs(y)),
        grad=lambda y: np.sign(y) + 0.0,  # +0.0 canonicalises -0 (exact sign has sign(±0)=+0)
        conj=lambda z: _indicator(_box_dist(z), 0.0),
        dist=_box_dist,
    )


def ref_l2():
    def grad(y):
        n = np.sqrt(np.sum(y * y))
        return y / n if n > 0 else np.zeros_like(y)

    return dict(
        value=lambda y: np.sqrt(np.sum(y * y)),
        grad=grad,
        conj=lambda z: _indicator(max(np.sqrt(np.sum(z * z)) - 1.0, 0.0), 0.0),
        dist=lambda z: max(np.sqrt(np.sum(z * z)) - 1.0, 0.0),
    )


def ref_l2_rms():
    """The l2 κ at its default scale='rms' (K = √n‖y‖₂, ball ‖z‖₂ ≤ √n), which is also
    quadratic at its default scale='auto' (∇K = y/RMS(y))."""
    def grad(y):
        r = np.sqrt(np.mean(y * y))
        return y / r if r > 0 else np.zeros_like(y)

    def dist(z):
        return max(np.sqrt(np.sum(z * z)) - np.sqrt(z.size), 0.0)

    return dict(
        value=lambda y: np.sqrt(y.size) * np.sqrt(np.sum(y * y)),
        grad=grad,
        conj=lambda z: _indicator(dist(z), 0.0),
        dist=dist,
    )


def ref_lp(p):
    q = p / (p - 1.0)

    def norm(y, r):
        return np.sum(np.abs(y) ** r) ** (1.0 / r)

    def grad(y):
        n = norm(y, p)
        return np.sign(y) * np.abs(y) ** (p - 1.0) / n ** (p - 1.0) if n > 0 else np.zeros_like(y)

    return dict(
        value=lambda y: norm(y, p),
        grad=grad,
        conj=lambda z: _indicator(max(norm(z, q) - 1.0, 0.0), 0.0),
        dist=lambda z: max(norm(z, q) - 1.0, 0.0),
    )


def ref_huber(d):
    def value(y):
        a = np.abs(y)
        return np.sum(np.where(a <= d, y * y / (2 * d), a - d / 2))

    return dict(
        value=value,
        grad=lambda y: np.clip(y / d, -1.0, 1.0),
        conj=lambda z: _indicator(_box_dist(z), d / 2 * np.sum(z * z)),
        dist=_box_dist,
    )


def ref_relativistic(d):
    return dict(
        value=lambda y: np.sum(np.sqrt(y * y + d * d) - d),
        grad=lambda y: y / np.sqrt(y * y + d * d),
        conj=lambda z: _indicator(_box_dist(z), np.sum(d - d * np.sqrt(np.clip(1 - z * z, 0, None)))),
        dist=_box_dist,
    )


def ref_relativistic_l2(d):
    def dist(z):
        return max(np.sqrt(np.sum(z * z)) - 1.0, 0.0)

    return dict(
        value=lambda y: np.sqrt(np.sum(y * y) + d * d) - d,
        grad=lambda y: y / np.sqrt(np.sum(y * y) + d * d),
        conj=lambda z: _indicator(dist(z), d - d * np.sqrt(max(1 - np.sum(z * z), 0.0))),
        dist=dist,
    )


def ref_quadratic():
    return dict(
        value=lambda y: 0.5 * np.sum(y * y),
        grad=lambda y: y.copy(),
        conj=lambda z: 0.5 * np.sum(z * z),
        dist=lambda z: 0.0,
    )


def ref_deadzone(e):
    return dict(
        value=lambda y: np.sum(np.maximum(np.abs(y) - e, 0.0)),
        grad=lambda y: np.sign(y) * (np.abs(y) > e),
        conj=lambda z: _indicator(_box_dist(z), e * np.sum(np.abs(z))),
        dist=_box_dist,
    )


# (name, params, reference, separable, exact)
CASES = [
    ("sign", {}, ref_sign(), True, True),
    ("l2", {"scale": 1.0}, ref_l2(), False, False),
    ("l2", {}, ref_l2_rms(), False, False),
    ("lp", {"p": 3.0, "scale": 1.0}, ref_lp(3.0), False, False),
    ("lp", {"p": 1.5, "scale": 1.0}, ref_lp(1.5), False, False),
    ("huber", {"delta": 0.3}, ref_huber(0.3), True, True),
    ("relativistic", {"delta": 0.7}, ref_relativistic(0.7), True, False),
    ("relativistic-l2", {"delta": 0.7, "scale": 1.0}, ref_relativistic_l2(0.7), False, False),
    ("quadratic", {"scale": 1.0}, ref_quadratic(), True, True),
    ("quadratic", {}, ref_l2_rms(), False, False),
    ("deadzone", {"e": 0.1}, ref_deadzone(0.1), True, True),
]
IDS = [f"{n}{''.join(f'-{k}{v}' for k, v in p.items())}" for n, p, *_ in CASES]

# Closed-form results are a handful of correctly rounded float64 operations, a sum over ≤ 16
# terms and at most one libm pow/sqrt: 64 eps relative covers the reordering of the sum
# (≤ 15 eps) and pow's ≤ 1-2 ulp, amplified by at most p - 1 = 2, with margin.
RTOL64 = 64 * EPS64


def _points(rng, n=7):
    """A few test vectors: generic, with zeros and both signs, small, large."""
    return [
        rng.standard_normal(n),
        np.array([0.0, -0.0, 0.05, -0.2, 0.3, 2.5, -4.0]),
        rng.standard_normal(n) * 1e-2,
        rng.standard_normal(n) * 30.0,
    ]


@pytest.mark.parametrize(("name", "params", "ref", "separable", "exact"), CASES, ids=IDS)
def test_grad_value_match_hand_formulas(name, params, ref, separable, exact) -> None:
    """∇K(y) and K(y) equal the hand-written float64 formulas of theory.md §6."""
    k = lionk.kappa.get(name, **params)
    rng = np.random.default_rng(0)
    for y in _points(rng):
        g = np.asarray(k.grad(y))
        assert g.shape == y.shape and g.dtype == np.float64
        np.testing.assert_allclose(g, ref["grad"](y), rtol=RTOL64, atol=0)
        v = k.value(y)
        assert np.asarray(v).shape == ()
        np.testing.assert_allclose(float(v), ref["value"](y), rtol=RTOL64, atol=1e-300)


@pytest.mark.parametrize(("name", "params", "ref", "separable", "exact"), CASES, ids=IDS)
def test_flags(name, params, ref, separable, exact) -> None:
    """The ``exact`` and ``separable`` flags are those of the table in theory.md §6."""
    k = lionk.kappa.get(name, **params)
    assert k.exact is exact
    assert k.separable is separable


@pytest.mark.parametrize(("name", "params", "ref", "separable", "exact"), CASES, ids=IDS)
def test_conjugate_and_domain_distance_match_hand_formulas(name, params, ref, separable, exact) -> None:
    """K*(z) and dist(z, dom K*) equal the hand formulas inside and outside the domain;
    K* is +inf outside the domain (except for quadratic, whose domain is everything)."""
    k = lionk.kappa.get(name, **params)
    rng = np.random.default_rng(1)
    inside = rng.uniform(-1, 1, 6) * 0.15  # inside the box, the l2 ball and every lq ball (q ≥ 1.5)
    outside = np.array([0.1, -2.5, 0.3, 0.0, 1.5, -0.2])
    for z in (inside, outside):
        np.testing.assert_allclose(float(k.domain_distance(z)), ref["dist"](z), rtol=RTOL64, atol=0)
        expected = ref["conj"](z)
        got = float(k.conjugate(z))
        if math.isinf(expected):
            assert got == math.inf
        else:
            np.testing.assert_allclose(got, expected, rtol=RTOL64, atol=1e-300)
    if name != "quadratic":
        assert float(k.conjugate(outside)) == math.inf
        assert float(k.domain_distance(outside)) > 0


def test_domain_distance_values_by_hand() -> None:
    """Distances computed by hand: box → max_i(|z_i| − 1)_+, ℓ2 → (‖z‖₂ − 1)_+, ℓq → (‖z‖_q − 1)_+."""
    z = np.array([3.0, -4.0])  # |z|_∞ = 4, ‖z‖₂ = 5, ‖z‖_2 for p = 2
    assert float(lionk.kappa.get("sign").domain_distance(z)) == 3.0
    assert float(lionk.kappa.get("huber", delta=1.0).domain_distance(z)) == 3.0
    assert float(lionk.kappa.get("deadzone", e=0.5).domain_distance(z)) == 3.0
    assert float(lionk.kappa.get("l2", scale=1.0).domain_distance(z)) == 4.0
    assert float(lionk.kappa.get("relativistic-l2", delta=1.0, scale=1.0).domain_distance(z)) == 4.0
    # p = 2 gives q = 2: ‖(3, -4)‖_2 = 5 (pow-based, so only to rounding)
    assert float(lionk.kappa.get("lp", p=2.0, scale=1.0).domain_distance(z)) == pytest.approx(4.0, rel=8 * EPS64)
    # p = 3 gives q = 3/2: ‖(1, 1)‖_{3/2} = 2^{2/3}
    assert float(lionk.kappa.get("lp", p=3.0, scale=1.0).domain_distance(np.array([1.0, 1.0]))) == pytest.approx(
        2.0 ** (2.0 / 3.0) - 1.0, rel=16 * EPS64
    )
    assert float(lionk.kappa.get("sign").domain_distance(np.array([0.5, -1.0]))) == 0.0
    assert float(lionk.kappa.get("quadratic", scale=1.0).domain_distance(z)) == 0.0


def test_values_by_hand() -> None:
    """A few κ values and gradients worked out on paper."""
    y = np.array([3.0, -4.0])
    assert float(lionk.kappa.get("sign").value(y)) == 7.0
    assert float(lionk.kappa.get("l2", scale=1.0).value(y)) == 5.0
    np.testing.assert_array_equal(lionk.kappa.get("l2", scale=1.0).grad(y), [0.6, -0.8])
    assert float(lionk.kappa.get("quadratic", scale=1.0).value(y)) == 12.5
    # huber δ=2: |3| > 2 → 3 − 1 = 2; |−4| → 3; grads clip(y/2) = (1, −1)
    assert float(lionk.kappa.get("huber", delta=2.0).value(y)) == 5.0
    assert float(lionk.kappa.get("huber", delta=4.0).value(y)) == 9 / 8 + 2.0  # 9/8 + 16/8
    # relativistic-l2 δ = 12: √(25 + 144) − 12 = 1; grad = y/13
    k = lionk.kappa.get("relativistic-l2", delta=12.0, scale=1.0)
    assert float(k.value(y)) == 1.0
    np.testing.assert_allclose(k.grad(y), [3 / 13, -4 / 13], rtol=2 * EPS64)
    # deadzone e = 3.5: only |−4| > 3.5 counts
    assert float(lionk.kappa.get("deadzone", e=3.5).value(y)) == 0.5
    np.testing.assert_array_equal(lionk.kappa.get("deadzone", e=3.5).grad(y), [0.0, -1.0])
    # sign(0) = 0 (a valid subgradient), and -0 maps to +0
    g = np.asarray(lionk.kappa.get("sign").grad(np.array([0.0, -0.0, -2.0])))
    assert g.tolist() == [0.0, 0.0, -1.0] and not np.signbit(g[:2]).any()


# ---------------------------------------------------------------------------------------------
# The conjugate, computed independently as a supremum.

SEPARABLE_SCALAR = [
    # name, params, scalar K, points z inside the domain, maximiser bound
    ("sign", {}, lambda y: abs(y), [-0.9, -0.3, 0.0, 0.5, 1.0]),
    ("huber", {"delta": 0.3}, lambda y: y * y / 0.6 if abs(y) <= 0.3 else abs(y) - 0.15, [-1.0, -0.6, 0.2, 0.95]),
    ("relativistic", {"delta": 0.7}, lambda y: math.sqrt(y * y + 0.49) - 0.7, [-0.9, -0.4, 0.1, 0.8]),
    ("quadratic", {"scale": 1.0}, lambda y: 0.5 * y * y, [-3.0, -0.5, 0.7, 2.0]),
    ("deadzone", {"e": 0.1}, lambda y: max(abs(y) - 0.1, 0.0), [-1.0, -0.5, 0.0, 0.3, 0.9]),
]


def _sup_scalar(z: float, K, R: float) -> float:
    """sup_{|y| ≤ R} z·y − K(y) with scipy's bounded Brent method."""
    res = minimize_scalar(lambda y: -(z * y - K(y)), bounds=(-R, R), method="bounded",
                          options={"xatol": 1e-11, "maxiter": 2000})
    # Brent may stop next to a kink (y = 0 for sign, y = ±e for deadzone, ±δ for huber); any
    # y gives a lower bound of the supremum, so also evaluate the kinks and the ends.
    ys = [0.0, 0.1, -0.1, 0.3, -0.3, R, -R]
    return max([-res.fun] + [z * y - K(y) for y in ys])


@pytest.mark.parametrize(("name", "params", "K", "zs"), SEPARABLE_SCALAR, ids=[c[0] for c in SEPARABLE_SCALAR])
def test_conjugate_equals_numerical_supremum(name, params, K, zs) -> None:
    """For separable κ, K*(z) = Σ_i sup_y (z_i·y − K(y)), the supremum found by
    scipy.optimize.minimize_scalar; lionk's conjugate of the whole vector must equal the sum."""
    k = lionk.kappa.get(name, **params)
    R = 20.0  # every maximiser here is within |y| ≤ 0.7·0.9/√(1−0.81) ≈ 1.5 or |y| ≤ 3
    sups = [_sup_scalar(z, K, R) for z in zs]
    # Brent with xatol 1e-11 on a function that is smooth or kinked at its maximiser: the
    # objective error is ≤ |slope|·xatol ≈ 1e-11; 1e-9 leaves margin.
    got = float(k.conjugate(np.array(zs)))
    assert got == pytest.approx(sum(sups), abs=1e-9)


@pytest.mark.parametrize("name,params,K", [(c[0], c[1], c[2]) for c in SEPARABLE_SCALAR if c[0] != "quadratic"],
                         ids=[c[0] for c in SEPARABLE_SCALAR if c[0] != "quadratic"])
def test_conjugate_outside_domain_is_unbounded(name, params, K) -> None:
    """Outside the box (|z| > 1) the supremum grows without bound (about R·(|z| − 1)),
    and lionk returns +inf there."""
    z = 1.25
    s1 = _sup_scalar(z, K, 1e3)
    s2 = _sup_scalar(z, K, 1e6)
    assert s2 > 100 * s1 > 0  # grows linearly in R: no finite supremum
    k = lionk.kappa.get(name, **params)
    assert float(k.conjugate(np.array([0.1, z]))) == math.inf


@pytest.mark.parametrize(("name", "params", "p"), [("l2", {"scale": 1.0}, 2.0), ("lp", {"p": 3.0, "scale": 1.0}, 3.0),
                                                ("lp", {"p": 1.5, "scale": 1.0}, 1.5)])
def test_norm_domain_is_dual_ball_numerically(name, params, p) -> None:
    """For a norm K = ‖·‖_p, dom K* is the unit ball of the dual norm ‖z‖_q = sup_y z·y/‖y‖_p.
    The dual norm is computed here by numerical maximisation (scipy.optimize.minimize, from a
    start that is not the analytic maximiser) and must equal 1 + domain_distance(z) outside
    the ball; K*(z) = +inf there and 0 inside."""
    k = lionk.kappa.get(name, **params)
    rng = np.random.default_rng(3)
    for _ in range(3):
        z = rng.standard_normal(4) * 2.0
        obj = lambda y, z=z: -(z @ y) / np.sum(np.abs(y) ** p) ** (1 / p)  # noqa: E731
        best = min(
            (minimize(obj, rng.standard_normal(4), method="Nelder-Mead",
                      options={"xatol": 1e-12, "fatol": 1e-14, "maxiter": 20000}) for _ in range(3)),
            key=lambda r: r.fun,
        )
        dual = -best.fun
        assert dual > 1.0  # these z are outside the unit ball
        # Nelder-Mead stops with a relative objective accuracy ~1e-9 on this smooth problem.
        assert float(k.domain_distance(z)) + 1.0 == pytest.approx(dual, rel=1e-7)
        assert float(k.conjugate(z)) == math.inf
        zin = z / (dual * 1.01)
        assert float(k.domain_distance(zin)) == 0.0
        assert float(k.conjugate(zin)) == 0.0


def test_relativistic_l2_conjugate_numerically() -> None:
    """K*(z) for relativistic-l2 (non-separable, smooth): sup_y z·y − (√(‖y‖² + δ²) − δ) by
    BFGS equals δ − δ√(1 − ‖z‖²) as lionk computes it."""
    d = 0.7
    k = lionk.kappa.get("relativistic-l2", delta=d, scale=1.0)
    rng = np.random.default_rng(4)
    for _ in range(3):
        z = rng.standard_normal(3)
        z *= 0.8 / np.linalg.norm(z)
        res = minimize(lambda y, z=z: -(z @ y - (np.sqrt(y @ y + d * d) - d)), np.zeros(3), method="BFGS",
                       options={"gtol": 1e-12})
        # BFGS on a smooth strongly concave-in-a-neighbourhood objective: ~1e-12 objective accuracy
        assert float(k.conjugate(z)) == pytest.approx(-res.fun, abs=1e-9)


@pytest.mark.parametrize(("name", "params", "ref", "separable", "exact"), CASES, ids=IDS)
def test_fenchel_young(name, params, ref, separable, exact) -> None:
    """K(y) + K*(∇K(y)) = y·∇K(y) (equality), and K(y) + K*(z) ≥ y·z for other z in the domain."""
    k = lionk.kappa.get(name, **params)
    rng = np.random.default_rng(5)
    for y in _points(rng):
        g = np.asarray(k.grad(y))
        # For a norm κ, ∇K(y) lies on the boundary of the dual ball, and rounding can put it
        # outside by an ulp, where the indicator K* is +inf. That is the only tolerated miss:
        # the distance must be at most a few ulps, and K* is then taken just inside.
        d = float(k.domain_distance(g))
        assert d <= 16 * EPS64
        if d > 0:
            g = g * (1.0 - 16 * EPS64)
        lhs = float(k.value(y)) + float(k.conjugate(g))
        rhs = float(y @ g)
        # each side is a sum of ≤ 7 terms of magnitude ≤ scale; 64 eps·scale bounds the rounding
        scale = float(np.sum(np.abs(y * g))) + abs(float(k.value(y))) + 1.0
        assert lhs == pytest.approx(rhs, abs=64 * EPS64 * scale)
        z = np.clip(rng.standard_normal(y.shape), -1, 1) * 0.3
        assert float(k.value(y)) + float(k.conjugate(z)) >= float(y @ z) - 64 * EPS64 * scale


# ---------------------------------------------------------------------------------------------
# Scope of norm κ over a tree.


def test_scope_global_vs_tensor_l2() -> None:
    """scope="global": one norm over all leaves (grad = leaf/‖all‖); scope="tensor": one norm
    per leaf. Values, conjugates and distances follow the same split."""
    a = np.array([3.0, 0.0])
    b = np.array([0.0, 4.0, 0.0])
    kt = lionk.kappa.get("l2", scope="tensor", scale=1.0)
    kg = lionk.kappa.get("l2", scope="global", scale=1.0)
    gt = kt.tree_grad([a, b])
    gg = kg.tree_grad([a, b])
    np.testing.assert_array_equal(gt[0], [1.0, 0.0])
    np.testing.assert_array_equal(gt[1], [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(gg[0], [0.6, 0.0])
    np.testing.assert_array_equal(gg[1], [0.0, 0.8, 0.0])
    assert kt.tree_value([a, b]) == 7.0
    assert kg.tree_value([a, b]) == 5.0
    # z with each leaf inside its own unit ball but the concatenation outside the global ball
    za, zb = np.array([0.6, 0.0]), np.array([0.0, 0.8, 0.0]) * 1.25  # ‖za‖ = 0.6, ‖zb‖ = 1.0
    assert kt.tree_conjugate([za, zb]) == 0.0
    assert kt.tree_domain_distance([za, zb]) == 0.0
    assert kg.tree_conjugate([za, zb]) == math.inf
    assert kg.tree_domain_distance([za, zb]) == pytest.approx(math.sqrt(0.36 + 1.0) - 1.0, rel=4 * EPS64)
    # tensor scope: the largest per-leaf distance
    assert kt.tree_domain_distance([np.array([3.0]), np.array([0.0, 1.5])]) == 2.0


def test_scope_global_rms_scale_counts_every_element() -> None:
    """The default scale='rms' of a global l2 is √N over all N elements of the tree: ∇K =
    leaf·√N/‖all‖ (per-element RMS 1 over the tree), the ball ‖z‖ ≤ √N, RMS(x) ≤ 1/λ."""
    a, b = np.array([3.0, 0.0]), np.array([0.0, 4.0, 0.0])  # ‖all‖ = 5, N = 5
    kg = lionk.kappa.get("l2", scope="global")
    ga, gb = kg.tree_grad([a, b])
    np.testing.assert_allclose(ga, a * (math.sqrt(5) / 5), rtol=2 * EPS64)
    np.testing.assert_allclose(gb, b * (math.sqrt(5) / 5), rtol=2 * EPS64)
    assert kg.tree_value([a, b]) == pytest.approx(5 * math.sqrt(5), rel=2 * EPS64)
    z = [a * (math.sqrt(5) / 5) * 1.5, b * (math.sqrt(5) / 5) * 1.5]  # ‖z‖ = 1.5·√5
    assert kg.tree_domain_distance(z) == pytest.approx(0.5 * math.sqrt(5), rel=8 * EPS64)
    assert kg.tree_conjugate(z) == math.inf
    assert kg.tree_conjugate([v * (1 / 1.5) for v in z]) == 0.0
    c = kg.constraint
    assert c.per_element and c.evaluate([a, b]) == pytest.approx(math.sqrt(5))  # RMS of all
    kt = lionk.kappa.get("l2")
    assert kt.constraint.evaluate([a, b]) == pytest.approx(max(3 / math.sqrt(2), 4 / math.sqrt(3)))


@pytest.mark.parametrize(("name", "params"), [("lp", {"p": 3.0, "scale": 1.0}),
                                              ("relativistic-l2", {"delta": 0.5, "scale": 1.0})])
def test_scope_global_matches_concatenation(name, params) -> None:
    """A global-scope κ over two leaves equals the tensor-scope κ of their concatenation
    (hand formulas on the concatenated vector, split back)."""
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal(3), rng.standard_normal((2, 2))
    ref = ref_lp(3.0) if name == "lp" else ref_relativistic_l2(0.5)
    cat = np.concatenate([a.ravel(), b.ravel()])
    kg = lionk.kappa.get(name, **params, scope="global")
    ga, gb = kg.tree_grad([a, b])
    gcat = ref["grad"](cat)
    np.testing.assert_allclose(ga, gcat[:3], rtol=RTOL64)
    np.testing.assert_allclose(gb, gcat[3:].reshape(2, 2), rtol=RTOL64)
    assert kg.tree_value([a, b]) == pytest.approx(ref["value"](cat), rel=RTOL64)
    kt = lionk.kappa.get(name, **params, scope="tensor")
    ta, tb = kt.tree_grad([a, b])
    np.testing.assert_allclose(ta, ref["grad"](a), rtol=RTOL64)
    np.testing.assert_allclose(tb, ref["grad"](b.ravel()).reshape(2, 2), rtol=RTOL64)


# ---------------------------------------------------------------------------------------------
# ∇K on every backend.

# Non-exact κ: sums over n = 16 elements in a library-dependent order (≤ 15 eps relative),
# halved by sqrt or divided by p through pow, plus ≤ 1 ulp for each of sqrt/pow (torch's sqrt
# is not correctly rounded), one division, and amplification by the exponent p − 1 ≤ 2 in lp.
# That is ≤ 2·(15/2 + 3) ≈ 21 ulps; 32 ulps is the bound used (measured with these inputs: at most 2).
ULP_BOUND = 32


@pytest.mark.parametrize(("name", "params", "ref", "separable", "exact"), CASES, ids=IDS)
def test_grad_on_every_backend(backend, float_dtype, name, params, ref, separable, exact) -> None:
    """∇K on each backend equals ∇K on numpy: bitwise for exact κ, within ULP_BOUND ulps
    otherwise; shape, dtype and device are kept."""
    k = lionk.kappa.get(name, **params)
    rng = np.random.default_rng(7)
    y = (rng.standard_normal(16) * 2).astype(float_dtype)
    y[:3] = [0.0, 0.1, -0.1]  # zero and the deadzone edge as rounded to the dtype
    y[3] = np.nextafter(np.asarray(0.1, float_dtype), np.asarray(1.0, float_dtype))
    y = y.astype(float_dtype)
    expected = np.asarray(k.grad(y))
    assert expected.dtype == np.dtype(float_dtype)
    yb = backend.asarray(y)
    got = k.grad(yb)
    assert tuple(got.shape) == y.shape
    assert got.dtype == yb.dtype
    got = backend.to_numpy(got)
    if exact:
        assert_bitwise_equal(got, expected, f"{name} on {backend.name}")
    else:
        nz = expected != 0
        assert np.all(ulps(got[nz], expected[nz]) <= ULP_BOUND), (got, expected)
        assert np.all(got[~nz] == 0)


def test_exact_sign_nan_and_negative_zero(backend) -> None:
    """The exact sign maps NaN → NaN and −0 → +0 on every backend (raw jnp.sign keeps −0,
    raw torch.sign maps NaN to 0)."""
    y = np.array([np.nan, -0.0, 0.0, -3.0, 5.0], dtype=np.float32)
    got = backend.to_numpy(lionk.kappa.get("sign").grad(backend.asarray(y)))
    assert np.isnan(got[0])
    assert_bitwise_equal(got[1:], np.array([0.0, 0.0, -1.0, 1.0], np.float32), backend.name)


# ---------------------------------------------------------------------------------------------
# The registry.


def test_aliases_and_available() -> None:
    """"l1" and "lion" are aliases of "sign"; available() lists built-ins and aliases, sorted."""
    names = lionk.kappa.available()
    assert names == sorted(names)
    for n in ("sign", "l1", "lion", "l2", "lp", "huber", "relativistic", "relativistic-l2",
              "quadratic", "deadzone"):
        assert n in names
    for alias in ("l1", "lion"):
        k = lionk.kappa.get(alias)
        assert k.name == "sign"
        np.testing.assert_array_equal(k.grad(np.array([-2.0, 0.0, 3.0])), [-1.0, 0.0, 1.0])


def test_unknown_kappa_lists_available_names() -> None:
    """An unknown name raises KeyError whose message names it and lists every available κ."""
    with pytest.raises(KeyError) as ei:
        lionk.kappa.get("signum")
    msg = str(ei.value)
    assert "signum" in msg
    for n in lionk.kappa.available():
        assert n in msg


@pytest.mark.parametrize(
    ("name", "params", "exc", "fragments"),
    [
        ("huber", {"delta": -1.0}, ValueError, ["delta", "-1.0"]),
        ("huber", {"delta": 0.0}, ValueError, ["delta", "0.0"]),
        ("huber", {"foo": 1.0}, TypeError, ["foo"]),
        ("relativistic", {"delta": math.inf}, ValueError, ["delta", "inf"]),
        ("relativistic-l2", {"delta": math.nan}, ValueError, ["delta", "nan"]),
        ("deadzone", {"e": 0.0}, ValueError, ["e", "0.0"]),
        ("lp", {"p": 1.0}, ValueError, ["p", "1.0"]),
        ("lp", {"p": 0.5}, ValueError, ["p", "0.5"]),
        ("lp", {"p": "abc"}, TypeError, ["p", "abc"]),
        ("l2", {"scope": "row"}, ValueError, ["scope", "row"]),
        ("sign", {"delta": 1.0}, TypeError, ["delta"]),
        ("quadratic", {"scope": "global"}, TypeError, ["scope"]),
    ],
)
def test_invalid_kappa_parameters(name, params, exc, fragments) -> None:
    """Invalid κ parameters raise (TypeError for an unknown name, ValueError for a bad value)
    with a message naming the parameter and the received value."""
    with pytest.raises(exc) as ei:
        lionk.kappa.get(name, **params)
    for f in fragments:
        assert f in str(ei.value)


def _cubic(xp_from):
    """K(y) = Σ|y|³/3, ∇K = sign(y)·y², K*(z) = Σ (2/3)|z|^{3/2}; written with array-API calls."""
    from array_api_compat import array_namespace

    def grad(y):
        xp = array_namespace(y)
        return xp.sign(y) * (y * y)

    def value(y):
        xp = array_namespace(y)
        a = xp.abs(y)
        return xp.sum(a * a * a) * (1.0 / 3.0)

    def conj(z):
        xp = array_namespace(z)
        return xp.sum(xp.pow(xp.abs(z), 1.5)) * (2.0 / 3.0)

    def dist(z):
        xp = array_namespace(z)
        return xp.asarray(0.0, dtype=z.dtype)

    return Kappa(xp_from, grad=grad, value=value, conjugate=conj, domain_distance=dist,
                 exact=False, separable=True)


@pytest.fixture
def cubic_registered():
    lionk.kappa.register("cubic", _cubic("cubic"))
    yield
    lionk.kappa.unregister("cubic")
    assert "cubic" not in lionk.kappa.available()


def test_register_user_kappa_and_step_with_it(cubic_registered, backend) -> None:
    """A valid user κ registers, is listed, and drives lionk.step by name: the result equals a
    hand-written numpy step with ∇K(c) = sign(c)·c²."""
    assert "cubic" in lionk.kappa.available()
    rng = np.random.default_rng(8)
    x = rng.standard_normal(6)
    g = rng.standard_normal(6)
    m = rng.standard_normal(6) * 0.1
    lr, wd, b1, b2 = 0.01, 0.5, 0.9, 0.99
    c = b1 * m + (1 - b1) * g
    x_ref = (1 - lr * wd) * x - lr * (np.sign(c) * c * c)
    m_ref = b2 * m + (1 - b2) * g
    state = lionk.State(3, backend.asarray(m), 0)
    x2, s2 = lionk.step(backend.asarray(x), backend.asarray(g), state, lr=lr, betas=(b1, b2),
                        weight_decay=wd, kappa="cubic")
    # the same correctly rounded float64 operations in the same order (sign is exact here: no
    # zeros): bitwise, except that raw sign differs only at ±0 and NaN, which are absent.
    assert_bitwise_equal(backend.to_numpy(x2), x_ref, "x")
    assert_bitwise_equal(backend.to_numpy(s2.momentum), m_ref, "m")
    assert s2.count == 4


def _bad_kappa(name, *, grad, value, conjugate):
    return Kappa(name, grad=grad, value=value, conjugate=conjugate, separable=True)


def test_register_rejects_non_monotone_gradient() -> None:
    """∇K(y) = −y (K concave) fails the monotonicity check: KappaValidationError naming it;
    nothing is registered."""
    bad = _bad_kappa("concave", grad=lambda y: -y, value=lambda y: -0.5 * np.sum(y * y),
                     conjugate=lambda z: 0.5 * np.sum(z * z))
    before = lionk.kappa.available()
    with pytest.raises(KappaValidationError, match="monotonicity"):
        lionk.kappa.register("concave", bad)
    assert lionk.kappa.available() == before
    with pytest.raises(KeyError):
        lionk.kappa.get("concave")


def test_register_rejects_wrong_conjugate() -> None:
    """K = ½‖y‖² with K* = ‖z‖² (twice too large) breaks the Fenchel–Young equality at
    z = ∇K(y): KappaValidationError naming Fenchel-Young; nothing is registered."""
    bad = _bad_kappa("badconj", grad=lambda y: y * 1.0, value=lambda y: 0.5 * np.sum(y * y),
                     conjugate=lambda z: np.sum(z * z))
    before = lionk.kappa.available()
    with pytest.raises(KappaValidationError, match="Fenchel-Young"):
        lionk.kappa.register("badconj", bad)
    assert lionk.kappa.available() == before
    assert issubclass(KappaValidationError, ValueError)


def test_register_rejects_non_odd_gradient() -> None:
    """K(y) = Σ max(y, 0)·y²/2-like asymmetric κ: ∇K(y) = max(y, 0) is monotone and K* is its
    correct conjugate (½ max(z, 0)² for z ≥ 0, +inf below), but ∇K is not odd, which the
    step's sign convention requires (theory.md §1): rejected, nothing registered."""
    bad = Kappa("halfquad", grad=lambda y: np.maximum(y, 0.0),
                value=lambda y: 0.5 * np.sum(np.maximum(y, 0.0) ** 2),
                conjugate=lambda z: np.asarray(math.inf if np.any(z < 0) else 0.5 * np.sum(z * z)),
                separable=True)
    with pytest.raises(KappaValidationError, match="odd"):
        lionk.kappa.register("halfquad", bad)
    assert "halfquad" not in lionk.kappa.available()


def test_register_rejects_too_small_conjugate() -> None:
    """K = ‖y‖₁ with K* ≡ −1 satisfies neither Fenchel–Young relation: rejected."""
    bad = _bad_kappa("badl1", grad=lambda y: np.sign(y), value=lambda y: np.sum(np.abs(y)),
                     conjugate=lambda z: np.asarray(-1.0))
    with pytest.raises(KappaValidationError, match="Fenchel-Young"):
        lionk.kappa.register("badl1", bad)
    assert "badl1" not in lionk.kappa.available()


def test_register_rejects_infinite_conjugate() -> None:
    """K = ‖y‖₁ with K* ≡ +inf (and a domain_distance claiming 0) violates K(y) + K*(∇K(y)) =
    y·∇K(y) at every y: it must be rejected, naming Fenchel-Young, and not registered."""
    bad = Kappa("infconj", grad=lambda y: np.sign(y), value=lambda y: np.sum(np.abs(y)),
                conjugate=lambda z: np.asarray(math.inf), domain_distance=lambda z: np.asarray(0.0),
                separable=True)
    try:
        with pytest.raises(KappaValidationError, match="Fenchel-Young"):
            lionk.kappa.register("infconj", bad)
        assert "infconj" not in lionk.kappa.available()
    finally:
        if "infconj" in lionk.kappa.available():
            lionk.kappa.unregister("infconj")


@pytest.mark.parametrize(("name", "params", "ref", "separable", "exact"), CASES, ids=IDS)
def test_builtin_kappas_pass_validation(name, params, ref, separable, exact) -> None:
    """Every built-in κ is a valid κ, so lionk.kappa.validate (the check register applies to
    user κ) accepts it, whatever the seed of its random points. (Regression: grad(y) of a norm κ
    may land an ulp outside the dual ball; that rounding is not a Fenchel-Young failure.)"""
    k = lionk.kappa.get(name, **params)
    for seed in range(5):
        lionk.kappa.validate(k, seed=seed)


def test_register_user_norm_kappa() -> None:
    """A user κ that is exactly a valid norm (here the ℓ3 norm, built from the built-in) can be
    registered under a new name."""
    try:
        lionk.kappa.register("l3-user", lambda: lionk.kappa.get("lp", p=3.0))
        assert "l3-user" in lionk.kappa.available()
    finally:
        if "l3-user" in lionk.kappa.available():
            lionk.kappa.unregister("l3-user")


def test_register_refuses_builtins_and_duplicates(cubic_registered) -> None:
    """Built-in names and aliases cannot be replaced or unregistered; a second registration
    needs overwrite=True; unregistering an unknown name is a KeyError."""
    for n in ("sign", "lion", "l2"):
        with pytest.raises(ValueError, match=n):
            lionk.kappa.register(n, _cubic(n))
        with pytest.raises(ValueError, match=n):
            lionk.kappa.unregister(n)
    with pytest.raises(ValueError, match="cubic"):
        lionk.kappa.register("cubic", _cubic("cubic"))
    lionk.kappa.register("cubic", _cubic("cubic"), overwrite=True)
    with pytest.raises(KeyError, match="nope"):
        lionk.kappa.unregister("nope")
