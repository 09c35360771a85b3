"""``lionk.optax.lion_k``: the optax adapter, against independent references.

References:

* the hand-written numpy step of tests/_util.py (Python-float coefficients, published order);
* ``lionk.step`` on numpy arrays;
* ``optax.lion`` itself (hard sign), which rounds differently: ``x + (-lr*(sign(c) + wd*x))``.

Tiers (docs/reproducibility.md, docs/optax.md), k = 8 ulps as in the conformance suite:

* the ``updates`` lion_k returns are compared bit for bit with ``fl(x' - x)`` computed by numpy
  from the reference ``x'``: the bitwise tier for JAX eager and for ``jax.jit`` under
  ``XLA_FLAGS=--xla_cpu_max_isa=SSE4_2`` (checked in a subprocess: the flag must be set before
  jax is imported);
* the params a user gets, ``optax.apply_updates(x, updates) = x + fl(x' - x)``, equal ``x'`` bit
  for bit only where ``x'`` and ``x`` are within a factor 2 (Sterbenz); elsewhere they are within
  one ulp of ``max(|x|, |x'|)``: that is measured and asserted separately;
* plain ``jax.jit`` (FMA contraction), optax wrappers that compile the step (``MultiSteps``,
  ``apply_if_finite`` use ``lax.cond``), ``optax.lion``, clipping, schedules: the ulp tier,
  teacher-forced (every step starts from the reference state), sign ties counted.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402

import lionk  # noqa: E402
from lionk.optax import LionKState, lion_k  # noqa: E402

from ._util import bits, np_reference_step, np_sign  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SSE42_FLAG = "--xla_cpu_max_isa=SSE4_2"
K_ULP = 8  # the conformance suite's k (docs/reproducibility.md)
MAX_TIE_FRACTION = 1e-3  # at most one tie per thousand elements, as the conformance suite
LR, B1, B2, WD = 3e-3, 0.9, 0.99, 0.1
SHAPES = {"w": (24, 16), "b": (16,), "s": ()}


# ---------------------------------------------------------------------------------------------
# Problem, reference trajectory and the teacher-forced comparison.


def make_tree(rng: np.random.Generator, dtype: str, scale: float) -> dict[str, np.ndarray]:
    return {k: np.asarray(rng.standard_normal(s) * scale).astype(dtype) for k, s in SHAPES.items()}


def reference_trajectory(dtype: str, steps: int, *, lr=LR, b1=B1, b2=B2, wd=WD,
                         decayed=None, seed=0, grads=None, lr_at=None, wd_at=None,
                         grad_k=np_sign):
    """Records ``(x, m, g, x', m', lr_t, wd_t)`` of the numpy reference, one per step.

    ``decayed`` maps leaf -> bool (weight decay on that leaf); ``lr_at`` / ``wd_at`` give the
    step's value (schedules, as Python floats); ``grads`` a list of gradient trees."""
    rng = np.random.default_rng(seed)
    x = make_tree(rng, dtype, 0.05)
    m = {k: np.zeros(s, dtype) for k, s in SHAPES.items()}
    recs = []
    for t in range(steps):
        g = grads[t] if grads is not None else make_tree(rng, dtype, 1.0)
        lr_t = lr_at(t) if lr_at else lr
        wd_t = wd_at(t) if wd_at else wd
        xn, mn = {}, {}
        for k in x:
            w = wd_t if (decayed is None or decayed[k]) else 0.0
            a, b = np_reference_step(x[k], g[k], m[k], lr=lr_t, betas=(b1, b2), wd=w,
                                     grad_k=grad_k)
            xn[k], mn[k] = np.asarray(a, dtype), np.asarray(b, dtype)
        recs.append((x, m, g, xn, mn, lr_t, wd_t))
        x, m = xn, mn
    return recs


def to_jax(tree):
    return jax.tree.map(lambda a: jnp.asarray(a), tree)


def to_np(tree):
    return jax.tree.map(lambda a: np.asarray(a), tree)


def _spacing(mag: np.ndarray, dtype) -> np.ndarray:
    return np.spacing(np.asarray(mag).astype(dtype)).astype(np.float64)


def _ulps(actual, expected, mag) -> np.ndarray:
    actual = np.asarray(actual)
    diff = np.abs(actual.astype(np.float64) - np.asarray(expected).astype(np.float64))
    return diff / _spacing(mag, actual.dtype)


def compare_step(rec, new_params, new_mu, updates=None, *, b1=B1, b2=B2, decayed=None,
                 k=K_ULP) -> dict:
    """Per-step statistics of one teacher-forced step against the numpy reference ``rec``.

    ``new_params`` are what a user gets (``optax.apply_updates``); ``updates`` (optional) are
    compared bit for bit with ``fl(x' - x)``. Ties: |c| within k ulps of the terms of c."""
    x, m, g, xn, mn, lr, wd = rec
    s = dict(n=0, ties=0, max_ulp_x=0.0, x_bits=0, m_bits=0, max_ulp_m=0.0, upd_bits=0,
             non_sterbenz=0, x_bits_sterbenz=0, max_ulp_x_rel_xmax=0.0)
    for key in x:
        dt = x[key].dtype
        w = wd if (decayed is None or decayed[key]) else 0.0
        xk, mk, gk = (np.asarray(a, np.float64) for a in (x[key], m[key], g[key]))
        c = np.asarray(b1 * m[key] + (1.0 - b1) * g[key])
        tie = np.abs(c.astype(np.float64)) <= k * _spacing(np.abs(b1 * mk) + np.abs((1 - b1) * gk), dt)
        mag_x = np.abs((1.0 - lr * w) * xk) + lr * np.abs(np.sign(c.astype(np.float64)))
        mag_x = np.maximum(mag_x, np.abs(xn[key].astype(np.float64)))
        mag_m = np.abs(b2 * mk) + np.abs((1.0 - b2) * gk)
        px, pm = np.asarray(new_params[key]), np.asarray(new_mu[key])
        assert px.dtype == dt and px.shape == x[key].shape, (key, px.dtype, px.shape)
        ok = ~tie
        s["n"] += int(np.size(xk))
        s["ties"] += int(tie.sum())
        ux = _ulps(px, xn[key], mag_x)[ok]
        s["max_ulp_x"] = max(s["max_ulp_x"], float(ux.max(initial=0.0)))
        xmax = np.maximum(np.abs(xk), np.abs(xn[key].astype(np.float64)))
        s["max_ulp_x_rel_xmax"] = max(s["max_ulp_x_rel_xmax"],
                                      float(_ulps(px, xn[key], xmax)[ok].max(initial=0.0)))
        diff = (bits(px) != bits(xn[key]))
        s["x_bits"] += int((diff & ok).sum())
        xo, xnew = xk, xn[key].astype(np.float64)
        sterb = (np.sign(xo) == np.sign(xnew)) & (np.abs(xnew) >= np.abs(xo) / 2) & (np.abs(xnew) <= 2 * np.abs(xo))
        s["non_sterbenz"] += int((~sterb).sum())
        s["x_bits_sterbenz"] += int((diff & ok & sterb).sum())
        if pm.dtype == mn[key].dtype:
            s["m_bits"] += int((bits(pm) != bits(mn[key])).sum())
            s["max_ulp_m"] = max(s["max_ulp_m"], float(_ulps(pm, mn[key], mag_m).max(initial=0.0)))
        if updates is not None:
            u = np.asarray(updates[key])
            exact = np.asarray(xn[key] - x[key])
            s["upd_bits"] += int((bits(u) != bits(exact)).sum())
    return s


