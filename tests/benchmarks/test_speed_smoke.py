"""benchmarks/speed: the --smoke run CI does, and the pieces its figures rest on."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch

from benchmarks.speed import cli, machine, report, timing, training
from benchmarks.speed import implementations as impls
from tests.reference import ref_coding_rate, ref_coding_rate_grad

pytestmark = pytest.mark.slow  # runs the speed benchmark


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("speed")
    report = cli.main(
        ["--smoke", "--devices", "cpu", "--threads", "1,2", "--timer", "cpu,wall"]
        + ["--out", str(out)]
    )
    return out, report


class TestSmokeRun:
    def test_writes_json_markdown_and_plot(self, smoke):
        out, report = smoke
        on_disk = json.loads((out / "speed.json").read_text())
        assert on_disk == json.loads(json.dumps(report))
        meta = on_disk["metadata"]
        for key in ("commit", "versions", "device", "date", "command", "cpu_model", "cpu_vendor"):
            assert key in meta, key
        assert meta["versions"]["torch"] == torch.__version__
        assert set(meta["cpu_features"].get("flags", [])) <= set(machine.CPU_FLAGS)
        # the two configurations asked for, in order, each named in every timed row
        assert meta["configs"] == [{"threads": 1, "clock": "cpu"}, {"threads": 2, "clock": "wall"}]
        configs = {(r["threads"], r["clock"]) for r in on_disk["results"]}
        assert configs == {(1, "cpu"), (2, "wall")}
        assert {(t["threads"], t["clock"]) for t in on_disk["training"]} == configs
        md = (out / "speed.md").read_text()
        assert "| config | device | precision | m×d | pass |" in md
        assert "| 2 thr, wall | cpu | float32 |" in md
        for m, d in impls.SMOKE_GRID:
            assert f"{m}×{d}" in md
        pytest.importorskip("matplotlib")
        assert (out / "speed_ratios.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_every_case_is_timed_against_every_baseline(self, smoke):
        _, report = smoke
        keys = {
            (r["precision"], r["m"], r["d"], r["pass"], r["impl"]) for r in report["results"]
        }
        for precision in ("float32", "bf16-autocast"):
            for m, d in impls.SMOKE_GRID:
                for pass_ in impls.PASSES:
                    for impl in impls.IMPLS:
                        assert (precision, m, d, pass_, impl) in keys
        for r in report["results"]:
            assert r["median_s"] > 0 and math.isfinite(r["median_s"])
            assert r["iqr_s"] >= 0 and r["n_blocks"] >= 1
        # each configuration's ratios are taken against that configuration's own "ours"
        for r in report["results"]:
            (ours,) = [
                o["median_s"]
                for o in report["results"]
                if o["impl"] == "ours"
                and all(o[k] == r[k] for k in ("threads", "precision", "m", "d", "pass"))
            ]
            assert r["ratio_vs_ours"] == pytest.approx(r["median_s"] / ours)

    def test_float32_agrees_with_the_float64_reference(self, smoke):
        _, report = smoke
        ours = [a for a in report["accuracy"] if a["impl"] == "ours"]
        assert len(ours) == 2 * len(impls.SMOKE_GRID)  # float32 and bf16 autocast
        for a in ours:  # ours switches autocast off: float32 accuracy in both
            assert a["value_rel_err"] <= impls.ACCURACY_RTOL
            assert a["grad_rel_err"] <= impls.ACCURACY_RTOL
        assert report["targets"]["float32_matches_float64_reference"] is True
        assert len(report["accuracy"]) == 2 * len(impls.SMOKE_GRID) * len(impls.IMPLS)  # once

    def test_op_and_class_sections(self, smoke):
        out, report = smoke
        ops = {(o["threads"], o["op"]) for o in report["ops"]}
        assert ops == {(t, op) for t in (1, 2) for op in impls.op_cases(torch.randn(8, 2))}
        nums = [c["num_classes"] for c in report["classes"] if c["threads"] == 1]
        assert nums == [None, 10**7]
        assert all("ratio_vs_none" in c for c in report["classes"])
        md = (out / "speed.md").read_text()
        assert "| `x @ cholesky_inverse(L)` |" in md and "| 1 thr, cpu | 24×32 | 10000000 |" in md
        assert isinstance(report["targets"]["mcr2_num_classes_within_2x_of_none"], bool)

    def test_training_overhead_rows(self, smoke):
        _, report = smoke
        mlp, glyph, resnet = [t for t in report["training"] if t["threads"] == 1]
        assert mlp["model"].startswith("DigitsMLP") and mlp["batch"] == 128
        assert glyph["model"].startswith("GlyphCNN") and glyph["input"] == [1, 32, 32]
        for row in (mlp, glyph):
            for arm in ("without", "plumbing", "with"):  # measured; no timing asserted
                assert math.isfinite(row[f"{arm}_median_s"]) and row[f"{arm}_median_s"] > 0
        if not torch.cuda.is_available():
            assert "skipped" in resnet

    def test_the_plumbing_arm_adds_nothing_to_the_loss(self):
        x = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
        labels = torch.arange(32) % 4
        mlp = training.harness_model("digits_mlp", (64,))
        first = {
            arm: training.training_step(mlp, x, labels, arm, seed=0)()
            for arm in training.ARMS
        }
        # same seed, same model: the do-nothing regularizer leaves the loss exactly as it was,
        # the coding-rate term changes it by 0.1·(−R) < 0
        assert first["plumbing"].item() == first["without"].item()
        assert first["with"].item() < first["without"].item() - 0.01


class TestBaselinesComputeTheSameQuantity:
    @pytest.mark.parametrize("m, d", [(20, 50), (50, 20), (16, 16)], ids=str)
    @pytest.mark.parametrize("impl", impls.IMPLS)
    def test_value_and_gradient(self, impl, m, d):
        z = torch.randn(m, d, dtype=torch.float64, requires_grad=True)
        value = impls.RATE_FNS[impl](z)
        (grad,) = torch.autograd.grad(value, z)
        torch.testing.assert_close(value, ref_coding_rate(z, impls.EPS_SQ), rtol=1e-10, atol=0)
        torch.testing.assert_close(grad, ref_coding_rate_grad(z, impls.EPS_SQ), rtol=1e-9, atol=0)

    def test_reference_of_the_script(self):
        z = torch.randn(30, 70, dtype=torch.float32)
        value, grad = impls.reference_rate_and_grad(z)
        torch.testing.assert_close(value, ref_coding_rate(z), rtol=1e-12, atol=0)
        torch.testing.assert_close(grad, ref_coding_rate_grad(z), rtol=1e-9, atol=1e-12)


class TestHelpers:
    def test_summarize_is_median_and_iqr(self):
        times = [5.0, 1.0, 3.0, 2.0, 4.0]
        s = timing.summarize(times)
        assert s == {"median_s": 3.0, "iqr_s": 2.0, "n_blocks": 5}
        assert timing.summarize([7.0]) == {"median_s": 7.0, "iqr_s": 0.0, "n_blocks": 1}
        with pytest.raises(ValueError, match="times must not be empty"):
            timing.summarize([])

    @pytest.mark.parametrize(
        "threads, timer", [("2", "cpu"), ("1,2", "cpu"), ("2,1", "cpu,wall")], ids=str
    )
    def test_cpu_clock_needs_one_thread(self, tmp_path, threads, timer):
        with pytest.raises(SystemExit, match="--timer cpu needs --threads 1"):
            cli.main(["--smoke", "--timer", timer, "--threads", threads, "--out", str(tmp_path)])

    def test_threads_and_timers_pair_up(self, tmp_path, capsys):
        args = cli.parse_args(["--threads", "1,2", "--timer", "cpu,wall", "--out", str(tmp_path)])
        assert list(zip(args.threads, args.timer, strict=True)) == [(1, "cpu"), (2, "wall")]
        args = cli.parse_args(["--threads", "1,2", "--out", str(tmp_path)])
        assert args.timer == ["wall", "wall"]
        with pytest.raises(SystemExit):
            cli.parse_args(
                ["--threads", "1,2", "--timer", "cpu,wall,cpu", "--out", str(tmp_path)]
            )
        err = capsys.readouterr().err
        assert "expected 1 or 2 clocks to pair with --threads [1, 2], got 3" in err

    def test_op_cases_compute_the_same_solve_both_ways(self):
        x = torch.nn.functional.normalize(torch.randn(200, 12, dtype=torch.float64), dim=-1)
        cases = impls.op_cases(x)
        m = torch.eye(12, dtype=torch.float64) + 12 / (200 * impls.EPS_SQ) * x.T @ x
        expected = torch.linalg.solve(m, x.T).T  # X·M⁻¹ by a dense LU solve
        torch.testing.assert_close(cases["cholesky_solve(x.mT, L)"]().mT, expected)
        torch.testing.assert_close(cases["x @ cholesky_inverse(L)"](), expected)
        torch.testing.assert_close(cases["x @ inv(M)"](), expected)

    def test_cpu_features_read_the_flags_line(self, monkeypatch, tmp_path):
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(
            "vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
            "flags\t\t: fpu avx2 fma avx512f avx512_bf16 sse\n"
        )
        real_open = open
        monkeypatch.setattr(
            "builtins.open",
            lambda f, *a, **k: real_open(cpuinfo if f == "/proc/cpuinfo" else f, *a, **k),
        )
        assert machine.cpu_vendor() == "AuthenticAMD"
        assert machine.cpu_features() == {
            "cpu family": "25", "model": "17", "flags": ["avx2", "fma", "avx512f", "avx512_bf16"]
        }

    def test_linalg_backend_is_what_torch_runs_on(self):
        backend = machine.linalg_backend()
        assert backend["mkl_available"] == torch.backends.mkl.is_available()
        if torch.backends.mkl.is_available():  # the CPU wheels: MKL for BLAS and LAPACK
            assert backend["blas"] == "mkl" and backend["mkl_version"]
        assert backend["cpu_capability"] == torch.backends.cpu.get_cpu_capability()

    def test_cpu_clock_counts_work_not_waiting(self):
        # thread CPU time does not advance while the thread sleeps; the wall clock does
        case = {"sleep": lambda: time.sleep(0.002)}
        cpu = timing.time_interleaved(case, rounds=1, min_run_time=0.02, threads=1, clock="cpu")
        wall = timing.time_interleaved(case, rounds=1, min_run_time=0.02, threads=1, clock="wall")
        assert cpu["sleep"]["median_s"] < 0.0005
        assert wall["sleep"]["median_s"] >= 0.002

    def test_parse_grid(self):
        assert cli.parse_grid("90x512,1024X64") == [(90, 512), (1024, 64)]
        with pytest.raises(Exception, match="--grid"):
            cli.parse_grid("90by512")

    def test_targets(self):
        def row(m, d, ratio):
            base = {"device": "cpu", "precision": "float32", "pass": "fwd+bwd", "impl": "naive"}
            return dict(base, m=m, d=d, ratio_vs_ours=ratio)

        acc = [dict(impl="ours", precision="float32", value_rel_err=1e-7, grad_rel_err=2e-5)]
        t = report.check_targets([row(128, 512, 5.1), row(1024, 64, 0.9)], acc, [{"ratio": 1.04}])
        assert t == {
            "naive_over_ours_ge_5_where_m_le_d_over_4": True,
            "naive_over_ours_ge_1_everywhere": False,
            "float32_matches_float64_reference": False,
            "training_overhead_le_5pct": True,
        }
        t = report.check_targets([row(129, 512, 4.0)], [], [{"ratio": 1.06}])
        assert t["naive_over_ours_ge_5_where_m_le_d_over_4"] is None  # no point with m ≤ d/4
        assert t["training_overhead_le_5pct"] is False


def _result_file(path, cpu, configs, ratios):
    """A small speed.json: ``ratios`` maps (m, d) to (naive/ours, chol/ours) per config."""
    results = []
    for (m, d), per_config in ratios.items():
        for (threads, clock), (naive, chol) in zip(configs, per_config, strict=True):
            base = dict(device="cpu", precision="float32", m=m, d=d, threads=threads, clock=clock)
            base["pass"] = "fwd+bwd"
            results += [
                dict(base, impl="ours", median_s=1e-3, ratio_vs_ours=1.0),
                dict(base, impl="naive", median_s=naive * 1e-3, ratio_vs_ours=naive),
                dict(base, impl="cholesky_autograd", median_s=chol * 1e-3, ratio_vs_ours=chol),
            ]
    meta = {"commit": "abc1234", "date": "2026-12-01", "device": {"cpu": cpu},
            "cpu_vendor": "AuthenticAMD" if "EPYC" in cpu else "GenuineIntel",
            "linalg_backend": {"blas": "mkl"}}
    path.write_text(json.dumps({"metadata": meta, "results": results}))
    return path


class TestCompare:
    def test_two_files_side_by_side(self, tmp_path, capsys):
        a = _result_file(
            tmp_path / "amd.json", "AMD EPYC 9R14", [(1, "cpu")],
            {(1024, 64): [(0.59, 0.61)], (90, 512): [(17.7, 1.5)]},
        )
        b = _result_file(
            tmp_path / "intel.json", "Intel Xeon", [(1, "cpu"), (2, "wall")],
            {(1024, 64): [(1.32, 1.28), (1.1, 1.05)]},
        )
        cli.main(["--compare", str(a), str(b)])
        out = capsys.readouterr().out
        assert "AMD EPYC 9R14, vendor AuthenticAMD, BLAS mkl" in out
        assert "| device | precision | m×d | A 1 thr, cpu | B 1 thr, cpu | B 2 thr, wall |" in out
        assert "| cpu | float32 | 1024×64 | 0.59 · 0.61 | 1.32 · 1.28 | 1.10 · 1.05 |" in out
        assert "| cpu | float32 | 90×512 | 17.70 · 1.50 | — | — |" in out  # only in A

    def test_an_older_file_without_per_row_configs(self, tmp_path, capsys):
        # results from before this format: one run-wide "threads" and "clock" in the metadata
        old = tmp_path / "old.json"
        rows = [dict(device="cpu", precision="float32", m=8, d=4, impl=i, median_s=1.0,
                     ratio_vs_ours=r, **{"pass": "fwd+bwd"})
                for i, r in (("ours", 1.0), ("naive", 2.5), ("cholesky_autograd", 1.25))]
        meta = {"threads": 1, "clock": "thread CPU time (time.thread_time)", "device": {}}
        old.write_text(json.dumps({"metadata": meta, "results": rows}))
        cli.main(["--compare", str(old), str(old)])
        assert "| cpu | float32 | 8×4 | 2.50 · 1.25 | 2.50 · 1.25 |" in capsys.readouterr().out

    def test_a_file_that_is_not_a_result(self, tmp_path):
        bad = tmp_path / "x.json"
        bad.write_text("[1, 2]")
        with pytest.raises(SystemExit, match="--compare: cannot read a speed result from"):
            cli.main(["--compare", str(bad), str(bad)])


class TestWithFloat64:
    def test_times_the_float64_arithmetic_beside_the_others(self, tmp_path):
        report = cli.main(
            ["--smoke", "--devices", "cpu", "--threads", "1", "--timer", "cpu", "--with-float64",
             "--skip-training", "--skip-ops", "--skip-classes", "--out", str(tmp_path)]
        )
        rows = [r for r in report["results"] if r["impl"] == "ours_float64"]
        assert {(r["m"], r["d"]) for r in rows} == set(impls.SMOKE_GRID)
        assert all(r["ratio_vs_ours"] > 0 and "median_s" in r for r in rows)
        acc = [a for a in report["accuracy"] if a["impl"] == "ours_float64"]
        assert acc and all(a["grad_rel_err"] <= 1e-6 for a in acc)
        md = (tmp_path / "speed.md").read_text()
        assert "Ours with `compute_dtype=torch.float64` (`--with-float64`)" in md
        # the main table and the targets are those of the three usual implementations
        assert report["targets"]["naive_over_ours_ge_1_everywhere"] is not None


class TestAccuracySweep:
    def test_smoke_sweep_writes_its_tables(self, tmp_path, capsys):
        report = cli.main(["--accuracy-sweep", "--smoke", "--out", str(tmp_path)])
        on_disk = json.loads((tmp_path / "accuracy_sweep.json").read_text())
        assert on_disk == json.loads(json.dumps(report))
        rows = {(r["m"], r["d"], r["sigma"]): r for r in report["rows"]}
        assert set(rows) == {(24, 96, 10.0), (24, 96, 0.1), (96, 24, 10.0), (96, 24, 0.1)}
        for (_, _, sigma), r in rows.items():
            # spread rows: float32 within 1e-5 of float64 (nearly collapsed rows are not, by
            # the rounding of the Gram matrix: docs/speed.md, "Accuracy"; pinned in the
            # package's tests)
            assert r["mean_cosine"] < 0.05 if sigma == 10.0 else r["mean_cosine"] > 0.95
            if sigma == 10.0:
                assert r["ours_value"] <= 1e-6 and r["ours_grad"] <= 1e-5, r
            assert all(math.isfinite(r[k]) for k in ("ours_grad", "naive_grad", "naive_value")), r
            # float64 arithmetic: within 1e-5 everywhere (float32 rounding of the output only)
            assert r["ours64_value"] <= 1e-6 and r["ours64_grad"] <= 1e-6, r
        md = (tmp_path / "accuracy_sweep.md").read_text()
        assert "| σ (mean cosine) | 24×96 | 96×24 |" in md
        assert md in capsys.readouterr().out

    def test_a_failed_formula_counts_as_the_worst(self):
        from benchmarks.speed.sweep import relative_errors

        z = torch.randn(6, 4)
        nan = lambda t: (t * float("nan")).sum()  # noqa: E731 — a formula that returns NaN
        assert relative_errors(nan, z, torch.tensor(1.0), torch.ones(6, 4)) == (math.inf, math.inf)

    def test_near_collapsed_rows_share_a_direction(self):
        from benchmarks.speed.sweep import mean_cosine, near_collapsed

        z = near_collapsed(50, 20, 0.01)
        x = torch.nn.functional.normalize(z.double(), dim=1)
        brute = (x @ x.T).sum() - 50  # the off-diagonal cosines, summed by a matrix product
        assert mean_cosine(z) == pytest.approx(float(brute) / (50 * 49), rel=1e-9)
        assert mean_cosine(z) > 0.999


class TestResNet18Like:
    def test_is_resnet18_sized(self):
        model = training.ResNet18Like()
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
            cli.parse_args(["--smoke", "--out", str(tmp_path), option, value])
        assert exc.value.code == 2
        assert f"argument {option}: {expected}" in capsys.readouterr().err

    def test_keeps_explicit_values_and_defaults_only_what_is_missing(self, tmp_path):
        args = cli.parse_args(
            ["--out", str(tmp_path), "--threads", "1", "--rounds", "2", "--min-run-time", "0.5"]
        )
        assert (args.threads, args.rounds, args.min_run_time) == ([1], 2, 0.5)
        assert args.timer == ["wall"]
        assert args.resnet_cpu_size == 0
        args = cli.parse_args(["--out", str(tmp_path)])
        assert args.rounds is None and args.min_run_time is None  # main picks the defaults

    def test_out_may_be_a_directory_or_a_path_to_create(self, tmp_path):
        assert cli.parse_args(["--out", str(tmp_path)]).out == tmp_path
        assert cli.parse_args(["--out", str(tmp_path / "a" / "b")]).out == tmp_path / "a" / "b"
        assert not (tmp_path / "a").exists()  # parsing creates nothing

    def test_out_must_not_be_an_existing_file(self, tmp_path, capsys):
        file = tmp_path / "speed.json"
        file.write_text("{}")
        with pytest.raises(SystemExit) as exc:
            cli.parse_args(["--smoke", "--out", str(file)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"argument --out: expected a directory, got {str(file)!r}" in err
        assert "exists and is not a directory" in err
        assert file.read_text() == "{}"

    def test_out_must_not_lie_under_an_existing_file(self, tmp_path, capsys):
        file = tmp_path / "results"
        file.write_text("")
        with pytest.raises(SystemExit) as exc:
            cli.main(["--smoke", "--out", str(file / "speed")])
        assert exc.value.code == 2
        assert f"{str(file)!r} exists and is not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("name, shape", [("glyph_cnn_small", (1, 32, 32)), ("digits_mlp", (64,))])
def test_the_overhead_is_measured_on_the_harness_models(name, shape):
    """The speed benchmark builds the harness's registered networks, not copies of them."""
    from benchmarks.harness.models import ModelOptions, build_model

    trunk, embedder = build_model(ModelOptions(name=name, embedding_size=64), shape)
    torch.manual_seed(0)
    ours = training.harness_model(name, shape)()
    assert [type(m) for m in ours] == [type(trunk), type(embedder)]
    count = sum(p.numel() for m in (trunk, embedder) for p in m.parameters())
    assert sum(p.numel() for p in ours.parameters()) == count
    x = torch.randn(4, *shape)
    assert ours(x).shape == embedder(trunk(x)).shape == (4, 64)
