"""Time of one Grad-CAM against a plain no-grad forward of the same model, and against torchcam and pytorch-grad-cam.

Run with ``python -m benchmarks.speed`` (two and a half minutes). Batch of one 224 x 224 image (``chelsea.png``,
squashed to a square) on the CPU with 2 threads, for ResNet-50 (``layer4``) and EfficientNet-B0 (``features``)
with random weights (no pretrained torchvision weights on this machine; timing does not depend on the weights)
and the built-in EfficientNet-Lite0 with its ImageNet weights (``_head_act``).

Contenders, all on the same model object and the same input, explaining the same class (the model's top-1):

* ``no-grad forward``: ``model(x)`` under ``torch.no_grad()``, the baseline of every ratio;
* ``gradcam_core``: ``compute_cam(model, x, layer, target)``;
* ``torchcam``: ``torchcam.methods.GradCAM(model, target_layer=layer)``, a grad-enabled forward, then
  ``extractor(target, scores)``;
* ``pytorch-grad-cam``: ``GradCAM(model=model, target_layers=[module])`` called with a ``ClassifierOutputTarget``.

Each library's extractor is created and released inside the timed call (the hooks it registers are removed
again, as ``compute_cam`` does), so no contender's hooks ever fire while another one is timed. The contenders
are interleaved in one process: after a warm-up, each round runs every contender once in a fresh random
order (seeded), with the garbage collector paused, for as many rounds as fit in a time budget per model.
The report gives each contender's median and interquartile range, and its ratio to the median no-grad
forward with a 95% bootstrap interval (rounds resampled as pairs, so load shared by a round cancels out).

Before timing, the maps are compared so the reader knows the contenders compute the same thing: torchcam's
raw map (``normalized=False``) against ours, relative to our map's maximum; pytorch-grad-cam's output (min-max
scaled and resized to the input) against our raw map put through pytorch-grad-cam's own scaling.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch
import torchvision
from PIL import Image
from pytorch_grad_cam import GradCAM as PgcGradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn
from torchcam.methods import GradCAM as TorchcamGradCAM

from gradcam_core import Preprocessing, compute_cam, load_model, to_input

from .report import ROOT, environment, load_average, markdown_table, write_report

THREADS = 2
SIZE = 224
IMAGE = ROOT / "assets" / "chelsea.png"
WARMUP_ROUNDS = 5
MIN_ROUNDS = 15
MAX_ROUNDS = 400
BUDGET_S = 45.0  # seconds of timed rounds per model: the whole run takes about two and a half minutes
BOOTSTRAP = 2000
SEED = 0

FORWARD, OURS, TORCHCAM, PGC = "no-grad forward", "gradcam_core", "torchcam", "pytorch-grad-cam"
CONTENDERS = (FORWARD, OURS, TORCHCAM, PGC)


@dataclass(frozen=True)
class Case:
    """One model to time: the module, its target layer, the input batch and the class explained."""

    title: str
    model: nn.Module
    layer: str
    inputs: Tensor
    target: int
    label: str | None = None  # class name, for a model with real weights


@dataclass(frozen=True)
class Agreement:
    """How far the other libraries' maps are from ours (see the module docstring for what is compared)."""

    map_shape: tuple[int, int]
    our_max: float
    torchcam: float
    pytorch_grad_cam: float


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call, one row per round, one column per contender (in ``CONTENDERS`` order)."""

    ms: np.ndarray

    @property
    def rounds(self) -> int:
        return self.ms.shape[0]

    def median(self, column: int) -> float:
        return float(np.median(self.ms[:, column]))

    def iqr(self, column: int) -> tuple[float, float]:
        q1, q3 = np.percentile(self.ms[:, column], [25, 75])
        return float(q1), float(q3)

    def ratio_interval(self, column: int, rng: np.random.Generator) -> tuple[float, float]:
        """95% paired-bootstrap interval of median(column) / median(no-grad forward)."""
        picks = rng.integers(0, self.rounds, size=(BOOTSTRAP, self.rounds))
        medians = np.median(self.ms[picks], axis=1)  # (BOOTSTRAP, contenders)
        ratios = medians[:, column] / medians[:, CONTENDERS.index(FORWARD)]
        low, high = np.percentile(ratios, [2.5, 97.5])
        return float(low), float(high)


# --- the four ways of getting (or not) a map -------------------------------------------------------------------


def no_grad_forward(model: nn.Module, inputs: Tensor) -> Tensor:
    """The baseline: class scores without any graph."""
    with torch.no_grad():
        return model(inputs)


def torchcam_map(model: nn.Module, inputs: Tensor, layer: str, target: int, normalized: bool = True) -> Tensor:
    """torchcam's Grad-CAM ``(N, h, w)``; its hooks are removed on return."""
    with TorchcamGradCAM(model, target_layer=layer) as extractor:
        scores = model(inputs)  # torchcam differentiates the scores: the forward must record a graph
        (cam,) = extractor(target, scores, normalized=normalized)
    return cam.detach()


