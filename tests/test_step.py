"""``lionk.init`` and the pure ``lionk.step`` against a hand-written numpy reference.

The reference (tests/_util.py) writes the published update in its exact expression order with
Python-float coefficients. For the exact κ every backend must reproduce it bit for bit over
multi-step trajectories whose gradients come from the polynomial g = x·x·x − x + a, which uses
only correctly rounded operations and can therefore be evaluated identically on every backend.
"""

from __future__ import annotations

import collections
import warnings

import numpy as np
import pytest

import lionk

from ._util import (
    EXACT_KAPPAS,
    assert_bitwise_equal,
    np_reference_step,
    np_sign,
)
from .conftest import get_backend

LR, BETAS, WD = 0.01, (0.9, 0.99), 0.3



def _poly_grad(x, a):
    """∇f for f = Σ x⁴/4 − x²/2 + a·x: only correctly rounded products and sums."""
    return x * x * x - x + a


# ---------------------------------------------------------------------------------------------
# init


def test_init_zero_state(backend, float_dtype) -> None:
    """init gives count 0, skipped 0 and zero momentum of the params' structure, shape, dtype
    and device."""
    params = {"w": backend.asarray(np.ones((2, 3), float_dtype)), "b": [backend.asarray(np.ones(3, float_dtype))]}
    st = lionk.init(params)
    assert isinstance(st, lionk.State)
    assert st.count == 0 and st.skipped == 0
    assert set(st.momentum) == {"w", "b"} and isinstance(st.momentum["b"], list)
    for m, x in ((st.momentum["w"], params["w"]), (st.momentum["b"][0], params["b"][0])):
        assert tuple(m.shape) == tuple(x.shape)
        assert m.dtype == x.dtype
        assert_bitwise_equal(backend.to_numpy(m), np.zeros(tuple(x.shape), float_dtype), "m")
    if backend.name == "array_api_strict":
        import array_api_strict as xs

        d1 = xs.Device("device1")
        st1 = lionk.init(xs.ones((2,), device=d1))
        assert st1.momentum.device == d1


def test_step_by_hand() -> None:
    """One step on numbers worked out by hand (all exact in binary):
    m=0.5, g=-1, b1=0.5 → c = 0.25 − 0.5 = −0.25, sign −1; x' = (1 − 0.25·0.5)·2 + 0.25 = 2.
    m' = 0.75·0.5 + 0.25·(−1) = 0.125."""
    x = np.array([2.0, 0.0])
    g = np.array([-1.0, 4.0])
    st = lionk.State(0, np.array([0.5, -2.0]), 0)
    x2, st2 = lionk.step(x, g, st, lr=0.25, betas=(0.5, 0.75), weight_decay=0.5)
    # second element: c = −1 + 2 = 1 → x' = 0.875·0 − 0.25 = −0.25; m' = −1.5 + 1 = −0.5
    np.testing.assert_array_equal(x2, [2.0, -0.25])
    np.testing.assert_array_equal(st2.momentum, [0.125, -0.5])
    assert st2.count == 1 and st2.skipped == 0


# ---------------------------------------------------------------------------------------------
# Bitwise trajectories.


