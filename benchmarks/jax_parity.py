"""``python -m benchmarks.jax_parity [--rounds N] [--sizes 6,10,16,20,23]``: lionk vs optax.lion in
the same jitted program (issue 12).

Three contenders, each a ``jax.jit`` with params and state donated, timed in interleaved rounds:
``optax.lion`` (update + ``optax.apply_updates``), ``lionk.optax.lion_k`` (the same program) and
``jax.jit(lionk.step)``; on one float32 tensor of 2^k elements and on the digits MLP (6 tensors,
64-128-64-10), for the digits MLP also inside a full train step (forward, ``jax.grad``, update)
on 512 samples of scikit-learn's digits. Reports, per contender, the minimum wall time per step
and the median process CPU time per step (both robust to other processes on a shared machine,
where the median wall time is not), each as a ratio to optax.lion in the same rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

LR, BETAS, WD = 1e-4, (0.9, 0.99), 0.1


def _programs(tree: Any, grads: Any) -> dict[str, tuple[Callable[..., Any], Any]]:
    import jax
    import jax.numpy as jnp
    import optax

    import lionk
    from lionk.optax import lion_k

    ox = optax.lion(LR, b1=BETAS[0], b2=BETAS[1], weight_decay=WD)
    lk = lion_k(LR, b1=BETAS[0], b2=BETAS[1], weight_decay=WD)

    def optax_style(tx: Any) -> Callable[..., Any]:
        def f(p: Any, s: Any, g: Any) -> Any:
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        fn = jax.jit(f, donate_argnums=(0, 1))
        return lambda p, s: fn(p, s, grads)

    def user_step(p: Any, g: Any, s: Any) -> Any:
        return lionk.step(p, g, s, lr=LR, betas=BETAS, weight_decay=WD)

    us = jax.jit(user_step, donate_argnums=(0, 2))
    copy = lambda: jax.tree.map(jnp.copy, tree)  # noqa: E731
    return {
        "optax.lion jit": (optax_style(ox), lambda: (copy(), ox.init(tree))),
        "lionk.optax.lion_k jit": (optax_style(lk), lambda: (copy(), lk.init(tree))),
        "lionk.step + jax.jit (user)": (lambda p, s: us(p, grads, s),
                                        lambda: (copy(), lionk.init(tree))),
    }


def _train_programs(rng: np.random.Generator) -> tuple[dict[str, Any], str]:
    import jax
    import jax.numpy as jnp
    import optax
    from sklearn.datasets import load_digits

    from lionk.optax import lion_k

    from .workloads import DIGITS_WIDTHS

    x, y = load_digits(return_X_y=True)
    xs = jnp.asarray(x[:512] / 16.0, jnp.float32)
    ys = jax.nn.one_hot(y[:512], 10)
    params: dict[str, Any] = {}
    for i, (a, b) in enumerate(zip(DIGITS_WIDTHS[:-1], DIGITS_WIDTHS[1:])):
        params[f"w{i}"] = jnp.asarray(rng.standard_normal((a, b)) / np.sqrt(a), jnp.float32)
        params[f"b{i}"] = jnp.zeros(b, jnp.float32)

    def loss(p: Any) -> Any:
        h = xs
        for i in range(len(DIGITS_WIDTHS) - 1):
            h = h @ p[f"w{i}"] + p[f"b{i}"]
            if i < len(DIGITS_WIDTHS) - 2:
                h = jax.nn.relu(h)
        return optax.softmax_cross_entropy(h, ys).mean()

    out = {}
    for name, tx in (("optax.lion jit", optax.lion(LR, b1=BETAS[0], b2=BETAS[1], weight_decay=WD)),
                     ("lionk.optax.lion_k jit", lion_k(LR, b1=BETAS[0], b2=BETAS[1],
                                                       weight_decay=WD))):
        def train(p: Any, s: Any, tx: Any = tx) -> Any:
            u, s = tx.update(jax.grad(loss)(p), s, p)
            return optax.apply_updates(p, u), s

        out[name] = (jax.jit(train, donate_argnums=(0, 1)),
                     (lambda tx=tx: (jax.tree.map(jnp.copy, params), tx.init(params))))
    return out, "digits train step"


def _time(programs: dict[str, Any], rounds: int, inner: int) -> dict[str, tuple[float, float]]:
    import jax

    state = {k: make() for k, (_, make) in programs.items()}
    for k, (fn, _) in programs.items():
        for _ in range(3):
            state[k] = fn(*state[k])
        jax.block_until_ready(state[k])
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in programs}
    names = list(programs)
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            fn, st = programs[k][0], state[k]
            t, c = time.perf_counter(), time.process_time()
            for _ in range(inner):
                st = fn(*st)
            jax.block_until_ready(st)
            samples[k].append(((time.perf_counter() - t) / inner, (time.process_time() - c) / inner))
            state[k] = st
    return {k: (min(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in samples.items()}


def main(argv: list[str] | None = None) -> None:
    import jax.numpy as jnp

    from .workloads import digits_shapes

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--sizes", default="6,10,16,20,23")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print("| workload | contender | min wall / step | × optax.lion | median CPU / step | × optax.lion |")
    print("|---|---|---|---|---|---|")

    def report(label: str, res: dict[str, tuple[float, float]]) -> None:
        bw, bc = res["optax.lion jit"]
        for k, (w, c) in res.items():
            print(f"| {label} | {k} | {w * 1e6:,.1f} µs | {w / bw:.2f}× | {c * 1e6:,.1f} µs | "
                  f"{c / bc:.2f}× |", flush=True)

    for k in (int(t) for t in a.sizes.split(",") if t.strip()):
        n = 1 << k
        tree = [jnp.asarray(rng.standard_normal(n, dtype=np.float32) * np.float32(0.02))]
        grads = [jnp.asarray(rng.standard_normal(n, dtype=np.float32))]
        report(f"2^{k}", _time(_programs(tree, grads), a.rounds, max(2, min(200, (1 << 20) >> k))))
    tree = [jnp.asarray(rng.standard_normal(s, dtype=np.float32) * np.float32(0.02))
            for s in digits_shapes()]
    grads = [jnp.asarray(rng.standard_normal(s, dtype=np.float32)) for s in digits_shapes()]
    report("digits (update only)", _time(_programs(tree, grads), a.rounds, 100))
    train, label = _train_programs(rng)
    report(label, _time(train, a.rounds, 20))


if __name__ == "__main__":
    main()
