"""Real-data path of the harness on fake on-disk CUB / Cars196 / SOP trees, and the backbones.

Nothing here downloads: every dataset is a tiny tree written by
``tests.benchmarks.fake_datasets`` and PML's ``download_and_remove`` is patched to fail if
anything tries.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_metric_learning import datasets as pml_datasets
from pytorch_metric_learning import samplers

from benchmarks.harness.datasets import real as real_data
from benchmarks.harness.datasets.real import IMAGENET_MEAN, IMAGENET_STD, build_real_dataset
from benchmarks.harness.models import AvgMaxPool, BNInceptionLike, build_backbone
from tests.benchmarks._util import retrieval_reference
from tests.benchmarks.fake_datasets import make_fake_tree

NAMES = ("cub", "cars196", "sop")
PML_CLASSES = {"cub": "CUB", "cars196": "Cars196", "sop": "StanfordOnlineProducts"}
# PML's class-disjoint split: first raw class id of its test split (SOP: after the train ids)
TEST_FIRST_ID = {"cub": 101, "cars196": 99}
SIZE = 32
MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


@pytest.fixture(autouse=True)
def _no_download(monkeypatch):
    def fail(self):  # pragma: no cover - only runs if a download is attempted
        raise AssertionError("a dataset tried to download")

    for cls in PML_CLASSES.values():
        monkeypatch.setattr(getattr(pml_datasets, cls), "download_and_remove", fail)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """One fake tree per dataset: 5 classes (3 train, 2 test), 4 images each."""
    return {
        n: make_fake_tree(n, str(tmp_path_factory.mktemp(n)), num_classes=5, images_per_class=4,
                          size=20)
        for n in NAMES
    }


def _unnormalise(x: torch.Tensor) -> torch.Tensor:
    return x * STD + MEAN


class TestFakeTreesLoad:
    @pytest.mark.parametrize("name", NAMES)
    @pytest.mark.parametrize("train", [True, False], ids=["train_tf", "test_tf"])
    def test_items_are_rgb_float_with_contiguous_labels(self, trees, name, train):
        for split in ("train", "test", "train+test"):
            ds = build_real_dataset(name, trees[name], split, SIZE, train)
            raw = np.array(ds.base.labels)
            # independent remap: rank of the raw id among the split's sorted unique ids
            expected = np.unique(raw, return_inverse=True)[1]
            assert ds.labels.dtype == torch.long and ds.labels.dim() == 1
            assert ds.labels.tolist() == expected.tolist()
            assert ds.num_classes == len(np.unique(raw))
            assert set(ds.labels.tolist()) == set(range(ds.num_classes))
            modes = set()
            for i in range(len(ds)):
                x, y = ds[i]
                assert isinstance(y, int) and y == int(expected[i])
                assert x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32
                u = _unnormalise(x)
                assert float(u.min()) >= -1e-5 and float(u.max()) <= 1 + 1e-5
                with Image.open(ds.paths[i]) as img:
                    modes.add(img.mode)
                    if img.mode == "L":  # gray → RGB replicates the channel exactly
                        torch.testing.assert_close(u[0], u[1], rtol=0, atol=1e-6)
                        torch.testing.assert_close(u[0], u[2], rtol=0, atol=1e-6)
            if split == "train+test":
                assert {"L", "RGB"} <= modes  # the fake tree exercises the conversion

    @pytest.mark.parametrize("name", NAMES)
    def test_train_and_test_classes_are_disjoint_as_pml_defines_them(self, trees, name):
        train = build_real_dataset(name, trees[name], "train", SIZE, True)
        test = build_real_dataset(name, trees[name], "test", SIZE, False)
        both = build_real_dataset(name, trees[name], "train+test", SIZE, False)
        first_test = TEST_FIRST_ID.get(name, 4)
        assert train.class_ids == [1, 2, 3]
        assert test.class_ids == [first_test, first_test + 1]
        assert not set(train.class_ids) & set(test.class_ids)
        assert sorted(both.class_ids) == sorted(train.class_ids + test.class_ids)
        assert len(train) == 12 and len(test) == 8 and len(both) == 20
        # the same images PML's own class lists, unchanged
        pml = getattr(pml_datasets, PML_CLASSES[name])(trees[name], split="test", download=False)
        assert test.paths == pml.paths

    def test_cars196_merges_both_kaggle_folders_and_maps_slash_names(self, trees):
        ds = build_real_dataset("cars196", trees["cars196"], "train+test", SIZE, False)
        folders = {p.split(os.sep)[-3] for p in ds.paths}
        assert folders == {"train", "test"}
        assert any("Ram C-V Cargo Van" in p for p in ds.paths)

    @pytest.mark.parametrize("name", NAMES)
    def test_m_per_class_sampler_and_dataloader(self, trees, name):
        ds = build_real_dataset(name, trees[name], "train", SIZE, True)
        sampler = samplers.MPerClassSampler(ds.labels, m=2, batch_size=4,
                                            length_before_new_iter=len(ds))
        loader = torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, num_workers=1)
        x, y = next(iter(loader))
        assert x.shape == (4, 3, SIZE, SIZE) and y.dtype == torch.int64
        _, counts = torch.unique(y, return_counts=True)
        assert counts.tolist() == [2, 2]


class TestTransforms:
    def test_constant_image_gives_the_normalised_colour(self):
        colour = (200, 30, 90)
        img = Image.new("RGB", (50, 37), colour)
        for train in (True, False):
            x = real_data.make_transform(SIZE, train)(img)
            expected = (torch.tensor(colour, dtype=torch.float64).view(3, 1, 1) / 255
                        - MEAN.double()) / STD.double()
            torch.testing.assert_close(x.double(), expected.expand(3, SIZE, SIZE),
                                       rtol=0, atol=1e-5)

    def test_test_transform_resizes_shorter_side_then_center_crops(self):
        # 64×32 (W×H), left half black, right half white; image_size 28 → shorter side
        # round(28·256/224) = 32 (no resize), crop x ∈ [18, 46): columns 0–13 black, 14–27 white
        a = np.zeros((32, 64, 3), dtype=np.uint8)
        a[:, 32:] = 255
        x = _unnormalise(real_data.make_transform(28, False)(Image.fromarray(a)))
        assert x.shape == (3, 28, 28)
        torch.testing.assert_close(x[:, :, :14], torch.zeros(3, 28, 14), rtol=0, atol=1e-5)
        torch.testing.assert_close(x[:, :, 14:], torch.ones(3, 28, 14), rtol=0, atol=1e-5)

    def test_test_transform_downsizes_large_images(self):
        img = Image.new("L", (300, 500), 128)
        x = real_data.make_transform(SIZE, False)(img)
        assert x.shape == (3, SIZE, SIZE)

    def test_flip_keeps_or_mirrors_the_image(self):
        rng = np.random.RandomState(0)
        a = rng.randint(0, 256, size=(SIZE, SIZE, 3)).astype(np.uint8)
        tf = real_data.Compose([
            real_data.RandomResizedCrop(SIZE, scale=(1.0, 1.0), ratio=(1.0, 1.0)),
            real_data.RandomHorizontalFlip(0.5),
            real_data.ToNormalizedTensor(),
        ])
        plain = real_data.ToNormalizedTensor()(Image.fromarray(a))
        mirrored = real_data.ToNormalizedTensor()(Image.fromarray(a[:, ::-1].copy()))
        seen = set()
        for _ in range(30):
            x = tf(Image.fromarray(a))
            if torch.equal(x, plain):
                seen.add("plain")
            elif torch.equal(x, mirrored):
                seen.add("mirrored")
            else:
                pytest.fail("the output is neither the image nor its mirror")
        assert seen == {"plain", "mirrored"}

    def test_random_resized_crop_boxes_follow_scale_and_ratio(self):
        rrc = real_data.RandomResizedCrop(SIZE)
        areas, ratios = [], []
        for _ in range(300):
            left, top, right, bottom = rrc.box(400, 300)
            assert 0 <= left < right <= 400 and 0 <= top < bottom <= 300
            w, h = right - left, bottom - top
            areas.append(w * h / (400 * 300))
            ratios.append(w / h)
        assert min(areas) >= 0.08 * 0.97 and max(areas) <= 1.0
        assert min(ratios) >= 0.75 * 0.97 and max(ratios) <= 4 / 3 * 1.03
        assert max(areas) - min(areas) > 0.5  # it does vary

    def test_random_resized_crop_falls_back_to_a_central_crop(self):
        # a 200×10 strip: no crop of ratio ≤ 4/3 with area ≥ 8 % fits, so the fallback is used
        box = real_data.RandomResizedCrop(SIZE).box(200, 10)
        assert box == (93, 0, 93 + 13, 10)


class TestErrors:
    def test_missing_root_names_data_root_and_layout(self, tmp_path):
        with pytest.raises(FileNotFoundError, match=r"--data-root(.|\n)*CUB_200_2011/images.txt"):
            build_real_dataset("cub", str(tmp_path / "nowhere"), "train", SIZE, True)

    def test_none_root(self):
        with pytest.raises(FileNotFoundError, match="no data root given(.|\n)*--data-root"):
            build_real_dataset("sop", None, "train", SIZE, True)

    @pytest.mark.parametrize(
        "name, missing",
        [("cub", "CUB_200_2011/images.txt"), ("cars196", "names.csv"),
         ("sop", "Stanford_Online_Products/Ebay_train.txt")],
    )
    def test_empty_root_names_the_missing_metadata(self, tmp_path, name, missing):
        with pytest.raises(FileNotFoundError, match=f"lacks .*{missing}(.|\\n)*--data-root"):
            build_real_dataset(name, str(tmp_path), "train", SIZE, True)

    def test_missing_image_file(self, tmp_path):
        root = make_fake_tree("sop", str(tmp_path), num_classes=2, images_per_class=2, size=12)
        ds = build_real_dataset("sop", root, "train", SIZE, True)
        os.remove(ds.paths[1])
        with pytest.raises(FileNotFoundError, match="1 of 2 image files listed in the metadata"):
            build_real_dataset("sop", root, "train", SIZE, True)

    def test_bad_arguments(self, trees):
        with pytest.raises(ValueError, match="name must be one of cub, cars196, sop, got 'inat'"):
            build_real_dataset("inat", trees["cub"], "train", SIZE, True)
        with pytest.raises(ValueError, match="split must be one of"):
            build_real_dataset("cub", trees["cub"], "val", SIZE, True)
        with pytest.raises(ValueError, match="image_size must be a positive int, got 0"):
            build_real_dataset("cub", trees["cub"], "train", 0, True)
        with pytest.raises(ValueError, match="num_classes must be in"):
            make_fake_tree("cub", trees["cub"], num_classes=1)


def _tiny_pair():
    torch.manual_seed(0)
    return build_backbone("tiny", 16, None)


class TestBackbones:
    def test_tiny_forward_shape(self):
        trunk, embedder = _tiny_pair()
        f = trunk(torch.randn(5, 3, SIZE, SIZE))
        assert f.shape == (5, trunk.output_dim) == (5, 64)
        assert isinstance(embedder, torch.nn.Linear) and embedder.in_features == 64
        assert embedder(f).shape == (5, 16)

    def test_avg_max_pool(self):
        x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
        F = torch.nn.functional
        expected = F.adaptive_avg_pool2d(x, 1) + F.adaptive_max_pool2d(x, 1)
        torch.testing.assert_close(AvgMaxPool()(x), expected.flatten(1))

    def test_frozen_bn_keeps_statistics_and_parameters(self):
        trunk, _ = build_backbone("tiny", 8, None, frozen_bn=True)
        trunk.train()
        bns = [m for m in trunk.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert trunk.training and bns and not any(m.training for m in bns)
        assert not any(p.requires_grad for m in bns for p in m.parameters())
        before = [m.running_mean.clone() for m in bns]
        trunk(torch.randn(4, 3, SIZE, SIZE) + 3)
        assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bns, strict=True))
        convs = [m for m in trunk.modules() if isinstance(m, torch.nn.Conv2d)]
        assert all(m.weight.requires_grad for m in convs)

    def test_bn_trains_by_default_without_weights(self):
        trunk, _ = _tiny_pair()
        trunk.train()
        bns = [m for m in trunk.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert all(m.training for m in bns)
        before = bns[0].running_mean.clone()
        trunk(torch.randn(4, 3, SIZE, SIZE) + 3)
        assert not torch.equal(before, bns[0].running_mean)

    @pytest.mark.parametrize("wrap", ["bare", "module_prefix", "state_dict_key"])
    def test_weights_load_from_a_local_file_and_freeze_bn(self, tmp_path, wrap):
        src, _ = _tiny_pair()
        src(torch.randn(4, 3, SIZE, SIZE))  # non-trivial running statistics
        state = src.state_dict()
        if wrap == "module_prefix":
            state = {"module." + k: v for k, v in state.items()}
        elif wrap == "state_dict_key":
            state = {"state_dict": state, "epoch": 3}
        path = tmp_path / "tiny.pth"
        torch.save(state, path)
        torch.manual_seed(1)
        trunk, _ = build_backbone("tiny", 16, str(path))
        assert trunk.frozen_bn  # weights given → frozen by default
        x = torch.randn(3, 3, SIZE, SIZE)
        torch.testing.assert_close(trunk.eval()(x), src.eval()(x))

    def test_missing_weights_file(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="weights file .*not found"):
            build_backbone("tiny", 16, str(tmp_path / "absent.pth"))

    def test_bad_name_and_size(self):
        with pytest.raises(ValueError, match="name must be one of resnet50, bninception_l"):
            build_backbone("vgg", 16, None)
        with pytest.raises(ValueError, match="embedding_size must be a positive int"):
            build_backbone("tiny", 0, None)

    def test_bninception_like_channels_follow_the_paper(self):
        net = BNInceptionLike()
        # output channels of modules 3a … 5b in Ioffe & Szegedy (2015), Figure 5
        assert [b.output_dim for b in net.blocks] == [256, 320, 576, 576, 576, 608, 608, 1056,
                                                      1024, 1024]
        with pytest.warns(UserWarning, match="starts from random weights"):
            trunk, embedder = build_backbone("bninception_like", 512, None)
        with torch.no_grad():
            f = trunk.eval()(torch.randn(2, 3, 64, 64))
        assert f.shape == (2, 1024) and embedder(f).shape == (2, 512)

    @pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None,
                        reason="torchvision is installed")
    def test_resnet50_without_torchvision_says_how_to_install_it(self):
        with pytest.raises(ImportError, match="needs torchvision(.|\n)*pip install torchvision"):
            build_backbone("resnet50", 512, None)


class _FakeResNet(torch.nn.Module):
    """The attribute names of torchvision's ResNet, at toy size."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(4)
        self.relu = torch.nn.ReLU()
        self.maxpool = torch.nn.MaxPool2d(2)
        self.layer1 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.layer2 = torch.nn.Conv2d(4, 6, 3, padding=1)
        self.layer3 = torch.nn.Conv2d(6, 6, 3, padding=1)
        self.layer4 = torch.nn.Conv2d(6, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 1000)


