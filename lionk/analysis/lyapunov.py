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
import sys
from typing import Any

from ..core import kappa as _kappa
from ..core.array_api import array_namespace, float64_or_widest
from ..core.trees import flatten

__all__ = [
    "coefficient",
    "discrete",
    "bound",
    "constraint_violation",
    "continuous",
]


def _jax_without_x64(xp: Any) -> bool:
    """True for a JAX namespace while ``jax_enable_x64`` is off (float64 is then unavailable and
    asking for it only warns and returns float32)."""
    if not getattr(xp, "__name__", "").startswith("jax"):
        return False
    jax = sys.modules.get("jax")
    if jax is None:  # pragma: no cover - a JAX array implies jax is imported
        return False
    return not bool(jax.config.jax_enable_x64)


def wide(x: Any) -> Any:
    """``x`` in float64 where its namespace and device have it, else unchanged (no warning).

    JAX without x64 has no float64: the array is returned as it is instead of asking JAX for a
    float64 it would refuse with a ``UserWarning`` (one per call, so once per iteration in a
    loop). The check reads the flag at every call, so turning x64 on later is honoured; no
    ``warnings.catch_warnings`` is used (it would reset the warnings' show-once registry).
    """
    xp = array_namespace(x)
    if _jax_without_x64(xp):
        return x
    return float64_or_widest(xp, x)


def _wide_leaves(tree: Any) -> list[Any]:
    leaves, _, _ = flatten(tree)
    return [wide(leaf) for leaf in leaves]


def _dot(xs: list[Any], ys: list[Any]) -> float:
    total = 0.0
    for x, y in zip(xs, ys):
        xp = array_namespace(x)
        total += float(xp.sum(x * y))
    return total


def _positive_wd(weight_decay: float, fn: str) -> float:
    wd = float(weight_decay)
    if not (math.isfinite(wd) and wd > 0):
        raise ValueError(f"{fn}: weight_decay must be > 0 (λ defines the constraint); received {weight_decay!r}")
    return wd


def coefficient(*, lr: float, betas: tuple[float, float], weight_decay: float) -> float:
    """The constant c of H: ``ε'·b1 / (ε'·λ·(1 − b1) + 1 − b2)`` with ``ε' = ε/(1 − ελ)``."""
    lr = float(lr)
    b1, b2 = (float(b) for b in betas)
    wd = float(weight_decay)
    if not lr * wd < 1.0:
        raise ValueError(f"coefficient: lr*weight_decay must be < 1; received {lr * wd!r}")
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
