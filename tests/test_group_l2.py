"""The group-ℓ2 κ (``"group-l2"``): known answers written by hand in float64, the registry's
checks and facts, the step against a hand-written reference, convergence to the solution of
``min ½‖AX − B‖_F² s.t. max_g ‖X_g‖₂ ≤ 1/λ`` computed by projected gradient, the constraint
and Lyapunov certificates, and the adapters, state dicts and checkpoints."""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import math

import numpy as np
import pytest

import lionk
from lionk.core.kappa_group import GroupL2

from ._util import textbook

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_OPTAX = importlib.util.find_spec("optax") is not None and importlib.util.find_spec("jax")
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")


# ---------------------------------------------------------------------------------------------
# Independent references: plain Python over the groups (math.fsum, math.sqrt), no lionk code.


def _groups(shape: tuple[int, ...], axes: tuple[int, ...]) -> list[list[tuple[int, ...]]]:
    """Every group of an array of ``shape``: the list of its element indices (axes: the
    non-negative axes a group spans)."""
    keep = [d for d in range(len(shape)) if d not in axes]
    out = []
    for outer in itertools.product(*(range(shape[d]) for d in keep)):
        idx = []
        for inner in itertools.product(*(range(shape[d]) for d in axes)):
            full = [0] * len(shape)
            for d, i in zip(keep, outer):
                full[d] = i
            for d, i in zip(axes, inner):
                full[d] = i
            idx.append(tuple(full))
        out.append(idx)
    return out


def ref_all(y: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, float, float, float]:
    """(∇K(y), K(y), K*(y), dist(y, dom K*)) by hand, in float64."""
    y = np.asarray(y, np.float64)
    if y.ndim == 0:
        v = float(y)
        g = 0.0 if v == 0 else math.copysign(1.0, v)
        dist = max(abs(v) - 1.0, 0.0)
        return np.asarray(g), abs(v), (0.0 if dist == 0 else math.inf), dist
    grad = np.zeros_like(y)
    norms = []
    for idx in _groups(y.shape, axes):
        n = math.sqrt(math.fsum(float(y[i]) ** 2 for i in idx))
        norms.append(n)
        for i in idx:
            grad[i] = 0.0 if n == 0 else float(y[i]) / n
    dist = max(max(norms, default=0.0) - 1.0, 0.0)
    return grad, math.fsum(norms), (0.0 if dist == 0 else math.inf), dist


CASES = [  # (shape, axis, the non-negative axes a group spans)
    ((5, 3), -1, (1,)),
    ((5, 3), 1, (1,)),
    ((5, 3), 0, (0,)),
    ((2, 3, 4), -1, (2,)),
    ((2, 3, 4), (0, 2), (0, 2)),
    ((4, 2, 3, 3), (1, 2, 3), (1, 2, 3)),  # conv filters: one group per output channel
    ((7,), -1, (0,)),  # a vector: one group (the l2 κ)
    ((7,), 0, (0,)),
    ((), -1, ()),  # a scalar: |y|, sign
    ((), 0, ()),
]


@pytest.mark.parametrize(("shape", "axis", "axes"), CASES)
def test_known_answers_against_float64_by_hand(shape, axis, axes) -> None:
    rng = np.random.default_rng(sum(shape) + 7)
    k = textbook("group-l2", axis=axis)  # K = Σ_g ‖y_g‖₂ (scale=1)
    default = lionk.kappa.get("group-l2", axis=axis)  # scale="rms": s = √n_g
    root_n = math.sqrt(math.prod(shape[d] for d in axes))
    for scale in (0.3, 1.0, 4.0):
        y = rng.standard_normal(shape) * scale
        g, val, conj, dist = ref_all(y, axes)
        got = k.grad(y)
        assert got.shape == y.shape and got.dtype == y.dtype
        # |∇K| ≤ 1; the norms differ from math.fsum's by the summation order (ulp tier): a few
        # ulps of 1 (measured ≤ 1 ulp)
        np.testing.assert_allclose(got, g, rtol=0, atol=1e-15)
        assert float(k.value(y)) == pytest.approx(val, rel=1e-15)
        assert float(k.domain_distance(y)) == pytest.approx(dist, rel=1e-15, abs=1e-15)
        assert float(k.conjugate(y)) == conj
        # ∇K(y) lies in dom K* (every group norm 1 or 0) and K(y) = <y, ∇K(y)> (Fenchel-Young)
        assert float(k.domain_distance(got)) <= 4e-16
        assert float(np.sum(y * got)) == pytest.approx(val, rel=1e-14)
        assert float(k.conjugate_on_domain(got)) == 0.0
        # the default is √n_g times the textbook gradient (per-element RMS 1 in every group)
        np.testing.assert_allclose(default.grad(y), root_n * g, rtol=0, atol=4e-15 * root_n)


