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
  be bitwise identical across backends) and ``separable`` (K is a sum over elements);
* its *facts*, which the rest of lionk reads instead of tables of names (so a user κ that states
  them works wherever a built-in does): ``constraint`` (a :class:`Constraint`: the norm whose ball
  λx is kept in and the radius rule ``radius = scale/λ``; read by ``lionk.minimize(radius=...)``
  and ``lionk.plot``), ``ternary`` (∇K takes only the values −1, 0, +1: its directions can be
  exchanged as votes, ``communication="sign-vote"``), ``discontinuities`` (the values of an
  element of ``c`` where ∇K jumps, and ``lipschitz``, a bound on how fast it moves elsewhere:
  the conformance suite's tie accounting), ``tier`` (``"bitwise"``, ``"ulp"`` or ``"semantic"``,
  reproducibility.md) and a spec (:meth:`Kappa.to_spec` / :func:`from_spec`) for state dicts and
  checkpoints.

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
group-l2 (axis)     Σ_g ‖y_g‖₂ (rows, columns)   ‖x_g‖₂ ≤ 1/λ for every group g       ulp
nuclear             s·‖Y‖_* (per matrix)         ‖X‖_op ≤ s/λ                         ulp
scaled (κ, s)       s·K(y)                       K's problem with radius s/λ          as K
==================  ===========================  ===================================  ======

Norm-type κ (``l2``, ``lp``, ``relativistic-l2``) take ``scope="tensor"`` (each array its own
norm: one ball per array) or ``scope="global"`` (one norm over all arrays of a tree).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .array_api import (
    Array,
    array_namespace,
    float64_or_widest,
    is_array,
    native_exact_sign,
    scalar_device,
)

__all__ = [
    "Kappa",
    "Constraint",
    "KappaValidationError",
    "TIERS",
    "get",
    "available",
    "register",
    "unregister",
    "resolve",
    "exact_sign",
    "validate",
    "from_spec",
]

_INF = math.inf


class KappaValidationError(ValueError):
    """A user κ failed one of the checks of :func:`register`."""


# ---------------------------------------------------------------------------------------------
# Small array-API helpers shared by the built-ins (no backend-specific code).


def _const(xp: Any, value: float, like: Array) -> Array:
    """A 0-d array of ``like``'s dtype and device holding ``value`` (for JAX: default placement,
    which combines with a sharded ``like``; see ``array_api.scalar_device``)."""
    return xp.asarray(value, dtype=like.dtype, device=scalar_device(like))


