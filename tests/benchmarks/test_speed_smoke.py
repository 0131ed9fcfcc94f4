"""benchmarks/speed/bench.py: the --smoke run CI does, and the pieces its figures rest on."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch

from benchmarks.speed import bench as speed
from tests.reference import ref_coding_rate, ref_coding_rate_grad


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("speed")
    report = speed.main(["--smoke", "--devices", "cpu", "--out", str(out)])
    return out, report


class TestSmokeRun:
    def test_writes_json_markdown_and_plot(self, smoke):
        out, report = smoke
        on_disk = json.loads((out / "speed.json").read_text())
        assert on_disk == json.loads(json.dumps(report))
        meta = on_disk["metadata"]
        for key in ("commit", "versions", "device", "threads", "date", "command", "clock"):
            assert key in meta, key
        assert meta["versions"]["torch"] == torch.__version__
        assert meta["threads"] == torch.get_num_threads()
        md = (out / "speed.md").read_text()
        assert "| device | precision | m×d | pass |" in md
        for m, d in speed.SMOKE_GRID:
            assert f"{m}×{d}" in md
        pytest.importorskip("matplotlib")
        assert (out / "speed_ratios.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_every_case_is_timed_against_every_baseline(self, smoke):
        _, report = smoke
        keys = {
            (r["precision"], r["m"], r["d"], r["pass"], r["impl"]) for r in report["results"]
        }
        for precision in ("float32", "bf16-autocast"):
            for m, d in speed.SMOKE_GRID:
                for pass_ in speed.PASSES:
                    for impl in speed.IMPLS:
                        assert (precision, m, d, pass_, impl) in keys
        for r in report["results"]:
            assert r["median_s"] > 0 and math.isfinite(r["median_s"])
            assert r["iqr_s"] >= 0 and r["n_blocks"] >= 1
            if r["impl"] == "ours":
                assert r["ratio_vs_ours"] == 1.0

    def test_float32_agrees_with_the_float64_reference(self, smoke):
        _, report = smoke
        ours = [a for a in report["accuracy"] if a["impl"] == "ours"]
        assert len(ours) == 2 * len(speed.SMOKE_GRID)  # float32 and bf16 autocast
        for a in ours:  # ours switches autocast off: float32 accuracy in both
            assert a["value_rel_err"] <= speed.ACCURACY_RTOL
            assert a["grad_rel_err"] <= speed.ACCURACY_RTOL
        assert report["targets"]["float32_matches_float64_reference"] is True

    def test_training_overhead_rows(self, smoke):
        _, report = smoke
        mlp, resnet = report["training"]
        assert mlp["model"].startswith("DigitsMLP") and mlp["batch"] == 128
        assert mlp["ratio"] == pytest.approx(mlp["with_median_s"] / mlp["without_median_s"])
        assert math.isfinite(mlp["ratio"]) and mlp["ratio"] > 0  # measured; no timing asserted
        assert mlp["plumbing_ratio"] == pytest.approx(
            mlp["plumbing_median_s"] / mlp["without_median_s"]
        )
        assert mlp["term_over_plumbing_ratio"] == pytest.approx(
            mlp["with_median_s"] / mlp["plumbing_median_s"]
        )
        if not torch.cuda.is_available():
            assert "skipped" in resnet

    def test_the_plumbing_arm_adds_nothing_to_the_loss(self):
        from benchmarks.harness.models import DigitsMLP

        x = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
        labels = torch.arange(32) % 4
        first = {
            arm: speed._training_setup(DigitsMLP, x, labels, arm, seed=0)() for arm in speed.ARMS
        }
        # same seed, same model: the do-nothing regularizer leaves the loss exactly as it was,
        # the coding-rate term changes it by 0.1·(−R) < 0
        assert first["plumbing"].item() == first["without"].item()
        assert first["with"].item() < first["without"].item() - 0.01


class TestBaselinesComputeTheSameQuantity:
    @pytest.mark.parametrize("m, d", [(20, 50), (50, 20), (16, 16)], ids=str)
    @pytest.mark.parametrize("impl", speed.IMPLS)
    def test_value_and_gradient(self, impl, m, d):
        z = torch.randn(m, d, dtype=torch.float64, requires_grad=True)
        value = speed.RATE_FNS[impl](z)
        (grad,) = torch.autograd.grad(value, z)
        torch.testing.assert_close(value, ref_coding_rate(z, speed.EPS_SQ), rtol=1e-10, atol=0)
        torch.testing.assert_close(grad, ref_coding_rate_grad(z, speed.EPS_SQ), rtol=1e-9, atol=0)

    def test_reference_of_the_script(self):
        z = torch.randn(30, 70, dtype=torch.float32)
        value, grad = speed.reference_rate_and_grad(z)
        torch.testing.assert_close(value, ref_coding_rate(z), rtol=1e-12, atol=0)
        torch.testing.assert_close(grad, ref_coding_rate_grad(z), rtol=1e-9, atol=1e-12)


class TestHelpers:
    def test_summarize_is_median_and_iqr(self):
        times = [5.0, 1.0, 3.0, 2.0, 4.0]
        s = speed.summarize(times)
        assert s == {"median_s": 3.0, "iqr_s": 2.0, "n_blocks": 5}
        assert speed.summarize([7.0]) == {"median_s": 7.0, "iqr_s": 0.0, "n_blocks": 1}
        with pytest.raises(ValueError, match="times must not be empty"):
            speed.summarize([])

    def test_cpu_clock_needs_one_thread(self, tmp_path):
        with pytest.raises(SystemExit, match="--timer cpu needs --threads 1"):
            speed.main(["--smoke", "--timer", "cpu", "--threads", "2", "--out", str(tmp_path)])

    def test_cpu_clock_counts_work_not_waiting(self):
        # thread CPU time does not advance while the thread sleeps; the wall clock does
        case = {"sleep": lambda: time.sleep(0.002)}
        cpu = speed._time_interleaved(case, rounds=1, min_run_time=0.02, threads=1, clock="cpu")
        wall = speed._time_interleaved(case, rounds=1, min_run_time=0.02, threads=1, clock="wall")
        assert cpu["sleep"]["median_s"] < 0.0005
        assert wall["sleep"]["median_s"] >= 0.002

    def test_parse_grid(self):
        assert speed._parse_grid("90x512,1024X64") == [(90, 512), (1024, 64)]
        with pytest.raises(Exception, match="--grid"):
            speed._parse_grid("90by512")

    def test_targets(self):
        def row(m, d, ratio):
            base = {"device": "cpu", "precision": "float32", "pass": "fwd+bwd", "impl": "naive"}
            return dict(base, m=m, d=d, ratio_vs_ours=ratio)

        acc = [dict(impl="ours", precision="float32", value_rel_err=1e-7, grad_rel_err=2e-5)]
        t = speed.check_targets([row(128, 512, 5.1), row(1024, 64, 0.9)], acc, [{"ratio": 1.04}])
        assert t == {
            "naive_over_ours_ge_5_where_m_le_d_over_4": True,
            "naive_over_ours_ge_1_everywhere": False,
            "float32_matches_float64_reference": False,
            "training_overhead_le_5pct": True,
        }
        t = speed.check_targets([row(129, 512, 4.0)], [], [{"ratio": 1.06}])
        assert t["naive_over_ours_ge_5_where_m_le_d_over_4"] is None  # no point with m ≤ d/4
        assert t["training_overhead_le_5pct"] is False


class TestResNet18Like:
    def test_is_resnet18_sized(self):
        model = speed.ResNet18Like()
        # torchvision's resnet18 has 11,689,512 parameters, 513,000 of them in the 1000-way fc
        assert sum(p.numel() for p in model.parameters()) == 11_689_512 - 513_000
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 512)


class TestCommandLine:
    @pytest.mark.parametrize(
        "option, value, expected",
        [
            ("--threads", "0", "expected a positive integer, got '0'"),
            ("--threads", "-2", "expected a positive integer, got '-2'"),
            ("--threads", "two", "expected a positive integer, got 'two'"),
            ("--rounds", "0", "expected a positive integer, got '0'"),
            ("--rounds", "-1", "expected a positive integer, got '-1'"),
            ("--min-run-time", "0", "expected a positive, finite number, got '0'"),
            ("--min-run-time", "-1", "expected a positive, finite number, got '-1'"),
            ("--min-run-time", "nan", "expected a positive, finite number, got 'nan'"),
            ("--min-run-time", "inf", "expected a positive, finite number, got 'inf'"),
            ("--resnet-cpu-size", "-1", "expected an integer >= 0, got '-1'"),
        ],
    )
    def test_rejects_values_out_of_range(self, option, value, expected, tmp_path, capsys):
        with pytest.raises(SystemExit) as exc:
            speed.parse_args(["--smoke", "--out", str(tmp_path), option, value])
        assert exc.value.code == 2
        assert f"argument {option}: {expected}" in capsys.readouterr().err

    def test_keeps_explicit_values_and_defaults_only_what_is_missing(self, tmp_path):
        args = speed.parse_args(
            ["--out", str(tmp_path), "--threads", "1", "--rounds", "2", "--min-run-time", "0.5"]
        )
        assert (args.threads, args.rounds, args.min_run_time) == (1, 2, 0.5)
        assert args.resnet_cpu_size == 0
        args = speed.parse_args(["--out", str(tmp_path)])
        assert args.rounds is None and args.min_run_time is None  # main picks the defaults

    def test_out_may_be_a_directory_or_a_path_to_create(self, tmp_path):
        assert speed.parse_args(["--out", str(tmp_path)]).out == tmp_path
        assert speed.parse_args(["--out", str(tmp_path / "a" / "b")]).out == tmp_path / "a" / "b"
        assert not (tmp_path / "a").exists()  # parsing creates nothing

    def test_out_must_not_be_an_existing_file(self, tmp_path, capsys):
        file = tmp_path / "speed.json"
        file.write_text("{}")
        with pytest.raises(SystemExit) as exc:
            speed.parse_args(["--smoke", "--out", str(file)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"argument --out: expected a directory, got {str(file)!r}" in err
        assert "exists and is not a directory" in err
        assert file.read_text() == "{}"

    def test_out_must_not_lie_under_an_existing_file(self, tmp_path, capsys):
        file = tmp_path / "results"
        file.write_text("")
        with pytest.raises(SystemExit) as exc:
            speed.main(["--smoke", "--out", str(file / "speed")])
        assert exc.value.code == 2
        assert f"{str(file)!r} exists and is not a directory" in capsys.readouterr().err
