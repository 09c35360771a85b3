"""What a small step remembers, and that no change of input skips its validation (issue 12).

``lionk.step`` and ``lionk.LionK.step`` remember, once they passed: the tree-structure checks of
trees of plain NumPy arrays (keyed by the structures and every leaf's shape and dtype, read again
at every call), the hyper-parameter checks and coefficients (keyed by the Python numbers), the
built-in κ resolved from its name, and the 0-d NumPy coefficient operands. Each test below makes
a call that fills these caches, then changes one input in a way the caches could miss (a shape
or dtype changed in place, a new array that may reuse a freed array's id, another
hyper-parameter, a user κ, arrays that share memory, another tree) and checks that the change is
still refused with the usual message, or used. The counting tests check that a repeated
structure is not checked again, with no wall-time threshold.
"""

from __future__ import annotations

import gc
import math
import re
import warnings

import numpy as np
import pytest

import lionk
from lionk.core import array_api
from lionk.core import kappa as _kappa
from lionk.core import step as _step


def arrays(shape=(4, 5), dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for _ in range(3)]


def tree(shapes=((3, 4), (4,)), dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return {f"w{i}": rng.standard_normal(s).astype(dtype) for i, s in enumerate(shapes)}


@pytest.fixture
def counted(monkeypatch):
    """Count the full structure checks (what a remembered structure skips)."""
    calls = []
    full = _step._check_flat

    def spy(*args, **kwargs):
        calls.append(args[1])
        return full(*args, **kwargs)

    monkeypatch.setattr(_step, "_check_flat", spy)
    lionk.clear_caches()
    return calls


# --- the caches are used ---------------------------------------------------------------------


def test_a_repeated_structure_is_checked_once(counted):
    x, g, m = arrays()
    st = lionk.State(0, m, 0)
    for _ in range(3):
        lionk.step(x, g, st, lr=1e-3)
    assert len(counted) == 1
    p, gt = tree(), tree(seed=1)
    st = lionk.init(p)
    for _ in range(3):
        lionk.step(p, gt, st)
    assert len(counted) == 2
    # new arrays of the same structure, shapes and dtypes: nothing to check again
    lionk.step(tree(seed=2), tree(seed=3), lionk.init(p))
    assert len(counted) == 2


def test_lionk_step_checks_its_structure_once(counted):
    p = tree()
    opt = lionk.LionK(p, lr=1e-2)
    for _ in range(3):
        opt.step(tree(seed=5))
    assert len(counted) == 1


def test_a_changed_structure_is_checked_again(counted):
    x, g, m = arrays()
    lionk.step(x, g, lionk.State(0, m, 0))
    lionk.step(x.astype(np.float64), g.astype(np.float64), lionk.State(0, m.astype(np.float64), 0))
    lionk.step(x[:2], g[:2], lionk.State(0, m[:2], 0))
    assert len(counted) == 3


def test_hyper_parameters_are_checked_once(monkeypatch):
    lionk.clear_caches()
    calls = []
    full = _step._check.learning_rate
    monkeypatch.setattr(_step._check, "learning_rate",
                        lambda *a, **k: calls.append(a) or full(*a, **k))
    x, g, m = arrays()
    for _ in range(3):
        lionk.step(x, g, lionk.State(0, m, 0), lr=2e-3, weight_decay=0.1)
    assert len(calls) == 1
    lionk.step(x, g, lionk.State(0, m, 0), lr=3e-3, weight_decay=0.1)
    assert len(calls) == 2


def test_clear_caches_empties_the_step_caches():
    x, g, m = arrays()
    lionk.step(x, g, lionk.State(0, m, 0), lr=1e-3, kappa="huber")
    names = ("core.step: checked tree structures", "core.step: hyper-parameters",
             "core.step: kappas by name", "core.step: NumPy coefficient operands")
    sizes = lionk.caches() if hasattr(lionk, "caches") else __import__(
        "lionk.core.caches", fromlist=["caches"]).caches()
    assert all(sizes[n][0] >= 1 for n in names), sizes
    lionk.clear_caches()
    sizes = __import__("lionk.core.caches", fromlist=["caches"]).caches()
    assert all(sizes[n][0] == 0 for n in names), sizes


# --- a NumPy array changed in place -----------------------------------------------------------


def test_shape_changed_in_place_is_caught():
    x, g, m = arrays((4, 5))
    st = lionk.State(0, m, 0)
    lionk.step(x, g, st)
    g.shape = (5, 4)  # the same object, another shape
    with pytest.raises(ValueError, match=re.escape("grads: expected shape (4, 5) (the shape of "
                                                   "params); received (5, 4)")):
        lionk.step(x, g, st)
    g.shape = (4, 5)
    m.shape = (20,)
    with pytest.raises(ValueError, match=re.escape("state.momentum: expected shape (4, 5)")):
        lionk.step(x, g, st)


def test_shape_changed_in_place_in_a_tree_is_caught():
    p, gt = tree(), tree(seed=1)
    st = lionk.init(p)
    lionk.step(p, gt, st)
    gt["w0"].shape = (4, 3)
    with pytest.raises(ValueError, match=re.escape("grads['w0']: expected shape (3, 4)")):
        lionk.step(p, gt, st)


def test_dtype_changed_in_place_is_caught():
    x, g, m = arrays()
    st = lionk.State(0, m, 0)
    opt = lionk.LionK(x.copy())
    lionk.step(x, g, st)
    opt.step(g)
    g.dtype = np.int32  # the same memory read as integers
    with pytest.raises(TypeError, match="grads: expected a real floating dtype"):
        lionk.step(x, g, st)
    with pytest.raises(TypeError, match="grads: expected a real floating dtype"):
        opt.step(g)
    g.dtype = np.float32
    x.dtype = np.int32
    with pytest.raises(TypeError, match="params: expected a real floating dtype"):
        lionk.step(x, g, st)


def test_a_new_array_with_a_reused_id_is_checked():
    x, g, m = arrays((6,))
    st = lionk.State(0, m, 0)
    lionk.step(x, g, st)
    ids = {id(g)}
    del g
    gc.collect()
    # new arrays, some of which may take the freed array's id, of a wrong shape or dtype
    for shape, dtype, err in [((7,), np.float32, ValueError), ((6,), np.float64, TypeError),
                              ((6,), np.int64, TypeError)]:
        bad = np.zeros(shape, dtype)
        ids.add(id(bad))
        with pytest.raises(err, match="grads"):
            lionk.step(x, bad, st)
        del bad


def test_a_tree_changed_in_place_is_caught():
    p, gt = tree(), tree(seed=1)
    st = lionk.init(p)
    lionk.step(p, gt, st)
    gt["extra"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="grads: expected the tree structure of params"):
        lionk.step(p, gt, st)
    del gt["extra"]
    gt["w1"] = [gt["w1"]]
    with pytest.raises(ValueError, match="grads: expected the tree structure of params"):
        lionk.step(p, gt, st)
    gt["w1"] = "not an array"
    with pytest.raises(TypeError, match=re.escape("grads['w1']: expected an array; received str")):
        lionk.step(p, gt, st)


def test_a_leaf_of_another_kind_is_checked():
    x, g, m = arrays((3,))
    st = lionk.State(0, m, 0)
    lionk.step(x, g, st)
    with pytest.raises(TypeError, match=re.escape("grads[0]: expected an array; received float")):
        lionk.step(x, g.tolist(), st)
    with pytest.raises(TypeError, match="grads: expected an array; received str"):
        lionk.step(x, "g", st)

    class Sub(np.ndarray):
        pass

    # a subclass is never remembered, but checked (and stepped) as before
    out, _ = lionk.step(x, g.view(Sub), st)
    ref, _ = lionk.step(x, g, st)
    assert out.tobytes() == ref.tobytes()
    with pytest.raises(ValueError, match="grads: expected shape"):
        lionk.step(x, g[:2].view(Sub), st)


# --- hyper-parameters, κ, counters, nan_policy ------------------------------------------------


@pytest.mark.parametrize("kw, err, msg", [
    ({"lr": -1e-3}, ValueError, "lr: expected a finite number > 0; received -0.001"),
    ({"lr": 0.0}, ValueError, "lr: expected a finite number > 0; received 0.0"),
    ({"betas": (0.9, 1.0)}, ValueError, "betas[1]: expected a value in [0, 1); received 1.0"),
    ({"betas": (0.9, True)}, TypeError, "betas[1]: expected a real number; received True"),
    ({"weight_decay": -0.5}, ValueError, "weight_decay: expected a finite number >= 0"),
    ({"lr": 0.5, "weight_decay": 2.0}, ValueError, "lr*weight_decay: expected < 1"),
    ({"nan_policy": "ignore"}, ValueError, "nan_policy: expected one of"),
    ({"kappa": "no-such-kappa"}, KeyError, "unknown kappa 'no-such-kappa'"),
])
def test_another_hyper_parameter_is_checked(kw, err, msg):
    x, g, m = arrays()
    st = lionk.State(0, m, 0)
    base = {"lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": 0.1}
    lionk.step(x, g, st, **base)
    lionk.step(x, g, st, **base)
    with pytest.raises(err, match=re.escape(msg)):
        lionk.step(x, g, st, **{**base, **kw})
    with pytest.raises(err, match=re.escape(msg)):  # failures are never remembered
        lionk.step(x, g, st, **{**base, **kw})


def test_lionk_hyper_parameter_changed_between_steps_is_checked():
    x, g, _ = arrays()
    opt = lionk.LionK(x, lr=1e-3)
    opt.step(g)
    before = x.tobytes()
    opt.lr = -1.0
    with pytest.raises(ValueError, match="lr: expected a finite number > 0; received -1.0"):
        opt.step(g)
    assert x.tobytes() == before and opt.state.count == 1


def test_b1_above_b2_warns_at_every_call():
    x, g, m = arrays()
    st = lionk.State(0, m, 0)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for _ in range(3):
            lionk.step(x, g, st, betas=(0.99, 0.9))
    ws = [w for w in rec if issubclass(w.category, lionk.LionKWarning)]
    assert len(ws) == 3
    assert all(w.filename == __file__ for w in ws)  # pointing at the user's call, cached or not
    assert "b1=0.99 > b2=0.9" in str(ws[-1].message)
    opt = lionk.LionK(x.copy(), betas=(0.9, 0.99))
    opt.step(g)
    opt.betas = (0.99, 0.9)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for _ in range(3):
            opt.step(g)
    ws = [w for w in rec if issubclass(w.category, lionk.LionKWarning)]
    assert len(ws) == 3 and all(w.filename == __file__ for w in ws)


def test_signed_zero_coefficients_are_not_confused():
    h_pos = _step.make_hyper(1e-3, (0.0, 0.99), 0.0)
    h_neg = _step.make_hyper(1e-3, (-0.0, 0.99), 0.0)
    assert math.copysign(1.0, h_pos.b1) == 1.0
    assert math.copysign(1.0, h_neg.b1) == -1.0
    z_pos = _step.make_hyper(0.0, (0.9, 0.99), 0.0, allow_zero_lr=True)
    z_neg = _step.make_hyper(-0.0, (0.9, 0.99), 0.0, allow_zero_lr=True)
    assert (math.copysign(1.0, z_pos.lr), math.copysign(1.0, z_neg.lr)) == (1.0, -1.0)
    with pytest.raises(ValueError, match="lr: expected a finite number > 0"):
        _step.make_hyper(0.0, (0.9, 0.99), 0.0)  # allowed just above: a separate key


def test_int_and_float_hyper_parameters_give_the_same_coefficients():
    assert _step.make_hyper(1, (0, 0.5), 0) == _step.coefficients(1.0, 0.0, 0.5, 0.0)
    assert _step.make_hyper(1.0, (0.0, 0.5), 0.0) == _step.make_hyper(1, (0, 0.5), 0)


def test_a_user_kappa_instance_is_used_and_checked():
    x, g, m = arrays((5,))
    st = lionk.State(0, m, 0)
    lionk.step(x, g, st, kappa="sign")
    flat = _kappa.Kappa("flattening", grad=lambda y: y.reshape(-1)[:1])
    with pytest.raises(ValueError, match="kappa 'flattening' at params: grad must keep the shape"):
        lionk.step(x, g, st, kappa=flat)
    half = _kappa.Kappa("half", grad=lambda y: 0.5 * y, separable=True)
    out, _ = lionk.step(x, g, st, kappa=half, lr=1.0)
    c = np.float32(0.9) * m + np.float32(0.1) * g
    assert out.tobytes() == (np.float32(1.0) * x - np.float32(1.0) * (np.float32(0.5) * c)).tobytes()


def test_a_re_registered_name_is_resolved_again():
    x, g, m = arrays((5,))
    st = lionk.State(0, m, 0)
    name = "npsmall-test-kappa"

    def same(kap_a, kap_b):
        a, sa = lionk.step(x, g, st, kappa=kap_a, lr=0.5)
        b, sb = lionk.step(x, g, st, kappa=kap_b, lr=0.5)
        return a.tobytes() == b.tobytes() and sa.momentum.tobytes() == sb.momentum.tobytes()

    _kappa.register(name, lambda: _kappa.get("sign"))
    try:
        assert same(name, "sign")
        assert same(name, "sign")
        _kappa.register(name, lambda: _kappa.get("huber", delta=100.0), overwrite=True)
        assert same(name, _kappa.get("huber", delta=100.0))
        assert not same(name, "sign")
    finally:
        _kappa.unregister(name)
    with pytest.raises(KeyError, match=name):
        lionk.step(x, g, st, kappa=name)


def test_counters_are_checked_at_every_call():
    x, g, m = arrays()
    lionk.step(x, g, lionk.State(0, m, 0))
    with pytest.raises(ValueError, match="state.count: expected an int >= 0; received -1"):
        lionk.step(x, g, lionk.State(-1, m, 0))
    with pytest.raises(TypeError, match="state.skipped: expected an int >= 0"):
        lionk.step(x, g, lionk.State(0, m, 1.5))


# --- memory shared after a remembered call ----------------------------------------------------


def test_aliasing_after_a_cached_call_is_caught():
    x, g, m = arrays((8,))
    st = lionk.State(0, m, 0)
    lionk.step(x, g, st)
    with pytest.raises(ValueError, match="grads: .* is the same array as params"):
        lionk.step(x, x, st)
    with pytest.raises(ValueError, match="state.momentum: .* is the same array as params"):
        lionk.step(x, g, lionk.State(0, x, 0))
    buf = np.zeros(16, np.float32)
    with pytest.raises(ValueError, match="shares memory with"):
        lionk.step(buf[:8], g, lionk.State(0, buf[4:12], 0))
    # views that do not overlap are fine (and give the step on copies)
    out, st2 = lionk.step(buf[:8], g, lionk.State(0, buf[8:], 0))
    ref, st3 = lionk.step(buf[:8].copy(), g, lionk.State(0, buf[8:].copy(), 0))
    assert out.tobytes() == ref.tobytes() and st2.momentum.tobytes() == st3.momentum.tobytes()


def test_lionk_aliasing_after_cached_steps_changes_nothing():
    p = tree()
    opt = lionk.LionK(p, lr=1e-2)
    opt.step(tree(seed=1))
    opt.step(tree(seed=2))
    before = [a.tobytes() for a in p.values()]
    grads = {"w0": p["w0"], "w1": tree(seed=3)["w1"]}  # a gradient that is a param
    with pytest.raises(ValueError, match=re.escape("grads['w0']")):
        opt.step(grads)
    assert [a.tobytes() for a in p.values()] == before and opt.state.count == 2


def test_owning_numpy_arrays():
    a, b = np.zeros(3), np.zeros(3)
    assert array_api.owning_numpy_arrays([a], [b])
    assert not array_api.owning_numpy_arrays([a], [a])
    assert not array_api.owning_numpy_arrays([a], [a[1:]])
    assert not array_api.owning_numpy_arrays([a], [np.frombuffer(bytearray(24))])
    c = np.zeros(3)
    assert array_api.owning_numpy_arrays([a], [b], [c])  # the one-array case
    assert not array_api.owning_numpy_arrays([a], [b], [a])
    assert not array_api.owning_numpy_arrays([a], [b[1:]], [c])
    assert not array_api.owning_numpy_arrays([a], [b], [c.view(_Plain)])


# --- 0-d NumPy coefficient operands: the same bits as Python floats ----------------------------


class _Plain(np.ndarray):
    """An ndarray subclass: lionk multiplies it by Python floats (the operands are only for
    plain ndarrays), the reference for the fast path."""


def _special(dtype, n, rng):
    a = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 3, n)).astype(dtype)
    fi = np.finfo(dtype)
    a[:8] = [0.0, -0.0, np.inf, -np.inf, np.nan, fi.tiny / 2, fi.max, -fi.smallest_normal]
    return a


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_numpy_operands_give_the_bits_of_python_floats(dtype):
    lionk.clear_caches()
    rng = np.random.default_rng(7)
    kap = _kappa.get("sign")
    used = 0
    for trial in range(40):
        lr = float(10.0 ** rng.uniform(-6, 0))
        b1, b2 = float(rng.uniform(0.0, 0.999)), float(rng.uniform(0.0, 0.999))
        wd = float(rng.uniform(0.0, 0.5 / lr)) if trial % 3 else 0.0
        h = _step.coefficients(lr, b1, b2, wd)
        xs, gs, ms = ([_special(dtype, 64, rng), _special(dtype, 9, rng)] for _ in range(3))
        first = _step._operands(h, xs, gs, ms)
        assert type(first) is _step._Operands and all(type(c) is float for c in first)
        k = _step._operands(h, xs, gs, ms)  # seen twice: 0-d arrays where they round cleanly
        assert type(k) is _step._Operands
        if all(h) and array_api.numpy_scalar_operands(h, np.dtype(dtype)) is not None:
            assert all(type(c) is np.ndarray and c.dtype == dtype for c in k)
            used += 1
        with np.errstate(all="ignore"):
            fast = _step.update_leaves(xs, gs, ms, h, kap)
            slow = _step.update_leaves(*([a.view(_Plain) for a in group] for group in (xs, gs, ms)),
                                       h, kap)
        for f, s in zip([*fast[0], *fast[1]], [*slow[0], *slow[1]]):
            assert type(f) is np.ndarray and f.dtype == dtype
            assert f.tobytes() == np.asarray(s).tobytes()
    assert used >= 10  # the 0-d operands were compared, not only Python floats


