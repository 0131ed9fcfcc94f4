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

    def test_a_table_and_a_figure_per_protocol(self):
        section = readme.current(_text())
        tables = re.findall(r"(?m)^\|---", section)
        assert len(tables) == len(readme.PROTOCOLS) == 2
        for protocol in readme.PROTOCOLS:
            assert f"**Protocol `{protocol}`**" in section
        figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", section)
        assert figures == [f"benchmarks/results/{readme.HEADLINE}/{f}" for f in readme.FIGURES]
        assert all((ROOT / f).is_file() for f in figures)

    def test_every_row_of_the_table_is_the_folders(self):
        table = (ROOT / "benchmarks" / "results" / readme.HEADLINE / "table.md").read_text()
        rows = [ln for ln in readme.current(_text()).splitlines() if ln.startswith("| ")]
        assert len(rows) >= 6
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


class TestStudy:
    def test_the_study_section_is_the_published_folder(self):
        got = readme.current(_text(), readme.STUDY_START, readme.STUDY_END)
        assert got == readme.study_section(), (
            f"README's study section differs from benchmarks/results/{readme.STUDY}/: run "
            "python -m scripts.readme"
        )

    def test_study_effects_table(self):
        def eff(p, base, treated, mean, low, high, verdict, holm):
            return {"protocol": p, "baseline": base, "treated": treated, "metric": readme.METRIC,
                    "mean": mean, "low": low, "high": high, "verdict": verdict,
                    "verdict_holm": holm, "family_size": 4, "n": 5}

        results = {
            "metadata": {"seeds": [0, 1], "config": {"methods": [
                {"name": "a"}, {"name": "b"}, {"name": "ours"}, {"name": "a+x", "baseline": "a"}]}},
            "paired_effects": [eff("sc", "a", "a+x", 0.05, 0.04, 0.06, "helps", "helps"),
                               {**eff("sc", "a", "a+x", 9, 9, 9, "x", "x"), "metric": "other"}],
            "effects_vs_best_plain": [
                eff("sc", "b", "a+x", 0.01, -0.02, 0.04, "tie", "tie"),
                eff("sc", "b", "ours", -0.03, -0.05, -0.01, "hurts", "tie"),
                eff("zs", "a", "ours", 0.02, 0.01, 0.03, "helps", "helps"),
            ],
        }
        lines = readme.study_effects(results).splitlines()
        assert "over all 4 distinct comparisons of the table (4 rows" not in lines[0]
        assert lines[0].endswith("over all 4 distinct comparisons of the table.")
        assert "mean over the matched seeds (0, 1) [95 % t-interval]" in lines[0]
        assert lines[2] == ("| method | compared with | sc (best plain: `b`) | "
                            "zs (best plain: `a`) |")
        assert lines[4:] == [  # rows in the config's order: ours before a+x
            "| ours | the best plain loss | -0.030 [-0.050, -0.010] hurts; Holm: tie | "
            "+0.020 [+0.010, +0.030] helps; Holm: helps |",
            "| a+x | its plain loss `a` | +0.050 [+0.040, +0.060] helps; Holm: helps | — |",
            "| a+x | the best plain loss | +0.010 [-0.020, +0.040] tie; Holm: tie | — |",
        ]
