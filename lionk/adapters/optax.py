r"""Lion-κ as an optax ``GradientTransformation``: :func:`lion_k`.

::

    import optax
    from lionk.optax import lion_k

    opt = optax.chain(optax.clip_by_global_norm(1.0),
                      lion_k(1e-3, weight_decay=0.1, kappa="sign"))
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)    # params are required
    params = optax.apply_updates(params, updates)

The new parameters and momentum are computed by :func:`lionk._step.update_leaves`, the one place
where lionk writes the Lion-κ update; this module only adapts it to optax's protocol:

* ``update`` returns ``updates = x' - x`` so that ``optax.apply_updates(params, updates)`` gives
  the new parameters ``x'`` (to within one rounding: ``x + (x' - x)`` is ``x'`` bitwise only
  where ``x'`` and ``x`` are within a factor 2 of each other; see ``docs/optax.md``);
* Python-float hyper-parameters stay Python floats inside a ``jax.jit`` trace: their
  coefficients (``1 - b1``, ``1 - lr*wd``, ...) are computed once in double precision by
  :func:`lionk._step.make_hyper`, so each is rounded once to the params' dtype (the exact path);
* schedules (callables of the step count) and 0-d arrays (e.g. from ``optax.inject_hyperparams``)
  give traced coefficients, computed from the value in float64 (float32 without
  ``jax_enable_x64``) and cast to each param's dtype; under ``jax.jit`` that is the ulp tier.

This module imports jax and optax; ``import lionk`` does not import it (``lionk.optax`` is loaded
on first attribute access).
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax import ScalarOrSchedule

from ..core import kappa as _kappa
from ..core import kappa_matrix as _kappa_matrix
from ..core import validation as _check
from ..core.array_api import dtype_name
from ..core.step import (
    Hyper,
    _check_floating,
    _check_leaves,
    check_trees,
    coefficients,
    make_hyper,
    update_leaves,
)
from ..core.trees import flatten

__all__ = ["lion_k", "LionKState"]

_NO_PARAMS_MSG = (
    "params: lion_k's update needs the current parameters (the new parameters and the decoupled "
    "weight decay are computed from them); expected a tree of arrays, received None. Call "
    "update(grads, state, params)."
)


class LionKState(NamedTuple):
    """State of :func:`lion_k` (a pytree: it passes through ``jax.jit``).

    Attributes:
        count: the number of updates applied, a 0-d ``int32`` array; schedules are evaluated at
            ``count`` (0 for the first update), as in optax.
        mu: the momentum ``m`` (exponential average of gradients), a tree of the params'
            structure and shapes, dtype ``mu_dtype`` or each param's own.
    """

    count: Any
    mu: Any


# ---------------------------------------------------------------------------------------------
# Hyper-parameters: a Python number (static), a 0-d array (dynamic) or a schedule (dynamic).


class _Spec(NamedTuple):
    kind: str  # "static" (Python float), "array" (0-d array) or "schedule" (callable of count)
    value: Any


def _is_concrete_array(a: Any) -> bool:
    return not isinstance(a, jax.core.Tracer)


def _spec(name: str, value: Any, *, schedule_ok: bool) -> _Spec:
    what = "a real number, a 0-d array" + (" or a schedule (callable of the step count)"
                                           if schedule_ok else "")
    if isinstance(value, bool) or value is None:
        raise TypeError(f"{name}: expected {what}; received {value!r}")
    if isinstance(value, numbers.Real) and not isinstance(value, (np.ndarray, jax.Array)):
        return _Spec("static", float(value))
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        if tuple(np.shape(value)) != ():
            raise ValueError(f"{name}: expected a scalar (0-d array); received shape "
                             f"{tuple(np.shape(value))}")
        if not (jnp.issubdtype(value.dtype, jnp.floating)
                or jnp.issubdtype(value.dtype, jnp.integer)):
            raise TypeError(f"{name}: expected a real 0-d array; received dtype "
                            f"{dtype_name(value.dtype)}")
        return _Spec("array", value)
    if callable(value):
        if schedule_ok:
            return _Spec("schedule", value)
        raise TypeError(f"{name}: expected {what}; received the callable {value!r} "
                        "(schedules are accepted for learning_rate and weight_decay only)")
    raise TypeError(f"{name}: expected {what}; received {type(value).__name__} {value!r}")


def _check_static(name: str, v: float, *, positive: bool = False, beta: bool = False) -> None:
    """Checks of a known value, with lion_k's argument names (the core says lr, betas[0], ...)."""
    if beta:
        _check.beta(name, v)
    elif positive:
        _check.learning_rate(v, name=name)
    else:
        _check.weight_decay(v, name=name)


