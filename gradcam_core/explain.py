"""Image-level explanations: decode, preprocess, compute the map, register it on the original image."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import cv2
import numpy as np
from PIL import Image
from torch import Tensor

from .cam import CamTrace, Progress, trace_cam
from .errors import MethodError
from .imaging import load_image
from .methods import get_method
from .models import LoadedModel, shared_model
from .preprocess import to_input
from .objectives import Objective, RegionScore, class_probabilities
from .targets import Prediction, ranked_predictions, resolve_class, top_predictions

__all__ = ["Explanation", "ExplanationSummary", "explain", "heatmap_from_map"]

ImageSource = Image.Image | bytes | str | os.PathLike


@dataclass(frozen=True, eq=False)
class ExplanationSummary:
    """What an explanation found, without pixels: small enough to keep per image and setting.

    The dashboard caches this, the CSV table reads it, and :class:`Explanation` extends it with the picture.

    Example::

        summary = explain("cat.jpg").summary()
        summary.heatmap_at((300, 451))      # the heatmap for a 451 x 300 picture

    Attributes:
        raw_map: ``(h, w)`` float32 map at the layer's resolution, after ReLU, before normalisation.
        strength: Maximum of ``raw_map``: how strong the evidence is, in the layer's units.
        predictions: Top-k classes with probabilities (softmax, or sigmoid for a multi-label model; for a
            segmentation model, each class's probability averaged over the pixels).
        target: What was explained, as a prediction: for a class, the class and its probability; for another
            objective its ``label`` (``"effusion + nodule"``, ``"not pneumonia"``, ``"tumour (region)"``), the
            class it is about (``Objective.classes``) and its ``probability`` (see :mod:`.objectives`).
        score: Its score before softmax (y^c, the objective's value).
        model: Registry name of the model.
        layer: Dotted name of the target layer.
        method: Registry name of the CAM method.
        input_size: ``(height, width)`` of the tensor the model saw (the whole image, resized).
        segmentation: For a segmentation model, the ``(H, W)`` int16 class the model gives each pixel (its
            arg-max), at the output's size (the input's, for most models): resize it with nearest neighbours.
        region: For a region objective, the ``(H, W)`` bool region whose score was explained, at the same size.
        notice: One sentence when the map was not computed on the model itself: the model could not be trusted
            on this input (``LoadedModel.check_output``), so another runtime computed it (``runtime_cam``).
    """

    raw_map: np.ndarray
    strength: float
    predictions: tuple[Prediction, ...]
    target: Prediction
    score: float
    model: str
    layer: str
    method: str
    input_size: tuple[int, int]
    segmentation: np.ndarray | None = field(default=None, kw_only=True)
    region: np.ndarray | None = field(default=None, kw_only=True)
    notice: str | None = field(default=None, kw_only=True)

    def heatmap_at(self, shape: tuple[int, ...]) -> np.ndarray:
        """The heatmap (float32 in [0, 1]) at the height and width of ``shape``; at the picture's size it equals
        :attr:`Explanation.heatmap` exactly."""
        return heatmap_from_map(self.raw_map, (shape[0], shape[1]))

    def summary(self) -> ExplanationSummary:
        """Only the pixel-free fields (the same arrays, not copies)."""
        return ExplanationSummary(**{item.name: getattr(self, item.name) for item in fields(ExplanationSummary)})


@dataclass(frozen=True, eq=False)
class Explanation(ExplanationSummary):
    """The explanation of one image: its :class:`ExplanationSummary` with the picture and the full-size heatmap.

    Attributes:
        image: The upright RGB original that was explained.
        heatmap: ``(H, W)`` float32 map in [0, 1] registered on ``image`` (raw map / its maximum, upsampled).
        trace: Every intermediate of the computation, when asked for with ``keep_trace=True``.
    """

    image: Image.Image
    heatmap: np.ndarray
    trace: CamTrace | None = None

    @classmethod
    def of(cls, summary: ExplanationSummary, image: Image.Image) -> Explanation:
        """The explanation of ``image`` whose pixel-free part is ``summary``.

        Example: ``Explanation.of(cached_summary, picture).heatmap``.
        """
        parts = {item.name: getattr(summary, item.name) for item in fields(ExplanationSummary)}
        return cls(**parts, image=image, heatmap=summary.heatmap_at((image.height, image.width)))


def explain(
    image: ImageSource,
    model: LoadedModel | str | None = None,
    layer: str | None = None,
    target: int | str | Objective | None = None,
    method: str = "gradcam",
    *,
    top_k: int = 5,
    keep_trace: bool = False,
    progress: Progress | None = None,
) -> Explanation:
    """Explain why ``model`` classifies ``image`` as ``target`` (or segments a region as it).

    Example: ``explain("cat.jpg", target="tabby", method="gradcam++").heatmap  # (H, W) in [0, 1]``.

    Args:
        image: A PIL image, a path or the bytes of an image file (decoded safely, see ``load_image``).
        model: What ``load_model`` returned, or a registry name (loaded once and reused); default: built-in.
        layer: Dotted name of the target layer; default: the model's default layer for ``method``
            (``LoadedModel.default_layer_for``).
        target: Class index or case-insensitive class name (for a segmentation model, that class's predicted
            region), or an objective (:mod:`gradcam_core.objectives`); default: the top-1 prediction (a
            single-logit model's logit; a segmentation's top class over its predicted region).
        method: CAM method name.
        top_k: Number of predictions to report.
        keep_trace: Also return every intermediate (activations, gradients, weights, pre-ReLU map).
        progress: ``progress(done, total)`` for methods that run many forward passes (Score-CAM); an exception
            raised by it cancels the explanation cleanly.

    A gradient-free model (``LoadedModel.gradient_free``), or an input the model cannot be trusted on
    (``LoadedModel.check_output``), is explained by ``LoadedModel.runtime_cam`` with a method that needs no
    gradients; a method that does is refused with the model's reason.

    Raises:
        GradCamError: (a subclass of) for a bad image, model, layer, class or method, with a one-sentence message.
    """
    loaded = model if isinstance(model, LoadedModel) else shared_model(model)
    picture = load_image(image)
    inputs = to_input(picture, loaded.preprocessing)
    if target is not None and not isinstance(target, Objective):
        target = resolve_class(target, loaded.categories)
    layer_name = layer or loaded.default_layer_for(method)
    notice = trace = None
    if loaded.gradient_free is None:
        trace = trace_cam(
            loaded.model, inputs, layer_name, target, method, progress=progress, activation=loaded.activation
        )
        notice = None if loaded.check_output is None else loaded.check_output(inputs, trace.logits)
    reason = loaded.gradient_free or notice
    if reason is not None:
        if get_method(method).needs_gradients or loaded.runtime_cam is None:
            raise MethodError(reason)
        trace = loaded.runtime_cam(
            inputs, layer_name, target, method, progress=progress, activation=loaded.activation
        )
    raw_map = trace.cam[0].numpy().astype(np.float32)
    objective, output = trace.objective.for_image(0), trace.logits[:1]
    return Explanation(
        image=picture,
        heatmap=heatmap_from_map(raw_map, (picture.height, picture.width)),
        raw_map=raw_map,
        strength=float(raw_map.max(initial=0.0)),
        predictions=predictions_of(output, loaded.categories, loaded.activation, top_k),
        target=explained_target(trace, loaded.categories, loaded.activation),
        score=float(trace.scores[0]),
        model=loaded.name,
        layer=layer_name,
        method=trace.method,
        input_size=(inputs.shape[2], inputs.shape[3]),
        segmentation=output[0].argmax(dim=0).numpy().astype(np.int16) if output.ndim == 4 else None,
        region=objective.region(output.shape[2:])[0].numpy() if isinstance(objective, RegionScore) else None,
        notice=notice,
        trace=trace if keep_trace else None,
    )


def predictions_of(
    output: Tensor, categories: Sequence[str], activation: str, top_k: int
) -> tuple[Prediction, ...]:
    """Top-k classes of one image's output ``(1, C)`` or ``(1, C, H, W)`` (see ``class_probabilities``)."""
    if output.ndim == 2 and output.shape[1] > 1:
        return top_predictions(output[0], categories, k=top_k, activation=activation)
    return ranked_predictions(class_probabilities(output, activation)[0], categories, top_k)


def explained_target(trace: CamTrace, categories: Sequence[str], activation: str) -> Prediction:
    """What the trace explained for its first image: the class (or objective) with its label and probability."""
    objective = trace.objective.for_image(0)
    return Prediction(
        int(trace.targets[0]), objective.label(categories), float(objective.probability(trace.logits[:1], activation)[0])
    )


def heatmap_from_map(raw_map: np.ndarray, size: tuple[int, int], scale: float | None = None) -> np.ndarray:
    """Divide a non-negative map by ``scale`` (default: its maximum) and upsample it bilinearly to ``size``.

    Example: ``heatmap_from_map(result.raw_map, (480, 640))`` equals ``result.heatmap`` for a 640×480 image.

    Args:
        raw_map: ``(h, w)`` map after ReLU.
        size: ``(height, width)`` of the image.
        scale: Value mapped to 1.0; a shared scale makes several maps comparable.

    Returns:
        ``(height, width)`` float32 array in [0, 1]; all zeros when the map has no positive evidence.
    """
    scale = float(raw_map.max(initial=0.0)) if scale is None else scale
    normalised = raw_map / scale if scale > 0 else np.zeros_like(raw_map)
    height, width = size
    upsampled = cv2.resize(normalised.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(upsampled, 0.0, 1.0, out=upsampled)

