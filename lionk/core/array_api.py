"""The array-API glue: the one module of lionk that knows about particular backends.

Everything else in lionk calls the functions here and the array-API namespace they return.
Backend-specific code (torch's ``no_grad`` for in-place writes, JAX's tracers, dtype names)
lives behind these small, named functions; nothing here computes the optimizer's math.

No backend library is imported at module import time: torch, jax and cupy are looked up in
``sys.modules`` only when an array of theirs is already in hand.
"""

from __future__ import annotations

import math
import operator
import sys
from collections.abc import Callable
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
    "has_internal_overlap",
    "is_floating",
    "dtype_name",
    "resolve_dtype",
    "finfo_eps",
    "to_float",
    "write_inplace",
    "ensure_array",
    "native_exact_sign",
    "sign_probe_results",
    "is_numpy_namespace",
    "memory_span",
    "numpy_signature",
    "numpy_leaf_signature",
    "numpy_float_dtype",
    "numpy_scalar_operands",
    "owning_numpy_arrays",
    "find_overlap",
    "check_no_aliasing",
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


def native_exact_sign(y: Array, reference: Callable[[Array], Array] | None = None) -> Array | None:
    """The backend's own ``sign`` (plus a cheap fix-up) where it equals lionk's exact sign bit for bit.

    lionk's exact sign (NaN → NaN with its payload, ±0 → +0, else ±1; ``reference``, built from
    nested ``where``) is portable but slow: each ``where`` with scalars costs about as much as
    the rest of a torch step. The replacements, used only where they are verified:

    - NumPy: ``np.sign`` has exactly these semantics (measured, and re-checked by
      ``tests/test_primitive_audit.py`` and the conformance suite); about 14× faster.
    - torch (plain tensors and Parameters, eager): ``where(isnan(y), y, sign(y))``, since raw
      ``torch.sign`` maps NaN to 0. It is used for a (dtype, device) only after a byte-for-byte
      probe against ``reference`` on signed zeros, ±inf, subnormals, NaN payloads of both signs
      and ordinary values passes (once per process; see :func:`sign_probe_results`); about 8×
      faster at 2^16 float32. Under ``torch.compile`` tracing the reference is used (the
      compiled kernel is what the conformance suite checks).
    - JAX (concrete arrays and tracers, so also inside a user's ``jax.jit``):
      ``where(y == 0, 0, sign(y))``, since ``jax.numpy.sign`` keeps −0 (XLA's sign is
      ``isnan(y) ? y : copysign(y != 0, y)``: NaN passes through with its payload). The
      obvious ``sign(y) + 0.0`` is NOT usable: XLA folds ``+ 0.0`` away under ``jit`` and −0
      comes back. Used for a (dtype, platform) only after the same byte-for-byte probe passes,
      eagerly for a concrete array (on its platform), under ``jax.jit`` for a tracer (on every
      platform the trace may run on: the default backend's and the CPU's). Inside
      ``lionk.optax.lion_k``'s jitted update on 64 float32 elements the reference's three
      nested selects cost about 3–6 µs a step (the program took 1.4–1.8× ``optax.lion``'s
      time; with this form about 0.9×; docs/optax.md).

    ``None`` means: use ``reference`` (a probe that failed; CuPy; every other backend).
    """
    if type(y) is np.ndarray or isinstance(y, np.generic) or getattr(y, "__lionk_numpy_tape__", False):
        return np.sign(y)  # (the last: a NumPy chunk being recorded by lionk._tape)
    if reference is not None and is_jax_array(y):
        if _jax_sign_verified(y, reference):
            jnp = sys.modules["jax.numpy"]
            return jnp.where(y == 0, 0.0, jnp.sign(y))  # the Python 0.0 takes y's dtype
        return None
    if reference is not None and _is_plain_torch_tensor(y):
        torch = sys.modules["torch"]
        if torch.compiler.is_compiling():
            return None
        key = ("torch", str(y.dtype), y.device.type)
        ok = _SIGN_PROBES.get(key)
        if ok is None:
            ok = _SIGN_PROBES[key] = _probe_torch_sign(y, reference)
        if ok:
            return torch.where(torch.isnan(y), y, torch.sign(y))
    return None


