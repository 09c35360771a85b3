"""Turns the timed rows into ratios, peer speed-ups and target verdicts; writes results.md,
results.json and results.png. Every verdict is computed from the rows of this run."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .contenders import SCOPES, human_bytes

# Peers each lionk row is compared with, by backend: (peer row name, short label).
PEERS = {
    "torch": [("lion_pytorch.Lion default", "lion_pytorch"),
              ("lion_pytorch foreach.Lion", "lion_pytorch foreach"),
              ("torch AdamW default", "AdamW default"), ("torch AdamW fused", "AdamW fused"),
              ("torch hand Lion compiled", "hand compiled")],
    "jax": [("optax.lion jit", "optax.lion"), ("jax hand Lion jit", "hand jit")],
    "numpy": [("numpy naive Lion", "naive numpy"), ("numpy hand Lion functional", "hand functional")],
    "cupy": [("cupy naive Lion", "naive cupy"), ("cupy hand Lion functional", "hand functional")],
}

#: The sizes every front-end's default is timed at (issue 12): one tensor of 2^6 … 2^24
#: elements, the many-small-tensors transformer and the digits MLP.
DEFAULT_SIZES = ("2^6", "2^10", "2^16", "2^20", "2^24", "model", "digits")
MODEL_TEXT = "model (220 tensors)"


def _size_text(size: str) -> str:
    return MODEL_TEXT if size == "model" else size


def _default_targets() -> list[dict[str, Any]]:
    """The targets on each front-end's default (no options), at every size of DEFAULT_SIZES."""
    out: list[dict[str, Any]] = []
    for sz in DEFAULT_SIZES:
        st = _size_text(sz)
        out.append(dict(id=f"torch-default-vs-lion_pytorch-{sz}", size=sz, kind="speedup",
                        pick="torch-default", backend="torch", peer="lion_pytorch.Lion default",
                        min=1.0, text=f"{st}: lionk.torch.LionK default no slower than "
                        "lion_pytorch.Lion default"))
    out.append(dict(id="torch-default-vs-foreach-model", size="model", kind="speedup",
                    pick="torch-default", backend="torch", peer="lion_pytorch foreach.Lion",
                    min=1.5, text=f"{MODEL_TEXT}: lionk.torch.LionK default ≥ 1.5× faster than "
                    "lion_pytorch foreach.Lion"))
    for sz in DEFAULT_SIZES:
        out.append(dict(id=f"torch-default-vs-adamw-{sz}", size=sz, kind="speedup",
                        pick="torch-default", backend="torch", peer="torch AdamW default",
                        min=1.0, text=f"{_size_text(sz)}: lionk.torch.LionK default no slower "
                        "than torch.optim.AdamW default"))
    out.append(dict(id="numpy-default-2^24", size="2^24", kind="floor", pick="name",
                    row="lionk.LionK numpy default", backend="numpy", max=1.5,
                    text="2^24: lionk.LionK NumPy default ≤ 1.5× floor"))
    out.append(dict(id="numpy-step-vs-hand-2^6", size="2^6", kind="ratio", pick="name",
                    row="lionk.step numpy", backend="numpy", peer="numpy hand Lion functional",
                    max=2.0, text="2^6 (≤ 1,000 elements): lionk.step (NumPy) ≤ 2× the time of "
                    "a hand-written functional NumPy Lion"))
    for sz in DEFAULT_SIZES:
        st = _size_text(sz)
        out.append(dict(id=f"jax-user-step-{sz}", size=sz, kind="speedup", pick="name",
                        row="lionk.step + jax.jit (user)", backend="jax", peer="optax.lion jit",
                        min=1.0, text=f"{st}: jax.jit(lionk.step) no slower than optax.lion (jit)"))
        out.append(dict(id=f"jax-user-lion_k-{sz}", size=sz, kind="speedup", pick="name",
                        row="lionk.optax.lion_k jit", backend="jax", peer="optax.lion jit",
                        min=1.0, text=f"{st}: lion_k in a jitted step no slower than optax.lion "
                        "(jit)"))
    return out


def _minimize_targets() -> list[dict[str, Any]]:
    from .minimize_overhead import LIBRARIES, N_VARS, TARGET_OVERHEAD

    names = {"numpy": "NumPy", "torch": "torch", "jax": "JAX"}
    return [dict(id=f"minimize-{lib}", size="minimize", kind="overhead", backend=lib,
                 max=TARGET_OVERHEAD, text=f"lionk.minimize ({names[lib]}, {N_VARS} variables): "
                 f"per-iteration overhead over the user's value_and_grad ≤ "
                 f"{100 * TARGET_OVERHEAD:.0f}%") for lib in LIBRARIES]


