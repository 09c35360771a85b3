"""``lionk.optax.lion_k`` (and ``lionk.step`` with JAX arrays) under optax's and JAX's conventions.

Each test states a convention that optax's own test suite (alias_test, the ``MultiSteps``
mixed-precision test, schedule tests, sharding tests) or a standard JAX pattern relies on, and
checks it against ``optax.lion`` (the peer) or a hand-written reference. Written for lionk from
the documented contracts; optax's test files are not copied. Issues 10 (cases 8 and 9) and 15
(items 5 to 8).
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402

import lionk  # noqa: E402
from lionk.optax import LionKState, lion_k  # noqa: E402

from ._util import bits  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MIXED = ("float32", "float16", "bfloat16")
PAIRS = [(p, g) for p in MIXED for g in MIXED if p != g]


def _eps(dtype) -> float:
    return float(jnp.finfo(dtype).eps)


# ---------------------------------------------------------------------------------------------
# Issue 10, case 8: lr*wd >= 1 refused whenever both values are known (0-d arrays too).


@pytest.mark.parametrize(
    ("lr", "wd"),
    [
        (jnp.array(10.0), jnp.array(1.0)),          # the case of the issue
        (jnp.array(0.5), 2.0),
        (0.5, jnp.array(2.0)),
        (np.float64(0.5), np.array(4.0)),
        (jnp.array(1.0, jnp.float32), jnp.array(1.0, jnp.float32)),  # exactly 1: factor 0
    ],
)
def test_decay_factor_checked_for_concrete_arrays(lr, wd) -> None:
    """A decay factor 1 - lr*wd <= 0 flips the sign of every param each step; it is refused at
    construction, naming the argument and both values, for Python numbers and concrete 0-d
    arrays alike (main skipped the check when either was an array)."""
    with pytest.raises(ValueError) as info:
        lion_k(lr, weight_decay=wd)
    msg = str(info.value)
    assert "learning_rate*weight_decay" in msg and "< 1" in msg
    assert repr(float(lr)) in msg and repr(float(wd)) in msg


def test_decay_factor_below_one_accepted_and_traced_values_not_checked() -> None:
    lion_k(jnp.array(0.5), weight_decay=jnp.array(1.999))  # 0.9995 < 1
    # schedules and traced values are not known at construction: accepted (optax does the same)
    lion_k(optax.constant_schedule(10.0), weight_decay=1.0)

    @jax.jit
    def build_inside_jit(lr):
        opt = lion_k(lr, weight_decay=jnp.array(1.0))
        p = jnp.ones(2)
        return opt.update(jnp.ones(2), opt.init(p), p)[0]

    assert build_inside_jit(jnp.array(0.1)).shape == (2,)


# ---------------------------------------------------------------------------------------------
# Issue 15, item 5: gradients of another floating dtype than the params (mixed precision).


@pytest.mark.parametrize(("pdt", "gdt"), PAIRS)
@pytest.mark.parametrize("jit", [False, True])
def test_mixed_precision_grads_accepted_like_optax_lion(pdt, gdt, jit) -> None:
    """optax.lion accepts grads of another dtype than the params; so does lion_k. lion_k's
    arithmetic follows JAX's promotion (c and m' in promote(m, g), x' in promote(x, ∇K(c))), then
    x' is rounded to the params' dtype and m' to the momentum's: the updates have the params'
    dtype and the state keeps its dtype from step to step. Compared with optax.lion on the same
    step: the momentum bitwise (optax's promoted momentum rounded to lion_k's dtype), the new
    params within one ulp of the params' dtype."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(64), dtype=pdt)
    g = jnp.asarray(rng.standard_normal(64), dtype=gdt)
    m0 = jnp.asarray(rng.standard_normal(64) * 0.1, dtype=pdt)
    ours, peer = lion_k(1e-2, weight_decay=1e-3), optax.lion(1e-2, weight_decay=1e-3)
    upd_a = jax.jit(ours.update) if jit else ours.update
    upd_b = jax.jit(peer.update) if jit else peer.update
    st = LionKState(count=jnp.zeros([], jnp.int32), mu=m0)
    u, st2 = upd_a(g, st, x)
    assert u.dtype == x.dtype and st2.mu.dtype == x.dtype
    pst = peer.init(x)
    pst = (pst[0]._replace(mu=m0),) + tuple(pst[1:])
    pu, pst2 = upd_b(g, pst, x)
    assert bits(np.asarray(st2.mu)).tolist() == bits(
        np.asarray(pst2[0].mu.astype(st2.mu.dtype))).tolist()
    ours_x = np.asarray(optax.apply_updates(x, u), np.float64)
    peer_x = np.asarray(optax.apply_updates(x, pu), np.float64)
    scale = np.maximum(np.abs(ours_x), np.abs(np.asarray(x, np.float64)))
    assert np.all(np.abs(ours_x - peer_x) <= 1.0 * _eps(pdt) * scale), (pdt, gdt)
    # the state dtype is stable: a second step (and lax.scan over steps) is accepted
    u2, st3 = upd_a(g, st2, x)
    assert st3.mu.dtype == st2.mu.dtype and u2.dtype == x.dtype


