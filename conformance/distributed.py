"""Distributed self-check: small DDP, FSDP2, Distributed Lion (sign vote) and JAX-sharding runs.

Each check trains a toy model the distributed way and the single-process way and reports a
conformance row (expected tier, measured tier). Run by ``make conformance`` (the "distributed"
section of the report), by the tests, and by hand with ``python -m conformance.distributed``.
The library side (the vote exchange, the traffic model) is :mod:`lionk.distributed`.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

from lionk.distributed.votes import CommunicationError, _uint_of, parameters_digest


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for MASTER_PORT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# self_check: small distributed runs reported as conformance rows.


def _bits_equal(a: Any, b: Any) -> bool:
    import torch

    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().view(_uint_of(a)), b.contiguous().view(_uint_of(b)))


def _max_ulp(a: Any, b: Any) -> float:
    """Largest |a − b| in units of eps·max|b| (ulps of the tensor's largest element)."""
    import torch

    if not b.numel():
        return 0.0
    a64, b64 = a.double(), b.double()
    scale = max(float(b64.abs().max()), torch.finfo(b.dtype).tiny)
    return float((a64 - b64).abs().max()) / (torch.finfo(b.dtype).eps * scale)


def _toy_model(seed: int, dtype: Any) -> Any:
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(),
                               torch.nn.Linear(8, 1)).to(dtype)


def _toy_data(seed: int, n: int, dtype: Any) -> tuple[Any, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 6, generator=g, dtype=torch.float64).to(dtype)
    y = (X.double() @ torch.linspace(-1, 1, 6, dtype=torch.float64)).to(dtype)
    return X, y


def _train(model: Any, opt: Any, X: Any, y: Any, steps: int) -> None:
    import torch

    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(X).squeeze(-1), y)
        loss.backward()
        opt.step()


def _check_worker(rank: int, world: int, port: int, steps: int, out_dir: str) -> None:
    """One rank of :func:`self_check`: joins the process group, runs :func:`check_body` and
    writes its results as a torch file."""
    import datetime

    import torch
    import torch.distributed as dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    res: dict[str, Any] = {}
    try:
        res = check_body(steps)
    finally:
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.destroy_process_group()


def check_body(steps: int) -> dict[str, Any]:
    """The per-rank part of :func:`self_check`, in an initialized (gloo) process group: DDP
    (same data on every rank, so the averaged gradient is bit-identical to one process's),
    sign-vote (different data per rank; replicas must stay identical), FSDP2 (sharded params,
    exact and norm κ). Returns this rank's results for :func:`check_rows`."""
    import torch
    import torch.distributed as dist

    from lionk import kappa as _kappa
    from lionk.torch import LionK

    rank, world = dist.get_rank(), dist.get_world_size()
    res: dict[str, Any] = {}
    X, y = _toy_data(1, 32, torch.float32)
    model = _toy_model(0, torch.float32)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = LionK(ddp.parameters(), lr=1e-2, weight_decay=0.1)
    _train(ddp, opt, X, y, steps)
    res["ddp"] = [p.detach().clone() for p in model.parameters()]
    # sign-vote: rank-dependent data, no gradient all-reduce
    Xr, yr = _toy_data(100 + rank, 32, torch.float32)
    model = _toy_model(0, torch.float32)
    opt = LionK(model.parameters(), lr=1e-2, weight_decay=0.1, communication="sign-vote")
    _train(model, opt, Xr, yr, steps)
    res["sign-vote"] = [p.detach().clone() for p in model.parameters()]
    res["sign-vote-digest"] = parameters_digest(model)
    res["sign-vote-bytes"] = opt.last_communication
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        for spec in ("sign", "l2", "l2:global"):
            name, _, scope = spec.partition(":")
            kap = _kappa.get(name, **({"scope": scope} if scope else {}))
            model = _toy_model(0, torch.float64)
            fully_shard(model, mesh=mesh)
            opt = LionK(model.parameters(), lr=1e-2, weight_decay=0.1, kappa=kap)
            X64, y64 = _toy_data(1, 32, torch.float64)
            _train(model, opt, X64, y64, steps)
            res[f"fsdp2:{spec}"] = [p.detach().full_tensor().clone() for p in model.parameters()]
    except Exception as exc:  # pragma: no cover - reported as a row
        res["fsdp2-error"] = f"{type(exc).__name__}: {exc}"
    return res


