"""Portable checkpoints: save(path, params, state) and load(path, like=, xp=, device=).

The public import path ``lionk.checkpoint``; implemented in :mod:`lionk.io.checkpoint`.
"""

from .io.checkpoint import *  # noqa: F403
from .io.checkpoint import __all__  # noqa: F401
