r"""``lionk.minimize``: a scipy-style driver that solves a constrained problem with Lion-κ.

With λ > 0, Lion-κ converges to the stationary points of (docs/theory.md §3)

    F(x) = f(x) + (1/λ)·K*(λx)

which, for a norm κ, is ``min f(x) subject to ‖x‖_dual ≤ 1/λ``. :func:`minimize` states the
problem by its radius (``radius=r`` sets λ = 1/r), iterates :func:`lionk.step` with a decaying
learning rate, records the Lyapunov function H of every iterate (:func:`lionk.lyapunov.discrete`)
and stops on a KKT certificate. It never re-writes the update: every iterate comes from
``core.step.update_leaves`` with the coefficients of ``core.step.coefficients``, the two calls
:func:`lionk.step` makes, validated once per run instead of at every step (:class:`_Stepper`);
with JAX autodiff, chunks of iterations run as one jitted function (:func:`_jax_chunk`).

``import lionk`` does not import this module's optional dependencies: torch and JAX are
imported only for autodiff of a torch / JAX ``x0``, tqdm only for ``progress=True``.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import time
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from ..core import kappa as _kappa
from ..core import kappa_matrix as _kappa_matrix
from ..core import kappa_scaling as _kappa_scaling
from ..core import validation as _check
from ..core.array_api import (
    array_namespace,
    device,
    dtype_name,
    finfo_eps,
    is_array,
    is_floating,
    is_jax_array,
    same_placement,
    to_float,
)
from ..core.step import Hyper as _Hyper
from ..core.step import LionKWarning
from ..core.step import check_trees as _check_trees
from ..core.step import coefficients as _coefficients
from ..core.step import init as _init
from ..core.step import make_hyper as _make_hyper
from ..core.step import update_leaves as _update_leaves
from ..core.trees import flatten as _flatten
from . import lyapunov as _lyapunov

__all__ = ["minimize", "OptimizeResult", "default_lr", "SCHEDULES"]

SCHEDULES = ("cosine", "linear", "constant")

#: lr·λ of the default learning rate is ``min(_MAX_FRACTION, _TRAVEL / maxiter)·D/r``.
_MAX_FRACTION = 0.1
_TRAVEL = 50.0
#: The default number of steps.
DEFAULT_MAXITER = 5000
#: The fraction of the run over which the settling rule (status 0 without a certificate) looks.
_TAIL = 0.02
#: The settling rule needs a decayed schedule: lr at the window's start <= _DECAYED·lr_0.
_DECAYED = 0.05
#: The scale of the stopping rules is max(|F|, _DECREASE_FLOOR·|f(x0) − F|).
_DECREASE_FLOOR = 1e-3
#: The κ whose default lr is measured against min(radius, 4·D): the norm κ, whose K* is the
#: indicator of the ball. For the others (deadzone, huber, relativistic, a user κ) the decay
#: λ·lr also drives the penalty (e.g. the deadzone's zeros), so lr stays proportional to r.
_SCALED_KAPPAS = frozenset({"sign", "l2", "lp"})
#: lr_0 is measured against min(radius, _SCALE_FACTOR·D) (D: see default_lr).
_SCALE_FACTOR = 4.0


class OptimizeResult(dict):
    """The result of :func:`minimize`: a ``dict`` whose keys are also attributes (as SciPy's).

    Keys: ``x``, ``fun``, ``F``, ``success``, ``certified``, ``status``, ``message``, ``nit``,
    ``nfev``, ``njev``, ``kkt_residual``, ``gap``, ``H``, ``constraint_violation``, ``radius``,
    ``weight_decay``, ``lr``, ``kappa``, ``constraint``, ``history`` (see :func:`minimize`).
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    __setattr__ = dict.__setitem__  # type: ignore[assignment]
    __delattr__ = dict.__delitem__  # type: ignore[assignment]

    def __dir__(self) -> list[str]:
        return list(self.keys())

    def __repr__(self) -> str:
        if not self:
            return f"{type(self).__name__}()"
        width = max(len(k) for k in self) + 1
        lines = []
        for k, v in self.items():
            if k == "history" and isinstance(v, dict):
                shown = "{" + ", ".join(f"{h!r}: array({len(a)})" for h, a in v.items()) + "}"
            else:
                shown = repr(v).replace("\n", "\n" + " " * (width + 2))
            lines.append(f"{k.rjust(width)}: {shown}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Argument checks.


def _real(name: str, value: Any) -> float:
    v = _check.real(name, value)
    if not isinstance(v, float):
        raise TypeError(f"{name}: expected a real number; received the traced value {value!r}")
    return v


def _resolve_lambda(radius: Any, weight_decay: Any, kap: _kappa.Kappa) -> float:
    if radius is not None and weight_decay is not None:
        raise ValueError(
            "radius, weight_decay: give one of them (radius = 1/weight_decay), not both; "
            f"received radius={radius!r} and weight_decay={weight_decay!r}"
        )
    if radius is None and weight_decay is None:
        raise ValueError(
            f"radius: Lion-κ with kappa={kap.name!r} solves min f(x) + (1/λ)K*(λx), a problem "
            "defined by λ > 0; pass radius=r (λ = 1/r; for a norm κ the constraint "
            "‖x‖_dual ≤ r) or weight_decay=λ; received neither"
        )
    if radius is not None:
        r = _check.weight_decay(_real("radius", radius), name="radius", positive=True)
        # the κ's radius rule (radius = scale/λ; scale 1 for every built-in), 1/r when unstated
        return kap.constraint.weight_decay_for(r) if kap.constraint is not None else 1.0 / r
    try:
        return float(_check.weight_decay(_real("weight_decay", weight_decay), positive=True))
    except ValueError as exc:
        raise ValueError(
            f"{exc} (λ = 0 defines no problem that lionk.minimize can certify; use a large "
            "radius instead)"
        ) from None


def default_lr(radius: float, maxiter: int, scale: float | None = None) -> float:
    """The default initial learning rate: ``min(radius, 4·scale) · min(0.1, 50 / maxiter)``.

    A Lion-κ step is ``x' = (1 − lr·λ)·x + lr·λ·(−∇K(c)/λ)``: each coordinate moves by about lr
    per step (for the box κ), and a coordinate that ends on the boundary approaches it like
    ``exp(−λ·Σ_k lr_k)``. With ``lr_0 = r·s``, ``s = 50/maxiter``, the cosine schedule has
    ``λ·Σ lr_k = 25`` (e^−25 ≈ 1e-11) and travels about 25 radii in all; ``s`` is capped at 0.1
    for short runs.

    ``scale`` is the distance D to the minimum of f along the first Lion-κ direction
    (:func:`minimize` finds it by halving from the radius, a few evaluations of f; not when x0
    is outside the feasible set, where phase 1 needs the radius rule). With a loose
    radius (4·D < r) the learning rate is measured against 4·D instead of r: the iterates then
    travel about 100·D and settle to the accuracy a box of radius 4·D would give, whatever the
    radius (a lr proportional to a large radius leaves an O(lr) band the cosine tail cannot
    remove). The factor 4 covers that D is found to a factor 2 and that the minimum along one
    direction underestimates the distance to the optimum of an ill-conditioned f, while keeping
    ``λ·Σ lr_k`` large for the coordinates that end on the boundary (measured in
    tests/test_minimize_defaults.py).
    """
    d = float(radius) if scale is None else min(float(radius), _SCALE_FACTOR * float(scale))
    return d * min(_MAX_FRACTION, _TRAVEL / int(maxiter))


def _travel_scale(value_at: Callable[[float], float], radius: float) -> float:
    """D: the step t ∈ {r, r/2, r/4, …} along the first Lion-κ direction where f stops
    decreasing when t is halved (f non-finite at t counts as too far); at most 60 halvings."""
    t = float(radius)
    ft = value_at(t)
    for _ in range(60):
        fh = value_at(0.5 * t)
        if math.isfinite(ft) and not fh < ft:
            break
        t, ft = 0.5 * t, fh
    return t


def _schedule_table(schedule: Any, lr: Any, lam: float, maxiter: int,
                    kap: _kappa.Kappa, scale: Callable[[], float] | None = None) -> list[float]:
    """Learning rates lr_0 … lr_maxiter (the last one only weighs H of the final iterate)."""
    if callable(schedule):
        if lr is not None:
            raise ValueError(
                "lr: a callable schedule returns the learning rate itself (schedule(k) -> lr_k); "
                f"pass lr=None; received lr={lr!r}"
            )
        table = []
        for k in range(maxiter + 1):
            value = schedule(k)
            try:
                v = _real(f"schedule({k})", value)
            except TypeError:
                raise TypeError(
                    f"schedule: expected schedule(k) to return a real number; schedule({k}) "
                    f"returned {value!r}"
                ) from None
            table.append(v)
    else:
        if not isinstance(schedule, str) or schedule not in SCHEDULES:
            raise ValueError(
                f"schedule: expected one of {SCHEDULES} or a callable schedule(k) -> lr_k; "
                f"received {schedule!r}"
            )
        if lr is None:
            if kap.constraint is not None and not kap.constraint.bounded:  # e.g. quadratic
                raise ValueError(
                    "lr: kappa='quadratic' moves x by lr times the momentum of ∇f, so a stable lr "
                    "depends on the smoothness L of f (lr < 1/L); pass lr; received None"
                )
            lr0 = default_lr(1.0 / lam, maxiter, None if scale is None else scale())
        else:
            lr0 = _check.learning_rate(_real("lr", lr))
        if schedule == "cosine":
            table = [lr0 * 0.5 * (1.0 + math.cos(math.pi * k / maxiter)) for k in range(maxiter + 1)]
        elif schedule == "linear":
            table = [lr0 * (1.0 - k / maxiter) for k in range(maxiter + 1)]
        else:
            table = [lr0] * (maxiter + 1)
    for k, v in enumerate(table):
        last = k == maxiter
        if not (math.isfinite(v) and (v > 0 or (last and v == 0))):
            bound = ">= 0" if last else "> 0"
            raise ValueError(
                f"schedule: expected lr_{k} = schedule({k}) finite and {bound}; received {v!r}"
            )
        try:
            _check.decay_product(v, lam)
        except ValueError:
            raise ValueError(
                f"lr: expected lr·weight_decay < 1, i.e. lr < radius = {1.0 / lam!r}; "
                f"received lr_{k} = {v!r} (lr·weight_decay = {v * lam!r})"
            ) from None
    return table


def _as_x0(x0: Any) -> Any:
    if is_array(x0):
        xp = array_namespace(x0)
        if not is_floating(xp, x0):
            raise TypeError(
                "x0: expected a real floating dtype (float16, bfloat16, float32, float64); "
                f"received {dtype_name(x0.dtype)} (convert it, e.g. x0.astype(float))"
            )
        detach = getattr(x0, "detach", None)  # torch: the result is not part of a graph
        return detach() if callable(detach) else x0
    if isinstance(x0, bool) or not isinstance(x0, (int, float, list, tuple)):
        raise TypeError(
            "x0: expected an array (NumPy, PyTorch, JAX, CuPy, ...) or a Python number / list "
            f"of numbers; received {type(x0).__name__}"
        )
    try:
        a = np.asarray(x0, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"x0: expected a Python number or a (nested) list of numbers; received {x0!r} ({exc})"
        ) from None
    return a


# ---------------------------------------------------------------------------------------------
# The objective and its gradient.


#: ``jax.jit(jax.value_and_grad(fun))`` per fun, alive as long as fun is.
_JAX_JITTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _make_evaluator(fun: Callable, jac: Any, x: Any, counts: dict) -> Callable[[Any], tuple[Any, Any]]:
    """``evaluate(x) -> (f, g)`` with f as returned by fun (not yet checked) and g raw."""
    if jac is True:
        def both(x: Any) -> tuple[Any, Any]:
            out = fun(x)
            counts["nfev"] += 1
            counts["njev"] += 1
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError(
                    "fun: with jac=True, expected fun(x) to return a pair (f, g); received "
                    f"{type(out).__name__}"
                )
            return out
        return both
    if callable(jac):
        def separate(x: Any) -> tuple[Any, Any]:
            f = fun(x)
            counts["nfev"] += 1
            g = jac(x)
            counts["njev"] += 1
            return f, g
        return separate
    if jac is not None and jac is not False:
        raise TypeError(
            "jac: expected a callable jac(x) -> ∇f(x), True (fun returns (f, g)) or None "
            f"(autodiff for torch / JAX arrays); received {jac!r}"
        )
    mod = type(x).__module__.split(".")[0]
    if mod == "torch":
        import torch

        def torch_auto(x: Any) -> tuple[Any, Any]:
            xg = x.detach().requires_grad_(True)
            with torch.enable_grad():
                f = fun(xg)
            counts["nfev"] += 1
            counts["njev"] += 1
            if not (isinstance(f, torch.Tensor) and f.requires_grad):
                raise TypeError(
                    "fun: with a torch x0 and jac=None, expected fun(x) to return a 0-d tensor "
                    "computed from x with torch operations (autodiff by torch.autograd); "
                    f"received {type(f).__name__}"
                    + ("" if not isinstance(f, torch.Tensor) else " that does not depend on x")
                    + "; pass jac= otherwise"
                )
            (g,) = torch.autograd.grad(f, xg)
            return f.detach(), g
        return torch_auto
    if mod in ("jax", "jaxlib"):
        import jax

        eager = jax.value_and_grad(fun)
        try:  # compiled once per fun: a second minimize of the same fun reuses the executable
            jitted = _JAX_JITTED[fun]
        except (KeyError, TypeError):
            jitted = jax.jit(eager)
            try:
                _JAX_JITTED[fun] = jitted
            except TypeError:  # fun cannot be weakly referenced
                pass
        chosen: list[Callable] = []

        def jax_auto(x: Any) -> tuple[Any, Any]:
            if not chosen:  # jit when fun can be traced, else the eager value_and_grad
                try:
                    out = jitted(x)
                    chosen.append(jitted)
                except Exception:
                    out = eager(x)
                    chosen.append(eager)
            else:
                out = chosen[0](x)
            counts["nfev"] += 1
            counts["njev"] += 1
            return out
        jax_auto.jitted = jitted  # type: ignore[attr-defined]  # for the chunked loop
        jax_auto.chosen = chosen  # type: ignore[attr-defined]
        return jax_auto
    raise TypeError(
        f"jac: {type(x).__module__}.{type(x).__name__} arrays have no autodiff; pass "
        "jac=callable returning ∇f(x) (an array of x0's shape), or jac=True when fun returns "
        "(f, ∇f(x)), or give x0 as a torch tensor or a JAX array to differentiate fun "
        "automatically"
    )


def _check_f(value: Any, k: int) -> float:
    where = "f(x0)" if k == 0 else f"f(x_{k})"
    if is_array(value):
        if tuple(value.shape) != ():
            raise ValueError(
                f"fun: expected a scalar (a Python number or a 0-d array); {where} has shape "
                f"{tuple(value.shape)}"
            )
        return to_float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise TypeError(
        f"fun: expected a scalar (a Python number or a 0-d array); {where} is "
        f"{type(value).__name__}"
    )


def _check_g(g: Any, x: Any, xp: Any, name: str) -> Any:
    """∇f as an array of x's library, dtype, shape and device (converted when it can be).

    Called after every evaluation: the step that follows (``update_leaves``) does not check
    its inputs again (see :class:`_Stepper`)."""
    if type(g) is type(x) and g.dtype == x.dtype and g.shape == x.shape:
        # the common case: an array of x's own type, dtype and shape
        if type(x) is np.ndarray or same_placement(g, x):
            return g
        raise ValueError(
            f"{name}: expected the gradient on x0's device {device(x)}; received {device(g)}"
        )
    shape = tuple(x.shape)
    if not is_array(g) or array_namespace(g) is not xp or g.dtype != x.dtype:
        try:
            g = xp.asarray(g, dtype=x.dtype, device=device(x))
        except Exception as exc:
            raise TypeError(
                f"{name}: expected an array of shape {shape} convertible to x0's library "
                f"({xp.__name__}, dtype {dtype_name(x.dtype)}); received "
                f"{type(g).__module__}.{type(g).__name__} ({exc})"
            ) from None
    if tuple(g.shape) != shape:
        raise ValueError(
            f"{name}: expected the gradient to have shape {shape} (the shape of x0); "
            f"received {tuple(g.shape)}"
        )
    if not same_placement(g, x):
        raise ValueError(
            f"{name}: expected the gradient on x0's device {device(x)}; received {device(g)}"
        )
    return g


# ---------------------------------------------------------------------------------------------
# Diagnostics of one iterate (Python floats, computed in float64 where available).


_wide = _lyapunov.wide  # float64 where available; no warning on JAX without x64


def _constraint_norm(kap: _kappa.Kappa, xw: Any) -> float:
    """‖x‖ in the norm whose ball of radius 1/λ is the feasible set (nan when unknown)."""
    return math.nan if kap.constraint is None else kap.constraint.evaluate(xw)


class _Diagnostics:
    """f, F, H, the duality gap, the violation and ‖x‖ of one iterate."""

    def __init__(self, kap: _kappa.Kappa, lam: float, betas: tuple[float, float], dom_tol: float):
        self.kap = kap
        self.lam = lam
        self.betas = betas
        self.dom_tol = dom_tol
        self.available = True  # False for a user κ without value / conjugate
        # A built-in κ evaluates the diagnostics on float64 NumPy copies: a handful of host
        # operations per iteration instead of dozens of dispatched ones on the user's library
        # (JAX eager, torch), and float64 even where the library has none. A user κ may be
        # written for its library only, so it is evaluated there.
        self.host = type(kap) is not _kappa.Kappa and type(kap).__module__ == _kappa.__name__
        self.x_host: np.ndarray | None = None  # the host copies of the last two iterates
        self.x_prev: np.ndarray | None = None

    def step_norm(self, x_before: Any, x_after: Any) -> float:
        """‖x_after − x_before‖₂, from the host copies when the last two calls made them."""
        if self.host and self.x_prev is not None and self.x_host is not None:
            return float(np.linalg.norm((self.x_host - self.x_prev).ravel()))
        return math.sqrt(_lyapunov.bound(x_before, x_after, 2.0))

    def __call__(self, f: float, x: Any, g: Any, m: Any, lr: float) -> dict[str, float]:
        kap, lam = self.kap, self.lam
        out = {"f": f, "F": math.nan, "H": math.nan, "gap": math.nan, "violation": math.nan,
               "x_norm": math.nan}
        if self.host:  # one float64 host copy of x, g and m: the diagnostics in NumPy
            try:
                xh, gh, mh = _to_numpy64(x), _to_numpy64(g), _to_numpy64(m)
            except Exception:  # a library NumPy cannot read (e.g. array-api-strict)
                self.host = False
            else:
                return self.host_row(f, xh, gh, mh, lr, out)
        xw, gw = _wide(x), _wide(g)
        out["x_norm"] = _constraint_norm(kap, xw)
        if not self.available:
            return out
        try:
            out["violation"] = _lyapunov.constraint_violation(x, weight_decay=lam, kappa=kap)
            out["H"] = _lyapunov.discrete(f, x, m, lr=lr, betas=self.betas, weight_decay=lam,
                                          kappa=kap, domain_tol=self.dom_tol)
            z = xw * lam
            if out["violation"] * lam <= self.dom_tol:  # dist(λx, dom K*) = violation·λ
                kstar = kap.tree_conjugate([z], on_domain=True)
                k_neg_g = kap.tree_value([-gw])
                gx = float(array_namespace(xw).sum(gw * xw))
                out["F"] = f + kstar / lam
                out["gap"] = (kstar + k_neg_g + lam * gx) / lam
            else:
                out["F"] = out["gap"] = math.inf
        except NotImplementedError:
            self.available = False
            out.update(F=math.nan, H=math.nan, gap=math.nan, violation=math.nan)
        return out


    def host_row(self, f: float, xh: np.ndarray, gh: np.ndarray, mh: np.ndarray, lr: float,
                 out: dict[str, float] | None = None) -> dict[str, float]:
        """The diagnostics from float64 NumPy copies of x, g and m (the host path); remembers
        x for :meth:`step_norm`."""
        if out is None:
            out = {"f": f, "F": math.nan, "H": math.nan, "gap": math.nan, "violation": math.nan,
                   "x_norm": math.nan}
        self.x_prev, self.x_host = self.x_host, xh
        return self._host(out, f, xh, gh, mh, lr)

    def _host(self, out: dict[str, float], f: float, x: np.ndarray, g: np.ndarray,
              m: np.ndarray, lr: float) -> dict[str, float]:
        """The same quantities as the generic path, on float64 NumPy arrays of one leaf:
        :func:`lionk.lyapunov.discrete` and :func:`~lionk.lyapunov.constraint_violation`
        written for a single array, calling the κ's per-array methods once each."""
        kap, lam = self.kap, self.lam
        x_norm = _constraint_norm(kap, x)
        z = x * lam

        def terms() -> tuple[float, float, float, float, float]:
            return (float(kap.conjugate_on_domain(z)), float(kap.value(-g)),
                    float(np.dot(g.ravel(), x.ravel())), float(kap.value(m)),
                    float(np.dot(m.ravel(), x.ravel())))
        return self.combine(out, f, lr, x_norm, float(kap.domain_distance(z)), terms)

    def combine(self, out: dict[str, float], f: float, lr: float, x_norm: float, dist: float,
                terms: Callable[[], tuple[float, float, float, float, float]]) -> dict[str, float]:
        """F, the gap, H and the violation from the κ's terms (Python floats):
        ``dist = dist(λx, dom K*)`` and, called only when ``dist ≤ domain_tol``, ``terms()`` =
        ``(K*(λx), K(−g), ⟨g, x⟩, K(m), ⟨m, x⟩)``."""
        lam = self.lam
        out["x_norm"] = x_norm
        out["violation"] = dist / lam
        if not dist <= self.dom_tol:
            out["F"] = out["gap"] = out["H"] = math.inf
            return out
        kstar, k_neg_g, gx, km, mx = terms()
        out["F"] = f + kstar / lam
        out["gap"] = (kstar + k_neg_g + lam * gx) / lam
        # lr, betas and λ were validated once per run (make_hyper, _schedule_table)
        c = _lyapunov._coefficient_unchecked(lr, self.betas[0], self.betas[1], lam)
        out["H"] = out["F"] + c * (kstar + km + lam * mx)
        return out

    def from_terms(self, f: float, t: np.ndarray, lr: float) -> dict[str, float]:
        """The diagnostics from the terms a JAX chunk computed on the device (float64):
        ``t = (dist, K*(λx), K(−g), ⟨g, x⟩, K(m), ⟨m, x⟩, step_norm, ‖x‖)``."""
        out = {"f": f, "F": math.nan, "H": math.nan, "gap": math.nan, "violation": math.nan,
               "x_norm": math.nan}
        return self.combine(out, f, lr, float(t[7]), float(t[0]),
                            lambda: (float(t[1]), float(t[2]), float(t[3]), float(t[4]),
                                     float(t[5])))


def _scale(d: dict[str, float], f0: float) -> float:
    """The scale tol is relative to: ``max(|F(x_k)|, 10⁻³·|f(x_0) − F(x_k)|)`` (1 if both are 0).

    ``|F|`` makes tol a relative accuracy of F. The second term, a thousandth of the decrease
    achieved so far, only matters when min F is 0 or tiny (a consistent least-squares system),
    where ``|F|`` alone would ask for an accuracy far below the problem's scale (and below the
    rounding of F); no absolute floor such as 1 is used, so tol stays relative when |F| < 1.
    """
    F = d["F"]
    if not math.isfinite(F):
        return math.inf
    scale = max(abs(F), _DECREASE_FLOOR * abs(f0 - F))
    return scale if scale > 0 else 1.0


def _kkt(d: dict[str, float], lam: float, f0: float) -> float:
    """The KKT residual: max(gap / scale, dist(λx, dom K*)) with scale from :func:`_scale`; inf
    beyond the domain tolerance, nan when the κ cannot evaluate it."""
    gap, F = d["gap"], d["F"]
    if math.isnan(gap):
        return math.nan
    if math.isinf(gap) or math.isinf(F):
        return math.inf
    return max(max(gap, 0.0) / _scale(d, f0), d["violation"] * lam)


# ---------------------------------------------------------------------------------------------
# Progress display.


class _Progress:
    def __init__(self, total: int) -> None:
        self.bar = None
        self.last = 0.0
        self.total = total
        if importlib.util.find_spec("tqdm") is not None:
            tqdm = importlib.import_module("tqdm")
            self.bar = tqdm.tqdm(total=total, desc="lionk.minimize", leave=True)

    def update(self, k: int, d: dict[str, float], final: bool = False) -> None:
        if self.bar is not None:
            self.bar.set_postfix(f=f"{d['f']:.6g}", H=f"{d['H']:.6g}",
                                 viol=f"{d['violation']:.1e}", refresh=False)
            self.bar.update(k - self.bar.n)
            return
        now = time.monotonic()
        if final or now - self.last >= 0.1:
            self.last = now
            sys.stderr.write(
                f"\rlionk.minimize {k}/{self.total}  f={d['f']:.6g}  H={d['H']:.6g}  "
                f"violation={d['violation']:.1e}  "
            )
            sys.stderr.flush()

    def close(self, k: int, d: dict[str, float]) -> None:
        if self.bar is not None:
            self.update(k, d)
            self.bar.close()
        else:
            self.update(k, d, final=True)
            sys.stderr.write("\n")
            sys.stderr.flush()


# ---------------------------------------------------------------------------------------------
# The driver.


def _parse_bounds(bounds: Any, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)``: float64 NumPy arrays of ``shape`` (−inf / +inf for no bound).

    Accepted: ``scipy.optimize.Bounds(lb, ub)``; a pair ``(lo, hi)`` of numbers or arrays
    broadcastable to x0's shape (``lsq_linear``'s convention); a sequence of ``(lo, hi)`` pairs,
    one per element of x0 in C order (``scipy.optimize.minimize``'s convention). None in place of
    a number means no bound.
    """
    n = int(np.prod(shape)) if shape else 1

    def as_array(v: Any, fill: float, what: str) -> np.ndarray:
        if v is None:
            return np.full(shape, fill)
        try:
            a = np.array(v, dtype=object)
            a = np.where(a == np.array(None), fill, a).astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"bounds: expected numbers, arrays or None for {what}; received "
                            f"{v!r}") from None
        try:
            return np.broadcast_to(a, shape).astype(np.float64)
        except ValueError:
            raise ValueError(f"bounds: {what} has shape {a.shape}, not broadcastable to x0's "
                             f"shape {shape}") from None

    def is_pair(p: Any) -> bool:
        return isinstance(p, (tuple, list)) and len(p) == 2 and all(
            q is None or (isinstance(q, (int, float, np.floating, np.integer))
                          and not isinstance(q, bool)) for q in p)

    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):  # scipy.optimize.Bounds
        lo, hi = as_array(bounds.lb, -math.inf, "lb"), as_array(bounds.ub, math.inf, "ub")
    elif isinstance(bounds, (tuple, list)):
        pairs = len(bounds) == n and all(is_pair(p) for p in bounds)
        two = len(bounds) == 2
        if pairs and two and n == 2:
            as_pairs = [[p[0] for p in bounds], [p[1] for p in bounds]]
            as_lohi = [list(bounds[0]), list(bounds[1])]
            if as_pairs != as_lohi:
                raise ValueError(
                    f"bounds: {bounds!r} reads both as two (lo, hi) pairs and as (lo, hi) "
                    "arrays for a 2-element x0; pass scipy.optimize.Bounds(lo, hi) to say which"
                )
        if pairs:
            lo = as_array([p[0] for p in bounds], -math.inf, "lo").reshape(shape)
            hi = as_array([p[1] for p in bounds], math.inf, "hi").reshape(shape)
        elif two:
            lo, hi = as_array(bounds[0], -math.inf, "lo"), as_array(bounds[1], math.inf, "hi")
        else:
            raise ValueError(
                f"bounds: expected (lo, hi) or {n} (lo, hi) pairs (one per element of x0) or "
                f"scipy.optimize.Bounds; received a sequence of length {len(bounds)}"
            )
    else:
        raise TypeError("bounds: expected (lo, hi), a sequence of (lo, hi) pairs or "
                        f"scipy.optimize.Bounds; received {type(bounds).__name__}")
    if np.any(np.isnan(lo)) or np.any(np.isnan(hi)):
        raise ValueError("bounds: expected numbers, ±inf or None; received nan")
    bad = np.flatnonzero((lo > hi).ravel())
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"bounds: expected lo <= hi; element {i} has lo = {lo.ravel()[i]!r} > "
                         f"hi = {hi.ravel()[i]!r}")
    if np.any(lo == math.inf) or np.any(hi == -math.inf):
        raise ValueError("bounds: expected lo < +inf and hi > -inf (an empty set)")
    return lo, hi


class _BoxMap:
    """The affine map ``x = c + s·y`` from the box ``‖y‖∞ ≤ 1`` onto ``lo ≤ x ≤ hi``.

    A side at ±inf is replaced by ±radius (``|x_i| ≤ radius`` on that side), so an unbounded
    coordinate needs ``radius``. With ``s_i = 0`` (lo_i = hi_i) x_i is fixed.
    """

    def __init__(self, lo: np.ndarray, hi: np.ndarray, radius: float | None, x: Any) -> None:
        open_side = ~np.isfinite(lo) | ~np.isfinite(hi)
        if np.any(open_side) and radius is None:
            raise ValueError(
                "radius: bounds has an infinite side (element "
                f"{int(np.flatnonzero(open_side.ravel())[0])}); Lion-κ works in a box, so pass "
                "radius=R to bound those sides by |x_i| <= R (a large R for no constraint)"
            )
        if not np.any(open_side) and radius is not None:
            raise ValueError(
                f"radius: every bound is finite, so radius={radius!r} would constrain nothing; "
                "pass radius only with an infinite side in bounds"
            )
        self.open = open_side
        R = math.inf if radius is None else float(radius)
        lo_e = np.where(np.isfinite(lo), lo, -R)
        hi_e = np.where(np.isfinite(hi), hi, R)
        bad = np.flatnonzero((lo_e > hi_e).ravel())
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"radius, bounds: element {i} has bounds ({lo.ravel()[i]!r}, {hi.ravel()[i]!r}) "
                f"outside |x_i| <= radius = {R!r}; raise radius"
            )
        self.lo, self.hi = lo, hi
        self.lo_e, self.hi_e = lo_e, hi_e
        c = 0.5 * lo_e + 0.5 * hi_e
        s = 0.5 * hi_e - 0.5 * lo_e
        xp = array_namespace(x)
        self.xp = xp
        self.lo_x = xp.asarray(lo_e, dtype=x.dtype, device=device(x))
        self.hi_x = xp.asarray(hi_e, dtype=x.dtype, device=device(x))
        self.c = xp.asarray(c, dtype=x.dtype, device=device(x))
        self.s = xp.asarray(s, dtype=x.dtype, device=device(x))
        self._s64 = s
        self._c64 = c

    def to_y(self, x: Any) -> Any:
        xn = np.asarray(_to_numpy64(x))
        y = np.where(self._s64 > 0, (xn - self._c64) / np.where(self._s64 > 0, self._s64, 1.0), 0.0)
        return self.xp.asarray(y, dtype=x.dtype, device=device(x))

    @staticmethod
    def affine(c: Any, s: Any, y: Any) -> Any:
        """``x = c + s·y``: the one place the map is written (also traced by the JAX chunks)."""
        return c + s * y

    def to_x(self, y: Any) -> Any:
        return self.affine(self.c, self.s, y)

    def to_x_result(self, y: Any, tol: float) -> Any:
        """``c + s·y`` with the coordinates of y within ``[−1 − tol, 1 + tol]`` (feasible up to
        ``domain_tol``) clipped into [lo, hi]: the rounding of c ± s may land an ulp beyond a
        bound that y reaches, and a run from outside stalls just outside (docs/lyapunov.md)."""
        x = self.to_x(y)
        xp = self.xp
        clipped = xp.minimum(xp.maximum(x, self.lo_x), self.hi_x)
        return xp.where(xp.abs(y) <= 1.0 + tol, clipped, x)

    def violation(self, x: Any) -> float:
        """max_i dist(x_i, [lo_i, hi_i]) in the units of x."""
        xn = np.asarray(_to_numpy64(x))
        return float(np.max(np.maximum(np.maximum(self.lo - xn, xn - self.hi), 0.0), initial=0.0))

    def at_artificial_edge(self, x: Any) -> np.ndarray:
        """Indices (flat) of coordinates with an infinite side that sit at ±radius."""
        xn = np.asarray(_to_numpy64(x))
        tol = 1e-6 * np.maximum(np.abs(self.hi_e - self.lo_e), 1e-300)
        lo_hit = ~np.isfinite(self.lo) & (xn <= self.lo_e + tol)
        hi_hit = ~np.isfinite(self.hi) & (xn >= self.hi_e - tol)
        return np.flatnonzero((lo_hit | hi_hit).ravel())


def _to_numpy64(x: Any) -> np.ndarray:
    if type(x) is np.ndarray and x.dtype == np.float64:  # the common case, no copy
        return x
    detach = getattr(x, "detach", None)
    if callable(detach):
        x = detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy().astype(np.float64)
    if type(x).__module__.split(".")[0] == "cupy":  # pragma: no cover - needs a GPU
        return x.get().astype(np.float64)
    return np.asarray(x, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# The iteration: the step validated once per run, and the jitted chunks of JAX.


class _Stepper:
    """``lionk.step`` on minimize's own iterate and momentum, without its per-call validation.

    Everything ``lionk.step`` checks is checked once per run, before the first step: the
    hyper-parameters by ``make_hyper`` (betas, λ, lr_0) and ``_schedule_table`` (every
    ``lr_k > 0``, ``lr_k·λ < 1``); x, the first gradient and the momentum by
    ``core.step.check_trees`` (one library, real floating dtype, shapes, devices). What can
    change between steps is checked at every step: the gradient by ``_check_g`` (converted to
    x's library and dtype, shape checked) and κ's output by ``update_leaves`` itself. The
    momentum comes from ``init`` and every later x and m from ``update_leaves``, which never
    writes in place, so nothing minimize owns can be aliased or replaced. The coefficients come
    from ``core.step.coefficients`` and the update from ``core.step.update_leaves``: the calls
    ``lionk.step`` makes, in the same order, so the iterates have the same bits.
    """

    def __init__(self, x: Any, g: Any, m: Any, kap: _kappa.Kappa, betas: tuple[float, float],
                 lam: float, lrs: list[float]) -> None:
        _check_trees(x, g, m)
        _, _, paths = _flatten(x)
        self.kap = _kappa_matrix.bind(kap, paths, [x])
        self.paths = [f"params{p}" for p in paths]
        self.b1, self.b2 = betas
        self.lam = lam
        self.lrs = lrs

    def hyper(self, k: int) -> _Hyper:
        """The coefficients of step k (Python floats, double precision)."""
        return _coefficients(self.lrs[k], self.b1, self.b2, self.lam)

    def __call__(self, x: Any, g: Any, m: Any, k: int) -> tuple[Any, Any]:
        (x_new,), (m_new,) = _update_leaves([x], [g], [m], self.hyper(k), self.kap,
                                            paths=self.paths)
        return x_new, m_new


class _RowX:
    """Iterate j of a JAX chunk, sliced from the device buffer only when it is asked for (the
    callback, the tail of the settling rule, the result)."""

    __slots__ = ("buf", "j")

    def __init__(self, buf: Any, j: int) -> None:
        self.buf, self.j = buf, j

    def get(self) -> Any:
        return self.buf[self.j]


def _materialize(x: Any) -> Any:
    return x.get() if isinstance(x, _RowX) else x


#: The number of iterations one jitted JAX call runs (at most; fewer at the end of the run);
#: smaller for large x so that the stacked iterates stay below _CHUNK_ELEMENTS elements.
_CHUNK = 64
_CHUNK_ELEMENTS = 1 << 20

#: fun -> {(κ, b1, b2, bounded, K): the jitted chunk}; compiled once per fun and setting.
_JAX_CHUNKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _chunk_size(x: Any) -> int:
    size = math.prod(int(s) for s in x.shape)
    return max(1, min(_CHUNK, _CHUNK_ELEMENTS // max(1, 3 * size)))


def _terms_on_device(diag: _Diagnostics) -> bool:
    """Whether a JAX chunk computes the diagnostics' terms itself (see :func:`_jax_chunk`):
    with x64 (float64 on the device) and a norm the chunk can evaluate (a stated order)."""
    con = diag.kap.constraint
    norm_ok = con is None or (con.measure is None and con.order is not None)
    return norm_ok and not _lyapunov._jax_without_x64(sys.modules["jax.numpy"])


def _jax_chunk(fun: Callable, vg: Callable, stepper: _Stepper, diag: _Diagnostics | None,
               bounded: bool, K: int) -> Callable:
    """``chunk(x, g, m, lr, decay, n, c, s)``: n ≤ K iterations in one jitted call.

    Iteration i: ``x, m = update_leaves(x, g, m, Hyper(lr[i], …, decay[i]))`` then
    ``f, g = vg(x)`` (with bounds ``vg(c + s·y)`` and ``s·g``); returns the carry (x, g, m),
    the stacked f and x of the n iterates (rows n … K−1 unused) and either the stacked g and m
    (``diag`` None: the host computes the diagnostics from them) or, per iteration, the terms of
    :meth:`_Diagnostics.from_terms` in float64: ``dist(λx, dom K*)``, ``K*(λx)``, ``K(−g)``,
    ``⟨g, x⟩``, ``K(m)``, ``⟨m, x⟩``, ``‖x − x_prev‖₂`` and ``‖x‖`` in the constraint's norm
    (the κ's own methods, traced). ``lr``, ``decay``: the coefficients of
    ``core.step.coefficients`` computed on the host in double precision and rounded once to
    x's dtype; b1, 1 − b1, b2, 1 − b2 are Python floats (constants of the trace). The carry is
    donated. ``vg`` is the run's ``jax.jit(jax.value_and_grad(fun))``: calling it inside reuses
    its trace, so fun is traced once per fun, not once per chunk or run.
    """
    h = stepper.hyper(0)
    lam = stepper.lam
    key = (stepper.kap, h.b1, h.b2, bounded, K, None if diag is None else (diag.kap, lam))
    try:
        table = _JAX_CHUNKS.setdefault(fun, {})
    except TypeError:  # fun cannot be weakly referenced
        table = {}
    try:
        return table[key]
    except (KeyError, TypeError):
        pass
    import jax
    import jax.numpy as jnp

    kap, paths = stepper.kap, stepper.paths  # what the trace uses (the cache key): no more
    dk = None if diag is None else diag.kap
    b1, omb1, b2, omb2 = h.b1, h.one_minus_b1, h.b2, h.one_minus_b2

    def evaluate(y: Any, c: Any, s: Any) -> tuple[Any, Any]:
        if not bounded:
            return vg(y)
        f, gx = vg(_BoxMap.affine(c, s, y))
        return f, s * gx

    def terms(x: Any, g: Any, m: Any, x_old: Any) -> Any:
        assert dk is not None
        xw, gw, mw, ow = (jnp.ravel(a).astype(jnp.float64) for a in (x, g, m, x_old))
        z = xw * lam
        con = dk.constraint
        x_norm = (jnp.asarray(jnp.nan) if con is None
                  else jnp.linalg.vector_norm(xw, ord=con.order))  # type: ignore[arg-type]
        t = (dk.domain_distance(z), dk.conjugate_on_domain(z), dk.value(-gw), jnp.dot(gw, xw),
             dk.value(mw), jnp.dot(mw, xw), jnp.linalg.vector_norm(xw - ow), x_norm)
        return jnp.stack([jnp.asarray(v, dtype=jnp.float64) for v in t])

    def chunk(x: Any, g: Any, m: Any, lr: Any, decay: Any, n: Any, c: Any, s: Any) -> Any:
        f_shape = jax.eval_shape(evaluate, x, c, s)[0]
        extra: tuple[Any, ...]
        if dk is None:
            extra = (jnp.zeros((K, *g.shape), g.dtype), jnp.zeros((K, *m.shape), m.dtype))
        else:
            extra = (jnp.zeros((K, 8), jnp.float64),)
        bufs = (jnp.zeros((K,), f_shape.dtype), jnp.zeros((K, *x.shape), x.dtype), *extra)

        def body(i: Any, carry: Any) -> Any:
            x_old, g, m, (F, X, *rest) = carry
            hyper = _Hyper(lr=lr[i], b1=b1, one_minus_b1=omb1, b2=b2, one_minus_b2=omb2,
                           decay=decay[i])
            (x,), (m,) = _update_leaves([x_old], [g], [m], hyper, kap, paths=paths)
            f, g = evaluate(x, c, s)
            if dk is None:
                rest = [rest[0].at[i].set(g), rest[1].at[i].set(m)]
            else:
                rest = [rest[0].at[i].set(terms(x, g, m, x_old))]
            return x, g, m, (F.at[i].set(f), X.at[i].set(x), *rest)

        return jax.lax.fori_loop(0, n, body, (x, g, m, bufs))

    jitted = jax.jit(chunk, donate_argnums=(0, 1, 2))
    try:
        table[key] = jitted
    except TypeError:  # an unhashable κ: compiled for this run only
        pass
    return jitted


def _jax_rows(chunk: Callable, stepper: _Stepper, x: Any, g: Any, m: Any, maxiter: int, K: int,
              box: _BoxMap | None, counts: dict, on_device: bool) -> Any:
    """Yield ``(f, x, None, None, host)`` for iterations 1 … maxiter from jitted chunks of at
    most K iterations: one call and one host transfer per chunk. ``host`` is ``("terms", t)``
    (``on_device``) or ``("rows", x, g, m)`` (float64 NumPy copies).

    The consumer checks the stopping rules on every row, in order, and stops at the exact
    iteration where one holds; the chunk's later rows are discarded (computed, not counted in
    nfev / njev). x is a :class:`_RowX` (sliced on demand)."""
    xp = array_namespace(x)
    dev = device(x)
    c = box.c if box is not None else xp.zeros((), dtype=x.dtype, device=dev)
    s = box.s if box is not None else c
    # the carry is donated: the run's own copies, never the user's x0
    carry = (xp.asarray(x, copy=True), xp.asarray(g, copy=True), xp.asarray(m, copy=True))
    np_dtype = np.dtype(x.dtype) if np.dtype(x.dtype).kind == "f" else np.float64
    done = 0
    while done < maxiter:
        n = min(K, maxiter - done)
        hs = [stepper.hyper(done + i) for i in range(n)]
        pad = [hs[-1]] * (K - n)  # unused rows: any valid coefficients
        lr = np.asarray([h.lr for h in hs + pad], dtype=np.float64).astype(np_dtype)
        decay = np.asarray([h.decay for h in hs + pad], dtype=np.float64).astype(np_dtype)
        lr_d = xp.asarray(lr, dtype=x.dtype, device=dev)
        decay_d = xp.asarray(decay, dtype=x.dtype, device=dev)
        with warnings.catch_warnings():  # not around a yield: the consumer has its own
            warnings.filterwarnings("ignore", message=".*[Dd]onat")  # a backend that cannot
            xk, gk, mk, (F, X, *rest) = chunk(*carry, lr_d, decay_d, n, c, s)
        carry = (xk, gk, mk)
        Fh = np.asarray(F, dtype=np.float64)
        if on_device:
            T = np.asarray(rest[0])
            for j in range(n):
                counts["nfev"] += 1
                counts["njev"] += 1
                yield float(Fh[j]), _RowX(X, j), None, None, ("terms", T[j])
        else:
            Xh, Gh, Mh = (np.asarray(a, dtype=np.float64) for a in (X, *rest))
            for j in range(n):
                counts["nfev"] += 1
                counts["njev"] += 1
                yield float(Fh[j]), _RowX(X, j), None, None, ("rows", Xh[j], Gh[j], Mh[j])
        done += n


def _chain_first(first: Any, rest: Any) -> Any:
    yield first
    yield from rest


def _jax_chunked(fun: Callable, jac: Any, evaluate_x: Callable, x: Any,
                 diag: _Diagnostics) -> bool:
    """Whether the run can use jitted chunks: a JAX x, autodiff (jac=None) by the jitted
    value_and_grad (fun traceable), a built-in κ (its diagnostics on host copies)."""
    if jac is not None or not diag.host or not is_jax_array(x):
        return False
    chosen = getattr(evaluate_x, "chosen", None)
    if not chosen:
        return False
    return chosen[0] is getattr(evaluate_x, "jitted", None)


def minimize(
    fun: Callable[[Any], Any],
    x0: Any,
    *,
    jac: Any = None,
    kappa: str | _kappa.Kappa = "sign",
    radius: float | None = None,
    weight_decay: float | None = None,
    bounds: Any = None,
    lr: float | None = None,
    betas: tuple[float, float] = (0.9, 0.99),
    schedule: str | Callable[[int], float] = "cosine",
    maxiter: int = DEFAULT_MAXITER,
    tol: float = 1e-6,
    domain_tol: float | None = None,
    callback: Callable[[OptimizeResult], Any] | None = None,
    progress: bool = False,
) -> OptimizeResult:
    r"""Minimise ``F(x) = f(x) + (1/λ)·K*(λx)`` with Lion-κ; for a norm κ, f subject to a norm ball.

    A κ given by name is its textbook form (``lionk.kappa.textbook(name)``: the table below;
    ``l2`` with ``radius=r`` is ‖x‖₂ ≤ r, huber's δ = 1), not the normalised defaults the
    optimizers use for Lion's learning rate (``get(name)``: ``l2`` there is the RMS ball); pass
    a ``Kappa`` (e.g. ``lionk.kappa.get("l2")``) for another form.

    ======================  =====================================================================
    kappa                   problem solved (λ = 1/radius)
    ======================  =====================================================================
    sign (l1, lion)         min f(x)  s.t. ‖x‖_∞ ≤ radius  (or lo ≤ x ≤ hi with ``bounds``)
    l2, relativistic-l2     min f(x)  s.t. ‖x‖₂ ≤ radius  (relativistic-l2: plus a barrier)
    lp (p)                  min f(x)  s.t. ‖x‖_q ≤ radius, 1/p + 1/q = 1
    huber (delta)           min f(x) + (δλ/2)‖x‖₂²  s.t. ‖x‖_∞ ≤ radius
    deadzone (e)            min f(x) + e‖x‖₁  s.t. ‖x‖_∞ ≤ radius
    relativistic (delta)    min f(x) + (δ/λ)Σ(1 − √(1 − λ²x_i²))  (a barrier at ‖x‖_∞ = radius)
    group-l2 (axis)         min f(x)  s.t. ‖x_g‖₂ ≤ radius for every group (row) g
    nuclear                 min f(X)  s.t. ‖X‖_op ≤ radius
    quadratic               min f(x) + (λ/2)‖x‖₂²  (no constraint; lr must be given)
    ======================  =====================================================================

    Every iterate is ``lionk.step(x_k, ∇f(x_k), state, lr=lr_k, betas=betas,
    weight_decay=λ, kappa=kappa)`` (with ``bounds``: on y, where x = c + s·y, below), bit for
    bit on NumPy and torch; its validation runs once per run (docs/minimize.md, "What runs per
    iteration"). With a JAX x0 and ``jac=None`` chunks of up to 64 iterations (evaluation, step
    and diagnostics) run as one jitted call and the stopping rules are checked on the host for
    every iterate of the chunk, stopping at the exact iteration (ulp tier: XLA contracts
    multiply-adds; pass ``jac`` for the eager step).

    Args:
        fun: ``f(x)``, returning a Python number or a 0-d array (``(f, g)`` when ``jac=True``).
        x0: the starting point: an array of any array-API library (NumPy, PyTorch, JAX, CuPy,
            ...) and real floating dtype, of any shape; or a Python number or (nested) list of
            numbers, converted like SciPy does to a float64 NumPy array (of the list's shape;
            a number becomes a 0-d array). x0 may lie outside the feasible set (phase 1 brings
            it in, theory.md §4).
        jac: ``jac(x) -> ∇f(x)`` (an array of x's shape; converted to x's library and dtype),
            ``True`` when ``fun`` returns ``(f, g)``, or None: autodiff for a torch x0
            (``torch.autograd``) or a JAX x0 (``jax.value_and_grad``, under ``jax.jit`` when
            fun can be traced); NumPy and CuPy need a jac (TypeError).
        kappa: a κ name or a :class:`lionk.kappa.Kappa` (see the table).
        radius: r > 0, sets λ by the κ's radius rule, ``λ = constraint.scale / r``
            (``λ = 1/r`` for every built-in and for a κ that states no constraint). Give
            ``radius`` or ``weight_decay`` (λ > 0), not both; one of them is required (λ defines the problem), except with
            ``bounds``.
        weight_decay: λ > 0, the radius being 1/λ.
        bounds: ``lo ≤ x ≤ hi`` element-wise (``kappa="sign"`` only; the returned x is clipped
            into [lo, hi] where the iterate is within ``domain_tol``): ``(lo, hi)`` with numbers
            or arrays broadcastable to x0's shape, a sequence of ``(lo, hi)`` pairs (one per
            element of x0), or ``scipy.optimize.Bounds``; None or ±inf for no bound. Solved
            exactly by the affine change of variables ``x = c + s·y``, ``c = (lo + hi)/2``,
            ``s = (hi − lo)/2``, ``‖y‖∞ ≤ 1`` (λ = 1 on y). An infinite side is replaced by
            ±``radius`` (required then, and refused when every bound is finite); a result whose
            coordinate sits at such an artificial edge is not a success. Keep that radius
            comparable to the other widths: one lr moves every y_i, so a much wider interval is
            resolved more coarsely.
        lr: the initial learning rate lr_0 (ε). Default: :func:`default_lr`,
            ``min(r, 4·D) · min(0.1, 50/maxiter)`` with D the distance to the minimum of f along
            the first Lion-κ direction (a few evaluations of f, halving from r; D = r when x0
            is outside the feasible set, with ``bounds``, and for a κ other than sign / l2 /
            lp). Required for
            ``kappa="quadratic"``. Must be None with a callable schedule.
        betas: ``(b1, b2)`` of Lion-κ, 0 ≤ b1 ≤ b2 < 1 for the Lyapunov guarantee.
        schedule: ``"cosine"`` (default) ``lr_k = lr_0·(1 + cos(πk/maxiter))/2``; ``"linear"``
            ``lr_k = lr_0·(1 − k/maxiter)``; ``"constant"`` ``lr_k = lr_0``; or a callable
            ``schedule(k) -> lr_k``, called for k = 0 … maxiter (lr_maxiter, which may be 0, only
            weighs H of the last iterate). A decaying schedule is what makes Lion converge to
            the optimum; at a constant lr it settles within O(lr) of it.
        maxiter: the largest number of steps (≥ 1; default 5000).
        tol: the relative tolerance on F (≥ 0; 0 runs all maxiter steps), see below.
        domain_tol: points with ``dist(λx, dom K*) ≤ domain_tol`` count as feasible (F, gap and
            H evaluated at the nearest point of the domain). Default
            ``max(16·eps, 2·eps/(lr_0·λ), tol)`` with eps of x0's dtype: a run started outside
            the set stalls about ``eps·|x|/(lr·λ)`` outside it in finite precision
            (docs/lyapunov.md).
        callback: ``callback(intermediate_result)`` after every step, with an
            :class:`OptimizeResult` holding ``x, fun, F, H, kkt_residual, constraint_violation,
            nit, lr``; returning True or raising StopIteration stops the run (status 2).
        progress: show a progress bar with f, H and the violation (tqdm when installed, else one
            line on stderr updated in place). Nothing is printed by default.

    Stopping rules (all values in float64, g = ∇f(x_k), ``scale_k = max(|F(x_k)|,
    10⁻³·|f(x_0) − F(x_k)|)``: tol is relative to |F|, also when |F| < 1; the second term only
    matters when min F ≈ 0)::

        gap_k = (1/λ)·( K*(λx_k) + K(−g) + λ·⟨g, x_k⟩ )          # Fenchel–Young gap ≥ 0
        kkt_k = max( gap_k / scale_k,  dist(λx_k, dom K*) )      # the KKT residual

    1. *certified* (checked after every step): ``kkt_k ≤ tol``. For convex f and feasible x,
       ``F(x_k) − min F ≤ gap_k``: F is certified to the relative accuracy tol. Stops at once.
    2. *settled* (checked at maxiter, when rule 1 never held): the schedule has decayed
       (``lr_k₀ ≤ 0.05·lr_0`` at k₀ = maxiter − ⌈maxiter/50⌉; cosine and linear do, constant
       does not) and over the last 2% of the steps ``|F(x_k₀) − F(x_end)| ≤ tol·scale``, the
       iterates oscillated (``‖x_end − x_k₀‖₂ ≤ ½·Σ‖x_{k+1} − x_k‖₂`` over those steps: a band
       around a point, not a path still travelling) and x is feasible (``dist ≤ domain_tol``).
       This is the relative change rule of SciPy's solvers, made insensitive to a vanishing
       lr; it is not a certificate (``result.certified`` is False), and ``result.gap`` still
       bounds the error for convex f.

    Either sets ``success=True`` (status 0). For Lion the gap is ``Σ_i (r|g_i| + g_i x_i)``,
    the Frank–Wolfe gap of the box: with a loose radius (no binding constraint) it is about
    ``r·‖g‖₁`` and certifies little, so such runs end by rule 2. For a user κ without ``value``
    or ``conjugate`` neither F nor the gap exist: the run ends at maxiter with ``success=False``.

    Returns:
        :class:`OptimizeResult` with ``x`` (library, device, shape and dtype of x0), ``fun`` =
        f(x), ``F`` = F(x), ``success``, ``certified`` (rule 1 held), ``status`` (0 converged,
        1 maxiter reached, 2 stopped by the callback, 3 non-finite f or ∇f), ``message``,
        ``nit`` (steps taken), ``nfev``, ``njev`` (including the evaluations that chose lr_0),
        ``kkt_residual``, ``gap``, ``H``, ``constraint_violation`` (in the units of x:
        :func:`lionk.lyapunov.constraint_violation`, or max_i dist(x_i, [lo_i, hi_i]) with
        ``bounds``), ``radius`` (the κ's ``constraint.radius(λ)``), ``weight_decay``, ``lr`` (lr_0),
        ``kappa`` (the name), ``constraint`` (the κ's :class:`lionk.kappa.Constraint` fact, None
        when it states none) and ``history``: a
        dict of float64 NumPy arrays of length nit + 1, entry k for the iterate x_k: ``f``,
        ``F``, ``H``, ``violation``, ``kkt``, ``gap``, ``step_norm`` (‖x_k − x_{k−1}‖₂, nan at
        k = 0), ``lr`` (lr_k) and ``x_norm`` (‖x_k‖ in the constraint's norm: ∞ for the box κ,
        2 for l2 / relativistic-l2 / quadratic, q for lp; nan for a κ that states no constraint). With ``bounds``
        the history's ``violation``, ``step_norm`` and ``x_norm`` are those of y (x = c + s·y,
        the box ``‖y‖∞ ≤ 1``), and ``radius`` / ``weight_decay`` are 1.
    """
    if not callable(fun):
        raise TypeError(f"fun: expected a callable f(x) -> float; received {type(fun).__name__}")
    # a name is the problem the table above states (its textbook form: ``radius`` sets the
    # scale, so "l2" is ‖x‖₂ ≤ radius, not the optimizers' RMS ball); a Kappa is used as given
    kap = _kappa_scaling.textbook(kappa) if isinstance(kappa, str) else _kappa.resolve(kappa)
    if not getattr(kap, "fixed", True):
        length = "e" if "e" in kap.params else "delta"
        raise ValueError(
            f"kappa: {kap!r} re-measures its length from its input at every step ({length}="
            f"'auto'), so it defines no fixed problem to minimise; expected a fixed K: pass "
            f"{length}=<a number> (or the name {kap.name!r}, whose textbook form has one)")
    maxiter = _check.counter("maxiter", maxiter, minimum=1)
    tol_f = _real("tol", tol)
    if not (math.isfinite(tol_f) and tol_f >= 0):
        raise ValueError(f"tol: expected a finite number >= 0; received {tol!r}")
    if domain_tol is not None:
        dt = _real("domain_tol", domain_tol)
        if not (math.isfinite(dt) and dt >= 0):
            raise ValueError(f"domain_tol: expected a finite number >= 0 or None; received "
                             f"{domain_tol!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable or None; received {type(callback).__name__}")

    x_user = _as_x0(x0)
    xp = array_namespace(x_user)
    counts = {"nfev": 0, "njev": 0}
    evaluate_x = _make_evaluator(fun, jac, x_user, counts)
    gname = "jac" if callable(jac) else "fun"
    box: _BoxMap | None = None
    if bounds is not None:
        if kap.name != "sign":
            raise ValueError(
                f"bounds: supported with kappa='sign' (the box κ) only; received kappa="
                f"{kap.name!r} (its penalty would act on the rescaled variable)"
            )
        if weight_decay is not None:
            raise ValueError(
                "weight_decay: with bounds the box is [lo, hi] (λ = 1 on the rescaled "
                f"variable); pass radius only for infinite sides; received weight_decay="
                f"{weight_decay!r}"
            )
        r_open = None
        if radius is not None:
            r_open = _real("radius", radius)
            if not (math.isfinite(r_open) and r_open > 0):
                raise ValueError(f"radius: expected a finite number > 0; received {radius!r}")
        lo, hi = _parse_bounds(bounds, tuple(x_user.shape))
        box = _BoxMap(lo, hi, r_open, x_user)
        lam = 1.0
        x = box.to_y(x_user)
        bmap = box

        def evaluate_y(y: Any) -> tuple[Any, Any]:
            xx = bmap.to_x(y)
            f_raw, g_raw = evaluate_x(xx)
            return f_raw, bmap.s * _check_g(g_raw, xx, xp, gname)
        evaluate: Callable[[Any], tuple[Any, Any]] = evaluate_y
    else:
        lam = _resolve_lambda(radius, weight_decay, kap)
        x = x_user
        evaluate = evaluate_x

    f_raw, g_raw = evaluate(x)
    f0 = _check_f(f_raw, 0)
    if not math.isfinite(f0):
        raise ValueError(f"fun: expected a finite f(x0); received {f0!r}")
    g = _check_g(g_raw, x, xp, gname)

    def scale() -> float:
        """D of :func:`default_lr`: halving along −∇K(∇f(x0)), in the constraint's units.

        From outside the feasible set the radius is kept: phase 1 (theory.md §4) needs
        ``λ·Σ lr_k`` large to bring x in, which a lr measured against D < r would not give."""
        if kap.name not in _SCALED_KAPPAS:  # a penalty in K*: its zeros come from the decay
            return 1.0 / lam
        if box is not None:  # the user's own box: its edges are meant to bind
            return 1.0 / lam
        try:
            if _lyapunov.constraint_violation(x, weight_decay=lam, kappa=kap) > 0:
                return 1.0 / lam
        except NotImplementedError:
            pass
        try:
            direction = kap.grad(g)
        except Exception:  # a κ that cannot take this array: keep the radius
            return 1.0 / lam
        if not float(xp.max(xp.abs(_wide(direction)))) > 0:
            return 1.0 / lam

        def value_at(t: float) -> float:
            try:
                fv = _check_f(evaluate(x - t * direction)[0], 0)
            except Exception:
                return math.nan
            return fv
        return _travel_scale(value_at, 1.0 / lam)

    lrs = _schedule_table(schedule, lr, lam, maxiter, kap, scale)
    hyper = _make_hyper(lrs[0], betas, lam, stacklevel=2)  # validates betas (warns on b1 > b2)
    betas_f = (float(hyper.b1), float(hyper.b2))

    m = _init(x).momentum
    eps = finfo_eps(xp, x.dtype)
    if domain_tol is None:
        dom_tol = max(16.0 * eps, 2.0 * eps / (lrs[0] * lam), tol_f)
    else:
        dom_tol = float(domain_tol)
    diag = _Diagnostics(kap, lam, betas_f, dom_tol)
    names = ("f", "F", "H", "violation", "kkt", "gap", "step_norm", "lr", "x_norm")
    hist: dict[str, list[float]] = {n: [] for n in names}

    def record(d: dict[str, float], step_norm: float, k: int) -> None:
        d["kkt"] = _kkt(d, lam, f0)
        d["step_norm"] = step_norm
        d["lr"] = lrs[k]
        for n in names:
            hist[n].append(float(d[n]))

    f = f0
    d = diag(f, x, g, m, lrs[0])
    record(d, math.nan, 0)
    bar = _Progress(maxiter) if progress else None
    k_tail = maxiter - max(1, math.ceil(_TAIL * maxiter))
    x_tail = x if k_tail == 0 else None

    def user_x(y: Any) -> Any:
        return y if box is None else box.to_x_result(y, dom_tol)

    # validated once here; the loop steps with update_leaves (see _Stepper)
    stepper = _Stepper(x, g, m, kap, betas_f, lam, lrs)
    rows: Any = None
    if _jax_chunked(fun, jac, evaluate_x, x, diag):
        K = _chunk_size(x)
        try:
            on_device = _terms_on_device(diag)
            chunk = _jax_chunk(fun, evaluate_x.jitted,  # type: ignore[attr-defined]
                               stepper, diag if on_device else None, box is not None, K)
            rows = _jax_rows(chunk, stepper, x, g, m, maxiter, K, box, counts, on_device)
            first = next(rows)  # traces and compiles; an error leaves x, g, m untouched
        except StopIteration:  # pragma: no cover - maxiter >= 1
            rows = None
        except Exception:  # the chunk cannot be traced: the step by step loop below
            rows = None
        else:
            rows = _chain_first(first, rows)

    def rows_stepwise(xk: Any = x, gk: Any = g, mk: Any = m) -> Any:
        """``(f, x, g, m, None)`` of iterations 1 … maxiter, one step and evaluation each."""
        for k in range(maxiter):
            xk, mk = stepper(xk, gk, mk, k)
            f_raw, g_raw = evaluate(xk)
            fk = _check_f(f_raw, k + 1)
            gk = _check_g(g_raw, xk, xp, gname)
            yield fk, xk, gk, mk, None

    if rows is None:
        rows = rows_stepwise()

    status, nit = 1, 0
    certified = False
    message = ""
    with warnings.catch_warnings():
        # make_hyper above warned once at the caller's line (b1 > b2); not again at every step
        warnings.filterwarnings("ignore", category=LionKWarning)
        try:
            for f, x_new, g, m, host in rows:
                k = nit
                x_before = x
                x, nit = x_new, k + 1
                if nit == k_tail:
                    x_tail = x
                if host is None:
                    d = diag(f, x, g, m, lrs[nit])
                    record(d, diag.step_norm(x_before, x), nit)
                elif host[0] == "terms":  # a JAX chunk computed the terms on the device
                    d = diag.from_terms(f, host[1], lrs[nit])
                    record(d, float(host[1][6]), nit)
                else:  # a JAX chunk's iterates, copied to the host
                    d = diag.host_row(f, host[1], host[2], host[3], lrs[nit])
                    record(d, diag.step_norm(x_before, x), nit)
                if bar is not None:
                    bar.update(nit, d)
                if not math.isfinite(f) or math.isnan(d["gap"]) and diag.available:
                    status = 3
                    what = "f" if not math.isfinite(f) else "∇f"
                    message = f"{what} is not finite at iteration {nit}; stopped"
                    break
                if callback is not None:
                    info = OptimizeResult(x=user_x(_materialize(x)), fun=f, F=d["F"], H=d["H"],
                                          kkt_residual=d["kkt"],
                                          constraint_violation=d["violation"], nit=nit,
                                          lr=lrs[k])
                    try:
                        stop = callback(info)
                    except StopIteration:
                        stop = True
                    if stop is True:
                        status = 2
                        message = f"stopped by the callback at iteration {nit}"
                        break
                if d["kkt"] <= tol_f:
                    status, certified = 0, True
                    message = (f"converged (certified): KKT residual {d['kkt']:.3g} <= tol "
                               f"{tol_f:.3g}; F(x) - min F <= gap = {d['gap']:.3g} for convex f")
                    break
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()
            if bar is not None:
                bar.close(nit, d)
    x = _materialize(x)
    x_tail = _materialize(x_tail)

    if status == 1 and not diag.available:
        message = (f"maxiter ({maxiter}) reached; kappa {kap.name!r} has no value or "
                   "conjugate, so no KKT residual or H can certify the result")
    elif status == 1:
        F_hist = hist["F"]
        sc = _scale(d, f0)
        change = abs(F_hist[k_tail] - F_hist[-1]) if nit == maxiter else math.inf
        path = float(np.sum(hist["step_norm"][k_tail + 1:])) if nit == maxiter else 0.0
        net = math.sqrt(_lyapunov.bound(x_tail, x, 2.0)) if x_tail is not None else math.inf
        feasible = d["violation"] * lam <= dom_tol
        decayed = lrs[k_tail] <= _DECAYED * lrs[0]
        if (math.isfinite(change) and change <= tol_f * sc and net <= 0.5 * path and feasible
                and decayed):
            status = 0
            message = (f"converged (settled): F changed by {change / sc:.3g} (relative) over the "
                       f"last {maxiter - k_tail} steps, <= tol {tol_f:.3g}, while x oscillated "
                       f"in a band (net move {net:.3g} of a path {path:.3g}); not certified: "
                       f"KKT residual {d['kkt']:.3g}")
        else:
            why = []
            if not decayed:
                why.append(f"the schedule had not decayed (lr_{k_tail} = {lrs[k_tail]:.3g} > "
                           f"{_DECAYED}·lr_0), so the iterates are only within O(lr) of a "
                           "stationary point")
            if not feasible:
                why.append(f"x is outside the feasible set by {d['violation']:.3g}")
            if not change <= tol_f * sc:
                why.append(f"F still changed by {change / sc:.3g} (relative) over the last "
                           f"{maxiter - k_tail} steps")
            if not net <= 0.5 * path:
                why.append(f"x was still travelling (net move {net:.3g} of a path {path:.3g})")
            message = (f"maxiter ({maxiter}) reached before a stopping rule held: KKT residual "
                       f"{d['kkt']:.3g} (tol {tol_f:.3g}); " + "; ".join(why)
                       + "; raise maxiter or tol, or pass a smaller lr")
    x_out = user_x(x)
    violation = d["violation"]
    if box is not None:
        if not bool(xp.all(x_out == box.to_x(x))):  # clipped by an ulp: f at the x returned
            f = _check_f(evaluate_x(x_out)[0], nit)
            if math.isfinite(d["F"]):
                d["F"] = f
        violation = box.violation(x_out)
        edge = box.at_artificial_edge(x_out)
        if edge.size and status == 0:
            status, certified = 1, False
            message = (f"element(s) {edge[:5].tolist()} of x end at ±radius = ±{radius!r}, the "
                       "edge that replaced an infinite bound: raise radius")
    history = {n: np.asarray(v, dtype=np.float64) for n, v in hist.items()}
    return OptimizeResult(
        x=x_out,
        fun=f,
        F=d["F"],
        success=status == 0,
        certified=certified,
        status=status,
        message=message,
        nit=nit,
        nfev=counts["nfev"],
        njev=counts["njev"],
        kkt_residual=d["kkt"],
        gap=d["gap"],
        H=d["H"],
        constraint_violation=violation,
        radius=kap.constraint.radius(lam) if kap.constraint is not None else 1.0 / lam,
        weight_decay=lam,
        lr=lrs[0],
        kappa=kap.name,
        constraint=kap.constraint,
        history=history,
    )
