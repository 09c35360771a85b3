"""Runs the benchmark: build every contender per size, warm up (compiles included), then time
them in interleaved rounds (round-robin, the starting contender rotating each round) and take
medians. The floor is measured in the same rounds as everything else."""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# JAX must not grab most of the GPU before torch/cupy allocate (harmless on CPU).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from . import contenders as C  # noqa: E402
from .workloads import Workload, split_sizes  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_SIZES = {"cpu": "6,10,16,20,24,model,digits,minimize", "cuda": "20,24,26,28,model"}
QUICK_SIZES = {"cpu": "6,16,20,model:1,minimize", "cuda": "20,24,model:1"}
# the minimize section: iterations per lionk.minimize call and rounds (full run; --quick)
MINIMIZE_ITERS = {False: 300, True: 40}
MINIMIZE_ROUNDS = {False: 7, True: 3}


@dataclass
class Settings:
    sizes: list[Workload]
    device: str = "cpu"
    out: Path = HERE
    quick: bool = False
    budget_s: float = 10.0  # timed rounds, per size
    min_rounds: int = 5
    max_rounds: int = 41
    min_sample_s: float = 4e-3  # one sample runs k steps, at least this long
    warmup: int = 3
    rounds: int | None = None  # fixed number of rounds (overrides the budget)
    only: str | None = None
    skip: str | None = None
    strict: bool = False
    plot: bool = True
    sections: list[str] = field(default_factory=list)  # "minimize"
    every_size: bool = False  # time the opt-in / small-only contenders at every size too
    minimize_iters: int = MINIMIZE_ITERS[False]
    minimize_rounds: int = MINIMIZE_ROUNDS[False]


# pause before a sample whose library differs from the previous sample's: long enough for
# libgomp's default spin-wait (GOMP_SPINCOUNT 300,000 pauses, a few ms) to end
SETTLE_S = 0.02


@dataclass
class Row:
    """One contender on one size."""

    name: str
    backend: str
    role: str
    size: str
    n: int
    leaves: int
    status: str = "ok"  # ok | skipped
    reason: str = ""
    note: str = ""
    samples_s: list[float] = field(default_factory=list)
    k: int = 1
    build_s: float = 0.0
    t_est_s: float = 0.0  # one step, measured while calibrating k
    mem_bytes: int | None = None
    mem_method: str = ""
    moved_bytes: int | None = None
    floor_kind: str = ""

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.samples_s) if self.samples_s else None

    @property
    def iqr_s(self) -> float | None:
        if len(self.samples_s) < 4:
            return None
        q = statistics.quantiles(self.samples_s, n=4)
        return q[2] - q[0]


def log(msg: str) -> None:
    print(msg, flush=True)