@pytest.mark.parametrize(("kname", "kparams", "grad_k"), EXACT_KAPPAS, ids=[k[0] for k in EXACT_KAPPAS])
def test_bitwise_trajectory_exact_kappa(backend, float_dtype, kname, kparams, grad_k) -> None:
    """30 steps on a two-leaf tree: params and momentum equal the hand-written numpy reference
    bit for bit on every backend, float32 and float64 (exact κ only)."""
    rng = np.random.default_rng(10)
    shapes = {"w": (4, 5), "b": (5,)}
    x = {k: rng.standard_normal(s).astype(float_dtype) for k, s in shapes.items()}
    a = {k: (rng.standard_normal(s) * 0.5).astype(float_dtype) for k, s in shapes.items()}
    m = {k: np.zeros(s, float_dtype) for k, s in shapes.items()}
    xb = {k: backend.asarray(v) for k, v in x.items()}
    ab = {k: backend.asarray(v) for k, v in a.items()}
    st = lionk.init(xb)
    kap = lionk.kappa.get(kname, **kparams)
    for t in range(30):
        for k in shapes:
            x[k], m[k] = np_reference_step(x[k], _poly_grad(x[k], a[k]), m[k], lr=LR, betas=BETAS,
                                           wd=WD, grad_k=grad_k)
        gb = {k: _poly_grad(xb[k], ab[k]) for k in shapes}
        xb, st = lionk.step(xb, gb, st, lr=LR, betas=BETAS, weight_decay=WD, kappa=kap)
        for k in shapes:
            assert xb[k].dtype == backend.dtype(float_dtype)
            assert_bitwise_equal(backend.to_numpy(xb[k]), x[k], f"step {t} x[{k}]")
            assert_bitwise_equal(backend.to_numpy(st.momentum[k]), m[k], f"step {t} m[{k}]")
    assert st.count == 30 and st.skipped == 0


def test_kappa_by_name_equals_kappa_object() -> None:
    """kappa="huber" with default parameters and a Kappa object give the same step."""
    rng = np.random.default_rng(11)
    x, g = rng.standard_normal(8), rng.standard_normal(8)
    st = lionk.State(0, rng.standard_normal(8), 0)
    a, _ = lionk.step(x, g, st, lr=0.1, kappa="huber")
    b, _ = lionk.step(x, g, st, lr=0.1, kappa=lionk.kappa.get("huber", delta="auto"))
    assert_bitwise_equal(a, b)
    # the default, written out: δ = 0.1·RMS(c) of c = b1·m + (1 − b1)·g (float64 NumPy)
    c = 0.9 * st.momentum + (1.0 - 0.9) * g
    delta = 0.1 * np.sqrt(np.mean(c * c))
    np.testing.assert_allclose(a, x - 0.1 * np.clip(c / delta, -1.0, 1.0), rtol=1e-14)


def test_default_hyperparameters() -> None:
    """Defaults are lr=1e-4, betas=(0.9, 0.99), weight_decay=0, kappa="sign"."""
    rng = np.random.default_rng(12)
    x, g = rng.standard_normal(8), rng.standard_normal(8)
    m = rng.standard_normal(8)
    x2, st2 = lionk.step(x, g, lionk.State(0, m, 0))
    xr, mr = np_reference_step(x, g, m, lr=1e-4, betas=(0.9, 0.99), wd=0.0, grad_k=np_sign)
    assert_bitwise_equal(x2, xr)
    assert_bitwise_equal(st2.momentum, mr)


# ---------------------------------------------------------------------------------------------
# Purity and structure.


