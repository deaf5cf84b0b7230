"""Cost of every CAM method against a plain no-grad forward, Score-CAM against torchcam and pytorch-grad-cam, and
the cost of the trust checks.

Run with ``python -m benchmarks.methods`` (about 8 minutes on an idle 2-core CPU, three quarters of it the three
Score-CAMs). CPU, 2 threads, batch of one image (``chelsea.png``, squashed to a square), ResNet-50 with seeded
random weights at ``layer4`` (no pretrained torchvision weights on this machine; timing does not depend on the
weights, but the Score-CAM agreement numbers do, see below), explaining the model's top-1 class.

Three parts:

* **Per method** at 224 x 224 and 448 x 448: every method of ``METHODS`` except Score-CAM through
  ``compute_cam``, plus ``guided_backprop`` and ``guided_gradcam``, interleaved with the no-grad forward round by
  round as ``benchmarks.speed`` does (fresh random order per round, garbage collector paused, a time budget per
  size). Median, interquartile range, ratio to the median forward with a 95% paired-bootstrap interval.
* **Score-CAM** at 224 x 224 (2048 channels, so about 2048 forward passes per map): ours
  (``compute_cam(..., method="scorecam")``), torchcam's ``ScoreCAM`` and pytorch-grad-cam's ``ScoreCAM``, all
  with 32 masked inputs per forward (ours and torchcam's default; pytorch-grad-cam's default is 16). A map takes
  about two minutes, so each runs **once**, in a seeded random order, between blocks of timed no-grad forwards
  (the ratio's denominator), and a batch-of-32 forward is timed too, since that is what Score-CAM runs. Not run
  at 448 x 448 (four times longer). The maps of those timed runs are then compared (see ``score_agreement``).
* **Trust checks**: ``deletion_insertion`` (default 20 steps, one random order: 78 images in automatic batches) of
  the Grad-CAM heatmap, ``randomized_copy``, ``sanity_check`` with that copy cached and building its own, on
  ResNet-50 (random weights, wrapped as a ``LoadedModel`` with torchvision's ImageNet preprocessing) and on the
  built-in EfficientNet-Lite0 (``load_model()``, default layer ``_bn1``), on the input the dashboard would use
  (aspect ratio kept: 224 x 352), interleaved with a no-grad forward of that input. Garbage is collected before
  every call and the forward runs once untimed before its timed run: freeing a model copy or a batch's buffers
  hands memory back to the system, and the next call pays the page faults (see the report's kernel-time column).

Score-CAM definitions (read from the libraries' sources):

* ours (the authors' code): weight of channel k = softmax over the *classes* of the model's output for the
  input times mask k, at the target class; mask k = A_k upsampled (bilinear, ``align_corners=False``) and then
  min-max scaled; constant channels score 0 without a forward pass.
* torchcam 0.5: weight = softmax over the *channels* of the target logit of each masked input (minus the
  unmasked input's logit, a constant that softmax ignores); mask = A_k min-max scaled at the layer's resolution
  and then upsampled (bilinear, ``align_corners=False``); every channel is scored, constant ones as a black
  input; ``normalized=False`` gives the raw map after ReLU.
* pytorch-grad-cam 1.5: the same softmax over channels of the target logit as torchcam; mask = A_k upsampled with
  ``align_corners=True`` and then min-max scaled; its output is min-max scaled and resized to the input.

So ours and theirs differ by definition (probability per masked input vs a softmax across channels). To tell
definition from implementation, a forward hook records the logits of our masked inputs during our timed run,
and our map is rebuilt with torchcam's weighting from them ("ours, torchcam's weighting").
"""

from __future__ import annotations

import gc
import random
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torchvision
from PIL import Image
from pytorch_grad_cam import ScoreCAM as PgcScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn
from torchcam.methods import ScoreCAM as TorchcamScoreCAM

