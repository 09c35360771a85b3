"""``lionk.LionK``: the in-place optimizer agrees with the pure ``lionk.step`` bit for bit,
updates the very arrays it was given, and checkpoints exactly."""

from __future__ import annotations

import numpy as np
import pytest

import lionk

from ._util import assert_bitwise_equal
from .conftest import get_backend

INPLACE = ["numpy", "torch", "array_api_strict"]
SHAPES = {"w": (4, 3), "b": (3,), "deep": {"u": (2,)}}


def _leaves(tree, prefix=""):
    for k, v in sorted(tree.items()):
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _make(be, rng, dtype="float32"):
    def build(shapes):
        return {k: build(v) if isinstance(v, dict) else be.asarray(rng.standard_normal(v).astype(dtype))
                for k, v in shapes.items()}
    return build(SHAPES)


def _grads(be, params, rng):
    """Gradients of Σ x⁴/4 − x²/2 + a·x: x·x·x − x + a (correctly rounded on every backend);
    ``a`` is drawn leaf by leaf in sorted-key order, whatever the dict's insertion order."""
    def build(p):
        return {k: build(v) if isinstance(v, dict) else v * v * v - v + be.asarray(
            rng.standard_normal(tuple(v.shape)).astype(np.float32)) for k, v in sorted(p.items())}
    return build(params)


def _copy_tree(be, tree):
    """Independent copies of every leaf (through numpy, so no memory is shared)."""
    return {k: _copy_tree(be, v) if isinstance(v, dict) else be.asarray(be.to_numpy(v)) for k, v in tree.items()}


@pytest.mark.parametrize("bname", INPLACE)
@pytest.mark.parametrize(("kappa", "wd"), [("sign", 0.3), ("huber", 0.1), (lionk.kappa.get("l2", scope="global"), 0.2)],
                         ids=["sign", "huber", "l2-global"])
def test_inplace_equals_pure_step(bname, kappa, wd) -> None:
    """20 steps of LionK.step and of lionk.step from the same start with the same gradients:
    params and momentum are bitwise equal after every step (one shared implementation), and
    count advances alike."""
    be = get_backend(bname)
    rng = np.random.default_rng(30)
    params = _make(be, rng)
    pure = _copy_tree(be, params)
    opt = lionk.LionK(params, lr=0.01, betas=(0.9, 0.99), weight_decay=wd, kappa=kappa)
    st = lionk.init(pure)
    for t in range(20):
        g_rng = np.random.default_rng(100 + t)
        g1 = _grads(be, params, g_rng)
        g_rng = np.random.default_rng(100 + t)
        g2 = _grads(be, pure, g_rng)
        opt.step(g1)
        pure, st = lionk.step(pure, g2, st, lr=0.01, betas=(0.9, 0.99), weight_decay=wd, kappa=kappa)
        for (name, a), (_, b) in zip(_leaves(params), _leaves(pure)):
            assert_bitwise_equal(be.to_numpy(a), be.to_numpy(b), f"step {t} params {name}")
        for (name, a), (_, b) in zip(_leaves(opt.state.momentum), _leaves(st.momentum)):
            assert_bitwise_equal(be.to_numpy(a), be.to_numpy(b), f"step {t} momentum {name}")
        assert opt.state.count == st.count == t + 1


@pytest.mark.parametrize("bname", INPLACE)
def test_updates_the_arrays_given(bname) -> None:
    """opt.params is the tree passed in, its leaves are the same objects, and those objects
    (not copies) hold the new values; the momentum arrays are also updated in place."""
    be = get_backend(bname)
    w = be.asarray(np.ones(3, np.float32))
    params = {"w": w}
    opt = lionk.LionK(params, lr=0.25)
    m_obj = opt.state.momentum["w"]
    opt.step({"w": be.asarray(np.full(3, 2.0, np.float32))})
    assert opt.params is params and opt.params["w"] is w
    assert opt.state.momentum["w"] is m_obj
    np.testing.assert_array_equal(be.to_numpy(w), np.full(3, 0.75, np.float32))  # 1 − 0.25·sign(0.2)
    np.testing.assert_array_equal(be.to_numpy(m_obj), np.full(3, np.float32(0.01) * np.float32(2.0)))


def test_numpy_views_are_updated_in_place() -> None:
    """A non-contiguous view a[::2] and a Fortran-ordered array: the step writes through the
    view into the base array (other rows untouched) and keeps the Fortran layout."""
    base = np.zeros((4, 3))
    view = base[::2]
    fort = np.asfortranarray(np.zeros((2, 3)))
    opt = lionk.LionK({"v": view, "f": fort}, lr=0.5)
    opt.step({"v": np.ones((2, 3)), "f": -np.ones((2, 3))})
    np.testing.assert_array_equal(base[::2], -0.5)
    np.testing.assert_array_equal(base[1::2], 0.0)
    np.testing.assert_array_equal(fort, 0.5)
    assert fort.flags.f_contiguous


