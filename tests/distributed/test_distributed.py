"""The coding rate of the global batch under torch.distributed: 2 gloo processes on CPU.

One pair of processes (``_ddp_worker.py``) runs every scenario in every mode — PML's
``DistributedLossWrapper`` with ``efficient=False`` and ``efficient=True``, and plain DDP; the
``*-declared`` scenario says the mode with ``running_in`` instead of the stack walk — and
saves each rank's gradients and logged statistics. Here they are compared with single-process
float64 references written independently of the package (autograd through ``torch.logdet`` of
the d×d matrix, a Python loop over classes): the gradients after DDP's averaging must be the
full-batch gradients (``distributed="global"``) or the mean of the per-rank gradients
(``distributed="local"``), and the statistics the full-batch (or per-rank) values.

The wrapped PML loss has weight 0 (and the proxy loss's own term is zeroed) so that only the
plugin's terms are under test: under plain DDP a pair loss is per-rank by definition, and PML's
wrapper gives each rank world_size × the full-batch gradient of a PML proxy loss on its (replicated)
proxies — measured 2.0× with 2 ranks on NormalizedSoftmaxLoss — which is PML's behaviour.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from pml_anticollapse import AntiCollapseLoss, CodingRateRegularizer, MCR2Loss
from pml_anticollapse import distributed as D
from tests.reference_ranking import ref_ranked_list_loss

pytestmark = pytest.mark.slow  # starts gloo process groups

WORKER = Path(__file__).with_name("_ddp_worker.py")
WORLD_SIZE = 2
TIMEOUT_S = 120  # a hang must not block CI; a normal run takes ~10 s on 2 cores
GRAD_TOL = dict(rtol=1e-5, atol=1e-8)  # float64 throughout; the issue asks for 1e-5
STAT_TOL = dict(rtol=1e-8, atol=1e-10)


def _load_worker():
    spec = importlib.util.spec_from_file_location("_ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


W = _load_worker()


# ---------------------------------------------------------------- independent references


def ref_rate(z, eps_sq):
    """½·logdet(I_d + d/(m·ε²)·XᵀX) of the L2-normalised rows, by autograd through logdet."""
    x = z / z.norm(dim=1, keepdim=True)
    m, d = x.shape
    return 0.5 * torch.logdet(torch.eye(d, dtype=z.dtype) + d / (m * eps_sq) * x.T @ x)


def ref_rate_reduction(z, y, eps_sq=0.5):
    """(ΔR, R, R_c) with a loop over the classes present."""
    r = ref_rate(z, eps_sq)
    m = z.shape[0]
    r_c = z.new_zeros(())
    for c in torch.unique(y):
        zc = z[y == c]
        r_c = r_c + zc.shape[0] / m * ref_rate(zc, eps_sq)
    return r - r_c, r, r_c


def ref_objective(scenario, z, y, proxies):
    """(objective, stats) of one scenario on the rows z — the full batch for the global
    scenarios, one rank's rows for the local ones."""
    if scenario.startswith("emb"):
        r5, r3 = ref_rate(z, 0.5), ref_rate(z, 0.3)
        return -r5 + 0.5 * torch.exp(-r3), {"acl": r5, "reg": r3}
    if scenario == "proxy":
        r5 = ref_rate(z, 0.5)
        present = torch.unique(y)
        rp = ref_rate(proxies[present], 0.5)
        rw = ref_rate(proxies, 0.3)
        return -r5 - rp - 0.7 * rw, {"acl": r5, "proxy": rp, "weight_reg": rw}
    delta_r, r, r_c = ref_rate_reduction(z, y)
    return -delta_r, {"r": r, "r_c": r_c, "delta_r": delta_r}


