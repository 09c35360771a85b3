"""Run the conformance matrix: every (backend, dtype, κ) cell, the negative controls, and report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from typing import Any

import lionk
from lionk import kappa as kappa_mod

from . import checks
from .backends import SSE42_FLAG, Backend, discover, enable_jax_x64
from .problems import LINEAR, QUADRATIC

# The κ the matrix covers by default: every built-in, norm κ in both scopes.
DEFAULT_KAPPAS = [
    "sign", "huber", "quadratic", "deadzone", "relativistic", "l2", "l2:global", "lp",
    "relativistic-l2", "nuclear", "group-l2", "scaled",
    # the defaults users get whose ∇K re-measures a scale every step (``name:auto``: the κ at
    # its defaults; deadzone's jump at ±0.1·RMS(c) moves with c: Kappa.discontinuities_at)
    "huber:auto", "deadzone:auto", "relativistic:auto", "quadratic:auto",
]


def make_kappa(spec: str) -> kappa_mod.Kappa:
    """``name``, ``name:global`` (scope) or ``name:auto`` (the κ at its defaults) → a Kappa;
    without ``:auto``, with the suite's parameters: fixed lengths
    (huber, relativistic, relativistic-l2 δ = 0.5, deadzone e = 0.05: one fixed K, so the
    Lyapunov certificate applies; the ``"auto"`` defaults re-measure it every step), quadratic
    and nuclear at ``scale=1``, the other norm κ at their default ``scale="rms"``."""
    name, _, scope = spec.partition(":")
    if scope == "auto":  # the κ at its defaults (an "auto" length or scale)
        return kappa_mod.get(name)
    params: dict[str, Any] = {}
    if name == "huber":
        params["delta"] = 0.5
    if name in ("relativistic", "relativistic-l2"):
        params["delta"] = 0.5
    if name == "deadzone":
        params["e"] = 0.05
    if name == "lp":
        params["p"] = 3.0
    if name == "quadratic":
        params["scale"] = 1.0  # momentum SGD, ½‖y‖²: the bitwise row (its default is l2's RMS ball)
    if name == "nuclear":
        # the exact (SVD) polar at scale 1, per leaf as a matrix (the certificate's κ). The
        # default scale="rms" multiplies that polar factor by a Python float (one correctly
        # rounded product per element), so this row covers it; at s = √max(A, B) the SVD's
        # normwise error, larger than the per-element scale of the ulp check, shows as up to
        # 50 ulps on small elements (torch-cpu float64, measured), not a per-element tier
        params["scale"] = 1.0
    # group-l2: axis=-1, the rows of the matrix leaf, the whole vector leaf as one group
    # scaled: its defaults, "rms"·l2 (s = √n per leaf: radius √n/λ)
    if scope:
        params["scope"] = scope
    return kappa_mod.get(name, **params)


def run_cell(backend: Backend, ref: Backend, spec: str, dtype: str, steps: int) -> dict[str, Any]:
    kap = make_kappa(spec)
    cell: dict[str, Any] = {"backend": backend.name, "device": backend.device_kind,
                            "dtype": dtype, "kappa": spec, "exact": kap.exact,
                            "kappa_tier": kap.tier}
    # the κ's tier fact: "bitwise" κ reach the backend's exact tier; "ulp" κ the ulp tier;
    # "semantic" κ promise neither, only the Lyapunov and constraint checks below
    expected = backend.expected_exact_tier if kap.tier == "bitwise" else kap.tier
    cell["expected_tier"] = expected
    checks_run: list[checks.Check] = []
    tier = None
    # Every cell tries the bitwise tier first (a non-exact κ may reach it too on some backends);
    # the ulp tier is the fallback, which passes the cell only where ulp is what is expected.
    bw = checks.check_bitwise(backend, ref, kap, dtype, steps)
    checks_run.append(bw)
    if bw.ok:
        tier = "bitwise"
    if tier is None:
        ulp = checks.check_ulp(backend, ref, kap, dtype, steps)
        checks_run.append(ulp)
        tier = "ulp" if ulp.ok else ("semantic" if expected == "semantic" else None)
    tier_ok = expected == "semantic" or (
        tier is not None and (tier == "bitwise" or expected == "ulp"))
    if getattr(kap, "fixed", True):
        lyap = [checks.check_lyapunov(backend, kap, dtype, steps, LINEAR),
                checks.check_lyapunov(backend, kap, dtype, steps, QUADRATIC)]
    else:  # no fixed K, no H (theory.md, "Normalised defaults"): the constraint still holds
        lyap = [checks.Check("lyapunov", True, {"not_applicable": "K re-measures a length "
                                                "from its input every step: no fixed K"})]
        cell["lyapunov_na"] = True
    phase = checks.check_phase1(backend, kap, dtype, steps)
    extra = [checks.check_toy(backend, dtype, steps)] if spec == "sign" else []
    checks_run += lyap + [phase] + extra
    cell.update(
        tier=tier or "fail",
        tier_ok=tier_ok,
        lyapunov_ok=all(c.ok for c in lyap),
        constraint_ok=phase.ok and all(c.ok for c in extra),
        checks=[asdict(c) for c in checks_run],
    )
    cell["ok"] = cell["tier_ok"] and cell["lyapunov_ok"] and cell["constraint_ok"]
    return cell


def run_distributed(steps: int = 20) -> tuple[list[dict[str, Any]], str]:
    """The "distributed" section: ``conformance.distributed.self_check`` rows (DDP, sign vote, FSDP2 on
    2 gloo processes; JAX sharding on 4 simulated devices), or a reason they could not run."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return [], "torch not installed"
    from conformance.distributed import self_check

    try:
        jax_ok = importlib.util.find_spec("jax") is not None
        return self_check(world_size=2, steps=steps, jax=jax_ok), ""
    except Exception as exc:  # a failing engine is reported as a failed row, not a crash
        return [{"engine": "self_check", "world_size": 2, "kappa": "-", "dtype": "-",
                 "expected": "-", "tier": "fail", "ok": False,
                 "detail": f"{type(exc).__name__}: {exc}"}], ""


