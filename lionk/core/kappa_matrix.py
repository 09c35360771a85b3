r"""Matrix κ: the nuclear norm (Muon as a Lion-κ) and per-leaf κ selection.

``nuclear``: K(Y) = s·‖Y‖_* (s·sum of singular values), ∇K(Y) = s·U Vᵀ for Y = U Σ Vᵀ (the
polar factor: Muon's "orthogonalised" update), K*(Z) = indicator of ‖Z‖_op ≤ s, so with weight
decay λ Lion-κ solves ``min f(X) s.t. ‖X‖_op ≤ s/λ`` (Chen, Li, Liu 2025, "Muon Optimizes Under
Spectral Norm Constraints"). The distance to dom K* is ``(σ_max(Z) − s)_+``.

Shapes, as Muon does: a 2-D leaf is the matrix; a leaf with more dims is reshaped to
``(shape[0], prod(shape[1:]))`` (a convolution's filters as rows); a 1-D leaf is the row vector
``(1, n)`` (then ∇K = y/‖y‖₂, the ``l2`` κ) and a 0-d leaf the 1×1 matrix (∇K = sign).

The polar factor is computed by

* ``polar="svd"`` (default): the thin SVD of the array API's ``linalg`` extension, in the leaf's
  dtype: ∇K = U·diag(1{σ_i > tol})·Vᵀ with ``tol = max(rows, cols)·eps·σ_max`` (singular values
  that are zero to rounding contribute 0, so ∇K(0) = 0 as sign(0) = 0; any W with ‖W‖_op ≤ 1 on
  the null spaces would be a valid subgradient too). The exact reference: the certificate
  (Lyapunov function, spectral-norm ball) holds for it.
* ``polar="newton-schulz"``: Muon's iteration. ``X ← Y/max(‖Y‖_F, eps)`` (on the transpose when
  rows > cols), then ``ns_steps`` times ``A = X Xᵀ; B = b·A + c·A A; X = a·X + B X`` with
  ``(a, b, c) = ns_coefficients`` (Muon: (3.4445, −4.7750, 2.0315), 5 steps). With
  ``ns_dtype="bfloat16"`` (Muon's practice) every product and combination is formed in float32
  from bfloat16 operands and rounded once to bfloat16, as torch's bfloat16 ``addmm`` does. The
  result is U·p(Σ)·Vᵀ where p is the iterated quintic: its singular values lie in a band around 1,
  not exactly 1 (for Muon's coefficients and 5 steps, at most p_max = 1.2024 in exact arithmetic:
  :func:`newton_schulz_band`). It is the semantic tier against ``svd``; the invariant ball of
  phase 1 becomes ``‖X‖_op ≤ s·p_max/λ`` (up to the bfloat16 rounding of the iterates).

``scale`` s: a positive number, or a rule of the leaf's matrix shape (rows A, cols B):
``"original"`` √max(1, A/B) (Keller Jordan's Muon, torch's default ``adjust_lr_fn``),
``"match_rms_adamw"`` 0.2·√max(A, B) (Moonshot), ``"rms"`` √max(A, B) (per-element RMS of
∇K ≈ 1, as sign's: Lion's learning rate carries over).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from . import kappa as _kappa
from .array_api import Array, array_namespace, device, dtype_name, finfo_eps, resolve_dtype

__all__ = [
    "Nuclear",
    "Muon",
    "PerLeaf",
    "MUON_COEFFICIENTS",
    "muon_settings",
    "OptaxMuon",
    "optax_muon_settings",
    "optax_muon_b1",
    "newton_schulz",
    "newton_schulz_band",
    "polar_svd",
    "bind",
]

MUON_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
MUON_STEPS = 5
MUON_EPS = 1e-7
OPTAX_MUON_EPS = 1e-8  # optax.contrib.muon's eps, added to the Frobenius norm
POLARS = ("svd", "newton-schulz")
SCALES = ("original", "match_rms_adamw", "rms")


# ---------------------------------------------------------------------------------------------
# Shapes.


def _matrix_shape(shape: Sequence[int]) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        return (1, 1)
    if len(shape) == 1:
        return (1, shape[0])
    return (shape[0], math.prod(shape[1:]))


def _as_matrix(y: Array) -> Array:
    xp = array_namespace(y)
    rows, cols = _matrix_shape(y.shape)
    if tuple(y.shape) == (rows, cols):
        return y
    return xp.reshape(y, (rows, cols))


def shape_scale(scale: Any, shape: Sequence[int]) -> float:
    """The factor s for a leaf of ``shape`` (a number, or a rule's value; see the module doc)."""
    if not isinstance(scale, str):
        return float(scale)
    a, b = _matrix_shape(shape)
    if scale == "original":
        return math.sqrt(max(1.0, a / b))
    if scale == "match_rms_adamw":
        return 0.2 * math.sqrt(max(a, b))
    return math.sqrt(max(a, b))  # "rms"


# ---------------------------------------------------------------------------------------------
# Polar factors.


def _svd_input(y: Array) -> Array:
    """``y`` itself, or float32 for 16-bit floats (LAPACK and torch have no half SVD)."""
    if dtype_name(y.dtype) in ("bfloat16", "float16"):
        xp = array_namespace(y)
        return xp.astype(y, _f32(xp, y))
    return y


def polar_svd(y: Array) -> Array:
    """U·diag(1{σ > tol})·Vᵀ of the matrix ``y`` (2-D), from the thin SVD in ``y``'s dtype
    (float32 for 16-bit floats, rounded back)."""
    xp = array_namespace(y)
    if 0 in tuple(y.shape):
        return y
    if dtype_name(y.dtype) in ("bfloat16", "float16"):
        return xp.astype(polar_svd(_svd_input(y)), y.dtype)
    u, s, vh = xp.linalg.svd(y, full_matrices=False)
    tol = max(int(y.shape[0]), int(y.shape[1])) * finfo_eps(xp, y.dtype)
    keep = s > xp.max(s) * tol
    u = xp.where(keep[None, :], u, xp.zeros_like(u))
    return xp.matmul(u, vh)


def _f32(xp: Any, like: Array) -> Any:
    return xp.float32 if hasattr(xp, "float32") else like.dtype


def _f64(xp: Any, like: Array) -> Any:
    """float64 where the namespace and device have it (None otherwise)."""
    f64 = getattr(xp, "float64", None)
    if f64 is None:
        return None
    try:
        ok = xp.astype(xp.zeros((1,), dtype=_f32(xp, like), device=device(like)), f64).dtype == f64
    except Exception:  # a device without float64 (e.g. MPS)
        return None
    return f64 if ok else None


def newton_schulz(
    y: Array,
    *,
    coefficients: Sequence[float] = MUON_COEFFICIENTS,
    steps: int = MUON_STEPS,
    eps: float = MUON_EPS,
    dtype: Any = None,
    eps_mode: str = "max",
) -> Array:
    """Muon's quintic Newton–Schulz iteration on the 2-D ``y``; returns ``y``'s dtype.

    ``dtype`` (e.g. ``"bfloat16"``): the dtype the iterates are stored in. Narrower than float32,
    each product and combination is computed in float32 from the stored operands and rounded once
    (torch's bfloat16 ``addmm`` on CPU and GPU: float32 accumulation, one rounding); ``None``
    iterates in ``y``'s dtype. ``eps_mode``: ``"max"`` divides by ``max(‖Y‖_F, eps)`` (torch),
    ``"add"`` by ``‖Y‖_F + eps`` (optax).
    """
    xp = array_namespace(y)
    a, b, c = (float(v) for v in coefficients)
    x = y if dtype is None else xp.astype(y, resolve_dtype(xp, dtype))
    it = x.dtype  # (a dtype object: NumPy's bfloat16 comes from ml_dtypes)
    narrow = dtype_name(it) in ("bfloat16", "float16")
    acc = _f32(xp, y) if narrow else it

    def store(t: Array) -> Array:
        return t if t.dtype == it else xp.astype(t, it)

    def wide(t: Array) -> Array:
        return t if t.dtype == acc else xp.astype(t, acc)

    tall = int(y.shape[0]) > int(y.shape[1])
    if tall:
        x = xp.matrix_transpose(x)
    xw = wide(x)
    # ‖X‖_F accumulated in the wide dtype, stored (rounded) like torch's norm of a bfloat16 tensor
    norm = store(xp.sqrt(xp.sum(xw * xw)))
    if eps_mode == "add":  # optax: x / (‖x‖_F + eps)
        norm = store(norm + float(eps))
    else:  # torch: x / max(‖x‖_F, eps)
        norm = xp.maximum(norm, xp.asarray(eps, dtype=it, device=device(x)))
    x = store(xw / wide(norm))  # Muon divides by the norm (not the exact path: semantic tier)
    exact = _f64(xp, x) if narrow else None
    if exact is None:  # iterate in the dtype itself: plain array operations
        for _ in range(int(steps)):
            xw = wide(x)
            gram = store(xp.matmul(xw, xp.matrix_transpose(xw)))
            gw = wide(gram)
            upd = store(b * gw + c * xp.matmul(gw, gw))
            x = store(a * xw + xp.matmul(wide(upd), xw))
    else:
        # torch's bfloat16 addmm: the product accumulated in float32, then beta·C + alpha·acc
        # with alpha and beta rounded to float32, formed without intermediate rounding (float64
        # here), rounded to float32 and stored (bfloat16)
        a32, b32, c32 = (float(np.float32(v)) for v in (a, b, c))

        def combine(beta: float, cm: Array, alpha: float, acc: Array) -> Array:
            t = beta * xp.astype(cm, exact) + (alpha * xp.astype(acc, exact) if alpha != 1.0
                                               else xp.astype(acc, exact))
            return store(xp.astype(t, acc.dtype))

        for _ in range(int(steps)):
            xw = wide(x)
            gram = store(xp.matmul(xw, xp.matrix_transpose(xw)))
            gw = wide(gram)
            upd = combine(b32, gw, c32, xp.matmul(gw, gw))
            x = combine(a32, xw, 1.0, xp.matmul(wide(upd), xw))
    if tall:
        x = xp.matrix_transpose(x)
    return x if x.dtype == y.dtype else xp.astype(x, y.dtype)


def newton_schulz_band(
    coefficients: Sequence[float] = MUON_COEFFICIENTS, steps: int = MUON_STEPS, *,
    points: int = 200_001,
) -> tuple[float, float]:
    """(min, max) of the iterated scalar quintic p(σ) = aσ + bσ³ + cσ⁵ over σ in [σ₀, 1].

    After the Frobenius normalisation every singular value lies in [0, 1]; in exact arithmetic
    Newton–Schulz maps each σ to p^steps(σ). The max is the factor by which the NS polar can
    exceed the exact one in operator norm (the certificate's radius grows by it); the min is over
    σ₀ = 1e-3 up (smaller singular values are amplified by a^steps only). Float64, on a grid.
    """
    a, b, c = (float(v) for v in coefficients)
    lo_s, hi_s = 1e-3, 1.0
    lo, hi = math.inf, -math.inf
    for i in range(points):
        s = lo_s + (hi_s - lo_s) * i / (points - 1)
        for _ in range(int(steps)):
            s2 = s * s
            s = a * s + b * s * s2 + c * s * s2 * s2
        lo, hi = min(lo, s), max(hi, s)
    return lo, hi


# ---------------------------------------------------------------------------------------------
# The κ.


class Nuclear(_kappa.Kappa):
    """K = s·‖Y‖_* (nuclear norm, per leaf), ∇K = s·polar(Y), K* = indicator of ‖Z‖_op ≤ s.

    See the module docstring for shapes, ``polar``, ``scale`` and the Newton–Schulz options.
    Not elementwise (``separable=False``) and not exact; the execution paths run it eagerly.
    """

    auto_eager = True  # lionk.execution.paths "auto": never chunked, fused or torch.compiled
    params_complete = True  # params hold everything that changes the output (κ identity)
    _ns_eps_mode = "max"  # Newton–Schulz's eps: max(‖Y‖_F, eps) (torch); "add": ‖Y‖_F + eps

    def __init__(
        self,
        polar: str = "svd",
        scale: Any = "rms",
        ns_coefficients: Sequence[float] = MUON_COEFFICIENTS,
        ns_steps: int = MUON_STEPS,
        ns_eps: float = MUON_EPS,
        ns_dtype: Any = None,
    ) -> None:
        name = "nuclear"
        if polar not in POLARS:
            raise ValueError(f"kappa {name!r}: polar must be one of {POLARS}; received {polar!r}")
        if isinstance(scale, str):
            if scale not in SCALES:
                raise ValueError(
                    f"kappa {name!r}: scale must be a number > 0 or one of {SCALES}; "
                    f"received {scale!r}"
                )
        else:
            scale = _kappa._positive("scale", scale, name)
        try:
            coefs = tuple(float(v) for v in ns_coefficients)
        except (TypeError, ValueError):
            raise TypeError(
                f"kappa {name!r}: ns_coefficients must be three real numbers (a, b, c); "
                f"received {ns_coefficients!r}"
            ) from None
        if len(coefs) != 3 or not all(math.isfinite(v) for v in coefs):
            raise ValueError(
                f"kappa {name!r}: ns_coefficients must be three finite numbers (a, b, c); "
                f"received {ns_coefficients!r}"
            )
        if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or not 1 <= ns_steps <= 100:
            raise ValueError(f"kappa {name!r}: ns_steps must be an int in [1, 100]; "
                             f"received {ns_steps!r}")
        ns_eps = _kappa._positive("ns_eps", ns_eps, name)
        if ns_dtype is not None and not isinstance(ns_dtype, str):
            ns_dtype = dtype_name(ns_dtype)
        if ns_dtype not in (None, "bfloat16", "float16", "float32", "float64"):
            raise ValueError(f"kappa {name!r}: ns_dtype must be None or one of bfloat16, "
                             f"float16, float32, float64; received {ns_dtype!r}")
        params: dict[str, Any] = {"polar": polar, "scale": scale, "ns_coefficients": coefs,
                                  "ns_steps": ns_steps, "ns_eps": ns_eps, "ns_dtype": ns_dtype}
        # the constraint the step certifies: ‖X‖_op ≤ s/λ per leaf; for "rms" stated per
        # element, ‖X‖_op/√max(A, B) ≤ 1/λ (one radius for every leaf); Muon's shape rules
        # give each leaf its own radius: not one ball, none stated
        if scale == "rms":
            constraint: _kappa.Constraint | None = _kappa.Constraint(
                "spectral-rms", label="‖x‖_op/√max(A, B)", measure=spectral_rms_norm,
                problem="‖X‖_op ≤ √max(A, B)/λ per matrix (A×B, as Muon reshapes it)")
        elif isinstance(scale, str):
            constraint = None
        else:
            constraint = _kappa.Constraint(
                "spectral", scale=float(scale), label="‖x‖_op",
                problem="‖X‖_op ≤ s/λ per matrix", measure=spectral_norm)
        super().__init__(name, exact=False, separable=False, params=params, constraint=constraint)
        self.polar = polar
        self.scale = scale
        self.ns_coefficients = coefs
        self.ns_steps = ns_steps
        self.ns_eps = ns_eps
        self.ns_dtype = ns_dtype

    def _s(self, y: Array) -> float:
        return shape_scale(self.scale, tuple(y.shape))

    def polar_factor(self, y: Array) -> Array:
        """polar(Y) in Y's shape and dtype (unscaled)."""
        xp = array_namespace(y)
        mat = _as_matrix(y)
        if self.polar == "svd":
            p = polar_svd(mat)
        else:
            p = newton_schulz(mat, coefficients=self.ns_coefficients, steps=self.ns_steps,
                              eps=self.ns_eps, dtype=self.ns_dtype, eps_mode=self._ns_eps_mode)
        return p if tuple(p.shape) == tuple(y.shape) else xp.reshape(p, tuple(y.shape))

    def grad(self, y: Array) -> Array:
        s = self._s(y)
        if s != 1.0 and self.polar == "svd" and dtype_name(y.dtype) in ("bfloat16", "float16"):
            # the SVD runs in float32: scale there and round once to the 16-bit dtype
            xp = array_namespace(y)
            p32 = self.polar_factor(_svd_input(y))
            return xp.astype(p32 * s, y.dtype)
        p = self.polar_factor(y)
        return p if s == 1.0 else p * s

    def _svals(self, y: Array) -> Array:
        xp = array_namespace(y)
        mat = _as_matrix(y)
        if 0 in tuple(mat.shape):
            return xp.zeros((1,), dtype=y.dtype, device=device(y))
        sv = xp.linalg.svdvals(_svd_input(mat))
        return sv if sv.dtype == y.dtype else xp.astype(sv, y.dtype)

    def value(self, y: Array) -> Array:
        xp = array_namespace(y)
        return xp.sum(self._svals(y)) * self._s(y)

    def domain_distance(self, z: Array) -> Array:
        xp = array_namespace(z)
        smax = xp.max(self._svals(z))
        return xp.maximum(smax - self._s(z), xp.zeros_like(smax))

    def conjugate_on_domain(self, z: Array) -> Array:
        xp = array_namespace(z)
        return xp.asarray(0.0, dtype=z.dtype, device=device(z))

    def conjugate(self, z: Array) -> Array:
        return _kappa._where_in_domain(self.domain_distance(z), self.conjugate_on_domain(z))


def spectral_norm(y: Array) -> float:
    """σ_max of ``y`` as Muon reshapes it to a matrix (0 for an empty array)."""
    mat = np.asarray(_as_matrix(y), dtype=np.float64)
    return float(np.linalg.svd(mat, compute_uv=False)[0]) if mat.size else 0.0


def spectral_rms_norm(y: Array) -> float:
    """σ_max/√max(A, B) of ``y`` as an A×B matrix: the norm whose ball ``nuclear`` at
    ``scale="rms"`` keeps λX in (radius 1/λ for every shape)."""
    return spectral_norm(y) / shape_scale("rms", tuple(y.shape))


class Muon(Nuclear):
    """The κ of ``torch.optim.Muon`` (registered as ``"muon"``): :class:`Nuclear` with
    ``polar="newton-schulz"``, Muon's coefficients, 5 steps, eps 1e-7, bfloat16 iterates and
    torch's shape factor ``adjust_lr_fn``: ``None``/``"original"`` (√max(1, A/B)) or
    ``"match_rms_adamw"`` (0.2·√max(A, B)). Use with ``betas=(μ², μ)`` (Nesterov) — see
    :func:`muon_settings`."""

    params_complete = True

    def __init__(
        self,
        adjust_lr_fn: str | None = "original",
        ns_coefficients: Sequence[float] = MUON_COEFFICIENTS,
        ns_steps: int = MUON_STEPS,
        eps: float = MUON_EPS,
        ns_dtype: Any = "bfloat16",
    ) -> None:
        if adjust_lr_fn is None:
            adjust_lr_fn = "original"
        if adjust_lr_fn not in ("original", "match_rms_adamw"):
            raise ValueError("kappa 'muon': adjust_lr_fn must be None, 'original' or "
                             f"'match_rms_adamw'; received {adjust_lr_fn!r}")
        super().__init__(polar="newton-schulz", scale=adjust_lr_fn,
                         ns_coefficients=ns_coefficients, ns_steps=ns_steps, ns_eps=eps,
                         ns_dtype=ns_dtype)
        self.name = "muon"
        self.params = {"adjust_lr_fn": adjust_lr_fn, "ns_coefficients": self.ns_coefficients,
                       "ns_steps": self.ns_steps, "eps": self.ns_eps, "ns_dtype": self.ns_dtype}


def muon(*args: Any, **kwargs: Any) -> Muon:
    """``Muon(...)``: the registry's factory for ``"muon"``."""
    return Muon(*args, **kwargs)


def muon_settings(
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: Sequence[float] = MUON_COEFFICIENTS,
    eps: float = MUON_EPS,
    ns_steps: int = MUON_STEPS,
    adjust_lr_fn: str | None = None,
) -> dict[str, Any]:
    """``torch.optim.Muon``'s arguments (same names and defaults) as lionk's ``lr``, ``betas``,
    ``weight_decay`` and ``kappa``: ``lionk.torch.LionK(params, **muon_settings(...))``.

    torch's step (``_muon.py``): ``B ← B.lerp(g, 1 − μ) = μB + (1 − μ)g`` (an exponential average,
    lionk's m with b2 = μ), then Nesterov ``B̃ = g.lerp(B, μ) = (1 − μ)g + μB`` with the NEW B,
    i.e. ``B̃ = μ²·B_old + (1 − μ²)·g``: lionk's ``c`` with b1 = μ² (without Nesterov B̃ = B, b1 = μ).
    Then ``θ ← (1 − lr·λ)θ − lr·s·NS(B̃)``: lionk's update with K = s·‖·‖_*, the same lr and λ.
    """
    return _nesterov_settings("muon_settings", "momentum", momentum, nesterov, lr, weight_decay,
                              lambda: Muon(adjust_lr_fn, ns_coefficients, ns_steps, eps))


def _nesterov_settings(where: str, arg: str, momentum: Any, nesterov: bool, lr: Any,
                       weight_decay: Any, make_kappa: Any) -> dict[str, Any]:
    """lionk's settings for a Muon whose momentum μ averages as lionk's m (b2 = μ) and whose
    Nesterov input μ²·m + (1 − μ²)·g is lionk's c (b1 = μ²; b1 = μ without Nesterov)."""
    mu = float(momentum)
    if not 0.0 <= mu < 1.0:
        raise ValueError(f"{where}: {arg} must be in [0, 1); received {momentum!r}")
    b1 = mu * mu if nesterov else mu
    return {"lr": lr, "betas": (b1, mu), "weight_decay": weight_decay, "kappa": make_kappa()}


class OptaxMuon(Nuclear):
    r"""The κ of ``optax.contrib.muon``'s matrix leaves (registered as ``"optax-muon"``).

    :class:`Nuclear` with ``polar="newton-schulz"`` as optax runs it: Muon's coefficients and 5
    steps, the iterates in the leaf's own dtype (``ns_dtype=None``), ``X ← Y/(‖Y‖_F + eps)``
    with ``eps = 1e-8`` (torch clamps, ``max(‖Y‖_F, eps)``), and optax's shape factor for a
    weight stored ``(fan_in, fan_out)`` (A rows, B cols; flax's and optax's layout, torch's is
    ``(out, in)``): ``consistent_rms=None`` gives optax's width scaling √max(1, B/A),
    a number r gives r·√max(A, B) (Moonshot's consistent RMS; 0.2 recommended).
    ``polar="svd"``: the exact polar factor instead of Newton–Schulz (same scale). Use with
    :func:`optax_muon_settings` (or ``lionk.optax.muon``).
    """

    params_complete = True
    _ns_eps_mode = "add"

    def __init__(
        self,
        consistent_rms: float | None = None,
        ns_coefficients: Sequence[float] = MUON_COEFFICIENTS,
        ns_steps: int = MUON_STEPS,
        eps: float = OPTAX_MUON_EPS,
        polar: str = "newton-schulz",
    ) -> None:
        if consistent_rms is not None:
            consistent_rms = _kappa._positive("consistent_rms", consistent_rms, "optax-muon")
        # a shape rule (not one number): no single ball is certified, as for "muon"
        super().__init__(polar=polar, scale="original", ns_coefficients=ns_coefficients,
                         ns_steps=ns_steps, ns_eps=eps, ns_dtype=None)
        self.name = "optax-muon"
        self.scale = "optax-width" if consistent_rms is None else "optax-consistent-rms"
        self.consistent_rms = consistent_rms
        self.params = {"consistent_rms": consistent_rms, "ns_coefficients": self.ns_coefficients,
                       "ns_steps": self.ns_steps, "eps": self.ns_eps, "polar": self.polar}

    def _s(self, y: Array) -> float:
        a, b = _matrix_shape(tuple(y.shape))  # (fan_in, fan_out) for a 2-D leaf
        if self.consistent_rms is None:
            return math.sqrt(max(1.0, b / a))
        return math.sqrt(max(a, b)) * self.consistent_rms


def optax_muon_b1(count: Any, beta: float = 0.95, nesterov: bool = True) -> Any:
    r"""lionk's b1 for the update at ``count`` (0 for the first) that reproduces the direction of
    ``optax.contrib.muon``'s bias-corrected momentum.

    optax (``scale_by_muon``), at step t = count + 1 with μ ← βμ + (1 − β)g (lionk's m with
    b2 = β), Nesterov: ``μ̂ = β·μ/(1 − β^{t+1}) + (1 − β)·g/(1 − β^t)``. Substituting the new μ,
    μ̂ = α_t·(b1_t·m + (1 − b1_t)·g) with

        b1_t = β²(1 − β^t) / (1 − 2β^{t+1} + β^{t+2})   → β² as t grows

    and α_t > 0, which Newton–Schulz's normalisation removes (up to ``eps``). Without Nesterov,
    μ̂ = μ/(1 − β^t) and b1 = β. ``count`` may be an int or an integer array (a schedule's
    argument): only arithmetic operators are used.
    """
    beta = float(beta)
    if not nesterov:
        return beta
    t = count + 1
    return beta * beta * (1.0 - beta ** t) / (1.0 - 2.0 * beta ** (t + 1) + beta ** (t + 2))


def optax_muon_settings(
    learning_rate: float = 1e-3,
    ns_coeffs: Any = MUON_COEFFICIENTS,
    ns_steps: int = MUON_STEPS,
    beta: float = 0.95,
    eps: float = OPTAX_MUON_EPS,
    weight_decay: float = 0.0,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    consistent_rms: float | None = None,
) -> dict[str, Any]:
    r"""``optax.contrib.muon``'s arguments for its matrix leaves (same names and defaults) as
    lionk's ``lr``, ``betas``, ``weight_decay`` and ``kappa``:
    ``lionk.LionK(matrix_params, **optax_muon_settings(...))``.

    optax's chain is ``μ̂`` (bias-corrected Nesterov momentum, see :func:`optax_muon_b1`), then
    ``u = s·NS(μ̂)``, ``u += λ·θ``, ``update = −lr·u``: lionk's step with the same lr, λ and
    K = s·‖·‖_* (:class:`OptaxMuon`), b2 = β and b1 = β² (Nesterov; β without). The bias
    correction makes optax's b1 depend on the step (:func:`optax_muon_b1`); these fixed
    ``betas`` are its limit (for β = 0.95 the gradient's weight 1 − b1 is 42% above it at the
    first step, 3% at step 10, 0.1% at step 60).
    ``lionk.optax.muon`` follows optax's b1 exactly. Not representable (ValueError):
    ``adaptive=True`` (the update scaled by ⟨μ̂, NS(μ̂)⟩, which depends on μ̂'s magnitude),
    another ``preconditioning`` than ``"frobenius"``, per-step coefficient tuples (``"dion"``).
    optax applies AdamW to the leaves that are not 2-D; lionk's settings are for the matrices.
    """
    if adaptive:
        raise ValueError("optax_muon_settings: adaptive=True scales the update by <mu_hat, "
                         "NS(mu_hat)>, the bias-corrected momentum's magnitude, which Lion-kappa "
                         "does not carry; expected adaptive=False")
    if preconditioning != "frobenius":
        raise ValueError("optax_muon_settings: preconditioning must be 'frobenius' (the "
                         f"Frobenius normalisation of lionk's Newton-Schulz); received "
                         f"{preconditioning!r}")
    if isinstance(ns_coeffs, str):
        if ns_coeffs != "standard":
            raise ValueError("optax_muon_settings: ns_coeffs must be 'standard' or three "
                             f"numbers (a, b, c); received {ns_coeffs!r} (per-step coefficients "
                             "are not supported)")
        ns_coeffs = MUON_COEFFICIENTS
    return _nesterov_settings("optax_muon_settings", "beta", beta, nesterov, learning_rate,
                              weight_decay,
                              lambda: OptaxMuon(consistent_rms, ns_coeffs, ns_steps, eps))


# ---------------------------------------------------------------------------------------------
# Per-leaf κ.

PER_LEAF_KEYS = ("matrices", "other")


def _sub(value: Any, where: str) -> _kappa.Kappa:
    if isinstance(value, PerLeaf):
        raise TypeError(f"{where}: expected a kappa name or a Kappa; received a per-leaf kappa")
    if isinstance(value, _kappa.Kappa):
        return value
    if isinstance(value, str):
        return _kappa.get(value)
    raise TypeError(f"{where}: expected a kappa name (str) or a lionk.kappa.Kappa; "
                    f"received {value!r}")


class PerLeaf(_kappa.Kappa):
    """A κ chosen leaf by leaf: ``{"matrices": κ, "other": κ}`` or a callable ``(path, shape) -> κ``.

    ``"matrices"`` applies to leaves with 2 or more dims, ``"other"`` to the rest (biases, norm
    scales, scalars); a missing key means ``"sign"``. A callable receives the leaf's path string
    (as :func:`lionk.tree.flatten` writes it, e.g. ``"['layer']['w']"``; ``"[i]"`` for the i-th
    parameter of a torch param group) and its shape, and returns a κ name or a Kappa.

    The steps resolve it against the leaves (:func:`bind`): the leaves that share a κ are one
    call of that κ's ``tree_grad`` (so a ``scope="global"`` norm is global over its own leaves).
    Each leaf solves its own κ's problem (e.g. spectral-norm balls for matrices and boxes for
    the rest). Not elementwise as a whole: the in-place paths run a mixed assignment eagerly.
    """

    def __init__(self, rule: Any = None, *, matrices: Any = None, other: Any = None) -> None:
        if rule is not None and (matrices is not None or other is not None):
            raise TypeError("kappa 'per-leaf': give a rule or matrices=/other=, not both")
        if isinstance(rule, Mapping):
            unknown = set(rule) - set(PER_LEAF_KEYS)
            if unknown:
                raise ValueError(f"kappa: a per-leaf dict takes the keys {PER_LEAF_KEYS}; "
                                 f"received {sorted(map(str, unknown))}")
            matrices, other = rule.get("matrices"), rule.get("other")
            rule = None
        if rule is not None:
            if not callable(rule):
                raise TypeError(f"kappa 'per-leaf': rule must be callable (path, shape) -> kappa; "
                                f"received {rule!r}")
            params: dict[str, Any] = {"rule": rule}
            self._rule: Callable[[str, tuple[int, ...]], Any] | None = rule
            self._matrices = self._other = None
        else:
            self._rule = None
            self._matrices = _sub("sign" if matrices is None else matrices,
                                  "kappa['matrices']")
            self._other = _sub("sign" if other is None else other, "kappa['other']")
            params = {"matrices": _spec(matrices, self._matrices),
                      "other": _spec(other, self._other)}
        super().__init__("per-leaf", exact=False, separable=False, params=params)

    def choose(self, path: str, shape: Sequence[int]) -> _kappa.Kappa:
        """The κ of the leaf at ``path`` with ``shape``."""
        shape = tuple(int(s) for s in shape)
        if self._rule is None:
            assert self._matrices is not None and self._other is not None
            return self._matrices if len(shape) >= 2 else self._other
        return _sub(self._rule(path, shape), f"kappa rule at {path or 'the leaf'} {shape}")

    def bind(self, paths: Sequence[str], leaves: Sequence[Array]) -> _kappa.Kappa:
        """The κ for these leaves: the common κ when all agree, else an assignment."""
        ks = [self.choose(p, tuple(x.shape)) for p, x in zip(paths, leaves)]
        if ks and all(k is ks[0] or k == ks[0] for k in ks[1:]):
            return ks[0]
        return _Assigned(self, ks)

    def _positional(self, leaves: Sequence[Array]) -> _kappa.Kappa:
        return self.bind([f"[{i}]" for i in range(len(leaves))], leaves)

    # per array: the κ of that array alone
    def grad(self, y: Array) -> Array:
        return self.choose("", tuple(y.shape)).grad(y)

    def value(self, y: Array) -> Array:
        return self.choose("", tuple(y.shape)).value(y)

    def conjugate(self, z: Array) -> Array:
        return self.choose("", tuple(z.shape)).conjugate(z)

    def conjugate_on_domain(self, z: Array) -> Array:
        return self.choose("", tuple(z.shape)).conjugate_on_domain(z)

    def domain_distance(self, z: Array) -> Array:
        return self.choose("", tuple(z.shape)).domain_distance(z)

    # over a list of leaves (their positions as paths)
    def tree_grad(self, leaves: Sequence[Array]) -> list[Array]:
        return self._positional(leaves).tree_grad(leaves)

    def tree_value(self, leaves: Sequence[Array]) -> float:
        return self._positional(leaves).tree_value(leaves)

    def tree_conjugate(self, leaves: Sequence[Array], *, on_domain: bool = False) -> float:
        return self._positional(leaves).tree_conjugate(leaves, on_domain=on_domain)

    def tree_domain_distance(self, leaves: Sequence[Array]) -> float:
        return self._positional(leaves).tree_domain_distance(leaves)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PerLeaf) and self.params == other.params

    def __hash__(self) -> int:
        return hash(("per-leaf", tuple(sorted((k, id(v) if callable(v) and not isinstance(
            v, _kappa.Kappa) else v) for k, v in self.params.items()))))