def exact_sign(y: Array) -> Array:
    """sign(y) from nested ``where``: NaN → NaN, ±0 → +0, else ±1.

    Bitwise identical on every backend (raw ``sign`` differs: JAX keeps −0, raw torch maps
    NaN to 0). Uses only comparisons and ``where``, except where a backend's own ``sign`` is
    verified to give the same bytes (NumPy; eager torch and JAX, also under ``jax.jit``, after
    a probe; see ``lionk.core.array_api.native_exact_sign``).
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
        return xp.asarray(0.0, dtype=t.dtype, device=scalar_device(t))
    return xp.max(t)


def _box_distance(z: Array) -> Array:
    xp = array_namespace(z)
    return _max0(xp, xp.maximum(xp.abs(z) - 1.0, _const(xp, 0.0, z)))


def _where_in_domain(dist: Array, finite: Array) -> Array:
    xp = array_namespace(dist)
    return xp.where(dist > 0, _const(xp, _INF, finite), finite)


# ---------------------------------------------------------------------------------------------
# The Kappa type and its facts.

#: The reproducibility tiers a κ can promise (reproducibility.md): ``"bitwise"`` (∇K uses only
#: correctly rounded elementwise operations: trajectories can be bit-identical across backends),
#: ``"ulp"`` (sqrt, pow or reductions: within a few ulps, teacher-forced), ``"semantic"`` (an
#: approximation whose rounding is not bounded per step, e.g. an iterative polar factor: only the
#: objective and the constraint are comparable).
TIERS = ("bitwise", "ulp", "semantic")

_NORMS: dict[str, tuple[float, str]] = {
    "linf": (_INF, "‖x‖_∞"),
    "l2": (2.0, "‖x‖₂"),
    "l1": (1.0, "‖x‖₁"),
}


@dataclass(frozen=True)
class Constraint:
    r"""The set a κ keeps the parameters in: the ball ``‖x‖ ≤ radius`` with ``radius = scale/λ``.

    With weight decay λ > 0 Lion-κ solves ``min f(x) + (1/λ) K*(λx)``. When dom K* is the ball
    ``{z : ‖z‖ ≤ scale}`` of a norm (every norm κ: ``K = scale·‖·‖_dual``), that is
    ``min f(x) s.t. ‖x‖ ≤ scale/λ`` (plus the finite part of K*, e.g. Huber's
    ``(δλ/2)‖x‖₂²``), and the iterates enter the ball at rate ``1 − lr·λ`` (theory.md §2–3).

    Attributes:
        norm: the norm's name: ``"linf"``, ``"l2"``, ``"l1"``, ``"lq"`` (give ``order``), or any
            other name (give ``measure`` so that lionk can evaluate it, e.g. ``"spectral"``).
        order: p of an ℓp norm (``math.inf`` for ``"linf"``; set from ``norm`` for the three
            names above). lionk evaluates ℓp norms itself. None for another norm.
        scale: the radius rule: ``radius = scale / weight_decay`` (1 for every built-in; ``s``
            for ``s·K``). ``lionk.minimize(radius=r)`` sets ``weight_decay = scale / r``.
        bounded: False when K* is finite everywhere (no ball, a penalty: ``quadratic``'s
            ``(λ/2)‖x‖₂²``); ``norm`` is then the one the penalty measures, and there is no
            radius to draw.
        scope: ``"tensor"`` (one ball per array of a tree) or ``"global"`` (one ball for all the
            arrays together); the same for the ℓ∞ ball.
        label: how plots name the norm (default from ``norm``: ``"‖x‖_∞"``, ``"‖x‖₂"``, ...).
        problem: the implied problem for x, in words (e.g. ``"‖x‖_∞ ≤ 1/λ"``).
        measure: ``measure(array) -> float``, the norm of one array, for a norm that is not ℓp.
        per_element: the ℓp norm divided by ``n^(1/p)`` (n the number of elements; over the
            whole tree for ``scope="global"``): the RMS for ℓ2, the mean-power norm for ℓq. The
            balls of the normalised norm κ (``l2``, ``lp``, ``relativistic-l2`` at their default
            ``scale="rms"``) are stated in it, with radius 1/λ as for Lion's box.
    """

    norm: str
    order: float | None = None
    scale: float = 1.0
    bounded: bool = True
    scope: str = "tensor"
    label: str = ""
    problem: str = ""
    measure: Callable[[Array], Any] | None = None
    per_element: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.norm, str) or not self.norm:
            raise TypeError(f"Constraint: norm must be a non-empty str; received {self.norm!r}")
        known = _NORMS.get(self.norm)
        order = self.order
        if order is None and known is not None:
            order = known[0]
        if order is not None:
            order = float(order)
            if not order >= 1.0:
                raise ValueError(f"Constraint: order must be >= 1 (a norm); received {order!r}")
        scale = _positive("scale", self.scale, f"Constraint({self.norm!r})")
        if self.scope not in ("tensor", "global"):
            raise ValueError(
                f"Constraint: scope must be 'tensor' or 'global'; received {self.scope!r}"
            )
        if self.measure is not None and not callable(self.measure):
            raise TypeError(f"Constraint: measure must be callable; received {self.measure!r}")
        label = self.label
        if self.per_element and (order is None or not math.isfinite(order)):
            raise ValueError(f"Constraint: per_element needs a finite order (an ℓp norm); "
                             f"received norm={self.norm!r}, order={order!r}")
        if not label:
            if self.per_element and order is not None:
                label = "RMS(x)" if order == 2.0 else f"‖x‖_{order:g}/n^(1/{order:g})"
            elif known is not None:
                label = known[1]
            elif order is not None:
                label = f"‖x‖_{order:g}"
            else:
                label = f"‖x‖ ({self.norm})"
        object.__setattr__(self, "order", order)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "bounded", bool(self.bounded))
        object.__setattr__(self, "per_element", bool(self.per_element))
        object.__setattr__(self, "label", label)

    def radius(self, weight_decay: float) -> float:
        """The radius of the ball for weight decay λ: ``scale / λ`` (``inf`` for λ = 0)."""
        lam = float(weight_decay)
        return _INF if lam == 0 else self.scale / lam

    def weight_decay_for(self, radius: float) -> float:
        """The weight decay λ that gives the ball of ``radius``: ``scale / radius``."""
        return self.scale / float(radius)

    def evaluate(self, x: Array | Sequence[Array]) -> float:
        """``‖x‖`` in this norm, as a Python float; ``x`` one array or the leaves of a tree
        (``scope="tensor"``: the largest per-array norm; ``"global"``: the norm of all the
        arrays laid end to end). NaN when the norm is unknown (no ``order`` nor ``measure``)."""
        leaves = [x] if is_array(x) else list(x)
        if self.measure is not None:
            per = [float(self.measure(a)) for a in leaves]
        elif self.order is not None:
            per = [_pnorm(a, self.order) for a in leaves]
        else:
            return math.nan
        if not per:
            return 0.0
        sizes = [max(1, _size(a)) for a in leaves]
        if self.scope == "global" and self.order is not None and math.isfinite(self.order):
            p = self.order
            total = math.fsum(v ** p for v in per)
            if self.per_element:
                total /= sum(sizes)
            return total ** (1.0 / p)
        if self.per_element and self.order is not None:
            return max(v / n ** (1.0 / self.order) for v, n in zip(per, sizes))
        return max(per)


def _pnorm(a: Array, order: float) -> float:
    """‖a‖_order as a Python float, computed in float64 where the library has it."""
    if _size(a) == 0:
        return 0.0
    xp = array_namespace(a)
    w = xp.abs(float64_or_widest(xp, a))
    if order == _INF:
        return float(xp.max(w))
    if order == 1.0:
        return float(xp.sum(w))
    if order == 2.0:
        return math.sqrt(float(xp.sum(w * w)))
    return float(xp.sum(xp.pow(w, order))) ** (1.0 / order)


def _freeze(v: Any) -> Any:
    """A hashable stand-in for a parameter value (lists → tuples, dicts → sorted items)."""
    if isinstance(v, Mapping):
        return tuple(sorted((str(k), _freeze(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    try:
        hash(v)
    except TypeError:
        return ("id", id(v))
    return v


class Kappa:
    """A convex function K for Lion-κ, with ∇K, K, K* and the distance to dom K*, and its facts.

    Construct one from callables to register your own::

        Kappa("cubic", grad=..., value=..., conjugate=..., domain_distance=...,
              exact=False, separable=True,
              constraint=Constraint("linf"), ternary=False, discontinuities=(),
              lipschitz=None, tier=None)

    or subclass it and override the methods. ``grad`` must be odd (∇K(−y) = −∇K(y)) for the
    step's convention to agree with the paper's (theory.md §1).

    Facts (attributes; all optional for a user κ, read by the rest of lionk):

    * ``constraint`` — a :class:`Constraint` (norm, radius rule ``scale/λ``, bounded or a
      penalty) or None when not stated (then ``minimize`` takes ``radius = 1/λ`` and plots draw
      no norm);
    * ``ternary`` — ∇K takes only −1, 0, +1 (NaN for NaN): its directions are votes
      (``lionk.torch.LionK(communication="sign-vote")``);
    * ``discontinuities`` — the values of an element ``c_i`` where an elementwise ∇K jumps
      (``(0.0,)`` for sign), and ``lipschitz`` — L with ``‖∇K(a) − ∇K(b)‖₂ ≤ L‖a − b‖₂`` (None:
      not Lipschitz or not known); the conformance suite's tie accounting and error scale;
    * ``tier`` — one of :data:`TIERS`; ``exact`` is ``tier == "bitwise"``.

    Identity: two κ are equal (and hash alike) only if they compute the same thing, because the
    execution caches (recorded programs, kernels, compiled functions) are keyed by the κ.
    Built-ins compare by class, name and ``params`` (their params determine them); a
    ``Kappa(...)`` built from callables by name, params and the ``grad`` callable itself; a
    subclass by identity, unless its class body sets ``params_complete = True`` (a promise that
    ``params`` holds everything its output depends on).

    The ``tree_*`` methods evaluate K over a whole tree of arrays (a list of leaves). For a
    separable or per-tensor κ, values and conjugates add up over the leaves and the domain
    distance is the largest per-leaf distance; a ``scope="global"`` norm κ overrides them.
    """

    #: Set to True in a subclass's body when ``params`` determines everything the κ computes:
    #: equal name and params then mean equal κ (shared caches). Not inherited.
    params_complete: ClassVar[bool] = False
    #: False when ∇K re-measures a length from its input at every step (the ``"auto"`` lengths
    #: of the built-ins): K is then not one fixed function, has no value or conjugate, and
    #: defines no problem for ``lionk.minimize`` (its constraint still holds).
    fixed: bool = True

    def __init__(
        self,
        name: str,
        *,
        grad: Callable[[Array], Array] | None = None,
        value: Callable[[Array], Array] | None = None,
        conjugate: Callable[[Array], Array] | None = None,
        domain_distance: Callable[[Array], Array] | None = None,
        exact: bool | None = None,
        separable: bool = False,
        params: dict[str, Any] | None = None,
        tier: str | None = None,
        constraint: Constraint | None = None,
        ternary: bool = False,
        discontinuities: Sequence[float] = (),
        lipschitz: float | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"Kappa: name must be a non-empty str; received {name!r}")
        for label, fn in (("grad", grad), ("value", value), ("conjugate", conjugate),
                          ("domain_distance", domain_distance)):
            if fn is not None and not callable(fn):
                raise TypeError(f"kappa {name!r}: {label} must be callable; received {fn!r}")
        if params is not None and not isinstance(params, Mapping):
            raise TypeError(f"kappa {name!r}: params must be a dict; received {params!r}")
        self.name = name
        self.separable = bool(separable)
        self.params = dict(params or {})
        self._grad_fn = grad
        self._value_fn = value
        self._conjugate_fn = conjugate
        self._distance_fn = domain_distance
        self.tier = _check_tier(name, tier, exact)
        if constraint is not None and not isinstance(constraint, Constraint):
            raise TypeError(
                f"kappa {name!r}: constraint must be a lionk.kappa.Constraint or None; "
                f"received {constraint!r}"
            )
        self.constraint = constraint
        self.ternary = bool(ternary)
        self.discontinuities = tuple(
            _finite("discontinuities[]", d, name) for d in discontinuities
        )
        self.lipschitz = None if lipschitz is None else _nonnegative("lipschitz", lipschitz, name)

    @property
    def exact(self) -> bool:
        """``tier == "bitwise"``: ∇K uses only correctly rounded elementwise operations."""
        return self.tier == "bitwise"

    @exact.setter
    def exact(self, value: bool) -> None:
        tier = getattr(self, "tier", "ulp")  # a subclass may set exact before __init__
        self.tier = "bitwise" if value else ("ulp" if tier == "bitwise" else tier)

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

    # --- facts --------------------------------------------------------------------------------
    def discontinuities_at(self, y: Array) -> tuple[float, ...]:
        """The values of an element of ``y`` where ∇K(y) jumps, for this input: the fact
        ``discontinuities`` (fixed), or, for a κ whose jump moves with its input (deadzone at
        ``e="auto"``), where it lies for ``y``."""
        return self.discontinuities

    def facts(self) -> dict[str, Any]:
        """The κ's facts as plain data (for reports): tier, separable, ternary,
        discontinuities, lipschitz and the constraint (norm, order, scale, bounded, scope,
        label, problem; None when not stated)."""
        c = self.constraint
        return {
            "name": self.name,
            "tier": self.tier,
            "separable": self.separable,
            "ternary": self.ternary,
            "discontinuities": list(self.discontinuities),
            "lipschitz": self.lipschitz,
            "constraint": None if c is None else {
                "norm": c.norm, "order": c.order, "scale": c.scale, "bounded": c.bounded,
                "scope": c.scope, "label": c.label, "problem": c.problem,
                "per_element": c.per_element,
            },
        }

    def to_spec(self) -> dict[str, Any]:
        """``{"name": ..., "params": {...}}``: plain data that :func:`from_spec` turns back into
        this κ through the registry (state dicts and checkpoints store it)."""
        return {"name": self.name, "params": dict(self.params)}

    @classmethod
    def from_spec(cls, spec: Any, *, like: Kappa | None = None, where: str = "kappa") -> Kappa:
        """The κ a :meth:`to_spec` dict (or a name) describes; see :func:`from_spec`."""
        return from_spec(spec, like=like, where=where)

    # --- identity -----------------------------------------------------------------------------
    def _identity(self) -> tuple[Any, ...] | None:
        cls = type(self)
        if cls.__dict__.get("params_complete", False):
            return (cls, self.name, _freeze(self.params))
        if cls is Kappa:
            return (cls, self.name, _freeze(self.params), id(self._grad_fn))
        return None  # a subclass whose output may depend on more than params: by identity

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"Kappa({self.name!r}{', ' + args if args else ''})"

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Kappa) or type(self) is not type(other):
            return False
        key = self._identity()
        return key is not None and key == other._identity()

    def __hash__(self) -> int:
        key = self._identity()
        return object.__hash__(self) if key is None else hash(key)


def _check_tier(name: str, tier: Any, exact: Any) -> str:
    if tier is None:
        return "bitwise" if exact else "ulp"
    if tier not in TIERS:
        raise ValueError(f"kappa {name!r}: tier must be one of {TIERS}; received {tier!r}")
    if exact is not None and bool(exact) != (tier == "bitwise"):
        raise ValueError(
            f"kappa {name!r}: exact={exact!r} contradicts tier={tier!r} (exact means the "
            "'bitwise' tier)"
        )
    return str(tier)


def _sum_floats(values: Any) -> float:
    total = 0.0
    for v in values:
        total += float(v)
    return total


# ---------------------------------------------------------------------------------------------
# Separable built-ins.


class _Sign(Kappa):
    """K = ‖y‖₁, ∇K = sign (sign(0) = 0), K* = indicator of the ℓ∞ unit ball."""

    params_complete = True

    def __init__(self) -> None:
        super().__init__("sign", separable=True, tier="bitwise", ternary=True,
                         discontinuities=(0.0,),
                         constraint=Constraint("linf", problem="‖x‖_∞ ≤ 1/λ"))

    def grad(self, y: Array) -> Array:
        return exact_sign(y)

    def value(self, y: Array) -> Array:
        xp = array_namespace(y)
        return xp.sum(xp.abs(y))

    def conjugate(self, z: Array) -> Array:
        return _where_in_domain(_box_distance(z), self.conjugate_on_domain(z))

    def conjugate_on_domain(self, z: Array) -> Array:
        xp = array_namespace(z)
        return xp.asarray(0.0, dtype=z.dtype, device=scalar_device(z))

    def domain_distance(self, z: Array) -> Array:
        return _box_distance(z)


#: The adaptive length of ``huber``, ``relativistic``, ``deadzone`` and ``relativistic-l2`` at
#: their defaults (``delta="auto"``, ``e="auto"``): this fraction of the RMS of ∇K's input.
AUTO_LENGTH = 0.1
AUTO = "auto"


def _rms(y: Array, n: int | None = None) -> Array:
    """RMS(y) = √(Σ y²/n) as a 0-d array of y's dtype (formed in float32 for a 16-bit dtype, so a
    large float16 array cannot overflow Σ y²); ``n`` defaults to y's size."""
    xp = array_namespace(y)
    w = y if xp.finfo(y.dtype).bits >= 32 else xp.astype(y, xp.float32)
    count = max(1, _size(y) if n is None else n)
    r = xp.sqrt(xp.sum(w * w) * (1.0 / count))
    return r if w is y else xp.astype(r, y.dtype)


