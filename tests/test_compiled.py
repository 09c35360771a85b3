"""Compiled execution paths: torch.compile (LionK, lionk.torch.LionK) and lionk.jit_step (JAX).

They run the same update as lionk.step; compilers may contract ``a*b + c`` into FMA, so they are
held to the ulp tier: each output within ``K`` eps of the magnitude of the terms that produce it
(``|(1-lr*wd)*x| + lr*|u|`` for params, ``b2*|m| + (1-b2)*|g|`` for momentum), sign ties aside.
"""

from __future__ import annotations

import numpy as np
import pytest

import lionk

from ._util import bits, textbook

K = 4  # one rounding saved per FMA; a handful of eps covers the two or three of a step
LR, WD, B1, B2 = 1e-2, 0.5, 0.9, 0.99


def _reference(x, g, m, lr=LR):
    """numpy float64 of the update (the exact result both float32 roundings approximate)."""
    x, g, m = (np.asarray(a, np.float64) for a in (x, g, m))
    c = B1 * m + (1 - B1) * g
    u = np.sign(c)
    nx = (1 - lr * WD) * x - lr * u
    nm = B2 * m + (1 - B2) * g
    scale_x = np.abs((1 - lr * WD) * x) + lr * np.abs(u)
    scale_m = B2 * np.abs(m) + (1 - B2) * np.abs(g)
    tie = np.abs(c) <= 8 * np.finfo(np.float32).eps * (B1 * np.abs(m) + (1 - B1) * np.abs(g))
    return nx, nm, scale_x, scale_m, tie


def _assert_ulp(got_x, got_m, x, g, m, lr=LR):
    nx, nm, sx, sm, tie = _reference(x, g, m, lr)
    eps = np.finfo(np.float32).eps
    ex = np.abs(np.asarray(got_x, np.float64) - nx)
    em = np.abs(np.asarray(got_m, np.float64) - nm)
    assert np.all((ex <= K * eps * sx) | tie), float(np.max(ex / (eps * sx)))
    assert np.all(em <= K * eps * sm), float(np.max(em / (eps * sm)))
    assert tie.mean() < 1e-3


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1.5, 1.5, n).astype(np.float32),
            rng.uniform(-1, 1, n).astype(np.float32),
            rng.uniform(-1, 1, n).astype(np.float32))


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    import importlib.util
    import shutil

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    assert importlib.util.find_spec("torch._inductor") is not None
    return torch


def test_torch_compiled_lionk_is_in_the_ulp_tier(torch) -> None:
    x0, g, m0 = _data(5000)
    xs = [torch.from_numpy(x0[:3000].copy()), torch.from_numpy(x0[3000:].copy().reshape(40, 50))]
    opt = lionk.LionK(xs, lr=LR, betas=(B1, B2), weight_decay=WD, execution="compiled")
    ms = [torch.from_numpy(m0[:3000].copy()), torch.from_numpy(m0[3000:].copy().reshape(40, 50))]
    opt.load_state_dict({"count": 0, "momentum": ms})
    gs = [torch.from_numpy(g[:3000].copy()), torch.from_numpy(g[3000:].copy().reshape(40, 50))]
    opt.step(gs)
    assert opt.last_execution == "compiled"
    got_x = np.concatenate([t.numpy().reshape(-1) for t in xs])
    got_m = np.concatenate([t.numpy().reshape(-1) for t in lionk.tree.flatten(opt.state.momentum)[0]])
    _assert_ulp(got_x, got_m, x0, g, m0)
    # a new lr reaches the compiled code (coefficients are tensor inputs, not baked constants)
    opt.lr = LR / 2
    x1, m1 = got_x.copy(), got_m.copy()
    opt.step(gs)
    got_x = np.concatenate([t.numpy().reshape(-1) for t in xs])
    got_m = np.concatenate([t.numpy().reshape(-1) for t in lionk.tree.flatten(opt.state.momentum)[0]])
    _assert_ulp(got_x, got_m, x1, g, m1, lr=LR / 2)


