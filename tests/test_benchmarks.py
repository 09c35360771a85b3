"""The benchmark harness (benchmarks/): a --quick run on tiny sizes writes well-formed results.

No wall time is asserted anywhere: the machines are shared and noisy. The run skips the
torch.compile contenders (``--skip compile``) to stay short; they are then listed as skipped
with that reason, which is what is checked for them.
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
        [sys.executable, "-m", "benchmarks", "--quick", "--sizes", "12,model:0",
         "--skip", "compile", "--budget", "0.3", "--out", str(out)],
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
    from benchmarks.contenders import all_contenders

    _, res, _ = quick_run
    names = [c.name for c in all_contenders("cpu")]
    assert [s["label"] for s in res["sizes"]] == ["2^12", "model:0"]
    assert set(res["machine"]["other_load"]) == {"2^12", "model:0"}
    for s in res["sizes"]:
        rows = {r["name"]: r for r in res["rows"] if r["size"] == s["label"]}
        assert sorted(rows) == sorted(names), s["label"]
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
                     "torch AdamW fused", "lion_pytorch.Lion default"):
            assert rows[must]["status"] == "ok", (must, rows[must]["reason"])
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
    assert len(res["targets"]) >= 8
    for t in res["targets"]:
        assert t["status"] in ("met", "not met", "not measured") and t["detail"]
        assert t["target"] in md
        # 2^24 and the 148-tensor model are not part of this run
        assert t["status"] == "not measured"


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
    from benchmarks.contenders import all_contenders
    from benchmarks.harness import parse_args
    from benchmarks.workloads import parse_size

    model = parse_size("model")
    assert 140 <= model.leaves <= 160 and 9.5e6 <= model.n <= 10.5e6
    assert parse_size("2^16").n == parse_size("16").n == 1 << 16
    assert parse_size("model:2").leaves == 28
    s = parse_args(["--device", "cuda"])
    assert [w.label for w in s.sizes][-2:] == ["2^28", "model"]
    cuda = {c.name: c for c in all_contenders("cuda")}
    assert "floor: torch copy" in cuda and "cupy naive Lion" in cuda
    assert "lion_pytorch.Lion use_triton" in cuda


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
