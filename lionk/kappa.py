"""The κ registry: convex functions K whose gradient ∇K replaces sign in Lion.

The public import path ``lionk.kappa``; implemented in :mod:`lionk.core.kappa`.
"""

from .core.kappa import *  # noqa: F403
from .core.kappa import __all__  # noqa: F401
