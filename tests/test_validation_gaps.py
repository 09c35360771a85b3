"""Issue 10's "validation gaps": each bad input is a TypeError/ValueError naming the argument (and
the received value), raised before anything is written; and the one validation module
(``lionk.core.validation``) is what every front-end calls.

Every test here failed on the code before ``lionk/core/validation.py`` (the bad value was
accepted, or refused by a library message that named neither the argument nor the leaf),
except where a docstring says "guard" (behaviour that was already right and must stay so).
"""

from __future__ import annotations

import re
import warnings
from collections import OrderedDict

import numpy as np
import pytest

import lionk

from ._util import assert_bitwise_equal


def _raises(exc, *fragments, fn):
    """Call fn, expect exc, and require every fragment (plain text) in the message."""
    with pytest.raises(exc) as ei:
        fn()
    msg = str(ei.value)
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return msg


def _problem():
    params = {"a": np.array([0.5, -1.0, 2.0], np.float32), "b": np.array([[1.0, -2.0]], np.float32)}
    grads = {"a": np.array([0.1, -0.2, 0.3], np.float32), "b": np.array([[-0.4, 0.5]], np.float32)}
    return params, grads


def _snapshot(opt):
    return ({k: np.array(v, copy=True) for k, v in opt.params.items()},
            {k: np.array(v, copy=True) for k, v in opt.state.momentum.items()},
            int(opt.state.count))


def _unchanged(opt, snap, label):
    xs, ms, count = snap
    for k in xs:
        assert_bitwise_equal(np.asarray(opt.params[k]), xs[k], f"{label}: params[{k}]")
        assert_bitwise_equal(np.asarray(opt.state.momentum[k]), ms[k], f"{label}: momentum[{k}]")
    assert opt.state.count == count, label


# ---------------------------------------------------------------------------------------------
# Learning rate and betas: strings, booleans, complex numbers, 0-d arrays of those.


def _zero_d(lib, value):
    if lib == "numpy":
        return np.asarray(value)
    if lib == "torch":
        torch = pytest.importorskip("torch")
        return torch.tensor(value)
    jnp = pytest.importorskip("jax.numpy")
    return jnp.asarray(value)


BAD_LR = [
    ("str", lambda: "0.01", TypeError, "'0.01'"),
    ("numpy bool", lambda: np.bool_(True), TypeError, "True"),
    ("numpy complex", lambda: np.complex128(0.1), TypeError, "complex"),
    ("0-d str array", lambda: np.asarray("0.01"), TypeError, "0.01"),
    ("numpy 0-d bool", lambda: _zero_d("numpy", True), TypeError, "bool"),
    ("numpy 0-d complex", lambda: _zero_d("numpy", 0.1 + 0j), TypeError, "complex"),
    ("torch 0-d bool", lambda: _zero_d("torch", True), TypeError, "bool"),
    ("torch 0-d complex", lambda: _zero_d("torch", 0.1 + 0j), TypeError, "complex"),
    ("jax 0-d bool", lambda: _zero_d("jax", True), TypeError, "bool"),
    ("jax 0-d complex", lambda: _zero_d("jax", 0.1 + 0j), TypeError, "complex"),
]


@pytest.mark.parametrize(("label", "make", "exc", "shown"), BAD_LR, ids=[b[0] for b in BAD_LR])
def test_lr_not_a_real_number(label, make, exc, shown) -> None:
    """lr="0.01" (was accepted: float("0.01")), a NumPy/torch/JAX boolean (was accepted as 1.0) or
    a complex 0-d array (refused by float() with a message not naming lr): TypeError naming lr
    and showing the value, from lionk.step, lionk.LionK(...) and a later ``opt.lr = ...``; the
    in-place optimizer is left bitwise unchanged."""
    value = make()
    params, grads = _problem()
    st = lionk.init(params)
    _raises(exc, "lr", shown, fn=lambda: lionk.step(params, grads, st, lr=value))
    _raises(exc, "lr", shown, fn=lambda: lionk.LionK(params, lr=value))
    opt = lionk.LionK(params, lr=0.01)
    opt.step(grads)
    snap = _snapshot(opt)
    opt.lr = value
    _raises(exc, "lr", shown, fn=lambda: opt.step(grads))
    _unchanged(opt, snap, label)


