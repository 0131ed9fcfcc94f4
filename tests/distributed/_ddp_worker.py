"""One rank of the 2-process gloo test (run by tests/distributed/test_distributed.py).

    python tests/distributed/_ddp_worker.py RANK WORLD_SIZE STORE_FILE OUT_DIR

Runs every scenario of ``SCENARIOS`` in every mode on the same small float64 problem, one
forward/backward each, and saves what a user would see on this rank: the parameter gradients
after DDP's averaging, the loss's own (replicated, not DDP-wrapped) parameter gradients, and the
logged statistics. The parent process compares them with single-process references.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch

ROWS_PER_RANK = 6
IN_DIM = 10
EMB_DIM = 8
NUM_CLASSES = 6
MODES = ("wrapper", "wrapper-efficient", "ddp")


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(IN_DIM, 12), torch.nn.Tanh(), torch.nn.Linear(12, EMB_DIM)
    ).double()


def make_data(world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels of the global batch, in rank order. Rank r holds classes 2r..2r+2, so
    the classes present differ between ranks and class NUM_CLASSES − 1 is absent everywhere."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(world_size * ROWS_PER_RANK, IN_DIM, generator=g, dtype=torch.float64)
    y = torch.cat(
        [torch.arange(ROWS_PER_RANK) % 3 + 2 * r for r in range(world_size)]
    )
    return x, y


def _zeroed_normalized_softmax():
    from pytorch_metric_learning.losses import NormalizedSoftmaxLoss

    class ZeroedNormalizedSoftmaxLoss(NormalizedSoftmaxLoss):
        """NormalizedSoftmaxLoss whose own term is multiplied by 0, so that only the plugin's
        terms (its weight_regularizer included) act on the proxies: PML's wrapper multiplies
        PML's own proxy-loss gradient on the replicated proxies by the world size, which is
        PML's behaviour and not under test here."""

        def compute_loss(self, *args):
            out = super().compute_loss(*args)
            out["loss"]["losses"] = out["loss"]["losses"] * 0
            return out

    return ZeroedNormalizedSoftmaxLoss


def build_loss(scenario: str):
    """The loss of each scenario (seeded: the same proxies on every rank and in the parent)."""
    from pytorch_metric_learning.losses import ContrastiveLoss

    from pml_anticollapse import AntiCollapseLoss, CodingRateRegularizer, MCR2Loss

    torch.manual_seed(2)
    scope = "local" if scenario.endswith("-local") else "global"
    if scenario.startswith("emb"):
        return AntiCollapseLoss(
            ContrastiveLoss(),
            loss_weight=0.0,
            ac_weight=1.0,
            eps_sq=0.5,
            distributed=scope,
            collect_stats=True,
            embedding_regularizer=CodingRateRegularizer(
                eps_sq=0.3, form="exp", distributed=scope, collect_stats=True
            ),
            embedding_reg_weight=0.5,
        )
    if scenario == "proxy":
        inner = _zeroed_normalized_softmax()(
            num_classes=NUM_CLASSES,
            embedding_size=EMB_DIM,
            weight_regularizer=CodingRateRegularizer(eps_sq=0.3, collect_stats=True),
            weight_reg_weight=0.7,
        ).double()
        return AntiCollapseLoss(inner, target="both", proxy_set="batch", collect_stats=True)
    if scenario.startswith("mcr2"):
        return MCR2Loss(distributed=scope, collect_stats=True)
    if scenario == "rll":
        from pml_anticollapse import RankedListLoss

        return RankedListLoss(margin=0.4, Tn=10.0, collect_stats=True)
    raise ValueError(scenario)


SCENARIOS = {
    "emb": MODES,
    "emb-local": MODES,
    # the same terms, the mode said with running_in instead of read off the call stack
    "emb-declared": MODES,
    "proxy": ("wrapper", "ddp"),  # PML's proxy losses refuse the efficient wrapper's ref_emb
    "mcr2": MODES,
    "mcr2-local": MODES,
    # not a coding-rate term: PML's semantics (plain DDP would make it per-rank by definition)
    "rll": ("wrapper", "wrapper-efficient"),
}


def stats_of(scenario: str, loss) -> dict:
    if scenario.startswith("emb"):
        return {
            "acl": loss.embedding_coding_rate,
            "reg": loss.embedding_regularizer.coding_rate,
        }
    if scenario == "proxy":
        return {
            "acl": loss.embedding_coding_rate,
            "proxy": loss.proxy_coding_rate,
            "weight_reg": loss.loss.weight_regularizer.coding_rate,
        }
    if scenario == "rll":
        return {"num_positive_pairs": loss.num_positive_pairs}
    return {
        "r": loss.coding_rate,
        "r_c": loss.compression_rate,
        "delta_r": loss.rate_reduction,
    }


def run(rank: int, world_size: int, store: str, out_dir: str) -> None:
    import torch.distributed as dist
    from pytorch_metric_learning.utils.distributed import DistributedLossWrapper
    from torch.nn.parallel import DistributedDataParallel as DDP

    from pml_anticollapse import distributed as D

    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world_size
    )
    calls = {"all_gather": 0}
    all_gather = dist.all_gather

    def counting_all_gather(*args, **kwargs):  # PML's and the plugin's gathers both go here
        calls["all_gather"] += 1
        return all_gather(*args, **kwargs)

    dist.all_gather = counting_all_gather
    x, y = make_data(world_size)
    rows = slice(rank * ROWS_PER_RANK, (rank + 1) * ROWS_PER_RANK)
    results = {}
    for scenario, modes in SCENARIOS.items():
        for mode in modes:
            model = DDP(make_model())
            loss = build_loss(scenario)
            if mode == "ddp":
                loss_fn = loss
            else:
                loss_fn = DistributedLossWrapper(loss, efficient=mode == "wrapper-efficient")
            emb = model(x[rows])
            calls["all_gather"] = 0
            declared = scenario.endswith("-declared")
            with D.running_in(mode) if declared else contextlib.nullcontext():
                value = loss_fn(emb, y[rows])
            gathers = calls["all_gather"]
            value.backward()
            results[(scenario, mode)] = {
                "model_grads": [p.grad.clone() for p in model.parameters()],
                "loss_grads": [p.grad.clone() for p in loss.parameters() if p.grad is not None],
                "all_gathers": gathers,
                "stats": {k: v.clone() for k, v in stats_of(scenario, loss).items()},
            }
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root))  # run as a script: make pml_anticollapse importable
    run(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
