"""Per-iteration overhead of ``lionk.minimize`` over the user's own value-and-gradient.

    PYTHONPATH=. python benchmarks/minimize_before_after.py [--maxiter 2000] [--rounds 5]
        [--before OLD/lionk/analysis/minimize.py] [--torch-threads 1]

Problem: least squares ``f(x) = ½‖Ax − b‖²`` with a fixed 200×40 float64 design, radius 0.5,
``tol=0`` (no early stop: every run takes maxiter steps), a fixed lr (no line search).
Per backend, interleaved in one process (round-robin, medians):

* ``vg``: one call of the user's value-and-gradient (NumPy: hand-written; torch: autograd;
  JAX: ``jax.jit(jax.value_and_grad(f))``, synchronised), timed over ``maxiter`` calls;
* ``minimize``: ``lionk.minimize(...)`` total time / maxiter (warm: JAX compiles in the
  warm-up run).

The ratio ``minimize / vg`` is the per-iteration cost relative to the evaluation; the overhead is
``ratio − 1``. ``--before FILE`` loads another version of ``minimize.py`` (e.g. extracted with
``git show BASE:lionk/analysis/minimize.py > /tmp/minimize_before.py``) as a module of this
``lionk.analysis`` package and times it in the same rounds (``before`` rows). torch runs with one
thread by default: on a loaded 2-core machine its OpenMP workers spin and a 40-variable
autograd call takes milliseconds instead of ~0.1 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--maxiter", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="numpy,torch,jax")
    ap.add_argument("--before", default=None)
    ap.add_argument("--torch-threads", type=int, default=1)
    args = ap.parse_args()
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import torch

    import lionk

    torch.set_num_threads(args.torch_threads)
    versions = {"after": lionk.minimize}
    if args.before:
        import importlib.util

        spec = importlib.util.spec_from_file_location("lionk.analysis._minimize_before", args.before)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        versions = {"before": old.minimize, "after": lionk.minimize}

    rng = np.random.default_rng(0)
    A = rng.standard_normal((200, 40))
    b = 3.0 * rng.standard_normal(200)
    n = args.maxiter
    kw = dict(radius=0.5, lr=0.01, maxiter=n, tol=0.0)

    # NumPy: hand-written value and gradient
    def vg_np(x):
        r = A @ x - b
        return 0.5 * float(r @ r), A.T @ r

    # torch: autograd
    At, bt = torch.from_numpy(A), torch.from_numpy(b)

    def f_t(x):
        r = At @ x - bt
        return 0.5 * (r * r).sum()

    def vg_t(x):
        xg = x.detach().requires_grad_(True)
        f = f_t(xg)
        (g,) = torch.autograd.grad(f, xg)
        return f.detach(), g

    # JAX
    Aj, bj = jnp.asarray(A), jnp.asarray(b)

    def f_j(x):
        r = Aj @ x - bj
        return 0.5 * jnp.sum(r * r)

    vg_j = jax.jit(jax.value_and_grad(f_j))

    def loop(vg, x, sync=None):
        def run():
            out = None
            for _ in range(n):
                out = vg(x)
            if sync is not None:
                sync(out)
        return run

    contenders = {}
    for tag, mz in versions.items():
        contenders[f"numpy {tag}"] = (
            loop(vg_np, np.zeros(40)),
            lambda mz=mz: mz(vg_np, np.zeros(40), jac=True, **kw))
        contenders[f"torch {tag}"] = (
            loop(vg_t, torch.zeros(40, dtype=torch.float64)),
            lambda mz=mz: mz(f_t, torch.zeros(40, dtype=torch.float64), **kw))
        contenders[f"jax {tag}"] = (
            loop(vg_j, jnp.zeros(40), jax.block_until_ready),
            lambda mz=mz: jax.block_until_ready(mz(f_j, jnp.zeros(40), **kw)["x"]))
    contenders = {k: v for k, v in contenders.items() if k.split()[0] in args.only.split(",")}
    for vg_run, mz_run in contenders.values():  # warm-up (compilation)
        vg_run()
        mz_run()
    samples: dict[str, dict[str, list[float]]] = {k: {"vg": [], "min": []} for k in contenders}
    names = list(contenders)
    for r in range(args.rounds):
        for i in range(len(names)):
            name = names[(i + r) % len(names)]
            vg_run, mz_run = contenders[name]
            for label, fn in (("vg", vg_run), ("min", mz_run)):
                t0 = time.perf_counter()
                fn()
                samples[name][label].append((time.perf_counter() - t0) / n)
    print(f"maxiter={n}, rounds={args.rounds}, medians per iteration")
    print(f"{'backend':14s} {'vg (µs)':>10s} {'minimize (µs)':>14s} {'ratio':>7s} {'overhead':>9s}")
    for name in names:
        v = statistics.median(samples[name]["vg"]) * 1e6
        m = statistics.median(samples[name]["min"]) * 1e6
        print(f"{name:14s} {v:10.1f} {m:14.1f} {m / v:7.2f} {100 * (m / v - 1):8.0f}%")


if __name__ == "__main__":
    main()
