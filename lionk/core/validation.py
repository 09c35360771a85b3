"""Every hyper-parameter and choice check of lionk, written once.

:func:`lionk.step`, :class:`lionk.LionK`, ``lionk.torch.LionK``, ``lionk.optax.lion_k``,
:func:`lionk.minimize` and :mod:`lionk.lyapunov` call these functions; none of them re-states a
rule. Each check raises a TypeError (wrong kind of value) or a ValueError (right kind, value out
of range) whose message names the argument, the expectation and the received value, and never
modifies anything.

Values that cannot be read now (JAX tracers under ``jax.jit``) pass the value checks unchanged:
:func:`real` returns them as they are, and the range checks apply to Python floats only.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

from .array_api import dtype_name, has_internal_overlap, is_array, is_concrete, to_float

if TYPE_CHECKING:  # kappa imports this module (its parameter checks): no cycle at run time
    from . import kappa as _kappa

__all__ = [
    "FLOAT_DTYPES",
    "NAN_POLICIES",
    "EXECUTIONS",
    "real",
    "learning_rate",
    "beta",
    "betas",
    "weight_decay",
    "decay_product",
    "choice",
    "nan_policy",
    "execution",
    "counter",
    "optional_positive_int",
    "supported_float",
    "check_float_dtype",
    "kappa_from_spec",
    "kappa_to_spec",
    "namespace_dtype",
    "no_internal_overlap",
]

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
"""The dtypes lionk computes in. Other floating types are refused: float8 types have no
arithmetic, and NumPy's ``longdouble`` (float128) is platform-dependent and exact nowhere."""

NAN_POLICIES = ("propagate", "raise", "skip")
EXECUTIONS = ("auto", "eager", "chunked", "compiled", "packed")


# ---------------------------------------------------------------------------------------------
# Real numbers.


def real(name: str, value: Any) -> Any:
    """``value`` as a Python float when it is known now, else the traced 0-d array itself.

    Accepted: a real Python or NumPy number, or a 0-d array of a real floating or integer dtype
    of any array-API library (concrete: converted; traced: returned). Refused with a TypeError:
    ``bool`` (and boolean arrays), complex numbers and arrays, strings and every other type; with
    a ValueError: an array with a shape.
    """
    if type(value) is float or type(value) is int:  # the common case, first
        return float(value)
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise TypeError(f"{name}: expected a real number; received {value!r}")
    if isinstance(value, numbers.Real) and not is_array(value):
        return float(value)
    if is_array(value):
        shape = tuple(value.shape)
        if shape != ():
            raise ValueError(f"{name}: expected a scalar or a 0-d array; received shape {shape}")
        kind = dtype_name(value.dtype)
        if not kind.startswith(("float", "bfloat", "int", "uint")):
            raise TypeError(f"{name}: expected a real number; received a 0-d {kind} array {value!r}")
        if is_concrete(value):
            return to_float(value)  # a concrete 0-d array: exact path, like a Python float
        return value
    raise TypeError(f"{name}: expected a real number; received {type(value).__name__} {value!r}")


def learning_rate(value: Any, *, name: str = "lr", allow_zero: bool = False) -> Any:
    """A learning rate: finite and > 0 (>= 0 with ``allow_zero``: what schedulers produce)."""
    lr = real(name, value)
    if isinstance(lr, float) and not (math.isfinite(lr) and (lr > 0 or (allow_zero and lr == 0))):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite number {bound}; received {value!r}")
    return lr


def beta(name: str, value: Any) -> Any:
    """A momentum coefficient in [0, 1)."""
    b = real(name, value)
    if isinstance(b, float) and not 0.0 <= b < 1.0:
        raise ValueError(f"{name}: expected a value in [0, 1); received {b!r}")
    return b


