r"""The κ catalogue of the documentation site, generated from lionk's κ registry.

What comes from the registry, at build time:

* the names: every name of ``lionk.kappa.available()``; a name whose ``Kappa.name`` differs
  (``l1``, ``lion``) is an alias of that κ;
* each κ's parameters and their defaults (``get(name).params``), its ``exact`` and
  ``separable`` flags, and its facts (``Kappa.facts()``: constraint, ternary, discontinuities,
  Lipschitz constant, tier).

What comes from ``CATALOGUE`` below (mathematics the code cannot state about itself): K, ∇K,
K*, the problem Lion-κ solves for x, the domain distance, the tier and the valid range of each
parameter.

The generator refuses to produce a table that could be stale: a registered κ without a
catalogue entry, an entry for a κ that is not registered, a tier that contradicts the ``exact``
flag, or a parameter without a stated range raises :class:`CatalogueError`, which fails the site
build (``docs/hooks.py``) and ``tests/test_docs_site.py``.

Run ``python docs/gen_kappa_table.py`` to print the Markdown.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any


class CatalogueError(RuntimeError):
    """The registry and the catalogue data disagree."""


@dataclass(frozen=True)
class Entry:
    K: str  # K(y), Markdown with $...$ math (use \Vert and \lvert, never "|", inside tables)
    grad: str  # ∇K(y)
    conjugate: str  # K*(z)
    problem: str  # the problem Lion-κ solves for x
    distance: str  # domain_distance(z)
    tier: str  # "exact" (∇K correctly rounded, bitwise tier possible) or "ulp"
    tier_why: str  # what puts it in its tier
    param_ranges: dict[str, str] = field(default_factory=dict)  # parameter -> valid range


_BOX = r"$\max_i (\lvert z_i\rvert - 1)_+$"
_AUTO = r'`"auto"` (the default): $0.1\,\mathrm{RMS}(y)$ of each array, re-measured every step'
_NO_K = r'none at `"auto"` (K changes with the input: no fixed K)'
_LENGTH_TIER = ('`"auto"`: a per-array RMS (sum, `sqrt`), not one fixed K; '
                'a number: exact (bitwise)')

# Keyed by the canonical name (``Kappa.name``), in the order of the table.
CATALOGUE: dict[str, Entry] = {
    "sign": Entry(
        K=r"$\Vert y\Vert _1$",
        grad=r"$\operatorname{sign}(y)$, with $\operatorname{sign}(\pm 0) = +0$ and NaN kept",
        conjugate=r"$0$ if $\Vert z\Vert _\infty \le 1$, else $+\infty$",
        problem=r"$\Vert x\Vert _\infty \le 1/\lambda$",
        distance=_BOX,
        tier="exact",
        tier_why="bitwise",
    ),
    "huber": Entry(
        K=r"$\sum_i h_\delta(y_i)$, $h_\delta(t) = t^2/(2\delta)$ if $\lvert t\rvert \le \delta$, "
        r"else $\lvert t\rvert - \delta/2$; $\delta$ a number, or " + _AUTO,
        grad=r"$\operatorname{clip}(y \cdot (1/\delta), -1, 1)$",
        conjugate=r"$\frac{\delta}{2}\Vert z\Vert _2^2$ on the box (a number $\delta$); " + _NO_K,
        problem=r"box, plus $\frac{\delta\lambda}{2}\Vert x\Vert _2^2$ (a number $\delta$); "
                r'the box at `"auto"`',
        distance=_BOX,
        tier="ulp",
        tier_why=_LENGTH_TIER,
        param_ranges={"delta": '`"auto"` or > 0'},
    ),
    "deadzone": Entry(
        K=r"$\sum_i \max(\lvert y_i\rvert - e, 0)$; $e$ a number, or " + _AUTO,
        grad=r"$\operatorname{sign}(y_i)$ if $\lvert y_i\rvert > e$, else $0$",
        conjugate=r"$e\Vert z\Vert _1$ on the box (a number $e$); " + _NO_K,
        problem=r"box, plus $e\Vert x\Vert _1$ (sparsity; a number $e$); the box at `\"auto\"`"
        .replace('\\"', '"'),
        distance=_BOX,
        tier="ulp",
        tier_why=_LENGTH_TIER,
        param_ranges={"e": '`"auto"` or > 0'},
    ),
    "quadratic": Entry(
        K=r"$\Vert y\Vert _2^2/(2s)$ (a number $s$; $s = 1$: $\frac12\Vert y\Vert _2^2$); "
          r'`"auto"` (the default): $\sqrt n\,\Vert y\Vert _2$, the `l2` κ at `scale="rms"`',
        grad=r"$y/s$; `\"auto\"`: $y/\mathrm{RMS}(y)$ per array ($0$ at $y = 0$)"
        .replace('\\"', '"'),
        conjugate=r"$\frac{s}{2}\Vert z\Vert _2^2$ everywhere; `\"auto\"`: $0$ if "
                  r"$\Vert z\Vert _2 \le \sqrt n$, else $+\infty$".replace('\\"', '"'),
        problem=r"penalty $\frac{s\lambda}{2}\Vert x\Vert _2^2$ (momentum SGD with decoupled "
                r'decay); `"auto"`: $\mathrm{RMS}(x) \le 1/\lambda$ per array (normalised '
                r"momentum SGD)",
        distance=r'$0$ (dom K* is everything); `"auto"`: $(\Vert z\Vert _2 - \sqrt n)_+$',
        tier="ulp",
        tier_why='`"auto"`: a per-array RMS (sum, `sqrt`); a number: exact (bitwise)',
        param_ranges={"scale": '`"auto"` (s = RMS(y)) or > 0'},
    ),
    "relativistic": Entry(
        K=r"$\sum_i \sqrt{y_i^2 + \delta^2} - \delta$; $\delta$ a number, or " + _AUTO,
        grad=r"$y_i / \sqrt{y_i^2 + \delta^2}$",
        conjugate=r"$\sum_i \delta - \delta\sqrt{1 - z_i^2}$ on the box (a number $\delta$); "
                  + _NO_K,
        problem=r"box, plus a barrier whose slope is infinite at $\lvert x_i\rvert = 1/\lambda$ "
                r'(a number $\delta$); the box at `"auto"`',
        distance=_BOX,
        tier="ulp",
        tier_why='`sqrt`, division (and the per-array RMS of `"auto"`)',
        param_ranges={"delta": '`"auto"` or > 0'},
    ),
    "l2": Entry(
        K=r"$s\,\Vert y\Vert _2$; `scale=\"rms\"` (the default): $s = \sqrt n$ ($n$ elements: the "
          r"array's, or the tree's for `scope=\"global\"`)".replace('\\"', '"'),
        grad=r"$s\,y / \Vert y\Vert _2$ ($0$ at $y = 0$); at `\"rms\"` $y/\mathrm{RMS}(y)$"
        .replace('\\"', '"'),
        conjugate=r"$0$ if $\Vert z\Vert _2 \le s$, else $+\infty$",
        problem=r'$\mathrm{RMS}(x) \le 1/\lambda$ at `"rms"`; $\Vert x\Vert _2 \le s/\lambda$ for '
                r"a number $s$",
        distance=r"$(\Vert z\Vert _2 - s)_+$",
        tier="ulp",
        tier_why="sum, `sqrt`",
        param_ranges={"scale": '`"rms"` ($s = \\sqrt n$) or > 0'},
    ),
    "lp": Entry(
        K=r"$s\,\Vert y\Vert _p$, $1 < p < \infty$; `scale=\"rms\"` (the default): "
          r"$s = n^{1/q}$".replace('\\"', '"'),
        grad=r"$s\operatorname{sign}(y)\,(\lvert y\rvert/\Vert y\Vert _p)^{p-1}$ ($0$ at $y = 0$)",
        conjugate=r"$0$ if $\Vert z\Vert _q \le s$, else $+\infty$; $1/p + 1/q = 1$",
        problem=r'$\Vert x\Vert _q / n^{1/q} \le 1/\lambda$ at `"rms"`; '
                r"$\Vert x\Vert _q \le s/\lambda$ for a number $s$",
        distance=r"$(\Vert z\Vert _q - s)_+$",
        tier="ulp",
        tier_why="`pow`, sum",
        param_ranges={"p": "> 1, finite", "scale": '`"rms"` ($s = n^{1/q}$) or > 0'},
    ),
    "relativistic-l2": Entry(
        K=r"$s\,(\sqrt{\Vert y\Vert _2^2 + \delta^2} - \delta)$, $s$ as for `l2`; $\delta$ a "
          r'number, or `"auto"` (the default): $0.1\,\mathrm{RMS}(y)$, re-measured every step',
        grad=r"$s\,y / \sqrt{\Vert y\Vert _2^2 + \delta^2}$",
        conjugate=r"$s\,(\delta - \delta\sqrt{1 - \Vert z/s\Vert _2^2})$ on the ℓ2 ball of radius "
                  r"$s$ (a number $\delta$); " + _NO_K,
        problem=r'ℓ2 ball ($\mathrm{RMS}(x) \le 1/\lambda$ at `scale="rms"`), plus a barrier '
                r"(a number $\delta$)",
        distance=r"$(\Vert z\Vert _2 - s)_+$",
        tier="ulp",
        tier_why="sum, `sqrt`",
        param_ranges={"delta": '`"auto"` or > 0', "scale": '`"rms"` ($s = \\sqrt n$) or > 0'},
    ),
    "group-l2": Entry(
        K=r"$s\sum_g \Vert y_g\Vert _2$ over the groups (rows along `axis`; a 1-D leaf is one "
          r"group, a 0-d leaf $\lvert y\rvert$); `scale=\"rms\"` (the default): "
          r"$s = \sqrt{n_g}$, $n_g$ the group size".replace('\\"', '"'),
        grad=r"$s\,y_g / \Vert y_g\Vert _2$ per group ($0$ for a zero group)",
        conjugate=r"$0$ if $\max_g \Vert z_g\Vert _2 \le s$, else $+\infty$",
        problem=r'$\Vert x_g\Vert _2/\sqrt{n_g} \le 1/\lambda$ (every group' "'s RMS) at "
                r'`"rms"`; '
                r"$\Vert x_g\Vert _2 \le s/\lambda$ for a number $s$; for every group (row) $g$",
        distance=r"$(\max_g \Vert z_g\Vert _2 - s)_+$",
        tier="ulp",
        tier_why="sum, `sqrt`",
        param_ranges={"axis": "an int or a tuple of ints: the axes a group spans",
                      "scale": '`"rms"` ($s = \\sqrt{n_g}$) or > 0'},
    ),
    "nuclear": Entry(
        K=r"$s\,\Vert Y\Vert _*$ (sum of singular values; leaves reshaped to matrices as Muon does)",
        grad=r"$s\,U V^\top$ for $Y = U\Sigma V^\top$ (polar factor; SVD or Newton–Schulz)",
        conjugate=r"$0$ if $\Vert Z\Vert _{op} \le s$, else $+\infty$",
        problem=r"spectral norm $\Vert X\Vert _{op} \le s/\lambda$ per matrix; at `scale=\"rms\"` "
                r"$\Vert X\Vert _{op}/\sqrt{\max(A, B)} \le 1/\lambda$".replace('\\"', '"'),
        distance=r"$(\sigma_{max}(Z) - s)_+$",
        tier="ulp",
        tier_why="SVD or matrix products; Newton–Schulz is semantic against SVD",
        param_ranges={
            "polar": '`"svd"` or `"newton-schulz"`',
            "scale": '`"rms"` √max(A, B), s > 0, `"original"` √max(1, A/B), or '
                     '`"match_rms_adamw"` 0.2√max(A, B)',
            "ns_coefficients": "(a, b, c), finite",
            "ns_steps": "int in [1, 100]",
            "ns_eps": "> 0",
            "ns_dtype": "None or a float dtype name",
        },
    ),
    "muon": Entry(
        K=r"the nuclear norm (`nuclear`) with torch.optim.Muon's Newton–Schulz and shape "
          r"factor $s$",
        grad=r"$s\cdot\mathrm{NS}_5(Y)$ (bfloat16 quintic iteration)",
        conjugate=r"$0$ if $\Vert Z\Vert _{op} \le s$, else $+\infty$",
        problem=r"$\Vert X\Vert _{op} \le s/\lambda$ (NS: $1.2024\,s/\lambda$ invariant)",
        distance=r"$(\sigma_{max}(Z) - s)_+$",
        tier="ulp",
        tier_why="semantic: Newton–Schulz in bfloat16",
        param_ranges={
            "adjust_lr_fn": '`"original"` or `"match_rms_adamw"`',
            "ns_coefficients": "(a, b, c), finite",
            "ns_steps": "int in [1, 100]",
            "eps": "> 0",
            "ns_dtype": "None or a float dtype name",
        },
    ),
    "optax-muon": Entry(
        K=r"the nuclear norm (`nuclear`) with optax.contrib.muon's Newton–Schulz and shape "
          r"factor $s$",
        grad=r"$s\cdot\mathrm{NS}_5(Y)$ (in the leaf's dtype, $Y/(\Vert Y\Vert _F + \epsilon)$)",
        conjugate=r"$0$ if $\Vert Z\Vert _{op} \le s$, else $+\infty$",
        problem=r"$\Vert X\Vert _{op} \le s/\lambda$ (NS: $1.2024\,s/\lambda$ invariant)",
        distance=r"$(\sigma_{max}(Z) - s)_+$",
        tier="ulp",
        tier_why="Newton–Schulz in the leaf's dtype",
        param_ranges={
            "consistent_rms": "None or > 0",
            "ns_coefficients": "(a, b, c), finite",
            "ns_steps": "int in [1, 100]",
            "eps": "> 0",
            "polar": '`"newton-schulz"` or `"svd"`',
        },
    ),
    "per-leaf": Entry(
        K=r"$\sum_\ell K_\ell(y_\ell)$, $K_\ell$ chosen per leaf (matrices / other, or a rule)",
        grad=r"$\nabla K_\ell(y_\ell)$ leaf by leaf",
        conjugate=r"$\sum_\ell K_\ell^*(z_\ell)$",
        problem=r"each leaf its own κ's problem (e.g. spectral balls and boxes)",
        distance=r"$\max_\ell$ of the leaves' distances",
        tier="ulp",
        tier_why="as its κ; exact when all are",
        param_ranges={"matrices": "a κ name or Kappa (ndim ≥ 2)",
                      "other": "a κ name or Kappa (ndim < 2)"},
    ),
    "scaled": Entry(
        K=r"$s\,K(y)$, $s$ a number or a rule of the leaf's shape",
        grad=r"$s\,\nabla K(y)$",
        conjugate=r"$s\,K^*(z/s)$",
        problem=r"K's problem with radius $s/\lambda$ (a norm K); `\"rms\"` on a κ already at its "
                r"`scale=\"rms\"` (every built-in's default): $s = 1$".replace('\\"', '"'),
        distance=r"$s\cdot\mathrm{dist}_K(z/s)$",
        tier="ulp",
        tier_why="as K (exact for a number and an exact K)",
        param_ranges={"kappa": "a per-tensor κ name or Kappa",
                      "scale": '> 0, `"rms"`, `"sqrt_size"` or a callable of the shape'},
    ),
}

TIERS = ("exact", "ulp")
SCOPE = "scope"  # the parameter of the norm-type κ: "tensor" or "global"


@dataclass(frozen=True)
class Row:
    name: str
    aliases: tuple[str, ...]
    params: dict[str, Any]
    exact: bool
    separable: bool
    entry: Entry
    facts: dict[str, Any] = field(default_factory=dict)


def rows(catalogue: dict[str, Entry] | None = None) -> list[Row]:
    """One row per registered κ, checked against the catalogue (:class:`CatalogueError`)."""
    import lionk

    catalogue = CATALOGUE if catalogue is None else catalogue
    kinfo: dict[str, Any] = {}
    aliases: dict[str, list[str]] = {}
    problems: list[str] = []
    for name in lionk.kappa.available():
        try:
            k = lionk.kappa.get(name)
        except Exception as exc:  # a registered κ must build with its defaults
            problems.append(f"lionk.kappa.get({name!r}) failed: {exc!r}")
            continue
        if k.name == name:
            kinfo[name] = k
        else:
            aliases.setdefault(k.name, []).append(name)
    for canon in sorted(aliases):
        if canon not in kinfo:
            problems.append(f"{aliases[canon]} resolve to a κ named {canon!r}, which is not "
                            "registered under its own name")
    missing = [n for n in kinfo if n not in catalogue]
    if missing:
        problems.append(
            f"registered κ without a catalogue entry: {missing}; add an Entry to CATALOGUE in "
            "docs/gen_kappa_table.py (K, ∇K, K*, implied problem, domain distance, tier)"
        )
    stale = [n for n in catalogue if n not in kinfo]
    if stale:
        problems.append(f"catalogue entries for κ that are not registered: {stale}")
    out: list[Row] = []
    for name, entry in catalogue.items():
        k = kinfo.get(name)
        if k is None:
            continue
        if entry.tier not in TIERS:
            problems.append(f"{name}: tier {entry.tier!r} is not one of {TIERS}")
        elif (entry.tier == "exact") != k.exact:
            problems.append(f"{name}: the catalogue says tier {entry.tier!r} but "
                            f"Kappa.exact is {k.exact}")
        undocumented = [p for p in k.params if p != SCOPE and p not in entry.param_ranges]
        if undocumented:
            problems.append(f"{name}: parameters without a range in the catalogue: {undocumented}")
        unknown = [p for p in entry.param_ranges if p not in k.params]
        if unknown:
            problems.append(f"{name}: the catalogue documents parameters {unknown}, but "
                            f"get({name!r}).params is {k.params!r}")
        out.append(Row(name, tuple(sorted(aliases.get(name, []))), dict(k.params), k.exact,
                       k.separable, entry, k.facts()))
    if problems:
        raise CatalogueError("κ catalogue out of date:\n- " + "\n- ".join(problems))
    return out


def _value(v: Any) -> str:
    return f'"{v}"' if isinstance(v, str) else repr(v)


def _params_cell(row: Row) -> str:
    if not row.params:
        return "none"
    parts = []
    for p, v in row.params.items():
        cell = f"`{p}={_value(v)}`"
        if p in row.entry.param_ranges:
            cell += f" ({row.entry.param_ranges[p]})"
        parts.append(cell)
    return ", ".join(parts)


def _scope_cell(row: Row) -> str:
    if SCOPE in row.params:
        return '`"tensor"` or `"global"`'
    return "elementwise" if row.separable else "per array"


def _name_cell(row: Row) -> str:
    cell = f"`{row.name}`"
    if row.params:
        cell += " (" + ", ".join(f"`{p}`" for p in row.params) + ")"
    if row.aliases:
        cell += " (aliases " + ", ".join(f"`{a}`" for a in row.aliases) + ")"
    return cell


def _facts_row(row: Row) -> str:
    f = row.facts
    c = f.get("constraint")
    norm = "none stated" if c is None else f"{c['label']} (`{c['norm']}`)"
    radius = "-" if c is None or not c["bounded"] else f"{c['scale']:g}/λ"
    bounded = "-" if c is None else _yes(c["bounded"])
    disc = ", ".join(f"{d:g}" for d in f.get("discontinuities", [])) or "none"
    lip = "-" if f.get("lipschitz") is None else f"{f['lipschitz']:g}"
    return (f"| `{row.name}` | {norm} | {radius} | {bounded} | {_yes(f.get('ternary', False))} | "
            f"{disc} | {lip} | `{f.get('tier', '?')}` |")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def markdown(catalogue: dict[str, Entry] | None = None) -> str:
    """The catalogue as Markdown: two tables and the notes that go with them."""
    rs = rows(catalogue)
    out = [
        "| name | K(y) | ∇K(y) | K*(z) | implied problem for x |",
        "|---|---|---|---|---|",
    ]
    for r in rs:
        e = r.entry
        out.append(f"| {_name_cell(r)} | {e.K} | {e.grad} | {e.conjugate} | {e.problem} |")
    out += [
        "",
        r'"On the box" means $\|z\|_\infty \le 1$ and $+\infty$ outside; likewise "on the ℓ2 ball".',
        "",
        r"$n$ is the number of elements of the array (of the whole tree for "
        r'`scope="global"`) and $\mathrm{RMS}(y) = \Vert y\Vert _2/\sqrt n$. The defaults are '
        r"normalised to train at Lion's learning rate and weight decay: `scale=\"rms\"` gives ∇K "
        r"per-element RMS 1 on a flat input, and a length at `\"auto\"` is $0.1\,\mathrm{RMS}$ "
        r"of ∇K's input, measured at every step (\"Choosing κ and its hyper-parameters\" below); "
        r"a number gives the fixed textbook κ.".replace('\\"', '"'),
        "",
        "| name | parameters (default) | domain distance `domain_distance(z)` | scope | "
        "`exact` | `separable` | tier |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rs:
        e = r.entry
        tier = f"{e.tier} ({e.tier_why})"
        out.append(f"| `{r.name}` | {_params_cell(r)} | {e.distance} | {_scope_cell(r)} | "
                   f"{_yes(r.exact)} | {_yes(r.separable)} | {tier} |")
    out += [
        "",
        "Each κ's facts (`Kappa.facts()`, at its default parameters), which `minimize`, `plot`, "
        "the sign vote and the conformance suite read from the κ:",
        "",
        "| name | constraint norm | radius | bounded | ternary | discontinuities of ∇K | "
        "Lipschitz constant of ∇K | `tier` |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rs:
        out.append(_facts_row(r))
    out += [
        "",
        "*This catalogue is generated from the registry when the site is built: the names come "
        "from `lionk.kappa.available()`, the parameters, defaults and the `exact` / `separable` "
        "flags from the `Kappa` objects, the formulas and tiers from the table in "
        "`docs/gen_kappa_table.py`, which must cover every registered κ.*",
    ]
    return "\n".join(out) + "\n"


def main() -> int:
    try:
        sys.stdout.write(markdown())
    except CatalogueError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
