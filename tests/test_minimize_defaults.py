"""``lionk.minimize`` at its defaults on real problems (scikit-learn's bundled datasets).

Each run passes only the problem (fun, jac, x0, the constraint) and checks ``success`` and F
against an independent solver: ``scipy.optimize.lsq_linear`` (box least squares), SLSQP
(ℓ2-ball logistic regression), ``numpy.linalg.lstsq`` (no constraint). Also: ``tol`` is
relative when |F| < 1, the default lr does not degrade with a loose radius, the settled rule
refuses runs that are still travelling or oscillating widely, float32 runs do not flood
warnings, and the float32 stall outside the box is inside the default ``domain_tol``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import lionk

scipy_optimize = pytest.importorskip("scipy.optimize")
datasets = pytest.importorskip("sklearn.datasets")

ROOT = Path(__file__).resolve().parents[1]
HAVE_JAX = importlib.util.find_spec("jax") is not None
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def lsq(X: np.ndarray, y: np.ndarray) -> tuple:
    def f(x: np.ndarray) -> float:
        r = X @ x - y
        return 0.5 * float(r @ r)

    return f, (lambda x: X.T @ (X @ x - y))


@pytest.fixture(scope="module")
def diabetes_raw() -> tuple[np.ndarray, np.ndarray]:
    """442 × 10 features plus an intercept column; the unconstrained solution reaches 792."""
    X, y = datasets.load_diabetes(return_X_y=True)
    return np.c_[X, np.ones(len(y))], y


@pytest.fixture(scope="module")
def diabetes_std() -> tuple[np.ndarray, np.ndarray]:
    """Standardised features and target: the unconstrained solution is within |x_i| < 0.5."""
    X, y = datasets.load_diabetes(return_X_y=True)
    return (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std()


@pytest.mark.parametrize("radius", [10.0, 100.0, 300.0])
def test_diabetes_box_lsq_at_defaults_matches_lsq_linear(diabetes_raw: tuple, radius: float) -> None:
    X, y = diabetes_raw
    f, jac = lsq(X, y)
    res = lionk.minimize(f, np.zeros(X.shape[1]), jac=jac, radius=radius)
    ref = scipy_optimize.lsq_linear(X, y, bounds=(-radius, radius), method="bvls", tol=1e-14)
    f_ref = f(ref.x)
    assert np.max(np.abs(ref.x)) == pytest.approx(radius)  # the box binds
    assert res.success, res.message
    assert np.max(np.abs(res.x)) <= radius
    assert abs(res.fun - f_ref) <= 1e-6 * f_ref
    assert res.fun - f_ref <= res.gap  # the certificate (f convex)


def test_breast_cancer_l2_logistic_at_defaults_matches_slsqp() -> None:
    X, t = datasets.load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    s = 2.0 * t - 1.0

    def f(w: np.ndarray) -> float:
        return float(np.sum(np.logaddexp(0.0, -s * (X @ w))))

    def jac(w: np.ndarray) -> np.ndarray:
        return X.T @ (-s / (1.0 + np.exp(s * (X @ w))))

    r = 1.0
    ref = scipy_optimize.minimize(
        f, np.zeros(X.shape[1]), jac=jac, method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda w: r * r - w @ w, "jac": lambda w: -2 * w}],
        options={"ftol": 1e-15, "maxiter": 2000})
    assert np.linalg.norm(ref.x) == pytest.approx(r, rel=1e-8)  # the ball binds
    x_ref = ref.x * (r / np.linalg.norm(ref.x))  # feasible: f(x_ref) >= min f
    res = lionk.minimize(f, np.zeros(X.shape[1]), jac=jac, kappa="l2", radius=r)
    assert res.success, res.message
    assert abs(res.fun - f(x_ref)) <= 1e-6 * f(x_ref)
    assert res.fun - f(x_ref) <= res.gap


@pytest.mark.parametrize("radius", [1.0, 10.0, 100.0, 1000.0])
def test_a_loose_radius_solves_the_unconstrained_problem(diabetes_std: tuple, radius: float) -> None:
    """On main the lr proportional to the radius gave 3.7e-5 … 4.8e-2 relative errors."""
    X, y = diabetes_std
    f, jac = lsq(X, y)
    x_free = np.linalg.lstsq(X, y, rcond=None)[0]
    assert np.max(np.abs(x_free)) < 0.5  # every radius is loose
    res = lionk.minimize(f, np.zeros(X.shape[1]), jac=jac, radius=radius)
    assert res.success, res.message
    assert abs(res.fun - f(x_free)) <= 1e-8 * f(x_free)
    assert np.max(np.abs(res.x - x_free)) <= 1e-4


def test_default_lr_does_not_grow_with_a_loose_radius(diabetes_std: tuple) -> None:
    X, y = diabetes_std
    f, jac = lsq(X, y)
    lrs = [lionk.minimize(f, np.zeros(10), jac=jac, radius=r, maxiter=1).lr
           for r in (100.0, 1000.0, 1e6)]
    # D is found on the grid r/2^k, so lr_0 may differ by a factor < 2, never by r's factor
    assert max(lrs) < 2 * min(lrs) and max(lrs) <= 0.05  # main: r·0.01 = 1, 10, 1e4
    # and a binding radius keeps the radius rule r·min(0.1, 50/maxiter)
    Xr, yr = datasets.load_diabetes(return_X_y=True)
    f2, jac2 = lsq(Xr, yr)
    assert lionk.minimize(f2, np.zeros(10), jac=jac2, radius=1.0).lr == 1.0 * 50 / 5000


def test_tol_is_relative_when_F_is_below_one(diabetes_raw: tuple) -> None:
    """F ≈ 0.06: main's max(1, |F|) made tol absolute, stopping at a relative error ~1e-5."""
    X, y = diabetes_raw
    f, jac = lsq(X, y)
    scale = 1e-7

    res = lionk.minimize(lambda x: scale * f(x), np.zeros(X.shape[1]),
                         jac=lambda x: scale * jac(x), radius=1.0)
    ref = scipy_optimize.lsq_linear(X, y, bounds=(-1.0, 1.0), method="bvls", tol=1e-14)
    F_ref = scale * f(ref.x)
    assert F_ref < 1.0
    assert res.success and res.certified, res.message
    assert res.gap <= 1e-6 * res.F
    assert abs(res.fun - F_ref) <= 1e-6 * F_ref