from gradcam_core import (
    METHODS,
    MODELS,
    LoadedModel,
    Preprocessing,
    candidate_layers,
    compute_cam,
    explain,
    guided_backprop,
    guided_gradcam,
    load_model,
    to_input,
    trace_cam,
)
from gradcam_core.trust import deletion_insertion, randomized_copy, rank_correlation, sanity_check

from .report import ROOT, environment, load_average, markdown_table, write_report
from .speed import gc_paused, no_grad_forward, scaled_like_pytorch_grad_cam

THREADS = 2
SIZES = (224, 448)
IMAGE = ROOT / "assets" / "chelsea.png"
LAYER = "layer4"
SEED = 0
BOOTSTRAP = 2000
WARMUP_ROUNDS = {224: 3, 448: 2}
MIN_ROUNDS = {224: 15, 448: 10}
MAX_ROUNDS = 400
BUDGET_S = {224: 30.0, 448: 30.0}  # seconds of timed rounds per input size
SCORECAM_BATCH = 32
SCORECAM_FORWARD_BLOCK = 5  # no-grad forwards timed before each Score-CAM run and after the last
BATCH_FORWARDS = 3  # timed no-grad forwards of a batch of SCORECAM_BATCH masked-size inputs
TRUST_WARMUP = 1
TRUST_MIN_ROUNDS = 4
TRUST_BUDGET_S = 20.0

FORWARD = "no-grad forward"
GUIDED_BACKPROP = "Guided backprop (`guided_backprop`)"
GUIDED_GRADCAM = "Guided Grad-CAM (`guided_gradcam`)"
FAST_METHODS = tuple(name for name, method in METHODS.items() if not method.forward_passes)
OURS, TORCHCAM, PGC = "gradcam_core", "torchcam", "pytorch-grad-cam"


