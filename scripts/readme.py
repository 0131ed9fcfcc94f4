"""The README's results, generated from published result folders.

``python -m scripts.readme`` rewrites two sections of ``README.md``:

- between the headline markers, the main job from ``benchmarks/results/<HEADLINE>/``
  (``table.md``: the method table of each of :data:`PROTOCOLS`; ``results.json``: the run's
  provenance; :data:`FIGURES`);
- between the study markers, the study's paired effects from ``benchmarks/results/<STUDY>/``
  (``results.json``): each method against its plain loss and against the best plain loss, per
  protocol, with plain and Holm verdicts.

``--check`` only says whether both are up to date (exit status 1 when not).
``tests/test_readme.py`` fails when the README and the folders disagree, so re-publishing a folder
means running this once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scripts import docs_pages

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: The published folder whose results the README shows (``benchmarks/results/<HEADLINE>/``).
HEADLINE = "glyphs-default"
#: The protocols whose tables the README shows: first the one where collapse happens.
PROTOCOLS = ("superclass", "zero_shot")
#: The figures of that folder the README shows: the tests during training, per protocol.
FIGURES = ("curves_superclass.png", "curves_zero_shot.png")
#: The published study whose paired effects the README shows.
STUDY = "glyphs-study"
#: The metric of the paired effects.
METRIC = "mean_average_precision_at_r"

START, END = "<!-- headline:start -->", "<!-- headline:end -->"
STUDY_START, STUDY_END = "<!-- study:start -->", "<!-- study:end -->"


def first_protocol_table(table_md: str,
                         protocol: str | None = None) -> tuple[str, str, list[str], list[str]]:
    """(protocol, its description, its method table's lines, the table's notes) of the
    section ``### <protocol>`` (None: the first protocol section) of a harness ``table.md``.
    The notes are the paragraphs of the file that explain the table: the one on ▲ and those
    that begin with a column's header (``MAP@R final − peak: ...``), wherever the report
    puts them."""
    lines = table_md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("### ")
                 and (protocol is None or line[4:].strip() == protocol))
    protocol = lines[start][4:].strip()
    description, table = [], []
    i = start + 1
    while i < len(lines) and not lines[i].startswith("|"):
        if lines[i].strip():
            description.append(lines[i].strip())
        i += 1
    while i < len(lines) and lines[i].startswith("|"):
        table.append(lines[i])
        i += 1
    if not table:
        raise ValueError(f"no method table after '### {protocol}'")
    columns = [c.strip() for c in table[0].strip("|").split("|")]
    notes = [
        line.strip() for line in lines
        if line.startswith("▲ =") or any(line.startswith(f"{c}:") for c in columns if c)
    ]
    return protocol, " ".join(description), table, notes


def headline(figure_prefix: str = "benchmarks/results/", link_prefix: str = "docs/") -> str:
    """The headline: provenance, each of :data:`PROTOCOLS`' tables, their notes and
    :data:`FIGURES` (at ``<figure_prefix><HEADLINE>/<figure>``); ``link_prefix`` leads to the
    docs' pages."""
    folder = docs_pages.RESULTS / HEADLINE
    meta = docs_pages.read_results(HEADLINE).get("metadata", {})
    table_md = (folder / "table.md").read_text(encoding="utf-8")
    seeds = meta.get("seeds")
    over = f" over seeds {', '.join(map(str, seeds))}" if seeds else ""
    lines = [f"From `benchmarks/results/{HEADLINE}/` ({docs_pages.provenance(meta)}); "
             f"mean ± std{over}.", ""]
    notes: list[str] = []
    for wanted in PROTOCOLS:
        protocol, description, table, more = first_protocol_table(table_md, wanted)
        lines += [f"**Protocol `{protocol}`**: {description}.", "", *table, ""]
        notes += [n for n in more if n not in notes]
    lines += [line for note in notes for line in (note, "")]
    for figure in FIGURES:
        text = docs_pages.caption(figure)
        lines += [f"![{text}]({figure_prefix}{HEADLINE}/{figure})", ""]
    lines.append(f"*Every published run, its paired effects and figures: "
                 f"[results]({link_prefix}results.md).*")
    return "\n".join(lines)