def _spec(given: Any, resolved: _kappa.Kappa) -> Any:
    """What ``params`` records: the name when a name was given (a checkpoint rebuilds it)."""
    if given is None:
        return "sign"
    return given if isinstance(given, str) else resolved


class _Assigned(_kappa.Kappa):
    """A per-leaf κ resolved against a list of leaves: one κ per position."""

    def __init__(self, parent: PerLeaf, kappas: list[_kappa.Kappa]) -> None:
        super().__init__("per-leaf", exact=all(k.exact for k in kappas), separable=False,
                         params=dict(parent.params))
        self.parent = parent
        self.kappas = kappas
        self.auto_eager = any(getattr(k, "auto_eager", False) for k in kappas)
        groups: dict[int, tuple[_kappa.Kappa, list[int]]] = {}
        for i, k in enumerate(kappas):
            for k0, idx in groups.values():
                if k0 is k or k0 == k:
                    idx.append(i)
                    break
            else:
                groups[len(groups)] = (k, [i])
        self.groups = list(groups.values())

    def _check(self, leaves: Sequence[Array]) -> None:
        if len(leaves) != len(self.kappas):
            raise ValueError(f"kappa 'per-leaf': resolved for {len(self.kappas)} leaves; "
                             f"received {len(leaves)}")

    def grad(self, y: Array) -> Array:
        return self.parent.grad(y)

    def value(self, y: Array) -> Array:
        return self.parent.value(y)

    def conjugate(self, z: Array) -> Array:
        return self.parent.conjugate(z)

    def conjugate_on_domain(self, z: Array) -> Array:
        return self.parent.conjugate_on_domain(z)

    def domain_distance(self, z: Array) -> Array:
        return self.parent.domain_distance(z)

    def tree_grad(self, leaves: Sequence[Array]) -> list[Array]:
        self._check(leaves)
        out: list[Any] = [None] * len(leaves)
        for k, idx in self.groups:
            for i, u in zip(idx, k.tree_grad([leaves[i] for i in idx])):
                out[i] = u
        return out

    def tree_value(self, leaves: Sequence[Array]) -> float:
        self._check(leaves)
        return sum(k.tree_value([leaves[i] for i in idx]) for k, idx in self.groups)

    def tree_conjugate(self, leaves: Sequence[Array], *, on_domain: bool = False) -> float:
        self._check(leaves)
        return sum(k.tree_conjugate([leaves[i] for i in idx], on_domain=on_domain)
                   for k, idx in self.groups)

    def tree_domain_distance(self, leaves: Sequence[Array]) -> float:
        self._check(leaves)
        return max((k.tree_domain_distance([leaves[i] for i in idx]) for k, idx in self.groups),
                   default=0.0)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Assigned) and self.parent == other.parent \
            and self.kappas == other.kappas

    def __hash__(self) -> int:
        return hash((hash(self.parent), len(self.kappas)))


def bind(kappa: _kappa.Kappa, paths: Sequence[str], leaves: Sequence[Array]) -> _kappa.Kappa:
    """``kappa`` resolved against the leaves at ``paths`` (a per-leaf κ), else ``kappa`` itself."""
    if isinstance(kappa, PerLeaf):
        return kappa.bind(paths, leaves)
    return kappa


def per_leaf(matrices: Any = None, other: Any = None, rule: Any = None) -> PerLeaf:
    """Registry factory: ``get("per-leaf", matrices="nuclear", other="sign")``."""
    return PerLeaf(rule, matrices=matrices, other=other)


def _register() -> None:
    builtins: dict[str, Callable[..., _kappa.Kappa]] = {
        "nuclear": Nuclear, "muon": Muon, "optax-muon": OptaxMuon, "per-leaf": per_leaf}
    _kappa._BUILTINS.update(builtins)
    _kappa._REGISTRY.update(builtins)


_register()