_SIGN_PROBES: dict[tuple[str, str, str], bool] = {}


def sign_probe_results() -> dict[tuple[str, str, str], bool]:
    """The byte-for-byte probes run so far: ``(backend, dtype, device type) → passed``."""
    return dict(_SIGN_PROBES)


def _probe_values(np_dtype: Any) -> np.ndarray:
    """The probe: signed zeros, ±inf, NaNs (with payloads, both signs), the smallest and largest
    normals, subnormals and ordinary values, in ``np_dtype`` (NumPy or ml_dtypes)."""
    import ml_dtypes

    fi = ml_dtypes.finfo(np_dtype)
    vals = [0.0, -0.0, math.inf, -math.inf, math.nan, -math.nan, float(fi.tiny), -float(fi.tiny),
            float(fi.max), -float(fi.max), float(fi.smallest_normal) / 2,
            -float(fi.smallest_normal) / 2, 1.0, -1.0, 0.5, -3.25]
    probe = np.array(vals, dtype=np.float64).astype(np_dtype)
    uint = np.dtype(f"u{probe.itemsize}")
    nans = np.array([math.nan, -math.nan], dtype=np_dtype).view(uint)
    nans = np.concatenate([nans | np.array(1, uint), nans | np.array(3, uint)]).view(np_dtype)
    return np.concatenate([probe, nans])


def _jax_platforms(y: Array) -> tuple[str, ...]:
    """The platforms ``y`` may be computed on: its devices' for a concrete array; for a tracer
    (no device) the default backend's and the CPU's."""
    if not _is_tracer(y):
        try:
            return tuple(sorted({d.platform for d in y.devices()}))
        except Exception:  # pragma: no cover - an array without devices()
            pass
    jax = sys.modules["jax"]
    return tuple(sorted({jax.default_backend(), "cpu"}))


def _jax_sign_verified(y: Array, reference: Callable[[Array], Array]) -> bool:
    """True when JAX's fast exact sign was probed equal to ``reference`` (bit for bit) for
    ``y``'s dtype on every platform ``y`` may run on, the way ``y`` is computed: eagerly for a
    concrete array (probe key ``("jax-eager", dtype, platform)``), under ``jax.jit`` for a tracer
    (key ``("jax", dtype, platform)``). Each probe runs once per process."""
    traced = _is_tracer(y)
    name = str(y.dtype)
    ok = True
    for platform in _jax_platforms(y):
        key = ("jax" if traced else "jax-eager", name, platform)
        passed = _SIGN_PROBES.get(key)
        if passed is None:
            passed = _SIGN_PROBES[key] = _probe_jax_sign(y.dtype, platform, reference,
                                                         jitted=traced)
        ok = ok and passed
    return ok


def _probe_jax_sign(dtype: Any, platform: str, reference: Callable[[Array], Array], *,
                    jitted: bool) -> bool:
    """True when ``where(y == 0, 0, sign(y))`` equals ``reference`` bit for bit on probe values
    of ``dtype`` on ``platform``: both forms in one ``jax.jit`` program (``jitted``; XLA
    optimises them together, as in a user's step), or eagerly (each operation its own XLA
    computation). Runs on concrete arrays, also when called while a jit is being traced; any
    failure (a dtype ml_dtypes does not know, a platform without devices) counts as not
    verified. It costs one small compilation (about 40 ms on the CPU), or, eagerly, the first
    use of each primitive for that dtype (about 160 ms, paid once per process)."""
    jax = sys.modules["jax"]
    jnp = sys.modules["jax.numpy"]

    def both(t: Array) -> tuple[Array, Array]:
        return jnp.where(t == 0, 0.0, jnp.sign(t)), reference(t)

    try:
        values = _probe_values(np.dtype(dtype))
        uint = np.dtype(f"u{values.itemsize}")
        with jax.transfer_guard("allow"), jax.ensure_compile_time_eval():
            probe = jax.device_put(values, jax.devices(platform)[0])
            if probe.dtype != values.dtype:  # e.g. float64 without jax_enable_x64
                return False
            fast, ref = jax.jit(both)(probe) if jitted else both(probe)
            return bool(np.array_equal(np.asarray(fast).view(uint), np.asarray(ref).view(uint)))
    except Exception:
        return False