# The targets. kind: "floor" (ratio to floor <= x), "speedup" (peer / lionk >= x),
# "ratio" (lionk / peer <= x), "memory" (peak extra / param bytes <= x), "overhead" (the
# minimize section: minimize per iteration / value_and_grad per call - 1 <= x).
TARGETS = [
    dict(id="torch-2^24", size="2^24", kind="floor", pick="best", backend="torch", max=1.3,
         text="2^24: lionk torch fast path ≤ 1.3× floor"),
    dict(id="jax-2^24", size="2^24", kind="floor", pick="jit_step", backend="jax", max=1.7,
         text="2^24: lionk JAX (jit_step) ≤ 1.7× floor"),
    dict(id="numpy-2^24", size="2^24", kind="floor", pick="best", backend="numpy", max=2.0,
         text="2^24: lionk NumPy ≤ 2× floor"),
    dict(id="torch-vs-lion_pytorch", size="2^24", kind="speedup", pick="torch-default",
         backend="torch", peer="lion_pytorch.Lion default", min=5.0,
         text="2^24: lionk.torch.LionK default ≥ 5× faster than lion_pytorch.Lion default"),
    dict(id="jax-vs-optax", size="2^24", kind="speedup", pick="jit_step", backend="jax",
         peer="optax.lion jit", min=3.0, text="2^24: lionk.jit_step ≥ 3× faster than optax.lion (jit)"),
    dict(id="torch-model", size="model", kind="floor", pick="best", backend="torch", max=1.6,
         text=f"{MODEL_TEXT}: lionk torch fast path ≤ 1.6× floor"),
    dict(id="jax-model", size="model", kind="floor", pick="jit_step", backend="jax", max=1.8,
         text=f"{MODEL_TEXT}: lionk JAX (jit_step) ≤ 1.8× floor"),
    *_default_targets(),
    *_minimize_targets(),
    dict(id="numpy-numba-2^24", size="2^24", kind="floor", pick="name",
         row="lionk.LionK numpy compiled", backend="numpy", max=1.3,
         text="2^24: lionk NumPy numba kernel (execution='compiled') ≤ 1.3× floor"),
    dict(id="schedule-auto-2^20", size="2^20", kind="speedup", pick="name",
         row="lionk.LionK numpy default, cosine lr", backend="numpy",
         peer="lionk.LionK numpy default", min=1 / 1.1,
         text="2^20: NumPy default with a cosine lr schedule within 10% of a fixed lr"),
    dict(id="schedule-chunked-2^20", size="2^20", kind="speedup", pick="name",
         row="lionk.LionK numpy chunked, cosine lr", backend="numpy",
         peer="lionk.LionK numpy chunked", min=1 / 1.1,
         text="2^20: NumPy chunked with a cosine lr schedule within 10% of a fixed lr"),
    dict(id="mem-numpy-2^24", size="2^24", kind="memory", pick="best", backend="numpy", max=0.02,
         text="2^24: peak extra memory of the lionk NumPy fast path ≤ 2% of param bytes"),
    dict(id="mem-torch-2^24", size="2^24", kind="memory", pick="best", backend="torch", max=0.02,
         text="2^24: peak extra memory of the lionk torch fast path ≤ 2% of param bytes"),
    dict(id="mem-numpy-model", size="model", kind="memory", pick="best", backend="numpy", max=0.02,
         text=f"{MODEL_TEXT}: peak extra memory of the lionk NumPy fast path ≤ 2% of param bytes"),
    dict(id="mem-torch-model", size="model", kind="memory", pick="best", backend="torch", max=0.02,
         text=f"{MODEL_TEXT}: peak extra memory of the lionk torch fast path ≤ 2% of param bytes"),
]