def merge(stats: list[dict]) -> dict:
    out = {}
    for s in stats:
        for key, v in s.items():
            out[key] = max(out.get(key, 0.0), v) if key.startswith("max") else out.get(key, 0) + v
    return out


def teacher_forced(opt, recs, *, jit: bool, decayed=None, b1=B1, b2=B2, mu_dtype=None) -> dict:
    """Feed every reference state to ``opt`` (a lion_k) and compare its step with the next."""
    update = jax.jit(opt.update) if jit else opt.update
    stats = []
    for t, rec in enumerate(recs):
        x, m, g = rec[0], rec[1], rec[2]
        mu = to_jax(m) if mu_dtype is None else jax.tree.map(lambda a: jnp.asarray(a, mu_dtype), m)
        state = LionKState(count=jnp.asarray(t, jnp.int32), mu=mu)
        xj = to_jax(x)
        upd, new_state = update(to_jax(g), state, xj)
        assert int(new_state.count) == t + 1
        new_params = to_np(optax.apply_updates(xj, upd))
        stats.append(compare_step(rec, new_params, to_np(new_state.mu), to_np(upd), b1=b1,
                                  b2=b2, decayed=decayed))
    return merge(stats)


def _bitwise_report() -> dict:
    """Run in a subprocess with XLA_FLAGS=--xla_cpu_max_isa=SSE4_2: jitted lion_k vs numpy."""
    jax.config.update("jax_enable_x64", True)
    out = {"xla_flags": os.environ.get("XLA_FLAGS", "")}
    for dt in ("float32", "float64"):
        recs = reference_trajectory(dt, 12)
        out[dt] = teacher_forced(lion_k(LR, weight_decay=WD), recs, jit=True)
    return out


def _float32_mode_report() -> dict:
    """Run in a subprocess with JAX's default configuration (no jax_enable_x64)."""
    assert not jax.config.jax_enable_x64
    lr_s = optax.linear_schedule(1e-2, 1e-3, 6)
    lr_at = lambda t: float(lr_s(jnp.asarray(t, jnp.int32)))  # noqa: E731
    out = {"static_eager": teacher_forced(lion_k(LR, weight_decay=WD),
                                          reference_trajectory("float32", 6), jit=False)}
    recs = reference_trajectory("float32", 6, lr_at=lr_at)
    out["schedule_eager"] = teacher_forced(lion_k(lr_s, weight_decay=WD), recs, jit=False)
    recs = reference_trajectory("float32", 6, lr_at=lr_at, wd=1e-3)
    out["optax_lion_jit"] = versus_optax_lion(lion_k(lr_s, weight_decay=1e-3), optax.lion(lr_s),
                                              recs, jit=True)
    return out


def assert_ulp_tier(s: dict, what: str, *, m_bitwise: bool = False) -> None:
    assert s["ties"] <= MAX_TIE_FRACTION * s["n"], f"{what}: {s['ties']} ties of {s['n']}"
    assert s["max_ulp_x"] <= K_ULP, f"{what}: params off by {s['max_ulp_x']} ulps ({s})"
    assert s["max_ulp_m"] <= K_ULP, f"{what}: momentum off by {s['max_ulp_m']} ulps ({s})"
    if m_bitwise:
        assert s["m_bits"] == 0, f"{what}: {s['m_bits']} momentum elements differ in bits"


def assert_bitwise_tier(s: dict, what: str) -> None:
    """updates == fl(x' - x) and m' exact; the params through apply_updates exact wherever
    Sterbenz applies and within 1 ulp of max(|x|, |x'|) elsewhere."""
    assert s["ties"] == 0 or s["ties"] <= MAX_TIE_FRACTION * s["n"], s
    assert s["upd_bits"] == 0, f"{what}: {s['upd_bits']} update elements differ from fl(x' - x)"
    assert s["m_bits"] == 0, f"{what}: {s['m_bits']} momentum elements differ in bits"
    assert s["x_bits_sterbenz"] == 0, f"{what}: {s['x_bits_sterbenz']} params differ where x'/x in [1/2, 2]"
    assert s["max_ulp_x_rel_xmax"] <= 1.0, f"{what}: {s}"


def optax_lion_step(opt, rec, t, *, jit_update=None, mu_dtype=None, g_in=None):
    """One step of ``optax.lion`` (or any optax transformation holding one Lion state) from the
    reference state of ``rec`` (every ``count`` field set to t, the ``mu`` field to m), fed the
    gradients ``g_in`` (default: the reference's): returns (new params, new mu, updates) as
    numpy trees."""
    x, m = rec[0], rec[1]
    g = rec[2] if g_in is None else g_in
    xj = to_jax(x)
    mu = to_jax(m) if mu_dtype is None else jax.tree.map(lambda a: jnp.asarray(a, mu_dtype), m)
    state = optax.tree.set(opt.init(xj), count=jnp.asarray(t, jnp.int32), mu=mu)
    upd, new_state = (jit_update or opt.update)(to_jax(g), state, xj)
    return to_np(optax.apply_updates(xj, upd)), to_np(optax.tree.get(new_state, "mu")), to_np(upd)