@pytest.mark.parametrize("betas", ["00", b"00", "0.9"])
def test_betas_string(betas) -> None:
    """betas="00" unpacked into ("0", "0") and ran with b1 = b2 = 0: TypeError naming betas."""
    params, grads = _problem()
    _raises(TypeError, "betas", repr(betas),
            fn=lambda: lionk.step(params, grads, lionk.init(params), betas=betas))
    _raises(TypeError, "betas", fn=lambda: lionk.LionK(params, betas=betas))


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("value", [True, "0.9", np.asarray(True), np.asarray(0.9 + 0j)])
def test_beta_not_a_real_number(which, value) -> None:
    """One beta a bool, a string or a bool/complex 0-d array: TypeError naming betas[i]."""
    params, grads = _problem()
    betas = [0.9, 0.99]
    betas[which] = value
    _raises(TypeError, f"betas[{which}]",
            fn=lambda: lionk.step(params, grads, lionk.init(params), betas=tuple(betas)))


def test_python_bool_and_complex_lr_guard() -> None:
    """Guard: a Python bool or complex lr was already a TypeError naming lr."""
    params, grads = _problem()
    st = lionk.init(params)
    _raises(TypeError, "lr", "True", fn=lambda: lionk.step(params, grads, st, lr=True))
    _raises(TypeError, "lr", "0.1", fn=lambda: lionk.step(params, grads, st, lr=0.1 + 0j))


# ---------------------------------------------------------------------------------------------
# κ parameters and user κ.


@pytest.mark.parametrize(("name", "param"), [("huber", "delta"), ("relativistic", "delta"),
                                             ("relativistic-l2", "delta"), ("deadzone", "e")])
@pytest.mark.parametrize("value", [True, "1", b"1"])
def test_kappa_parameter_not_a_number(name, param, value) -> None:
    """kappa.get("huber", delta=True) gave delta = 1.0 and delta="1" parsed the string: both a
    TypeError naming the κ, the parameter and the value."""
    _raises(TypeError, repr(name), param, repr(value),
            fn=lambda: lionk.kappa.get(name, **{param: value}))


def test_register_not_a_kappa() -> None:
    """kappa.register("x", 5) failed with "'int' object is not callable": TypeError naming
    register and the name; nothing registered."""
    _raises(TypeError, "register", "'x'", "5", fn=lambda: lionk.kappa.register("x", 5))
    assert "x" not in lionk.kappa.available()


def _box_conjugate(z):
    return np.where(np.max(np.abs(z)) <= 1.0, 0.0, np.inf)


@pytest.mark.parametrize(("label", "grad", "value", "fragment"), [
    ("value returns a vector", np.sign, np.abs, "value must return a 0-d array"),
    ("grad returns a list", lambda y: list(np.sign(y)), lambda y: np.sum(np.abs(y)),
     "grad must return an array"),
])
def test_register_checks_what_methods_return(label, grad, value, fragment) -> None:
    """A user κ whose value returns a vector (was a TypeError from numpy naming neither) or whose
    grad returns a Python list (was registered; a step then failed inside the update): rejected
    with KappaValidationError naming the κ and the method; nothing registered."""
    name = "gap-" + label.replace(" ", "-")
    kap = lionk.kappa.Kappa(name, grad=grad, value=value, conjugate=_box_conjugate,
                            exact=True, separable=True)
    _raises(lionk.kappa.KappaValidationError, repr(name), fragment,
            fn=lambda: lionk.kappa.register(name, kap))
    assert name not in lionk.kappa.available()


# ---------------------------------------------------------------------------------------------
# Counters of the state.


@pytest.mark.parametrize(("field", "value", "exc"), [
    ("count", "1", TypeError), ("count", 1.5, TypeError), ("count", -1, ValueError),
    ("count", True, TypeError), ("count", np.zeros(2, np.int32), TypeError),
    ("skipped", -3, ValueError), ("skipped", "0", TypeError), ("skipped", 0.0, TypeError),
])
def test_state_counters(field, value, exc) -> None:
    """state.count / state.skipped of the wrong type or negative: a TypeError/ValueError naming
    state.count / state.skipped (count="1" failed inside `count + 1` naming neither; -1, 1.5 and
    skipped=-3 were accepted)."""
    params, grads = _problem()
    st = lionk.init(params)._replace(**{field: value})
    _raises(exc, f"state.{field}", fn=lambda: lionk.step(params, grads, st))