# Why a target is not met, as measured and analysed (issue 12's closing note has the numbers):
# known divergences kept as data, shown beside a target whose status is "not met". Keys are
# target ids or id prefixes (the longest matching key wins).
REASONS: dict[str, str] = {
    "torch-default-vs-lion_pytorch-": (
        "small steps are dominated by lionk.torch.LionK's per-step Python work (validation of "
        "every group option and param, the aliasing test, the execution record, the Ctrl-C "
        "deferral: about 50 µs for one tensor, 6-8 µs per extra param); the update itself is "
        "one numba call (about 2 µs plus 0.5 ns per element); lion_pytorch runs 7 unchecked "
        "torch operations per tensor"),
    "torch-default-vs-adamw-": (
        "as against lion_pytorch: the per-step Python work of validation and dispatch "
        "(about 50 µs) exceeds AdamW's few operations on one small tensor"),
    "torch-vs-lion_pytorch": (
        "the default is now the numba kernel (bitwise tier) instead of torch.compile (ulp "
        "tier); in isolation it takes 8.5-9.3 ms at 2^24 (about 6× lion_pytorch); torch's "
        "allocator gives its tensors no transparent huge pages here, so the kernel streams "
        "torch memory about 20% slower than NumPy memory; the interleaved rounds of this run "
        "are noisy at 2^24 (IQR in the table)"),
    "torch-model": (
        "one numba call with 2 threads over all 220 tensors; within the run's noise of the "
        "target (IQR in the table); torch.compile (the opt-in `compiled` row) is slower here"),
    "jax-model": (
        "XLA:CPU runs the params and the momentum as two loops (7 arrays of traffic instead "
        "of 5); fused=True calls the FFI kernel once per leaf (220 calls)"),
    "numpy-step-vs-hand": (
        "lionk.step validates every call (tree structures, dtypes, aliasing, hyper-parameters; "
        "remembered per structure) and runs the published expression order (12 operations "
        "against the hand-written Lion's 7): 2.1-2.2× in CPU time of the calling thread, "
        "more in wall time"),
    "jax-user-step-": (
        "the same fusions as optax.lion (HLO compared) except State.skipped, one more 0-d "
        "leaf passed through each call (measured 0.76-0.79× at 2^10 with it, 1.03× "
        "without); from 2^16 up the difference is within run-to-run noise (±10%)"),
    "jax-user-lion_k-": (
        "lion_k compiles to the same fusions as optax.lion (HLO compared); the difference is "
        "within run-to-run noise (±10%)"),
    "minimize-": (
        "each iteration runs the eager step and the κ's diagnostics (gradient norm, "
        "constraint, Lyapunov terms: array-API calls of 7-20 µs each) that the stopping "
        "rules and the history need at every iterate; JAX with x64 runs 64 iterations per "
        "jitted call (1.27× the evaluation in float64, docs/minimize.md), this section runs "
        "float32 without x64, where the diagnostics are computed on the host"),
}


def reason_for(target_id: str) -> str:
    """The recorded reason a target is not met ("" when none is recorded)."""
    keys = [k for k in REASONS if target_id == k or target_id.startswith(k)]
    return REASONS[max(keys, key=len)] if keys else ""


def _fmt_x(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}×"


def _ms(t: float) -> str:
    """A step time in ms, with enough digits for the µs steps of the small sizes."""
    return f"{t * 1e3:.2f} ms" if t >= 1e-3 else f"{t * 1e3:.4f} ms"


def _fmt_measured(t: dict[str, Any]) -> str:
    m = t["measured"]
    if m is None:
        return "n/a"
    kind = t.get("kind") or ("memory" if t["id"].startswith("mem-") else "")
    if kind == "memory":
        return f"{100 * m:.2f}%"
    if kind == "overhead":
        return f"{100 * m:+.1f}%"
    return f"{m:.2f}×"


def build_result(rows: list[Any], settings: Any, info: dict[str, Any],
                 minimize_rows: list[Any] | None = None) -> dict[str, Any]:
    from .contenders import all_contenders, in_scope

    every = bool(getattr(settings, "every_size", False))
    contenders = all_contenders(settings.device)
    sizes = []
    out_rows = []
    for w in settings.sizes:
        srows = [r for r in rows if r.size == w.label]
        bws = {}
        for r in srows:
            if r.role == "floor" and r.status == "ok" and r.median_s and r.moved_bytes:
                bws[r.name] = r.moved_bytes / r.median_s
        bw = max(bws.values()) if bws else None
        floor_s = w.step_bytes / bw if bw else None
        rounds = max((len(r.samples_s) for r in srows), default=0)
        out_of_scope = {c.scope: [] for c in contenders if not in_scope(c, w, every)}
        for c in contenders:
            if not in_scope(c, w, every):
                out_of_scope[c.scope].append(c.name)
        sizes.append(dict(label=w.label, description=w.describe(), n=w.n, leaves=w.leaves, rounds=rounds,
                          param_bytes=w.param_bytes, step_bytes=w.step_bytes,
                          bandwidth_Bps=bws, bandwidth_used_Bps=bw, floor_s=floor_s,
                          not_timed=out_of_scope))
        med = {r.name: r.median_s for r in srows if r.status == "ok"}
        for r in srows:
            d = asdict(r)
            d["median_s"] = r.median_s
            d["iqr_s"] = r.iqr_s
            d["ratio_floor"] = (r.median_s / floor_s) if (floor_s and r.median_s) else None
            d["mem_fraction"] = (r.mem_bytes / w.param_bytes) if r.mem_bytes is not None else None
            d["speedups"] = {}
            if r.role == "lionk" and r.median_s:
                for peer, label in PEERS.get(r.backend, []):
                    if med.get(peer):
                        d["speedups"][label] = med[peer] / r.median_s
            out_rows.append(d)
    result = dict(machine=info, settings=dict(
        device=settings.device, quick=settings.quick, budget_s=settings.budget_s,
        min_rounds=settings.min_rounds, max_rounds=settings.max_rounds,
        min_sample_s=settings.min_sample_s, warmup=settings.warmup,
        sizes=[w.label for w in settings.sizes], only=settings.only, skip=settings.skip,
        rounds=settings.rounds, sections=list(getattr(settings, "sections", [])),
        every_size=every, minimize_iters=getattr(settings, "minimize_iters", None)),
        sizes=sizes, rows=out_rows)
    if minimize_rows is not None:
        from .minimize_overhead import as_dicts

        result["minimize"] = as_dicts(minimize_rows)
    result["targets"] = evaluate_targets(result)
    return result


