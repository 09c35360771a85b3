"""One fused elementwise kernel per step, in C, generated from the recorded step.

:mod:`lionk._tape` records the calls :func:`lionk._step.update_leaves` makes on a chunk. Here the
same record is written as the body of an elementwise kernel: one C statement per recorded call,
in the recorded order, each the IEEE operation the NumPy call performs (``a * b`` for
``multiply``, the exact sign for ``sign``, NumPy's NaN-propagating ``clip``, ...). The step's
coefficients are double parameters of the kernel, rounded once to the array dtype inside (what
NumPy does to a Python float), so one build serves every learning rate; the κ's own constants
are written as bit patterns. One pass over memory reads x, g and m and writes x and m: the five
arrays of the floor. No ``a*b + c`` is contracted into an FMA.

The body is built three ways: by the system C compiler for NumPy's ``execution="compiled"``
(:class:`CKernel`), by the system C++ compiler as an XLA FFI handler for
``lionk.jit_step(fused=True)`` (:func:`jax_ffi_kernel`), and by CuPy (``cupy.ElementwiseKernel``,
NVRTC ``--fmad=false``) for CUDA arrays (:func:`cupy_kernel`). Every build, before its first use
with a set of coefficients, runs on the probe vectors (±0, ±inf, NaN, subnormals) and is compared
byte for byte with the eager NumPy step; one that differs is not used.

Only float32 and float64 parameters and momentum are translated (half types would need CUDA's
half intrinsics); a call without a C translation leaves the step to another path.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from . import tape as _tape

__all__ = ["COEFFICIENTS", "KernelSource", "kernel_source", "why_not", "c_function", "CKernel",
           "c_kernel", "checked_c_kernel", "cupy_kernel", "jax_ffi_kernel", "ffi_function"]

_CTYPE = {np.dtype("float32"): "float", np.dtype("float64"): "double", np.dtype("bool"): "bool"}

# Exact constants from their bit patterns (no decimal parsing, no hex-float literal support needed)
CUDA_PREAMBLE = """
#define LIONK_F32(b) __int_as_float((int)(b##u))
#define LIONK_F64(b) __longlong_as_double((long long)(b##ull))
"""
C_PREAMBLE = """
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
static inline float lionk_f32(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static inline double lionk_f64(uint64_t b) { double d; memcpy(&d, &b, 8); return d; }
#define LIONK_F32(b) lionk_f32(b##u)
#define LIONK_F64(b) lionk_f64(b##ull)
"""


# the kernel's scalar parameters, in the order of lionk._step.Hyper: c_lr, c_b1, ...
COEFFICIENTS = ("lr", "b1", "one_minus_b1", "b2", "one_minus_b2", "decay")


class KernelSource(NamedTuple):
    """The body of the kernel over one element: reads ``x``, ``g``, ``m`` and the double
    coefficients ``c_lr``, ``c_b1``, ... (:data:`COEFFICIENTS`), assigns ``x`` and ``m``. The
    same body serves every learning rate: only the arguments change."""

    body: str
    dtype: np.dtype  # params and grads
    mdtype: np.dtype  # momentum


class _NoTranslation(Exception):
    pass


def _literal(value: Any, dtype: np.dtype) -> str:
    """A Python scalar as the ``dtype`` value NumPy would use (NEP 50: rounded to ``dtype``)."""
    if dtype == np.dtype("bool"):
        return "true" if bool(value) else "false"
    if dtype == np.dtype("float32"):
        (bits,) = struct.unpack("<I", np.asarray(value, dtype=np.float32).tobytes())
        return f"LIONK_F32(0x{bits:08x})"
    if dtype == np.dtype("float64"):
        (bits,) = struct.unpack("<Q", np.asarray(value, dtype=np.float64).tobytes())
        return f"LIONK_F64(0x{bits:016x})"
    raise _NoTranslation(f"a constant of dtype {dtype}")


def _sign(a: str, t: str) -> str:
    return f"(({a}) > 0 ? ({t})1 : (({a}) < 0 ? ({t})-1 : (({a}) == ({a}) ? ({t})0 : ({a}))))"


def _clip(a: str, lo: str, hi: str) -> str:
    # NumPy: min(max(a, lo), hi) with NaN kept: max(a, b) = isnan(a) ? a : (a > b ? a : b)
    low = f"(({a}) != ({a}) ? ({a}) : (({a}) > ({lo}) ? ({a}) : ({lo})))"
    return f"(({low}) != ({low}) ? ({low}) : (({low}) < ({hi}) ? ({low}) : ({hi})))"


_BINARY = {np.add: "+", np.subtract: "-", np.multiply: "*", np.true_divide: "/",
           np.greater: ">", np.less: "<", np.greater_equal: ">=", np.less_equal: "<=",
           np.equal: "==", np.not_equal: "!=", np.logical_and: "&&", np.logical_or: "||"}


def _expression(fn: Any, args: list[str], out_dtype: np.dtype) -> str:
    t = _CTYPE[out_dtype]
    if fn in _BINARY and len(args) == 2:
        return f"({args[0]}) {_BINARY[fn]} ({args[1]})"
    if fn is np.negative:
        return f"-({args[0]})"
    if fn is np.positive:
        return f"({args[0]})"
    if fn is np.absolute:
        return f"{'fabsf' if t == 'float' else 'fabs'}({args[0]})"
    if fn is np.sqrt:
        return f"{'sqrtf' if t == 'float' else 'sqrt'}({args[0]})"
    if fn is np.sign:
        return _sign(args[0], t)
    if fn is np.logical_not:
        return f"!({args[0]})"
    if fn is np.clip and len(args) == 3:
        return _clip(*args)
    if fn is np.where and len(args) == 3:
        return f"({args[0]}) ? ({t})({args[1]}) : ({t})({args[2]})"
    if getattr(fn, "__name__", "") == "astype" and len(args) == 2:
        return f"({t})({args[0]})"
    if fn is np.maximum:  # NumPy: a >= b or isnan(a) ? a : b
        return f"(({args[0]}) >= ({args[1]}) || ({args[0]}) != ({args[0]})) ? ({args[0]}) : ({args[1]})"
    if fn is np.minimum:
        return f"(({args[0]}) <= ({args[1]}) || ({args[0]}) != ({args[0]})) ? ({args[0]}) : ({args[1]})"
    raise _NoTranslation(f"no C translation of {getattr(fn, '__name__', fn)}")


def _coefficient(a: Any, hyper: Any) -> str | None:
    """The Hyper field a recorded scalar is (by identity: ``_coef`` passes the field's own float
    object to the operation), or None for any other constant."""
    if type(a) is not float or hyper is None:
        return None
    for name, value in zip(COEFFICIENTS, hyper):
        if a is value:
            return name
    return None


def _translate(tape: Any, inputs: list[Any], outputs: dict[int, Any], hyper: Any = None) -> str:
    """The kernel body. The step's coefficients (the fields of ``hyper``) become the kernel's
    double parameters ``c_<name>``, rounded once to the operation's dtype (what NumPy does to a
    Python float); every other constant is written as its bit pattern."""
    names: dict[int, str] = {}
    lines = []
    converted: set[str] = set()
    for n, nm in zip(inputs, ("x", "g", "m")):
        names[n.index] = f"v{n.index}"
        lines.append(f"const {_CTYPE[n.dtype]} v{n.index} = {nm};")
    for c in tape.calls:
        out_dtype = c.node.dtype
        if out_dtype not in _CTYPE:
            raise _NoTranslation(f"dtype {out_dtype}")
        fn = _tape._lowered(c.fn)  # noqa: SLF001 - the same replay function as the tape's
        if c.kwargs:
            raise _NoTranslation("keyword arguments")
        # the dtype a Python scalar takes: the first floating array argument's (NEP 50)
        node_dtypes = [a.dtype for a in c.args if isinstance(a, _tape._Node)]  # noqa: SLF001
        floating = [d for d in node_dtypes if d.kind == "f"]
        scalar_dtype = floating[0] if floating else out_dtype
        args: list[str] = []
        for a in c.args:
            if isinstance(a, _tape._Node):  # noqa: SLF001
                args.append(names[a.index])
            elif (coef := _coefficient(a, hyper)) is not None:
                if scalar_dtype not in (np.dtype("float32"), np.dtype("float64")):
                    raise _NoTranslation(f"a coefficient at dtype {scalar_dtype}")
                ct = _CTYPE[scalar_dtype]
                local = f"k_{coef}_{ct}"
                if local not in converted:  # Python float -> dtype: one rounding, as NumPy
                    converted.add(local)
                    lines.append(f"const {ct} {local} = ({ct})c_{coef};")
                args.append(local)
            elif isinstance(a, (bool, int, float, np.generic)) or (
                isinstance(a, np.ndarray) and a.ndim == 0
            ):
                args.append(_literal(a, scalar_dtype))
            elif isinstance(a, (type, np.dtype)) and getattr(fn, "__name__", "") == "astype":
                args.append("")  # the target dtype is the result's dtype
            else:
                raise _NoTranslation(f"an argument of type {type(a).__name__}")
        if len({d for d in node_dtypes if d.kind == "f"}) > 1:
            raise _NoTranslation("mixed floating dtypes in one call")
        expr = _expression(fn, args, out_dtype)
        names[c.node.index] = f"v{c.node.index}"
        lines.append(f"const {_CTYPE[out_dtype]} v{c.node.index} = {expr};")
    for i, node in outputs.items():
        lines.append(f"{('x', 'g', 'm')[i]} = {names[node.index]};")
    return "\n".join(lines)


_CACHE: dict[Any, tuple[Any, KernelSource | None, str]] = {}


def _make_source(update: Callable[..., Any], hyper: Any, kappa: Any, dtype: Any,
                 mdtype: Any) -> KernelSource:
    dtype, mdtype = np.dtype(dtype), np.dtype(mdtype)
    if dtype not in _CTYPE or mdtype not in _CTYPE or dtype.kind != "f" or mdtype.kind != "f":
        raise _NoTranslation(f"dtypes {dtype}/{mdtype} (float32 and float64 only)")
    tape, inputs, outputs = _tape.record(update, hyper, kappa, dtype, mdtype)
    return KernelSource(_translate(tape, inputs, outputs, hyper), dtype, mdtype)


def kernel_source(update: Callable[..., Any], hyper: Any, kappa: Any, dtype: Any,
                  mdtype: Any) -> KernelSource | None:
    """The elementwise kernel body of ``update`` for these coefficients, κ and dtypes, or None
    (float16/bfloat16, a call without a C translation, a step that cannot be recorded)."""
    args = (update, hyper, kappa, dtype, mdtype)
    return _tape.memoized(_CACHE, lambda: _make_source(*args), *args)[0]


def why_not(update: Callable[..., Any], hyper: Any, kappa: Any, dtype: Any, mdtype: Any) -> str:
    """Why :func:`kernel_source` returned None for these arguments ("" when it did not)."""
    args = (update, hyper, kappa, dtype, mdtype)
    return _tape.memoized(_CACHE, lambda: _make_source(*args), *args)[1]


def c_function(source: KernelSource, name: str = "lionk_kernel") -> str:
    """A C translation unit with ``void name(long n, T *x, const T *g, M *m, const double *coef)``
    running the body over n elements, ``coef`` the six coefficients in :data:`COEFFICIENTS`
    order."""
    t, mt = _CTYPE[source.dtype], _CTYPE[source.mdtype]
    body = "\n        ".join(source.body.splitlines())
    coefs = "".join(f"    const double c_{c} = coef[{i}];\n" for i, c in enumerate(COEFFICIENTS))
    return (
        f"{C_PREAMBLE}\n"
        f"void {name}(long n, {t} *xs, const {t} *gs, {mt} *ms, const double *coef) {{\n"
        f"{coefs}"
        f"    for (long i = 0; i < n; ++i) {{\n"
        f"        {t} x = xs[i]; const {t} g = gs[i]; {mt} m = ms[i];\n"
        f"        {body}\n"
        f"        xs[i] = x; ms[i] = m;\n"
        f"    }}\n"
        f"}}\n"
    )


# ---------------------------------------------------------------------------------------------
# A kernel is used only after it matched eager NumPy on the probes, for these coefficients.

_CHECKED: dict[Any, bool] = {}


def _matches_eager_cached(build: Any, run: Callable[..., None], source: KernelSource,
                          update: Callable[..., Any], hyper: Any, kappa: Any) -> bool:
    """Whether ``run`` (a build of ``source`` with these coefficients) gives eager NumPy's
    bytes on the probes; checked once per build and coefficients."""
    key = (build if isinstance(build, str) else id(build), tuple(hyper))
    if key not in _CHECKED:
        label = _tape.differs_from_eager(run, update, hyper, kappa, source.dtype, source.mdtype)
        _tape.remember(_CHECKED, key, not label)
    return _CHECKED[key]


# ---------------------------------------------------------------------------------------------
# CuPy: the body as a cupy.ElementwiseKernel.

_CUPY_BUILT: dict[KernelSource, Any] = {}


def cupy_kernel(update: Callable[..., Any], hyper: Any, kappa: Any, dtype: Any,
                mdtype: Any) -> Callable[[Any, Any, Any], None] | None:
    """``run(g, x, m)``: a checked fused ``cupy.ElementwiseKernel`` updating x and m in place
    with these coefficients, or None (no kernel, or one that differs on the probes)."""
    source = kernel_source(update, hyper, kappa, dtype, mdtype)
    if source is None:
        return None
    import cupy

    kernel = _CUPY_BUILT.get(source)  # a build per body and dtypes, not per coefficients
    if kernel is None:
        t, mt = source.dtype.name, source.mdtype.name
        params = ", ".join(f"float64 c_{c}" for c in COEFFICIENTS)
        kernel = _CUPY_BUILT[source] = cupy.ElementwiseKernel(
            f"{params}, {t} g", f"{t} x, {mt} m", source.body, "lionk_step",
            preamble=CUDA_PREAMBLE, options=("--fmad=false",),
        )
    coefs = tuple(float(c) for c in hyper)

    def run(g: Any, x: Any, m: Any) -> None:
        kernel(*coefs, g, x, m)

    def on_host(x: np.ndarray, g: np.ndarray, m: np.ndarray) -> None:
        cx, cg, cm = cupy.asarray(x), cupy.asarray(g), cupy.asarray(m)
        kernel(*coefs, cg, cx, cm)
        x[...] = cupy.asnumpy(cx)
        m[...] = cupy.asnumpy(cm)

    if not _matches_eager_cached(kernel, on_host, source, update, hyper, kappa):
        import warnings

        warnings.warn("lionk: the fused CuPy kernel differs from the eager step on the "
                      "probes; running the step eagerly", RuntimeWarning, stacklevel=3)
        return None
    return run


# ---------------------------------------------------------------------------------------------
# The C translation compiled by the system C compiler: NumPy's "compiled" execution path, and
# the check of the kernel's arithmetic on machines without a GPU (tests, conformance).

_C_BUILDS: dict[KernelSource, CKernel] = {}
C_FLAGS = ("-O3", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC")
# tried first: the vector width of this CPU (measured: AVX-512 took 2^24 float32 sign from
# 2.2x to 1.0x the floor on one thread); IEEE results do not depend on it. Dropped if refused.
NATIVE_FLAGS = ("-march=native",)


def c_compiler() -> str | None:
    """The system C compiler (``$CC``, else ``cc``), or None."""
    import os

    return _which(os.environ.get("CC", "cc"))


@functools.lru_cache(maxsize=8)
def _which(name: str) -> str | None:  # a PATH search per step costs ~75 µs
    import shutil

    return shutil.which(name)


def _shared_library(compiler: str, code: str, suffix: str, flags: tuple[str, ...],
                    libs: tuple[str, ...]) -> Any:
    """Compile ``code`` into a shared library (``NATIVE_FLAGS`` first, without them if the
    compiler refuses) and load it with ctypes; RuntimeError with the compiler's message."""
    import ctypes
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="lionk-kernel-"))
    try:
        (folder / f"kernel.{suffix}").write_text(code)
        for extra in (NATIVE_FLAGS, ()):
            built = subprocess.run(
                [compiler, *flags, *extra, f"kernel.{suffix}", "-o", "kernel.so", *libs],
                cwd=folder, capture_output=True, text=True)
            if built.returncode == 0:
                return ctypes.CDLL(str(folder / "kernel.so"))  # stays mapped once loaded
        raise RuntimeError(f"{compiler} failed: {built.stderr.strip()[:2000]}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class CKernel:
    """The kernel body compiled as C (``C_FLAGS``: no FMA contraction, no fast math), loaded
    with ctypes. ``kernel(x, g, m, hyper)`` updates contiguous 1-D NumPy arrays x and m in place;
    ``kernel.raw(n, x_ptr, g_ptr, m_ptr, coef_ptr)`` is the C function itself (ctypes releases
    the GIL while it runs, so threads run it in parallel)."""

    def __init__(self, source: KernelSource) -> None:
        import ctypes

        self.source = source
        cc = c_compiler()
        if cc is None:
            raise RuntimeError("no C compiler (set CC or install cc)")
        lib = _shared_library(cc, c_function(source), "c", C_FLAGS, ("-lm",))
        lib.lionk_kernel.restype = None
        lib.lionk_kernel.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p,
                                     ctypes.c_void_p, ctypes.c_void_p]
        self.raw = lib.lionk_kernel

    def __call__(self, x: np.ndarray, g: np.ndarray, m: np.ndarray, hyper: Any) -> None:
        src = self.source
        for a, dt in ((x, src.dtype), (g, src.dtype), (m, src.mdtype)):
            if a.dtype != dt or a.ndim != 1 or not a.flags.c_contiguous or a.shape != x.shape:
                raise ValueError("CKernel: expected contiguous 1-D arrays of the kernel's dtypes")
        coef = np.array([float(c) for c in hyper], dtype=np.float64)
        self.raw(x.shape[0], x.ctypes.data, g.ctypes.data, m.ctypes.data, coef.ctypes.data)