def versus_optax_lion(opt_k, opt_ref, recs, *, jit: bool, decayed=None, mu_dtype=None) -> dict:
    """Teacher-forced: at every step both optimizers start from the numpy reference state; the
    new params of lion_k are compared with optax.lion's (ulp tier, sign ties counted)."""
    up_k = jax.jit(opt_k.update) if jit else opt_k.update
    up_ref = jax.jit(opt_ref.update) if jit else opt_ref.update
    stats = []
    for t, rec in enumerate(recs):
        ref_x, ref_m, _ = optax_lion_step(opt_ref, rec, t, jit_update=up_ref, mu_dtype=mu_dtype)
        k_x, k_m, _ = optax_lion_step(opt_k, rec, t, jit_update=up_k, mu_dtype=mu_dtype)
        rec_ref = (rec[0], rec[1], rec[2], ref_x, ref_m, rec[5], rec[6])
        stats.append(compare_step(rec_ref, k_x, k_m, decayed=decayed))
    return merge(stats)


# ---------------------------------------------------------------------------------------------
# Construction, state, import.


def test_import_lionk_alone_imports_neither_jax_nor_optax() -> None:
    """``import lionk`` stays light; ``lionk.optax`` is loaded on first attribute access."""
    code = (
        "import sys, lionk\n"
        "assert not {'jax', 'optax'} & set(sys.modules), sorted({'jax', 'optax'} & set(sys.modules))\n"
        "f = lionk.optax.lion_k\n"
        "from lionk.optax import lion_k\n"
        "assert f is lion_k and 'optax' in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_transformation_and_state() -> None:
    params = {"w": jnp.ones((2, 3), jnp.float32), "b": [jnp.zeros(3, jnp.float64)]}
    opt = lion_k(1e-3)
    assert isinstance(opt, optax.GradientTransformationExtraArgs)
    st = opt.init(params)
    assert isinstance(st, LionKState) and st.count.dtype == jnp.int32 and int(st.count) == 0
    assert st.mu["w"].dtype == jnp.float32 and st.mu["b"][0].dtype == jnp.float64
    assert st.mu["w"].shape == (2, 3) and not np.any(np.asarray(st.mu["w"]))
    # a pytree: count plus one leaf per param
    assert len(jax.tree.leaves(st)) == 3
    st16 = lion_k(1e-3, mu_dtype=jnp.bfloat16).init(params)
    assert st16.mu["w"].dtype == jnp.bfloat16 and st16.mu["b"][0].dtype == jnp.bfloat16
    assert lion_k(1e-3, mu_dtype="float32").init(params).mu["b"][0].dtype == jnp.float32
    # empty trees
    upd, st0 = opt.update({}, opt.init({}), {})
    assert upd == {} and int(st0.count) == 1


def test_defaults_match_the_spec() -> None:
    import inspect

    sig = inspect.signature(lion_k)
    assert list(sig.parameters) == ["learning_rate", "b1", "b2", "weight_decay", "kappa",
                                    "mask", "mu_dtype"]
    d = {k: p.default for k, p in sig.parameters.items()}
    assert (d["b1"], d["b2"], d["weight_decay"], d["kappa"], d["mask"], d["mu_dtype"]) == (
        0.9, 0.99, 0.0, "sign", None, None)
    # optax.lion's own defaults, as docs/optax.md states them
    od = {k: p.default for k, p in inspect.signature(optax.lion).parameters.items()}
    assert (od["b1"], od["b2"], od["weight_decay"], od["mu_dtype"], od["mask"]) == (
        0.9, 0.99, 1e-3, None, None)


# ---------------------------------------------------------------------------------------------
# Errors name the argument, what was expected and what was received.


@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        ({"learning_rate": 0.0}, ValueError, ["learning_rate", "> 0", "0.0"]),
        ({"learning_rate": -1.0}, ValueError, ["learning_rate", "> 0", "-1.0"]),
        ({"learning_rate": math.nan}, ValueError, ["learning_rate", "finite"]),
        ({"learning_rate": "0.1"}, TypeError, ["learning_rate", "'0.1'"]),
        ({"learning_rate": True}, TypeError, ["learning_rate", "True"]),
        ({"learning_rate": np.ones(2)}, ValueError, ["learning_rate", "shape (2,)"]),
        ({"learning_rate": jnp.asarray(-1.0)}, ValueError, ["learning_rate", "-1.0"]),
        ({"learning_rate": 1e-3, "b1": 1.0}, ValueError, ["b1", "[0, 1)", "1.0"]),
        ({"learning_rate": 1e-3, "b2": -0.1}, ValueError, ["b2", "[0, 1)", "-0.1"]),
        ({"learning_rate": 1e-3, "b1": lambda c: 0.9}, TypeError, ["b1", "callable"]),
        ({"learning_rate": 1e-3, "weight_decay": -0.5}, ValueError, ["weight_decay", ">= 0", "-0.5"]),
        ({"learning_rate": 0.5, "weight_decay": 2.0}, ValueError, ["learning_rate*weight_decay", "< 1", "0.5", "2.0"]),
        ({"learning_rate": 1e-3, "kappa": "nope"}, KeyError, ["nope", "sign"]),
        ({"learning_rate": 1e-3, "kappa": 3}, TypeError, ["kappa", "3"]),
        ({"learning_rate": 1e-3, "mu_dtype": jnp.int32}, TypeError, ["mu_dtype", "floating", "int32"]),
        ({"learning_rate": 1e-3, "mu_dtype": "nodtype"}, TypeError, ["mu_dtype", "nodtype"]),
    ],
)
def test_construction_errors(kwargs, exc, words) -> None:
    with pytest.raises(exc) as info:
        lion_k(**kwargs)
    msg = str(info.value)
    for w in words:
        assert w in msg, (w, msg)


