"""The scripts in examples/ run and produce the results their docstrings promise."""

from __future__ import annotations

import importlib.util
import math
import runpy
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
HAVE_SCIPY = importlib.util.find_spec("scipy") is not None


def load(name: str) -> dict:
    """The globals of examples/<name>.py, run as a module (not as __main__)."""
    return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name=f"example_{name}")


def test_every_example_has_main() -> None:
    scripts = sorted(p.stem for p in EXAMPLES.glob("*.py"))
    assert {"quickstart_numpy", "lyapunov_monitor"} <= set(scripts)
    for name in scripts:
        assert callable(load(name).get("main")), f"examples/{name}.py has no main()"


def test_quickstart_numpy_solves_the_box_constrained_problem(capsys: pytest.CaptureFixture) -> None:
    ex = load("quickstart_numpy")
    res = ex["main"]()
    assert "f(x)" in capsys.readouterr().out
    A, b = ex["make_problem"]()
    x, r = res["x"], res["radius"]

    # feasible, and the constraint matters (the unconstrained solution is outside the box)
    assert res["violation"] == 0.0
    assert np.max(np.abs(x)) <= r
    x_free = np.linalg.lstsq(A, b, rcond=None)[0]
    assert np.max(np.abs(x_free)) > r
    assert res["active"] >= 1
    assert res["objective"] > ex["objective"](A, b, x_free)

    # KKT conditions of min ½‖Ax − b‖² s.t. |x_i| <= r, from the gradient alone
    g = A.T @ (A @ x - b)
    scale = np.max(np.abs(A.T @ b))
    upper, lower = x >= r - 1e-9, x <= -r + 1e-9
    free = ~(upper | lower)
    assert np.all(g[upper] <= 1e-3 * scale)
    assert np.all(g[lower] >= -1e-3 * scale)
    assert np.all(np.abs(g[free]) <= 1e-3 * scale)


@pytest.mark.skipif(not HAVE_SCIPY, reason="scipy is not installed")
def test_quickstart_numpy_matches_scipy() -> None:
    res = load("quickstart_numpy")["main"]()
    # SciPy's solution is the optimum; Lion's feasible point cannot be much better or worse
    assert res["objective"] == pytest.approx(res["scipy_objective"], rel=1e-6)
    assert res["objective"] >= res["scipy_objective"] * (1 - 1e-9)
    assert res["max_abs_diff"] < 1e-3


def test_lyapunov_monitor_never_increases(capsys: pytest.CaptureFixture) -> None:
    res = load("lyapunov_monitor")["main"]()
    out = capsys.readouterr().out
    assert "H =" in out and "negative control" in out
    hs = np.asarray(res["H"])
    assert len(hs) == 201 and np.all(np.isfinite(hs))
    assert res["max_increase"] <= 0.0
    assert np.all(np.diff(hs) <= 0.0)
    assert hs[-1] < hs[0]
    assert math.isclose(res["coefficient"], 3.673469387755102, rel_tol=1e-12)
    # the wrong coefficient is caught
    assert res["control_max_increase"] > 0.0
    assert res["control_increases"] > 0


def test_fast_numpy_runs_every_path_to_the_same_bits_and_the_known_solution() -> None:
    res = load("fast_numpy")["main"]()
    assert {"eager", "chunked"} <= set(res["paths"])
    for path in res["paths"]:
        assert res[path]["bitwise_equal_to_eager"], path
    # x* = clip(t, ±1/λ) is known in closed form: within 1% of the box radius (0.5) everywhere
    # and far closer for most coordinates (those just inside the box settle last)
    err = np.abs(res["x"] - res["x_star"])
    assert err.max() < 5e-3
    assert np.median(err) < 5e-4


@pytest.mark.skipif(importlib.util.find_spec("torch") is None
                    or importlib.util.find_spec("sklearn") is None,
                    reason="needs torch and scikit-learn")
def test_every_kappa_reports_defaults_fixed_and_the_constraint(
        capsys: pytest.CaptureFixture) -> None:
    """The example's table, short (its full 600-step run is asserted by
    tests/test_kappa_scaling.py): every κ it lists trains at its defaults, the κ with an
    adaptive length also in their fixed form, and the default run keeps the constraint the κ
    induces."""
    ex = load("every_kappa")
    out = ex["main"]("digits", steps=30, kappas=("sign", "huber", "l2"))
    assert set(out) == {"sign", "huber", "l2"}
    assert all(r["constraint_holds"] for r in out.values())
    assert out["sign"]["fixed"] is None and out["l2"]["fixed"] is None  # fixed already
    assert out["huber"]["fixed"] is not None
    printed = capsys.readouterr().out
    assert "huber" in printed and "fixed" in printed