def test_numpy_operands_only_where_they_round_cleanly():
    ops = array_api.numpy_scalar_operands
    assert ops((0.5, 1e-3), np.dtype(np.float16)) is not None
    assert ops((1e5,), np.dtype(np.float16)) is None  # above float16's max: Python floats
    assert ops((1e-6,), np.dtype(np.float16)) is None  # float16 subnormal: Python floats
    assert ops((1e-6,), np.dtype(np.float32)) is not None
    (a,) = ops((0.1,), np.dtype(np.float32))
    assert a.shape == () and a.dtype == np.float32 and not a.flags.writeable
    assert array_api.numpy_float_dtype([np.zeros(2, np.float32)], [np.zeros(1, np.float64)]) is None
    assert array_api.numpy_float_dtype([np.zeros(2, np.float32).view(_Plain)]) is None
    assert array_api.numpy_float_dtype([np.zeros(2, ">f4")]) is None
    assert array_api.numpy_float_dtype([np.zeros(2, np.float32)]) == np.float32
    one = [np.zeros(2, np.float32)]
    assert array_api.numpy_float_dtype(one, one, one) == np.float32
    assert array_api.numpy_float_dtype(one, [np.zeros(2)], one) is None
    assert array_api.numpy_float_dtype(one, one, [np.zeros(2, np.float32).view(_Plain)]) is None
    assert array_api.numpy_float_dtype(*[[np.zeros(2, np.int32)]] * 3) is None


def test_zero_dim_leaves_stay_arrays():
    x, g, m = (np.asarray(v, np.float32) for v in (1.0, 2.0, 3.0))
    out, st = lionk.step(x, g, lionk.State(0, m, 0), lr=1e-2)
    assert type(out) is np.ndarray and type(st.momentum) is np.ndarray and out.shape == ()