@pytest.mark.parametrize("mu_dtype", [None, "float32"])
def test_mixed_precision_under_scan_state_dtype_stable(mu_dtype) -> None:
    """lax.scan needs the carried state's dtype unchanged: bfloat16 params, float32 grads."""
    opt = lion_k(1e-2, weight_decay=0.1, mu_dtype=mu_dtype)
    x = jnp.linspace(-1.0, 1.0, 8, dtype=jnp.bfloat16)

    def body(carry, g):
        p, s = carry
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    gs = jnp.asarray(np.random.default_rng(1).standard_normal((5, 8)), jnp.float32)
    (p, s), _ = jax.lax.scan(body, (x, opt.init(x)), gs)
    assert p.dtype == jnp.bfloat16
    assert s.mu.dtype == (jnp.bfloat16 if mu_dtype is None else jnp.float32)


def _dense_loss(params, data):
    """A one-layer dense model, sum of squared outputs (what optax's mixed-precision MultiSteps
    test builds with flax)."""
    y = data @ params["kernel"] + params["bias"]
    return jnp.sum(y * y)


@pytest.mark.parametrize(("pdt", "gdt"), PAIRS + [(d, d) for d in MIXED])
def test_multisteps_mixed_precision(pdt, gdt) -> None:
    """optax.MultiSteps(lion_k) with grads cast to another dtype: its updates have the dtype of
    lion_k's own updates, and applying them keeps the params' dtype, over k+1 steps (the
    convention of optax's MultiSteps mixed-precision test)."""
    k = 4
    rng = np.random.default_rng(2)
    params = {"kernel": jnp.asarray(rng.standard_normal((7, 10)) * 0.1, pdt),
              "bias": jnp.zeros(10, pdt)}
    data = jnp.ones((32, 7), pdt)
    opt = lion_k(0.1, weight_decay=1e-3)
    ms = optax.MultiSteps(opt, k)

    @jax.jit
    def grads_of(p):
        return jax.tree.map(lambda a: a.astype(gdt), jax.grad(_dense_loss)(p, data))

    st, ms_st = opt.init(params), ms.init(params)
    for _ in range(k + 1):
        g = grads_of(params)
        u, st = jax.jit(opt.update)(g, st, params)
        mu, ms_st = jax.jit(ms.update)(g, ms_st, params)
        assert jax.tree.map(lambda a: a.dtype, u) == jax.tree.map(lambda a: a.dtype, mu)
        new = optax.apply_updates(params, mu)
        assert jax.tree.map(lambda a: a.dtype, new) == jax.tree.map(lambda a: a.dtype, params)
        params = new
    assert int(ms_st.gradient_step) == 1


def test_step_still_requires_grads_of_the_params_dtype() -> None:
    """lionk.step keeps torch.optim's convention (grads of the params' dtype); only the optax
    adapter follows optax.lion here."""
    p = jnp.ones(3, jnp.float32)
    with pytest.raises(TypeError, match=r"grads: expected dtype float32.*received bfloat16"):
        lionk.step(p, jnp.ones(3, jnp.bfloat16), lionk.init(p))