def reference_rll(mode):
    """(model grads, [], per-rank stats) of RankedListLoss under PML's wrapper. efficient=False:
    the full-batch loss. efficient=True: rank r ranks its own queries against the whole batch
    with only its own rows differentiable; the wrapper's ×world_size and DDP's averaging make
    the sum of those per-rank losses. Per-query losses from the loop reference."""
    model = W.make_model()
    x, y = W.make_data(WORLD_SIZE)
    z = model(x)
    n = W.ROWS_PER_RANK

    def violating_positives(q, q_labels):
        x_q = q / q.norm(dim=1, keepdim=True)
        x_r = z / z.norm(dim=1, keepdim=True)
        d = torch.cdist(x_q.detach(), x_r.detach(), compute_mode="donot_use_mm_for_euclid_dist")
        return ((q_labels[:, None] == y[None, :]) & (d > 1.2 - 0.4)).sum()

    if mode == "wrapper":
        objective = ref_ranked_list_loss(z, y).mean()
        stats = [{"num_positive_pairs": violating_positives(z, y)}] * WORLD_SIZE
    else:
        objective, stats = 0.0, []
        for r in range(WORLD_SIZE):
            own = torch.zeros(len(y), dtype=torch.bool)
            own[r * n : (r + 1) * n] = True
            ref = torch.where(own[:, None], z, z.detach())
            objective = objective + ref_ranked_list_loss(z[own], y[own], ref, y).mean()
            stats.append({"num_positive_pairs": violating_positives(z[own], y[own])})
    return list(torch.autograd.grad(objective, list(model.parameters()))), [], stats


def reference(scenario):
    """(model grads, proxy grads, per-rank stats) computed in this single process."""
    model = W.make_model()
    x, y = W.make_data(WORLD_SIZE)
    loss = W.build_loss(scenario)
    proxies = None
    if scenario == "proxy":
        proxies = loss.loss.W.detach().t().clone().requires_grad_(True)  # (C, d) rows
    z = model(x)
    n = W.ROWS_PER_RANK
    if scenario.endswith("-local"):
        per_rank = [
            ref_objective(scenario, z[r * n : (r + 1) * n], y[r * n : (r + 1) * n], proxies)
            for r in range(WORLD_SIZE)
        ]
        objective = sum(o for o, _ in per_rank) / WORLD_SIZE
        stats = [s for _, s in per_rank]
    else:
        objective, s = ref_objective(scenario, z, y, proxies)
        stats = [s] * WORLD_SIZE
    params = list(model.parameters()) + ([proxies] if proxies is not None else [])
    grads = torch.autograd.grad(objective, params)
    model_grads = list(grads[: len(list(model.parameters()))])
    proxy_grads = [grads[-1].t()] if proxies is not None else []  # back to W's (d, C) layout
    return model_grads, proxy_grads, stats


# ---------------------------------------------------------------- the 2-process run


