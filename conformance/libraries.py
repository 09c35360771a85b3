"""The array libraries as lionk's tests, conformance suite and benchmarks see them.

One abstraction for all three (before: ``tests/conftest.py``, ``conformance/backends.py`` and
``benchmarks/contenders.py`` each had their own): a :class:`Library` is an array library on a
device that converts NumPy arrays to its arrays and back without sharing memory, knows its
floating dtypes, and can wait for queued work (``sync``, for timings).

- ``tests/conftest.py``: the ``backend`` fixture is :func:`library` over :data:`TEST_LIBRARIES`.
- ``conformance/backends.py``: a conformance row is a library plus how the step runs on it
  (eager, an execution path, ``jax.jit``) and the tier expected of it.
- ``benchmarks/contenders.py``: contenders get their copies of the workload and their ``sync``
  from the library of their backend and device.

Nothing is imported until a library is asked for; one that is not installed, or has no such
device here, raises :class:`Unavailable` with the reason.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

try:  # bfloat16 for numpy-side references (ml_dtypes is a dependency of jax)
    import ml_dtypes

    NP_BFLOAT16: Any = ml_dtypes.bfloat16
except ImportError:  # pragma: no cover
    NP_BFLOAT16 = None

__all__ = ["Library", "Unavailable", "library", "installed", "np_dtype", "np_dtype_name",
           "NP_BFLOAT16", "LIBRARIES", "TEST_LIBRARIES"]

LIBRARIES = ("numpy", "array_api_strict", "torch", "jax", "cupy", "dask")
TEST_LIBRARIES = ("numpy", "array_api_strict", "torch", "jax")  # the tests' ``backend`` fixture


class Unavailable(Exception):
    """The library is not installed here, or has no device of the kind asked for."""


@dataclass(frozen=True)
class Library:
    """One array library on one device.

    Attributes:
        name: "numpy", "array_api_strict", "torch", "jax", "cupy" or "dask".
        device: "cpu" or "cuda".
        xp: the array-API namespace lionk finds for this library's arrays.
        writeable: whether arrays can be updated in place (False for jax).
        dtypes: the floating dtype names this library offers, narrowest first.
    """

    name: str
    device: str
    xp: Any
    writeable: bool
    dtypes: tuple[str, ...]
    _from_np: Callable[[np.ndarray, str], Any] = field(repr=False)
    _to_np: Callable[[Any], np.ndarray] = field(repr=False)
    _sync: Callable[[tuple[Any, ...]], None] = field(repr=False, default=lambda arrays: None)

    def dtype(self, name: str) -> Any:
        """The library's dtype object called ``name`` (e.g. "bfloat16")."""
        if name == "bfloat16" and self.name == "torch":
            import torch

            return torch.bfloat16
        return getattr(self.xp, name)

    def has(self, dtype_name: str) -> bool:
        return dtype_name in self.dtypes

    def asarray(self, a: Any, dtype: str | None = None) -> Any:
        """A new array of this library, on its device, with the values of numpy array ``a``
        (copied, never shared). Without ``dtype`` the dtype of ``a`` is kept; with it, ``a`` is
        first cast in numpy (the cast is then the only rounding, identical for every library)."""
        a = np.asarray(a)
        if dtype is not None:
            a = a.astype(np_dtype(dtype))
        return self._from_np(np.array(a, copy=True), dtype or np_dtype_name(a.dtype))

    def to_numpy(self, x: Any) -> np.ndarray:
        """A numpy copy of array ``x`` with the same dtype (bfloat16 via ml_dtypes)."""
        return np.array(self._to_np(x), copy=True)

    def sync(self, *arrays: Any) -> None:
        """Wait until queued work is done: the device's (torch, CuPy on CUDA) or that producing
        ``arrays`` (JAX, which has no device-wide barrier); a no-op for NumPy-like libraries."""
        self._sync(arrays)


def np_dtype(name: str) -> Any:
    if name == "bfloat16":
        if NP_BFLOAT16 is None:  # pragma: no cover
            raise Unavailable("ml_dtypes (numpy bfloat16) not installed")
        return NP_BFLOAT16
    return np.dtype(name)