def test_step_is_pure(backend, float_dtype) -> None:
    """step never writes into params, grads or momentum: copies taken before compare bitwise."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 4)).astype(float_dtype)
    g = rng.standard_normal((3, 4)).astype(float_dtype)
    m = rng.standard_normal((3, 4)).astype(float_dtype)
    xb, gb, mb = backend.asarray(x), backend.asarray(g), backend.asarray(m)
    st = lionk.State(5, {"p": mb}, 0)
    x2, st2 = lionk.step({"p": xb}, {"p": gb}, st, lr=0.1, weight_decay=0.5)
    for arr, ref, nm in ((xb, x, "params"), (gb, g, "grads"), (mb, m, "momentum")):
        assert_bitwise_equal(backend.to_numpy(arr), ref, nm)
    assert st.count == 5  # the input state is untouched too
    assert x2["p"] is not xb and st2.momentum["p"] is not mb
    # and the new values really changed
    assert not np.array_equal(backend.to_numpy(x2["p"]), x)


Pair = collections.namedtuple("Pair", ["first", "second"])


def test_tree_structures_preserved(backend) -> None:
    """Nested dict / list / tuple / namedtuple (and None subtrees) come back with the same
    containers, keys and order, in params and momentum; every leaf is updated like a single
    array would be."""
    rng = np.random.default_rng(14)

    def mk(shape):
        return rng.standard_normal(shape).astype(np.float64)

    leaves_np = [mk((2,)), mk((3, 2)), mk(()), mk((4,)), mk((1, 1))]
    def build(ls):
        return {"z": [ls[0], (ls[1], None)], "a": Pair(ls[2], {"k": ls[3]}), "m": (ls[4],)}

    params = build([backend.asarray(v) for v in leaves_np])
    grads_np = [mk(v.shape) for v in leaves_np]
    grads = build([backend.asarray(v) for v in grads_np])
    x2, st2 = lionk.step(params, grads, lionk.init(params), lr=0.05, weight_decay=0.1)
    for tree in (x2, st2.momentum):
        assert type(tree) is dict and set(tree) == {"z", "a", "m"}
        assert type(tree["z"]) is list and type(tree["z"][1]) is tuple and tree["z"][1][1] is None
        assert type(tree["a"]) is Pair and type(tree["a"].second) is dict
        assert type(tree["m"]) is tuple and len(tree["m"]) == 1
    out = [x2["z"][0], x2["z"][1][0], x2["a"].first, x2["a"].second["k"], x2["m"][0]]
    for got, x, g in zip(out, leaves_np, grads_np):
        xr, _ = np_reference_step(x, g, np.zeros_like(x), lr=0.05, betas=(0.9, 0.99), wd=0.1, grad_k=np_sign)
        assert_bitwise_equal(backend.to_numpy(got), xr)


def test_zero_dim_numpy_params_stay_arrays() -> None:
    """A 0-d numpy param comes back as a 0-d ndarray (numpy arithmetic on 0-d arrays returns
    scalars; the step must not leak them), in params and momentum."""
    x = np.asarray(1.5)
    x2, st = lionk.step({"s": x}, {"s": np.asarray(-2.0)}, lionk.init({"s": x}), lr=0.25)
    assert isinstance(x2["s"], np.ndarray) and x2["s"].shape == () and float(x2["s"]) == 1.75
    assert isinstance(st.momentum["s"], np.ndarray) and st.momentum["s"].shape == ()


def test_count_increments(backend) -> None:
    """count goes 0, 1, 2, ... and skipped stays 0 without non-finite gradients."""
    x = backend.asarray(np.ones(3))
    st = lionk.init(x)
    for t in range(1, 6):
        x, st = lionk.step(x, backend.asarray(np.full(3, 0.5)), st, lr=0.01)
        assert int(st.count) == t and int(st.skipped) == 0


def test_zero_dim_hyperparameters_equal_python_floats(backend, float_dtype) -> None:
    """lr, betas and weight_decay given as concrete 0-d float64 arrays of the backend produce
    exactly the Python-float result (they are read once and used as Python floats; for JAX,
    eager arrays are concrete: only tracers under jit are not)."""
    if not backend.has("float64"):
        pytest.skip("no float64")
    rng = np.random.default_rng(15)
    x = backend.asarray(rng.standard_normal(16).astype(float_dtype))
    g = backend.asarray(rng.standard_normal(16).astype(float_dtype))
    m = backend.asarray(rng.standard_normal(16).astype(float_dtype))
    st = lionk.State(0, m, 0)
    a, sa = lionk.step(x, g, st, lr=0.0123, betas=(0.87, 0.993), weight_decay=0.37, kappa="huber")

    def s(v):
        return backend.asarray(np.asarray(v, np.float64))

    b, sb = lionk.step(x, g, st, lr=s(0.0123), betas=(s(0.87), s(0.993)), weight_decay=s(0.37), kappa="huber")
    assert_bitwise_equal(backend.to_numpy(b), backend.to_numpy(a), "params")
    assert_bitwise_equal(backend.to_numpy(sb.momentum), backend.to_numpy(sa.momentum), "momentum")


def test_float32_zero_dim_lr_equals_its_python_float(backend) -> None:
    """A concrete float32 0-d lr is read as the Python float it holds: with float64 params the
    step equals the step with lr=float(lr32) bitwise, i.e. 1 − lr·wd is computed in double
    precision, not in float32."""
    rng = np.random.default_rng(15)
    x = backend.asarray(rng.standard_normal(16))
    g = backend.asarray(rng.standard_normal(16))
    st = lionk.State(0, backend.asarray(rng.standard_normal(16)), 0)
    lr32 = backend.asarray(np.asarray(0.0123, np.float32))
    c, _ = lionk.step(x, g, st, lr=lr32, weight_decay=0.37, kappa="huber")
    d, _ = lionk.step(x, g, st, lr=float(np.float32(0.0123)), weight_decay=0.37, kappa="huber")
    assert_bitwise_equal(backend.to_numpy(c), backend.to_numpy(d), "float32 lr")


# ---------------------------------------------------------------------------------------------
# JAX jit.

jax_only = pytest.mark.skipif(not __import__("importlib").util.find_spec("jax"), reason="jax not installed")


def _jit_tolerance(eps, x, lr, u_scale=1.0):
    """Largest legitimate |jit − eager| of x' = (1−lr·wd)x − lr·u: eager rounds the product and
    the difference (≤ eps/2·|terms| each), jit may fuse them into one FMA (one rounding) and,
    with a traced lr, rounds 1 − lr·wd in the array dtype. 2 eps·(|x| + lr·|u|) covers it."""
    return 2 * eps * (np.abs(x) + lr * u_scale)


@jax_only
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_jit_traced_lr_close_to_eager(dtype) -> None:
    """Under jax.jit with lr a traced 0-d argument and kappa static, step runs and each of 5
    steps from a common state agrees with the eager step to the ulp tier (FMA contraction
    and the traced coefficient are the only differences)."""
    import jax
    import jax.numpy as jnp

    eps = float(np.finfo(dtype).eps)
    rng = np.random.default_rng(16)

    @jax.jit
    def jstep(x, g, st, lr):
        return lionk.step(x, g, st, lr=lr, betas=BETAS, weight_decay=WD, kappa="sign")

    x = jnp.asarray(rng.standard_normal(64).astype(dtype))
    st = lionk.init(x)
    a = jnp.asarray(rng.standard_normal(64).astype(dtype))
    for _ in range(5):
        g = _poly_grad(x, a)
        xj, sj = jstep(x, g, st, jnp.asarray(LR))
        xe, se = lionk.step(x, g, st, lr=LR, betas=BETAS, weight_decay=WD, kappa="sign")
        assert xj.dtype == x.dtype and sj.momentum.dtype == x.dtype
        c = BETAS[0] * np.asarray(st.momentum, np.float64) + (1 - BETAS[0]) * np.asarray(g, np.float64)
        clear = np.abs(c) > 64 * eps * (np.abs(np.asarray(g)) + 1)  # no sign tie
        assert clear.mean() > 0.9
        diff = np.abs(np.asarray(xj, np.float64) - np.asarray(xe, np.float64))
        assert np.all(diff[clear] <= _jit_tolerance(eps, np.asarray(xe, np.float64), LR)[clear])
        mdiff = np.abs(np.asarray(sj.momentum, np.float64) - np.asarray(se.momentum, np.float64))
        mscale = BETAS[1] * np.abs(np.asarray(st.momentum, np.float64)) + (1 - BETAS[1]) * np.abs(np.asarray(g, np.float64))
        assert np.all(mdiff <= 2 * eps * mscale)
        assert int(sj.count) == int(se.count)
        x, st = xe, se


@jax_only
def test_jit_python_float_lr() -> None:
    """Under jax.jit with Python-float hyper-parameters (closed over) the step runs and stays
    within the ulp tier of eager (XLA may contract a·b + c into an FMA)."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(17)
    x = jnp.asarray(rng.standard_normal(32))
    g = jnp.asarray(rng.standard_normal(32))
    st = lionk.State(0, jnp.asarray(rng.standard_normal(32)), 0)
    f = jax.jit(lambda x, g, st: lionk.step(x, g, st, lr=LR, betas=BETAS, weight_decay=WD, kappa="huber"))
    xj, sj = f(x, g, st)
    xe, se = lionk.step(x, g, st, lr=LR, betas=BETAS, weight_decay=WD, kappa="huber")
    eps = float(np.finfo(np.float64).eps)
    assert np.all(np.abs(np.asarray(xj) - np.asarray(xe)) <= _jit_tolerance(eps, np.asarray(xe), LR))
    assert int(sj.count) == 1


