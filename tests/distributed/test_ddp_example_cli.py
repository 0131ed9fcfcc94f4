"""benchmarks/examples/ddp_example.py's command line in one process: what it refuses, that the
rate and loss it logs are the float64 reference's on the batch the loss was handed, and that
--smoke fails when it checked nothing or when the check fails (the 2-process run is
test_ddp_example)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pytorch_metric_learning.losses import MultiSimilarityLoss

from benchmarks.examples import ddp_example
from tests.reference import ref_coding_rate

pytestmark = pytest.mark.slow  # starts the DDP example's processes

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60


@pytest.fixture
def one_process(monkeypatch):
    """main() in this process, without torch.distributed (setup() looks for RANK)."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


class TestParser:
    @pytest.mark.parametrize(
        "option, value, expected",
        [
            ("--log-every", "0", "expected a positive integer, got '0'"),
            ("--batch-size", "0", "expected a positive integer, got '0'"),
            ("--batch-size", "-5", "expected a positive integer, got '-5'"),
            ("--epochs", "0", "expected a positive integer, got '0'"),
            ("--epochs", "1.5", "expected a positive integer, got '1.5'"),
            ("--lr", "0", "expected a positive, finite number, got '0'"),
            ("--lr", "nan", "expected a positive, finite number, got 'nan'"),
            ("--ac-weight", "-0.1", "expected a finite number >= 0, got '-0.1'"),
        ],
    )
    def test_rejects_values_out_of_range(self, option, value, expected, capsys):
        with pytest.raises(SystemExit) as exc:
            ddp_example.parse_args(["--smoke", option, value])
        assert exc.value.code == 2
        assert f"argument {option}: {expected}" in capsys.readouterr().err

    def test_accepts_valid_values(self):
        args = ddp_example.parse_args(
            ["--log-every", "1", "--batch-size", "8", "--epochs", "1", "--ac-weight", "0"]
        )
        assert (args.log_every, args.batch_size, args.epochs, args.ac_weight) == (1, 8, 1, 0.0)


class TestSmokeFailsLoudly:
    def test_batch_larger_than_the_data_is_refused_before_training(self):
        cmd = [sys.executable, "benchmarks/examples/ddp_example.py", "--smoke",
               "--batch-size", "5000"]
        env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            env.pop(name, None)
        try:
            out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                 check=False, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the example did not finish in {TIMEOUT_S} s")
        assert out.returncode != 0, out.stdout + out.stderr
        assert ("--batch-size must be at most each rank's share of the training data, "
                "1437 samples (1437 over 1 rank(s)), got 5000") in out.stderr
        assert "epoch" not in out.stdout and "max |logged" not in out.stdout

    def test_no_step_checked_is_a_failure(self, one_process, monkeypatch):
        # unreachable from the command line once the batch size is checked: an empty loader
        monkeypatch.setattr(ddp_example, "DataLoader", lambda *args, **kwargs: [])
        with pytest.raises(SystemExit, match=r"--smoke checked no step \(0 logged steps"):
            ddp_example.main(["--smoke"])

    @pytest.mark.parametrize("scope", ["global", "local"])
    def test_smoke_logs_the_rate_of_the_batch(self, scope, one_process, monkeypatch, capsys):
        """Every step's logged rate and loss against the float64 reference on the batch the loss
        was handed (the script's own check compares two calls of one function in one process)."""
        seen = []

        class Recording(ddp_example.AntiCollapseLoss):
            def forward(self, embeddings, labels, *args):
                out = super().forward(embeddings, labels, *args)
                seen.append((embeddings.detach().clone(), labels.clone(), out.detach(),
                             self.embedding_coding_rate.clone()))
                return out

        monkeypatch.setattr(ddp_example, "AntiCollapseLoss", Recording)
        ddp_example.main(["--smoke", "--distributed", scope, "--ac-weight", "0.25"])
        assert len(seen) == 6  # 2 epochs × 3 steps, every one logged
        assert len({float(r) for *_, r in seen}) == 6  # the model trains: six different batches
        for z, y, value, logged in seen:
            rate = ref_coding_rate(z)
            torch.testing.assert_close(logged.double(), rate, rtol=1e-5, atol=1e-6)
            want = MultiSimilarityLoss()(z, y).double() - 0.25 * rate
            torch.testing.assert_close(value.double(), want, rtol=1e-5, atol=1e-6)
        last = capsys.readouterr().out.strip().splitlines()[-1]
        assert last.endswith("over 6 logged step(s)")

    @pytest.mark.parametrize(
        "scope, whose", [("global", "the global batch's"), ("local", "this rank's own")]
    )
    def test_smoke_fails_when_the_logged_rate_disagrees(self, scope, whose, one_process,
                                                       monkeypatch):
        # the script's recomputation is shifted; the loss's own rate is not
        real = ddp_example.F.coding_rate
        monkeypatch.setattr(ddp_example, "F", SimpleNamespace(coding_rate=lambda z: real(z) + 1))
        with pytest.raises(SystemExit, match=f"the logged coding rate is not {whose}"):
            ddp_example.main(["--smoke", "--distributed", scope])
