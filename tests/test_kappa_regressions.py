"""Regressions for issue 10, cases 5-7 and the κ validation gaps (each fails on the code before it).

* Case 5 — κ identity: two instances of one user ``Kappa`` subclass that differ only in an
  attribute outside ``params`` must not share the recorded-program, kernel or compile caches:
  ``Scaled(100.0)`` after ``Scaled(1.0)`` replayed the first one's program (−0.0005 instead of
  −0.05) on the chunked and compiled paths.
* Case 6 — ``l2``/``lp`` (both scopes) with ``nan_policy="propagate"``: a NaN gradient reaches x
  and m (``where(norm > 0, ...)`` turned the NaN direction into 0: x only decayed).
* Case 7 — ``kappa.validate`` probes 0-d to 3-d arrays in float64 and float32 (a grad that
  flattens was registered), and the step checks every κ output's shape and dtype before anything
  is written (a (3, 1) param came back (3, 3)), with a ValueError naming the κ and the leaf.
"""

from __future__ import annotations

import importlib.util
import math

import array_api_compat
import numpy as np
import pytest

import lionk
from lionk.kappa import Kappa, KappaValidationError, exact_sign

from ._util import assert_bitwise_equal, textbook

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_JAX = importlib.util.find_spec("jax") is not None


# ---------------------------------------------------------------------------------------------
# Case 5: κ identity.


class Scaled(Kappa):
    """s·sign: its scale lives in an attribute, not in ``params`` (as a user would write it)."""

    def __init__(self, s: float) -> None:
        super().__init__("scaled", exact=True, separable=True)
        self.s = float(s)

    def grad(self, y):
        return exact_sign(y) * self.s


def test_user_subclass_instances_differing_outside_params_are_not_equal() -> None:
    a, b = Scaled(1.0), Scaled(100.0)
    assert a != b
    assert a == a and hash(a) == hash(a)
    # built-ins still compare by their parameters (the caches share their programs)
    assert lionk.kappa.get("huber", delta=0.5) == lionk.kappa.get("huber", delta=0.5)
    assert hash(lionk.kappa.get("huber", delta=0.5)) == hash(lionk.kappa.get("huber", delta=0.5))
    assert lionk.kappa.get("huber", delta=0.5) != lionk.kappa.get("huber", delta=2.0)
    assert lionk.kappa.get("l2", scope="global") != lionk.kappa.get("l2")


def test_subclass_declaring_params_complete_compares_by_params() -> None:
    class ByParams(Kappa):
        params_complete = True

        def __init__(self, s: float) -> None:
            super().__init__("by-params", separable=True, params={"s": float(s)})

        def grad(self, y):
            return exact_sign(y) * self.params["s"]

    assert ByParams(2.0) == ByParams(2.0) and hash(ByParams(2.0)) == hash(ByParams(2.0))
    assert ByParams(2.0) != ByParams(3.0)

    class Child(ByParams):  # not inherited: a subclass may add state again
        pass

    assert Child(2.0) != Child(2.0)


def _numpy_paths() -> list[str]:
    from lionk.execution import kernels

    paths = ["eager", "chunked"]
    if kernels.numba_available():
        paths.append("compiled")
    return paths


@pytest.mark.parametrize("execution", _numpy_paths())
def test_second_instance_is_not_replayed_numpy(execution: str) -> None:
    """The reproduction of the issue, on every NumPy path: lr·s per coordinate, s = 1 then 100."""
    n = 1 << 14  # big enough for the chunked path to record a program
    for s in (1.0, 100.0, 1.0):
        x = np.zeros(n)
        opt = lionk.LionK(x, lr=0.0005, kappa=Scaled(s), execution=execution)
        opt.step(np.ones(n))
        assert opt.last_execution == execution
        np.testing.assert_array_equal(x, np.full(n, -0.0005 * s))