def self_check(world_size: int = 2, steps: int = 20, *, jax: bool = True,
               timeout: float = 240.0) -> list[dict[str, Any]]:
    """Run small distributed checks and return conformance rows
    ``{"engine", "world_size", "kappa", "dtype", "expected", "tier", "ok", "detail"}``.

    torch (``world_size`` CPU processes, gloo): DDP with the same data on every rank against one
    process (bitwise expected for κ = sign: the average of identical gradients is exact), sign-vote
    with different data per rank (replicas bitwise identical expected), FSDP2 ``fully_shard``
    (sign bitwise, l2 per tensor and global in the ulp tier: the norm is a sum of per-shard
    partial sums). JAX (with ``jax=True``): :func:`check_jax_sharding` in a subprocess.
    """
    import torch
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.start_processes(_check_worker, args=(world_size, free_port(), steps, tmp),
                                 nprocs=world_size, join=False, start_method="spawn")
        _join(ctx, timeout)
        res = [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False)
               for r in range(world_size)]
    rows = check_rows(res, steps)
    if jax:
        for r in check_jax_sharding(devices=4, steps=steps):
            rows.append(_row(r["engine"], r["devices"], r["kappa"], r["dtype"], r["expected"],
                             r["tier"], r["detail"]))
    return rows


def check_rows(res: Sequence[dict[str, Any]], steps: int) -> list[dict[str, Any]]:
    """Conformance rows from every rank's :func:`check_body` results (single-process
    references are computed here)."""
    import torch

    from lionk.torch import LionK

    world_size = len(res)
    rows: list[dict[str, Any]] = []

    def ref_run(dtype: Any, kappa: Any) -> list[Any]:
        X, y = _toy_data(1, 32, dtype)
        model = _toy_model(0, dtype)
        opt = LionK(model.parameters(), lr=1e-2, weight_decay=0.1, kappa=kappa)
        _train(model, opt, X, y, steps)
        return [p.detach() for p in model.parameters()]

    ref32 = ref_run(torch.float32, "sign")
    same = all(_bits_equal(a, b) for r in res for a, b in zip(r["ddp"], ref32))
    rows.append(_row("torch-ddp-gloo", world_size, "sign", "float32", "bitwise",
                     "bitwise" if same else "fail", "vs one process on the same batch"))
    ident = len({r["sign-vote-digest"] for r in res}) == 1
    rows.append(_row("torch-sign-vote-gloo", world_size, "sign", "float32", "bitwise",
                     "bitwise" if ident else "fail",
                     f"replicas identical; {res[0]['sign-vote-bytes']['sent_bytes_per_rank']:.0f} "
                     f"B/step/rank vs DDP float32 "
                     f"{res[0]['sign-vote-bytes']['ddp_float32_sent_bytes_per_rank']:.0f}"))
    if "fsdp2-error" in res[0]:
        rows.append(_row("torch-fsdp2-gloo", world_size, "sign", "float64", "bitwise", "fail",
                         res[0]["fsdp2-error"]))
    else:
        from lionk import kappa as _kappa

        for spec in ("sign", "l2", "l2:global"):
            name, _, scope = spec.partition(":")
            ref = ref_run(torch.float64, _kappa.get(name, **({"scope": scope} if scope else {})))
            got = res[0][f"fsdp2:{spec}"]
            if all(_bits_equal(a, b) for a, b in zip(got, ref)):
                tier = "bitwise"
            else:
                worst = max(_max_ulp(a, b) for a, b in zip(got, ref))
                tier = "ulp" if worst <= 64 else "fail"  # free-running, relative to max|x|
            rows.append(_row("torch-fsdp2-gloo", world_size, spec, "float64",
                             "bitwise" if spec == "sign" else "ulp", tier,
                             "fully_shard on CPU; norm reduced across shards (DTensor Partial)"))
    return rows


def _row(engine: str, world: int, kappa: str, dtype: str, expected: str, tier: str,
         detail: str) -> dict[str, Any]:
    ok = tier == "bitwise" or (tier == "ulp" and expected == "ulp")
    return {"engine": engine, "world_size": world, "kappa": kappa, "dtype": dtype,
            "expected": expected, "tier": tier, "ok": ok, "detail": detail}


