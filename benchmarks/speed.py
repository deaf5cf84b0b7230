"""Time of one Grad-CAM against a plain no-grad forward, torchcam and pytorch-grad-cam, interleaved.

Run with ``python -m benchmarks.speed``. Batch of one 224 x 224 image on the CPU. Every contender works on
its own copy of the model (same weights), so one library's hooks never slow another down; each round runs
every contender once, in a rotating order, after a warm-up, and the report gives medians and the ratio to
the median no-grad forward of the same model. Before timing, the maps are compared so the reader knows the
contenders compute the same thing.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torchvision
from torch import nn

from benchmarks import write_report
from gradcam_core import compute_cam, load_model

ROUNDS = 25
WARMUP = 3
TARGET = 281


@dataclass(frozen=True)
class Case:
    """A model to time and its target layer."""

    title: str
    model: nn.Module
    layer: str


def _cases() -> list[Case]:
    torch.manual_seed(0)
    return [
        Case("ResNet-50 (random weights)", torchvision.models.resnet50(weights=None).eval(), "layer4"),
        Case("EfficientNet-B0 (random weights)", torchvision.models.efficientnet_b0(weights=None).eval(), "features"),
        Case("EfficientNet-Lite0 (built-in, ImageNet)", load_model().model, load_model().default_layer),
    ]


def _contenders(case: Case, x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """name -> a call producing one map, each on its own copy of the model."""
    from pytorch_grad_cam import GradCAM as PgcGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import GradCAM as TorchcamGradCAM

    plain, ours, tc_model, pgc_model = (copy.deepcopy(case.model).eval() for _ in range(4))
    torchcam = TorchcamGradCAM(tc_model, target_layer=case.layer)
    pgc = PgcGradCAM(model=pgc_model, target_layers=[pgc_model.get_submodule(case.layer)])
    targets = [ClassifierOutputTarget(TARGET)]

    def forward() -> object:
        with torch.no_grad():
            return plain(x)

    def torchcam_call() -> object:
        return torchcam(TARGET, tc_model(x))

    return {
        "no-grad forward": forward,
        "gradcam_core": lambda: compute_cam(ours, x, case.layer, TARGET),
        "torchcam": torchcam_call,
        "pytorch-grad-cam": lambda: pgc(input_tensor=x, targets=targets),
    }


def _agreement(case: Case, x: torch.Tensor) -> tuple[float, float, float]:
    """Max abs difference of our map with torchcam's raw map and with pytorch-grad-cam's (its scaling)."""
    from pytorch_grad_cam import GradCAM as PgcGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import GradCAM as TorchcamGradCAM

    ours = compute_cam(case.model, x, case.layer, TARGET)[0].numpy()
    model = copy.deepcopy(case.model)
    with TorchcamGradCAM(model, target_layer=case.layer) as extractor:
        (theirs,) = extractor(TARGET, model(x), normalized=False)
    torchcam_diff = float(np.abs(theirs[0].detach().numpy() - ours).max() / max(ours.max(), 1e-12))
    model = copy.deepcopy(case.model)
    with PgcGradCAM(model=model, target_layers=[model.get_submodule(case.layer)]) as pgc:
        pgc_map = pgc(input_tensor=x, targets=[ClassifierOutputTarget(TARGET)])[0]
    scaled = (ours - ours.min()) / (1e-7 + (ours - ours.min()).max())  # pytorch-grad-cam's scale_cam_image
    scaled = cv2.resize(scaled, (x.shape[3], x.shape[2]))
    return torchcam_diff, float(np.abs(pgc_map - scaled).max()), float(ours.max())


def _time(contenders: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(WARMUP + ROUNDS):
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        for name in order:
            start = time.perf_counter()
            contenders[name]()
            elapsed = time.perf_counter() - start
            if round_ >= WARMUP:
                times[name].append(elapsed * 1000)
    return times


def _iqr(values: list[float]) -> str:
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{q1:.0f}–{q3:.0f}"


def main() -> str:
    """Run the benchmark, write ``results/speed.md`` and return its markdown."""
    torch.set_num_threads(2)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    lines = [
        "# Speed: one Grad-CAM vs a plain no-grad forward (CPU, 2 threads, batch 1, 224 × 224)",
        "",
        f"Interleaved in one process, {ROUNDS} rounds after {WARMUP} warm-up rounds; each contender on its own "
        "copy of the model. Ratio = median time / median no-grad forward of the same model.",
        "",
        "| model | contender | median ms | IQR ms | ratio to forward |",
        "|---|---|---:|---:|---:|",
    ]
    agreement = []
    for case in _cases():
        times = _time(_contenders(case, x))
        forward = statistics.median(times["no-grad forward"])
        for name, values in times.items():
            median = statistics.median(values)
            lines.append(f"| {case.title} | {name} | {median:.1f} | {_iqr(values)} | {median / forward:.2f}x |")
        torchcam_diff, pgc_diff, peak = _agreement(case, x)
        agreement.append(f"| {case.title} | {peak:.1e} | {torchcam_diff:.1e} | {pgc_diff:.1e} |")
    lines += [
        "",
        "Same maps: max difference with torchcam's raw map (relative to our maximum) and with pytorch-grad-cam's "
        "output (min-max scaled and resized to the input, as it does; absolute, on a 0–1 scale). pytorch-grad-cam "
        "divides by (max + 1e-7), so where the raw map's maximum is itself tiny (random weights) that epsilon "
        "alone shifts its output:",
        "",
        "| model | our raw map's max | vs torchcam | vs pytorch-grad-cam |",
        "|---|---:|---:|---:|",
        *agreement,
    ]
    return write_report("speed", "\n".join(lines))


if __name__ == "__main__":
    main()