def test_rows_zero_group_nan_group_empty_and_float32() -> None:
    k = textbook("group-l2")
    y = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, np.nan], [-0.0, 2.0]])
    got = k.grad(y)
    np.testing.assert_array_equal(got[0], [0.6, 0.8])
    np.testing.assert_array_equal(got[1], [0.0, 0.0])  # a zero group: 0 (sign(0) = 0)
    assert np.all(np.isnan(got[2]))  # NaN propagated within its group only
    np.testing.assert_array_equal(got[3], [0.0, 1.0])
    assert float(k.value(y[[0, 1, 3]])) == 7.0
    assert float(k.domain_distance(y[[0, 1, 3]])) == 4.0
    col = textbook("group-l2", axis=0)
    np.testing.assert_allclose(col.grad(y[[0, 1, 3]]),
                               [[1.0, 4.0 / math.sqrt(20.0)], [0.0, 0.0],
                                [0.0, 2.0 / math.sqrt(20.0)]], rtol=0, atol=1e-16)
    for shape in [(0, 3), (3, 0), (0,)]:
        e = np.zeros(shape)
        assert k.grad(e).shape == shape
        assert float(k.value(e)) == 0.0 and float(k.domain_distance(e)) == 0.0
        assert float(k.conjugate(e)) == 0.0
    y32 = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    g32 = k.grad(y32)
    assert g32.dtype == np.float32
    np.testing.assert_allclose(g32, ref_all(y32.astype(np.float64), (1,))[0], rtol=0, atol=3e-7)
    assert np.array_equal(k.grad(np.asarray(-2.5)), np.asarray(-1.0))


# ---------------------------------------------------------------------------------------------
# Registry checks, facts, spec.


@pytest.mark.parametrize("axis", [-1, 0, (0, 1)])
def test_passes_the_registry_checks_and_states_its_facts(axis) -> None:
    k = textbook("group-l2", axis=axis)
    if axis != (0, 1):
        lionk.kappa.validate(k)  # odd, monotone, Fenchel-Young, facts; shapes 0-d to 3-d
    f = k.facts()
    assert (f["tier"], f["separable"], f["ternary"], f["lipschitz"]) == ("ulp", False, False, None)
    assert not k.exact
    c = k.constraint
    assert (c.norm, c.scale, c.bounded, c.scope) == ("group-l2", 1.0, True, "tensor")
    assert c.radius(0.25) == 4.0 and c.weight_decay_for(4.0) == 0.25
    x = np.array([[3.0, 4.0, 0.0], [1.0, 1.0, 1.0]])
    want = {-1: 5.0, 0: math.sqrt(17.0), (0, 1): math.sqrt(28.0)}[axis]  # max group norm
    assert c.evaluate(x) == pytest.approx(want, rel=1e-15)
    assert c.evaluate([x, 2.0 * x]) == pytest.approx(2.0 * want, rel=1e-15)  # per array: max
    # the default (scale="rms") states the ball per element: the largest group RMS ≤ 1/λ
    d = lionk.kappa.get("group-l2", axis=axis).constraint
    n_g = {-1: 3, 0: 2, (0, 1): 6}[axis]
    assert (d.norm, d.scale, d.bounded) == ("group-l2", 1.0, True) and d.radius(0.25) == 4.0
    assert d.evaluate(x) == pytest.approx(want / math.sqrt(n_g), rel=1e-15)