def _is_plain_torch_tensor(y: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and type(y) in (torch.Tensor, torch.nn.Parameter)


def _probe_torch_sign(y: Array, reference: Callable[[Array], Array]) -> bool:
    """True when the torch fast sign equals ``reference`` bit for bit on probe values."""
    torch = sys.modules["torch"]
    dtype, dev = y.dtype, y.device
    int_of = {2: torch.int16, 4: torch.int32, 8: torch.int64}.get(dtype.itemsize)
    if int_of is None or not dtype.is_floating_point:
        return False
    fi = torch.finfo(dtype)
    vals = [0.0, -0.0, math.inf, -math.inf, math.nan, -math.nan, fi.tiny, -fi.tiny, fi.max,
            -fi.max, fi.smallest_normal / 2, -fi.smallest_normal / 2, 1.0, -1.0, 0.5, -3.25]
    with torch.no_grad():
        probe = torch.tensor(vals, dtype=torch.float64).to(dtype)
        # NaNs with payloads of both signs: flip the lowest mantissa bit of a quiet NaN
        nans = torch.tensor([math.nan, -math.nan], dtype=dtype).view(int_of) | 1
        probe = torch.cat([probe, nans.view(dtype)]).to(dev)
        fast = torch.where(torch.isnan(probe), probe, torch.sign(probe))
        ref = reference(probe)
        return bool(torch.equal(fast.view(int_of), ref.view(int_of)))


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


def has_internal_overlap(x: Array) -> bool:
    """True when elements of ``x`` share memory: a dimension of size > 1 with stride 0 (torch's
    ``expand``, NumPy's ``broadcast_to`` or ``as_strided``). Writing in place to such an array
    is ill-defined (torch refuses it, NumPy keeps the last write)."""
    if is_torch_array(x):
        strides: Any = x.stride()
    else:
        strides = getattr(x, "strides", None)
    if not isinstance(strides, tuple):
        return False
    return any(st == 0 and n > 1 for n, st in zip(tuple(x.shape), strides))


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


# ---------------------------------------------------------------------------------------------
# Aliasing: which arrays share memory. One function for every front end (lionk.step,
# lionk.LionK, lionk.torch.LionK): an in-place step that reads an array another leaf writes
# (the same buffer twice, overlapping views, a gradient that is a param's or a momentum's
# memory) gives results that depend on the order of the writes, so it is refused.


def _plain_torch_types() -> tuple[type, ...]:
    """``(torch.Tensor, torch.nn.Parameter)`` once torch is imported (never imports it)."""
    global _PLAIN_TORCH_TYPES
    if not _PLAIN_TORCH_TYPES:
        torch = sys.modules.get("torch")
        if torch is not None and hasattr(torch, "nn"):
            _PLAIN_TORCH_TYPES = (torch.Tensor, torch.nn.Parameter)
    return _PLAIN_TORCH_TYPES


_PLAIN_TORCH_TYPES: tuple[type, ...] = ()


def memory_span(a: Any, *, donated: bool = False) -> tuple[Any, int, int] | None:
    """``(memory space, first byte, one past the last byte)`` of the elements of ``a``, or None
    for arrays that own no mutable memory here (JAX arrays are immutable; empty arrays, NumPy
    scalars and tensors without storage hold nothing). With ``donated`` a JAX array is its own
    buffer (``jax.jit(..., donate_argnums=...)`` hands it to XLA, which may write into it)."""
    if type(a) in _plain_torch_types():  # the common case first: a Tensor or Parameter
        n = a.numel()
        if n == 0 or a.is_meta:
            return None
        lo = a.data_ptr()
        dev = a.get_device()
        space = "host" if dev < 0 else f"torch:{a.device.type}:{dev}"
        if a.is_contiguous():
            return (space, lo, lo + n * a.element_size())
        extent = sum((int(k) - 1) * int(st) for k, st in zip(a.shape, a.stride()))
        return (space, lo, lo + (extent + 1) * a.element_size())
    if is_jax_array(a):
        return ("jax", id(a), id(a) + 1) if donated else None
    if type(a) is np.ndarray or (isinstance(a, np.ndarray) and not isinstance(a, np.generic)):
        if a.size == 0:
            return None
        if a.flags.c_contiguous:
            lo = a.__array_interface__["data"][0]
            return ("host", lo, lo + a.nbytes)
        lo, hi = _byte_bounds(a)
        return ("host", lo, hi)
    if is_torch_array(a):
        if a.numel() == 0 or a.device.type == "meta" or a.layout != sys.modules["torch"].strided:
            return None
        if type(a).__name__ == "DTensor":  # FSDP2: each rank holds its own shard
            a = a.to_local()  # type: ignore[attr-defined]
        lo = int(a.data_ptr())
        extent = sum((int(n) - 1) * int(s) for n, s in zip(a.shape, a.stride()))
        space = "host" if a.device.type == "cpu" else str(a.device)
        return (space, lo, lo + (extent + 1) * a.element_size())
    if type(a).__module__.startswith("cupy"):
        if a.size == 0:
            return None
        lo = int(a.data.ptr)
        low = sum((int(n) - 1) * int(s) for n, s in zip(a.shape, a.strides) if s < 0)
        high = sum((int(n) - 1) * int(s) for n, s in zip(a.shape, a.strides) if s > 0)
        return (f"cupy:{a.device.id}", lo + low, lo + high + a.itemsize)
    inner = getattr(a, "_array", None)  # array-api-strict wraps a NumPy array
    if type(a).__module__.startswith("array_api_strict") and isinstance(inner, np.ndarray):
        return memory_span(inner)
    return None


_byte_bounds: Any = getattr(getattr(np.lib, "array_utils", None), "byte_bounds", None) or getattr(
    np, "byte_bounds", None)  # NumPy 2 moved it


def _as_numpy_view(a: Any) -> np.ndarray | None:
    """A NumPy array over the same memory as ``a`` (host arrays), for an exact overlap test."""
    if isinstance(a, np.ndarray):
        return a
    if is_torch_array(a) and a.device.type == "cpu":
        torch = sys.modules["torch"]
        t = a.to_local() if type(a).__name__ == "DTensor" else a  # type: ignore[attr-defined]
        same_size = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
        try:
            return t.detach().view(same_size[t.element_size()]).numpy()
        except (KeyError, RuntimeError, TypeError):
            return None
    inner = getattr(a, "_array", None)
    return inner if isinstance(inner, np.ndarray) else None


def _share(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b``, whose byte ranges overlap, have an element in common (exact on
    the host; the byte ranges decide elsewhere)."""
    na, nb = _as_numpy_view(a), _as_numpy_view(b)
    if na is None or nb is None:
        return True
    try:
        return bool(np.shares_memory(na, nb, max_work=10**6))  # type: ignore[arg-type]
    except getattr(np, "exceptions", np).TooHardError:
        return True


def _torch_disjoint(tensors: Any) -> bool:
    """True when contiguous tensors on one device have disjoint byte ranges: a vectorised test
    (about 0.3 µs a tensor) for the common case; False means "look closer"."""
    if not all(t.is_contiguous() for t in tensors) or len({t.get_device() for t in tensors}) > 1:
        return False
    if len(tensors) <= 64:  # a few tensors: sorting Python ints beats NumPy's per-call costs
        spans = sorted((t.data_ptr(), t.numel() * t.element_size()) for t in tensors)
        end = 0
        for start, nbytes in spans:
            if start < end:
                return False
            end = max(end, start + nbytes)
        return True
    lo = np.array([t.data_ptr() for t in tensors], dtype=np.uint64)
    hi = lo + np.array([t.numel() * t.element_size() for t in tensors], dtype=np.uint64)
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    return bool(np.all(lo[1:] >= np.maximum.accumulate(hi)[:-1]))


def owning_numpy_arrays(*groups: Any) -> bool:
    """True when the arrays of ``groups`` (sequences of arrays) are distinct plain NumPy arrays
    that each own their memory: no two of them can share memory. (False means "look closer":
    :func:`find_overlap`.)"""
    if len(groups) == 3 and len(groups[0]) == len(groups[1]) == len(groups[2]) == 1:
        (x,), (g,), (m,) = groups  # a one-array step: three arrays, no set needed
        return (type(x) is np.ndarray and type(g) is np.ndarray and type(m) is np.ndarray
                and x is not g and x is not m and g is not m
                and x.flags.owndata and g.flags.owndata and m.flags.owndata)
    ids = set()
    n = 0
    for arrays in groups:
        for a in arrays:
            if type(a) is not np.ndarray or not a.flags.owndata:
                return False
            ids.add(id(a))
        n += len(arrays)
    return len(ids) == n


_SHAPE_DTYPE = operator.attrgetter("shape", "dtype")
_ONLY_NDARRAY = {np.ndarray}


def numpy_signature(arrays: Any) -> tuple[tuple[Any, Any], ...] | None:
    """``((shape, dtype), ...)`` of ``arrays`` when all are plain ``np.ndarray`` (not a subclass),
    else None: for a NumPy array these (read now: NumPy can change them in place) are all that
    lionk's structure checks look at."""
    if set(map(type, arrays)) != _ONLY_NDARRAY:
        return None
    return tuple(map(_SHAPE_DTYPE, arrays))


def numpy_leaf_signature(x: Any, g: Any, m: Any) -> tuple[Any, ...] | None:
    """``(shape, dtype)`` of each of three plain ``np.ndarray`` (a one-array step's params,
    grads and momentum), else None: :func:`numpy_signature` for the commonest small step."""
    if type(x) is np.ndarray and type(g) is np.ndarray and type(m) is np.ndarray:
        return (x.shape, x.dtype, g.shape, g.dtype, m.shape, m.dtype)
    return None


_OPERAND_DTYPES = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64))