def test_b1_greater_than_b2_warns() -> None:
    with pytest.warns(lionk.LionKWarning, match="b1=0.99 > b2=0.9"):
        lion_k(1e-3, b1=0.99, b2=0.9)
    with pytest.warns(lionk.LionKWarning):  # also when the learning rate is a schedule
        lion_k(optax.constant_schedule(1e-3), b1=0.99, b2=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lion_k(1e-3, b1=0.9, b2=0.99)


def test_update_errors() -> None:
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    grads = jax.tree.map(jnp.ones_like, params)
    opt = lion_k(1e-3, weight_decay=0.1)
    st = opt.init(params)
    with pytest.raises(ValueError, match=r"params: .*received None"):
        opt.update(grads, st)
    with pytest.raises(ValueError, match=r"updates\['w'\]: expected shape \(2, 3\).*received \(3, 2\)"):
        opt.update({"w": jnp.ones((3, 2)), "b": jnp.zeros(3)}, st, params)
    with pytest.raises(ValueError, match=r"updates: expected the tree structure of params"):
        opt.update({"w": jnp.ones((2, 3))}, st, params)
    # grads of another floating dtype are accepted, as optax.lion does
    # (tests/test_optax_conventions.py); a non-floating one is not
    with pytest.raises(TypeError, match=r"updates\['b'\]: expected a real floating dtype"):
        opt.update({"w": jnp.ones((2, 3)), "b": jnp.zeros(3, jnp.int32)}, st, params)
    with pytest.raises(TypeError, match=r"state: expected a LionKState"):
        opt.update(grads, (1, 2), params)
    with pytest.raises(ValueError, match=r"state.mu: expected the tree structure"):
        opt.update(grads, lion_k(1e-3).init({"w": params["w"]}), params)
    with pytest.raises(TypeError, match=r"params\['b'\]: expected a real floating dtype"):
        opt.init({"b": jnp.zeros(3, jnp.int32)})
    bad = lion_k(1e-3, weight_decay=0.1, mask={"w": True})
    with pytest.raises(ValueError, match=r"mask: expected a tree of bools with the structure of params"):
        bad.update(grads, bad.init(params), params)
    bad = lion_k(1e-3, weight_decay=0.1, mask={"w": True, "b": 1.0})
    with pytest.raises(TypeError, match=r"mask \(at params\['b'\]\): expected a bool; received float"):
        bad.update(grads, bad.init(params), params)
    bad = lion_k(lambda count: jnp.ones(2), weight_decay=0.1)
    with pytest.raises(ValueError, match=r"learning_rate: expected the schedule to return a scalar"):
        bad.update(grads, bad.init(params), params)
    traced = lion_k(1e-3, weight_decay=0.1, mask=lambda p: jax.tree.map(lambda a: a.sum() > 0, p))
    with pytest.raises(TypeError, match=r"mask \(at params\['b'\]\): expected a static bool"):
        jax.jit(traced.update)(grads, traced.init(params), params)


# ---------------------------------------------------------------------------------------------
# The step against the numpy reference and lionk.step: bitwise and ulp tiers.


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_eager_updates_are_bitwise(dtype) -> None:
    """JAX eager: ``updates`` == fl(x' - x) and m' == m' of the numpy reference, bit for bit,
    at every step of a teacher-forced trajectory; the params via ``optax.apply_updates`` equal x'
    bitwise wherever x'/x lies in [1/2, 2] and are within 1 ulp of max(|x|, |x'|) elsewhere."""
    recs = reference_trajectory(dtype, 8)
    s = teacher_forced(lion_k(LR, weight_decay=WD), recs, jit=False)
    assert_bitwise_tier(s, f"eager {dtype}")
    assert s["non_sterbenz"] > 0  # the problem does exercise elements near zero


def test_apply_updates_is_not_always_exact() -> None:
    """Measured, not assumed: x + fl(x' - x) differs from x' where x' and x are not within a
    factor 2 and the subtraction rounds (here x = 0.04735405, x' = 0.95*x - 0.1 = -0.0550137:
    one ulp off); where x'/x is in [1/2, 2] (x = 0.75) it is exact."""
    x = np.array([0.04735405, 0.75], np.float32)
    g = np.ones(2, np.float32)
    lr, wd = 0.1, 0.5
    opt = lion_k(lr, weight_decay=wd)
    upd, _ = opt.update(jnp.asarray(g), opt.init(jnp.asarray(x)), jnp.asarray(x))
    xn, _ = np_reference_step(x, g, np.zeros(2, np.float32), lr=lr, betas=(B1, B2), wd=wd,
                              grad_k=np_sign)
    new = np.asarray(optax.apply_updates(jnp.asarray(x), upd))
    assert bits(np.asarray(upd)).tolist() == bits(np.asarray(xn - x)).tolist()
    assert new[1] == xn[1]                                     # Sterbenz: exact
    assert new[0] != xn[0]
    assert abs(float(new[0]) - float(xn[0])) == np.spacing(np.float32(abs(xn[0])))


def test_matches_lionk_step_on_numpy() -> None:
    """Free-running, 20 steps, lion_k (JAX eager, params through optax.apply_updates) next to
    lionk.step on numpy arrays. The momentum does not depend on x: bit for bit at every step.
    The params drift by the roundings of apply_updates only: per element and step at most
    1 ulp of max(|x|, |x'|) from apply_updates plus 1 ulp each for the two roundings of the
    step that now see a slightly different x, i.e. |x_jax - x_np| <= sum_t 3 ulp(M_t)."""
    dtype = "float32"
    rng = np.random.default_rng(3)
    x = make_tree(rng, dtype, 0.05)
    grads = [make_tree(rng, dtype, 1.0) for _ in range(20)]
    opt = lion_k(LR, weight_decay=WD)
    xj, st = to_jax(x), opt.init(to_jax(x))
    xs, ss = x, lionk.init(x)
    bound = {k: np.zeros(np.shape(v)) for k, v in x.items()}
    ratio, differ = 0.0, 0
    for g in grads:
        upd, st = opt.update(to_jax(g), st, xj)
        xj = optax.apply_updates(xj, upd)
        x_old = xs
        xs, ss = lionk.step(xs, g, ss, lr=LR, weight_decay=WD)
        for k in x:
            assert bits(np.asarray(st.mu[k])).tolist() == bits(ss.momentum[k]).tolist()
            m_t = np.maximum(np.maximum(np.abs(x_old[k]), np.abs(xs[k])), np.float32(LR))
            bound[k] = bound[k] + 3.0 * _spacing(m_t, np.float32)
            err = np.abs(np.asarray(xj[k], np.float64) - xs[k].astype(np.float64))
            assert np.all(err <= bound[k]), (k, float((err / bound[k]).max()))
            ratio = max(ratio, float((err / bound[k]).max()))
            differ += int((bits(np.asarray(xj[k])) != bits(xs[k])).sum())
    assert differ > 0  # not bitwise: apply_updates rounds (see test_apply_updates_is_not_always_exact)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_jit_is_in_the_ulp_tier(dtype) -> None:
    recs = reference_trajectory(dtype, 8)
    s = teacher_forced(lion_k(LR, weight_decay=WD), recs, jit=True)
    assert_ulp_tier(s, f"jit {dtype}")


def test_jit_with_sse42_flag_is_bitwise() -> None:
    """jax.jit under XLA_FLAGS=--xla_cpu_max_isa=SSE4_2 (no FMA contraction) reaches the
    bitwise tier; without the flag (this process) it does not (negative control)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + SSE42_FLAG).strip()
    code = ("import json; from tests.test_optax_adapter import _bitwise_report; "
            "print('REPORT=' + json.dumps(_bitwise_report()))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT=")][-1]
    rep = json.loads(line[len("REPORT="):])
    assert SSE42_FLAG in rep["xla_flags"]
    for dt in ("float32", "float64"):
        assert_bitwise_tier(rep[dt], f"jit+SSE4_2 {dt}")
    # control: without the flag the same jitted step contracts and differs in its last bits.
    # Since the exact sign is one select on JAX (array_api.native_exact_sign), LLVM no longer
    # contracts the params' update of this program (upd_bits was 0 when measured); the
    # momentum's b2*m + (1-b2)*g still is, which is what makes the flag necessary.
    s = teacher_forced(lion_k(LR, weight_decay=WD), reference_trajectory("float32", 3), jit=True)
    assert s["m_bits"] > 0, (
        "jax.jit no longer contracts a*b + c on this CPU: the SSE4_2 subprocess check then "
        f"proves nothing new; update docs/optax.md and docs/reproducibility.md ({s})")


def test_without_x64() -> None:
    """JAX's default mode (no jax_enable_x64, in a subprocess: the flag is global): Python
    floats still give the bitwise tier eager; a schedule's coefficients are then computed in
    float32 (1 - lr*wd rounded twice): the ulp tier; optax.lion agrees in the ulp tier."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    code = ("import json; from tests.test_optax_adapter import _float32_mode_report; "
            "print('REPORT=' + json.dumps(_float32_mode_report()))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT=")][-1][7:])
    assert_bitwise_tier(rep["static_eager"], "float32 mode, Python floats, eager")
    assert_ulp_tier(rep["schedule_eager"], "float32 mode, schedule, eager")
    assert_ulp_tier(rep["optax_lion_jit"], "float32 mode, vs optax.lion, jit")