def test_state_counters_integer_arrays_accepted() -> None:
    """A NumPy integer or 0-d integer array count (what a jitted step returns) still works."""
    params, grads = _problem()
    st = lionk.init(params)._replace(count=np.int64(3), skipped=np.asarray(2, np.int32))
    _, new = lionk.step(params, grads, st)
    assert int(new.count) == 4 and int(new.skipped) == 2


# ---------------------------------------------------------------------------------------------
# Dtypes: float16, bfloat16, float32 and float64 only.


def test_torch_float8_params() -> None:
    """torch float8 params were accepted by lionk.init / lionk.LionK (torch calls them floating
    but has no arithmetic for them): TypeError naming the leaf and the dtype."""
    torch = pytest.importorskip("torch")
    p = {"w": torch.zeros(3).to(torch.float8_e4m3fn)}
    _raises(TypeError, "params['w']", "float8_e4m3fn", fn=lambda: lionk.init(p))
    _raises(TypeError, "params['w']", "float8_e4m3fn", fn=lambda: lionk.LionK(p, lr=0.1))
    st = lionk.State(0, {"w": torch.zeros(3)}, 0)
    _raises(TypeError, "params['w']", "float8_e4m3fn", fn=lambda: lionk.step(p, p, st))


def test_torch_state_dtype_float8() -> None:
    """state_dtype="float8_e4m3fn" (or the torch dtype) for torch params was accepted: TypeError
    naming state_dtype."""
    torch = pytest.importorskip("torch")
    p = {"w": torch.zeros(3)}
    _raises(TypeError, "state_dtype", "float8_e4m3fn",
            fn=lambda: lionk.init(p, state_dtype="float8_e4m3fn"))
    _raises(TypeError, "state_dtype", "float8_e4m3fn",
            fn=lambda: lionk.init(p, state_dtype=torch.float8_e4m3fn))


def test_numpy_state_dtype_float8_guard() -> None:
    """Guard: NumPy has no float8: ValueError naming state_dtype (already so)."""
    _raises(ValueError, "state_dtype", "float8_e4m3fn",
            fn=lambda: lionk.init(np.zeros(3, np.float32), state_dtype="float8_e4m3fn"))


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize <= 8, reason="longdouble is float64 here")
def test_numpy_longdouble() -> None:
    """NumPy float128/longdouble params (platform-dependent, exact nowhere) were accepted:
    TypeError naming the leaf and the dtype, from init, step and LionK, and as state_dtype."""
    p = {"w": np.zeros(3, np.longdouble)}
    name = np.dtype(np.longdouble).name
    _raises(TypeError, "params['w']", name, fn=lambda: lionk.init(p))
    _raises(TypeError, "params['w']", name, fn=lambda: lionk.LionK(p, lr=0.1))
    _raises(TypeError, "params['w']", name,
            fn=lambda: lionk.step(p, p, lionk.State(0, {"w": np.zeros(3)}, 0)))
    _raises(TypeError, "state_dtype", name,
            fn=lambda: lionk.init({"w": np.zeros(3)}, state_dtype=np.longdouble))


@pytest.mark.parametrize("value", [3, 3.0, True, [np.float32]])
def test_state_dtype_not_a_dtype(value) -> None:
    """state_dtype=3 failed with numpy's "Cannot interpret '3' as a data type": TypeError naming
    state_dtype and the value."""
    _raises(TypeError, "state_dtype", fn=lambda: lionk.init(np.zeros(3, np.float32), state_dtype=value))
    _raises(TypeError, "state_dtype",
            fn=lambda: lionk.LionK(np.zeros(3, np.float32), lr=0.1, state_dtype=value))


@pytest.mark.parametrize("value", ["float16", "float32", "float64", np.float32, np.dtype("float16")])
def test_state_dtype_supported(value) -> None:
    """The four supported dtypes, as names, NumPy types or dtype objects, still work."""
    st = lionk.init(np.zeros(3, np.float32), state_dtype=value)
    assert st.momentum.dtype == np.dtype(value)


# ---------------------------------------------------------------------------------------------
# Stride-0 params: elements sharing memory.