def _lionk_rows(result: dict[str, Any], size: str, backend: str) -> list[dict[str, Any]]:
    be = {"numpy": ("numpy", "cupy")}.get(backend, (backend,))
    return [r for r in result["rows"] if r["size"] == size and r["role"] == "lionk"
            and r["backend"] in be]


def _pick(result: dict[str, Any], t: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    rows = _lionk_rows(result, t["size"], t["backend"])
    if not rows:
        return None, f"size {t['size']} not in this run" if not any(
            r["size"] == t["size"] for r in result["rows"]) else "no lionk row for this backend"
    if t["pick"] == "jit_step":
        # the faster of jit_step's two forms (XLA loops; fused=True, the FFI kernel)
        steps = [r for r in rows if r["name"].startswith("lionk.jit_step jax")]
        ran = [r for r in steps if r["status"] == "ok" and r["median_s"]]
        r = min(ran, key=lambda r: r["median_s"]) if ran else (steps[0] if steps else None)
        if r is None or r["status"] != "ok":
            fb = next((x for x in rows if x["name"] == "lionk.step + jax.jit (user)"
                       and x["status"] == "ok"), None)
            why = r["reason"] if r else "not run"
            extra = (f"; for comparison the user-written jax.jit(lionk.step) ran "
                     f"{_fmt_x(fb['ratio_floor'])} floor") if fb and fb["ratio_floor"] else ""
            return None, f"lionk.jit_step skipped ({why}){extra}"
        return r, ""
    if t["pick"] == "name":
        r = next((x for x in rows if x["name"] == t["row"]), None)
        if r is None or r["status"] != "ok":
            return None, f"{t['row']} did not run" + (f" ({r['reason']})" if r else "")
        return r, ""
    if t["pick"] == "torch-default":
        r = next((r for r in rows if r["name"] == "lionk.torch.LionK default"), None)
        if r is not None and r["status"] == "skipped" and r["reason"].startswith("same path as "):
            alias = r["reason"].split("'")[1]
            r = next((x for x in rows if x["name"] == alias), None)
        if r is None or r["status"] != "ok":
            return None, "lionk.torch.LionK default did not run" + (f" ({r['reason']})" if r else "")
        return r, ""
    ok = [r for r in rows if r["status"] == "ok" and r["median_s"]]
    if not ok:
        return None, "no lionk path ran: " + "; ".join(f"{r['name']}: {r['reason']}" for r in rows)
    return min(ok, key=lambda r: r["median_s"]), ""


def _minimize_verdict(result: dict[str, Any], t: dict[str, Any], v: dict[str, Any]) -> None:
    rows = result.get("minimize")
    if rows is None:
        v["detail"] = "the minimize section is not in this run"
        return
    r = next((x for x in rows if x["library"] == t["backend"]), None)
    if r is None:
        v["detail"] = f"{t['backend']} not in this run's minimize section"
        return
    v["row"] = f"lionk.minimize {t['backend']}"
    if r["status"] != "ok" or r["overhead"] is None:
        v["detail"] = f"did not run ({r['reason'] or 'no samples'})"
        return
    v["measured"] = r["overhead"]
    v["status"] = "met" if r["overhead"] <= t["max"] else "not met"
    v["detail"] = (f"minimize {r['per_iter_s'] * 1e6:.1f} µs/iteration vs value_and_grad "
                   f"{r['vg_s'] * 1e6:.1f} µs/call: {100 * r['overhead']:+.1f}% "
                   f"(target ≤ {100 * t['max']:.0f}%; {r['nit']} iterations, {r['nfev']} "
                   "evaluations)")


def evaluate_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for t in TARGETS:
        if t["kind"] == "overhead":
            v: dict[str, Any] = dict(id=t["id"], kind=t["kind"], target=t["text"],
                                     size=t["size"], row=None, measured=None,
                                     status="not measured", detail="")
            _minimize_verdict(result, t, v)
            out.append(v)
            continue
        row, why = _pick(result, t)
        v = dict(id=t["id"], kind=t["kind"], target=t["text"], size=t["size"], row=None,
                 measured=None, status="not measured", detail=why)
        if row is not None:
            v["row"] = row["name"]
            if t["kind"] == "floor":
                v["measured"] = row["ratio_floor"]
                if v["measured"] is None:
                    v["detail"] = "no floor measured"
                else:
                    v["status"] = "met" if v["measured"] <= t["max"] else "not met"
                    v["detail"] = f"{row['name']}: {v['measured']:.2f}× floor (target ≤ {t['max']}×)"
            elif t["kind"] == "ratio":
                peer = next((r for r in result["rows"] if r["size"] == t["size"]
                             and r["name"] == t["peer"] and r["status"] == "ok"), None)
                if peer is None:
                    v["detail"] = f"{t['peer']} did not run"
                else:
                    v["measured"] = row["median_s"] / peer["median_s"]
                    v["status"] = "met" if v["measured"] <= t["max"] else "not met"
                    v["detail"] = (f"{row['name']} {row['median_s'] * 1e3:.4f} ms vs {t['peer']} "
                                   f"{peer['median_s'] * 1e3:.4f} ms: {v['measured']:.2f}× its "
                                   f"time (target ≤ {t['max']}×)")
            elif t["kind"] == "speedup":
                peer = next((r for r in result["rows"] if r["size"] == t["size"]
                             and r["name"] == t["peer"] and r["status"] == "ok"), None)
                if peer is None:
                    v["detail"] = f"{t['peer']} did not run"
                else:
                    v["measured"] = peer["median_s"] / row["median_s"]
                    v["status"] = "met" if v["measured"] >= t["min"] else "not met"
                    v["detail"] = (f"{row['name']} {_ms(row['median_s'])} vs {t['peer']} "
                                   f"{_ms(peer['median_s'])}: {v['measured']:.2f}× "
                                   f"(target ≥ {t['min']:.3g}×)")
            else:  # memory
                v["measured"] = row["mem_fraction"]
                if v["measured"] is None:
                    v["detail"] = f"{row['name']}: memory {row['mem_method'] or 'not measured'}"
                else:
                    v["status"] = "met" if v["measured"] <= t["max"] else "not met"
                    v["detail"] = (f"{row['name']}: {100 * v['measured']:.2f}% of param bytes "
                                   f"({human_bytes(row['mem_bytes'])}; target ≤ {100 * t['max']:.0f}%)")
        out.append(v)
    return out


# ---------------------------------------------------------------------------------------------
# Text


def _speedup_text(r: dict[str, Any]) -> str:
    return "; ".join(f"{v:.2f}× vs {k}" for k, v in r["speedups"].items()) or ""


def _row_cells(r: dict[str, Any]) -> list[str]:
    if r["status"] != "ok":
        return [r["name"], r["backend"], r["role"], "—", "—", "—", "—", "—", "—",
                f"skipped: {r['reason']}"]
    med = r["median_s"]
    iqr = f"{100 * r['iqr_s'] / med:.0f}%" if r["iqr_s"] is not None and med else "n/a"
    if r["role"] == "floor":
        mem = "—"
    elif r["mem_fraction"] is not None:
        mem = f"{100 * r['mem_fraction']:.1f}% ({human_bytes(r['mem_bytes'])})"
    else:
        mem = "n/a"
    note = r["note"] or ""
    if r["role"] == "floor" and r.get("moved_bytes") and med:
        note = f"{note}: {_gbps(r['moved_bytes'] / med)}"
    return [r["name"], r["backend"], r["role"], f"{med * 1e3:.{4 if med < 1e-4 else 3}f}", iqr,
            _fmt_x(r["ratio_floor"]), _speedup_text(r), mem, f"{r['build_s']:.1f}", note]


HEAD = ["contender", "backend", "role", "ms (median)", "IQR", "× floor",
        "speed-up vs peer", "peak extra mem (% params)", "set-up + warm-up (s)", "note"]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = [[c.replace("|", "\\|") for c in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in esc]
    return "\n".join(lines)


def _gbps(v: float | None) -> str:
    return "n/a" if v is None else f"{v / 1e9:.1f} GB/s"


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    st = result["settings"]
    v = m["versions"]
    out = ["# lionk benchmark results", ""]
    out.append(f"Generated by `python -m benchmarks{' --quick' if st['quick'] else ''}` "
               f"(device `{st['device']}`, sizes {', '.join(st['sizes'])}"
               + "".join(f", {x} section" for x in st.get("sections") or [])
               + f") in {m.get('elapsed_s', '?')} s.")
    out.append("")
    out.append("**These machines are shared and noisy: wall times vary from run to run. Compare "
               "the ratios (to the floor and between contenders), which are measured in the same "
               "interleaved rounds, not the absolute milliseconds.**")
    out += ["", "## Machine", ""]
    out.append(f"- CPU: {m.get('cpu')}, {m.get('cores')} cores available"
               + (f"; GPU: {m['gpu']}" if m.get("gpu") else ""))
    out.append(f"- Python {m.get('python')}, {m.get('platform')}")
    out.append("- " + ", ".join(f"{k} {val}" for k, val in v.items()))
    out.append(f"- lionk commit: {m.get('lionk_commit')}; torch threads: {m.get('torch_threads')}")
    if "loadavg_start" in m:
        out.append(f"- load average (1, 5, 15 min) at start {m['loadavg_start']}, at end "
                   f"{m.get('loadavg_end')} (other work on this machine inflates and scatters times)")
    out += ["", "## Floor (measured in this run)", ""]
    out.append("A Lion step moves 5 float32 arrays (read params, grads, momentum; write params, "
               "momentum). The floor is those bytes divided by the best bandwidth measured in the "
               "same rounds with an in-place `x += y` (3 arrays moved; not a copy, which pays a "
               "write-allocate on CPU)" + (" and, on the GPU, a device-to-device copy" if st["device"] == "cuda" else "")
               + ". For the model the bandwidth kernels run on one flat array of the model's size.")
    out.append("")
    names = sorted({k for s in result["sizes"] for k in s["bandwidth_Bps"]})
    hdr = ["size", "params", "bytes / step"] + [f"bandwidth {n.removeprefix('floor: ')}" for n in names] + ["floor (ms)"]
    trs = []
    for s in result["sizes"]:
        trs.append([s["description"], f"{s['n']:,}", human_bytes(s["step_bytes"])]
                   + [_gbps(s["bandwidth_Bps"].get(n)) for n in names]
                   + ["n/a" if s["floor_s"] is None else f"{s['floor_s'] * 1e3:.3f}"])
    out.append(_md_table(hdr, trs))
    for w in warnings_for(result):
        out += ["", f"**Warning:** {w}"]
    out += ["", "## Targets (computed from this run)", ""]
    counts = {k: sum(1 for t in result["targets"] if t["status"] == k)
              for k in ("met", "not met", "not measured")}
    out.append(f"{counts['met']} met, {counts['not met']} not met, {counts['not measured']} not "
               "measured in this run.")
    out.append("")
    out.append(_md_table(["target", "measured", "status", "detail", "why not met"], [
        [t["target"], _fmt_measured(t), f"**{t['status']}**", t["detail"],
         reason_for(t["id"]) if t["status"] == "not met" else ""]
        for t in result["targets"]]))
    out.append("")
    out.append("\"Fast path\" is the fastest lionk row of that backend at that size; its memory "
               "target is checked on the same row. The JAX floor targets use the faster "
               "`lionk.jit_step` row (XLA loops, or `fused=True`: the FFI kernel). \"Default\" "
               "rows construct each front-end with no options (no `execution=`, `chunk_size=`, "
               "`threads=`; `lionk.torch.LionK(params, lr, betas, weight_decay)`, "
               "`lionk.LionK(params, ...)`, `lionk.step(...)`, `jax.jit(lionk.step)` donating "
               "params and state, `lionk.optax.lion_k(...)` in a jitted update): the "
               "hyper-parameters every Lion row shares (lr 1e-4, betas (0.9, 0.99), weight "
               "decay 0.1, κ = sign) are the only arguments. `torch AdamW default` is "
               "`torch.optim.AdamW(params)` with no argument at all.")
    for s in result["sizes"]:
        out += ["", f"## {s['description']}", ""]
        floor = "n/a" if s["floor_s"] is None else f"{s['floor_s'] * 1e3:.3f} ms"
        load = (result["machine"].get("other_load") or {}).get(s["label"])
        busy = "" if load is None else f" Other processes kept {load:.2f} CPUs busy meanwhile."
        out.append(f"Floor: {floor} ({human_bytes(s['step_bytes'])} per step at "
                   f"{_gbps(s['bandwidth_used_Bps'])}); {s['rounds']} interleaved rounds.{busy}")
        skipped_scope = {k: v for k, v in (s.get("not_timed") or {}).items() if v}
        if skipped_scope:
            out.append("")
            out.append("Not timed at this size: " + "; ".join(
                f"{len(v)} {k} row{'s' if len(v) > 1 else ''} (timed at {SCOPES.get(k, k)})"
                for k, v in skipped_scope.items()) + "; `--every-size` times them too.")
        out.append("")
        srows = [r for r in result["rows"] if r["size"] == s["label"]]
        out.append(_md_table(HEAD, [_row_cells(r) for r in srows]))
    if result.get("minimize") is not None:
        out += ["", *minimize_markdown(result)]
    out += ["", "## Method", ""]
    out += [
        f"- Every contender holds its own params, grads and optimizer state (float32; lr 1e-4, "
        f"betas (0.9, 0.99), weight decay 0.1, κ = sign). {st['warmup']} warm-up steps first "
        "(the first one compiles, for torch.compile and jax.jit).",
        f"- Then interleaved rounds: each round times every contender once, round-robin, starting "
        f"from a different contender each round ({st['min_rounds']}–{st['max_rounds']} rounds, "
        f"about {st['budget_s']} s per size). A sample is k consecutive steps (k chosen so that a "
        f"sample lasts ≥ {st['min_sample_s'] * 1e3:.0f} ms) followed by a synchronisation "
        "(`jax.block_until_ready`, `torch.cuda.synchronize`); the table shows the median over "
        "rounds of the per-step time and its interquartile range. Before a sample whose "
        "library differs from the previous sample's the harness idles 20 ms, so that the "
        "other library's idle worker threads (torch's OpenMP threads spin-wait after each "
        "parallel region) have stopped before it is timed.",
        "- Set-up + warm-up: building the contender and its warm-up steps, compilation "
        "included (torch.compile, jax.jit); a one-off cost, not part of the step times.",
        "- Speed-up vs peer = peer's median / this row's median (same size, same rounds).",
        "- Peak extra memory during one step (after warm-up), as a fraction of the parameter "
        "bytes: NumPy with `tracemalloc` (peak during the step); torch CPU from the allocation "
        "and free events of `torch.profiler(profile_memory=True)` (torch has no CPU allocator "
        "counters otherwise; the peak of their running sum); torch CUDA with "
        "`torch.cuda.max_memory_allocated`; JAX from XLA's `compiled.memory_analysis()` "
        "(temporaries + outputs not aliased to the donated inputs).",
        f"- torch.compile: {result['machine'].get('compile_caches', '')}.",
        "- JAX steps donate params and optimizer state (`donate_argnums`); a row notes it when "
        "XLA could not use a donation.",
        "- Contenders that cannot run (a lionk path not implemented yet, a missing library) are "
        "listed as skipped with the exception or reason.",
        "- Scopes: every front-end's default, the peers, the floors and the cheap references are "
        "timed at every size; the opt-in rows (explicit `execution=`, `lionk.jit_step`, the "
        "schedule rows, the torch.compile reference) at 2^16 and above and on the models; "
        "`lionk.step` on NumPy and its hand-written functional reference up to 2^16 elements "
        "(`--every-size`: everything everywhere).",
    ]
    return "\n".join(out) + "\n"


def minimize_markdown(result: dict[str, Any]) -> list[str]:
    from .minimize_overhead import N_SAMPLES, N_VARS, RADIUS

    rows = result["minimize"]
    load = (result["machine"].get("other_load") or {}).get("minimize")
    busy = "" if load is None else f" Other processes kept {load:.2f} CPUs busy meanwhile."
    out = [f"## lionk.minimize overhead ({N_VARS} variables)", ""]
    out.append(f"Logistic regression, {N_VARS} variables, a fixed random design of {N_SAMPLES} "
               "samples, float32, with the user's own value_and_grad (NumPy by hand; torch "
               "with `torch.autograd.grad`; JAX `jax.jit(jax.value_and_grad(loss))`). "
               f"`lionk.minimize(vg, x0, jac=True, radius={RADIUS:g}, maxiter=M, tol=0)` "
               "(tol=0: no early stop) per iteration = the call's time / its iterations; "
               "value_and_grad per call (JAX: outputs waited for). Overhead = minimize per "
               "iteration / value_and_grad per call − 1; interleaved rounds, medians." + busy)
    out.append("")
    trs = []
    for r in rows:
        if r["status"] != "ok" or r["overhead"] is None:
            trs.append([r["library"], "—", "—", "—", "—", "—", f"skipped: {r['reason']}"])
            continue
        trs.append([r["library"], f"{r['vg_s'] * 1e6:.1f}", f"{r['per_iter_s'] * 1e6:.1f}",
                    f"{100 * r['overhead']:+.1f}%", f"{len(r['min_samples_s'])}",
                    f"{r['nit']} / {r['nfev']}", r["note"]])
    out.append(_md_table(["library", "value_and_grad (µs / call)", "minimize (µs / iteration)",
                          "overhead", "rounds", "iterations / f evaluations", "note"], trs))
    return out


def warnings_for(result: dict[str, Any]) -> list[str]:
    """Signs that this run's numbers are distorted by other load on the machine."""
    out = []
    for s in result["sizes"]:
        bw = s["bandwidth_Bps"]
        a, b = bw.get("floor: numpy x+=y"), bw.get("floor: torch x+=y")
        if a and b and b < 0.5 * a and s["n"] >= 1 << 18:
            out.append(f"{s['label']}: torch's in-place add reached {_gbps(b)} against numpy's "
                       f"{_gbps(a)}: torch's intra-op threads were starved (other processes on "
                       "these cores); every multi-threaded torch number at this size is inflated.")
    below = [f"{r['name']} at {r['size']} ({r['ratio_floor']:.2f}×)" for r in result["rows"]
             if r["role"] != "floor" and r.get("ratio_floor") and r["ratio_floor"] < 1.0]
    if below:
        out.append("some steps ran below the floor: " + ", ".join(below) + ". The floor is the "
                   "bandwidth of an in-place x += y (3 streams); on this machine a fused "
                   "5-stream kernel can stream faster than that, so this floor overstates the "
                   "least possible time here (compare with the hand-written compiled references).")
    cores = result["machine"].get("cores") or 1
    busy = {k: v for k, v in (result["machine"].get("other_load") or {}).items()
            if v is not None and v > 0.15 * cores}
    if busy:
        out.append("other processes kept CPUs busy while sizes were timed ("
                   + ", ".join(f"{k}: {v:.2f} of {cores} CPUs" for k, v in busy.items())
                   + "); those sizes' times are inflated and scattered, multi-threaded torch "
                   "and XLA kernels most of all.")
    return out


def console_table(result: dict[str, Any]) -> str:
    lines = []
    for s in result["sizes"]:
        floor = "n/a" if s["floor_s"] is None else f"{s['floor_s'] * 1e3:.3f} ms"
        lines.append(f"{s['description']} — floor {floor} at {_gbps(s['bandwidth_used_Bps'])}")
        lines.append(f"  {'contender':34s} {'ms':>9s} {'×floor':>7s}  speed-up / memory / note")
        for r in result["rows"]:
            if r["size"] != s["label"]:
                continue
            if r["status"] != "ok":
                lines.append(f"  {r['name']:34s} {'skipped':>9s}          {r['reason'][:90]}")
                continue
            mem = "" if r["mem_fraction"] is None else f"mem {100 * r['mem_fraction']:.1f}%"
            extra = "  ".join(x for x in (_speedup_text(r), mem, r["note"]) if x)
            lines.append(f"  {r['name']:34s} {r['median_s'] * 1e3:9.4f} "
                         f"{_fmt_x(r['ratio_floor']):>7s}  {extra}")
        lines.append("")
    for r in result.get("minimize") or []:
        if r["status"] == "ok" and r["overhead"] is not None:
            lines.append(f"minimize {r['library']:6s} value_and_grad {r['vg_s'] * 1e6:9.1f} µs/call"
                         f"  minimize {r['per_iter_s'] * 1e6:9.1f} µs/iteration  overhead "
                         f"{100 * r['overhead']:+.1f}%")
        else:
            lines.append(f"minimize {r['library']:6s} skipped: {r['reason']}")
    for w in warnings_for(result):
        lines.append(f"WARNING: {w}")
    lines.append("Targets:")
    for t in result["targets"]:
        lines.append(f"  [{t['status']:>12s}] {t['target']}: {t['detail']}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"lionk": "tab:blue", "peer": "tab:orange", "reference": "tab:gray", "floor": "tab:green"}
    sizes = [s for s in result["sizes"] if s["floor_s"]]
    n = max(1, len(sizes))
    ncols = 2 if n > 1 else 1
    nrows = math.ceil(n / ncols)
    most = max([sum(1 for r in result["rows"] if r["size"] == s["label"] and r["ratio_floor"])
                for s in sizes] or [1])
    fig, axes = plt.subplots(nrows, ncols, figsize=(7.5 * ncols, (0.26 * most + 1.2) * nrows),
                             squeeze=False)
    flat = list(axes.flat)
    for ax in flat[len(sizes):]:
        ax.axis("off")
    for ax, s in zip(flat, sizes):
        rs = [r for r in result["rows"] if r["size"] == s["label"] and r["ratio_floor"]
              and r["role"] != "floor"]
        rs.sort(key=lambda r: r["ratio_floor"], reverse=True)
        ax.barh([r["name"] for r in rs], [r["ratio_floor"] for r in rs],
                color=[colors[r["role"]] for r in rs])
        ax.axvline(1.0, color="black", lw=1)
        ax.set_xscale("log")
        ax.set_title(f"{s['description']}: time / floor ({s['floor_s'] * 1e3:.3f} ms), lower is better",
                     fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.tick_params(axis="x", labelsize=7)
        for i, r in enumerate(rs):
            ax.text(r["ratio_floor"], i, f" {r['ratio_floor']:.2f}×", va="center", fontsize=6)
    if not sizes:
        flat[0].text(0.5, 0.5, "no floor measured", ha="center")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for k, c in colors.items() if k != "floor"]
    flat[0].legend(handles, [k for k in colors if k != "floor"], loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(result: dict[str, Any], out: Path, *, plot: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    p = out / "results.json"
    p.write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
    paths.append(p)
    p = out / "results.md"
    p.write_text(markdown(result))
    paths.append(p)
    if plot:
        p = out / "results.png"
        try:
            globals()["plot"](result, p)
            paths.append(p)
        except ImportError as exc:  # pragma: no cover - matplotlib missing
            print(f"results.png not written: {exc}")
    return paths


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and math.isnan(o):  # pragma: no cover
        return None
    if isinstance(o, Path):
        return str(o)
    return str(o)
