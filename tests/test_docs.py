"""The documentation site: every public name has an API entry, every public class an example,
every generated part is built from the repository's own files (so the numbers the docs show are
the published folders'), and no file points outside the repository.

The strict build itself (``mkdocs build --strict``) runs in ``.ci/run``."""

from __future__ import annotations

import importlib
import inspect
import os
import re
from pathlib import Path

import pytest
import yaml

import pml_anticollapse
from pml_anticollapse import distributed, functional, losses, miners, regularizers
from scripts import docs_pages

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PUBLIC_MODULES = (pml_anticollapse, functional, distributed, losses, miners, regularizers)


def _resolve(dotted: str):
    """The object a mkdocstrings identifier names (a module, or an attribute of one)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def _api_identifiers() -> list[str]:
    found = []
    for page in sorted((DOCS / "api").glob("*.md")):
        found += re.findall(r"(?m)^::: ([\w.]+)\s*$", page.read_text(encoding="utf-8"))
    return found


def _public_names() -> list[tuple[str, str]]:
    return [(m.__name__, n) for m in PUBLIC_MODULES for n in m.__all__]


class TestApiReference:
    @pytest.mark.parametrize("module, name", _public_names(), ids=lambda v: v)
    def test_every_public_name_has_an_entry(self, module, name):
        """An entry is a ``::: module.name`` line, or a ``:::`` line naming the same object
        elsewhere (the classes are documented under ``pml_anticollapse.X``)."""
        obj = getattr(importlib.import_module(module), name)
        identifiers = _api_identifiers()
        if f"{module}.{name}" in identifiers:
            return
        same = [i for i in identifiers if i.rsplit(".", 1)[-1] == name and _resolve(i) is obj]
        assert same, f"{module}.{name} has no '::: {module}.{name}' line in docs/api/*.md"

    def test_every_entry_names_something(self):
        identifiers = _api_identifiers()
        assert len(identifiers) >= 40
        for dotted in identifiers:
            _resolve(dotted)  # raises when the name is gone

    def test_no_entry_twice(self):
        identifiers = _api_identifiers()
        assert len(identifiers) == len(set(identifiers))


def _public_classes() -> list[str]:
    """Every public class once, under the first public module that exports it."""
    seen: dict[int, str] = {}
    for module, name in _public_names():
        obj = getattr(importlib.import_module(module), name)
        if inspect.isclass(obj):
            seen.setdefault(id(obj), f"{module}.{name}")
    return list(seen.values())


@pytest.mark.parametrize("dotted", _public_classes())
def test_every_public_class_has_an_example(dotted):
    """pytest runs the example (``--doctest-modules`` over the package); here: that there is one,
    in a module of the package, where the doctest run finds it."""
    cls = _resolve(dotted)
    doc = inspect.getdoc(cls) or ""
    assert "Example:" in doc and ">>> " in doc, f"{dotted} has no Example section"
    assert cls.__module__.startswith("pml_anticollapse.")


class TestGeneratedParts:
    def _pages(self) -> list[Path]:
        return sorted(DOCS.rglob("*.md"))

    def test_every_page_is_in_the_nav(self):
        with open(ROOT / "mkdocs.yml", encoding="utf-8") as f:
            text = f.read()
        nav_text = text[text.index("\nnav:"):text.index("\nhooks:")]
        nav = yaml.safe_load(nav_text)["nav"]

        def files(item):
            if isinstance(item, str):
                yield item
            elif isinstance(item, dict):
                for v in item.values():
                    yield from files(v)
            elif isinstance(item, list):
                for v in item:
                    yield from files(v)

        listed = set(files(nav))
        pages = {p.relative_to(DOCS).as_posix() for p in self._pages()}
        assert pages == listed

    def test_every_marker_names_a_part(self):
        for page in self._pages():
            for m in docs_pages.MARKER.finditer(page.read_text(encoding="utf-8")):
                assert m.group(1) in docs_pages.PARTS, f"{page}: {m.group(0)}"

    def test_the_results_page_shows_every_published_table(self):
        text = docs_pages.expand("<!-- generated: results -->", "results.md")
        folders = docs_pages.published_folders()
        assert {"glyphs-default", "digits-default"} <= set(folders)
        for name in folders:
            table = (docs_pages.RESULTS / name / "table.md").read_text(encoding="utf-8")
            for line in table.splitlines():
                if line.startswith("|"):
                    assert line in text, f"{name}: {line}"
            for png in (docs_pages.RESULTS / name).glob("*.png"):
                assert f"({docs_pages.ASSETS}/{name}/{png.name})" in text

    def test_the_home_page_shows_the_studys_effects_as_the_readme_does(self):
        from scripts import readme

        text = docs_pages.expand("<!-- generated: study -->", "index.md")
        rows = [ln for ln in readme.study_section().splitlines() if ln.startswith("| ")]
        assert len(rows) >= 10 and all(row in text for row in rows)

    def test_the_tuned_comparison_reads_both_folders(self):
        a = docs_pages.read_results("digits-default")
        b = docs_pages.read_results("earlier/digits-tuned")
        text = docs_pages.tuned_comparison("digits-default", "earlier/digits-tuned")
        for run in (a, b):
            for protocol, rows in run["summary"].items():
                for row in rows.values():
                    mean = row[docs_pages.EFFECT_METRIC]["mean"]
                    assert f" {mean:.3f} " in text, (protocol, mean)

    def test_the_speed_page_shows_every_published_run(self):
        text = docs_pages.expand("<!-- generated: speed -->", "speed.md")
        for report in docs_pages.SPEED.glob("*/*.md"):
            for line in report.read_text(encoding="utf-8").splitlines():
                if line.startswith("| "):
                    assert line in text, f"{report}: {line}"

    def test_the_errors_page_is_the_list(self):
        from tests.test_bad_inputs import ROWS, markdown_table

        text = docs_pages.expand("<!-- generated: errors -->", "errors.md")
        assert text == markdown_table()
        assert len(re.findall(r"(?m)^\| \d+ \|", text)) == len(ROWS)

    def test_the_figures_are_published_files(self):
        figures = docs_pages.figures()
        assert figures
        for path, site_path in figures:
            assert path.is_file() and site_path.startswith(docs_pages.ASSETS + "/")
            assert "runs" not in path.relative_to(docs_pages.RESULTS).parts

    def test_image_links_are_relative_to_the_page(self):
        deep = docs_pages.expand("<!-- generated: result glyphs-default -->", "a/b.md")
        assert f"](../{docs_pages.ASSETS}/glyphs-default/effects.png)" in deep

    def test_unknown_part(self):
        with pytest.raises(ValueError, match="unknown generated part 'nope'"):
            docs_pages.expand("<!-- generated: nope -->", "x.md")


#: Files another change is rewriting; their pointer outside the repository goes with it.
PENDING: set[str] = set()


SKIPPED_DIRS = {".git", ".venv", "site", "runs", "__pycache__", ".pytest_cache", ".ruff_cache"}


def _repository_files():
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
        for name in names:
            yield Path(folder) / name


def test_provenance_names_every_cpu_of_a_mixed_run():
    meta = {"command": "c", "commit": "abcdef123", "device": "cpu",
            "hardware": {"cpu": "B", "cpu_count": 2}, "wall_seconds": 61.4,
            "sessions": [{"commit": "1234567890-dirty"}, {"commit": "abcdef123"}]}
    cells = [{"run": {"cpu": cpu}} for cpu in ("A", "B", "B")] + [{}]
    line = docs_pages.provenance(meta, cells)
    assert "cells computed on B (2), A (1)" in line
    assert "wall time 61 s over 2 sessions" in line
    assert "commits `1234567-dirty`, `abcdef1`" in line
    one = docs_pages.provenance({**meta, "sessions": [{}]}, cells[1:])
    assert "commit `abcdef1`" in one
    assert "cells computed on" not in one and "wall time 61 s;" not in one
    assert one.endswith("wall time 61 s")


def test_no_file_points_outside_the_repository():
    pattern = re.compile(r"REFERENCE\.md|STYLE\.md|REFERENCE §|\.\./shared")
    offenders = []
    for path in sorted(_repository_files()):
        rel = path.relative_to(ROOT).as_posix()
        if (
            path.suffix not in {".py", ".md", ".yaml", ".yml", ".toml", ".cff", ".sh"}
            or rel in PENDING
            or path == Path(__file__).resolve()
        ):
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
