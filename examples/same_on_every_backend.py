"""The same ``lionk.minimize`` run on NumPy, PyTorch and JAX arrays, and what "the same" means.

The problem is the box-constrained least squares of ``examples/box_lsq.py`` (200 × 50, r = 1,
κ = "sign"), started from x0 = 0 in float64 on each library present (PyTorch CPU, JAX CPU with
x64 enabled; a library that is not installed is skipped).

1. **Bitwise tier** (same gradients). f and ∇f are computed by one NumPy function from
   ``np.asarray(x)``, so every library is handed the same gradient values. The Lion step with the
   sign κ is *exact* (only correctly rounded elementwise operations, docs/reproducibility.md),
   hence the iterates are bit-for-bit identical: x has the same bit pattern on every library,
   and so have nit and the recorded f. H and the KKT residual involve reductions (sums), whose
   last bit is library-dependent: they agree to ~1e-12 relative (ulp tier), not bitwise.

2. **Semantic tier** (each library's own autodiff). f is written with the library's operations
   and differentiated by ``torch.autograd`` or ``jax.grad``. The matrix products behind ∇f may
   round differently (different BLAS / XLA kernels), so identical iterates are not promised;
   the runs reach the same optimum, the objectives agreeing to 1e-9 relative.

Run: ``python examples/same_on_every_backend.py``
"""

from __future__ import annotations

import importlib.util
import runpy
from pathlib import Path

import numpy as np

from lionk import minimize

BOX = runpy.run_path(str(Path(__file__).with_name("box_lsq.py")), run_name="box_lsq")


def converters() -> dict:
    """{name: (to_library(np_array), to_numpy(array))} for each library present, NumPy first."""
    out = {"numpy": (lambda a: np.array(a, copy=True), np.asarray)}
    if importlib.util.find_spec("torch") is not None:
        import torch

        out["torch"] = (lambda a: torch.tensor(a, dtype=torch.float64),
                        lambda t: t.detach().cpu().numpy())
    if importlib.util.find_spec("jax") is not None:
        import jax

        jax.config.update("jax_enable_x64", True)  # float64 arrays (global JAX setting)
        import jax.numpy as jnp

        out["jax"] = (lambda a: jnp.asarray(a, dtype=jnp.float64), np.asarray)
    return out


def native_objective(name: str, A: np.ndarray, b: np.ndarray):
    """½‖Ax − b‖² written with the library's own operations (for its autodiff)."""
    if name == "torch":
        import torch

        At, bt = torch.tensor(A), torch.tensor(b)
        return lambda x: 0.5 * torch.sum((At @ x - bt) ** 2)
    import jax.numpy as jnp

    Aj, bj = jnp.asarray(A), jnp.asarray(b)
    return lambda x: 0.5 * jnp.sum((Aj @ x - bj) ** 2)


def main(maxiter: int = 300, verbose: bool = True) -> dict:
    A, b = BOX["make_problem"]()
    x0 = np.zeros(A.shape[1])

    def fun(x):  # one NumPy oracle for every library: identical gradients
        return BOX["objective"](A, b, np.asarray(x))

    def jac(x):
        x = np.asarray(x)
        return A.T @ (A @ x - b)

    libs = converters()
    runs = {}
    for name, (to_lib, to_np) in libs.items():
        res = minimize(fun, to_lib(x0), jac=jac, radius=1.0, maxiter=maxiter)
        runs[name] = {"x": to_np(res.x), "nit": res.nit, "f": res.history["f"],
                      "H": res.history["H"], "kkt": res.kkt_residual,
                      "type": f"{type(res.x).__module__}.{type(res.x).__name__}",
                      "dtype": str(res.x.dtype)}
    ref = runs["numpy"]
    out = {"backends": list(runs), "runs": runs, "bitwise_x": {}, "bitwise_f": {}, "same_nit": {},
           "H_rel_diff": {}, "autodiff_rel_objective_diff": {}, "autodiff_max_abs_diff": {}}
    for name, run in runs.items():
        out["bitwise_x"][name] = bool(np.array_equal(run["x"].view(np.uint64), ref["x"].view(np.uint64)))
        out["bitwise_f"][name] = bool(np.array_equal(run["f"].view(np.uint64), ref["f"].view(np.uint64)))
        out["same_nit"][name] = run["nit"] == ref["nit"]
        out["H_rel_diff"][name] = float(np.max(np.abs(run["H"] - ref["H"]) / np.abs(ref["H"])))
        if verbose:
            print(f"{name:6s} x: {run['type']} {run['dtype']}  nit = {run['nit']}  "
                  f"x bitwise equal to NumPy's: {out['bitwise_x'][name]}  "
                  f"max relative H difference {out['H_rel_diff'][name]:.1e}")

    f_ref = BOX["objective"](A, b, ref["x"])
    for name, (to_lib, to_np) in libs.items():
        if name == "numpy":
            continue
        res = minimize(native_objective(name, A, b), to_lib(x0), radius=1.0, maxiter=maxiter)
        x = to_np(res.x)
        out["autodiff_rel_objective_diff"][name] = abs(BOX["objective"](A, b, x) - f_ref) / f_ref
        out["autodiff_max_abs_diff"][name] = float(np.max(np.abs(x - ref["x"])))
        if verbose:
            print(f"{name:6s} with its own autodiff: relative objective difference "
                  f"{out['autodiff_rel_objective_diff'][name]:.1e}, max |Δx| "
                  f"{out['autodiff_max_abs_diff'][name]:.1e}")
    return out


if __name__ == "__main__":
    main()
