"""Image-level explanations: decode, preprocess, compute the map, register it on the original image."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from .cam import CamTrace, Progress, trace_cam
from .imaging import load_image
from .models import LoadedModel, load_model
from .preprocess import to_input
from .targets import Prediction, probabilities, resolve_class, top_predictions

__all__ = ["Explanation", "explain", "heatmap_from_map"]

ImageSource = Image.Image | bytes | str | os.PathLike


@dataclass(frozen=True, eq=False)
class Explanation:
    """The explanation of one image.

    Attributes:
        image: The upright RGB original that was explained.
        heatmap: ``(H, W)`` float32 map in [0, 1] registered on ``image`` (raw map / its maximum, upsampled).
        raw_map: ``(h, w)`` float32 map at the layer's resolution, after ReLU, before normalisation.
        strength: Maximum of ``raw_map``: how strong the evidence is, in the layer's units.
        predictions: Top-k classes with probabilities (softmax, or sigmoid for a multi-label model).
        target: The class explained.
        score: Its score before softmax (y^c).
        model: Registry name of the model.
        layer: Dotted name of the target layer.
        method: Registry name of the CAM method.
        input_size: ``(height, width)`` of the tensor the model saw (the whole image, resized).
        trace: Every intermediate of the computation, when asked for with ``keep_trace=True``.
    """

    image: Image.Image
    heatmap: np.ndarray
    raw_map: np.ndarray
    strength: float
    predictions: tuple[Prediction, ...]
    target: Prediction
    score: float
    model: str
    layer: str
    method: str
    input_size: tuple[int, int]
    trace: CamTrace | None = None


def explain(
    image: ImageSource,
    model: LoadedModel | str | None = None,
    layer: str | None = None,
    target: int | str | None = None,
    method: str = "gradcam",
    *,
    top_k: int = 5,
    keep_trace: bool = False,
    progress: Progress | None = None,
) -> Explanation:
    """Explain why ``model`` classifies ``image`` as ``target``.

    Args:
        image: A PIL image, a path or the bytes of an image file (decoded safely, see ``load_image``).
        model: What ``load_model`` returned, or a registry name (loaded once and reused); default: built-in.
        layer: Dotted name of the target layer; default: the model's default layer for ``method``
            (``LoadedModel.default_layer_for``).
        target: Class index or case-insensitive class name; default: the top-1 prediction.
        method: CAM method name.
        top_k: Number of predictions to report.
        keep_trace: Also return every intermediate (activations, gradients, weights, pre-ReLU map).
        progress: ``progress(done, total)`` for methods that run many forward passes (Score-CAM); an exception
            raised by it cancels the explanation cleanly.

    Raises:
        GradCamError: (a subclass of) for a bad image, model, layer, class or method, with a one-sentence message.
    """
    loaded = model if isinstance(model, LoadedModel) else _shared_model(model)
    picture = load_image(image)
    inputs = to_input(picture, loaded.preprocessing)
    class_index = None if target is None else resolve_class(target, loaded.categories)
    layer_name = layer or loaded.default_layer_for(method)
    trace = trace_cam(
        loaded.model, inputs, layer_name, class_index, method, progress=progress, activation=loaded.activation
    )
    raw_map = trace.cam[0].numpy().astype(np.float32)
    logits = trace.logits[0]
    predictions = top_predictions(logits, loaded.categories, k=top_k, activation=loaded.activation)
    target_index = int(trace.targets[0])
    target_probability = float(probabilities(logits, loaded.activation)[target_index])
    return Explanation(
        image=picture,
        heatmap=heatmap_from_map(raw_map, (picture.height, picture.width)),
        raw_map=raw_map,
        strength=float(raw_map.max(initial=0.0)),
        predictions=predictions,
        target=Prediction(target_index, loaded.categories[target_index], target_probability),
        score=float(trace.scores[0]),
        model=loaded.name,
        layer=layer_name,
        method=trace.method,
        input_size=(inputs.shape[2], inputs.shape[3]),
        trace=trace if keep_trace else None,
    )


def heatmap_from_map(raw_map: np.ndarray, size: tuple[int, int], scale: float | None = None) -> np.ndarray:
    """Divide a non-negative map by ``scale`` (default: its maximum) and upsample it bilinearly to ``size``.

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


@functools.lru_cache(maxsize=2)
def _shared_model(name: str | None) -> LoadedModel:
    """A model loaded once per process for ``explain(model="name")`` (computations never mutate it)."""
    return load_model(name)