def test_stride_zero_torch_param_lionk() -> None:
    """A torch param from expand() (stride 0) was accepted by lionk.LionK, whose step then failed
    in torch's in-place write: ValueError at construction naming the leaf and the strides."""
    torch = pytest.importorskip("torch")
    x = torch.zeros(1).expand(4)
    _raises(ValueError, "params['w']", "stride", "expand", fn=lambda: lionk.LionK({"w": x}, lr=0.1))
    lionk.LionK({"w": x.clone()}, lr=0.1)  # a copy is fine


def test_stride_zero_numpy_param_lionk() -> None:
    """A writeable NumPy array with a stride-0 dimension (as_strided): ValueError naming it (its
    in-place update would keep the last element's value only)."""
    base = np.zeros(1, np.float32)
    x = np.lib.stride_tricks.as_strided(base, shape=(4,), strides=(0,), writeable=True)
    _raises(ValueError, "params[0]", "stride", fn=lambda: lionk.LionK([x], lr=0.1))


def test_stride_zero_torch_param_torch_adapter() -> None:
    """lionk.torch.LionK with an expand()ed param: ValueError naming param_groups[0]['params'][0]
    at construction (was accepted; the step then failed inside torch)."""
    torch = pytest.importorskip("torch")
    import lionk.torch as lt

    p = torch.nn.Parameter(torch.zeros(1).expand(4))
    _raises(ValueError, "param_groups[0]['params'][0]", "stride", fn=lambda: lt.LionK([p], lr=0.1))


def test_pure_step_accepts_stride_zero_params() -> None:
    """lionk.step writes nothing: an expanded (read-only) param is fine there."""
    x = np.broadcast_to(np.float32(0.5), (3,))
    new, _ = lionk.step(x, np.ones(3, np.float32), lionk.init(x), lr=0.1)
    np.testing.assert_array_equal(new, np.float32(0.5) - np.float32(0.1))


# ---------------------------------------------------------------------------------------------
# Mixed int/str dict keys.


def _ref_sign_step(x, g, m, lr, b1, b2, wd):
    x64, g64, m64 = (np.asarray(a, np.float64) for a in (x, g, m))
    c = b1 * m64 + (1 - b1) * g64
    return ((1 - lr * wd) * x64 - lr * np.sign(c)).astype(x.dtype), (b2 * m64 + (1 - b2) * g64).astype(x.dtype)


def test_mixed_int_str_keys_step_and_lionk() -> None:
    """Guard (trees on optree): a dict with int and str keys works in lionk.step and lionk.LionK,
    comes back with its keys, matches a float64 reference, and its state dict round-trips."""
    params = {1: np.array([0.5, -0.5], np.float32), "b": np.array([2.0], np.float32),
              0: np.array([-1.0, 1.0, 0.0], np.float32)}
    grads = {1: np.array([0.3, 0.1], np.float32), "b": np.array([-0.2], np.float32),
             0: np.array([1.0, -1.0, 0.5], np.float32)}
    new, st = lionk.step(params, grads, lionk.init(params), lr=0.5, weight_decay=0.0)
    assert set(new) == {0, 1, "b"} and set(st.momentum) == {0, 1, "b"}
    for k in params:
        rx, rm = _ref_sign_step(params[k], grads[k], np.zeros_like(params[k]), 0.5, 0.9, 0.99, 0.0)
        np.testing.assert_array_equal(new[k], rx)
        np.testing.assert_array_equal(st.momentum[k], rm)
    live = {k: v.copy() for k, v in params.items()}
    opt = lionk.LionK(live, lr=0.5)
    opt.step(grads)
    for k in params:
        np.testing.assert_array_equal(live[k], new[k])
    sd = opt.state_dict()
    assert set(sd["momentum"]) == set(lionk.tree.leaf_paths(params))
    opt2 = lionk.LionK({k: v.copy() for k, v in params.items()}, lr=0.5)
    opt2.load_state_dict(sd)
    for k in params:
        assert_bitwise_equal(opt2.state.momentum[k], opt.state.momentum[k], f"momentum[{k!r}]")


# ---------------------------------------------------------------------------------------------
# lyapunov.


