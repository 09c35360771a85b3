"""The ``minimize`` section: the per-iteration overhead of :func:`lionk.minimize`.

A 40-variable problem — logistic regression on a fixed random design of 400 samples, float32 —
with the ``value_and_grad`` a user writes in each library:

* NumPy: by hand (``A @ x``, ``logaddexp``, ``A.T @ (σ(z) − y) / n``);
* torch: the loss in torch, its gradient by ``torch.autograd.grad``;
* JAX: ``jax.jit(jax.value_and_grad(loss))``.

Timed, interleaved in rounds (the library rotating, as the step benchmark does): the user's
``value_and_grad`` alone, per call (k calls per sample; JAX's outputs waited for with
``jax.block_until_ready``), and ``lionk.minimize(vg, x0, jac=True, radius=1, maxiter=M,
tol=0)`` per iteration (the whole call's time / its ``nit``; ``tol=0`` disables every early
stop, so ``nit == M``). The default learning rate is kept: the few evaluations it makes to
choose lr_0 are part of what minimize costs (``nfev`` is reported). The overhead is
``minimize_per_iter / vg_per_call − 1``: what minimize adds to the evaluations a hand-written
loop would make anyway (the step, the diagnostics, the stopping rules).
"""

from __future__ import annotations

import gc
import math
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

N_VARS = 40
N_SAMPLES = 400
RADIUS = 1.0
LIBRARIES = ("numpy", "torch", "jax")
TARGET_OVERHEAD = 0.20


@dataclass
class Case:
    """One library's problem: the user's value_and_grad, the starting point, a sync."""

    library: str
    vg: Callable[[Any], tuple[Any, Any]]
    x0: Any
    sync: Callable[[Any], None] = lambda out: None
    note: str = ""


@dataclass
class MinimizeRow:
    library: str
    status: str = "ok"  # ok | skipped
    reason: str = ""
    note: str = ""
    maxiter: int = 0
    nit: int | None = None
    nfev: int | None = None
    k_vg: int = 1
    vg_samples_s: list[float] = field(default_factory=list)  # per call
    min_samples_s: list[float] = field(default_factory=list)  # per iteration
    message: str = ""

    @property
    def vg_s(self) -> float | None:
        return statistics.median(self.vg_samples_s) if self.vg_samples_s else None

    @property
    def per_iter_s(self) -> float | None:
        return statistics.median(self.min_samples_s) if self.min_samples_s else None

    @property
    def overhead(self) -> float | None:
        if self.vg_s and self.per_iter_s:
            return self.per_iter_s / self.vg_s - 1.0
        return None


def problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The fixed design A (N_SAMPLES × N_VARS, float32) and 0/1 labels y (float32)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((N_SAMPLES, N_VARS), dtype=np.float32)
    w = rng.standard_normal(N_VARS, dtype=np.float32) * np.float32(0.5)
    noise = rng.standard_normal(N_SAMPLES, dtype=np.float32)
    y = ((a @ w + noise) > 0).astype(np.float32)
    return a, y


def numpy_case(a: np.ndarray, y: np.ndarray) -> Case:
    inv_n = np.float32(1.0 / a.shape[0])

    def vg(x: np.ndarray) -> tuple[Any, np.ndarray]:
        z = a @ x
        f = np.mean(np.logaddexp(np.float32(0.0), z) - y * z)
        s = np.float32(1.0) / (np.float32(1.0) + np.exp(-z))
        return f, (a.T @ (s - y)) * inv_n

    return Case("numpy", vg, np.zeros(N_VARS, dtype=np.float32), note="value_and_grad by hand")


def torch_case(a: np.ndarray, y: np.ndarray) -> Case:
    import torch

    at, yt = torch.from_numpy(a.copy()), torch.from_numpy(y.copy())

    def loss(x: Any) -> Any:
        z = at @ x
        return (torch.nn.functional.softplus(z) - yt * z).mean()

    def vg(x: Any) -> tuple[Any, Any]:
        x = x.detach().requires_grad_(True)
        f = loss(x)
        (g,) = torch.autograd.grad(f, x)
        return f.detach(), g

    return Case("torch", vg, torch.zeros(N_VARS, dtype=torch.float32),
                note=f"loss in torch, torch.autograd.grad; {torch.get_num_threads()} threads")


def jax_case(a: np.ndarray, y: np.ndarray) -> Case:
    import jax
    import jax.numpy as jnp

    aj, yj = jnp.asarray(a), jnp.asarray(y)

    def loss(x: Any) -> Any:
        z = aj @ x
        return jnp.mean(jax.nn.softplus(z) - yj * z)

    vg = jax.jit(jax.value_and_grad(loss))
    return Case("jax", vg, jnp.zeros(N_VARS, dtype=jnp.float32), sync=jax.block_until_ready,
                note="jax.jit(jax.value_and_grad(loss))")


