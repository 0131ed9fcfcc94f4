"""The real-dataset path of the harness (CUB / Cars196 / SOP presets) on tiny fake on-disk trees.

Nothing downloads: each tree is written by ``tests.benchmarks.fake_datasets.make_fake_tree`` and the
model is the "tiny" CNN backbone.
"""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.harness import cli, config
from benchmarks.harness.datasets.real import build_real_dataset
from tests.benchmarks._util import retrieval_reference

pytestmark = pytest.mark.slow  # trains on fake CUB / Cars196 / SOP trees

fake_datasets = pytest.importorskip("tests.benchmarks.fake_datasets")
pytest.importorskip("PIL")

NUM_CLASSES, PER_CLASS = 4, 4  # 2 training classes, 2 unseen test classes, 8 test images


def _run(name, tmp_path, *extra):
    root = fake_datasets.make_fake_tree(name, str(tmp_path / "data"), NUM_CLASSES, PER_CLASS, 24)
    out = tmp_path / "run"
    argv = [
        "--dataset",
        name,
        "--data-root",
        root,
        "--smoke",
        "--device",
        "cpu",
        "--set",
        "model.name=tiny",
        "--set",
        "dataset.image_size=32",
        "--set",
        "training.batch_size=8",
        "--set",
        "training.m_per_class=4",
        "--set",
        "training.num_workers=0",
        "--set",
        "training.amp=false",
        "--methods",
        "no_learning",
        "contrastive+coding_rate",
        "proxy_anchor+coding_rate",
        "--output",
        str(out),
        "--progress",
        "none",
        "--no-plots",
        *extra,
    ]
    assert cli.main(argv) == 0
    return out, root


@pytest.mark.parametrize("name", ["cub", "cars196", "sop"])
class TestRealDatasetPath:
    def test_preset_runs_on_fake_tree(self, name, tmp_path):
        out, root = _run(name, tmp_path)
        results = json.loads((out / "results.json").read_text())
        meta = results["metadata"]
        preset = config.load_config(f"{config.CONFIG_DIR}/{name}.yaml")
        assert meta["config"]["name"] == preset.name + "-smoke"
        assert meta["config"]["dataset"]["name"] == name
        assert meta["device"] == "cpu"
        rows = results["summary"]["zero_shot"]
        assert set(rows) == {"no_learning", "contrastive+coding_rate", "proxy_anchor+coding_rate"}
        for cell in results["results"]:
            # retrieval on the unseen test split only: 2 classes x 4 images
            assert cell["num_test"] == (NUM_CLASSES // 2) * PER_CLASS
            m = cell["metrics"]
            assert (
                0.0 <= m["precision_at_1"] <= 1.0 and 0.0 <= m["mean_average_precision_at_r"] <= 1.0
            )
            # the fake images are 32x32: the no-learning row keeps every pixel (3 x 32 x 32)
            expected_dim = (
                3072 if cell["method"] == "no_learning" else preset.model.embedding_size
            )
            assert cell["dim"] == expected_dim
        records = out / "records" / "zero_shot" / "proxy_anchor+coding_rate" / "seed0"
        assert (records / "logs.db").exists()

        # the floor row against a brute-force float64 kNN on the raw test images (32x32: full
        # resolution, as the no-learning model keeps them), computed without the harness's model
        # or PML
        test = build_real_dataset(name, root, "test", 32, False)
        x = torch.stack([test[i][0] for i in range(len(test))]).double()
        pooled = x.flatten(1).numpy()
        p1, map_r = retrieval_reference(pooled, test.labels.numpy())
        (floor,) = [c for c in results["results"] if c["method"] == "no_learning"]
        assert floor["metrics"]["precision_at_1"] == pytest.approx(p1, abs=1e-6)
        assert floor["metrics"]["mean_average_precision_at_r"] == pytest.approx(map_r, abs=1e-6)
        # the fake classes differ by their mean colour: raw pixels already separate them
        assert p1 == 1.0

    def test_missing_root_is_refused(self, name, tmp_path):
        with pytest.raises(ValueError, match=r"dataset.root \(--data-root\)"):
            cli.main(
                [
                    "--dataset",
                    name,
                    "--smoke",
                    "--output",
                    str(tmp_path / "r"),
                    "--progress",
                    "none",
                ]
            )