def test_python_float_coefficients_stay_exact_under_jit() -> None:
    """float32, m = 0, g = 1: m' is the coefficient 1 - b2 itself. lion_k with Python floats
    rounds (1 - 0.99) once (the exact path); optax.inject_hyperparams turns b2 into a float32
    array, so the coefficient becomes float32(1) - float32(0.99) (documented: not bitwise)."""
    exact = np.float32(1.0 - 0.99)
    f32 = np.float32(1.0) - np.float32(0.99)
    assert exact != f32  # the test can tell the two paths apart
    p, g = jnp.zeros(4, jnp.float32), jnp.ones(4, jnp.float32)
    opt = lion_k(0.25, b2=0.99, weight_decay=0.5)
    upd, st = jax.jit(opt.update)(g, opt.init(p), p)
    assert bits(np.asarray(st.mu)).tolist() == [bits(np.asarray([exact]))[0]] * 4
    # x = 0: x' = -lr; with x = 1: (1 - lr*wd) rounded once from the double 0.875
    x1 = jnp.ones(4, jnp.float32)
    upd1, _ = jax.jit(opt.update)(g, opt.init(x1), x1)
    assert np.asarray(optax.apply_updates(x1, upd1)).tolist() == [0.875 - 0.25] * 4
    inj = optax.inject_hyperparams(lion_k)(learning_rate=0.25, b2=0.99, weight_decay=0.5)
    _, sti = jax.jit(inj.update)(g, inj.init(p), p)
    assert np.asarray(sti.inner_state.mu).tolist() == [float(f32)] * 4
    # b1, b2 as static_args keep the exact path inside inject_hyperparams
    inj2 = optax.inject_hyperparams(lion_k, static_args=("b1", "b2"))(learning_rate=0.25, b2=0.99)
    _, st2 = jax.jit(inj2.update)(g, inj2.init(p), p)
    assert np.asarray(st2.inner_state.mu).tolist() == [float(exact)] * 4


def test_jit_does_not_recompile() -> None:
    """The second and later calls of a jitted update reuse the first compilation (the state's
    count and mu keep their dtypes; floats are constants; schedules are traced)."""
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    grads = jax.tree.map(lambda a: jnp.full_like(a, 0.5), params)
    for opt in (lion_k(1e-3, weight_decay=0.1),
                lion_k(optax.cosine_decay_schedule(1e-3, 10), weight_decay=optax.linear_schedule(0.1, 0.0, 10),
                       mask={"w": True, "b": False}, mu_dtype=jnp.bfloat16)):
        traces = []

        def step(p, s, g, opt=opt, traces=traces):
            traces.append(1)  # a Python side effect: runs only while tracing
            u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s

        jstep = jax.jit(step)
        p, s = params, opt.init(params)
        for _ in range(4):
            p, s = jstep(p, s, grads)
        assert len(traces) == 1, len(traces)
        assert jstep._cache_size() == 1
        assert int(s.count) == 4


# ---------------------------------------------------------------------------------------------
# Against optax.lion.


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_versus_optax_lion(dtype, jit) -> None:
    """optax.lion with its default weight_decay=1e-3 and lion_k(weight_decay=1e-3): the same
    step up to rounding (optax computes x + (-lr*(sign(c) + wd*x))). Eager, the momenta agree
    bit for bit (same products, same sum)."""
    recs = reference_trajectory(dtype, 6, wd=1e-3, lr=1e-2)
    s = versus_optax_lion(lion_k(1e-2, weight_decay=1e-3), optax.lion(1e-2), recs, jit=jit)
    assert_ulp_tier(s, f"optax.lion {dtype} {'jit' if jit else 'eager'}", m_bitwise=not jit)
    assert s["x_bits"] > 0  # they do round differently: the ulp tier, not bitwise (docs/optax.md)