def _check_array(name: str, spec: _Spec, *, beta: bool = False) -> None:
    """A concrete 0-d array is checked by value (lr = 0 allowed: warm-up schedules start there);
    a traced one cannot be."""
    if spec.kind != "array" or not _is_concrete_array(spec.value):
        return
    _check_static(name, float(spec.value), beta=beta)


def _value_at(name: str, spec: _Spec, count: Any) -> Any:
    """The hyper-parameter for the update at step ``count``: a Python float or a 0-d array."""
    if spec.kind == "static":
        return spec.value
    v = spec.value(count) if spec.kind == "schedule" else spec.value
    v = jnp.asarray(v)
    if v.shape != ():
        raise ValueError(f"{name}: expected the schedule to return a scalar; received shape "
                         f"{tuple(v.shape)}")
    # Coefficients such as 1 - lr*wd are computed from the value in the widest float JAX allows
    # (float64 under jax_enable_x64, like the Python doubles of the exact path), then rounded
    # once to each param's dtype. The value itself stays what the schedule returned (optax's
    # schedules evaluated at an int32 count return float32 even in x64 mode).
    return v.astype(jax.dtypes.canonicalize_dtype(jnp.float64))


# ---------------------------------------------------------------------------------------------
# Leaves: JAX arrays, or what optax.lion also takes as arrays (NumPy arrays, Python floats).


_ArrayLike = np.zeros(())  # stands for a ShapeDtypeStruct in the "is it an array" check


def _needs_conversion(a: Any) -> bool:
    return isinstance(a, (np.ndarray, np.generic, float, int)) and not isinstance(a, bool)


def _as_jax(a: Any) -> Any:
    """A JAX array for a NumPy array / scalar or a Python number; anything else unchanged (and
    refused, naming the leaf, by the checks that follow)."""
    return jnp.asarray(a) if _needs_conversion(a) else a


def _as_jax_tree(tree: Any) -> Any:
    """``tree`` with its NumPy / Python-number leaves as JAX arrays (the tree itself when it has
    none: the common case, no copy)."""
    leaves, treedef, _ = flatten(tree)
    if not any(_needs_conversion(a) for a in leaves):
        return tree
    return treedef.unflatten([_as_jax(a) for a in leaves])


# ---------------------------------------------------------------------------------------------
# Mask: which leaves get weight decay.


def _mask_flags(mask: Any, params: Any, num_leaves: int) -> list[bool]:
    """One bool per params leaf (flattening order) from a mask tree (or prefix) or callable."""
    tree = mask(params) if callable(mask) else mask
    try:
        full = jax.tree.map(lambda m, sub: jax.tree.map(lambda _: m, sub), tree, params)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            "mask: expected a tree of bools with the structure of params, or a prefix of it "
            f"(or a callable returning one); received {jax.tree.structure(tree)} for params "
            f"{jax.tree.structure(params)} ({exc})"
        ) from None
    with_path = jax.tree_util.tree_flatten_with_path(full)[0]
    if len(with_path) != num_leaves:  # pragma: no cover - guarded by the map above
        raise ValueError(f"mask: expected {num_leaves} flags; received {len(with_path)}")
    flags = []
    for path, m in with_path:
        where = f"mask (at params{jax.tree_util.keystr(path)})"
        if isinstance(m, jax.core.Tracer):
            raise TypeError(f"{where}: expected a static bool; received a traced array (build "
                            "the mask from the params' structure or shapes, not their values)")
        if isinstance(m, (bool, np.bool_)) or (
            isinstance(m, (np.ndarray, jax.Array)) and m.shape == () and m.dtype == bool
        ):
            flags.append(bool(m))
        else:
            raise TypeError(f"{where}: expected a bool; received {type(m).__name__} {m!r}")
    return flags


# ---------------------------------------------------------------------------------------------
# The transformation.