def _effect(e: dict | None) -> str:
    if e is None:
        return "—"
    if e["low"] is None:
        return f"{e['mean']:+.3f} (one seed)"
    holm = f"; Holm: {e['verdict_holm']}" if "verdict_holm" in e else ""
    return f"{e['mean']:+.3f} [{e['low']:+.3f}, {e['high']:+.3f}] {e['verdict']}{holm}"


def study_effects(results: dict) -> str:
    """The study's paired effects on MAP@R as one table: a row per method and comparison (its
    plain loss, the best plain loss of the protocol), a column per protocol."""
    meta = results.get("metadata", {})
    declared = [e for e in results.get("paired_effects", []) if e["metric"] == METRIC]
    vs_best = results.get("effects_vs_best_plain", [])
    protocols = sorted(dict.fromkeys(e["protocol"] for e in declared + vs_best),
                       key=lambda p: PROTOCOLS.index(p) if p in PROTOCOLS else len(PROTOCOLS))
    order = [m["name"] for m in meta.get("config", {}).get("methods", [])]
    treated = sorted({e["treated"] for e in declared + vs_best},
                     key=lambda n: order.index(n) if n in order else len(order))
    best = {e["protocol"]: e["baseline"] for e in vs_best}
    seeds = meta.get("seeds")
    over = f" ({', '.join(map(str, seeds))})" if seeds else ""
    intro = (f"From `benchmarks/results/{STUDY}/` "
             f"({docs_pages.provenance(meta, results.get('results'))}). Test MAP@R, treated − "
             f"compared row, mean over the matched seeds{over} [95 % t-interval], then the "
             "verdict and the verdict after Holm's adjustment")
    sizes = {e.get("family_size") for e in declared + vs_best} - {None, 0}
    if len(sizes) == 1:
        size, listed = sizes.pop(), len(declared) + len(vs_best)
        intro += f" over all {size} distinct comparisons of the table"
        if listed > size:
            intro += (f" ({listed} entries: where a method's plain loss is the best plain loss, "
                      "its two rows repeat one comparison)")
    lines = [
        intro + ".",
        "",
        "| method | compared with | " + " | ".join(
            f"{p} (best plain: `{best[p]}`)" if p in best else p for p in protocols) + " |",
        "|---|---|" + "---|" * len(protocols),
    ]
    for name in treated:
        own = {e["protocol"]: e for e in declared if e["treated"] == name}
        if own:
            base = next(iter(own.values()))["baseline"]
            lines.append(f"| {name} | its plain loss `{base}` | "
                         + " | ".join(_effect(own.get(p)) for p in protocols) + " |")
        theirs = {e["protocol"]: e for e in vs_best if e["treated"] == name}
        if theirs:
            lines.append(f"| {name} | the best plain loss | "
                         + " | ".join(_effect(theirs.get(p)) for p in protocols) + " |")
    return "\n".join(lines)


def section() -> str:
    """The README's headline section, markers included."""
    return f"{START}\n{headline()}\n{END}"


def study_section() -> str:
    """The README's study section, markers included."""
    return f"{STUDY_START}\n{study_effects(docs_pages.read_results(STUDY))}\n{STUDY_END}"


def current(text: str, start: str = START, end: str = END) -> str:
    i, j = text.index(start), text.index(end) + len(end)
    return text[i:j]


def update(path: Path = README) -> bool:
    """Rewrite both generated sections of ``path``; True when one changed."""
    text = path.read_text(encoding="utf-8")
    changed = False
    for start, end, new in ((START, END, section()),
                            (STUDY_START, STUDY_END, study_section())):
        old = current(text, start, end)
        if old != new:
            text = text.replace(old, new, 1)
            changed = True
    if changed:
        path.write_text(text, encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.readme", description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="only check; exit 1 when out of date")
    args = p.parse_args(argv)
    if args.check:
        text = README.read_text(encoding="utf-8")
        ok = (current(text) == section()
              and current(text, STUDY_START, STUDY_END) == study_section())
        print("README results up to date" if ok else "README results out of date: "
              "run python -m scripts.readme")
        return 0 if ok else 1
    changed = update()
    print(f"README results {'rewritten' if changed else 'already up to date'} "
          f"from benchmarks/results/{HEADLINE}/ and {STUDY}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