def test_versus_optax_lion_with_mask_and_mu_dtype() -> None:
    """optax.lion's mask applies to the weight decay only; so does lion_k's. bfloat16 momentum
    on both sides: momenta bit for bit (eager), params in the ulp tier."""
    decayed = {"w": True, "b": False, "s": True}
    recs = reference_trajectory("float32", 5, wd=0.2, lr=1e-2, decayed=decayed)
    s = versus_optax_lion(lion_k(1e-2, weight_decay=0.2, mask=decayed),
                          optax.lion(1e-2, weight_decay=0.2, mask=decayed), recs, jit=False,
                          decayed=decayed)
    assert_ulp_tier(s, "optax.lion mask", m_bitwise=True)
    recs = reference_trajectory("float32", 5, wd=0.2, lr=1e-2)
    s = versus_optax_lion(lion_k(1e-2, weight_decay=0.2, mu_dtype=jnp.bfloat16),
                          optax.lion(1e-2, weight_decay=0.2, mu_dtype=jnp.bfloat16), recs,
                          jit=False, mu_dtype=jnp.bfloat16)
    assert s["ties"] <= MAX_TIE_FRACTION * s["n"] and s["max_ulp_x"] <= K_ULP, s


# ---------------------------------------------------------------------------------------------
# Inside optax: chain, inject_hyperparams, MultiSteps, apply_if_finite.


def test_chain_with_clip_by_global_norm() -> None:
    """optax.chain(clip_by_global_norm(1), lion_k): the reference clips in float64 (norm and
    scale), then steps; teacher-forced, jit, ulp tier. The clip is active (norm ~ 20)."""
    dtype = "float32"
    rng = np.random.default_rng(7)
    raw = [make_tree(rng, dtype, 1.0) for _ in range(5)]
    clipped = []
    for g in raw:
        norm = math.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in g.values()))
        assert norm > 10.0
        clipped.append({k: (v.astype(np.float64) / norm).astype(dtype) for k, v in g.items()})
    recs = reference_trajectory(dtype, 5, grads=clipped)
    opt = optax.chain(optax.clip_by_global_norm(1.0), lion_k(LR, weight_decay=WD))
    up = jax.jit(opt.update)
    stats = []
    for t, rec in enumerate(recs):
        new_x, new_m, _ = optax_lion_step(opt, rec, t, jit_update=up, g_in=raw[t])
        stats.append(compare_step(rec, new_x, new_m))
    s = merge(stats)
    assert_ulp_tier(s, "chain(clip, lion_k)")
    # without the clip the momentum would be ~20x larger: the numbers do come from clipped grads
    _, m_unclipped, _ = optax_lion_step(lion_k(LR, weight_decay=WD), recs[0], 0, g_in=raw[0])
    assert np.max(np.abs(m_unclipped["w"])) > 10 * np.max(np.abs(recs[0][4]["w"]))


def test_inject_hyperparams() -> None:
    """learning_rate (and every other numeric argument) injected as state.hyperparams:
    float64 eager reaches the bitwise tier on the updates (float64 arrays hold the same
    coefficients as Python doubles); changing state.hyperparams['learning_rate'] changes the
    next step to exactly that learning rate; jit is in the ulp tier."""
    dtype = "float64"
    recs = reference_trajectory(dtype, 4)
    opt = optax.inject_hyperparams(lion_k)(learning_rate=LR, weight_decay=WD)
    st0 = opt.init(to_jax(recs[0][0]))
    assert set(st0.hyperparams) == {"learning_rate", "b1", "b2", "weight_decay"}
    for jit in (False, True):
        up = jax.jit(opt.update) if jit else opt.update
        stats = []
        for t, rec in enumerate(recs):
            new_x, new_m, upd = optax_lion_step(opt, rec, t, jit_update=up)
            stats.append(compare_step(rec, new_x, new_m, upd))
        s = merge(stats)
        if jit:
            assert_ulp_tier(s, "inject_hyperparams jit")
        else:
            assert_bitwise_tier(s, "inject_hyperparams eager float64")
    # a new learning rate in the state is used by the next update
    x, m, g = recs[1][0], recs[1][1], recs[1][2]
    state = optax.tree.set(opt.init(to_jax(x)), mu=to_jax(m))
    state.hyperparams["learning_rate"] = jnp.asarray(0.02)
    upd, state = opt.update(to_jax(g), state, to_jax(x))
    xn = {k: np_reference_step(x[k], g[k], m[k], lr=0.02, betas=(B1, B2), wd=WD,
                               grad_k=np_sign)[0] for k in x}
    s = compare_step((x, m, g, xn, recs[1][4], 0.02, WD), to_np(optax.apply_updates(to_jax(x), upd)),
                     to_np(state.inner_state.mu))
    assert s["x_bits_sterbenz"] == 0 and s["max_ulp_x"] <= 1.0, s
    assert float(state.hyperparams["learning_rate"]) == 0.02
    # with a schedule injected, the learning rate follows it
    sched = optax.linear_schedule(0.0, 0.02, 4)
    opt2 = optax.inject_hyperparams(lion_k)(learning_rate=sched, weight_decay=WD)
    xj, st2 = to_jax(x), opt2.init(to_jax(x))
    for t in range(3):
        upd, st2 = opt2.update(to_jax(g), st2, xj)
        lr_t = float(st2.hyperparams["learning_rate"])  # the schedule's value (float32 here)
        assert abs(lr_t - 0.005 * t) < 1e-9
        # constant g: c has the sign of g at every step, so x' - x = -lr_t*(wd*x + sign(g))
        for k in x:
            want = -lr_t * (WD * x[k] + np.sign(g[k]))
            err = np.abs(np.asarray(upd[k]) - want)
            assert np.all(err <= 4 * np.finfo(np.float64).eps * (np.abs(x[k]) + lr_t)), k
    assert int(st2.inner_state.count) == 3