def _length(name: str, label: str, value: Any) -> float | str:
    """A length parameter: ``"auto"`` or a number > 0."""
    if isinstance(value, str):
        if value != AUTO:  # a TypeError as for any other non-number (a numeric str is not parsed)
            raise TypeError(f"kappa {name!r}: {label} must be a number > 0 or 'auto' (a fraction "
                             f"{AUTO_LENGTH:g} of the RMS of its input, per array); "
                             f"received {label}={value!r}")
        return value
    return _positive(label, value, name)


def _number_or_rule(name: str, label: str, value: Any, rule: str, meaning: str) -> Any:
    """A scale parameter: the string ``rule`` or a number > 0 (a ValueError for another str)."""
    if isinstance(value, str):
        if value != rule:
            raise ValueError(f"kappa {name!r}: {label} must be a number > 0 or {rule!r} "
                             f"({meaning}); received {label}={value!r}")
        return value
    return _positive(label, value, name)


def _no_fixed_k(kappa: Kappa, label: str) -> NotImplementedError:
    ball = kappa.constraint.problem.split(" (")[0].split(",")[0] if kappa.constraint else ""
    return NotImplementedError(
        f"kappa {kappa.name!r} with {label}='auto' measures its length from its input at every "
        f"step, so K is not one fixed function and has no value or conjugate (the Lyapunov "
        f"function needs a fixed K; the constraint {ball} still holds and is checked by "
        f"domain_distance); pass {label}=<a number> (e.g. lionk.kappa.normalized({kappa.name!r}, "
        f"grad_rms=...)) for the certificate")