# ---------------------------------------------------------------------------------------------
# Issue 15, item 7: what init and update accept.


def test_init_accepts_shape_dtype_struct_and_eval_shape() -> None:
    params = {"w": jnp.ones((3, 2), jnp.float32), "b": jnp.zeros(2, jnp.bfloat16)}
    for opt, peer in ((lion_k(1e-3), optax.lion(1e-3)),
                      (lion_k(1e-3, mu_dtype=jnp.float32), optax.lion(1e-3, mu_dtype=jnp.float32))):
        planned = jax.eval_shape(opt.init, params)
        peer_planned = jax.eval_shape(peer.init, params)[0]
        assert jax.tree.map(lambda a: (a.shape, a.dtype), planned.mu) == jax.tree.map(
            lambda a: (a.shape, a.dtype), peer_planned.mu)
        sds = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
        st = opt.init(sds)  # optax.lion's init accepts ShapeDtypeStructs too
        ref = peer.init(sds)[0]
        for k in params:
            assert st.mu[k].shape == ref.mu[k].shape and st.mu[k].dtype == ref.mu[k].dtype
            assert not np.any(np.asarray(st.mu[k], np.float32))
    with pytest.raises(TypeError, match=r"params\['w'\]: expected a real floating dtype"):
        lion_k(1e-3).init({"w": jax.ShapeDtypeStruct((2,), jnp.int32)})


def test_python_float_leaves_like_optax_lion() -> None:
    opt, peer = lion_k(1e-2, weight_decay=1e-3), optax.lion(1e-2, weight_decay=1e-3)
    params = {"a": 2.0, "b": jnp.array([1.0, -1.0], jnp.float32)}
    grads = {"a": 0.5, "b": jnp.array([0.3, -0.2], jnp.float32)}
    u, st = opt.update(grads, opt.init(params), params)
    pu, _ = peer.update(grads, peer.init(params), params)
    assert st.mu["a"].shape == () and jnp.issubdtype(st.mu["a"].dtype, jnp.floating)
    for k in params:
        np.testing.assert_allclose(np.asarray(optax.apply_updates(params, u)[k]),
                                   np.asarray(optax.apply_updates(params, pu)[k]), rtol=4e-7)
    with pytest.raises(TypeError, match=r"params\['n'\]: expected a real floating dtype"):
        opt.init({"n": 3})  # an int leaf is not a parameter


def test_numpy_params_with_jax_grads_outside_jit() -> None:
    """NumPy params and JAX grads (outside jit): the same result as JAX params, bit for bit."""
    rng = np.random.default_rng(3)
    p_np = {"w": rng.standard_normal((4, 3)).astype(np.float32)}
    g = {"w": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32)}
    opt = lion_k(1e-2, weight_decay=0.1)
    u_np, st_np = opt.update(g, opt.init(p_np), p_np)
    p_j = jax.tree.map(jnp.asarray, p_np)
    u_j, st_j = opt.update(g, opt.init(p_j), p_j)
    assert isinstance(u_np["w"], jax.Array) and isinstance(st_np.mu["w"], jax.Array)
    assert bits(np.asarray(u_np["w"])).tolist() == bits(np.asarray(u_j["w"])).tolist()
    assert bits(np.asarray(st_np.mu["w"])).tolist() == bits(np.asarray(st_j.mu["w"])).tolist()
    peer = optax.lion(1e-2, weight_decay=0.1)
    pu, _ = peer.update(g, peer.init(p_np), p_np)  # the peer accepts the same call
    # the new params agree with the peer's to an ulp of the params (the updates x' - x do not:
    # a difference of nearly equal numbers)
    a = np.asarray(optax.apply_updates(p_np, u_np)["w"], np.float64)
    b = np.asarray(optax.apply_updates(p_np, pu)["w"], np.float64)
    assert np.all(np.abs(a - b) <= 2 * _eps(jnp.float32) * np.abs(p_np["w"]))


