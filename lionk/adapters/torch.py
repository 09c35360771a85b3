r"""``lionk.torch.LionK``: Lion-κ as a ``torch.optim.Optimizer``.

A drop-in optimizer for PyTorch training loops (param groups, ``closure``, ``state_dict``,
every ``torch.optim.lr_scheduler``, ``torch.amp.GradScaler``). It computes nothing itself: each
param group is one call of :func:`lionk._step.update_leaves`, the single implementation of the
Lion-κ update that :func:`lionk.step` and :class:`lionk.LionK` use, and the results are copied
into the parameters and the momentum in place under ``torch.no_grad()``. On CPU, with an exact κ
(sign; huber, quadratic, deadzone given a number), its trajectory is therefore bitwise identical to
:func:`lionk.step` on the same tensors.

Data-parallel training: under ``DistributedDataParallel`` LionK needs nothing special (it steps on
the averaged gradients); under FSDP2 (``fully_shard``: DTensor params) the update runs on the
DTensors, elementwise κ shard by shard and norm κ with the norm reduced across shards. With
``communication="sign-vote"`` or ``"sign-mean"`` (Distributed Lion, theory.md §8) the ranks
exchange only their ternary votes ``∇K(c)`` instead of gradients (see :mod:`lionk.distributed`
and docs/scaling.md).

Importing this module imports torch; ``import lionk`` alone does not (``lionk.torch`` is loaded on
first attribute access).

Example::

    import torch
    from lionk.torch import LionK

    model = torch.nn.Linear(4, 1)
    opt = LionK(model.parameters(), lr=1e-3, weight_decay=0.1)
    loss = model(torch.randn(8, 4)).pow(2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()

See docs/torch.md for every option, the state layout and the reproducibility tiers.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import torch
from torch.optim import Optimizer

from ..core import kappa as _kappa
from ..core import kappa_matrix as _kappa_matrix
from ..core import validation as _check
from ..core.array_api import check_no_aliasing, find_overlap, write_inplace
from ..core.step import Hyper, LionKWarning, make_hyper, update_leaves
from ..execution.paths import (
    ExecutionRecord,
    Pending,
    check_results,
    chunkable,
    commit_all,
    interrupts_deferred,
    prepare_inplace,
)
from ..execution.stall import after_step

__all__ = ["LionK"]

# The dtypes LionK computes in (float8 types are "floating point" to torch but have no arithmetic).
_FLOATING_NAMES = ", ".join(_check.FLOAT_DTYPES)
# The hyper-parameters every LionK param group carries (a saved group without them is not ours).
_GROUP_KEYS = ("lr", "betas", "weight_decay", "kappa")
# Options added after the first release: a saved group without them (an older lionk, or a
# state dict edited as torch's test_can_load_older_state_dict does) takes these defaults, as
# torch's optimizers do in __setstate__ with setdefault.
_GROUP_DEFAULTS: dict[str, Any] = {"maximize": False, "nan_policy": "propagate",
                                   "state_dtype": None, "skipped": 0}
# Optimizer-wide options kept as attributes (pickled by __getstate__), with the defaults that an
# object pickled by an older lionk gets.
_ATTRIBUTE_DEFAULTS: dict[str, Any] = {"execution": "auto", "communication": None,
                                       "process_group": None, "vote_packing": "int8"}


# ---------------------------------------------------------------------------------------------
# Validation helpers. They raise with the argument's name, the expected and the received value,
# and never modify anything.


def _prefixed(where: str, exc: Exception) -> Exception:
    """``exc`` again, same type, its message prefixed with ``where``."""
    msg = exc.args[0] if exc.args else str(exc)
    return type(exc)(f"{where}: {msg}" if where else msg)


def _hyper(lr: Any, betas: Any, weight_decay: Any, where: str, *, allow_zero_lr: bool,
           stacklevel: int) -> Hyper:
    """``make_hyper(lr, betas, weight_decay)`` with errors prefixed with ``where``.

    ``lr == 0`` is what schedulers produce (warm-up from 0, cosine annealing to ``eta_min=0``);
    with ``allow_zero_lr`` it is accepted and the shared update leaves the params unchanged.
    """
    try:
        lr = _one_element("lr", lr)
        if isinstance(betas, (tuple, list)):
            betas = tuple(_one_element(f"betas[{i}]", b) for i, b in enumerate(betas))
        weight_decay = _one_element("weight_decay", weight_decay)
        return make_hyper(lr, betas, weight_decay, stacklevel=stacklevel + 1,
                          allow_zero_lr=allow_zero_lr)
    except (TypeError, ValueError) as exc:
        raise _prefixed(where, exc) from None


def _one_element(name: str, value: Any) -> Any:
    """A one-element tensor (shape (), (1,), (1, 1), ...) as a 0-d tensor, as torch's optimizers
    accept it (a scheduler may update it in place); more than one element is refused."""
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        if value.numel() != 1:
            raise ValueError(
                f"{name}: expected a number or a one-element tensor (Tensor {name} must be "
                f"1-element); received a tensor of shape {tuple(value.shape)}"
            )
        return value.reshape(())
    return value


def _state_dtype(value: Any, where: str) -> torch.dtype | None:
    """``None`` or a torch floating dtype (from a dtype or its name, e.g. ``"float32"``)."""
    name = f"{where}state_dtype"
    if value is None:
        return None
    if isinstance(value, str):
        found = getattr(torch, value, None)
        if not isinstance(found, torch.dtype):
            raise ValueError(
                f"{name}: expected None, a torch floating dtype or its name ({_FLOATING_NAMES}); "
                f"received {value!r}, which torch does not have"
            )
        value = found
    if not isinstance(value, torch.dtype):
        raise TypeError(
            f"{name}: expected None, a torch floating dtype or its name ({_FLOATING_NAMES}); "
            f"received {value!r} ({type(value).__name__})"
        )
    if not _check.supported_float(value):
        raise ValueError(
            f"{name}: expected a real floating dtype ({_FLOATING_NAMES}); received {value}"
        )
    return value


def _resolve_kappa(value: Any, where: str, current: Any = None) -> _kappa.Kappa:
    """A :class:`lionk.kappa.Kappa` from a name, a Kappa, or a ``{"name", "params"}`` spec
    (what :meth:`LionK.state_dict` writes for a Kappa object). ``current`` is reused when the
    spec describes it (so an unregistered user κ survives a checkpoint round trip)."""
    name = f"{where}kappa"
    if isinstance(value, _kappa.Kappa):
        return value
    if (isinstance(value, Mapping) and value and set(value) <= set(_kappa_matrix.PER_LEAF_KEYS)) \
            or (callable(value) and not isinstance(value, type)):
        try:  # a per-leaf choice: {"matrices": ..., "other": ...} or (path, shape) -> kappa
            return _kappa_matrix.PerLeaf(value)
        except (KeyError, TypeError, ValueError) as exc:
            raise _prefixed(name, exc) from None
    return _check.kappa_from_spec(value, name=name, current=current)


class _GroupConfig(NamedTuple):
    hyper: Hyper
    kappa: _kappa.Kappa
    maximize: bool
    nan_policy: str
    state_dtype: torch.dtype | None


def _check_options(group: Mapping[str, Any], where: str, *, allow_zero_lr: bool,
                   current_kappa: Any = None, stacklevel: int = 3) -> _GroupConfig:
    """Validate the hyper-parameters of one group (or of the defaults when ``where`` is '')."""
    pre = f"{where}: " if where else ""
    hyper = _hyper(group["lr"], group["betas"], group["weight_decay"], where,
                            allow_zero_lr=allow_zero_lr, stacklevel=stacklevel + 1)
    kap = _resolve_kappa(group["kappa"], pre, current_kappa)
    maximize = group["maximize"]
    if not isinstance(maximize, bool):
        raise TypeError(f"{pre}maximize: expected a bool; received {maximize!r}")
    nan_policy = _check.nan_policy(group["nan_policy"], name=f"{pre}nan_policy")
    sdt = _state_dtype(group["state_dtype"], pre)
    if "skipped" in group:
        _check.counter(f"{pre}skipped", group["skipped"])
    return _GroupConfig(hyper, kap, maximize, nan_policy, sdt)


def _options_key(group: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """A key that determines :func:`_check_options`'s result for ``group``, or None when the
    options are not all plain Python values (a tensor lr, a per-leaf κ, ...): those are checked
    at every step. A κ instance enters by identity (the cache entry keeps it alive)."""
    lr, betas, wd, kap = group["lr"], group["betas"], group["weight_decay"], group["kappa"]
    if type(lr) not in _PLAIN_NUMBERS or type(wd) not in _PLAIN_NUMBERS:
        return None
    if type(betas) not in (tuple, list) or len(betas) != 2 \
            or type(betas[0]) not in _PLAIN_NUMBERS or type(betas[1]) not in _PLAIN_NUMBERS:
        return None
    if type(kap) is str:
        kkey: Any = kap
    elif isinstance(kap, _kappa.Kappa):
        kkey = (id(kap),)
    else:
        return None
    maximize, nan_policy = group["maximize"], group["nan_policy"]
    state_dtype, skipped = group["state_dtype"], group.get("skipped", 0)
    if type(maximize) is not bool or type(nan_policy) is not str or type(skipped) is not int \
            or not (state_dtype is None or type(state_dtype) in (str, torch.dtype)):
        return None
    return (type(lr), lr, type(betas[0]), betas[0], type(betas[1]), betas[1], type(wd), wd,
            kkey, maximize, nan_policy, state_dtype, skipped)


_PLAIN_NUMBERS = (float, int)
_STRIDED = torch.strided
_OK_DTYPES: set[torch.dtype] = set()  # dtypes _check_real_floating accepted


def _check_real_floating(t: torch.Tensor, name: str) -> None:
    if t.dtype in _OK_DTYPES:
        return
    if t.is_complex():
        raise TypeError(
            f"{name}: expected a real floating tensor ({_FLOATING_NAMES}); received {t.dtype}. "
            "LionK does not support complex parameters (Lion-κ's ∇K is defined on real vectors); "
            "optimise the real and imaginary parts as separate real parameters"
        )
    if not _check.supported_float(t.dtype):
        raise TypeError(
            f"{name}: expected a real floating tensor ({_FLOATING_NAMES}); received {t.dtype}"
        )
    _OK_DTYPES.add(t.dtype)


def _check_dense(t: torch.Tensor, name: str) -> None:
    if t.layout != torch.strided:
        raise TypeError(
            f"{name}: expected a dense tensor (layout torch.strided); received layout {t.layout}. "
            "LionK does not support sparse gradients or parameters (e.g. nn.Embedding(sparse=True))"
        )


def _state_step(value: Any, name: str) -> int:
    """A saved ``step`` as an int >= 0 (an int, or a 0-d tensor holding a whole number)."""
    if isinstance(value, torch.Tensor) and tuple(value.shape) == () and not value.is_complex():
        f = float(value.detach().cpu())
        if math.isfinite(f) and f >= 0 and f == int(f):
            return int(f)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f"{name}: expected an int >= 0; received {value!r}")


class _Plan(NamedTuple):
    """One param group's validated inputs for this step (nothing written yet)."""

    group: dict[str, Any]
    config: _GroupConfig
    params: list[torch.Tensor]
    grads: list[torch.Tensor]
    moms: list[torch.Tensor]
    fresh: list[bool]  # the momentum is a new zero tensor, not yet in self.state
    skip: bool
    positions: tuple[int, ...] = ()  # position of each planned param in group["params"]
    nan_error: str | None = None  # nan_policy="raise" under communication: raised by every rank


