"""The documentation's code runs: every ```python block of README.md and docs/*.md is executed.

* The blocks of one file share a namespace and run in the file's order (a later block may use
  what an earlier one defined); each block is reported as its own test, named ``FILE:LINE``.
* A block whose first line is ``# skip-test`` is skipped, and so is a block that imports a
  module this environment does not have (torch, jax, ... are optional extras of lionk).
* Each file's blocks run in a fresh Python process, in a temporary working directory, under
  every backend's *default* settings (JAX in float32: tests/conftest.py's global x64 flag does
  not reach them), as a reader running the page would.

Relative links between the pages are checked too.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_MARK = "# skip-test"


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the first code line
    code: str

    @property
    def id(self) -> str:
        try:
            return f"{self.path.relative_to(ROOT)}:{self.line}"
        except ValueError:  # a page outside the repository (tests/test_docs_defaults.py)
            return f"{self.path.name}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """The ```python fenced blocks of a Markdown file, in order."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i + 1
            j = start
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            if j == len(lines):
                raise AssertionError(f"{path.name}:{i + 1}: unterminated ```python block")
            blocks.append(Block(path, start + 1, "\n".join(lines[start:j]) + "\n"))
            i = j
        i += 1
    return blocks


def missing_imports(code: str) -> list[str]:
    """Top-level modules imported by ``code`` that cannot be found in this environment."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return sorted(n for n in names if importlib.util.find_spec(n) is None)


RUNNER = r"""
import json, os, sys, tempfile, traceback
blocks = json.load(sys.stdin)
outcomes = []
namespace = {"__name__": sys.argv[1]}
with tempfile.TemporaryDirectory() as tmp:
    os.chdir(tmp)
    for block in blocks:
        if block["outcome"] is not None:
            outcomes.append(block["outcome"])
            continue
        source = "\n" * (block["line"] - 1) + block["code"]
        try:
            exec(compile(source, block["path"], "exec"), namespace)
        except BaseException:
            outcomes.append(["fail", block["id"] + " raised:\n" + traceback.format_exc()])
        else:
            outcomes.append(["ok", ""])
    os.chdir("/")
sys.stdout.write("\n@@OUTCOMES@@" + json.dumps(outcomes) + "\n")
"""


@functools.cache
def run_file(path: Path) -> tuple[tuple[str, str], ...]:
    """Run a file's blocks in order in one namespace, in a fresh process (default backend
    settings); ``(outcome, detail)`` for each block, outcome being ``"ok"``, ``"skip"`` or
    ``"fail"``."""
    payload = []
    for block in python_blocks(path):
        first = block.code.lstrip().splitlines()[0] if block.code.strip() else ""
        outcome = None
        if first.strip() == SKIP_MARK:
            outcome = ["skip", f"{block.id}: marked {SKIP_MARK}"]
        else:
            missing = missing_imports(block.code)
            if missing:
                outcome = ["skip", f"{block.id}: needs {', '.join(missing)}"]
        payload.append({"id": block.id, "line": block.line, "code": block.code,
                        "path": str(block.path), "outcome": outcome})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("MPLBACKEND", "Agg")
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, f"doc_{path.stem.replace('-', '_')}"],
        input=json.dumps(payload), capture_output=True, text=True, env=env, timeout=1800,
    )
    marker = proc.stdout.rfind("@@OUTCOMES@@")
    if marker < 0:
        detail = f"{path.name}: the block runner died (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
        return tuple(("fail", detail) for _ in payload)
    return tuple((o, d) for o, d in json.loads(proc.stdout[marker + len("@@OUTCOMES@@"):]))


ALL_BLOCKS = [(path, k, b) for path in DOC_FILES for k, b in enumerate(python_blocks(path))]


@pytest.mark.parametrize(
    ("path", "index"), [(p, k) for p, k, _ in ALL_BLOCKS], ids=[b.id for _, _, b in ALL_BLOCKS]
)
def test_code_block_runs(path: Path, index: int) -> None:
    outcome, detail = run_file(path)[index]
    if outcome == "skip":
        pytest.skip(detail)
    if outcome == "fail":
        pytest.fail(detail, pytrace=False)


def test_every_page_exists_and_readme_has_code() -> None:
    expected = {"index.md", "theory.md", "kappa.md", "api.md", "reproducibility.md",
                "conformance.md"}
    present = {p.name for p in DOC_FILES if p.parent.name == "docs"}
    assert expected <= present, f"missing docs pages: {sorted(expected - present)}"
    assert python_blocks(ROOT / "README.md"), "README.md has no python example"


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("path", DOC_FILES, ids=[str(p.relative_to(ROOT)) for p in DOC_FILES])
def test_relative_links_resolve(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    broken = [
        target for target in LINK.findall(text)
        if "://" not in target and not target.startswith("mailto:")
        and not (path.parent / target).exists()
    ]
    assert not broken, f"{path.name}: links to missing files {broken}"
