"""lionk: the Lion-κ optimizer family, written once against the Python array API standard.

The same code runs on NumPy, CuPy, PyTorch and JAX arrays::

    import lionk
    state = lionk.init(params)
    params, state = lionk.step(params, grads, state, lr=1e-4, weight_decay=0.1, kappa="sign")

``import lionk`` imports none of torch, jax or cupy. The package is layered (docs/architecture.md):
``core`` (the step, κ, validation, trees, the array-API glue) ← ``execution`` (how the step
runs) ← ``adapters`` (LionK, torch, optax, jit_step), ``distributed``, ``io`` (checkpoints),
``analysis`` (lyapunov, minimize, plot). The public names are re-exported here and in the
modules ``lionk.kappa``, ``lionk.tree``, ``lionk.lyapunov``, ``lionk.plot``,
``lionk.checkpoint``, ``lionk.distributed``, ``lionk.torch`` and ``lionk.optax``.
"""

from . import checkpoint, kappa, lyapunov, plot, tree
from ._version import __version__
from .adapters.arrays import LionK
from .adapters.jax import jit_step
from .analysis.minimize import OptimizeResult, minimize
from .core.caches import clear_caches
from .core.step import LionKWarning, State, init, step
from .execution.stall import StallWarning
from .io.checkpoint import CheckpointError, load, save

_LAZY_SUBMODULES = ("torch", "optax")


def __getattr__(name: str) -> object:
    """``lionk.torch`` and ``lionk.optax`` are imported on first use (they import torch / optax)."""
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LionK",
    "LionKWarning",
    "StallWarning",
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
    "clear_caches",
    "checkpoint",
    "kappa",
    "lyapunov",
    "tree",
    "__version__",
]