def _join(ctx: Any, timeout: float) -> None:
    """Join spawned workers with a deadline; terminate them all and raise if it passes."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            raise CommunicationError(f"distributed workers did not finish within {timeout} s")
        if ctx.join(timeout=min(left, 1.0)):
            return


# ---------------------------------------------------------------------------------------------
# JAX: lionk.step under jax.jit on sharded arrays (run in a subprocess: XLA_FLAGS must be set
# before jax is imported).

SSE42_FLAG = "--xla_cpu_max_isa=SSE4_2"


def check_jax_sharding(devices: int = 4, steps: int = 20, *, sse42: bool = True,
                       kappas: Iterable[str] = ("sign", "huber", "l2", "l2:global"),
                       dtypes: Iterable[str] = ("float32", "float64"),
                       timeout: float = 180.0) -> list[dict[str, Any]]:
    """Run ``lionk.step`` under ``jax.jit`` on params sharded over ``devices`` host CPU devices
    (``NamedSharding``; a 2 × devices/2 mesh for an even count ≥ 4, the matrix leaf sharded along
    both axes, the vector over all devices) in a fresh interpreter, against the NumPy reference, and return one row
    per (κ, dtype): ``tier`` against NumPy ("bitwise": the free-running trajectory identical bit
    for bit; "ulp": every teacher-forced step within 8 ulps of its terms' magnitudes),
    ``max_ulp``, ``sharding_preserved`` (after every step params and momentum have a sharding
    equivalent to the params' original one), ``bitwise_vs_unsharded`` / ``ulp_vs_unsharded``
    (the same jitted step on one device, final state compared; ulps of each array's largest
    element), and the final ``specs``.

    With ``sse42=True`` the subprocess gets ``XLA_FLAGS=--xla_cpu_max_isa=SSE4_2`` (no FMA
    contraction: exact κ bitwise); without it jit contracts and every κ is in the ulp tier.
    """
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")
             and not f.startswith("--xla_cpu_max_isa")]
    flags.append(f"--xla_force_host_platform_device_count={int(devices)}")
    if sse42:
        flags.append(SSE42_FLAG)
    env["XLA_FLAGS"] = " ".join(flags)
    env["JAX_PLATFORMS"] = "cpu"
    args = json.dumps({"devices": devices, "steps": steps, "kappas": list(kappas),
                       "dtypes": list(dtypes), "sse42": sse42})
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = f"import sys; sys.path.insert(0, {root!r}); import conformance.distributed as d; d._jax_main()"
    proc = subprocess.run([sys.executable, "-c", code, args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"JAX sharding check failed:\n{proc.stdout}\n{proc.stderr}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROWS ")][-1]
    return json.loads(line[5:])


def _jax_main() -> None:
    """Subprocess body of :func:`check_jax_sharding` (prints ``ROWS <json>``)."""
    args = json.loads(sys.argv[1])
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import lionk

    n = args["devices"]
    devs = jax.devices("cpu")
    if len(devs) < n:
        raise SystemExit(f"expected {n} CPU devices (XLA_FLAGS); found {len(devs)}")
    if n >= 4 and n % 2 == 0:  # a 2-D mesh: the matrix sharded along both dimensions
        mesh = Mesh(np.array(devs[:n]).reshape(2, n // 2), ("x", "y"))
        shard_rows = NamedSharding(mesh, PartitionSpec("x", "y"))
        shard_vec = NamedSharding(mesh, PartitionSpec(("x", "y")))
    else:
        mesh = Mesh(np.array(devs[:n]), ("x",))
        shard_rows = NamedSharding(mesh, PartitionSpec("x", None))
        shard_vec = NamedSharding(mesh, PartitionSpec("x"))
    lr, betas, wd = 0.01, (0.9, 0.99), 0.5
    rows = []
    for dtype in args["dtypes"]:
        rng = np.random.default_rng(7)

        def draw(shape: tuple[int, ...], rng: Any = rng, dtype: str = dtype) -> np.ndarray:
            mag = rng.uniform(0.1, 1.5, size=shape)
            return np.where(rng.random(shape) < 0.5, -mag, mag).astype(dtype)

        x0 = {"w": draw((16, 12)), "b": draw((32,))}
        target = {"w": draw((16, 12)), "b": draw((32,))}
        from conformance.runner import make_kappa  # the suite's κ (fixed lengths: huber δ = 0.5)

        for spec in args["kappas"]:
            kap = make_kappa(spec)

            def grad(x: Any, t: Any) -> Any:  # f = Σ (x − t)²/2 + Σ x³/3: only + − ×
                return {k: (x[k] - t[k]) + x[k] * x[k] for k in x}

            # NumPy reference (eager, correctly rounded)
            ref = [(x0, {k: np.zeros_like(v) for k, v in x0.items()})]
            xs, st = {k: v.copy() for k, v in x0.items()}, lionk.init({k: v.copy() for k, v in x0.items()})
            for _ in range(args["steps"]):
                xs, st = lionk.step(xs, grad(xs, target), st, lr=lr, betas=betas,
                                    weight_decay=wd, kappa=kap)
                ref.append((xs, st.momentum))
            shard = {"w": shard_rows, "b": shard_vec}

            def put(tree: dict[str, np.ndarray], shard: dict[str, Any] = shard) -> dict[str, Any]:
                return {k: jax.device_put(jnp.asarray(v), shard[k]) for k, v in tree.items()}

            tgt = put(target)

            jstep = jax.jit(functools.partial(lionk.step, lr=lr, betas=betas, weight_decay=wd,
                                              kappa=kap))

            def same_layout(a: Any, k: str, shard: dict[str, Any] = shard) -> bool:
                # P('x') and P('x', None) are the same layout: compare by equivalence
                return bool(a.sharding.is_equivalent_to(shard[k], a.ndim))

            # free-running sharded trajectory; gradients by eager (uncontracted) sharded ops
            x = put(x0)
            s = lionk.init(x)
            preserved = all(same_layout(s.momentum[k], k) for k in x)
            bitwise = True
            for t in range(args["steps"]):
                x, s = jstep(x, grad(x, tgt), s)
                for k in x:
                    preserved &= same_layout(x[k], k) and same_layout(s.momentum[k], k)
                    for got, want in ((x[k], ref[t + 1][0][k]), (s.momentum[k], ref[t + 1][1][k])):
                        g = np.asarray(got)
                        bitwise &= g.dtype == want.dtype and np.array_equal(
                            g.view(np.uint8), want.view(np.uint8))
            # the same jitted step on unsharded arrays (one device)
            xu = {k: jnp.asarray(v) for k, v in x0.items()}
            su = lionk.init(xu)
            tu = {k: jnp.asarray(v) for k, v in target.items()}
            for _ in range(args["steps"]):
                xu, su = jstep(xu, grad(xu, tu), su)
            vs_unsharded = 0.0
            same_as_unsharded = True
            for k in x:
                for a, b in ((x[k], xu[k]), (s.momentum[k], su.momentum[k])):
                    a, b = np.asarray(a), np.asarray(b)
                    same_as_unsharded &= np.array_equal(a.view(np.uint8), b.view(np.uint8))
                    scale = max(float(np.abs(b).max()), float(np.finfo(dtype).tiny))
                    vs_unsharded = max(vs_unsharded, float(np.abs(
                        a.astype(np.float64) - b.astype(np.float64)).max()) / (
                        float(np.finfo(dtype).eps) * scale))
            # teacher-forced ulp check: each step from the reference state and gradient, errors
            # in units of eps·(the magnitudes of the terms: |(1 − lr·wd)·x| + lr·|u|, |u| ≤ 1;
            # b2·|m| + (1 − b2)·|g|)
            worst = 0.0
            eps = float(np.finfo(dtype).eps)
            for t in range(args["steps"]):
                xr, mr = ref[t]
                gr = grad(xr, target)
                xo, so = jstep(put(xr), put(gr), lionk.State(t, put(mr), 0))
                for k in xr:
                    x64, m64, g64 = (a[k].astype(np.float64) for a in (xr, mr, gr))
                    scx = np.abs((1 - lr * wd) * x64) + lr
                    scm = np.maximum(betas[1] * np.abs(m64) + (1 - betas[1]) * np.abs(g64),
                                     np.finfo(dtype).tiny)
                    ex = np.abs(np.asarray(xo[k]).astype(np.float64) - ref[t + 1][0][k]) / (eps * scx)
                    em = np.abs(np.asarray(so.momentum[k]).astype(np.float64)
                                - ref[t + 1][1][k]) / (eps * scm)
                    worst = max(worst, float(ex.max()), float(em.max()))
            tier = "bitwise" if bitwise else ("ulp" if worst <= 8 else "fail")
            expected = "bitwise" if (kap.exact and args["sse42"]) else "ulp"
            rows.append({
                "engine": "jax-jit-sharded" + ("-sse42" if args["sse42"] else ""),
                "devices": n, "kappa": spec, "dtype": dtype, "expected": expected, "tier": tier,
                "sharding_preserved": bool(preserved), "max_ulp": worst,
                "bitwise_vs_unsharded": bool(same_as_unsharded),
                "ulp_vs_unsharded": vs_unsharded,
                "specs": {k: str(x[k].sharding.spec) for k in x},
                "momentum_specs": {k: str(s.momentum[k].sharding.spec) for k in x},
                "detail": f"NamedSharding over {n} CPU devices; shardings preserved: {bool(preserved)}",
            })
    print("ROWS " + json.dumps(rows), flush=True)


if __name__ == "__main__":  # python -m conformance.distributed: print the self-check rows
    for r in self_check():
        print(f"{r['engine']:24s} W={r['world_size']} {r['kappa']:10s} {r['dtype']:8s} "
              f"expected={r['expected']:8s} tier={r['tier']:8s} {'ok' if r['ok'] else 'FAIL'}  "
              f"{r['detail']}")
