"""Backend discovery for the conformance suite.

A backend is an array library on a device, run eagerly or compiled. What is not installed or has
no device here is reported as "not available" with the reason, never as a failure. The expected
tier of each backend for an *exact* κ is kept here as data (reproducibility.md): eager CPU
libraries and JAX jit under ``XLA_FLAGS=--xla_cpu_max_isa=SSE4_2`` are bitwise; jit with FMA
contraction and GPU kernels are ulp (teacher-forced).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import lionk

from .libraries import Library, Unavailable, installed, library

SSE42_FLAG = "--xla_cpu_max_isa=SSE4_2"

# name -> (device kind, expected tier for exact kappa, why)
KNOWN_BACKENDS: dict[str, tuple[str, str, str]] = {
    "numpy": ("cpu", "bitwise", "reference"),
    "array_api_strict": ("cpu", "bitwise", "correctly rounded elementwise ops"),
    "torch-cpu": ("cpu", "bitwise", "eager, no fused alpha/addcmul forms"),
    "jax-cpu": ("cpu", "bitwise", "eager dispatch does not contract FMA"),
    "jax-cpu-jit": ("cpu", "ulp", "XLA:CPU contracts a*b+c into FMA"),
    "jax-cpu-jit-sse42": ("cpu", "bitwise", "SSE4_2 ISA has no FMA (run in a subprocess)"),
    # execution paths (lionk.execution.paths): the same step run another way
    "numpy-chunked": ("cpu", "bitwise", "LionK's chunked path: same operations on pieces"),
    "torch-cpu-packed": ("cpu", "bitwise", "the packed path: one flat array per dtype, the same "
                         "operations; a norm κ runs eagerly"),
    "torch-cpu-compiled": ("cpu", "ulp", "torch.compile (inductor may contract FMA)"),
    "torch-cpu-auto": ("cpu", "bitwise", "lionk.torch.LionK's default on CPU: the numba kernel "
                       "on the tensors' memory (fastmath=False: no FMA); other κ fall back"),
    "jax-cpu-jit-donated": ("cpu", "ulp", "lionk.jit_step: jit with donated buffers"),
    "jax-cpu-jit-fused": ("cpu", "bitwise", "lionk.jit_step(fused=True), experimental: the fused "
                          "kernel as an XLA FFI call, no FMA; a norm κ runs jit_step's XLA loops"),
    "numpy-numba": ("cpu", "bitwise", "LionK's compiled path on NumPy: the fused kernel as "
                    "Python scalar code compiled by numba (fastmath=False: no FMA)"),
    "torch-cuda": ("cuda", "bitwise", "to be verified on a GPU (reproducibility.md)"),
    "jax-gpu": ("cuda", "ulp", "XLA:GPU contracts FMA even in eager op-by-op kernels"),
    "jax-gpu-jit": ("cuda", "ulp", "XLA:GPU contracts FMA"),
    "cupy": ("cuda", "bitwise", "to be verified on a GPU (reproducibility.md)"),
    "cupy-compiled": ("cuda", "bitwise", "one fused ElementwiseKernel from the recorded step "
                      "(--fmad=false); to be verified on a GPU"),
    # lazy, chunk-wise: dask.array (through array-api-compat) runs NumPy's kernels per chunk
    "dask": ("cpu", "bitwise", "lazy dask.array graph of NumPy kernels, chunk by chunk"),
}


@dataclass
class Backend:
    name: str
    device_kind: str
    expected_exact_tier: str
    available: bool
    reason: str = ""
    lib: Library | None = None  # the array library and device the row runs on
    jit: bool = False
    dtypes: tuple[str, ...] = ("float32", "float64")
    extra: dict[str, Any] = field(default_factory=dict)
    execution: str | None = None  # an in-place execution path of lionk.execution.paths, or jit_step

    @property
    def xp(self) -> Any:
        return None if self.lib is None else self.lib.xp

    def put(self, a: np.ndarray) -> Any:
        """A copy of numpy array ``a`` in this row's library and device."""
        assert self.lib is not None, f"{self.name} is not available"
        return self.lib.asarray(a)

    def get(self, a: Any) -> np.ndarray:
        """A numpy copy of array ``a`` of this row's library."""
        assert self.lib is not None, f"{self.name} is not available"
        return self.lib.to_numpy(a)

    def step_fn(self, *, lr: float, betas: tuple[float, float], weight_decay: float, kappa: Any,
                grad_fn: Callable[..., Any] | None = None) -> Callable[..., Any]:
        """``(params, state[, grads]) -> (params, state)``; with ``grad_fn`` the gradient is
        computed inside (so a jitted backend compiles gradient and step together)."""
        step = functools.partial(lionk.step, lr=lr, betas=betas, weight_decay=weight_decay,
                                 kappa=kappa)
        if self.execution in ("jit_step", "jit_step-fused"):
            fused = self.execution == "jit_step-fused" and lionk.kappa.resolve(kappa).separable
            with warnings.catch_warnings():  # the row tests the experimental path on purpose
                warnings.filterwarnings("ignore", message=".*experimental", category=lionk.LionKWarning)
                step = lionk.jit_step(lr=lr, betas=betas, weight_decay=weight_decay,
                                      kappa=kappa, fused=fused)
        elif self.execution is not None:
            step = functools.partial(_inplace_step, self.execution, lr=lr, betas=betas,
                                     weight_decay=weight_decay, kappa=kappa,
                                     summary=self.extra.setdefault("execution", {}))
        if grad_fn is None:
            fn = step
        else:
            def fn(params, state, data):
                return step(params, grad_fn(params, data), state)
        if self.extra.get("persist"):
            fn = _persisting(fn)
        if self.jit:
            import jax

            return jax.jit(fn)
        return fn


