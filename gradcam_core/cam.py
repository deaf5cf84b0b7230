"""Grad-CAM computation: one forward pass and a partial backward from the explained score to the target layer.

The score is an objective of the model's output (:mod:`gradcam_core.objectives`): a class's logit by default,
or a weighted combination of classes, a binary model's logit, a segmentation's class summed over a region.

How it stays fast and free of side effects:

* The forward runs under ``torch.no_grad()`` up to the target layer, so no graph is recorded for the early
  layers. A forward hook on the target layer replaces its output by a detached leaf that requires grad and
  turns grad mode on for the rest of this forward (grad mode is thread-local, and the enclosing ``no_grad``
  restores it on exit).
* ``torch.autograd.grad(score, leaf)`` differentiates with respect to that leaf only: no parameter ``.grad``
  is written, and nothing before the target layer is differentiated.
* Hooks live for one call and are removed in ``finally``. They only act in the thread that registered them,
  so many threads can explain with one shared model at once without a global lock.
* The model runs in eval mode; a model in training mode is switched under a per-model lock and every
  submodule's flag is restored afterwards.
* The leaf is the layer's output as an ``(N, C, h, w)`` map whatever its layout (channels-last maps of Swin,
  tokens of a vision transformer; see :mod:`gradcam_core.layouts`), so every method works on it unchanged; a
  3-D network's ``(N, C, d, h, w)`` map goes through the same code (every method reduces over all spatial dims).
* A method that needs no gradients (``CamMethod.needs_gradients`` false: Score-CAM, Eigen-CAM) skips the
  backward pass; its trace has no gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import LayerError
from .hooks import forward_hook
from .layers import probe_forward, resolve_layer
from .layouts import Layout, LayoutTracker, from_map, to_map
from .methods import CamInputs, get_method
from .modes import eval_mode
from .objectives import Objective, as_objective, model_output
from .targets import Targets, check_activation

__all__ = ["MASKED_BATCH_BYTES", "CamTrace", "compute_cam", "masked_batch_size", "masked_scores", "trace_cam"]

MASKED_BATCH_BYTES = 16 * 2**20
"""Largest activation of a batch of masked inputs (Score-CAM). Bigger tensors exceed glibc's mmap threshold
(at most 32 MB): every forward pass then maps fresh pages and their page faults cost more than batching
saves (``benchmarks/scorecam_batch.py``)."""
MAX_MASKED_BATCH = 32

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` while a method runs many forward passes (Score-CAM)."""


@dataclass(frozen=True)
class CamTrace:
    """Every intermediate of one CAM computation, for teaching and for notebooks.

    Shapes: N images, K channels, ``*spatial`` the layer's spatial size (``(h, w)``, or ``(d, h, w)`` for a 3-D
    network), C classes.

    Attributes:
        logits: ``(N, C)`` scores before softmax (``(N, C, H, W)`` for a segmentation model).
        targets: ``(N,)`` class index explained for each image (the class the objective is about, see
            ``Objective.classes``).
        scores: ``(N,)`` y^c, the explained score before softmax: the objective's value.
        activations: ``(N, K, *spatial)`` the layer's output A, as a channels-first map (a vision transformer's
            patch tokens on their grid, the class token left out).
        gradients: ``(N, K, *spatial)`` dy^c/dA; ``None`` for a method that needs none (Score-CAM, Eigen-CAM:
            the backward pass is skipped).
        weights: the method's weights, broadcastable to ``(N, K, *spatial)`` (``(N, K, 1, 1)`` for Grad-CAM).
        weighted_sum: ``(N, *spatial)`` sum_k weights_k * A^k, before the ReLU.
        cam: ``(N, *spatial)`` ReLU of ``weighted_sum``: the raw map.
        method: registry name of the method.
        objective: What was explained (``ClassScore`` for a class index).
    """

    logits: Tensor
    targets: Tensor
    scores: Tensor
    activations: Tensor
    gradients: Tensor | None
    weights: Tensor
    weighted_sum: Tensor
    cam: Tensor
    method: str
    objective: Objective


