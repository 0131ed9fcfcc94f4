"""The glyph benchmark's data: character sets, font discovery, rendering, cache, protocols, model.

CI has no font packages: every test renders from the TTFs that matplotlib ships (DejaVu, STIX,
Computer Modern, Last Resort), copied into temporary folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string

import numpy as np
import pytest
import torch

from benchmarks.harness import datasets
from benchmarks.harness.glyphs import charsets, fonts, render

matplotlib = pytest.importorskip("matplotlib")
MPL_TTF = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
GOOD = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "cmr10.ttf", "cmss10.ttf")


def font_folder(tmp_path, names, sub="fonts"):
    folder = tmp_path / sub
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy(os.path.join(MPL_TTF, n), folder / n)
    return str(folder)


def glyph_section(font_dir, cache, protocols, **options):
    return datasets.parse_section(
        {
            "name": "glyphs",
            "charset": "latin",
            "num_characters": None,
            "font_dir": font_dir,
            "cache_dir": str(cache),
            **options,
            "protocols": protocols,
        }
    )


# ----------------------------------------------------------------------------- character sets


class TestCharsets:
    def test_kanji_are_jis_level1_by_row_and_cell(self):
        # reference: JIS X 0208 rows 16-47 through ISO-2022-JP (row/cell + 0x20), not EUC-JP
        ref = []
        for row in range(16, 48):
            for cell in range(1, 95):
                try:
                    ref.append(
                        (b"\x1b$B" + bytes((row + 0x20, cell + 0x20))).decode("iso2022_jp")
                    )
                except UnicodeDecodeError:
                    pass
        kanji = charsets.kanji_level1()
        assert len(kanji) == 2965
        assert kanji == "".join(ref)
        assert kanji[0] == "亜" and kanji[-1] == "腕"

    def test_kana_and_latin(self):
        kana = charsets.kana()
        assert len(kana) == 143 and len(set(kana)) == 143
        assert all(0x3041 <= ord(c) <= 0x30FA for c in kana)
        assert not set("ぁっゃァッャヘ") & set(kana) and {"へ", "ア", "ん", "ン"} <= set(kana)
        assert charsets.latin() == string.digits + string.ascii_uppercase + string.ascii_lowercase

    @pytest.mark.slow  # samples from all 2965 kanji
    def test_seeded_sample(self):
        a = charsets.select_characters("kanji", 1000, seed=0)
        assert a == charsets.select_characters("kanji", 1000, seed=0)
        assert a != charsets.select_characters("kanji", 1000, seed=1)
        assert len(a) == 1000 and set(a) <= set(charsets.kanji_level1())
        order = [charsets.kanji_level1().index(c) for c in a]
        assert order == sorted(order)

    @pytest.mark.parametrize("count", [1, 63, 2.5, True])
    def test_bad_count(self, count):
        with pytest.raises(ValueError, match=r"dataset.num_characters must be an int in \[2, 62\]"):
            charsets.select_characters("latin", count)

    def test_bad_charset(self):
        with pytest.raises(ValueError, match="dataset.charset must be one of kanji, kana, latin"):
            charsets.select_characters("greek")


# ----------------------------------------------------------------------------- fonts


class TestFontDiscovery:
    def test_folder_without_fonts_is_an_error(self, tmp_path):
        (tmp_path / "readme.txt").write_text("no fonts here")
        with pytest.raises(ValueError, match=r"font_dir \(--font-dir\) must be a folder .* none"):
            fonts.font_dir_faces(str(tmp_path))

    def test_file_is_an_error(self, tmp_path):
        path = os.path.join(font_folder(tmp_path, ["DejaVuSans.ttf"]), "DejaVuSans.ttf")
        with pytest.raises(ValueError, match=r"must be a folder .* which is a file"):
            fonts.font_dir_faces(path)
        with pytest.raises(ValueError, match=r"dataset.font_dir \(--font-dir\) .* which is a file"):
            glyph_section(path, tmp_path, {"z": {"type": "zero_shot"}})

    def test_missing_folder_is_an_error(self, tmp_path):
        with pytest.raises(ValueError, match="which is nothing"):
            fonts.font_dir_faces(str(tmp_path / "absent"))

    def test_one_face_per_design(self, tmp_path):
        d = font_folder(tmp_path, ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf",
                                   "DejaVuSerif-Italic.ttf", "DejaVuSerif.ttf"])
        assert [os.path.basename(f.path) for f in fonts.font_dir_faces(d)] == [
            "DejaVuSans.ttf", "DejaVuSerif.ttf"
        ]

    def test_font_set_missing_packages_says_how_to_install(self, tmp_path, monkeypatch):
        monkeypatch.setattr(fonts, "_dpkg_files", lambda package: (None, []))
        with pytest.raises(ValueError, match=r"bash scripts/fonts.sh core.*--font-dir DIR"):
            fonts.font_set_faces("core", str(tmp_path))

    def test_font_set_from_the_extraction_cache(self, tmp_path, monkeypatch):
        # what scripts/fonts.sh leaves without root: <cache>/<package>/usr/share/fonts/...
        monkeypatch.setattr(fonts, "_dpkg_files", lambda package: (None, []))
        monkeypatch.setitem(
            fonts.FONT_SETS, "tiny", {"fonts-dejavu-core": ("x", (("DejaVuSans.ttf", 0),))}
        )
        pkg = tmp_path / "fonts-dejavu-core"
        font_folder(pkg, ["DejaVuSans.ttf"], sub="usr/share/fonts/truetype/dejavu")
        (pkg / "VERSION").write_text("2.37-6\n")
        (face,) = fonts.font_set_faces("tiny", str(tmp_path))
        assert face.package == "fonts-dejavu-core" and face.version == "2.37-6"
        assert os.path.basename(face.path) == "DejaVuSans.ttf"

    def test_pinned_lists(self):
        assert len(fonts.FONT_SETS["core"]) == 16
        assert sum(len(files) for _, files in fonts.FONT_SETS["core"].values()) == 17
        assert set(fonts.FONT_SETS["core"]) <= set(fonts.FONT_SETS["extended"])
        assert set(fonts.FONT_SETS["extended"]) <= set(fonts.FONT_SETS["all"])


# ----------------------------------------------------------------------------- rendering


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("glyphs")
    d = font_folder(tmp, [*GOOD, "DejaVuSansDisplay.ttf", "LastResortHE-Regular.ttf"])
    chars = charsets.latin()
    g = render.render_glyphs(fonts.font_dir_faces(d), chars, cache_dir=str(tmp / "cache"))
    return tmp, d, chars, g


@pytest.mark.slow  # renders every test font
class TestRender:
    def test_shape_and_kept_fonts(self, rendered):
        _, _, chars, g = rendered
        assert g.images.shape == (len(GOOD), 62, 32, 32) and g.images.dtype == np.uint8
        assert [f["file"] for f in g.fonts] == sorted(GOOD)
        assert g.characters == chars and not g.from_cache
        assert os.path.isfile(os.path.join(g.path, render.SAMPLE_GRID))

    def test_font_without_coverage_and_placeholder_font_are_dropped(self, rendered):
        _, _, _, g = rendered
        reasons = {d["file"]: d["reason"] for d in g.dropped}
        assert set(reasons) == {"DejaVuSansDisplay.ttf", "LastResortHE-Regular.ttf"}
        assert reasons["DejaVuSansDisplay.ttf"].startswith("lacks 62 of 62 characters")
        assert "placeholder" in reasons["LastResortHE-Regular.ttf"]

    def test_fit_and_centring(self, rendered):
        _, _, _, g = rendered
        for img in g.images.reshape(-1, 32, 32):
            rows, cols = np.nonzero(img)
            h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
            assert 26 <= max(h, w) <= 28  # the longer side fills the 28-px box (Lanczos edges)
            assert abs((rows.max() + rows.min()) / 2 - 15.5) <= 1.5
            assert abs((cols.max() + cols.min()) / 2 - 15.5) <= 1.5

    def test_matches_an_independent_rasterisation(self, rendered):
        # reference: Pillow's getmask (no drawing canvas), cropped and resized with numpy
        from PIL import ImageFont

        _, d, chars, g = rendered
        font = ImageFont.truetype(os.path.join(d, "DejaVuSans.ttf"), 64)
        f = [x["file"] for x in g.fonts].index("DejaVuSans.ttf")
        for ch in "AgW7qK":
            mask = font.getmask(ch)
            m = np.array(mask, dtype=np.uint8).reshape(mask.size[1], mask.size[0]) > 127
            rows, cols = np.nonzero(m)
            m = m[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
            s = 28 / max(m.shape)
            nh, nw = max(1, round(m.shape[0] * s)), max(1, round(m.shape[1] * s))
            yy = np.minimum((np.arange(nh) + 0.5) / s, m.shape[0] - 1).astype(int)
            xx = np.minimum((np.arange(nw) + 0.5) / s, m.shape[1] - 1).astype(int)
            ref = np.zeros((32, 32), bool)
            ref[(32 - nh) // 2: (32 - nh) // 2 + nh, (32 - nw) // 2: (32 - nw) // 2 + nw] = (
                m[np.ix_(yy, xx)]
            )
            got = g.images[f] > 127
            iou = (got & ref).sum(axis=(1, 2)) / (got | ref).sum(axis=(1, 2))
            assert iou[chars.index(ch)] > 0.5, (ch, iou[chars.index(ch)])
            assert iou.argmax() == chars.index(ch)  # closer to its own glyph than to any other

    def test_identical_bytes_on_re_render(self, rendered, tmp_path):
        _, d, chars, g = rendered
        again = render.render_glyphs(fonts.font_dir_faces(d), chars, cache_dir=str(tmp_path))
        assert not again.from_cache
        np.testing.assert_array_equal(again.images, g.images)
        assert again.manifest_hash == g.manifest_hash

    def test_manifest_records_files_versions_and_arrays(self, rendered):
        _, d, _, g = rendered
        m = json.loads(open(os.path.join(g.path, "manifest.json"), encoding="utf-8").read())
        assert m == g.manifest
        for f in m["fonts"]:
            with open(os.path.join(d, f["file"]), "rb") as fh:
                assert f["sha256"] == hashlib.sha256(fh.read()).hexdigest()
        import PIL

        assert m["versions"]["pillow"] == PIL.__version__ and m["versions"]["freetype"]
        assert m["characters"] == charsets.latin() and m["shape"] == list(g.images.shape)
        h = hashlib.sha256(json.dumps([list(g.images.shape), "uint8"], separators=(",", ":"))
                           .encode())
        h.update(g.images.tobytes())
        assert m["array_sha256"] == h.hexdigest()

    def test_too_few_fonts_is_an_error_naming_the_reasons(self, tmp_path):
        d = font_folder(tmp_path, ["DejaVuSans.ttf", "DejaVuSansDisplay.ttf"])
        with pytest.raises(ValueError, match=r"1 of 2 font faces render all 62 .* need >= 2 "
                                             r"\(dropped: DejaVuSansDisplay.ttf: lacks"):
            render.render_glyphs(fonts.font_dir_faces(d), charsets.latin(),
                                 cache_dir=str(tmp_path / "c"))

    def test_sample_grid(self, rendered, tmp_path):
        from PIL import Image

        _, _, _, g = rendered
        path = render.sample_grid(g, str(tmp_path / "grid.png"), columns=10, scale=2)
        img = Image.open(path)
        assert img.size == (170 + 10 * 66, len(GOOD) * 66)


class TestCache:
    def test_reuse(self, rendered):
        _, d, chars, g = rendered
        again = render.render_glyphs(fonts.font_dir_faces(d), chars,
                                     cache_dir=os.path.dirname(g.path))
        assert again.from_cache and again.manifest_hash == g.manifest_hash
        np.testing.assert_array_equal(again.images, g.images)

    @pytest.mark.slow  # renders again
    def test_changed_font_set_gives_a_new_hash(self, rendered):
        _, d, chars, g = rendered
        cache = os.path.dirname(g.path)
        fewer = [f for f in fonts.font_dir_faces(d) if not f.path.endswith("cmss10.ttf")]
        other = render.render_glyphs(fewer, chars, cache_dir=cache)
        assert not other.from_cache and other.path != g.path
        assert other.manifest_hash != g.manifest_hash
        assert other.images.shape[0] == g.images.shape[0] - 1

    def test_changed_file_content_gives_a_new_hash(self, tmp_path):
        d = font_folder(tmp_path, GOOD[:3])
        cache = str(tmp_path / "cache")
        a = render.render_glyphs(fonts.font_dir_faces(d), "AB", cache_dir=cache)
        shutil.copy(os.path.join(MPL_TTF, "DejaVuSerif-Bold.ttf"), os.path.join(d, GOOD[1]))
        b = render.render_glyphs(fonts.font_dir_faces(d), "AB", cache_dir=cache)
        assert not b.from_cache and b.manifest_hash != a.manifest_hash

    def test_damaged_entry_is_rendered_again(self, tmp_path):
        d = font_folder(tmp_path, GOOD[:3])
        cache = str(tmp_path / "cache")
        a = render.render_glyphs(fonts.font_dir_faces(d), "AB", cache_dir=cache)
        with open(os.path.join(a.path, "images.npz"), "r+b") as f:
            f.truncate(100)
        b = render.render_glyphs(fonts.font_dir_faces(d), "AB", cache_dir=cache)
        assert not b.from_cache and b.manifest_hash == a.manifest_hash
        np.testing.assert_array_equal(a.images, b.images)


# ----------------------------------------------------------------------------- protocols


@pytest.fixture(scope="module")
def protocols(rendered):
    tmp, d, _, _ = rendered
    sec = glyph_section(
        d, tmp / "cache",
        {
            "zs": {"type": "zero_shot", "split_seed": 3},
            "val": {"type": "zero_shot", "split_seed": 3, "validation_fold": 1},
            "sc": {"type": "superclass", "split_seed": 3, "group_size": 4, "test_fonts": 2},
            "scv": {"type": "superclass", "split_seed": 3, "group_size": 4, "test_fonts": 2,
                    "validation": True},
        },
    )
    return datasets.build(sec)


def chars_of(ds):
    return set(ds.characters)


class TestProtocols:
    def test_zero_shot_is_class_disjoint_over_every_font(self, protocols):
        p = protocols["zs"]
        train, query = p.train, p.query
        assert p.reference is None and p.input_kind == "image"
        assert not chars_of(train) & chars_of(query)
        assert chars_of(train) | chars_of(query) == set(charsets.latin())
        assert len(chars_of(train)) == 31 == p.num_train_classes
        assert len(train) == 31 * len(GOOD) and len(query) == 31 * len(GOOD)
        assert set(train.fonts) == set(query.fonts) == set(GOOD)
        assert sorted(set(train.labels.tolist())) == list(range(31))
        # one label per character in the query set
        pairs = set(zip(query.characters, query.labels.tolist(), strict=True))
        assert len(pairs) == len({c for c, _ in pairs}) == len({lab for _, lab in pairs})

    def test_items_are_normalised_grey_tensors(self, protocols):
        from benchmarks.harness.datasets.glyphs import GREY_MEAN, GREY_STD

        x, y = protocols["zs"].query[0]
        assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
        pixels = protocols["zs"].query.images[0].double() / 255
        torch.testing.assert_close((x[0] * GREY_STD + GREY_MEAN).double(), pixels,
                                   atol=1e-6, rtol=0)

    def test_training_shift_keeps_the_ink(self, protocols):
        train = protocols["zs"].train
        torch.manual_seed(0)
        a = train[5][0]
        ink = int((train.images[5] > 0).sum())
        assert int((a[0] > a[0].min()).sum()) == ink  # a <= 2-px shift cuts no stroke
        shifted = [not torch.equal(train[5][0], a) for _ in range(10)]
        assert any(shifted)

    def test_validation_fold_uses_training_characters_only(self, protocols):
        zs, val = protocols["zs"], protocols["val"]
        assert chars_of(val.train) | chars_of(val.query) == chars_of(zs.train)
        assert not chars_of(val.train) & chars_of(val.query)
        assert len(chars_of(val.query)) in (10, 11)

    def test_superclass_holds_fonts_out(self, protocols):
        p, zs = protocols["sc"], protocols["zs"]
        assert not set(p.train.fonts) & set(p.query.fonts)
        assert len(set(p.query.fonts)) == 2 and len(set(p.train.fonts)) == len(GOOD) - 2
        assert chars_of(p.train) == chars_of(p.query) == chars_of(zs.train)
        # coarse labels: fixed groups of the training characters, 31 // 4 = 7 groups of 4-5
        group = {}
        for ch, lab in zip(p.train.characters, p.train.labels.tolist(), strict=True):
            assert group.setdefault(ch, lab) == lab
        sizes = np.bincount(list(group.values()))
        assert p.num_train_classes == 7 and len(sizes) == 7 and set(sizes) <= {4, 5}
        # fine labels in the query: one per character
        assert len(set(p.query.labels.tolist())) == 31

    def test_superclass_validation_never_sees_the_test_fonts(self, protocols):
        sc, scv = protocols["sc"], protocols["scv"]
        test_fonts = set(sc.query.fonts)
        assert not test_fonts & (set(scv.train.fonts) | set(scv.query.fonts))
        assert len(set(scv.query.fonts)) == 2 and len(set(scv.train.fonts)) == len(GOOD) - 4

    def test_validation_forms_read_no_test_data(self, rendered):
        """The forms the search folds each protocol into: zero-shot, class-disjoint folds of the
        training characters; superclass, disjoint blocks of held-out *training* fonts scored on
        the fine characters. Neither reads a test character or a test font."""
        tmp = rendered[0]
        d = font_folder(tmp, [*GOOD, "STIXGeneral.ttf", "cmtt10.ttf", "cmti10.ttf"], "seven")
        specs = {"zs": {"type": "zero_shot", "split_seed": 3},
                 "sc": {"type": "superclass", "split_seed": 3, "group_size": 4, "test_fonts": 2}}
        sec = glyph_section(d, tmp / "cache7", specs)
        test = datasets.build(sec)
        zs_forms = sec.protocols["zs"].validation_forms(2)
        sc_forms = sec.protocols["sc"].validation_forms(2)
        built = sec.options.build({"z0": zs_forms[0], "z1": zs_forms[1],
                                   "s0": sc_forms[0], "s1": sc_forms[1]})
        z0, z1 = built["z0"], built["z1"]
        assert chars_of(z0.query) | chars_of(z1.query) == chars_of(test["zs"].train)
        assert not chars_of(z0.query) & chars_of(z1.query)
        for z in (z0, z1):
            assert not chars_of(z.train) & chars_of(z.query)
        s0, s1 = built["s0"], built["s1"]
        test_fonts = set(test["sc"].query.fonts)
        held = [set(s.query.fonts) for s in (s0, s1)]
        assert len(held[0]) == len(held[1]) == 2 and not held[0] & held[1]
        for s, h in zip((s0, s1), held, strict=True):
            assert not test_fonts & (set(s.train.fonts) | h)
            assert not set(s.train.fonts) & h
            assert chars_of(s.query) == chars_of(test["sc"].train)  # fine characters
            assert len(set(s.query.labels.tolist())) == len(chars_of(test["sc"].train))
        assert s0.num_train_classes == test["sc"].num_train_classes

    def test_provenance_names_the_manifest(self, protocols, rendered):
        _, _, _, g = rendered
        for p in protocols.values():
            assert p.provenance["glyph_manifest_sha256"] == g.manifest_hash
            assert p.provenance["num_fonts"] == len(GOOD)

    def test_seeded_splits(self, rendered):
        tmp, d, _, _ = rendered
        def split(seed):
            sec = glyph_section(d, tmp / "cache", {"z": {"type": "zero_shot", "split_seed": seed}})
            return chars_of(datasets.build(sec)["z"].query)
        assert split(3) == split(3) and split(3) != split(4)

    def test_too_many_test_fonts(self, rendered):
        tmp, d, _, _ = rendered
        sec = glyph_section(d, tmp / "cache", {"s": {"type": "superclass", "test_fonts": 5}})
        with pytest.raises(ValueError, match=r"protocols.s.test_fonts: 5 held-out fonts need >= 6"):
            datasets.build(sec)
        sec = glyph_section(d, tmp / "cache", {"s": {"type": "superclass", "test_fonts": 2,
                                                     "validation": True, "validation_fold": 1}})
        with pytest.raises(ValueError, match=r"fonts \(3 blocks, validation\) need >= 7"):
            datasets.build(sec)

    def test_bad_validation_fold(self, rendered):
        tmp, d, _, _ = rendered
        with pytest.raises(ValueError, match="validation_fold must be < validation_folds 3, got 3"):
            glyph_section(d, tmp, {"z": {"type": "zero_shot", "validation_fold": 3}})


# ----------------------------------------------------------------------------- model


class TestModel:
    @pytest.mark.parametrize("name, dim", [("glyph_cnn", 128), ("glyph_cnn_small", 64)])
    def test_registered_cnn(self, name, dim):
        from benchmarks.harness.models import ModelOptions, build_model

        for channels in (1, 3):
            trunk, embedder = build_model(ModelOptions(name=name, embedding_size=48),
                                          (channels, 32, 32))
            assert trunk.output_dim == dim
            z = embedder(trunk(torch.randn(4, channels, 32, 32)))
            assert z.shape == (4, 48)

    def test_vector_input_is_refused(self):
        from benchmarks.harness.models import ModelOptions, build_model

        with pytest.raises(ValueError, match=r"glyph_cnn needs image items \(C, H, W\), got "
                                             r"items of shape \(64,\)"):
            build_model(ModelOptions(name="glyph_cnn"), (64,))


class TestManifestHash:
    def test_same_files_elsewhere_give_the_same_hash(self, tmp_path):
        a = font_folder(tmp_path, GOOD[:3], sub="a")
        b = font_folder(tmp_path, GOOD[:3], sub="b")
        ga = render.render_glyphs(fonts.font_dir_faces(a), "AB", cache_dir=str(tmp_path / "c"))
        gb = render.render_glyphs(fonts.font_dir_faces(b), "AB", cache_dir=str(tmp_path / "d"))
        assert ga.fonts[0]["path"] != gb.fonts[0]["path"]
        assert ga.manifest_hash == gb.manifest_hash


@pytest.mark.slow  # renders another charset
class TestProtocolCharset:
    def test_a_protocol_can_use_another_charset(self, rendered):
        tmp, d, _, _ = rendered
        # the dataset's charset (kanji) is never rendered: DejaVu & co. have none, and no
        # protocol uses it
        sec = datasets.parse_section({
            "name": "glyphs", "charset": "kanji", "num_characters": 1000, "font_dir": d,
            "cache_dir": str(tmp / "cache"),
            "protocols": {"latin20": {"type": "zero_shot", "charset": "latin",
                                      "num_characters": 20}},
        })
        p = datasets.build(sec)["latin20"]
        chars = chars_of(p.train) | chars_of(p.query)
        assert chars == set(charsets.select_characters("latin", 20, 0))
        assert p.provenance["num_characters"] == 20
