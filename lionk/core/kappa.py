r"""The κ registry: convex functions K whose gradient ∇K replaces ``sign`` in Lion.

Lion-κ updates ``x' = (1 - lr*wd)*x - lr*∇K(b1*m + (1 - b1)*g)``; with weight decay λ > 0 it
minimises ``f(x) + (1/λ) K*(λx)`` where ``K*`` is the convex conjugate of K. For a norm K, K* is
the indicator of the dual-norm unit ball, so Lion-κ solves ``min f(x) s.t. ‖x‖_dual ≤ 1/λ``.

A :class:`Kappa` bundles

* ``grad(y)`` — ∇K(y), used by the step (same shape, dtype and device as ``y``);
* ``value(y)`` — K(y), a 0-d array;
* ``conjugate(z)`` — K*(z), a 0-d array, ``+inf`` outside dom K*;
* ``domain_distance(z)`` — the distance from ``z`` to dom K* (0 inside), measured in the norm
  whose unit ball the domain is: ``max_i (|z_i| - 1)_+`` for a box, ``(‖z‖_2 - 1)_+`` for the ℓ2
  ball, ``(‖z‖_q - 1)_+`` for the ℓq ball;
* the flags ``exact`` (∇K uses only correctly rounded elementwise operations, so trajectories can
  be bitwise identical across backends) and ``separable`` (K is a sum over elements).

Every method takes the array-API namespace from its argument. Built-ins (theory.md §6):

==================  ===========================  ===================================  ======
name                K(y)                         implied problem for x                 tier
==================  ===========================  ===================================  ======
sign (l1, lion)     ‖y‖₁                         ‖x‖_∞ ≤ 1/λ                          exact
l2                  ‖y‖₂                         ‖x‖₂ ≤ 1/λ                           ulp
lp (p)              ‖y‖_p                        ‖x‖_q ≤ 1/λ, 1/p + 1/q = 1           ulp
huber (delta)       Σ h_δ(y_i)                   box plus (δλ/2)‖x‖²                  exact
relativistic        Σ √(y_i² + δ²) − δ           box plus a barrier                   ulp
relativistic-l2     √(‖y‖² + δ²) − δ             ℓ2 ball plus a barrier               ulp
quadratic           ½‖y‖²                        (λ/2)‖x‖² (momentum SGD + decay)     exact
deadzone (e)        Σ max(|y_i| − e, 0)          box plus e‖x‖₁                       exact
==================  ===========================  ===================================  ======

Norm-type κ (``l2``, ``lp``, ``relativistic-l2``) take ``scope="tensor"`` (each array its own
norm: one ball per array) or ``scope="global"`` (one norm over all arrays of a tree).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .array_api import Array, array_namespace, device, native_exact_sign

__all__ = [
    "Kappa",
    "KappaValidationError",
    "get",
    "available",
    "register",
    "unregister",
    "resolve",
    "exact_sign",
    "validate",
]

_INF = math.inf


class KappaValidationError(ValueError):
    """A user κ failed one of the checks of :func:`register`."""


# ---------------------------------------------------------------------------------------------
# Small array-API helpers shared by the built-ins (no backend-specific code).


def _const(xp: Any, value: float, like: Array) -> Array:
    """A 0-d array of ``like``'s dtype and device holding ``value``."""
    return xp.asarray(value, dtype=like.dtype, device=device(like))


def exact_sign(y: Array) -> Array:
    """sign(y) from nested ``where``: NaN → NaN, ±0 → +0, else ±1.

    Bitwise identical on every backend (raw ``sign`` differs: JAX keeps −0, raw torch maps
    NaN to 0). Uses only comparisons and ``where``, except where a backend's own ``sign`` is
    verified to give the same bytes (NumPy; eager torch after a probe; see
    ``lionk.core.array_api.native_exact_sign``).
    """
    native = native_exact_sign(y, _where_sign)
    if native is not None:
        return native
    return _where_sign(y)


def _where_sign(y: Array) -> Array:
    """The reference exact sign: comparisons and ``where`` only."""
    xp = array_namespace(y)
    # Python scalars in ``where`` (array API 2024.12) take y's dtype; unlike 0-d constants they
    # cost nothing to create (about 5x faster on JAX eager).
    return xp.where(y > 0, 1.0, xp.where(y < 0, -1.0, xp.where(y == y, 0.0, y)))


