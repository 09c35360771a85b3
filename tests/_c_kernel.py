"""Test helper: the fused kernel's C body (CuPy's) compiled by the system C compiler.

lionk itself no longer compiles C on the host (NumPy's kernel is built by numba). The C
translation still serves CuPy (NVRTC) and the experimental XLA FFI handler; on a machine without
a GPU these tests compile it with ``cc`` (no FMA contraction, no fast math) to check that the C
body is the eager step, bit for bit.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lionk.execution import kernels as _kernel

C_FLAGS = ("-O3", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC")


def c_compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc"))


class CKernel:
    """``kernel(x, g, m, hyper)``: the body compiled as C, updating contiguous 1-D arrays."""

    def __init__(self, source: _kernel.KernelSource) -> None:
        self.source = source
        cc = c_compiler()
        if cc is None:
            raise RuntimeError("no C compiler")
        folder = Path(tempfile.mkdtemp(prefix="lionk-test-kernel-"))
        try:
            (folder / "kernel.c").write_text(_kernel.c_function(source))
            built = subprocess.run([cc, *C_FLAGS, "kernel.c", "-o", "kernel.so", "-lm"],
                                   cwd=folder, capture_output=True, text=True)
            if built.returncode != 0:
                raise RuntimeError(built.stderr[:2000])
            lib = ctypes.CDLL(str(folder / "kernel.so"))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        lib.lionk_kernel.restype = None
        lib.lionk_kernel.argtypes = [ctypes.c_long] + [ctypes.c_void_p] * 4
        self.raw = lib.lionk_kernel

    def __call__(self, x: np.ndarray, g: np.ndarray, m: np.ndarray, hyper: Any) -> None:
        src = self.source
        for a, dt in ((x, src.dtype), (g, src.dtype), (m, src.mdtype)):
            assert a.dtype == dt and a.ndim == 1 and a.flags.c_contiguous
        coef = np.array([float(c) for c in hyper], dtype=np.float64)
        self.raw(x.shape[0], x.ctypes.data, g.ctypes.data, m.ctypes.data, coef.ctypes.data)


_BUILT: dict[Any, CKernel] = {}


def c_kernel(source: _kernel.KernelSource) -> CKernel:
    if source not in _BUILT:
        _BUILT[source] = CKernel(source)
    return _BUILT[source]
