"""The conformance report: a matrix (rows backend/device/dtype, columns κ) in text, Markdown, JSON."""

from __future__ import annotations

import json
import os
from typing import Any

CHECK = "✓"
CROSS = "✗"


def _cell_text(cell: dict[str, Any]) -> str:
    tier = cell["tier"] if cell["tier_ok"] else f"{cell['tier']}{CROSS}"
    lyap = "–" if cell.get("lyapunov_na") else CHECK if cell["lyapunov_ok"] else CROSS
    cons = CHECK if cell["constraint_ok"] else CROSS
    return f"{tier} L{lyap} C{cons}"


def matrix(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    kappas = report["settings"]["kappas"]
    header = ["backend", "device", "dtype", *kappas]
    rows: list[list[str]] = []
    by_row: dict[tuple[str, str, str], dict[str, str]] = {}
    for c in report["cells"]:
        by_row.setdefault((c["backend"], c["device"], c["dtype"]), {})[c["kappa"]] = _cell_text(c)
    for (b, d, dt), cells in by_row.items():
        rows.append([b, d, dt, *[cells.get(k, "-") for k in kappas]])
    for b in report["backends"]:
        if not b["available"]:
            rows.append([b["backend"], b["device"], "-", *["not available"] * len(kappas)])
    return header, rows


def _table(header: list[str], rows: list[list[str]], md: bool) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    def line(cells: list[str]) -> str:
        inner = " | ".join(c.ljust(w) for c, w in zip(cells, widths))
        return f"| {inner} |" if md else inner
    out = [line(header)]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|" if md else "-+-".join("-" * w for w in widths))
    out += [line(r) for r in rows]
    return "\n".join(out)


def render(report: dict[str, Any], md: bool = False) -> str:
    header, rows = matrix(report)
    s = report["settings"]
    parts = []
    if md:
        parts.append("# lionk conformance report\n")
    parts.append(
        f"lionk {report['lionk_version']}; steps={s['steps']}; lr={s['hyper']['lr']}, "
        f"betas={tuple(s['hyper']['betas'])}, weight_decay={s['hyper']['weight_decay']}"
    )
    parts.append("versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    parts.append(
        "cell = tier reached (bitwise | ulp; ✗ = below the tier expected) · L = Lyapunov "
        "(linear f: H non-increasing; quadratic f: ΔH ≤ (L/2)‖Δx‖²; – : no fixed K, no H) · "
        "C = constraint "
        "(phase-1 contraction, 0 stays 0)"
    )
    parts.append(
        f"ulp tier: teacher-forced, within {s['k_ulp']} eps of the terms' magnitudes, flipped "
        f"ties ≤ {s['max_tie_fraction']:g} of elements; Lyapunov tolerance: {s['lyapunov_tolerance']} "
        "(M_t: magnitudes of H's terms and of lr-sized perturbations of x)"
    )
    parts.append("")
    parts.append(_table(header, rows, md))
    parts.append("")
    parts.append("Unavailable backends:" if md else "not available:")
    for b in report["backends"]:
        if not b["available"]:
            parts.append(f"- {b['backend']} ({b['device']}): {b['reason']}")
    ran = [b for b in report["backends"] if b.get("execution")]
    if ran:
        parts.append("")
        parts.append("Execution paths (the execution record of each in-place row: path: what ran "
                     "it, number of steps; fallbacks with their reason):")
        for b in ran:
            ex = b["execution"]
            paths = ", ".join(f"{k} ×{n}" for k, n in ex.get("paths", {}).items())
            parts.append(f"- {b['backend']}: {paths}")
            for why in ex.get("fallbacks", []):
                parts.append(f"  - fallback: {why}")
    parts.append("")
    parts.append("Controls: negative ones must be detected as a Lyapunov violation; positive ones "
                 "(the same tight starts with the right H) must pass:")
    for c in report["negative_controls"]:
        d = c["detail"]
        where = d.get("first_violation_step")
        if d.get("positive"):
            what = "passes" if d["detected"] else "FAILS"
        else:
            what = "detected" if d["detected"] else "NOT DETECTED"
        parts.append(f"- {c['backend']}: {c['name']}: {what}"
                     + (f" (first violation at step {where})" if where is not None else ""))
    dist = report.get("distributed", {"rows": [], "reason": "not run"})
    parts.append("")
    parts.append("Distributed (engine, world size, κ, dtype: tier reached / expected):")
    if not dist["rows"]:
        parts.append(f"- not run: {dist['reason']}")
    for r in dist["rows"]:
        mark = CHECK if r["ok"] else CROSS
        parts.append(f"- {r['engine']} W={r['world_size']} {r['kappa']} {r['dtype']}: "
                     f"{r['tier']} / {r['expected']} {mark}")
    failures = [c for c in report["cells"] if not c["ok"]]
    if failures:
        parts.append("")
        parts.append("Failures:")
        for c in failures:
            bad = [ch for ch in c["checks"] if not ch["ok"]]
            for ch in bad:
                parts.append(f"- {c['backend']} {c['dtype']} {c['kappa']}: {ch['name']}: {ch['detail']}")
    parts.append("")
    parts.append(f"({report['seconds']} s)")
    parts.append(f"{report['passed']} passed, {report['failed']} failed")
    return "\n".join(parts)


def write(report: dict[str, Any], directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "report.json"), "w") as fh:
        json.dump(report, fh, indent=1, default=str)
    with open(os.path.join(directory, "report.md"), "w") as fh:
        fh.write(render(report, md=True) + "\n")
