"""Primitive audit: re-measure the facts of reproducibility.md (the project's shared notes) that the exact path relies on.

1. The operations the exact κ and the step use (add, subtract, multiply, division by a full
   array, where, clip, comparisons, maximum/minimum, abs, copysign, negative) give bitwise
   identical results on numpy, array-api-strict, torch CPU eager and JAX CPU eager, float32
   and float64, on random data away from subnormals.
2. The KNOWN DIVERGENCES below are kept as data. Each is tested to still hold, so that a
   library upgrade that changes one (for better or worse) is noticed and the notes updated. A divergence that stops holding fails its test: update the table and the doc.
"""

from __future__ import annotations

import numpy as np
import pytest

from ._util import assert_bitwise_equal
from .conftest import get_backend

N = 4096


def _data(dtype, seed):
    """Random values with both signs, many magnitudes (2^-20 … 2^20, 2^-10 … 2^10 for float16;
    far from subnormals), exact zeros of both signs and repeated values (ties for comparisons
    and maximum)."""
    rng = np.random.default_rng(seed)
    k = 20 if np.dtype(dtype).itemsize > 2 else 10  # float16 overflows beyond 65504
    v = rng.standard_normal(N) * np.exp2(rng.integers(-k, k + 1, N))
    v[:8] = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, 2.0]
    v[8:64] = v[64:120]  # exact repeats
    return v.astype(dtype)


# name -> (function of (xp, a, b), reference numpy function of (a, b))
BINARY = {
    "add": (lambda xp, a, b: xp.add(a, b), np.add),
    "subtract": (lambda xp, a, b: xp.subtract(a, b), np.subtract),
    "multiply": (lambda xp, a, b: xp.multiply(a, b), np.multiply),
    "operators a*b - a + b": (lambda xp, a, b: a * b - a + b, lambda a, b: a * b - a + b),
    "python-float coefficient": (lambda xp, a, b: 0.9 * a + 0.1 * b, lambda a, b: 0.9 * a + 0.1 * b),
    "divide (full array)": (lambda xp, a, b: xp.divide(a, xp.where(b == 0, xp.ones_like(b), b)),
                            lambda a, b: np.divide(a, np.where(b == 0, np.ones_like(b), b))),
    "maximum": (lambda xp, a, b: xp.maximum(a, b), np.maximum),
    "minimum": (lambda xp, a, b: xp.minimum(a, b), np.minimum),
    "copysign": (lambda xp, a, b: xp.copysign(a, b), np.copysign),
    "where": (lambda xp, a, b: xp.where(a > b, a, b), lambda a, b: np.where(a > b, a, b)),
}
UNARY = {
    "abs": (lambda xp, a: xp.abs(a), np.abs),
    "negative": (lambda xp, a: -a, np.negative),
    "clip": (lambda xp, a: xp.clip(a, -1.0, 1.0), lambda a: np.clip(a, -1.0, 1.0)),
    "clip(a*k)": (lambda xp, a: xp.clip(a * 3.3333333333333335, -1.0, 1.0),
                  lambda a: np.clip(a * 3.3333333333333335, -1.0, 1.0)),
    "nested-where sign": (
        lambda xp, a: xp.where(a > 0, xp.ones_like(a), xp.where(a < 0, -xp.ones_like(a), xp.zeros_like(a))),
        lambda a: np.where(a > 0, np.ones_like(a), np.where(a < 0, -np.ones_like(a), np.zeros_like(a))),
    ),
}
COMPARE = {
    "greater": (lambda xp, a, b: a > b, np.greater),
    "less": (lambda xp, a, b: a < b, np.less),
    "greater_equal": (lambda xp, a, b: a >= b, np.greater_equal),
    "less_equal": (lambda xp, a, b: a <= b, np.less_equal),
    "equal": (lambda xp, a, b: a == b, np.equal),
    "not_equal": (lambda xp, a, b: a != b, np.not_equal),
    "compare with 0.1": (lambda xp, a, b: a > 0.1, lambda a, b: a > 0.1),
}


@pytest.mark.parametrize("op", list(BINARY))
def test_binary_ops_bitwise(backend, float_dtype, op) -> None:
    """Correctly rounded binary operations agree with numpy bit for bit."""
    fn, ref = BINARY[op]
    a, b = _data(float_dtype, 1), _data(float_dtype, 2)
    got = backend.to_numpy(fn(backend.xp, backend.asarray(a), backend.asarray(b)))
    assert_bitwise_equal(got, ref(a, b).astype(float_dtype), f"{op} on {backend.name}")


