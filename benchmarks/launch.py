"""``python -m benchmarks.launch [--nproc-per-node N|auto] [--resume-as CMD] [--] ARGS``: run
``python -m benchmarks ARGS`` in the layout that is fastest on this machine, through torch's own
launcher (``torchrun --standalone``) when it takes several processes. ``scripts/benchmark.sh``
uses it, so that the main job uses every core without its user knowing torchrun exists.

The layout (measured on the glyph main job; the README has the figures):

- CPU only: one process per usable CPU (``os.sched_getaffinity``), one thread each — the glyph
  CNN's small operations gain little from a second thread, so two processes with one thread beat
  one process with two; ``--threads T`` in ARGS gives each process T threads (and usable CPUs /
  T processes);
- CUDA: one process per GPU (each takes ``cuda:LOCAL_RANK``), the usable CPUs shared among them.

One process runs in this process, without torchrun. With several, a rank that fails (an error,
SIGKILL, the out-of-memory killer) makes torchrun stop the others; this wrapper then prints one
line naming the failed rank and the command that resumes the run, in place of torchrun's own
report, and Ctrl-C likewise. ``PMLAC_NPROC`` (or ``--nproc-per-node``) overrides the count.

A cell's numbers depend on its threads, not on the number of processes: the two layouts give
numbers that differ in the last digits only because their thread counts differ.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys

#: Options after which ``python -m benchmarks`` does no training: run in this process.
NO_TRAINING = ("-h", "--help", "--help-config", "--list-methods", "--report-only")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.launch",
        description="Run `python -m benchmarks ARGS` on every core or GPU of this machine "
        "(torchrun --standalone when it takes several processes).",
    )
    p.add_argument("--nproc-per-node", default=os.environ.get("PMLAC_NPROC", "auto"),
                   help="processes: auto (default; $PMLAC_NPROC) or a number")
    p.add_argument("--resume-as", default="python -m benchmarks.launch",
                   help="the command a user types to run this again (shown in the resume line, "
                   "followed by ARGS)")
    p.add_argument("--resume-verbatim", action="store_true",
                   help="--resume-as is the whole command (ARGS are not appended)")
    own, rest = p.parse_known_args(argv)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    return own, rest


def _threads_asked(args: list[str]) -> int | None:
    for i, a in enumerate(args):
        if a == "--threads" and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith("--threads="):
            value = a.split("=", 1)[1]
        else:
            continue
        try:
            return max(1, int(value))
        except ValueError:
            return None  # the harness names the bad value
    return None


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def pick_layout(asked: str, args: list[str]) -> tuple[int, str]:
    """(processes, why): see the module's docstring."""
    if asked != "auto":
        try:
            n = int(asked)
        except ValueError:
            raise SystemExit(f"--nproc-per-node must be auto or a number, got {asked!r}") from None
        if n < 1:
            raise SystemExit(f"--nproc-per-node must be >= 1, got {n}")
        return n, "asked for"
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count(), "one per GPU"
    threads = _threads_asked(args) or 1
    cpus = usable_cpus()
    return max(1, cpus // threads), f"{cpus} usable CPUs / {threads} thread(s) per process"


def _failure_line(err, resume: str) -> str:
    rank, failure = err.get_first_failure()
    if failure.signal_name() not in ("", "<N/A>", None) and failure.exitcode < 0:
        why = f"killed by {failure.signal_name()}"
    elif failure.exitcode == 1:
        why = "stopped with an error (its error line is above)"
    else:
        why = f"exited with status {failure.exitcode}"
    return (f"python -m benchmarks: rank {rank} {why}; torchrun stopped the other ranks. Every "
            f"finished epoch is kept; resume with: {resume}")


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    own, args = parse_args(sys.argv[1:] if argv is None else list(argv))
    shown = " ".join([own.resume_as, *(shlex.quote(a) for a in args if a != "--fresh")])
    if own.resume_verbatim:
        shown = own.resume_as
    training = not any(a in NO_TRAINING for a in args)
    nproc, why = pick_layout(own.nproc_per_node, args) if training else (1, "")
    if nproc == 1:
        from .harness.cli import run

        sys.argv[0] = "benchmarks"
        return run(args)

    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    for name in ("torch.distributed.elastic", "torch.distributed.run"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the line below replaces its report
    os.environ["PMLAC_LAUNCHER"] = "1"
    typed = own.resume_as if own.resume_verbatim else " ".join(
        [own.resume_as, *(shlex.quote(a) for a in args)])
    os.environ["PMLAC_COMMAND"] = typed  # what the run records as its command
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the harness sets its threads itself
    if _threads_asked(args) is None and not torch_cuda():
        # the layout was counted with one thread per process: give each rank exactly that (the
        # config's own ``threads`` would otherwise oversubscribe the cores)
        args = [*args, "--threads", "1"]
    layout = ["--standalone", f"--nproc-per-node={nproc}", "-m", "benchmarks", *args]
    print(f"[benchmarks] {nproc} processes ({why}): torchrun {' '.join(layout)}",
          file=sys.stderr, flush=True)
    try:
        torchrun.run(torchrun.parse_args(layout))
    except ChildFailedError as e:
        print(f"\n{_failure_line(e, shown)}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(f"\npython -m benchmarks: interrupted (Ctrl-C); every finished epoch is kept; "
              f"resume with: {shown}", file=sys.stderr, flush=True)
        return 130
    except Exception as e:  # torchrun's SignalException (SIGTERM to this process), rendezvous
        if type(e).__name__ == "SignalException":
            print(f"\npython -m benchmarks: terminated ({e}); every finished epoch is kept; "
                  f"resume with: {shown}", file=sys.stderr, flush=True)
            return 143
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