def numpy_float_dtype(*groups: Any) -> Any:
    """The dtype of every array of ``groups`` (sequences of arrays) when all are plain
    ``np.ndarray`` of one dtype among float16, float32 and float64; else None."""
    if len(groups) == 3 and len(groups[0]) == len(groups[1]) == len(groups[2]) == 1:
        (x,), (g,), (m,) = groups  # a one-array step
        if type(x) is not np.ndarray or type(g) is not np.ndarray or type(m) is not np.ndarray:
            return None
        dt = x.dtype
        return dt if g.dtype is dt and m.dtype is dt and dt in _OPERAND_DTYPES else None
    dt = None
    for arrays in groups:
        for a in arrays:
            if type(a) is not np.ndarray:
                return None
            d = a.dtype
            if d is not dt:
                if dt is not None:
                    return None  # (or an equal dtype that is another object: rare, not worth it)
                dt = d
    return dt if dt is not None and dt in _OPERAND_DTYPES else None


def numpy_scalar_operands(values: Any, dtype: Any) -> tuple[Any, ...] | None:
    """``values`` (Python floats) as read-only 0-d NumPy arrays of ``dtype`` (from
    :func:`numpy_float_dtype`): each the float rounded once to ``dtype``, which is what NumPy
    does itself with a Python float operand (NEP 50), so every product is bit for bit the same;
    but NumPy multiplies a small array by a 0-d array of its dtype about 0.2 µs faster than by a
    Python float. None when a nonzero value is outside ``dtype``'s normal range (its rounding
    would underflow or overflow: then the Python floats are used, as NumPy's floating-point
    error handling expects)."""
    fi = np.finfo(dtype)
    lo, hi = float(fi.smallest_normal), float(fi.max)
    out = []
    for v in values:
        if type(v) is not float or (v != 0.0 and not lo <= abs(v) <= hi):
            return None
        a = np.asarray(v, dtype=dtype)
        a.flags.writeable = False
        out.append(a)
    return tuple(out)


