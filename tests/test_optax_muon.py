"""The optax.contrib.muon preset: the "optax-muon" κ, optax_muon_settings / optax_muon_b1 and
lionk.optax.muon, teacher-forced against optax.contrib.muon."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import lionk
from lionk.kappa import OptaxMuon, optax_muon_b1, optax_muon_settings

HAVE_OPTAX = importlib.util.find_spec("optax") is not None
HAVE_SCIPY = importlib.util.find_spec("scipy") is not None
needs_optax = pytest.mark.skipif(not HAVE_OPTAX, reason="optax is not installed")

SHAPES = {"w1": (16, 32), "b1": (32,), "w2": (32, 10), "b2": (10,), "w3": (10, 48)}
MATRICES = [k for k, s in SHAPES.items() if len(s) == 2]
BETA = 0.95


# ---------------------------------------------------------------------------------------------
# The bias-corrected b1, from optax's own formula.


def _optax_mu_hat_weights(t: int, beta: float) -> tuple[float, float]:
    """(weight of the old momentum m, weight of g) in optax's Nesterov input at step t (1-based),
    written out from scale_by_muon: mu = beta*m + (1-beta)*g;
    mu_hat = beta*mu/(1-beta^(t+1)) + (1-beta)*g/(1-beta^t)."""
    w_m = beta * beta / (1 - beta ** (t + 1))
    w_g = beta * (1 - beta) / (1 - beta ** (t + 1)) + (1 - beta) / (1 - beta ** t)
    return w_m, w_g


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 0.95, 0.99])
def test_b1_is_optax_weights_normalised(beta: float) -> None:
    for count in [0, 1, 2, 5, 10, 50, 300, 5000]:
        w_m, w_g = _optax_mu_hat_weights(count + 1, beta)
        b1 = optax_muon_b1(count, beta)
        assert b1 == pytest.approx(w_m / (w_m + w_g), rel=1e-13, abs=1e-15)
    assert optax_muon_b1(10**6, beta) == pytest.approx(beta * beta, rel=1e-15, abs=1e-300)
    assert optax_muon_b1(3, beta, nesterov=False) == beta


def test_settings_map_and_refuse() -> None:
    s = optax_muon_settings(learning_rate=0.02, weight_decay=0.1)
    assert s["lr"] == 0.02 and s["weight_decay"] == 0.1 and s["betas"] == (BETA * BETA, BETA)
    assert s["kappa"] == lionk.kappa.get("optax-muon")
    assert optax_muon_settings(nesterov=False)["betas"] == (BETA, BETA)
    assert optax_muon_settings(consistent_rms=0.2)["kappa"].consistent_rms == 0.2
    with pytest.raises(ValueError, match="adaptive"):
        optax_muon_settings(adaptive=True)
    with pytest.raises(ValueError, match="preconditioning"):
        optax_muon_settings(preconditioning="aol")
    with pytest.raises(ValueError, match="ns_coeffs.*'dion'"):
        optax_muon_settings(ns_coeffs="dion")
    with pytest.raises(ValueError, match="beta must be in"):
        optax_muon_settings(beta=1.0)
    with pytest.raises(ValueError, match="consistent_rms"):
        OptaxMuon(consistent_rms=-1.0)


def test_shape_factor_is_optax_fan_out_over_fan_in() -> None:
    """optax stores a weight (fan_in, fan_out) and scales by sqrt(max(1, fan_out/fan_in)):
    torch's "original" rule of the transposed layout."""
    k, r = OptaxMuon(), OptaxMuon(consistent_rms=0.2)
    rng = np.random.default_rng(0)
    for shape in [(4, 16), (16, 4), (8, 8)]:
        y = rng.standard_normal(shape)
        sv = np.linalg.svd(np.asarray(k.grad(y)), compute_uv=False)
        ns = lionk.kappa.newton_schulz(y, eps=1e-8, eps_mode="add")  # y/(‖y‖_F + 1e-8)
        polar_sv = np.linalg.svd(ns, compute_uv=False)
        np.testing.assert_allclose(sv, np.sqrt(max(1, shape[1] / shape[0])) * polar_sv,
                                   rtol=1e-12)
        sv = np.linalg.svd(np.asarray(r.grad(y)), compute_uv=False)
        np.testing.assert_allclose(sv, 0.2 * np.sqrt(max(shape)) * polar_sv, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Teacher-forced against optax.contrib.muon.


def _model(rng: np.random.Generator, dtype: str = "float32"):  # type: ignore[no-untyped-def]
    import jax
    import jax.numpy as jnp
    import optax

    X = rng.standard_normal((64, 16)).astype(dtype)
    Y = rng.integers(0, 48, 64)

    def loss(p):  # type: ignore[no-untyped-def]
        h = jnp.tanh(X @ p["w1"] + p["b1"])
        h = jnp.tanh(h @ p["w2"] + p["b2"])
        return optax.softmax_cross_entropy_with_integer_labels(h @ p["w3"], Y).mean()

    params = {k: jnp.asarray((rng.standard_normal(s) * 0.3).astype(dtype))
              for k, s in SHAPES.items()}
    return params, jax.jit(jax.grad(loss))


def _rel(a, b) -> float:  # type: ignore[no-untyped-def]
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@needs_optax
@pytest.mark.parametrize("options", [
    {}, {"consistent_rms": 0.2}, {"nesterov": False}, {"weight_decay": 0.0, "beta": 0.9},
    {"learning_rate": "cosine"},
    {"weight_decay_mask": {"w1": True, "b1": False, "w2": False, "b2": True, "w3": True}},
])
def test_teacher_forced_against_optax_contrib_muon(options: dict) -> None:
    """60 steps of a small MLP (float32, under jax.jit): both optimizers get the same params and
    gradients at every step (optax's trajectory), each keeps its own state.

    Matrix leaves, every step: ‖u_lionk − u_optax‖ ≤ 4e-6·‖u_optax‖ + ‖½·ulp(x')‖₂. The first
    term is the direction s·NS (measured ≤ 1.8e-6 apart: float32 rounding of c's formula and of
    (c·A)·A vs c·(A·A)); the second is lion_k forming x' (rounded to float32, ≤ ½ ulp per
    element) and returning x' − x, a cancellation that grows as lr shrinks. Measured overall
    ≤ 5.3e-6 relative at lr 0.02, 9.5e-6 on the cosine schedule (lr down to 0.01).
    The other leaves run the very optax.adamw of optax.contrib.muon: bitwise equal."""
    import jax
    import optax
    from optax.contrib import muon as optax_muon

    from lionk.optax import muon as lionk_muon

    kw = {"learning_rate": 0.02, "weight_decay": 0.1, **options}
    if kw["learning_rate"] == "cosine":  # a schedule: lion_k evaluates it at its own count
        kw["learning_rate"] = optax.cosine_decay_schedule(0.02, 60, alpha=0.5)
    params, grad = _model(np.random.default_rng(0))
    ref, ours = optax_muon(**kw), lionk_muon(**kw)
    s_ref, s_ours = ref.init(params), ours.init(params)
    u_ref_f, u_ours_f = jax.jit(ref.update), jax.jit(ours.update)
    worst = 0.0
    for _ in range(60):
        g = grad(params)
        u_ref, s_ref = u_ref_f(g, s_ref, params)
        u_ours, s_ours = u_ours_f(g, s_ours, params)
        for k in MATRICES:
            worst = max(worst, _rel(u_ours[k], u_ref[k]))
            new_x = np.asarray(params[k]) + np.asarray(u_ref[k])
            bound = (4e-6 * np.linalg.norm(np.asarray(u_ref[k], np.float64))
                     + np.linalg.norm(0.5 * np.spacing(np.abs(new_x)).astype(np.float64)))
            diff = np.linalg.norm(np.asarray(u_ours[k], np.float64) - np.asarray(u_ref[k]))
            assert diff <= bound, (k, diff, bound)
        for k in set(SHAPES) - set(MATRICES):
            np.testing.assert_array_equal(np.asarray(u_ours[k]), np.asarray(u_ref[k]))
        params = optax.apply_updates(params, u_ref)
    print(f"optax-muon {sorted(options)}: worst relative update difference {worst:.2e}")


@needs_optax
def test_wrong_mappings_are_detected() -> None:
    """What the test above would catch: fixed betas (optax's bias correction ignored) or torch's
    Muon κ (shape factor of the (out, in) layout, bfloat16 iterates) are far outside 1e-5."""
    import jax
    import optax
    from optax.contrib import muon as optax_muon

    from lionk.optax import lion_k

    params, grad = _model(np.random.default_rng(0))
    ref = optax_muon(learning_rate=0.02, weight_decay=0.1)
    s = optax_muon_settings(learning_rate=0.02, weight_decay=0.1)
    fixed = optax.partition({"muon": lion_k(0.02, *s["betas"], 0.1, s["kappa"]),
                             "adam": optax.adamw(0.02)},
                            lambda p: jax.tree.map(lambda x: "muon" if x.ndim == 2 else "adam", p))
    torchy = lion_k(0.02, *s["betas"], 0.1, "muon")
    states = [ref.init(params), fixed.init(params), torchy.init(params)]
    worst = [0.0, 0.0]
    for _ in range(5):
        g = grad(params)
        u_ref, states[0] = ref.update(g, states[0], params)
        u_fixed, states[1] = fixed.update(g, states[1], params)
        u_torch, states[2] = torchy.update(g, states[2], params)
        worst[0] = max([worst[0]] + [_rel(u_fixed[k], u_ref[k]) for k in MATRICES])
        worst[1] = max([worst[1]] + [_rel(u_torch[k], u_ref[k]) for k in MATRICES])
        params = optax.apply_updates(params, u_ref)
    print(f"fixed betas: {worst[0]:.2e}, torch muon kappa: {worst[1]:.2e}")
    assert worst[0] > 1e-3 and worst[1] > 1e-1, worst


@pytest.mark.skipif(not HAVE_SCIPY, reason="scipy is not installed")
def test_svd_polar_float64_matches_the_exact_bias_corrected_reference() -> None:
    """lionk.LionK (NumPy, float64) with the "optax-muon" κ on the exact polar factor and b1 set
    to optax_muon_b1 before every step, against optax's formula written out in float64 with
    scipy's polar decomposition (independent of lionk): ≤ 1e-12 relative over 60 steps."""
    import scipy.linalg

    rng = np.random.default_rng(3)
    shapes = {"a": (6, 11), "b": (11, 6), "c": (7, 7)}
    x = {k: rng.standard_normal(s) for k, s in shapes.items()}
    ref_x = {k: v.copy() for k, v in x.items()}
    lr, wd = 0.02, 0.1
    s = optax_muon_settings(learning_rate=lr, weight_decay=wd)
    opt = lionk.LionK(x, lr=lr, betas=s["betas"], weight_decay=wd,
                      kappa=OptaxMuon(polar="svd"))
    mu = {k: np.zeros(sh) for k, sh in shapes.items()}
    worst = 0.0
    for t in range(1, 61):
        g = {k: rng.standard_normal(sh) * 1e-2 + np.sin(t + ref_x[k]) * 1e-2
             for k, sh in shapes.items()}
        opt.betas = (optax_muon_b1(t - 1, BETA), BETA)
        before = {k: v.copy() for k, v in x.items()}
        opt.step({k: v.copy() for k, v in g.items()})
        for k, (a, b) in shapes.items():
            mu[k] = BETA * mu[k] + (1 - BETA) * g[k]
            mu_hat = (BETA * mu[k] / (1 - BETA ** (t + 1))
                      + (1 - BETA) * g[k] / (1 - BETA ** t))
            polar = scipy.linalg.polar(mu_hat)[0] if a >= b else scipy.linalg.polar(mu_hat.T)[0].T
            want = -lr * (np.sqrt(max(1, b / a)) * polar + wd * before[k])
            worst = max(worst, _rel(x[k] - before[k], want))
            ref_x[k] = before[k] + want
    print(f"svd float64: {worst:.2e}")
    assert worst <= 1e-12, worst