# ---------------------------------------------------------------------------------------------
# nan_policy.


def _nan_tree(backend):
    x = {"a": backend.asarray(np.array([1.0, -2.0, 3.0])), "b": backend.asarray(np.array([0.5, 0.25]))}
    g = {"a": backend.asarray(np.array([1.0, -1.0, 2.0])), "b": backend.asarray(np.array([np.nan, 1.0]))}
    m = {"a": backend.asarray(np.array([0.1, 0.2, 0.3])), "b": backend.asarray(np.array([0.4, 0.5]))}
    return x, g, lionk.State(7, m, 2)


def test_nan_policy_propagate(backend) -> None:
    """propagate: the NaN gradient element yields NaN in that element of x' and m'; other
    elements and leaves are updated normally; count increments."""
    x, g, st = _nan_tree(backend)
    x2, st2 = lionk.step(x, g, st, lr=0.125)
    xb = backend.to_numpy(x2["b"])
    mb = backend.to_numpy(st2.momentum["b"])
    assert np.isnan(xb[0]) and np.isnan(mb[0])
    assert not np.isnan(xb[1]) and not np.isnan(backend.to_numpy(x2["a"])).any()
    xr, mr = np_reference_step(np.array([1.0, -2.0, 3.0]), np.array([1.0, -1.0, 2.0]),
                               np.array([0.1, 0.2, 0.3]), lr=0.125, betas=(0.9, 0.99), wd=0.0, grad_k=np_sign)
    assert_bitwise_equal(backend.to_numpy(x2["a"]), xr)
    assert st2.count == 8 and st2.skipped == 2