def test_settled_rule_refuses_a_run_still_travelling_or_in_a_wide_band(diabetes_std: tuple) -> None:
    X, y = diabetes_std
    f, jac = lsq(X, y)
    f_free = f(np.linalg.lstsq(X, y, rcond=None)[0])
    for lr, maxiter in ((50.0, 1000), (1e-4, 1000)):  # a wide O(lr) band; too slow to arrive
        res = lionk.minimize(f, np.zeros(10), jac=jac, radius=1000.0, lr=lr, maxiter=maxiter)
        assert (res.fun - f_free) / f_free > 1e-3  # far from the optimum ...
        assert not res.success and res.status == 1, res.message  # ... and not called a success
        assert "maxiter (1000) reached" in res.message


def test_settled_rule_message_and_certified_flag(diabetes_std: tuple) -> None:
    X, y = diabetes_std
    f, jac = lsq(X, y)
    res = lionk.minimize(f, np.zeros(10), jac=jac, radius=1000.0)
    assert res.success and not res.certified and res.nit == 5000
    assert res.message.startswith("converged (settled)")
    F = res.history["F"]
    k0 = 5000 - 100  # the last 2% of the steps
    assert abs(F[k0] - F[-1]) <= 1e-6 * abs(F[-1])
    assert res.kkt_residual > 1e-6  # the gap of a box of radius 1000 certifies little
    # a constant lr only reaches an O(lr) band: never "settled"
    const = lionk.minimize(f, np.zeros(10), jac=jac, radius=1000.0, schedule="constant")
    assert not const.success and "the schedule had not decayed" in const.message


def test_float32_run_starting_outside_stalls_within_the_default_domain_tol() -> None:
    """float32: the decay stalls about eps·|x|/(lr·λ) outside the box (docs/lyapunov.md)."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((40, 10)).astype(np.float32)
    b = (3 * rng.standard_normal(40)).astype(np.float32)
    r = 0.5

    def f(x: np.ndarray) -> float:
        return 0.5 * float(np.sum((A @ x - b) ** 2))

    def jac(x: np.ndarray) -> np.ndarray:
        return A.T @ (A @ x - b)

    x0 = np.full(10, 4 * r, np.float32)
    strict = lionk.minimize(f, x0, jac=jac, radius=r, maxiter=1000, domain_tol=0.0)
    stall = strict.constraint_violation / r  # dist(λx, box)
    eps = float(np.finfo(np.float32).eps)
    assert 0.0 < stall <= eps / (strict.lr / r)  # stalled outside, within the predicted width
    assert math.isinf(strict.F) and not strict.success
    res = lionk.minimize(f, x0, jac=jac, radius=r, maxiter=1000)
    assert res.constraint_violation == strict.constraint_violation
    assert math.isfinite(res.F) and res.success, res.message
    A64, b64 = A.astype(np.float64), b.astype(np.float64)
    ref = scipy_optimize.lsq_linear(A64, b64, bounds=(-r, r), method="bvls", tol=1e-14)
    f_ref = 0.5 * float(np.sum((A64 @ ref.x - b64) ** 2))
    assert abs(res.fun - f_ref) <= 1e-5 * f_ref  # float32 accuracy


FLOAT32_SCRIPT = r"""
import json, sys, warnings
import numpy as np
import lionk
backend = sys.argv[1]
rng = np.random.default_rng(0)
A = rng.standard_normal((30, 8)).astype(np.float32)
b = rng.standard_normal(30).astype(np.float32)
if backend == "jax":
    import jax.numpy as jnp
    A, b, x0 = jnp.asarray(A), jnp.asarray(b), jnp.zeros(8, jnp.float32)
    fun = lambda x: 0.5 * jnp.sum((A @ x - b) ** 2)
    kw = {}