def test_torch_adapter_compiled_matches_eager_within_ulp(torch) -> None:
    x0, g, _ = _data(5000, seed=1)
    p_c = torch.nn.Parameter(torch.from_numpy(x0[:3000].copy()))
    p_e = torch.nn.Parameter(torch.from_numpy(x0[:3000].copy()))
    oc = lionk.torch.LionK([p_c], lr=LR, betas=(B1, B2), weight_decay=WD, execution="compiled")
    oe = lionk.torch.LionK([p_e], lr=LR, betas=(B1, B2), weight_decay=WD, execution="eager")
    p_c.grad = torch.from_numpy(g[:3000].copy())
    p_e.grad = torch.from_numpy(g[:3000].copy())
    oc.step()
    oe.step()
    assert oc.last_execution == ["compiled"] and oe.last_execution == ["eager"]
    _assert_ulp(p_c.detach().numpy(), oc.state[p_c]["exp_avg"].numpy(), x0[:3000], g[:3000],
                np.zeros(3000, np.float32))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_compiled_moves_zero_dimensional_params(torch, dtype) -> None:
    """Regression: inductor takes 0-d CPU tensors for scalars, and the compiled step's copy_
    into a 0-d float64 param was lost: the param never moved (found by the conformance suite's
    toy1d problem once each κ had its own compiled code). 0-d tensors now go in as 1-element
    views; the compiled trajectory follows the eager one (ulp tier) on every leaf."""
    dt = getattr(torch, dtype)
    shapes = [(), (1,), (3,), ()]
    xs = [torch.full(s, 2.0, dtype=dt) for s in shapes]
    ys = [x.clone() for x in xs]
    oc = lionk.LionK(xs, lr=0.01, weight_decay=1.0, execution="compiled")
    oe = lionk.LionK(ys, lr=0.01, weight_decay=1.0, execution="eager")
    for _ in range(20):
        oc.step([2 * x - 4 for x in xs])
        oe.step([2 * y - 4 for y in ys])
    assert oc.last_execution == "compiled"
    for x, y in zip(xs, ys):
        assert float(y.reshape(-1)[0]) < 1.9  # the eager step moves every leaf
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=4 * float(np.finfo(dtype).eps))


@pytest.mark.parametrize("kappa", ["sign", pytest.param(textbook("huber"), id="huber")])
def test_torch_chunked_is_bitwise_equal_to_eager(torch, kappa) -> None:
    x0, g, _ = _data(10_000, seed=2)
    a = torch.from_numpy(x0.copy())
    b = torch.from_numpy(x0.copy())
    oa = lionk.LionK(a, lr=LR, weight_decay=WD, kappa=kappa, execution="chunked", chunk_size=999)
    ob = lionk.LionK(b, lr=LR, weight_decay=WD, kappa=kappa, execution="eager")
    gt = torch.from_numpy(g)
    for _ in range(5):
        oa.step(gt)
        ob.step(gt)
    assert torch.equal(a, b) and torch.equal(oa.state.momentum, ob.state.momentum)


def test_compiled_refuses_other_arrays_with_a_clear_error() -> None:
    xs = pytest.importorskip("array_api_strict")
    x = xs.zeros(10, dtype=xs.float32)
    opt = lionk.LionK(x, lr=0.1, execution="compiled")
    with pytest.raises(ValueError, match="torch tensors .* NumPy/CuPy arrays .* array_api_strict"):
        opt.step(xs.ones(10, dtype=xs.float32))
    assert not bool(xs.any(x)) and opt.state.count == 0


# --- JAX: lionk.jit_step -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def jnp():
    pytest.importorskip("jax")
    import jax.numpy as jnp

    return jnp


def test_jit_step_is_in_the_ulp_tier_and_donates(jnp) -> None:
    x0, g, m0 = _data(4000, seed=3)
    step = lionk.jit_step(lr=LR, betas=(B1, B2), weight_decay=WD)
    params = {"a": jnp.asarray(x0[:1000]), "b": jnp.asarray(x0[1000:].reshape(60, 50))}
    grads = {"a": jnp.asarray(g[:1000]), "b": jnp.asarray(g[1000:].reshape(60, 50))}
    state = lionk.State(0, {"a": jnp.asarray(m0[:1000]), "b": jnp.asarray(m0[1000:].reshape(60, 50))}, 0)
    old_a = params["a"]
    new_p, new_s = step(params, grads, state)
    assert old_a.is_deleted()  # donated: XLA reused the buffer
    got_x = np.concatenate([np.asarray(new_p[k]).reshape(-1) for k in ("a", "b")])
    got_m = np.concatenate([np.asarray(new_s.momentum[k]).reshape(-1) for k in ("a", "b")])
    _assert_ulp(got_x, got_m, x0, g, m0)
    assert int(new_s.count) == 1


