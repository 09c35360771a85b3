"""``lionk.jit_step``: the compiled path of the functional API for JAX arrays.

``jax.jit`` of the one step (:func:`lionk.core.step.update_leaves`) with the parameter and
momentum buffers donated; with ``fused=True`` on CPU each leaf runs the fused kernel generated
from the recorded step (:mod:`lionk.execution.kernels`) as an XLA FFI custom call.

Importing this module does not import JAX; :func:`jit_step` does when called.
"""

from __future__ import annotations

from typing import Any

from ..core.step import update_leaves

__all__ = ["jit_step"]



# XLA:CPU's default copy insertion copies a donated buffer that one fusion reads and another
# writes in place (the momentum: read by the params' loop, rewritten by its own), a full extra
# pass plus a freshly allocated array (about 4-6x the floor at 2^24 float32, measured). With
# region analysis it orders the two loops instead (a control edge) and copies nothing.
_XLA_CPU_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}


def _platform(tree: Any) -> str:
    import jax

    for leaf in jax.tree_util.tree_leaves(tree):
        devices = getattr(leaf, "devices", None)
        if callable(devices):
            try:
                return next(iter(devices())).platform
            except Exception:  # a tracer (jit_step called under an outer jit)
                break
    return jax.default_backend()


def _check_donation(params: Any, grads: Any, momentum: Any) -> None:
    """A donated buffer (a param or a momentum) passed twice, or also as a gradient, is refused
    by XLA (before anything runs or is donated) with a message naming no leaf: ValueError naming
    both. ``run`` calls it only after such a failure (nothing on the hot path); one identity
    test per leaf, the paths computed only when two leaves are one array."""
    import jax

    leaves = [*jax.tree_util.tree_leaves(params), *jax.tree_util.tree_leaves(momentum),
              *jax.tree_util.tree_leaves(grads)]
    if len({id(a) for a in leaves}) == len(leaves):
        return
    from ..core.array_api import check_no_aliasing
    from ..core.trees import flatten

    groups = []
    for label, tree, written in (("params", params, True), ("grads", grads, False),
                                 ("state.momentum", momentum, True)):
        xs, _, paths = flatten(tree)
        groups.append(([f"{label}{p}" for p in paths], xs, written))
    check_no_aliasing(groups, donated=True)


def jit_step(*, lr: Any = 1e-4, betas: tuple[Any, Any] = (0.9, 0.99), weight_decay: Any = 0.0,
             kappa: Any = "sign", donate: bool = True, fused: bool = False) -> Any:
    """A compiled JAX step ``(params, grads, state) -> (params, state)``.

    The same :func:`lionk._step.update_leaves` under ``jax.jit``, validated once per input
    structure (at trace time), the whole tree in one compiled call. With ``donate=True`` the
    parameter and momentum buffers are donated, so XLA writes the new values into them (the
    arrays passed in are invalidated, as with any donation). On CPU the call is compiled with
    XLA's region-analysis copy insertion (``xla_cpu_copy_insertion_use_region_analysis``), which
    orders the params' loop before the momentum's in-place loop instead of copying the donated
    momentum first (benchmarks/results.md has the measurements). Hyper-parameters are Python floats baked
    into the compiled code (coefficients in double precision, rounded once): a new value means a
    new compilation, so for a schedule call :func:`lionk.step` under your own ``jax.jit`` with a
    traced lr instead.

    ``fused=True`` (CPU, **experimental**: warns when created): each leaf's step is one call of
    the fused kernel generated from the recorded step (:mod:`lionk.execution.kernels`), built
    once by the system C++ compiler against the XLA FFI headers that jaxlib ships, with x and m
    aliased to its outputs: one pass over the five arrays instead of XLA's two loops. No FMA
    contraction: bitwise equal to eager NumPy (checked on probe values before use). Needs an
    elementwise κ, float32/float64 leaves, a C++ compiler at run time; raises ValueError (when
    the step is traced) saying which is missing. Experimental because it compiles C++ at run
    time and starts its own threads inside an XLA custom call; for bitwise results without it,
    set ``XLA_FLAGS=--xla_cpu_max_isa=SSE4_2`` before importing JAX (docs/execution.md has the
    measurements behind this choice).

    Tier: jit contracts ``a*b + c`` into FMA on CPU and GPU (ulp); bitwise with
    ``XLA_FLAGS=--xla_cpu_max_isa=SSE4_2`` on CPU, or with ``fused=True``.
    """
    import jax

    from ..core import kappa as _kappa
    from ..core.step import State, make_hyper, prepare

    kap = _kappa.resolve(kappa)
    make_hyper(lr, betas, weight_decay, stacklevel=2)  # validate now
    if fused:
        import warnings

        from ..core.step import LionKWarning

        warnings.warn("lionk.jit_step(fused=True) is experimental: it builds an XLA FFI "
                      "handler with the system C++ compiler at run time (docs/execution.md)",
                      LionKWarning, stacklevel=2)

    def _leaves(params: Any, grads: Any, momentum: Any) -> Any:
        prep = prepare(params, grads, State(0, momentum, 0), lr=lr, betas=betas,
                       weight_decay=weight_decay, kappa=kap, nan_policy="propagate")
        if fused:
            return prep, _fused_leaves(prep)
        return prep, update_leaves(prep.xs, prep.gs, prep.ms, prep.hyper, prep.kappa)

    def _fused_leaves(prep: Any) -> tuple[list[Any], list[Any]]:
        from ..execution import kernels as _kernel

        if not prep.kappa.separable:
            raise ValueError(f"jit_step(fused=True) runs one elementwise kernel per leaf and "
                             f"needs an elementwise (separable) kappa; received {kap.name!r}")
        new_xs, new_ms = [], []
        for x, g, m, path in zip(prep.xs, prep.gs, prep.ms, prep.paths):
            try:
                call = _kernel.jax_ffi_kernel(update_leaves, prep.hyper, prep.kappa, x.dtype,
                                              m.dtype)
            except ValueError as exc:
                raise ValueError(f"jit_step(fused=True): no fused kernel for params{path} "
                                 f"({x.dtype}, momentum {m.dtype}): {exc}") from None
            nx, nm = call(x, g, m)
            new_xs.append(nx)
            new_ms.append(nm)
        return new_xs, new_ms

    def both(params: Any, grads: Any, momentum: Any) -> Any:
        prep, (nx, nm) = _leaves(params, grads, momentum)
        return prep.treedef.unflatten(nx), prep.treedef.unflatten(nm)

    by_platform: dict[str, Any] = {}

    def compiled(platform: str) -> Any:
        fn = by_platform.get(platform)
        if fn is None:
            if fused and platform != "cpu":
                raise ValueError(f"jit_step(fused=True) runs on CPU; received arrays on "
                                 f"{platform!r}")
            options = _XLA_CPU_OPTIONS if platform == "cpu" else None
            fn = jax.jit(both, donate_argnums=(0, 2) if donate else (),
                         compiler_options=options)
            by_platform[platform] = fn
        return fn

    def run(params: Any, grads: Any, state: Any) -> tuple[Any, State]:
        try:
            p, m = compiled(_platform(params))(params, grads, state.momentum)
        except Exception:
            if donate:  # XLA refuses a donated buffer used twice, naming no leaf
                _check_donation(params, grads, state.momentum)
            raise
        return p, State(state.count + 1, m, state.skipped)

    return run