elif backend == "torch":
    import torch
    A, b, x0 = torch.from_numpy(A), torch.from_numpy(b), torch.zeros(8)
    fun = lambda x: 0.5 * torch.sum((A @ x - b) ** 2)
    kw = {}
else:
    x0 = np.zeros(8, np.float32)
    fun = lambda x: 0.5 * float(np.sum((A @ x - b) ** 2))
    kw = {"jac": lambda x: A.T @ (A @ x - b)}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("default")
    res = lionk.minimize(fun, x0, radius=0.3, maxiter=1000, tol=0, **kw)
print(json.dumps({"warnings": [str(w.message)[:200] for w in caught], "nit": res.nit,
                  "dtype": str(res.x.dtype)}))
"""


@pytest.mark.parametrize("backend", [
    "numpy",
    pytest.param("torch", marks=pytest.mark.skipif(not HAVE_TORCH, reason="needs torch")),
    pytest.param("jax", marks=pytest.mark.skipif(not HAVE_JAX, reason="needs jax")),
])
def test_float32_run_under_default_settings_warns_at_most_once(backend: str) -> None:
    """In a fresh process (JAX without x64, its default): main warned at every iteration."""
    out = subprocess.run([sys.executable, "-c", FLOAT32_SCRIPT, backend], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["nit"] == 1000 and got["dtype"].endswith("float32")
    assert len(got["warnings"]) <= 1, got["warnings"][:3]


def test_lyapunov_wide_does_not_warn_on_numpy_float32() -> None:
    x = np.ones(3, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lionk.lyapunov.discrete(1.0, x, x, lr=0.1, betas=(0.9, 0.99),
                                       weight_decay=0.5) > 0


def test_deadzone_matches_sklearn_lasso_and_its_zeros_are_what_the_docs_say() -> None:
    """Box lasso F = ½‖Xw − y‖² + e‖w‖₁ (|w_i| ≤ r) is sklearn's Lasso with α = e/n (the box is
    loose). The iterate's zeros: exact only where a coordinate never moved; the others decay to
    ≈ |x|·e^(−λΣlr) (docs/kappa.md)."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    X, y = datasets.load_diabetes(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    y = y - y.mean()
    n, alpha = len(y), 3.0
    las = linear_model.Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=100000)
    w = las.fit(X, y).coef_
    zeros = np.flatnonzero(w == 0.0)
    assert zeros.size == 3
    e = alpha * n
    f, jac = lsq(X, y)

    def F(x: np.ndarray) -> float:
        return f(x) + e * float(np.sum(np.abs(x)))

    res = lionk.minimize(f, np.zeros(10), jac=jac, kappa=lionk.kappa.get("deadzone", e=e),
                         radius=100.0)
    assert np.max(np.abs(w)) < 100.0
    assert res.success, res.message
    assert res.F == pytest.approx(F(res.x), rel=1e-12)
    assert abs(res.F - F(w)) <= 1e-6 * F(w)
    support = np.flatnonzero(np.abs(res.x) > 1e-8 * np.max(np.abs(res.x)))
    np.testing.assert_array_equal(support, np.flatnonzero(w))
    # not every Lasso zero is an exact zero of the iterate: the ones that moved decayed
    assert np.max(np.abs(res.x[zeros])) > 0.0
    # the pure decay x' = (1 − lr·λ)·x keeps a coordinate at 0 exactly once it is 0
    x, state = np.array([0.0, 0.5]), lionk.init(np.zeros(2))
    for _ in range(50):
        x, state = lionk.step(x, np.array([0.05, -0.05]), state, lr=0.1, weight_decay=0.5,
                              kappa=lionk.kappa.get("deadzone", e=0.1))
    assert x[0] == 0.0 and x[1] == pytest.approx(0.5 * (1 - 0.1 * 0.5) ** 50, rel=1e-12)