def find_overlap(arrays: Any, writable: Any, *, donated: bool = False) -> tuple[int, int] | None:
    """The first pair ``(i, j)``, ``i < j``, of ``arrays`` that share memory and of which at
    least one is ``writable[k]``; None when there is none. Read-only arrays may share memory
    with each other (e.g. one gradient used for two leaves).

    Sorts the byte ranges once (``O(n log n)``) and tests only the pairs whose ranges overlap,
    exactly (``np.shares_memory``) where NumPy can see the memory (NumPy, torch CPU,
    array-api-strict), by byte range elsewhere (GPU). JAX arrays never alias: they are
    immutable (a donated buffer is a new array to JAX).
    """
    if owning_numpy_arrays(arrays):
        return None  # distinct NumPy arrays that each own their memory cannot overlap
    torch_types = _plain_torch_types()
    if torch_types and all(type(a) in torch_types for a in arrays) and _torch_disjoint(arrays):
        return None
    spans = []
    for i, a in enumerate(arrays):
        s = memory_span(a, donated=donated)
        if s is not None:
            spans.append((s[0] if isinstance(s[0], str) else str(s[0]), s[1], s[2], i))
    spans.sort()
    # one pass: no byte range starts before the previous ones (of its space) end → no overlap
    space_prev, end = None, 0
    for space, lo, hi, _ in spans:
        if space == space_prev and lo < end:
            break
        if space != space_prev or hi > end:
            space_prev, end = space, hi
    else:
        return None
    found: tuple[int, int] | None = None
    active: list[tuple[str, int, int, int]] = []
    for space, lo, hi, i in spans:
        active = [t for t in active if t[0] == space and t[2] > lo]
        for _, _, _, j in active:
            if (writable[i] or writable[j]) and _share(arrays[i], arrays[j]):
                pair = (min(i, j), max(i, j))
                if found is None or pair < found:
                    found = pair
        active.append((space, lo, hi, i))
    return found


