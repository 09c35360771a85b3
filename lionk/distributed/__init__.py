"""Distributed Lion-κ: the vote exchange of ``lionk.torch.LionK(communication=...)`` and the
traffic model (see :mod:`lionk.distributed.votes`).

``import lionk.distributed`` imports neither torch nor jax; they are imported when used.
"""

from .votes import *  # noqa: F403
from .votes import __all__, is_ternary  # noqa: F401
