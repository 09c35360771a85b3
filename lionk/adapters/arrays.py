"""``lionk.LionK``: the imperative, in-place form of the step for writeable arrays."""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ..core import kappa as _kappa
from ..core import validation as _check
from ..core.array_api import (
    array_namespace,
    check_no_aliasing,
    dtype_name,
    is_array,
    is_concrete,
    is_jax_array,
    is_writeable,
    write_inplace,
)
from ..core.step import (
    LionKWarning,
    State,
    check_nan_policy,
    gradients_finite,
    init,
    make_hyper,
    prepare,
)
from ..core.trees import flatten
from ..execution.paths import ExecutionRecord, commit_all, interrupts_deferred, prepare_inplace
from ..execution.stall import after_step

__all__ = ["LionK"]

_new_tuple = tuple.__new__


class LionK:
    """Lion-κ that updates writeable arrays (numpy, torch, cupy, array-api-strict) in place.

    ``opt.step(grads)`` computes the same update as :func:`lionk.step` (the same code) and writes
    the new values into the arrays given at construction and into the momentum arrays. Every leaf
    is validated first and the whole update computed before the first write, on every execution
    path: a step that raises (bad input, a κ error, a NumPy floating-point trap under
    ``np.seterr``, ...) leaves params, momentum and counters exactly as they were. Arrays that
    share memory (the same array twice, overlapping views, a gradient aliasing a param or a
    momentum) are refused with a ValueError naming both leaves.

    Hyper-parameters are attributes (``opt.lr = 1e-3`` between steps is fine: they are validated
    at every step). JAX arrays are immutable: use :func:`lionk.step` for them.

    ``execution`` chooses how the step runs (docs/execution.md has the rule ``"auto"`` follows
    at each size): ``"auto"`` (default), ``"eager"``, ``"chunked"`` (bitwise equal to eager) or
    ``"compiled"`` (torch: ``torch.compile``, ulp tier; NumPy and CuPy: one fused elementwise
    kernel generated from the recorded step, compiled by numba or by CuPy, checked against
    eager on probe values before use, bitwise). ``chunk_size`` (elements) and ``threads`` tune
    the chunked and compiled paths (defaults per backend). :meth:`execution_report` tells which
    path the last step took and why any fallback happened (per optimizer: a failure in one
    optimizer never changes another's path).

    Example::

        x = np.zeros(10, dtype=np.float32)
        opt = lionk.LionK(x, lr=1e-2, weight_decay=1.0)
        for _ in range(100):
            opt.step(2.0 * (x - 2.0))       # x converges to the box edge 1.0
    """

    def __init__(
        self,
        params: Any,
        *,
        lr: Any = 1e-4,
        betas: tuple[Any, Any] = (0.9, 0.99),
        weight_decay: Any = 0.0,
        kappa: str | _kappa.Kappa = "sign",
        state_dtype: Any = None,
        nan_policy: str = "propagate",
        execution: str = "auto",
        chunk_size: int | None = None,
        threads: int | None = None,
    ) -> None:
        _check.execution(execution)
        chunk_size = _check.optional_positive_int("chunk_size", chunk_size)
        threads = _check.optional_positive_int("threads", threads)
        self.execution = execution
        self.chunk_size = chunk_size
        self.threads = threads
        leaves, _, paths = flatten(params)
        for leaf, path in zip(leaves, paths):
            if is_jax_array(leaf):
                raise TypeError(
                    f"params{path}: JAX arrays are immutable and cannot be updated in place; "
                    "use the pure form `params, state = lionk.step(params, grads, state, ...)` "
                    "(it works under jax.jit)"
                )
            if not is_writeable(leaf):
                raise TypeError(
                    f"params{path}: expected a writeable array (LionK updates in place); "
                    "use lionk.step for read-only arrays"
                )
            _check.no_internal_overlap(f"params{path}", leaf)
        check_no_aliasing([([f"params{p}" for p in paths], leaves, True)])
        check_nan_policy(nan_policy)
        make_hyper(lr, betas, weight_decay, stacklevel=2)  # validate now, not at the first step
        self.kappa = kappa
        self.lr = lr
        self.betas = tuple(betas)
        self.weight_decay = weight_decay
        self.nan_policy = nan_policy
        self._params = params
        self.last_execution: str | None = None  # the path the last step ran (for inspection)
        self._record = ExecutionRecord(execution)
        self._state = init(params, state_dtype=state_dtype)

    @property
    def kappa(self) -> _kappa.Kappa:
        """The κ in use; assign a name (``opt.kappa = "huber"``) or a :class:`Kappa`."""
        return self._kappa

    @kappa.setter
    def kappa(self, value: str | _kappa.Kappa) -> None:
        self._kappa = _kappa.resolve(value)

    @property
    def params(self) -> Any:
        """The tree of arrays this optimizer updates (the very objects it was given)."""
        return self._params

    @property
    def state(self) -> State:
        """The current :class:`lionk.State` (its momentum arrays are updated in place)."""
        return self._state

    def step(self, grads: Any) -> None:
        """Apply one step in place. Validates everything before writing anything."""
        prep = prepare(
            self._params, grads, self._state, lr=self.lr, betas=self.betas,
            weight_decay=self.weight_decay, kappa=self._kappa, nan_policy=self.nan_policy,
            stacklevel=2,
        )
        st = self._state
        if prep.xs and self.nan_policy != "propagate":
            if gradients_finite(prep, self.nan_policy) is False:
                self._state = State(st.count, st.momentum, st.skipped + 1)
                return
        # Nothing above wrote anything. Compute (everything that can fail: the κ, result
        # shapes, floating-point traps), then write and count, Ctrl-C held back meanwhile.
        pending = None
        if prep.xs:
            self._record.requested = self.execution
            paths = prep.paths
            pending = prepare_inplace(
                prep.xs, prep.gs, prep.ms, prep.hyper, prep.kappa, execution=self.execution,
                chunk_size=self.chunk_size, threads=self.threads,
                names=lambda i: f"params{paths[i]}",  # built only for an error message
                record=self._record,
            )
        with interrupts_deferred():
            if pending is not None:
                self.last_execution = commit_all([pending])[0]
            # (State(...) without its Python-level __new__: the same tuple, cheaper per step)
            self._state = _new_tuple(State, (st.count + 1, st.momentum, st.skipped))
        after_step(self, lambda: [(prep.kappa, prep.ms, prep.gs)])  # lionk.StallWarning (rare checks)

    def execution_report(self) -> dict[str, Any]:
        """How this optimizer's steps run: ``requested`` (the ``execution`` option), ``path``
        (what the last step ran: ``"eager"``, ``"chunked"``, ``"compiled"``; None before the
        first step), ``detail`` (what ran it: ``"numba kernel"``, ``"recorded program"``,
        ``"torch.compile"``, ...), ``fallbacks`` (each distinct reason a step ran another path
        than the one chosen first, e.g. numba not installed or a dtype without a kernel) and
        ``steps`` (steps that ran a path)."""
        return self._record.as_dict()

    # --- checkpoints -----------------------------------------------------------------------------
    STATE_DICT_FORMAT = "lionk.LionK"
    """``state_dict()["format"]``: which optimizer class a state dict belongs to."""
    STATE_DICT_VERSION = 2
    """``state_dict()["version"]``: 2 keys the momenta by leaf path; 1 (lionk 0.1, no
    ``version`` key) held them in a list by position."""

    def state_dict(self) -> dict[str, Any]:
        """A snapshot of the optimizer, plain data and array copies:

        * ``format`` (``"lionk.LionK"``) and ``version`` (2);
        * ``count`` and ``skipped`` (ints);
        * ``momentum``: ``{path: copy of the momentum}``, keyed by each param's leaf path
          (``"['layer1']['w']"``, ``"[0]"``, ``""`` for a single array: see
          :func:`lionk.tree.leaf_paths`), so that loading matches momenta to params by name;
        * ``hyperparams``: ``lr``, ``betas``, ``weight_decay``, ``nan_policy`` and ``kappa``
          (``{"name": ..., "params": {...}}``).
        """
        ms, _, paths = flatten(self._state.momentum)
        return {
            "format": self.STATE_DICT_FORMAT,
            "version": self.STATE_DICT_VERSION,
            "count": int(self._state.count),
            "skipped": int(self._state.skipped),
            "momentum": {p: array_namespace(m).asarray(m, copy=True) for p, m in zip(paths, ms)},
            "hyperparams": {
                "lr": self.lr,
                "betas": tuple(self.betas),
                "weight_decay": self.weight_decay,
                "nan_policy": self.nan_policy,
                "kappa": _check.kappa_to_spec(self.kappa),
            },
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`. Everything is validated before anything is written: a
        mismatched dict raises (naming the key or leaf path) and leaves the optimizer as it was.

        * ``momentum`` keyed by path (this version's format): every path of the params must be
          there, and no other; each array must have the param's momentum shape and dtype.
        * ``momentum`` as a list (lionk 0.1's positional format): loaded in leaf order when that
          order is unambiguous. lionk 0.1 flattened an ``OrderedDict`` sorted without JAX and in
          insertion order with JAX; when the tree holds one whose insertion order is not sorted,
          the list loads only if exactly one of the two orders fits every shape and dtype, and is
          refused otherwise.
        * ``hyperparams`` (optional): ``lr``, ``betas`` and ``weight_decay`` are required and
          validated as in the constructor; ``nan_policy`` and ``kappa`` default to the current
          ones when absent (a dict from an older version); keys this version does not know (from
          a newer one) are ignored. ``kappa`` is a ``{"name", "params"}`` spec or a registered
          name.
        * ``count`` (required) and ``skipped`` (default 0): ints >= 0.

        A ``lionk.torch.LionK`` (torch.optim) state dict is refused with a ValueError that says
        so: the two classes keep different state.
        """
        writes, updates, count, skipped = self._check_state_dict(state_dict)
        for cur, src in writes:
            write_inplace(cur, src)
        for k, v in updates.items():
            setattr(self, k, v)
        self._state = State(count, self._state.momentum, skipped)

    def _check_state_dict(self, sd: Any) -> tuple[list[tuple[Any, Any]], dict[str, Any], int, int]:
        """Validate ``sd`` against this optimizer; return (momentum writes, attribute updates,
        count, skipped). Raises, never writes."""
        if not isinstance(sd, Mapping):
            raise TypeError(f"state_dict: expected a dict; received {type(sd).__name__}")
        fmt = sd.get("format", self.STATE_DICT_FORMAT)
        if ("param_groups" in sd or "state" in sd) and "momentum" not in sd:
            raise ValueError(
                "state_dict: expected a lionk.LionK state dict (keys 'count', 'momentum', "
                "'hyperparams'); received a torch.optim state dict (keys 'state' and "
                "'param_groups', e.g. from lionk.torch.LionK.state_dict()): load it with "
                "lionk.torch.LionK.load_state_dict; the two classes keep different state"
            )
        if fmt != self.STATE_DICT_FORMAT:
            raise ValueError(
                f"state_dict['format']: expected {self.STATE_DICT_FORMAT!r}; received {fmt!r}"
            )
        if "version" in sd:
            _check.counter("state_dict['version']", sd["version"], minimum=1)
        missing = [k for k in ("count", "momentum") if k not in sd]
        if missing:
            raise KeyError(f"state_dict: missing keys {missing}; received keys {sorted(map(str, sd))}")
        count = _check.counter("state_dict['count']", sd["count"])
        skipped = _check.counter("state_dict['skipped']", sd.get("skipped", 0))
        ms, _, paths = flatten(self._state.momentum)
        new = sd["momentum"]
        if isinstance(new, Mapping):
            srcs, labels = self._by_path(new, paths)
        elif isinstance(new, (list, tuple)):
            srcs, labels = self._by_position(new, ms, paths)
        else:
            raise TypeError(
                "state_dict['momentum']: expected a dict {leaf path: array} (or lionk 0.1's list "
                f"in leaf order); received {type(new).__name__}"
            )
        for cur, src, label, p in zip(ms, srcs, labels, paths):
            if not is_array(src):
                raise TypeError(f"{label} (momentum{p}): expected an array; received {type(src).__name__}")
            if tuple(src.shape) != tuple(cur.shape):
                raise ValueError(
                    f"{label} (momentum{p}): expected shape {tuple(cur.shape)}; "
                    f"received {tuple(src.shape)}"
                )
            if not is_concrete(src):
                raise TypeError(f"{label}: expected a concrete array; received a traced one")
            if src.dtype != cur.dtype:
                raise TypeError(
                    f"{label} (momentum{p}): expected dtype {dtype_name(cur.dtype)}; "
                    f"received {dtype_name(src.dtype)}"
                )
        updates = self._check_hyperparams(sd.get("hyperparams"))
        return list(zip(ms, srcs)), updates, count, skipped

    @staticmethod
    def _by_path(new: Mapping[Any, Any], paths: list[str]) -> tuple[list[Any], list[str]]:
        known = set(paths)
        for k in new:
            if k not in known:
                shown = ", ".join(repr(p) for p in paths[:8]) + (", ..." if len(paths) > 8 else "")
                raise ValueError(
                    f"state_dict['momentum'][{k!r}]: no param has this path; expected the "
                    f"paths of this optimizer's params ({shown})"
                )
        for p in paths:
            if p not in new:
                raise ValueError(
                    f"state_dict['momentum']: missing the momentum of params{p} (path {p!r}); "
                    "the state dict was saved for other params"
                )
        return [new[p] for p in paths], [f"state_dict['momentum'][{p!r}]" for p in paths]

    def _by_position(self, new: Any, ms: list[Any], paths: list[str]) -> tuple[list[Any], list[str]]:
        """lionk 0.1's list: the current leaf order, or the order 0.1 used without JAX (sorted
        ``OrderedDict`` keys) when only that one fits."""
        if len(new) != len(ms):
            raise ValueError(
                f"state_dict['momentum']: expected {len(ms)} arrays (one per param leaf); "
                f"received {len(new)}"
            )
        identity = list(range(len(ms)))
        legacy = _sorted_order(self._state.momentum, paths)
        order = identity
        if legacy is not None and legacy != identity:
            def fits(perm: list[int]) -> bool:
                return all(
                    tuple(getattr(new[perm[j]], "shape", ())) == tuple(m.shape)
                    and getattr(new[perm[j]], "dtype", None) == m.dtype
                    for j, m in enumerate(ms)
                )

            fit = [perm for perm in (identity, legacy) if fits(perm)]
            if len(fit) == 2:
                raise ValueError(
                    "state_dict['momentum']: a list by position (lionk 0.1's format) is ambiguous "
                    "for these params: they hold an OrderedDict whose keys are not in sorted "
                    "order, which lionk 0.1 flattened sorted without JAX and in insertion order "
                    "with JAX, and both orders fit every shape and dtype. Load it in the process "
                    "layout it was saved from and save again (momenta are then keyed by path), "
                    "or pass {path: array} with the paths of lionk.tree.leaf_paths(params)"
                )
            if len(fit) == 1:
                order = fit[0]
        return [new[i] for i in order], [f"state_dict['momentum'][{i}]" for i in order]

    def _check_hyperparams(self, hp: Any) -> dict[str, Any]:
        """The attribute updates a saved ``hyperparams`` asks for (validated; nothing set)."""
        if hp is None:
            return {}
        w = "state_dict['hyperparams']"
        if not isinstance(hp, Mapping):
            raise TypeError(
                f"{w}: expected a dict (lr, betas, weight_decay, nan_policy, kappa); "
                f"received {type(hp).__name__}"
            )
        missing = [k for k in ("lr", "betas", "weight_decay") if k not in hp]
        if missing:
            raise KeyError(f"{w}: missing keys {missing}; received keys {sorted(map(str, hp))}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", LionKWarning)
                make_hyper(hp["lr"], hp["betas"], hp["weight_decay"])
        except (TypeError, ValueError) as exc:
            msg = exc.args[0] if exc.args else str(exc)
            raise type(exc)(f"{w}: {msg}") from None
        kappa = _check.kappa_from_spec(hp.get("kappa", self.kappa), name=f"{w}['kappa']",
                                       current=self.kappa)
        nan_policy = _check.nan_policy(hp.get("nan_policy", self.nan_policy),
                                       name=f"{w}['nan_policy']")
        return dict(lr=hp["lr"], betas=tuple(hp["betas"]), weight_decay=hp["weight_decay"],
                    nan_policy=nan_policy, kappa=kappa)

    def __repr__(self) -> str:
        return (
            f"LionK(lr={self.lr!r}, betas={self.betas!r}, weight_decay={self.weight_decay!r}, "
            f"kappa={self.kappa!r}, count={self._state.count})"
        )


def _unordered(tree: Any) -> Any:
    """``tree`` with every ``OrderedDict`` made a plain ``dict`` (flattened sorted): the leaf
    order lionk 0.1 used for it without JAX."""
    if isinstance(tree, Mapping):
        return {k: _unordered(v) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(_unordered(v) for v in tree))
    if type(tree) in (list, tuple):
        return type(tree)(_unordered(v) for v in tree)
    return tree


def _sorted_order(momentum: Any, paths: list[str]) -> list[int] | None:
    """For each leaf (today's order), its position in lionk 0.1's no-JAX leaf order; None when
    the tree holds no ``OrderedDict`` (the orders agree) or cannot be re-sorted."""
    if not _has_ordered_dict(momentum):
        return None
    try:
        _, _, legacy = flatten(_unordered(momentum))
    except Exception:  # a container that cannot be rebuilt: no second order to consider
        return None
    position = {p: i for i, p in enumerate(legacy)}
    if len(legacy) != len(paths) or any(p not in position for p in paths):
        return None
    return [position[p] for p in paths]


def _has_ordered_dict(tree: Any) -> bool:
    if isinstance(tree, OrderedDict):
        return True
    if isinstance(tree, Mapping):
        return any(_has_ordered_dict(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return any(_has_ordered_dict(v) for v in tree)
    return False