def test_spec_round_trip_and_identity() -> None:
    for axis, scale in itertools.product((-1, 0, (1, 2)), ("rms", 1.0, 2.5)):
        k = lionk.kappa.get("group-l2", axis=axis, scale=scale)
        spec = k.to_spec()
        assert spec == {"name": "group-l2", "params": {"axis": axis, "scale": scale}}
        assert lionk.kappa.from_spec(spec) == k
        back = lionk.kappa.from_spec(json.loads(json.dumps(spec)))  # a tuple comes back a list
        assert back == k and hash(back) == hash(k) and back.params == k.params
    assert lionk.kappa.get("group-l2") == lionk.kappa.get("group-l2", axis=-1, scale="rms")
    assert lionk.kappa.get("group-l2") != textbook("group-l2")
    assert lionk.kappa.get("group-l2") != lionk.kappa.get("group-l2", axis=0)
    assert lionk.kappa.get("group-l2", axis=np.int64(0)) == lionk.kappa.get("group-l2", axis=0)
    assert "group-l2" in lionk.kappa.available()
    assert isinstance(lionk.kappa.get("group-l2"), GroupL2)


def test_invalid_axis_names_the_argument_and_a_failing_step_writes_nothing() -> None:
    for bad, exc in [(1.5, TypeError), (True, TypeError), ("rows", TypeError), ((), ValueError),
                     ((0, 0), ValueError), ((0, 1.0), TypeError)]:
        with pytest.raises(exc, match="axis"):
            lionk.kappa.get("group-l2", axis=bad)
    k = lionk.kappa.get("group-l2", axis=1)
    with pytest.raises(ValueError, match=r"axis=1 is out of range for a leaf of shape \(4,\)"):
        k.grad(np.ones(4))
    with pytest.raises(ValueError, match="names one axis twice"):
        lionk.kappa.get("group-l2", axis=(1, -1)).grad(np.ones((2, 3)))
    # a tree with a leaf the axis does not fit: nothing is written
    x = {"w": np.ones((2, 3)), "b": np.ones(3)}
    before = copy.deepcopy(x)
    opt = lionk.LionK(x, lr=0.1, kappa=k)
    with pytest.raises(ValueError, match="axis=1"):
        opt.step({"w": np.ones((2, 3)), "b": np.ones(3)})
    for key in x:
        np.testing.assert_array_equal(x[key], before[key])


def test_normalized_gives_per_element_rms_one() -> None:
    g = np.random.default_rng(0).standard_normal((64, 32)) * 1e-2
    for axis, size in ((-1, 32), (0, 64)):
        k = lionk.kappa.normalized("group-l2", axis=axis)
        u = np.asarray(k.grad(g))
        assert math.sqrt(float(np.mean(u * u))) == pytest.approx(1.0, rel=1e-12)
        np.testing.assert_allclose(u, math.sqrt(size) * ref_all(g, (axis % 2,))[0], atol=1e-14)
        # the radius rule of s·K: every group in a ball of radius s/λ
        assert float(k.domain_distance(g / np.linalg.norm(g, axis=axis % 2).max()
                                       * 0.99 * math.sqrt(size))) == 0.0


# ---------------------------------------------------------------------------------------------
# The step and what Lion-κ solves.


def test_step_matches_a_hand_written_float64_lion_k() -> None:
    rng = np.random.default_rng(1)
    x = {"w": rng.standard_normal((6, 4)), "b": rng.standard_normal(4),
         "s": np.asarray(0.7)}
    state = lionk.init(x)
    xr = copy.deepcopy(x)
    mr = {k: np.zeros_like(v) for k, v in x.items()}
    lr, wd, b1, b2 = 0.02, 0.5, 0.9, 0.99
    axes = {"w": (1,), "b": (0,), "s": ()}
    for t in range(30):
        grads = {k: np.sin(v * (t + 1.0)) for k, v in x.items()}
        gr = {k: np.sin(v * (t + 1.0)) for k, v in xr.items()}
        x, state = lionk.step(x, grads, state, lr=lr, betas=(b1, b2), weight_decay=wd,
                              kappa=textbook("group-l2"))
        for k in xr:
            c = b1 * mr[k] + (1 - b1) * gr[k]
            xr[k] = (1 - lr * wd) * xr[k] - lr * ref_all(c, axes[k])[0]
            mr[k] = b2 * mr[k] + (1 - b2) * gr[k]
        for k in xr:
            np.testing.assert_allclose(x[k], xr[k], rtol=0, atol=1e-14)


def _problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((20, 6)), rng.standard_normal((20, 4)) * 3.0