def _dyadic_pair(rng, dtype):
    """Two micro-batch gradients a = g + d, b = g - d with g = ±(2j+1)/16 (never 0) and
    d = k/16: MultiSteps' running mean a + (b - a)/2 is g exactly."""
    pair = ({}, {})
    for k, s in SHAPES.items():
        g = (2 * rng.integers(0, 8, size=s) + 1) * rng.choice([-1, 1], size=s) / 16.0
        d = rng.integers(-8, 9, size=s) / 16.0
        pair[0][k], pair[1][k] = np.asarray(g + d).astype(dtype), np.asarray(g - d).astype(dtype)
    return pair


def test_multisteps_accumulates_then_steps() -> None:
    """MultiSteps(lion_k, every_k_schedule=2): the first micro-step returns zero updates and
    leaves lion_k's state alone; the second steps with the mean gradient (exact for these dyadic
    gradients). Teacher-forced against the numpy reference on the means; MultiSteps compiles the
    step (lax.cond), so the ulp tier."""
    dtype = "float32"
    rng = np.random.default_rng(11)
    pairs = [_dyadic_pair(rng, dtype) for _ in range(4)]
    means = [{k: ((a[k] + b[k]) / 2).astype(dtype) for k in a} for a, b in pairs]
    recs = reference_trajectory(dtype, 4, grads=means)
    ms = optax.MultiSteps(lion_k(LR, weight_decay=WD), every_k_schedule=2)
    up = jax.jit(ms.update)
    stats = []
    for t, rec in enumerate(recs):
        x, m = to_jax(rec[0]), to_jax(rec[1])
        st = optax.tree.set(ms.init(x), count=jnp.asarray(t, jnp.int32), mu=m)
        u1, st = up(to_jax(pairs[t][0]), st, x)
        assert all(not np.any(np.asarray(v)) for v in jax.tree.leaves(u1))
        assert int(st.inner_opt_state.count) == t and int(st.mini_step) == 1
        assert all(np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(jax.tree.leaves(st.inner_opt_state.mu), jax.tree.leaves(m)))
        u2, st = up(to_jax(pairs[t][1]), st, x)
        assert int(st.inner_opt_state.count) == t + 1 and int(st.mini_step) == 0
        stats.append(compare_step(rec, to_np(optax.apply_updates(x, u2)),
                                  to_np(st.inner_opt_state.mu)))
    assert_ulp_tier(merge(stats), "MultiSteps")


def test_apply_if_finite_skips_a_nan_step() -> None:
    """apply_if_finite(lion_k): a NaN gradient gives zero updates and leaves lion_k's state bit
    for bit unchanged; the next finite step is the reference step (ulp tier: lax.cond)."""
    dtype = "float64"
    recs = reference_trajectory(dtype, 3)
    opt = optax.apply_if_finite(lion_k(LR, weight_decay=WD), max_consecutive_errors=3)
    up = jax.jit(opt.update)
    stats = []
    for t, rec in enumerate(recs):
        x, m = to_jax(rec[0]), to_jax(rec[1])
        st = optax.tree.set(opt.init(x), count=jnp.asarray(t, jnp.int32), mu=m)
        bad = dict(rec[2])
        bad["w"] = bad["w"].copy()
        bad["w"][0, 0] = np.nan
        u, st = up(to_jax(bad), st, x)
        assert all(not np.any(np.asarray(v)) for v in jax.tree.leaves(u))
        assert int(st.inner_state.count) == t and int(st.total_notfinite) == 1
        for a, b in zip(jax.tree.leaves(st.inner_state.mu), jax.tree.leaves(rec[1])):
            assert bits(np.asarray(a)).tolist() == bits(b).tolist()
        u, st = up(to_jax(rec[2]), st, x)
        assert int(st.inner_state.count) == t + 1 and bool(st.last_finite)
        stats.append(compare_step(rec, to_np(optax.apply_updates(x, u)), to_np(st.inner_state.mu)))
    assert_ulp_tier(merge(stats), "apply_if_finite")


# ---------------------------------------------------------------------------------------------
# mask, schedules, mu_dtype, other κ.


@pytest.mark.parametrize("form", ["tree", "callable"])
def test_mask_selects_the_decayed_leaves(form) -> None:
    """Weight decay on w and s only; b is stepped without decay. Eager: bitwise tier against
    the reference with per-leaf decay."""
    decayed = {"w": True, "b": False, "s": True}
    mask = decayed if form == "tree" else (lambda p: jax.tree.map(lambda a: a.ndim != 1, p))
    recs = reference_trajectory("float32", 4, decayed=decayed, wd=0.5, lr=0.01)
    s = teacher_forced(lion_k(0.01, weight_decay=0.5, mask=mask), recs, jit=False,
                       decayed=decayed)
    assert_bitwise_tier(s, f"mask {form}")
    # control: without the mask, b would have been decayed and the comparison fails
    s2 = teacher_forced(lion_k(0.01, weight_decay=0.5), recs, jit=False, decayed=decayed)
    assert s2["upd_bits"] > 0


def test_prefix_mask_and_coupled_kappa() -> None:
    """A prefix mask ({'enc': True, 'dec': False}) on a nested tree: decayed leaves equal
    lionk.step(weight_decay=wd) and the others lionk.step(weight_decay=0), bit for bit (eager).
    sign: against lionk.step on numpy arrays; l2 with scope='global' (∇K couples all leaves, so
    both groups must still see the global norm): against lionk.step on the same JAX arrays."""
    rng = np.random.default_rng(5)
    tree = lambda: {part: {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)}  # noqa: E731
                    for part in ("enc", "dec")}
    params, grads, mu = tree(), tree(), tree()
    mask = {"enc": True, "dec": False}
    for kap, ref_arrays in (("sign", lambda t: t), (lionk.kappa.get("l2", scope="global"), to_jax)):
        opt = lion_k(0.05, weight_decay=0.5, kappa=kap, mask=mask)
        state = LionKState(count=jnp.asarray(3, jnp.int32), mu=to_jax(mu))
        upd, new_state = opt.update(to_jax(grads), state, to_jax(params))
        ref = {wd: lionk.step(ref_arrays(params), ref_arrays(grads),
                              lionk.State(3, ref_arrays(mu), 0), lr=0.05, weight_decay=wd,
                              kappa=kap) for wd in (0.5, 0.0)}
        for part, wd in (("enc", 0.5), ("dec", 0.0)):
            for leaf in ("w", "b"):
                want = np.asarray(ref[wd][0][part][leaf]) - params[part][leaf]
                assert bits(np.asarray(upd[part][leaf])).tolist() == bits(want).tolist(), (kap, part, leaf)
                assert np.array_equal(np.asarray(new_state.mu[part][leaf]),
                                      np.asarray(ref[wd][1].momentum[part][leaf]))
        # control: the two groups do differ (the mask matters)
        assert not np.array_equal(np.asarray(ref[0.5][0]["dec"]["w"]), np.asarray(ref[0.0][0]["dec"]["w"]))


