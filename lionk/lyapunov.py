"""Lyapunov and constraint diagnostics for Lion-κ (the certificate of theory.md §4).

The public import path ``lionk.lyapunov``; implemented in :mod:`lionk.analysis.lyapunov`.
"""

from .analysis.lyapunov import *  # noqa: F403
from .analysis.lyapunov import __all__  # noqa: F401
