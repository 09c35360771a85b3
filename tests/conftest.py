"""Shared fixtures for lionk's test suite.

* JAX runs in 64-bit mode (``jax_enable_x64``), set once here before any test builds an array:
  the flag is global and sticky, and without it JAX silently turns float64 into float32.
* ``backend``: one fixture parametrized over numpy, array-api-strict, torch and jax (those not
  installed are skipped). Each value is a :class:`Backend` that converts numpy arrays to the
  backend's arrays and back, without sharing memory.
* ``float_dtype``: "float32" and "float64" (the float32 pass next to the x64 one).
* Bitwise helpers: :func:`bits` (an integer view) and :func:`assert_bitwise_equal`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

HAVE_JAX = importlib.util.find_spec("jax") is not None
HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_STRICT = importlib.util.find_spec("array_api_strict") is not None

if HAVE_JAX:
    import jax

    jax.config.update("jax_enable_x64", True)

try:  # bfloat16 for numpy-side references (ml_dtypes is a dependency of jax)
    import ml_dtypes

    NP_BFLOAT16: Any = ml_dtypes.bfloat16
except ImportError:  # pragma: no cover
    NP_BFLOAT16 = None

BACKEND_NAMES = ["numpy", "array_api_strict", "torch", "jax"]


@dataclass
class Backend:
    """One array library as the tests see it.

    Attributes:
        name: "numpy", "array_api_strict", "torch" or "jax".
        xp: the array-API namespace lionk will find for this backend's arrays.
        writeable: whether arrays can be updated in place (False for jax).
        dtypes: the floating dtype names this backend offers, narrowest first.
    """

    name: str
    xp: Any
    writeable: bool
    dtypes: tuple[str, ...]
    _from_np: Callable[[np.ndarray, str], Any] = field(repr=False)
    _to_np: Callable[[Any], np.ndarray] = field(repr=False)

    def dtype(self, name: str) -> Any:
        """The backend's dtype object called ``name`` (e.g. "bfloat16")."""
        if name == "bfloat16" and self.name == "torch":
            import torch

            return torch.bfloat16
        return getattr(self.xp, name)

    def has(self, dtype_name: str) -> bool:
        return dtype_name in self.dtypes

    def asarray(self, a: Any, dtype: str | None = None) -> Any:
        """A new backend array with the values of numpy array ``a`` (copied, never shared).

        Without ``dtype`` the dtype of ``a`` is kept; with it, ``a`` is first cast in numpy
        (the cast is then the only rounding, identical for every backend).
        """
        a = np.asarray(a)
        if dtype is not None:
            a = a.astype(np_dtype(dtype))
        return self._from_np(np.array(a, copy=True), dtype or np_dtype_name(a.dtype))

    def to_numpy(self, x: Any) -> np.ndarray:
        """A numpy copy of backend array ``x`` with the same dtype (bfloat16 via ml_dtypes)."""
        return np.array(self._to_np(x), copy=True)


def np_dtype(name: str) -> Any:
    if name == "bfloat16":
        if NP_BFLOAT16 is None:  # pragma: no cover
            pytest.skip("ml_dtypes (numpy bfloat16) not installed")
        return NP_BFLOAT16
    return np.dtype(name)


def np_dtype_name(dt: Any) -> str:
    return "bfloat16" if NP_BFLOAT16 is not None and dt == NP_BFLOAT16 else np.dtype(dt).name


def _numpy_backend() -> Backend:
    import array_api_compat.numpy as xnp

    return Backend("numpy", xnp, True, ("float16", "float32", "float64"),
                   lambda a, dt: a, lambda x: np.asarray(x))


def _strict_backend() -> Backend:
    import array_api_strict as xs

    def to_np(x: Any) -> np.ndarray:
        if x.device != xs.Device("CPU_DEVICE"):
            x = x.to_device(xs.Device("CPU_DEVICE"))
        return np.asarray(x)

    # array-api-strict has no float16 and no bfloat16
    return Backend("array_api_strict", xs, True, ("float32", "float64"),
                   lambda a, dt: xs.asarray(a), to_np)


def _torch_backend() -> Backend:
    import array_api_compat.torch as xt
    import torch

    def from_np(a: np.ndarray, dt: str) -> Any:
        if dt == "bfloat16":  # torch.from_numpy does not know ml_dtypes; bf16 -> f32 is exact
            return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
        return torch.from_numpy(a)

    def to_np(x: Any) -> np.ndarray:
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            return x.to(torch.float32).numpy().astype(NP_BFLOAT16)
        return x.numpy()

    return Backend("torch", xt, True, ("float16", "bfloat16", "float32", "float64"),
                   from_np, to_np)


def _jax_backend() -> Backend:
    import jax.numpy as jnp

    return Backend("jax", jnp, False, ("float16", "bfloat16", "float32", "float64"),
                   lambda a, dt: jnp.array(a, copy=True), lambda x: np.asarray(x))


_FACTORIES = {
    "numpy": (True, _numpy_backend),
    "array_api_strict": (HAVE_STRICT, _strict_backend),
    "torch": (HAVE_TORCH, _torch_backend),
    "jax": (HAVE_JAX, _jax_backend),
}

_CACHE: dict[str, Backend] = {}


def get_backend(name: str) -> Backend:
    """The :class:`Backend` called ``name``; skips the calling test when it is not installed."""
    available, factory = _FACTORIES[name]
    if not available:
        pytest.skip(f"{name} is not installed")
    if name not in _CACHE:
        _CACHE[name] = factory()
    return _CACHE[name]


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Every installed array library in turn."""
    return get_backend(request.param)


@pytest.fixture(params=["float32", "float64"])
def float_dtype(request: pytest.FixtureRequest) -> str:
    """The float32 pass and the float64 (x64) pass."""
    return request.param