def projected_gradient(A: np.ndarray, B: np.ndarray, project) -> np.ndarray:
    """min ½‖AX − B‖_F² over a convex set, by X ← P(X − ∇f(X)/L), L = ‖A‖₂², run until the
    step changes X by less than 1e-16 (f is strongly convex here: cond(AᵀA) ≈ 7, the iteration
    contracts linearly, so this is the minimiser to rounding)."""
    L = np.linalg.norm(A, 2) ** 2
    X = np.zeros((A.shape[1], B.shape[1]))
    for _ in range(200_000):
        Xn = project(X - (A.T @ (A @ X - B)) * (1.0 / L))
        done = np.max(np.abs(Xn - X)) < 1e-16
        X = Xn
        if done:
            return X
    raise AssertionError("projected gradient did not converge")


def row_projection(r: float):
    def project(X: np.ndarray) -> np.ndarray:  # each row scaled to norm ≤ r
        n = np.sqrt(np.sum(X * X, axis=1, keepdims=True))
        return X * np.minimum(1.0, r / np.maximum(n, 1e-300))
    return project


def lion_k(A, B, lam, steps, lr, kappa, schedule=None, betas=(0.9, 0.99)):
    x = np.zeros((A.shape[1], B.shape[1]))
    state = lionk.init(x)
    for t in range(steps):
        lr_t = lr if schedule is None else schedule(t)
        x, state = lionk.step(x, A.T @ (A @ x - B), state, lr=lr_t, betas=betas,
                              weight_decay=lam, kappa=kappa)
    return x


def test_converges_to_the_row_constrained_least_squares_solution_all_rows_active() -> None:
    """r = 0.5: every row of the solution lies on its sphere (all groups active). Near the
    solution c_g ≈ ∇f_g ≠ 0 for every group, where ∇K is smooth: the fixed point of the Lion-κ
    map at a constant lr is the KKT point itself, reached linearly (measured: max |X − X*| /
    max |X*| = 5.8e-7 after 800 steps, 5.6e-13 after 2000, lr 0.05). 2000 steps, 1e-10."""
    A, B = _problem()
    r = 0.5
    ref = projected_gradient(A, B, row_projection(r))
    assert np.allclose(np.linalg.norm(ref, axis=1), r, rtol=1e-12)  # all active
    k = textbook("group-l2")
    x = lion_k(A, B, 1.0 / r, 2000, 0.05, k)
    err = np.max(np.abs(x - ref)) / np.max(np.abs(ref))
    assert err <= 1e-10, err
    assert k.constraint.evaluate(x) <= r * (1 + 1e-12)
    # the active rows sit on their spheres: inside to rounding (an ulp of λ‖x_g‖ = 1)
    assert lionk.lyapunov.constraint_violation(x, weight_decay=1.0 / r, kappa=k) <= 4e-16 * r
    # negative control: the radius matters (λ 10% larger lands far away)
    assert np.max(np.abs(lion_k(A, B, 1.1 / r, 2000, 0.05, k) - ref)) / np.max(np.abs(ref)) > 1e-2


def test_converges_to_the_row_constrained_least_squares_solution_mixed() -> None:
    """r = 1: four rows active, two inside their ball. For an inactive group ∇f_g(X*) = 0, so
    c_g → 0 where ∇K jumps (as sign at 0 for Lion): the iterate dithers in a band O(lr) wide,
    so the lr must decay to 0 and the momentum must average the dither. Measured
    max |X − X*| / max |X*| with a cosine lr from 0.05 to 0: betas (0.9, 0.99): 3.1e-5 (2000
    steps), 1.8e-5 (5000), 7.4e-6 (20000); betas (0.99, 0.999): 3.7e-6 (6000), 2.1e-6 (8000),
    8.0e-7 (12000; 5.8e-7 to 1.0e-6 for lr_0 in [0.04, 0.06], 5.8e-7 and 1.6e-6 on two other
    seeds). Asserted: 2e-6 after 12000 steps; F within 1e-11 relative (measured 2.6e-12: first
    order in the error, ∇f(X*) ≠ 0 on the active rows)."""
    A, B = _problem()
    r = 1.0
    ref = projected_gradient(A, B, row_projection(r))
    norms = np.linalg.norm(ref, axis=1)
    assert np.sum(np.isclose(norms, r, rtol=1e-12)) == 4 and np.all(norms <= r * (1 + 1e-12))
    k = textbook("group-l2")
    T = 12_000
    x = lion_k(A, B, 1.0 / r, T, None, k, betas=(0.99, 0.999),
               schedule=lambda t: 0.05 * 0.5 * (1.0 + math.cos(math.pi * t / T)))
    err = np.max(np.abs(x - ref)) / np.max(np.abs(ref))
    assert err <= 2e-6, err

    def f(X):
        return 0.5 * float(np.sum((A @ X - B) ** 2))

    assert f(x) - f(ref) <= 1e-11 * f(ref)
    assert k.constraint.evaluate(x) <= r * (1 + 1e-12)
    assert lionk.lyapunov.constraint_violation(x, weight_decay=1.0 / r, kappa=k) <= 4e-16 * r


