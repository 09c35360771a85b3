"""The array-API glue: the one module of lionk that knows about particular backends.

Everything else in lionk calls the functions here and the array-API namespace they return.
Backend-specific code (torch's ``no_grad`` for in-place writes, JAX's tracers, dtype names)
lives behind these small, named functions; nothing here computes the optimizer's math.

No backend library is imported at module import time: torch, jax and cupy are looked up in
``sys.modules`` only when an array of theirs is already in hand.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import array_api_compat
import numpy as np
from array_api_compat import (
    is_array_api_obj,
    is_jax_array,
    is_lazy_array,
    is_numpy_namespace,
    is_torch_array,
)

Array = Any
Namespace = Any

__all__ = [
    "Array",
    "Namespace",
    "array_namespace",
    "device",
    "scalar_device",
    "same_placement",
    "is_array",
    "is_concrete",
    "is_writeable",
    "is_floating",
    "dtype_name",
    "resolve_dtype",
    "finfo_eps",
    "to_float",
    "write_inplace",
    "ensure_array",
    "native_exact_sign",
    "is_numpy_namespace",
]


def array_namespace(*arrays: Array) -> Namespace:
    """The array-API namespace shared by ``arrays`` (raises TypeError on a mix)."""
    return array_api_compat.array_namespace(*arrays)


def device(x: Array) -> Any:
    """The device of ``x`` in array-API terms."""
    return array_api_compat.device(x)


def _is_tracer(x: Any) -> bool:
    core = sys.modules.get("jax.core")
    tracer = getattr(core, "Tracer", None) if core is not None else None
    return tracer is not None and isinstance(x, tracer)


def scalar_device(like: Array) -> Any:
    """The ``device=`` argument for a 0-d constant to be combined with ``like``.

    ``device(like)``, except for JAX arrays, where it is ``None`` (JAX's default placement, an
    uncommitted scalar that combines with any placement): the device of a JAX array sharded over
    several devices is its ``Sharding``, which cannot place a 0-d array (a ``P(None, 'x', 'y')``
    sharding has three dimensions), and a tracer has no device.
    """
    if is_jax_array(like):
        return None
    return device(like)


def same_placement(a: Array, b: Array) -> bool:
    """False only when ``a`` and ``b`` are known to live on different devices.

    A JAX tracer (inside ``jax.jit``/``vmap``/``grad``) has no device: it combines with anything,
    so it is never a mismatch; two concrete JAX arrays are compared by their sets of devices (a
    sharded array and a replicated one over the same mesh combine). Other libraries compare
    their array-API devices.
    """
    if is_jax_array(a) or is_jax_array(b):
        if _is_tracer(a) or _is_tracer(b):
            return True
        try:
            return set(a.devices()) == set(b.devices())
        except Exception:  # pragma: no cover - an object without devices()
            return True
    try:
        return bool(device(a) == device(b))
    except Exception:  # backends without a device notion
        return True


def is_array(x: Any) -> bool:
    """True for an array of any array-API backend (numpy, torch, jax, cupy, ...).

    NumPy scalars (``np.float32(1)``, what numpy returns for arithmetic on 0-d arrays) count
    as 0-d arrays; Python numbers do not.
    """
    if isinstance(x, np.generic):
        return True
    return is_array_api_obj(x) and not isinstance(x, (int, float, complex, bool))


def native_exact_sign(y: Array) -> Array | None:
    """The backend's own ``sign`` where it is known to equal lionk's exact sign bit for bit.

    lionk's exact sign (NaN → NaN, ±0 → +0, else ±1, built from nested ``where``) is portable
    but slow. NumPy's ``np.sign`` has exactly these semantics (measured, and re-checked by
    ``tests/test_primitive_audit.py`` and the conformance suite) and is about 14× faster, so it is
    used for NumPy arrays. ``None`` for every other backend (JAX keeps −0, raw torch maps NaN to 0).
    """
    if type(y) is np.ndarray or isinstance(y, np.generic) or getattr(y, "__lionk_numpy_tape__", False):
        return np.sign(y)  # (the last: a NumPy chunk being recorded by lionk._tape)
    return None


def ensure_array(x: Array) -> Array:
    """``x`` itself, or a 0-d numpy array where numpy arithmetic returned a numpy scalar."""
    if isinstance(x, np.generic):
        return np.asarray(x)
    return x


def is_concrete(x: Any) -> bool:
    """True when the values of ``x`` can be read now (not a JAX tracer, not lazy)."""
    if isinstance(x, (int, float, np.generic)):
        return True
    if is_jax_array(x):
        # array-api-compat calls every JAX array lazy; only tracers (inside jit/grad/vmap) are.
        core = sys.modules.get("jax.core")
        tracer = getattr(core, "Tracer", None) if core is not None else None
        return tracer is None or not isinstance(x, tracer)
    return not is_lazy_array(x)


def is_writeable(x: Array) -> bool:
    """True when ``x`` can be updated in place (numpy, torch, cupy, array-api-strict)."""
    if is_jax_array(x):
        return False
    flags = getattr(x, "flags", None)
    if flags is not None and hasattr(flags, "writeable"):
        return bool(flags.writeable)
    return True


def is_floating(xp: Namespace, x: Array) -> bool:
    """True for a real floating dtype (float16, bfloat16, float32, float64, ...)."""
    dt = x.dtype
    # bfloat16 is not an array-API dtype (numpy and jax expose it through ml_dtypes, on which
    # numpy's isdtype raises): recognise it by name first.
    if dtype_name(dt) == "bfloat16":
        return True
    try:
        return bool(xp.isdtype(dt, "real floating"))
    except (TypeError, ValueError):
        return False


def dtype_name(dtype: Any) -> str:
    """A short, backend-independent name for a dtype: ``'float32'``, ``'bfloat16'``, ..."""
    name = getattr(dtype, "name", None)
    if name is None:
        name = str(dtype)
    name = str(name)
    for prefix in ("torch.", "array_api_strict.", "dtype(", "<class '"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.strip("')")


def resolve_dtype(xp: Namespace, dtype: Any) -> Any:
    """A dtype object of namespace ``xp`` from a dtype or a name such as ``'bfloat16'``."""
    if not isinstance(dtype, str):
        return dtype
    found = getattr(xp, dtype, None)
    if found is None and dtype == "bfloat16":
        found = _bfloat16(xp)
    if found is None:
        raise ValueError(
            f"state_dtype: expected a dtype of {xp.__name__} or its name; received {dtype!r}, "
            f"which {xp.__name__} does not have"
        )
    return found


def _bfloat16(xp: Namespace) -> Any:
    name = getattr(xp, "__name__", "")
    if "torch" in name and "torch" in sys.modules:
        return sys.modules["torch"].bfloat16
    if "jax" in name and "jax" in sys.modules:
        return sys.modules["jax.numpy"].bfloat16
    try:  # numpy through ml_dtypes, when installed
        import ml_dtypes

        return ml_dtypes.bfloat16
    except ImportError:
        return None


def finfo_eps(xp: Namespace, dtype: Any) -> float:
    """Machine epsilon of a floating dtype, as a Python float."""
    if dtype_name(dtype) == "bfloat16":
        return 2.0**-7
    return float(xp.finfo(dtype).eps)


def to_float(x: Array) -> float:
    """A 0-d array (or Python number) as a Python float."""
    if isinstance(x, (int, float)):
        return float(x)
    if is_torch_array(x):
        return float(x.detach().cpu().item())
    return float(x)


def write_inplace(dst: Array, src: Array) -> None:
    """Copy ``src`` into ``dst`` element by element, in place (``dst[...] = src``).

    torch refuses in-place writes to leaves that require grad outside ``no_grad``; an
    optimizer's write is not part of the autograd graph, so it is done under ``no_grad``.
    """
    if is_torch_array(dst):
        torch = sys.modules["torch"]
        with torch.no_grad():
            dst.copy_(src)
        return
    dst[...] = src


def float64_or_widest(xp: Namespace, x: Array) -> Array:
    """``x`` converted to float64 where the namespace and device support it, else unchanged.

    Diagnostics (Lyapunov values, norms) are evaluated in the widest precision available so
    that their own rounding stays far below the rounding of a float32 trajectory.
    """
    f64 = getattr(xp, "float64", None)
    if f64 is None or x.dtype == f64:
        return x
    try:
        y = xp.astype(x, f64)
    except Exception:  # a device without float64 (e.g. array-api-strict's no_float64)
        return x
    return y if y.dtype == f64 else x


def inf() -> float:
    return math.inf
