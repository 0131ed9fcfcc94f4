"""Speed of the coding rate against the formulas the anchor code uses, and its training overhead.

Run from the repository root::

    python -m benchmarks.speed                       # full grid, CPU (and CUDA when present)
    python -m benchmarks.speed --threads 1 --timer cpu  # CPU only, robust on a shared machine
    python -m benchmarks.speed --smoke --out /tmp/s  # a few seconds; what CI runs
    python -m benchmarks.speed --threads 1,2 --timer cpu,wall  # both configurations, one run
    python -m benchmarks.speed --ops-only --threads 1 --timer cpu  # the op-level table only
    python -m benchmarks.speed --compare A/speed.json B/speed.json  # two machines side by side
    python -m benchmarks.speed --accuracy-sweep      # float32 against float64, spread → collapsed

Three implementations of the same quantity, R(Z) = ½·logdet(I + d/(m·ε²)·ZZᵀ) of the
L2-normalised rows of an (m, d) batch (ε² = 0.5), timed in the same run:

- ``ours``: :func:`pml_anticollapse.functional.coding_rate` (Cholesky of the smaller Gram matrix,
  hand-written backward pass);
- ``naive``: ½·``torch.logdet`` of the d×d matrix I_d + a·ZᵀZ through autograd, the formula as
  the MCR² reference code, the official ACL code and lightly's ``tcr_loss`` write it;
- ``cholesky_autograd``: ½·logdet from ``torch.linalg.cholesky`` of the smaller Gram matrix, with
  autograd differentiating through the factorisation.

Method (``../shared/STYLE.md``, "Benchmarks are a small product"): each case is timed with
``torch.utils.benchmark.Timer.blocked_autorange`` (CUDA synchronised by the timer), in
``--rounds`` rounds that interleave the three implementations so that a change in machine load
hits them alike; the per-block times of all rounds are pooled into a median and an IQR. On a
shared machine, ``--threads 1 --timer cpu`` times with the thread's CPU clock
(``time.thread_time``) instead of the wall clock: with one intra-op thread all the work runs on
the calling thread, so other processes competing for the cores no longer inflate the figures
(with several threads, OpenMP barriers turn contention into wall time, mostly in the large
LAPACK calls of the naive baseline, which flatters the ratios). Passes:
``fwd`` (the graph is recorded, as in training) and ``fwd+bwd`` (``torch.autograd.grad``).
Precisions: float32, and bf16 autocast on CPU / fp16 autocast on CUDA (the input stays float32;
``ours`` switches autocast off for its linear algebra, the baselines run as written, so their Gram
product is computed in half precision). Before timing, every case is checked against a float64
eigenvalue reference (value and gradient, relative, norm-wise).

Training-step overhead: one optimisation step (forward, PML ``ContrastiveLoss``, backward, Adam)
of the same model on the same batch without and with ``CodingRateRegularizer`` as the loss's
``embedding_regularizer``, steps interleaved (rotating which goes first), ratio of the medians.
A third arm runs the same step with a PML regularizer that computes nothing, to separate PML's
own per-regularizer cost (module calls, reducer, an extra sub-loss) from the term's.
The digits MLP always; a ResNet-18-shaped network on random 3×224×224 input, batch 64, when
CUDA is present (on the CPU only if asked, at a reduced size: ``--resnet-cpu-size 32``).

Op level (``OPS_SHAPES``): the m > d backward's linear algebra op by op — ``cholesky_solve``
against the n right-hand sides of X against the explicit k×k inverse + one GEMM — so that a
machine's table shows whether its LAPACK's triangular solves are slow (MKL on AMD EPYC: 4–10×
a GEMM of the same size). Absent classes: ``MCR2Loss`` forward + backward at 180×512 with
``num_classes`` None, 11318 (SOP-sized) and 10⁷.

Configurations: ``--threads 1,2 --timer cpu,wall`` measures every section once per (threads,
clock) pair in the same run; every row names its configuration. The metadata records the CPU
model and vendor, the BLAS/LAPACK torch runs on (``torch.__config__``) and the configurations.

Outputs in ``--out``: ``speed.json`` (``{"metadata": ..., "results": [...], "accuracy": [...],
"training": [...], "ops": [...], "classes": [...], "targets": ...}``, rewritten after each
configuration), ``speed.md`` (the tables) and ``speed_ratios.png``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

import pml_anticollapse
from pml_anticollapse.functional import coding_rate
from pml_anticollapse.functional.coding_rate import _cholesky_ex, factor_order

from .._shared import cpu_model, git_commit, non_negative_int, positive_float, positive_int

EPS_SQ = 0.5
#: The grid of the issue (m samples × d dimensions).
GRID = ((90, 512), (128, 512), (512, 512), (180, 2048), (1024, 64), (4096, 128), (8192, 512))
#: Extra CUDA point: the issue's latency target (fwd+bwd ≤ 0.2 ms in float32) is stated at 180×512.
CUDA_EXTRA = ((180, 512),)
SMOKE_GRID = ((24, 128), (160, 16))
IMPLS = ("ours", "naive", "cholesky_autograd")
PASSES = ("fwd", "fwd+bwd")
#: Relative agreement with the float64 reference asked of float32 (value, and gradient norm-wise).
ACCURACY_RTOL = 1e-5


# ----------------------------------------------------------------------------- implementations


def _scale(m: int, d: int, eps_sq: float = EPS_SQ) -> float:
    return d / (m * eps_sq)


def rate_ours(z: torch.Tensor) -> torch.Tensor:
    """The package: Cholesky of the smaller Gram matrix, hand-written backward."""
    return coding_rate(z, eps_sq=EPS_SQ)


def rate_naive(z: torch.Tensor, eps_sq: float = EPS_SQ) -> torch.Tensor:
    """½·logdet(I_d + a·ZᵀZ) of the d×d matrix through autograd (the anchor codes' formula)."""
    x = F.normalize(z, dim=-1)
    m, d = x.shape
    eye = torch.eye(d, dtype=z.dtype, device=z.device)
    return 0.5 * torch.logdet(eye + _scale(m, d, eps_sq) * (x.T @ x))


def rate_cholesky_autograd(z: torch.Tensor) -> torch.Tensor:
    """Σ log diag(L), L = cholesky(I + a·Gram) of the smaller Gram, differentiated by autograd."""
    x = F.normalize(z, dim=-1)
    m, d = x.shape
    gram = x @ x.T if m <= d else x.T @ x
    eye = torch.eye(gram.shape[0], dtype=z.dtype, device=z.device)
    factor = torch.linalg.cholesky(eye + _scale(m, d) * gram)
    return factor.diagonal().log().sum()


RATE_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "ours": rate_ours,
    "naive": rate_naive,
    "cholesky_autograd": rate_cholesky_autograd,
}


