"""``lionk.LionK``: the imperative, in-place form of the step for writeable arrays."""

from __future__ import annotations

from typing import Any

from ..core import kappa as _kappa
from ..core.array_api import array_namespace, is_concrete, is_jax_array, is_writeable, write_inplace
from ..core.step import (
    NAN_POLICIES,
    State,
    check_nan_policy,
    gradients_finite,
    init,
    make_hyper,
    prepare,
)
from ..core.trees import flatten
from ..execution.paths import EXECUTIONS, ExecutionRecord, run_inplace

__all__ = ["LionK"]


class LionK:
    """Lion-κ that updates writeable arrays (numpy, torch, cupy, array-api-strict) in place.

    ``opt.step(grads)`` computes the same update as :func:`lionk.step` (the same code) and writes
    the new values into the arrays given at construction and into the momentum arrays. Every leaf
    is validated first: a step that raises leaves params and state exactly as they were.

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
        if execution not in EXECUTIONS:
            raise ValueError(f"execution: expected one of {EXECUTIONS}; received {execution!r}")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size: expected None or an int >= 1; received {chunk_size!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads: expected None or an int >= 1; received {threads!r}")
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
            weight_decay=self.weight_decay, kappa=self.kappa, nan_policy=self.nan_policy,
            stacklevel=2,
        )
        st = self._state
        if prep.xs and self.nan_policy != "propagate":
            if gradients_finite(prep, self.nan_policy) is False:
                self._state = State(st.count, st.momentum, st.skipped + 1)
                return
        # Nothing above wrote anything; from here on, only the step written into validated arrays.
        if prep.xs:
            self._record.requested = self.execution
            self.last_execution = run_inplace(
                prep.xs, prep.gs, prep.ms, prep.hyper, prep.kappa, execution=self.execution,
                chunk_size=self.chunk_size, threads=self.threads, record=self._record,
            )
        self._state = State(st.count + 1, st.momentum, st.skipped)

    def execution_report(self) -> dict[str, Any]:
        """How this optimizer's steps run: ``requested`` (the ``execution`` option), ``path``
        (what the last step ran: ``"eager"``, ``"chunked"``, ``"compiled"``; None before the
        first step), ``detail`` (what ran it: ``"numba kernel"``, ``"recorded program"``,
        ``"torch.compile"``, ...), ``fallbacks`` (each distinct reason a step ran another path
        than the one chosen first, e.g. numba not installed or a dtype without a kernel) and
        ``steps`` (steps that ran a path)."""
        return self._record.as_dict()

    # --- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A snapshot: ``count``, ``skipped``, ``momentum`` (copies, a list in leaf order) and
        ``hyperparams`` (lr, betas, weight_decay, nan_policy, kappa name and parameters)."""
        ms, _, _ = flatten(self._state.momentum)
        return {
            "count": int(self._state.count),
            "skipped": int(self._state.skipped),
            "momentum": [array_namespace(m).asarray(m, copy=True) for m in ms],
            "hyperparams": {
                "lr": self.lr,
                "betas": tuple(self.betas),
                "weight_decay": self.weight_decay,
                "nan_policy": self.nan_policy,
                "kappa": {"name": self.kappa.name, "params": dict(self.kappa.params)},
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`. Everything is validated before anything is written:
        a mismatched dict (wrong keys, number of arrays, shapes or dtypes) raises and leaves the
        optimizer as it was."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict: expected a dict; received {type(state_dict).__name__}")
        missing = {"count", "momentum"} - set(state_dict)
        if missing:
            raise KeyError(f"state_dict: missing keys {sorted(missing)}")
        ms, _, paths = flatten(self._state.momentum)
        new = state_dict["momentum"]
        if not isinstance(new, (list, tuple)) or len(new) != len(ms):
            n = len(new) if isinstance(new, (list, tuple)) else type(new).__name__
            raise ValueError(f"state_dict['momentum']: expected a list of {len(ms)} arrays; received {n}")
        for i, (cur, src, p) in enumerate(zip(ms, new, paths)):
            if tuple(getattr(src, "shape", ())) != tuple(cur.shape):
                raise ValueError(
                    f"state_dict['momentum'][{i}] (momentum{p}): expected shape {tuple(cur.shape)}; "
                    f"received {tuple(getattr(src, 'shape', ()))}"
                )
            if not is_concrete(src):
                raise TypeError(
                    f"state_dict['momentum'][{i}]: expected a concrete array; received a traced one"
                )
            if getattr(src, "dtype", None) != cur.dtype:
                raise TypeError(
                    f"state_dict['momentum'][{i}] (momentum{p}): expected dtype {cur.dtype}; "
                    f"received {getattr(src, 'dtype', None)}"
                )
        count = state_dict["count"]
        skipped = state_dict.get("skipped", 0)
        for nm, v in (("count", count), ("skipped", skipped)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"state_dict[{nm!r}]: expected an int >= 0; received {v!r}")
        hp = state_dict.get("hyperparams")
        updates: dict[str, Any] = {}
        if hp is not None:
            make_hyper(hp["lr"], hp["betas"], hp["weight_decay"])
            kap = hp.get("kappa")
            kappa = self.kappa
            if kap is not None and (kap["name"], dict(kap["params"])) != (
                self.kappa.name, dict(self.kappa.params)
            ):
                kappa = _kappa.get(kap["name"], **kap["params"])
            if hp.get("nan_policy", self.nan_policy) not in NAN_POLICIES:
                raise ValueError(
                    f"state_dict['hyperparams']['nan_policy']: expected one of {NAN_POLICIES}; "
                    f"received {hp['nan_policy']!r}"
                )
            updates = dict(lr=hp["lr"], betas=tuple(hp["betas"]), weight_decay=hp["weight_decay"],
                           nan_policy=hp.get("nan_policy", self.nan_policy), kappa=kappa)
        for cur, src in zip(ms, new):
            write_inplace(cur, src)
        for k, v in updates.items():
            setattr(self, k, v)
        self._state = State(count, self._state.momentum, skipped)

    def __repr__(self) -> str:
        return (
            f"LionK(lr={self.lr!r}, betas={self.betas!r}, weight_decay={self.weight_decay!r}, "
            f"kappa={self.kappa!r}, count={self._state.count})"
        )
