"""The README: short, its quickstart runs as written, its headline is the published folder's, its
links lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

from scripts import readme

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _text() -> str:
    return README.read_text(encoding="utf-8")


def _quickstart() -> str:
    section = _text().split("## Quickstart", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_is_short():
    assert len(_text().splitlines()) <= 200


def test_quickstart_is_short_and_runs(capsys):
    code = _quickstart()
    assert len(code.strip().splitlines()) <= 10
    exec(compile(code, "README quickstart", "exec"), {})
    out = capsys.readouterr().out
    assert re.match(r"loss -?\d+\.\d{3}, grad norm \d+\.\d{3}", out)


def test_the_two_commands_exist():
    text = _text()
    for script in ("scripts/benchmark.sh", "scripts/test.sh"):
        assert f"bash {script}" in text
        assert (ROOT / script).exists()
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


class TestHeadline:
    def test_the_headline_is_the_published_folder(self):
        assert readme.current(_text()) == readme.section(), (
            f"README's headline differs from benchmarks/results/{readme.HEADLINE}/: run "
            "python -m scripts.readme"
        )

    def test_one_table_and_one_figure(self):
        section = readme.current(_text())
        tables = re.findall(r"(?m)^\|---", section)
        assert len(tables) == 1
        figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", section)
        assert figures == [f"benchmarks/results/{readme.HEADLINE}/{readme.FIGURE}"]
        assert (ROOT / figures[0]).is_file()

    def test_every_row_of_the_table_is_the_folders(self):
        table = (ROOT / "benchmarks" / "results" / readme.HEADLINE / "table.md").read_text()
        rows = [ln for ln in readme.current(_text()).splitlines() if ln.startswith("| ")]
        assert len(rows) >= 3
        for row in rows:
            assert row in table.splitlines()

    def test_first_protocol_table(self):
        md = "\n".join([
            "# Benchmark: x", "", "command: `c`", "", "### zero_shot", "", "the protocol", "",
            "| method | MAP@R |", "|---|---:|", "| a | 0.5 |", "",
            "### superclass", "", "| method | MAP@R |", "|---|---:|", "| b | 0.1 |", "",
            "▲ = note", "", "MAP@R: the metric", "", "other: not a note", "", "### Effects",
        ])
        protocol, description, table, notes = readme.first_protocol_table(md)
        assert (protocol, description) == ("zero_shot", "the protocol")
        assert notes == ["▲ = note", "MAP@R: the metric"]
        assert table == ["| method | MAP@R |", "|---|---:|", "| a | 0.5 |"]


def test_the_links_lead_to_files():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", _text()):
        if target.startswith(("http://", "https://")):
            continue
        assert (ROOT / target).exists(), target
