r"""κ that train at Lion's settings: the ``scaled`` combinator and :func:`normalized`.

Lion's learning rate means "each element moves by lr per step" because sign(c) has per-element
RMS 1. Other κ have other scales: ``l2``'s y/‖y‖₂ has RMS 1/√n, ``lp``'s about n^{-1/q}, the
polar factor of an A×B matrix 1/√max(A, B); and κ with a length parameter (huber δ, relativistic
δ, deadzone e, and quadratic, whose gradient is c itself) are linear in c below that length, so
with δ = 1 and gradients of order 1e-2 their step is 100× smaller than Lion's. The convention
(docs/kappa.md, "Choosing κ and its hyper-parameters"):

* norm κ are multiplied by the factor that gives ∇K per-element RMS 1 on a flat input
  (``l2``, ``relativistic-l2``: √n; ``lp``: n^{1/q}; ``group-l2``: √(group size);
  ``nuclear``: √max(A, B)); the implied
  radius becomes s/λ, i.e. a per-element RMS bound 1/λ, the scale of Lion's box;
* a length parameter is set relative to the gradients' per-element RMS: δ = e = 0.1·g_rms
  (``huber``, ``relativistic``, ``relativistic-l2``, ``deadzone``), and ``quadratic`` is scaled
  by 1/g_rms;

so that lr and λ stay Lion's. ``normalized(name, grad_rms=...)`` builds these; the unnormalised
forms stay what ``get(name)`` returns.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from . import kappa as _kappa
from .array_api import Array
from .kappa_group import GroupL2
from .kappa_matrix import Nuclear

__all__ = ["Scaled", "normalized", "rms_scale"]

SCALE_RULES = ("rms", "sqrt_size")


def rms_scale(kappa: _kappa.Kappa, shape: Sequence[int]) -> float:
    """The factor s that gives ``kappa``'s gradient per-element RMS 1 on a flat input of
    ``shape`` (1 for elementwise κ)."""
    n = max(1, math.prod(int(d) for d in shape))
    if kappa.name in ("l2", "relativistic-l2"):
        return math.sqrt(n)
    if kappa.name == "lp":
        p = float(kappa.params["p"])
        return float(n ** ((p - 1.0) / p))  # n^{1/q}
    if isinstance(kappa, GroupL2):  # unit ℓ2 norm per group of n_g elements: RMS 1/√n_g
        return math.sqrt(max(1, kappa.group_size(shape)))
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
    """The built-in κ ``name`` normalised to train at Lion's lr and weight decay.

    ``grad_rms``: the per-element RMS of the gradients (e.g. measured on the first batch);
    required for the κ with a length parameter (huber, relativistic, relativistic-l2, deadzone:
    δ or e = 0.1·grad_rms) and for quadratic (scaled by 1/grad_rms). Other ``params`` go to the
    κ (an explicit δ or e overrides the rule). Norm κ are wrapped in ``Scaled(scale="rms")``;
    ``nuclear`` gets ``scale="rms"``; ``sign`` is returned as is.
    """
    base = _kappa._ALIASES.get(name, name)
    needs = base in _LENGTH or base == "quadratic"
    if needs:
        if grad_rms is None:
            raise TypeError(f"normalized: kappa {name!r} has a length scale; pass grad_rms (the "
                            "per-element RMS of the gradients, e.g. of the first batch)")
        g = _kappa._positive("grad_rms", grad_rms, name)
        if base in _LENGTH:
            params.setdefault(_LENGTH[base], 0.1 * g)
    if base == "nuclear":
        params.setdefault("scale", "rms")
        return Nuclear(**params)
    k = _kappa.get(base, **params)
    if base == "quadratic":
        return Scaled(k, 1.0 / g)
    if base in ("l2", "lp", "relativistic-l2", "group-l2"):
        return Scaled(k, "rms")
    return k


def _register() -> None:
    _kappa._BUILTINS["scaled"] = Scaled
    _kappa._REGISTRY["scaled"] = Scaled


_register()