def check_no_aliasing(groups: Any, *, donated: bool = False) -> None:
    """Raise ValueError naming both arrays when two arrays of ``groups`` share memory and one of
    them is written by the step. ``groups``: ``(labels, arrays, writable)`` triples, e.g.
    ``(["params['a']", ...], xs, True)``, ``(gradient labels, gs, False)``; ``labels`` may be a
    function of the position (called only to name the two arrays of an error). ``donated``: the
    writable JAX arrays are donated buffers (``lionk.jit_step``)."""
    starts: list[tuple[int, Any]] = []  # (first position, names) of each group
    arrays: list[Any] = []
    writable: list[bool] = []
    for names, arrs, w in groups:
        starts.append((len(arrays), names))
        arrays.extend(arrs)
        writable.extend([bool(w)] * (len(arrays) - starts[-1][0]))
    if len(arrays) < 2:
        return
    pair = find_overlap(arrays, writable, donated=donated)
    if pair is None:
        return

    def label(pos: int) -> str:  # the names are built only now, for the two arrays at fault
        first, names = next((f, nm) for f, nm in reversed(starts) if f <= pos)
        return names(pos - first) if callable(names) else names[pos - first]

    labels = [label(pair[0]), label(pair[1])]
    i, j = 0, 1
    arrays = [arrays[pair[0]], arrays[pair[1]]]
    same = arrays[i] is arrays[j]
    how = "is the same array as" if same else "shares memory with"
    why = ("jit_step donates the params' and momentum's buffers to XLA; pass a copy, or "
           "donate=False" if donated else "the in-place step would read values it has already "
           "overwritten; pass separate arrays, e.g. a copy")
    raise ValueError(
        f"{labels[j]}: expected an array that shares no memory with the others the step reads "
        f"and writes; received one that {how} {labels[i]} ({why})"
    )