def test_nan_policy_skip(backend) -> None:
    """skip: params and momentum come back bitwise unchanged, count unchanged, skipped + 1."""
    x, g, st = _nan_tree(backend)
    x2, st2 = lionk.step(x, g, st, lr=0.125, nan_policy="skip")
    for k in ("a", "b"):
        assert_bitwise_equal(backend.to_numpy(x2[k]), backend.to_numpy(x[k]), f"x[{k}]")
        assert_bitwise_equal(backend.to_numpy(st2.momentum[k]), backend.to_numpy(st.momentum[k]), f"m[{k}]")
    assert int(st2.count) == 7 and int(st2.skipped) == 3
    # with finite gradients skip behaves like propagate
    g_ok = {"a": g["a"], "b": backend.asarray(np.array([0.5, 1.0]))}
    x3, st3 = lionk.step(x, g_ok, st, lr=0.125, nan_policy="skip")
    x4, st4 = lionk.step(x, g_ok, st, lr=0.125)
    assert_bitwise_equal(backend.to_numpy(x3["b"]), backend.to_numpy(x4["b"]))
    assert int(st3.count) == 8 and int(st3.skipped) == 2


def test_nan_policy_raise(backend) -> None:
    """raise: ValueError naming the leaf with the non-finite gradient (inf counts too).
    For eager JAX arrays the values are concrete, so the same must hold there."""
    x, g, st = _nan_tree(backend)
    with pytest.raises(ValueError, match=r"grads\['b'\]"):
        lionk.step(x, g, st, nan_policy="raise")
    g2 = {"a": backend.asarray(np.array([1.0, np.inf, 2.0])), "b": backend.asarray(np.array([0.5, 1.0]))}
    with pytest.raises(ValueError, match=r"grads\['a'\]"):
        lionk.step(x, g2, st, nan_policy="raise")


