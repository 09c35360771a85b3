r"""The conformance checks: tiers, Lyapunov monotonicity, negative controls, phase 1.

Tiers (reproducibility.md):

* **bitwise** — free-running trajectories of (params, momentum) equal to numpy's by bit pattern
  at every step; every NaN equals every NaN (payload and sign bit are not compared: IEEE 754
  leaves them unspecified, and one array can hold two NaN patterns, ``0x7fc00000`` from a NaN
  input and ``0xffc00000`` from ``inf − inf`` on x86), +0 and −0 differ.
* **ulp** (teacher-forced) — at every step the backend is fed numpy's state and gradient and each
  output must lie within ``K_ULP`` units of ``eps·scale`` of numpy's output, where ``scale`` is the
  sum of the magnitudes of the terms that produced it (``|(1−lr·wd)·x| + lr·|∇K(c)|`` for params,
  ``b2·|m| + (1−b2)·|g|`` for momentum, plus ``lr·Lip(∇K)·|c|`` for a κ with continuous ∇K).
  Elements whose ``c`` lies within ``K_ULP·eps·(b1·|m| + (1−b1)·|g|)`` of a discontinuity of ∇K
  (0 for sign, ±e for deadzone) are *ties*: their update may flip legitimately; they are counted,
  and the count must stay below ``MAX_TIE_FRACTION`` of the elements checked.

Lyapunov (theory.md §4): along the backend's own trajectory,
``H(x_{t+1}, m_{t+1}) − H(x_t, m_t) ≤ (L/2)‖x_{t+1} − x_t‖² + tol_t`` with
``tol_t = C_LYAP · eps(dtype) · M_t``, ``M_t`` the sum of the magnitudes of H's terms and of the
lr-sized perturbations of x (see :func:`lyapunov_magnitude`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import lionk
from lionk import kappa as kappa_mod

from .backends import Backend
from .problems import LINEAR, PROBLEMS, QUADRATIC, TOY1D, Problem

K_ULP = 8
MAX_TIE_FRACTION = 1e-3
C_LYAP = 16.0


@dataclass(frozen=True)
class Hyper:
    lr: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.5

    def kw(self) -> dict[str, Any]:
        return {"lr": self.lr, "betas": self.betas, "weight_decay": self.weight_decay}


DEFAULT = Hyper()
TOY = Hyper(lr=0.01, betas=(0.9, 0.99), weight_decay=1.0)
PHASE1 = Hyper(lr=0.05, betas=(0.9, 0.99), weight_decay=1.0)

# What the ulp tier needs to know about ∇K comes from the κ's own facts (lionk.kappa.Kappa), so a
# user κ is checked like a built-in: ``discontinuities`` (values of c_i where ∇K jumps: a rounding
# difference in c may flip the update there; ``discontinuities_at(c)`` where they move with c) and ``lipschitz`` (an error in c moves ∇K(c) by at
# most lipschitz·|Δc|; None: not stated, no such term).


@dataclass
class Check:
    name: str
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Running trajectories.


def eps_of(dtype: str) -> float:
    return float(np.finfo(dtype).eps)


def _tree_np(backend: Backend, tree: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.array(backend.get(v), copy=True) for k, v in tree.items()}


def _put_tree(backend: Backend, tree: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: backend.put(v) for k, v in tree.items()}


def _put_data(backend: Backend, data: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {k: {n: backend.put(v) for n, v in leaf.items()} for k, leaf in data.items()}


_REFERENCE_CACHE: dict[tuple[Any, ...], list[tuple[dict, dict]]] = {}


def reference_trajectory(ref: Backend, problem: Problem, kap: kappa_mod.Kappa, dtype: str,
                         steps: int, hyper: Hyper) -> list[tuple[dict, dict]]:
    """The numpy trajectory from the problem's own x0, computed once per process."""
    key = (ref.name, problem.name, kap, dtype, steps, hyper)
    if key not in _REFERENCE_CACHE:
        _REFERENCE_CACHE[key] = trajectory(ref, problem, kap, dtype, steps, hyper)
    return _REFERENCE_CACHE[key]


