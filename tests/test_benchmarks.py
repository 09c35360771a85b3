"""The benchmark harness (benchmarks/): a --quick run on tiny sizes writes well-formed results.

No wall time is asserted anywhere: the machines are shared and noisy. The run skips the
torch.compile contenders (``--skip compile``) to stay short; they are then listed as skipped
with that reason, which is what is checked for them. It covers 2^6 (the defaults, the peers
and the NumPy functional rows; no opt-in row), a 4-tensor model (the opt-in rows too) and the
lionk.minimize section with 5 iterations.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("torch", "jax", "matplotlib")),
    reason="the benchmark harness test needs torch, jax and matplotlib",
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--sizes", "6,model:0,minimize",
         "--skip", "compile", "--budget", "0.3", "--minimize-iters", "5", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text()), proc.stdout


def _positive(v: object) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def test_outputs_exist(quick_run: tuple[Path, dict, str]) -> None:
    out, _, stdout = quick_run
    for name in ("results.md", "results.json", "results.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Targets:" in stdout


def test_every_contender_timed_or_skipped_with_reason(quick_run: tuple[Path, dict, str]) -> None:
    from benchmarks.contenders import all_contenders, in_scope
    from benchmarks.workloads import parse_size

    _, res, _ = quick_run
    assert [s["label"] for s in res["sizes"]] == ["2^6", "model:0"]
    assert set(res["machine"]["other_load"]) == {"2^6", "model:0", "minimize"}
    for s in res["sizes"]:
        w = parse_size(s["label"])
        names = [c.name for c in all_contenders("cpu") if in_scope(c, w)]
        out_of_scope = [c.name for c in all_contenders("cpu") if not in_scope(c, w)]
        rows = {r["name"]: r for r in res["rows"] if r["size"] == s["label"]}
        assert sorted(rows) == sorted(names), s["label"]
        assert sorted(sum(s["not_timed"].values(), [])) == sorted(out_of_scope)
        assert _positive(s["floor_s"]) and _positive(s["bandwidth_used_Bps"])
        for r in rows.values():
            if r["status"] == "ok":
                assert r["samples_s"] and all(_positive(t) for t in r["samples_s"]), r["name"]
                assert _positive(r["median_s"]) and _positive(r["ratio_floor"]), r["name"]
                assert r["k"] >= 1
                if r["role"] != "floor":
                    assert r["mem_method"], r["name"]
                    if r["mem_bytes"] is not None:
                        assert r["mem_bytes"] >= 0 and r["mem_fraction"] >= 0
                for v in r["speedups"].values():
                    assert _positive(v)
            else:
                assert r["status"] == "skipped" and r["reason"].strip(), r["name"]
        # the harness's own contenders always run; the floors and the peers installed here too
        for must in ("floor: numpy x+=y", "floor: torch x+=y", "numpy naive Lion",
                     "torch hand Lion eager", "jax hand Lion jit", "optax.lion jit",
                     "torch AdamW fused", "torch AdamW default", "lion_pytorch.Lion default",
                     "lion_pytorch foreach.Lion"):
            assert rows[must]["status"] == "ok", (must, rows[must]["reason"])
        # every front-end's default is timed at every size
        for default in ("lionk.torch.LionK default", "lionk.LionK numpy default",
                        "lionk.step + jax.jit (user)", "lionk.optax.lion_k jit"):
            assert default in rows, (s["label"], default)
        small = s["label"] == "2^6"
        assert ("numpy hand Lion functional" in rows) == small
        assert ("lionk.step numpy" in rows) == small
        assert ("lionk.torch.LionK eager" in rows) == (not small)  # an opt-in row
        if small:
            assert rows["numpy hand Lion functional"]["status"] == "ok"
        for r in rows.values():
            if r["name"].endswith("compiled"):
                assert r["status"] == "skipped" and "--skip" in r["reason"]


def test_markdown_lists_every_row_and_target(quick_run: tuple[Path, dict, str]) -> None:
    out, res, _ = quick_run
    md = (out / "results.md").read_text()
    for heading in ("## Machine", "## Floor", "## Targets", "## Method"):
        assert heading in md
    for r in res["rows"]:
        assert f"| {r['name']} |" in md
    assert len(res["targets"]) >= 40
    assert "## lionk.minimize overhead (40 variables)" in md
    for t in res["targets"]:
        assert t["status"] in ("met", "not met", "not measured") and t["detail"]
        assert t["target"] in md
        if t["size"] not in ("2^6", "minimize"):  # 2^24, the 220-tensor model: not in this run
            assert t["status"] == "not measured", t
    # the targets on this run's sizes were measured from rows that ran (whatever their verdict)
    measured = {t["id"]: t for t in res["targets"] if t["status"] != "not measured"}
    for tid in ("torch-default-vs-lion_pytorch-2^6", "torch-default-vs-adamw-2^6",
                "jax-user-step-2^6", "jax-user-lion_k-2^6", "minimize-numpy",
                "minimize-torch", "minimize-jax"):
        assert tid in measured and _positive(measured[tid]["measured"] + 1), tid


def test_minimize_section(quick_run: tuple[Path, dict, str]) -> None:
    _, res, stdout = quick_run
    rows = {r["library"]: r for r in res["minimize"]}
    assert sorted(rows) == ["jax", "numpy", "torch"]
    for lib, r in rows.items():
        assert r["status"] == "ok", (lib, r["reason"])
        # tol=0: no early stop, every call ran its 5 iterations
        assert r["maxiter"] == r["nit"] == 5, lib
        assert r["nfev"] >= r["nit"] + 1
        assert r["vg_samples_s"] and r["min_samples_s"]
        assert all(_positive(t) for t in r["vg_samples_s"] + r["min_samples_s"])
        assert r["overhead"] == pytest.approx(r["per_iter_s"] / r["vg_s"] - 1)
    assert "minimize numpy" in stdout


def test_minimize_value_and_grad_match_a_float64_reference() -> None:
    """The three user functions of the minimize section compute the same logistic loss and
    gradient (checked against float64 NumPy and a central finite difference)."""
    import numpy as np

    from benchmarks import minimize_overhead as mo

    a, y = mo.problem()
    assert a.shape == (mo.N_SAMPLES, mo.N_VARS) and a.dtype == np.float32
    assert 0.2 < y.mean() < 0.8  # both classes present
    x = np.random.default_rng(1).uniform(-0.3, 0.3, mo.N_VARS)
    a64, y64 = a.astype(np.float64), y.astype(np.float64)

    def f64(v: np.ndarray) -> float:
        z = a64 @ v
        return float(np.mean(np.logaddexp(0.0, z) - y64 * z))

    g64 = a64.T @ (1 / (1 + np.exp(-(a64 @ x))) - y64) / len(y64)
    e = 1e-6
    fd = np.array([(f64(x + e * np.eye(mo.N_VARS)[i]) - f64(x - e * np.eye(mo.N_VARS)[i])) / (2 * e)
                   for i in range(mo.N_VARS)])
    np.testing.assert_allclose(fd, g64, rtol=1e-5, atol=1e-8)
    for lib, make in mo.CASES.items():
        case = make(a, y)
        x0 = case.x0
        xl = (x0.new_tensor(x) if lib == "torch" else
              np.asarray(x, np.float32) if lib == "numpy" else __import__("jax").numpy.asarray(
                  x, dtype="float32"))
        f, g = case.vg(xl)
        assert float(f) == pytest.approx(f64(x), rel=1e-5), lib
        np.testing.assert_allclose(np.asarray(g, dtype=np.float64), g64, rtol=1e-4, atol=1e-6,
                                   err_msg=lib)


def _fake(size: str, **medians: float) -> list[dict]:
    return [dict(name=n, backend=b, role=role, size=size, status="ok", reason="", median_s=t,
                 ratio_floor=t / 1e-3, mem_bytes=m, mem_fraction=f, mem_method="x")
            for (n, b, role, m, f), t in zip(ROWS, medians.values())]


ROWS = [
    ("lionk.torch.LionK compiled", "torch", "lionk", 100, 0.01),
    ("lionk.torch.LionK default", "torch", "lionk", 100, 0.01),
    ("lion_pytorch.Lion default", "torch", "peer", 100, 0.01),
    ("lionk.jit_step jax", "jax", "lionk", 0, 0.0),
    ("optax.lion jit", "jax", "peer", 0, 0.0),
    ("lionk.LionK numpy chunked", "numpy", "lionk", 10**6, 0.5),
]


def test_target_verdicts_are_computed() -> None:
    from benchmarks.report import evaluate_targets

    good = _fake("2^24", a=1.2e-3, b=1.2e-3, c=9e-3, d=1.5e-3, e=6e-3, f=1.9e-3)
    verdicts = {t["id"]: t for t in evaluate_targets({"rows": good})}
    assert verdicts["torch-2^24"]["status"] == "met"
    assert verdicts["torch-2^24"]["row"] == "lionk.torch.LionK compiled"
    assert verdicts["jax-2^24"]["status"] == "met"
    assert verdicts["numpy-2^24"]["status"] == "met"
    assert verdicts["torch-vs-lion_pytorch"]["status"] == "met"
    assert verdicts["torch-vs-lion_pytorch"]["measured"] == pytest.approx(7.5)
    assert verdicts["jax-vs-optax"]["status"] == "met"
    assert verdicts["mem-torch-2^24"]["status"] == "met"
    assert verdicts["mem-numpy-2^24"]["status"] == "not met"  # 50% of param bytes
    assert verdicts["torch-model"]["status"] == "not measured"

    bad = _fake("2^24", a=2e-3, b=2e-3, c=4e-3, d=3e-3, e=6e-3, f=3e-3)
    verdicts = {t["id"]: t for t in evaluate_targets({"rows": bad})}
    for tid in ("torch-2^24", "jax-2^24", "numpy-2^24", "torch-vs-lion_pytorch", "jax-vs-optax"):
        assert verdicts[tid]["status"] == "not met", tid


def test_sizes_and_cuda_contenders_parse_without_a_gpu() -> None:
    import numpy as np

    from benchmarks.contenders import all_contenders
    from benchmarks.harness import parse_args
    from benchmarks.workloads import parse_size, split_sizes

    # issue 12: >= 200 tensors from 64 to 2^20 elements, like a small transformer
    model = parse_size("model")
    sizes = [int(np.prod(s)) for s in model.shapes]
    assert model.leaves == 220 and min(sizes) == 64 and max(sizes) == 1 << 20
    assert 10e6 <= model.n <= 11e6
    assert parse_size("2^16").n == parse_size("16").n == 1 << 16
    assert parse_size("model:2").leaves == 40
    s = parse_args([])
    assert [w.label for w in s.sizes] == ["2^6", "2^10", "2^16", "2^20", "2^24", "model", "digits"]
    assert s.sections == ["minimize"] and not s.quick
    s = parse_args(["--sizes", "6,10", "--quick"])
    assert [w.label for w in s.sizes] == ["2^6", "2^10"] and s.sections == [] and s.quick
    s = parse_args(["--sizes", "minimize", "--minimize-iters", "12"])
    assert s.sizes == [] and s.sections == ["minimize"] and s.minimize_iters == 12
    assert split_sizes("6, minimize,minimize")[1] == ["minimize"]
    with pytest.raises(SystemExit):
        parse_args(["--sizes", "minimize", "--device", "cuda"])
    s = parse_args(["--device", "cuda"])
    assert [w.label for w in s.sizes][-2:] == ["2^28", "model"]
    cuda = {c.name: c for c in all_contenders("cuda")}
    assert "floor: torch copy" in cuda and "cupy naive Lion" in cuda
    assert "lion_pytorch.Lion use_triton" in cuda


def test_scopes() -> None:
    """Defaults, peers and floors at every size; opt-in rows at 2^16+ and on the models; the
    NumPy functional rows up to 2^16."""
    from benchmarks.contenders import all_contenders, in_scope
    from benchmarks.workloads import parse_size

    cs = {c.name: c for c in all_contenders("cpu")}
    w6, w16, w24, model, digits = (parse_size(x) for x in ("6", "16", "24", "model", "digits"))
    for name in ("lionk.torch.LionK default", "lionk.LionK numpy default",
                 "lionk.step + jax.jit (user)", "lionk.optax.lion_k jit", "optax.lion jit",
                 "lion_pytorch.Lion default", "lion_pytorch foreach.Lion", "torch AdamW default",
                 "floor: numpy x+=y"):
        assert all(in_scope(cs[name], w) for w in (w6, w16, w24, model, digits)), name
    for name in ("lionk.LionK numpy compiled", "lionk.torch.LionK eager", "lionk.jit_step jax",
                 "torch hand Lion compiled", "lionk.LionK numpy default, cosine lr"):
        assert not in_scope(cs[name], w6), name
        assert all(in_scope(cs[name], w) for w in (w16, w24, model, digits)), name
        assert in_scope(cs[name], w6, every_size=True)
    for name in ("lionk.step numpy", "numpy hand Lion functional"):
        assert in_scope(cs[name], w6) and in_scope(cs[name], w16) and in_scope(cs[name], digits)
        assert not in_scope(cs[name], w24) and not in_scope(cs[name], model)


def _row(name: str, backend: str, role: str, size: str, t: float) -> dict:
    return dict(name=name, backend=backend, role=role, size=size, status="ok", reason="",
                median_s=t, ratio_floor=t / 1e-3, mem_bytes=None, mem_fraction=None,
                mem_method="x")


def test_default_and_minimize_targets() -> None:
    """issue 12's targets are computed from the rows (and the minimize section) of a run."""
    from benchmarks.report import evaluate_targets

    rows = [_row("lionk.torch.LionK default", "torch", "lionk", "model", 4e-3),
            _row("lion_pytorch.Lion default", "torch", "peer", "model", 5e-3),
            _row("lion_pytorch foreach.Lion", "torch", "peer", "model", 5e-3),  # 1.25x: < 1.5
            _row("torch AdamW default", "torch", "peer", "model", 3e-3),
            _row("lionk.step numpy", "numpy", "lionk", "2^6", 9e-6),
            _row("numpy hand Lion functional", "numpy", "reference", "2^6", 5e-6),
            _row("lionk.LionK numpy default", "numpy", "lionk", "2^24", 1.4e-3),
            _row("lionk.step + jax.jit (user)", "jax", "lionk", "2^10", 2e-5),
            _row("optax.lion jit", "jax", "peer", "2^10", 1e-5)]
    mini = [dict(library="numpy", status="ok", reason="", overhead=0.1, per_iter_s=1.1e-5,
                 vg_s=1e-5, nit=300, nfev=305),
            dict(library="torch", status="ok", reason="", overhead=0.5, per_iter_s=1.5e-4,
                 vg_s=1e-4, nit=300, nfev=305),
            dict(library="jax", status="skipped", reason="jax missing", overhead=None)]
    v = {t["id"]: t for t in evaluate_targets({"rows": rows, "minimize": mini})}
    assert v["torch-default-vs-lion_pytorch-model"]["status"] == "met"
    assert v["torch-default-vs-lion_pytorch-model"]["measured"] == pytest.approx(1.25)
    assert v["torch-default-vs-foreach-model"]["status"] == "not met"
    assert v["torch-default-vs-adamw-model"]["status"] == "not met"
    assert v["torch-default-vs-adamw-model"]["measured"] == pytest.approx(0.75)
    assert v["torch-default-vs-adamw-2^6"]["status"] == "not measured"
    assert v["numpy-step-vs-hand-2^6"]["status"] == "met"  # 1.8x the time: <= 2x
    assert v["numpy-step-vs-hand-2^6"]["measured"] == pytest.approx(1.8)
    assert v["numpy-default-2^24"]["status"] == "met"  # 1.4x floor
    assert v["jax-user-step-2^10"]["status"] == "not met"
    assert v["jax-user-step-2^10"]["measured"] == pytest.approx(0.5)
    assert v["minimize-numpy"]["status"] == "met"
    assert v["minimize-numpy"]["measured"] == pytest.approx(0.1)
    assert v["minimize-torch"]["status"] == "not met"
    assert v["minimize-jax"]["status"] == "not measured" and "jax missing" in v["minimize-jax"]["detail"]
    v = {t["id"]: t for t in evaluate_targets({"rows": rows})}
    assert v["minimize-numpy"]["status"] == "not measured"
    rows[5]["median_s"] = 4e-6  # lionk.step 2.25x the hand-written one
    v = {t["id"]: t for t in evaluate_targets({"rows": rows})}
    assert v["numpy-step-vs-hand-2^6"]["status"] == "not met"


