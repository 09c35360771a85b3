"""The documentation site (mkdocs.yml, docs/hooks.py, docs/gen_kappa_table.py).

* The κ catalogue is generated from the registry and covers every registered κ; a κ without a
  catalogue entry, a stale entry, a tier that contradicts ``Kappa.exact`` or a parameter without
  a stated range is an error (it fails the site build).
* When mkdocs, mkdocs-material and mkdocstrings-python are installed
  (``pip install -r requirements/docs.txt``), the site builds with ``mkdocs build --strict``,
  and includes the conformance report and benchmark results when they exist. Otherwise those
  tests are skipped.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import lionk
from lionk.kappa import Kappa, exact_sign

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

HAVE_MKDOCS = all(
    importlib.util.find_spec(m) is not None
    for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers", "pymdownx")
)
needs_mkdocs = pytest.mark.skipif(
    not HAVE_MKDOCS,
    reason="the documentation packages are not installed (pip install -r requirements/docs.txt)",
)


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gen = _load("lionk_docs_gen_kappa_table", DOCS / "gen_kappa_table.py")


def _cubic_factory() -> Kappa:
    """A valid κ (Lion's K = ‖y‖₁ under another name) that has no catalogue entry."""
    import numpy as np

    def distance(z):
        return np.max(np.maximum(np.abs(z) - 1.0, 0.0), initial=0.0)

    def conjugate(z):
        return np.asarray(np.inf if distance(z) > 0 else 0.0)

    return Kappa("cubic", grad=exact_sign, value=lambda y: np.sum(np.abs(y)),
                 conjugate=conjugate, domain_distance=distance, exact=True, separable=True)


# ---------------------------------------------------------------------------------------------
# The κ catalogue.


def test_catalogue_covers_every_registered_kappa() -> None:
    canonical = {lionk.kappa.get(n).name for n in lionk.kappa.available()}
    assert canonical == set(gen.CATALOGUE)
    md = gen.markdown()
    for name in canonical:
        assert f"| `{name}`" in md, name
    for alias in set(lionk.kappa.available()) - canonical:
        assert f"`{alias}`" in md, alias


def test_kappa_md_keeps_a_table_row_for_every_registered_kappa() -> None:
    """kappa.md read outside the site (GitHub) shows its hand-written tables; they name every κ."""
    text = (DOCS / "kappa.md").read_text(encoding="utf-8")
    region = text.split("<!-- generated:kappa-catalogue -->")[1].split(
        "<!-- /generated:kappa-catalogue -->")[0]
    for name in gen.CATALOGUE:  # three tables: formulas, parameters, facts
        assert region.count(f"| `{name}`") == 3, name
    assert gen.markdown().count("| `sign` |") == 2  # the generated parameters and facts rows


def test_catalogue_reads_names_parameters_and_flags_from_the_registry() -> None:
    rows = {r.name: r for r in gen.rows()}
    for name, row in rows.items():
        k = lionk.kappa.get(name)
        assert (row.exact, row.separable, row.params) == (k.exact, k.separable, k.params)
    assert rows["sign"].aliases == ("l1", "lion")
    md = gen.markdown()
    assert '`p=3.0` (> 1, finite), `scope="tensor"`' in md
    assert '| `huber` | `delta="auto"` (`"auto"` or > 0) |' in md  # the default: δ = 0.1·RMS


def test_catalogue_fails_for_a_registered_kappa_without_an_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # as if a new built-in had been added to the registry without documenting it
    monkeypatch.setitem(lionk.core.kappa._REGISTRY, "cubic", _cubic_factory)
    assert "cubic" in lionk.kappa.available()
    with pytest.raises(gen.CatalogueError, match="without a catalogue entry: \\['cubic'\\]"):
        gen.markdown()


def test_catalogue_fails_for_a_user_registered_kappa() -> None:
    lionk.kappa.register("cubic", _cubic_factory)
    try:
        with pytest.raises(gen.CatalogueError, match="cubic"):
            gen.rows()
    finally:
        lionk.kappa.unregister("cubic")


def test_catalogue_fails_for_a_stale_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(lionk.core.kappa._REGISTRY, "deadzone")
    with pytest.raises(gen.CatalogueError, match="not registered: \\['deadzone'\\]"):
        gen.markdown()


def test_catalogue_fails_when_the_tier_contradicts_exact() -> None:
    cat = dict(gen.CATALOGUE)
    assert lionk.kappa.get("sign").exact  # sign is exact at every setting
    cat["sign"] = dataclasses.replace(cat["sign"], tier="ulp")
    with pytest.raises(gen.CatalogueError, match="sign: the catalogue says tier 'ulp'"):
        gen.markdown(cat)


def test_catalogue_fails_for_a_parameter_without_a_range() -> None:
    cat = dict(gen.CATALOGUE)
    cat["lp"] = dataclasses.replace(cat["lp"], param_ranges={})
    with pytest.raises(gen.CatalogueError, match="lp: parameters without a range"):
        gen.markdown(cat)


def test_catalogue_script_prints_the_table() -> None:
    out = subprocess.run([sys.executable, str(DOCS / "gen_kappa_table.py")], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.startswith("| name | K(y) |")


# ---------------------------------------------------------------------------------------------
# The hook (imports mkdocs and griffe).


@pytest.fixture(scope="module")
def hooks() -> ModuleType:
    if not HAVE_MKDOCS:
        pytest.skip("the documentation packages are not installed")
    return _load("lionk_docs_hooks", DOCS / "hooks.py")


@needs_mkdocs
def test_hook_fails_the_build_for_a_kappa_without_an_entry(
    hooks: ModuleType, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mkdocs.exceptions import PluginError
    from mkdocs.structure.files import Files

    monkeypatch.setitem(lionk.core.kappa._REGISTRY, "cubic", _cubic_factory)
    with pytest.raises(PluginError, match="cubic"):
        hooks.on_files(Files([]), {"config_file_path": str(ROOT / "mkdocs.yml")})


@needs_mkdocs
def test_every_generated_region_is_in_its_page(hooks: ModuleType) -> None:
    for page, names in hooks.REGIONS.items():
        text = (DOCS / page).read_text(encoding="utf-8")
        for name in names:
            assert hooks.replace_region(text, name, "NEW", page).count("NEW") == 1


@needs_mkdocs
def test_rest_leftovers_become_markdown(hooks: ModuleType) -> None:
    f = hooks.rest_to_markdown
    assert f("see :func:`lionk.step` and :class:`~lionk.State`") == "see `lionk.step` and `lionk.State`"
    assert f("``conjugate(z)`` — K*(z), outside dom K*;") == "``conjugate(z)`` — K\\*(z), outside dom K\\*;"
    assert f("over a *param group*.") == "over a *param group*."
    assert f("Update::\n\n    x = lr*wd * K*(z)\n\nafter") == "Update:\n\n    x = lr*wd * K*(z)\n\nafter"
    table = "a\n\n=====  ===\nk      v\n=====  ===\nx      1\n=====  ===\n"
    assert f(table) == "a\n\n```text\n=====  ===\nk      v\n=====  ===\nx      1\n=====  ===\n```\n"


@needs_mkdocs
def test_shared_args_entries_are_split(hooks: ModuleType) -> None:
    doc = "Step.\n\nArgs:\n    params, grads: trees,\n        one library.\n    state: s.\n"
    assert hooks.split_shared_args(doc) == (
        "Step.\n\nArgs:\n    params: trees,\n        one library.\n"
        "    grads: trees,\n        one library.\n    state: s.\n")
    assert hooks.split_shared_args("Returns:\n    a, b: pair.") == "Returns:\n    a, b: pair."


# ---------------------------------------------------------------------------------------------
# The strict build.


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f", str(config),
         "-d", str(site)],
        capture_output=True, text=True, timeout=300, env=env, cwd=config.parent,
    )


@needs_mkdocs
def test_site_builds_in_strict_mode(tmp_path: Path) -> None:
    site = tmp_path / "site"
    res = _build(ROOT / "mkdocs.yml", site)
    assert res.returncode == 0, res.stdout + res.stderr
    kappa = (site / "kappa" / "index.html").read_text(encoding="utf-8")
    assert "generated from the registry" in kappa
    assert 'class="arithmatex"' in kappa
    reference = (site / "reference" / "index.html").read_text(encoding="utf-8")
    for name in ("lionk.step", "lionk.LionK", "lionk.minimize", "lionk.torch.LionK",
                 "lionk.optax.lion_k", "lionk.plot.history", "lionk.kappa", "lionk.tree"):
        assert f'id="{name}"' in reference, name
    examples = (site / "examples" / "index.html").read_text(encoding="utf-8")
    for script in (ROOT / "examples").glob("*.py"):
        assert f"examples/{script.name}" in examples
    assert "skip-test" not in (site / "quickstart" / "index.html").read_text(encoding="utf-8")


@needs_mkdocs
def test_site_includes_the_conformance_report_and_benchmark_results(tmp_path: Path) -> None:
    """A copy of the tree with a report and results in it: both appear on the site."""
    for part in ("docs", "examples", "lionk"):
        shutil.copytree(ROOT / part, tmp_path / part,
                        ignore=shutil.ignore_patterns("__pycache__", "_gen"))
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    report = tmp_path / "conformance-report"
    report.mkdir()
    (report / "report.md").write_text(
        "# lionk conformance report\n\n"
        "lionk 0.1.0; steps=200\n"
        "versions: numpy 2.4.6\n\n"
        "| backend | device | dtype | sign |\n|---|---|---|---|\n"
        "| numpy | cpu | float64 | bitwise L✓ C✓ |\n\n"
        "Controls: negative ones must be detected:\n"
        "- numpy: b1 > b2: detected (first violation at step 0)\n\n"
        "## Failures\n\nnone\n\n16 passed, 0 failed\n", encoding="utf-8")
    (report / "report.json").write_text("{}", encoding="utf-8")
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "results.md").write_text(
        "# lionk benchmark results\n\n## Machine\n\n- CPU: test\n\n"
        "## Targets (computed from this run)\n\n| target | status |\n|---|---|\n"
        "| numpy floor | **met** |\n\nSee the [plot](results.png).\n", encoding="utf-8")
    (bench / "results.png").write_bytes(
        bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                      "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"))
    site = tmp_path / "site"
    res = _build(tmp_path / "mkdocs.yml", site)
    assert res.returncode == 0, res.stdout + res.stderr

    conf = (site / "conformance-report" / "index.html").read_text(encoding="utf-8")
    assert "bitwise L✓ C✓" in conf and "No report was present" not in conf
    assert "16 passed, 0 failed" in conf
    assert "<li>numpy: b1 &gt; b2: detected" in conf   # the list stays a list
    assert (site / "assets" / "conformance-report" / "report.json").is_file()

    bench_html = (site / "benchmarks" / "index.html").read_text(encoding="utf-8")
    assert "No results were present" not in bench_html
    assert "<strong>met</strong>" in bench_html
    assert '<h3 id="machine">' in bench_html            # headings one level down
    assert bench_html.count("assets/benchmarks/results.png") >= 2   # the plot, and the link
    assert (site / "assets" / "benchmarks" / "results.png").read_bytes() == (
        bench / "results.png").read_bytes()
