"""The documentation says what the code does: signatures, examples, public names.

* Every signature written out in the docs (the ``lionk.minimize`` API block, ``LionK`` in
  torch.md, ``lion_k`` in optax.md, the ``lionk.lyapunov`` table of api.md) has the parameters,
  kinds and defaults of ``inspect.signature`` of the callable.
* docs/examples.md lists every script of examples/.
* No page cites a private module (``lionk._…``).
* Doc blocks run under each backend's default settings (tests/test_docs.py runs every page in a
  fresh process); here, that this is so: JAX float32 in a page's process, and the optax.md block
  that failed under float32 passes.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

import lionk

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def documented(text: str, start: str) -> str:
    """The signature that begins with ``start`` in ``text``: up to its matching parenthesis."""
    i = text.index(start)
    j = text.index("(", i)
    depth = 0
    for k in range(j, len(text)):
        depth += {"(": 1, ")": -1}.get(text[k], 0)
        if depth == 0:
            return " ".join(text[j:k + 1].split())
    raise AssertionError(f"unbalanced signature after {start!r}")


def parsed(params: str) -> list[tuple[str, str, Any]]:
    """(name, kind, default) of each parameter of a documented ``(…)`` list."""
    fn = ast.parse(f"def f{params}: pass").body[0]
    assert isinstance(fn, ast.FunctionDef)
    a = fn.args
    out: list[tuple[str, str, Any]] = []
    pos = a.posonlyargs + a.args
    defaults = [inspect.Parameter.empty] * (len(pos) - len(a.defaults)) + [
        ast.literal_eval(d) for d in a.defaults]
    for arg, d in zip(pos, defaults):
        out.append((arg.arg, "positional", d))
    for arg, d in zip(a.kwonlyargs, a.kw_defaults):
        out.append((arg.arg, "keyword", inspect.Parameter.empty if d is None
                    else ast.literal_eval(d)))
    return out


def actual(fn: Any) -> list[tuple[str, str, Any]]:
    out = []
    for p in inspect.signature(fn).parameters.values():
        kind = "keyword" if p.kind is inspect.Parameter.KEYWORD_ONLY else "positional"
        out.append((p.name, kind, p.default))
    return out


def lyapunov_rows() -> list[tuple[str, str]]:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    section = text[text.index("## Lyapunov diagnostics"):]
    section = section[:section.index("\n## ", 3)] if "\n## " in section[3:] else section
    return re.findall(r"^\| `(\w+)(\(.*?\))` \|", section, flags=re.M)


CASES = [
    ("minimize.md", "lionk.minimize(fun, x0, *", "lionk.minimize"),
    ("torch.md", "`LionK(params", "lionk.torch.LionK"),
    ("optax.md", "lionk.optax.lion_k(", "lionk.optax.lion_k"),
]


def resolve(dotted: str) -> Any:
    mod, _, name = dotted.rpartition(".")
    if mod.split(".")[-1] in ("torch", "optax"):
        pytest.importorskip(mod.split(".")[-1])
    return getattr(importlib.import_module(mod), name)


@pytest.mark.parametrize(("page", "start", "dotted"), CASES, ids=[c[2] for c in CASES])
def test_documented_signature_matches_the_code(page: str, start: str, dotted: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    doc = parsed(documented(text, start))
    code = actual(resolve(dotted))
    assert doc == code, f"{page} documents {doc}; the code has {code}"


@pytest.mark.parametrize(("name", "params"), lyapunov_rows(), ids=lambda v: str(v)[:30])
def test_api_md_lyapunov_table_matches_the_code(name: str, params: str) -> None:
    assert parsed(params) == actual(getattr(lionk.lyapunov, name))


def test_every_lyapunov_function_is_in_the_api_table() -> None:
    assert {n for n, _ in lyapunov_rows()} == set(lionk.lyapunov.__all__)


def test_examples_md_lists_every_script() -> None:
    text = (DOCS / "examples.md").read_text(encoding="utf-8")
    scripts = sorted(p.name for p in (ROOT / "examples").glob("*.py"))
    missing = [s for s in scripts if f"(../examples/{s})" not in text]
    assert not missing, f"docs/examples.md does not list {missing}"


def test_no_page_cites_a_private_module() -> None:
    pages = [ROOT / "README.md", *DOCS.glob("*.md")]
    cited = [(p.name, m) for p in pages
             for m in re.findall(r"lionk\.\\?_[a-z][\w\\]*", p.read_text(encoding="utf-8"))]
    assert not cited, cited


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs jax")
def test_doc_pages_run_under_default_backend_settings(tmp_path: Path) -> None:
    """A page's blocks see JAX's default float32 although this session enabled x64; the optax.md
    block that failed under float32 (main's assert needed 1e-6 at the box edge) passes."""
    import jax

    from tests.test_docs import run_file

    assert jax.config.jax_enable_x64  # this session: tests/conftest.py
    page = tmp_path / "defaults.md"
    page.write_text("```python\nimport jax, jax.numpy as jnp\n"
                    "assert not jax.config.jax_enable_x64\n"
                    "assert jnp.asarray(1.0).dtype == jnp.float32\n```\n", encoding="utf-8")
    assert run_file(page) == (("ok", ""),)
    outcome, detail = run_file(DOCS / "optax.md")[0]
    if outcome == "skip":
        pytest.skip(detail)
    assert outcome == "ok", detail
