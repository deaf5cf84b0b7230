"""Trust checks for a shown map: is it faithful to the model, does it depend on the weights, where is its heat?

Three checks, to run on demand beside a map (on EfficientNet-Lite0, 2 CPU cores: deletion/insertion about 40
Grad-CAMs' time, the sanity check about 2, the region check under a millisecond):

* :func:`deletion_insertion` — faithfulness (Petsiuk et al. 2018, "RISE", sec. 4.1). The class probability as
  the hottest pixels are *deleted* (replaced by the baseline) or *inserted* (revealed on the baseline), with
  the area under each curve (trapezoid rule over the deleted/inserted fraction in [0, 1]). A faithful map
  gives a low deletion AUC and a high insertion AUC. The same curves for a seeded random pixel order are the
  chance level the map must beat.

  The random order ranks the pixels by a random map as smooth as a CAM: uniform noise on a grid of 32-pixel
  cells, upsampled bilinearly (``random_cell``; 1 gives independent pixels). Independent pixels make a poor
  chance level: replacing scattered single pixels is high-frequency noise that destroys any ImageNet class
  within a few percent of the pixels, so no map could beat random deletion and every map beats random
  insertion (measured on EfficientNet-Lite0: random-pixel deletion AUC 0.10 on chelsea against 0.27 for
  blob-shaped random deletion). With a smooth random map only *where* the pixels go differs from the map's.

  Baseline: a Gaussian-blurred copy of the model input (σ = 1/20 of its shorter side) for both curves, as RISE
  does for insertion. Blur removes the object's detail while keeping the image's colours and low frequencies,
  so a curve measures the evidence in the pixels rather than the shock of a black hole (RISE's deletion
  baseline is black; a black patch is itself a strong out-of-distribution feature). Everything runs on the
  preprocessed input at the model's resolution, with the heatmap resized to it, in small batches, without
  gradients and in eval mode. The masking and scoring (:func:`masked_curves`, :func:`hottest_first`,
  :func:`random_order`) take any number of spatial axes: :mod:`gradcam_core.volume_trust` runs them on scans.

  The curves follow the map's objective (:mod:`gradcam_core.objectives`), read as ``objective.probability``: a
  class's probability, the weighted mean of several classes', ``sigmoid(±logit)`` of a binary model, or a
  segmentation class's probability averaged over its region. A region is the one of the unmasked input (a class
  index means its predicted region there), kept fixed on every masked copy: the curve asks how the model's
  belief in *that* region falls, not where it would draw a region on a damaged image.

* :func:`sanity_check` — model randomisation (Adebayo et al. 2018, "Sanity checks for saliency maps",
  cascading randomisation). The same map from a deep copy of the model whose top layers are re-initialised;
  a map that barely changes (rank correlation above a threshold) does not depend on what the model learned.
  The caller's model is never modified; build the copy once with :func:`randomized_copy` and reuse it. The copy
  explains the real model's objective (a segmentation's region as the real model predicts it, not the copy).

* :func:`region_check` — the share of the heat inside a region the user drew, the region's share of the
  image, and whether the map's peak falls inside it (the pointing game, Zhang et al. 2016).
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms import functional as TF

from .cam import masked_batch_size, trace_cam
from .errors import TrustCheckError
from .explain import heatmap_from_map
from .hooks import is_engine_hook
from .imaging import load_image
from .layers import probe_forward, resolve_layer
from .models import LoadedModel
from .modes import eval_mode
from .objectives import Objective, as_objective, model_output
from .preprocess import to_input
from .targets import resolve_class

__all__ = [
    "FaithfulnessCurves",
    "RandomizedModel",
    "RegionCheck",
    "SanityCheck",
    "TrustCheckError",
    "blur_baseline",
    "curve_area",
    "deletion_insertion",
    "hottest_first",
    "masked_curves",
    "random_order",
    "randomized_copy",
    "rank_correlation",
    "region_check",
    "sanity_check",
]

BLUR_FRACTION = 1 / 20
"""σ of the blurred baseline, as a fraction of the model input's shorter side (11.2 px at 224)."""

