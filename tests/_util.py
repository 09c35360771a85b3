"""Helpers shared by the test modules: bit patterns, ulp distances, numpy reference steps."""

from __future__ import annotations

import numpy as np

_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}

def textbook(name: str, **params):
    """The built-in κ in its textbook form (theory.md §6), which the defaults are not (every
    built-in is normalised to train at Lion's settings: docs/kappa.md). Tests of a κ's textbook
    mathematics, or of an execution path that needs an elementwise κ, use it. ``"l2:global"``
    sets the scope."""
    import lionk

    base, _, scope = name.partition(":")
    return lionk.kappa.textbook(base, **({"scope": scope} if scope else {}), **params)


def bits(a: np.ndarray) -> np.ndarray:
    """The bit patterns of a floating numpy array as unsigned integers of the same width."""
    a = np.ascontiguousarray(a)
    return a.view(_UINT[a.dtype.itemsize])


def assert_bitwise_equal(actual: np.ndarray, expected: np.ndarray, what: str = "") -> None:
    """Same dtype, same shape and the same bit pattern element by element (NaN == NaN)."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    diff = bits(actual) != bits(expected)
    if diff.any():
        idx = tuple(np.argwhere(diff)[:5].T)
        raise AssertionError(
            f"{what}: {int(diff.sum())} of {diff.size} elements differ in their bits; "
            f"actual {actual[idx]!r} expected {expected[idx]!r}"
        )


def ulps(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """|actual - expected| in units of the spacing of ``expected``'s dtype at ``expected``.

    Both arrays have one floating dtype; the difference is taken in float64 (exact for two
    values within a factor 2 of each other, Sterbenz), the spacing in the arrays' own dtype.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    spacing = np.spacing(np.abs(expected)).astype(np.float64)
    return diff / spacing


def np_reference_step(x, g, m, *, lr, betas, wd, grad_k):
    """One Lion-κ step written out by hand in numpy, in the published expression order.

    Coefficients are Python floats (double precision); numpy (NEP 50) rounds each Python float
    once to the array dtype when it multiplies an array, exactly as the contract requires.
    """
    b1, b2 = betas
    c = b1 * m + (1.0 - b1) * g
    x_new = (1.0 - lr * wd) * x - lr * grad_k(c)
    m_new = b2 * m + (1.0 - b2) * g
    return x_new, m_new


def np_sign(y: np.ndarray) -> np.ndarray:
    """sign with sign(±0) = +0 and NaN kept (the contract's exact sign)."""
    one = np.ones((), y.dtype)
    out = np.where(y > 0, one, np.where(y < 0, -one, np.where(y == y, np.zeros((), y.dtype), y)))
    return out.astype(y.dtype)


def np_huber_grad(delta: float):
    inv = 1.0 / delta
    return lambda y: np.clip(y * inv, -1.0, 1.0).astype(y.dtype)


def np_deadzone_grad(e: float):
    def g(y):
        one = np.ones((), y.dtype)
        zero = np.zeros((), y.dtype)
        return np.where(y > e, one, np.where(y < -e, -one, np.where(y == y, zero, y))).astype(y.dtype)

    return g


def np_quadratic_grad(y: np.ndarray) -> np.ndarray:
    return y


# The exact κ with their hand-written numpy gradients: (name, params, numpy ∇K).
EXACT_KAPPAS = [
    ("sign", {}, np_sign),
    ("huber", {"delta": 0.3}, np_huber_grad(0.3)),
    ("quadratic", {"scale": 1.0}, np_quadratic_grad),
    ("deadzone", {"e": 0.1}, np_deadzone_grad(0.1)),
]