@pytest.mark.parametrize("op", list(UNARY))
def test_unary_ops_bitwise(backend, float_dtype, op) -> None:
    """abs, negation, clip (also of a scaled input) and a nested-where sign agree bitwise."""
    fn, ref = UNARY[op]
    a = _data(float_dtype, 3)
    a[:2] = [0.0, -0.0]
    got = backend.to_numpy(fn(backend.xp, backend.asarray(a)))
    expected = ref(a).astype(float_dtype)
    assert_bitwise_equal(got, expected, f"{op} on {backend.name}")


@pytest.mark.parametrize("op", list(COMPARE))
def test_comparisons_identical(backend, float_dtype, op) -> None:
    """Comparisons (including with a Python float that is not representable, rounded to the
    array dtype first) give the same booleans."""
    fn, ref = COMPARE[op]
    a, b = _data(float_dtype, 4), _data(float_dtype, 5)
    a[200:210] = np.asarray(0.1, float_dtype)  # the rounded 0.1 itself and its neighbours
    a[210:215] = np.nextafter(np.asarray(0.1, float_dtype), np.asarray(1, float_dtype))
    a[215:220] = np.nextafter(np.asarray(0.1, float_dtype), np.asarray(0, float_dtype))
    got = backend.to_numpy(fn(backend.xp, backend.asarray(a), backend.asarray(b)))
    np.testing.assert_array_equal(got, ref(a, b))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_numpy_native_sign_is_the_exact_sign(dtype) -> None:
    """lionk uses np.sign for numpy arrays in place of its nested-where exact sign (NaN → NaN,
    ±0 → +0, else ±1), on the strength of this fact: the two agree bit for bit, signed zeros,
    ±inf, subnormals and NaN payloads (both signs) included, and for numpy scalars too."""
    u = {"float16": np.uint16, "float32": np.uint32, "float64": np.uint64}[dtype]
    special = np.array([-0.0, 0.0, np.nan, -np.nan, np.inf, -np.inf], dtype)
    payload = (np.array([np.nan, -np.nan], dtype).view(u) | u(1)).view(dtype)
    tiny = np.array([np.finfo(dtype).smallest_subnormal, -np.finfo(dtype).smallest_subnormal], dtype)
    a = np.concatenate([special, payload, tiny, _data(dtype, 18)])

    def where_sign(y):
        one, zero = np.ones((), y.dtype), np.zeros((), y.dtype)
        return np.where(y > 0, one, np.where(y < 0, -one, np.where(y == y, zero, y)))

    assert_bitwise_equal(np.sign(a), where_sign(a), f"np.sign {dtype}")
    for v in a[:10]:
        assert_bitwise_equal(np.asarray(np.sign(v)), np.asarray(where_sign(np.asarray(v))), f"scalar {v!r}")


def test_coefficient_rounding_is_not_subtraction_in_dtype() -> None:
    """The fact behind computing coefficients as Python floats: float32(1 − 0.99) differs from
    float32(1) − float32(0.99), so where the subtraction happens matters."""
    assert np.float32(1 - 0.99) != np.float32(1) - np.float32(0.99)


# ---------------------------------------------------------------------------------------------
# Known divergences, as data. Each entry: a description, the backend it concerns, and a probe
# that returns True while the divergence still holds.


def _frac_differs(got, expected) -> float:
    from ._util import bits

    return float(np.mean(bits(np.asarray(got)) != bits(np.asarray(expected))))


def _torch_sqrt_not_correctly_rounded(dtype):
    import torch

    a = np.abs(_data(dtype, 6)) + np.asarray(1.0, dtype)
    return _frac_differs(torch.sqrt(torch.from_numpy(a)).numpy(), np.sqrt(a)) > 0


def _jax_sign_negative_zero():
    import jax.numpy as jnp

    return bool(np.signbit(np.asarray(jnp.sign(jnp.asarray(-0.0)))))


def _numpy_sign_negative_zero_is_positive():
    return not np.signbit(np.sign(np.float64(-0.0)))


def _torch_raw_sign_nan_is_zero():
    import torch

    return float(torch.sign(torch.tensor(float("nan")))) == 0.0


def _jax_divide_by_0d_uses_reciprocal(dtype):
    import jax.numpy as jnp

    a = _data(dtype, 7)
    return _frac_differs(jnp.asarray(a) / jnp.asarray(np.asarray(3.0, dtype)), a / np.asarray(3.0, dtype)) > 0


def _jax_divide_by_python_float_uses_reciprocal(dtype):
    import jax.numpy as jnp

    a = _data(dtype, 8)
    return _frac_differs(jnp.asarray(a) / 3.0, a / np.asarray(3.0, dtype)) > 0


