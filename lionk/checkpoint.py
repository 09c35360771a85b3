"""Portable checkpoints (safetensors files): ``save(path, params, state)`` or ``save(path, opt)``,
``load(path, like=, xp=, device=, into=, mmap=)`` and ``info(path)``.

The public import path ``lionk.checkpoint``; implemented in :mod:`lionk.io.checkpoint`.
"""

from .io.checkpoint import *  # noqa: F403
from .io.checkpoint import __all__  # noqa: F401