def _short_reason(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(msg) > 200:
        msg = msg[:197] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _available(backend: str, device: str) -> str | None:
    """None if the backend can run on ``device`` here, else the reason it cannot."""
    try:
        if backend == "torch":
            import torch

            if device == "cuda" and not torch.cuda.is_available():
                return "torch has no CUDA device here"
        elif backend == "jax":
            import jax

            if device == "cuda":
                try:
                    jax.devices("gpu")
                except RuntimeError:
                    return "jax has no GPU backend here"
        elif backend == "cupy":
            import cupy  # noqa: F401
        elif backend == "numpy":
            import numpy  # noqa: F401
    except ImportError as exc:
        return f"{backend} not installed ({exc})"
    return None


def select(settings: Settings, w: Workload | None = None) -> list[C.Contender]:
    """The contenders of this run (``--only``), those in scope on ``w`` when given."""
    out = []
    for c in C.all_contenders(settings.device):
        if settings.only and not re.search(settings.only, c.name) and c.role != "floor":
            continue
        if w is not None and not C.in_scope(c, w, settings.every_size):
            continue
        out.append(c)
    return out


def _skip_by_flag(c: C.Contender, settings: Settings) -> str | None:
    if settings.skip and c.role != "floor":
        if re.search(settings.skip, c.name) or (c.compiles and re.search(settings.skip, "compile")):
            return f"skipped by --skip {settings.skip!r}"
    return None


def _cpu_snapshot() -> tuple[float, float, float, float] | None:
    """(busy seconds of all CPUs, wall-clock seconds, this process's CPU seconds, ncpu)."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()[1:]
        vals = [int(v) for v in parts]
        hz = os.sysconf("SC_CLK_TCK")
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        t = os.times()
        return ((sum(vals[:8]) - idle) / hz, time.monotonic(), t.user + t.system,
                float(os.cpu_count() or 1))
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return None


def other_load(before: tuple | None, after: tuple | None) -> float | None:
    """Average number of CPUs other processes kept busy between two snapshots."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    wall = after[1] - before[1]
    return max(0.0, ((after[0] - before[0]) - (after[2] - before[2])) / wall)


def _time_once(runner: C.Runner, k: int) -> float:
    t0 = time.perf_counter()
    for _ in range(k):
        runner.step()
    runner.sync()
    return (time.perf_counter() - t0) / k


def run_size(w: Workload, settings: Settings, ctx: C.Context) -> tuple[list[Row], float | None]:
    log(f"\n== {w.describe()}: {w.param_bytes / 2**20:.1f} MiB of params ==")
    C.fresh_compile_caches()
    alias_of, alias_note = C.default_is_alias()
    chosen = select(settings, w)
    if alias_of is not None and alias_of not in {c.name for c in chosen}:
        alias_of = None  # the explicit row is not timed at this size: time the default itself
    rows: list[Row] = []
    live: list[tuple[Row, C.Runner]] = []
    for c in chosen:
        row = Row(c.name, c.backend, c.role, w.label, w.n, w.leaves, floor_kind=c.floor_kind)
        rows.append(row)
        reason = _skip_by_flag(c, settings) or _available(c.backend, settings.device)
        if reason is None and c.name == "lionk.torch.LionK default" and alias_of is not None:
            reason = f"same path as {alias_of!r} ({alias_note})"
        if reason is not None:
            row.status, row.reason = "skipped", reason
            log(f"  - {c.name:34s} skipped: {reason}")
            continue
        t0 = time.perf_counter()
        try:
            runner = c.build(ctx, w)
            for _ in range(settings.warmup):  # the first step compiles where there is a compiler
                runner.step()
            runner.sync()
            # calibrate: k steps per sample so that a sample lasts at least min_sample_s
            t_est = _time_once(runner, 1)
            if t_est < settings.min_sample_s / 4:
                t_est = _time_once(runner, max(1, int(settings.min_sample_s / 4 / max(t_est, 1e-7))))
            row.k = max(1, min(10_000, math.ceil(settings.min_sample_s / max(t_est, 1e-9))))
            row.t_est_s = t_est
        except Exception as exc:  # noqa: BLE001 - a contender that cannot run is reported
            if settings.strict:
                raise
            row.status, row.reason = "skipped", _short_reason(exc)
            log(f"  - {c.name:34s} skipped: {row.reason}")
            if os.environ.get("LIONK_BENCH_DEBUG"):
                traceback.print_exc()
            continue
        row.build_s = time.perf_counter() - t0
        row.moved_bytes = runner.moved_bytes
        live.append((row, runner))
        log(f"  + {c.name:34s} ready in {row.build_s:5.1f} s (~{t_est * 1e3:.3f} ms/step, k={row.k})")

    snap = _cpu_snapshot()
    if live:
        per_round = sum(r.k * max(1e-6, r.t_est_s) for r, _ in live)
        rounds = int(settings.budget_s / max(per_round, 1e-6))
        rounds = max(settings.min_rounds, min(settings.max_rounds, rounds))
        # very slow rounds (a loaded machine, slow eager paths): at most ~2.5x the budget,
        # never fewer than 3 rounds
        rounds = min(rounds, max(3, int(2.5 * settings.budget_s / max(per_round, 1e-6))))
        if settings.rounds:
            rounds = settings.rounds
        log(f"  timing: {rounds} interleaved rounds of {len(live)} contenders "
            f"(~{per_round * 1e3:.0f} ms per round)")
        gc.collect()
        gc.disable()
        try:
            previous = None
            for i in range(rounds):
                order = live[i % len(live):] + live[: i % len(live)]
                for row, runner in order:
                    if row.status != "ok":
                        continue
                    if previous is not None and row.backend != previous:
                        # another library's idle workers (torch's OpenMP threads spin-wait
                        # after each parallel region) must not share the CPUs with this sample
                        time.sleep(SETTLE_S)
                    previous = row.backend
                    try:
                        row.samples_s.append(_time_once(runner, row.k))
                    except Exception as exc:  # noqa: BLE001 - failed mid-run: report it
                        if settings.strict:
                            raise
                        row.status, row.reason = "skipped", f"failed while timed: {_short_reason(exc)}"
                        row.samples_s.clear()
        finally:
            gc.enable()
        for row, runner in live:
            if row.status != "ok":
                continue
            if runner.memory is not None:
                try:
                    row.mem_bytes, row.mem_method = runner.memory()
                except Exception as exc:  # noqa: BLE001
                    row.mem_bytes, row.mem_method = None, f"n/a ({_short_reason(exc)})"
            elif row.role != "floor":
                row.mem_method = "n/a (not measured)"
            try:
                row.note = runner.note() if callable(runner.note) else runner.note
            except Exception:  # noqa: BLE001
                row.note = ""
    load = other_load(snap, _cpu_snapshot())
    if load is not None:
        log(f"  other processes kept {load:.2f} CPUs busy on average while this size was timed")
    live.clear()
    gc.collect()
    if settings.device == "cuda":  # hand the cached blocks back before the next size
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows, load


def _git_describe() -> str:
    try:
        root = HERE.parent
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "lionk"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{rev}{' + uncommitted changes in lionk/' if dirty else ''}" if rev else "unknown"
    except Exception:  # noqa: BLE001
        return "unknown"


def machine_info(settings: Settings) -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        info["cores"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        info["cores"] = os.cpu_count()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        info["cpu"] = names[0] if names else platform.processor()
    except OSError:  # pragma: no cover
        info["cpu"] = platform.processor()
    versions = {}
    for mod in ("lionk", "numpy", "torch", "jax", "jaxlib", "optax", "lion_pytorch", "cupy"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", "installed")
        except ImportError:
            versions[mod] = "not installed"
    if versions.get("lion_pytorch") == "installed":
        try:
            from importlib.metadata import version

            versions["lion_pytorch"] = version("lion-pytorch")
        except Exception:  # noqa: BLE001
            pass
    info["versions"] = versions
    info["lionk_commit"] = _git_describe()
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if settings.device == "cuda" and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    info["device"] = settings.device
    try:
        info["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        pass
    return info


def parse_args(argv: list[str] | None) -> Settings:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="short run (<1 min): smaller sizes, fewer rounds")
    p.add_argument("--sizes", help="comma-separated: exponents (16 = one tensor of 2^16 float32), "
                   "'model' (220 tensors of 64 to 2^20 elements, 10.7M params), 'model:B' (B "
                   "transformer blocks), 'digits' (the 6-tensor digits MLP) and 'minimize' (the "
                   "lionk.minimize overhead section). "
                   f"Default cpu: {DEFAULT_SIZES['cpu']}; cuda: {DEFAULT_SIZES['cuda']}; "
                   f"--quick: {QUICK_SIZES['cpu']}")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: torch, jax and cupy on the GPU (floor from a device copy)")
    p.add_argument("--out", type=Path, default=HERE, help="output folder (default: benchmarks/)")
    p.add_argument("--budget", type=float, help="seconds of timed rounds per size")
    p.add_argument("--rounds", type=int, help="fixed number of interleaved rounds per size")
    p.add_argument("--only", help="regex: run only contenders whose name matches (floors always run)")
    p.add_argument("--skip", help="regex: skip contenders whose name matches ('compile' also "
                   "matches every torch.compile contender)")
    p.add_argument("--strict", action="store_true", help="raise instead of skipping a contender "
                   "that fails (debugging)")
    p.add_argument("--no-plot", action="store_true", help="do not write results.png")
    p.add_argument("--every-size", action="store_true", help="time every contender at every "
                   "size (by default the opt-in rows run at 2^16 and above and on the models, "
                   "the NumPy functional rows up to 2^16)")
    p.add_argument("--minimize-iters", type=int, help="iterations of each lionk.minimize call in "
                   f"the minimize section (default {MINIMIZE_ITERS[False]}; --quick "
                   f"{MINIMIZE_ITERS[True]})")
    a = p.parse_args(argv)
    try:
        sizes, sections = split_sizes(a.sizes or (QUICK_SIZES if a.quick else DEFAULT_SIZES)[a.device])
    except ValueError as exc:
        p.error(str(exc))
    if "minimize" in sections and a.device != "cpu":
        p.error("--sizes minimize: the minimize section runs on the CPU (--device cpu)")
    s = Settings(sizes=sizes, device=a.device, out=a.out, quick=a.quick, only=a.only, skip=a.skip,
                 strict=a.strict, plot=not a.no_plot, sections=sections,
                 every_size=a.every_size, minimize_iters=MINIMIZE_ITERS[a.quick],
                 minimize_rounds=MINIMIZE_ROUNDS[a.quick])
    if a.minimize_iters is not None:
        if a.minimize_iters < 1:
            p.error("--minimize-iters: expected >= 1")
        s.minimize_iters = a.minimize_iters
    if a.quick:
        s.budget_s, s.min_rounds, s.max_rounds, s.min_sample_s, s.warmup = 0.6, 4, 9, 1e-3, 2
    if a.budget is not None:
        s.budget_s = a.budget
    if a.rounds is not None:
        if a.rounds < 1:
            p.error("--rounds: expected >= 1")
        s.rounds = a.rounds
    return s


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    if settings.device == "cuda":
        reason = _available("torch", "cuda")
        if reason:
            print(f"--device cuda: {reason}", file=sys.stderr)
            return 2
    t_start = time.perf_counter()
    info = machine_info(settings)
    log(f"lionk benchmark: {info['cpu']}, {info['cores']} cores, device={settings.device}, "
        f"lionk {info['versions']['lionk']} ({info['lionk_commit']})")
    ctx = C.Context(device=settings.device)
    rows: list[Row] = []
    info["other_load"] = {}
    info["elapsed_per_size_s"] = {}
    for w in settings.sizes:
        t_size = time.perf_counter()
        size_rows, load = run_size(w, settings, ctx)
        rows += size_rows
        info["other_load"][w.label] = None if load is None else round(load, 2)
        info["elapsed_per_size_s"][w.label] = round(time.perf_counter() - t_size, 1)
        log(f"  ({w.label}: {info['elapsed_per_size_s'][w.label]:.0f} s)")
    minimize_rows = None
    if "minimize" in settings.sections:
        from . import minimize_overhead

        snap, snap_t = _cpu_snapshot(), time.perf_counter()
        minimize_rows = minimize_overhead.run(
            maxiter=settings.minimize_iters,
            rounds=settings.rounds or settings.minimize_rounds, strict=settings.strict,
            settle_s=SETTLE_S, log=log)
        load = other_load(snap, _cpu_snapshot())
        info["other_load"]["minimize"] = None if load is None else round(load, 2)
        info["elapsed_per_size_s"]["minimize"] = round(time.perf_counter() - snap_t, 1)
    info["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    try:
        info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        pass
    info["compile_caches"] = ("torch._dynamo.reset() before each size (every size compiles as "
                              "in a fresh process); recompile limit raised to 64")

    from . import report

    result = report.build_result(rows, settings, info, minimize_rows)
    print()
    print(report.console_table(result))
    paths = report.write_all(result, settings.out, plot=settings.plot)
    log(f"\nwrote {', '.join(str(p) for p in paths)} in {info['elapsed_s']:.0f} s")
    return 0