def test_minimize_with_radius_uses_the_radius_rule() -> None:
    A, B = _problem()
    r = 0.5
    ref = projected_gradient(A, B, row_projection(r))

    def f(X):
        return 0.5 * float(np.sum((A @ X - B) ** 2))

    res = lionk.minimize(f, np.zeros((6, 4)), jac=lambda X: A.T @ (A @ X - B),
                         kappa="group-l2", radius=r, maxiter=3000, tol=1e-10)
    assert res.radius == r and res.weight_decay == 1.0 / r
    assert res.constraint == textbook("group-l2").constraint  # a name: the textbook form
    assert res.constraint_violation == 0.0
    assert (res.fun - f(ref)) <= 1e-9 * f(ref)
    assert np.max(np.abs(res.x - ref)) <= 1e-4 * np.max(np.abs(ref))
    # x_norm is the constraint's norm: the largest row norm, at the radius at the end
    assert res.history["x_norm"][-1] == pytest.approx(r, rel=1e-9)
    if importlib.util.find_spec("matplotlib") is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = lionk.plot.history(res)  # the norm's label and the radius line from the facts
    try:
        lines = {ln.get_label(): ln for ln in fig.get_axes()[2].get_lines()}
        assert set(lines) == {"max_g ‖x_g‖₂", "radius 0.5"}
        assert list(lines["radius 0.5"].get_ydata()) == [0.5, 0.5]
    finally:
        plt.close(fig)


def test_phase_one_bound_and_lyapunov_for_a_linear_objective() -> None:
    rng = np.random.default_rng(2)
    k = textbook("group-l2")
    lr, wd, betas = 0.02, 2.0, (0.9, 0.99)
    # phase 1: start with every row at norm 5/λ; the excess shrinks by (1 − lr·λ) per step
    x = rng.standard_normal((5, 3))
    x *= (5.0 / wd) / np.linalg.norm(x, axis=1, keepdims=True)
    G = rng.standard_normal((5, 3))
    state = lionk.init(x)
    d0 = lionk.lyapunov.constraint_violation(x, weight_decay=wd, kappa=k)
    assert d0 == pytest.approx(4.0 / wd, rel=1e-14)
    inside = False
    xc = G * (0.1 / wd)  # f = ½‖x − xc‖², minimum inside the balls
    for t in range(1, 200):
        x, state = lionk.step(x, x - xc, state, lr=lr, betas=betas, weight_decay=wd, kappa=k)
        d = lionk.lyapunov.constraint_violation(x, weight_decay=wd, kappa=k)
        assert d <= (1 - lr * wd) ** t * d0 * (1 + 1e-12) + 1e-15
        if inside:
            assert k.constraint.evaluate(x) <= (1 / wd) * (1 + 1e-12)
        inside = inside or d == 0.0
    assert inside
    # phase 2: H never increases for linear f (L = 0), and b1 > b2 breaks it (negative control)
    for bt, expect_ok in ((betas, True), ((0.99, 0.5), False)):
        x = rng.standard_normal((5, 3)) * 0.05
        state = lionk.init(x)
        ok = True
        with (pytest.warns(lionk.LionKWarning) if not expect_ok else _nullcontext()):
            for t in range(150):
                g = G * (1.0 + 0.9 * math.sin(0.7 * t))
                h = lionk.lyapunov.discrete(float(np.sum(G * x)), x, state, lr=lr, betas=bt,
                                            weight_decay=wd, kappa=k)
                x, state = lionk.step(x, g if not expect_ok else G, state, lr=lr, betas=bt,
                                      weight_decay=wd, kappa=k)
                h1 = lionk.lyapunov.discrete(float(np.sum(G * x)), x, state, lr=lr, betas=bt,
                                             weight_decay=wd, kappa=k)
                ok = ok and h1 <= h + 1e-12 * (1 + abs(h))
        assert ok is expect_ok


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# ---------------------------------------------------------------------------------------------
# Adapters, monitor, state dicts and checkpoints.