@jax_only
def test_nan_policy_skip_under_jit() -> None:
    """skip under jax.jit (no Python branch possible): a NaN step leaves params and momentum
    unchanged, count unchanged and skipped + 1; a finite step counts normally."""
    import jax

    be = get_backend("jax")
    x, g, st = _nan_tree(be)
    f = jax.jit(lambda x, g, st: lionk.step(x, g, st, lr=0.125, nan_policy="skip"))
    x2, st2 = f(x, g, st)
    for k in ("a", "b"):
        assert_bitwise_equal(be.to_numpy(x2[k]), be.to_numpy(x[k]))
        assert_bitwise_equal(be.to_numpy(st2.momentum[k]), be.to_numpy(st.momentum[k]))
    assert int(st2.count) == 7 and int(st2.skipped) == 3
    g_ok = {"a": g["a"], "b": be.asarray(np.array([0.5, 1.0]))}
    x3, st3 = f(x, g_ok, st)
    assert int(st3.count) == 8 and int(st3.skipped) == 2
    xr, _ = np_reference_step(np.array([0.5, 0.25]), np.array([0.5, 1.0]), np.array([0.4, 0.5]),
                              lr=0.125, betas=(0.9, 0.99), wd=0.0, grad_k=np_sign)
    eps = float(np.finfo(np.float64).eps)
    assert np.all(np.abs(be.to_numpy(x3["b"]) - xr) <= _jit_tolerance(eps, xr, 0.125))  # ulp tier


@jax_only
def test_nan_policy_raise_under_jit_is_refused() -> None:
    """raise cannot inspect traced values: under jit it raises a ValueError telling to use
    skip or propagate."""
    import jax

    be = get_backend("jax")
    x, g, st = _nan_tree(be)
    with pytest.raises(ValueError, match="skip"):
        jax.jit(lambda x, g, st: lionk.step(x, g, st, nan_policy="raise"))(x, g, st)


# ---------------------------------------------------------------------------------------------
# Narrow dtypes.


@pytest.mark.parametrize("bname", ["torch", "jax"])
def test_state_dtype_bfloat16(bname) -> None:
    """state_dtype="bfloat16": momentum is bfloat16, params keep float32, and the run stays close
    to a float32-state numpy reference over 10 steps.

    Tolerance: per step the bf16 momentum picks up at most three bf16 roundings (b2 rounded to
    bf16, the bf16 product b2·m, the cast of m' back to bf16), each ≤ u = 2^-8 relative, so
    |Δm| ≤ 3·u·n·max_t|m_t| after n steps wherever the params agreed so far (b2 < 1 only damps
    older errors). Params differ only where sign(c) flipped, which is rare."""
    be = get_backend(bname)
    rng = np.random.default_rng(18)
    x0 = rng.standard_normal(64).astype(np.float32)
    a = (rng.standard_normal(64) * 0.5).astype(np.float32)
    xb = be.asarray(x0)
    st = lionk.init(xb, state_dtype="bfloat16")
    assert st.momentum.dtype == be.dtype("bfloat16")
    xr, mr = x0.copy(), np.zeros(64, np.float32)
    same = np.ones(64, bool)
    m_max = np.zeros(64)
    n = 10
    for _ in range(n):
        xb, st = lionk.step(xb, _poly_grad(xb, be.asarray(a)), st, lr=LR, betas=BETAS, weight_decay=WD)
        xr, mr = np_reference_step(xr, _poly_grad(xr, a), mr, lr=LR, betas=BETAS, wd=WD, grad_k=np_sign)
        assert xb.dtype == be.dtype("float32") and st.momentum.dtype == be.dtype("bfloat16")
        same &= be.to_numpy(xb) == xr
        m_max = np.maximum(m_max, np.abs(mr))
    assert same.mean() > 0.9
    m_got = be.to_numpy(st.momentum).astype(np.float64)
    assert np.all(np.abs(m_got - mr)[same] <= (3 * 2.0**-8 * n * m_max)[same])
    assert np.all(np.abs(be.to_numpy(xb).astype(np.float64) - xr) <= 2 * LR * n)