class TestResNet50Wrapper:
    """The torchvision wiring, checked with a stand-in ``torchvision.models.resnet50``."""

    @pytest.fixture
    def fake_torchvision(self, monkeypatch):
        calls = []

        def resnet50(weights=None):
            calls.append(weights)
            return _FakeResNet()

        tv = types.ModuleType("torchvision")
        tv.models = types.ModuleType("torchvision.models")
        tv.models.resnet50 = resnet50
        monkeypatch.setitem(sys.modules, "torchvision", tv)
        monkeypatch.setitem(sys.modules, "torchvision.models", tv.models)
        return calls

    def test_trunk_is_body_plus_avg_max_pool_and_ignores_fc(self, tmp_path, fake_torchvision):
        torch.manual_seed(0)
        ref = _FakeResNet()
        path = tmp_path / "resnet50.pth"
        torch.save(ref.state_dict(), path)  # includes fc.*, which must be ignored
        trunk, embedder = build_backbone("resnet50", 512, str(path))
        assert fake_torchvision == [None]  # never asks torchvision for downloadable weights
        assert trunk.output_dim == 8 and embedder.in_features == 8
        assert trunk.frozen_bn
        x = torch.randn(2, 3, 16, 16)
        ref.eval()
        with torch.no_grad():
            h = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
            h = ref.layer4(ref.layer3(ref.layer2(ref.layer1(h))))
            expected = h.mean(dim=(2, 3)) + h.amax(dim=(2, 3))
            torch.testing.assert_close(trunk.eval()(x), expected)

    def test_weights_that_do_not_fit(self, tmp_path, fake_torchvision):
        path = tmp_path / "other.pth"
        torch.save({"features.0.weight": torch.zeros(1)}, path)
        with pytest.raises(ValueError, match="do not fit torchvision's ResNet-50"):
            build_backbone("resnet50", 512, str(path))


