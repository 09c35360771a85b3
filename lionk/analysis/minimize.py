r"""``lionk.minimize``: a scipy-style driver that solves a constrained problem with Lion-κ.

With λ > 0, Lion-κ converges to the stationary points of (docs/theory.md §3)

    F(x) = f(x) + (1/λ)·K*(λx)

which, for a norm κ, is ``min f(x) subject to ‖x‖_dual ≤ 1/λ``. :func:`minimize` states the
problem by its radius (``radius=r`` sets λ = 1/r), iterates :func:`lionk.step` with a decaying
learning rate, records the Lyapunov function H of every iterate (:func:`lionk.lyapunov.discrete`)
and stops on a KKT certificate. It never re-writes the update: every iterate comes from
:func:`lionk.step`.

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
from collections.abc import Callable
from typing import Any

import numpy as np

from ..core import kappa as _kappa
from ..core import validation as _check
from ..core.array_api import (
    array_namespace,
    device,
    dtype_name,
    finfo_eps,
    float64_or_widest,
    is_array,
    is_floating,
    to_float,
)
from ..core.step import LionKWarning
from ..core.step import init as _init
from ..core.step import make_hyper as _make_hyper
from ..core.step import step as _step
from . import lyapunov as _lyapunov

__all__ = ["minimize", "OptimizeResult", "default_lr", "SCHEDULES"]

SCHEDULES = ("cosine", "linear", "constant")

#: lr·λ of the default learning rate is ``min(_MAX_FRACTION, _TRAVEL / maxiter)``.
_MAX_FRACTION = 0.1
_TRAVEL = 50.0


class OptimizeResult(dict):
    """The result of :func:`minimize`: a ``dict`` whose keys are also attributes (as SciPy's).

    Keys: ``x``, ``fun``, ``F``, ``success``, ``status``, ``message``, ``nit``, ``nfev``,
    ``njev``, ``kkt_residual``, ``gap``, ``H``, ``constraint_violation``, ``radius``,
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


def default_lr(radius: float, maxiter: int) -> float:
    """The default initial learning rate: ``radius · min(0.1, 50 / maxiter)``.

    A Lion-κ step is ``x' = (1 − lr·λ)·x + lr·λ·(−∇K(c)/λ)``: a move of the fraction
    ``s = lr·λ`` of the way toward a point of the feasible set (∇K(c) lies in dom K*). A
    coordinate that ends on the boundary approaches it like ``exp(−λ·Σ_k lr_k)``; with
    ``s = 50/maxiter`` the cosine schedule has ``λ·Σ lr_k = 25`` (e^−25 ≈ 1e-11) and travels
    about 25 radii in all. ``s`` is capped at 0.1 for short runs.
    """
    return float(radius) * min(_MAX_FRACTION, _TRAVEL / int(maxiter))


def _schedule_table(schedule: Any, lr: Any, lam: float, maxiter: int,
                    kap: _kappa.Kappa) -> list[float]:
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
            lr0 = default_lr(1.0 / lam, maxiter)
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


def _numpy_like(x: Any) -> bool:
    mod = type(x).__module__.split(".")[0]
    return mod in ("numpy", "cupy")


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
        jitted = jax.jit(eager)
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
    return g


# ---------------------------------------------------------------------------------------------
# Diagnostics of one iterate (Python floats, computed in float64 where available).


def _wide(x: Any) -> Any:
    return float64_or_widest(array_namespace(x), x)


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

    def __call__(self, f: float, x: Any, g: Any, state: Any, lr: float) -> dict[str, float]:
        kap, lam = self.kap, self.lam
        out = {"f": f, "F": math.nan, "H": math.nan, "gap": math.nan, "violation": math.nan,
               "x_norm": math.nan}
        xw, gw = _wide(x), _wide(g)
        out["x_norm"] = _constraint_norm(kap, xw)
        if not self.available:
            return out
        try:
            out["violation"] = _lyapunov.constraint_violation(x, weight_decay=lam, kappa=kap)
            out["H"] = _lyapunov.discrete(f, x, state, lr=lr, betas=self.betas, weight_decay=lam,
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


def _kkt(d: dict[str, float], lam: float) -> float:
    """The KKT residual: max(gap / max(1, |F|), dist(λx, dom K*)); inf beyond the domain
    tolerance, nan when the κ cannot evaluate it."""
    gap, F = d["gap"], d["F"]
    if math.isnan(gap):
        return math.nan
    if math.isinf(gap) or math.isinf(F):
        return math.inf
    return max(max(gap, 0.0) / max(1.0, abs(F)), d["violation"] * lam)


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


def minimize(
    fun: Callable[[Any], Any],
    x0: Any,
    *,
    jac: Any = None,
    kappa: str | _kappa.Kappa = "sign",
    radius: float | None = None,
    weight_decay: float | None = None,
    lr: float | None = None,
    betas: tuple[float, float] = (0.9, 0.99),
    schedule: str | Callable[[int], float] = "cosine",
    maxiter: int = 1000,
    tol: float = 1e-6,
    callback: Callable[[OptimizeResult], Any] | None = None,
    progress: bool = False,
) -> OptimizeResult:
    r"""Minimise ``F(x) = f(x) + (1/λ)·K*(λx)`` with Lion-κ; for a norm κ, f subject to a norm ball.

    ======================  =====================================================================
    kappa                   problem solved (λ = 1/radius)
    ======================  =====================================================================
    sign (l1, lion)         min f(x)  s.t. ‖x‖_∞ ≤ radius
    l2, relativistic-l2     min f(x)  s.t. ‖x‖₂ ≤ radius  (relativistic-l2: plus a barrier)
    lp (p)                  min f(x)  s.t. ‖x‖_q ≤ radius, 1/p + 1/q = 1
    huber (delta)           min f(x) + (δλ/2)‖x‖₂²  s.t. ‖x‖_∞ ≤ radius
    deadzone (e)            min f(x) + e‖x‖₁  s.t. ‖x‖_∞ ≤ radius
    relativistic (delta)    min f(x) + (δ/λ)Σ(1 − √(1 − λ²x_i²))  (a barrier at ‖x‖_∞ = radius)
    quadratic               min f(x) + (λ/2)‖x‖₂²  (no constraint; lr must be given)
    ======================  =====================================================================

    Every iterate is ``lionk.step(x_k, ∇f(x_k), state, lr=lr_k, betas=betas,
    weight_decay=λ, kappa=kappa)``.

    Args:
        fun: ``f(x)``, returning a Python number or a 0-d array (``(f, g)`` when ``jac=True``).
        x0: the starting point: an array of any array-API library (NumPy, PyTorch, JAX, CuPy,
            ...) and real floating dtype, of any shape; or a Python number or (nested) list of
            numbers, converted like SciPy does to a float64 NumPy array (of the list's shape;
            a number becomes a 0-d array). x0 may lie outside the feasible set (phase 1 brings
            it in, theory.md §3).
        jac: ``jac(x) -> ∇f(x)`` (an array of x's shape; converted to x's library and dtype),
            ``True`` when ``fun`` returns ``(f, g)``, or None: autodiff for a torch x0
            (``torch.func.grad_and_value``) or a JAX x0 (``jax.value_and_grad``, under
            ``jax.jit`` when fun can be traced); NumPy and CuPy need a jac (TypeError).
        kappa: a κ name or a :class:`lionk.kappa.Kappa` (see the table).
        radius: r > 0, sets λ by the κ's radius rule, ``λ = constraint.scale / r``
            (``λ = 1/r`` for every built-in and for a κ that states no constraint). Give
            ``radius`` or ``weight_decay`` (λ > 0), not both; one of them is required.
        weight_decay: λ > 0, the radius being 1/λ.
        lr: the initial learning rate lr_0 (ε). Default: :func:`default_lr`,
            ``radius · min(0.1, 50/maxiter)`` (each step moves x the fraction lr·λ of the way
            toward a point of the feasible set). Required for ``kappa="quadratic"``. Must be
            None with a callable schedule.
        betas: ``(b1, b2)`` of Lion-κ, 0 ≤ b1 ≤ b2 < 1 for the Lyapunov guarantee.
        schedule: ``"cosine"`` (default) ``lr_k = lr_0·(1 + cos(πk/maxiter))/2``; ``"linear"``
            ``lr_k = lr_0·(1 − k/maxiter)``; ``"constant"`` ``lr_k = lr_0``; or a callable
            ``schedule(k) -> lr_k``, called for k = 0 … maxiter (lr_maxiter, which may be 0, only
            weighs H of the last iterate). A decaying schedule is what makes Lion converge to
            the optimum; at a constant lr it settles within O(lr) of it.
        maxiter: the largest number of steps (≥ 1).
        tol: the stopping tolerance (≥ 0; 0 runs all maxiter steps), see below.
        callback: ``callback(intermediate_result)`` after every step, with an
            :class:`OptimizeResult` holding ``x, fun, F, H, kkt_residual, constraint_violation,
            nit, lr``; returning True or raising StopIteration stops the run (status 2).
        progress: show a progress bar with f, H and the violation (tqdm when installed, else one
            line on stderr updated in place). Nothing is printed by default.

    Stopping rule, checked after every step k ≥ 1 (all values in float64, g = ∇f(x_k))::

        gap_k = (1/λ)·( K*(λx_k) + K(−g) + λ·⟨g, x_k⟩ )          # Fenchel–Young gap ≥ 0
        kkt_k = max( gap_k / max(1, |F(x_k)|),  dist(λx_k, dom K*) )   # the KKT residual
        stop when  kkt_k ≤ tol  and  |H_k − H_{k−1}| ≤ tol · max(1, |H_k|)

    ``gap_k`` is zero exactly at the KKT points of F (−∇f(x) ∈ ∂K*(λx), the Fenchel–Young
    equality) and, for convex f and feasible x, bounds the suboptimality:
    ``F(x_k) − min F ≤ gap_k``; success then certifies a relative accuracy tol in F. For Lion it
    is ``Σ_i (r|g_i| + g_i x_i)``, the Frank–Wolfe gap of the box. Points with
    ``dist(λx, dom K*) ≤ max(16·eps(dtype), tol)`` count as inside (K* evaluated at the nearest
    point of the domain, in F, the gap and H); farther out F, gap, kkt and H are +inf. H_k is
    :func:`lionk.lyapunov.discrete` at (x_k, m_k) with lr_k. For a user κ without ``value`` or
    ``conjugate`` neither can be computed: kkt and H are nan and the run ends at maxiter with
    ``success=False``.

    Returns:
        :class:`OptimizeResult` with ``x`` (library, device, shape and dtype of x0), ``fun`` =
        f(x), ``F`` = F(x), ``success``, ``status`` (0 converged, 1 maxiter reached, 2 stopped by
        the callback, 3 non-finite f or ∇f), ``message``, ``nit`` (steps taken), ``nfev``,
        ``njev``, ``kkt_residual``, ``gap``, ``H``, ``constraint_violation``
        (:func:`lionk.lyapunov.constraint_violation`), ``radius`` (the κ's
        ``constraint.radius(λ)``), ``weight_decay``, ``lr``
        (lr_0), ``kappa`` (the name), ``constraint`` (the κ's :class:`lionk.kappa.Constraint`
        fact, None when it states none) and ``history``: a dict of float64 NumPy arrays of length nit + 1,
        entry k for the iterate x_k: ``f``, ``F``, ``H``, ``violation``, ``kkt``, ``gap``,
        ``step_norm`` (‖x_k − x_{k−1}‖₂, nan at k = 0), ``lr`` (lr_k) and ``x_norm`` (‖x_k‖ in
        the constraint's norm, ``constraint.evaluate(x_k)``: ∞ for the box κ, 2 for l2 /
        relativistic-l2 / quadratic, q for lp; nan for a κ that states no constraint).
    """
    if not callable(fun):
        raise TypeError(f"fun: expected a callable f(x) -> float; received {type(fun).__name__}")
    kap = _kappa.resolve(kappa)
    lam = _resolve_lambda(radius, weight_decay, kap)
    maxiter = _check.counter("maxiter", maxiter, minimum=1)
    tol_f = _real("tol", tol)
    if not (math.isfinite(tol_f) and tol_f >= 0):
        raise ValueError(f"tol: expected a finite number >= 0; received {tol!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable or None; received {type(callback).__name__}")
    lrs = _schedule_table(schedule, lr, lam, maxiter, kap)
    hyper = _make_hyper(lrs[0], betas, lam, stacklevel=2)  # validates betas (warns on b1 > b2)
    betas_f = (float(hyper.b1), float(hyper.b2))

    x = _as_x0(x0)
    xp = array_namespace(x)
    counts = {"nfev": 0, "njev": 0}
    evaluate = _make_evaluator(fun, jac, x, counts)
    state = _init(x)
    dom_tol = max(16.0 * finfo_eps(xp, x.dtype), tol_f)
    diag = _Diagnostics(kap, lam, betas_f, dom_tol)
    names = ("f", "F", "H", "violation", "kkt", "gap", "step_norm", "lr", "x_norm")
    hist: dict[str, list[float]] = {n: [] for n in names}

    def record(d: dict[str, float], step_norm: float, k: int) -> None:
        d["kkt"] = _kkt(d, lam)
        d["step_norm"] = step_norm
        d["lr"] = lrs[k]
        for n in names:
            hist[n].append(float(d[n]))

    f_raw, g_raw = evaluate(x)
    f = _check_f(f_raw, 0)
    if not math.isfinite(f):
        raise ValueError(f"fun: expected a finite f(x0); received {f!r}")
    g = _check_g(g_raw, x, xp, "jac" if callable(jac) else "fun")
    d = diag(f, x, g, state, lrs[0])
    record(d, math.nan, 0)
    bar = _Progress(maxiter) if progress else None

    status, nit = 1, 0
    message = ""
    with warnings.catch_warnings():
        # make_hyper above warned once at the caller's line (b1 > b2); not again at every step
        warnings.filterwarnings("ignore", category=LionKWarning)
        try:
            for k in range(maxiter):
                x_new, state = _step(x, g, state, lr=lrs[k], betas=betas_f, weight_decay=lam,
                                     kappa=kap)
                step_norm = math.sqrt(_lyapunov.bound(x, x_new, 2.0))
                x, nit = x_new, k + 1
                f_raw, g_raw = evaluate(x)
                f = _check_f(f_raw, nit)
                g = _check_g(g_raw, x, xp, "jac" if callable(jac) else "fun")
                d = diag(f, x, g, state, lrs[nit])
                record(d, step_norm, nit)
                if bar is not None:
                    bar.update(nit, d)
                if not math.isfinite(f) or math.isnan(d["gap"]) and diag.available:
                    status = 3
                    what = "f" if not math.isfinite(f) else "∇f"
                    message = f"{what} is not finite at iteration {nit}; stopped"
                    break
                if callback is not None:
                    info = OptimizeResult(x=x, fun=f, F=d["F"], H=d["H"], kkt_residual=d["kkt"],
                                          constraint_violation=d["violation"], nit=nit, lr=lrs[k])
                    try:
                        stop = callback(info)
                    except StopIteration:
                        stop = True
                    if stop is True:
                        status = 2
                        message = f"stopped by the callback at iteration {nit}"
                        break
                h_prev, h_now = hist["H"][-2], hist["H"][-1]
                if d["kkt"] <= tol_f and abs(h_now - h_prev) <= tol_f * max(1.0, abs(h_now)):
                    status = 0
                    message = (f"converged: KKT residual {d['kkt']:.3g} <= tol {tol_f:.3g} and "
                               f"|H_k - H_k-1| = {abs(h_now - h_prev):.3g} <= tol·max(1, |H_k|)")
                    break
        finally:
            if bar is not None:
                bar.close(nit, d)

    if status == 1:
        if not diag.available:
            message = (f"maxiter ({maxiter}) reached; kappa {kap.name!r} has no value or "
                       "conjugate, so no KKT residual or H can certify the result")
        else:
            message = (f"maxiter ({maxiter}) reached before the stopping rule held: KKT residual "
                       f"{d['kkt']:.3g} (tol {tol_f:.3g}); raise maxiter or tol")
    history = {n: np.asarray(v, dtype=np.float64) for n, v in hist.items()}
    return OptimizeResult(
        x=x,
        fun=f,
        F=d["F"],
        success=status == 0,
        status=status,
        message=message,
        nit=nit,
        nfev=counts["nfev"],
        njev=counts["njev"],
        kkt_residual=d["kkt"],
        gap=d["gap"],
        H=d["H"],
        constraint_violation=d["violation"],
        radius=kap.constraint.radius(lam) if kap.constraint is not None else 1.0 / lam,
        weight_decay=lam,
        lr=lrs[0],
        kappa=kap.name,
        constraint=kap.constraint,
        history=history,
    )
