"""``lionk.minimize(..., bounds=...)``: per-coordinate, asymmetric ``lo ≤ x ≤ hi``.

Solved by the affine map x = c + s·y onto the box ‖y‖∞ ≤ 1 that Lion's constraint gives;
checked against ``scipy.optimize.lsq_linear(bounds=...)`` on scikit-learn's diabetes data.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

import lionk

scipy_optimize = pytest.importorskip("scipy.optimize")
datasets = pytest.importorskip("sklearn.datasets")
HAVE_TORCH = importlib.util.find_spec("torch") is not None

# asymmetric, some sides at 0, one coordinate pinned near its free value
LO = np.array([-100.0, -300.0, 0.0, 0.0, -800.0, -50.0, -200.0, 0.0, 0.0, 0.0, 100.0])
HI = np.array([50.0, 0.0, 600.0, 300.0, 0.0, 500.0, 100.0, 100.0, 500.0, 100.0, 200.0])


@pytest.fixture(scope="module")
def diabetes() -> dict:
    X, y = datasets.load_diabetes(return_X_y=True)
    X = np.c_[X, np.ones(len(y))]

    def f(x: np.ndarray) -> float:
        r = X @ x - y
        return 0.5 * float(r @ r)

    return {"X": X, "y": y, "f": f, "jac": lambda x: X.T @ (X @ x - y)}


def reference(d: dict, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return scipy_optimize.lsq_linear(d["X"], d["y"], bounds=(lo, hi), method="bvls",
                                     tol=1e-14).x


@pytest.mark.parametrize("form", ["Bounds", "pairs", "arrays"])
def test_asymmetric_bounds_match_lsq_linear(diabetes: dict, form: str) -> None:
    bounds = {"Bounds": scipy_optimize.Bounds(LO, HI), "pairs": list(zip(LO, HI)),
              "arrays": (LO, HI)}[form]
    x_ref = reference(diabetes, LO, HI)
    f_ref = diabetes["f"](x_ref)
    active = np.sum((x_ref <= LO + 1e-9) | (x_ref >= HI - 1e-9))
    assert active >= 3  # the bounds bind
    res = lionk.minimize(diabetes["f"], np.zeros(11), jac=diabetes["jac"], bounds=bounds)
    assert res.success, res.message
    assert np.all(res.x >= LO) and np.all(res.x <= HI) and res.constraint_violation == 0.0
    assert abs(res.fun - f_ref) <= 1e-8 * f_ref
    assert res.fun - f_ref <= res.gap  # the gap is invariant under the affine map
    g = diabetes["jac"](res.x)  # the gap in the user's coordinates: Σ max over [lo, hi]
    gap_x = float(np.sum(g * res.x - np.minimum(g * LO, g * HI)))
    assert res.gap == pytest.approx(gap_x, rel=1e-9)
    assert np.max(np.abs(res.x - x_ref)) <= 1e-3 * np.max(np.abs(x_ref))


def test_infinite_sides_with_a_radius_match_lsq_linear(diabetes: dict) -> None:
    lo, hi = LO.copy(), HI.copy()
    lo[[2, 3]] = -np.inf
    hi[8] = np.inf
    pairs = [(None if not np.isfinite(a) else a, None if not np.isfinite(b) else b)
             for a, b in zip(lo, hi)]
    x_ref = reference(diabetes, lo, hi)
    res = lionk.minimize(diabetes["f"], np.zeros(11), jac=diabetes["jac"], bounds=pairs,
                         radius=2000.0)
    assert res.success, res.message
    assert abs(res.fun - diabetes["f"](x_ref)) <= 1e-8 * diabetes["f"](x_ref)


def test_an_artificial_edge_is_not_a_success(diabetes: dict) -> None:
    """x_8 is free above; its optimum (≈ 751) is beyond radius = 300: refused, radius named."""
    hi = HI.copy()
    hi[8] = np.inf
    res = lionk.minimize(diabetes["f"], np.zeros(11), jac=diabetes["jac"], bounds=(LO, hi),
                         radius=300.0, maxiter=2000)
    assert res.x[8] == pytest.approx(300.0)
    assert not res.success and res.status == 1 and "raise radius" in res.message


def test_start_outside_and_fixed_coordinates(diabetes: dict) -> None:
    lo, hi = LO.copy(), HI.copy()
    lo[10] = hi[10] = 150.0  # x_10 fixed
    x_ref = reference(diabetes, lo, np.where(lo == hi, hi + 1e-12, hi))
    x0 = np.full(11, 1000.0)  # outside every bound
    res = lionk.minimize(diabetes["f"], x0, jac=diabetes["jac"], bounds=(lo, hi))
    assert res.success, res.message
    assert res.x[10] == 150.0
    assert abs(res.fun - diabetes["f"](x_ref)) <= 1e-8 * diabetes["f"](x_ref)


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch")
def test_bounds_with_torch_autodiff(diabetes: dict) -> None:
    import torch

    X, y = torch.tensor(diabetes["X"]), torch.tensor(diabetes["y"])
    res = lionk.minimize(lambda x: 0.5 * torch.sum((X @ x - y) ** 2),
                         torch.zeros(11, dtype=torch.float64), bounds=(LO, HI))
    assert isinstance(res.x, torch.Tensor) and res.x.dtype == torch.float64
    f_ref = diabetes["f"](reference(diabetes, LO, HI))
    assert res.success and abs(res.fun - f_ref) <= 1e-8 * f_ref


@pytest.mark.parametrize(("kwargs", "exc", "pattern"), [
    ({"bounds": (0.0, 1.0), "radius": 2.0}, ValueError, "radius: every bound is finite"),
    ({"bounds": (0.0, None)}, ValueError, "radius: bounds has an infinite side"),
    ({"bounds": (0.0, math.inf), "radius": -1.0}, ValueError, "radius: expected a finite"),
    ({"bounds": (2.0, 1.0)}, ValueError, "bounds: expected lo <= hi"),
    ({"bounds": (5.0, None), "radius": 2.0}, ValueError, "outside |x_i| <= radius"),
    ({"bounds": (0.0, 1.0), "kappa": "l2"}, ValueError, "kappa='sign'"),
    ({"bounds": (0.0, 1.0), "weight_decay": 1.0}, ValueError, "weight_decay: with bounds"),
    ({"bounds": [(0, 1)] * 4}, ValueError, "bounds: expected .lo, hi. or 3"),
    ({"bounds": (np.zeros(4), 1.0)}, ValueError, "not broadcastable"),
    ({"bounds": "box"}, TypeError, "bounds: expected"),
    ({"bounds": (float("nan"), 1.0)}, ValueError, "nan"),
])
def test_bad_bounds(kwargs: dict, exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        lionk.minimize(lambda x: float(x @ x), np.zeros(3), jac=lambda x: 2 * x, **kwargs)


def test_two_element_ambiguity_is_refused_and_bounds_object_resolves_it() -> None:
    f, jac = (lambda x: float((x - 3.0) @ (x - 3.0))), (lambda x: 2 * (x - 3.0))
    with pytest.raises(ValueError, match="scipy.optimize.Bounds"):
        lionk.minimize(f, np.zeros(2), jac=jac, bounds=((0.0, 1.0), (2.0, 5.0)))
    res = lionk.minimize(f, np.zeros(2), jac=jac, bounds=scipy_optimize.Bounds([0, 1], [2, 5]))
    np.testing.assert_allclose(res.x, [2.0, 3.0], atol=1e-6)
    # (lo, hi) pairs that read the same both ways are accepted
    res = lionk.minimize(f, np.zeros(2), jac=jac, bounds=((0.0, 1.0), (1.0, 5.0)))
    np.testing.assert_allclose(res.x, [1.0, 3.0], atol=1e-6)


def test_bounded_nonlinear_least_squares_matches_least_squares() -> None:
    """A damped oscillator A·e^(−kt)·cos(ωt + φ) fitted to noisy data with bounds that bind on
    k (the true 0.3 lies above hi = 0.25); reference: scipy.optimize.least_squares(bounds=...)
    from the same start. Defaults only."""
    rng = np.random.default_rng(3)
    t = np.linspace(0.0, 10.0, 200)

    def model(p: np.ndarray) -> np.ndarray:
        return p[0] * np.exp(-p[1] * t) * np.cos(p[2] * t + p[3])

    y = model(np.array([2.0, 0.3, 1.7, 0.4])) + 0.05 * rng.standard_normal(t.size)

    def residual(p: np.ndarray) -> np.ndarray:
        return model(p) - y

    def jacobian(p: np.ndarray) -> np.ndarray:
        e, c, s = np.exp(-p[1] * t), np.cos(p[2] * t + p[3]), np.sin(p[2] * t + p[3])
        return np.stack([e * c, -p[0] * t * e * c, -p[0] * e * s * t, -p[0] * e * s], 1)

    lo, hi = np.array([0.0, 0.0, 1.0, -np.pi]), np.array([5.0, 0.25, 3.0, np.pi])
    x0 = np.array([1.0, 0.1, 1.5, 0.0])
    ref = scipy_optimize.least_squares(residual, x0, jac=jacobian, bounds=(lo, hi),
                                       xtol=1e-15, ftol=1e-15, gtol=1e-15)
    f_ref = 0.5 * float(ref.fun @ ref.fun)
    assert ref.x[1] == pytest.approx(0.25)  # the bound binds
    res = lionk.minimize(lambda p: 0.5 * float(residual(p) @ residual(p)), x0,
                         jac=lambda p: jacobian(p).T @ residual(p), bounds=(lo, hi))
    assert res.success, res.message
    assert abs(res.fun - f_ref) <= 1e-6 * f_ref
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-5, atol=1e-6)
