"""The glyph images' torch path (no PIL): the batched shift against PIL's paste, the batch fetch
against the per-item fetch, the draws against the per-item draws, and the CNN's memory layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.harness.datasets.glyphs import (
    GREY_MEAN,
    GREY_STD,
    GlyphImages,
    shift_images,
)


def _images(n=12, side=16, seed=0):
    return np.random.RandomState(seed).randint(0, 256, size=(n, side, side)).astype(np.uint8)


def _pil_shift(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The previous path: paste the image at (dx, dy) on a black canvas of its size (PIL)."""
    from PIL import Image

    src = Image.fromarray(img)
    out = Image.new(src.mode, src.size, 0)
    out.paste(src, (dx, dy))
    return np.asarray(out)


class TestShift:
    @pytest.mark.parametrize("max_shift", [1, 2, 3])
    def test_matches_pil_paste_for_every_shift(self, max_shift):
        imgs = _images()
        r = range(-max_shift, max_shift + 1)
        pairs = [(dx, dy) for dx in r for dy in r]
        batch = torch.from_numpy(imgs[np.arange(len(pairs)) % len(imgs)])
        got = shift_images(batch, torch.tensor(pairs), max_shift)
        assert got.dtype == torch.uint8
        for k, (dx, dy) in enumerate(pairs):
            np.testing.assert_array_equal(got[k].numpy(), _pil_shift(batch[k].numpy(), dx, dy))

    def test_items_equal_the_pil_path_with_the_same_draws(self):
        imgs = _images()
        ds = GlyphImages(imgs, np.arange(len(imgs)), 2, ["c"] * len(imgs), ["f"] * len(imgs))
        torch.manual_seed(3)
        items = [ds[i][0] for i in range(len(imgs))]
        torch.manual_seed(3)
        for i, x in enumerate(items):
            dx, dy = torch.randint(-2, 3, (2,)).tolist()  # the draw order: (dx, dy) per item
            ref = _pil_shift(imgs[i], dx, dy).astype(np.float64) / 255
            np.testing.assert_allclose(x[0].double().numpy() * GREY_STD + GREY_MEAN, ref,
                                       atol=1e-6, rtol=0)


class TestBatchFetch:
    def test_batch_fetch_equals_item_fetch_and_draws_the_same(self):
        imgs = _images(40)
        ds = GlyphImages(imgs, np.arange(40) % 5, 2, ["c"] * 40, ["f"] * 40)
        idx = [7, 3, 3, 39, 0, 12]
        torch.manual_seed(1)
        one = [ds[i] for i in idx]
        after_items = torch.rand(3)
        torch.manual_seed(1)
        many = ds.__getitems__(idx)
        after_batch = torch.rand(3)
        assert torch.equal(after_items, after_batch)  # the generator moved the same
        for (xa, ya), (xb, yb) in zip(one, many, strict=True):
            assert ya == yb and torch.equal(xa, xb)

    def test_dataloader_uses_the_batch_fetch(self):
        imgs = _images(32)
        ds = GlyphImages(imgs, np.arange(32) % 4, 1, ["c"] * 32, ["f"] * 32)
        loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=False)
        torch.manual_seed(0)
        x, y = next(iter(loader))
        assert x.shape == (8, 1, 16, 16) and y.tolist() == [0, 1, 2, 3] * 2

    def test_without_augmentation_does_not_draw(self):
        ds = GlyphImages(_images(), np.zeros(12), 2, ["c"] * 12, ["f"] * 12).without_augmentation()
        state = torch.get_rng_state()
        ds.__getitems__(list(range(12)))
        assert torch.equal(state, torch.get_rng_state())

    @pytest.mark.parametrize("kw, match", [
        ({"images": np.zeros((2, 4, 4), np.float32)}, "images must be uint8"),
        ({"labels": np.zeros(3)}, "same length"),
        ({"max_shift": 4}, r"max_shift must be an integer in \[0, 4\)"),
    ])
    def test_bad_arguments_are_named(self, kw, match):
        args = {"images": np.zeros((2, 4, 4), np.uint8), "labels": np.zeros(2), "max_shift": 1}
        args.update(kw)
        with pytest.raises(ValueError, match=match):
            GlyphImages(args["images"], args["labels"], args["max_shift"], ["c"] * 2, ["f"] * 2)


class TestGlyphCNN:
    def test_channels_last_is_the_same_function(self):
        from benchmarks.harness.models.glyph_cnn import GlyphCNN

        torch.manual_seed(0)
        net = GlyphCNN(1, 8).eval()
        ref = GlyphCNN(1, 8).eval()
        ref.load_state_dict(net.state_dict())
        ref.to(memory_format=torch.contiguous_format)
        ref.forward = lambda x: ref.pool(ref.features(x))  # the default layout
        x = torch.randn(5, 1, 32, 32)
        torch.testing.assert_close(net(x), ref(x), rtol=1e-5, atol=1e-5)

    def test_registered_in_the_models_package(self):
        from benchmarks.harness import models
        from benchmarks.harness.models import glyph_cnn

        assert {"glyph_cnn", "glyph_cnn_small"} <= set(models.model_names())
        assert models._MODELS["glyph_cnn"].__module__ == glyph_cnn.__name__
