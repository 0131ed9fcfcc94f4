"""Multi-process training with the anti-collapse term on the global batch (torch.distributed).

Run from the repository root::

    torchrun --nproc_per_node 2 benchmarks/examples/ddp_example.py              # wrapper mode
    torchrun --nproc_per_node 2 benchmarks/examples/ddp_example.py --mode wrapper-efficient
    torchrun --nproc_per_node 2 benchmarks/examples/ddp_example.py --mode ddp --smoke  # seconds
    python benchmarks/examples/ddp_example.py --smoke                           # one process

Backend: nccl when every rank has its own CUDA device, gloo on CPU otherwise. Data: sklearn's
digits (shipped inside scikit-learn, nothing is downloaded), classes 0–9, 80 % for training,
split over the ranks by ``DistributedSampler(drop_last=True)`` so that every rank has the same
batch size (required by the gathers). Model: an MLP 64 → 128 → 32 under
DistributedDataParallel. Loss: ``AntiCollapseLoss(MultiSimilarityLoss(), target="embeddings")``,
the −R(Z) term on the sample embeddings, with

- ``--mode wrapper``: PML's ``DistributedLossWrapper(efficient=False)``: the loss sees the
  gathered batch; the plugin gathers nothing more;
- ``--mode wrapper-efficient``: ``DistributedLossWrapper(efficient=True)``: the plugin uses the
  wrapper's gathered copy (a ``CodingRateRegularizer`` would gather with gradient itself);
- ``--mode ddp``: no wrapper: MultiSimilarity runs on each rank's own batch, the plugin gathers
  the embeddings with gradient for the coding rate.

Every ``--log-every`` steps rank 0 prints the loss, the coding rate the loss logged
(``embedding_coding_rate``, the global batch's), the same rate recomputed from an all_gather of
the detached embeddings (they must agree), and rank 0's own per-rank rate, which differs: the
rate of the union is not the mean of the per-rank rates. ``--smoke`` checks the agreement on
every step (under ``--distributed local``: the logged rate against the rank's own) and exits with
an error when it fails or when no step was checked. At the end rank 0 prints precision@1 and the
coding rate of the held-out 20 %. A ``--batch-size`` larger than a rank's share of the training
data is refused before training.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

# Run as a script (torchrun benchmarks/examples/ddp_example.py), so the repository root is put on
# the path for `benchmarks._shared` (and for the package, in a checkout that is not installed).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pytorch_metric_learning.losses import MultiSimilarityLoss
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from benchmarks._shared import non_negative_float, positive_float, positive_int  # noqa: E402
from pml_anticollapse import AntiCollapseLoss
from pml_anticollapse import functional as F
from pml_anticollapse.distributed import all_gather_no_grad

MODES = ("wrapper", "wrapper-efficient", "ddp")
#: Agreement asked of the logged coding rate with the recomputed one under --smoke.
SMOKE_TOL = 1e-4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=MODES, default="wrapper")
    p.add_argument("--distributed", choices=("global", "local"), default="global",
                   help="scope of the coding rate (the plugin's distributed= argument)")
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="per rank, at most a rank's share of the 1437 training samples")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--ac-weight", type=non_negative_float, default=0.1)
    p.add_argument("--log-every", type=positive_int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true",
                   help="2 epochs of 3 steps, check the logged rate against the recomputed one")
    return p.parse_args(argv)


def setup():
    """(rank, world_size, device); initialises the process group under torchrun."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ["WORLD_SIZE"])
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= world_size
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    return dist.get_rank(), dist.get_world_size(), device


def load_digits_split(seed):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32) / 16.0
    y = torch.tensor(y)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_train = int(0.8 * len(y))
    return (x[perm[:n_train]], y[perm[:n_train]]), (x[perm[n_train:]], y[perm[n_train:]])


def precision_at_1(emb, labels):
    emb = torch.nn.functional.normalize(emb, dim=1)
    sim = emb @ emb.T
    sim.fill_diagonal_(-float("inf"))
    return (labels[sim.argmax(1)] == labels).float().mean().item()


