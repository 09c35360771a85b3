r"""A diagnostic for runs that cannot move: :class:`StallCheck` and :class:`StallWarning`.

Lion's update has per-element RMS lr (sign(c) has RMS 1). A κ whose ∇K is tiny at the gradients'
scale (``huber`` with a number δ far above the gradients: ∇K(c) = c/δ; ``l2`` at ``scale=1``
over a large tensor: RMS 1/√n; a ``scaled`` κ with a tiny factor; the normalised defaults do
not) gives updates many orders of magnitude below lr, and
the run silently does not train. The front-ends (``lionk.LionK``, ``lionk.torch.LionK``, and
``lionk.optax.stall_monitor`` for ``lion_k``) call :meth:`StallCheck.after_step` once per
applied step. It costs nothing on ordinary steps (a counter); at steps 10, 100, 1000 and then
every 1000 it evaluates, once, ∇K of the momentum m (the point the next c is close to) and

    ratio = RMS(∇K(m)) / RMS(sign(m))        (per κ: the update's RMS in units of lr,
                                              relative to what sign would give on the same m)

and warns — once per optimizer, with the numbers and a fix — when the ratio stayed below
``threshold`` (1e-3) at two consecutive checks. Leaves whose momentum is exactly 0 (no
gradient yet) do not count; a check that fails (a κ error, non-finite values) is skipped: a
diagnostic never breaks a step. ``warnings.filterwarnings("ignore", category=lionk.StallWarning)``
silences it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from ..core import kappa as _kappa
from ..core import kappa_matrix as _kappa_matrix
from ..core.array_api import Array, array_namespace
from ..core.kappa_scaling import _LENGTH
from ..core.step import LionKWarning

__all__ = ["StallWarning", "StallCheck", "due", "measure", "after_step", "STALL_THRESHOLD"]

STALL_THRESHOLD = 1e-3


class StallWarning(LionKWarning):
    """The updates have stayed many orders of magnitude below lr: the run cannot move."""


def due(steps: int) -> bool:
    """Whether the check runs after ``steps`` applied steps: 10, 100, 1000, then every 1000."""
    return steps in (10, 100) or (steps >= 1000 and steps % 1000 == 0)


def _groups(kappa: _kappa.Kappa, ms: Sequence[Array], gs: Sequence[Array] | None,
            ) -> list[tuple[_kappa.Kappa, list[Array], list[Array] | None]]:
    """A per-leaf κ bound to its leaves, split into its κ (each measured and named on its own)."""
    if isinstance(kappa, _kappa_matrix._Assigned):
        return [(k, [ms[i] for i in idx], None if gs is None else [gs[i] for i in idx])
                for k, idx in kappa.groups]
    return [(kappa, list(ms), None if gs is None else list(gs))]


def measure(kappa: _kappa.Kappa, ms: Sequence[Array], gs: Sequence[Array] | None = None,
            ) -> tuple[float, float] | None:
    """``(ratio, scale)`` for the momenta ``ms`` under ``kappa``: ratio = RMS(∇K(m)) over the
    entries where m ≠ 0 (= RMS(∇K(m)) / RMS(sign(m))); scale = the RMS of the gradients ``gs``
    when given, else of the momentum's non-zero entries (smaller than the gradients' when they
    are noisy). None when every entry of m is 0 or a value is not finite."""
    keep = [i for i, m in enumerate(ms) if math.prod(m.shape) > 0]
    ms = [ms[i] for i in keep]
    if not ms:
        return None
    us = kappa.tree_grad(list(ms))
    u2 = m2 = nnz = 0.0
    for m, u in zip(ms, us):
        xp = array_namespace(m)
        u2 += float(xp.sum(u * u))
        m2 += float(xp.sum(m * m))
        nnz += float(xp.sum(xp.astype(m != 0, xp.float32)))  # exact to 2^24 per leaf
    if nnz == 0 or not (math.isfinite(u2) and math.isfinite(m2)):
        return None
    if gs is None:
        return math.sqrt(u2 / nnz), math.sqrt(m2 / nnz)
    g2 = n = 0.0
    for i in keep:
        xp = array_namespace(gs[i])
        g2 += float(xp.sum(gs[i] * gs[i]))
        n += math.prod(gs[i].shape)
    return math.sqrt(u2 / nnz), math.sqrt(g2 / n) if math.isfinite(g2) else math.nan


def _fix(kappa: _kappa.Kappa, ratio: float, g: float) -> str:
    name = kappa.name
    if name in _LENGTH:
        p = _LENGTH[name]
        return (f"use the default ({p}='auto': 0.1·RMS of ∇K's input, every step), or, for one "
                f"fixed K, lionk.kappa.normalized({name!r}, grad_rms={g:.1e}) "
                f"({p} = 0.1·grad_rms ≈ {0.1 * g:.1e})")
    if name == "quadratic":
        return (f"use the default (scale='auto': ∇K = c/RMS(c)), or lionk.kappa.normalized("
                f"'quadratic', grad_rms={g:.1e}) (∇K scaled by 1/grad_rms)")
    if name in ("l2", "lp", "relativistic-l2", "group-l2", "nuclear") and kappa.params.get(
            "scope") != "global":
        return ("use the default scale='rms' (∇K of per-element RMS 1: Lion's lr carries "
                "over)")
    return (f"rescale the kappa (lionk.kappa.Scaled(kappa, {1.0 / ratio:.0e})) or raise lr by "
            f"about {1.0 / ratio:.0e}")


class StallCheck:
    """Counts applied steps; at :func:`due` steps measures each κ's update scale and warns once
    (:class:`StallWarning`) when it stayed below ``threshold``·lr at two consecutive checks."""

    def __init__(self, threshold: float = STALL_THRESHOLD) -> None:
        self.threshold = float(threshold)
        self.steps = 0
        self.fired = False
        self._low: dict[tuple[int, int], float] = {}  # (group, κ within it) -> ratio at last check

    def after_step(
        self,
        groups: Callable[[], Sequence[tuple[Any, ...]]],
        *,
        stacklevel: int = 2,
    ) -> None:
        """One applied step. ``groups`` (called only when a check is due): the optimizer's
        ``(κ, momenta)`` or ``(κ, momenta, gradients)`` after the step, one per κ group."""
        self.steps += 1
        if self.fired or not due(self.steps):
            return
        try:
            found = []
            for gi, (kappa, ms, *gs) in enumerate(groups()):
                for ki, (k, leaves, grads) in enumerate(_groups(kappa, ms, gs[0] if gs else None)):
                    r = measure(k, leaves, grads)
                    if r is not None:
                        found.append(((gi, ki), k, r, grads is not None))
        except Exception:  # a diagnostic never breaks a step
            return
        low = {key: r[0] for key, _, r, _ in found if r[0] < self.threshold}
        stalled = [f for f in found if f[0] in low and f[0] in self._low]
        if stalled:
            self.fired = True
            msg = "; ".join(
                f"kappa {k!r}: the update's RMS has been {r[0]:.1e}·lr (previous check "
                f"{self._low[key]:.1e}·lr; sign would give ≈ 1·lr); "
                + (f"the gradients' RMS is ~{r[1]:.1e}" if has_g else
                   f"the momentum's RMS is ~{r[1]:.1e} (the gradients' RMS is at least that)")
                + f"; {_fix(k, r[0], r[1])}"
                for key, k, r, has_g in stalled)
            warnings.warn(
                f"lionk: the run cannot move after {self.steps} steps: {msg}. (Silence with "
                "warnings.filterwarnings('ignore', category=lionk.StallWarning).)",
                StallWarning, stacklevel=stacklevel + 1)
        self._low = low


def after_step(owner: Any, groups: Callable[[], Sequence[tuple[Any, ...]]], *,
               stacklevel: int = 2) -> None:
    """The front-ends' one call per applied step: ``owner``'s :class:`StallCheck` (created on
    first use, kept as ``owner._lionk_stall``; a copy or unpickled optimizer starts afresh)."""
    check = owner.__dict__.get("_lionk_stall")
    if check is None:
        check = owner.__dict__["_lionk_stall"] = StallCheck()
    check.after_step(groups, stacklevel=stacklevel + 1)