class TestWithPMLMachinery:
    @pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad:UserWarning")
    def test_one_epoch_of_metric_loss_only_and_the_tester(self, trees):
        """The real-data path end to end on a fake CUB tree: PML trainer, sampler and tester."""
        from pytorch_metric_learning import losses, testers, trainers
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        train = build_real_dataset("cub", trees["cub"], "train", SIZE, True)
        test = build_real_dataset("cub", trees["cub"], "test", SIZE, False)
        trunk, embedder = _tiny_pair()
        models = {"trunk": trunk, "embedder": embedder}
        opts = {f"{k}_optimizer": torch.optim.Adam(m.parameters(), lr=1e-3)
                for k, m in models.items()}
        trainer = trainers.MetricLossOnly(
            models, opts, batch_size=4, loss_funcs={"metric_loss": losses.ContrastiveLoss()},
            dataset=train,
            sampler=samplers.MPerClassSampler(train.labels, m=2, batch_size=4,
                                              length_before_new_iter=len(train)),
            dataloader_num_workers=0,
            end_of_iteration_hook=lambda t: steps.append(t.losses["total_loss"].detach()),
        )
        steps = []
        trainer.train(num_epochs=1)
        assert len(steps) == len(train) // 4
        assert all(torch.isfinite(s) for s in steps)
        tester = testers.GlobalEmbeddingSpaceTester(
            accuracy_calculator=AccuracyCalculator(
                include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count"),
            dataloader_num_workers=0,
        )
        acc = tester.test({"test": test}, 1, trunk, embedder)
        # the tester's figures equal a brute-force float64 kNN on the same embeddings
        trunk.eval(), embedder.eval()
        with torch.no_grad():
            x = torch.stack([test[i][0] for i in range(len(test))])
            emb = embedder(trunk(x)).numpy()
        p1, map_r = retrieval_reference(emb, test.labels.numpy())
        assert acc["test"]["precision_at_1_level0"] == pytest.approx(p1, abs=1e-6)
        assert acc["test"]["mean_average_precision_at_r_level0"] == pytest.approx(map_r, abs=1e-6)


class TestRawPixels:
    def test_small_images_keep_every_pixel_large_ones_are_pooled(self):
        from benchmarks.harness.models import RawPixels

        small = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
        assert torch.equal(RawPixels()(small), small.flatten(1))
        big = torch.rand(2, 3, 224, 224)
        expected = torch.stack(
            [big[:, :, 14 * i : 14 * (i + 1), 14 * j : 14 * (j + 1)].mean(dim=(-2, -1))
             for i in range(16) for j in range(16)],
            dim=-1,
        ).flatten(1)  # 16x16 blocks of 14x14 pixels, channel-major as flatten(1) orders them
        torch.testing.assert_close(RawPixels()(big), expected)
