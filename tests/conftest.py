"""Shared fixtures for lionk's test suite.

* JAX runs in 64-bit mode (``jax_enable_x64``), set once here before any test builds an array:
  the flag is global and sticky, and without it JAX silently turns float64 into float32.
* ``backend``: one fixture parametrized over numpy, array-api-strict, torch and jax (those not
  installed are skipped). Each value is a :class:`Backend`, i.e. a
  ``conformance.libraries.Library`` (the one backend abstraction of the tests, the conformance
  suite and the benchmarks) that converts numpy arrays to the backend's arrays and back, without
  sharing memory.
* ``float_dtype``: "float32" and "float64" (the float32 pass next to the x64 one).
* Bitwise helpers (:func:`bits`, :func:`assert_bitwise_equal`) live in ``tests/_util.py``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

HAVE_JAX = importlib.util.find_spec("jax") is not None
HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_STRICT = importlib.util.find_spec("array_api_strict") is not None

if HAVE_JAX:
    import jax

    jax.config.update("jax_enable_x64", True)

from conformance.libraries import (  # noqa: E402  (the one backend abstraction)
    NP_BFLOAT16,
    TEST_LIBRARIES,
    Library,
    Unavailable,
    library,
    np_dtype_name,
)
from conformance.libraries import np_dtype as _np_dtype  # noqa: E402

__all__ = ["Backend", "NP_BFLOAT16", "BACKEND_NAMES", "get_backend", "np_dtype", "np_dtype_name"]

BACKEND_NAMES = list(TEST_LIBRARIES)
Backend = Library  # what the tests call one array library (conformance/libraries.py)


def np_dtype(name: str) -> Any:
    """The numpy dtype called ``name``; skips the calling test when it needs ml_dtypes."""
    try:
        return _np_dtype(name)
    except Unavailable as exc:  # pragma: no cover
        pytest.skip(str(exc))


def get_backend(name: str) -> Backend:
    """The :class:`Backend` called ``name`` (on the CPU); skips the calling test when it is not
    installed."""
    try:
        return library(name)
    except Unavailable as exc:
        pytest.skip(f"{name}: {exc}")


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Every installed array library in turn."""
    return get_backend(request.param)


@pytest.fixture(params=["float32", "float64"])
def float_dtype(request: pytest.FixtureRequest) -> str:
    """The float32 pass and the float64 (x64) pass."""
    return request.param