def trajectory(backend: Backend, problem: Problem, kap: kappa_mod.Kappa, dtype: str, steps: int,
               hyper: Hyper, x0: dict[str, np.ndarray] | None = None,
               m0: dict[str, np.ndarray] | None = None) -> list[tuple[dict, dict]]:
    """Free-running (x_t, m_t), t = 0..steps, as numpy arrays; gradients computed by the backend."""
    data = _put_data(backend, problem.data(dtype))
    x0 = problem.x0(dtype) if x0 is None else x0
    params = _put_tree(backend, x0)
    state = lionk.init(params)
    if m0 is not None:
        state = lionk.State(0, _put_tree(backend, m0), 0)
    fn = backend.step_fn(kappa=kap, grad_fn=problem.grad, **hyper.kw())
    out = [(_tree_np(backend, params), _tree_np(backend, state.momentum))]
    for _ in range(steps):
        params, state = fn(params, state, data)
        out.append((_tree_np(backend, params), _tree_np(backend, state.momentum)))
    return out


def _bits(a: np.ndarray) -> np.ndarray:
    """The bit patterns of ``a`` as integers, every NaN replaced by the one canonical quiet NaN
    (the bitwise tier does not cover NaN payloads or the sign of a NaN; it covers every other
    bit, so +0 and −0 differ)."""
    a = np.where(np.isnan(a), np.array(np.nan, a.dtype), a)
    return a.view(np.uint64 if a.dtype == np.float64 else np.uint32)


def first_bit_difference(ref: list[tuple[dict, dict]], got: list[tuple[dict, dict]]) -> int | None:
    """The first step whose (x, m) differ by bit pattern from the reference, or None."""
    for t, ((rx, rm), (gx, gm)) in enumerate(zip(ref, got)):
        for r, g in ((rx, gx), (rm, gm)):
            for k in r:
                if r[k].dtype != g[k].dtype or not np.array_equal(_bits(r[k]), _bits(g[k])):
                    return t
    return None


# ---------------------------------------------------------------------------------------------
# Tier checks.


def check_bitwise(backend: Backend, ref_backend: Backend, kap: kappa_mod.Kappa, dtype: str,
                  steps: int, problems: list[Problem] | None = None) -> Check:
    problems = problems or list(PROBLEMS.values())
    detail: dict[str, Any] = {}
    ok = True
    for p in problems:
        hyper = TOY if p is TOY1D else DEFAULT
        ref = reference_trajectory(ref_backend, p, kap, dtype, steps, hyper)
        got = trajectory(backend, p, kap, dtype, steps, hyper)
        t = first_bit_difference(ref, got)
        detail[p.name] = "identical" if t is None else f"first difference at step {t}"
        ok = ok and t is None
    return Check("bitwise", ok, detail)


