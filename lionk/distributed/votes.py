r"""Distributed Lion-κ: the vote exchange of ``lionk.torch.LionK(communication=...)`` and helpers.

Distributed Lion (Liu et al., arXiv 2404.00438; theory.md §8): every data-parallel worker keeps
its own momentum and computes, from its own gradient, the direction ``u = ∇K(c)`` with
``c = b1·m + (1 − b1)·g``. For a *ternary* κ (its fact ``Kappa.ternary``: ∇K takes only the
values −1, 0 or +1 per coordinate; built-ins: sign (Lion) and deadzone; a user κ that states
``ternary=True``, checked by ``lionk.kappa.register``), the workers exchange votes instead of
float gradients:

* ``"sign-vote"``: ``Δ = sign(Σ_i u_i)`` — the majority vote, a tie gives 0;
* ``"sign-mean"``: ``Δ = (Σ_i u_i)·(1/W)`` — the mean vote, in [−1, 1].

Every worker then applies the same ``x' = (1 − lr·wd)·x − lr·Δ`` (the last piece of
:func:`lionk._step.update_leaves`, reached through its ``aggregate_direction`` hook, so the
update formulas are still written once). The sum of integer votes does not depend on the order
of the reduction, so the parameters stay **bitwise identical on every rank**.

Wire formats (``vote_packing=``):

* ``"int8"`` — one byte per coordinate, ``all_reduce(SUM)`` (int32 beyond 127 workers);
* ``"2bit"`` — four coordinates per byte (codes 0, 1, 2 for −1, 0, +1), ``all_gather`` of the
  packed bytes, summed locally after unpacking. A sum of packed codes cannot be all-reduced, so
  this trades the reduction for a gather: it pays off for small worker counts (each rank
  receives ``(W − 1)·N/4`` bytes, against about ``2·(W − 1)/W·N`` for int8 and
  ``2·(W − 1)/W·4N`` for DDP's float32 all-reduce).

Besides the votes, each exchange carries one byte per parameter tensor (does this rank have a
gradient for it?) and one per param group (non-finite gradients under ``nan_policy`` "skip" or
"raise"), so that every rank takes the same decision: a group is skipped on every rank, or the
error is raised on every rank, before anything is written.

A peer that dies or hangs makes the collective fail; the failure is re-raised as
:class:`CommunicationError` naming the rank, instead of the backend's bare message. A peer that
is still connected but stuck is bounded by the process group's timeout
(``init_process_group(..., timeout=timedelta(seconds=...))``).

Also here: :func:`communication_bytes` (the per-step traffic model), :func:`broadcast_parameters`,
:func:`parameters_digest` and :func:`assert_replicas_identical` (torch). The self-check that runs
small DDP, FSDP2, sign-vote and JAX-sharding trainings lives in the conformance suite
(``conformance/distributed.py``).

``import lionk.distributed`` imports neither torch nor jax; they are imported when used.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from ..core import kappa as _kappa

__all__ = [
    "COMMUNICATIONS",
    "VOTE_PACKINGS",
    "TERNARY_KAPPAS",
    "CommunicationError",
    "Exchange",
    "exchange_votes",
    "communication_bytes",
    "broadcast_parameters",
    "parameters_digest",
    "assert_replicas_identical",
]

COMMUNICATIONS = (None, "sign-vote", "sign-mean")
VOTE_PACKINGS = ("int8", "2bit")
# The built-in κ whose ∇K takes only the values −1, 0, +1 (and NaN for a NaN input), from their
# ``ternary`` fact: sign (alias l1, lion) is Distributed Lion; deadzone abstains where |c| <= e.
# What decides is the κ's own fact (:func:`is_ternary`), so a user κ stating it votes too.
TERNARY_KAPPAS = tuple(n for n in _kappa._BUILTINS if _kappa.get(n).ternary)


class CommunicationError(RuntimeError):
    """A collective of distributed Lion failed: a peer died, hung past the timeout, or the ranks
    disagree about what to exchange."""


def is_ternary(kappa: Any) -> bool:
    """True for a κ whose ∇K is a vote (−1, 0 or +1 per coordinate): its ``ternary`` fact."""
    return isinstance(kappa, _kappa.Kappa) and bool(kappa.ternary)


# ---------------------------------------------------------------------------------------------
# Traffic model.


def communication_bytes(elements: int, world_size: int, *, communication: str | None = "sign-vote",
                        vote_packing: str = "int8", tensors: int = 1,
                        grad_bytes: int = 4) -> dict[str, Any]:
    """Bytes per optimizer step and rank for one param group of ``elements`` parameters in
    ``tensors`` tensors, over ``world_size`` ranks (add the groups up for several).

    ``payload_bytes`` is what a rank puts into the collective: exactly the buffer that
    :func:`exchange_votes` builds (one header byte per tensor and one per group, then the votes).
    ``sent_bytes_per_rank`` is what a bandwidth-optimal ring sends per rank — all-reduce
    ``2·(W − 1)/W·B``, all-gather ``(W − 1)·B`` — the usual model of NCCL's and gloo's ring
    algorithms (gloo picks other algorithms for some sizes; TCP/IP headers are not counted).
    ``communication=None`` describes DDP's gradient all-reduce with ``grad_bytes`` per element.
    ``ddp_float32_sent_bytes_per_rank`` and ``ratio`` compare with DDP in float32.
    """
    if world_size < 1 or elements < 0 or tensors < 0:
        raise ValueError(
            "expected world_size >= 1, elements >= 0 and tensors >= 0; received "
            f"world_size={world_size}, elements={elements}, tensors={tensors}"
        )
    w = world_size
    ring = 2.0 * (w - 1) / w
    ddp = ring * 4 * elements
    if communication is None:
        payload, sent, op = grad_bytes * elements, ring * grad_bytes * elements, "all_reduce"
    elif communication in ("sign-vote", "sign-mean"):
        header = tensors + 1
        if vote_packing == "int8":
            width = 1 if w <= 127 else 4
            payload = width * (header + elements)
            sent, op = ring * payload, "all_reduce"
        elif vote_packing == "2bit":
            payload = header + (elements + 3) // 4
            sent, op = float((w - 1) * payload), "all_gather"
        else:
            raise ValueError(f"vote_packing: expected one of {VOTE_PACKINGS}; received {vote_packing!r}")
    else:
        raise ValueError(f"communication: expected one of {COMMUNICATIONS}; received {communication!r}")
    return {
        "communication": communication or "ddp",
        "vote_packing": vote_packing if communication else None,
        "collective": op,
        "world_size": w,
        "elements": elements,
        "payload_bytes": int(payload),
        "sent_bytes_per_rank": float(sent),
        "ddp_float32_sent_bytes_per_rank": ddp,
        "ratio": (sent / ddp) if ddp else math.nan,
    }


# ---------------------------------------------------------------------------------------------
# The exchange (torch.distributed).


class Exchange(NamedTuple):
    """What one vote exchange returned, identical on every rank.

    ``directions``: per slot (parameter tensor of the group) the aggregated direction, a float
    tensor shaped like the local direction; None where this rank had no gradient.
    ``present``: per slot, how many ranks had a gradient. ``flags``: how many ranks raised the
    group's flag (non-finite gradients under nan_policy "skip"/"raise"). ``payload_bytes``:
    bytes this rank contributed; ``sent_bytes``: ring model of the bytes it sent.
    """

    directions: list[Any]
    present: list[int]
    flags: int
    world_size: int
    payload_bytes: int
    sent_bytes: float


def _fail(exc: BaseException, what: str, communication: str, group: Any) -> CommunicationError:
    import torch.distributed as dist

    try:
        rank, world = str(dist.get_rank(group)), str(dist.get_world_size(group))
    except Exception:  # pragma: no cover - the group itself is gone
        rank, world = "?", "?"
    return CommunicationError(
        f"lionk.torch.LionK(communication={communication!r}): the {what} of the votes failed on "
        f"rank {rank} of {world}: a peer process died, raised, or did not reach this step within "
        "the process group's timeout (set it with torch.distributed.init_process_group(..., "
        f"timeout=datetime.timedelta(seconds=...))). Backend error: {type(exc).__name__}: {exc}"
    )


def exchange_votes(slots: Sequence[Any], numels: Sequence[int], flag: int, *,
                   communication: str = "sign-vote", vote_packing: str = "int8",
                   group: Any = None, present: Sequence[bool] | None = None,
                   device: Any = None) -> Exchange:
    """Exchange one param group's votes with every rank of ``group`` (a collective call).

    ``slots``: per parameter tensor of the group, this rank's direction (a float tensor of
    −1, 0, +1; NaN is sent as 0, an abstention) or None where it has no gradient.
    ``numels``: the element count of every slot (the same on every rank: it fixes the buffer
    layout, so the call is valid even where ``slots`` differ). ``flag``: 0 or 1.
    ``present``: per slot, whether this rank has a gradient for it (default: the slot is not
    None); a rank that skips its computation (flag set) still reports its gradients.
    ``device``: where the buffer lives (default: the first slot's device, else the CPU); it
    must suit the group's backend (CUDA tensors for NCCL).
    """
    import torch
    import torch.distributed as dist

    world = dist.get_world_size(group)
    nslots = len(numels)
    total = int(sum(numels))
    head = nslots + 1
    dev = device if device is not None else next(
        (s.device for s in slots if s is not None), torch.device("cpu"))
    if present is None:
        present = [s is not None for s in slots]
    if vote_packing == "int8":
        dt = torch.int8 if world <= 127 else torch.int32
        buf = torch.zeros(head + total, dtype=dt, device=dev)
        buf[nslots] = int(flag)
        off = head
        for i, (u, n) in enumerate(zip(slots, numels)):
            buf[i] = int(bool(present[i]))
            if u is not None:
                buf[off:off + n].copy_(torch.nan_to_num(u.detach(), nan=0.0).reshape(-1))
            off += n
        try:
            dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
        except Exception as exc:
            raise _fail(exc, "all_reduce", communication, group) from exc
        summed = buf.to(torch.int32)
        counts = [int(v) for v in summed[:nslots].tolist()]
        flags = int(summed[nslots])
        votes = summed[head:]
        payload = buf.numel() * buf.element_size()
        sent = 2.0 * (world - 1) / world * payload
    elif vote_packing == "2bit":
        nbytes = (total + 3) // 4
        codes = torch.ones(nbytes * 4, dtype=torch.uint8, device=dev)  # code 1 = vote 0
        header = torch.zeros(head, dtype=torch.uint8, device=dev)
        header[nslots] = int(flag)
        off = 0
        for i, (u, n) in enumerate(zip(slots, numels)):
            header[i] = int(bool(present[i]))
            if u is not None:
                v = torch.nan_to_num(u.detach(), nan=0.0).reshape(-1)
                codes[off:off + n].copy_(v + 1.0)
            off += n
        q = codes.view(nbytes, 4)
        packed = q[:, 0] | (q[:, 1] << 2) | (q[:, 2] << 4) | (q[:, 3] << 6)
        local = torch.cat([header, packed])
        out = torch.empty(world * local.numel(), dtype=torch.uint8, device=dev)
        try:
            # all_gather_single (torch >= 2.13) is all_gather_into_tensor's new name
            gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
            gather(out, local, group=group)
        except Exception as exc:
            raise _fail(exc, "all_gather", communication, group) from exc
        rows = out.view(world, local.numel())
        hsum = rows[:, :head].to(torch.int32).sum(dim=0)
        counts = [int(v) for v in hsum[:nslots].tolist()]
        flags = int(hsum[nslots])
        body = rows[:, head:]
        unpacked = torch.stack([(body >> s) & 3 for s in (0, 2, 4, 6)], dim=-1)
        votes = (unpacked.reshape(world, -1)[:, :total].to(torch.int32) - 1).sum(dim=0)
        payload = local.numel()
        sent = float((world - 1) * payload)
    else:
        raise ValueError(f"vote_packing: expected one of {VOTE_PACKINGS}; received {vote_packing!r}")
    directions: list[Any] = []
    off = 0
    inv = 1.0 / world
    for u, n in zip(slots, numels):
        if u is None:
            directions.append(None)
        else:
            s = votes[off:off + n].reshape(u.shape)
            if communication == "sign-vote":
                d = torch.sign(s).to(u.dtype)
            else:  # sign-mean: one rounding of an exact integer sum times 1/W (a Python float)
                d = s.to(u.dtype) * inv
            directions.append(d)
        off += n
    return Exchange(directions, counts, flags, world, int(payload), float(sent))


# ---------------------------------------------------------------------------------------------
# Helpers for data-parallel training without DDP (torch).


def _tensors(params: Any) -> list[Any]:
    import torch

    if isinstance(params, torch.nn.Module):
        return list(params.parameters())
    if isinstance(params, torch.Tensor):
        return [params]
    return list(params)


def broadcast_parameters(params: Any, src: int = 0, group: Any = None) -> None:
    """Copy rank ``src``'s parameters (a module or an iterable of tensors) to every rank, in
    place: the start of a distributed-Lion run (DDP does this in its constructor)."""
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for p in _tensors(params):
            dist.broadcast(p.data, src=src, group=group)


def parameters_digest(params: Any) -> str:
    """SHA-256 of the bit patterns of the parameters (a module or tensors), in order."""
    h = hashlib.sha256()
    for p in _tensors(params):
        t = p.detach()
        if hasattr(t, "full_tensor"):  # a DTensor: its global value
            t = t.full_tensor()
        t = t.cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.view(-1).view(dtype=_uint_of(t)).numpy().tobytes())
    return h.hexdigest()


def _uint_of(t: Any) -> Any:
    import torch

    return {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]


def assert_replicas_identical(params: Any, group: Any = None) -> str:
    """Raise :class:`CommunicationError` unless every rank holds bit-identical parameters;
    returns the common digest. A collective: call it on every rank."""
    import torch.distributed as dist

    mine = parameters_digest(params)
    digests: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(digests, mine, group=group)
    if len(set(digests)) != 1:
        bad = [r for r, d in enumerate(digests) if d != digests[0]]
        raise CommunicationError(f"parameters differ across ranks: ranks {bad} differ from rank 0")
    return mine
