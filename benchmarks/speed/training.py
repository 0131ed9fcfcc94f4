"""Training-step overhead: one optimisation step with and without ``CodingRateRegularizer``."""

from __future__ import annotations

import statistics

import torch

from .timing import TIMERS, summarize


class BasicBlock(torch.nn.Module):
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
            layers += [BasicBlock(c, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c = c_out
        layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()]
        super().__init__(*layers)


#: The arms of the training-step measurement: no regularizer; a PML regularizer that computes
#: nothing (PML's own per-regularizer cost: module calls, reducer, loss-dict entry, the weight
#: product and the stacking of sub-losses, forward and backward); ``CodingRateRegularizer``.
ARMS = ("without", "plumbing", "with")


def plumbing_only_regularizer():
    """A PML regularizer whose loss is 0·x[0, 0]: what any regularizer costs before it computes."""
    from pytorch_metric_learning.regularizers import BaseRegularizer

    class PlumbingOnly(BaseRegularizer):
        def compute_loss(self, x):
            loss = x[0, 0] * 0.0
            return {"loss": {"losses": loss, "indices": None, "reduction_type": "already_reduced"}}

    return PlumbingOnly()


def training_step(model_fn, x, labels, arm: str, seed: int):
    from pytorch_metric_learning import losses

    from pml_anticollapse import CodingRateRegularizer

    torch.manual_seed(seed)
    model = model_fn().to(x.device)
    kwargs = {}
    if arm != "without":
        reg = CodingRateRegularizer() if arm == "with" else plumbing_only_regularizer()
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
    steps_fn = {arm: training_step(model_fn, x, labels, arm, seed=0) for arm in ARMS}
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
    paired = [b / a for a, b in zip(times["without"], times["with"], strict=True)]
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


def harness_model(name: str, input_shape: tuple[int, ...], embedding_size: int = 64):
    """A factory of the harness's registered model ``name`` (trunk then embedder, in one
    ``Sequential``), so that the overhead is measured on the very networks the benchmark trains."""
    from benchmarks.harness.models import ModelOptions, build_model

    def factory() -> torch.nn.Module:
        trunk, embedder = build_model(ModelOptions(name=name, embedding_size=embedding_size),
                                      input_shape)
        return torch.nn.Sequential(trunk, embedder)

    return factory


def bench_training(
    device: str, smoke: bool, resnet_cpu_size: int = 0, clock: str = "wall", log=print
) -> list[dict]:
    """The harness's digits MLP (``digits_mlp``) and the glyph benchmark's CNN
    (``glyph_cnn_small``) on ``device``; the ResNet-18-shaped network on
    CUDA at 224×224, or on the CPU at ``resnet_cpu_size``² when that is > 0 (a 224² step takes
    seconds on a laptop CPU)."""
    out = []
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(128, 64, generator=gen).to(device)
    labels = torch.randint(0, 10, (128,), generator=gen).to(device)
    steps, warmup = (20, 3) if smoke else (400, 20)
    row = training_overhead(
        "DigitsMLP (64-256-256-64)", harness_model("digits_mlp", (64,)), x, labels, steps, warmup,
        clock,
    )
    log(f"  training {device} DigitsMLP: overhead ratio {row['ratio']:.3f}")
    out.append(row)
    # the glyph benchmark's step: 64 grey glyphs of 1x32x32 (16 classes x 4, as MPerClassSampler
    # draws)
    x = torch.randn(64, 1, 32, 32, generator=gen).to(device)
    labels = (torch.arange(64) % 16).to(device)
    steps, warmup = (5, 2) if smoke else (100, 10)
    row = training_overhead(
        "GlyphCNN (16-32-64, 64-d)", harness_model("glyph_cnn_small", (1, 32, 32)), x, labels,
        steps, warmup, clock,
    )
    log(f"  training {device} GlyphCNN: overhead ratio {row['ratio']:.3f}")
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
