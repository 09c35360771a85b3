"""``lionk.lyapunov.monitor``: H of a torch ``LionK`` or an optax ``lion_k`` run from its state.

References are hand-written NumPy float64 formulas of theory.md §5 (for Lion inside the box
``H = f + c·(‖m‖₁ + λ mᵀx)``, c = ε'b1/(ε'λ(1 − b1) + 1 − b2), ε' = ε/(1 − ελ)), evaluated on
copies of the params and momentum — not lionk's own evaluation.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

import lionk

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_OPTAX = importlib.util.find_spec("optax") is not None and importlib.util.find_spec("jax")


def c_ref(lr: float, b1: float, b2: float, wd: float) -> float:
    ep = lr / (1.0 - lr * wd)
    return ep * b1 / (ep * wd * (1.0 - b1) + 1.0 - b2)


def h_sign_ref(f: float, groups: list[tuple[list, list, float, tuple, float]]) -> float:
    """f + Σ_groups c·(‖m‖₁ + λ mᵀx), every λx inside the box (K* = 0)."""
    h = f
    for xs, ms, lr, (b1, b2), wd in groups:
        x = np.concatenate([np.asarray(a, np.float64).ravel() for a in xs])
        m = np.concatenate([np.asarray(a, np.float64).ravel() for a in ms])
        assert np.max(np.abs(x)) * wd <= 1.0
        h += c_ref(lr, b1, b2, wd) * (np.sum(np.abs(m)) + wd * float(m @ x))
    return h


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch")
def test_torch_monitor_matches_the_formula_over_two_groups_and_H_never_increases() -> None:
    import torch

    from lionk.torch import LionK

    torch.manual_seed(0)
    w1 = torch.nn.Parameter(torch.rand(5, dtype=torch.float64) - 0.5)
    w2 = torch.nn.Parameter(torch.rand(3, dtype=torch.float64) - 0.5)
    a1, a2 = torch.randn(5, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    opt = LionK([{"params": [w1], "lr": 0.02, "weight_decay": 0.5},
                 {"params": [w2], "lr": 0.01, "weight_decay": 1.0, "betas": (0.8, 0.95)}])

    def loss() -> torch.Tensor:  # linear f: H must never increase
        return a1 @ w1 + a2 @ w2

    # before the first step: no exp_avg yet, the momentum counts as 0 (H = F = f)
    d0 = lionk.lyapunov.monitor(opt, float(loss()))
    assert d0["H"] == d0["F"] == pytest.approx(float(loss()), rel=1e-15)
    hs = []
    for _ in range(60):
        opt.zero_grad()
        f = loss()
        f.backward()
        opt.step()
        fv = float(loss())
        d = lionk.lyapunov.monitor(opt, fv)
        ref = h_sign_ref(fv, [
            ([w1.detach().numpy()], [opt.state[w1]["exp_avg"].numpy()], 0.02, (0.9, 0.99), 0.5),
            ([w2.detach().numpy()], [opt.state[w2]["exp_avg"].numpy()], 0.01, (0.8, 0.95), 1.0),
        ])
        assert d["H"] == pytest.approx(ref, rel=1e-12, abs=1e-14)
        assert d["F"] == pytest.approx(fv, rel=1e-15) and d["constraint_violation"] == 0.0
        assert d["fenchel_young"] >= 0.0
        hs.append(d["H"])
    assert np.all(np.diff(hs) <= 1e-12 * np.max(np.abs(hs)))


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch")
def test_torch_monitor_outside_the_box_and_errors() -> None:
    import torch

    from lionk.torch import LionK

    w = torch.nn.Parameter(torch.tensor([3.0, 0.1], dtype=torch.float64))
    opt = LionK([w], lr=0.01, weight_decay=1.0)
    d = lionk.lyapunov.monitor(opt, 0.0)
    assert d["constraint_violation"] == pytest.approx(2.0) and math.isinf(d["H"])
    assert math.isfinite(lionk.lyapunov.monitor(opt, 0.0, domain_tol=2.0)["H"])
    with pytest.raises(ValueError, match="only monitor"):
        lionk.lyapunov.monitor(opt, 0.0, weight_decay=1.0)
    opt0 = LionK([w], lr=0.01)  # weight_decay 0: no H
    with pytest.raises(ValueError, match=r"param_groups\[0\]: weight_decay must be > 0"):
        lionk.lyapunov.monitor(opt0, 0.0)
    with pytest.raises(ValueError, match="expected a lionk.torch.LionK or an optax state"):
        lionk.lyapunov.monitor(object(), 0.0)


@pytest.mark.skipif(not HAVE_OPTAX, reason="needs jax and optax")
def test_optax_monitor_finds_the_state_in_a_chain_and_matches_the_formula() -> None:
    import jax
    import jax.numpy as jnp
    import optax

    from lionk.optax import lion_k

    a = {"w": jnp.array([0.3, -1.2, 0.7]), "b": jnp.array(0.5)}
    params = {"w": jnp.array([0.1, 0.2, -0.3]), "b": jnp.array(0.05)}
    sched = optax.cosine_decay_schedule(0.02, 100)
    opt = optax.chain(optax.clip_by_global_norm(10.0), lion_k(sched, weight_decay=0.5))
    state = opt.init(params)

    def f(p: dict) -> jax.Array:
        return jnp.vdot(a["w"], p["w"]) + a["b"] * p["b"]

    hs = []
    for _ in range(40):
        updates, state = opt.update(jax.grad(f)(params), state, params)
        params = optax.apply_updates(params, updates)
        fv = float(f(params))
        d = lionk.lyapunov.monitor(state, fv, params=params, learning_rate=sched,
                                   weight_decay=0.5)
        lk = state[1]
        lr_next = float(sched(lk.count))
        xs = [np.asarray(params["b"]), np.asarray(params["w"])]
        ms = [np.asarray(lk.mu["b"]), np.asarray(lk.mu["w"])]
        ref = h_sign_ref(fv, [(xs, ms, lr_next, (0.9, 0.99), 0.5)])
        assert d["H"] == pytest.approx(ref, rel=1e-6)  # JAX default float32 state
        hs.append(d["H"])
    assert np.all(np.diff(hs) <= 1e-6 * np.max(np.abs(hs)))
    with pytest.raises(ValueError, match="pass params=, learning_rate= and weight_decay="):
        lionk.lyapunov.monitor(state, 0.0)