def _size(y: Array) -> int:
    return math.prod(int(s) for s in y.shape)


def _max0(xp: Any, t: Array) -> Array:
    """max of ``t`` (0 for an empty array)."""
    if _size(t) == 0:
        return xp.asarray(0.0, dtype=t.dtype, device=device(t))
    return xp.max(t)


def _box_distance(z: Array) -> Array:
    xp = array_namespace(z)
    return _max0(xp, xp.maximum(xp.abs(z) - 1.0, _const(xp, 0.0, z)))


def _where_in_domain(dist: Array, finite: Array) -> Array:
    xp = array_namespace(dist)
    return xp.where(dist > 0, _const(xp, _INF, finite), finite)


# ---------------------------------------------------------------------------------------------
# The Kappa type.


class Kappa:
    """A convex function K for Lion-κ, with ∇K, K, K* and the distance to dom K*.

    Construct one from callables to register your own::

        Kappa("cubic", grad=..., value=..., conjugate=..., domain_distance=...,
              exact=False, separable=True)

    or subclass it and override the methods. ``grad`` must be odd (∇K(−y) = −∇K(y)) for the
    step's convention to agree with the paper's (theory.md §1).

    The ``tree_*`` methods evaluate K over a whole tree of arrays (a list of leaves). For a
    separable or per-tensor κ, values and conjugates add up over the leaves and the domain
    distance is the largest per-leaf distance; a ``scope="global"`` norm κ overrides them.
    """

    def __init__(
        self,
        name: str,
        *,
        grad: Callable[[Array], Array] | None = None,
        value: Callable[[Array], Array] | None = None,
        conjugate: Callable[[Array], Array] | None = None,
        domain_distance: Callable[[Array], Array] | None = None,
        exact: bool = False,
        separable: bool = False,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.exact = bool(exact)
        self.separable = bool(separable)
        self.params = dict(params or {})
        self._grad_fn = grad
        self._value_fn = value
        self._conjugate_fn = conjugate
        self._distance_fn = domain_distance

    # --- per-array interface --------------------------------------------------------------
    def grad(self, y: Array) -> Array:
        """∇K(y): same shape, dtype and device as ``y``."""
        if self._grad_fn is None:
            raise NotImplementedError(f"kappa {self.name!r} has no grad")
        return self._grad_fn(y)

    def value(self, y: Array) -> Array:
        """K(y) as a 0-d array."""
        if self._value_fn is None:
            raise NotImplementedError(f"kappa {self.name!r} has no value")
        return self._value_fn(y)

    def conjugate(self, z: Array) -> Array:
        """K*(z) as a 0-d array; +inf outside dom K*."""
        if self._conjugate_fn is None:
            raise NotImplementedError(f"kappa {self.name!r} has no conjugate")
        return self._conjugate_fn(z)

    def domain_distance(self, z: Array) -> Array:
        """Distance from ``z`` to dom K* (0 inside), as a 0-d array."""
        if self._distance_fn is None:
            xp = array_namespace(z)
            c = self.conjugate(z)
            return xp.where(c == _INF, _const(xp, _INF, c), _const(xp, 0.0, c))
        return self._distance_fn(z)

    def conjugate_on_domain(self, z: Array) -> Array:
        """K* at the point of dom K* nearest to ``z`` (``z`` itself when inside).

        Used by the Lyapunov diagnostics to evaluate H at points that left the domain by a
        rounding error only. The default is :meth:`conjugate` itself.
        """
        return self.conjugate(z)

    # --- tree interface ---------------------------------------------------------------------
    def tree_grad(self, leaves: Sequence[Array]) -> list[Array]:
        """∇K over a tree given as its leaves."""
        return [self.grad(y) for y in leaves]

    def tree_value(self, leaves: Sequence[Array]) -> float:
        return _sum_floats(self.value(y) for y in leaves)

    def tree_conjugate(self, leaves: Sequence[Array], *, on_domain: bool = False) -> float:
        fn = self.conjugate_on_domain if on_domain else self.conjugate
        return _sum_floats(fn(z) for z in leaves)

    def tree_domain_distance(self, leaves: Sequence[Array]) -> float:
        return max((float(self.domain_distance(z)) for z in leaves), default=0.0)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"Kappa({self.name!r}{', ' + args if args else ''})"

    def __eq__(self, other: object) -> bool:
        return (
            type(self) is type(other)
            and isinstance(other, Kappa)
            and self.name == other.name
            and self.params == other.params
            and self._grad_fn is other._grad_fn
        )

    def __hash__(self) -> int:
        return hash((type(self), self.name, tuple(sorted(self.params.items()))))


def _sum_floats(values: Any) -> float:
    total = 0.0
    for v in values:
        total += float(v)
    return total


# ---------------------------------------------------------------------------------------------
# Separable built-ins.


class _Sign(Kappa):
    """K = ‖y‖₁, ∇K = sign (sign(0) = 0), K* = indicator of the ℓ∞ unit ball."""

    def __init__(self) -> None:
        super().__init__("sign", exact=True, separable=True)

    def grad(self, y: Array) -> Array:
        return exact_sign(y)

    def value(self, y: Array) -> Array:
        xp = array_namespace(y)
        return xp.sum(xp.abs(y))

    def conjugate(self, z: Array) -> Array:
        return _where_in_domain(_box_distance(z), self.conjugate_on_domain(z))

    def conjugate_on_domain(self, z: Array) -> Array:
        xp = array_namespace(z)
        return xp.asarray(0.0, dtype=z.dtype, device=device(z))

    def domain_distance(self, z: Array) -> Array:
        return _box_distance(z)


class _Huber(_Sign):
    """K = Σ h_δ(y_i), ∇K = clip(y·(1/δ), −1, 1), K* = (δ/2)‖z‖² on the box."""

    def __init__(self, delta: float = 1.0) -> None:
        delta = _positive("delta", delta, "huber")
        Kappa.__init__(self, "huber", exact=True, separable=True, params={"delta": delta})
        self.delta = delta
        self.inv_delta = 1.0 / delta  # a Python float: multiply, never divide by a scalar

    def grad(self, y: Array) -> Array:
        xp = array_namespace(y)
        return xp.clip(y * self.inv_delta, -1.0, 1.0)

    def value(self, y: Array) -> Array:
        xp = array_namespace(y)
        a = xp.abs(y)
        quad = (y * y) * (0.5 * self.inv_delta)
        lin = a - 0.5 * self.delta
        return xp.sum(xp.where(a <= self.delta, quad, lin))

    def conjugate_on_domain(self, z: Array) -> Array:
        xp = array_namespace(z)
        zc = xp.clip(z, -1.0, 1.0)
        return xp.sum(zc * zc) * (0.5 * self.delta)


class _Deadzone(_Sign):
    """K = Σ max(|y_i| − e, 0), ∇K = sign(y)·1{|y| > e}, K* = e‖z‖₁ on the box."""

    def __init__(self, e: float = 0.1) -> None:
        e = _positive("e", e, "deadzone")
        Kappa.__init__(self, "deadzone", exact=True, separable=True, params={"e": e})
        self.e = e

    def grad(self, y: Array) -> Array:
        xp = array_namespace(y)
        return xp.where(y > self.e, 1.0, xp.where(y < -self.e, -1.0, xp.where(y == y, 0.0, y)))

    def value(self, y: Array) -> Array:
        xp = array_namespace(y)
        return xp.sum(xp.maximum(xp.abs(y) - self.e, _const(xp, 0.0, y)))

    def conjugate_on_domain(self, z: Array) -> Array:
        xp = array_namespace(z)
        return xp.sum(xp.abs(xp.clip(z, -1.0, 1.0))) * self.e


class _Relativistic(_Sign):
    """K = Σ √(y_i² + δ²) − δ, ∇K = y/√(y² + δ²), K* = Σ δ − δ√(1 − z_i²) on the box."""

    def __init__(self, delta: float = 1.0) -> None:
        delta = _positive("delta", delta, "relativistic")
        Kappa.__init__(self, "relativistic", exact=False, separable=True, params={"delta": delta})
        self.delta = delta
        self.delta2 = delta * delta

    def grad(self, y: Array) -> Array:
        xp = array_namespace(y)
        return y / xp.sqrt(y * y + self.delta2)

    def value(self, y: Array) -> Array:
        xp = array_namespace(y)
        return xp.sum(xp.sqrt(y * y + self.delta2) - self.delta)

    def conjugate_on_domain(self, z: Array) -> Array:
        xp = array_namespace(z)
        zc = xp.clip(z, -1.0, 1.0)
        return xp.sum(self.delta - self.delta * xp.sqrt(1.0 - zc * zc))


class _Quadratic(Kappa):
    """K = ½‖y‖², ∇K = y, K* = ½‖z‖² (dom K* is everything)."""

    def __init__(self) -> None:
        super().__init__("quadratic", exact=True, separable=True)

    def grad(self, y: Array) -> Array:
        return y

    def value(self, y: Array) -> Array:
        xp = array_namespace(y)
        return xp.sum(y * y) * 0.5

    def conjugate(self, z: Array) -> Array:
        return self.value(z)

    conjugate_on_domain = conjugate

    def domain_distance(self, z: Array) -> Array:
        xp = array_namespace(z)
        return xp.asarray(0.0, dtype=z.dtype, device=device(z))


# ---------------------------------------------------------------------------------------------
# Norm-type built-ins: a per-array partial reduction, combined per tensor or over the tree.


class _NormKappa(Kappa):
    """A κ built on one reduction ``total = Σ_i r(y_i)`` (per tensor or over the whole tree).

    Subclasses give ``partial`` (the sum over one array), ``grad_given(y, total)``,
    ``value_given(total)``, and for the conjugate side ``dual_partial``, ``conj_given`` and
    ``dist_given`` (the domain is the unit ball of the dual norm).
    """

    def __init__(self, name: str, scope: str, params: dict[str, Any]) -> None:
        if scope not in ("tensor", "global"):
            raise ValueError(
                f"kappa {name!r}: scope must be 'tensor' or 'global'; received {scope!r}"
            )
        super().__init__(name, exact=False, separable=False, params={**params, "scope": scope})
        self.scope = scope

    # to be provided by subclasses
    def partial(self, y: Array) -> Array: ...  # pragma: no cover
    def grad_given(self, y: Array, total: Array) -> Array: ...  # pragma: no cover
    def value_given(self, total: Array) -> Array: ...  # pragma: no cover
    def dual_partial(self, z: Array) -> Array: ...  # pragma: no cover
    def dual_norm(self, total: Array) -> Array: ...  # pragma: no cover
    def conj_given(self, total: Array) -> Array: ...  # pragma: no cover

    def dist_given(self, total: Array) -> Array:
        xp = array_namespace(total)
        return xp.maximum(self.dual_norm(total) - 1.0, _const(xp, 0.0, total))

    # per array
    def grad(self, y: Array) -> Array:
        return self.grad_given(y, self.partial(y))

    def value(self, y: Array) -> Array:
        return self.value_given(self.partial(y))

    def conjugate(self, z: Array) -> Array:
        t = self.dual_partial(z)
        return _where_in_domain(self.dist_given(t), self.conj_given(t))

    def conjugate_on_domain(self, z: Array) -> Array:
        return self.conj_given(self.dual_partial(z))

    def domain_distance(self, z: Array) -> Array:
        return self.dist_given(self.dual_partial(z))

    # over a tree
    def _total(self, fn: Callable[[Array], Array], leaves: Sequence[Array]) -> Array:
        parts = [fn(y) for y in leaves]
        xp = array_namespace(*parts)
        wide = max(parts, key=lambda p: xp.finfo(p.dtype).bits).dtype
        total = xp.asarray(0.0, dtype=wide, device=device(parts[0]))
        for p in parts:
            total = total + xp.astype(p, wide)
        return total

    def tree_grad(self, leaves: Sequence[Array]) -> list[Array]:
        if self.scope == "tensor" or not leaves:
            return super().tree_grad(leaves)
        total = self._total(self.partial, leaves)
        xp = array_namespace(total)
        return [self.grad_given(y, xp.astype(total, y.dtype)) for y in leaves]

    def tree_value(self, leaves: Sequence[Array]) -> float:
        if self.scope == "tensor" or not leaves:
            return super().tree_value(leaves)
        return float(self.value_given(self._total(self.partial, leaves)))

    def tree_conjugate(self, leaves: Sequence[Array], *, on_domain: bool = False) -> float:
        if self.scope == "tensor" or not leaves:
            return super().tree_conjugate(leaves, on_domain=on_domain)
        t = self._total(self.dual_partial, leaves)
        if not on_domain and float(self.dist_given(t)) > 0:
            return _INF
        return float(self.conj_given(t))

    def tree_domain_distance(self, leaves: Sequence[Array]) -> float:
        if self.scope == "tensor" or not leaves:
            return super().tree_domain_distance(leaves)
        return float(self.dist_given(self._total(self.dual_partial, leaves)))


class _L2(_NormKappa):
    """K = ‖y‖₂, ∇K = y/‖y‖₂ (0 at 0), K* = indicator of the ℓ2 unit ball."""

    def __init__(self, scope: str = "tensor") -> None:
        super().__init__("l2", scope, {})

    def partial(self, y: Array) -> Array:
        xp = array_namespace(y)
        return xp.sum(y * y)

    def grad_given(self, y: Array, total: Array) -> Array:
        xp = array_namespace(y)
        norm = xp.sqrt(total)
        safe = xp.where(norm > 0, norm, _const(xp, 1.0, norm))
        return xp.where(norm > 0, y / safe, _const(xp, 0.0, y))

    def value_given(self, total: Array) -> Array:
        return array_namespace(total).sqrt(total)

    def dual_partial(self, z: Array) -> Array:
        return self.partial(z)

    def dual_norm(self, total: Array) -> Array:
        return self.value_given(total)

    def conj_given(self, total: Array) -> Array:
        return _const(array_namespace(total), 0.0, total)


class _RelativisticL2(_L2):
    """K = √(‖y‖² + δ²) − δ, ∇K = y/√(‖y‖² + δ²), K* = δ − δ√(1 − ‖z‖²) on the ℓ2 ball."""

    def __init__(self, delta: float = 1.0, scope: str = "tensor") -> None:
        delta = _positive("delta", delta, "relativistic-l2")
        _NormKappa.__init__(self, "relativistic-l2", scope, {"delta": delta})
        self.delta = delta
        self.delta2 = delta * delta

    def grad_given(self, y: Array, total: Array) -> Array:
        xp = array_namespace(y)
        return y / xp.sqrt(total + self.delta2)

    def value_given(self, total: Array) -> Array:
        xp = array_namespace(total)
        return xp.sqrt(total + self.delta2) - self.delta

    def dual_norm(self, total: Array) -> Array:
        return array_namespace(total).sqrt(total)

    def conj_given(self, total: Array) -> Array:
        xp = array_namespace(total)
        inside = xp.maximum(1.0 - total, _const(xp, 0.0, total))
        return self.delta - self.delta * xp.sqrt(inside)


class _Lp(_NormKappa):
    """K = ‖y‖_p (1 < p < ∞), ∇K = sign(y)·(|y|/‖y‖_p)^(p−1), K* = indicator of the ℓq ball."""

    def __init__(self, p: float = 3.0, scope: str = "tensor") -> None:
        p = _finite("p", p, "lp")
        if not p > 1.0:
            raise ValueError(f"kappa 'lp': p must be > 1 and finite; received p={p!r}")
        super().__init__("lp", scope, {"p": p})
        self.p = p
        self.q = p / (p - 1.0)
        self.inv_p = 1.0 / p
        self.inv_q = 1.0 / self.q

    def partial(self, y: Array) -> Array:
        xp = array_namespace(y)
        return xp.sum(xp.pow(xp.abs(y), self.p))

    def grad_given(self, y: Array, total: Array) -> Array:
        xp = array_namespace(y)
        norm = xp.pow(total, self.inv_p)
        safe = xp.where(norm > 0, norm, _const(xp, 1.0, norm))
        r = xp.pow(xp.abs(y) / safe, self.p - 1.0)
        return xp.where(norm > 0, exact_sign(y) * r, _const(xp, 0.0, y))

    def value_given(self, total: Array) -> Array:
        return array_namespace(total).pow(total, self.inv_p)

    def dual_partial(self, z: Array) -> Array:
        xp = array_namespace(z)
        return xp.sum(xp.pow(xp.abs(z), self.q))

    def dual_norm(self, total: Array) -> Array:
        return array_namespace(total).pow(total, self.inv_q)

    def conj_given(self, total: Array) -> Array:
        return _const(array_namespace(total), 0.0, total)


# ---------------------------------------------------------------------------------------------
# Parameter checks.


def _finite(name: str, value: Any, kappa: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"kappa {kappa!r}: {name} must be a real number; received {value!r}"
        ) from None
    if not math.isfinite(v):
        raise ValueError(f"kappa {kappa!r}: {name} must be finite; received {name}={value!r}")
    return v


def _positive(name: str, value: Any, kappa: str) -> float:
    v = _finite(name, value, kappa)
    if not v > 0:
        raise ValueError(f"kappa {kappa!r}: {name} must be > 0; received {name}={value!r}")
    return v


# ---------------------------------------------------------------------------------------------
# The registry.

_Factory = Callable[..., Kappa]

_BUILTINS: dict[str, _Factory] = {
    "sign": _Sign,
    "l2": _L2,
    "lp": _Lp,
    "huber": _Huber,
    "relativistic": _Relativistic,
    "relativistic-l2": _RelativisticL2,
    "quadratic": _Quadratic,
    "deadzone": _Deadzone,
}
_ALIASES = {"l1": "sign", "lion": "sign"}
_REGISTRY: dict[str, _Factory | Kappa] = dict(_BUILTINS)


def available() -> list[str]:
    """Names accepted by :func:`get` (built-ins, aliases and registered κ), sorted."""
    return sorted([*_REGISTRY, *_ALIASES])


def get(name: str, **params: Any) -> Kappa:
    """The κ called ``name`` with parameters ``params`` (e.g. ``get("huber", delta=0.5)``).

    Raises KeyError listing the available names for an unknown name, TypeError for an unknown
    parameter and ValueError for an invalid parameter value.
    """
    if not isinstance(name, str):
        raise TypeError(f"kappa: expected a name (str) or a Kappa; received {name!r}")
    key = _ALIASES.get(name, name)
    factory = _REGISTRY.get(key)
    if factory is None:
        raise KeyError(f"unknown kappa {name!r}; available: {', '.join(available())}")
    if isinstance(factory, Kappa):
        if params:
            raise TypeError(f"kappa {name!r} takes no parameters; received {sorted(params)}")
        return factory
    try:
        return factory(**params)
    except TypeError as exc:
        if "unexpected keyword" in str(exc) or "positional argument" in str(exc):
            raise TypeError(f"kappa {name!r}: invalid parameters {params!r} ({exc})") from None
        raise


def resolve(kappa: Any) -> Kappa:
    """A :class:`Kappa` from a name or a Kappa (returned as is); a per-leaf choice
    (``{"matrices": ..., "other": ...}`` or a callable ``(path, shape) -> kappa``) gives a
    :class:`lionk.core.kappa_matrix.PerLeaf`."""
    if isinstance(kappa, Kappa):
        return kappa
    if not isinstance(kappa, str) and (isinstance(kappa, dict) or (callable(kappa) and not isinstance(kappa, type))):
        from .kappa_matrix import PerLeaf

        return PerLeaf(kappa)
    return get(kappa)


def register(name: str, kappa: Kappa | _Factory, *, overwrite: bool = False) -> None:
    """Register a user κ (a :class:`Kappa`, or a factory ``(**params) -> Kappa``) as ``name``.

    Before accepting it, the κ is checked in float64 on seeded random points:

    * ``grad`` keeps shape and dtype;
    * ∇K is odd (∇K(−y) = −∇K(y)): K symmetric, as the step's convention and the Lyapunov
      function assume (theory.md §1, §4);
    * ∇K is monotone: ⟨∇K(a) − ∇K(b), a − b⟩ ≥ 0;
    * Fenchel–Young: K(y) + K*(z) ≥ yᵀz, with equality at z = ∇K(y).

    A failing candidate is rejected with :class:`KappaValidationError` naming the property and
    the point; nothing is registered.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"register: name must be a non-empty str; received {name!r}")
    if name in _BUILTINS or name in _ALIASES:
        raise ValueError(f"register: {name!r} is a built-in kappa and cannot be replaced")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"register: kappa {name!r} is already registered (pass overwrite=True)")
    instance = kappa if isinstance(kappa, Kappa) else kappa()
    if not isinstance(instance, Kappa):
        raise TypeError(
            f"register: expected a Kappa or a factory returning one; received {instance!r}"
        )
    validate(instance)
    _REGISTRY[name] = kappa


def unregister(name: str) -> None:
    """Remove a user-registered κ."""
    if name in _BUILTINS or name in _ALIASES:
        raise ValueError(f"unregister: {name!r} is a built-in kappa")
    if name not in _REGISTRY:
        raise KeyError(f"unregister: no registered kappa {name!r}")
    del _REGISTRY[name]


def validate(kappa: Kappa, *, trials: int = 64, seed: int = 0) -> None:
    """Check monotonicity of ∇K and the Fenchel–Young relations on random float64 points.

    Raises :class:`KappaValidationError` naming the failed property and the point.
    """
    rng = np.random.default_rng(seed)
    label = f"kappa {kappa.name!r}"
    for t in range(trials):
        n = int(rng.integers(1, 9))
        scale = float(10.0 ** rng.uniform(-2, 2))
        a = rng.standard_normal(n) * scale
        b = rng.standard_normal(n) * scale
        ga = np.asarray(kappa.grad(a))
        gb = np.asarray(kappa.grad(b))
        if ga.shape != a.shape or ga.dtype != a.dtype:
            raise KappaValidationError(
                f"{label}: grad must keep shape and dtype; at y={a!r} it returned shape "
                f"{ga.shape} dtype {ga.dtype} (expected {a.shape} {a.dtype})"
            )
        gneg = np.asarray(kappa.grad(-a))
        odd_err = float(np.max(np.abs(gneg + ga)))
        if not odd_err <= 1e-12 * (1.0 + float(np.max(np.abs(ga)))):
            raise KappaValidationError(
                f"{label} failed odd symmetry: grad(-y) must equal -grad(y) (K symmetric); "
                f"max |grad(-y) + grad(y)| = {odd_err:.6g} at y={a!r}"
            )
        tol = 1e-9 * (1.0 + float(np.sum(np.abs(a) * np.abs(ga))) + float(np.sum(np.abs(b) * np.abs(gb))))
        mono = float(np.dot(ga - gb, a - b))
        if not mono >= -tol:
            raise KappaValidationError(
                f"{label} failed monotonicity: <grad(a) - grad(b), a - b> = {mono:.6g} < 0 "
                f"at a={a!r}, b={b!r}"
            )
        ka = float(kappa.value(a))
        # grad(y) lies on the boundary of dom K* for a norm κ; rounding may put it an ulp
        # outside, where the strict conjugate is +inf: evaluate K* on the domain within eps.
        d_ga = float(kappa.domain_distance(ga))
        near = d_ga <= 1e-12 * (1.0 + float(np.max(np.abs(ga))))
        kca = float(kappa.conjugate_on_domain(ga) if near else kappa.conjugate(ga))
        ya = float(np.dot(a, ga))
        if not (math.isfinite(ka) and math.isfinite(kca)):
            raise KappaValidationError(
                f"{label} failed the Fenchel-Young equality at z = grad(y): K(y) = {ka!r} and "
                f"K*(grad(y)) = {kca!r} must be finite (grad(y) lies in dom K*) at y={a!r}"
            )
        gap = ka + kca - ya
        tol_eq = 1e-7 * (1.0 + abs(ka) + abs(kca) + abs(ya))
        if not abs(gap) <= tol_eq:
            raise KappaValidationError(
                f"{label} failed the Fenchel-Young equality at z = grad(y): "
                f"K(y) + K*(z) - y.z = {gap:.6g} (expected 0 within {tol_eq:.3g}) at y={a!r}"
            )
        # inequality at an unrelated z: a random point and a scaled gradient
        # (3·grad(y) and y itself probe a conjugate that is too small outside the domain)
        for z in (b * (1.0 / max(scale, 1.0)), 0.5 * gb, gb, 3.0 * ga, a):
            kcz = float(kappa.conjugate(z))
            lhs = ka + kcz
            rhs = float(np.dot(a, z))
            if not lhs >= rhs - 1e-9 * (1.0 + abs(ka) + abs(rhs)):
                raise KappaValidationError(
                    f"{label} failed the Fenchel-Young inequality: K(y) + K*(z) = {lhs:.6g} < "
                    f"y.z = {rhs:.6g} at y={a!r}, z={z!r}"
                )
        if t == 0:
            d = d_ga
            if not d <= 1e-9 * (1.0 + float(np.max(np.abs(ga)))):
                raise KappaValidationError(
                    f"{label}: domain_distance(grad(y)) must be 0 (grad(y) lies in dom K*); "
                    f"received {d:.6g} at y={a!r}"
                )


# Matrix κ (nuclear / Muon), per-leaf selection and `scaled` register themselves
# (lionk/core/kappa_matrix.py, lionk/core/kappa_scaling.py).
from . import kappa_matrix as _kappa_matrix  # noqa: E402,F401
from . import kappa_scaling as _kappa_scaling  # noqa: E402,F401
