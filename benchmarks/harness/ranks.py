"""Several processes on one grid, launched by torch's own ``torchrun``: who this process is, its
device and threads, its share of the cells, and how rank 0 learns that the others are done.

torchrun starts the processes (``--nproc-per-node``, ``--nnodes`` with ``--rdzv-*`` across
machines, ``srun torchrun`` under SLURM), restarts nothing (the harness resumes instead), and
stops every rank when one fails. This module adds only what a grid of independent cells needs:

- :func:`from_env` reads torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``LOCAL_WORLD_SIZE``
  (absent: a one-process run, rank 0 of 1);
- :func:`pick_device`: ``cuda:LOCAL_RANK`` when CUDA is there (``device: auto``), else the CPU;
- :func:`pick_threads`: ``--threads``, else the config's ``threads``, else the usable CPUs
  (``os.sched_getaffinity``, which respects cgroup and SLURM limits) divided by the ranks on this
  machine. The harness sets it with ``torch.set_num_threads``, so it wins over the
  ``OMP_NUM_THREADS=1`` that torchrun exports;
- :func:`share`: a deterministic split of the pending cells over the ranks, balanced by cost
  (epochs): every rank computes the same split from the same list;
- :class:`Group`: a gloo process group used once — rank 0 hands the others the run folder's
  token and the pending cells once it has locked and prepared the folder — and closed at once:
  no collective runs while cells train, so a long share never meets a timeout, and the plugin's
  classes do not mistake the ranks for a DDP job (they gather rows when a group is up). Rank 0
  then learns that the other ranks are done by watching their cells being committed in the run
  folder.

A cell's numbers depend on its seed, its data, its threads and its device, never on how many
ranks ran the grid: the same cell at the same threads gives the same bits in a one-process run.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import socket
from collections.abc import Sequence
from typing import Any

import torch

#: Environment variables that torchrun sets for every process it starts.
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")

#: How long a rank waits for rank 0 to prepare the run folder (reading a real dataset's images
#: may take minutes); the wait ends at once when torchrun stops the run because a rank failed.
SETUP_TIMEOUT = datetime.timedelta(minutes=60)


@dataclasses.dataclass(frozen=True)
class Ranks:
    """This process's place among the processes that run one grid."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world_size} on {socket.gethostname()}"


def from_env(environ: dict | None = None) -> Ranks:
    """The ranks as torchrun describes them in the environment; a one-process run without it.

    A partial or inconsistent set (e.g. ``RANK`` without ``WORLD_SIZE``, or ``RANK >=
    WORLD_SIZE``) is a ``ValueError`` naming the variables: guessing would let two processes take
    the same share."""
    env = os.environ if environ is None else environ
    present = [k for k in ENV_KEYS if k in env]
    if not present:
        return Ranks()
    if len(present) != len(ENV_KEYS):
        missing = [k for k in ENV_KEYS if k not in env]
        raise ValueError(
            f"the environment sets {', '.join(present)} but not {', '.join(missing)}: start "
            "several processes with torchrun (it sets all four), or none of them"
        )
    try:
        values = {k: int(env[k]) for k in ENV_KEYS}
    except ValueError:
        raise ValueError(
            "RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be integers, got "
            + ", ".join(f"{k}={env[k]!r}" for k in ENV_KEYS)
        ) from None
    ranks = Ranks(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"],
                  values["LOCAL_WORLD_SIZE"])
    if not (0 <= ranks.rank < ranks.world_size and 0 <= ranks.local_rank < ranks.local_world_size
            <= ranks.world_size):
        raise ValueError(f"inconsistent torchrun environment: {ranks}")
    return ranks


def pick_device(name: str | None, ranks: Ranks) -> torch.device:
    """``auto``: ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU; ``cuda`` without an
    index likewise takes the local rank's GPU; ``cpu`` and ``cuda:N`` are taken as given (all
    ranks on one GPU is allowed)."""
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from e
    if dev.type != "cuda":
        return dev
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available")
    if dev.index is None:
        count = torch.cuda.device_count()
        if ranks.local_rank >= count:
            raise ValueError(
                f"{ranks.local_world_size} ranks on this machine but {count} CUDA device(s): "
                "start at most one rank per GPU (--nproc-per-node), or pass --device cuda:N to "
                "share one"
            )
        dev = torch.device("cuda", ranks.local_rank)
    return dev


def usable_cpus() -> int:
    """The CPUs this process may run on (cgroup, taskset and SLURM limits included)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def pick_threads(cli: int | None, config: int | None, ranks: Ranks) -> tuple[int, str]:
    """(threads, where the number came from): the command line, else the config, else the usable
    CPUs shared by the ranks on this machine (at least 1)."""
    if cli is not None:
        return int(cli), "--threads"
    if config is not None:
        return int(config), "the config's threads"
    cpus = usable_cpus()
    n = max(1, cpus // ranks.local_world_size)
    per = f" / {ranks.local_world_size} ranks" if ranks.local_world_size > 1 else ""
    return n, f"{cpus} usable CPUs{per}"


def share(items: Sequence[Any], costs: Sequence[float], world_size: int) -> list[list[Any]]:
    """``items`` split over ``world_size`` ranks, balanced by ``costs``: the longest first, each
    to the rank with the least work so far (the lowest rank on a tie), each rank's items kept in
    their original order. Deterministic: every rank computes the same split."""
    if len(items) != len(costs):
        raise ValueError(f"{len(items)} items but {len(costs)} costs")
    load = [0.0] * world_size
    owner = [0] * len(items)
    for i in sorted(range(len(items)), key=lambda i: (-costs[i], i)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += costs[i]
    return [[items[i] for i in range(len(items)) if owner[i] == r] for r in range(world_size)]


class Group:
    """A gloo process group over torchrun's ranks, used only to hand rank 0's set-up to the
    others (:meth:`from_main`); a one-process run has none and passes values through."""

    def __init__(self, ranks: Ranks):
        self.ranks = ranks
        self.up = False
        if ranks.distributed:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo", timeout=SETUP_TIMEOUT)
                self.up = True

    def from_main(self, value: Any = None) -> Any:
        """``value`` of rank 0, on every rank (rank 0 passes it, the others pass nothing)."""
        if not self.ranks.distributed:
            return value
        import torch.distributed as dist

        box = [value if self.ranks.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.up:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.up = False


def check_shared_folder(run_dir: str, token: str, ranks: Ranks, main_host: str) -> None:
    """Raise a ``ValueError`` unless this rank sees rank 0's run folder: the ``.session`` file
    rank 0 wrote there must hold this run's ``token``."""
    path = os.path.join(run_dir, ".session")
    try:
        with open(path, encoding="utf-8") as f:
            seen = f.read().strip()
    except OSError:
        seen = None
    if seen != token:
        raise ValueError(
            f"{ranks.describe()} cannot see the run folder {os.path.abspath(run_dir)} that rank 0 "
            f"prepared on {main_host} ({'no' if seen is None else 'another run in its'} "
            f"{path}): every rank must see the same run folder — put --output on a file system "
            "that every machine mounts"
        )
