r"""κ that train at Lion's settings: the normalisation convention, the ``scaled`` combinator
and :func:`normalized`.

Lion's learning rate means "each element moves by lr per step" because sign(c) has per-element
RMS 1. The textbook forms of the other κ have other scales: ``l2``'s y/‖y‖₂ has RMS 1/√n,
``lp``'s about n^{-1/q}, the polar factor of an A×B matrix 1/√max(A, B); and κ with a length
(huber δ, relativistic δ, deadzone e, and quadratic, whose gradient is c itself) are linear in
c below that length, so with δ = 1 and gradients of order 1e-2 their step is 100× smaller than
Lion's. The convention every built-in follows *at its defaults* (docs/kappa.md, "Choosing κ and
its hyper-parameters"), so that lr and λ stay Lion's:

* norm κ carry the factor s that gives ∇K per-element RMS 1 on a flat input (``scale="rms"``:
  ``l2``, ``relativistic-l2``: √n; ``lp``: n^{1/q}; ``group-l2``: √(group size); ``nuclear``:
  √max(A, B)). K stays one fixed convex function per shape (the certificate holds) and the
  ball is stated per element: RMS(x) ≤ 1/λ for ``l2``, the scale of Lion's box;
* a length is a fraction of the input's own per-element RMS, re-measured at every step
  (``delta="auto"``, ``e="auto"``: 0.1·RMS(c) per array), and ``quadratic`` divides by RMS(c)
  (``scale="auto"``). The box (or ball) still holds; for the length κ K changes from step to
  step, so the Lyapunov certificate needs a fixed length: ``normalized(name, grad_rms=...)``
  gives it from a measured gradient RMS (δ = e = 0.1·grad_rms, quadratic ``scale=grad_rms``).

The textbook forms are a parameter away: ``scale=1`` (norm κ, quadratic), a number for δ or e.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from . import kappa as _kappa
from .array_api import Array
from .kappa_group import GroupL2
from .kappa_matrix import Nuclear, shape_scale

__all__ = ["Scaled", "normalized", "rms_scale", "textbook", "TEXTBOOK_PARAMS"]

SCALE_RULES = ("rms", "sqrt_size")


def rms_scale(kappa: _kappa.Kappa, shape: Sequence[int]) -> float:
    """The factor s that gives ``kappa``'s gradient per-element RMS 1 on a flat input of
    ``shape``: 1 for an elementwise κ and for a norm κ already at ``scale="rms"`` (every
    built-in's default); for one at a number s₀, the rms factor over s₀."""
    n = max(1, math.prod(int(d) for d in shape))
    if isinstance(kappa, _kappa._NormKappa):
        return kappa.rms_factor(n) / kappa.factor(n)
    if isinstance(kappa, GroupL2):  # unit ℓ2 norm per group of n_g elements: RMS 1/√n_g
        return math.sqrt(max(1, kappa.group_size(shape))) / kappa.factor(shape)
    if isinstance(kappa, Nuclear):
        return shape_scale("rms", shape) / shape_scale(kappa.scale, shape)
    return 1.0


def _scaled_s(inner: _kappa.Kappa, scale: Any, shape: Sequence[int]) -> float:
    if callable(scale):
        return float(scale(tuple(int(d) for d in shape)))
    if scale == "sqrt_size":
        return math.sqrt(max(1, math.prod(int(d) for d in shape)))
    if scale == "rms":
        return rms_scale(inner, shape)
    return float(scale)


class Scaled(_kappa.Kappa):
    """K_s(y) = s·K(y): ∇K_s = s·∇K, K_s*(z) = s·K*(z/s), dom K_s* = s·dom K*.

    For a norm K the implied constraint's radius becomes s/λ. ``scale``: a number > 0,
    ``"rms"`` (the factor of :func:`rms_scale`: per-element RMS of ∇K_s is 1 on a flat input),
    ``"sqrt_size"`` (s = √n for a leaf of n elements), or a callable ``shape -> s``. The domain
    distance is ``s·dist_K(z/s)`` (distances to norm balls are homogeneous). A ``scope="global"``
    κ is not accepted (its norm spans leaves of different sizes).
    """

    def __init__(self, kappa: Any = "l2", scale: Any = "rms") -> None:
        if isinstance(kappa, str):
            inner = _kappa.get(kappa)
        elif isinstance(kappa, _kappa.Kappa):
            inner = kappa
        else:
            raise TypeError(f"kappa 'scaled': kappa must be a kappa name or a Kappa; "
                            f"received {kappa!r}")
        if getattr(inner, "scope", None) == "global":
            raise ValueError("kappa 'scaled': a scope='global' kappa takes one norm over all "
                             "leaves; expected a per-tensor kappa")
        if not callable(scale) and scale not in SCALE_RULES:
            scale = _kappa._positive("scale", scale, "scaled")
        fixed = isinstance(scale, float)
        # the constraint fact: K's ball scaled by s (a number; a rule of the shape gives each
        # leaf its own radius, not one ball: none stated, as for nuclear's shape rules)
        c = inner.constraint
        constraint = None if not fixed or c is None else dataclasses.replace(
            c, scale=c.scale * scale,
            problem=f"{c.problem}, with the radius multiplied by s = {scale:g}" if c.bounded
            else f"{c.problem}, for K multiplied by s = {scale:g}")
        super().__init__("scaled", exact=inner.exact and fixed,
                         separable=inner.separable and fixed,
                         params={"kappa": kappa, "scale": scale}, constraint=constraint)
        self.inner = inner
        self.scale = scale
        self.auto_eager = getattr(inner, "auto_eager", False)

    def _s(self, y: Array) -> float:
        return _scaled_s(self.inner, self.scale, tuple(y.shape))

    def grad(self, y: Array) -> Array:
        s = self._s(y)
        u = self.inner.grad(y)
        return u if s == 1.0 else u * s

    def value(self, y: Array) -> Array:
        return self.inner.value(y) * self._s(y)

    def conjugate(self, z: Array) -> Array:
        s = self._s(z)
        return self.inner.conjugate(z * (1.0 / s)) * s

    def conjugate_on_domain(self, z: Array) -> Array:
        s = self._s(z)
        return self.inner.conjugate_on_domain(z * (1.0 / s)) * s

    def domain_distance(self, z: Array) -> Array:
        s = self._s(z)
        return self.inner.domain_distance(z * (1.0 / s)) * s


_LENGTH = {"huber": "delta", "relativistic": "delta", "relativistic-l2": "delta",
           "deadzone": "e"}


def normalized(name: str, *, grad_rms: float | None = None, **params: Any) -> _kappa.Kappa:
    """The built-in κ ``name`` normalised to train at Lion's lr and weight decay, as a *fixed*
    K (the Lyapunov certificate holds).

    Every built-in's defaults already train at Lion's settings; the length κ (huber,
    relativistic, relativistic-l2, deadzone) and quadratic do it by measuring their input's RMS
    at every step (``delta="auto"``, ``scale="auto"``), which is not one fixed K. Given
    ``grad_rms`` (the per-element RMS of the gradients, e.g. measured on the first batch) this
    returns the fixed form instead: δ or e = 0.1·grad_rms, quadratic with ``scale=grad_rms``.
    The norm κ (l2, lp, relativistic-l2's ball, group-l2, nuclear) are fixed at their default
    ``scale="rms"`` already and are returned as ``get(name, **params)``; ``sign`` as is.
    Other ``params`` go to the κ (an explicit δ, e or scale overrides the rule).
    """
    base = _kappa._ALIASES.get(name, name)
    needs = base in _LENGTH or base == "quadratic"
    if needs:
        if grad_rms is None:
            raise TypeError(f"normalized: kappa {name!r} has a length scale; pass grad_rms (the "
                            "per-element RMS of the gradients, e.g. of the first batch)")
        g = _kappa._positive("grad_rms", grad_rms, name)
        params.setdefault("scale" if base == "quadratic" else _LENGTH[base], (
            g if base == "quadratic" else _kappa.AUTO_LENGTH * g))
    return _kappa.get(base, **params)


#: The parameters of each built-in's textbook form (theory.md §6: K = ‖y‖₂, ½‖y‖², huber with
#: δ = 1, ...), the κ as the mathematics states it rather than normalised for Lion's settings.
TEXTBOOK_PARAMS: dict[str, dict[str, Any]] = {
    "huber": {"delta": 1.0}, "relativistic": {"delta": 1.0}, "deadzone": {"e": 0.1},
    "quadratic": {"scale": 1.0}, "l2": {"scale": 1.0}, "lp": {"scale": 1.0},
    "relativistic-l2": {"delta": 1.0, "scale": 1.0}, "group-l2": {"scale": 1.0},
    "nuclear": {"scale": 1.0},
}


def textbook(name: str, **params: Any) -> _kappa.Kappa:
    """The built-in κ ``name`` in its textbook form: ``l2`` is ‖y‖₂ (ball ‖x‖₂ ≤ 1/λ),
    ``quadratic`` ½‖y‖², ``huber`` and ``relativistic`` δ = 1, ``deadzone`` e = 0.1, the norm κ
    at ``scale=1`` (:data:`TEXTBOOK_PARAMS`); ``params`` override them. A name without a
    textbook form (sign, a user κ) gives ``get(name, **params)``.

    ``lionk.minimize`` reads a κ *name* this way (its ``radius`` states the problem's scale:
    ``kappa="l2", radius=r`` is ‖x‖₂ ≤ r); the optimizers read it normalised (``get(name)``).
    """
    base = _kappa._ALIASES.get(name, name)
    return _kappa.get(base, **{**TEXTBOOK_PARAMS.get(base, {}), **params})


def _register() -> None:
    _kappa._BUILTINS["scaled"] = Scaled
    _kappa._REGISTRY["scaled"] = Scaled


_register()
