"""``lionk.step`` on ``dask.array``: a lazy, chunk-wise Lion step on a ``dask.distributed`` cluster.

array-api-compat gives dask arrays an array-API namespace, so the pure ``lionk.step`` runs on
them unchanged: it builds a task graph (nothing is computed), one task chain per chunk for an
elementwise κ. A training loop ``persist``s params and momentum after each step, so the
cluster computes every chunk where it lives and the graph stays one step long.

The problem: box-constrained least squares ``min ½‖A x − b‖²/n s.t. ‖x‖_∞ ≤ 1/λ`` with a
(2000 × 200) matrix generated on the workers in 4 × 4 blocks (the gradient ``Aᵀ(Ax − b)/n`` is
a chunked reduction) and x in 4 chunks. The same steps run in NumPy. The step itself is bitwise
equal to NumPy's for κ = sign (checked on identical inputs); whole trajectories agree as far as
the gradients do (a chunked ``Aᵀr`` may sum in another order than NumPy's matmul).

Run: ``python examples/dask_step.py`` (a LocalCluster of 2 worker processes).
"""

from __future__ import annotations


def main(steps: int = 60, lr: float = 0.05, weight_decay: float = 1.0,
         processes: bool = True) -> dict:
    """Train on a LocalCluster of 2 workers; return the losses, the largest |x| and the checks."""
    import dask
    import dask.array as da
    import numpy as np
    from dask.distributed import Client, LocalCluster

    import lionk

    n, d = 2000, 200
    rng = np.random.default_rng(0)
    x_true = rng.uniform(-2.0, 2.0, d)  # partly outside the box |x| <= 1: the constraint is active

    def loss(x, A, b):
        r = A @ x - b
        return 0.5 * (r @ r) / n

    def grad(x, A, b):
        return (A.T @ (A @ x - b)) * (1.0 / n)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=processes,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        # data generated on the workers, chunk by chunk (4 row blocks × 4 column blocks)
        A = da.random.default_rng(1).standard_normal((n, d), chunks=(n // 4, d // 4))
        b = A @ x_true + 0.1 * da.random.default_rng(2).standard_normal(n, chunks=n // 4)
        A, b = client.persist([A, b])
        A_np, b_np = dask.compute(A, b)
        x = da.zeros(d, chunks=d // 4)
        state = lionk.init(x)
        first = float(loss(x, A, b).compute())
        for _ in range(steps):
            x, state = lionk.step(x, grad(x, A, b), state, lr=lr, weight_decay=weight_decay)
            x, m = client.persist([x, state.momentum])  # compute now, keep the chunks
            state = lionk.State(state.count, m, state.skipped)
        x_np = x.compute()
        final = float(loss(x, A, b).compute())
        # one step on identical inputs: dask (lazy, chunk-wise, on the cluster) vs NumPy
        g_np = np.asarray(grad(x, A, b).compute())
        m_np = np.asarray(state.momentum.compute())
        lazy = lionk.step(x, da.from_array(g_np, chunks=d // 4), state, lr=lr,
                          weight_decay=weight_decay)
        got_x, got_m = dask.compute(lazy[0], lazy[1].momentum)
        want = lionk.step(x_np, g_np, lionk.State(0, m_np, 0), lr=lr, weight_decay=weight_decay)
        step_bitwise = bool(np.array_equal(got_x, want[0]) and np.array_equal(got_m, want[1].momentum))

    # the same run in NumPy
    xr = np.zeros(d)
    st = lionk.init(xr)
    for _ in range(steps):
        xr, st = lionk.step(xr, grad(xr, A_np, b_np), st, lr=lr, weight_decay=weight_decay)
    result = {"first_loss": first, "final_loss": final, "max_abs_x": float(np.max(np.abs(x_np))),
              "radius": 1.0 / weight_decay, "step_bitwise_vs_numpy": step_bitwise,
              "max_diff_vs_numpy_trajectory": float(np.max(np.abs(x_np - xr))),
              "processes": processes}
    print(f"dask on 2 workers ({'processes' if processes else 'threads'}): loss {first:.3f} -> "
          f"{final:.4f}; max |x| = {result['max_abs_x']:.4f} (box radius {result['radius']:g}); "
          f"one step bitwise equal to NumPy: {step_bitwise}; max |x_dask - x_numpy| after "
          f"{steps} steps: {result['max_diff_vs_numpy_trajectory']:.3g}")
    return result


if __name__ == "__main__":
    main()
