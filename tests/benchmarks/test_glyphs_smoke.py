"""The glyph benchmark end to end: ``python -m benchmarks --config glyphs.yaml --smoke`` on
matplotlib's bundled fonts (CI has no font packages), its results and its resumption guard."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from ._util import run_cli

pytestmark = pytest.mark.slow  # renders fonts and runs the glyph grid end to end

matplotlib = pytest.importorskip("matplotlib")
MPL_TTF = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "cmr10.ttf", "cmss10.ttf",
         "DejaVuSansDisplay.ttf")
CONFIG = os.path.join("benchmarks", "harness", "configs", "glyphs.yaml")


def glyph_args(font_dir, cache, out, *extra):
    return (
        "--config", CONFIG, "--smoke", "--output", str(out), "--progress", "none",
        "--set", f"dataset.font_dir={font_dir}", "--set", f"dataset.cache_dir={cache}",
        "--set", "dataset.charset=latin", "--set", "dataset.num_characters=null",
        # five kept fonts here: the superclass protocol holds out 2 of them (17 fonts: 5)
        "--set", "dataset.protocols.superclass.test_fonts=2",
        *extra,
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("glyph_smoke")
    fonts = tmp / "fonts"
    fonts.mkdir()
    for n in FONTS:
        shutil.copy(os.path.join(MPL_TTF, n), fonts / n)
    out = tmp / "run"
    proc = run_cli(*glyph_args(fonts, tmp / "cache", out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp, fonts, out, proc


class TestGlyphSmoke:
    def test_every_method_has_a_result(self, smoke):
        _, _, out, _ = smoke
        with open(out / "results.json", encoding="utf-8") as f:
            results = json.load(f)
        cells = {(r["protocol"], r["method"]) for r in results["results"]}
        for p in ("zero_shot", "superclass"):
            for m in ("no_learning", "contrastive", "contrastive+coding_rate", "proxy_anchor",
                      "proxy_anchor+coding_rate", "margin", "margin+easy_positive",
                      "ranked_list"):
                assert (p, m) in cells

    def test_results_record_the_font_manifest(self, smoke):
        tmp, _, out, proc = smoke
        text = (out / "results.json").read_text(encoding="utf-8")
        entries = [d for d in os.listdir(tmp / "cache") if not d.startswith(".")]
        assert len(entries) == 1
        manifest = json.loads((tmp / "cache" / entries[0] / "manifest.json").read_text())
        from benchmarks.harness.glyphs.render import manifest_hash

        assert manifest_hash(manifest) in text
        assert "DejaVuSansDisplay.ttf" in proc.stdout + proc.stderr  # the dropped font is named

    def test_different_font_set_is_not_resumed(self, smoke):
        tmp, fonts, out, _ = smoke
        os.remove(fonts / "cmss10.ttf")
        proc = run_cli(*glyph_args(fonts, tmp / "cache", out))
        assert proc.returncode != 0
        assert "--fresh" in proc.stdout + proc.stderr


class TestGlyphCliErrors:
    @pytest.mark.parametrize("kind", ["empty folder", "file"])
    def test_font_dir_without_fonts(self, tmp_path, kind):
        target = tmp_path / "fonts"
        if kind == "file":
            target.write_text("not a folder")
            what = "which is a file"
        else:
            target.mkdir()
            what = "which holds none"
        out = tmp_path / "run"
        proc = run_cli(*glyph_args(target, tmp_path / "cache", out))
        assert proc.returncode != 0
        assert (
            f"dataset.font_dir (--font-dir) must be a folder of .ttf/.otf/.ttc files, "
            f"got '{target}', {what}" in proc.stderr
        )
        assert not out.exists()
