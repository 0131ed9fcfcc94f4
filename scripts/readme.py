"""The README's headline result, generated from one published result folder.

``python -m scripts.readme`` rewrites the section between the headline markers of ``README.md``
from ``benchmarks/results/<HEADLINE>/`` (``table.md``: the first protocol's method table;
``results.json``: the run's provenance; :data:`FIGURE`: the figure); ``--check`` only says whether
it is up to date (exit status 1 when not). ``tests/test_readme.py`` fails when the README and the
folder disagree, so re-publishing the folder means running this once.
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
#: The protocol whose table the README shows: the one where collapse happens.
PROTOCOL = "superclass"
#: The figure of that folder the README shows: that protocol's tests during training.
FIGURE = "curves_superclass.png"

START, END = "<!-- headline:start -->", "<!-- headline:end -->"


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
    """The headline: provenance, the first protocol's table, its notes and :data:`FIGURE`
    (at ``<figure_prefix><HEADLINE>/<FIGURE>``); ``link_prefix`` leads to the docs' pages."""
    folder = docs_pages.RESULTS / HEADLINE
    meta = docs_pages.read_results(HEADLINE).get("metadata", {})
    protocol, description, table, notes = first_protocol_table(
        (folder / "table.md").read_text(encoding="utf-8"), PROTOCOL
    )
    seeds = meta.get("seeds")
    over = f" over seeds {', '.join(map(str, seeds))}" if seeds else ""
    text = docs_pages.caption(FIGURE)
    results_page = f"{link_prefix}results.md"
    lines = [
        f"From `benchmarks/results/{HEADLINE}/` ({docs_pages.provenance(meta)}). "
        f"Protocol `{protocol}`: {description}; mean ± std{over}.",
        "",
        *table,
        "",
        *(line for note in notes for line in (note, "")),
        f"![{text}]({figure_prefix}{HEADLINE}/{FIGURE})",
        "",
        f"*{text}. Every published run, its paired effects and figures: "
        f"[results]({results_page}).*",
    ]
    return "\n".join(lines)


def section() -> str:
    """The README's section, markers included."""
    return f"{START}\n{headline()}\n{END}"


def current(text: str) -> str:
    start, end = text.index(START), text.index(END) + len(END)
    return text[start:end]


def update(path: Path = README) -> bool:
    """Rewrite the headline section of ``path``; True when it changed."""
    text = path.read_text(encoding="utf-8")
    old = current(text)
    new = section()
    if old != new:
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return old != new


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.readme", description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="only check; exit 1 when out of date")
    args = p.parse_args(argv)
    if args.check:
        ok = current(README.read_text(encoding="utf-8")) == section()
        print("README headline up to date" if ok else "README headline out of date: "
              "run python -m scripts.readme")
        return 0 if ok else 1
    changed = update()
    print(f"README headline {'rewritten' if changed else 'already up to date'} "
          f"from benchmarks/results/{HEADLINE}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
