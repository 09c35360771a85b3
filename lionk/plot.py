"""Plots of a lionk.minimize run (matplotlib is imported only when a plot is drawn).

The public import path ``lionk.plot``; implemented in :mod:`lionk.analysis.plot`.
"""

from .analysis.plot import *  # noqa: F403
from .analysis.plot import __all__  # noqa: F401