def test_jit_step_without_donation_keeps_inputs(jnp) -> None:
    step = lionk.jit_step(lr=LR, weight_decay=WD, donate=False)
    p = jnp.ones(8, jnp.float32)
    st = lionk.init(p)
    step(p, p, st)
    assert not p.is_deleted() and float(p[0]) == 1.0


def test_jit_step_validates_hyper_parameters_and_inputs(jnp) -> None:
    with pytest.raises(ValueError, match="lr"):
        lionk.jit_step(lr=-1.0)
    step = lionk.jit_step(lr=LR, donate=False)
    p = {"w": jnp.ones(3, jnp.float32)}
    with pytest.raises(ValueError, match=r"grads\['w'\]"):
        step(p, {"w": jnp.ones(4, jnp.float32)}, lionk.init(p))


# --- JAX: lionk.jit_step(fused=True), the fused kernel as an XLA FFI call ------------------------


def _needs_cxx():
    from lionk.execution.kernels import cxx_compiler

    if cxx_compiler() is None:
        pytest.skip("no C++ compiler")


@pytest.mark.parametrize("kappa,dtype", [("sign", "float32"),
                                         pytest.param(textbook("huber"), "float64",
                                                      id="huber-float64")])
def test_fused_jit_step_is_bitwise_equal_to_the_numpy_step_and_donates(jnp, kappa, dtype) -> None:
    _needs_cxx()
    if dtype == "float64":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("float64 needs jax_enable_x64")
    rng = np.random.default_rng(7)
    P = {"a": rng.standard_normal(70_000).astype(dtype),  # > 64K: split between threads
         "b": rng.standard_normal((30, 40)).astype(dtype)}
    P["a"][:5] = [0.0, -0.0, np.inf, -np.inf, np.nan]
    G = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in P.items()}
    ref_p, ref_s = P, lionk.init(P)
    step = lionk.jit_step(lr=LR, betas=(B1, B2), weight_decay=WD, kappa=kappa, fused=True)
    params = {k: jnp.asarray(v) for k, v in P.items()}
    grads = {k: jnp.asarray(v) for k, v in G.items()}
    state = lionk.init(params)
    for _ in range(4):
        old_a = params["a"]
        params, state = step(params, grads, state)
        assert old_a.is_deleted()  # donated and aliased: updated in place
        ref_p, ref_s = lionk.step(ref_p, G, ref_s, lr=LR, betas=(B1, B2), weight_decay=WD,
                                  kappa=kappa)
    for k in P:
        assert np.array_equal(bits(np.asarray(params[k])), bits(ref_p[k])), k
        assert np.array_equal(bits(np.asarray(state.momentum[k])), bits(ref_s.momentum[k])), k


def test_fused_jit_step_says_it_is_experimental(jnp) -> None:
    with pytest.warns(lionk.LionKWarning, match="experimental"):
        lionk.jit_step(lr=LR, fused=True)


def test_fused_jit_step_refuses_what_it_cannot_run(jnp) -> None:
    with pytest.raises(TypeError, match="split"):  # the benchmark-only flag is gone
        lionk.jit_step(lr=LR, split=True)
    p = {"w": jnp.ones(8, jnp.float32)}
    with pytest.raises(ValueError, match="elementwise"):
        lionk.jit_step(lr=LR, kappa="l2", fused=True, donate=False)(p, p, lionk.init(p))
    with pytest.raises(ValueError, match="elementwise"):  # huber's default length is per array
        lionk.jit_step(lr=LR, kappa="huber", fused=True, donate=False)(p, p, lionk.init(p))
    h = {"w": jnp.ones(8, jnp.float16)}
    with pytest.raises(ValueError, match=r"params\['w'\].*float32 and float64 only"):
        lionk.jit_step(lr=LR, fused=True, donate=False)(h, h, lionk.init(h))