def test_second_instance_is_not_replayed_pure_step() -> None:
    x = np.zeros(4)
    state = lionk.init(x)
    for s in (1.0, 100.0):
        new, _ = lionk.step(x, np.ones(4), state, lr=0.0005, kappa=Scaled(s))
        np.testing.assert_array_equal(new, np.full(4, -0.0005 * s))


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
@pytest.mark.parametrize("execution", ["eager", "chunked"])
def test_second_instance_is_not_replayed_torch(execution: str) -> None:
    import torch

    for s in (1.0, 100.0):
        w = torch.zeros(1 << 10, requires_grad=True)
        opt = lionk.torch.LionK([w], lr=0.0005, kappa=Scaled(s), execution=execution)
        w.grad = torch.ones_like(w)
        opt.step()
        assert torch.equal(w.detach(), torch.full_like(w, -0.0005 * s))


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_second_instance_is_not_replayed_torch_compiled() -> None:
    """torch.compile's function cache is keyed by the κ (lionk.execution.paths)."""
    import torch

    for s in (1.0, 100.0):
        w = torch.zeros(64)
        opt = lionk.LionK(w, lr=0.0005, kappa=Scaled(s), execution="compiled")
        opt.step(torch.ones(64))
        assert torch.equal(w, torch.full_like(w, -0.0005 * s))


