"""What Grad-CAM costs for each model source, what the ONNX conversion costs, and Score-CAM through onnxruntime.

Run with ``python -m benchmarks.sources`` (about ten minutes, mostly Score-CAM; ``--quick`` for a
smoke run with the fewest rounds, whose numbers mean nothing). Every
model has seeded random weights (timing does not depend on them), is saved in its source's format to a temporary
folder and loaded back through ``sources.load_user_model``, as a user's would be; the built-in EfficientNet-Lite0
is the reference. One 224 × 224 picture (``chelsea.png``, squashed), batch 1, CPU, 2 threads.

1. *Per source*: one Grad-CAM (``compute_cam`` at the model's default layer, top-1 class) against the same
   loaded module's no-grad forward, interleaved as in ``benchmarks/speed.py``: medians, ratio with a 95%
   paired-bootstrap interval.
2. *ONNX*: the same resnet18, native and converted from its ONNX export: forwards, Grad-CAMs, onnxruntime's
   forward, and the per-image check ``explain`` runs on the converted module's output
   (``LoadedModel.check_output``: onnxruntime's run on the explanation's input, compared with the module's output
   from the explanation's own forward pass), all against the native forward.
3. *Score-CAM*: the converted module's Score-CAM (PyTorch) against the same map through onnxruntime
   (``LoadedModel.runtime_cam``, the gradient-free path) at the same layer, alternating; the maps' largest
   difference relative to their peak says they are the same map.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from torch import Tensor, nn

from gradcam_core import LoadedModel, ModelRequest, compute_cam, load_model, load_user_model, to_input
from gradcam_core.cam import trace_cam

from . import speed
from .report import ROOT, environment, load_average, markdown_table, write_report

THREADS = 2
SIZE = 224
IMAGE = ROOT / "assets" / "chelsea.png"
LABELS = [f"class {index}" for index in range(10)]
BUDGET_S = 25.0  # seconds of timed rounds per comparison (speed.time_interleaved)
SCORECAM_ROUNDS = 3
SEED = 0

FORWARD, GRADCAM = "no-grad forward", "Grad-CAM"


@dataclass(frozen=True)
class Timed:
    """Milliseconds of several calls timed together, and the ratios of their medians to ``baseline``'s."""

    title: str
    names: tuple[str, ...]
    timing: speed.Timing
    baseline: str

    def rows(self, rng: np.random.Generator) -> list[list[str]]:
        base = self.timing.median(self.names.index(self.baseline))
        rows = []
        for column, name in enumerate(self.names):
            median = self.timing.median(column)
            q1, q3 = self.timing.iqr(column)
            low, high = _ratio_interval(self.timing.ms, column, self.names.index(self.baseline), rng)
            rows.append([self.title, name, f"{median:.1f}", f"{q1:.1f}–{q3:.1f}", f"**{median / base:.2f}×**",
                         f"{low:.2f}–{high:.2f}", str(self.timing.rounds)])
        return rows


def _ratio_interval(ms: np.ndarray, column: int, baseline: int, rng: np.random.Generator) -> tuple[float, float]:
    """95% paired-bootstrap interval of median(column) / median(baseline) (``speed.Timing`` fixes the baseline)."""
    picks = rng.integers(0, ms.shape[0], size=(speed.BOOTSTRAP, ms.shape[0]))
    medians = np.median(ms[picks], axis=1)
    low, high = np.percentile(medians[:, column] / medians[:, baseline], [2.5, 97.5])
    return float(low), float(high)


# --- the models, saved and loaded back --------------------------------------------------------------------------


def _resnet18() -> nn.Module:
    torch.manual_seed(SEED)
    return torchvision.models.resnet18(weights=None, num_classes=len(LABELS)).eval()


def _labels(folder: Path) -> Path:
    path = folder / "labels.txt"
    path.write_text("\n".join(LABELS), encoding="utf-8")
    return path


def _torchvision(folder: Path) -> LoadedModel:
    path = folder / "resnet18.safetensors"
    save_file(_resnet18().state_dict(), path)
    return load_user_model("torchvision", ModelRequest(weights=path, labels=_labels(folder), input_size=SIZE))


def _timm(folder: Path) -> LoadedModel:
    import timm

    torch.manual_seed(SEED)
    path = folder / "timm_resnet18.safetensors"
    save_file(timm.create_model("resnet18", pretrained=False, num_classes=len(LABELS)).state_dict(), path)
    request = ModelRequest(weights=path, architecture="resnet18", labels=_labels(folder), input_size=SIZE)
    return load_user_model("timm", request)


