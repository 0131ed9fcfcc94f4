"""The real-dataset path of the harness (CUB / Cars196 / SOP presets) on tiny fake on-disk trees.

Nothing downloads: each tree is written by ``tests.benchmarks.fake_datasets.make_fake_tree`` and the
model is the "tiny" CNN backbone.
"""

from __future__ import annotations

import json

import pytest

from benchmarks.harness import cli, config

fake_datasets = pytest.importorskip("tests.benchmarks.fake_datasets")
pytest.importorskip("benchmarks.harness.real_data")
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
        "contrastive+ac",
        "proxy_anchor+ac",
        "--output",
        str(out),
        "--progress",
        "none",
        "--no-plots",
        *extra,
    ]
    assert cli.main(argv) == 0
    return out


@pytest.mark.parametrize("name", ["cub", "cars196", "sop"])
class TestRealDatasetPath:
    def test_preset_runs_on_fake_tree(self, name, tmp_path):
        out = _run(name, tmp_path)
        results = json.loads((out / "results.json").read_text())
        meta = results["metadata"]
        preset = config.load_config(f"{config.CONFIG_DIR}/{name}.yaml")
        assert meta["config"]["name"] == preset["name"] + "-smoke"
        assert meta["config"]["dataset"]["name"] == name
        assert meta["device"] == "cpu"
        rows = results["summary"]["zero_shot"]
        assert set(rows) == {"no_learning", "contrastive+ac", "proxy_anchor+ac"}
        for cell in results["results"]:
            # retrieval on the unseen test split only: 2 classes x 4 images
            assert cell["num_test"] == (NUM_CLASSES // 2) * PER_CLASS
            m = cell["metrics"]
            assert (
                0.0 <= m["precision_at_1"] <= 1.0 and 0.0 <= m["mean_average_precision_at_r"] <= 1.0
            )
            expected_dim = (
                768 if cell["method"] == "no_learning" else preset["model"]["embedding_size"]
            )
            assert cell["dim"] == expected_dim
        assert (out / "records" / "zero_shot" / "proxy_anchor+ac" / "seed0" / "logs.db").exists()

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
