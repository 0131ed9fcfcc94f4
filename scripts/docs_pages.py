"""The generated parts of the documentation site, read from the repository at build time.

A page asks for a part with a marker line of its own, ``<!-- generated: NAME [ARG] -->``;
``docs/hooks.py`` (a mkdocs hook) replaces the line with :func:`expand`'s text and copies the
published figures (every PNG under ``benchmarks/results/``) into the site. So a number the docs
show lives in one place: the published result folder it is read from, the schema, or the test's
list.

Parts (NAME):

- ``results``: every published result folder (``benchmarks/results/<name>/`` with a
  ``results.json``): its provenance, its ``table.md`` and its figures; after a ``<x>-tuned``
  folder whose ``<x>-default`` is published too, the MAP@R and paired effects of both side by side;
- ``speed``: every run under ``benchmarks/results/speed/`` (its ``speed.md`` or
  ``accuracy_sweep.md`` and its figures);
- ``errors``: the bad-input table, from ``ROWS`` in ``tests/test_bad_inputs.py``;
- ``config-schema``: every config key, from the harness's schema
  (``benchmarks.harness.config.help_text``, what ``python -m benchmarks --help-config`` prints);
- ``contributing``: ``CONTRIBUTING.md``, without its title;
- ``headline``: the README's headline tables (:mod:`scripts.readme`), for the docs' home page;
- ``study``: the README's table of the study's paired effects (:mod:`scripts.readme`), likewise.
"""

from __future__ import annotations

import collections
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SPEED = RESULTS / "speed"
#: Where the site keeps the published figures: ``<ASSETS>/<path under benchmarks/results>``.
ASSETS = "assets/results"
#: Folders under ``benchmarks/results`` that are not published runs of the harness.
NOT_RUNS = ("runs", "speed", "earlier")
#: Published runs of earlier releases that the current main job contradicts (another regime),
#: kept for their commits: ``benchmarks/results/earlier/<name>/``.
EARLIER = "earlier"
#: Speed runs shown first, in this order (the others follow, sorted).
SPEED_ORDER = ("cpu", "float64", "accuracy")

MARKER = re.compile(r"^<!-- generated: ([a-z-]+)(?: (\S+))? -->[ \t]*$", re.M)

EFFECT_METRIC = "mean_average_precision_at_r"

#: Captions of the harness's figures, by file name.
FIGURE_CAPTIONS: tuple[tuple[str, str], ...] = (
    (r"effects\.png", "Paired effects on MAP@R (treated − baseline, 95 % t-interval)"),
    (r"metrics_(\w+)\.png", "Metrics per method, protocol {0}"),
    (r"spectrum_(\w+)\.png", "Singular-value spectrum of the test embeddings, protocol {0}"),
    (r"curves_(\w+)\.png", "MAP@R and effective rank per epoch, protocol {0}"),
    (r"sample_grid\.png", "The rendered glyphs: one row per font, one column per character"),
    (r"best_so_far\.png", "Best validation MAP@R so far against trials, per method"),
    (r"budget\.png", "Validation MAP@R of the plain baselines per epoch, the chosen epoch budget "
     "dashed"),
    (r"speed_ratios\.png", "naive / ours and Cholesky-autograd / ours per grid point"),
)


# ----------------------------------------------------------------------------- helpers