def _progress(message: str) -> None:
    print(f"[methods {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- timing ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call, one row per round, one column per contender; column 0 is the no-grad forward."""

    names: tuple[str, ...]
    ms: np.ndarray
    system_ms: np.ndarray  # kernel time of the process during each call (getrusage), same layout

    @property
    def rounds(self) -> int:
        return self.ms.shape[0]

    def median(self, name: str) -> float:
        return float(np.median(self.ms[:, self.names.index(name)]))

    def iqr(self, name: str) -> tuple[float, float]:
        q1, q3 = np.percentile(self.ms[:, self.names.index(name)], [25, 75])
        return float(q1), float(q3)

    def kernel_share(self, name: str) -> float:
        """Median over rounds of the share of the call's wall time spent in the kernel."""
        column = self.names.index(name)
        return float(np.median(self.system_ms[:, column] / self.ms[:, column]))

    def ratio(self, name: str) -> float:
        return self.median(name) / self.median(FORWARD)

    def ratio_interval(self, name: str, rng: np.random.Generator) -> tuple[float, float]:
        """95% paired-bootstrap interval of median(name) / median(no-grad forward), rounds resampled."""
        picks = rng.integers(0, self.rounds, size=(BOOTSTRAP, self.rounds))
        medians = np.median(self.ms[picks], axis=1)  # (BOOTSTRAP, contenders)
        ratios = medians[:, self.names.index(name)] / medians[:, 0]
        low, high = np.percentile(ratios, [2.5, 97.5])
        return float(low), float(high)


def time_interleaved(
    calls: dict[str, Callable[[], object]],
    rng: random.Random,
    *,
    warmup: int,
    min_rounds: int,
    budget_s: float,
    max_rounds: int = MAX_ROUNDS,
    settle: tuple[str, ...] = (),
    collect_each: bool = False,
) -> Timing:
    """Round-robin timing as in ``benchmarks.speed``: ``warmup`` untimed rounds, then rounds (each call once, in a
    fresh random order, garbage collector paused) until ``budget_s`` is spent, at least ``min_rounds``.

    A call named in ``settle`` runs once untimed right before its timed run; ``collect_each`` collects garbage
    before every call instead of once per round (see ``time_trust``).
    """
    names = tuple(calls)
    if names[0] != FORWARD:
        raise ValueError("the no-grad forward must come first")
    functions = list(calls.values())
    for _ in range(warmup):
        for function in functions:
            function()
    rows: list[list[float]] = []
    system_rows: list[list[float]] = []
    deadline = time.perf_counter() + budget_s
    while len(rows) < max_rounds and (len(rows) < min_rounds or time.perf_counter() < deadline):
        row = [0.0] * len(functions)
        system_row = [0.0] * len(functions)
        with gc_paused():
            for index in rng.sample(range(len(functions)), len(functions)):
                if collect_each:
                    gc.collect()
                if names[index] in settle:
                    functions[index]()
                system = resource.getrusage(resource.RUSAGE_SELF).ru_stime
                start = time.perf_counter_ns()
                functions[index]()
                row[index] = (time.perf_counter_ns() - start) / 1e6
                system_row[index] = (resource.getrusage(resource.RUSAGE_SELF).ru_stime - system) * 1000
        rows.append(row)
        system_rows.append(system_row)
    return Timing(names, np.asarray(rows), np.asarray(system_rows))


@dataclass(frozen=True)
class Cost:
    """Wall-clock milliseconds of a call, and the kernel time and minor page faults of the process meanwhile."""

    ms: float
    system_s: float
    page_faults: int


def _timed(function: Callable[[], object]) -> tuple[Cost, object]:
    with gc_paused():
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter_ns()
        result = function()
        ms = (time.perf_counter_ns() - start) / 1e6
        after = resource.getrusage(resource.RUSAGE_SELF)
    return Cost(ms, after.ru_stime - before.ru_stime, after.ru_minflt - before.ru_minflt), result


def _forward_block(model: nn.Module, inputs: Tensor, count: int) -> list[Cost]:
    """One untimed no-grad forward, then ``count`` timed ones."""
    no_grad_forward(model, inputs)
    return [_timed(lambda: no_grad_forward(model, inputs))[0] for _ in range(count)]


# --- setting -----------------------------------------------------------------------------------------------------


def build_resnet() -> nn.Module:
    torch.manual_seed(SEED)
    return torchvision.models.resnet50(weights=None).eval()


def square_input(size: int) -> Tensor:
    """chelsea.png squashed to ``size`` x ``size``, ImageNet normalisation."""
    picture = Image.open(IMAGE).convert("RGB")
    return to_input(picture, Preprocessing(size=size, keep_aspect=False))


def top1(model: nn.Module, inputs: Tensor) -> int:
    return int(no_grad_forward(model, inputs).argmax(dim=1)[0])


# --- part 1: every method ----------------------------------------------------------------------------------------


def method_calls(model: nn.Module, inputs: Tensor, target: int) -> dict[str, Callable[[], object]]:
    """The no-grad forward, each fast CAM method, guided backprop and Guided Grad-CAM."""
    calls: dict[str, Callable[[], object]] = {FORWARD: lambda: no_grad_forward(model, inputs)}
    for name in FAST_METHODS:
        calls[name] = lambda name=name: compute_cam(model, inputs, LAYER, target, method=name)
    calls[GUIDED_BACKPROP] = lambda: guided_backprop(model, inputs, target)
    calls[GUIDED_GRADCAM] = lambda: guided_gradcam(model, inputs, LAYER, target)
    return calls


def time_methods(model: nn.Module, rng: random.Random) -> dict[int, Timing]:
    timings = {}
    for size in SIZES:
        inputs = square_input(size)
        _progress(f"methods at {size} x {size}")
        timings[size] = time_interleaved(
            method_calls(model, inputs, top1(model, inputs)),
            rng,
            warmup=WARMUP_ROUNDS[size],
            min_rounds=MIN_ROUNDS[size],
            budget_s=BUDGET_S[size],
        )
    return timings


# --- part 2: Score-CAM -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreCamRun:
    """One timed Score-CAM per library, the forwards timed around them, and the maps they returned."""

    costs: dict[str, Cost]
    order: tuple[str, ...]
    forwards: list[Cost]  # no-grad forwards of batch 1 timed around the Score-CAM runs
    batch_forwards: list[Cost]  # no-grad forwards of a batch of SCORECAM_BATCH

    @property
    def ms(self) -> dict[str, float]:
        return {name: cost.ms for name, cost in self.costs.items()}

    @property
    def forward_ms(self) -> float:
        return float(np.median([cost.ms for cost in self.forwards]))

    @property
    def batch_forward_ms(self) -> float:
        return float(np.median([cost.ms for cost in self.batch_forwards]))
    ours: np.ndarray  # (h, w) raw map
    torchcam: np.ndarray  # (h, w) raw map (normalized=False)
    pytorch_grad_cam: np.ndarray  # (H, W) its output, min-max scaled and resized to the input
    ours_torchcam_weighting: np.ndarray  # (h, w) our masks with torchcam's softmax across channels
    channels: int
    informative: int  # channels that are not constant (the forward passes ours runs)
    target: int


def ours_scorecam(model: nn.Module, inputs: Tensor, target: int, logits: list[Tensor]) -> np.ndarray:
    """Our Score-CAM; a forward hook keeps the logits of every forward (the first is the unmasked input)."""
    handle = model.register_forward_hook(lambda module, args, output: logits.append(output.detach()))
    try:
        cam = compute_cam(model, inputs, LAYER, target, method="scorecam", batch_size=SCORECAM_BATCH)
    finally:
        handle.remove()
    return cam[0].numpy()


def torchcam_scorecam(model: nn.Module, inputs: Tensor, target: int) -> np.ndarray:
    """torchcam's Score-CAM raw map ``(h, w)``; its hooks are removed on return."""
    shape = tuple(inputs.shape[1:])
    with TorchcamScoreCAM(model, target_layer=LAYER, batch_size=SCORECAM_BATCH, input_shape=shape) as extractor:
        with torch.no_grad():
            scores = model(inputs)
        (cam,) = extractor(target, scores, normalized=False)
    return cam[0].detach().numpy()


def pgc_scorecam(model: nn.Module, inputs: Tensor, target: int) -> np.ndarray:
    """pytorch-grad-cam's Score-CAM ``(H, W)`` (min-max scaled, input size); its hooks are removed on return."""
    with PgcScoreCAM(model=model, target_layers=[model.get_submodule(LAYER)]) as cam:
        cam.batch_size = SCORECAM_BATCH
        return cam(input_tensor=inputs, targets=[ClassifierOutputTarget(target)])[0]


def rebuild_with_torchcam_weighting(activations: Tensor, masked_logits: Tensor, target: int) -> np.ndarray:
    """Our map with torchcam's weights: softmax across the informative channels of their masked target logit.

    Constant channels (no forward pass in ours) get no weight: they contribute a constant to the weighted sum,
    0 for the all-zero channels of a post-ReLU layer, and softmax mass that only rescales the map.
    """
    maps = activations[0].flatten(1)
    informative = torch.nonzero(maps.amax(1) > maps.amin(1)).flatten()
    weights = torch.zeros(activations.shape[1], dtype=torch.float64)
    weights[informative] = torch.softmax(masked_logits[:, target].double(), dim=0)
    cam = torch.relu((weights[:, None, None] * activations[0].double()).sum(0))
    return cam.float().numpy()


def time_scorecam(model: nn.Module, rng: random.Random) -> ScoreCamRun:
    inputs = square_input(SIZES[0])
    target = top1(model, inputs)
    batch = inputs.expand(SCORECAM_BATCH, -1, -1, -1).contiguous()
    for _ in range(3):
        no_grad_forward(model, inputs)
    batch_forwards = _forward_block(model, batch, BATCH_FORWARDS)
    logits: list[Tensor] = []
    calls = {
        OURS: lambda: ours_scorecam(model, inputs, target, logits),
        TORCHCAM: lambda: torchcam_scorecam(model, inputs, target),
        PGC: lambda: pgc_scorecam(model, inputs, target),
    }
    order = tuple(rng.sample(list(calls), len(calls)))
    forwards: list[Cost] = []
    costs: dict[str, Cost] = {}
    maps: dict[str, np.ndarray] = {}
    for name in order:
        forwards += _forward_block(model, inputs, SCORECAM_FORWARD_BLOCK)
        _progress(f"Score-CAM: {name}")
        costs[name], maps[name] = _timed(calls[name])
        model.zero_grad(set_to_none=True)
    forwards += _forward_block(model, inputs, SCORECAM_FORWARD_BLOCK)
    activations = trace_cam(model, inputs, LAYER, target).activations
    masked_logits = torch.cat(logits[1:])  # logits[0]: the unmasked forward
    flat = activations[0].flatten(1)
    informative = int((flat.amax(1) > flat.amin(1)).sum())
    if masked_logits.shape[0] != informative:
        raise RuntimeError(f"recorded {masked_logits.shape[0]} masked inputs for {informative} informative channels")
    return ScoreCamRun(
        costs=costs,
        order=order,
        forwards=forwards,
        batch_forwards=batch_forwards,
        ours=maps[OURS],
        torchcam=maps[TORCHCAM],
        pytorch_grad_cam=maps[PGC],
        ours_torchcam_weighting=rebuild_with_torchcam_weighting(activations, masked_logits, target),
        channels=activations.shape[1],
        informative=informative,
        target=target,
    )


@dataclass(frozen=True)
class Agreement:
    pair: str
    where: str
    pearson: float
    spearman: float
    max_abs_diff: float


def _to_max(values: np.ndarray) -> np.ndarray:
    peak = float(values.max())
    return values / peak if peak > 0 else values


def compare(pair: str, where: str, a: np.ndarray, b: np.ndarray, *, scale: bool = True) -> Agreement:
    """Pearson and Spearman correlation and max abs difference, each map divided by its max first (``scale``)."""
    a, b = (_to_max(a), _to_max(b)) if scale else (a, b)
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    pearson = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    return Agreement(pair, where, pearson, rank_correlation(a, b), float(np.abs(a - b).max()))


def score_agreement(run: ScoreCamRun, size: int) -> list[Agreement]:
    """Raw maps at the layer's resolution, each divided by its max; pytorch-grad-cam's output against the others
    put through its own scaling (min-max, resize to the input, min-max), which is already 0 to 1."""
    like_pgc = lambda cam: scaled_like_pytorch_grad_cam(cam, (size, size))  # noqa: E731
    h, w = run.ours.shape
    layer, image = f"{h}×{w}, ÷ max", f"{size}×{size}, pytorch-grad-cam's scaling"
    return [
        compare("torchcam vs ours", layer, run.torchcam, run.ours),
        compare("pytorch-grad-cam vs ours", image, run.pytorch_grad_cam, like_pgc(run.ours), scale=False),
        compare("pytorch-grad-cam vs torchcam", image, run.pytorch_grad_cam, like_pgc(run.torchcam), scale=False),
        compare("torchcam vs ours with torchcam's weighting", layer, run.torchcam, run.ours_torchcam_weighting),
        compare(
            "pytorch-grad-cam vs ours with torchcam's weighting",
            image,
            run.pytorch_grad_cam,
            like_pgc(run.ours_torchcam_weighting),
            scale=False,
        ),
    ]


# --- part 3: trust checks ----------------------------------------------------------------------------------------


def resnet_loaded(model: nn.Module) -> LoadedModel:
    """The random-weight ResNet-50 as ``load_model("resnet50")`` would return it with its weights."""
    spec = MODELS["resnet50"]
    preprocessing = spec.preprocessing()
    return LoadedModel(
        name=spec.name,
        title=f"{spec.title} (random weights)",
        model=model,
        categories=spec.categories(),
        preprocessing=preprocessing,
        default_layer=spec.default_layer,
        layers=tuple(candidate_layers(model, (preprocessing.size, preprocessing.size))),
    )


def trust_calls(loaded: LoadedModel, picture: Image.Image) -> dict[str, Callable[[], object]]:
    inputs = to_input(picture, loaded.preprocessing)
    heatmap = explain(picture, loaded).heatmap
    cached = randomized_copy(loaded, seed=SEED)
    return {
        FORWARD: lambda: no_grad_forward(loaded.model, inputs),
        "one Grad-CAM (`explain`, heatmap at image size)": lambda: explain(picture, loaded),
        "`deletion_insertion` (20 steps, 1 random order)": lambda: deletion_insertion(loaded, picture, heatmap),
        "`randomized_copy`": lambda: randomized_copy(loaded, seed=SEED),
        "`sanity_check` (cached copy)": lambda: sanity_check(loaded, picture, randomized=cached),
        "`sanity_check` (builds its copy)": lambda: sanity_check(loaded, picture, seed=SEED),
    }


def trust_size(results: list[tuple[LoadedModel, Timing]]) -> str:
    """The model input of chelsea.png, height × width (the same for both models)."""
    picture = Image.open(IMAGE).convert("RGB")
    shapes = {tuple(to_input(picture, loaded.preprocessing).shape[2:]) for loaded, _ in results}
    return " / ".join(f"{h} × {w}" for h, w in sorted(shapes))


def time_trust(resnet: nn.Module, rng: random.Random) -> list[tuple[LoadedModel, Timing]]:
    picture = Image.open(IMAGE).convert("RGB")
    results = []
    for loaded in (resnet_loaded(resnet), load_model()):
        _progress(f"trust checks on {loaded.title}")
        timing = time_interleaved(
            trust_calls(loaded, picture),
            rng,
            warmup=TRUST_WARMUP,
            min_rounds=TRUST_MIN_ROUNDS,
            budget_s=TRUST_BUDGET_S,
            settle=(FORWARD,),
            collect_each=True,
        )
        results.append((loaded, timing))
    return results


# --- report ------------------------------------------------------------------------------------------------------


def _ratio_cells(timing: Timing, name: str, rng: np.random.Generator) -> list[str]:
    median = timing.median(name)
    q1, q3 = timing.iqr(name)
    low, high = timing.ratio_interval(name, rng)
    return [f"{median:.1f}", f"{q1:.1f}–{q3:.1f}", f"**{timing.ratio(name):.2f}×**", f"{low:.2f}–{high:.2f}"]


def methods_table(timings: dict[int, Timing], run: ScoreCamRun, rng: np.random.Generator) -> str:
    names = [FORWARD, *FAST_METHODS, GUIDED_BACKPROP, GUIDED_GRADCAM]
    titles = {name: METHODS[name].title for name in FAST_METHODS}
    rows = []
    for name in names:
        row = [titles.get(name, name)]
        for size in SIZES:
            row += _ratio_cells(timings[size], name, rng)
        rows.append(row)
    ours = run.ms[OURS]
    rows.append(
        [
            f"Score-CAM ({run.informative} masked inputs in batches of {SCORECAM_BATCH}; 1 run, next section)",
            f"{ours:.0f}",
            "—",
            f"**{ours / run.forward_ms:.0f}×**",
            "— (1 run)",
            "not run",
            "",
            "",
            "",
        ]
    )
    headers = ["method"] + [f"{s}: {c}" for s in SIZES for c in ("median ms", "IQR ms", "× forward", "95% CI")]
    return markdown_table(headers, rows)


def scorecam_tables(run: ScoreCamRun, agreements: list[Agreement]) -> tuple[str, str]:
    forward, batch = run.forward_ms, run.batch_forward_ms
    per_image = batch / SCORECAM_BATCH
    lower = (run.informative / SCORECAM_BATCH) * batch

    def kernel(costs: list[Cost], images: int) -> list[str]:
        """Median kernel time and minor page faults per image of ``costs``."""
        system = np.median([cost.system_s * 1000 / cost.ms for cost in costs]) * 100
        faults = np.median([cost.page_faults for cost in costs]) / images
        return [f"{system:.0f}%", f"{faults:,.0f}"]

    rows = [
        [f"{FORWARD} (batch 1)", f"{forward:.1f}", "1.00×", *kernel(run.forwards, 1), f"{len(run.forwards)}"],
        [
            f"no-grad forward, batch of {SCORECAM_BATCH} ({per_image:.1f} ms per image)",
            f"{batch:.0f}",
            f"{batch / forward:.1f}× ({per_image / forward:.2f}× per image)",
            *kernel(run.batch_forwards, SCORECAM_BATCH),
            f"{len(run.batch_forwards)}",
        ],
    ]
    for name in (OURS, TORCHCAM, PGC):
        cost = run.costs[name]
        rows.append(
            [
                f"Score-CAM, {name}",
                f"{cost.ms:.0f}",
                f"**{cost.ms / forward:.0f}×**",
                *kernel([cost], run.informative if name == OURS else run.channels),
                f"1 ({_ordinal(run.order.index(name) + 1)} of 3)",
            ]
        )
    timing = markdown_table(
        ["what", "ms", "× forward (batch 1)", "kernel time", "minor page faults per image", "runs"],
        rows,
        align="lrrrrl",
    )
    note = (
        f"{run.informative} of the {run.channels} channels of `{LAYER}` are not constant (ours runs one masked input "
        f"per such channel, torchcam and pytorch-grad-cam all {run.channels}); {run.informative} / {SCORECAM_BATCH} "
        f"batch-of-{SCORECAM_BATCH} forwards alone take {lower / 1000:.1f} s. *Kernel time*: CPU time the process "
        "spent in the kernel (`getrusage`, both threads) as a share of the wall time (up to 200% with "
        f"{THREADS} threads), almost all of it serving page faults: tensors of a "
        f"batch of {SCORECAM_BATCH} exceed glibc's mmap threshold, so every forward maps fresh zeroed pages and "
        "unmaps them again, while a batch of 1 reuses its heap."
    )
    agreement = markdown_table(
        ["maps compared", "where", "Pearson", "Spearman", "max abs diff"],
        [[a.pair, a.where, f"{a.pearson:.3f}", f"{a.spearman:.3f}", f"{a.max_abs_diff:.3f}"] for a in agreements],
        align="llrrr",
    )
    return timing + "\n\n" + note, agreement


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}[n]


