"""MkDocs hook of the lionk site (``hooks:`` in mkdocs.yml), and a griffe extension for the API
reference.

Generated regions. A page may hold a region

    <!-- generated:NAME -->
    ...what GitHub shows (a hand-written table, or a note)...
    <!-- /generated:NAME -->

which the site build replaces:

* ``kappa-catalogue`` (kappa.md): the κ catalogue from ``docs/gen_kappa_table.py``, built from
  the registry; a registered κ without a catalogue entry fails the build;
* ``conformance-report`` (conformance-report.md): ``conformance-report/report.md`` when it
  exists at build time (``make conformance`` writes it), else the region's note stays;
* ``benchmark-results`` (benchmarks.md): ``benchmarks/results.md`` and ``results.png`` when
  they exist (``python -m benchmarks`` writes them), else the region's note stays;
* ``examples`` (examples.md): the source of every ``examples/*.py``.

Links out of docs/. The pages link to the example scripts as ``../examples/NAME.py``, which
works when reading the Markdown in the repository; on the site such a link goes to the script's
section of examples.md. Any other link leaving docs/ is a warning (so an error under
``--strict``).

The build reads files only; it needs no network.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import posixpath
import re
import sys
from pathlib import Path
from typing import Any

import griffe
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.lionk")

DOCS = Path(__file__).resolve().parent

CONFORMANCE_REPORT = Path("conformance-report") / "report.md"
BENCHMARK_RESULTS = Path("benchmarks") / "results.md"
BENCHMARK_PLOT = Path("benchmarks") / "results.png"
EXAMPLES = Path("examples")

# page -> the regions it must hold
REGIONS = {
    "kappa.md": ["kappa-catalogue"],
    "conformance-report.md": ["conformance-report"],
    "benchmarks.md": ["benchmark-results"],
    "examples.md": ["examples"],
}

_REGION = r"<!-- generated:{name} -->\n(?P<body>.*?)<!-- /generated:{name} -->"

# Filled by on_files for on_page_markdown: region name -> Markdown.
_generated: dict[str, str] = {}


def load_generator() -> Any:
    """``docs/gen_kappa_table.py`` as a module (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("lionk_gen_kappa_table", DOCS / "gen_kappa_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def replace_region(markdown: str, name: str, body: str, page: str = "page") -> str:
    """``markdown`` with the body of region ``name`` replaced by ``body``."""
    pattern = re.compile(_REGION.format(name=re.escape(name)), re.S)
    found = pattern.findall(markdown)
    if len(found) != 1:
        raise PluginError(f"{page}: expected one region '<!-- generated:{name} -->' ... "
                          f"'<!-- /generated:{name} -->', found {len(found)}")
    return pattern.sub(lambda _: body.rstrip("\n") + "\n", markdown)


# ---------------------------------------------------------------------------------------------
# Including Markdown written by the tools (conformance report, benchmark results).

_BLOCK_START = re.compile(r"^(\s*[-*+] |\s*\d+\. |\||#|>|```|    )")
_LINK = re.compile(r"(!?\[[^\]]*\])\(([^)\s]+)\)")


def embed(text: str, *, source: Path, root: Path, assets: list[tuple[str, Path]]) -> str:
    """Tool-written Markdown made fit for a page: its title dropped, headings one level down,
    single line breaks kept (the tools write one fact per line), and local files it links to
    (a plot, the JSON) published next to the page as ``assets/...``."""
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    out: list[str] = []
    fenced = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("#"):
            line = "#" + line
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        plain = line.strip() and not fenced and not _BLOCK_START.match(line)
        if not fenced:
            line = _escape_stars(line)  # "dom K*" twice in a paragraph is not emphasis
        if plain and nxt.strip():
            line = line + ("\n" if _BLOCK_START.match(nxt) else "  ")
        out.append(line)
    body = "\n".join(out).strip("\n") + "\n"

    def relink(m: re.Match[str]) -> str:
        label, target = m.group(1), m.group(2)
        if "://" in target or target.startswith(("#", "mailto:")):
            return m.group(0)
        path = (source.parent / target.split("#")[0]).resolve()
        if path.is_file() and path.is_relative_to(root.resolve()):
            uri = publish(path, root, assets)
            return f"{label}({uri})"
        log.info("%s links to %s, which does not exist: left as text", source, target)
        return label[1:-1] if not label.startswith("!") else ""

    return _LINK.sub(relink, body)


def publish(path: Path, root: Path, assets: list[tuple[str, Path]]) -> str:
    """The site URI (relative to docs/) under which repository file ``path`` is published."""
    uri = posixpath.join("assets", path.relative_to(root).as_posix())
    if (uri, path) not in assets:
        assets.append((uri, path))
    return uri


def conformance_region(root: Path, assets: list[tuple[str, Path]]) -> str | None:
    report = root / CONFORMANCE_REPORT
    if not report.is_file():
        return None
    body = embed(report.read_text(encoding="utf-8"), source=report, root=root, assets=assets)
    extra = ""
    raw = report.with_name("report.json")
    if raw.is_file():
        extra = f"The full data of this run: [report.json]({publish(raw, root, assets)}).\n\n"
    return (f"Included from `{CONFORMANCE_REPORT.as_posix()}`, as it was when this site was "
            f"built.\n\n{extra}{body}")


def benchmark_region(root: Path, assets: list[tuple[str, Path]]) -> str | None:
    results = root / BENCHMARK_RESULTS
    plot = root / BENCHMARK_PLOT
    if not results.is_file() and not plot.is_file():
        return None
    parts = [f"Included from `{BENCHMARK_RESULTS.parent.as_posix()}/`, as it was when this site "
             "was built."]
    if plot.is_file():
        parts.append(f"![Time per step relative to the memory-bandwidth floor, by size]"
                     f"({publish(plot, root, assets)})")
    raw = results.with_name("results.json")
    if raw.is_file():
        parts.append(f"Every sample of this run: [results.json]({publish(raw, root, assets)}).")
    if results.is_file():
        parts.append(embed(results.read_text(encoding="utf-8"), source=results, root=root,
                           assets=assets))
    return "\n\n".join(parts) + "\n"


def example_anchor(stem: str) -> str:
    return "example-" + re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")


def examples_region(root: Path) -> str:
    scripts = sorted((root / EXAMPLES).glob("*.py"))
    if not scripts:
        raise PluginError(f"no example scripts in {root / EXAMPLES}")
    parts = []
    for path in scripts:
        source = path.read_text(encoding="utf-8").rstrip("\n")
        doc = ast.get_docstring(ast.parse(source)) or ""
        summary = doc.split("\n\n")[0].replace("\n", " ").strip()
        longest = max((len(run) for run in re.findall(r"`+", source)), default=0)
        fence = "`" * max(3, longest + 1)
        parts.append(f"## `{path.name}` {{ #{example_anchor(path.stem)} }}\n\n"
                     + (f"{summary}\n\n" if summary else "")
                     + f"Run: `python examples/{path.name}` (from the repository root).\n\n"
                     f"{fence}python\n{source}\n{fence}\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# MkDocs events.


def on_files(files: Files, config: Any) -> Files:
    """Generate every region once per build, and publish the files they link to."""
    root = Path(config["config_file_path"]).resolve().parent
    _generated.clear()
    try:
        _generated["kappa-catalogue"] = load_generator().markdown()
    except Exception as exc:  # CatalogueError, or the registry failing to import
        raise PluginError(f"docs/gen_kappa_table.py: {exc}") from exc
    assets: list[tuple[str, Path]] = []
    for name, body in (("conformance-report", conformance_region(root, assets)),
                       ("benchmark-results", benchmark_region(root, assets))):
        if body is not None:
            _generated[name] = body
    _generated["examples"] = examples_region(root)
    for uri, path in assets:
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


# tests/test_docs.py skips a ```python block whose first line is "# skip-test" (it needs a GPU);
# readers of the site do not need that line.
_SKIP_TEST = re.compile(r"^(\s*```python[^\n]*\n)\s*# skip-test[^\n]*\n", re.M)

_OUT_LINK = re.compile(r"\]\((\.\./[^)\s#]+)(#[^)\s]*)?\)")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    src = page.file.src_uri
    for name in REGIONS.get(src, []):
        if name in _generated:
            markdown = replace_region(markdown, name, _generated[name], src)
        else:  # keep the note that GitHub shows, but check that the region is there
            replace_region(markdown, name, "", src)

    root = Path(config["config_file_path"]).resolve().parent
    docs = Path(config["docs_dir"]).resolve()

    def relink(m: re.Match[str]) -> str:
        target = (docs / posixpath.dirname(src) / m.group(1)).resolve()
        examples = (root / EXAMPLES).resolve()
        prefix = "../" * src.count("/")
        if target == examples:
            return f"]({prefix}examples.md)"
        if target.parent == examples and target.suffix == ".py" and target.is_file():
            return f"]({prefix}examples.md#{example_anchor(target.stem)})"
        log.warning("Doc file '%s' links to '%s', outside docs/; the site has no page for it "
                    "(docs/hooks.py maps only ../examples/*.py)", src, m.group(1))
        return m.group(0)

    markdown = _SKIP_TEST.sub(r"\1", markdown)
    return _OUT_LINK.sub(relink, markdown)


# ---------------------------------------------------------------------------------------------
# Griffe extension (mkdocs.yml: mkdocstrings python options, extensions).

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|exc|obj|const):`~?([^`]+)`")
_SIMPLE_TABLE_BORDER = re.compile(r"^\s*=+(\s+=+)+\s*$")


def rest_to_markdown(text: str) -> str:
    """The reST constructs lionk's Google-style docstrings use, as Markdown: roles become code;
    ``text::`` literal-block markers become ``text:`` (the indented block that follows is a
    Markdown code block already); simple tables become preformatted text; and a lone ``*``
    after a letter (``K*(z)``, ``dom K*``: the convex conjugate) is escaped, where Markdown
    would take two of them for emphasis."""
    text = _ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    lines = text.split("\n")
    out: list[str] = []
    literal_indent: int | None = None  # inside a literal block opened by "::"
    i = 0
    while i < len(lines):
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None:
            if not line.strip() or indent > literal_indent:
                out.append(line)
                i += 1
                continue
            literal_indent = None
        if _SIMPLE_TABLE_BORDER.match(line):
            borders = [j for j in range(i, len(lines)) if _SIMPLE_TABLE_BORDER.match(lines[j])]
            if len(borders) >= 3:
                end = borders[2]
                out.append(" " * indent + "```text")
                out.extend(lines[i:end + 1])
                out.append(" " * indent + "```")
                i = end + 1
                continue
        stripped = line.rstrip()
        if stripped.endswith("::") and not stripped.endswith(":::"):
            literal_indent = indent
            line = stripped[:-2].rstrip() + ":" if stripped.strip() != "::" else ""
        out.append(_escape_stars(line))
        i += 1
    return "\n".join(out)