def _importable() -> None:
    """The repository's top-level packages (``tests``, ``benchmarks``, ``scripts``) importable,
    also inside mkdocs, which restores ``sys.path`` after loading its hooks."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def demote(markdown: str, by: int) -> str:
    """Every ATX heading of ``markdown`` (outside code fences) ``by`` levels deeper."""
    out, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and re.match(r"#{1,6} ", line):
            line = "#" * by + line
        out.append(line)
    return "\n".join(out)


def drop_title(markdown: str) -> str:
    """``markdown`` without its first line when that is a level-1 heading."""
    lines = markdown.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join(lines).strip("\n")


def body_of(table_md: str) -> str:
    """A harness ``table.md`` from its first section heading on (its title and header lines
    say what :func:`provenance` says, read from ``results.json``)."""
    lines = table_md.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("#") and i > 0), 0)
    return "\n".join(lines[first:]).strip("\n")


def caption(name: str) -> str:
    for pattern, text in FIGURE_CAPTIONS:
        m = re.fullmatch(pattern, name)
        if m:
            return text.format(*(f"`{g}`" for g in m.groups()))
    return name


def figure_lines(folder: Path, prefix: str) -> list[str]:
    """A Markdown image per PNG of ``folder`` (and of its ``tuning/``), captioned."""
    lines = []
    pngs = sorted(folder.glob("*.png")) + sorted(folder.glob("tuning/*.png"))
    for png in pngs:
        rel = png.relative_to(RESULTS).as_posix()
        text = caption(png.name)
        lines += [f"![{text}]({prefix}{ASSETS}/{rel})", "", f"*{text}* (`{rel}`)", ""]
    return lines


def published_folders() -> list[str]:
    """The published result folders of the harness (those with a ``results.json``), sorted."""
    return sorted(
        p.name for p in RESULTS.iterdir()
        if p.is_dir() and p.name not in NOT_RUNS and (p / "results.json").is_file()
    )


def figures() -> list[tuple[Path, str]]:
    """(file, site path) of every published figure: the PNGs under ``benchmarks/results``
    outside ``runs/`` (the untracked output of local runs)."""
    out = []
    for png in sorted(RESULTS.rglob("*.png")):
        rel = png.relative_to(RESULTS)
        if rel.parts[0] != "runs":
            out.append((png, f"{ASSETS}/{rel.as_posix()}"))
    return out


def read_results(name: str) -> dict:
    with open(RESULTS / name / "results.json", encoding="utf-8") as f:
        return json.load(f)


def provenance(meta: dict, cells: list[dict] | None = None) -> str:
    """One line: command, commit, date, machine, threads, wall time, torch. With the run's
    ``cells``, a run whose cells were computed on several CPUs names each with its count."""
    hw = meta.get("hardware") or {}
    parts = [f"command `{meta.get('command', '?')}`"]
    commits = list(dict.fromkeys(
        s["commit"] for s in meta.get("sessions") or [] if s.get("commit")))
    if not commits and meta.get("commit"):
        commits = [meta["commit"]]
    if commits:  # each session's commit, "-dirty" kept: a run over several commits says so
        short = [f"`{c[:7]}{'-dirty' if c.endswith('-dirty') else ''}`" for c in commits]
        parts.append(("commit " if len(short) == 1 else "commits ") + ", ".join(short))
    if meta.get("started_utc"):
        parts.append(f"started {meta['started_utc'][:10]}")
    machine = hw.get("cpu") or meta.get("device")
    if machine:
        cpus = f", {hw['cpu_count']} CPUs" if hw.get("cpu_count") else ""
        threads = f", {hw['torch_threads']} torch threads" if hw.get("torch_threads") else ""
        parts.append(f"device `{meta.get('device', '?')}` ({machine}{cpus}{threads})")
    cpus_used = collections.Counter((c.get("run") or {}).get("cpu") for c in cells or [])
    cpus_used.pop(None, None)
    if len(cpus_used) > 1:
        parts.append("cells computed on " + ", ".join(
            f"{cpu} ({n})" for cpu, n in cpus_used.most_common()))
    if meta.get("wall_seconds") is not None:
        sessions = len(meta.get("sessions") or [])
        over = f" over {sessions} sessions" if sessions > 1 else ""
        parts.append(f"wall time {meta['wall_seconds']:.0f} s{over}")
    torch_version = (meta.get("versions") or {}).get("torch")
    if torch_version:
        parts.append(f"torch {torch_version}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- parts


def result_folder(name: str, prefix: str = "", level: int = 2) -> str:
    """One published folder: provenance, its table (``table.md``) and its figures."""
    folder = RESULTS / name
    results = read_results(name)
    meta = results.get("metadata", {})
    table = (folder / "table.md").read_text(encoding="utf-8")
    line = provenance(meta, results.get("results"))
    lines = [
        f"{'#' * level} `{name}`",
        "",
        f"Files: `benchmarks/results/{name}/`. {line[0].upper()}{line[1:]}.",
        "",
        demote(body_of(table), level - 1),
        "",
        *figure_lines(folder, prefix),
    ]
    return "\n".join(lines)


def _fmt_effect(e: dict | None) -> str:
    if e is None:
        return "—"
    if e.get("low") is None:
        return f"{e['mean']:+.3f} (n={e.get('n', 1)})"
    return f"{e['mean']:+.3f} [{e['low']:+.3f}, {e['high']:+.3f}] {e.get('verdict', '')}".strip()


def tuned_comparison(default: str, tuned: str) -> str:
    """MAP@R and paired effects of a hand-set run and its tuned repeat, side by side."""
    a, b = read_results(default), read_results(tuned)
    lines = [
        f"### `{default}` against `{tuned}`",
        "",
        f"MAP@R (mean over seeds) with the config's hand-set settings (`{default}`) and after the "
        f"equal-budget search (`{tuned}`), read from both folders' `results.json`:",
        "",
    ]
    protocols = [p for p in a.get("summary", {}) if p in b.get("summary", {})]
    header = ["method"]
    for p in protocols:
        header += [f"{p}, hand-set", f"{p}, tuned"]
    lines += ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    methods: list[str] = []
    for p in protocols:
        for m in list(a["summary"][p]) + list(b["summary"][p]):
            if m not in methods:
                methods.append(m)
    for m in methods:
        cells = [m]
        for p in protocols:
            for run in (a, b):
                v = run["summary"][p].get(m, {}).get(EFFECT_METRIC)
                cells.append("—" if v is None else f"{v['mean']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    pairs: list[tuple[str, str, str]] = []
    for run in (a, b):
        for e in run.get("paired_effects", []):
            key = (e["protocol"], e["treated"], e["baseline"])
            if key not in pairs:
                pairs.append(key)
    if pairs:

        def effect(run: dict, key: tuple[str, str, str]) -> dict | None:
            for e in run.get("paired_effects", []):
                if (e["protocol"], e["treated"], e["baseline"]) == key:
                    return e
            return None

        lines += [
            "",
            "Paired effects on MAP@R (treated − baseline, matched seeds, 95 % t-interval), "
            "before and after the search:",
            "",
            "| protocol | treated | baseline | hand-set | tuned |",
            "|---|---|---|---|---|",
        ]
        changed = []
        for key in pairs:
            before, after = effect(a, key), effect(b, key)
            lines.append(
                f"| {key[0]} | {key[1]} | {key[2]} | {_fmt_effect(before)} | "
                f"{_fmt_effect(after)} |"
            )
            if before and after and before.get("verdict") != after.get("verdict"):
                changed.append(f"{key[1]} vs {key[2]} ({key[0]}): {before.get('verdict')} → "
                               f"{after.get('verdict')}")
        lines += ["", "Verdicts that changed with the search: " + "; ".join(changed) + "."
                  if changed else "No verdict changed with the search."]
    return "\n".join(lines) + "\n"


def all_results(prefix: str = "") -> str:
    """Every published folder (the headline's benchmark first), each ``<x>-tuned`` followed by
    its comparison with ``<x>-default``."""
    _importable()
    from scripts.readme import HEADLINE

    family = HEADLINE.split("-")[0]  # the headline's benchmark first, then the others
    names = sorted(published_folders(), key=lambda n: (n.split("-")[0] != family, n))
    parts = []
    for name in names:
        parts.append(result_folder(name, prefix))
        if name.endswith("-tuned"):
            default = name[: -len("-tuned")] + "-default"
            if default in names:
                parts.append(tuned_comparison(default, name))
    earlier = RESULTS / EARLIER
    old = sorted(p.name for p in earlier.iterdir() if (p / "results.json").is_file()) \
        if earlier.is_dir() else []
    if old:
        parts.append(
            "## Earlier releases\n\nRuns made by an earlier release of the harness, which the "
            "current main job contradicts (glyphs: zero-shot only, 8 epochs, before the epoch "
            "budgets were chosen on validation; tuning: one search on one protocol's class "
            "folds for every protocol). Kept with the commit that produced them, not as current "
            "results."
        )
        parts += [result_folder(f"{EARLIER}/{n}", prefix, level=3) for n in old]
    return "\n\n".join(parts)


def speed_runs(prefix: str = "") -> str:
    """Every published speed run: its report and figures, under its folder's name."""
    folders = [p for p in SPEED.iterdir() if p.is_dir()]
    order = {name: i for i, name in enumerate(SPEED_ORDER)}
    folders.sort(key=lambda p: (order.get(p.name, len(order)), p.name))
    parts = []
    for folder in folders:
        reports = sorted(folder.glob("*.md"))
        heading = f"### `speed/{folder.name}`"
        if reports:
            heading += ": " + reports[0].read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
        lines = [heading, ""]
        lines.append(f"Files: `benchmarks/results/speed/{folder.name}/`.")
        lines.append("")
        for report in reports:
            lines += [demote(drop_title(report.read_text(encoding="utf-8")), 3), ""]
        lines += figure_lines(folder, prefix)
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def errors_table() -> str:
    _importable()
    from tests.test_bad_inputs import markdown_table

    return markdown_table()


def config_schema() -> str:
    _importable()
    from benchmarks.harness import config

    return config.schema_markdown()


def contributing() -> str:
    return drop_title((ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8"))


def headline(prefix: str = "") -> str:
    _importable()
    from scripts import readme

    return readme.headline(prefix + f"{ASSETS}/", link_prefix=prefix)


def study(prefix: str = "") -> str:
    _importable()
    from scripts import readme

    return readme.study_effects(read_results(readme.STUDY))


PARTS: dict[str, Callable[..., str]] = {
    "results": lambda prefix, arg: all_results(prefix),
    "result": lambda prefix, arg: result_folder(arg, prefix),
    "speed": lambda prefix, arg: speed_runs(prefix),
    "errors": lambda prefix, arg: errors_table(),
    "config-schema": lambda prefix, arg: config_schema(),
    "contributing": lambda prefix, arg: contributing(),
    "headline": lambda prefix, arg: headline(prefix),
    "study": lambda prefix, arg: study(prefix),
}


def expand(markdown: str, page: str) -> str:
    """``markdown`` of the page at ``page`` (its path under ``docs/``) with every marker line
    replaced by its part; image links are made relative to the page."""
    prefix = "../" * page.count("/")

    def part(m: re.Match) -> str:
        name, arg = m.group(1), m.group(2)
        if name not in PARTS:
            raise ValueError(f"{page}: unknown generated part {name!r} (known: {sorted(PARTS)})")
        return PARTS[name](prefix, arg)

    return MARKER.sub(part, markdown)