def _np_grad_tree(kap: kappa_mod.Kappa, cs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    keys = sorted(cs)
    us = kap.tree_grad([cs[k] for k in keys])
    return dict(zip(keys, (np.asarray(u) for u in us)))


def check_ulp(backend: Backend, ref_backend: Backend, kap: kappa_mod.Kappa, dtype: str,
              steps: int, problem: Problem | None = None, hyper: Hyper = DEFAULT) -> Check:
    """Teacher-forced: at each step feed numpy's (x_t, m_t, g_t) and compare one step."""
    problem = problem or PROBLEMS["polynomial"]
    ref = reference_trajectory(ref_backend, problem, kap, dtype, steps, hyper)
    data_np = problem.data(dtype)
    fn = backend.step_fn(kappa=kap, **hyper.kw())
    eps = eps_of(dtype)
    b1, b2 = hyper.betas
    decay = 1.0 - hyper.lr * hyper.weight_decay
    lip = kap.lipschitz if kap.lipschitz is not None else 0.0
    worst_x = worst_m = 0.0
    ties = checked = 0
    for t in range(steps):
        xs, ms = ref[t]
        nx, nm = ref[t + 1]
        gs = problem.grad(xs, data_np)
        params = _put_tree(backend, xs)
        state = lionk.State(t, _put_tree(backend, ms), 0)
        out_p, out_s = fn(params, _put_tree(backend, gs), state)
        gx, gm = _tree_np(backend, out_p), _tree_np(backend, out_s.momentum)
        cs = {k: (b1 * ms[k].astype(np.float64) + (1 - b1) * gs[k].astype(np.float64)) for k in xs}
        cmag = {k: b1 * np.abs(ms[k].astype(np.float64)) + (1 - b1) * np.abs(gs[k].astype(np.float64)) for k in xs}
        us = _np_grad_tree(kap, {k: cs[k].astype(dtype) for k in cs})
        for k in xs:
            x64, m64, g64 = (a[k].astype(np.float64) for a in (xs, ms, gs))
            tie = np.zeros(x64.shape, bool)
            # where ∇K jumps for this input (fixed, or moving with c: deadzone's "auto" e, itself
            # computed with rounding, so a tie is within the rounding of c or of the jump)
            for d in kap.discontinuities_at(cs[k].astype(dtype)):
                tie |= np.abs(cs[k] - d) <= K_ULP * eps * (cmag[k] + abs(d))
            scale_x = np.abs(decay * x64) + hyper.lr * np.abs(us[k].astype(np.float64)) + hyper.lr * lip * cmag[k]
            scale_m = b2 * np.abs(m64) + (1 - b2) * np.abs(g64)
            ex = np.abs(gx[k].astype(np.float64) - nx[k].astype(np.float64))
            em = np.abs(gm[k].astype(np.float64) - nm[k].astype(np.float64))
            with np.errstate(divide="ignore", invalid="ignore"):
                rx = np.where(ex == 0, 0.0, ex / (eps * scale_x))
                rm = np.where(em == 0, 0.0, em / (eps * scale_m))
            rx = np.where(tie, 0.0, rx)
            worst_x = max(worst_x, float(np.max(rx, initial=0.0)))
            worst_m = max(worst_m, float(np.max(rm, initial=0.0)))
            ties += int(np.count_nonzero(tie & (ex > 0)))
            checked += int(x64.size)
    tie_frac = ties / max(checked, 1)
    ok = worst_x <= K_ULP and worst_m <= K_ULP and tie_frac <= MAX_TIE_FRACTION
    return Check("ulp", ok, {
        "max_error_params_ulp": round(worst_x, 3),
        "max_error_momentum_ulp": round(worst_m, 3),
        "k_ulp": K_ULP,
        "flipped_ties": ties,
        "elements_checked": checked,
    })


# ---------------------------------------------------------------------------------------------
# Lyapunov.


def inside_start(problem: Problem, kap: kappa_mod.Kappa, dtype: str, hyper: Hyper,
                 margin: float = 0.8) -> dict[str, np.ndarray]:
    """The problem's x0 scaled so that λ·x0 lies well inside dom K* (gauge ≤ ``margin``)."""
    x0 = problem.x0(dtype)
    lam = hyper.weight_decay
    keys = sorted(x0)
    z = [np.asarray(x0[k], np.float64) * lam for k in keys]
    gauge = _gauge(kap, z)
    s = 1.0 if gauge <= margin else margin / gauge
    return {k: (np.asarray(x0[k], np.float64) * s).astype(dtype) for k in keys}


def _gauge(kap: kappa_mod.Kappa, z: list[np.ndarray]) -> float:
    """How far out z is: the smallest r ≥ 0 with z/r in dom K* (linear along rays for balls)."""
    if kap.tree_domain_distance([zi * 1e6 for zi in z]) == 0:
        return 0.0  # dom K* is everything
    lo, hi = 0.0, 1.0
    while kap.tree_domain_distance([zi / hi for zi in z]) > 0:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if kap.tree_domain_distance([zi / mid for zi in z]) > 0:
            lo = mid
        else:
            hi = mid
    return hi


def lyapunov_magnitude(problem: Problem, kap: kappa_mod.Kappa, xs: dict, ms: dict, data: dict,
                       hyper: Hyper, c: float) -> float:
    """M: sum of the magnitudes of H's terms and of the lr-sized perturbations of x.

    ``M = Σ|∂f/∂x_i|(|x_i| + lr) + (1/λ + c)|K*(λx)| + c(|K(m)| + Σ|m_i| + λ Σ|m_i|(|x_i| + lr))``
    — each rounding of the step perturbs x_i by at most a few eps·(|x_i| + lr) and m_i by a few
    eps·|m_i|, and H responds to those perturbations with the weights above.
    """
    lam, lr = hyper.weight_decay, hyper.lr
    keys = sorted(xs)
    x = [np.asarray(xs[k], np.float64) for k in keys]
    m = [np.asarray(ms[k], np.float64) for k in keys]
    sens = problem.sensitivity(xs, data)
    total = sum(float(np.sum(sens[k] * (np.abs(xi) + lr))) for k, xi in zip(keys, x))
    kstar = kap.tree_conjugate([xi * lam for xi in x], on_domain=True)
    total += (1.0 / lam + c) * abs(kstar)
    total += c * (abs(kap.tree_value(m)) + sum(float(np.sum(np.abs(mi))) for mi in m))
    total += c * lam * sum(float(np.sum(np.abs(mi) * (np.abs(xi) + lr))) for mi, xi in zip(m, x))
    return total


def check_lyapunov(backend: Backend, kap: kappa_mod.Kappa, dtype: str, steps: int,
                   problem: Problem, hyper: Hyper = DEFAULT, *, c_override: float | None = None,
                   x0: dict[str, np.ndarray] | None = None,
                   m0: dict[str, np.ndarray] | None = None, name: str = "lyapunov") -> Check:
    """H along the backend's own trajectory never rises by more than (L/2)‖Δx‖² + tol_t."""
    eps = eps_of(dtype)
    if x0 is None:
        x0 = inside_start(problem, kap, dtype, hyper)
    traj = trajectory(backend, problem, kap, dtype, steps, hyper, x0=x0, m0=m0)
    data_np = problem.data(dtype)
    c = lionk.lyapunov.coefficient(**hyper.kw()) if c_override is None else c_override
    dom_tol = 4.0 * eps  # λx' may leave the domain by a rounding of (1 − lr·wd)·x − lr·u
    L = problem.L or 0.0

    def H(xs: dict, ms: dict) -> float:
        f = problem.value(xs, data_np)
        return lionk.lyapunov.discrete(
            f, _put_tree(backend, xs), _put_tree(backend, ms), kappa=kap,
            coefficient_value=c, domain_tol=dom_tol, **hyper.kw(),
        )

    hs = [H(*traj[0])]
    if not math.isfinite(hs[0]):
        return Check(name, False, {"violation": "H(x0, m0) = +inf: λ·x0 is outside dom K*",
                                   "first_violation_step": 0})
    worst_ratio = -math.inf
    first_bad = None
    max_tol = 0.0
    max_increase = -math.inf
    for t in range(steps):
        (xs, ms), (nxs, nms) = traj[t], traj[t + 1]
        h1 = H(nxs, nms)
        hs.append(h1)
        allowed = lionk.lyapunov.bound(xs, nxs, L)
        mag = max(lyapunov_magnitude(problem, kap, xs, ms, data_np, hyper, c),
                  lyapunov_magnitude(problem, kap, nxs, nms, data_np, hyper, c))
        tol = C_LYAP * eps * mag
        max_tol = max(max_tol, tol)
        excess = (h1 - hs[t]) - allowed
        max_increase = max(max_increase, h1 - hs[t])
        ratio = excess / tol if tol > 0 else (math.inf if excess > 0 else 0.0)
        worst_ratio = max(worst_ratio, ratio)
        if (not math.isfinite(h1) or excess > tol) and first_bad is None:
            first_bad = t
    return Check(name, first_bad is None, {
        "problem": problem.name,
        "L": L,
        "H_first": hs[0],
        "H_last": hs[-1],
        "max_increase": max_increase,
        "max_excess_over_tol": worst_ratio,
        "max_tol": max_tol,
        "tol_rule": f"{C_LYAP:g}*eps*M_t",
        "first_violation_step": first_bad,
    })


def tight_start(dtype: str, hyper: Hyper) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A state where the Lyapunov inequality for linear f is nearly tight (so a wrong H shows).

    Every coordinate sits on the box edge on the side f decreases (x = −sign(a)/λ), with a
    momentum just large enough to point the update the other way:
    m = −1.01·a·(1 − b1)/b1, so b1·m + (1 − b1)·a = −0.01·(1 − b1)·a and the step leaves the edge,
    raising f; only the Fenchel–Young term of H pays for it, at exactly the right c.
    """
    b1 = hyper.betas[0]
    data = LINEAR.data(dtype)
    x0 = {k: (-np.sign(d["a"]) / hyper.weight_decay).astype(dtype) for k, d in data.items()}
    m0 = {k: (-1.01 * d["a"] * (1 - b1) / b1).astype(dtype) for k, d in data.items()}
    return x0, m0


def negative_controls(backend: Backend, dtype: str = "float64", steps: int = 200) -> list[Check]:
    """The four negative controls of theory.md §4; each must be *detected* as a violation.

    The same check that passes for the right H runs on a wrong one; a control that the check
    cannot tell from a valid configuration is reported as NOT DETECTED (a failure).
    """
    kap = kappa_mod.get("sign")
    out = []
    # 1. b1 > b2: the coefficient formula no longer gives a Lyapunov function.
    h = Hyper(lr=0.1, betas=(0.99, 0.5), weight_decay=1.0)
    x0, m0 = tight_start(dtype, h)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lionk.LionKWarning)  # the warning is expected here
        out.append(check_lyapunov(backend, kap, dtype, steps, LINEAR, h, x0=x0, m0=m0,
                                  name="b1 > b2"))
    # 2. c without the leading ε'.
    h = Hyper(lr=0.01, betas=(0.9, 0.99), weight_decay=0.5)
    ep = h.lr / (1 - h.lr * h.weight_decay)
    c_bad = h.betas[0] / (ep * h.weight_decay * (1 - h.betas[0]) + 1 - h.betas[1])
    out.append(check_lyapunov(backend, kap, dtype, steps, LINEAR, h, c_override=c_bad,
                              name="c without leading eps'"))
    # 3. c from ε instead of ε' (a smaller c: visible where the inequality is tight).
    h = Hyper(lr=0.3, betas=(0.9, 0.99), weight_decay=2.0)
    c_bad = h.lr * h.betas[0] / (h.lr * h.weight_decay * (1 - h.betas[0]) + 1 - h.betas[1])
    x0, m0 = tight_start(dtype, h)
    out.append(check_lyapunov(backend, kap, dtype, steps, LINEAR, h, c_override=c_bad,
                              x0=x0, m0=m0, name="c from eps instead of eps'"))
    # 4. start outside dom K* (H = +inf there).
    h = DEFAULT
    x0 = {k: (v * (4.0 / h.weight_decay)).astype(dtype) for k, v in LINEAR.x0(dtype).items()}
    out.append(check_lyapunov(backend, kap, dtype, steps, LINEAR, h, x0=x0,
                              name="start outside dom K*"))
    for chk in out:
        chk.detail["detected"] = not chk.ok
    return out


def positive_controls(backend: Backend, dtype: str = "float64", steps: int = 200) -> list[Check]:
    """The negative controls' tight starts with the RIGHT H: these must pass (so a detection
    above is due to the wrong H, not to the start)."""
    kap = kappa_mod.get("sign")
    out = []
    for h in (Hyper(lr=0.3, betas=(0.9, 0.99), weight_decay=2.0),
              Hyper(lr=0.1, betas=(0.5, 0.99), weight_decay=1.0)):
        x0, m0 = tight_start(dtype, h)
        out.append(check_lyapunov(backend, kap, dtype, steps, LINEAR, h, x0=x0, m0=m0,
                                  name=f"tight start, right H (lr={h.lr}, betas={h.betas})"))
    return out


# ---------------------------------------------------------------------------------------------
# Phase 1.


def check_phase1(backend: Backend, kap: kappa_mod.Kappa, dtype: str, steps: int,
                 hyper: Hyper = PHASE1) -> Check:
    """constraint_violation(x_t) ≤ (1−ελ)^t·v_0 + accumulated rounding, and 0 stays 0."""
    eps = eps_of(dtype)
    lam, lr = hyper.weight_decay, hyper.lr
    x0 = LINEAR.x0(dtype)
    keys = sorted(x0)
    z = [np.asarray(x0[k], np.float64) * lam for k in keys]
    g = _gauge(kap, z)
    if g == 0.0:
        return Check("phase1", True, {"note": "dom K* is everything: nothing to contract"})
    scale = 10.0 / g  # start at gauge 10: e.g. ‖x0‖_∞ = 10/λ for Lion
    x0 = {k: (np.asarray(x0[k], np.float64) * scale).astype(dtype) for k in keys}
    traj = trajectory(backend, LINEAR, kap, dtype, steps, hyper, x0=x0)
    viol = [lionk.lyapunov.constraint_violation(_put_tree(backend, xs), weight_decay=lam, kappa=kap)
            for xs, _ in traj]
    rho = 1.0 - lr * lam
    acc = 0.0
    reached = None
    ok = True
    first_bad = None
    for t in range(1, len(traj)):
        xmax = max(float(np.max(np.abs(v), initial=0.0)) for v in traj[t - 1][0].values())
        acc = rho * acc + 4.0 * eps * (xmax + lr)
        limit = rho**t * viol[0] + acc
        if reached is not None:
            limit = 4.0 * eps * (xmax + lr)  # once inside, only rounding may show
        if viol[t] > limit:
            ok = False
            first_bad = first_bad if first_bad is not None else t
        if reached is None and viol[t] == 0.0:
            reached = t
    return Check("phase1", ok, {
        "v0": viol[0], "v_last": viol[-1], "contraction": rho, "reached_at": reached,
        "first_violation_step": first_bad,
    })


def check_toy(backend: Backend, dtype: str, steps: int) -> Check:
    """theory.md §7: f = (x − 2)², λ = 1, Lion, lr 0.01: x → 1 (the box edge)."""
    kap = kappa_mod.get("sign")
    x0 = {"x": np.asarray(-0.5, dtype)}
    traj = trajectory(backend, TOY1D, kap, dtype, max(steps, 1000), TOY, x0=x0)
    x_last = float(traj[-1][0]["x"])
    ok = abs(x_last - 1.0) <= 2 * TOY.lr
    return Check("toy1d", ok, {"x_final": x_last, "expected": 1.0, "tolerance": 2 * TOY.lr})


__all__ = [
    "Check", "Hyper", "DEFAULT", "check_bitwise", "check_ulp", "check_lyapunov",
    "negative_controls", "check_phase1", "check_toy", "QUADRATIC", "LINEAR",
]
