"""Guided Backpropagation (Springenberg et al. 2015) and Guided Grad-CAM (Selvaraju et al. 2017).

Guided backpropagation is the gradient of the class score (before softmax) with respect to the input, where
the backward pass through every guided activation lets only positive gradients through, at positive inputs.
Guided Grad-CAM multiplies it by the Grad-CAM map upsampled to the input: fine detail, class-discriminative.
Both work on a 3-D network's volumes ``(N, C, D, H, W)`` too (its ``nn.ReLU`` modules are guided alike; the map
is upsampled trilinearly).

Which activations are guided: ``nn.ReLU`` and ``nn.ReLU6`` *modules* (:data:`GUIDED_ACTIVATIONS`). Captum
guides ``nn.ReLU`` only; the built-in EfficientNet-Lite0 uses ``nn.ReLU6`` modules throughout, so it is
guided too (its own derivative is the 0/1 mask of ``0 < x < 6``). Functional calls (``F.relu``,
``torch.relu``) are not seen and keep their plain gradient, as in Captum.

How it stays free of side effects, like :mod:`gradcam_core.cam`:

* Nothing in the model changes: a forward hook on each guided module registers a tensor hook on that call's
  output that clamps the incoming gradient to >= 0; the activation's own backward then applies its mask.
  An in-place ReLU (ResNet's, reused several times per block) needs no special care: its output tensor
  carries the ReLU's backward node, and a tensor hook keeps acting on the gradient of that version even if a
  later operation modifies the tensor in place. No ``inplace`` flag is changed and no module is swapped.
* Hooks live for one call, are removed in ``finally`` and act only in the thread that registered them, so
  threads can share one model.
* ``torch.autograd.grad`` differentiates with respect to a copy of the inputs only: no parameter ``.grad``
  is written and the caller's tensor is left alone. The model runs in eval mode (see :mod:`.modes`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .cam import trace_cam
from .errors import ModelError
from .explain import Explanation, ImageSource, explain
from .hooks import forward_hook
from .models import LoadedModel, shared_model
from .modes import eval_mode
from .preprocess import to_input
from .targets import Targets, class_scores, resolve_targets

__all__ = [
    "GUIDED_ACTIVATIONS",
    "GuidedExplanation",
    "explain_guided",
    "guide",
    "guided_backprop",
    "guided_gradcam",
]

GUIDED_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
"""Activation modules whose backward pass is guided (only positive gradients pass)."""


@dataclass(frozen=True, eq=False)
class GuidedExplanation:
    """Guided backpropagation and Guided Grad-CAM of one image, registered on the original image.

    Attributes:
        explanation: The CAM explanation they belong to (image, heatmap, target, predictions...).
        guided_backprop: ``(H, W, 3)`` float32 guided gradient at the image's size (a one-channel model's
            gradient is repeated on the three channels). Show it with :func:`gradcam_core.render.gradient_to_rgb`.
        guided_gradcam: ``(H, W, 3)`` float32 ``guided_backprop * explanation.heatmap``: the paper's product
            divided by the map's maximum, taken at the image's size.
    """

    explanation: Explanation
    guided_backprop: np.ndarray
    guided_gradcam: np.ndarray


def guided_backprop(model: nn.Module, inputs: Tensor, targets: Targets = None) -> Tensor:
    """Guided backpropagation of the class scores (before softmax) to the inputs.

    Example: ``guided_backprop(model, x, targets=281)  # same shape as x``.

    Args:
        model: A classifier returning logits ``(N, C)``.
        inputs: Preprocessed batch ``(N, 3, H, W)``, or volumes ``(N, C, D, H, W)`` (left untouched).
        targets: One class index per image (an int applies to all); ``None`` explains the top-1 class.

    Returns:
        Detached float tensor of the inputs' shape.

    Raises:
        ModelError: the model does not return class scores of shape ``(batch, classes)``.
        TargetError: a class index is out of range or the number of targets does not match the batch.
    """
    return _guided_gradients(model, inputs, targets)[0]


def guided_gradcam(
    model: nn.Module,
    inputs: Tensor,
    layer: str | nn.Module,
    targets: Targets = None,
    method: str = "gradcam",
    *,
    activation: str = "softmax",
) -> Tensor:
    """Guided Grad-CAM: guided backpropagation times the raw CAM map upsampled bilinearly to the input size
    (trilinearly for volumes ``(N, C, D, H, W)``).

    The map is :func:`gradcam_core.compute_cam`'s (after ReLU, not normalised), upsampled like the engine's
    heatmaps (bilinear, ``align_corners=False``); Captum's ``GuidedGradCam`` upsamples with nearest by default
    and agrees with this when given ``interpolate_mode="bilinear"``. Another CAM ``method`` gives, e.g.,
    Guided Grad-CAM++. Example: ``guided_gradcam(model, x, "layer4", targets=281)``.

    Args:
        model: A classifier returning logits ``(N, C)``.
        inputs: Preprocessed batch ``(N, 3, H, W)`` (left untouched).
        layer: Target layer of the CAM, as a dotted module name or the module itself.
        targets: One class index per image (an int applies to all); ``None`` explains the top-1 class.
        method: A name from :data:`gradcam_core.methods.METHODS`.
        activation: The model's output activation, ``"softmax"`` or ``"sigmoid"`` (only Score-CAM uses it).

    Returns:
        Detached float tensor of the inputs' shape.

    Raises:
        LayerError: the layer cannot be explained (see :func:`gradcam_core.compute_cam`).
        ModelError: the model does not return class scores of shape ``(batch, classes)``.
        TargetError: a class index is out of range or the number of targets does not match the batch.
    """
    trace = trace_cam(model, inputs, layer, targets, method, activation=activation)
    gradients, _ = _guided_gradients(model, inputs, trace.targets)
    mode = "trilinear" if inputs.ndim == 5 else "bilinear"
    cam = F.interpolate(trace.cam[:, None], size=inputs.shape[2:], mode=mode, align_corners=False)
    return gradients * cam


def explain_guided(
    image: ImageSource,
    model: LoadedModel | str | None = None,
    layer: str | None = None,
    target: int | str | None = None,
    method: str = "gradcam",
) -> GuidedExplanation:
    """Explain ``image`` with a CAM (see :func:`gradcam_core.explain`) and add its guided maps.

    Arguments are those of :func:`gradcam_core.explain`. Example: ``explain_guided("cat.jpg").guided_gradcam``.

    Raises:
        GradCamError: (a subclass of) for a bad image, model, layer, class or method.
    """
    loaded = model if isinstance(model, LoadedModel) else shared_model(model)
    return guide(explain(image, loaded, layer, target, method), loaded)


def guide(explanation: Explanation, model: LoadedModel) -> GuidedExplanation:
    """Add guided backpropagation and Guided Grad-CAM to an explanation made with ``model``.

    Only the guided gradient is computed (one forward and one backward pass); the CAM is the explanation's.
    Example: ``guide(explain("cat.jpg", model), model).guided_backprop``.

    Raises:
        ModelError: the explanation was made with another model.
    """
    if explanation.model != model.name:
        raise ModelError(
            f"This explanation was made with {explanation.model!r}, not {model.name!r}; guide it with the same model."
        )
    picture = explanation.image
    inputs = to_input(picture, model.preprocessing)
    gradients, _ = _guided_gradients(model.model, inputs, explanation.target.index)
    gradient = _to_image_size(gradients[0], (picture.height, picture.width))
    return GuidedExplanation(
        explanation=explanation,
        guided_backprop=gradient,
        guided_gradcam=gradient * explanation.heatmap[:, :, None],
    )


def _guided_gradients(model: nn.Module, inputs: Tensor, targets: Targets) -> tuple[Tensor, Tensor]:
    """Guided gradients of the inputs' shape and the class indices ``(N,)`` they explain."""
    with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        leaf = inputs.detach().clone().requires_grad_(True)
        with _guided_activations(model):
            logits = class_scores(model(leaf))
        target_idx = resolve_targets(targets, logits.detach())
        scores = logits.gather(1, target_idx[:, None]).sum()
        if not scores.requires_grad:  # the scores do not depend on the input at all
            return torch.zeros_like(leaf).detach(), target_idx
        (gradients,) = torch.autograd.grad(scores, leaf, allow_unused=True)
    if gradients is None:
        gradients = torch.zeros_like(leaf)
    return gradients.detach(), target_idx


@contextmanager
def _guided_activations(model: nn.Module) -> Iterator[None]:
    """Guide the backward pass through every guided activation the model runs, in this thread only."""

    def hook(module: nn.Module, args: object, output: object) -> None:
        if isinstance(output, Tensor) and output.requires_grad:
            output.register_hook(_positive_part)

    handles = []
    try:
        for module in model.modules():
            if isinstance(module, GUIDED_ACTIVATIONS):
                handles.append(forward_hook(module, hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _positive_part(gradient: Tensor) -> Tensor:
    return gradient.clamp_min(0)


def _to_image_size(gradient: Tensor, size: tuple[int, int]) -> np.ndarray:
    """A ``(C, h, w)`` gradient as a float32 ``(H, W, 3)`` array resized to ``size`` (bilinear; area to shrink)."""
    height, width = size
    array = gradient.expand(3, -1, -1).permute(1, 2, 0).numpy().astype(np.float32)
    shrink = height * width < array.shape[0] * array.shape[1]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(array), (width, height), interpolation=interpolation)