@pytest.fixture(scope="module")
def ranks():
    """Run the two gloo ranks once; return their saved results."""
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root))
        procs = [
            subprocess.Popen(
                [sys.executable, str(WORKER), str(r), str(WORLD_SIZE), f"{tmp}/store", tmp],
                cwd=root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for r in range(WORLD_SIZE)
        ]
        outputs = []
        try:
            for p in procs:
                outputs.append(p.communicate(timeout=TIMEOUT_S)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail(f"the {WORLD_SIZE} gloo ranks did not finish in {TIMEOUT_S} s")
        for r, (p, out) in enumerate(zip(procs, outputs, strict=True)):
            if p.returncode != 0:
                pytest.fail(f"rank {r} exited with {p.returncode}:\n{out}")
        return [torch.load(Path(tmp) / f"rank{r}.pt") for r in range(WORLD_SIZE)]


# Expected all_gather calls in one forward pass: PML's wrapper gathers embeddings and labels
# (2); with efficient=True the regularizer, which is handed no gathered copy, gathers once more
# with gradient; under plain DDP each term gathers what it needs (embeddings; labels for MCR²
# and for the batch proxy set); "local" never gathers.
ALL_GATHERS = {
    ("emb", "wrapper"): 2,
    ("emb", "wrapper-efficient"): 3,
    ("emb", "ddp"): 2,
    ("emb-local", "wrapper"): 2,
    ("emb-local", "wrapper-efficient"): 2,
    ("emb-local", "ddp"): 0,
    ("emb-declared", "wrapper"): 2,
    ("emb-declared", "wrapper-efficient"): 3,
    ("emb-declared", "ddp"): 2,
    ("proxy", "wrapper"): 2,
    ("proxy", "ddp"): 2,
    ("mcr2", "wrapper"): 2,
    ("mcr2", "wrapper-efficient"): 2,
    ("mcr2", "ddp"): 2,
    ("mcr2-local", "wrapper"): 2,
    ("mcr2-local", "wrapper-efficient"): 2,
    ("mcr2-local", "ddp"): 0,
    ("rll", "wrapper"): 2,
    ("rll", "wrapper-efficient"): 2,
}

CASES = [(s, m) for s, modes in W.SCENARIOS.items() for m in modes]


class TestTwoGlooRanks:
    @pytest.mark.parametrize("scenario,mode", CASES, ids=[f"{s}-{m}" for s, m in CASES])
    def test_gradients_and_statistics(self, ranks, scenario, mode):
        if scenario == "rll":
            model_grads, proxy_grads, stats = reference_rll(mode)
        else:
            model_grads, proxy_grads, stats = reference(scenario)
        for rank, results in enumerate(ranks):
            got = results[(scenario, mode)]
            # DDP-averaged model gradients: the full-batch gradient (global) or the mean of the
            # per-rank gradients (local)
            for g, ref in zip(got["model_grads"], model_grads, strict=True):
                torch.testing.assert_close(g, ref, **GRAD_TOL)
            # replicated proxies (not DDP-wrapped): every rank already holds the full gradient
            for g, ref in zip(got["loss_grads"], proxy_grads, strict=True):
                torch.testing.assert_close(g, ref, **GRAD_TOL)
            assert got["stats"].keys() == stats[rank].keys()
            for name, value in got["stats"].items():
                torch.testing.assert_close(value, stats[rank][name].detach(), **STAT_TOL)

    @pytest.mark.parametrize("scenario,mode", CASES, ids=[f"{s}-{m}" for s, m in CASES])
    def test_never_gathers_twice(self, ranks, scenario, mode):
        """all_gather calls in the forward pass (PML's and the plugin's). The rates are invariant
        to duplicating every row, so a second gather would not show in the values."""
        for results in ranks:
            assert results[(scenario, mode)]["all_gathers"] == ALL_GATHERS[scenario, mode]

    def test_global_and_local_rates_differ(self, ranks):
        """The test data can tell the global rate from the per-rank ones."""
        r_global = ranks[0][("emb", "ddp")]["stats"]["acl"]
        r_local = [ranks[r][("emb-local", "ddp")]["stats"]["acl"] for r in range(WORLD_SIZE)]
        assert all(abs(float(r_global - r)) > 1e-2 for r in r_local)
        assert abs(float(r_local[0] - r_local[1])) > 1e-3


# ---------------------------------------------------------------- single process


class TestSingleProcess:
    def test_context_is_single_without_a_process_group(self):
        assert D.context() == D.Context("single", 1, False)

    @pytest.mark.parametrize(
        "make",
        [
            lambda: CodingRateRegularizer(distributed="all"),
            lambda: MCR2Loss(distributed="all"),
            lambda: AntiCollapseLoss(MCR2Loss(), distributed="all"),
        ],
        ids=["regularizer", "mcr2", "anti_collapse"],
    )
    def test_bad_scope(self, make):
        with pytest.raises(ValueError, match="distributed must be one of"):
            make()

    def test_global_rows_bad_scope(self):
        with pytest.raises(ValueError, match="distributed must be one of"):
            D.global_rows([(torch.ones(2, 3), None)], "all", D.context())

    def test_scopes_give_the_same_value_in_one_process(self):
        z = torch.randn(12, 8, dtype=torch.float64)
        y = torch.arange(12) % 3
        for cls_kwargs in ({}, {"distributed": "local"}):
            reg = CodingRateRegularizer(**cls_kwargs)
            torch.testing.assert_close(reg(z), -ref_rate(z, 0.5), **STAT_TOL)
            mcr2 = MCR2Loss(**cls_kwargs)
            torch.testing.assert_close(mcr2(z, y), -ref_rate_reduction(z, y)[0], **STAT_TOL)