# ---------------------------------------------------------------------------------------------
# Issue 15, item 8: learning_rate annotated as optax.ScalarOrSchedule.


def test_learning_rate_annotated_scalar_or_schedule() -> None:
    """optax's schedule tests run an optimizer with a schedule only when its ``learning_rate``
    annotation is ``optax.ScalarOrSchedule`` (inspect.signature, not a string)."""
    from optax._src import base

    ann = inspect.signature(lion_k).parameters["learning_rate"].annotation
    assert ann is base.ScalarOrSchedule
    # ... and what that test then checks: a constant schedule is the constant, under jit
    x0 = jnp.array([-1.0, 10.0, 1.0], jnp.float32)
    target = jnp.array([1.0, -1.0, 1.0], jnp.float32)

    def run(opt):
        @jax.jit
        def stp(p, s):
            u, s = opt.update(jax.grad(lambda q: jnp.sum((q - target) ** 2))(p), s, p)
            return optax.apply_updates(p, u), s

        p, s = x0, opt.init(x0)
        for _ in range(10):
            p, s = stp(p, s)
        return np.asarray(p)

    np.testing.assert_array_equal(run(lion_k(optax.constant_schedule(1e-3))),
                                  run(lion_k(1e-3)))


# ---------------------------------------------------------------------------------------------
# Issue 10, case 9: vmap / grad with params and momentum traced at different levels.

P4 = jnp.asarray(np.random.default_rng(4).standard_normal((4, 5)), jnp.float32)
G4 = jnp.asarray(np.random.default_rng(5).standard_normal((4, 5)), jnp.float32)
LR, WD = 1e-2, 0.1


def _pair():
    return lion_k(LR, weight_decay=WD), optax.lion(LR, weight_decay=WD)


def _looped(opt, ps, gs, init_each=True, shared_state=None):
    out = []
    for p, g in zip(ps, gs):
        st = opt.init(p) if init_each else shared_state
        out.append(optax.apply_updates(p, opt.update(g, st, p)[0]))
    return np.stack([np.asarray(a) for a in out])


def _close(a, b, what: str) -> None:
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2 * _eps(jnp.float32),
                               atol=2 * _eps(jnp.float32) * LR, err_msg=what)


def test_vmap_ensemble_over_states() -> None:
    """A model ensemble: init and update vmapped over the members."""
    ours, peer = _pair()
    for opt in (ours, peer):
        st = jax.vmap(opt.init)(P4)
        u, st2 = jax.vmap(opt.update)(G4, st, P4)
        assert st2.mu.shape == P4.shape if opt is ours else True
    got = optax.apply_updates(P4, jax.vmap(ours.update)(G4, jax.vmap(ours.init)(P4), P4)[0])
    assert bits(np.asarray(got)).tolist() == bits(_looped(ours, P4, G4)).tolist()
    _close(got, optax.apply_updates(P4, jax.vmap(peer.update)(G4, jax.vmap(peer.init)(P4), P4)[0]),
           "vmap ensemble vs optax.lion")


def test_vmap_over_grads_only() -> None:
    """Per-example updates: grads vmapped, params and momentum not (main: 'updates: expected
    device cpu:0 ... received None')."""
    ours, peer = _pair()
    p = P4[0]

    def f(opt):
        st = opt.init(p)
        return jax.vmap(lambda g: optax.apply_updates(p, opt.update(g, st, p)[0]))(G4)

    got = f(ours)
    ref = _looped(ours, [p] * 4, G4, init_each=False, shared_state=ours.init(p))
    assert bits(np.asarray(got)).tolist() == bits(ref).tolist()
    _close(got, f(peer), "vmap grads vs optax.lion")


