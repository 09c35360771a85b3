"""lionk: the Lion-κ optimizer family, written once against the Python array API standard.

The same code runs on NumPy, CuPy, PyTorch and JAX arrays::

    import lionk
    state = lionk.init(params)
    params, state = lionk.step(params, grads, state, lr=1e-3, weight_decay=0.1, kappa="sign")

``import lionk`` imports none of torch, jax or cupy.
"""

from __future__ import annotations

from . import checkpoint, kappa, lyapunov, plot, tree
from ._execution import jit_step
from ._imperative import LionK
from ._minimize import OptimizeResult, minimize
from ._step import LionKWarning, State, init, step
from .checkpoint import CheckpointError, load, save

__version__ = "0.1.0"

_LAZY_SUBMODULES = ("torch", "optax")


def __getattr__(name: str):
    """``lionk.torch`` and ``lionk.optax`` are imported on first use (they import torch / optax)."""
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "LionK",
    "LionKWarning",
    "State",
    "init",
    "step",
    "jit_step",
    "minimize",
    "OptimizeResult",
    "plot",
    "save",
    "load",
    "CheckpointError",
    "checkpoint",
    "kappa",
    "lyapunov",
    "tree",
    "__version__",
]