@pytest.mark.skipif(not HAVE_JAX, reason="jax not installed")
def test_second_instance_is_not_replayed_under_jax_jit() -> None:
    """κ is a static argument under jax.jit: jit's cache compares static arguments by equality."""
    import jax
    import jax.numpy as jnp

    step = jax.jit(lionk.step, static_argnames=("kappa",))
    x = jnp.zeros(4)
    state = lionk.init(x)
    for s in (1.0, 100.0):
        new, _ = step(x, jnp.ones(4), state, lr=0.0005, kappa=Scaled(s))
        np.testing.assert_allclose(np.asarray(new), -0.0005 * s, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Case 6: NaN through l2 and lp with nan_policy="propagate".

NORM_KAPPAS = [("l2", {}), ("lp", {"p": 3.0}), ("lp", {"p": 1.5})]


@pytest.mark.parametrize(("name", "params"), NORM_KAPPAS)
@pytest.mark.parametrize("scope", ["tensor", "global"])
def test_nan_gradient_reaches_x_and_m(name: str, params: dict, scope: str) -> None:
    k = lionk.kappa.get(name, **params, scope=scope)
    x = {"a": np.array([0.5, -0.25, 1.0]), "b": np.array([0.75, 0.125])}
    g = {"a": np.array([1.0, np.nan, -2.0]), "b": np.array([0.5, -1.0])}
    new, state = lionk.step(x, g, lionk.init(x), lr=0.1, weight_decay=0.1, kappa=k)
    # the leaf whose norm is NaN gets a NaN direction in every element (its norm is NaN); with
    # one norm over the tree, every leaf does
    assert np.all(np.isnan(new["a"]))
    assert np.isnan(state.momentum["a"][1])
    if scope == "global":
        assert np.all(np.isnan(new["b"]))
    else:
        assert np.all(np.isfinite(new["b"]))


@pytest.mark.parametrize(("name", "params"), NORM_KAPPAS)
@pytest.mark.parametrize("scope", ["tensor", "global"])
def test_norm_kappa_finite_and_zero_inputs_unchanged(name: str, params: dict, scope: str) -> None:
    """The fix changes nothing else: ∇K(0) = 0, and finite inputs give the hand-written float64
    formula bit for bit (l2: y·(1/‖y‖) written as y/‖y‖; lp: sign(y)·(|y|/‖y‖_p)^(p−1)), for
    the textbook form (scale=1); ∇K(0) = 0 at the default scale="rms" too."""
    k = textbook(name, **params, scope=scope)
    zero = [np.zeros(3), np.zeros(2)]
    for kap in (k, lionk.kappa.get(name, **params, scope=scope)):
        for u in kap.tree_grad(zero):
            assert_bitwise_equal(np.asarray(u), np.zeros_like(u), "grad at 0")
    y = np.array([3.0, -4.0, 0.5])
    (u,) = k.tree_grad([y])
    if name == "l2":
        want = y / np.sqrt(np.sum(y * y))
    else:
        p = params["p"]
        norm = np.power(np.sum(np.power(np.abs(y), p)), 1.0 / p)
        want = np.sign(y) * np.power(np.abs(y) / norm, p - 1.0)
    assert_bitwise_equal(np.asarray(u), want, f"{name} {scope}")


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
@pytest.mark.parametrize(("name", "params"), NORM_KAPPAS)
def test_nan_gradient_reaches_params_torch_adapter(name: str, params: dict) -> None:
    import torch

    w = torch.tensor([0.5, -0.25, 1.0], dtype=torch.float64, requires_grad=True)
    opt = lionk.torch.LionK([w], lr=0.1, weight_decay=0.1, kappa=lionk.kappa.get(name, **params))
    w.grad = torch.tensor([1.0, math.nan, -2.0], dtype=torch.float64)
    opt.step()
    assert torch.all(torch.isnan(w.detach()))
    assert torch.isnan(opt.state[w]["exp_avg"][1])


# ---------------------------------------------------------------------------------------------
# Case 7: validate probes shapes and dtypes; the step checks κ outputs before writing.


def _sign_value(y):
    xp = array_api_compat.array_namespace(y)
    return xp.sum(xp.abs(y))


def _box_conjugate(z):
    xp = array_api_compat.array_namespace(z)
    d = xp.max(xp.maximum(xp.abs(z) - 1.0, xp.zeros_like(z))) if z.size else xp.asarray(0.0)
    return xp.where(d > 0, xp.full_like(d, xp.inf), xp.zeros_like(d))


def _flattening_grad(y):
    xp = array_api_compat.array_namespace(y)
    return xp.reshape(exact_sign(y), (-1,))


def _promoting_grad(y):
    xp = array_api_compat.array_namespace(y)
    return xp.astype(exact_sign(y), xp.float64)


def _sign_like(name, grad=exact_sign, value=_sign_value):
    return Kappa(name, grad=grad, value=value, conjugate=_box_conjugate, separable=True)


@pytest.mark.parametrize(("grad", "fragment"), [
    (_flattening_grad, "shape ()"),
    (_promoting_grad, "dtype float32"),
    (lambda y: [float(v) for v in np.ravel(y)], "must return an array"),
])
def test_register_refuses_a_grad_that_changes_shape_or_dtype(grad, fragment) -> None:
    k = _sign_like("bad-shape", grad=grad)
    with pytest.raises(KappaValidationError, match="grad") as info:
        lionk.kappa.register("bad-shape", k)
    assert fragment in str(info.value)
    assert "bad-shape" not in lionk.kappa.available()


def test_register_refuses_a_value_that_is_not_a_number() -> None:
    k = _sign_like("vector-value", value=lambda y: np.abs(y))
    with pytest.raises(KappaValidationError, match="value must return a 0-d array"):
        lionk.kappa.register("vector-value", k)
    assert "vector-value" not in lionk.kappa.available()


def test_register_refuses_what_is_not_a_kappa_by_name() -> None:
    with pytest.raises(TypeError, match=r"register: expected a lionk.kappa.Kappa or a factory.*5"):
        lionk.kappa.register("x", 5)
    with pytest.raises(TypeError, match="validate: expected a lionk.kappa.Kappa"):
        lionk.kappa.validate("sign")


@pytest.mark.parametrize("value", [True, "1", b"1", np.bool_(True), np.array([1.0, 2.0])])
def test_kappa_parameters_must_be_real_numbers(value) -> None:
    # a value of the wrong type is a TypeError; an array with a shape, a ValueError (a str other
    # than "auto" names both accepted forms)
    exc = ValueError if getattr(value, "shape", ()) != () else TypeError
    fragment = ("kappa 'huber': delta must be a number > 0 or 'auto'" if isinstance(value, str)
                else "kappa 'huber': delta: expected a")
    with pytest.raises(exc, match=fragment):
        lionk.kappa.get("huber", delta=value)
    # 0-d arrays and NumPy floats are numbers
    assert lionk.kappa.get("huber", delta=np.float64(0.5)).params == {"delta": 0.5}
    assert lionk.kappa.get("huber", delta=np.array(0.5)).params == {"delta": 0.5}


class Flat(Kappa):
    """A κ used without registration whose grad flattens (what validate now refuses)."""

    def __init__(self) -> None:
        super().__init__("flat", exact=True, separable=True)

    def grad(self, y):
        return _flattening_grad(y)


class Promote(Kappa):
    def __init__(self) -> None:
        super().__init__("promote", exact=True, separable=True)

    def grad(self, y):
        xp = array_api_compat.array_namespace(y)
        return xp.astype(exact_sign(y), xp.float32)


def _tree():
    return {"a": np.array([0.5, -1.0, 2.0]), "b": np.array([[0.25], [-0.5], [1.0]])}


def test_step_refuses_a_kappa_output_of_another_shape() -> None:
    x = _tree()
    g = {"a": np.ones(3), "b": np.ones((3, 1))}
    state = lionk.init(x)
    with pytest.raises(ValueError, match=r"kappa 'flat' at params\['b'\]: grad must keep the shape"
                                         r".*expected shape \(3, 1\), received \(3,\)"):
        lionk.step(x, g, state, lr=0.1, kappa=Flat())


def test_step_refuses_a_kappa_output_of_another_dtype() -> None:
    x = _tree()
    g = {"a": np.ones(3), "b": np.ones((3, 1))}
    with pytest.raises(ValueError, match=r"kappa 'promote' at params\['a'\]: grad must keep the "
                                         r"dtype.*expected float64, received float32"):
        lionk.step(x, g, lionk.init(x), lr=0.1, kappa=Promote())


def test_step_refuses_a_tree_grad_with_a_missing_leaf() -> None:
    class Short(Kappa):
        def __init__(self) -> None:
            super().__init__("short")

        def tree_grad(self, leaves):
            return [exact_sign(y) for y in leaves][:-1]

    x = _tree()
    with pytest.raises(ValueError, match=r"kappa 'short': tree_grad must return one array per "
                                         r"leaf \(2\); received 1"):
        lionk.step(x, {"a": np.ones(3), "b": np.ones((3, 1))}, lionk.init(x), lr=0.1,
                   kappa=Short())


@pytest.mark.parametrize("kappa", [Flat(), Promote()], ids=["shape", "dtype"])
def test_lionk_eager_writes_nothing_for_a_malformed_kappa_output(kappa) -> None:
    x = _tree()
    before = {k: v.copy() for k, v in x.items()}
    opt = lionk.LionK(x, lr=0.1, kappa=kappa, execution="eager")
    opt.state.momentum["a"][...] = 0.5  # a nonzero momentum, to see it unchanged
    m_before = {k: v.copy() for k, v in opt.state.momentum.items()}
    with pytest.raises(ValueError, match=f"kappa '{kappa.name}' at params\\['"):
        opt.step({"a": np.ones(3), "b": np.ones((3, 1))})
    for k in x:
        assert_bitwise_equal(x[k], before[k], f"params[{k!r}]")
        assert_bitwise_equal(opt.state.momentum[k], m_before[k], f"momentum[{k!r}]")
    assert opt.state.count == 0


@pytest.mark.parametrize("execution", ["chunked"])
def test_lionk_chunked_writes_nothing_for_a_promoting_kappa(execution: str) -> None:
    """The chunked path calls the same update per chunk; the check fails on the first chunk,
    before its write. (A grad that flattens is harmless there: chunks are 1-D.)"""
    x = {"a": np.linspace(-1.0, 1.0, 1 << 14), "b": np.linspace(1.0, 2.0, 1 << 14)}
    before = {k: v.copy() for k, v in x.items()}
    opt = lionk.LionK(x, lr=0.1, kappa=Promote(), execution=execution, threads=1)
    with pytest.raises(ValueError, match="kappa 'promote' at .*: grad must keep the dtype"):
        opt.step({k: np.ones_like(v) for k, v in x.items()})
    for k in x:
        assert_bitwise_equal(x[k], before[k], f"params[{k!r}]")
        assert_bitwise_equal(opt.state.momentum[k], np.zeros_like(x[k]), f"momentum[{k!r}]")


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_torch_step_refuses_a_kappa_output_of_another_shape() -> None:
    import torch

    w = torch.zeros((3, 1), dtype=torch.float64, requires_grad=True)
    opt = lionk.torch.LionK([w], lr=0.1, kappa=Flat(), execution="eager")
    w.grad = torch.ones_like(w)
    with pytest.raises(ValueError, match="kappa 'flat' at .*: grad must keep the shape"):
        opt.step()
    assert torch.equal(w.detach(), torch.zeros((3, 1), dtype=torch.float64))