@pytest.mark.parametrize(("kw", "fragment"), [
    ({"weight_decay": 0.0}, "weight_decay"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"lr": -0.01}, "lr"),
    ({"betas": (1.0, 0.99)}, "betas[0]"),
    ({"betas": (0.9, 1.5)}, "betas[1]"),
    ({"betas": (-0.1, 0.99)}, "betas[0]"),
    ({"lr": 1.0, "weight_decay": 2.0}, "lr*weight_decay"),
])
def test_lyapunov_coefficient_outside_the_guarantee(kw, fragment) -> None:
    """lyapunov.coefficient returned a number for wd = 0, lr < 0 and betas outside [0, 1) (only
    lr*wd >= 1 was refused): ValueError naming the argument."""
    args = {"lr": 0.01, "betas": (0.9, 0.99), "weight_decay": 0.1, **kw}
    _raises(ValueError, "coefficient", fragment, fn=lambda: lionk.lyapunov.coefficient(**args))


def test_lyapunov_coefficient_value() -> None:
    """The formula is unchanged: c = ε'·b1 / (ε'·λ·(1 − b1) + 1 − b2), ε' = ε/(1 − ελ); lr = 0
    (the last lr of a schedule that anneals to 0) gives c = 0."""
    lr, b1, b2, wd = 0.01, 0.9, 0.99, 0.5
    ep = lr / (1 - lr * wd)
    assert lionk.lyapunov.coefficient(lr=lr, betas=(b1, b2), weight_decay=wd) == ep * b1 / (ep * wd * (1 - b1) + 1 - b2)
    assert lionk.lyapunov.coefficient(lr=0.0, betas=(b1, b2), weight_decay=wd) == 0.0


def test_lyapunov_discrete_mismatched_shapes() -> None:
    """discrete(params, momentum) of other shapes failed with numpy's broadcast message (or
    broadcast silently, (3,) against (1,)): ValueError naming the leaf and both shapes."""
    kw = {"lr": 0.01, "betas": (0.9, 0.99), "weight_decay": 0.5}
    x = {"a": np.zeros(3), "b": np.zeros(2)}
    _raises(ValueError, "discrete", "momentum['b']", "(2,)", "(1,)",
            fn=lambda: lionk.lyapunov.discrete(0.0, x, {"a": np.zeros(3), "b": np.zeros(1)}, **kw))
    _raises(ValueError, "discrete", "momentum",
            fn=lambda: lionk.lyapunov.discrete(0.0, x, {"a": np.zeros(3)}, **kw))


def test_lyapunov_bound_trees_of_different_lengths() -> None:
    """bound(before, after) on lists of different lengths silently summed over the shorter:
    ValueError naming params_after."""
    _raises(ValueError, "bound", "params_after",
            fn=lambda: lionk.lyapunov.bound([np.ones(3), np.ones(3)], [np.zeros(3)], 1.0))
    _raises(ValueError, "bound", "params_after[0]", "(3,)", "(2,)",
            fn=lambda: lionk.lyapunov.bound([np.ones(3)], [np.zeros(2)], 1.0))
    assert lionk.lyapunov.bound([np.ones(3)], [np.zeros(3)], 2.0) == 3.0


# ---------------------------------------------------------------------------------------------
# optax: lr*wd with 0-d arrays (issue 10 case 8), through the shared check.


@pytest.mark.parametrize(("lr", "wd"), [("array", "array"), ("array", "float"), ("float", "array")])
def test_optax_decay_product_with_0d_arrays(lr, wd) -> None:
    """lion_k(jnp.array(10.), weight_decay=jnp.array(1.)) skipped the lr*wd < 1 check (decay
    factor 1 - 10 = -9): ValueError naming learning_rate*weight_decay."""
    jnp = pytest.importorskip("jax.numpy")
    lo = pytest.importorskip("lionk.optax")
    lr_v = jnp.asarray(10.0) if lr == "array" else 10.0
    wd_v = jnp.asarray(1.0) if wd == "array" else 1.0
    _raises(ValueError, "learning_rate*weight_decay", fn=lambda: lo.lion_k(lr_v, weight_decay=wd_v))
    lo.lion_k(jnp.asarray(0.01), weight_decay=jnp.asarray(1.0))  # 0.01 < 1: fine


# ---------------------------------------------------------------------------------------------
# One module: the rules are the same from every front-end.


