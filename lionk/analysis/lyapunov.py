r"""Lyapunov and constraint diagnostics for Lion-κ (theory.md §3–§5).

All functions are eager diagnostics: they read array values and return Python floats, evaluated
in float64 where the array's namespace and device have it (so their own rounding stays far below
that of a float32 trajectory). Momentum is lionk's positive exponential average of gradients.

Discrete Lyapunov function (explicit decay, ε' = ε/(1 − ελ))::

    c = ε'·b1 / (ε'·λ·(1 − b1) + 1 − b2)
    H(x, m) = f(x) + (1/λ)·K*(λx) + c·( K*(λx) + K(m) + λ·mᵀx )

Under 0 ≤ b1 ≤ b2 < 1, ε > 0, λ > 0, ελ < 1, λx₀ ∈ dom K* and f L-smooth, one step satisfies
``H(x', m') − H(x, m) ≤ (L/2)‖x' − x‖²`` (:func:`bound`); H is non-increasing for linear f.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from ..core import kappa as _kappa
from ..core import validation as _check
from ..core.array_api import array_namespace, float64_or_widest
from ..core.trees import flatten

__all__ = [
    "coefficient",
    "discrete",
    "bound",
    "constraint_violation",
    "continuous",
]


def _wide_leaves(tree: Any) -> list[Any]:
    leaves, _, _ = flatten(tree)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # JAX without x64 warns when asked for float64
        for leaf in leaves:
            out.append(float64_or_widest(array_namespace(leaf), leaf))
    return out


def _check_same_tree(fn: str, a: Any, b: Any, names: tuple[str, str]) -> None:
    """ValueError unless trees ``a`` and ``b`` have one structure and leaf shapes (a mismatch
    would otherwise be broadcast or truncated silently)."""
    a_leaves, a_def, paths = flatten(a)
    b_leaves, b_def, _ = flatten(b)
    if a_def != b_def:
        raise ValueError(
            f"{fn}: {names[1]}: expected the tree structure of {names[0]} ({a_def}); "
            f"received {b_def}"
        )
    for p, x, y in zip(paths, a_leaves, b_leaves):
        sx, sy = tuple(getattr(x, "shape", ())), tuple(getattr(y, "shape", ()))
        if sx != sy:
            raise ValueError(
                f"{fn}: {names[1]}{p}: expected shape {sx} (the shape of {names[0]}{p}); "
                f"received {sy}"
            )


def _dot(xs: list[Any], ys: list[Any]) -> float:
    total = 0.0
    for x, y in zip(xs, ys):
        xp = array_namespace(x)
        total += float(xp.sum(x * y))
    return total


def _known(name: str, value: Any) -> float:
    v = _check.real(name, value)
    if not isinstance(v, float):
        raise TypeError(f"{name}: expected a known real number (diagnostics read values); "
                        f"received the traced value {value!r}")
    return v


def _positive_wd(weight_decay: Any, fn: str) -> float:
    try:
        return _known("weight_decay", _check.weight_decay(weight_decay, positive=True))
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{fn}: {exc} (λ > 0 defines the constraint)") from None


def coefficient(*, lr: float, betas: tuple[float, float], weight_decay: float) -> float:
    """The constant c of H: ``ε'·b1 / (ε'·λ·(1 − b1) + 1 − b2)`` with ``ε' = ε/(1 − ελ)``.

    Requires the conditions of the guarantee that H certifies: ``lr >= 0``, betas in [0, 1),
    ``weight_decay > 0`` and ``lr * weight_decay < 1`` (ValueError naming the argument).
    """
    wd = _positive_wd(weight_decay, "coefficient")
    try:
        lr = _known("lr", _check.learning_rate(lr, allow_zero=True))
        b1, b2 = (_known(n, b) for n, b in zip(("betas[0]", "betas[1]"), _check.betas(betas)))
        _check.decay_product(lr, wd)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"coefficient: {exc}") from None
    eps_p = lr / (1.0 - lr * wd)
    return eps_p * b1 / (eps_p * wd * (1.0 - b1) + 1.0 - b2)


def discrete(
    f_value: float,
    params: Any,
    state: Any,
    *,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    kappa: str | _kappa.Kappa = "sign",
    coefficient_value: float | None = None,
    domain_tol: float = 0.0,
) -> float:
    r"""H(x, m) of theory.md §4 for the explicit update: a Python float (``inf`` outside dom).

    ``H = f + (1/λ)K*(λx) + c·(K*(λx) + K(m) + λ mᵀx)`` with c from :func:`coefficient`.

    Args:
        f_value: f(x).
        params: the tree x.
        state: a :class:`lionk.State`, or the momentum tree m itself.
        lr, betas, weight_decay, kappa: the optimizer's settings (λ = weight_decay > 0).
        coefficient_value: use this c instead of :func:`coefficient` (for experiments and the
            conformance suite's negative controls).
        domain_tol: points with ``dist(λx, dom K*) ≤ domain_tol`` count as inside, K* being
            evaluated at the nearest point of the domain; the default 0 is the strict definition.
    """
    wd = _positive_wd(weight_decay, "discrete")
    kap = _kappa.resolve(kappa)
    c = coefficient(lr=lr, betas=betas, weight_decay=wd) if coefficient_value is None else float(coefficient_value)
    momentum = state.momentum if hasattr(state, "momentum") else state
    _check_same_tree("discrete", params, momentum, ("params", "momentum"))
    xs = _wide_leaves(params)
    ms = _wide_leaves(momentum)
    zs = [x * wd for x in xs]
    dist = kap.tree_domain_distance(zs)
    if not dist <= domain_tol:
        return math.inf
    kstar = kap.tree_conjugate(zs, on_domain=True)
    km = kap.tree_value(ms)
    mx = _dot(ms, xs)
    return float(f_value) + kstar / wd + c * (kstar + km + wd * mx)


def bound(params_before: Any, params_after: Any, L: float) -> float:
    """``(L/2)·‖x' − x‖²`` summed over the tree: the allowed increase of H for L-smooth f."""
    _check_same_tree("bound", params_before, params_after, ("params_before", "params_after"))
    a = _wide_leaves(params_before)
    b = _wide_leaves(params_after)
    total = 0.0
    for x0, x1 in zip(a, b):
        xp = array_namespace(x0)
        d = x1 - x0
        total += float(xp.sum(d * d))
    return 0.5 * float(L) * total


def constraint_violation(params: Any, *, weight_decay: float, kappa: str | _kappa.Kappa = "sign") -> float:
    """Distance of λx from dom K*, in units of x: ``dist(λx, dom K*) / λ`` (0 when feasible).

    For Lion this is ``max_i (|x_i| − 1/λ)_+``; phase 1 shrinks it at least by ``(1 − ελ)`` per
    step (theory.md §3) and it stays 0 once reached.
    """
    wd = _positive_wd(weight_decay, "constraint_violation")
    kap = _kappa.resolve(kappa)
    zs = [x * wd for x in _wide_leaves(params)]
    return kap.tree_domain_distance(zs) / wd


def continuous(
    f_value: float,
    params: Any,
    momentum: Any,
    *,
    alpha: float,
    gamma: float,
    lr: float,
    weight_decay: float,
    kappa: str | _kappa.Kappa = "sign",
) -> float:
    r"""H of the continuous-time Lion-κ ODE (theory.md §5).

    ``H = α f(x) + (γ/λ) K*(λx) + ((1 − εγ)/(1 + ελ))·(K*(λx) + K(m̂) − λ m̂ᵀx)`` where
    ``m̂ = −m`` is the paper's momentum (lionk's ``m`` is the positive average). Conditions:
    K convex, εγ ≤ 1, λx ∈ dom K*; then dH/dt ≤ 0 along the flow. Euler with step s maps to the
    discrete update with ``α = γ = (1 − b2)/s`` and ``1 − εγ = b1``.
    """
    wd = _positive_wd(weight_decay, "continuous")
    kap = _kappa.resolve(kappa)
    _check_same_tree("continuous", params, momentum, ("params", "momentum"))
    xs = _wide_leaves(params)
    ms = [-m for m in _wide_leaves(momentum)]
    zs = [x * wd for x in xs]
    if kap.tree_domain_distance(zs) > 0:
        return math.inf
    kstar = kap.tree_conjugate(zs)
    km = kap.tree_value(ms)
    mx = _dot(ms, xs)
    eps = float(lr)
    k = (1.0 - eps * gamma) / (1.0 + eps * wd)
    return alpha * float(f_value) + (gamma / wd) * kstar + k * (kstar + km - wd * mx)