@needs_torch
def test_torch_lionk_matches_step_state_dict_and_monitor() -> None:
    import torch

    from lionk.torch import LionK

    rng = np.random.default_rng(3)
    w0, b0 = rng.standard_normal((5, 3)) * 0.1, rng.standard_normal(3) * 0.1
    G = {"w": rng.standard_normal((5, 3)), "b": rng.standard_normal(3)}
    w = torch.nn.Parameter(torch.tensor(w0))
    b = torch.nn.Parameter(torch.tensor(b0))
    kap = lionk.kappa.get("group-l2", axis=0)
    opt = LionK([w, b], lr=0.01, weight_decay=0.5, kappa=kap)
    x = {"w": w0.copy(), "b": b0.copy()}
    state = lionk.init(x)
    hs = []
    for _ in range(40):
        opt.zero_grad()
        loss = (w * torch.tensor(G["w"])).sum() + (b * torch.tensor(G["b"])).sum()
        loss.backward()
        opt.step()
        x, state = lionk.step(x, G, state, lr=0.01, weight_decay=0.5, kappa=kap)
        np.testing.assert_allclose(w.detach().numpy(), x["w"], rtol=0, atol=1e-15)
        np.testing.assert_allclose(b.detach().numpy(), x["b"], rtol=0, atol=1e-15)
        f = float(np.sum(G["w"] * x["w"]) + np.sum(G["b"] * x["b"]))
        d = lionk.lyapunov.monitor(opt, f)  # linear f: H never increases
        assert d["constraint_violation"] == 0.0 and d["fenchel_young"] >= 0.0
        hs.append(d["H"])
    assert np.all(np.diff(hs) <= 1e-12 * np.max(np.abs(hs)))
    sd = opt.state_dict()
    assert sd["param_groups"][0]["kappa"] == {"name": "group-l2",
                                              "params": {"axis": 0, "scale": "rms"}}
    fresh = LionK([torch.nn.Parameter(w.detach().clone()),
                   torch.nn.Parameter(b.detach().clone())], lr=0.01)
    fresh.load_state_dict(copy.deepcopy(sd))
    assert fresh.param_groups[0]["kappa"] == kap


@pytest.mark.skipif(not HAVE_OPTAX, reason="optax is not installed")
def test_optax_lion_k_matches_lionk_step() -> None:
    import jax
    import jax.numpy as jnp
    import optax

    from lionk.optax import lion_k as optax_lion_k

    was = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", True)
    try:
        rng = np.random.default_rng(4)
        x = {"w": jnp.asarray(rng.standard_normal((6, 4))), "b": jnp.asarray(rng.standard_normal(4))}
        g = {"w": jnp.asarray(rng.standard_normal((6, 4))), "b": jnp.asarray(rng.standard_normal(4))}
        tx = optax_lion_k(0.05, weight_decay=0.2, kappa="group-l2")
        upd, _ = jax.jit(tx.update)(g, tx.init(x), x)
        new = optax.apply_updates(x, upd)
        xn = {k: np.asarray(v) for k, v in x.items()}
        want, _ = lionk.step(xn, {k: np.asarray(v) for k, v in g.items()}, lionk.init(xn),
                             lr=0.05, weight_decay=0.2, kappa="group-l2")
        for k in x:
            np.testing.assert_allclose(np.asarray(new[k]), want[k], rtol=0, atol=1e-14)
    finally:
        jax.config.update("jax_enable_x64", was)