class _LengthKappa(_Sign):
    """An elementwise κ with a length (huber's and relativistic's δ, deadzone's e): a number
    (a fixed K, separable, the Lyapunov certificate) or ``"auto"`` (the default: the length is
    ``AUTO_LENGTH·RMS(y)`` of each array, re-measured at every step, so that ∇K departs from
    sign(y) at a fixed fraction of the input's own scale whatever the gradients' units; a
    per-array reduction, ulp tier, and no fixed K: no value or conjugate)."""

    label = "delta"

    def _setup(self, name: str, length: Any, tier: str, problem: str, **facts: Any) -> Any:
        length = _length(name, self.label, length)
        auto = length == AUTO
        if auto:  # the facts that depend on a fixed length are not stated
            facts.pop("lipschitz", None)
            facts.pop("discontinuities", None)
        Kappa.__init__(self, name, separable=not auto, params={self.label: length},
                       tier="ulp" if auto else tier, constraint=Constraint("linf", problem=(
                           "‖x‖_∞ ≤ 1/λ (the length re-measured every step: no fixed "
                           "penalty)" if auto else problem)), **facts)
        self.auto = auto
        self.fixed = not auto
        return length

    def length(self, y: Array) -> Any:
        """The length for the array ``y``: the number, or ``AUTO_LENGTH·RMS(y)`` (0-d)."""
        return _rms(y) * AUTO_LENGTH if self.auto else getattr(self, self.label)

    def value(self, y: Array) -> Array:
        if self.auto:
            raise _no_fixed_k(self, self.label)
        return self.fixed_value(y)

    def conjugate(self, z: Array) -> Array:
        if self.auto:
            raise _no_fixed_k(self, self.label)
        return _where_in_domain(_box_distance(z), self.conjugate_on_domain(z))

    def conjugate_on_domain(self, z: Array) -> Array:
        if self.auto:
            raise _no_fixed_k(self, self.label)
        return self.fixed_conjugate(z)

    def fixed_value(self, y: Array) -> Array: ...  # pragma: no cover
    def fixed_conjugate(self, z: Array) -> Array: ...  # pragma: no cover


class _Huber(_LengthKappa):
    """K = Σ h_δ(y_i), ∇K = clip(y·(1/δ), −1, 1), K* = (δ/2)‖z‖² on the box.

    ``delta="auto"`` (default): δ = 0.1·RMS(y) per array, every step (see :class:`_LengthKappa`).
    """

    params_complete = True

    def __init__(self, delta: float | str = AUTO) -> None:
        length: Any = _length("huber", "delta", delta)
        self.delta: Any = self._setup("huber", length, "bitwise", "‖x‖_∞ ≤ 1/λ, plus (δλ/2)‖x‖₂²",
                                      lipschitz=None if length == AUTO else 1.0 / float(length))
        if not self.auto:
            self.inv_delta = 1.0 / length  # a Python float: multiply, never divide by a scalar

    def grad(self, y: Array) -> Array:
        xp = array_namespace(y)
        if not self.auto:
            return xp.clip(y * self.inv_delta, -1.0, 1.0)
        d = self.length(y)
        safe = xp.where(d == 0, _const(xp, 1.0, d), d)
        # δ = 0 (y all zero, or an underflow): the limit δ → 0, sign(y)
        return xp.where(d == 0, exact_sign(y), xp.clip(y / safe, -1.0, 1.0))

    def fixed_value(self, y: Array) -> Array:
        xp = array_namespace(y)
        a = xp.abs(y)
        quad = (y * y) * (0.5 * self.inv_delta)
        lin = a - 0.5 * self.delta
        return xp.sum(xp.where(a <= self.delta, quad, lin))

    def fixed_conjugate(self, z: Array) -> Array:
        xp = array_namespace(z)
        zc = xp.clip(z, -1.0, 1.0)
        return xp.sum(zc * zc) * (0.5 * self.delta)


class _Deadzone(_LengthKappa):
    """K = Σ max(|y_i| − e, 0), ∇K = sign(y)·1{|y| > e}, K* = e‖z‖₁ on the box.

    ``e="auto"`` (default): e = 0.1·RMS(y) per array, every step (see :class:`_LengthKappa`).
    """

    params_complete = True
    label = "e"

    def __init__(self, e: float | str = AUTO) -> None:
        e = _length("deadzone", "e", e)
        self.e = self._setup("deadzone", e, "bitwise", "‖x‖_∞ ≤ 1/λ, plus e‖x‖₁",
                             ternary=True,
                             discontinuities=() if e == AUTO else (-float(e), float(e)))

    def grad(self, y: Array) -> Array:
        xp = array_namespace(y)
        e = self.length(y)
        return xp.where(y > e, 1.0, xp.where(y < -e, -1.0, xp.where(y == y, 0.0, y)))

    def discontinuities_at(self, y: Array) -> tuple[float, ...]:
        if not self.auto:
            return self.discontinuities
        e = float(self.length(y))  # ±e of this input, as the step computes it
        return (-e, e)

    def fixed_value(self, y: Array) -> Array:
        xp = array_namespace(y)
        return xp.sum(xp.maximum(xp.abs(y) - self.e, _const(xp, 0.0, y)))

    def fixed_conjugate(self, z: Array) -> Array:
        xp = array_namespace(z)
        return xp.sum(xp.abs(xp.clip(z, -1.0, 1.0))) * self.e


class _Relativistic(_LengthKappa):
    """K = Σ √(y_i² + δ²) − δ, ∇K = y/√(y² + δ²), K* = Σ δ − δ√(1 − z_i²) on the box.

    ``delta="auto"`` (default): δ = 0.1·RMS(y) per array, every step (see :class:`_LengthKappa`).
    """

    params_complete = True

    def __init__(self, delta: float | str = AUTO) -> None:
        problem = "‖x‖_∞ ≤ 1/λ, with a barrier at the faces of the box"
        length: Any = _length("relativistic", "delta", delta)
        self.delta: Any = self._setup("relativistic", length, "ulp", problem,
                                      lipschitz=None if length == AUTO else 1.0 / float(length))
        if not self.auto:
            self.delta2 = length * length

    def grad(self, y: Array) -> Array:
        xp = array_namespace(y)
        if not self.auto:
            return y / xp.sqrt(y * y + self.delta2)
        d = self.length(y)
        den = xp.sqrt(y * y + d * d)
        safe = xp.where(den == 0, _const(xp, 1.0, den), den)
        # den = 0: y and δ both 0 (or underflowed): the limit, sign(y)
        return xp.where(den == 0, exact_sign(y), y / safe)

    def fixed_value(self, y: Array) -> Array:
        xp = array_namespace(y)
        return xp.sum(xp.sqrt(y * y + self.delta2) - self.delta)

    def fixed_conjugate(self, z: Array) -> Array:
        xp = array_namespace(z)
        zc = xp.clip(z, -1.0, 1.0)
        return xp.sum(self.delta - self.delta * xp.sqrt(1.0 - zc * zc))