def np_dtype_name(dt: Any) -> str:
    return "bfloat16" if NP_BFLOAT16 is not None and dt == NP_BFLOAT16 else np.dtype(dt).name


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _numpy(device: str) -> Library:
    import array_api_compat.numpy as xnp

    return Library("numpy", device, xnp, True, ("float16", "float32", "float64"),
                   lambda a, dt: a, np.asarray)


def _strict(device: str) -> Library:
    import array_api_strict as xs

    def to_np(x: Any) -> np.ndarray:
        if x.device != xs.Device("CPU_DEVICE"):
            x = x.to_device(xs.Device("CPU_DEVICE"))
        return np.asarray(x)

    # array-api-strict has no float16 and no bfloat16
    return Library("array_api_strict", device, xs, True, ("float32", "float64"),
                   lambda a, dt: xs.asarray(a), to_np)


def _torch(device: str) -> Library:
    import array_api_compat.torch as xt
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise Unavailable("no CUDA device")

    def from_np(a: np.ndarray, dt: str) -> Any:
        if dt == "bfloat16":  # torch.from_numpy does not know ml_dtypes; bf16 -> f32 is exact
            return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16).to(device)
        return torch.from_numpy(a).to(device)

    def to_np(x: Any) -> np.ndarray:
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            return x.to(torch.float32).numpy().astype(NP_BFLOAT16)
        return x.numpy()

    def sync(arrays: tuple[Any, ...]) -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    return Library("torch", device, xt, True, ("float16", "bfloat16", "float32", "float64"),
                   from_np, to_np, sync)


def _jax(device: str) -> Library:
    import jax
    import jax.numpy as jnp

    platform = "gpu" if device == "cuda" else "cpu"
    try:
        dev = jax.devices(platform)[0]
    except RuntimeError:
        raise Unavailable(f"no JAX {platform} device") from None

    def sync(arrays: tuple[Any, ...]) -> None:
        jax.block_until_ready(arrays)

    return Library("jax", device, jnp, False, ("float16", "bfloat16", "float32", "float64"),
                   lambda a, dt: jax.device_put(a, dev), np.asarray, sync)


def _cupy(device: str) -> Library:
    if device != "cuda":
        raise Unavailable("CuPy runs on CUDA devices only")
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver or no device
        raise Unavailable(f"no CUDA device ({type(exc).__name__})") from None
    import array_api_compat.cupy as xp

    return Library("cupy", device, xp, True, ("float16", "float32", "float64"),
                   lambda a, dt: cupy.asarray(a), cupy.asnumpy,
                   lambda arrays: cupy.cuda.Device().synchronize())


def _dask_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """About two chunks per axis, so that every leaf is split and chunk edges fall inside it."""
    return tuple(max(1, (int(n) + 1) // 2) for n in shape)


def _dask(device: str) -> Library:
    import array_api_compat.dask.array as xp
    import dask.array as da

    def to_np(a: Any) -> np.ndarray:
        return np.asarray(a.compute(scheduler="sync") if hasattr(a, "compute") else a)

    return Library("dask", device, xp, False, ("float32", "float64"),
                   lambda a, dt: da.from_array(a, chunks=_dask_chunks(np.shape(a))), to_np)


_FACTORIES: dict[str, tuple[str, Callable[[str], Library]]] = {
    "numpy": ("numpy", _numpy),
    "array_api_strict": ("array_api_strict", _strict),
    "torch": ("torch", _torch),
    "jax": ("jax", _jax),
    "cupy": ("cupy", _cupy),
    "dask": ("dask", _dask),
}


@functools.cache
def library(name: str, device: str = "cpu") -> Library:
    """The :class:`Library` ``name`` on ``device`` ("cpu" or "cuda"); :class:`Unavailable`
    (with the reason) when it is not installed or has no such device here."""
    if name not in _FACTORIES:
        raise KeyError(f"unknown array library {name!r}; known: {', '.join(LIBRARIES)}")
    module, factory = _FACTORIES[name]
    if not installed(module):
        raise Unavailable(f"{name} not installed")
    if device not in ("cpu", "cuda"):
        raise KeyError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")
    if device == "cuda" and name in ("numpy", "array_api_strict", "dask"):
        raise Unavailable(f"{name} runs on the CPU only")
    return factory(device)