def c_kernel(source: KernelSource) -> CKernel:
    """The compiled C kernel of ``source`` (built once per source; RuntimeError without a C
    compiler or when compilation fails)."""
    kernel = _C_BUILDS.get(source)  # a build per body and dtypes, not per coefficients
    if kernel is None:
        kernel = _C_BUILDS[source] = CKernel(source)
    return kernel


def checked_c_kernel(update: Callable[..., Any], hyper: Any, kappa: Any, dtype: Any,
                     mdtype: Any) -> CKernel | None:
    """The C kernel for these arguments if it exists, compiles, and matches eager NumPy on the
    probes with these coefficients; else None."""
    source = kernel_source(update, hyper, kappa, dtype, mdtype)
    if source is None:
        return None
    try:
        kernel = c_kernel(source)
    except RuntimeError:
        return None
    ok = _matches_eager_cached(kernel.raw, lambda x, g, m: kernel(x, g, m, hyper), source,
                               update, hyper, kappa)
    return kernel if ok else None


# ---------------------------------------------------------------------------------------------
# JAX on CPU: the same body as an XLA FFI custom call (lionk.jit_step(fused=True)), built by the
# system C++ compiler against the FFI headers jaxlib ships. x and m are aliased to the outputs,
# so with donated buffers the kernel updates them in place: one pass over the five arrays.