_CODE_SPAN = re.compile(r"(``.+?``|`[^`]+`)")


def _escape_stars(line: str) -> str:
    """Escape each ``*`` that follows a letter, digit or ``)`` and does not close an emphasis
    opened on the same line (``*word*``), outside code spans."""
    parts = _CODE_SPAN.split(line)
    emphasis = False
    for k in range(0, len(parts), 2):  # even parts are outside code spans
        seg, out = parts[k], []
        for j, c in enumerate(seg):
            if c == "*":
                prev = seg[j - 1] if j else " "
                nxt = seg[j + 1] if j + 1 < len(seg) else " "
                if prev.isalnum() or prev == ")":
                    if emphasis:
                        emphasis = False
                    elif nxt != "*" and prev != "*":
                        c = "\\*"
                elif not nxt.isspace() and nxt != "*":
                    emphasis = True
            out.append(c)
        parts[k] = "".join(out)
    return "".join(parts)


_ARGS_HEADER = re.compile(r"^(\s*)(Args|Arguments|Parameters|Params):\s*$")
_MULTI_ENTRY = re.compile(r"^(\s*)(\w+(?:\s*,\s*\w+)+):(.*)$")


def split_shared_args(text: str) -> str:
    """Google-style ``Args:`` entries that document several parameters at once
    (``params, grads: trees of ...``) as one entry per parameter with the same description,
    so that griffe matches each to the signature (and shows its type)."""
    lines = text.split("\n")
    out: list[str] = []
    section: int | None = None  # indent of the "Args:" line we are in
    i = 0
    while i < len(lines):
        line = lines[i]
        header = _ARGS_HEADER.match(line)
        indent = len(line) - len(line.lstrip())
        if header:
            section = len(header.group(1))
        elif section is not None and line.strip() and indent <= section:
            section = None
        entry = _MULTI_ENTRY.match(line) if section is not None else None
        if entry and len(entry.group(1)) > section:
            j = i + 1
            while j < len(lines) and (not lines[j].strip()
                                      or len(lines[j]) - len(lines[j].lstrip()) > len(entry.group(1))):
                j += 1
            while j > i + 1 and not lines[j - 1].strip():  # keep trailing blank lines after
                j -= 1
            for name in (n.strip() for n in entry.group(2).split(",")):
                out.append(f"{entry.group(1)}{name}:{entry.group(3)}")
                out.extend(lines[i + 1:j])
            i = j
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class RestLeftovers(griffe.Extension):
    """Rewrite reST leftovers in lionk's docstrings, and split shared ``Args`` entries, before
    mkdocstrings parses them."""

    def on_instance(self, *, node: Any, obj: Any, agent: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = split_shared_args(rest_to_markdown(obj.docstring.value))