class _Quadratic(Kappa):
    """K = ‖y‖²/(2s), ∇K = y·(1/s), K* = (s/2)‖z‖² (dom K* is everything): momentum SGD with
    decoupled weight decay, solving f(x) + (sλ/2)‖x‖₂².

    ``scale="auto"`` (default): s = RMS(y) per array, every step: ∇K = y/RMS(y), per-element RMS
    1 as sign's (normalised momentum SGD). That map is the gradient of the fixed K = √n‖y‖₂ (n
    the array's size; K* the indicator of RMS(z) ≤ 1), the same as ``l2`` at its default
    ``scale="rms"``: K, K*, the certificate and the ball RMS(x) ≤ 1/λ are that κ's. ``scale=1``
    is the textbook ½‖y‖².
    """

    params_complete = True

    def __init__(self, scale: float | str = AUTO) -> None:
        s_: Any = _number_or_rule("quadratic", "scale", scale, AUTO,
                                  "the RMS of its input, per array")
        self.auto = s_ == AUTO
        if self.auto:
            self.ball = _L2("tensor", scale="rms")
            constraint = Constraint(
                "l2", per_element=True,
                problem="RMS(x) ≤ 1/λ for every array (∇K = y/RMS(y) is the gradient of "
                        "√n‖y‖₂, the l2 κ at scale='rms')")
        else:
            constraint = Constraint("l2", bounded=False, problem=(
                "no constraint: the penalty (sλ/2)‖x‖₂²" if s_ != 1.0
                else "no constraint: the penalty (λ/2)‖x‖₂²"))
        super().__init__("quadratic", separable=not self.auto, params={"scale": s_},
                         tier="ulp" if self.auto else "bitwise",
                         lipschitz=None if self.auto else 1.0 / s_, constraint=constraint)
        self.scale: Any = s_
        if not self.auto:
            self.inv_scale = 1.0 / s_

    def grad(self, y: Array) -> Array:
        if not self.auto:
            return y if self.inv_scale == 1.0 else y * self.inv_scale
        xp = array_namespace(y)
        r = _rms(y)
        # r == 0 (not r > 0): a NaN in y makes r NaN and y / NaN carries it (as l2)
        safe = xp.where(r == 0, _const(xp, 1.0, r), r)
        return xp.where(r == 0, _const(xp, 0.0, y), y / safe)

    def value(self, y: Array) -> Array:
        if self.auto:
            return self.ball.value(y)
        xp = array_namespace(y)
        return xp.sum(y * y) * (0.5 * self.inv_scale)

    def conjugate(self, z: Array) -> Array:
        if self.auto:
            return self.ball.conjugate(z)
        xp = array_namespace(z)
        return xp.sum(z * z) * (0.5 * self.scale)

    def conjugate_on_domain(self, z: Array) -> Array:
        return self.ball.conjugate_on_domain(z) if self.auto else self.conjugate(z)

    def domain_distance(self, z: Array) -> Array:
        if self.auto:
            return self.ball.domain_distance(z)
        xp = array_namespace(z)
        return xp.asarray(0.0, dtype=z.dtype, device=scalar_device(z))


# ---------------------------------------------------------------------------------------------
# Norm-type built-ins: a per-array partial reduction, combined per tensor or over the tree.


def _ball(norm: str, scope: str, problem: str, **kw: Any) -> Constraint:
    """The constraint of a norm κ: one ball per array (``scope="tensor"``) or one over all."""
    if scope in ("tensor", "global"):
        where = "for every array x_j of the tree" if scope == "tensor" else "over the whole tree"
        return Constraint(norm, scope=scope, problem=f"{problem} ({where})", **kw)
    return Constraint(norm, problem=problem, **kw)  # an invalid scope: _NormKappa raises


class _NormKappa(Kappa):
    """A κ built on one reduction ``total = Σ_i r(y_i)`` (per tensor or over the whole tree),
    multiplied by a scale s: ``K_s = s·K``, ∇K_s = s·∇K, K_s*(z) = s·K*(z/s), dom K_s* the ball of
    radius s, distance ``s·dist(z/s)``.

    ``scale="rms"`` (the default of every built-in norm κ): s is the factor that gives ∇K
    per-element RMS 1 on a flat input of the norm's n elements (``rms_factor(n)``: √n for ℓ2,
    n^(1/q) for ℓp), so Lion's learning rate and weight decay keep their meaning; the ball
    becomes the *per-element* one (``RMS(x) ≤ 1/λ`` for ℓ2, :class:`Constraint` ``per_element``).
    ``scale=1`` is the textbook norm (``‖x‖₂ ≤ 1/λ``), a number s the ball of radius s/λ.

    Subclasses give ``partial`` (the sum over one array), ``grad_given(y, total, n)``,
    ``value_given(total, n)``, and for the conjugate side ``dual_partial``, ``conj_given`` and
    ``dist_given`` (the domain is the unit ball of the dual norm).
    """

    params_complete = True

    def __init__(self, name: str, scope: str, params: dict[str, Any], *, scale: Any,
                 norm: str, problem: str, order: float | None = None, label: str = "",
                 lipschitz: float | None = None) -> None:
        if scope not in ("tensor", "global"):
            raise ValueError(
                f"kappa {name!r}: scope must be 'tensor' or 'global'; received {scope!r}"
            )
        scale = _number_or_rule(name, "scale", scale, "rms", "∇K with per-element RMS 1")
        rms = scale == "rms"
        if rms:
            problem = problem.replace("‖x‖₂", "RMS(x)").replace("‖x‖_q", "‖x‖_q/n^(1/q)")
        elif scale != 1.0:
            problem = problem.replace("1/λ", "s/λ") + f", s = {scale:g}"
        constraint = _ball(norm, scope, problem, order=order, per_element=rms,
                           scale=1.0 if rms else scale, label="" if rms else label)
        super().__init__(name, separable=False, params={**params, "scope": scope,
                                                        "scale": scale},
                         tier="ulp", constraint=constraint, lipschitz=lipschitz)
        self.scope = scope
        self.scale = scale

    # to be provided by subclasses
    def rms_factor(self, n: int) -> float:  # pragma: no cover
        raise NotImplementedError
    def partial(self, y: Array) -> Array: ...  # pragma: no cover
    def grad_given(self, y: Array, total: Array, n: int) -> Array: ...  # pragma: no cover
    def value_given(self, total: Array, n: int) -> Array: ...  # pragma: no cover
    def dual_partial(self, z: Array) -> Array: ...  # pragma: no cover
    def dual_norm(self, total: Array) -> Array: ...  # pragma: no cover
    def conj_given(self, total: Array) -> Array: ...  # pragma: no cover

    def dist_given(self, total: Array) -> Array:
        xp = array_namespace(total)
        return xp.maximum(self.dual_norm(total) - 1.0, _const(xp, 0.0, total))

    def factor(self, n: int) -> float:
        """s for a norm over ``n`` elements."""
        return self.rms_factor(max(1, n)) if self.scale == "rms" else float(self.scale)

    @staticmethod
    def _times(a: Array, s: float) -> Array:
        return a if s == 1.0 else a * s

    def _dual(self, fn: Callable[[Array], Array], z: Array, s: float) -> Array:
        """``s·fn(dual_partial(z/s))``: the scaled conjugate side of one array."""
        return self._times(fn(self.dual_partial(self._times(z, 1.0 / s))), s)

    # per array
    def grad(self, y: Array) -> Array:
        n = _size(y)
        return self._times(self.grad_given(y, self.partial(y), n), self.factor(n))

    def value(self, y: Array) -> Array:
        n = _size(y)
        return self._times(self.value_given(self.partial(y), n), self.factor(n))

    def conjugate(self, z: Array) -> Array:
        s = self.factor(_size(z))
        t = self.dual_partial(self._times(z, 1.0 / s))
        return self._times(_where_in_domain(self.dist_given(t), self.conj_given(t)), s)

    def conjugate_on_domain(self, z: Array) -> Array:
        return self._dual(self.conj_given, z, self.factor(_size(z)))

    def domain_distance(self, z: Array) -> Array:
        return self._dual(self.dist_given, z, self.factor(_size(z)))

    # over a tree
    def _total(self, fn: Callable[[Array], Array], leaves: Sequence[Array]) -> Array:
        parts = [fn(y) for y in leaves]
        xp = array_namespace(*parts)
        wide = max(parts, key=lambda p: xp.finfo(p.dtype).bits).dtype
        total = xp.asarray(0.0, dtype=wide, device=scalar_device(parts[0]))
        for p in parts:
            total = total + xp.astype(p, wide)
        return total

    def _span(self, leaves: Sequence[Array]) -> tuple[int, float]:
        n = sum(_size(y) for y in leaves)
        return n, self.factor(n)

    def tree_grad(self, leaves: Sequence[Array]) -> list[Array]:
        if self.scope == "tensor" or not leaves:
            return super().tree_grad(leaves)
        total = self._total(self.partial, leaves)
        xp = array_namespace(total)
        n, s = self._span(leaves)
        return [self._times(self.grad_given(y, xp.astype(total, y.dtype), n), s)
                for y in leaves]

    def tree_value(self, leaves: Sequence[Array]) -> float:
        if self.scope == "tensor" or not leaves:
            return super().tree_value(leaves)
        n, s = self._span(leaves)
        return float(self.value_given(self._total(self.partial, leaves), n)) * s

    def _dual_total(self, leaves: Sequence[Array]) -> tuple[Array, float]:
        """(the dual reduction of z/s over the tree, s) for the global scope."""
        _, s = self._span(leaves)
        return self._total(self.dual_partial, [self._times(z, 1.0 / s) for z in leaves]), s

    def tree_conjugate(self, leaves: Sequence[Array], *, on_domain: bool = False) -> float:
        if self.scope == "tensor" or not leaves:
            return super().tree_conjugate(leaves, on_domain=on_domain)
        t, s = self._dual_total(leaves)
        if not on_domain and float(self.dist_given(t)) > 0:
            return _INF
        return float(self.conj_given(t)) * s

    def tree_domain_distance(self, leaves: Sequence[Array]) -> float:
        if self.scope == "tensor" or not leaves:
            return super().tree_domain_distance(leaves)
        t, s = self._dual_total(leaves)
        return float(self.dist_given(t)) * s


