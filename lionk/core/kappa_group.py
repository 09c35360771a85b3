r"""The group-ℓ2 κ: a sum of ℓ2 norms over groups of each array (rows, columns, fibres).

``group-l2``: K(Y) = Σ_g ‖Y_g‖₂ (the ℓ2,1 mixed norm), ∇K(Y)_g = Y_g/‖Y_g‖₂ (0 for a zero
group), K*(Z) = 0 if every group has ‖Z_g‖₂ ≤ 1, else +∞ (the dual norm is the largest group
norm, ℓ2,∞), and the distance to dom K* is ``(max_g ‖Z_g‖₂ − 1)_+``. With weight decay λ
Lion-κ solves ``min f(x) s.t. ‖x_g‖₂ ≤ 1/λ for every group g`` (theory.md §6).

The groups (``axis``): ``axis`` names the axis, or a tuple of axes, that each group spans: the
ℓ2 norm is taken over those axes (``sum(y*y, axis=axis, keepdims=True)``) and every choice of the
remaining indices is one group.

* ``axis=-1`` (default): each row along the last axis is a group: the rows of a matrix
  (a ``Linear`` weight of shape (out, in): one group per output unit), the length-c fibres of an
  (a, b, c) array.
* ``axis=0``: the columns of a matrix (one group per input feature of an (out, in) weight).
* ``axis=(1, 2, 3)``: the filters of a convolution weight (out, in, kh, kw), one per output
  channel.
* A 1-D leaf with ``axis=0`` or ``-1`` is one group: ∇K = y/‖y‖₂ (the ``l2`` κ of that leaf).
* A 0-d leaf is one group of one element, whatever ``axis``: K = |y|, ∇K = sign(y) (0 at 0,
  NaN kept).
* An axis outside ``[-ndim, ndim)`` of a leaf with ndim ≥ 1 (e.g. ``axis=1`` on a bias) is a
  ValueError naming the axis and the shape; choose κ per leaf
  (``kappa={"matrices": lionk.kappa.get("group-l2", axis=1), "other": "l2"}``) for mixed trees.

Every operation is an array-API reduction, ``sqrt``, division or ``where`` (ulp tier, like
``l2``); ∇K follows ``l2``'s order: ``norm = sqrt(sum(y*y))``, ``where(norm == 0, 0, y/safe)``
with ``safe = where(norm == 0, 1, norm)``, so a NaN in a group makes that group's direction NaN
(``nan_policy="propagate"``) and leaves the other groups alone.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import kappa as _kappa
from .array_api import Array, array_namespace, float64_or_widest, scalar_device

__all__ = ["GroupL2", "MaxGroupNorm", "group_axes"]

NAME = "group-l2"


def _normalize_axis(axis: Any) -> int | tuple[int, ...]:
    """``axis`` as an int or a non-empty tuple of distinct ints (a list becomes a tuple, so a
    spec read back from JSON rebuilds the same κ)."""
    def one(a: Any) -> int:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral):
            raise TypeError(f"kappa {NAME!r}: axis must be an int or a tuple of ints; "
                            f"received axis={axis!r}")
        return int(a)

    if isinstance(axis, (list, tuple)):
        axes = tuple(one(a) for a in axis)
        if not axes:
            raise ValueError(f"kappa {NAME!r}: axis must name at least one axis; "
                             f"received axis={axis!r}")
        if len(set(axes)) != len(axes):
            raise ValueError(f"kappa {NAME!r}: axis must not repeat an axis; "
                             f"received axis={axis!r}")
        return axes
    return one(axis)


def group_axes(axis: int | tuple[int, ...], shape: Sequence[int]) -> tuple[int, ...]:
    """The non-negative axes a group of a leaf of ``shape`` spans (``()`` for a 0-d leaf).

    Raises ValueError for an axis outside ``[-ndim, ndim)`` or two names of one axis."""
    ndim = len(tuple(shape))
    if ndim == 0:
        return ()
    given = axis if isinstance(axis, tuple) else (axis,)
    out = []
    for a in given:
        if not -ndim <= a < ndim:
            raise ValueError(
                f"kappa {NAME!r}: axis={axis!r} is out of range for a leaf of shape "
                f"{tuple(int(s) for s in shape)} (ndim {ndim}); expected axes in "
                f"[{-ndim}, {ndim}) (choose the kappa per leaf for leaves of other ndim)"
            )
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"kappa {NAME!r}: axis={axis!r} names one axis twice for a leaf of "
                         f"shape {tuple(int(s) for s in shape)}")
    return tuple(sorted(out))


def _group_norms(axis: int | tuple[int, ...], y: Array) -> Array:
    xp = array_namespace(y)
    axes = group_axes(axis, tuple(y.shape))
    if not axes:
        return xp.abs(y)
    return xp.sqrt(xp.sum(y * y, axis=axes, keepdims=True))


@dataclass(frozen=True)
class MaxGroupNorm:
    """The constraint's norm, max_g ‖x_g‖₂ (``per_element``: max_g ‖x_g‖₂/√n_g, the largest
    group RMS), as a Python float (in float64 where the library has it; 0 for an empty array).
    A value (compares by its fields), so equal κ state equal constraints."""

    axis: int | tuple[int, ...]
    per_element: bool = False

    def __call__(self, x: Array) -> float:
        if _kappa._size(x) == 0:
            return 0.0
        xp = array_namespace(x)
        top = float(xp.max(_group_norms(self.axis, float64_or_widest(xp, x))))
        if not self.per_element:
            return top
        axes = group_axes(self.axis, tuple(x.shape))
        return top / math.sqrt(max(1, math.prod(int(x.shape[a]) for a in axes)))


class GroupL2(_kappa.Kappa):
    """K = s·Σ_g ‖y_g‖₂, ∇K = s·y_g/‖y_g‖₂ (0 for a zero group), K* = indicator of
    max_g ‖z_g‖₂ ≤ s.

    Groups: see the module docstring (``axis``, default -1: the rows along the last axis).
    ``scale="rms"`` (default): s = √n_g (n_g the elements of one group), so ∇K has per-element
    RMS 1 and Lion's lr carries over; the constraint is then stated per element,
    ``max_g ‖x_g‖₂/√n_g ≤ 1/λ`` (every group's RMS). ``scale=1``: ``max_g ‖x_g‖₂ ≤ 1/λ``; a
    number s: radius s/λ. Not elementwise (``separable=False``), ulp tier.
    """

    params_complete = True  # params hold everything that changes the output (κ identity)
    # lionk.execution.paths "auto": run eagerly, never torch.compile'd. torch 2.13's inductor
    # fails to compile the in-place step with a partial (per-row) reduction of a 2-D leaf
    # (InductorError KeyError 'bufN' in the cpp outer-loop fusion, when the reduced buffer is
    # also written by the step's copy_); the same step without the in-place writes compiles.
    auto_eager = True
    #: Why ``execution="compiled"`` cannot run this κ on torch (read by the conformance suite,
    #: which runs its torch-cpu-compiled row eagerly for it and says so in the report).
    torch_compile_fails = ("torch.compile (inductor, torch 2.13) raises KeyError in the cpp "
                           "outer-loop fusion for a per-row reduction whose input the in-place "
                           "step overwrites")

    def __init__(self, axis: Any = -1, scale: Any = "rms") -> None:
        axis = _normalize_axis(axis)
        scale = _kappa._number_or_rule(NAME, "scale", scale, "rms", "√ of the group size")
        rms = scale == "rms"
        constraint = _kappa.Constraint(
            NAME, scale=1.0 if rms else scale, measure=MaxGroupNorm(axis, per_element=rms),
            label="max_g ‖x_g‖₂/√n_g" if rms else "max_g ‖x_g‖₂",
            problem=(f"‖x_g‖₂/√n_g ≤ 1/λ (every group's RMS) for every group g (axis={axis!r}) "
                     "of every array x_j" if rms else
                     f"‖x_g‖₂ ≤ {'' if scale == 1.0 else 's·'}1/λ for every group g "
                     f"(axis={axis!r}) of every array x_j"))
        super().__init__(NAME, separable=False, tier="ulp", params={"axis": axis, "scale": scale},
                         constraint=constraint)
        self.axis = axis
        self.scale = scale

    def factor(self, shape: Sequence[int]) -> float:
        """s for a leaf of ``shape``."""
        if self.scale == "rms":
            return math.sqrt(max(1, self.group_size(shape)))
        return float(self.scale)

    # --- the one reduction: ‖y_g‖₂ per group, broadcastable against y ------------------------
    def group_norms(self, y: Array) -> Array:
        """‖y_g‖₂ for every group, in y's dtype, shaped to broadcast against ``y`` (the reduced
        axes kept with length 1); ``|y|`` for a 0-d ``y``."""
        return _group_norms(self.axis, y)

    def group_size(self, shape: Sequence[int]) -> int:
        """The number of elements in one group of a leaf of ``shape``."""
        shape = tuple(int(s) for s in shape)
        return math.prod(shape[a] for a in group_axes(self.axis, shape))

    def max_group_norm(self, x: Array) -> float:
        """max_g ‖x_g‖₂ as a Python float, in float64 where the library has it (0 for an
        empty array): the constraint's norm."""
        return MaxGroupNorm(self.axis)(x)

    # --- the κ ---------------------------------------------------------------------------------
    def grad(self, y: Array) -> Array:
        xp = array_namespace(y)
        norm = self.group_norms(y)
        # ``norm == 0`` (not ``norm > 0``): a NaN norm (a NaN in the group) gives y / NaN = NaN,
        # so nan_policy="propagate" carries the NaN into x, as for the l2 κ
        safe = xp.where(norm == 0, _kappa._const(xp, 1.0, norm), norm)
        u = xp.where(norm == 0, _kappa._const(xp, 0.0, y), y / safe)
        s = self.factor(tuple(y.shape))
        return u if s == 1.0 else u * s

    def value(self, y: Array) -> Array:
        xp = array_namespace(y)
        return xp.sum(self.group_norms(y)) * self.factor(tuple(y.shape))

    def domain_distance(self, z: Array) -> Array:
        xp = array_namespace(z)
        dual = _kappa._max0(xp, self.group_norms(z))  # ℓ2,∞: the largest group norm
        return xp.maximum(dual - self.factor(tuple(z.shape)), _kappa._const(xp, 0.0, dual))

    def conjugate_on_domain(self, z: Array) -> Array:
        xp = array_namespace(z)
        return xp.asarray(0.0, dtype=z.dtype, device=scalar_device(z))

    def conjugate(self, z: Array) -> Array:
        return _kappa._where_in_domain(self.domain_distance(z), self.conjugate_on_domain(z))


def _register() -> None:
    _kappa._BUILTINS[NAME] = GroupL2
    _kappa._REGISTRY[NAME] = GroupL2


_register()
