"""Plots of a :func:`lionk.minimize` run (matplotlib is imported only when a plot is drawn).

``history(result)`` draws, against the iteration k:

1. f(x_k) and the Lyapunov function H_k (:func:`lionk.lyapunov.discrete`), which starts above f
   and meets F at the end (H − F is c·Fenchel–Young gap ≥ 0, c ∝ lr_k);
2. on a log scale, the constraint violation dist(λx_k, dom K*)/λ and the KKT residual
   (zeros are not drawn on a log scale: a feasible run shows no violation curve);
3. ‖x_k‖ in the constraint's norm with the radius as a horizontal line. Both come from the κ's
   facts (:class:`lionk.kappa.Constraint`: the norm's label, and whether there is a ball): the
   line is omitted for a κ without a ball (``quadratic``), and the panel is empty for a user κ
   that states no constraint.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core import kappa as _kappa

__all__ = ["history"]


def _constraint_of(result: Any) -> _kappa.Constraint | None:
    """The κ's constraint: the result's ``constraint`` (what :func:`lionk.minimize` stores; None
    for a κ that states none), else, for a result without that key, the facts of the κ
    registered under the result's ``kappa`` name; None when neither."""
    if "constraint" in result:
        c = result["constraint"]
        return c if isinstance(c, _kappa.Constraint) else None
    name = result.get("kappa")
    if isinstance(name, str) and name in _kappa.available():
        try:
            return _kappa.get(name).constraint
        except (TypeError, ValueError):  # a factory that needs parameters
            return None
    return None


def history(result: Any, ax: Any = None) -> Any:
    """Plot a :func:`lionk.minimize` result's history; returns the matplotlib Figure.

    Args:
        result: the :class:`lionk.OptimizeResult` (it must hold ``history``).
        ax: None (a new figure with three panels, made with ``matplotlib.pyplot``) or a sequence
            of three matplotlib Axes to draw into.
    """
    hist = result.get("history") if isinstance(result, dict) else None
    if not isinstance(hist, dict) or not {"f", "H", "violation", "x_norm"} <= set(hist):
        raise TypeError(
            "result: expected the OptimizeResult of lionk.minimize (a dict with a 'history' "
            f"holding f, H, violation and x_norm); received {type(result).__name__}"
        )
    if ax is None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(3, 1, figsize=(6.4, 7.2), sharex=True)
    else:
        try:
            axes = list(ax)
        except TypeError:
            axes = [ax]
        if len(axes) != 3 or not all(hasattr(a, "plot") for a in axes):
            raise TypeError(
                f"ax: expected None or a sequence of three matplotlib Axes; received {ax!r}"
            )
        fig = axes[0].figure
    k = np.arange(len(hist["f"]))

    a0, a1, a2 = axes
    a0.plot(k, hist["f"], label="f(x_k)")
    h = np.asarray(hist["H"], dtype=float)
    if np.any(np.isfinite(h)):
        a0.plot(k, np.where(np.isfinite(h), h, np.nan), label="H_k (Lyapunov)", linestyle="--")
    a0.set_ylabel("value")
    a0.legend(loc="upper right")
    a0.set_title(f"lionk.minimize, κ = {result.get('kappa', '?')}: {result.get('message', '')}"[:80],
                 fontsize="small")

    for key, label in (("violation", "constraint violation"), ("kkt", "KKT residual")):
        v = np.asarray(hist.get(key, np.full(len(k), np.nan)), dtype=float)
        positive = np.where(np.isfinite(v) & (v > 0), v, np.nan)
        if np.any(np.isfinite(positive)):
            a1.semilogy(k, positive, label=label)
    a1.set_ylabel("log scale")
    if a1.get_legend_handles_labels()[0]:
        a1.legend(loc="upper right")

    constraint = _constraint_of(result)
    xn = np.asarray(hist["x_norm"], dtype=float)
    if np.any(np.isfinite(xn)):
        a2.plot(k, xn, label=constraint.label if constraint is not None else "‖x‖")
    radius = result.get("radius")
    if radius is not None and constraint is not None and constraint.bounded:
        a2.axhline(radius, color="k", linestyle=":", label=f"radius {radius:g}")
    a2.set_xlabel("iteration k")
    a2.set_ylabel("‖x_k‖")
    if a2.get_legend_handles_labels()[0]:
        a2.legend(loc="lower right")
    return fig