class _L2(_NormKappa):
    """K = s·‖y‖₂, ∇K = s·y/‖y‖₂ (0 at 0), K* = indicator of the ℓ2 ball of radius s.

    ``scale="rms"`` (default): s = √n, ∇K = y/RMS(y), the ball RMS(x) ≤ 1/λ; ``scale=1``: the
    Euclidean ball ‖x‖₂ ≤ 1/λ.
    """

    params_complete = True

    def __init__(self, scope: str = "tensor", scale: float | str = "rms") -> None:
        super().__init__("l2", scope, {}, scale=scale, norm="l2", problem="‖x‖₂ ≤ 1/λ")

    def rms_factor(self, n: int) -> float:
        return math.sqrt(n)

    def partial(self, y: Array) -> Array:
        xp = array_namespace(y)
        return xp.sum(y * y)

    def grad_given(self, y: Array, total: Array, n: int) -> Array:
        xp = array_namespace(y)
        norm = xp.sqrt(total)
        # ``norm == 0`` (not ``norm > 0``): a NaN norm (a NaN in y) gives y / NaN = NaN, so
        # nan_policy="propagate" carries the NaN into x as documented
        safe = xp.where(norm == 0, _const(xp, 1.0, norm), norm)
        return xp.where(norm == 0, _const(xp, 0.0, y), y / safe)

    def value_given(self, total: Array, n: int) -> Array:
        return array_namespace(total).sqrt(total)

    def dual_partial(self, z: Array) -> Array:
        return self.partial(z)

    def dual_norm(self, total: Array) -> Array:
        return array_namespace(total).sqrt(total)

    def conj_given(self, total: Array) -> Array:
        return _const(array_namespace(total), 0.0, total)


class _RelativisticL2(_L2):
    """K = s·(√(‖y‖² + δ²) − δ), ∇K = s·y/√(‖y‖² + δ²), K* = s·(δ − δ√(1 − ‖z/s‖²)) on the ℓ2
    ball of radius s.

    ``scale="rms"`` (default) as ``l2``; ``delta="auto"`` (default): δ = 0.1·RMS(y) over the
    norm's span (each array, or the tree for ``scope="global"``), every step: no fixed K (no
    value or conjugate), the ball still holds.
    """

    params_complete = True

    def __init__(self, delta: float | str = AUTO, scope: str = "tensor",
                 scale: float | str = "rms") -> None:
        length: Any = _length("relativistic-l2", "delta", delta)
        self.auto = length == AUTO
        self.fixed = not self.auto
        _NormKappa.__init__(self, "relativistic-l2", scope, {"delta": length}, scale=scale,
                            norm="l2", problem="‖x‖₂ ≤ 1/λ, with a barrier at the sphere",
                            lipschitz=None if self.auto or isinstance(scale, str)
                            else _positive("scale", scale, "relativistic-l2") / length)
        self.delta: Any = length
        if not self.auto:
            self.delta2 = length * length

    def grad_given(self, y: Array, total: Array, n: int) -> Array:
        xp = array_namespace(y)
        if not self.auto:
            return y / xp.sqrt(total + self.delta2)
        # δ² = (0.1·RMS)² = 0.01·total/n: ∇K = y/√(total·(1 + 0.01/n)), 0 for a zero y
        den = xp.sqrt(total * (1.0 + AUTO_LENGTH * AUTO_LENGTH / max(1, n)))
        safe = xp.where(den == 0, _const(xp, 1.0, den), den)
        return xp.where(den == 0, _const(xp, 0.0, y), y / safe)

    def value_given(self, total: Array, n: int) -> Array:
        if self.auto:
            raise _no_fixed_k(self, "delta")
        xp = array_namespace(total)
        return xp.sqrt(total + self.delta2) - self.delta

    def conj_given(self, total: Array) -> Array:
        if self.auto:
            raise _no_fixed_k(self, "delta")
        xp = array_namespace(total)
        inside = xp.maximum(1.0 - total, _const(xp, 0.0, total))
        return self.delta - self.delta * xp.sqrt(inside)


