"""Data-parallel training with ``lionk.torch.LionK``: DDP, or Distributed Lion (sign-vote).

Each rank trains on its own shard of a synthetic regression problem (an MLP, CPU, gloo):

* ``--communication none`` (default): the model is wrapped in ``DistributedDataParallel``,
  which averages the gradients (a float32 all-reduce); LionK steps on the averages.
* ``--communication sign-vote`` / ``sign-mean``: no DDP. Every rank keeps its own momentum and
  sends only its votes ``sign(c)`` (int8, or 2 bits with ``--vote-packing 2bit``); every rank
  applies the majority vote, so the replicas stay bitwise identical (checked at the end).

The process group has a timeout: a rank that dies or hangs makes the others fail with an error
within that time instead of waiting forever.

Run (two processes on this machine)::

    torchrun --nproc_per_node=2 examples/ddp_train.py
    torchrun --nproc_per_node=2 examples/ddp_train.py --communication sign-vote
    python examples/ddp_train.py --communication sign-vote    # spawns the 2 processes itself
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile

WORLD = 2


def make_data(n: int = 8192, seed: int = 0):
    """y = sin(X·w*) + noise with 16 features; the same on every rank (each takes a shard)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 16, generator=g)
    w = torch.linspace(-1.0, 1.0, 16)
    return X, torch.sin(X @ w) + 0.05 * torch.randn(n, generator=g)


def train(communication: str | None, vote_packing: str = "int8", steps: int = 150,
          lr: float = 3e-3) -> dict:
    """One rank's training loop (the process group is initialized); returns its results."""
    import torch
    import torch.distributed as dist

    import lionk.distributed as ld
    from lionk.torch import LionK

    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same initial model everywhere (and broadcast below anyway)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    X, y = make_data()
    Xr, yr = X[rank::world], y[rank::world]  # this rank's shard
    if communication is None:
        net = torch.nn.parallel.DistributedDataParallel(model)
        opt = LionK(net.parameters(), lr=lr, weight_decay=0.1)
    else:
        ld.broadcast_parameters(model)
        net = model
        opt = LionK(model.parameters(), lr=lr, weight_decay=0.1, communication=communication,
                    vote_packing=vote_packing)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(Xr).squeeze(-1), yr)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        full = torch.nn.functional.mse_loss(model(X).squeeze(-1), y).item()
    n = sum(p.numel() for p in model.parameters())
    if communication is None:
        traffic = ld.communication_bytes(n, world, communication=None)
    else:
        traffic = opt.last_communication
        ld.assert_replicas_identical(model)  # raises if the ranks diverged
    return {"rank": rank, "world_size": world, "communication": communication or "ddp",
            "first_loss": losses[0], "final_loss": full, "parameters": n,
            "bytes_per_step": traffic, "digest": ld.parameters_digest(model)}


def _run(args: argparse.Namespace) -> dict:
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    try:
        comm = None if args.communication == "none" else args.communication
        res = train(comm, args.vote_packing, args.steps)
    finally:
        dist.destroy_process_group()
    if res["rank"] == 0:
        b = res["bytes_per_step"]
        print(f"{res['communication']} on {res['world_size']} ranks: loss {res['first_loss']:.4f} "
              f"-> {res['final_loss']:.4f} (full data); {res['parameters']} parameters; "
              f"{b['sent_bytes_per_rank']:.0f} bytes sent per rank and step "
              f"(DDP float32: {b['ddp_float32_sent_bytes_per_rank']:.0f})")
    return res


def _spawned(rank: int, port: int, argv: list[str], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    res = _run(_parse(argv))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump(res, fh)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--communication", choices=["none", "sign-vote", "sign-mean"], default="none")
    ap.add_argument("--vote-packing", choices=["int8", "2bit"], default="int8")
    ap.add_argument("--steps", type=int, default=150)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Under torchrun: this rank's results. Otherwise: spawn 2 processes, return rank 0's."""
    argv = sys.argv[1:] if argv is None else argv
    if "RANK" in os.environ and "MASTER_ADDR" in os.environ:
        return _run(_parse(argv))
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:  # a free port on the loopback for MASTER_PORT
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as out:
        mp.start_processes(_spawned, args=(port, list(argv), out), nprocs=WORLD,
                           start_method="spawn")
        results = []
        for r in range(WORLD):
            with open(os.path.join(out, f"rank{r}.json")) as fh:
                results.append(json.load(fh))
    assert len({r["digest"] for r in results}) == 1, "replicas differ"
    return results[0]


if __name__ == "__main__":
    main()