RANDOM_CELL = 32
"""Cell size, in input pixels, of the random map behind the chance-level curves (a 7 × 7 grid at 224, like a
CAM from a network's last stage)."""


# --------------------------------------------------------------------------------------------- faithfulness


@dataclass(frozen=True, eq=False)
class FaithfulnessCurves:
    """Deletion and insertion curves of one map, with the same curves for a random pixel order.

    Attributes:
        fractions: ``(steps + 1,)`` share of the pixels deleted or inserted, from 0 to 1.
        deletion: Class probability with the hottest ``fractions`` of the pixels replaced by the baseline.
        insertion: Class probability of the baseline with the hottest ``fractions`` of the pixels revealed.
        random_deletion: ``deletion`` for a seeded random pixel order.
        random_insertion: ``insertion`` for the same random order.
        deletion_auc: Area under ``deletion`` (lower is better).
        insertion_auc: Area under ``insertion`` (higher is better).
        random_deletion_auc: Area under ``random_deletion``: the chance level for ``deletion_auc``.
        random_insertion_auc: Area under ``random_insertion``: the chance level for ``insertion_auc``.
        target: The class whose probability is measured (``Objective.classes``).
        objective: What is measured, as ``objective.probability`` (a region fixed on the unmasked input).
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    random_deletion: np.ndarray
    random_insertion: np.ndarray
    deletion_auc: float
    insertion_auc: float
    random_deletion_auc: float
    random_insertion_auc: float
    target: int
    objective: Objective | None = None

    @property
    def beats_random(self) -> bool:
        """True when the map deletes faster and inserts faster than the random order."""
        return self.deletion_auc < self.random_deletion_auc and self.insertion_auc > self.random_insertion_auc


def blur_baseline(inputs: Tensor, sigma: float | None = None) -> Tensor:
    """A Gaussian-blurred copy of a ``(N, C, h, w)`` input batch (default σ: 1/20 of the shorter side).

    Example: ``blur_baseline(torch.rand(1, 3, 224, 224)).shape  # (1, 3, 224, 224), σ = 11.2 px``.
    """
    height, width = inputs.shape[-2:]
    sigma = BLUR_FRACTION * min(height, width) if sigma is None else float(sigma)
    if sigma <= 0:
        return inputs.clone()
    # Kernel of ±3σ, odd, no larger than the image (torchvision reflects at the border).
    size = 2 * math.ceil(3 * sigma) + 1
    limit = 2 * ((min(height, width) - 1) // 2) + 1
    size = max(1, min(size, limit))
    return TF.gaussian_blur(inputs, [size, size], [sigma, sigma])


def deletion_insertion(
    model: LoadedModel,
    image: Image.Image,
    heatmap: np.ndarray,
    target: int | str | Objective | None = None,
    *,
    steps: int = 20,
    seed: int = 0,
    random_cell: int = RANDOM_CELL,
    random_orders: int = 1,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FaithfulnessCurves:
    """Deletion and insertion curves (RISE) of ``heatmap`` for ``target``, and their random-order baseline.

    Example: ``deletion_insertion(model, image, result.heatmap).beats_random  # True for a faithful map``.

    Args:
        model: What ``load_model`` returned.
        image: The image the map explains (a PIL image, path or bytes, decoded like ``explain`` does).
        heatmap: ``(H, W)`` map registered on the image (e.g. ``Explanation.heatmap`` or ``raw_map``); any size,
            it is resized to the model input. Only the order of its values matters.
        target: What ``explain`` took: a class index or name (for a segmentation, that class's region predicted
            on the image) or an objective; default: what ``explain`` explains by default. Measured as
            ``objective.probability`` with the model's activation: a class's softmax (or sigmoid, for a
            multi-label model) probability, a weighted mean of several, a binary logit's sigmoid, or a class's
            probability averaged over a region fixed on the unmasked image.
        steps: Number of steps from 0 to 100 % of the pixels (``steps + 1`` points per curve).
        seed: Seeds the random orders and the order among pixels of equal heat.
        random_cell: Cell size, in input pixels, of the random map that orders the pixels for the chance level
            (see the module docstring); 1 orders single pixels independently.
        random_orders: Number of random orders averaged into the chance-level curves.
        batch_size: Images per model call; ``2 + 2 (steps - 1) (1 + random_orders)`` images are scored in all.
            ``None`` keeps the largest activation of a batch small, as for Score-CAM (see
            :func:`gradcam_core.cam.masked_batch_size`): EfficientNet-Lite0 at 224 × 352 takes 2 images per
            call, 1.0 s in all against 1.3-1.4 s in batches of 4 and 1.8 s in batches of 8.
        progress: Called as ``progress(done, total)`` after each model call; an exception it raises (a user's
            cancel) stops the work.

    Raises:
        TrustCheckError: the heatmap is not a finite 2-D array, or ``steps``, ``random_cell`` or
            ``random_orders`` is below 1.
        TargetError: the class is unknown or out of range.
        ModelError: the objective does not fit the model's output (e.g. a region of a classifier).
    """
    if steps < 1 or random_cell < 1 or random_orders < 1 or (batch_size is not None and batch_size < 1):
        raise TrustCheckError("Steps, random cell size, random orders and batch size must all be at least 1.")
    heat = _as_map(heatmap, "heatmap")
    if target is not None and not isinstance(target, Objective):
        target = resolve_class(target, model.categories)
    inputs = to_input(load_image(image), model.preprocessing)
    baseline = blur_baseline(inputs)
    batch_size = batch_size or masked_batch_size(model.model, inputs)
    height, width = inputs.shape[-2:]
    shrink = heat.shape[0] > height and heat.shape[1] > width
    heat = cv2.resize(heat, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    rng = np.random.default_rng(seed)
    cells = None if random_cell <= 1 else (max(1, round(height / random_cell)), max(1, round(width / random_cell)))
    orders = [hottest_first(rng, heat)]
    orders += [random_order(rng, (height, width), cells) for _ in range(random_orders)]
    pixels = height * width
    counts = np.round(np.arange(steps + 1) * pixels / steps).astype(np.int64)
    objective, deletions, insertions = _objective_curves(
        model.model, model.activation, inputs, baseline, orders, counts, target, True, batch_size, progress
    )
    random_deletion, random_insertion = deletions[1:].mean(axis=0), insertions[1:].mean(axis=0)
    fractions = counts / pixels
    return FaithfulnessCurves(
        fractions=fractions,
        deletion=deletions[0],
        insertion=insertions[0],
        random_deletion=random_deletion,
        random_insertion=random_insertion,
        deletion_auc=curve_area(fractions, deletions[0]),
        insertion_auc=curve_area(fractions, insertions[0]),
        random_deletion_auc=curve_area(fractions, random_deletion),
        random_insertion_auc=curve_area(fractions, random_insertion),
        target=int(objective.classes(1)[0]),
        objective=objective,
    )


def masked_curves(
    network: nn.Module,
    activation: str,
    inputs: Tensor,
    baseline: Tensor,
    orders: list[np.ndarray],
    counts: np.ndarray,
    target: int | Objective | None = None,
    *,
    insertion: bool = True,
    batch_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, np.ndarray, np.ndarray | None]:
    """Deletion (and insertion) curves of an input with any number of spatial axes (an image, a volume).

    Example: ``masked_curves(net, "softmax", x, torch.zeros_like(x), [order], np.array([0, 100, 4096]))``.

    Args:
        network: The classifier (or segmentation network), run in eval mode without gradients.
        activation: ``"softmax"`` or ``"sigmoid"``: how its outputs become the measured probability.
        inputs: ``(1, C, *spatial)`` model input.
        baseline: Shaped like ``inputs``: what a deleted position takes, and what positions are revealed on.
        orders: Flat indices of the spatial positions, first deleted first (:func:`hottest_first`,
            :func:`random_order`).
        counts: Positions deleted (or revealed) at each step, from 0 to every position.
        target: What is measured: a class index (a segmentation's: its region predicted on ``inputs``) or an
            objective, read as ``objective.probability``; default: what ``inputs`` is explained for by default.
        insertion: Also reveal the positions on the baseline (insertion curves).
        batch_size: Masked inputs per model call.
        progress: Called as ``progress(done, total)`` after each model call; an exception it raises stops the work.

    Returns:
        The class measured (``Objective.classes``), the deletion curves ``(len(orders), len(counts))`` and the
        insertion curves (``None`` without ``insertion``).
    """
    objective, deletions, insertions = _objective_curves(
        network, activation, inputs, baseline, orders, counts, target, insertion, batch_size, progress
    )
    return int(objective.classes(1)[0]), deletions, insertions


def _objective_curves(
    network: nn.Module,
    activation: str,
    inputs: Tensor,
    baseline: Tensor,
    orders: list[np.ndarray],
    counts: np.ndarray,
    target: int | Objective | None,
    insertion: bool,
    batch_size: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[Objective, np.ndarray, np.ndarray | None]:
    """:func:`masked_curves` with the objective measured (fixed on the unmasked input) instead of its class."""
    # Every curve starts and ends on the original or the baseline: score those two once, then the inner steps,
    # building each batch of masked inputs only when it is scored.
    masks = torch.cat([_step_masks(order, counts[1:-1], tuple(inputs.shape[2:])) for order in orders])
    masks = [chunk for chunk in masks.split(batch_size) if len(chunk)]
    original, blank = inputs[0], baseline[0]
    batches = [lambda: torch.cat([inputs, baseline])]
    batches += [lambda chunk=chunk: torch.where(chunk, blank, original) for chunk in masks]  # deleted
    if insertion:
        batches += [lambda chunk=chunk: torch.where(chunk, original, blank) for chunk in masks]  # inserted
    objective, probabilities = None, []
    with eval_mode(network), torch.no_grad():
        for batch in batches:
            output = model_output(network(batch()))
            if objective is None:  # the unmasked input's: a region is never redrawn on a masked copy
                objective = as_objective(target, output[:1], activation).for_image(0)
            probabilities.append(objective.probability(output, activation))  # sigmoid for a multi-label model
            if progress is not None:
                progress(len(probabilities), len(batches))
    scores = torch.cat(probabilities).double().numpy()
    full, empty = np.full((len(orders), 1), scores[0]), np.full((len(orders), 1), scores[1])
    inner = scores[2:].reshape(2 if insertion else 1, len(orders), len(counts) - 2)
    deletions = np.concatenate([full, inner[0], empty], axis=1)
    return objective, deletions, np.concatenate([empty, inner[1], full], axis=1) if insertion else None


def hottest_first(rng: np.random.Generator, heat: np.ndarray) -> np.ndarray:
    """Flat indices of ``heat`` (any shape), hottest first; positions of equal heat (e.g. the zeros after ReLU)
    in a random order drawn from ``rng``."""
    return np.lexsort((rng.permutation(heat.size), -heat.ravel().astype(np.float64)))


def random_order(rng: np.random.Generator, shape: tuple[int, ...], cells: tuple[int, ...] | None) -> np.ndarray:
    """Flat indices of a grid of ``shape`` sorted by a random map of ``cells`` enlarged to it as a CAM is (linear
    interpolation, ``align_corners=False``); ``None`` orders the positions independently."""
    tiebreak = rng.permutation(math.prod(shape))
    if cells is None:
        return tiebreak
    grid = torch.from_numpy(rng.random(cells).astype(np.float32))[None, None]
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
    smooth = torch.nn.functional.interpolate(grid, size=shape, mode=mode, align_corners=False)[0, 0].numpy()
    return np.lexsort((tiebreak, -smooth.ravel().astype(np.float64)))


def _step_masks(order: np.ndarray, counts: np.ndarray, shape: tuple[int, ...]) -> Tensor:
    """``(len(counts), 1, *shape)`` masks: True on the first ``counts[k]`` positions of ``order``."""
    size = math.prod(shape)
    rank = torch.empty(size, dtype=torch.int64)
    rank[torch.from_numpy(order)] = torch.arange(size)
    return (rank[None, :] < torch.from_numpy(counts)[:, None]).reshape(-1, 1, *shape)


def curve_area(x: np.ndarray, y: np.ndarray) -> float:
    """Area under ``y(x)`` by the trapezoid rule."""
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


# ----------------------------------------------------------------------------------------------- sanity check


@dataclass(frozen=True, eq=False)
class RandomizedModel:
    """A deep copy of a model with its top layers re-initialised, for :func:`sanity_check` (cache and reuse it).

    Attributes:
        model: The randomised copy (the caller's model is untouched).
        modules: Dotted names of the re-initialised modules, from the output down.
        layer: The target layer the default depth was chosen for.
        seed: Seed of the re-initialisation.
    """

    model: nn.Module
    modules: tuple[str, ...]
    layer: str
    seed: int


@dataclass(frozen=True, eq=False)
class SanityCheck:
    """The same map from the real model and from a copy with randomised top layers, and how alike they are.

    Attributes:
        real_map: ``(h, w)`` raw map of the real model (after ReLU, at the layer's resolution).
        random_map: ``(h, w)`` raw map of the randomised copy, same class, layer and method.
        similarity: Spearman rank correlation of the two maps upsampled to the model input (-1 to 1; 0 when
            either map is constant).
        suspicious: ``|similarity| > threshold``: the map survives the randomisation (as it is or inverted), so
            the method barely depends on the learned weights.
        threshold: The similarity above which the map is flagged.
        randomized_modules: Dotted names of the re-initialised modules, from the output down.
        target: The class explained (``Objective.classes``).
        layer: The target layer.
        method: The CAM method.
        objective: What both maps explain: the real model's objective (a region as the real model predicts it).
    """

    real_map: np.ndarray
    random_map: np.ndarray
    similarity: float
    suspicious: bool
    threshold: float
    randomized_modules: tuple[str, ...]
    target: int
    layer: str
    method: str
    objective: Objective | None = None


def randomized_copy(
    model: LoadedModel | nn.Module,
    layer: str | None = None,
    *,
    randomize: int | None = None,
    seed: int = 0,
) -> RandomizedModel:
    """A deep copy of ``model`` with its top parameterised modules re-initialised (the caller's model is untouched).

    Example: ``randomized_copy(model, "layer4").modules  # ("fc", "layer4.1.bn2", ...)``.

    Args:
        model: What ``load_model`` returned, or a torch module.
        layer: Target layer (dotted name); default: the loaded model's default layer.
        randomize: How many parameterised modules to re-initialise, counted back from the output in forward
            order (1 = the classifier head only; more cascades down, past the target layer if asked). Default:
            every parameterised module from the target layer (inclusive, with its submodules) to the output.
        seed: Seed of the re-initialisation (the global RNG is left as it was).

    Raises:
        LayerError: the layer is unknown.
        TrustCheckError: ``randomize`` is below 1 or the model has no parameterised module to randomise.
    """
    module = model.model if isinstance(model, LoadedModel) else model
    if layer is None:
        if not isinstance(model, LoadedModel):
            raise TrustCheckError("Name the target layer: a bare torch module has no default layer.")
        layer = model.default_layer
    layer_name, _ = resolve_layer(module, layer)
    if randomize is not None and randomize < 1:
        raise TrustCheckError(f"Randomise at least one module, not {randomize}.")
    if isinstance(model, LoadedModel):
        prep = model.preprocessing
        probe = torch.zeros(1, prep.channels, prep.size, prep.size)
    else:
        probe = torch.zeros(1, 3, 224, 224)

    clone = _copy_without_engine_hooks(module)
    order = list(probe_forward(clone, probe))  # module names in the order the forward enters them
    parameterised = [name for name in order if any(True for _ in clone.get_submodule(name).parameters(recurse=False))]
    if randomize is None:
        start = order.index(layer_name) if layer_name in order else len(order)
        chosen = [name for name in parameterised if order.index(name) >= start]
    else:
        chosen = parameterised[-randomize:]
    if not chosen:
        raise TrustCheckError(f"No parameterised module runs after layer {layer_name!r}; nothing to randomise.")
    chosen.reverse()  # from the output down
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in chosen:
            _reinitialise(clone.get_submodule(name))
    return RandomizedModel(model=clone, modules=tuple(chosen), layer=layer_name, seed=seed)


def sanity_check(
    model: LoadedModel,
    image: Image.Image,
    layer: str | None = None,
    target: int | str | Objective | None = None,
    method: str = "gradcam",
    *,
    randomize: int | None = None,
    seed: int = 0,
    threshold: float = 0.5,
    randomized: RandomizedModel | None = None,
) -> SanityCheck:
    """Compare the map of ``model`` with the same map from a copy whose top layers are re-initialised.

    Example: ``sanity_check(model, image).suspicious  # False when the map depends on the weights``.

    Args:
        model: What ``load_model`` returned; never modified.
        image: The image (a PIL image, path or bytes).
        layer: Target layer; default: the model's default layer.
        target: What ``explain`` took: a class index or name, or an objective; default: what ``explain``
            explains by default. The random copy explains the real model's objective (for a segmentation class,
            the region the real model predicts, not the copy's).
        method: CAM method name.
        randomize: Depth of the randomisation, see :func:`randomized_copy`.
        seed: Seed of the re-initialisation.
        threshold: Absolute similarity above which the map is flagged as ``suspicious``.
        randomized: A copy made earlier by :func:`randomized_copy` for this model and layer (skips the copy).

    Raises:
        GradCamError: (a subclass of) for a bad image, layer, class or method.
    """
    layer_name = layer or model.default_layer_for(method)
    if randomized is None:
        randomized = randomized_copy(model, layer_name, randomize=randomize, seed=seed)
    inputs = to_input(load_image(image), model.preprocessing)
    if target is not None and not isinstance(target, Objective):
        target = resolve_class(target, model.categories)
    real = trace_cam(model.model, inputs, layer_name, target, method, activation=model.activation)
    # The copy explains the real model's objective: a class's region stays the one the real model predicts.
    fake = trace_cam(randomized.model, inputs, layer_name, real.objective, method, activation=model.activation)
    real_map = real.cam[0].numpy().astype(np.float32)
    random_map = fake.cam[0].numpy().astype(np.float32)
    size = (inputs.shape[2], inputs.shape[3])
    similarity = rank_correlation(heatmap_from_map(real_map, size), heatmap_from_map(random_map, size))
    return SanityCheck(
        real_map=real_map,
        random_map=random_map,
        similarity=similarity,
        suspicious=abs(similarity) > threshold,
        threshold=threshold,
        randomized_modules=randomized.modules,
        target=int(real.targets[0]),
        layer=layer_name,
        method=real.method,
        objective=real.objective.for_image(0),
    )


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equally shaped arrays (ties get their average rank; 0 if either is constant).

    Example: ``rank_correlation(np.array([1, 2, 3]), np.array([10, 20, 40]))  # 1.0``.
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise TrustCheckError(f"Cannot correlate maps of {a.size} and {b.size} values; give maps of the same shape.")
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    norm = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / norm if norm > 0 else 0.0


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``values``, ties sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    sizes = np.diff(np.r_[first, values.size])
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = (first + (sizes - 1) / 2)[group]
    return ranks


def _reinitialise(module: nn.Module) -> None:
    """Draw the module's own parameters afresh: ``reset_parameters()``, else a random permutation of each."""
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
        return
    with torch.no_grad():
        for parameter in module.parameters(recurse=False):
            flat = parameter.view(-1)
            flat.copy_(flat[torch.randperm(flat.numel())])


_HOOK_TABLES = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_HOOK_OPTIONS = ("_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")


def _copy_without_engine_hooks(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` without the engine's transient hooks (:mod:`.hooks`), safe while other threads
    explain with it.

    Other threads add and remove their hooks on the shared model meanwhile: deep-copying the live hook tables
    could fail (a dict changed size during iteration) or copy another thread's hook along with its tensors.
    Each table is snapshotted instead (one C-level copy, atomic under the GIL), the engine's hooks are left out,
    and the copy gets the snapshots (the owner's own hooks are shared, not copied).
    """
    memo: dict[int, object] = {}
    for module in model.modules():
        kept: set[int] = set()
        for name in _HOOK_TABLES:
            table = getattr(module, name, None)
            if isinstance(table, dict):
                snapshot = OrderedDict((key, hook) for key, hook in list(table.items()) if not is_engine_hook(hook))
                memo[id(table)] = snapshot
                kept.update(snapshot)
        for name in _HOOK_OPTIONS:  # per-hook flags, keyed like the hooks
            table = getattr(module, name, None)
            if isinstance(table, dict):
                memo[id(table)] = OrderedDict((key, flag) for key, flag in list(table.items()) if key in kept)
    return copy.deepcopy(model, memo)


# ------------------------------------------------------------------------------------------------ region check


@dataclass(frozen=True)
class RegionCheck:
    """How much of the map falls inside a region.

    Attributes:
        heat_share: Share of the map's total heat inside the region (0 to 1).
        area_share: Share of the image the region covers (0 to 1), the heat share a uniform map would give.
        peak_inside: The map's maximum falls inside the region (the pointing game; any of tied maxima counts).
    """

    heat_share: float
    area_share: float
    peak_inside: bool

    def describe(self) -> str:
        """A sentence such as ``60% of the heat in 20% of the image; the peak is inside``."""
        where = "inside" if self.peak_inside else "outside"
        return f"{self.heat_share:.0%} of the heat in {self.area_share:.0%} of the image; the peak is {where}."


def region_check(heatmap: np.ndarray, mask: np.ndarray) -> RegionCheck:
    """Share of the heat inside ``mask``, the mask's share of the image, and whether the peak falls inside.

    Example: ``region_check(result.heatmap, mask).describe()  # "60% of the heat in 20% of the image; ..."``.

    Args:
        heatmap: ``(H, W)`` non-negative map registered on the image (e.g. ``Explanation.heatmap``).
        mask: ``(H, W)`` region on the same image, boolean (or non-zero = inside).

    Raises:
        TrustCheckError: the shapes differ, the region is empty, or the map is negative, non-finite or all zero.
    """
    heat = _as_map(heatmap, "heatmap").astype(np.float64)
    region = np.asarray(mask)
    if region.shape != heat.shape:
        raise TrustCheckError(
            f"The region is {region.shape[1] if region.ndim > 1 else '?'}×{region.shape[0] if region.ndim else '?'} "
            f"but the heatmap is {heat.shape[1]}×{heat.shape[0]}; draw the region on the same image."
        )
    region = region.astype(bool)
    if not region.any():
        raise TrustCheckError("The region is empty; draw or upload a region that covers part of the image.")
    if (heat < 0).any():
        raise TrustCheckError("The heatmap has negative values; pass a map after ReLU such as Explanation.heatmap.")
    total = float(heat.sum())
    if total <= 0:
        raise TrustCheckError("The heatmap is all zero, so there is no heat to place inside or outside the region.")
    return RegionCheck(
        heat_share=float(heat[region].sum()) / total,
        area_share=float(region.mean()),
        peak_inside=bool(region[heat == heat.max()].any()),
    )


def _as_map(values: np.ndarray, what: str) -> np.ndarray:
    """A finite 2-D float32 array, or a TrustCheckError."""
    array = np.asarray(values)
    if array.ndim != 2 or array.size == 0:
        raise TrustCheckError(f"The {what} must be a 2-D array (height, width), not of shape {array.shape}.")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise TrustCheckError(f"The {what} contains NaN or infinite values.")
    return array