def rate_ours_float64(z: torch.Tensor) -> torch.Tensor:
    """The package with ``compute_dtype=torch.float64``: float32 in and out, float64 inside."""
    return coding_rate(z, eps_sq=EPS_SQ, compute_dtype=torch.float64)


#: ``--with-float64``: also time the package's float64 arithmetic (its cost over ``ours``).
FLOAT64_FNS = {**RATE_FNS, "ours_float64": rate_ours_float64}


def reference_rate_and_grad(
    z: torch.Tensor, eps_sq: float = EPS_SQ
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 reference: ½·Σ log(1 + a·λ), λ the eigenvalues of the smaller Gram matrix of the
    normalised rows (``eigvalsh``, a different algorithm from all three timed ones), and its
    gradient by float64 autograd through ``eigvalsh``. ``z`` is used as given (already rounded)."""
    x = z.detach().cpu().to(torch.float64).requires_grad_(True)
    xn = x / x.norm(dim=1, keepdim=True)
    m, d = x.shape
    gram = xn @ xn.T if m <= d else xn.T @ xn
    lam = torch.linalg.eigvalsh(gram).clamp_min(0)
    value = 0.5 * torch.log1p(_scale(m, d, eps_sq) * lam).sum()
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


# ----------------------------------------------------------------------------- timing helpers


def summarize(times: Sequence[float]) -> dict[str, float]:
    """Median and interquartile range (linear-interpolated quartiles) of ``times``, in seconds."""
    if len(times) == 0:
        raise ValueError("times must not be empty")
    if len(times) == 1:
        q1 = q2 = q3 = times[0]
    else:
        q1, q2, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return {"median_s": q2, "iqr_s": q3 - q1, "n_blocks": len(times)}


def _autocast(device: str, precision: str):
    if precision == "float32":
        return torch.autocast(device_type=device, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16-autocast" else torch.float16
    return torch.autocast(device_type=device, dtype=dtype)


def _make_case(
    fn, z: torch.Tensor, device: str, precision: str, pass_: str
) -> Callable[[], object]:
    if pass_ == "fwd":

        def run():
            with _autocast(device, precision):
                return fn(z)

    else:

        def run():
            with _autocast(device, precision):
                out = fn(z)
            return torch.autograd.grad(out, z)

    return run


TIMERS = {"wall": time.perf_counter, "cpu": time.thread_time}
CLOCK_NAMES = {"wall": "wall (time.perf_counter)", "cpu": "thread CPU time (time.thread_time)"}


def _time_interleaved(
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


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.detach().cpu().to(torch.float64)
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _precisions(device: str) -> list[str]:
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
        for precision in precisions or _precisions(device):
            for name, fn in fns.items():
                row = dict(tag, device=device, precision=precision, m=m, d=d, impl=name)
                try:
                    with _autocast(device, precision):
                        value = fn(z)
                    (grad,) = torch.autograd.grad(value, z)
                    row.update(value_rel_err=_rel(value, ref_v), grad_rel_err=_rel(grad, ref_g))
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
                    name: _make_case(fn, z, device, precision, pass_)
                    for name, fn in fns.items()
                    if name in runnable
                }
                stats = _time_interleaved(cases, rounds, min_run_time, threads, clock)
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


# ----------------------------------------------------------------------------- op level

#: Shapes of the op-level table (``../shared/REFERENCE.md`` §8): m > d, the Gram matrix k×k.
OPS_SHAPES = ((4096, 128), (1024, 64), (8192, 512))


def op_cases(x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The linear algebra of the m > d backward pass, op by op, on (n, k) rows ``x``: the two
    ways to apply (I + a·XᵀX)⁻¹ to the n rows — ``cholesky_solve`` against n right-hand sides
    (the earlier path) or the explicit k×k inverse and one GEMM (the path used now) — next to
    the Gram GEMM and the factorisation, and the naive formula's LU inverse + GEMM."""
    n, k = x.shape
    mat = x.mT @ x
    mat.mul_(k / (n * EPS_SQ)).diagonal().add_(1.0)
    factor = torch.linalg.cholesky(mat)
    order = factor_order(k, x.device)
    xt = x.mT
    return {
        "gram x.mT @ x": lambda: x.mT @ x,
        "cholesky_ex(M)": lambda: torch.linalg.cholesky_ex(mat),
        # what ours runs: k = 105..128 at order 136, multiples of 256 at k + 8 (factor_order)
        "cholesky_ex(M) padded as ours": lambda: _cholesky_ex(mat, order),
        "cholesky_solve(x.mT, L)": lambda: torch.cholesky_solve(xt, factor),
        "solve_triangular(L, x.mT)": lambda: torch.linalg.solve_triangular(
            factor, xt, upper=False
        ),
        "cholesky_inverse(L)": lambda: torch.cholesky_inverse(factor),
        "x @ cholesky_inverse(L)": lambda: x @ torch.cholesky_inverse(factor),
        "x @ inv(M)": lambda: x @ torch.linalg.inv(mat),
    }


def bench_ops(
    shapes: Sequence[tuple[int, int]], rounds: int, min_run_time: float, threads: int, clock: str,
    log=print,
) -> list[dict]:
    """Median time of each op of :func:`op_cases` (CPU, float32) at each shape."""
    out = []
    for n, k in shapes:
        gen = torch.Generator().manual_seed(n + k)
        x = F.normalize(torch.randn(n, k, generator=gen), dim=-1)
        stats = _time_interleaved(op_cases(x), rounds, min_run_time, threads, clock)
        for op, st in stats.items():
            out.append(dict(threads=threads, clock=clock, m=n, d=k, op=op, **st))
        log(
            f"  [{threads} thr, {clock}] ops {n}x{k}: "
            + "  ".join(f"{op}={st['median_s'] * 1e3:.3f}ms" for op, st in stats.items())
        )
    return out


# ----------------------------------------------------------------------------- absent classes

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

        (st,) = _time_interleaved({"run": run}, rounds, min_run_time, threads, clock).values()
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


# ----------------------------------------------------------------------------- training overhead


class _BasicBlock(torch.nn.Module):
    """The two-convolution residual block of ResNet-18 (He et al., arXiv 1512.03385, 2015)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(c_out)
        self.conv2 = torch.nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(c_out)
        self.short = torch.nn.Identity()
        if stride != 1 or c_in != c_out:
            self.short = torch.nn.Sequential(
                torch.nn.Conv2d(c_in, c_out, 1, stride, bias=False), torch.nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.short(x))


class ResNet18Like(torch.nn.Sequential):
    """A ResNet-18-shaped embedder (11.2 M parameters, 512-d output): stem, 4 stages of 2 basic
    blocks (64, 128, 256, 512 channels), global average pooling. Written here because
    torchvision is not a dependency; only its cost matters for the overhead measurement."""

    def __init__(self):
        layers = [
            torch.nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            torch.nn.BatchNorm2d(64),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(3, 2, 1),
        ]
        c = 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_BasicBlock(c, c_out, stride), _BasicBlock(c_out, c_out, 1)]
            c = c_out
        layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()]
        super().__init__(*layers)


#: The arms of the training-step measurement: no regularizer; a PML regularizer that computes
#: nothing (PML's own per-regularizer cost: module calls, reducer, loss-dict entry, the weight
#: product and the stacking of sub-losses, forward and backward); ``CodingRateRegularizer``.
ARMS = ("without", "plumbing", "with")


def _plumbing_only_regularizer():
    """A PML regularizer whose loss is 0·x[0, 0]: what any regularizer costs before it computes."""
    from pytorch_metric_learning.regularizers import BaseRegularizer

    class PlumbingOnly(BaseRegularizer):
        def compute_loss(self, x):
            loss = x[0, 0] * 0.0
            return {"loss": {"losses": loss, "indices": None, "reduction_type": "already_reduced"}}

    return PlumbingOnly()


def _training_setup(model_fn, x, labels, arm: str, seed: int):
    from pytorch_metric_learning import losses

    from pml_anticollapse import CodingRateRegularizer

    torch.manual_seed(seed)
    model = model_fn().to(x.device)
    kwargs = {}
    if arm != "without":
        reg = CodingRateRegularizer() if arm == "with" else _plumbing_only_regularizer()
        kwargs = {"embedding_regularizer": reg, "embedding_reg_weight": 0.1}
    loss_fn = losses.ContrastiveLoss(**kwargs)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), labels)
        loss.backward()
        opt.step()
        return loss

    return step


def training_overhead(
    name: str,
    model_fn,
    x: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    warmup: int,
    clock: str = "wall",
) -> dict:
    """Median step time of each arm of ``ARMS``, steps interleaved (same run, the order rotated
    every step so that no arm always runs first)."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    now = TIMERS[clock]
    steps_fn = {arm: _training_setup(model_fn, x, labels, arm, seed=0) for arm in ARMS}
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for i in range(warmup + steps):
        shift = i % len(ARMS)
        for arm in ARMS[shift:] + ARMS[:shift]:
            sync()
            t0 = now()
            steps_fn[arm]()
            sync()
            if i >= warmup:
                times[arm].append(now() - t0)
    stats = {arm: summarize(times[arm]) for arm in ARMS}
    paired = [b / a for a, b in zip(times["without"], times["with"])]
    return {
        "model": name,
        "device": x.device.type,
        "batch": int(x.shape[0]),
        "input": list(x.shape[1:]),
        "loss": "ContrastiveLoss",
        "regularizer": "CodingRateRegularizer(eps_sq=0.5), embedding_reg_weight=0.1",
        "steps": steps,
        "clock": clock,
        "without_median_s": stats["without"]["median_s"],
        "without_iqr_s": stats["without"]["iqr_s"],
        "plumbing_median_s": stats["plumbing"]["median_s"],
        "plumbing_iqr_s": stats["plumbing"]["iqr_s"],
        "with_median_s": stats["with"]["median_s"],
        "with_iqr_s": stats["with"]["iqr_s"],
        "ratio": stats["with"]["median_s"] / stats["without"]["median_s"],
        "paired_ratio_median": statistics.median(paired),
        # how much of the overhead any PML regularizer costs, and what the term adds on top
        "plumbing_ratio": stats["plumbing"]["median_s"] / stats["without"]["median_s"],
        "term_over_plumbing_ratio": stats["with"]["median_s"] / stats["plumbing"]["median_s"],
    }


def DigitsMLP(in_dim: int = 64, hidden: int = 256, embedding_size: int = 64) -> torch.nn.Module:
    """The plain digits MLP of the harness (``digits_mlp``: 64 → 256 → 256 → 64), rebuilt here so
    that the speed benchmark imports nothing from the harness."""
    return torch.nn.Sequential(
        torch.nn.Linear(in_dim, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, embedding_size),
    )


class GlyphCNNLike(torch.nn.Module):
    """The glyph benchmark's default network (``glyph_cnn_small``: conv-BN-ReLU stages of 16, 32,
    64 channels with 2×2 max pools, avg+max pooling, linear to 64-d), rebuilt here so that the
    speed benchmark imports nothing from the harness."""

    def __init__(self, width: int = 16, embedding_size: int = 64):
        super().__init__()

        def block(c_in: int, c_out: int) -> torch.nn.Sequential:
            return torch.nn.Sequential(
                torch.nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                torch.nn.BatchNorm2d(c_out),
                torch.nn.ReLU(inplace=True),
            )

        self.features = torch.nn.Sequential(
            block(3, width), torch.nn.MaxPool2d(2),
            block(width, 2 * width), torch.nn.MaxPool2d(2),
            block(2 * width, 4 * width),
        )
        self.embed = torch.nn.Linear(4 * width, embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return self.embed(f.mean(dim=(-2, -1)) + f.amax(dim=(-2, -1)))


def bench_training(
    device: str, smoke: bool, resnet_cpu_size: int = 0, clock: str = "wall", log=print
) -> list[dict]:
    """The digits MLP and the glyph benchmark's CNN on ``device``; the ResNet-18-shaped network on
    CUDA at 224×224, or on the CPU at ``resnet_cpu_size``² when that is > 0 (a 224² step takes
    seconds on a laptop CPU)."""
    out = []
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(128, 64, generator=gen).to(device)
    labels = torch.randint(0, 10, (128,), generator=gen).to(device)
    steps, warmup = (20, 3) if smoke else (400, 20)
    row = training_overhead(
        "DigitsMLP (64-256-256-64)", DigitsMLP, x, labels, steps, warmup, clock
    )
    log(f"  training {device} DigitsMLP: overhead ratio {row['ratio']:.3f}")
    out.append(row)
    # the glyph benchmark's step: 64 glyphs of 3x32x32 (16 classes x 4, as MPerClassSampler draws)
    x = torch.randn(64, 3, 32, 32, generator=gen).to(device)
    labels = (torch.arange(64) % 16).to(device)
    steps, warmup = (5, 2) if smoke else (100, 10)
    row = training_overhead(
        "GlyphCNNLike (16-32-64, 64-d)", GlyphCNNLike, x, labels, steps, warmup, clock
    )
    log(f"  training {device} GlyphCNNLike: overhead ratio {row['ratio']:.3f}")
    out.append(row)
    size = 224 if device == "cuda" else resnet_cpu_size
    if size > 0:
        x = torch.randn(64, 3, size, size, generator=gen).to(device)
        labels = torch.randint(0, 16, (64,), generator=gen).to(device)
        if device == "cuda":
            steps, warmup = (5, 2) if smoke else (60, 10)
        else:
            steps, warmup = (2, 1) if smoke else (10, 2)
        row = training_overhead(
            "ResNet18Like (512-d)", ResNet18Like, x, labels, steps, warmup, clock
        )
        log(f"  training {device} ResNet18Like {size}px: overhead ratio {row['ratio']:.3f}")
        out.append(row)
    else:
        out.append(
            {
                "model": "ResNet18Like (512-d)",
                "device": device,
                "skipped": "run on CUDA (3x224x224, batch 64), or on CPU with --resnet-cpu-size",
            }
        )
    return out


# ----------------------------------------------------------------------------- reporting


def cpu_vendor() -> str:
    """The CPU vendor as ``/proc/cpuinfo`` names it (GenuineIntel, AuthenticAMD, …), else
    ``platform.machine()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("vendor_id", "CPU implementer")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


#: The instruction-set flags that change which GEMM kernels run (bf16 autocast: AMX / AVX512-BF16)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_features() -> dict:
    """CPU family / model numbers and which of ``CPU_FLAGS`` the CPU has (``/proc/cpuinfo``;
    empty elsewhere): two CPUs with the same model name can differ here (a cloud VM's "Intel
    Xeon Processor" may be a Cascade Lake or an Emerald Rapids with AMX)."""
    info: dict = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("cpu family", "model", "stepping") and key not in info:
                    info[key] = value.strip()
                elif key == "flags":
                    flags = set(value.split())
                    info["flags"] = [f for f in CPU_FLAGS if f in flags]
                    break
    except OSError:
        pass
    return info


def linalg_backend() -> dict:
    """The BLAS/LAPACK torch was built with and runs on (from ``torch.__config__``): what decides
    the speed of the GEMMs, factorisations and triangular solves timed here."""
    show = torch.__config__.show()

    def setting(key: str) -> str | None:
        m = re.search(rf"\b{key}=([^,\s]+)", show)
        return m.group(1) if m else None

    mkl = re.search(r"Math Kernel Library Version ([^\n]+)", show)
    par = re.search(r"ATen parallel backend: ([^\n]+)", torch.__config__.parallel_info())
    return {
        "blas": setting("BLAS_INFO"),
        "lapack": setting("LAPACK_INFO"),
        "mkl_available": torch.backends.mkl.is_available(),
        "mkl_version": mkl.group(1).strip() if mkl else None,
        "openmp": torch.backends.openmp.is_available(),
        "parallel_backend": par.group(1).strip() if par else None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def metadata(
    devices: Sequence[str], configs: Sequence[tuple[int, str]], argv: Sequence[str]
) -> dict:
    import pytorch_metric_learning

    names = {"cpu": f"{cpu_model()} ({os.cpu_count()} logical CPUs)"}
    if "cuda" in devices:
        names["cuda"] = torch.cuda.get_device_name()
    return {
        "commit": git_commit(short=True) or "unknown",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.speed " + " ".join(argv),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "pml_anticollapse": pml_anticollapse.__version__,
            "pytorch_metric_learning": pytorch_metric_learning.__version__,
        },
        "device": names,
        "cpu_model": cpu_model(),
        "cpu_vendor": cpu_vendor(),
        "cpu_features": cpu_features(),
        "logical_cpus": os.cpu_count(),
        "linalg_backend": linalg_backend(),
        # one entry per measured configuration: intra-op threads and the clock
        "configs": [{"threads": t, "clock": c} for t, c in configs],
        "threads": [t for t, _ in configs],
        "clock": [CLOCK_NAMES[c] for _, c in configs],
        "platform": platform.platform(),
        "eps_sq": EPS_SQ,
    }


def check_targets(results: list[dict], accuracy: list[dict], training: list[dict]) -> dict:
    """The issue's targets, evaluated on this run (CPU, float32, fwd+bwd for the ratios)."""
    rows = [
        r
        for r in results
        if r["device"] == "cpu"
        and r["precision"] == "float32"
        and r["pass"] == "fwd+bwd"
        and r["impl"] == "naive"
    ]
    wide = [r for r in rows if 4 * r["m"] <= r["d"]]
    acc = [a for a in accuracy if a["impl"] == "ours" and a["precision"] == "float32"]
    trained = [t for t in training if "ratio" in t]
    return {
        "naive_over_ours_ge_5_where_m_le_d_over_4": (
            all(r["ratio_vs_ours"] >= 5 for r in wide) if wide else None
        ),
        "naive_over_ours_ge_1_everywhere": (
            all(r["ratio_vs_ours"] >= 1 for r in rows) if rows else None
        ),
        "float32_matches_float64_reference": all(
            a.get("value_rel_err", 1.0) <= ACCURACY_RTOL
            and a.get("grad_rel_err", 1.0) <= ACCURACY_RTOL
            for a in acc
        ),
        "training_overhead_le_5pct": all(t["ratio"] <= 1.05 for t in trained) if trained else None,
    }


def check_class_target(classes: list[dict]) -> bool | None:
    """``MCR2Loss(num_classes=C)`` within 2× of ``num_classes=None`` at the same size."""
    rows = [c for c in classes if c["num_classes"] is not None and "ratio_vs_none" in c]
    return all(c["ratio_vs_none"] <= 2.0 for c in rows) if rows else None


def _config(row: dict, md: dict | None = None) -> str:
    """'1 thr, cpu': the configuration a row was timed in (older files: the run's only one)."""
    if "threads" in row:
        return f"{row['threads']} thr, {row['clock']}"
    clock = "cpu" if "thread" in str(md.get("clock", "")) else "wall"
    return f"{md.get('threads')} thr, {clock}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def markdown(report: dict) -> str:
    md = report["metadata"]
    lines = [
        "# Coding-rate speed",
        "",
        f"Command: `{md['command']}`  ",
        f"Date: {md['date']}, commit `{md['commit']}`, torch {md['versions']['torch']}; "
        "configurations (intra-op threads, clock): "
        + "; ".join(f"{c['threads']} thr, {c['clock']}" for c in md["configs"])
        + " (cpu: thread CPU time, wall: wall clock)  ",
        "Hardware: " + "; ".join(f"{k}: {v}" for k, v in md["device"].items())
        + f"; vendor {md['cpu_vendor']}; BLAS {md['linalg_backend']['blas']}, LAPACK "
        f"{md['linalg_backend']['lapack']} (MKL {md['linalg_backend']['mkl_version']}); "
        f"CPU features {md['cpu_features']}  ",
        f"Load average (1 min) before/after: {md.get('loadavg_before')} / "
        f"{md.get('loadavg_after')}",
        "",
        "Median (IQR) in ms; ratio = baseline median / ours median (higher: ours faster).",
        "",
        "| config | device | precision | m×d | pass | ours | naive logdet | naive/ours "
        "| cholesky autograd | chol/ours |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_key: dict[tuple, dict[str, dict]] = {}
    for r in report["results"]:
        key = (_config(r, md), r["device"], r["precision"], r["m"], r["d"], r["pass"])
        by_key.setdefault(key, {})[r["impl"]] = r
    for (cfg, dev, prec, m, d, pass_), impls in by_key.items():
        cells = []
        for name in IMPLS:
            r = impls.get(name)
            if r is None:
                cells.append("n/a")
                if name != "ours":
                    cells.append("n/a")
                continue
            cells.append(f"{_ms(r['median_s'])} ({_ms(r['iqr_s'])})")
            if name != "ours":
                cells.append(f"{r['ratio_vs_ours']:.2f}" if "ratio_vs_ours" in r else "n/a")
        lines.append(
            f"| {cfg} | {dev} | {prec} | {m}×{d} | {pass_} | " + " | ".join(cells) + " |"
        )
    f64 = [(k, v) for k, v in by_key.items() if "ours_float64" in v and "ratio_vs_ours" in (
        v["ours_float64"])]
    if f64:
        lines += [
            "",
            "Ours with `compute_dtype=torch.float64` (`--with-float64`): its time, its cost over "
            "float32 ours, and naive / it:",
            "",
            "| config | device | precision | m×d | pass | ours float64 | / ours | naive / it |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for (cfg, dev, prec, m, d, pass_), impls in f64:
            r64 = impls["ours_float64"]
            naive = impls.get("naive")
            vs_naive = f"{naive['median_s'] / r64['median_s']:.2f}" if naive else "n/a"
            lines.append(
                f"| {cfg} | {dev} | {prec} | {m}×{d} | {pass_} | {_ms(r64['median_s'])} | "
                f"{r64['ratio_vs_ours']:.2f} | {vs_naive} |"
            )
    lines += [
        "",
        "Accuracy against the float64 eigenvalue reference (relative; gradient norm-wise):",
        "",
        "| device | precision | m×d | impl | value rel. err | grad rel. err |",
        "|---|---|---|---|---|---|",
    ]
    for a in report["accuracy"]:
        if "error" in a:
            errs = f"{a['error'][:60]} | "
        else:
            errs = f"{a['value_rel_err']:.1e} | {a['grad_rel_err']:.1e}"
        lines.append(
            f"| {a['device']} | {a['precision']} | {a['m']}×{a['d']} | {a['impl']} | {errs} |"
        )
    if report.get("ops"):
        ops = list(dict.fromkeys(o["op"] for o in report["ops"]))
        cfg_shapes = list(dict.fromkeys((_config(o), o["m"], o["d"]) for o in report["ops"]))
        med = {(_config(o), o["m"], o["d"], o["op"]): o["median_s"] for o in report["ops"]}
        lines += [
            "",
            "Op level (CPU, float32, median ms): the m > d backward's linear algebra, "
            "k = d, M = I + a·xᵀx (k×k), L its Cholesky factor:",
            "",
            "| op | " + " | ".join(f"{m}×{d} ({c})" for c, m, d in cfg_shapes) + " |",
            "|---|" + "---:|" * len(cfg_shapes),
        ]
        for op in ops:
            cells = [_ms(med[(c, m, d, op)]) for c, m, d in cfg_shapes]
            lines.append(f"| `{op}` | " + " | ".join(cells) + " |")
    if report.get("classes"):
        lines += [
            "",
            "MCR2Loss forward + backward, 2 samples per class (absent classes must cost nothing):",
            "",
            "| config | m×d | num_classes | median ms (IQR) | ratio vs num_classes=None |",
            "|---|---|---|---|---|",
        ]
        for c in report["classes"]:
            ratio = f"{c['ratio_vs_none']:.2f}" if "ratio_vs_none" in c else "n/a"
            lines.append(
                f"| {_config(c)} | {c['m']}×{c['d']} | {c['num_classes']} "
                f"| {_ms(c['median_s'])} ({_ms(c['iqr_s'])}) | {ratio} |"
            )
    lines += [
        "",
        "Training step (forward, ContrastiveLoss, backward, Adam), median of interleaved steps:",
        "",
        "| model | device | batch × input | without (ms) | PML plumbing only (ms) "
        "| with regularizer (ms) | ratio with/without | paired ratio | plumbing/without "
        "| with/plumbing |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in report["training"]:
        if "skipped" in t:
            lines.append(
                f"| {t['model']} [{_config(t, md)}] | {t['device']} | "
                f"| skipped: {t['skipped']} | | | | | | |"
            )
        else:
            lines.append(
                f"| {t['model']} [{_config(t, md)}] | {t['device']} "
                f"| {t['batch']}×{'×'.join(map(str, t['input']))} "
                f"| {_ms(t['without_median_s'])} | {_ms(t['plumbing_median_s'])} "
                f"| {_ms(t['with_median_s'])} | {t['ratio']:.3f} | {t['paired_ratio_median']:.3f} "
                f"| {t['plumbing_ratio']:.3f} | {t['term_over_plumbing_ratio']:.3f} |"
            )
    lines += [
        "",
        "PML plumbing only: the same loss with a PML regularizer that computes nothing "
        "(0·x[0, 0]), i.e. what PML charges for any `embedding_regularizer` before it computes.",
    ]
    targets = {k: v for k, v in report["targets"].items() if k != "by_config"}
    lines += ["", "Targets (all configurations): "
              + ", ".join(f"{k}: {v}" for k, v in targets.items())]
    for cfg, t in report["targets"].get("by_config", {}).items():
        lines.append(f"- {cfg}: " + ", ".join(f"{k}: {v}" for k, v in t.items()))
    lines.append("")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> bool:
    """Bar chart of naive/ours and cholesky-autograd/ours (fwd+bwd) per grid point; False if
    matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    md = report["metadata"]
    panels = sorted(
        {
            (_config(r, md), r["device"], r["precision"])
            for r in report["results"]
            if r["pass"] == "fwd+bwd"
        },
        key=lambda p: (p[0], p[1], p[2] != "float32", p[2]),  # float32 first on each device
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (cfg, dev, prec) in zip(axes[0], panels):
        rows = [
            r
            for r in report["results"]
            if (_config(r, md), r["device"], r["precision"]) == (cfg, dev, prec)
            and r["pass"] == "fwd+bwd"
        ]
        points = sorted({(r["m"], r["d"]) for r in rows}, key=lambda p: (p[1] / p[0]), reverse=True)
        labels = [f"{m}×{d}" for m, d in points]
        for offset, name in ((-0.2, "naive"), (0.2, "cholesky_autograd")):
            ratio = {
                (r["m"], r["d"]): r.get("ratio_vs_ours", float("nan"))
                for r in rows
                if r["impl"] == name
            }
            ax.bar(
                [i + offset for i in range(len(points))],
                [ratio.get(p, float("nan")) for p in points],
                width=0.4,
                label=f"{name} / ours",
            )
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(5.0, color="r", lw=0.8, ls="--", label="5× (target where m ≤ d/4)")
        ax.set_yscale("log")
        ax.set_xticks(range(len(points)), labels, rotation=30)
        ax.set_ylabel("time ratio (fwd+bwd)")
        ax.set_title(f"{dev}, {prec}, {cfg}")
        ax.legend(fontsize=8)
    fig.suptitle(f"coding rate, commit {report['metadata']['commit']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- entry point


def _parse_grid(text: str) -> list[tuple[int, int]]:
    grid = []
    for item in text.split(","):
        try:
            m, d = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"--grid expects MxD[,MxD...], got {text!r}") from None
        if m < 1 or d < 1:
            raise argparse.ArgumentTypeError(f"--grid sizes must be positive, got {item!r}")
        grid.append((m, d))
    return grid


def _int_list(text: str) -> list[int]:
    """'1,2' → [1, 2], each a positive integer."""
    return [positive_int(v) for v in text.split(",")]


def _timer_list(text: str) -> list[str]:
    """'cpu,wall' → ['cpu', 'wall'], each a key of ``TIMERS``."""
    out = [v.strip() for v in text.split(",")]
    for v in out:
        if v not in TIMERS:
            raise argparse.ArgumentTypeError(
                f"expected {' or '.join(TIMERS)} (comma-separated), got {text!r}"
            )
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.speed", description=__doc__.split("\n")[0]
    )
    p.add_argument("--smoke", action="store_true", help="tiny grid, short timings (seconds)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/runs/speed"), help="folder")
    p.add_argument("--devices", default=None, help="cpu,cuda (default: cpu, + cuda if present)")
    p.add_argument("--grid", type=_parse_grid, default=None, help="e.g. 90x512,1024x64")
    p.add_argument(
        "--threads",
        type=_int_list,
        default=[torch.get_num_threads()],
        help="intra-op threads; a list (1,2) measures each in the same run, paired with --timer",
    )
    p.add_argument(
        "--rounds", type=positive_int, default=None, help="interleaved rounds (3; smoke: 1)"
    )
    p.add_argument(
        "--timer",
        type=_timer_list,
        default=["wall"],
        help="wall clock or thread CPU time (cpu, needs 1 thread); a list pairs with --threads "
        "(e.g. --threads 1,2 --timer cpu,wall)",
    )
    p.add_argument(
        "--min-run-time", type=positive_float, default=None, help="seconds per autorange (0.1)"
    )
    p.add_argument(
        "--precisions",
        default=None,
        help="comma list of float32, bf16-autocast (CPU) / fp16-autocast (CUDA); default both",
    )
    p.add_argument("--skip-training", action="store_true", help="skip the training-step overhead")
    p.add_argument("--skip-ops", action="store_true", help="skip the op-level table")
    p.add_argument("--skip-classes", action="store_true", help="skip the MCR2Loss num_classes rows")
    p.add_argument(
        "--ops-only", action="store_true", help="only the op-level table (seconds), then exit"
    )
    p.add_argument(
        "--with-float64",
        action="store_true",
        help="also time ours with compute_dtype=torch.float64 (its cost over float32 ours)",
    )
    p.add_argument(
        "--accuracy-sweep",
        action="store_true",
        help="only the float32 accuracy sweep (rows from spread to nearly collapsed, ε² from "
        "1e-4 to 10, ours and naive against float64; minutes, --smoke: seconds), then exit",
    )
    p.add_argument(
        "--resnet-cpu-size",
        type=non_negative_int,
        default=0,
        help="also time the ResNet on CPU at this size (0: not on CPU)",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("A.json", "B.json"),
        default=None,
        help="print two result files side by side (ratios per grid point) and exit",
    )
    args = p.parse_args(argv)
    if args.compare is not None:
        return args
    if len(args.timer) == 1:
        args.timer = args.timer * len(args.threads)
    elif len(args.threads) == 1:
        args.threads = args.threads * len(args.timer)
    if len(args.timer) != len(args.threads):
        p.error(f"argument --timer: expected 1 or {len(args.threads)} clocks to pair with "
                f"--threads {args.threads}, got {len(args.timer)}")
    # fail now, not after minutes of timing when the results are written
    existing = next(q for q in (args.out, *args.out.parents) if q.exists())
    if not existing.is_dir():
        if existing == args.out:
            p.error(f"argument --out: expected a directory, got {str(args.out)!r}, "
                    "which exists and is not a directory")
        p.error(f"argument --out: expected a directory, got {str(args.out)!r}, which cannot "
                f"be created: {str(existing)!r} exists and is not a directory")
    return args


def compare(path_a: Path, path_b: Path) -> str:
    """Two ``speed.json`` files side by side: per grid point (fwd+bwd), naive/ours and
    cholesky-autograd/ours of every configuration of each file, and each file's machine."""
    reports = []
    for path in (path_a, path_b):
        try:
            report = json.loads(Path(path).read_text())
            report["metadata"], report["results"]  # noqa: B018 — the two keys every file has
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"--compare: cannot read a speed result from {str(path)!r}: {exc}")
        reports.append(report)
    cols = []  # (label, {key: {impl: ratio}})
    lines = ["# Speed results side by side", ""]
    for tag, path, report in zip("AB", (path_a, path_b), reports):
        md = report["metadata"]
        lines.append(
            f"- {tag}: `{path}` — commit {md.get('commit')}, {md.get('date')}, "
            f"{md.get('device', {}).get('cpu', md.get('cpu_model'))}, vendor "
            f"{md.get('cpu_vendor', 'not recorded')}, BLAS "
            f"{(md.get('linalg_backend') or {}).get('blas', 'not recorded')}"
        )
        by_cfg: dict[str, dict] = {}
        for r in report["results"]:
            if r["pass"] != "fwd+bwd" or "ratio_vs_ours" not in r or r["impl"] == "ours":
                continue
            key = (r["device"], r["precision"], r["m"], r["d"])
            cell = by_cfg.setdefault(_config(r, md), {}).setdefault(key, {})
            cell[r["impl"]] = r["ratio_vs_ours"]
        cols += [(f"{tag} {cfg}", cells) for cfg, cells in by_cfg.items()]
    keys = list(dict.fromkeys(k for _, cells in cols for k in cells))
    lines += [
        "",
        "fwd+bwd time ratios, baseline / ours (higher: ours faster); naive · cholesky-autograd:",
        "",
        "| device | precision | m×d | " + " | ".join(label for label, _ in cols) + " |",
        "|---|---|---|" + "---|" * len(cols),
    ]

    def fmt(cell: dict | None) -> str:
        if not cell:
            return "—"
        return " · ".join(
            f"{cell[i]:.2f}" if i in cell else "—" for i in ("naive", "cholesky_autograd")
        )

    for key in keys:
        dev, prec, m, d = key
        cells = " | ".join(fmt(c.get(key)) for _, c in cols)
        lines.append(f"| {dev} | {prec} | {m}×{d} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.compare is not None:
        text = compare(*args.compare)
        print(text, end="")
        return {"compare": text}
    if args.accuracy_sweep:
        from .sweep import main as sweep_main

        torch.set_num_threads(args.threads[0])
        return sweep_main(args.out, args.smoke, args.grid, argv, GRID)
    devices = (
        [d.strip() for d in args.devices.split(",")]
        if args.devices is not None
        else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    for dev in devices:
        if dev not in ("cpu", "cuda"):
            raise SystemExit(f"--devices must list cpu and/or cuda, got {dev!r}")
        if dev == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--devices asks for cuda but no CUDA device is available")
    configs = list(zip(args.threads, args.timer))
    for threads, clock in configs:
        if clock == "cpu" and (threads != 1 or "cuda" in devices):
            raise SystemExit("--timer cpu needs --threads 1 and the CPU only (--devices cpu)")
    precisions = None
    if args.precisions is not None:
        precisions = [v.strip() for v in args.precisions.split(",")]
        known = {"float32", "bf16-autocast", "fp16-autocast"}
        if not set(precisions) <= known:
            raise SystemExit(f"--precisions must list {', '.join(sorted(known))}, got "
                             f"{args.precisions!r}")
    rounds = args.rounds if args.rounds is not None else (1 if args.smoke else 3)
    min_run_time = (
        args.min_run_time if args.min_run_time is not None else (0.01 if args.smoke else 0.1)
    )
    args.out.mkdir(parents=True, exist_ok=True)

    report = {"metadata": metadata(devices, configs, argv)}
    report["metadata"]["loadavg_before"] = _loadavg()
    results, accuracy, training, ops, classes = [], [], [], [], []
    targets_by_config = {}
    for i, (threads, clock) in enumerate(configs):
        torch.set_num_threads(threads)
        cfg = f"{threads} thr, {clock}"
        if "cpu" in devices and not args.skip_ops:
            ops += bench_ops(
                OPS_SHAPES if not args.smoke else ((160, 16),), rounds, min_run_time, threads,
                clock,
            )
        if args.ops_only:
            continue
        cfg_results, cfg_training = [], []
        for dev in devices:
            grid = args.grid if args.grid is not None else (SMOKE_GRID if args.smoke else GRID)
            if dev == "cuda" and not args.smoke and args.grid is None:
                grid = tuple(grid) + CUDA_EXTRA
            print(f"[speed] {dev} ({cfg}): {len(grid)} grid points, {rounds} round(s)", flush=True)
            r, a = bench_device(
                dev, grid, rounds, min_run_time, threads, clock, precisions=precisions,
                fns=FLOAT64_FNS if args.with_float64 else RATE_FNS,
            )
            cfg_results += r
            if i == 0:  # the same numbers in every configuration: checked once
                accuracy += a
            if not args.skip_training:
                for t in bench_training(dev, args.smoke, args.resnet_cpu_size, clock):
                    cfg_training.append(dict(t, threads=threads, clock=clock))
        if "cpu" in devices and not args.skip_classes:
            cases = CLASS_CASES if not args.smoke else ((24, 32, None), (24, 32, 10**7))
            classes += bench_classes(cases, rounds, min_run_time, threads, clock)
        targets_by_config[cfg] = check_targets(cfg_results, accuracy, cfg_training)
        results += cfg_results
        training += cfg_training
        if i + 1 < len(configs):  # a run stopped later keeps what it has measured
            _finish(report, results, accuracy, training, ops, classes, targets_by_config)
            (args.out / "speed.json").write_text(json.dumps(report, indent=2))
    _finish(report, results, accuracy, training, ops, classes, targets_by_config)

    (args.out / "speed.json").write_text(json.dumps(report, indent=2))
    (args.out / "speed.md").write_text(markdown(report))
    has_png = bool(results) and plot(report, args.out / "speed_ratios.png")
    png = ", speed_ratios.png" if has_png else ""
    print(f"[speed] wrote {args.out}/speed.json, speed.md{png}")
    print("[speed] targets: " + json.dumps(report["targets"]))
    return report


def _finish(report, results, accuracy, training, ops, classes, targets_by_config) -> None:
    """Fill ``report`` with what has been measured so far and the targets over it."""
    report["metadata"]["loadavg_after"] = _loadavg()
    report["results"], report["accuracy"], report["training"] = results, accuracy, training
    report["ops"], report["classes"] = ops, classes
    combined = {}
    for k in dict.fromkeys(k for t in targets_by_config.values() for k in t):
        known = [t[k] for t in targets_by_config.values() if t.get(k) is not None]
        combined[k] = all(known) if known else None  # met in every configuration measured
    combined["mcr2_num_classes_within_2x_of_none"] = check_class_target(classes)
    combined["by_config"] = dict(targets_by_config)
    report["targets"] = combined


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


if __name__ == "__main__":
    main()