def _inplace_step(execution: str, params: Any, grads: Any, state: Any, *, lr: float,
                  betas: tuple[float, float], weight_decay: float, kappa: Any,
                  summary: dict[str, Any] | None = None) -> Any:
    """A pure step made of an in-place execution path: copy, run the path on the copies.
    ``summary`` counts the paths that ran (``"compiled: numba kernel"``, ...) and collects the
    fallbacks the execution record reported (shown in the conformance report)."""
    from lionk.core.step import make_hyper
    from lionk.execution.paths import ExecutionRecord, chunkable, run_inplace
    from lionk.tree import flatten

    kap = lionk.kappa.resolve(kappa)
    xs, treedef, _ = flatten(params)
    gs = flatten(grads)[0]
    ms = flatten(state.momentum)[0]
    xs = [lionk.core.array_api.array_namespace(x).asarray(x, copy=True) for x in xs]
    ms = [lionk.core.array_api.array_namespace(m).asarray(m, copy=True) for m in ms]
    path = execution
    eager_why = f"kappa {kap.name} is not elementwise"
    if path == "chunked" and not chunkable(xs, gs, ms, kap):
        path = "eager"  # a norm κ needs the whole array: not chunkable by design
    if path == "packed" and not kap.separable:
        path = "eager"  # the packed path concatenates leaves: elementwise κ only
    if path == "compiled" and not kap.separable and not type(xs[0]).__module__.startswith("torch"):
        path = "eager"  # the fused NumPy/CuPy kernel is elementwise: a norm κ runs eagerly
    compile_fails = getattr(kap, "torch_compile_fails", None)
    if path == "compiled" and compile_fails:
        path = "eager"  # a κ that states torch.compile cannot run it (auto runs it eagerly)
        eager_why = f"kappa {kap.name}: {compile_fails}"
    # tiny pieces and two threads, so that piece and thread boundaries fall inside the leaves
    record = ExecutionRecord(path)
    run_inplace(xs, gs, ms, make_hyper(lr, betas, weight_decay), kap, execution=path,
                chunk_size=7, threads=2, record=record)
    if summary is not None:
        key = f"{record.path}: {record.detail}" if record.detail else str(record.path)
        if path != execution:
            key += f" ({eager_why})"
        paths = summary.setdefault("paths", {})
        paths[key] = paths.get(key, 0) + 1
        for why in record.fallbacks:
            if why not in summary.setdefault("fallbacks", []):
                summary["fallbacks"].append(why)
    return treedef.unflatten(xs), lionk.State(state.count + 1, treedef.unflatten(ms), state.skipped)


