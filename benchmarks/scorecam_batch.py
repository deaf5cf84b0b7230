"""Score-CAM's automatic batch size against a fixed batch of 32 masked inputs per forward pass.

Run with ``python -m benchmarks.scorecam_batch`` (about six minutes). The same map is computed with
``compute_cam(..., method="scorecam")`` at the default ``batch_size=None`` (as many masked inputs as keep the
model's largest activation of a batch under ``MASKED_BATCH_BYTES``) and at ``batch_size=32`` (torchcam's
default, and ours before), for the built-in EfficientNet-Lite0 on the dashboard's input of ``chelsea.png``
(224 × 352, layer ``_bn1``, 1280 channels) and ResNet-50 with random weights on 224 × 224 (``layer4``, 2048
channels). One process, 2 threads; the two settings alternate (auto, 32, auto) so that drift shows.
Each run also reports the minor page faults it caused and its kernel CPU time (``getrusage``).
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import torch
import torchvision
from torch import Tensor, nn

from gradcam_core import compute_cam, load_image, load_model, to_input
from gradcam_core.cam import MASKED_BATCH_BYTES, masked_batch_size

from .report import ROOT, environment, load_average, markdown_table, write_report

THREADS = 2
IMAGE = ROOT / "assets" / "chelsea.png"
ORDER = (None, 32, None)  # batch sizes in the order they run; None is the automatic size


@dataclass(frozen=True)
class Run:
    """One Score-CAM map: its batch size, wall time, page faults, kernel time and map."""

    batch: int | None
    seconds: float
    page_faults: int
    kernel_share: float
    cam: Tensor


def timed(model: nn.Module, inputs: Tensor, layer: str, target: int, batch: int | None) -> Run:
    """Compute the Score-CAM map once and measure it."""
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    cam = compute_cam(model, inputs, layer, target, method="scorecam", batch_size=batch)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    kernel = after.ru_stime - before.ru_stime
    return Run(batch, seconds, after.ru_minflt - before.ru_minflt, kernel / seconds, cam)


def model_rows(title: str, model: nn.Module, inputs: Tensor, layer: str) -> list[list[str]]:
    """Every run of ``ORDER`` on one model, as table rows."""
    with torch.no_grad():
        target = int(model(inputs).argmax())
    auto = masked_batch_size(model, inputs)
    runs = [timed(model, inputs, layer, target, batch) for batch in ORDER]
    reference = runs[0].cam
    return [
        [
            title,
            f"auto ({auto})" if run.batch is None else str(run.batch),
            f"{run.seconds:.1f}",
            f"{run.seconds / runs[0].seconds:.2f}x",
            f"{run.page_faults:,}",
            f"{run.kernel_share:.0%}",
            f"{float((run.cam - reference).abs().max()):.1e}",
        ]
        for run in runs
    ]


def main() -> str:
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    load_at_start = load_average()
    lite0 = load_model()
    lite0_inputs = to_input(load_image(IMAGE), lite0.preprocessing)
    resnet = torchvision.models.resnet50(weights=None).eval()
    resnet_inputs = to_input(load_image(IMAGE).resize((224, 224)), lite0.preprocessing)
    rows = model_rows(f"EfficientNet-Lite0, {lite0.default_layer}, 224 × 352", lite0.model, lite0_inputs,
                      lite0.default_layer)
    rows += model_rows("ResNet-50 (random weights), layer4, 224 × 224", resnet, resnet_inputs, "layer4")
    table = markdown_table(
        ["model", "masked inputs per forward", "s", "vs first auto run", "minor page faults", "kernel time",
         "max abs diff of the map"],
        rows,
        align="llrrrrr",
    )
    return write_report(
        "scorecam_batch",
        "\n\n".join(
            [
                "# Score-CAM: automatic batch size vs 32 masked inputs per forward",
                f"Automatic: as many masked inputs as keep the largest activation of a batch under "
                f"{MASKED_BATCH_BYTES // 2**20} MB. Runs in the order of the table, one process. *Kernel time*: "
                "CPU time spent in the kernel as a share of the wall time (up to 200% with 2 threads), mostly "
                "serving page faults.",
                table,
                environment(load_at_start),
            ]
        ),
    )


if __name__ == "__main__":
    main()
