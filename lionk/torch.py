"""lionk.torch.LionK: Lion-κ as a torch.optim.Optimizer (importing this module imports torch).

The public import path ``lionk.torch``; implemented in :mod:`lionk.adapters.torch`.
"""

from .adapters.torch import *  # noqa: F403
from .adapters.torch import __all__  # noqa: F401