_FFI_TYPE = {np.dtype("float32"): "ffi::F32", np.dtype("float64"): "ffi::F64"}
_FFI_BUILDS: dict[KernelSource, str] = {}  # kernel -> registered XLA FFI target name


def ffi_function(source: KernelSource) -> str:
    """The C++ translation unit of the FFI handler ``LionkStep`` running the body over a leaf,
    its elements split between threads (each at least 64K elements)."""
    t, mt = _CTYPE[source.dtype], _CTYPE[source.mdtype]
    ft, fmt = _FFI_TYPE[source.dtype], _FFI_TYPE[source.mdtype]
    body = "\n        ".join(source.body.splitlines())
    coef_params = ", ".join(f"double c_{c}" for c in COEFFICIENTS)
    coef_args = ", ".join(f"c_{c}" for c in COEFFICIENTS)
    attrs = "".join(f'\n    .Attr<double>("c_{c}")' for c in COEFFICIENTS)
    return f"""{C_PREAMBLE}
#include <algorithm>
#include <thread>
#include <vector>
#include "xla/ffi/api/ffi.h"
namespace ffi = xla::ffi;

static void lionk_loop(long lo, long hi, {t} *xs, const {t} *gs, {mt} *ms, {coef_params}) {{
    for (long i = lo; i < hi; ++i) {{
        {t} x = xs[i]; const {t} g = gs[i]; {mt} m = ms[i];
        {body}
        xs[i] = x; ms[i] = m;
    }}
}}

static ffi::Error lionk_impl(ffi::Buffer<{ft}> x, ffi::Buffer<{ft}> g, ffi::Buffer<{fmt}> m,
                             ffi::ResultBuffer<{ft}> xo, ffi::ResultBuffer<{fmt}> mo,
                             {coef_params}) {{
    const long n = (long)x.element_count();
    {t} *px = xo->typed_data();
    {mt} *pm = mo->typed_data();
    // the outputs alias the inputs (donated: the same memory; if not, start from a copy)
    if (px != x.typed_data()) memcpy(px, x.typed_data(), n * sizeof({t}));
    if (pm != m.typed_data()) memcpy(pm, m.typed_data(), n * sizeof({mt}));
    const {t} *pg = g.typed_data();
    long workers = std::min<long>(std::max(1u, std::thread::hardware_concurrency()), 8);
    workers = std::max(1L, std::min(workers, n / (1L << 16)));
    std::vector<std::thread> pool;
    for (long w = 1; w < workers; ++w)
        pool.emplace_back(lionk_loop, n * w / workers, n * (w + 1) / workers, px, pg, pm,
                          {coef_args});
    lionk_loop(0, n / workers, px, pg, pm, {coef_args});
    for (auto &th : pool) th.join();
    return ffi::Error::Success();
}}

XLA_FFI_DEFINE_HANDLER_SYMBOL(LionkStep, lionk_impl, ffi::Ffi::Bind()
    .Arg<ffi::Buffer<{ft}>>().Arg<ffi::Buffer<{ft}>>().Arg<ffi::Buffer<{fmt}>>()
    .Ret<ffi::Buffer<{ft}>>().Ret<ffi::Buffer<{fmt}>>(){attrs});
"""