def compute_cam(
    model: nn.Module,
    inputs: Tensor,
    layer: str | nn.Module,
    targets: Targets | Objective = None,
    method: str = "gradcam",
    *,
    progress: Progress | None = None,
    batch_size: int | None = None,
    activation: str = "softmax",
) -> Tensor:
    """Raw class activation maps at the layer's resolution (after ReLU, before upsampling/normalisation).

    Example: ``compute_cam(model, x, "layer4", targets=281, method="gradcam++")  # (N, 7, 7)``.

    Args:
        model: A classifier returning logits ``(N, C)``, or a segmentation model returning ``(N, C, H, W)``
            (or a dict whose ``"out"`` is that, as torchvision's).
        inputs: Preprocessed batch ``(N, 3, H, W)`` (``(N, C, D, H, W)`` for a 3-D network).
        layer: Target layer, as a dotted module name or the module itself.
        targets: One class index per image (an int applies to all; for a segmentation, the class's predicted
            region), or an :class:`~gradcam_core.objectives.Objective`; ``None`` explains the default
            (``objectives.default_objective``: the top-1 class, a single logit, or the top class's region).
        method: A name from :data:`gradcam_core.methods.METHODS`.
        progress: Called as ``progress(done, total)`` by methods that run many forward passes; an exception
            it raises stops the computation cleanly (that is how a caller cancels).
        batch_size: Masked inputs per forward pass for such methods; ``None`` picks it for the model (see
            :func:`masked_batch_size`).
        activation: How the model's logits become probabilities, for methods that score masked inputs
            (Score-CAM, which reads ``Objective.probability``): ``"softmax"`` (single-label) or ``"sigmoid"``
            (multi-label).

    Returns:
        ``(N, h, w)`` float tensor, detached (``(N, d, h, w)`` for a 3-D network).

    Raises:
        LayerError: the layer is unknown, unused, called more than once, not a feature map (4-D, 5-D, or a vision
            transformer's tokens) or cannot change the class score.
        TargetError: a class index is out of range, the number of targets does not match the batch, or the
            objective does not fit the output (a binary logit of a multi-class model, an empty region...).
        ModelError: the activation is neither softmax nor sigmoid, or the model's output does not fit the
            objective (class scores, or a segmentation for a region).
        MethodError: the method is not registered.
    """
    return trace_cam(
        model, inputs, layer, targets, method, progress=progress, batch_size=batch_size, activation=activation
    ).cam


def trace_cam(
    model: nn.Module,
    inputs: Tensor,
    layer: str | nn.Module,
    targets: Targets | Objective = None,
    method: str = "gradcam",
    *,
    progress: Progress | None = None,
    batch_size: int | None = None,
    activation: str = "softmax",
) -> CamTrace:
    """Like :func:`compute_cam` but returns every intermediate (see :class:`CamTrace`).

    Example: ``trace_cam(model, x, "layer4").weights  # (N, K, 1, 1) alpha_k^c``.
    """
    cam_method = get_method(method)
    check_activation(activation)
    layer_name, module = resolve_layer(model, layer)
    if inputs.is_inference():
        inputs = inputs.clone()
    if cam_method.forward_passes and batch_size is None:
        batch_size = masked_batch_size(model, inputs)
    with eval_mode(model), torch.inference_mode(False):
        capture = _LayerCapture(model, module, layer_name)
        try:
            with torch.no_grad():
                output = model(inputs)
                objective = as_objective(targets, output, activation)
                scores = objective(output)
                logits = model_output(output)
        finally:
            capture.remove()
        activations = capture.activation(scores)
        gradients = _gradients(scores, activations, layer_name) if cam_method.needs_gradients else None
        activations = activations.detach()

        def scores_of_masked(maps: Tensor) -> Tensor:
            return masked_scores(model, inputs, objective, maps, batch_size, progress, activation)

        weights = cam_method.weights(CamInputs(activations, gradients, scores_of_masked))
    weighted_sum = (weights * activations).sum(dim=1)
    return CamTrace(
        logits=logits.detach(),
        targets=objective.classes(inputs.shape[0]).to(scores.device),
        scores=scores.detach(),
        activations=activations,
        gradients=gradients,
        weights=weights,
        weighted_sum=weighted_sum,
        cam=torch.relu(weighted_sum),
        method=cam_method.name,
        objective=objective,
    )


def _gradients(scores: Tensor, activations: Tensor, layer_name: str) -> Tensor:
    """dy^c/dA: the one partial backward from the scores to the layer's leaf."""
    (gradients,) = torch.autograd.grad(scores.sum(), activations, allow_unused=True)
    if gradients is None:
        raise LayerError(f"The class score does not depend on layer {layer_name!r}; pick an earlier layer.")
    return gradients