def betas(value: Any, *, names: tuple[str, str] = ("betas[0]", "betas[1]"),
          name: str = "betas") -> tuple[Any, Any]:
    """A pair ``(b1, b2)`` of :func:`beta` values (a string is not a pair)."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name}: expected a pair (b1, b2) of numbers; received {value!r}")
    try:
        b1, b2 = value
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a pair (b1, b2); received {value!r}") from None
    return beta(names[0], b1), beta(names[1], b2)


def weight_decay(value: Any, *, name: str = "weight_decay", positive: bool = False) -> Any:
    """A weight decay λ: finite and >= 0 (> 0 with ``positive``: where λ defines a constraint)."""
    wd = real(name, value)
    if isinstance(wd, float) and not (math.isfinite(wd) and (wd > 0 or (not positive and wd == 0))):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name}: expected a finite number {bound}; received {value!r}")
    return wd


def decay_product(lr: Any, wd: Any, *, names: tuple[str, str] = ("lr", "weight_decay")) -> None:
    """``lr * wd < 1``: the decay factor ``1 - lr*wd`` of the explicit update must be > 0.

    Checked when both are known (Python floats, or concrete 0-d arrays: :func:`real` first)."""
    a, b = real(names[0], lr), real(names[1], wd)
    if isinstance(a, float) and isinstance(b, float) and not a * b < 1.0:
        raise ValueError(
            f"{names[0]}*{names[1]}: expected < 1 (the decay factor 1 - {names[0]}*{names[1]} "
            f"must be > 0); received {names[0]}={a!r}, {names[1]}={b!r}, "
            f"{names[0]}*{names[1]}={a * b!r}"
        )


# ---------------------------------------------------------------------------------------------
# Choices and counters.


def choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (strings)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {choices}; received {value!r}")
    return value


def nan_policy(value: Any, *, name: str = "nan_policy") -> str:
    """What a non-finite gradient does: ``"propagate"``, ``"raise"`` or ``"skip"``."""
    return choice(name, value, NAN_POLICIES)


def execution(value: Any, *, name: str = "execution") -> str:
    """How an in-place step runs: ``"auto"``, ``"eager"``, ``"chunked"``, ``"compiled"`` or
    ``"packed"``."""
    return choice(name, value, EXECUTIONS)


def counter(name: str, value: Any, *, minimum: int = 0) -> Any:
    """A counter (``count``, ``skipped``, ``step``, ``maxiter``): an int >= ``minimum``.

    Python and NumPy integers and 0-d integer arrays are accepted (a jitted step's count is one);
    a traced one is returned unchecked. ``bool``, floats and strings raise TypeError; a value
    below ``minimum`` raises ValueError. Returns a Python int when the value is known.
    """
    if type(value) is int and value >= minimum:  # the common case, first
        return value
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected an int >= {minimum}; received {value!r}")
    if isinstance(value, numbers.Integral) and not is_array(value):
        out = int(value)
    elif is_array(value):
        kind = dtype_name(value.dtype)
        if tuple(value.shape) != () or "int" not in kind:
            raise TypeError(
                f"{name}: expected an int >= {minimum} (or a 0-d integer array); received an "
                f"array of shape {tuple(value.shape)} and dtype {kind}"
            )
        if not is_concrete(value):
            return value
        out = int(value)
    else:
        raise TypeError(
            f"{name}: expected an int >= {minimum}; received {value!r} ({type(value).__name__})"
        )
    if out < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}; received {value!r}")
    return out


def optional_positive_int(name: str, value: Any) -> int | None:
    """``None`` or an int >= 1 (``chunk_size``, ``threads``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected None or an int >= 1; received {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------
# Dtypes.


def supported_float(dtype: Any) -> bool:
    """True for the dtypes lionk computes in (:data:`FLOAT_DTYPES`), of any library.

    Asked for every leaf of every step: the answer is remembered per dtype object."""
    # keyed by (type, dtype): dtypes of different libraries are never compared with each other
    # (array-api-strict warns when one of its dtypes is compared with a NumPy dtype)
    key = (type(dtype), dtype)
    try:
        return _SUPPORTED[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable dtype-like
        return dtype_name(dtype) in FLOAT_DTYPES
    ok = dtype_name(dtype) in FLOAT_DTYPES
    if len(_SUPPORTED) < 256:
        _SUPPORTED[key] = ok
    return ok


_SUPPORTED: dict[tuple[type, Any], bool] = {}


def check_float_dtype(name: str, dtype: Any) -> None:
    """TypeError naming ``name`` unless ``dtype`` is one of :data:`FLOAT_DTYPES`."""
    if not supported_float(dtype):
        raise TypeError(
            f"{name}: expected a real floating dtype ({', '.join(FLOAT_DTYPES)}); "
            f"received {dtype_name(dtype)}"
        )


# ---------------------------------------------------------------------------------------------
# κ and its serialisable spec.


def kappa_to_spec(kappa: _kappa.Kappa) -> dict[str, Any]:
    """``{"name": ..., "params": {...}}``: a κ as plain data (what state dicts store); the κ's
    own :meth:`~lionk.kappa.Kappa.to_spec`."""
    return kappa.to_spec()


def kappa_from_spec(value: Any, *, name: str = "kappa", current: Any = None) -> _kappa.Kappa:
    """A :class:`~lionk.kappa.Kappa` from a Kappa, a registered name, or a
    ``{"name": ..., "params": {...}}`` spec: :func:`lionk.kappa.from_spec`, errors naming
    ``name``; ``current`` (the κ in use) is returned when the spec describes it, so that an
    unregistered user κ survives a state-dict round trip."""
    from . import kappa as _kappa

    like = current if isinstance(current, _kappa.Kappa) else None
    return _kappa.from_spec(value, like=like, where=name)


def namespace_dtype(xp: Any, value: Any, *, name: str = "state_dtype") -> Any:
    """A dtype of namespace ``xp`` from a dtype object or a name such as ``"bfloat16"``, checked
    to be one of :data:`FLOAT_DTYPES`. ``None`` stays ``None`` (each param's own dtype)."""
    from .array_api import resolve_dtype

    if value is None:
        return None
    if isinstance(value, (bool, numbers.Number)) or not (
        isinstance(value, str) or hasattr(value, "itemsize") or isinstance(value, type)
        or type(value).__name__ in ("dtype", "DType")
    ):
        raise TypeError(
            f"{name}: expected None, a floating dtype or its name ({', '.join(FLOAT_DTYPES)}); "
            f"received {type(value).__name__} {value!r}"
        )
    dt = resolve_dtype(xp, value) if isinstance(value, str) else value
    try:
        probe = xp.zeros((0,), dtype=dt)
    except (TypeError, ValueError, AttributeError):
        raise TypeError(
            f"{name}: expected None, a floating dtype of {getattr(xp, '__name__', xp)} or its "
            f"name ({', '.join(FLOAT_DTYPES)}); received {value!r}"
        ) from None
    check_float_dtype(name, probe.dtype)
    return dt


def no_internal_overlap(name: str, x: Any) -> None:
    """ValueError naming ``name`` when elements of ``x`` share memory (a stride-0 dimension, as
    from ``expand()`` or ``broadcast_to``): an in-place optimizer cannot update such a param."""
    if has_internal_overlap(x):
        strides: Any = x.stride() if callable(getattr(x, "stride", None)) else x.strides
        raise ValueError(
            f"{name}: expected an array whose elements do not share memory (an in-place update "
            f"writes each element once); received shape {tuple(x.shape)} with strides "
            f"{tuple(strides)} (a stride-0 dimension, e.g. from expand() or broadcast_to); "
            "pass a copy (x.clone() / x.copy())"
        )