def test_checkpoint_round_trip_keeps_the_axis(tmp_path) -> None:
    rng = np.random.default_rng(5)
    x = {"w": rng.standard_normal((4, 3))}
    kap = lionk.kappa.get("group-l2", axis=(0, 1))
    opt = lionk.LionK(x, lr=0.01, weight_decay=0.3, kappa=kap)
    opt.step({"w": rng.standard_normal((4, 3))})
    path = tmp_path / "ck.safetensors"
    lionk.checkpoint.save(str(path), opt)
    y = {"w": np.zeros((4, 3))}
    into = lionk.LionK(y, lr=0.01, weight_decay=0.3)
    lionk.checkpoint.load(str(path), into=into)
    assert into.kappa == kap
    np.testing.assert_array_equal(y["w"], x["w"])
    g = {"w": rng.standard_normal((4, 3))}
    opt.step(g)
    into.step(g)
    np.testing.assert_array_equal(y["w"], x["w"])


def test_scaled_states_the_scaled_ball_and_minimize_uses_it() -> None:
    """``scaled`` with a number s states K's constraint with the radius rule s/λ (a shape rule
    states none); lionk.minimize(radius=r) then sets λ = s/r and solves the same problem."""
    k = lionk.kappa.get("scaled", kappa=textbook("group-l2"), scale=2.0)
    lionk.kappa.validate(k)
    c = k.constraint
    assert (c.norm, c.scale, c.bounded) == ("group-l2", 2.0, True)
    assert lionk.kappa.get("scaled").constraint is None  # scale="rms": a radius per leaf
    assert lionk.kappa.get("scaled", kappa="l2", scale=3.0).constraint.radius(1.5) == 2.0
    A, B = _problem()
    r = 0.5
    ref = projected_gradient(A, B, row_projection(r))

    def f(X):
        return 0.5 * float(np.sum((A @ X - B) ** 2))

    res = lionk.minimize(f, np.zeros((6, 4)), jac=lambda X: A.T @ (A @ X - B), kappa=k,
                         radius=r, maxiter=3000, tol=1e-10)
    assert res.radius == r and res.weight_decay == 2.0 / r
    assert (res.fun - f(ref)) <= 1e-9 * f(ref)
    assert np.max(np.abs(res.x - ref)) <= 1e-4 * np.max(np.abs(ref))


def test_per_leaf_choice_and_auto_runs_eagerly() -> None:
    """Rows for the matrices, one ball for the vectors; "auto" never chunks, fuses or
    torch.compiles the group-l2 step (a per-row reduction)."""
    from lionk.execution import paths

    rng = np.random.default_rng(6)
    x = {"w": rng.standard_normal((6, 4)), "b": rng.standard_normal(4)}
    g = {"w": rng.standard_normal((6, 4)), "b": rng.standard_normal(4)}
    choice = {"matrices": lionk.kappa.get("group-l2", axis=0), "other": "l2"}
    new, _ = lionk.step(x, g, lionk.init(x), lr=0.1, weight_decay=0.5, kappa=choice)
    for key, kap in (("w", choice["matrices"]), ("b", "l2")):
        want, _ = lionk.step(x[key], g[key], lionk.init(x[key]), lr=0.1, weight_decay=0.5,
                             kappa=kap)
        np.testing.assert_array_equal(new[key], want)
    big = [np.zeros((1024, 512), dtype=np.float32)]
    rec = paths.ExecutionRecord("auto")
    assert paths._auto_path(big, big, big, lionk.kappa.get("group-l2"), rec) == "eager"
    if HAVE_TORCH:
        import torch

        tb = [torch.zeros(1 << 21)]
        assert paths._auto_path(tb, tb, tb, lionk.kappa.get("group-l2"), rec) == "eager"


def test_torch_compiled_refuses_group_l2_clearly_and_writes_nothing() -> None:
    torch = pytest.importorskip("torch")
    w = torch.nn.Parameter(torch.ones(3, 4))
    w.grad = torch.ones(3, 4)
    opt = lionk.torch.LionK([w], lr=0.1, kappa="group-l2", execution="compiled")
    with pytest.raises(ValueError, match="execution='compiled' cannot run kappa 'group-l2'"):
        opt.step()
    assert torch.all(w == 1) and not opt.state
    lionk.torch.LionK([w], lr=0.1, kappa="group-l2").step()  # "auto": eagerly
    # a row of four ones: ∇K = √4·y/‖y‖₂ = 1 per element (scale="rms", the default)
    assert torch.allclose(w, torch.full((3, 4), 1 - 0.1 * 1.0))