def masked_batch_size(model: nn.Module, inputs: Tensor) -> int:
    """How many masked copies of ``inputs[0]`` one forward pass should take (Score-CAM), from 1 to 32.

    As many as keep the model's largest activation of a batch under :data:`MASKED_BATCH_BYTES` (found with one
    extra forward pass of the image alone). Example: ``masked_batch_size(model, x)  # 4``.
    """
    largest = 0

    def observe(name: str, module: nn.Module, output: object) -> None:
        nonlocal largest
        if isinstance(output, Tensor):
            largest = max(largest, output.numel() * output.element_size())

    probe_forward(model, inputs[:1], observe)
    return max(1, min(MAX_MASKED_BATCH, MASKED_BATCH_BYTES // max(largest, 1)))


def masked_scores(
    model: Callable[[Tensor], object],
    inputs: Tensor,
    objective: Objective,
    maps: Tensor,
    batch_size: int,
    progress: Progress | None,
    activation: str,
) -> Tensor:
    """The objective's probability (``Objective.probability``: for a class, its softmax or sigmoid probability)
    of ``inputs[n] * mask`` for every map of every image (Score-CAM). ``model`` is anything that runs a batch:
    a module, or a gradient-free runner such as onnxruntime's session behind a function.

    Each map is upsampled to the input size (bilinearly, or trilinearly for a 3-D network's ``(N, M, d, h, w)``
    maps) and min-max scaled to [0, 1] over all its spatial dimensions. A constant map has no
    region to show and scores 0 without a forward pass, as in the Score-CAM authors' code. Masks are made
    batch by batch, so memory stays at ``batch_size`` inputs.
    """
    batch, count = maps.shape[:2]
    size = inputs.shape[2:]
    mode = "trilinear" if maps.ndim == 5 else "bilinear"
    spatial = tuple(range(2, maps.ndim))
    scores = torch.zeros(batch, count, dtype=inputs.dtype)
    flat = maps.flatten(2)
    informative = [torch.nonzero(flat[n].amax(1) > flat[n].amin(1)).flatten() for n in range(batch)]
    total, done = sum(len(channels) for channels in informative), 0
    with torch.no_grad():
        for n, channels in enumerate(informative):
            own = objective.for_image(n)
            for start in range(0, len(channels), batch_size):
                chunk = channels[start : start + batch_size]
                masks = torch.nn.functional.interpolate(maps[n, chunk, None], size=size, mode=mode)
                low = masks.amin(dim=spatial, keepdim=True)
                span = (masks.amax(dim=spatial, keepdim=True) - low).clamp_min(torch.finfo(masks.dtype).tiny)
                output = model(inputs[n : n + 1] * ((masks - low) / span))
                scores[n, chunk] = own.probability(output, activation).to(scores.dtype)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    return scores


class _LayerCapture:
    """A one-shot engine hook (:mod:`.hooks`) that swaps the layer's output for a leaf tensor, in this thread only.

    The leaf is the output as an ``(N, C, h, w)`` map (channels-last maps permuted, a vision transformer's patch
    tokens laid on their grid; a 5-D output is a 3-D network's channels-first map, taken as it is); the rest of
    the model runs on a copy rebuilt in the output's own layout.
    """

    def __init__(self, model: nn.Module, module: nn.Module, name: str) -> None:
        self._name = name
        self._leaf: Tensor | None = None
        self._layout: Layout | None = None
        self._attentions_before = 0
        self._tracker = LayoutTracker(model)  # first: its hooks must see a Permute target before ours does
        self._handle = forward_hook(module, self._hook)

    def _hook(self, module: nn.Module, args: object, output: object) -> Tensor | None:
        if self._leaf is not None:
            raise LayerError(
                f"Layer {self._name!r} runs more than once in the model's forward pass; pick another layer."
            )
        layout = self._tracker.layout(output)
        if layout is None:
            raise LayerError(
                f"Layer {self._name!r} does not output a 4-D feature map or vision transformer tokens; "
                "pick another layer."
            )
        self._layout, self._attentions_before = layout, self._tracker.attention_calls
        self._leaf = to_map(output, layout, self._tracker.grid).detach().requires_grad_(True)
        torch.set_grad_enabled(True)  # thread-local; restored by the caller's no_grad() on exit
        # A copy, so that an in-place op after the layer (e.g. DenseNet's relu) leaves the leaf intact.
        return from_map(self._leaf, layout, output)

    def activation(self, scores: Tensor) -> Tensor:
        """The captured leaf, after checking the forward reached the layer and the scores depend on it."""
        if self._leaf is None:
            raise LayerError(f"Layer {self._name!r} is not used by the model's forward pass; pick another layer.")
        if not scores.requires_grad:
            raise LayerError(f"The class score does not depend on layer {self._name!r}; pick an earlier layer.")
        if self._layout == "tokens" and self._tracker.attention_calls == self._attentions_before:
            raise LayerError(
                f"No attention runs after layer {self._name!r}, so its patch tokens never reach the class token; "
                "pick an earlier layer such as the last block's ln_1."
            )
        return self._leaf

    def remove(self) -> None:
        self._handle.remove()
        self._tracker.remove()