def lion_k(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.99,
    weight_decay: Any = 0.0,
    kappa: str | _kappa.Kappa = "sign",
    mask: Any = None,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""The Lion-κ optimizer as an optax transformation.

    Per leaf (``x`` param, ``g`` incoming update/gradient, ``m`` momentum)::

        c  = b1*m + (1 - b1)*g
        x' = (1 - lr*wd)*x - lr*∇K(c)           # decoupled weight decay, explicit
        m' = b2*m + (1 - b2)*g
        updates = x' - x                         # optax.apply_updates(x, updates) ≈ x'

    computed by :func:`lionk._step.update_leaves` (the one implementation of the math). With
    ``kappa="sign"`` this is Lion, ``optax.lion`` up to rounding (but note the defaults:
    ``optax.lion`` has ``weight_decay=1e-3``, ``lion_k`` has ``0.0``).

    Args:
        learning_rate: ε: a Python number > 0, a 0-d array, or a schedule (an optax schedule /
            any callable of the step count; it may return 0, e.g. at the start of a warm-up).
        b1: interpolation factor in [0, 1) (Python number or 0-d array).
        b2: momentum decay in [0, 1); b1 > b2 runs with a :class:`lionk.LionKWarning`.
        weight_decay: λ ≥ 0 (number, 0-d array or schedule); ``lr * weight_decay < 1``.
            Multiplied by the learning rate, as in ``optax.lion`` and PyTorch.
        kappa: a registered κ name or a :class:`lionk.kappa.Kappa` (static).
        mask: which leaves get weight decay, like ``optax.lion``'s ``mask``: a tree of bools of
            the params' structure (or a prefix of it), or a callable ``params -> such a tree``;
            ``True`` = decayed. The Lion-κ step itself applies to every leaf. Must be static.
        mu_dtype: dtype of the momentum (e.g. ``jnp.bfloat16``); default: each param's dtype.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; its ``update(updates, state, params)``
        requires ``params`` and returns ``(x' - x, LionKState)``.

    Python-float hyper-parameters stay Python floats inside ``jax.jit`` (coefficients computed
    once in double precision: the exact path); schedules and 0-d arrays give traced coefficients
    (not the bitwise tier). See ``docs/optax.md``.
    """
    lr_s = _spec("learning_rate", learning_rate, schedule_ok=True)
    b1_s = _spec("b1", b1, schedule_ok=False)
    b2_s = _spec("b2", b2, schedule_ok=False)
    wd_s = _spec("weight_decay", weight_decay, schedule_ok=True)
    for name, s, beta in (("learning_rate", lr_s, False), ("b1", b1_s, True),
                          ("b2", b2_s, True), ("weight_decay", wd_s, False)):
        if s.kind == "static":
            _check_static(name, s.value, positive=name == "learning_rate", beta=beta)
        else:
            _check_array(name, s, beta=beta)
    if lr_s.kind != "schedule" and wd_s.kind != "schedule":  # known values (0-d arrays too)
        _check.decay_product(lr_s.value, wd_s.value, names=("learning_rate", "weight_decay"))
    kap0 = _kappa.resolve(kappa)
    mu_dt = None
    if mu_dtype is not None:
        try:
            mu_dt = jnp.dtype(mu_dtype)
        except TypeError:
            raise TypeError(f"mu_dtype: expected a floating dtype (e.g. jnp.bfloat16, "
                            f"'float32'); received {mu_dtype!r}") from None
        if not jnp.issubdtype(mu_dt, jnp.floating):
            raise TypeError(f"mu_dtype: expected a floating dtype (float16, bfloat16, float32, "
                            f"float64); received {mu_dt.name}")
        mu_dt = jax.dtypes.canonicalize_dtype(mu_dt)

    # The exact path: every hyper-parameter a Python float -> all coefficients computed once,
    # in double precision, by the core (which also warns for b1 > b2).
    all_static = all(s.kind == "static" for s in (lr_s, b1_s, b2_s, wd_s))
    if all_static:
        static_hyper = make_hyper(lr_s.value, (b1_s.value, b2_s.value), wd_s.value, stacklevel=2)
        static_nodecay = make_hyper(lr_s.value, (b1_s.value, b2_s.value), 0.0, stacklevel=2)
    else:
        static_hyper = static_nodecay = None  # type: ignore[assignment]
        if b1_s.kind == "static" and b2_s.kind == "static":  # validate / warn b1 > b2 once
            make_hyper(1.0, (b1_s.value, b2_s.value), 0.0, stacklevel=2)
    wd_is_zero = wd_s.kind == "static" and wd_s.value == 0.0

    def hypers(count: Any) -> tuple[Hyper, Hyper]:
        """The step's coefficients with weight decay and without (masked-out leaves)."""
        if static_hyper is not None:
            return static_hyper, static_nodecay  # type: ignore[return-value]
        lr = _value_at("learning_rate", lr_s, count)
        wd = _value_at("weight_decay", wd_s, count)
        bb1 = _value_at("b1", b1_s, count)
        bb2 = _value_at("b2", b2_s, count)
        # Traced values (schedules, injected hyper-parameters) skip make_hyper's validation,
        # which needs concrete numbers, but share its coefficient formulas.
        decayed = coefficients(lr, bb1, bb2, 0.0 if wd_is_zero else wd)
        return decayed, coefficients(lr, bb1, bb2, 0.0)

    def init_fn(params: Any) -> LionKState:
        xs, treedef, paths = flatten(params)
        # as optax.lion: jax.ShapeDtypeStruct leaves (what jax.eval_shape gives), NumPy arrays
        # and Python floats are accepted; the momentum is a JAX array
        xs = [x if isinstance(x, jax.ShapeDtypeStruct) else _as_jax(x) for x in xs]
        _check_leaves("params", [_ArrayLike if isinstance(x, jax.ShapeDtypeStruct) else x
                                 for x in xs], paths)
        for p, x in zip(paths, xs):
            _check_floating(jnp, f"params{p}", x)
        # zeros_like keeps each param's placement, committed or not (lionk.init commits the
        # momentum to a device, which makes jax.jit compile a second time on the second call
        # when the params were uncommitted), and a ShapeDtypeStruct's sharding.
        mu = [jnp.zeros_like(x, dtype=x.dtype if mu_dt is None else mu_dt) for x in xs]
        return LionKState(count=jnp.zeros([], jnp.int32), mu=treedef.unflatten(mu))

    def update_fn(updates: Any, state: LionKState, params: Any = None,
                  **extra_args: Any) -> tuple[Any, LionKState]:
        del extra_args
        if params is None:
            raise ValueError(_NO_PARAMS_MSG)
        if not (isinstance(state, tuple) and hasattr(state, "mu") and hasattr(state, "count")):
            raise TypeError(f"state: expected a LionKState (from lion_k(...).init); received "
                            f"{type(state).__name__}")
        # NumPy arrays and Python floats (e.g. NumPy params with JAX gradients outside jit) are
        # taken as JAX arrays, as optax.lion does; grads may have another floating dtype than
        # the params (mixed precision, as optax.lion): see _as_jax_tree
        params, updates, mu = _as_jax_tree(params), _as_jax_tree(updates), _as_jax_tree(state.mu)
        _, treedef, paths, xs, gs, ms = check_trees(
            params, updates, mu, names=("params", "updates", "state.mu"),
            momentum_hint=" (was the state made by this optimizer's init for these params?)",
            grads_any_dtype=True)
        count = optax.safe_increment(state.count)
        if not xs:
            return updates, LionKState(count=count, mu=state.mu)
        h_decay, h_plain = hypers(state.count)
        kap = _kappa_matrix.bind(kap0, paths, xs)  # a per-leaf κ: one κ per leaf
        flags = [True] * len(xs) if mask is None else _mask_flags(mask, params, len(xs))
        if wd_is_zero:  # no decay anywhere: the mask (still validated) changes nothing
            flags = [True] * len(xs)
        if all(flags):
            new_xs, new_ms = update_leaves(xs, gs, ms, h_decay, kap)
        elif not any(flags):
            new_xs, new_ms = update_leaves(xs, gs, ms, h_plain, kap)
        elif type(kap).tree_grad is _kappa.Kappa.tree_grad:
            # ∇K acts leaf by leaf: each group of leaves gets its own call.
            new_xs, new_ms = [None] * len(xs), [None] * len(xs)
            for want, h in ((True, h_decay), (False, h_plain)):
                idx = [i for i, f in enumerate(flags) if f is want]
                nx, nm = update_leaves([xs[i] for i in idx], [gs[i] for i in idx],
                                       [ms[i] for i in idx], h, kap)
                for i, a, b in zip(idx, nx, nm):
                    new_xs[i], new_ms[i] = a, b
        else:
            # ∇K couples the leaves (a global norm): both calls see every leaf; they differ
            # only in the decay factor (under jit XLA shares the common work).
            dec_xs, new_ms = update_leaves(xs, gs, ms, h_decay, kap)
            plain_xs, _ = update_leaves(xs, gs, ms, h_plain, kap)
            new_xs = [d if f else p for f, d, p in zip(flags, dec_xs, plain_xs)]
        out = treedef.unflatten([xn - x for xn, x in zip(new_xs, xs)])
        return out, LionKState(count=count, mu=treedef.unflatten(new_ms))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# The annotation as the object itself, not the string that ``from __future__ import annotations``
# leaves: optax's own tests (and tools) compare ``inspect.signature(...).annotation`` with
# ``optax.ScalarOrSchedule`` to know that an optimizer accepts a schedule.
lion_k.__annotations__["learning_rate"] = ScalarOrSchedule


def muon(
    learning_rate: ScalarOrSchedule,
    ns_coeffs: Any = _kappa_matrix.MUON_COEFFICIENTS,
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    weight_decay: Any = 0.0,
    weight_decay_mask: Any = None,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: Any = 0.9,
    adam_b2: Any = 0.999,
    adam_eps_root: Any = 0.0,
    adam_weight_decay: Any = 0.0,
    adam_learning_rate: ScalarOrSchedule | None = None,
    muon_weight_dimension_numbers: Any = None,
    consistent_rms: float | None = None,
) -> optax.GradientTransformationExtraArgs:
    """``optax.contrib.muon`` (same arguments and defaults) with its 2-D leaves stepped by
    :func:`lion_k` with the ``"optax-muon"`` κ and optax's bias-corrected b1 at every step
    (:func:`lionk.kappa.optax_muon_b1`, injected by ``optax.inject_hyperparams``), and the other
    leaves by the very ``optax.adamw`` optax.contrib.muon uses. See docs/kappa.md ("Muon,
    reproduced"). ``adaptive=True``, other ``preconditioning``, per-step coefficient presets and
    ``muon_weight_dimension_numbers`` are refused (ValueError)."""
    if muon_weight_dimension_numbers is not None:
        raise ValueError("muon: muon_weight_dimension_numbers is not supported (lionk reshapes a "
                         "leaf of more than 2 dims to (shape[0], -1)); expected None (2-D leaves)")
    s = _kappa_matrix.optax_muon_settings(
        learning_rate, ns_coeffs, ns_steps, beta, eps, weight_decay, nesterov=nesterov,
        adaptive=adaptive, preconditioning=preconditioning, consistent_rms=consistent_rms)
    b = s["betas"][1]
    matrices = optax.inject_hyperparams(
        lion_k, static_args=("learning_rate", "b2", "weight_decay", "kappa", "mask", "mu_dtype"),
    )(learning_rate=learning_rate, b1=lambda count: _kappa_matrix.optax_muon_b1(count, b, nesterov),
      b2=b, weight_decay=weight_decay, kappa=s["kappa"], mask=weight_decay_mask,
      mu_dtype=mu_dtype)
    others = optax.adamw(
        learning_rate=learning_rate if adam_learning_rate is None else adam_learning_rate,
        b1=adam_b1, b2=adam_b2, eps=eps, eps_root=adam_eps_root, weight_decay=adam_weight_decay,
        mu_dtype=mu_dtype, nesterov=nesterov)
    return optax.partition(  # type: ignore[return-value]
        {"muon": matrices, "adam": others},
        lambda params: jax.tree.map(lambda x: "muon" if x.ndim == 2 else "adam", params))


__all__ += ["muon"]


def stall_monitor(kappa: str | _kappa.Kappa = "sign") -> Any:
    """The stall diagnostic (:class:`lionk.StallWarning`) for :func:`lion_k`, which cannot warn
    from inside ``jax.jit``: ``monitor = stall_monitor(kappa)`` (the κ given to ``lion_k``),
    then ``monitor(opt_state)`` after each update, outside jit. It counts calls and reads the
    state (the momenta of every :class:`LionKState` in it, e.g. inside ``optax.chain`` or
    ``lionk.optax.muon``) only at steps 10, 100, 1000 and every 1000: no device sync otherwise."""
    from ..execution.stall import StallCheck

    kap = _kappa.resolve(kappa)
    check = StallCheck()

    def monitor(opt_state: Any) -> None:
        def groups() -> list[tuple[Any, list[Any]]]:
            out = []
            for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, LionKState)):
                if isinstance(s, LionKState):
                    ms, _, paths = flatten(s.mu)
                    out.append((_kappa_matrix.bind(kap, paths, ms), ms))
            return out

        check.after_step(groups)

    return monitor


__all__ += ["stall_monitor"]