def _monai(folder: Path) -> LoadedModel:
    from monai.networks.nets import DenseNet121

    torch.manual_seed(SEED)
    path = folder / "densenet121.safetensors"
    save_file(DenseNet121(spatial_dims=2, in_channels=3, out_channels=len(LABELS)).state_dict(), path)
    request = ModelRequest(weights=path, architecture="DenseNet121", labels=_labels(folder), input_size=SIZE)
    return load_user_model("monai", request)


def _onnx_file(folder: Path) -> Path:
    """The torchvision resnet18 of :func:`_resnet18` exported to ONNX (opset 17, free batch)."""
    path = folder / "resnet18.onnx"
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(_resnet18(), torch.zeros(1, 3, SIZE, SIZE), buffer, opset_version=17, dynamo=False,
                          input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "n"}})
    path.write_bytes(buffer.getvalue())
    return path


def _onnx(folder: Path) -> LoadedModel:
    return load_user_model("onnx", ModelRequest(weights=_onnx_file(folder), labels=_labels(folder)))


def _huggingface(folder: Path) -> LoadedModel:
    import transformers

    torch.manual_seed(SEED)
    labels = dict(enumerate(LABELS))
    config = transformers.ResNetConfig(
        embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1], layer_type="basic",
        id2label=labels, label2id={name: index for index, name in labels.items()},
    )
    saved = folder / "hf_resnet"
    transformers.ResNetForImageClassification(config).eval().save_pretrained(saved, safe_serialization=True)
    preprocessor = {"size": {"shortest_edge": SIZE}, "image_mean": [0.485, 0.456, 0.406],
                    "image_std": [0.229, 0.224, 0.225], "do_normalize": True, "do_rescale": True,
                    "rescale_factor": 1 / 255, "resample": 2}
    (saved / "preprocessor_config.json").write_text(json.dumps(preprocessor), encoding="utf-8")
    return load_user_model("huggingface", ModelRequest(weights=saved))


SOURCES: dict[str, Callable[[Path], LoadedModel]] = {
    "built-in EfficientNet-Lite0 (ImageNet weights)": lambda folder: load_model(),
    "torchvision resnet18": _torchvision,
    "timm resnet18": _timm,
    "MONAI DenseNet121 (2-D)": _monai,
    "ONNX resnet18 (onnx2torch)": _onnx,
    "Hugging Face ResNet (tiny config)": _huggingface,
}


# --- measuring ---------------------------------------------------------------------------------------------------


def _inputs(loaded: LoadedModel) -> Tensor:
    """The picture squashed to SIZE × SIZE, then preprocessed as ``loaded`` wants (the same shape for every source)."""
    picture = Image.open(IMAGE).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    return to_input(picture, loaded.preprocessing)


def _top1(model: nn.Module, inputs: Tensor) -> int:
    with torch.no_grad():
        return int(model(inputs).argmax(dim=1)[0])


def time_source(title: str, loaded: LoadedModel, budget: float, rng: random.Random) -> tuple[Timed, str, str]:
    """Grad-CAM against the loaded module's own no-grad forward; with its layer and map shape."""
    inputs = _inputs(loaded)
    target = _top1(loaded.model, inputs)
    layer = loaded.default_layer
    cam = compute_cam(loaded.model, inputs, layer, target)
    calls = {
        FORWARD: lambda: speed.no_grad_forward(loaded.model, inputs),
        GRADCAM: lambda: compute_cam(loaded.model, inputs, layer, target),
    }
    timing = speed.time_interleaved(calls, budget, rng)
    return Timed(title, tuple(calls), timing, FORWARD), layer, f"{cam.shape[1]}×{cam.shape[2]}"


def time_onnx(native: nn.Module, converted: LoadedModel, budget: float, rng: random.Random) -> Timed:
    """The native resnet18 against its ONNX conversion and onnxruntime, on the same input and class."""
    inputs = _inputs(converted)
    target = _top1(native, inputs)
    runtime = converted.model.onnx_reference
    output = speed.no_grad_forward(converted.model, inputs)  # what explain's own forward pass hands the check
    calls = {
        "native forward": lambda: speed.no_grad_forward(native, inputs),
        "converted forward": lambda: speed.no_grad_forward(converted.model, inputs),
        "onnxruntime forward": lambda: runtime.scores(inputs),
        "native Grad-CAM": lambda: compute_cam(native, inputs, "layer4", target),
        "converted Grad-CAM": lambda: compute_cam(converted.model, inputs, converted.default_layer, target),
        "per-image check": lambda: converted.check_output(inputs, output),
    }
    return Timed("resnet18", tuple(calls), speed.time_interleaved(calls, budget, rng), "native forward")


