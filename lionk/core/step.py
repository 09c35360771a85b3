r"""The Lion-κ step, written once with array-API operations.

Everything that executes the optimizer's math — the pure :func:`step`, the in-place
:class:`lionk.LionK`, and any faster execution path — calls :func:`update_leaves`. It (with the two
pieces it is made of, :func:`interpolate` and :func:`apply_direction`) is the only place where the
update formulas are written.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from . import kappa as _kappa
from . import kappa_matrix as _kappa_matrix
from . import validation as _check
from .array_api import (
    Array,
    array_namespace,
    check_no_aliasing,
    device,
    dtype_name,
    ensure_array,
    is_array,
    is_concrete,
    is_floating,
    is_jax_array,
    is_numpy_namespace,
    numpy_float_dtype,
    numpy_leaf_signature,
    numpy_scalar_operands,
    numpy_signature,
    owning_numpy_arrays,
    same_placement,
    scalar_device,
)
from .caches import BoundedCache, register_clear_hook
from .trees import TreeDef, flatten, flatten_leaves, paths_of

__all__ = [
    "State",
    "Hyper",
    "LionKWarning",
    "init",
    "step",
    "update_leaves",
    "interpolate",
    "apply_direction",
    "make_hyper",
    "coefficients",
    "check_directions",
    "NAN_POLICIES",
]

NAN_POLICIES = _check.NAN_POLICIES


class LionKWarning(UserWarning):
    """A configuration lionk runs but whose guarantees do not hold (e.g. b1 > b2)."""


class State(NamedTuple):
    """Optimizer state.

    Attributes:
        count: number of steps applied (an ``int``; a 0-d integer array under ``jax.jit``).
        momentum: the exponential average of gradients ``m``, a tree of the params' structure,
            shape and device (dtype of params unless ``state_dtype`` said otherwise).
        skipped: number of steps skipped by ``nan_policy="skip"``.
    """

    count: Any
    momentum: Any
    skipped: Any = 0


# ---------------------------------------------------------------------------------------------
# Hyper-parameters: coefficients as Python floats, computed once in double precision.


class Hyper(NamedTuple):
    """The coefficients of one step. Python floats (exact path) or 0-d arrays (traced)."""

    lr: Any
    b1: Any
    one_minus_b1: Any
    b2: Any
    one_minus_b2: Any
    decay: Any  # 1 - lr*wd


def make_hyper(lr: Any, betas: Any, weight_decay: Any, *, stacklevel: int = 1,
               allow_zero_lr: bool = False) -> Hyper:
    """Validate the hyper-parameters and compute the step's coefficients.

    Coefficients are Python floats computed in double precision (``1 - b1``, ``1 - lr*wd``, ...),
    so every backend rounds each of them once to the array dtype. Values that are traced (0-d
    arrays under ``jax.jit``) cannot be checked and leave the exact path. The checks are those
    of :mod:`lionk.core.validation`, shared by every front-end.

    ``allow_zero_lr`` accepts ``lr == 0`` (what learning-rate schedulers produce at the ends of a
    warm-up or a cosine); the update then leaves x as it is (``1.0*x - 0.0*u``) and only the
    momentum moves. The functional API keeps ``lr > 0``.
    """
    key = _hyper_key(lr, betas, weight_decay, allow_zero_lr)
    if key is not None:
        hit = _HYPERS.lookup(key)
        if hit is not None:
            h, warning = hit
            if warning is not None:  # warned at every call, as when checked (filters decide)
                warnings.warn(warning, LionKWarning, stacklevel=stacklevel + 1)
            return h
    lr = _check.learning_rate(lr, allow_zero=allow_zero_lr)
    b1, b2 = _check.betas(betas)
    wd = _check.weight_decay(weight_decay)
    _check.decay_product(lr, wd)
    warning = None
    if isinstance(b1, float) and isinstance(b2, float) and b1 > b2:
        warning = (f"betas: b1={b1!r} > b2={b2!r}; lionk runs it, but the Lyapunov guarantee of "
                   "Lion-kappa requires b1 <= b2")
        warnings.warn(warning, LionKWarning, stacklevel=stacklevel + 1)
    h = coefficients(lr, b1, b2, wd)
    if key is not None:
        _HYPERS.put(key, (h, warning))
    return h


# (lr, b1, b2, weight_decay, allow_zero_lr) of Python numbers -> (Hyper, warning or None): the
# checks and coefficients of hyper-parameters that passed (a failing one is never stored, so
# it raises at every call)
_HYPERS: BoundedCache[tuple[Hyper, str | None]] = BoundedCache("core.step: hyper-parameters", 256)


def _number_key(v: Any) -> Any:
    """``v`` as a key part when it is a Python ``float`` or ``int`` (not ``bool``, not a
    subclass, not an array); a zero keeps its sign (``-0.0`` and ``0.0`` are equal keys but may
    give different bits), so it is keyed as ``(sign,)``. ``_NOT_CACHED`` otherwise."""
    if type(v) is float or type(v) is int:
        return v if v else (math.copysign(1.0, v),)
    return _NOT_CACHED


_NOT_CACHED = object()


_NUMBER_TYPES = (float, int)


def _hyper_key(lr: Any, betas: Any, wd: Any, allow_zero_lr: bool) -> tuple[Any, ...] | None:
    """The key of :data:`_HYPERS`, or None for values that are checked at every call (arrays,
    tracers, NumPy scalars, anything but a 2-tuple or 2-list of betas)."""
    if (type(betas) is not tuple and type(betas) is not list) or len(betas) != 2:
        return None
    b1, b2 = betas
    if (type(lr) in _NUMBER_TYPES and type(b1) in _NUMBER_TYPES and type(b2) in _NUMBER_TYPES
            and type(wd) in _NUMBER_TYPES and lr and b1 and b2):
        # the common case, no zero coefficient whose sign to keep (the sign of a zero weight
        # decay changes nothing: the decay factor is then exactly 1.0)
        return (lr, b1, b2, wd, bool(allow_zero_lr))
    key = (_number_key(lr), _number_key(b1), _number_key(b2), _number_key(wd),
           bool(allow_zero_lr))
    return None if _NOT_CACHED in key else key


def coefficients(lr: Any, b1: Any, b2: Any, weight_decay: Any) -> Hyper:
    """The step's coefficients from (already validated) hyper-parameters: the one place where
    ``1 - b1``, ``1 - b2`` and ``1 - lr*wd`` are formed. Python floats give Python floats (double
    precision, rounded once to the array dtype by the backend); traced values give traced values.
    A weight decay that is the Python number 0 gives the decay factor exactly 1.0."""
    decay = 1.0 if isinstance(weight_decay, (int, float)) and weight_decay == 0 else 1.0 - lr * weight_decay
    return Hyper(lr=lr, b1=b1, one_minus_b1=1.0 - b1, b2=b2, one_minus_b2=1.0 - b2, decay=decay)


def _coef(c: Any, like: Array) -> Any:
    """A coefficient ready to multiply ``like``: Python floats as they are, arrays cast."""
    if isinstance(c, float):
        return c
    xp = array_namespace(like)
    return xp.astype(c, like.dtype)


_new_tuple = tuple.__new__  # a NamedTuple without its Python-level __new__ (one per step)


def _all_floats(*cs: Any) -> bool:
    """True when every coefficient is a Python float (the exact path)."""
    for c in cs:
        if type(c) is not float:
            return False
    return True


class _Operands(Hyper):
    """A :class:`Hyper` whose coefficients multiply every array of one step as they are: the
    Python floats, or 0-d NumPy arrays of the arrays' dtype, each the Python float rounded once
    to it (see :func:`lionk.core.array_api.numpy_scalar_operands`: the same bits, faster at
    small sizes)."""

    __slots__ = ()


# (Hyper with nonzero Python-float coefficients, NumPy dtype) -> its _Operands (of Python floats
# when a coefficient is out of the dtype's normal range); _SEEN_ONCE after one step
_OPERANDS: BoundedCache[Hyper] = BoundedCache("core.step: NumPy coefficient operands", 64)


def _operands(h: Hyper, *groups: Sequence[Array]) -> _Operands | None:
    """``h``'s coefficients ready to multiply every array of ``groups`` as they are, or None
    (traced coefficients: each is cast to its array's dtype by :func:`_coef`, leaf by leaf).

    Python floats are used as they are, except with plain NumPy arrays of one float16, float32
    or float64 dtype, where they are replaced by 0-d arrays of that dtype (remembered per
    coefficients and dtype; from the second step with the same coefficients on: a schedule's
    new lr at every step never pays for operands it would use once). A zero coefficient keeps
    the Python floats (``0.0`` and ``-0.0`` are equal keys but not the same operand)."""
    if type(h) is _Operands:
        return h
    last = _last_operands
    if h is last[0]:  # the same (remembered) Hyper as the last step: its floats were checked
        dt = numpy_float_dtype(*groups)
        if dt is last[1]:
            return last[2]
    elif not _all_floats(*h):
        return None
    else:
        dt = numpy_float_dtype(*groups)
    if dt is None or not all(h):
        return _new_tuple(_Operands, h)
    key = (h, dt)
    k = _OPERANDS.lookup(key)
    if k is None:  # first seen: the Python floats
        _OPERANDS.put(key, _SEEN_ONCE)
        return _new_tuple(_Operands, h)
    if k is _SEEN_ONCE:
        values = numpy_scalar_operands(h, dt)
        k = _OPERANDS.put(key, _new_tuple(_Operands, h if values is None else values))
    _remember_operands((h, dt, k))
    return k  # type: ignore[return-value]


def _remember_operands(entry: tuple[Any, Any, Any]) -> None:
    global _last_operands
    _last_operands = entry


# the last (Hyper, dtype, operands) of _operands: a step repeated with the same coefficients
# (the Hyper that make_hyper remembers is the same object) skips the key and its hash
_last_operands: tuple[Any, Any, Any] = (None, None, None)
register_clear_hook(lambda: _remember_operands((None, None, None)))

_SEEN_ONCE = Hyper(*(6 * (math.nan,)))  # a marker of _OPERANDS (compared by identity)


# ---------------------------------------------------------------------------------------------
# The math, once.


def interpolate(gs: Sequence[Array], ms: Sequence[Array], h: Hyper) -> list[Array]:
    r"""``c = (b1 * m) + ((1 - b1) * g)`` for every leaf: the point ∇K is evaluated at.

    The first piece of :func:`update_leaves` (which calls it); uses the OLD momentum.
    """
    k = _operands(h, gs, ms)
    if k is not None:
        b1, ob1 = k.b1, k.one_minus_b1
    cs = []
    for m, g in zip(ms, gs):
        if k is None:
            b1, ob1 = _coef(h.b1, m), _coef(h.one_minus_b1, g)
        cs.append(b1 * m + ob1 * g)
    return cs


def apply_direction(
    xs: Sequence[Array],
    gs: Sequence[Array],
    ms: Sequence[Array],
    us: Sequence[Array],
    h: Hyper,
) -> tuple[list[Array], list[Array]]:
    r"""The last piece of :func:`update_leaves` (which calls it): given the direction ``u``::

        x' = ((1 - lr*wd) * x) - (lr * u)       # decoupled decay, explicit
        m' = (b2 * m) + ((1 - b2) * g)          # cast back to the momentum's dtype

    ``u`` is ∇K(c) in a plain step; distributed Lion (``lionk.torch.LionK(communication=...)``)
    passes the aggregated direction instead (the majority vote or the mean of the workers'
    ∇K(c)), through the ``aggregate_direction`` hook of :func:`update_leaves`.
    """
    k = _operands(h, xs, gs, ms)
    if k is not None:
        decay, lr, b2, ob2 = k.decay, k.lr, k.b2, k.one_minus_b2
    new_xs = []
    for x, u in zip(xs, us):
        if k is None:
            decay, lr = _coef(h.decay, x), _coef(h.lr, x)
        xn = decay * x - lr * u
        new_xs.append(xn if xn.dtype is x.dtype and xn.shape else _like(xn, x))
    new_ms = []
    for m, g in zip(ms, gs):
        if k is None:
            b2, ob2 = _coef(h.b2, m), _coef(h.one_minus_b2, g)
        mn = b2 * m + ob2 * g
        # cast back to the momentum's dtype
        new_ms.append(mn if mn.dtype is m.dtype and mn.shape else _like(mn, m))
    return new_xs, new_ms


def _like(a: Array, ref: Array) -> Array:
    """``a`` in ``ref``'s dtype, and an array (NumPy arithmetic on 0-d arrays gives scalars)."""
    dt = a.dtype
    if dt is not ref.dtype and dt != ref.dtype:
        a = array_namespace(ref).astype(a, ref.dtype)
    return a if a.shape else ensure_array(a)


def check_directions(kappa: _kappa.Kappa, cs: Sequence[Array], us: Sequence[Any],
                     paths: Sequence[str] | Callable[[int], str] | None = None) -> None:
    """Refuse a κ output that is not one array of ``c``'s shape and dtype per leaf.

    ``kappa.tree_grad(cs)`` must return, for every leaf, an array of the same shape and dtype as
    that leaf's ``c``; anything else (a flattened or broadcast array, a promoted dtype, a Python
    list, a missing leaf) would be written into the parameters or fail in the middle of a
    write. Raises ValueError (TypeError for a non-array) naming the κ and the leaf path
    (``paths``: labels such as ``params['w']``, or a function of the leaf's index that builds
    one, called only for an error; the leaf's index when not given). Called by :func:`update_leaves` before it
    returns anything, so no execution path writes a step whose κ output is malformed.
    """
    if not isinstance(us, (list, tuple)) or len(us) != len(cs):
        n = len(us) if isinstance(us, (list, tuple)) else type(us).__name__
        raise ValueError(
            f"kappa {kappa.name!r}: tree_grad must return one array per leaf ({len(cs)}); "
            f"received {n}"
        )
    for c, u in zip(cs, us):  # the common case, cheap: a model has hundreds of leaves
        if not (u is c or (type(u) is type(c) and u.shape == c.shape and u.dtype == c.dtype)):
            break
    else:
        return
    for i, (c, u) in enumerate(zip(cs, us)):
        if u is c or (type(u) is type(c) and u.shape == c.shape and u.dtype == c.dtype):
            continue
        where = (str(paths(i)) if callable(paths) else paths[i]) if paths is not None else f"leaf {i}"
        if not is_array(u):
            raise TypeError(
                f"kappa {kappa.name!r} at {where}: grad must return an array; received "
                f"{type(u).__name__}"
            )
        if tuple(u.shape) != tuple(c.shape):
            raise ValueError(
                f"kappa {kappa.name!r} at {where}: grad must keep the shape of its argument; "
                f"expected shape {tuple(c.shape)}, received {tuple(u.shape)}"
            )
        if u.dtype != c.dtype:
            raise ValueError(
                f"kappa {kappa.name!r} at {where}: grad must keep the dtype of its argument; "
                f"expected {dtype_name(c.dtype)}, received {dtype_name(u.dtype)}"
            )


def update_leaves(
    xs: Sequence[Array],
    gs: Sequence[Array],
    ms: Sequence[Array],
    h: Hyper,
    kappa: _kappa.Kappa,
    *,
    aggregate_direction: Callable[[list[Array]], Sequence[Array]] | None = None,
    paths: Sequence[str] | Callable[[int], str] | None = None,
) -> tuple[list[Array], list[Array]]:
    r"""One Lion-κ step over the leaves of a tree, in the published expression order.

    For every leaf, with ``m`` the momentum, ``g`` the gradient and ``x`` the parameter::

        c  = (b1 * m) + ((1 - b1) * g)          # the OLD momentum          (interpolate)
        u  = ∇K(c)                              # kappa.tree_grad over all leaves
        x' = ((1 - lr*wd) * x) - (lr * u)       # decoupled decay, explicit  (apply_direction)
        m' = (b2 * m) + ((1 - b2) * g)          # cast back to the momentum's dtype

    Each product and sum is one correctly rounded array-API operation (no fused multiply-add,
    no division by a scalar); the coefficients ``b1, 1 - b1, b2, 1 - b2, lr, 1 - lr*wd`` are
    Python floats computed in double precision and rounded once to the array dtype.

    ``aggregate_direction`` (distributed Lion only): a function of the list of local directions
    ``u`` returning the directions to apply (same shapes and dtypes), e.g. the majority vote of
    the workers' ``sign(c)``. ``None`` (every single-process path) applies ``u`` itself.

    Each ``u`` is checked to be an array of its ``c``'s shape and dtype
    (:func:`check_directions`; errors name the κ and the leaf, by ``paths`` when given) before
    anything is computed from it: nothing is returned, so nothing can be written, for a
    malformed κ output.
    """
    h = _operands(h, xs, gs, ms) or h  # the coefficients as operands, once for both pieces
    cs = interpolate(gs, ms, h)
    us = kappa.tree_grad(cs)
    check_directions(kappa, cs, us, paths)
    del cs  # c is not needed any more: free it before x' and m' are computed
    if aggregate_direction is not None:
        us = list(aggregate_direction(list(us)))
    return apply_direction(xs, gs, ms, us, h)


# ---------------------------------------------------------------------------------------------
# Validation: everything is checked before anything is computed or written.


class Prepared(NamedTuple):
    xp: Any
    treedef: TreeDef
    paths: list[str]
    xs: list[Array]
    gs: list[Array]
    ms: list[Array]
    hyper: Hyper
    kappa: _kappa.Kappa


def _check_leaves(label: str, leaves: list[Any], paths: list[str]) -> None:
    for leaf, path in zip(leaves, paths):
        if not is_array(leaf):
            raise TypeError(f"{label}{path}: expected an array; received {type(leaf).__name__}")


def _namespace_of(groups: list[tuple[str, list[str], list[Array]]]) -> Any:
    """The namespace of all leaves of ``groups`` (label, paths, leaves); a TypeError naming the
    first leaf of another library."""
    # the namespace depends on an array's type only: ask once per type (a model has hundreds of
    # leaves of one or two types)
    representatives = {type(a): a for _, _, leaves in groups for a in leaves}
    try:
        return array_namespace(*representatives.values())
    except TypeError:
        pass
    named = [(f"{label}{p}", a) for label, paths, leaves in groups for p, a in zip(paths, leaves)]
    first_name, first = named[0]
    xp0 = array_namespace(first)
    for nm, a in named[1:]:
        try:
            array_namespace(first, a)
        except TypeError:
            raise TypeError(
                f"{nm}: expected an array of the same library as {first_name} "
                f"({xp0.__name__}); received {type(a).__module__}.{type(a).__name__}"
            ) from None
    raise TypeError("arrays of different libraries in one call")  # pragma: no cover


def _same_device(a: Array, b: Array) -> bool:
    # a JAX tracer (jit, vmap, grad: params and momentum may be traced at different levels) has
    # no device and is never a mismatch; see array_api.same_placement
    return same_placement(a, b)


# (namespace, dtype) -> is a real floating dtype
_FLOATING: BoundedCache[bool] = BoundedCache("core.step: floating dtypes", 256)


def _supported(xp: Any, a: Array) -> bool:
    """A real floating dtype lionk computes in (``validation.FLOAT_DTYPES``: float8 and
    longdouble are floating but refused)."""
    return is_floating(xp, a) and _check.supported_float(a.dtype)


def _floating(xp: Any, a: Array) -> bool:
    """:func:`_supported` remembered per (namespace, dtype): a model checks hundreds of leaves."""
    try:
        key = (id(xp), a.dtype)
        ok = _FLOATING.get(key)
        if ok is None:
            ok = _FLOATING.put(key, _supported(xp, a))
        return ok
    except TypeError:  # an unhashable dtype
        return _supported(xp, a)


def _check_floating(xp: Any, name: str, a: Array) -> None:
    if not _floating(xp, a):
        _check.check_float_dtype(name, a.dtype)
        raise TypeError(  # pragma: no cover - a supported name that is not floating
            f"{name}: expected a real floating dtype; received {dtype_name(a.dtype)}"
        )


def check_trees(
    params: Any, grads: Any, momentum: Any, *,
    names: tuple[str, str, str] = ("params", "grads", "state.momentum"),
    momentum_hint: str = "",
    grads_any_dtype: bool = False,
) -> tuple[Any, TreeDef, list[str], list[Array], list[Array], list[Array]]:
    """Check that ``grads`` and ``momentum`` match ``params`` leaf by leaf; flatten all three.

    Same tree structure; arrays of one library, real floating; grads of the params' shape and
    dtype; momentum of their shape (its dtype may differ: ``state_dtype``); grads and momentum on
    each param's device. ``grads_any_dtype=True`` (the optax adapter, as ``optax.lion``) accepts
    grads of another real floating dtype than the params. Errors name the leaf path (``names`` label the three trees, e.g. the
    optax adapter's ``updates`` and ``state.mu``). Returns ``(xp, treedef, paths, xs, gs, ms)``,
    ``xp`` None for an empty tree.

    Trees of plain NumPy arrays: the outcome of these checks is a function of the three
    structures and of each leaf's type, shape and dtype only (NumPy arrays all live on the CPU),
    which are read again at every call; a combination that passed once is remembered
    (:data:`_CHECKED`) and not checked again. Anything else is checked at every call.
    """
    any_dtype = bool(grads_any_dtype)
    key: Any = numpy_leaf_signature(params, grads, momentum)
    if key is not None:  # one NumPy array each (always a leaf): no tree to flatten
        key = (key, any_dtype)
        hit = _CHECKED.lookup(key)
        if hit is not None:
            return hit[0], hit[1], list(hit[2]), [params], [grads], [momentum]
    xs, treedef = flatten_leaves(params)
    gs, gdef = flatten_leaves(grads)
    ms, mdef = flatten_leaves(momentum)
    if key is None and xs:
        sig = numpy_signature(xs + gs + ms)
        if sig is not None:
            key = (treedef, gdef, mdef, any_dtype, sig)
            try:
                hit = _CHECKED.lookup(key)
            except TypeError:  # a node whose metadata is not hashable: checked every time
                key = hit = None
            if hit is not None:
                return hit[0], treedef, list(hit[2]), xs, gs, ms
    out = _check_flat(xs, treedef, gs, gdef, ms, mdef, names, momentum_hint, grads_any_dtype)
    if key is not None:
        _CHECKED.put(key, (out[0], out[1], tuple(out[2])))
    return out


# Trees of plain NumPy arrays that passed check_trees -> (namespace, treedef, leaf paths); keyed
# by (treedefs of params, grads and momentum, grads_any_dtype, (shape, dtype) of every leaf),
# or for one array each by ((shape, dtype) of the three, grads_any_dtype)
_CHECKED: BoundedCache[tuple[Any, TreeDef, tuple[str, ...]]] = BoundedCache(
    "core.step: checked tree structures", 256)


def _check_flat(
    xs: list[Any], treedef: TreeDef, gs: list[Any], gdef: TreeDef, ms: list[Any], mdef: TreeDef,
    names: tuple[str, str, str], momentum_hint: str, grads_any_dtype: bool,
) -> tuple[Any, TreeDef, list[str], list[Array], list[Array], list[Array]]:
    """The checks of :func:`check_trees` on flattened trees, in full."""
    pn, gn, mn = names
    paths = paths_of(treedef)
    _check_leaves(pn, xs, paths)
    _check_leaves(gn, gs, paths_of(gdef))
    if gdef != treedef:
        raise ValueError(f"{gn}: expected the tree structure of {pn} ({treedef}); received {gdef}")
    if mdef != treedef:
        raise ValueError(
            f"{mn}: expected the tree structure of {pn} ({treedef}); received {mdef}{momentum_hint}"
        )
    _check_leaves(mn, ms, paths)
    if not xs:
        return None, treedef, paths, xs, gs, ms
    xp = _namespace_of([(pn, paths, xs), (gn, paths, gs), (mn, paths, ms)])
    # NumPy arrays all live on the CPU; other libraries' devices are compared leaf by leaf
    check_devices = not is_numpy_namespace(xp)
    for p, x, g, m in zip(paths, xs, gs, ms):
        for label, a in ((pn, x), (gn, g), (mn, m)):
            if not _floating(xp, a):
                _check_floating(xp, f"{label}{p}", a)
        if tuple(g.shape) != tuple(x.shape):
            raise ValueError(
                f"{gn}{p}: expected shape {tuple(x.shape)} (the shape of {pn}{p}); "
                f"received {tuple(g.shape)}"
            )
        if g.dtype != x.dtype and not grads_any_dtype:
            raise TypeError(
                f"{gn}{p}: expected dtype {dtype_name(x.dtype)} (the dtype of {pn}{p}); "
                f"received {dtype_name(g.dtype)}"
            )
        if tuple(m.shape) != tuple(x.shape):
            raise ValueError(
                f"{mn}{p}: expected shape {tuple(x.shape)} (the shape of {pn}{p}); "
                f"received {tuple(m.shape)}"
            )
        if not check_devices:
            continue
        for label, a in ((gn, g), (mn, m)):
            if not _same_device(a, x):
                raise ValueError(
                    f"{label}{p}: expected device {device(x)} (the device of {pn}{p}); "
                    f"received {device(a)}"
                )
    return xp, treedef, paths, xs, gs, ms


# registered name -> (its registry entry, the κ it gave): a built-in κ named by a string is
# built once, not at every step
_KAPPAS: BoundedCache[tuple[Any, _kappa.Kappa]] = BoundedCache("core.step: kappas by name", 64)


def _resolve_kappa(kappa: Any) -> _kappa.Kappa:
    """:func:`lionk.core.kappa.resolve`, remembered for the names of built-in κ (whose
    registry entries cannot be replaced; the entry is compared at every call all the same).
    A κ object, a user-registered name or a per-leaf choice is resolved at every call."""
    if type(kappa) is not str:
        return _kappa.resolve(kappa)
    name = _kappa._ALIASES.get(kappa, kappa)
    entry = _kappa._REGISTRY.get(name)
    hit = _KAPPAS.lookup(kappa)
    if hit is not None and hit[0] is entry:
        return hit[1]
    kap = _kappa.resolve(kappa)
    if entry is not None and _kappa._BUILTINS.get(name) is entry:
        _KAPPAS.put(kappa, (entry, kap))
    return kap


def prepare(
    params: Any,
    grads: Any,
    state: Any,
    *,
    lr: Any,
    betas: Any,
    weight_decay: Any,
    kappa: Any,
    nan_policy: str,
    stacklevel: int = 2,
) -> Prepared:
    """Validate a step's inputs completely and return them flattened. Raises, never mutates.

    ``stacklevel``: frames from ``prepare`` up to the user's code (2 when called by a public
    function), so that warnings point at the user's call.

    What depends only on the hyper-parameters, the κ's name or the trees' structure (with each
    leaf's type, shape and dtype) is remembered once it passed (:func:`make_hyper`,
    :func:`check_trees`); what the values of this call decide (the state's counters, which
    arrays share memory) is checked at every call.
    """
    return _prepare(params, grads, state, lr, betas, weight_decay, kappa, nan_policy,
                    stacklevel + 1)


def _prepare(params: Any, grads: Any, state: Any, lr: Any, betas: Any, weight_decay: Any,
             kappa: Any, nan_policy: str, stacklevel: int) -> Prepared:
    """:func:`prepare` with positional arguments (what :func:`step` calls: a few keyword
    arguments less to bind per step); ``stacklevel`` counts the frames from here."""
    # (the checks' common cases inline, each equivalent to the call it skips)
    if type(nan_policy) is not str or nan_policy not in NAN_POLICIES:
        check_nan_policy(nan_policy)
    h = make_hyper(lr, betas, weight_decay, stacklevel=stacklevel + 1)
    kap = _resolve_kappa(kappa)
    if not (isinstance(state, tuple) and hasattr(state, "momentum") and hasattr(state, "count")):
        raise TypeError(
            f"state: expected a lionk.State (from lionk.init); received {type(state).__name__}"
        )
    count, skipped = state.count, getattr(state, "skipped", 0)
    if type(count) is not int or count < 0:
        _check.counter("state.count", count)
    if type(skipped) is not int or skipped < 0:
        _check.counter("state.skipped", skipped)
    xp, treedef, paths, xs, gs, ms = check_trees(params, grads, state.momentum)
    if xs and not owning_numpy_arrays(xs, gs, ms) and not is_jax_array(xs[0]):
        # (JAX arrays are immutable: they cannot alias; distinct NumPy arrays that each own
        # their memory cannot either.) The labels are built only for an error.
        check_no_aliasing([(lambda i: f"params{paths[i]}", xs, True),
                           (lambda i: f"grads{paths[i]}", gs, False),
                           (lambda i: f"state.momentum{paths[i]}", ms, True)])
    kap = _kappa_matrix.bind(kap, paths, xs)  # a per-leaf κ: one κ per leaf, from path and shape
    return _new_tuple(Prepared, (xp, treedef, paths, xs, gs, ms, h, kap))


def check_nan_policy(nan_policy: Any) -> None:
    _check.nan_policy(nan_policy)


def gradients_finite(prep: Prepared, nan_policy: str) -> Any:
    """Apply ``nan_policy`` (not "propagate") to a prepared step's gradients.

    Returns True (all finite: step), False (skip the step), or, for traced gradients under
    ``jax.jit``, the traced 0-d boolean (the caller selects with ``where``). Raises ValueError
    naming the first non-finite leaf for ``"raise"`` (and for traced gradients, which cannot be
    inspected).
    """
    ok = all_finite(prep.xp, prep.gs)
    if not is_concrete(ok):
        if nan_policy == "raise":
            raise ValueError(
                "nan_policy='raise' needs concrete gradients; under jax.jit use 'skip' or "
                "'propagate'"
            )
        return ok
    if bool(ok):
        return True
    if nan_policy == "raise":
        bad = first_nonfinite(prep.xp, prep.gs, prep.paths)
        raise ValueError(f"grads{bad}: expected finite values (nan_policy='raise')")
    return False


def all_finite(xp: Any, arrays: Sequence[Array]) -> Any:
    """A 0-d boolean array: every element of every array is finite."""
    ok = xp.asarray(True, device=scalar_device(arrays[0]))
    for a in arrays:
        ok = xp.logical_and(ok, xp.all(xp.isfinite(a)))
    return ok


def first_nonfinite(xp: Any, arrays: Sequence[Array], paths: Sequence[str]) -> str | None:
    for a, p in zip(arrays, paths):
        if not bool(xp.all(xp.isfinite(a))):
            return p
    return None


# ---------------------------------------------------------------------------------------------
# Public functional API.


def _update_named(prep: Prepared) -> tuple[list[Array], list[Array]]:
    """:func:`update_leaves` on a prepared step; a κ output error names the leaf's path."""
    paths = prep.paths
    return update_leaves(prep.xs, prep.gs, prep.ms, prep.hyper, prep.kappa,
                         paths=lambda i: f"params{paths[i]}")


def init(params: Any, *, state_dtype: Any = None) -> State:
    """Create the optimizer state for ``params``: zero momentum, ``count = 0``.

    Args:
        params: one array or a tree (nested dict / list / tuple, any JAX pytree) of floating
            arrays of any array-API backend.
        state_dtype: dtype of the momentum (a dtype of the params' namespace or its name, e.g.
            ``"bfloat16"``); default: each param's own dtype. A narrower momentum saves memory
            and is in the semantic tier.

    Returns:
        ``State(count=0, momentum=zeros like params, skipped=0)``, on the params' devices.
    """
    xs, treedef, paths = flatten(params)
    _check_leaves("params", xs, paths)
    ms = []
    for x, p in zip(xs, paths):
        xp = array_namespace(x)
        _check_floating(xp, f"params{p}", x)
        dt = x.dtype if state_dtype is None else _check.namespace_dtype(xp, state_dtype)
        # zeros_like keeps the device (and JAX's committed/uncommitted placement, so a jitted
        # step compiles once) and numpy's memory layout
        ms.append(xp.zeros_like(x, dtype=dt))
    if state_dtype is not None and ms:
        _check_floating(array_namespace(ms[0]), "state_dtype", ms[0])
    return State(count=0, momentum=treedef.unflatten(ms), skipped=0)


def step(
    params: Any,
    grads: Any,
    state: State,
    *,
    lr: Any = 1e-4,
    betas: tuple[Any, Any] = (0.9, 0.99),
    weight_decay: Any = 0.0,
    kappa: str | _kappa.Kappa = "sign",
    nan_policy: str = "propagate",
) -> tuple[Any, State]:
    r"""One Lion-κ step; pure (inputs are never mutated, new arrays are returned).

    The update, leaf by leaf, in this exact expression order (theory.md §1)::

        c  = (b1 * m) + ((1 - b1) * g)
        x' = ((1 - lr*wd) * x) - (lr * ∇K(c))
        m' = (b2 * m) + ((1 - b2) * g)

    ``1 - b1``, ``1 - b2`` and ``1 - lr*wd`` are Python floats computed in double precision;
    each product and sum is one correctly rounded operation (no fused multiply-add, no division
    by a scalar). With an ``exact`` κ (sign; huber, quadratic, deadzone given a number for δ,
    scale, e) the trajectory is bitwise identical on numpy, array-api-strict, torch CPU and JAX
    CPU eager.

    With weight decay λ > 0 the iterates solve ``min f(x) + (1/λ) K*(λx)``; for ``sign``
    (Lion) that is ``min f(x) s.t. ‖x‖_∞ ≤ 1/λ``.

    Args:
        params, grads: trees of the same structure, shapes and dtypes, one array library.
        state: from :func:`init` or a previous step.
        lr: learning rate ε > 0 (Python float or 0-d array; traced under ``jax.jit``).
        betas: ``(b1, b2)`` in [0, 1); b1 > b2 runs with a :class:`LionKWarning`.
        weight_decay: λ ≥ 0, with ``lr * weight_decay < 1``.
        kappa: a registered κ name (see :func:`lionk.kappa.available`) or a
            :class:`lionk.kappa.Kappa`; static under ``jax.jit``.
        nan_policy: what a non-finite gradient does: ``"propagate"`` (computes with it),
            ``"raise"`` (ValueError naming the leaf; not under ``jax.jit``) or ``"skip"``
            (nothing changes except ``state.skipped``, which is incremented).

    Returns:
        ``(new_params, new_state)``.
    """
    prep = _prepare(params, grads, state, lr, betas, weight_decay, kappa, nan_policy, 2)
    if not prep.xs:
        return params, State(state.count + 1, state.momentum, state.skipped)
    xp = prep.xp
    if nan_policy != "propagate":
        ok = gradients_finite(prep, nan_policy)
        if ok is False:
            copies = [xp.asarray(x, copy=True) for x in prep.xs]
            mcopies = [xp.asarray(m, copy=True) for m in prep.ms]
            return prep.treedef.unflatten(copies), State(
                state.count, prep.treedef.unflatten(mcopies), state.skipped + 1
            )
        if ok is not True:  # traced: select with where, no Python branch
            new_xs, new_ms = _update_named(prep)
            new_xs = [xp.where(ok, a, b) for a, b in zip(new_xs, prep.xs)]
            new_ms = [xp.where(ok, a, b) for a, b in zip(new_ms, prep.ms)]
            inc = xp.astype(ok, xp.int32)
            return prep.treedef.unflatten(new_xs), State(
                state.count + inc, prep.treedef.unflatten(new_ms), state.skipped + (1 - inc)
            )
    new_xs, new_ms = _update_named(prep)
    treedef = prep.treedef
    if treedef.num_nodes == 1 and len(new_xs) == 1:  # one array: the tree is the leaf itself
        new_params, new_momentum = new_xs[0], new_ms[0]
    else:
        new_params, new_momentum = treedef.unflatten(new_xs), treedef.unflatten(new_ms)
    # (State(...) without its Python-level __new__: the same tuple, a little cheaper per step)
    return new_params, _new_tuple(State, (state.count + 1, new_momentum, state.skipped))