def test_torch_default_alias_is_followed() -> None:
    from benchmarks.report import evaluate_targets

    rows = _fake("2^24", a=1.0e-3, b=1.0e-3, c=9e-3, d=1.5e-3, e=6e-3, f=1.9e-3)
    rows[1].update(status="skipped", median_s=None, ratio_floor=None,
                   reason="same path as 'lionk.torch.LionK compiled' (default execution='compiled')")
    verdicts = {t["id"]: t for t in evaluate_targets({"rows": rows})}
    assert verdicts["torch-vs-lion_pytorch"]["row"] == "lionk.torch.LionK compiled"
    assert verdicts["torch-vs-lion_pytorch"]["measured"] == pytest.approx(9.0)


def test_jax_user_targets_against_optax_lion() -> None:
    """issue 12: jax.jit(lionk.step) and lion_k in a jitted step are each compared with optax.lion
    in the same run (≥ 1.0× = no slower); the digits MLP is a workload of 6 tensors."""
    from benchmarks.report import evaluate_targets
    from benchmarks.workloads import parse_size

    digits = parse_size("digits")
    assert digits.leaves == 6 and digits.n == 17_226 and digits.is_model
    rows = [dict(name=n, backend="jax", role=role, size="digits", status="ok", reason="",
                 median_s=t, ratio_floor=None, mem_bytes=None, mem_fraction=None, mem_method="x")
            for n, role, t in (("lionk.step + jax.jit (user)", "lionk", 1.0e-4),
                               ("lionk.optax.lion_k jit", "lionk", 1.2e-4),
                               ("optax.lion jit", "peer", 1.1e-4))]
    v = {t["id"]: t for t in evaluate_targets({"rows": rows})}
    assert v["jax-user-step-digits"]["status"] == "met"
    assert v["jax-user-step-digits"]["measured"] == pytest.approx(1.1)
    assert v["jax-user-lion_k-digits"]["status"] == "not met"
    assert v["jax-user-lion_k-2^24"]["status"] == "not measured"


def test_every_recorded_reason_names_a_target() -> None:
    """The reasons a target is not met are data keyed by target id (prefix): each key must
    still match a target, so that renaming a target cannot leave its reason behind."""
    from benchmarks import report

    ids = [t["id"] for t in report.TARGETS]
    for key in report.REASONS:
        assert any(i == key or i.startswith(key) for i in ids), key
    assert report.reason_for("torch-default-vs-lion_pytorch-2^6").startswith("small steps")
    assert report.reason_for("no-such-target") == ""