CASES = [("lr", "0.01", TypeError), ("lr", -1.0, ValueError), ("lr", np.asarray(True), TypeError),
         ("weight_decay", -0.5, ValueError), ("weight_decay", "0", TypeError),
         ("betas", (1.0, 0.9), ValueError), ("betas", "00", TypeError)]


@pytest.mark.parametrize(("arg", "value", "exc"), CASES)
def test_same_rule_everywhere(arg, value, exc) -> None:
    """One bad hyper-parameter gets the same exception type, naming the same argument, from
    lionk.step, lionk.LionK, lionk.torch.LionK and lionk.minimize (their shared checks live in
    lionk.core.validation)."""
    torch = pytest.importorskip("torch")
    import lionk.torch as lt

    params, grads = _problem()
    kw = {"lr": 0.01, "betas": (0.9, 0.99), "weight_decay": 0.1, arg: value}
    name = "betas" if arg == "betas" else arg
    _raises(exc, name, fn=lambda: lionk.step(params, grads, lionk.init(params), **kw))
    _raises(exc, name, fn=lambda: lionk.LionK(params, **kw))
    _raises(exc, name, fn=lambda: lt.LionK([torch.nn.Parameter(torch.zeros(2))], **kw))
    mkw = {k: v for k, v in kw.items() if k != "weight_decay"}
    if arg == "weight_decay":
        mkw["weight_decay"] = value
    else:
        mkw["radius"] = 10.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _raises(exc, name, fn=lambda: lionk.minimize(lambda x: float(np.sum(x * x)), np.zeros(2),
                                                     jac=lambda x: 2 * x, maxiter=2, **mkw))


def test_validation_module_functions() -> None:
    """The shared checks themselves: names in messages, traced values passed through, the
    supported dtypes, the counters."""
    from lionk.core import validation

    assert validation.FLOAT_DTYPES == ("float16", "bfloat16", "float32", "float64")
    assert validation.real("x", np.float32(0.5)) == 0.5
    assert validation.learning_rate(0.0, allow_zero=True) == 0.0
    _raises(ValueError, "lr", fn=lambda: validation.learning_rate(0.0))
    _raises(ValueError, "maxiter", "0", fn=lambda: validation.counter("maxiter", 0, minimum=1))
    assert validation.counter("n", np.int16(3)) == 3
    _raises(ValueError, "execution", "'fast'", fn=lambda: validation.execution("fast"))
    _raises(ValueError, "nan_policy", fn=lambda: validation.nan_policy(None))
    _raises(ValueError, "chunk_size", fn=lambda: validation.optional_positive_int("chunk_size", 0))
    assert validation.optional_positive_int("threads", None) is None
    assert validation.supported_float(np.dtype("float16"))
    assert not validation.supported_float(np.dtype("int8"))
    assert validation.kappa_from_spec(validation.kappa_to_spec(lionk.kappa.get("huber", delta=0.5))) \
        == lionk.kappa.get("huber", delta=0.5)
    jax = pytest.importorskip("jax")
    seen = []

    def f(lr):
        seen.append(validation.learning_rate(lr))  # traced: returned unchecked
        return lr

    jax.jit(f)(jax.numpy.asarray(-1.0))
    assert not isinstance(seen[0], float)


def test_no_repeated_checks_in_lionk() -> None:
    """The rules are stated once: no module of lionk but core/validation.py spells out the
    lr*weight_decay comparison, the nan_policy / execution tuples or the float dtype list."""
    import pathlib

    root = pathlib.Path(lionk.__file__).parent
    pats = [re.compile(r"\*\s*\w*(wd|weight_decay|lam)\w*\s*<\s*1\.0"),
            re.compile(r"\(\s*\"propagate\",\s*\"raise\",\s*\"skip\"\s*\)"),
            re.compile(r"\(\s*\"auto\",\s*\"eager\",\s*\"chunked\""),
            re.compile(r"torch\.float16,\s*torch\.bfloat16,\s*torch\.float32")]
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "validation.py":
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(root)}: {p.pattern}" for p in pats if p.search(text)]
    assert not offenders, offenders


def test_ordered_dict_container_kept() -> None:
    """(Context for the state-dict tests) LionK keeps an OrderedDict's insertion order."""
    p = OrderedDict([("b", np.zeros(2, np.float32)), ("a", np.zeros(3, np.float32))])
    assert lionk.tree.leaf_paths(p) == ["['b']", "['a']"]