def _jax_flushes_subnormals():
    import jax.numpy as jnp

    sub = np.array([1e-40], np.float32)  # a float32 subnormal
    return float(np.asarray(jnp.asarray(sub) * jnp.asarray(np.float32(1.0)))[0]) == 0.0


def _jax_jit_contracts_fma(dtype):
    import jax

    a, b, c = _data(dtype, 9), _data(dtype, 10), _data(dtype, 11)
    jitted = jax.jit(lambda a, b, c: a * b + c)(a, b, c)
    return _frac_differs(jitted, (a * b + c).astype(dtype)) > 0


def _jax_jit_drops_add_zero():
    import jax
    import jax.numpy as jnp

    z = jax.jit(lambda x: x + 0.0)(jnp.asarray(-0.0))
    return bool(np.signbit(np.asarray(z)))  # eager gives +0.0


def _torch_fused_forms_round_once(dtype):
    import torch

    a, b, c = (torch.from_numpy(_data(dtype, s)) for s in (12, 13, 14))
    an, bn, cn = a.numpy(), b.numpy(), c.numpy()
    add_alpha = c.clone().add_(a, alpha=0.1).numpy()
    addcmul = torch.addcmul(c, a, b).numpy()
    lerp = torch.lerp(a, b, 0.1).numpy()
    return (
        _frac_differs(add_alpha, cn + 0.1 * an) > 0
        and _frac_differs(addcmul, an * bn + cn) > 0
        and _frac_differs(lerp, an + 0.1 * (bn - an)) > 0
    )


def _torch_sum_order_differs(dtype):
    import torch

    # a summation order shows only on some data: any of 10 arrays differing suffices
    rng = np.random.default_rng(15)
    arrays = [rng.standard_normal(100_000).astype(dtype) for _ in range(10)]
    return any(float(torch.from_numpy(a).sum()) != float(np.sum(a)) for a in arrays)


def _hypot_differs(dtype):
    import jax.numpy as jnp

    a, b = _data(dtype, 16), _data(dtype, 17)
    return _frac_differs(jnp.hypot(a, b), np.hypot(a, b)) > 0


KNOWN_DIVERGENCES = {
    "torch.sqrt (CPU) is not correctly rounded, float32": ("torch", lambda: _torch_sqrt_not_correctly_rounded(np.float32)),
    "torch.sqrt (CPU) is not correctly rounded, float64": ("torch", lambda: _torch_sqrt_not_correctly_rounded(np.float64)),
    "jnp.sign(-0.0) is -0.0": ("jax", _jax_sign_negative_zero),
    "np.sign(-0.0) is +0.0": ("numpy", _numpy_sign_negative_zero_is_positive),
    "raw torch.sign(NaN) is 0": ("torch", _torch_raw_sign_nan_is_zero),
    "jax divides by a 0-d array through the reciprocal, float32": ("jax", lambda: _jax_divide_by_0d_uses_reciprocal(np.float32)),
    "jax divides by a 0-d array through the reciprocal, float64": ("jax", lambda: _jax_divide_by_0d_uses_reciprocal(np.float64)),
    "jax divides by a Python float through the reciprocal": ("jax", lambda: _jax_divide_by_python_float_uses_reciprocal(np.float32)),
    "jax CPU flushes float32 subnormals to zero (eager)": ("jax", _jax_flushes_subnormals),
    "jax.jit contracts a*b + c into an FMA, float32": ("jax", lambda: _jax_jit_contracts_fma(np.float32)),
    "jax.jit contracts a*b + c into an FMA, float64": ("jax", lambda: _jax_jit_contracts_fma(np.float64)),
    "jax.jit drops x + 0.0 (keeps -0.0)": ("jax", _jax_jit_drops_add_zero),
    "torch add_(alpha=), addcmul, lerp round once": ("torch", lambda: _torch_fused_forms_round_once(np.float32)),
    "torch.sum order differs from numpy (float64, 1e5 terms, some arrays)": ("torch", lambda: _torch_sum_order_differs(np.float64)),
    "jnp.hypot differs from np.hypot": ("jax", lambda: _hypot_differs(np.float64)),
}


@pytest.mark.parametrize("fact", list(KNOWN_DIVERGENCES))
def test_known_divergence_still_holds(fact) -> None:
    """Each recorded divergence is still observed with the installed libraries. If one fails,
    a library changed behaviour: update KNOWN_DIVERGENCES and reproducibility.md."""
    bname, probe = KNOWN_DIVERGENCES[fact]
    get_backend(bname)  # skips when the library is not installed
    assert probe(), f"no longer holds: {fact}"