def test_schedules_versus_optax_lion() -> None:
    """learning_rate and weight_decay as optax schedules, evaluated at the step count (0 first),
    as optax.lion does: teacher-forced against optax.lion (ulp tier) and against the numpy
    reference fed the schedules' own values (eager: bitwise tier, the coefficients being
    computed from those values in float64; jit: ulp tier)."""
    lin = (optax.linear_schedule(1e-2, 1e-3, 5), optax.exponential_decay(0.2, 1, 0.5))
    # under jit XLA may evaluate a linear schedule with an FMA (one float32 ulp of lr away from
    # its eager value); piecewise-constant values are products by 0.5, exact either way
    pwc = (optax.piecewise_constant_schedule(1e-2, {2: 0.5, 4: 0.5}),
           optax.piecewise_constant_schedule(0.2, {1: 0.5, 3: 0.5}))
    for dtype, jit, (lr_s, wd_s) in (("float32", False, lin), ("float64", False, lin),
                                     ("float64", True, pwc), ("float32", True, lin)):
        # the schedules' own values at the int32 step count (float32 numbers, even under x64)
        lr_at = lambda t, f=lr_s: float(f(jnp.asarray(t, jnp.int32)))  # noqa: E731
        wd_at = lambda t, f=wd_s: float(f(jnp.asarray(t, jnp.int32)))  # noqa: E731
        if lr_s is lin[0]:
            assert lr_at(0) != 1e-2  # float32-rounded: the reference must use these values
        recs = reference_trajectory(dtype, 5, lr_at=lr_at, wd_at=wd_at)
        s = versus_optax_lion(lion_k(lr_s, weight_decay=wd_s),
                              optax.lion(lr_s, weight_decay=wd_s), recs, jit=jit)
        assert_ulp_tier(s, f"schedules {dtype} jit={jit}")
        if lr_s is lin[0] and jit:
            continue
        s = teacher_forced(lion_k(lr_s, weight_decay=wd_s), recs, jit=jit)
        if jit:
            assert_ulp_tier(s, f"schedules vs numpy {dtype} jit")
        else:
            assert_bitwise_tier(s, f"schedules vs numpy {dtype} eager")


def test_warmup_from_zero_learning_rate() -> None:
    """A warm-up schedule starting at 0 is accepted (eager and jit): the first update is exactly
    zero (x' = (1 - 0*wd)*x - 0*u = x) while the momentum moves."""
    sched = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 2, 10)
    opt = lion_k(sched, weight_decay=0.1)
    p = {"w": jnp.linspace(-1.0, 1.0, 5)}
    g = {"w": jnp.ones(5)}
    for update in (opt.update, jax.jit(opt.update)):
        upd, st = update(g, opt.init(p), p)
        assert not np.any(np.asarray(upd["w"]))
        assert np.allclose(np.asarray(st.mu["w"]), 1.0 - 0.99, rtol=0, atol=1e-15)
        upd, st = update(g, st, p)  # lr = 5e-3 (rounded to float32 by the schedule) at count 1
        lr1 = float(sched(jnp.asarray(1, jnp.int32)))
        assert abs(lr1 - 5e-3) < 1e-9
        want = (1.0 - lr1 * 0.1) * np.asarray(p["w"]) - lr1
        np.testing.assert_allclose(np.asarray(optax.apply_updates(p, upd)["w"]), want,
                                   rtol=0, atol=4 * np.spacing(1.0))


def test_bfloat16_momentum_solves_the_box_problem() -> None:
    """Semantic tier for mu_dtype=bfloat16: f(x) = ||x - a||², λ = 1, so Lion solves
    min f s.t. |x_i| <= 1: x -> clip(a, -1, 1) (theory.md §7), to within the final lr."""
    a = jnp.asarray([2.0, -3.0, 0.25, -0.5], jnp.float32)
    opt = lion_k(optax.linear_schedule(0.02, 1e-4, 1500), weight_decay=1.0, mu_dtype=jnp.bfloat16)

    @jax.jit
    def run(x, st):
        def body(carry, _):
            x, st = carry
            u, st = opt.update(2.0 * (x - a), st, x)
            return (optax.apply_updates(x, u), st), None

        return jax.lax.scan(body, (x, st), None, length=1500)[0]

    x0 = jnp.asarray([5.0, 5.0, -5.0, 0.0], jnp.float32)
    x, st = run(x0, opt.init(x0))
    assert st.mu.dtype == jnp.bfloat16 and x.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(x), [1.0, -1.0, 0.25, -0.5], atol=2e-3)
    assert float(jnp.max(jnp.abs(x))) <= 1.0 + 1e-6


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_other_kappa(jit) -> None:
    """huber (an exact κ): the same tiers as sign, against the numpy reference."""
    from ._util import np_huber_grad

    recs = reference_trajectory("float32", 4, grad_k=np_huber_grad(0.3))
    s = teacher_forced(lion_k(LR, weight_decay=WD, kappa=lionk.kappa.get("huber", delta=0.3)),
                       recs, jit=jit)
    if jit:
        assert_ulp_tier(s, "huber jit")
    else:
        assert_bitwise_tier(s, "huber eager")


# ---------------------------------------------------------------------------------------------
# The example.


def test_jax_train_example() -> None:
    import runpy

    # (no wall-time bound: these machines are shared; the example's speed is a benchmark's job)
    res = runpy.run_path(str(ROOT / "examples" / "jax_train.py"), run_name="example_jax_train")["main"]()
    assert res["final_loss"] < 0.25 * res["initial_loss"], res
    assert res["final_accuracy"] >= 0.95, res
