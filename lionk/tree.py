"""Trees of arrays: flatten nested containers into leaves with paths, and rebuild them.

The public import path ``lionk.tree``; implemented in :mod:`lionk.core.trees`.
"""

from .core.trees import *  # noqa: F403
from .core.trees import __all__  # noqa: F401
