"""3-D Grad-CAM: its cost against a no-grad forward, and the memory of explaining a full-size CT.

Run with ``python -m benchmarks.volume`` (a few minutes; ``GRADCAM_BENCH_QUICK=1`` or ``--quick`` runs tiny sizes
in seconds, only to prove the code works: its numbers measure nothing). CPU, 2 threads, seeded random weights
(no pretrained 3-D weights exist on this machine; timing and memory do not depend on the weights).

(a) ``compute_cam`` (Grad-CAM, ``layer4``) against ``model(x)`` under ``torch.no_grad()`` for torchvision's
    ``r3d_18`` on a ``1 x 3 x 16 x 112 x 112`` clip, interleaved in random order per round after a warm-up, as
    ``benchmarks/speed.py`` does; medians, interquartile ranges and the ratio of the medians.
(b) ``explain_volume`` on a synthetic 512 x 512 x 300 float32 volume (300 MiB) with MONAI's DenseNet121
    (``spatial_dims=3``) at a 64^3 input, run first: wall time, and the resident memory sampled every 5 ms by a
    thread during the call against the memory just before it (``getrusage``'s peak is given too, but it is
    monotonic over the process). The map stays at the layer's grid; nothing full-size but the volume should appear.
"""

from __future__ import annotations

import gc
import os
import random
import sys
import threading
import time

import numpy as np
import torch
import torchvision
from monai.networks import nets
from safetensors.torch import save

from gradcam_core import compute_cam
from gradcam_core.volume_cam import explain_volume
from gradcam_core.volume_models import VolumeModelRequest, VolumePreprocessing, load_volume_model
from gradcam_core.volumes import Volume

from .memory import peak_rss_kib, rss_kib
from .report import environment, load_average, markdown_table, write_report
from .speed import time_interleaved

THREADS = 2
CLIP = (16, 112, 112)
SCAN = (300, 512, 512)
INPUT = (64, 64, 64)
BUDGET_S = 60.0
QUICK_CLIP, QUICK_SCAN, QUICK_INPUT, QUICK_BUDGET_S = (4, 32, 32), (30, 64, 64), (32, 32, 32), 1.0


def gradcam_against_forward(clip: tuple[int, int, int], budget_s: float) -> tuple[np.ndarray, tuple[int, ...]]:
    """Milliseconds per round (columns: no-grad forward, Grad-CAM) of r3d_18 on one clip, and the map's shape."""
    torch.manual_seed(0)
    model = torchvision.models.video.r3d_18(num_classes=400).eval()
    inputs = torch.randn(1, 3, *clip, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = int(model(inputs).argmax())

    def forward() -> object:
        with torch.no_grad():
            return model(inputs)

    def gradcam() -> object:
        return compute_cam(model, inputs, "layer4", target)

    timing = time_interleaved({"forward": forward, "gradcam": gradcam}, budget_s, random.Random(0))
    return timing.ms, tuple(gradcam().shape[1:])


def explain_full_volume(scan: tuple[int, int, int], size: tuple[int, int, int]) -> dict[str, object]:
    """Time and peak memory of one ``explain_volume`` call on a synthetic scan of ``scan`` voxels."""
    torch.manual_seed(0)
    weights = save(nets.DenseNet121(spatial_dims=3, in_channels=1, out_channels=2).state_dict())
    loaded = load_volume_model(
        VolumeModelRequest("monai:densenet121", weights, VolumePreprocessing(size, "window", (40, 400)))
    )
    del weights
    voxels = np.random.default_rng(0).standard_normal(scan, dtype=np.float32)
    voxels *= 300
    volume = Volume(voxels=voxels, affine=np.diag([0.7, 0.7, 1.0, 1.0]), source_format="NumPy")
    gc.collect()
    before = rss_kib()
    samples, done = [before], threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            samples.append(rss_kib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    result = explain_volume(volume, loaded)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    return {
        "scan": scan, "input": size, "layer": result.layer, "map": result.raw_map.shape,
        "map_bytes": result.raw_map.nbytes, "volume_mib": voxels.nbytes / 2**20, "seconds": seconds,
        "rss_before_mib": before / 1024, "sampled_peak_mib": max(samples) / 1024,
        "extra_mib": (max(samples) - before) / 1024, "process_peak_mib": peak_rss_kib() / 1024,
        "samples": len(samples),
    }


def render(ms: np.ndarray, map_shape: tuple[int, ...], memory: dict[str, object], clip: tuple[int, int, int],
           quick: bool, load: tuple[float, float, float]) -> str:
    forward, gradcam = np.median(ms[:, 0]), np.median(ms[:, 1])
    iqr = [np.percentile(ms[:, column], [25, 75]) for column in (0, 1)]
    scan = " x ".join(map(str, memory["scan"][::-1]))
    return "\n".join([
        "# 3-D Grad-CAM: cost and memory" + (" — QUICK MODE (tiny sizes: proves the code runs, measures nothing)"
                                            if quick else ""),
        "",
        f"## (a) Grad-CAM against a no-grad forward: torchvision r3d_18, input 1 x 3 x {' x '.join(map(str, clip))}",
        "",
        f"{len(ms)} interleaved rounds after a warm-up; map {' x '.join(map(str, map_shape))} at `layer4`.",
        "",
        markdown_table(
            ["contender", "median ms", "IQR ms"],
            [["no-grad forward", f"{forward:.1f}", f"{iqr[0][0]:.1f}–{iqr[0][1]:.1f}"],
             ["Grad-CAM (`compute_cam`)", f"{gradcam:.1f}", f"{iqr[1][0]:.1f}–{iqr[1][1]:.1f}"]],
            align="lrr",
        ),
        "",
        f"Ratio of the medians, Grad-CAM / forward: **{gradcam / forward:.2f}**.",
        "",
        f"## (b) `explain_volume` on a {scan} volume (columns x rows x slices), MONAI DenseNet121 3-D at "
        f"{' x '.join(map(str, memory['input']))}",
        "",
        markdown_table(
            ["measure", "value"],
            [["volume (float32)", f"{memory['volume_mib']:.1f} MiB"],
             ["wall time of the call", f"{memory['seconds']:.2f} s"],
             ["RSS just before the call", f"{memory['rss_before_mib']:.0f} MiB"],
             [f"highest RSS during the call ({memory['samples']} samples)", f"{memory['sampled_peak_mib']:.0f} MiB"],
             ["**peak above the memory before the call**", f"**{memory['extra_mib']:.0f} MiB**"],
             ["peak RSS of the process (`getrusage`, whole run)", f"{memory['process_peak_mib']:.0f} MiB"],
             ["map", f"{' x '.join(map(str, memory['map']))} at `{memory['layer']}` ({memory['map_bytes']} bytes)"]],
            align="lr",
        ),
        "",
        environment(load),
    ])


def main(quick: bool = False) -> str:
    """Run the benchmark, write ``results/volume.md`` and return its markdown."""
    torch.set_num_threads(THREADS)
    load = load_average()
    clip = QUICK_CLIP if quick else CLIP
    memory = explain_full_volume(QUICK_SCAN if quick else SCAN, QUICK_INPUT if quick else INPUT)
    ms, map_shape = gradcam_against_forward(clip, QUICK_BUDGET_S if quick else BUDGET_S)
    return write_report("volume", render(ms, map_shape, memory, clip, quick, load))


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:] or os.environ.get("GRADCAM_BENCH_QUICK") == "1")
