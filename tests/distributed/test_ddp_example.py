"""benchmarks/examples/ddp_example.py --smoke under torchrun with 2 gloo processes on CPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

pytestmark = pytest.mark.slow  # runs the DDP example under torchrun

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120


class TestDDPExample:
    def test_smoke_logs_the_global_rate(self):
        if not dist.is_available() or not dist.is_gloo_available():
            pytest.skip("torch.distributed with gloo is not available")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "benchmarks/examples/ddp_example.py",
               "--mode", "ddp", "--smoke"]
        env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
        try:
            out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the example did not finish in {TIMEOUT_S} s")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "world_size=2 backend=gloo" in out.stdout
        pairs = re.findall(r"logged ([\d.]+), global batch recomputed ([\d.]+), "
                           r"rank 0's own rows ([\d.]+)", out.stdout)
        assert len(pairs) == 6  # 2 epochs × 3 steps
        for logged, recomputed, own in pairs:
            assert logged == recomputed
            assert logged != own  # the global rate is not rank 0's