def _param_name(gi: int, positions: tuple[int, ...], k: int) -> str:
    return f"param_groups[{gi}]['params'][{positions[k]}]"


def _is_dtensor(t: torch.Tensor) -> bool:
    """True for a ``torch.distributed.tensor.DTensor`` (FSDP2 / tensor-parallel params)."""
    return type(t).__name__ == "DTensor" and hasattr(t, "placements")


# ---------------------------------------------------------------------------------------------


class LionK(Optimizer):
    r"""Lion-κ for PyTorch: ``x' = (1 - lr*wd)*x - lr*∇K(b1*m + (1-b1)*g)``, ``m' = b2*m + (1-b2)*g``.

    Args:
        params: an iterable of tensors, of ``(name, tensor)`` pairs (``model.named_parameters()``)
            or of param-group dicts. A group may set its own ``lr``, ``betas``, ``weight_decay``,
            ``kappa``, ``maximize``, ``nan_policy`` and ``state_dtype``; the rest come from the
            arguments below.
        lr: learning rate ε > 0 (a scheduler may later set it to 0: the params then stay and the
            momentum is updated).
        betas: ``(b1, b2)`` in [0, 1); b1 > b2 runs with a :class:`lionk.LionKWarning`.
        weight_decay: decoupled weight decay λ ≥ 0 with ``lr * weight_decay < 1``. With λ > 0 and
            ``kappa="sign"`` the iterates solve ``min f(x) s.t. ‖x‖_∞ ≤ 1/λ``.
        kappa: a κ name (``lionk.kappa.available()``) or a :class:`lionk.kappa.Kappa`. A norm κ
            with ``scope="global"`` takes one norm over all the params of a *param group*.
        maximize: ascend the objective (the step uses a negated copy of ``p.grad``).
        nan_policy: ``"propagate"``, ``"raise"`` (ValueError naming the group and param, nothing
            changed) or ``"skip"`` (the group is left unchanged and ``group['skipped']`` is
            incremented). Applied to each group's own gradients.
        state_dtype: dtype of the momentum ``exp_avg`` (e.g. ``torch.float32`` for bfloat16
            params); default: the param's dtype.
        execution: how each group's update runs (``"auto"``, ``"eager"``, ``"chunked"``,
            ``"packed"``, ``"compiled"``; docs/execution.md). Groups of DTensor params (FSDP2) and
            communicating optimizers always run ``"eager"``.
        communication: ``None`` (default), ``"sign-vote"`` or ``"sign-mean"``: Distributed Lion
            (theory.md §8). Use it *instead of* DDP's gradient all-reduce: every rank keeps its
            own momentum, computes its direction ``∇K(c)`` from its own gradients (κ must be
            ternary, ``Kappa.ternary``: its directions are votes −1/0/+1, as for ``"sign"``,
            ``"deadzone"`` or a user κ registered with ``ternary=True``), the votes are
            summed over the ranks and every rank applies the same majority vote
            ``sign(Σ votes)`` (ties give 0) or mean vote ``Σ votes / W``; parameters stay
            bitwise identical across ranks. Non-finite gradients under ``nan_policy`` "skip"
            or "raise" skip the group, or raise, on every rank.
        process_group: the ``torch.distributed`` group to vote in (default: the world).
        vote_packing: ``"int8"`` (one byte per coordinate, all-reduce) or ``"2bit"`` (four
            coordinates per byte, all-gather); results are identical.

    After a communicating step, ``last_communication`` holds the bytes of that step (see
    :func:`lionk.distributed.communication_bytes`): ``payload_bytes`` (the buffer this rank
    contributed), ``sent_bytes_per_rank`` (ring model) and ``ddp_float32_sent_bytes_per_rank``
    (what DDP's float32 gradient all-reduce would send) and their ``ratio``.

    State, per parameter that has received a gradient: ``self.state[p] = {"step": int,
    "exp_avg": tensor}``. Complex and sparse tensors are rejected with a TypeError.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: Any = 1e-4,
        betas: tuple[Any, Any] = (0.9, 0.99),
        weight_decay: Any = 0.0,
        kappa: str | _kappa.Kappa = "sign",
        *,
        maximize: bool = False,
        nan_policy: str = "propagate",
        state_dtype: Any = None,
        execution: str = "auto",
        communication: str | None = None,
        process_group: Any = None,
        vote_packing: str = "int8",
    ) -> None:
        _check.execution(execution)
        from ..distributed import COMMUNICATIONS, VOTE_PACKINGS

        if communication not in COMMUNICATIONS:
            raise ValueError(
                f"communication: expected one of {COMMUNICATIONS}; received {communication!r}"
            )
        if vote_packing not in VOTE_PACKINGS:
            raise ValueError(
                f"vote_packing: expected one of {VOTE_PACKINGS}; received {vote_packing!r}"
            )
        if communication is not None and execution not in ("auto", "eager"):
            raise ValueError(
                f"execution: communication={communication!r} runs the eager path (the votes are "
                f"exchanged between computing and applying the direction); expected 'auto' or "
                f"'eager'; received {execution!r}"
            )
        self.execution = execution
        self.communication = communication
        self.process_group = process_group
        self.vote_packing = vote_packing
        self.last_execution: list[str | None] = []
        # per param group: the path its steps take and any fallback (execution_report())
        self._records: list[ExecutionRecord] = []
        self.last_communication: dict[str, Any] | None = None
        defaults: dict[str, Any] = dict(
            lr=lr, betas=betas, weight_decay=weight_decay, kappa=kappa, maximize=maximize,
            nan_policy=nan_policy, state_dtype=state_dtype,
        )
        with warnings.catch_warnings():
            # b1 > b2 is reported once per group that uses it, by add_param_group
            warnings.simplefilter("ignore", LionKWarning)
            cfg = _check_options(defaults, "", allow_zero_lr=False)
        defaults["betas"] = tuple(betas)
        defaults["state_dtype"] = cfg.state_dtype
        if isinstance(params, torch.Tensor):
            raise TypeError(
                "params: expected an iterable of tensors or of param-group dicts; received a "
                "single tensor (wrap it in a list: [tensor]) (torch: params argument given to "
                "the optimizer should be an iterable of Tensors or dicts, but got "
                f"{torch.typename(params)})"
            )
        if isinstance(params, Mapping):
            raise TypeError(
                "params: expected an iterable of tensors or of param-group dicts; received a "
                "single dict (wrap it in a list: [group])"
            )
        try:
            params = list(params)
        except TypeError:
            raise TypeError(
                "params: expected an iterable of tensors or of param-group dicts; received "
                f"{type(params).__name__}"
            ) from None
        if not params:
            raise ValueError(
                "params: expected a non-empty iterable of tensors or param-group dicts; received "
                "an empty one (does the model have parameters?)"
            )
        super().__init__(params, defaults)

    # --- pickling and copying ----------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """torch's state (``defaults``, ``state``, ``param_groups``) and LionK's optimizer-wide
        options, so that ``copy.deepcopy(opt)`` and ``pickle`` give an optimizer that steps."""
        state = super().__getstate__()
        state.pop("_options", None)  # a cache of validated options: rebuilt after unpickling
        for key in _ATTRIBUTE_DEFAULTS:
            state[key] = getattr(self, key, _ATTRIBUTE_DEFAULTS[key])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled LionK; what an older version did not save takes its default (as
        torch's optimizers do with ``setdefault``). Also called by ``load_state_dict``."""
        super().__setstate__(state)
        for key, value in _ATTRIBUTE_DEFAULTS.items():
            self.__dict__.setdefault(key, value)
        self.__dict__.setdefault("last_execution", [])
        self.__dict__.setdefault("_records", [])  # per group; not pickled: a copy starts afresh
        self.__dict__.setdefault("last_communication", None)
        for group in self.param_groups:
            for key, value in _GROUP_DEFAULTS.items():
                group.setdefault(key, value)

    # --- param groups ------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group. Everything is validated before the group is added: tensors
        (real floating, dense, leaf, not already in a group, no duplicates) and options."""
        where = f"param_groups[{len(self.param_groups)}]"
        if not isinstance(param_group, Mapping):
            raise TypeError(
                f"{where}: expected a dict with a 'params' entry; received "
                f"{type(param_group).__name__}"
            )
        if "params" not in param_group:
            raise ValueError(f"{where}: expected a 'params' entry; received keys {sorted(param_group)}")
        raw = param_group["params"]
        if isinstance(raw, torch.Tensor):
            raw = [raw]
        elif isinstance(raw, (set, frozenset)):
            raise TypeError(
                f"{where}['params']: expected an ordered collection (list or tuple) of tensors; "
                "received a set, whose order changes between runs"
            )
        elif isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, Iterable):
            raise TypeError(
                f"{where}['params']: expected a tensor or an iterable of tensors; received "
                f"{type(raw).__name__}"
            )
        raw = list(raw)
        named = [isinstance(e, tuple) for e in raw]
        if any(named) and not all(named):
            raise ValueError(
                f"{where}['params']: expected all entries as tensors or all as (name, tensor) "
                "pairs; received a mix (torch: all optimizer params should be with/without "
                "names. Some param names are missing)"
            )
        names: list[Any] = []
        tensors: list[Any] = []
        for i, e in enumerate(raw):
            if isinstance(e, tuple):
                if len(e) != 2:
                    raise ValueError(
                        f"{where}['params'][{i}]: expected a (name, tensor) pair; received a "
                        f"tuple of length {len(e)}"
                    )
                names.append(e[0])
                e = e[1]
            tensors.append(e)
        seen: dict[int, str] = {}
        for gj, g in enumerate(self.param_groups):
            for k, p in enumerate(g["params"]):
                seen[id(p)] = f"param_groups[{gj}]['params'][{k}]"
        mine: dict[int, int] = {}
        for i, p in enumerate(tensors):
            nm = f"{where}['params'][{i}]"
            if not isinstance(p, torch.Tensor):
                raise TypeError(
                    f"{nm}: expected a torch.Tensor (e.g. an nn.Parameter); received "
                    f"{type(p).__module__}.{type(p).__name__}"
                )
            _check_dense(p, nm)
            _check_real_floating(p, nm)
            _check.no_internal_overlap(nm, p)
            if not (p.is_leaf or p.retains_grad):
                raise ValueError(
                    f"{nm}: expected a leaf tensor (an nn.Parameter or a tensor created with "
                    "requires_grad=True); received the result of an operation (a non-leaf tensor)"
                )
            if id(p) in mine:
                raise ValueError(
                    f"{nm}: expected each tensor once; received the tensor already at "
                    f"{where}['params'][{mine[id(p)]}]"
                )
            if id(p) in seen:
                raise ValueError(
                    f"{nm}: expected each tensor in one param group only; received a tensor "
                    f"already in {seen[id(p)]} (torch: some parameters appear in more than one "
                    "parameter group)"
                )
            mine[id(p)] = i
        # distinct tensors may still share memory (views of one storage): refused as well
        existing = [(f"param_groups[{gj}]['params'][{k}]", p)
                    for gj, g in enumerate(self.param_groups) for k, p in enumerate(g["params"])]
        check_no_aliasing([([nm for nm, _ in existing], [p for _, p in existing], True),
                           ([f"{where}['params'][{i}]" for i in range(len(tensors))], tensors,
                            True)])
        group: dict[str, Any] = dict(param_group)
        for key, v in self.defaults.items():
            group.setdefault(key, v)
        cfg = _check_options(group, where, allow_zero_lr=False, stacklevel=3)
        self._check_communication_kappa(cfg.kappa, where)
        group["params"] = tensors
        if names:
            group["param_names"] = names
        group["betas"] = tuple(group["betas"])
        group["state_dtype"] = cfg.state_dtype
        if isinstance(group["kappa"], Mapping):
            group["kappa"] = cfg.kappa
        group.setdefault("skipped", 0)
        super().add_param_group(group)

    def _check_communication_kappa(self, kap: _kappa.Kappa, where: str) -> None:
        if getattr(self, "communication", None) is None:
            return
        from ..distributed import TERNARY_KAPPAS, is_ternary

        if not is_ternary(kap):
            raise ValueError(
                f"{where}: kappa: communication={self.communication!r} exchanges each rank's "
                f"direction as a vote (-1, 0, +1 per coordinate); expected a ternary kappa (its "
                f"gradient takes only those values: the fact Kappa.ternary; built-ins: "
                f"{', '.join(TERNARY_KAPPAS)}); received {kap.name!r} (ternary=False)"
            )

    # --- the step ----------------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One Lion-κ step for every param group; returns ``closure()``'s loss (or None).

        The closure runs under ``torch.enable_grad()``. Params whose ``.grad`` is None are
        skipped; ``p.grad`` is never modified. All groups are validated before anything is
        written: a step that raises leaves params and state as they were. ``execution``
        (constructor) picks how each group's update runs (the rule of ``"auto"`` at each size
        is in docs/execution.md); every group's update is computed before any is written.
        ``last_execution`` lists the path each group took, ``execution_report()`` why.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            plans = [self._plan(gi, group) for gi, group in enumerate(self.param_groups)]
            self._check_aliasing(plans)
            if self.communication is not None:
                self._step_communicating(plans)
                return loss
            # Compute every group's update (everything that can fail: κ, result shapes, ...),
            # then write them all and count, Ctrl-C held back while writing.
            pendings: list[Pending | None] = []
            for gi, plan in enumerate(plans):
                if plan.skip or not plan.params:
                    pendings.append(None)
                    continue
                while len(self._records) <= gi:
                    self._records.append(ExecutionRecord(self.execution))
                self._records[gi].requested = self.execution
                pendings.append(prepare_inplace(
                    plan.params, plan.grads, plan.moms, plan.config.hyper, plan.config.kappa,
                    execution=self._group_execution(plan),
                    names=functools.partial(_param_name, gi, plan.positions),
                    record=self._records[gi]))
            with interrupts_deferred():
                ran = iter(commit_all([p for p in pendings if p is not None]))
                self.last_execution = []
                for plan, pending in zip(plans, pendings):
                    if plan.skip:
                        plan.group["skipped"] = int(plan.group.get("skipped", 0)) + 1
                        self.last_execution.append(None)
                    elif pending is None:
                        self.last_execution.append(None)
                    else:
                        self.last_execution.append(next(ran))
                        self._count_step(plan)
            after_step(self, lambda: [(p.config.kappa, p.moms, p.grads) for p in plans  # StallWarning
                                      if not p.skip and p.params], stacklevel=3)
        return loss

    def _group_execution(self, plan: _Plan) -> str:
        """The path of one group: DTensor params (FSDP2) run eagerly (the update runs on the
        DTensors); ``"chunked"`` runs the groups it cannot (a norm κ, non-contiguous params)
        eagerly, as ``"auto"`` does; so does ``"packed"`` for a norm κ."""
        if self.execution == "eager" or any(_is_dtensor(x) for x in plan.params):
            return "eager"
        if self.execution == "chunked" and not chunkable(plan.params, plan.grads, plan.moms,
                                                         plan.config.kappa):
            return "eager"
        if self.execution == "packed" and not plan.config.kappa.separable:
            return "eager"
        return self.execution

    def _check_aliasing(self, plans: list[_Plan]) -> None:
        """ValueError naming both tensors when a param, gradient or momentum of the step shares
        memory with a param or momentum of it (overlapping views, a ``.grad`` that is a param)."""
        arrays: list[Any] = []
        writable: list[bool] = []
        for plan in plans:
            n = len(plan.params)
            arrays += plan.params
            arrays += [p.grad for p in plan.params]
            arrays += plan.moms
            writable += [True] * n + [False] * n + [True] * n
        if find_overlap(arrays, writable) is None:
            return  # the common case; else the check below names the two tensors
        groups: list[tuple[Any, list[Any], bool]] = []
        for gi, plan in enumerate(plans):
            name = functools.partial(_param_name, gi, plan.positions)
            groups.append((name, plan.params, True))
            groups.append((lambda k, name=name: f"{name(k)}.grad",
                           [p.grad for p in plan.params], False))
            groups.append((lambda k, name=name: f"state of {name(k)}['exp_avg']", plan.moms,
                           True))
        check_no_aliasing(groups)

    def execution_report(self) -> dict[str, Any]:
        """How this optimizer's steps run: ``requested`` (the ``execution`` option) and, per
        param group, the path its last step took, what ran it, every fallback with its reason
        and the number of steps (see :meth:`lionk.LionK.execution_report`). A group stepped by
        ``communication=...`` (eager, outside the execution paths) reports its path with
        ``steps`` None."""
        groups = []
        for gi, ran in enumerate(self.last_execution):
            if gi < len(self._records) and self._records[gi].path is not None:
                groups.append(self._records[gi].as_dict())
            else:
                groups.append({"requested": self.execution, "path": ran, "detail": "",
                               "fallbacks": [], "steps": None})
        return {"requested": self.execution, "groups": groups}

    def _count_step(self, plan: _Plan) -> None:
        for p, m, fresh in zip(plan.params, plan.moms, plan.fresh):
            if fresh:
                self.state[p] = {"step": 1, "exp_avg": m}
            else:
                st = self.state[p]
                st["step"] = int(st["step"]) + 1

    def _step_communicating(self, plans: list[_Plan]) -> None:
        """Distributed Lion: every group's direction is computed locally, the votes are
        exchanged (one collective per group, on every rank, in group order), and the
        aggregated direction is applied through the ``aggregate_direction`` hook of the shared
        ``update_leaves``. Every decision (skip, raise) is taken from exchanged data, so it is
        the same on every rank; nothing is written before every group has been exchanged."""
        import torch.distributed as dist

        from ..distributed import CommunicationError, exchange_votes

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                f"communication={self.communication!r}: expected an initialized torch.distributed "
                "process group (torch.distributed.init_process_group(...)); none is initialized"
            )
        world = dist.get_world_size(self.process_group)
        exchanged: list[Any] = []
        results: list[Any] = []
        communication = self.communication
        assert communication is not None  # (step() calls this only when communicating)
        for plan in plans:
            allp = plan.group["params"]
            if not allp:
                exchanged.append(None)
                results.append(None)
                continue
            numels = [int(p.numel()) for p in allp]
            box: dict[str, Any] = {}

            def hook(us: list[torch.Tensor], plan: _Plan = plan, numels: list[int] = numels,
                     box: dict[str, Any] = box) -> list[torch.Tensor]:
                slots: list[Any] = [None] * len(numels)
                for i, u in zip(plan.positions, us):
                    slots[i] = u
                ex = exchange_votes(slots, numels, 1 if plan.skip else 0,
                                    communication=communication,
                                    vote_packing=self.vote_packing, group=self.process_group)
                box["ex"] = ex
                return [ex.directions[i] for i in plan.positions]

            if plan.params and not plan.skip:
                results.append(update_leaves(plan.params, plan.grads, plan.moms,
                                             plan.config.hyper, plan.config.kappa,
                                             aggregate_direction=hook))
            else:  # nothing to compute here, but the collective is shared: take part in it
                box["ex"] = exchange_votes([None] * len(numels), numels, 1 if plan.skip else 0,
                                           communication=communication,
                                           vote_packing=self.vote_packing,
                                           group=self.process_group,
                                           present=[i in plan.positions for i in range(len(numels))],
                                           device=allp[0].device)
                results.append(None)
            exchanged.append(box["ex"])
        # Decisions from exchanged data only (identical on every rank); nothing written yet.
        for gi, (plan, ex) in enumerate(zip(plans, exchanged)):
            if ex is None:
                continue
            partial = [(i, c) for i, c in enumerate(ex.present) if 0 < c < world]
            if partial:
                i, c = partial[0]
                raise CommunicationError(
                    f"param_groups[{gi}]['params'][{i}]: has a gradient on {c} of {world} ranks; "
                    f"communication={self.communication!r} needs every rank to have gradients "
                    "for the same params (set unused gradients to zeros); nothing was changed"
                )
            if ex.flags and plan.config.nan_policy == "raise":
                mine = f" ({plan.nan_error})" if plan.nan_error else ""
                raise ValueError(
                    f"param_groups[{gi}]: expected finite gradients (nan_policy='raise'); "
                    f"received non-finite gradients on {ex.flags} of {world} ranks{mine}; "
                    "nothing was changed on any rank"
                )
        for gi, (plan, res) in enumerate(zip(plans, results)):
            if res is not None:
                check_results(plan.params, plan.moms, res[0], res[1], plan.config.kappa,
                              [f"param_groups[{gi}]['params'][{i}]" for i in plan.positions])
        with interrupts_deferred():
            self._commit_communicated(plans, exchanged, results, world)

    def _commit_communicated(self, plans: list[_Plan], exchanged: list[Any], results: list[Any],
                             world: int) -> None:
        from ..distributed import communication_bytes

        self.last_execution = []
        payload = sent = 0.0
        elements = 0
        for plan, ex, res in zip(plans, exchanged, results):
            if ex is None:
                self.last_execution.append(None)
                continue
            payload += ex.payload_bytes
            sent += ex.sent_bytes
            elements += sum(int(p.numel()) for p in plan.group["params"])
            if ex.flags:  # nan_policy="skip" on at least one rank: skipped on all of them
                plan.group["skipped"] = int(plan.group.get("skipped", 0)) + 1
                self.last_execution.append(None)
                continue
            if res is None:  # no rank has gradients for this group
                self.last_execution.append(None)
                continue
            new_xs, new_ms = res
            for dst, src in zip((*plan.params, *plan.moms), (*new_xs, *new_ms)):
                write_inplace(dst, src)
            self.last_execution.append("eager")
            self._count_step(plan)
        ddp = communication_bytes(elements, world, communication=None)
        self.last_communication = {
            "communication": self.communication,
            "vote_packing": self.vote_packing,
            "world_size": world,
            "elements": elements,
            "payload_bytes": int(payload),
            "sent_bytes_per_rank": sent,
            "ddp_float32_sent_bytes_per_rank": ddp["sent_bytes_per_rank"],
            "ratio": sent / ddp["sent_bytes_per_rank"] if elements and world > 1 else math.nan,
        }

    def _plan(self, gi: int, group: dict[str, Any]) -> _Plan:
        """Validate one group for this step and gather its leaves. Raises, never writes."""
        where = f"param_groups[{gi}]"
        cfg = self._group_options(gi, group, where)
        self._check_communication_kappa(cfg.kappa, where)
        xs: list[torch.Tensor] = []
        gs: list[torch.Tensor] = []
        ms: list[torch.Tensor] = []
        fresh: list[bool] = []
        idx: list[int] = []
        state = self.state
        for i, p in enumerate(group["params"]):
            g = p.grad
            if g is None:
                continue
            # the checks cost attribute reads only when they pass; names are built for errors
            if p.dtype not in _OK_DTYPES:
                _check_real_floating(p, f"{where}['params'][{i}]")
            if not p.is_contiguous():  # a contiguous tensor has no internal overlap
                _check.no_internal_overlap(f"{where}['params'][{i}]", p)
            if g.layout is not _STRIDED:
                _check_dense(g, f"{where}['params'][{i}].grad")
            if g.shape != p.shape:
                raise ValueError(
                    f"{where}['params'][{i}].grad: expected shape {tuple(p.shape)} (the param's); "
                    f"received {tuple(g.shape)}"
                )
            if g.dtype != p.dtype:
                raise TypeError(f"{where}['params'][{i}].grad: expected dtype {p.dtype} (the "
                                f"param's); received {g.dtype}")
            if not (g.is_cpu and p.is_cpu) and g.device != p.device:
                raise ValueError(
                    f"{where}['params'][{i}].grad: expected device {p.device} (the param's); "
                    f"received {g.device}"
                )
            st = state.get(p)
            if st:
                m = st.get("exp_avg")
                if not isinstance(m, torch.Tensor) or "step" not in st:
                    raise ValueError(
                        f"state of {where}['params'][{i}]: expected a dict with 'step' and an "
                        f"'exp_avg' tensor; received keys {sorted(map(str, st))}"
                    )
                if m.shape != p.shape:
                    raise ValueError(
                        f"state of {where}['params'][{i}]['exp_avg']: expected shape "
                        f"{tuple(p.shape)} (the param's); received {tuple(m.shape)}"
                    )
                if not (m.is_cpu and p.is_cpu) and m.device != p.device:
                    raise ValueError(
                        f"state of {where}['params'][{i}]['exp_avg']: expected device {p.device} "
                        f"(the param's); received {m.device}"
                    )
                if m.dtype not in _OK_DTYPES:
                    _check_real_floating(m, f"state of {where}['params'][{i}]['exp_avg']")
                fresh.append(False)
            else:
                m = torch.zeros_like(p, dtype=cfg.state_dtype or p.dtype,
                                     memory_format=torch.preserve_format)
                fresh.append(True)
            xs.append(p)
            gs.append(torch.neg(g) if cfg.maximize else g)  # a negated copy: p.grad untouched
            ms.append(m)
            idx.append(i)
        if any(_is_dtensor(x) for x in xs):
            if self.communication is not None:
                raise NotImplementedError(
                    f"{where}: communication={self.communication!r} with DTensor (FSDP2) params: "
                    "FSDP already reduces the gradients of each shard; distributed Lion replaces "
                    "that reduction and runs on replicated (DDP-style, unwrapped) params only"
                )
            if self.execution in ("chunked", "compiled", "packed"):
                raise ValueError(
                    f"{where}: execution={self.execution!r} does not run on DTensor (FSDP2) "
                    "params; expected 'auto' or 'eager' (the update runs on the DTensors)"
                )
            if not all(_is_dtensor(x) for x in xs) and getattr(cfg.kappa, "scope", None) == "global":
                raise ValueError(
                    f"{where}: kappa {cfg.kappa.name!r} with scope='global' takes one norm over the "
                    "group; expected all of its params to be DTensors or none; received a mix"
                )
        if xs and getattr(cfg.kappa, "scope", None) == "global":
            devices = {x.device for x in xs}
            if len(devices) > 1:
                raise ValueError(
                    f"{where}: kappa {cfg.kappa.name!r} with scope='global' takes one norm over the "
                    f"group, expected its params on one device; received {sorted(map(str, devices))}"
                )
        skip = False
        nan_error = None
        if xs and cfg.nan_policy != "propagate":
            for i, g in zip(idx, gs):
                finite = torch.isfinite(g)
                if not bool(finite.all()):
                    if cfg.nan_policy == "raise":
                        bad = int((~finite).sum())
                        msg = (f"{where}['params'][{i}].grad: expected finite values "
                               f"(nan_policy='raise'); received {bad} non-finite of {g.numel()} "
                               "elements; nothing was changed")
                        if self.communication is None:
                            raise ValueError(msg)
                        nan_error = msg  # raised on every rank after the exchange
                    skip = True
                    break
        if isinstance(cfg.kappa, _kappa_matrix.PerLeaf):  # one κ per param, from position and shape
            cfg = cfg._replace(kappa=cfg.kappa.bind([f"[{i}]" for i in idx], xs))
        return _Plan(group, cfg, xs, gs, ms, fresh, skip, tuple(idx), nan_error)

    def _group_options(self, gi: int, group: dict[str, Any], where: str) -> _GroupConfig:
        """:func:`_check_options` of group ``gi``, remembered while its options stay the same
        plain values (a scheduler changing ``lr`` makes a new entry; b1 > b2, which warns at
        every step, is never remembered)."""
        key = _options_key(group)
        cache = self.__dict__.setdefault("_options", {})
        if key is not None:
            hit = cache.get(gi)
            if hit is not None and hit[0] == key:
                return hit[1]
        cfg = _check_options(group, where, allow_zero_lr=True, stacklevel=6)
        b1, b2 = cfg.hyper.b1, cfg.hyper.b2
        if key is not None and not (isinstance(b1, float) and isinstance(b2, float) and b1 > b2):
            cache[gi] = (key, cfg, group["kappa"])
        return cfg

    # --- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch's state dict (``state``: ``{id: {"step": int, "exp_avg": tensor}}``,
        ``param_groups``: options and param ids). A :class:`lionk.kappa.Kappa` object in a group
        is written as ``{"name": ..., "params": {...}}`` so that the dict holds only plain data
        and tensors (``torch.load(weights_only=True)`` reads it)."""
        sd = super().state_dict()
        for g in sd["param_groups"]:
            k = g.get("kappa")
            if isinstance(k, _kappa.Kappa):
                g["kappa"] = k.to_spec()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict`. It is validated completely first (structure, group count
        and sizes, every group's options, every ``exp_avg``'s shape); a mismatched or foreign
        dict raises and leaves the optimizer unchanged.

        As in torch, the saved groups' options replace the current ones and each ``exp_avg`` is
        moved to its param's device. Its dtype becomes the group's ``state_dtype`` if set, else
        the param's dtype (torch's convention). The loaded momentum is a copy: it never shares
        memory with ``state_dict``.
        """
        kappas, targets = self._validate_state_dict(state_dict)
        saved_state = state_dict["state"]
        super().load_state_dict(state_dict)  # calls __setstate__: missing options defaulted
        for group, kap in zip(self.param_groups, kappas):
            group["kappa"] = kap
            group["betas"] = tuple(group["betas"])
            group["state_dtype"] = _state_dtype(group["state_dtype"], "")
        for pid, entry in saved_state.items():
            p, dtype = targets[pid]
            st = self.state[p]
            st["step"] = _state_step(entry["step"], "")
            st["exp_avg"] = entry["exp_avg"].detach().to(device=p.device, dtype=dtype, copy=True)

    def _validate_state_dict(self, sd: Any) -> tuple[list[Any], dict[Any, tuple[torch.Tensor, torch.dtype]]]:
        """Check ``sd`` against this optimizer; return each group's κ and, per saved param id,
        ``(param, dtype of its exp_avg after loading)``. Raises, never modifies."""
        if not isinstance(sd, Mapping):
            raise TypeError(
                "state_dict: expected a dict with 'state' and 'param_groups' (from "
                f"lionk.torch.LionK.state_dict()); received {type(sd).__name__}"
            )
        missing = [k for k in ("state", "param_groups") if k not in sd]
        if missing:
            hint = ""
            if "momentum" in sd or "count" in sd:
                hint = " (this looks like a lionk.LionK state dict for arrays, not a torch optimizer's)"
            raise ValueError(
                f"state_dict: expected keys ['param_groups', 'state']; missing {missing}; received "
                f"keys {sorted(map(str, sd))}{hint}"
            )
        saved_groups = sd["param_groups"]
        if not isinstance(saved_groups, (list, tuple)):
            raise TypeError(
                f"state_dict['param_groups']: expected a list; received {type(saved_groups).__name__}"
            )
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"state_dict['param_groups']: expected {len(self.param_groups)} param groups (as "
                f"this optimizer has); received {len(saved_groups)}"
            )
        kappas: list[Any] = []
        targets: dict[Any, tuple[torch.Tensor, torch.dtype]] = {}
        where_of: dict[Any, str] = {}
        for gi, (cur, sg) in enumerate(zip(self.param_groups, saved_groups)):
            w = f"state_dict['param_groups'][{gi}]"
            if not isinstance(sg, Mapping) or not isinstance(sg.get("params"), (list, tuple)):
                raise TypeError(f"{w}: expected a dict with a 'params' list; received {sg!r}"[:400])
            if len(sg["params"]) != len(cur["params"]):
                raise ValueError(
                    f"{w}['params']: expected {len(cur['params'])} entries (the size of this "
                    f"optimizer's param_groups[{gi}]); received {len(sg['params'])}"
                )
            miss = [k for k in _GROUP_KEYS if k not in sg]
            if miss:
                raise ValueError(
                    f"{w}: missing keys {miss}; expected a state dict saved by "
                    "lionk.torch.LionK (this one comes from another optimizer, e.g. "
                    "lion_pytorch.Lion); options added later (maximize, nan_policy, "
                    "state_dtype) may be missing and take their defaults"
                )
            sg = {**_GROUP_DEFAULTS, **sg}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", LionKWarning)
                cfg = _check_options(sg, w, allow_zero_lr=True, current_kappa=cur["kappa"])
            kappas.append(sg["kappa"] if isinstance(sg["kappa"], str) else cfg.kappa)
            for i, (pid, p) in enumerate(zip(sg["params"], cur["params"])):
                if pid in where_of:
                    raise ValueError(
                        f"{w}['params'][{i}]: expected each param id once; received id {pid!r}, "
                        f"already at state_dict['param_groups']{where_of[pid][len('param_groups'):]}"
                    )
                where_of[pid] = f"param_groups[{gi}]['params'][{i}]"
                targets[pid] = (p, cfg.state_dtype or p.dtype)
        state = sd["state"]
        if not isinstance(state, Mapping):
            raise TypeError(f"state_dict['state']: expected a dict; received {type(state).__name__}")
        for pid, entry in state.items():
            w = f"state_dict['state'][{pid!r}]"
            if pid not in targets:
                raise ValueError(f"{w}: expected the id of a param listed in 'param_groups'; "
                                 f"received {pid!r}, which no group lists")
            p = targets[pid][0]
            if not isinstance(entry, Mapping) or "exp_avg" not in entry or "step" not in entry:
                keys = sorted(map(str, entry)) if isinstance(entry, Mapping) else type(entry).__name__
                raise ValueError(
                    f"{w}: expected a dict with 'step' and 'exp_avg' (LionK's state); received {keys}"
                )
            m = entry["exp_avg"]
            if not isinstance(m, torch.Tensor):
                raise TypeError(f"{w}['exp_avg']: expected a tensor; received {type(m).__name__}")
            _check_dense(m, f"{w}['exp_avg']")
            _check_real_floating(m, f"{w}['exp_avg']")
            if m.shape != p.shape:
                raise ValueError(
                    f"{w}['exp_avg']: expected shape {tuple(p.shape)} (the shape of its param, "
                    f"{where_of[pid]}); received {tuple(m.shape)}"
                )
            _state_step(entry["step"], f"{w}['step']")
        return kappas, targets