def _persisting(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A dask step whose results are computed chunk by chunk and kept (``dask.persist``), as a
    training loop does: otherwise step t's graph holds all t steps and reading it recomputes
    them (quadratic time)."""
    import dask

    def run(*args: Any) -> Any:
        params, state = fn(*args)
        params, momentum = dask.persist(params, state.momentum, scheduler="sync")
        return params, lionk.State(state.count, momentum, state.skipped)

    return run


# The dask row is opt-in: dask builds a task graph per operation (~1 ms each), so the suite's
# 200-step trajectories take about 70 s per (κ, dtype) cell, ~20 min for the row.
DASK_OPT_IN = "LIONK_CONFORMANCE_DASK"


def dask_backend() -> Backend:
    """The ``dask`` backend: leaves cut into about two chunks per axis, the synchronous
    scheduler, results persisted after every step (tests/test_dask.py runs it on short
    trajectories; the full row is opt-in, see ``DASK_OPT_IN``)."""
    kind, tier, _ = KNOWN_BACKENDS["dask"]
    return Backend("dask", kind, tier, True, lib=library("dask"), extra={"persist": True})


def _missing(name: str, reason: str) -> Backend:
    kind, tier, _ = KNOWN_BACKENDS[name]
    return Backend(name, kind, tier, False, reason)


def _has(mod: str) -> bool:
    return installed(mod)


def enable_jax_x64() -> None:
    """float64 for JAX: a global, sticky flag, set once before any JAX array exists."""
    if _has("jax"):
        import jax

        jax.config.update("jax_enable_x64", True)


def _library_of(name: str) -> tuple[str, str]:
    """(array library, device) of the conformance row ``name``."""
    device = KNOWN_BACKENDS[name][0]
    for lib in ("numpy", "array_api_strict", "torch", "jax", "cupy", "dask"):
        if name == lib or name.startswith(lib + "-"):
            return lib, device
    raise KeyError(name)


# rows that run another execution path of lionk on their library
_EXECUTION = {"numpy-chunked": "chunked", "numpy-numba": "compiled",
              "torch-cpu-compiled": "compiled", "torch-cpu-packed": "packed",
              "torch-cpu-auto": "auto",
              "jax-cpu-jit-donated": "jit_step", "jax-cpu-jit-fused": "jit_step-fused",
              "cupy-compiled": "compiled"}


def _make(name: str) -> Backend:
    kind, tier, _ = KNOWN_BACKENDS[name]
    lib_name, device = _library_of(name)
    if name == "dask" and os.environ.get(DASK_OPT_IN, "") != "1" and _has("dask"):
        return _missing(name, f"opt-in, about 70 s per cell: set {DASK_OPT_IN}=1")
    if name == "jax-cpu-jit-sse42" and _has("jax") and SSE42_FLAG not in os.environ.get("XLA_FLAGS", ""):
        return Backend(name, kind, tier, True, reason="runs in a subprocess",
                       extra={"subprocess": True})
    try:
        lib = library(lib_name, device)
    except Unavailable as exc:
        reason = str(exc)
        if lib_name == "dask" and "not installed" in reason:
            reason += " (pip install 'dask[array]')"
        return _missing(name, reason)
    if name == "numpy-numba":
        from lionk.execution.kernels import numba_available

        if not numba_available():
            return _missing(name, "numba not installed (pip install 'lionk[numba]')")
    if name == "jax-cpu-jit-fused":
        from lionk.execution.kernels import cxx_compiler

        if cxx_compiler() is None:
            return _missing(name, "no C++ compiler (set CXX)")
    if name == "dask":
        return dask_backend()
    return Backend(name, kind, tier, True, lib=lib,
                   dtypes=("float32", "float64"),
                   jit=lib_name == "jax" and (name.endswith("jit") or name.endswith("sse42")),
                   execution=_EXECUTION.get(name))


def discover(names: list[str] | None = None, device: str = "all") -> list[Backend]:
    """The requested backends (default: all known), available or with the reason they are not."""
    if names is None:
        names = list(KNOWN_BACKENDS)
    unknown = [n for n in names if n not in KNOWN_BACKENDS]
    if unknown:
        raise SystemExit(f"unknown backend(s) {unknown}; known: {', '.join(KNOWN_BACKENDS)}")
    if "numpy" not in names:
        names = ["numpy", *names]  # the reference always runs
    out = []
    for n in names:
        kind = KNOWN_BACKENDS[n][0]
        if device != "all" and kind != device and n != "numpy":
            continue
        out.append(_make(n))
    return out