def test_vmap_with_init_inside() -> None:
    """init inside the vmapped function: the momentum is a constant (not batched) while params
    are traced (main: 'state.mu: expected device None ... received cpu:0')."""
    ours, peer = _pair()

    def f(opt):
        return jax.vmap(lambda p, g: optax.apply_updates(p, opt.update(g, opt.init(p), p)[0]))(
            P4, G4)

    got = f(ours)
    assert bits(np.asarray(got)).tolist() == bits(_looped(ours, P4, G4)).tolist()
    _close(got, f(peer), "init inside vmap vs optax.lion")


def test_vmap_with_unmapped_momentum() -> None:
    ours, _ = _pair()
    st = ours.init(P4[0])
    got = jax.vmap(lambda p, g: ours.update(g, st, p)[0], in_axes=(0, 0))(P4, G4)
    ref = np.stack([np.asarray(ours.update(g, st, p)[0]) for p, g in zip(P4, G4)])
    assert bits(np.asarray(got)).tolist() == bits(ref).tolist()


def test_grad_through_an_update() -> None:
    """jax.grad through init + update (meta-learning style): d/dp of the loss after one step,
    against optax.lion (both: (1 - lr*wd) * 2 * x', the sign having zero derivative)."""
    ours, peer = _pair()

    def loss(opt, p):
        u, _ = opt.update(p * 2.0, opt.init(p), p)
        return jnp.sum(optax.apply_updates(p, u) ** 2)

    p = P4[0]
    got = jax.grad(lambda q: loss(ours, q))(p)
    _close(got, jax.grad(lambda q: loss(peer, q))(p), "grad through lion_k vs optax.lion")
    x_new = (1.0 - LR * WD) * np.asarray(p, np.float64) - LR * np.sign(np.asarray(p))
    np.testing.assert_allclose(np.asarray(got), 2.0 * x_new * (1.0 - LR * WD), rtol=1e-6)


