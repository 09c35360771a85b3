"""The κ registry: convex functions K whose gradient ∇K replaces sign in Lion.

The public import path ``lionk.kappa``; implemented in :mod:`lionk.core.kappa` and (matrix κ,
per-leaf selection, the Muon preset) :mod:`lionk.core.kappa_matrix`, (group-ℓ2)
:mod:`lionk.core.kappa_group`.
"""

from .core.kappa import *  # noqa: F403
from .core.kappa import __all__ as _core_all
from .core.kappa_group import GroupL2
from .core.kappa_matrix import (
    MUON_COEFFICIENTS,
    Muon,
    Nuclear,
    OptaxMuon,
    PerLeaf,
    muon_settings,
    newton_schulz,
    newton_schulz_band,
    optax_muon_b1,
    optax_muon_settings,
    polar_svd,
)
from .core.kappa_scaling import TEXTBOOK_PARAMS, Scaled, normalized, rms_scale, textbook

__all__ = [*_core_all, "MUON_COEFFICIENTS", "Muon", "Nuclear", "PerLeaf", "muon_settings",
           "OptaxMuon", "optax_muon_settings", "optax_muon_b1",
           "newton_schulz", "newton_schulz_band", "polar_svd",
           "Scaled", "normalized", "rms_scale", "textbook", "TEXTBOOK_PARAMS",
           "GroupL2"]