class _Lp(_NormKappa):
    """K = s·‖y‖_p (1 < p < ∞), ∇K = s·sign(y)·(|y|/‖y‖_p)^(p−1), K* = indicator of the ℓq ball
    of radius s.

    ``scale="rms"`` (default): s = n^(1/q) (∇K of a flat input has per-element RMS 1), the ball
    ‖x‖_q/n^(1/q) ≤ 1/λ; ``scale=1``: ‖x‖_q ≤ 1/λ.
    """

    params_complete = True

    def __init__(self, p: float = 3.0, scope: str = "tensor", scale: float | str = "rms") -> None:
        p = _finite("p", p, "lp")
        if not p > 1.0:
            raise ValueError(f"kappa 'lp': p must be > 1 and finite; received p={p!r}")
        q = p / (p - 1.0)
        self.p = p
        self.q = q
        self.inv_p = 1.0 / p
        self.inv_q = 1.0 / self.q
        super().__init__("lp", scope, {"p": p}, scale=scale, norm="lq", order=q,
                         problem=f"‖x‖_q ≤ 1/λ, q = p/(p − 1) = {q:g}",
                         label=f"‖x‖_q (q = {q:g})")

    def rms_factor(self, n: int) -> float:
        return float(n ** self.inv_q)

    def partial(self, y: Array) -> Array:
        xp = array_namespace(y)
        return xp.sum(xp.pow(xp.abs(y), self.p))

    def grad_given(self, y: Array, total: Array, n: int) -> Array:
        xp = array_namespace(y)
        norm = xp.pow(total, self.inv_p)
        # ``norm == 0``, not ``norm > 0``: a NaN norm propagates (see _L2.grad_given)
        safe = xp.where(norm == 0, _const(xp, 1.0, norm), norm)
        r = xp.pow(xp.abs(y) / safe, self.p - 1.0)
        return xp.where(norm == 0, _const(xp, 0.0, y), exact_sign(y) * r)

    def value_given(self, total: Array, n: int) -> Array:
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
    from . import validation

    v = validation.real(f"kappa {kappa!r}: {name}", value)  # a bool or a str is refused
    if not isinstance(v, float):
        raise TypeError(f"kappa {kappa!r}: {name} must be a known real number; received {value!r}")
    if not math.isfinite(v):
        raise ValueError(f"kappa {kappa!r}: {name} must be finite; received {name}={value!r}")
    return v


def _nonnegative(name: str, value: Any, kappa: str) -> float:
    v = _finite(name, value, kappa)
    if not v >= 0:
        raise ValueError(f"kappa {kappa!r}: {name} must be >= 0; received {name}={value!r}")
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

    Before accepting it, the κ is checked by :func:`validate` on seeded random points:

    * ``grad`` returns an array of its argument's shape and dtype, for 0-d, 1-d, 2-d and 3-d
      arrays in float64 and float32 (a ``grad`` that flattens or promotes is refused here, not
      at the first step); ``value``, ``conjugate`` and ``domain_distance`` return 0-d arrays;
    * ∇K is odd (∇K(−y) = −∇K(y)): K symmetric, as the step's convention and the Lyapunov
      function assume (theory.md §1, §4);
    * ∇K is monotone: ⟨∇K(a) − ∇K(b), a − b⟩ ≥ 0;
    * Fenchel–Young: K(y) + K*(z) ≥ yᵀz, with equality at z = ∇K(y);
    * the facts it states: ``ternary`` (∇K only −1, 0, +1), ``lipschitz``, and ``constraint``
      (half its ball lies in dom K*, twice its ball does not; unbounded: dom K* is everything).

    A failing candidate is rejected with :class:`KappaValidationError` naming the property and
    the point; nothing is registered. ``kappa`` that is neither a Kappa nor callable is a
    TypeError.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"register: name must be a non-empty str; received {name!r}")
    if name in _BUILTINS or name in _ALIASES:
        raise ValueError(f"register: {name!r} is a built-in kappa and cannot be replaced")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"register: kappa {name!r} is already registered (pass overwrite=True)")
    if not isinstance(kappa, Kappa) and not callable(kappa):
        raise TypeError(
            f"register: expected a lionk.kappa.Kappa or a factory (**params) -> Kappa for "
            f"{name!r}; received {kappa!r} ({type(kappa).__name__})"
        )
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


