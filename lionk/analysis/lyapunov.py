r"""Lyapunov and constraint diagnostics for Lion-κ (theory.md §3–§5).

All functions are eager diagnostics: they read array values and return Python floats, evaluated
in float64 where the array's namespace and device have it (so their own rounding stays far below
that of a float32 trajectory). Momentum is lionk's positive exponential average of gradients.

Discrete Lyapunov function (explicit decay, ε' = ε/(1 − ελ))::

    c = ε'·b1 / (ε'·λ·(1 − b1) + 1 − b2)
    H(x, m) = f(x) + (1/λ)·K*(λx) + c·( K*(λx) + K(m) + λ·mᵀx )

Under 0 ≤ b1 ≤ b2 < 1, ε > 0, λ > 0, ελ < 1, λx₀ ∈ dom K* and f L-smooth, one step satisfies
``H(x', m') − H(x, m) ≤ (L/2)‖x' − x‖²`` (:func:`bound`); H is non-increasing for linear f.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from ..core import kappa as _kappa
from ..core import validation as _check
from ..core.array_api import array_namespace, float64_or_widest
from ..core.trees import flatten

__all__ = [
    "coefficient",
    "discrete",
    "bound",
    "constraint_violation",
    "continuous",
    "monitor",
]


def _jax_without_x64(xp: Any) -> bool:
    """True for a JAX namespace while ``jax_enable_x64`` is off (float64 is then unavailable and
    asking for it only warns and returns float32)."""
    if not getattr(xp, "__name__", "").startswith("jax"):
        return False
    jax = sys.modules.get("jax")
    if jax is None:  # pragma: no cover - a JAX array implies jax is imported
        return False
    return not bool(jax.config.jax_enable_x64)


def wide(x: Any) -> Any:
    """``x`` in float64 where its namespace and device have it, else unchanged (no warning).

    JAX without x64 has no float64: the array is returned as it is instead of asking JAX for a
    float64 it would refuse with a ``UserWarning`` (one per call, so once per iteration in a
    loop). The check reads the flag at every call, so turning x64 on later is honoured; no
    ``warnings.catch_warnings`` is used (it would reset the warnings' show-once registry).
    """
    xp = array_namespace(x)
    if _jax_without_x64(xp):
        return x
    return float64_or_widest(xp, x)


def _wide_leaves(tree: Any) -> list[Any]:
    leaves, _, _ = flatten(tree)
    return [wide(leaf) for leaf in leaves]


def _check_same_tree(fn: str, a: Any, b: Any, names: tuple[str, str]) -> None:
    """ValueError unless trees ``a`` and ``b`` have one structure and leaf shapes (a mismatch
    would otherwise be broadcast or truncated silently)."""
    a_leaves, a_def, paths = flatten(a)
    b_leaves, b_def, _ = flatten(b)
    if a_def != b_def:
        raise ValueError(
            f"{fn}: {names[1]}: expected the tree structure of {names[0]} ({a_def}); "
            f"received {b_def}"
        )
    for p, x, y in zip(paths, a_leaves, b_leaves):
        sx, sy = tuple(getattr(x, "shape", ())), tuple(getattr(y, "shape", ()))
        if sx != sy:
            raise ValueError(
                f"{fn}: {names[1]}{p}: expected shape {sx} (the shape of {names[0]}{p}); "
                f"received {sy}"
            )


def _dot(xs: list[Any], ys: list[Any]) -> float:
    total = 0.0
    for x, y in zip(xs, ys):
        xp = array_namespace(x)
        total += float(xp.sum(x * y))
    return total


def _known(name: str, value: Any) -> float:
    v = _check.real(name, value)
    if not isinstance(v, float):
        raise TypeError(f"{name}: expected a known real number (diagnostics read values); "
                        f"received the traced value {value!r}")
    return v


def _positive_wd(weight_decay: Any, fn: str) -> float:
    try:
        return _known("weight_decay", _check.weight_decay(weight_decay, positive=True))
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{fn}: {exc} (λ > 0 defines the constraint)") from None


def coefficient(*, lr: float, betas: tuple[float, float], weight_decay: float) -> float:
    """The constant c of H: ``ε'·b1 / (ε'·λ·(1 − b1) + 1 − b2)`` with ``ε' = ε/(1 − ελ)``.

    Requires the conditions of the guarantee that H certifies: ``lr >= 0``, betas in [0, 1),
    ``weight_decay > 0`` and ``lr * weight_decay < 1`` (ValueError naming the argument).
    """
    wd = _positive_wd(weight_decay, "coefficient")
    try:
        lr = _known("lr", _check.learning_rate(lr, allow_zero=True))
        b1, b2 = (_known(n, b) for n, b in zip(("betas[0]", "betas[1]"), _check.betas(betas)))
        _check.decay_product(lr, wd)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"coefficient: {exc}") from None
    return _coefficient_unchecked(lr, b1, b2, wd)


def _coefficient_unchecked(lr: float, b1: float, b2: float, wd: float) -> float:
    """:func:`coefficient` for Python floats its caller has already validated (``lionk.minimize``
    checks the schedule once per run, then calls this at every iteration)."""
    eps_p = lr / (1.0 - lr * wd)
    return eps_p * b1 / (eps_p * wd * (1.0 - b1) + 1.0 - b2)


def discrete(
    f_value: float,
    params: Any,
    state: Any,
    *,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    kappa: str | _kappa.Kappa = "sign",
    coefficient_value: float | None = None,
    domain_tol: float = 0.0,
) -> float:
    r"""H(x, m) of theory.md §4 for the explicit update: a Python float (``inf`` outside dom).

    ``H = f + (1/λ)K*(λx) + c·(K*(λx) + K(m) + λ mᵀx)`` with c from :func:`coefficient`.

    Args:
        f_value: f(x).
        params: the tree x.
        state: a :class:`lionk.State`, or the momentum tree m itself.
        lr, betas, weight_decay, kappa: the optimizer's settings (λ = weight_decay > 0).
        coefficient_value: use this c instead of :func:`coefficient` (for experiments and the
            conformance suite's negative controls).
        domain_tol: points with ``dist(λx, dom K*) ≤ domain_tol`` count as inside, K* being
            evaluated at the nearest point of the domain; the default 0 is the strict definition.
    """
    wd = _positive_wd(weight_decay, "discrete")
    kap = _kappa.resolve(kappa)
    c = coefficient(lr=lr, betas=betas, weight_decay=wd) if coefficient_value is None else float(coefficient_value)
    momentum = state.momentum if hasattr(state, "momentum") else state
    _check_same_tree("discrete", params, momentum, ("params", "momentum"))
    xs = _wide_leaves(params)
    ms = _wide_leaves(momentum)
    zs = [x * wd for x in xs]
    dist = kap.tree_domain_distance(zs)
    if not dist <= domain_tol:
        return math.inf
    kstar = kap.tree_conjugate(zs, on_domain=True)
    km = kap.tree_value(ms)
    mx = _dot(ms, xs)
    return float(f_value) + kstar / wd + c * (kstar + km + wd * mx)


def bound(params_before: Any, params_after: Any, L: float) -> float:
    """``(L/2)·‖x' − x‖²`` summed over the tree: the allowed increase of H for L-smooth f."""
    _check_same_tree("bound", params_before, params_after, ("params_before", "params_after"))
    a = _wide_leaves(params_before)
    b = _wide_leaves(params_after)
    total = 0.0
    for x0, x1 in zip(a, b):
        xp = array_namespace(x0)
        d = x1 - x0
        total += float(xp.sum(d * d))
    return 0.5 * float(L) * total


def constraint_violation(params: Any, *, weight_decay: float, kappa: str | _kappa.Kappa = "sign") -> float:
    """Distance of λx from dom K*, in units of x: ``dist(λx, dom K*) / λ`` (0 when feasible).

    For Lion this is ``max_i (|x_i| − 1/λ)_+``; phase 1 shrinks it at least by ``(1 − ελ)`` per
    step (theory.md §3) and it stays 0 once reached.
    """
    wd = _positive_wd(weight_decay, "constraint_violation")
    kap = _kappa.resolve(kappa)
    zs = [x * wd for x in _wide_leaves(params)]
    return kap.tree_domain_distance(zs) / wd


def continuous(
    f_value: float,
    params: Any,
    momentum: Any,
    *,
    alpha: float,
    gamma: float,
    lr: float,
    weight_decay: float,
    kappa: str | _kappa.Kappa = "sign",
) -> float:
    r"""H of the continuous-time Lion-κ ODE (theory.md §5).

    ``H = α f(x) + (γ/λ) K*(λx) + ((1 − εγ)/(1 + ελ))·(K*(λx) + K(m̂) − λ m̂ᵀx)`` where
    ``m̂ = −m`` is the paper's momentum (lionk's ``m`` is the positive average). Conditions:
    K convex, εγ ≤ 1, λx ∈ dom K*; then dH/dt ≤ 0 along the flow. Euler with step s maps to the
    discrete update with ``α = γ = (1 − b2)/s`` and ``1 − εγ = b1``.
    """
    wd = _positive_wd(weight_decay, "continuous")
    kap = _kappa.resolve(kappa)
    _check_same_tree("continuous", params, momentum, ("params", "momentum"))
    xs = _wide_leaves(params)
    ms = [-m for m in _wide_leaves(momentum)]
    zs = [x * wd for x in xs]
    if kap.tree_domain_distance(zs) > 0:
        return math.inf
    kstar = kap.tree_conjugate(zs)
    km = kap.tree_value(ms)
    mx = _dot(ms, xs)
    eps = float(lr)
    k = (1.0 - eps * gamma) / (1.0 + eps * wd)
    return alpha * float(f_value) + (gamma / wd) * kstar + k * (kstar + km - wd * mx)


# ---------------------------------------------------------------------------------------------
# The adapters' state, read without hand-collection.


def _is_torch_optimizer(obj: Any) -> bool:
    return hasattr(obj, "param_groups") and hasattr(obj, "state") and hasattr(obj, "step")


def _find_optax_state(state: Any) -> Any:
    """The ``LionKState`` inside an optax state (itself, or nested in chain / wrapper tuples)."""
    if type(state).__name__ == "LionKState" and hasattr(state, "mu") and hasattr(state, "count"):
        return state
    if isinstance(state, (tuple, list)):
        for item in state:
            found = _find_optax_state(item)
            if found is not None:
                return found
    inner = getattr(state, "inner_state", None)  # optax wrappers (MultiSteps, apply_if_finite…)
    if inner is not None:
        return _find_optax_state(inner)
    return None


def _torch_groups(opt: Any) -> list[tuple[str, list[Any], list[Any], float, tuple, float, Any]]:
    import torch

    groups = []
    for i, group in enumerate(opt.param_groups):
        xs, ms = [], []
        for p in group["params"]:
            x = p.detach()
            st = opt.state.get(p, {}) if hasattr(opt.state, "get") else opt.state[p]
            m = st.get("exp_avg") if isinstance(st, dict) else None
            xs.append(x)
            ms.append(torch.zeros_like(x) if m is None else m.detach())
        groups.append((f"param_groups[{i}]", xs, ms, float(group["lr"]),
                       tuple(float(b) for b in group["betas"]), float(group["weight_decay"]),
                       group["kappa"]))
    return groups


def monitor(
    optimizer: Any,
    f_value: float,
    *,
    params: Any = None,
    learning_rate: Any = None,
    betas: tuple[float, float] = (0.9, 0.99),
    weight_decay: float | None = None,
    kappa: str | _kappa.Kappa = "sign",
    domain_tol: float = 0.0,
) -> dict[str, float]:
    r"""The Lyapunov diagnostics of a running optimizer, read from its own state.

    ``H = f + Σ_groups [ (1/λ)K*(λx) + c·(K*(λx) + K(m) + λ mᵀx) ]`` (:func:`discrete` summed over
    the param groups, each with its own lr, betas, λ and κ; c from :func:`coefficient` at the lr
    of the *next* step), ``F = f + Σ (1/λ)K*(λx)`` and the constraint violation.

    * **torch**: ``monitor(opt, loss.item())`` for a :class:`lionk.torch.LionK`: params, momentum
      (``opt.state[p]["exp_avg"]``, zeros before the first step) and every group's options are
      read from ``opt``; the group's current ``lr`` (as a scheduler left it) is the next step's.
    * **optax**: ``monitor(opt_state, f_value, params=params, learning_rate=…, betas=(b1, b2),
      weight_decay=…, kappa=…)``: the momentum is the ``LionKState`` found in ``opt_state``
      (alone or inside ``optax.chain`` / wrapper states); optax keeps the hyper-parameters in
      the transformation, so pass the ones given to :func:`lionk.optax.lion_k` (a schedule is
      evaluated at the state's ``count``, the next step's). A ``mask`` is not supported.

    Args:
        optimizer: a ``lionk.torch.LionK`` or an optax state holding a ``LionKState``.
        f_value: f at the current params (the function the optimizer descends: with
            ``maximize=True``, the negated objective).
        params, learning_rate, betas, weight_decay, kappa: optax only (see above).
        domain_tol: as in :func:`discrete` (0: strict; a float32 run from outside the set
            stalls about ``eps/(lr·λ)`` outside it, docs/lyapunov.md).

    Returns:
        ``{"H": …, "F": …, "constraint_violation": …, "fenchel_young": …}``, Python floats:
        ``constraint_violation`` is the largest over the groups of ``dist(λx, dom K*)/λ`` (units
        of x), ``fenchel_young`` the sum of the groups' ``c·(K*(λx) + K(m) + λmᵀx) ≥ 0``; H and F
        are +inf when a group is farther than ``domain_tol`` from its domain.

    Raises:
        ValueError: a group with weight_decay 0 (H needs λ > 0), or an optax state without a
            ``LionKState`` / without the hyper-parameters.
    """
    if _is_torch_optimizer(optimizer):
        if params is not None or learning_rate is not None or weight_decay is not None:
            raise ValueError("monitor: a torch optimizer carries its params and options; pass "
                             "only monitor(opt, f_value)")
        groups = _torch_groups(optimizer)
    else:
        st = _find_optax_state(optimizer)
        if st is None:
            raise ValueError(
                "monitor: expected a lionk.torch.LionK or an optax state holding a LionKState "
                f"(from lionk.optax.lion_k); received {type(optimizer).__name__}"
            )
        if params is None or learning_rate is None or weight_decay is None:
            raise ValueError(
                "monitor: with an optax state pass params=, learning_rate= and weight_decay= "
                "(optax keeps the hyper-parameters in the transformation, not in its state)"
            )
        lr = learning_rate(st.count) if callable(learning_rate) else learning_rate
        xs, _, _ = flatten(params)
        ms, _, _ = flatten(st.mu)
        if len(xs) != len(ms):
            raise ValueError(f"monitor: params has {len(xs)} leaves but the state's momentum "
                             f"has {len(ms)}")
        groups = [("optax", list(xs), list(ms), float(lr), tuple(float(b) for b in betas),
                   float(weight_decay), kappa)]
    H = F = float(f_value)
    fy_total, violation = 0.0, 0.0
    for name, xs_g, ms_g, lr_g, betas_g, wd, kap_g in groups:
        if not (math.isfinite(wd) and wd > 0):
            raise ValueError(f"monitor: {name}: weight_decay must be > 0 (H is defined for "
                             f"λ > 0); received {wd!r}")
        kap = _kappa.resolve(kap_g)
        xw = [wide(x) for x in xs_g]
        mw = [wide(m) for m in ms_g]
        zs = [x * wd for x in xw]
        dist = kap.tree_domain_distance(zs)
        violation = max(violation, dist / wd)
        if not dist <= domain_tol:
            H = F = math.inf
            continue
        kstar = kap.tree_conjugate(zs, on_domain=True)
        c = coefficient(lr=lr_g, betas=betas_g, weight_decay=wd)
        fy = c * (kstar + kap.tree_value(mw) + wd * _dot(mw, xw))
        fy_total += fy
        F += kstar / wd
        H += kstar / wd + fy
    return {"H": H, "F": F, "constraint_violation": violation, "fenchel_young": fy_total}