def time_scorecam(converted: LoadedModel, rounds: int) -> tuple[Timed, float, int]:
    """Score-CAM of the converted module (PyTorch) and through onnxruntime, alternating; the maps' largest
    difference relative to the PyTorch map's peak, and the layer's channel count."""
    inputs = _inputs(converted)
    layer = converted.default_layer_for("scorecam")
    target = _top1(converted.model, inputs)
    calls = {
        "PyTorch (converted module)": lambda: trace_cam(converted.model, inputs, layer, target, "scorecam").cam,
        "onnxruntime": lambda: converted.runtime_cam(inputs, layer, target, "scorecam").cam,
    }
    maps = [call() for call in calls.values()]
    difference = float((maps[0] - maps[1]).abs().max() / maps[0].max().clamp_min(1e-12))
    rows = []
    for _ in range(rounds):
        row = [0.0] * len(calls)
        for index, call in enumerate(calls.values()):
            start = time.perf_counter_ns()
            call()
            row[index] = (time.perf_counter_ns() - start) / 1e6
        rows.append(row)
    timed = Timed(f"resnet18 `{layer}`", tuple(calls), speed.Timing(np.asarray(rows)), "PyTorch (converted module)")
    channels = next(info.shape[0] for info in converted.layers if info.name == layer)
    return timed, difference, channels


# --- report ------------------------------------------------------------------------------------------------------

HEADERS = ["model", "call", "median ms", "IQR ms", "ratio", "95% CI of ratio", "rounds"]


def render(
    per_source: list[tuple[Timed, str, str]],
    onnx: Timed,
    scorecam: tuple[Timed, float, int],
    quick: bool,
    load_at_start: tuple[float, float, float],
) -> str:
    rng = np.random.default_rng(SEED)
    sources = markdown_table(HEADERS, [row for timed, _, _ in per_source for row in timed.rows(rng)], align="llrrrrr")
    layers = markdown_table(["model", "default layer", "map"], [[t.title, f"`{layer}`", shape] for t, layer, shape
                                                                in per_source], align="lll")
    timed, difference, channels = scorecam
    return "\n".join([
        f"# Model sources: Grad-CAM cost per source, ONNX conversion, Score-CAM through onnxruntime (CPU, {THREADS} "
        f"threads, batch 1, {SIZE} × {SIZE})",
        "",
        *(["**Quick run** (`--quick`: minimum rounds, no time budget) — a smoke test, not a measurement.", ""]
          if quick else []),
        "Each model saved in its source's format (seeded random weights) and loaded back through "
        "`sources.load_user_model`. Calls interleaved in one process as in `benchmarks/speed.py` (warm-up, then "
        "rounds in random order, garbage collector paused); ratio = median / median of the first row of the "
        "model; 95% CI by a paired bootstrap over rounds.",
        "",
        "## Grad-CAM per source (ratio to the loaded module's own no-grad forward)",
        "",
        sources,
        "",
        layers,
        "",
        "## ONNX: the converted resnet18 against the native one (ratio to the native forward)",
        "",
        markdown_table(HEADERS, onnx.rows(rng), align="llrrrrr"),
        "",
        "*per-image check*: what `explain` adds to a converted ONNX model's map (onnxruntime's run on the same "
        "input, compared within 1e-4 with the output of the explanation's own forward pass).",
        "",
        f"## Score-CAM: PyTorch (converted module) against onnxruntime ({channels} feature maps, ratio to PyTorch)",
        "",
        markdown_table(HEADERS, timed.rows(rng), align="llrrrrr"),
        "",
        f"Largest difference between the two maps: {difference:.1e} of the map's peak (the same map).",
        "",
        environment(load_at_start),
    ])


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark, write ``results/sources.md`` and return its markdown."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sources", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="minimum rounds only: check that it runs")
    quick = parser.parse_args(argv).quick
    torch.set_num_threads(THREADS)
    load_at_start = load_average()
    rng = random.Random(SEED)
    budget = 0.0 if quick else BUDGET_S
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        per_source = [time_source(title, build(folder), budget, rng) for title, build in SOURCES.items()]
        converted = _onnx(folder)
        onnx = time_onnx(_resnet18(), converted, budget, rng)
        scorecam = time_scorecam(converted, 1 if quick else SCORECAM_ROUNDS)
    return write_report("sources", render(per_source, onnx, scorecam, quick, load_at_start))


if __name__ == "__main__":
    main()
