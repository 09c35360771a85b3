"""pytest entry of the conformance suite (run by ``make test``).

* every backend this machine has passes its row of the matrix (≥ 200-step trajectories);
* the checks can fail: mutant steps (a coefficient rounded in the array dtype, the momentum
  updated before the interpolation, decay applied after the update) are caught at the tier
  they break, and a failing check makes the CLI exit non-zero;
* the CLI writes report.md / report.json and ends with ``N passed, M failed``.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest

import lionk
from conformance import checks, runner
from conformance import report as report_mod
from conformance.__main__ import main
from conformance.backends import KNOWN_BACKENDS, discover

STEPS = 200


# torch.compile compiles once per (κ, dtype, shapes): its row in `make test` covers an exact κ,
# a clipped one and a norm κ in float32; `make conformance` runs the whole row.
REDUCED = {"torch-cpu-compiled": (["float32"], ["sign", "huber", "l2"]),
           # each (κ, dtype) builds a C++ FFI handler once (a few seconds)
           "jax-cpu-jit-fused": (["float32", "float64"], ["sign", "huber", "l2"])}


@pytest.mark.parametrize("name", list(KNOWN_BACKENDS))
def test_backend_row_conforms(name: str) -> None:
    dtypes, kappas = REDUCED.get(name, (["float32", "float64"], runner.DEFAULT_KAPPAS))
    rep = runner.run([name], dtypes, kappas, STEPS, progress=False)
    row = next(b for b in rep["backends"] if b["backend"] == name)
    if not row["available"]:
        pytest.skip(f"{name}: not available ({row['reason']})")
    assert rep["cells"], "no cell ran"
    assert rep["failed"] == 0, report_mod.render(rep)
    exact_cells = [c for c in rep["cells"] if c["exact"]]
    if KNOWN_BACKENDS[name][1] == "bitwise":
        assert all(c["tier"] == "bitwise" for c in exact_cells)
    detected = [c for c in rep["negative_controls"] if not c["detail"].get("positive")]
    assert len(detected) == 4 and all(c["detail"]["detected"] for c in detected)
    if name == "numpy-numba":  # the report shows the path that ran (no silent fallback)
        assert "compiled: numba kernel" in row["execution"]["paths"], row
        assert not row["execution"].get("fallbacks"), row


# ---------------------------------------------------------------------------------------------
# Mutants: steps with a deliberate deviation, written out in numpy, must be caught.


def _mutant_step(kind: str, *, lr: float, betas: tuple[float, float], weight_decay: float,
                 kappa: lionk.kappa.Kappa):
    b1, b2 = betas

    def step(params, grads, state):
        keys = sorted(params)
        xs, gs, ms = ([t[k] for k in keys] for t in (params, grads, state.momentum))
        dt = xs[0].dtype
        omb2 = 1 - b2
        if kind == "coefficient-rounded-in-dtype":
            # 1 - b2 computed in the array dtype instead of in double precision
            omb2 = dt.type(1) - dt.type(b2)
        if kind == "momentum-first":
            ms = [b2 * m + (1 - b2) * g for m, g in zip(ms, gs)]
            cs = [b1 * m + (1 - b1) * g for m, g in zip(ms, gs)]
        else:
            cs = [b1 * m + (1 - b1) * g for m, g in zip(ms, gs)]
        us = kappa.tree_grad(cs)
        if kind == "decay-after-update":
            new_x = [(1 - lr * weight_decay) * (x - lr * u) for x, u in zip(xs, us)]
        elif kind == "single-rounding":
            # what an FMA-contracting compiler does: d*x - lr*u evaluated exactly, rounded once
            wide = np.float64 if dt == np.float32 else np.longdouble
            new_x = [((1 - lr * weight_decay) * x.astype(wide) - lr * u.astype(wide)).astype(dt)
                     for x, u in zip(xs, us)]
        else:
            new_x = [(1 - lr * weight_decay) * x - lr * u for x, u in zip(xs, us)]
        if kind != "momentum-first":
            ms = [b2 * m + omb2 * g for m, g in zip(ms, gs)]
        return dict(zip(keys, new_x)), lionk.State(state.count + 1, dict(zip(keys, ms)), 0)

    return step


def _mutant_backend(kind: str):
    numpy_backend = discover(["numpy"])[0]

    def step_fn(*, lr, betas, weight_decay, kappa, grad_fn=None):
        step = _mutant_step(kind, lr=lr, betas=betas, weight_decay=weight_decay, kappa=kappa)
        if grad_fn is None:
            return step
        return lambda params, state, data: step(params, grad_fn(params, data), state)

    mutant = replace(numpy_backend, name=f"mutant:{kind}")
    object.__setattr__(mutant, "step_fn", step_fn)
    return numpy_backend, mutant


def test_single_rounding_breaks_bitwise_but_passes_ulp() -> None:
    """An FMA-like step (one rounding instead of three) is what the ulp tier is for."""
    ref, mutant = _mutant_backend("single-rounding")
    kap = lionk.kappa.get("sign")
    assert not checks.check_bitwise(mutant, ref, kap, "float32", STEPS).ok
    assert checks.check_ulp(mutant, ref, kap, "float32", STEPS).ok


def test_coefficient_rounded_in_dtype_breaks_bitwise() -> None:
    """float32(1) - float32(0.99) is not float32(0.01): the exact path must compute 1 - b2
    in double precision (reproducibility.md); the suite notices when it does not."""
    ref, mutant = _mutant_backend("coefficient-rounded-in-dtype")
    kap = lionk.kappa.get("sign")
    assert not checks.check_bitwise(mutant, ref, kap, "float32", STEPS).ok


@pytest.mark.parametrize("kind", ["momentum-first", "decay-after-update"])
@pytest.mark.parametrize("kappa", ["sign", "huber", "l2"])
def test_wrong_update_order_fails_the_ulp_tier(kind: str, kappa: str) -> None:
    ref, mutant = _mutant_backend(kind)
    kap = runner.make_kappa(kappa)
    assert not checks.check_bitwise(mutant, ref, kap, "float64", STEPS).ok
    result = checks.check_ulp(mutant, ref, kap, "float64", STEPS)
    assert not result.ok, result.detail


def test_the_right_step_passes_as_its_own_mutant_harness() -> None:
    """The harness itself is faithful: the unmodified numpy step is bitwise."""
    ref, same = _mutant_backend("none")
    kap = lionk.kappa.get("huber", delta=0.5)
    assert checks.check_bitwise(same, ref, kap, "float64", 50).ok


# ---------------------------------------------------------------------------------------------
# The command line.


def test_cli_writes_reports_and_final_line(tmp_path, capsys) -> None:
    code = main(["--backends", "numpy", "--kappas", "sign", "l2", "--steps", str(STEPS),
                 "--report", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert re.fullmatch(r"\d+ passed, 0 failed", out[-1])
    rep = json.loads((tmp_path / "report.json").read_text())
    assert {c["kappa"] for c in rep["cells"]} == {"sign", "l2"}
    md = (tmp_path / "report.md").read_text()
    assert "| numpy" in md and "bitwise" in md


def test_cli_exits_nonzero_on_a_failed_check(monkeypatch, capsys) -> None:
    def failing_phase1(*args, **kwargs):
        return checks.Check("phase1", False, {"injected": True})

    monkeypatch.setattr(checks, "check_phase1", failing_phase1)
    code = main(["--backends", "numpy", "--kappas", "sign", "--dtypes", "float64",
                 "--steps", str(STEPS), "--quiet"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 1
    assert re.fullmatch(r"\d+ passed, [1-9]\d* failed", last)


def test_lyapunov_tolerance_is_far_below_the_controls_violations() -> None:
    """The controls are detected by a wide margin, not at the edge of the tolerance."""
    b = discover(["numpy"])[0]
    for chk in checks.negative_controls(b, "float32", STEPS)[:3]:
        assert chk.detail["max_excess_over_tol"] > 100, chk


def test_float64_reference_is_independent_of_lionk() -> None:
    """numpy's lionk trajectory equals a hand-written float64 Lion, bit for bit."""
    p = checks.PROBLEMS["polynomial"]
    h = checks.DEFAULT
    ref = checks.trajectory(discover(["numpy"])[0], p, lionk.kappa.get("sign"), "float64", 50, h)
    data = p.data("float64")
    x = {k: v.copy() for k, v in p.x0("float64").items()}
    m = {k: np.zeros_like(v) for k, v in x.items()}
    b1, b2 = h.betas
    for t in range(50):
        for k in x:
            g = ((x[k] * x[k]) * x[k] - x[k]) + data[k]["a"]
            c = b1 * m[k] + (1.0 - b1) * g
            s = np.where(c > 0, 1.0, np.where(c < 0, -1.0, 0.0))
            x[k] = (1.0 - h.lr * h.weight_decay) * x[k] - h.lr * s
            m[k] = b2 * m[k] + (1.0 - b2) * g
        for k in x:
            assert np.array_equal(ref[t + 1][0][k], x[k]) and np.array_equal(ref[t + 1][1][k], m[k])



def test_distributed_section_is_reported_and_counted(monkeypatch, capsys) -> None:
    """A distributed row (engine, world size, tier) appears in the report; a failed one fails
    the run. (The real rows are produced by conformance.distributed.self_check, tested in
    tests/test_distributed_torch.py; `make conformance` runs them.)"""
    rows = [{"engine": "torch-ddp-gloo", "world_size": 2, "kappa": "sign", "dtype": "float32",
             "expected": "bitwise", "tier": "ulp", "ok": False, "detail": "injected"}]
    monkeypatch.setattr(runner, "run_distributed", lambda steps=20: (rows, ""))
    code = main(["--backends", "numpy", "--kappas", "sign", "--dtypes", "float64",
                 "--steps", str(STEPS), "--quiet", "--distributed"])
    out = capsys.readouterr().out
    assert code == 1
    assert "torch-ddp-gloo W=2 sign float32: ulp / bitwise ✗" in out