def trust_table(results: list[tuple[LoadedModel, Timing]], rng: np.random.Generator) -> str:
    rows = []
    for loaded, timing in results:
        for name in timing.names:
            rows.append(
                [loaded.title, name, *_ratio_cells(timing, name, rng), f"{timing.kernel_share(name) * 100:.0f}%"]
            )
    table = markdown_table(
        ["model", "what", "median ms", "IQR ms", "× forward", "95% CI of ×", "kernel time"], rows, align="llrrrrr"
    )
    rounds = ", ".join(f"{loaded.title} {timing.rounds}" for loaded, timing in results)
    return (
        f"{table}\n\nTimed rounds: {rounds}. *Kernel time*: median over rounds of the CPU time the process spent in "
        "the kernel during the call (`getrusage`, both threads) as a share of its wall time, mostly serving page "
        "faults."
    )


def render(
    timings: dict[int, Timing],
    run: ScoreCamRun,
    trust: list[tuple[LoadedModel, Timing]],
    minutes: float,
    load_at_start: tuple[float, float, float],
) -> str:
    rng = np.random.default_rng(SEED)
    methods = methods_table(timings, run, rng)
    scorecam_timing, agreement = scorecam_tables(run, score_agreement(run, SIZES[0]))
    rounds = ", ".join(
        f"{size} × {size}: {timings[size].rounds} timed rounds after {WARMUP_ROUNDS[size]} warm-up" for size in SIZES
    )
    return "\n".join(
        [
            f"# Per-method cost: every CAM method vs a plain no-grad forward (CPU, {THREADS} threads, batch 1)",
            "",
            f"ResNet-50 with **random weights** (seed {SEED}; no pretrained weights on this machine: timing does not "
            f"depend on the weights, the Score-CAM agreement does), target layer `{LAYER}`, `chelsea.png` squashed "
            f"to a square, the model's top-1 class ({run.target} at 224). {minutes:.1f} min in all.",
            "",
            "## Every method, interleaved with the no-grad forward",
            "",
            "Each round runs every contender once in a random order (garbage collector paused); "
            f"{rounds}. × forward = median / median no-grad forward of the same size; 95% CI: paired bootstrap "
            "over rounds. Score-CAM is timed apart (next section), once, at 224 only (448 would take four times "
            "its two minutes).",
            "",
            methods,
            "",
            "## Score-CAM: gradcam_core vs torchcam vs pytorch-grad-cam (224 × 224)",
            "",
            f"Same model object, layer, input and class; {SCORECAM_BATCH} masked inputs per forward in all three "
            "(pytorch-grad-cam's default is 16). One run each, in a seeded random order, with "
            f"{SCORECAM_FORWARD_BLOCK} no-grad forwards timed before each and after the last (each block after one "
            "untimed forward), and a batch of 32 copies of the input timed "
            f"{BATCH_FORWARDS} times before them.",
            "",
            scorecam_timing,
            "",
            "Agreement of the maps of those runs:",
            "",
            agreement,
            "",
            "The definitions differ: ours weights channel k by the class's *probability* (softmax over the "
            "classes) for the input masked by A_k, as the Score-CAM authors' code does; torchcam and "
            "pytorch-grad-cam take a *softmax across the channels* of the masked inputs' target logits. Masks: "
            "ours upsample A_k (bilinear) then min-max scale it; torchcam min-max scales at the layer's resolution "
            "then upsamples; pytorch-grad-cam upsamples with `align_corners=True` then min-max scales. \"Ours with "
            "torchcam's weighting\" is our map rebuilt from the logits of our own masked inputs (recorded by a "
            "forward hook during the timed run) with torchcam's softmax across channels: what is left between it "
            "and torchcam is the mask's normalisation order and constant channels.",
            "",
            "## Trust checks (chelsea.png, each model's own preprocessing, top-1 class, default layer)",
            "",
            f"Model input {trust_size(trust)} (both models keep the image's aspect ratio, as the dashboard does), "
            "interleaved with a no-grad forward of that input: "
            f"{TRUST_WARMUP} warm-up round, then rounds for {TRUST_BUDGET_S:.0f} s (at least {TRUST_MIN_ROUNDS}), "
            "garbage collected before every call. `deletion_insertion` scores 78 images (20 steps, 1 random order) "
            "in its automatic batches (2 images per call for EfficientNet-Lite0, 3 for ResNet-50 at this size); "
            "`sanity_check` builds its randomised copy (a deep copy with the layers from the "
            "target layer up re-initialised) unless given one, then runs two Grad-CAMs. The no-grad forward runs "
            "once untimed right before its timed run, so that the ratios divide by the steady forward: in trial "
            "runs a forward right after a check that had freed large buffers (a randomised copy, batches of images) "
            "paid page faults and took up to twice as long, and collecting garbage only once per round made every "
            "cheap call bimodal. The checks themselves are timed as they come.",
            "",
            trust_table(trust, rng),
            "",
            environment(load_at_start),
        ]
    )


def main() -> str:
    """Run the benchmark, write ``results/methods.md`` and return its markdown."""
    torch.set_num_threads(THREADS)
    load_at_start = load_average()
    started = time.perf_counter()
    rng = random.Random(SEED)
    model = build_resnet()
    timings = time_methods(model, rng)
    run = time_scorecam(model, rng)
    trust = time_trust(model, rng)
    minutes = (time.perf_counter() - started) / 60
    return write_report("methods", render(timings, run, trust, minutes, load_at_start))


if __name__ == "__main__":
    main()
