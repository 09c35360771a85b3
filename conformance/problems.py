"""Test problems whose gradients use only correctly rounded array-API operations.

Each problem is a tree of two leaves (a vector and a matrix, so tree handling is exercised) or,
for the 1-D toy of theory.md §7, one 0-d array. Data and initial points are drawn with a fixed
seed, with magnitudes in [0.1, 1.5] (far from subnormals: the JAX CPU client flushes them).

``grad(xp, xs, data)`` is evaluated by each backend (so gradients are bitwise identical where the
step is); ``value(xs, data)`` and ``sensitivity`` are evaluated in numpy float64 for the Lyapunov
checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

SHAPES = {"b": (16,), "w": (6, 8)}
SEED = 20240101


def _draw(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    mag = rng.uniform(0.1, 1.5, size=shape)
    sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    return mag * sign


@dataclass(frozen=True)
class Problem:
    name: str
    L: float | None  # smoothness constant (None: not globally L-smooth)
    shapes: dict[str, tuple[int, ...]]
    make_data: Callable[[np.random.Generator], dict[str, dict[str, np.ndarray]]]
    grad_leaf: Callable[[Any, Any, dict[str, Any]], Any]  # (x, data-of-leaf) -> g
    value_leaf: Callable[[np.ndarray, dict[str, np.ndarray]], float]
    sens_leaf: Callable[[np.ndarray, dict[str, np.ndarray]], np.ndarray]  # |∂f/∂x|

    def data(self, dtype: str) -> dict[str, dict[str, np.ndarray]]:
        rng = np.random.default_rng(SEED + sum(map(ord, self.name)))
        raw = self.make_data(rng)
        return {k: {n: v.astype(dtype) for n, v in leaf.items()} for k, leaf in raw.items()}

    def x0(self, dtype: str, scale: float = 1.0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(SEED + 7 + sum(map(ord, self.name)))
        return {k: (_draw(rng, s) * scale).astype(dtype) for k, s in sorted(self.shapes.items())}

    def grad(self, xs: dict[str, Any], data: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {k: self.grad_leaf(xs[k], data[k]) for k in xs}

    def value(self, xs: dict[str, np.ndarray], data: dict[str, dict[str, np.ndarray]]) -> float:
        return float(sum(self.value_leaf(np.asarray(xs[k], np.float64), _f64(data[k])) for k in xs))

    def sensitivity(self, xs: dict[str, np.ndarray], data: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return {k: self.sens_leaf(np.asarray(xs[k], np.float64), _f64(data[k])) for k in xs}


def _f64(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, np.float64) for k, v in d.items()}


def _per_leaf(fn: Callable[[np.random.Generator, tuple[int, ...]], dict[str, np.ndarray]],
              shapes: dict[str, tuple[int, ...]]) -> Callable[[np.random.Generator], dict]:
    return lambda rng: {k: fn(rng, s) for k, s in sorted(shapes.items())}


POLYNOMIAL = Problem(
    "polynomial", None, SHAPES,
    _per_leaf(lambda rng, s: {"a": _draw(rng, s) * 0.5}, SHAPES),
    # f = Σ x⁴/4 − x²/2 + a·x,  g = ((x*x)*x − x) + a
    lambda x, d: ((x * x) * x - x) + d["a"],
    lambda x, d: float(np.sum(x**4 / 4 - x**2 / 2 + d["a"] * x)),
    lambda x, d: np.abs(x**3 - x + d["a"]),
)

LINEAR = Problem(
    "linear", 0.0, SHAPES,
    _per_leaf(lambda rng, s: {"a": _draw(rng, s)}, SHAPES),
    # f = Σ a·x,  g = a  (returned as a fresh array: 0*x + a would change -0)
    lambda x, d: d["a"] * 1.0,
    lambda x, d: float(np.sum(d["a"] * x)),
    lambda x, d: np.abs(d["a"]),
)

def _quad_data(rng: np.random.Generator, s: tuple[int, ...]) -> dict[str, np.ndarray]:
    # curvatures in [0.5, 2] as exact multiples of 1/8, so L = max d is known exactly
    dvals = np.round(rng.uniform(0.5, 2.0, size=s) * 8) / 8
    return {"d": dvals, "b": _draw(rng, s)}


QUADRATIC = Problem(
    "quadratic", 2.0, SHAPES,
    _per_leaf(_quad_data, SHAPES),
    # f = Σ ½ d x² − b x,  g = d*x − b,  L = max d ≤ 2
    lambda x, d: d["d"] * x - d["b"],
    lambda x, d: float(np.sum(0.5 * d["d"] * x * x - d["b"] * x)),
    lambda x, d: np.abs(d["d"] * x - d["b"]),
)

TOY1D = Problem(
    "toy1d", 2.0, {"x": ()},
    lambda rng: {"x": {}},
    # theory.md §7: f = (x − 2)², g = 2x − 4; λ = 1, lr = 0.01 → x → 1
    lambda x, d: 2.0 * x - 4.0,
    lambda x, d: float((x - 2.0) ** 2),
    lambda x, d: np.abs(2.0 * x - 4.0),
)

PROBLEMS = {p.name: p for p in (POLYNOMIAL, LINEAR, QUADRATIC, TOY1D)}