def test_torch_transposed_view_updated_in_place() -> None:
    """A transposed torch view as a param: written through into its base tensor."""
    torch = pytest.importorskip("torch")
    base = torch.zeros(3, 2)
    view = base.t()
    opt = lionk.LionK(view, lr=0.5)
    opt.step(torch.ones(2, 3))
    assert torch.equal(base, torch.full((3, 2), -0.5))


def test_torch_requires_grad_params() -> None:
    """torch leaves with requires_grad=True: LionK updates them under autograd (no error about
    in-place ops on leaves), they stay leaves that require grad, and the values equal the pure
    step on detached copies bitwise over 5 steps with gradients from backward()."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    w = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    X = torch.randn(8, 4)
    y = torch.randn(8, 3)
    opt = lionk.LionK({"w": w, "b": b}, lr=0.01, weight_decay=0.5)
    pure = {"w": w.detach().clone(), "b": b.detach().clone()}
    st = lionk.init(pure)
    for _ in range(5):
        for p in (w, b):
            p.grad = None
        loss = ((X @ w + b - y) ** 2).sum()
        loss.backward()
        grads = {"w": w.grad.clone(), "b": b.grad.clone()}
        opt.step({"w": w.grad, "b": b.grad})
        pure, st = lionk.step(pure, grads, st, lr=0.01, weight_decay=0.5)
        assert w.requires_grad and w.is_leaf and b.requires_grad and b.is_leaf
        assert_bitwise_equal(w.detach().numpy(), pure["w"].numpy(), "w")
        assert_bitwise_equal(b.detach().numpy(), pure["b"].numpy(), "b")


def test_jax_arrays_rejected() -> None:
    """JAX arrays are immutable: TypeError naming the leaf and pointing to lionk.step."""
    jnp = pytest.importorskip("jax.numpy")
    with pytest.raises(TypeError, match="lionk.step") as ei:
        lionk.LionK({"w": jnp.ones(3)}, lr=0.1)
    assert "params['w']" in str(ei.value)


@pytest.mark.parametrize("bname", INPLACE)
def test_nan_policy_skip_in_place(bname) -> None:
    """LionK with nan_policy='skip': a NaN gradient changes no array, count stays, skipped + 1."""
    be = get_backend(bname)
    x = be.asarray(np.array([1.0, 2.0], np.float32))
    opt = lionk.LionK(x, lr=0.1, nan_policy="skip")
    opt.step(be.asarray(np.array([1.0, -1.0], np.float32)))
    before_x, before_m = be.to_numpy(x), be.to_numpy(opt.state.momentum)
    opt.step(be.asarray(np.array([np.nan, 1.0], np.float32)))
    assert_bitwise_equal(be.to_numpy(x), before_x)
    assert_bitwise_equal(be.to_numpy(opt.state.momentum), before_m)
    assert opt.state.count == 1 and opt.state.skipped == 1


def test_hyperparameters_changed_between_steps() -> None:
    """Setting opt.lr between steps takes effect at the next step (equals the pure step with
    the new lr), and an invalid new value is rejected at the step without writing."""
    rng = np.random.default_rng(31)
    x = rng.standard_normal(5)
    pure = x.copy()
    opt = lionk.LionK(x, lr=0.1)
    st = lionk.init(pure)
    g = rng.standard_normal(5)
    opt.step(g)
    pure, st = lionk.step(pure, g, st, lr=0.1)
    opt.lr = 0.03
    opt.step(g)
    pure, st = lionk.step(pure, g, st, lr=0.03)
    assert_bitwise_equal(x, pure)
    opt.lr = -1.0
    with pytest.raises(ValueError, match="lr"):
        opt.step(g)
    assert_bitwise_equal(x, pure)
    assert opt.state.count == 2


def test_kappa_assigned_between_steps() -> None:
    """opt.kappa accepts a name (resolved to a Kappa at assignment, so a bad name fails there)
    and the next step uses it."""
    rng = np.random.default_rng(34)
    x = rng.standard_normal(6)
    pure = x.copy()
    opt = lionk.LionK(x, lr=0.1)
    st = lionk.init(pure)
    g = rng.standard_normal(6)
    opt.kappa = "huber"
    assert isinstance(opt.kappa, lionk.kappa.Kappa) and opt.kappa.name == "huber"
    opt.step(g)
    pure, st = lionk.step(pure, g, st, lr=0.1, kappa="huber")
    assert_bitwise_equal(x, pure)
    with pytest.raises(KeyError, match="nope"):
        opt.kappa = "nope"
    assert opt.kappa.name == "huber"


# ---------------------------------------------------------------------------------------------
# Checkpoints.


@pytest.mark.parametrize("bname", INPLACE)
def test_state_dict_round_trip(bname) -> None:
    """Save after 10 steps, restore into a fresh optimizer over copies of the params, run 10
    more steps: params and momentum equal an uninterrupted 20-step run bitwise; count and
    hyper-parameters are restored."""
    be = get_backend(bname)
    rng = np.random.default_rng(32)
    x0 = rng.standard_normal((3, 4)).astype(np.float32)
    grads = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(20)]

    x_full = be.asarray(x0)
    full = lionk.LionK(x_full, lr=0.02, betas=(0.8, 0.95), weight_decay=0.4, kappa="huber")
    for g in grads:
        full.step(be.asarray(g))

    x_a = be.asarray(x0)
    first = lionk.LionK(x_a, lr=0.02, betas=(0.8, 0.95), weight_decay=0.4, kappa="huber")
    for g in grads[:10]:
        first.step(be.asarray(g))
    sd = first.state_dict()
    assert sd["count"] == 10
    x_b = be.asarray(be.to_numpy(x_a))  # the params at step 10 (params are the user's to save)
    m_10 = be.to_numpy(first.state.momentum)
    first.step(be.asarray(grads[10]))  # the snapshot holds copies: later steps do not alter it
    assert_bitwise_equal(be.to_numpy(sd["momentum"][""]), m_10, "snapshot")  # keyed by path
    second = lionk.LionK(x_b, lr=0.5)  # different hyper-parameters: the dict restores them
    second.load_state_dict(sd)
    assert second.state.count == 10 and second.lr == 0.02 and second.betas == (0.8, 0.95)
    assert second.weight_decay == 0.4 and second.kappa.name == "huber"
    assert_bitwise_equal(be.to_numpy(second.state.momentum), m_10, "restored momentum")
    for g in grads[10:]:
        second.step(be.asarray(g))
    assert_bitwise_equal(be.to_numpy(x_b), be.to_numpy(x_full), "params")
    assert_bitwise_equal(be.to_numpy(second.state.momentum), be.to_numpy(full.state.momentum), "momentum")
    assert second.state.count == full.state.count == 20


def _mutants(sd, be):
    """state_dicts that must be rejected, with the expected exception type."""
    m = sd["momentum"]
    f64 = "float64" if be.has("float64") else None
    out = [
        ("missing momentum", {k: v for k, v in sd.items() if k != "momentum"}, KeyError),
        ("missing count", {k: v for k, v in sd.items() if k != "count"}, KeyError),
        ("too few arrays", {**sd, "momentum": m[:-1]}, ValueError),
        ("too many arrays", {**sd, "momentum": [*m, m[0]]}, ValueError),
        ("wrong shape", {**sd, "momentum": [m[0], be.asarray(np.zeros((2, 2), np.float32))]}, ValueError),
        ("negative count", {**sd, "count": -1}, ValueError),
        ("float count", {**sd, "count": 1.5}, TypeError),
        ("bad lr", {**sd, "hyperparams": {**sd["hyperparams"], "lr": -1.0}}, ValueError),
        ("unknown kappa", {**sd, "hyperparams": {**sd["hyperparams"], "kappa": {"name": "nope", "params": {}}}}, KeyError),
        ("not a dict", [1, 2], TypeError),
    ]
    if f64:
        out.append(("wrong dtype", {**sd, "momentum": [m[0], be.asarray(np.zeros(3, np.float64))]}, TypeError))
    return out


@pytest.mark.parametrize("bname", INPLACE)
def test_mismatched_state_dict_rejected_atomically(bname) -> None:
    """Every malformed state_dict (missing key, wrong number of arrays, wrong shape or dtype,
    bad count, invalid hyper-parameters) raises, and the optimizer's momentum, count and
    hyper-parameters are exactly as before; a valid dict still loads afterwards."""
    be = get_backend(bname)
    rng = np.random.default_rng(33)
    params = {"a": be.asarray(rng.standard_normal((2, 3)).astype(np.float32)),
              "b": be.asarray(rng.standard_normal(3).astype(np.float32))}
    opt = lionk.LionK(params, lr=0.05, weight_decay=0.2)
    for _ in range(4):
        opt.step({k: be.asarray(rng.standard_normal(tuple(v.shape)).astype(np.float32)) for k, v in params.items()})
    good = opt.state_dict()
    # a different, valid state to try to load (momentum of other values, other count)
    other = {**good, "count": 9, "momentum": [be.asarray(np.full((2, 3), 7.0, np.float32)),
                                               be.asarray(np.full(3, 7.0, np.float32))]}
    before = {k: be.to_numpy(v) for k, v in opt.state.momentum.items()}
    for label, bad, exc in _mutants(other, be):
        with pytest.raises(exc):
            opt.load_state_dict(bad)
        for k, v in opt.state.momentum.items():
            assert_bitwise_equal(be.to_numpy(v), before[k], f"{label}: momentum[{k}]")
        assert opt.state.count == 4, label
        assert opt.lr == 0.05 and opt.weight_decay == 0.2 and opt.kappa.name == "sign", label
    opt.load_state_dict(other)
    assert opt.state.count == 9
    np.testing.assert_array_equal(be.to_numpy(opt.state.momentum["a"]), 7.0)