def test_functional_step_under_vmap_and_grad() -> None:
    """lionk.step: the same patterns (grads only vmapped; init inside vmap; grad through)."""
    p = P4[0]
    st = lionk.init(p)
    per_g = jax.vmap(lambda g: lionk.step(p, g, st, lr=LR, weight_decay=WD)[0])(G4)
    ref = np.stack([np.asarray(lionk.step(p, g, st, lr=LR, weight_decay=WD)[0]) for g in G4])
    assert bits(np.asarray(per_g)).tolist() == bits(ref).tolist()
    inside = jax.vmap(lambda q, g: lionk.step(q, g, lionk.init(q), lr=LR, weight_decay=WD)[0])(
        P4, G4)
    ref2 = np.stack([np.asarray(lionk.step(q, g, lionk.init(q), lr=LR, weight_decay=WD)[0])
                     for q, g in zip(P4, G4)])
    assert bits(np.asarray(inside)).tolist() == bits(ref2).tolist()
    dg = jax.grad(lambda q: jnp.sum(lionk.step(q, q * 2.0, st, lr=LR, weight_decay=WD)[0]))(p)
    np.testing.assert_allclose(np.asarray(dg), np.full(p.shape, 1.0 - LR * WD), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Issue 15, item 6: norm κ eager on sharded params (explicit and auto meshes).

_SHARDED = r"""
import json, os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax, jax.numpy as jnp, numpy as np, optax, lionk
from jax.sharding import NamedSharding, PartitionSpec as P, AxisType
from lionk.optax import lion_k
rng = np.random.default_rng(0)
w = rng.standard_normal((2, 4, 4)).astype(np.float32)
g = rng.standard_normal((2, 4, 4)).astype(np.float32)
rows = []
for types in ("explicit", "auto"):
    at = AxisType.Explicit if types == "explicit" else AxisType.Auto
    mesh = jax.make_mesh((2, 2), ("x", "y"), axis_types=(at, at))
    sh = NamedSharding(mesh, P(None, "x", "y"))
    params = {"w": jax.device_put(w, sh), "b": jax.device_put(w[0, 0], NamedSharding(mesh, P("x")))}
    grads = {"w": jax.device_put(g, sh), "b": jax.device_put(g[0, 0], NamedSharding(mesh, P("x")))}
    plain_p = {"w": jnp.asarray(w), "b": jnp.asarray(w[0, 0])}
    plain_g = {"w": jnp.asarray(g), "b": jnp.asarray(g[0, 0])}
    for name in ("l2", "l2:global", "lp", "huber"):
        kap = lionk.kappa.get("l2", scope="global") if name == "l2:global" else name
        for front in ("lion_k", "step", "step-skip"):
            try:
                if front == "lion_k":
                    o = lion_k(1e-2, weight_decay=0.1, kappa=kap)
                    run = lambda p, q: optax.apply_updates(p, o.update(q, o.init(p), p)[0])
                else:
                    pol = "skip" if front == "step-skip" else "propagate"
                    run = lambda p, q: lionk.step(p, q, lionk.init(p), lr=1e-2, weight_decay=0.1,
                                                  kappa=kap, nan_policy=pol)[0]
                out = run(params, grads)
                ref = run(plain_p, plain_g)
                err = max(float(np.max(np.abs(np.asarray(out[k], np.float64)
                                              - np.asarray(ref[k], np.float64)))) for k in out)
                rows.append(dict(mesh=types, kappa=name, front=front, ok=True, err=err,
                                 spec=str(out["w"].sharding.spec)))
            except Exception as e:
                rows.append(dict(mesh=types, kappa=name, front=front, ok=False,
                                 error=type(e).__name__ + ": " + str(e)[:300]))
print("ROWS" + json.dumps(rows))
"""


def test_norm_kappa_eager_on_sharded_params() -> None:
    """κ l2 / l2 global / lp (and an exact κ) with lion_k and lionk.step, eager, on params
    sharded over a 2 × 2 mesh of 4 host CPU devices (explicit and auto axis types): main built a
    0-d constant with the 3-d sharding of a param and raised. The result keeps the params'
    sharding and equals the unsharded result (to rounding: the norm is reduced per device)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _SHARDED], capture_output=True, text=True,
                          env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.split("ROWS", 1)[1])
    assert len(rows) == 2 * 4 * 3
    for r in rows:
        assert r["ok"], r
        assert r["spec"] in ("P(None, 'x', 'y')", "PartitionSpec(None, 'x', 'y')"), r
        assert r["err"] <= 4 * float(np.finfo(np.float32).eps), r


# ---------------------------------------------------------------------------------------------
# optax.tree.map_params (partition specs of optimizer states): init with a childless JAX node.


def test_tree_map_params_finds_the_momentum() -> None:
    """``optax.tree.map_params`` calls ``init`` with a placeholder, a JAX pytree node without
    children, to find the copies of the params tree in the state (how sharding specs of optimizer
    states are built). lionk flattened that node as a leaf and refused it; it is a node."""
    p = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    for opt in (lion_k(1e-2), optax.chain(optax.clip(1.0), lion_k(1e-2))):
        mapped = optax.tree.map_params(opt, lambda v: jnp.full_like(v, 7.0), opt.init(p))
        ours = [s for s in jax.tree.leaves(mapped, is_leaf=lambda s: isinstance(s, LionKState))
                if isinstance(s, LionKState)][0]
        assert all(float(jnp.min(a)) == 7.0 for a in jax.tree.leaves(ours.mu))
        assert int(ours.count) == 0  # not a params tree: left as it was
    # the peer, for comparison: optax.lion's momentum is found the same way
    pm = optax.tree.map_params(optax.lion(1e-2), lambda v: jnp.full_like(v, 7.0),
                               optax.lion(1e-2).init(p))
    assert all(float(jnp.min(a)) == 7.0 for a in jax.tree.leaves(pm[0].mu))


def test_childless_jax_node_is_a_node_in_lionk_trees() -> None:
    from lionk.tree import flatten

    leaves, treedef, paths = flatten({"a": jnp.ones(2), "n": _Childless()})
    assert len(leaves) == 1 and paths == ["['a']"]
    assert isinstance(treedef.unflatten(leaves)["n"], _Childless)


@jax.tree_util.register_pytree_node_class
class _Childless:
    def tree_flatten(self):
        return (), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls()