def run(backends: list[str] | None, dtypes: list[str], kappas: list[str], steps: int,
        device: str = "all", progress: bool = True, distributed: bool = False) -> dict[str, Any]:
    enable_jax_x64()
    start = time.perf_counter()
    found = discover(backends, device)
    ref = next(b for b in found if b.name == "numpy")
    cells: list[dict[str, Any]] = []
    controls: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for b in found:
        if backends is not None and b.name not in backends:
            continue  # numpy ran only as the reference
        if not b.available:
            rows.append({"backend": b.name, "device": b.device_kind, "available": False,
                         "reason": b.reason})
            continue
        if b.extra.get("subprocess"):
            sub = _run_subprocess(b.name, dtypes, kappas, steps)
            rows.append({"backend": b.name, "device": b.device_kind, "available": True,
                         "reason": f"subprocess with XLA_FLAGS={SSE42_FLAG}"})
            cells += sub["cells"]
            controls += sub["negative_controls"]
            continue
        rows.append({"backend": b.name, "device": b.device_kind, "available": True, "reason": ""})
        for dtype in dtypes:
            if dtype not in b.dtypes:
                continue
            for spec in kappas:
                t0 = time.perf_counter()
                cell = run_cell(b, ref, spec, dtype, steps)
                cell["seconds"] = round(time.perf_counter() - t0, 2)
                cells.append(cell)
                if progress:
                    print(f"  {b.name:18s} {dtype:8s} {spec:16s} tier={cell['tier']:8s} "
                          f"lyapunov={'n/a' if cell.get('lyapunov_na') else 'ok' if cell['lyapunov_ok'] else 'FAIL'} "
                          f"constraint={'ok' if cell['constraint_ok'] else 'FAIL'} "
                          f"({cell['seconds']}s)", file=sys.stderr, flush=True)
        if b.extra.get("execution"):  # what the execution record of the path reported
            rows[-1]["execution"] = b.extra["execution"]
        ctl_dtype = "float64" if "float64" in dtypes else dtypes[0]
        for chk in checks.negative_controls(b, ctl_dtype, steps):
            controls.append({"backend": b.name, **asdict(chk)})
        for chk in checks.positive_controls(b, ctl_dtype, steps):
            chk.detail["detected"] = chk.ok  # here "passing" is the expected outcome
            chk.detail["positive"] = True
            controls.append({"backend": b.name, **asdict(chk)})
    dist_rows, dist_reason = run_distributed() if distributed else ([], "not requested")
    passed = sum(c["ok"] for c in cells) + sum(c["detail"]["detected"] for c in controls)
    failed = sum(not c["ok"] for c in cells) + sum(not c["detail"]["detected"] for c in controls)
    passed += sum(bool(r["ok"]) for r in dist_rows)
    failed += sum(not r["ok"] for r in dist_rows)
    return {
        "lionk_version": lionk.__version__,
        "versions": _versions(),
        "settings": {"steps": steps, "dtypes": dtypes, "kappas": kappas, "device": device,
                     "k_ulp": checks.K_ULP, "max_tie_fraction": checks.MAX_TIE_FRACTION,
                     "lyapunov_tolerance": f"{checks.C_LYAP:g} * eps(dtype) * M_t",
                     "hyper": asdict(checks.DEFAULT)},
        "backends": rows,
        "cells": cells,
        "negative_controls": controls,
        "distributed": {"rows": dist_rows, "reason": dist_reason},
        "passed": passed,
        "failed": failed,
        "seconds": round(time.perf_counter() - start, 1),
    }


def _run_subprocess(name: str, dtypes: list[str], kappas: list[str], steps: int) -> dict[str, Any]:
    """JAX's ISA flag must be set before jax is imported: run that backend in a fresh process."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + SSE42_FLAG).strip()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cells.json")
        cmd = [sys.executable, "-m", "conformance", "--backends", name, "--dtypes", *dtypes,
               "--kappas", *kappas, "--steps", str(steps), "--json-out", out, "--quiet"]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True)
        if not os.path.exists(out):
            raise RuntimeError(f"subprocess for {name} failed:\n{proc.stdout}\n{proc.stderr}")
        with open(out) as fh:
            rep = json.load(fh)
    return {"cells": [c for c in rep["cells"] if c["backend"] == name],
            "negative_controls": [c for c in rep["negative_controls"] if c["backend"] == name]}


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("numpy", "array-api-compat", "array-api-strict", "torch", "jax", "jaxlib", "cupy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
