"""lionk.optax.lion_k: Lion-κ as an optax GradientTransformation (importing this imports jax and optax).

The public import path ``lionk.optax``; implemented in :mod:`lionk.adapters.optax`.
"""

from .adapters.optax import *  # noqa: F403
from .adapters.optax import __all__  # noqa: F401