def from_spec(spec: Any, *, like: Kappa | None = None, where: str = "kappa") -> Kappa:
    """The κ that ``spec`` describes: the inverse of :meth:`Kappa.to_spec`.

    ``spec`` is a ``{"name": ..., "params": {...}}`` dict (what state dicts and checkpoints
    store), a registered name, or a :class:`Kappa` (returned as is). ``like``: a κ returned
    as is when ``spec`` describes it (so an unregistered κ object survives a round trip through
    its own optimizer). Errors name ``where``: KeyError for a name that is not registered,
    TypeError for a malformed spec or unknown parameters, ValueError for invalid values.
    """
    if isinstance(spec, Kappa):
        return spec
    if isinstance(spec, str):
        try:
            return resolve(spec)
        except (KeyError, TypeError, ValueError) as exc:
            msg = exc.args[0] if exc.args else str(exc)
            raise type(exc)(f"{where}: {msg}") from None
    if not (isinstance(spec, Mapping) and set(spec) == {"name", "params"}
            and isinstance(spec["name"], str) and isinstance(spec["params"], Mapping)):
        raise TypeError(
            f"{where}: expected a kappa name (str), a lionk.kappa.Kappa or a "
            f"{{'name': str, 'params': {{...}}}} dict; received {spec!r}"
        )
    name, params = spec["name"], dict(spec["params"])
    if isinstance(like, Kappa) and like.to_spec() == {"name": name, "params": params}:
        return like
    try:
        return get(name, **params)
    except (KeyError, TypeError, ValueError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        raise type(exc)(
            f"{where}: cannot rebuild kappa {name!r} with parameters {params!r} ({msg}); "
            "register it with lionk.kappa.register, or construct the optimizer with that "
            "Kappa object before loading"
        ) from None


# Arrays on which validate checks that grad keeps shape and dtype, besides the 1-D float64
# vectors of the mathematical checks: 0-d, column and row vectors, matrices, 3-d; two dtypes.
_SHAPE_PROBES: tuple[tuple[int, ...], ...] = ((3,), (1,), (), (3, 1), (1, 3), (2, 3), (2, 2, 3))
_DTYPE_PROBES = (np.float64, np.float32)


def _grad_checked(label: str, kappa: Kappa, y: np.ndarray) -> np.ndarray:
    """``kappa.grad(y)`` as a NumPy array, refused unless it is an array of y's shape and dtype."""
    where = f"an array of shape {y.shape} and dtype {y.dtype}"
    try:
        out = kappa.grad(y)
    except NotImplementedError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure on a valid input is a refusal
        raise KappaValidationError(
            f"{label}: grad raised {type(exc).__name__}: {exc} on {where}"
        ) from exc
    if not is_array(out):
        raise KappaValidationError(
            f"{label}: grad must return an array of its argument's library; on {where} it "
            f"returned {type(out).__name__}"
        )
    if tuple(out.shape) != y.shape or out.dtype != y.dtype:
        raise KappaValidationError(
            f"{label}: grad must keep shape and dtype; on {where} it returned shape "
            f"{tuple(out.shape)} dtype {out.dtype} (expected {y.shape} {y.dtype})"
        )
    return np.asarray(out)


def _scalar_checked(label: str, what: str, out: Any, y: np.ndarray) -> float:
    if not is_array(out) and not isinstance(out, (int, float)):
        raise KappaValidationError(
            f"{label}: {what} must return a 0-d array; at y={y!r} it returned "
            f"{type(out).__name__}"
        )
    shape = tuple(getattr(out, "shape", ()))
    if shape != ():
        raise KappaValidationError(
            f"{label}: {what} must return a 0-d array (a number); at y={y!r} it returned "
            f"shape {shape}"
        )
    return float(out)


def _check_facts(label: str, kappa: Kappa, a: np.ndarray, b: np.ndarray, ga: np.ndarray,
                 gb: np.ndarray) -> None:
    """The facts ``kappa`` states, checked at the points a, b (∇K(a) = ga, ∇K(b) = gb)."""
    if kappa.ternary:
        for y, g in ((a, ga), (b, gb)):
            if not bool(np.all(np.isin(g, (-1.0, 0.0, 1.0)))):
                raise KappaValidationError(
                    f"{label} states ternary=True, but grad takes values other than -1, 0, +1: "
                    f"grad(y)={g!r} at y={y!r}"
                )
    if kappa.lipschitz is not None:
        # the random pair, and pairs 2e-12 apart across 0 and each stated discontinuity (where
        # a κ that jumps cannot be Lipschitz)
        unit = a * (1.0 / max(float(np.max(np.abs(a))), 1e-300))
        pairs = [(a, b, ga, gb), (unit * 1e-12, unit * -1e-12, None, None)]
        pairs += [(np.full_like(a, d + 1e-12), np.full_like(a, d - 1e-12), None, None)
                  for d in kappa.discontinuities]
        for p, q, gp, gq in pairs:
            gp = _grad_checked(label, kappa, p) if gp is None else gp
            gq = _grad_checked(label, kappa, q) if gq is None else gq
            lhs = float(np.linalg.norm(gp - gq))
            rhs = kappa.lipschitz * float(np.linalg.norm(p - q))
            if not lhs <= rhs * (1.0 + 1e-9) + 1e-12:
                raise KappaValidationError(
                    f"{label} states lipschitz={kappa.lipschitz!r}, but ‖grad(a) - grad(b)‖₂ = "
                    f"{lhs:.6g} > {rhs:.6g} = lipschitz·‖a - b‖₂ at a={p!r}, b={q!r}"
                )
    c = kappa.constraint
    if c is None:
        return
    if not c.bounded:
        far = a * (1e6 / max(float(np.max(np.abs(a))), 1e-300))
        d = float(kappa.domain_distance(far))
        if d != 0.0:
            raise KappaValidationError(
                f"{label} states an unbounded constraint (dom K* is everything), but "
                f"domain_distance(z) = {d:.6g} at z={far!r}"
            )
        return
    n = c.evaluate(a)
    if not (math.isfinite(n) and n > 0):
        return  # a norm lionk cannot evaluate: nothing to compare
    for factor, inside in ((0.5, True), (2.0, False)):
        z = a * (factor * c.scale / n)
        d = float(kappa.domain_distance(z))
        if inside != (d == 0.0):
            where = "inside" if inside else "outside"
            raise KappaValidationError(
                f"{label} states the constraint {c.label} <= {c.scale:g}/λ, but dom K* "
                f"disagrees: z with {c.label} = {factor * c.scale:g} should lie {where} dom K* "
                f"(domain_distance(z) = {d:.6g}) at z={z!r}"
            )


def validate(kappa: Kappa, *, trials: int = 64, seed: int = 0) -> None:
    """The checks of :func:`register`, without registering.

    On seeded random float64 vectors: ∇K odd and monotone, the Fenchel–Young relations, 0-d
    results of ``value``/``conjugate``/``domain_distance``, and the stated facts (``ternary``,
    ``lipschitz``, ``constraint``); then ``grad`` keeps the shape and dtype of 0-d to 3-d
    arrays in float64 and float32. Raises :class:`KappaValidationError` naming the failed
    property and the point; TypeError when ``kappa`` is not a :class:`Kappa`.
    """
    if not isinstance(kappa, Kappa):
        raise TypeError(f"validate: expected a lionk.kappa.Kappa; received {kappa!r}")
    rng = np.random.default_rng(seed)
    label = f"kappa {kappa.name!r}"
    if kappa.tier not in TIERS:
        raise KappaValidationError(
            f"{label}: tier must be one of {TIERS}; received {kappa.tier!r}"
        )
    shape_rng = np.random.default_rng([seed, 1])  # the trials below keep their points
    for shape in _SHAPE_PROBES:
        for dt in _DTYPE_PROBES:
            y = (shape_rng.standard_normal(shape) * 3.0).astype(dt)
            _grad_checked(label, kappa, np.asarray(y, dtype=dt))
    for t in range(trials):
        n = int(rng.integers(1, 9))
        scale = float(10.0 ** rng.uniform(-2, 2))
        a = rng.standard_normal(n) * scale
        b = rng.standard_normal(n) * scale
        ga = _grad_checked(label, kappa, a)
        gb = _grad_checked(label, kappa, b)
        gneg = _grad_checked(label, kappa, -a)
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
        ka = _scalar_checked(label, "value", kappa.value(a), a)
        # grad(y) lies on the boundary of dom K* for a norm κ; rounding may put it an ulp
        # outside, where the strict conjugate is +inf: evaluate K* on the domain within eps.
        d_ga = _scalar_checked(label, "domain_distance", kappa.domain_distance(ga), ga)
        near = d_ga <= 1e-12 * (1.0 + float(np.max(np.abs(ga))))
        kca = _scalar_checked(label, "conjugate", kappa.conjugate_on_domain(ga) if near
                              else kappa.conjugate(ga), ga)
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
            kcz = _scalar_checked(label, "conjugate", kappa.conjugate(z), z)
            lhs = ka + kcz
            rhs = float(np.dot(a, z))
            if not lhs >= rhs - 1e-9 * (1.0 + abs(ka) + abs(rhs)):
                raise KappaValidationError(
                    f"{label} failed the Fenchel-Young inequality: K(y) + K*(z) = {lhs:.6g} < "
                    f"y.z = {rhs:.6g} at y={a!r}, z={z!r}"
                )
        _check_facts(label, kappa, a, b, ga, gb)
        if t == 0:
            d = d_ga
            if not d <= 1e-9 * (1.0 + float(np.max(np.abs(ga)))):
                raise KappaValidationError(
                    f"{label}: domain_distance(grad(y)) must be 0 (grad(y) lies in dom K*); "
                    f"received {d:.6g} at y={a!r}"
                )


# Matrix κ (nuclear / Muon), per-leaf selection, group-l2 and `scaled` register themselves
# (lionk/core/kappa_matrix.py, lionk/core/kappa_group.py, lionk/core/kappa_scaling.py).
from . import kappa_group as _kappa_group  # noqa: E402,F401
from . import kappa_matrix as _kappa_matrix  # noqa: E402,F401
from . import kappa_scaling as _kappa_scaling  # noqa: E402,F401
