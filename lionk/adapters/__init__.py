"""Adapters: the front-ends users call, each native to its framework.

* :mod:`lionk.adapters.arrays` — :class:`lionk.LionK`, in place on writeable arrays;
* :mod:`lionk.adapters.torch` — ``lionk.torch.LionK``, a ``torch.optim.Optimizer``;
* :mod:`lionk.adapters.optax` — ``lionk.optax.lion_k``, an optax ``GradientTransformation``;
* :mod:`lionk.adapters.jax` — :func:`lionk.jit_step`, the compiled JAX step.

Modules here may import their framework at import time; ``import lionk`` loads only
:mod:`lionk.adapters.arrays` and :mod:`lionk.adapters.jax` (which imports JAX when called).
"""
