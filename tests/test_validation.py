"""Bad input: the right exception type and a message that names the argument (with its leaf path)
and shows the received value. Plus atomicity: an in-place step that raises changes nothing."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import lionk

from ._util import assert_bitwise_equal
from .conftest import get_backend


def _tree(be, dtype="float32"):
    """params, grads and state for a two-level tree {'layer1': {'b', 'w'}, 'layer2': {'w'}}."""
    def arr(shape, v):
        return be.asarray(np.full(shape, v, dtype))

    params = {"layer1": {"w": arr((2, 3), 1.0), "b": arr((3,), 0.5)}, "layer2": {"w": arr((3, 1), -1.0)}}
    grads = {"layer1": {"w": arr((2, 3), 0.1), "b": arr((3,), -0.2)}, "layer2": {"w": arr((3, 1), 0.3)}}
    return params, grads, lionk.init(params)


def _raises(exc, *fragments, fn):
    """Call fn, expect exc, and require every fragment (plain text) in the message."""
    with pytest.raises(exc) as ei:
        fn()
    msg = str(ei.value)
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return msg


# ---------------------------------------------------------------------------------------------
# Leaves: dtype, shape, structure, library, device.


def test_non_floating_params(backend) -> None:
    """Integer params: TypeError from init and from step, naming the leaf and the dtype."""
    p = {"layer1": {"w": backend.asarray(np.ones(3, np.int32))}}
    _raises(TypeError, "params['layer1']['w']", "int32", fn=lambda: lionk.init(p))
    st = lionk.State(0, {"layer1": {"w": backend.asarray(np.ones(3, np.float32))}}, 0)
    _raises(TypeError, "params['layer1']['w']", "int32",
            fn=lambda: lionk.step(p, {"layer1": {"w": backend.asarray(np.ones(3, np.int32))}}, st))


def test_non_floating_grads(backend) -> None:
    """Integer (or bool) grads: TypeError naming grads[...] and the received dtype."""
    p, g, st = _tree(backend)
    g["layer2"]["w"] = backend.asarray(np.ones((3, 1), np.int64))
    _raises(TypeError, "grads['layer2']['w']", "int64", fn=lambda: lionk.step(p, g, st))
    g["layer2"]["w"] = backend.asarray(np.ones((3, 1), bool))
    _raises(TypeError, "grads['layer2']['w']", "bool", fn=lambda: lionk.step(p, g, st))


def test_non_array_leaf() -> None:
    """A Python number where an array is expected: TypeError naming the leaf and its type."""
    p = {"a": np.ones(2), "b": 3.0}
    _raises(TypeError, "params['b']", "float", fn=lambda: lionk.init(p))


def test_wrong_shape(backend) -> None:
    """Grads of another shape: ValueError with the path, the expected and the received shape."""
    p, g, st = _tree(backend)
    g["layer1"]["w"] = backend.asarray(np.ones((3, 2), np.float32))
    _raises(ValueError, "grads['layer1']['w']", "(2, 3)", "(3, 2)", fn=lambda: lionk.step(p, g, st))


def test_wrong_momentum_shape(backend) -> None:
    """A momentum leaf of another shape: ValueError naming state.momentum[...]."""
    p, g, _ = _tree(backend)
    m = {"layer1": {"w": backend.asarray(np.zeros((2, 3), np.float32)),
                    "b": backend.asarray(np.zeros((4,), np.float32))},
         "layer2": {"w": backend.asarray(np.zeros((3, 1), np.float32))}}
    _raises(ValueError, "state.momentum['layer1']['b']", "(3,)", "(4,)",
            fn=lambda: lionk.step(p, g, lionk.State(0, m, 0)))


def test_wrong_dtype(backend) -> None:
    """float64 grads for float32 params: TypeError with path, expected and received dtype."""
    p, g, st = _tree(backend)
    g["layer1"]["b"] = backend.asarray(np.ones(3, np.float64))
    _raises(TypeError, "grads['layer1']['b']", "float32", "float64", fn=lambda: lionk.step(p, g, st))


def test_wrong_structure(backend) -> None:
    """A missing or renamed key, or a list for a tuple: ValueError naming grads and showing
    the received structure."""
    p, g, st = _tree(backend)
    del g["layer2"]
    msg = _raises(ValueError, "grads", fn=lambda: lionk.step(p, g, st))
    assert "layer2" in msg  # the expected structure is shown
    p2 = (backend.asarray(np.ones(2, np.float32)), backend.asarray(np.ones(2, np.float32)))
    g2 = [backend.asarray(np.ones(2, np.float32)), backend.asarray(np.ones(2, np.float32))]
    _raises(ValueError, "grads", fn=lambda: lionk.step(p2, g2, lionk.init(p2)))
    g3 = {"layer1": {"w": g["layer1"]["w"], "c": g["layer1"]["b"]}, "layer2": {"w": p["layer2"]["w"]}}
    msg = _raises(ValueError, "grads", fn=lambda: lionk.step(p, g3, st))
    assert "'c'" in msg


def test_momentum_structure(backend) -> None:
    """A momentum tree of another structure: ValueError naming state.momentum."""
    p, g, _ = _tree(backend)
    _raises(ValueError, "state.momentum", fn=lambda: lionk.step(p, g, lionk.State(0, {"x": p["layer2"]["w"]}, 0)))


def test_state_not_a_state() -> None:
    """A dict instead of a lionk.State: TypeError naming state and the received type."""
    p = np.ones(2)
    _raises(TypeError, "state", "dict", fn=lambda: lionk.step(p, p, {"count": 0, "momentum": p}))


_LIBS = ["numpy", "array_api_strict", "torch", "jax"]


@pytest.mark.parametrize(("mine", "other"), [(a, b) for a in _LIBS for b in _LIBS if a != b])
def test_mixed_libraries(mine, other) -> None:
    """A grads leaf from another array library: TypeError naming the leaf and the received
    array type."""
    backend, ob = get_backend(mine), get_backend(other)
    p, g, st = _tree(backend)
    bad = ob.asarray(np.full((3, 1), 0.3, np.float32))
    g["layer2"]["w"] = bad
    _raises(TypeError, "grads['layer2']['w']", type(bad).__name__, fn=lambda: lionk.step(p, g, st))


def test_mixed_library_momentum() -> None:
    """A momentum leaf from another library: TypeError naming state.momentum[...]."""
    torch = pytest.importorskip("torch")
    p, g, st = _tree(get_backend("numpy"))
    st.momentum["layer1"]["w"] = torch.zeros((2, 3))
    _raises(TypeError, "state.momentum['layer1']['w']", "Tensor", fn=lambda: lionk.step(p, g, st))


def test_mixed_devices() -> None:
    """array-api-strict devices: grads or momentum on another device than params raise
    ValueError naming the leaf, the expected and the received device; nothing moves."""
    xs = pytest.importorskip("array_api_strict")
    d1, cpu = xs.Device("device1"), xs.Device("CPU_DEVICE")
    p = {"w": xs.ones((3,), device=d1), "v": xs.ones((2,), device=d1)}
    st = lionk.init(p)
    assert all(m.device == d1 for m in st.momentum.values())
    g = {"w": xs.ones((3,), device=cpu), "v": xs.ones((2,), device=d1)}
    _raises(ValueError, "grads['w']", "device1", "CPU_DEVICE", fn=lambda: lionk.step(p, g, st))
    g_ok = {"w": xs.ones((3,), device=d1), "v": xs.ones((2,), device=d1)}
    st_bad = lionk.State(0, {"w": xs.zeros((3,), device=d1), "v": xs.zeros((2,), device=xs.Device("device2"))}, 0)
    _raises(ValueError, "state.momentum['v']", "device2", fn=lambda: lionk.step(p, g_ok, st_bad))
    # the happy path stays on device1
    p2, st2 = lionk.step(p, g_ok, st, lr=0.1)
    assert p2["w"].device == d1 and st2.momentum["v"].device == d1


# ---------------------------------------------------------------------------------------------
# Hyper-parameters.


@pytest.mark.parametrize("lr", [0.0, -1e-3, math.nan, math.inf, -math.inf])
def test_bad_lr(lr) -> None:
    """lr ≤ 0 or non-finite: ValueError naming lr and the received value."""
    p, g, st = _tree(get_backend("numpy"))
    _raises(ValueError, "lr", repr(lr), fn=lambda: lionk.step(p, g, st, lr=lr))


@pytest.mark.parametrize(("betas", "which", "value"), [
    ((1.0, 0.99), "betas[0]", "1.0"), ((-0.1, 0.99), "betas[0]", "-0.1"),
    ((0.9, 1.0), "betas[1]", "1.0"), ((0.9, 1.5), "betas[1]", "1.5"),
    ((math.nan, 0.99), "betas[0]", "nan"), ((0.9, -0.0001), "betas[1]", "-0.0001"),
])
def test_bad_betas(betas, which, value) -> None:
    """A beta outside [0, 1): ValueError naming betas[i] and the received value."""
    p, g, st = _tree(get_backend("numpy"))
    _raises(ValueError, which, value, fn=lambda: lionk.step(p, g, st, betas=betas))


@pytest.mark.parametrize("betas", [(0.9,), (0.9, 0.99, 0.999), 0.9])
def test_betas_not_a_pair(betas) -> None:
    """betas that is not a pair: TypeError naming betas and showing what was received."""
    p, g, st = _tree(get_backend("numpy"))
    _raises(TypeError, "betas", repr(betas), fn=lambda: lionk.step(p, g, st, betas=betas))


def test_b1_greater_than_b2_warns() -> None:
    """b1 > b2 is allowed with a LionKWarning naming both values (step and LionK)."""
    p, g, st = _tree(get_backend("numpy"))
    with pytest.warns(lionk.LionKWarning, match=re.escape("b1=0.99 > b2=0.9")):
        lionk.step(p, g, st, betas=(0.99, 0.9))
    with pytest.warns(lionk.LionKWarning):
        lionk.LionK(np.ones(2), lr=0.1, betas=(0.95, 0.5))


@pytest.mark.parametrize("wd", [-0.1, math.nan, math.inf])
def test_bad_weight_decay(wd) -> None:
    """weight_decay < 0 or non-finite: ValueError naming weight_decay and the value."""
    p, g, st = _tree(get_backend("numpy"))
    _raises(ValueError, "weight_decay", repr(wd), fn=lambda: lionk.step(p, g, st, weight_decay=wd))


@pytest.mark.parametrize(("lr", "wd"), [(0.5, 2.0), (1.0, 1.0), (0.1, 50.0)])
def test_lr_times_weight_decay_at_least_one(lr, wd) -> None:
    """lr·weight_decay ≥ 1 (decay factor ≤ 0): ValueError naming lr*weight_decay and both values."""
    p, g, st = _tree(get_backend("numpy"))
    _raises(ValueError, "lr*weight_decay", repr(lr), repr(wd),
            fn=lambda: lionk.step(p, g, st, lr=lr, weight_decay=wd))


@pytest.mark.parametrize(("name", "kwargs", "fragments"), [
    ("lr", {"lr": True}, ["lr", "True"]),
    ("lr", {"lr": "fast"}, ["lr", "fast"]),
])
def test_hyperparameter_wrong_type(name, kwargs, fragments) -> None:
    """A non-number hyper-parameter: TypeError naming it and the received value."""
    p, g, st = _tree(get_backend("numpy"))
    _raises(TypeError, *fragments, fn=lambda: lionk.step(p, g, st, **kwargs))


def test_hyperparameter_array_not_scalar() -> None:
    """A hyper-parameter array with a shape: ValueError naming it and the shape."""
    p, g, st = _tree(get_backend("numpy"))
    _raises(ValueError, "lr", "(2,)", fn=lambda: lionk.step(p, g, st, lr=np.ones(2)))


@pytest.mark.parametrize(("kw", "value", "fragment"), [
    ("lr", -1.0, "lr"), ("weight_decay", -0.5, "weight_decay"), ("b1", 1.5, "betas[0]"),
])
def test_zero_dim_array_hyperparameters_are_validated(backend, kw, value, fragment) -> None:
    """Concrete 0-d arrays are validated like Python floats: lr = −1, weight_decay = −0.5 or
    b1 = 1.5 given as a 0-d array of the backend raise ValueError naming the argument."""
    p, g, st = _tree(backend)
    v = backend.asarray(np.asarray(value, np.float64 if backend.has("float64") else np.float32))
    kwargs = {"lr": 0.01, "betas": (0.9, 0.99), "weight_decay": 0.0}
    if kw == "b1":
        kwargs["betas"] = (v, 0.99)
    else:
        kwargs[kw] = v
    _raises(ValueError, fragment, fn=lambda: lionk.step(p, g, st, **kwargs))


def test_unknown_kappa() -> None:
    """An unknown κ name: KeyError naming it and listing the available names."""
    p, g, st = _tree(get_backend("numpy"))
    msg = _raises(KeyError, "sgn", fn=lambda: lionk.step(p, g, st, kappa="sgn"))
    for n in ("sign", "huber", "l2", "deadzone"):
        assert n in msg


def test_kappa_wrong_type() -> None:
    """A κ that is neither a name nor a Kappa: TypeError showing what was received."""
    p, g, st = _tree(get_backend("numpy"))
    _raises(TypeError, "kappa", "42", fn=lambda: lionk.step(p, g, st, kappa=42))


def test_bad_nan_policy() -> None:
    """An unknown nan_policy: ValueError naming it, the choices and the received value."""
    p, g, st = _tree(get_backend("numpy"))
    _raises(ValueError, "nan_policy", "'ignore'", "skip", fn=lambda: lionk.step(p, g, st, nan_policy="ignore"))
    _raises(ValueError, "nan_policy", "'ignore'", fn=lambda: lionk.LionK(np.ones(2), lr=0.1, nan_policy="ignore"))


def test_nan_raise_names_leaf() -> None:
    """nan_policy='raise' with a NaN in the last leaf: ValueError naming exactly that leaf."""
    p, g, st = _tree(get_backend("numpy"))
    g["layer2"]["w"] = np.array([[0.1], [np.nan], [0.2]], np.float32)
    _raises(ValueError, "grads['layer2']['w']", fn=lambda: lionk.step(p, g, st, nan_policy="raise"))


def test_bad_state_dtype() -> None:
    """state_dtype that is not floating or unknown: TypeError / ValueError naming state_dtype."""
    _raises(TypeError, "state_dtype", "int32", fn=lambda: lionk.init(np.ones(2), state_dtype="int32"))
    _raises(ValueError, "state_dtype", "float7", fn=lambda: lionk.init(np.ones(2), state_dtype="float7"))


def test_lionk_validates_at_construction() -> None:
    """LionK checks its hyper-parameters when built, not only at the first step."""
    _raises(ValueError, "lr", fn=lambda: lionk.LionK(np.ones(2), lr=-1.0))
    _raises(ValueError, "lr*weight_decay", fn=lambda: lionk.LionK(np.ones(2), lr=0.5, weight_decay=4.0))
    _raises(KeyError, "nope", fn=lambda: lionk.LionK(np.ones(2), lr=0.1, kappa="nope"))
    _raises(TypeError, "params", fn=lambda: lionk.LionK(np.ones(2, np.int64), lr=0.1))


def test_lionk_read_only_array() -> None:
    """A read-only numpy array cannot be updated in place: TypeError pointing to lionk.step."""
    x = np.ones(3)
    x.flags.writeable = False
    _raises(TypeError, "writeable", "lionk.step", fn=lambda: lionk.LionK({"w": x}, lr=0.1))


# ---------------------------------------------------------------------------------------------
# Atomicity of the in-place step.


@pytest.mark.parametrize("bname", ["numpy", "torch", "array_api_strict"])
@pytest.mark.parametrize("defect", ["shape", "dtype", "nonfinite", "library"])
def test_lionk_step_is_atomic(bname, defect) -> None:
    """A grads tree whose LAST leaf (in flattening order) is bad makes LionK.step raise, and
    every param and momentum array is bitwise unchanged, count unchanged."""
    be = get_backend(bname)
    rng = np.random.default_rng(20)
    shapes = {"a": (3,), "b": (2, 2), "c": (4,)}  # 'c' is the last leaf
    params = {k: be.asarray(rng.standard_normal(s).astype(np.float32)) for k, s in shapes.items()}
    opt = lionk.LionK(params, lr=0.01, weight_decay=0.1, nan_policy="raise")
    for _ in range(3):  # give the momentum non-zero values
        opt.step({k: be.asarray(rng.standard_normal(s).astype(np.float32)) for k, s in shapes.items()})
    before_x = {k: be.to_numpy(v) for k, v in params.items()}
    before_m = {k: be.to_numpy(v) for k, v in opt.state.momentum.items()}
    grads = {k: be.asarray(rng.standard_normal(s).astype(np.float32)) for k, s in shapes.items()}
    if defect == "shape":
        grads["c"] = be.asarray(np.ones((5,), np.float32))
        exc = ValueError
    elif defect == "dtype":
        if not be.has("float64"):
            pytest.skip("no float64")
        grads["c"] = be.asarray(np.ones((4,), np.float64))
        exc = TypeError
    elif defect == "nonfinite":
        grads["c"] = be.asarray(np.array([0.0, 1.0, np.inf, 2.0], np.float32))
        exc = ValueError
    else:
        other = get_backend("numpy" if bname != "numpy" else "array_api_strict")
        grads["c"] = other.asarray(np.ones((4,), np.float32))
        exc = TypeError
    with pytest.raises(exc, match=re.escape("grads['c']")):
        opt.step(grads)
    assert opt.state.count == 3
    for k in shapes:
        assert_bitwise_equal(be.to_numpy(params[k]), before_x[k], f"params[{k}]")
        assert_bitwise_equal(be.to_numpy(opt.state.momentum[k]), before_m[k], f"momentum[{k}]")
    # and the optimizer still works afterwards
    opt.step({k: be.asarray(np.ones(s, np.float32)) for k, s in shapes.items()})
    assert opt.state.count == 4
