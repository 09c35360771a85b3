"""``python -m benchmarks.jax_parity [--rounds N] [--sizes 6,10,16,20,24] [--workloads digits,many,train]
[--before] [--region]``: lionk vs optax.lion in the same jitted program (issue 12).

Contenders, each a ``jax.jit`` with params and state donated, timed in interleaved rounds (the
starting contender rotating): ``optax.lion`` (update + ``optax.apply_updates``), ``lionk.optax.lion_k``
(the same program), ``jax.jit(lionk.step)`` as a user writes it, and ``lionk.jit_step``. With
``--before``: lion_k and ``jax.jit(lionk.step)`` traced with JAX's fast exact sign disabled (the
nested-``where`` reference sign: what lionk ran before it), in the same process. With ``--region``:
``optax.lion`` and ``jax.jit(lionk.step)`` compiled with the option ``lionk.jit_step`` sets on CPU
(``compiler_options={"xla_cpu_copy_insertion_use_region_analysis": True}``), to separate what that
option buys from the rest of ``jit_step``.

Workloads: one float32 tensor of 2^k elements; ``digits``: the digits MLP's 6 tensors (64-128-64-10);
``many``: 210 tensors whose sizes grow geometrically from 64 to 2^20 elements (14.6M in all);
``train``: a full digits train step (forward, ``jax.grad``, update) on 512 samples of scikit-learn's
digits (optax.lion and lion_k only). Reports, per contender, the minimum and the median wall time
per step and the ratios ``optax.lion time / contender time`` in the same rounds (≥ 1: not slower
than optax.lion); the minimum is the robust one on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

LR, BETAS, WD = 1e-4, (0.9, 0.99), 0.1
REGION = {"xla_cpu_copy_insertion_use_region_analysis": True}
BASE = "optax.lion jit"


@contextlib.contextmanager
def _reference_sign(enabled: bool) -> Iterator[None]:
    """While tracing: JAX's fast exact sign marked unverified (lionk then traces the nested-where
    reference), the probe results restored afterwards."""
    from lionk.core import array_api

    if not enabled:
        yield
        return
    saved = dict(array_api._SIGN_PROBES)
    for dt in ("float16", "bfloat16", "float32", "float64"):
        array_api._SIGN_PROBES[("jax", dt, "cpu")] = False
    try:
        yield
    finally:
        array_api._SIGN_PROBES.clear()
        array_api._SIGN_PROBES.update(saved)


Program = tuple[Callable[..., Any], Callable[[], Any], bool]  # (step, make state, reference sign)


def _programs(tree: Any, grads: Any, before: bool, region: bool) -> dict[str, Program]:
    import jax
    import jax.numpy as jnp
    import optax

    import lionk
    from lionk.optax import lion_k

    def copy() -> Any:
        return jax.tree.map(jnp.copy, tree)

    def optax_style(tx: Any, options: Any = None) -> Callable[..., Any]:
        def f(p: Any, s: Any, g: Any) -> Any:
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        fn = jax.jit(f, donate_argnums=(0, 1), compiler_options=options)
        return lambda p, s: fn(p, s, grads)

    def user(options: Any = None) -> Callable[..., Any]:
        def f(p: Any, g: Any, s: Any) -> Any:
            return lionk.step(p, g, s, lr=LR, betas=BETAS, weight_decay=WD)

        fn = jax.jit(f, donate_argnums=(0, 2), compiler_options=options)
        return lambda p, s: fn(p, grads, s)

    def optax_lion() -> Any:
        return optax.lion(LR, b1=BETAS[0], b2=BETAS[1], weight_decay=WD)

    def lionk_optax() -> Any:
        return lion_k(LR, b1=BETAS[0], b2=BETAS[1], weight_decay=WD)

    out: dict[str, Program] = {}
    ox = optax_lion()
    out[BASE] = (optax_style(ox), lambda: (copy(), ox.init(tree)), False)
    lk = lionk_optax()
    out["lionk.optax.lion_k jit"] = (optax_style(lk), lambda: (copy(), lk.init(tree)), False)
    out["jax.jit(lionk.step)"] = (user(), lambda: (copy(), lionk.init(tree)), False)
    js = lionk.jit_step(lr=LR, betas=BETAS, weight_decay=WD)
    out["lionk.jit_step"] = (lambda p, s: js(p, grads, s), lambda: (copy(), lionk.init(tree)),
                             False)
    if before:
        lk0 = lionk_optax()
        out["lion_k jit, reference sign"] = (optax_style(lk0), lambda: (copy(), lk0.init(tree)),
                                             True)
        out["jax.jit(lionk.step), reference sign"] = (user(), lambda: (copy(), lionk.init(tree)),
                                                      True)
    if region:
        ox1 = optax_lion()
        out["optax.lion jit + region option"] = (optax_style(ox1, REGION),
                                                 lambda: (copy(), ox1.init(tree)), False)
        out["jax.jit(lionk.step) + region option"] = (user(REGION),
                                                      lambda: (copy(), lionk.init(tree)), False)
    return out


def _train_programs(rng: np.random.Generator, before: bool) -> dict[str, Program]:
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

    out: dict[str, Program] = {}
    txs = [(BASE, optax.lion(LR, b1=BETAS[0], b2=BETAS[1], weight_decay=WD), False),
           ("lionk.optax.lion_k jit", lion_k(LR, b1=BETAS[0], b2=BETAS[1], weight_decay=WD),
            False)]
    if before:
        txs.append(("lion_k jit, reference sign",
                    lion_k(LR, b1=BETAS[0], b2=BETAS[1], weight_decay=WD), True))
    for name, tx, ref in txs:
        def train(p: Any, s: Any, tx: Any = tx) -> Any:
            u, s = tx.update(jax.grad(loss)(p), s, p)
            return optax.apply_updates(p, u), s

        out[name] = (jax.jit(train, donate_argnums=(0, 1)),
                     (lambda tx=tx: (jax.tree.map(jnp.copy, params), tx.init(params))), ref)
    return out


def _time(programs: dict[str, Program], rounds: int, inner: int) -> dict[str, tuple[float, float]]:
    import jax

    state = {}
    for k, (fn, make, ref) in programs.items():
        with _reference_sign(ref):  # compiled during these warm-up calls
            st = make()
            for _ in range(3):
                st = fn(*st)
        jax.block_until_ready(st)
        state[k] = st
    samples: dict[str, list[float]] = {k: [] for k in programs}
    names = list(programs)
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            fn, st = programs[k][0], state[k]
            t = time.perf_counter()
            for _ in range(inner):
                st = fn(*st)
            jax.block_until_ready(st)
            samples[k].append((time.perf_counter() - t) / inner)
            state[k] = st
    return {k: (min(v), statistics.median(v)) for k, v in samples.items()}


def many_shapes() -> list[tuple[int, ...]]:
    """210 tensors, 64 to 2^20 elements, sizes growing geometrically."""
    return [(int(round(2 ** (6 + 14 * i / 209))),) for i in range(210)]


def main(argv: list[str] | None = None) -> None:
    import jax.numpy as jnp

    from .workloads import digits_shapes

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--sizes", default="6,10,16,20,24")
    ap.add_argument("--workloads", default="digits,many,train",
                    help="comma-separated among digits, many, train ('' for none)")
    ap.add_argument("--before", action="store_true",
                    help="also lion_k and jax.jit(lionk.step) with the reference sign")
    ap.add_argument("--region", action="store_true",
                    help="also optax.lion and jax.jit(lionk.step) with jit_step's CPU option")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print("| workload | contender | min wall / step | optax.lion ÷ this (min) | median wall / step "
          "| optax.lion ÷ this (median) |")
    print("|---|---|---|---|---|---|")

    def report(label: str, res: dict[str, tuple[float, float]]) -> None:
        bw, bm = res[BASE]
        for k, (w, m) in res.items():
            print(f"| {label} | {k} | {w * 1e6:,.1f} µs | {bw / w:.2f} | {m * 1e6:,.1f} µs | "
                  f"{bm / m:.2f} |", flush=True)

    def arrays(shapes: list[tuple[int, ...]]) -> tuple[list[Any], list[Any]]:
        tree = [jnp.asarray(rng.standard_normal(s, dtype=np.float32) * np.float32(0.02))
                for s in shapes]
        grads = [jnp.asarray(rng.standard_normal(s, dtype=np.float32)) for s in shapes]
        return tree, grads

    for k in (int(t) for t in a.sizes.split(",") if t.strip()):
        tree, grads = arrays([(1 << k,)])
        rounds = a.rounds if k < 22 else max(3, a.rounds // 8)
        report(f"2^{k}", _time(_programs(tree, grads, a.before, a.region), rounds,
                               max(2, min(200, (1 << 20) >> k))))
    wl = {w.strip() for w in a.workloads.split(",") if w.strip()}
    if "digits" in wl:
        tree, grads = arrays(digits_shapes())
        report("digits (6 tensors)", _time(_programs(tree, grads, a.before, a.region), a.rounds,
                                           100))
    if "many" in wl:
        shapes = many_shapes()
        tree, grads = arrays(shapes)
        label = f"{len(shapes)} tensors, {sum(s[0] for s in shapes):,} elements"
        report(label, _time(_programs(tree, grads, a.before, a.region), max(3, a.rounds // 4), 3))
    if "train" in wl:
        report("digits train step", _time(_train_programs(rng, a.before), a.rounds, 20))


if __name__ == "__main__":
    main()