def main(argv=None):
    args = parse_args(argv)
    if args.smoke:
        args.epochs, args.log_every = 2, 1
    rank, world_size, device = setup()
    distributed = world_size > 1
    torch.manual_seed(args.seed)
    (x_tr, y_tr), (x_te, y_te) = load_digits_split(args.seed)
    dataset = TensorDataset(x_tr, y_tr)
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=args.seed, drop_last=True
    )
    if args.batch_size > len(sampler):  # drop_last=True: not a single step would run
        if distributed:
            dist.destroy_process_group()
        raise SystemExit(
            f"--batch-size must be at most each rank's share of the training data, "
            f"{len(sampler)} samples ({len(dataset)} over {world_size} rank(s)), "
            f"got {args.batch_size}"
        )
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True)

    model = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32)
    ).to(device)
    if distributed:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    loss = AntiCollapseLoss(
        MultiSimilarityLoss(),
        target="embeddings",
        ac_weight=args.ac_weight,
        distributed=args.distributed,
        collect_stats=True,
    )
    loss_fn = loss
    if distributed and args.mode != "ddp":
        loss_fn = DistributedLossWrapper(loss, efficient=args.mode == "wrapper-efficient")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)

    if rank == 0:
        backend = dist.get_backend() if distributed else "none (one process)"
        print(f"mode={args.mode} distributed={args.distributed} world_size={world_size} "
              f"backend={backend} device={device} batch={args.batch_size}/rank "
              f"(global {args.batch_size * world_size})", flush=True)
    worst, checked = 0.0, 0
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for step, (xb, yb) in enumerate(loader):
            if args.smoke and step == 3:
                break
            xb, yb = xb.to(device), yb.to(device)
            emb = model(xb)
            value = loss_fn(emb, yb)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            if step % args.log_every:
                continue
            logged = loss.embedding_coding_rate.detach()
            with torch.no_grad():  # a check, not part of training: all ranks take part
                full = all_gather_no_grad(emb.detach()) if distributed else emb.detach()
                recomputed = F.coding_rate(full)
                own = F.coding_rate(emb.detach())
            # "global": the rate of the union of the ranks' rows; "local": this rank's rows
            expected = recomputed if args.distributed == "global" else own
            worst = max(worst, abs(float(logged - expected)))
            checked += 1
            if rank == 0:
                # PML's wrapper returns the loss multiplied by the world size: undo it for display
                shown = value.detach() / world_size if loss_fn is not loss else value.detach()
                print(f"epoch {epoch} step {step:3d} loss {float(shown):8.4f} | "
                      f"coding rate: logged {float(logged):.5f}, global batch recomputed "
                      f"{float(recomputed):.5f}, rank 0's own rows {float(own):.5f}", flush=True)
    if rank == 0:
        net = model.module if distributed else model
        net.eval()
        with torch.no_grad():
            emb_te = net(x_te.to(device)).cpu()
        print(f"done in {time.perf_counter() - t0:.1f} s | held-out P@1 "
              f"{precision_at_1(emb_te, y_te):.4f}, coding rate {float(F.coding_rate(emb_te)):.4f}"
              + (f" | max |logged - recomputed| = {worst:.2e}"
                 if args.distributed == "global"
                 else f" | logged: per-rank rates, max |logged - own| = {worst:.2e}")
              + f" over {checked} logged step(s)", flush=True)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    if args.smoke and checked == 0:
        raise SystemExit(f"rank {rank}: --smoke checked no step (0 logged steps in "
                         f"{args.epochs} epoch(s)); nothing was verified")
    if args.smoke and worst > SMOKE_TOL:
        scope = "the global batch's" if args.distributed == "global" else "this rank's own"
        raise SystemExit(f"rank {rank}: the logged coding rate is not {scope} "
                         f"(max difference {worst:.2e} > {SMOKE_TOL:.0e})")


if __name__ == "__main__":
    main()