def cxx_compiler() -> str | None:
    """The system C++ compiler (``$CXX``, else ``c++``), or None."""
    import os

    return _which(os.environ.get("CXX", "c++"))


def _ffi_target(source: KernelSource) -> str:
    """Build and register the handler of ``source`` once; its XLA FFI target name."""
    import hashlib

    import jax

    name = _FFI_BUILDS.get(source)
    if name is not None:
        return name
    code = ffi_function(source)
    cxx = cxx_compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (set CXX or install c++)")
    flags = (*C_FLAGS, "-std=c++17", "-w", f"-I{jax.ffi.include_dir()}")
    lib = _shared_library(cxx, code, "cc", flags, ("-lpthread",))
    name = "lionk_step_" + hashlib.sha256(code.encode()).hexdigest()[:16]
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(lib.LionkStep), platform="cpu")
    _FFI_BUILDS[source] = name
    _FFI_LIBS.append(lib)  # keep the library loaded for the life of the process
    return name


_FFI_LIBS: list[Any] = []


def jax_ffi_kernel(update: Callable[..., Any], hyper: Any, kappa: Any, dtype: Any,
                   mdtype: Any) -> Callable[[Any, Any, Any], tuple[Any, Any]]:
    """``call(x, g, m) -> (x', m')`` for use inside ``jax.jit`` on CPU: the fused kernel as an
    XLA FFI custom call, x and m aliased to the outputs. Checked byte for byte against eager
    NumPy on the probes before it is returned. Raises ValueError saying why when there is none."""
    import jax

    source = kernel_source(update, hyper, kappa, dtype, mdtype)
    if source is None:
        raise ValueError(why_not(update, hyper, kappa, dtype, mdtype))
    try:
        name = _ffi_target(source)
    except RuntimeError as exc:
        raise ValueError(str(exc)) from None
    attrs = {f"c_{c}": np.float64(v) for c, v in zip(COEFFICIENTS, hyper)}

    def call(x: Any, g: Any, m: Any) -> tuple[Any, Any]:
        out = (jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct(m.shape, m.dtype))
        new_x, new_m = jax.ffi.ffi_call(name, out, input_output_aliases={0: 0, 2: 1})(
            x, g, m, **attrs)
        return new_x, new_m

    def on_host(x: np.ndarray, g: np.ndarray, m: np.ndarray) -> None:
        # run now, also when jit_step is being traced (the probes are concrete)
        with jax.ensure_compile_time_eval():
            new_x, new_m = jax.jit(call)(x, g, m)
            x[...] = np.asarray(new_x)
            m[...] = np.asarray(new_m)

    if not _matches_eager_cached(name, on_host, source, update, hyper, kappa):
        raise ValueError("the fused kernel differs from the eager step on the probes")
    return call
