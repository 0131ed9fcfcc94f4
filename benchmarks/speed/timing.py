"""How the speed benchmark times: interleaved ``Timer.blocked_autorange`` rounds pooled into a
median and an IQR, per device and precision (``bench_device``), per op (``bench_ops``) and for
``MCR2Loss``'s absent classes (``bench_classes``)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

from .implementations import PASSES, RATE_FNS, op_cases, reference_rate_and_grad, rel_err


def summarize(times: Sequence[float]) -> dict[str, float]:
    """Median and interquartile range (linear-interpolated quartiles) of ``times``, in seconds."""
    if len(times) == 0:
        raise ValueError("times must not be empty")
    if len(times) == 1:
        q1 = q2 = q3 = times[0]
    else:
        q1, q2, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return {"median_s": q2, "iqr_s": q3 - q1, "n_blocks": len(times)}


def autocast_for(device: str, precision: str):
    if precision == "float32":
        return torch.autocast(device_type=device, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16-autocast" else torch.float16
    return torch.autocast(device_type=device, dtype=dtype)


def make_case(
    fn, z: torch.Tensor, device: str, precision: str, pass_: str
) -> Callable[[], object]:
    if pass_ == "fwd":

        def run():
            with autocast_for(device, precision):
                return fn(z)

    else:

        def run():
            with autocast_for(device, precision):
                out = fn(z)
            return torch.autograd.grad(out, z)

    return run


TIMERS = {"wall": time.perf_counter, "cpu": time.thread_time}
CLOCK_NAMES = {"wall": "wall (time.perf_counter)", "cpu": "thread CPU time (time.thread_time)"}


def time_interleaved(
    cases: dict[str, Callable[[], object]],
    rounds: int,
    min_run_time: float,
    threads: int,
    clock: str = "wall",
) -> dict[str, dict[str, float]]:
    pooled: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(rounds):
        names = list(cases) if r % 2 == 0 else list(reversed(cases))
        for name in names:
            timer = Timer(
                "run()", globals={"run": cases[name]}, num_threads=threads, timer=TIMERS[clock]
            )
            pooled[name].extend(timer.blocked_autorange(min_run_time=min_run_time).times)
    return {name: summarize(times) for name, times in pooled.items()}


def default_precisions(device: str) -> list[str]:
    if device == "cpu":
        return ["float32", "bf16-autocast"]
    return ["float32", "fp16-autocast"]


def bench_device(
    device: str,
    grid: Sequence[tuple[int, int]],
    rounds: int,
    min_run_time: float,
    threads: int,
    clock: str = "wall",
    log=print,
    precisions: Sequence[str] | None = None,
    fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Time every implementation on every grid point; check them against the float64 reference.
    Every row names the configuration (``threads``, ``clock``) it was timed in."""
    fns = RATE_FNS if fns is None else fns
    results, accuracy = [], []
    tag = {"threads": threads, "clock": clock}
    for m, d in grid:
        gen = torch.Generator().manual_seed(1000 * m + d)
        z = torch.randn(m, d, generator=gen).to(device).requires_grad_(True)
        ref_v, ref_g = reference_rate_and_grad(z)
        for precision in precisions or default_precisions(device):
            for name, fn in fns.items():
                row = dict(tag, device=device, precision=precision, m=m, d=d, impl=name)
                try:
                    with autocast_for(device, precision):
                        value = fn(z)
                    (grad,) = torch.autograd.grad(value, z)
                    row.update(
                        value_rel_err=rel_err(value, ref_v), grad_rel_err=rel_err(grad, ref_g)
                    )
                except Exception as exc:  # a baseline that cannot run in this precision
                    row.update(error=f"{type(exc).__name__}: {exc}")
                accuracy.append(row)
            runnable = {
                a["impl"]
                for a in accuracy[-len(fns) :]
                if "error" not in a and all(math.isfinite(a[k]) for k in ("value_rel_err",))
            }
            for pass_ in PASSES:
                cases = {
                    name: make_case(fn, z, device, precision, pass_)
                    for name, fn in fns.items()
                    if name in runnable
                }
                stats = time_interleaved(cases, rounds, min_run_time, threads, clock)
                base = dict(tag, device=device, precision=precision, m=m, d=d)
                base["pass"] = pass_
                ours = stats.get("ours")
                for name, s in stats.items():
                    row = dict(base, impl=name, **s)
                    if ours is not None:
                        row["ratio_vs_ours"] = s["median_s"] / ours["median_s"]
                    results.append(row)
                log(
                    f"  [{threads} thr, {clock}] {device} {precision:13s} {m:5d}x{d:<5d} "
                    f"{pass_:7s} "
                    + "  ".join(
                        f"{n}={s['median_s'] * 1e3:.3f}ms" for n, s in stats.items()
                    )
                )
    return results, accuracy


def bench_ops(
    shapes: Sequence[tuple[int, int]], rounds: int, min_run_time: float, threads: int, clock: str,
    log=print,
) -> list[dict]:
    """Median time of each op of :func:`op_cases` (CPU, float32) at each shape."""
    out = []
    for n, k in shapes:
        gen = torch.Generator().manual_seed(n + k)
        x = F.normalize(torch.randn(n, k, generator=gen), dim=-1)
        stats = time_interleaved(op_cases(x), rounds, min_run_time, threads, clock)
        for op, st in stats.items():
            out.append(dict(threads=threads, clock=clock, m=n, d=k, op=op, **st))
        log(
            f"  [{threads} thr, {clock}] ops {n}x{k}: "
            + "  ".join(f"{op}={st['median_s'] * 1e3:.3f}ms" for op, st in stats.items())
        )
    return out


#: MCR²'s class terms at 180×512 (SOP-sized label space: 11,318 training classes) and a label
#: space of 10⁷, against ``num_classes=None``.
CLASS_CASES = ((180, 512, None), (180, 512, 11318), (180, 512, 10**7))


def bench_classes(
    cases: Sequence[tuple[int, int, int | None]],
    rounds: int,
    min_run_time: float,
    threads: int,
    clock: str,
    log=print,
) -> list[dict]:
    """``MCR2Loss(num_classes=C)`` forward + backward at m×d with 2 samples per class drawn from
    [0, C): only the classes present may cost anything, so every C should cost about what
    ``num_classes=None`` does."""
    from pml_anticollapse import MCR2Loss

    out = []
    for m, d, num_classes in cases:
        gen = torch.Generator().manual_seed(m + d)
        z = torch.randn(m, d, generator=gen).requires_grad_(True)
        space = num_classes if num_classes is not None else m // 2
        picks = torch.randperm(space, generator=gen)[: m // 2] if space < 2**24 else (
            torch.randint(0, space, (m // 2,), generator=gen)
        )
        labels = picks.repeat_interleave(2)
        loss_fn = MCR2Loss(num_classes=num_classes)

        def run(loss_fn=loss_fn, z=z, labels=labels):
            return torch.autograd.grad(loss_fn(z, labels), z)

        (st,) = time_interleaved({"run": run}, rounds, min_run_time, threads, clock).values()
        out.append(dict(threads=threads, clock=clock, m=m, d=d, num_classes=num_classes, **st))
    base = {(r["m"], r["d"]): r["median_s"] for r in out if r["num_classes"] is None}
    for r in out:
        if (r["m"], r["d"]) in base:
            r["ratio_vs_none"] = r["median_s"] / base[(r["m"], r["d"])]
        log(
            f"  [{threads} thr, {clock}] MCR2Loss {r['m']}x{r['d']} num_classes="
            f"{r['num_classes']}: {r['median_s'] * 1e3:.3f}ms"
        )
    return out