@pytest.mark.parametrize("bname", ["numpy", "torch", "jax"])
def test_float16_params(bname) -> None:
    """float16 params, grads and momentum: dtype kept, and each of 5 steps within the rounding
    of float16 of a float64 step from the same float16 state (≤ 3 roundings of ≤ eps16/2 each,
    relative to |x| + lr, so 2·eps16·(|x| + lr))."""
    be = get_backend(bname)
    rng = np.random.default_rng(19)
    x = be.asarray(rng.standard_normal(32).astype(np.float16))
    g = be.asarray(rng.standard_normal(32).astype(np.float16))
    st = lionk.init(x)
    eps16 = float(np.finfo(np.float16).eps)
    for _ in range(5):
        xn = be.to_numpy(x).astype(np.float64)
        mn = be.to_numpy(st.momentum).astype(np.float64)
        gn = be.to_numpy(g).astype(np.float64)
        x2, st2 = lionk.step(x, g, st, lr=0.01, weight_decay=0.5)
        assert x2.dtype == be.dtype("float16") and st2.momentum.dtype == be.dtype("float16")
        c = 0.9 * mn + 0.1 * gn
        xr = (1 - 0.005) * xn - 0.01 * np.sign(c)
        clear = np.abs(c) > 4 * eps16 * (np.abs(mn) + np.abs(gn))
        got = be.to_numpy(x2).astype(np.float64)
        assert np.all(np.abs(got - xr)[clear] <= 2 * eps16 * (np.abs(xr) + 0.01)[clear])
        x, st = x2, st2


def test_numpy_state_dtype_bfloat16() -> None:
    """state_dtype="bfloat16" for numpy params (resolve_dtype falls back to ml_dtypes for it):
    the momentum is bfloat16 and a step runs."""
    import ml_dtypes

    x = np.ones(4, np.float32)
    st = lionk.init(x, state_dtype="bfloat16")
    assert st.momentum.dtype == ml_dtypes.bfloat16
    x2, st2 = lionk.step(x, np.full(4, 0.5, np.float32), st, lr=0.25)
    np.testing.assert_array_equal(x2, np.full(4, 0.75, np.float32))
    assert st2.momentum.dtype == ml_dtypes.bfloat16


def test_b1_greater_than_b2_warns_but_runs() -> None:
    """b1 > b2 runs (same result as the reference) with a LionKWarning."""
    x, g = np.array([1.0, -1.0]), np.array([0.5, -0.5])
    with pytest.warns(lionk.LionKWarning, match="b1"):
        x2, _ = lionk.step(x, g, lionk.init(x), lr=0.1, betas=(0.99, 0.9))
    xr, _ = np_reference_step(x, g, np.zeros(2), lr=0.1, betas=(0.99, 0.9), wd=0.0, grad_k=np_sign)
    assert_bitwise_equal(x2, xr)


def _lionk_warnings(fn):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        fn()
    return [r for r in rec if issubclass(r.category, lionk.LionKWarning)]


def test_b1_greater_than_b2_warning_points_at_caller_of_step() -> None:
    """The warning's location is the line that called lionk.step (the usual stacklevel
    convention), so that filters by module and the 'once per location' default work."""
    x = np.array([1.0])
    line = None

    def call():
        nonlocal line
        import inspect

        line = inspect.currentframe().f_lineno + 1
        lionk.step(x, x.copy(), lionk.init(x), betas=(0.99, 0.9))

    w = _lionk_warnings(call)
    assert len(w) == 1
    assert (w[0].filename, w[0].lineno) == (__file__, line)


def test_b1_greater_than_b2_warning_points_at_caller_of_lionk() -> None:
    """Same for the LionK constructor and LionK.step: the warning names the user's line."""
    x = np.array([1.0])
    lines = {}

    def build():
        import inspect

        lines["init"] = inspect.currentframe().f_lineno + 1
        lines["opt"] = lionk.LionK(x, lr=0.1, betas=(0.99, 0.9))

    def step():
        import inspect

        lines["step"] = inspect.currentframe().f_lineno + 1
        lines["opt"].step(x.copy())

    w_init = _lionk_warnings(build)
    w_step = _lionk_warnings(step)
    assert [(w.filename, w.lineno) for w in w_init] == [(__file__, lines["init"])]
    assert [(w.filename, w.lineno) for w in w_step] == [(__file__, lines["step"])]