def pytorch_grad_cam_map(model: nn.Module, inputs: Tensor, layer: str, target: int) -> np.ndarray:
    """pytorch-grad-cam's Grad-CAM ``(N, H, W)``, min-max scaled and resized to the input; hooks removed on return."""
    with PgcGradCAM(model=model, target_layers=[model.get_submodule(layer)]) as cam:
        return cam(input_tensor=inputs, targets=[ClassifierOutputTarget(target)])


def scaled_like_pytorch_grad_cam(raw_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Our raw ``(h, w)`` map post-processed exactly as pytorch-grad-cam does for one target layer.

    It min-max scales each layer's map and resizes it to ``size`` = ``(width, height)``, then min-max scales
    the mean over layers again (``BaseCAM.compute_cam_per_layer`` and ``aggregate_multi_layers``).
    """
    per_layer = scale_cam_image(raw_map[None], size)
    return scale_cam_image(np.maximum(per_layer, 0))[0]


def contenders(case: Case) -> dict[str, Callable[[], object]]:
    """Zero-argument calls, one per contender, in ``CONTENDERS`` order."""
    model, inputs, layer, target = case.model, case.inputs, case.layer, case.target
    calls: dict[str, Callable[[], object]] = {
        FORWARD: lambda: no_grad_forward(model, inputs),
        OURS: lambda: compute_cam(model, inputs, layer, target),
        TORCHCAM: lambda: torchcam_map(model, inputs, layer, target),
        PGC: lambda: pytorch_grad_cam_map(model, inputs, layer, target),
    }
    return {name: calls[name] for name in CONTENDERS}


# --- cases -------------------------------------------------------------------------------------------------------


def build_cases() -> list[Case]:
    """ResNet-50 and EfficientNet-B0 with seeded random weights, and the built-in EfficientNet-Lite0."""
    picture = Image.open(IMAGE).convert("RGB")
    imagenet = Preprocessing(size=SIZE, keep_aspect=False)
    torch.manual_seed(SEED)
    resnet = torchvision.models.resnet50(weights=None).eval()
    efficientnet = torchvision.models.efficientnet_b0(weights=None).eval()
    lite = load_model("efficientnet_lite0")
    lite_inputs = to_input(picture, replace(lite.preprocessing, size=SIZE, keep_aspect=False))
    return [
        _case("ResNet-50 (random weights)", resnet, "layer4", to_input(picture, imagenet)),
        _case("EfficientNet-B0 (random weights)", efficientnet, "features", to_input(picture, imagenet)),
        _case("EfficientNet-Lite0 (built-in, ImageNet)", lite.model, "_head_act", lite_inputs, lite.categories),
    ]


def _case(
    title: str, model: nn.Module, layer: str, inputs: Tensor, categories: tuple[str, ...] | None = None
) -> Case:
    """A case explaining the model's top-1 class for ``inputs``."""
    target = int(no_grad_forward(model, inputs).argmax(dim=1)[0])
    return Case(title, model, layer, inputs, target, categories[target] if categories else None)


# --- measuring ---------------------------------------------------------------------------------------------------


def agreement(case: Case) -> Agreement:
    """Compare the three maps of ``case`` (see the module docstring)."""
    ours = compute_cam(case.model, case.inputs, case.layer, case.target)[0].numpy()
    scale = float(ours.max()) or 1.0
    theirs = torchcam_map(case.model, case.inputs, case.layer, case.target, normalized=False)[0].numpy()
    height, width = case.inputs.shape[2:]
    pgc = pytorch_grad_cam_map(case.model, case.inputs, case.layer, case.target)[0]
    case.model.zero_grad(set_to_none=True)  # pytorch-grad-cam backpropagates into the parameters
    return Agreement(
        map_shape=(ours.shape[0], ours.shape[1]),
        our_max=float(ours.max()),
        torchcam=float(np.abs(theirs - ours).max()) / scale,
        pytorch_grad_cam=float(np.abs(pgc - scaled_like_pytorch_grad_cam(ours, (width, height))).max()),
    )


@contextmanager
def gc_paused() -> Iterator[None]:
    """Collect garbage now, then keep the collector off (as ``timeit`` does) until the block ends."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def time_interleaved(calls: dict[str, Callable[[], object]], budget_s: float, rng: random.Random) -> Timing:
    """Round-robin timing: every round runs each call once, in a fresh random order.

    Runs ``WARMUP_ROUNDS`` untimed rounds, then timed rounds until ``budget_s`` is spent (at least
    ``MIN_ROUNDS``, at most ``MAX_ROUNDS``).
    """
    functions = list(calls.values())
    for _ in range(WARMUP_ROUNDS):
        for function in functions:
            function()
    rows: list[list[float]] = []
    deadline = time.perf_counter() + budget_s
    while len(rows) < MAX_ROUNDS and (len(rows) < MIN_ROUNDS or time.perf_counter() < deadline):
        row = [0.0] * len(functions)
        with gc_paused():
            for index in rng.sample(range(len(functions)), len(functions)):
                start = time.perf_counter_ns()
                functions[index]()
                row[index] = (time.perf_counter_ns() - start) / 1e6
        rows.append(row)
    return Timing(np.asarray(rows))


def measure(case: Case, rng: random.Random) -> tuple[Agreement, Timing]:
    """Check the maps agree, then time the contenders on ``case``."""
    agree = agreement(case)
    timing = time_interleaved(contenders(case), BUDGET_S, rng)
    case.model.zero_grad(set_to_none=True)
    return agree, timing


# --- report ------------------------------------------------------------------------------------------------------


def _difference_cell(name: str, agree: Agreement) -> str:
    if name == TORCHCAM:
        return f"{agree.torchcam:.1e}"
    if name == PGC:
        return f"{agree.pytorch_grad_cam:.1e}"
    return "reference" if name == OURS else "—"


def timing_rows(case: Case, agree: Agreement, timing: Timing, rng: np.random.Generator) -> list[list[str]]:
    """Table rows of one model: one per contender."""
    forward = timing.median(CONTENDERS.index(FORWARD))
    rows = []
    for column, name in enumerate(CONTENDERS):
        median = timing.median(column)
        q1, q3 = timing.iqr(column)
        low, high = timing.ratio_interval(column, rng)
        rows.append(
            [
                case.title,
                name,
                f"{median:.1f}",
                f"{q1:.1f}–{q3:.1f}",
                f"**{median / forward:.2f}×**",
                f"{low:.2f}–{high:.2f}",
                _difference_cell(name, agree),
            ]
        )
    return rows


def case_row(case: Case, agree: Agreement, timing: Timing) -> list[str]:
    """Table row describing one model's setting."""
    height, width = agree.map_shape
    return [
        case.title,
        f"`{case.layer}`",
        f"{height}×{width}",
        f"{case.target} ({case.label})" if case.label else str(case.target),
        f"{agree.our_max:.2e}",
        str(timing.rounds),
    ]


def render(results: list[tuple[Case, Agreement, Timing]], load_at_start: tuple[float, float, float]) -> str:
    """The markdown report."""
    rng = np.random.default_rng(SEED)
    timings = markdown_table(
        ["model", "contender", "median ms", "IQR ms", "× forward", "95% CI of ×", "max abs diff vs ours"],
        [row for case, agree, timing in results for row in timing_rows(case, agree, timing, rng)],
        align="llrrrrr",
    )
    cases = markdown_table(
        ["model", "layer", "map", "class explained (top-1)", "our raw map's max", "timed rounds"],
        [case_row(case, agree, timing) for case, agree, timing in results],
        align="llllrr",
    )
    return "\n".join(
        [
            f"# Speed: one Grad-CAM vs a plain no-grad forward (CPU, {THREADS} threads, batch 1, {SIZE} × {SIZE})",
            "",
            "Contenders interleaved in one process on the same model object: after "
            f"{WARMUP_ROUNDS} warm-up rounds, each round runs every contender once in a random order "
            f"(garbage collector paused), for {BUDGET_S:.0f} s per model. × forward = median time / median "
            "no-grad forward of the same model; its 95% CI is a paired bootstrap over rounds. torchcam and "
            "pytorch-grad-cam create and release their extractor inside the timed call, as `compute_cam` does.",
            "",
            timings,
            "",
            "*max abs diff vs ours*: torchcam's raw map (`normalized=False`) minus ours, divided by our map's "
            "maximum; pytorch-grad-cam's output (0–1, resized to the input) minus our raw map put through "
            "pytorch-grad-cam's own `scale_cam_image` (min-max, bilinear resize, min-max). Same class, same "
            "input; values at float32 rounding level mean the same map.",
            "",
            cases,
            "",
            "Random-weight EfficientNet-B0 activations shrink through its blocks (identity batch-norm "
            "statistics), hence its tiny raw map; the comparison is relative, so it still holds.",
            "",
            environment(load_at_start),
        ]
    )


def main() -> str:
    """Run the benchmark, write ``results/speed.md`` and return its markdown."""
    torch.set_num_threads(THREADS)
    load_at_start = load_average()
    rng = random.Random(SEED)
    cases = build_cases()
    results = [(case, *measure(case, rng)) for case in cases]
    return write_report("speed", render(results, load_at_start))


if __name__ == "__main__":
    main()