CASES = {"numpy": numpy_case, "torch": torch_case, "jax": jax_case}


def _run_minimize(case: Case, maxiter: int) -> tuple[float, Any]:
    import lionk

    t0 = time.perf_counter()
    res = lionk.minimize(case.vg, case.x0, jac=True, radius=RADIUS, maxiter=maxiter, tol=0.0)
    case.sync(res.x)
    return time.perf_counter() - t0, res


def _time_vg(case: Case, k: int) -> float:
    x = case.x0
    t0 = time.perf_counter()
    for _ in range(k):
        case.sync(case.vg(x))
    return (time.perf_counter() - t0) / k


def run(*, maxiter: int = 300, rounds: int = 7, min_sample_s: float = 0.02,
        libraries: tuple[str, ...] = LIBRARIES, strict: bool = False, settle_s: float = 0.02,
        log: Callable[[str], None] = print) -> list[MinimizeRow]:
    """Times each library's value_and_grad and lionk.minimize, interleaved; see the module."""
    log(f"\n== minimize: {N_VARS} variables (logistic regression, {N_SAMPLES} samples, float32), "
        f"maxiter={maxiter}, tol=0 ==")
    a, y = problem()
    rows: list[MinimizeRow] = []
    live: list[tuple[MinimizeRow, Case]] = []
    for lib in libraries:
        row = MinimizeRow(lib, maxiter=maxiter)
        rows.append(row)
        try:
            case = CASES[lib](a, y)
            row.note = case.note
            # warm-up: compiles (jax.jit of the user's function, of lionk's step and
            # diagnostics), first-call caches; then calibrate k calls of vg per sample
            _time_vg(case, 3)
            _, res = _run_minimize(case, min(maxiter, 20))
            t1 = _time_vg(case, 5)
            row.k_vg = max(1, min(100_000, math.ceil(min_sample_s / max(t1, 1e-7))))
        except Exception as exc:  # noqa: BLE001 - a library that cannot run is reported
            if strict:
                raise
            msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            row.status, row.reason = "skipped", f"{type(exc).__name__}: {msg}"
            log(f"  - {lib:6s} skipped: {row.reason}")
            continue
        live.append((row, case))
        log(f"  + {lib:6s} ready (value_and_grad ~{t1 * 1e6:.1f} µs/call, k={row.k_vg})")
    gc.collect()
    gc.disable()
    try:
        previous = None
        for i in range(rounds):
            order = live[i % len(live):] + live[: i % len(live)] if live else []
            for row, case in order:
                if row.status != "ok":
                    continue
                if previous is not None and previous != row.library:
                    time.sleep(settle_s)  # other libraries' spinning worker threads
                previous = row.library
                try:
                    # alternate which of the two goes first
                    if i % 2:
                        row.vg_samples_s.append(_time_vg(case, row.k_vg))
                    t, res = _run_minimize(case, maxiter)
                    row.min_samples_s.append(t / max(1, res.nit))
                    if not i % 2:
                        row.vg_samples_s.append(_time_vg(case, row.k_vg))
                    row.nit, row.nfev = int(res.nit), int(res.nfev)
                    row.message = str(res.message)[:160]
                except Exception as exc:  # noqa: BLE001
                    if strict:
                        raise
                    row.status = "skipped"
                    row.reason = f"failed while timed: {type(exc).__name__}: {exc}"[:240]
                    row.vg_samples_s.clear()
                    row.min_samples_s.clear()
    except Exception:  # pragma: no cover - debugging aid
        traceback.print_exc()
        raise
    finally:
        gc.enable()
    for row in rows:
        if row.status == "ok" and row.overhead is not None:
            log(f"  {row.library:6s} value_and_grad {row.vg_s * 1e6:9.1f} µs/call   minimize "
                f"{row.per_iter_s * 1e6:9.1f} µs/iteration   overhead {100 * row.overhead:+.0f}% "
                f"(nit {row.nit}, nfev {row.nfev})")
    return rows


def as_dicts(rows: list[MinimizeRow]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        out.append(dict(library=r.library, status=r.status, reason=r.reason, note=r.note,
                        maxiter=r.maxiter, nit=r.nit, nfev=r.nfev, k_vg=r.k_vg,
                        vg_samples_s=r.vg_samples_s, min_samples_s=r.min_samples_s,
                        vg_s=r.vg_s, per_iter_s=r.per_iter_s, overhead=r.overhead,
                        message=r.message))
    return out
