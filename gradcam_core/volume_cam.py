"""Volume-level explanations: a 3-D scan through a 3-D classifier, the map at the layer's resolution.

The same engine as for images (:func:`gradcam_core.cam.trace_cam`, every method of :mod:`gradcam_core.methods`)
on a ``(1, C, D, H, W)`` input. The map stays at the layer's grid (``(d, h, w)``, e.g. 2 x 4 x 4): a 512 x 512 x
300 CT is never given a full-resolution float map here; views upsample the slice they show, on demand::

    result = explain_volume(read_volume("scan.nii.gz"), loaded, method="gradcam++")
    result.raw_map.shape, result.grid        # (d, h, w) at the layer, (D, H, W) of the scan
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cam import CamTrace, Progress, trace_cam
from .explain import explained_target, predictions_of
from .targets import Prediction, resolve_class
from .volume_models import LoadedVolumeModel, volume_input
from .volumes import Volume

__all__ = ["VolumeExplanation", "explain_volume"]


@dataclass(frozen=True, eq=False)
class VolumeExplanation:
    """The explanation of one scan.

    Attributes:
        raw_map: ``(d, h, w)`` float32 map at the layer's resolution, after ReLU, before normalisation.
        grid: The scan's ``(D, H, W)``; the map covers the whole scan (the model saw it resized, uncropped).
        predictions: Top-k classes with probabilities (softmax, or sigmoid for a multi-label model).
        target: The explained class with its probability.
        score: Its score before softmax (y^c).
        model: Name of the model.
        layer: Dotted name of the target layer.
        method: Registry name of the CAM method.
        input_size: ``(D, H, W)`` of the tensor the model saw.
        trace: Every intermediate, when asked for with ``keep_trace=True``.
    """

    raw_map: np.ndarray
    grid: tuple[int, int, int]
    predictions: tuple[Prediction, ...]
    target: Prediction
    score: float
    model: str
    layer: str
    method: str
    input_size: tuple[int, int, int]
    trace: CamTrace | None = None

    @property
    def strength(self) -> float:
        """The map's maximum: how strong the evidence is, in the layer's units."""
        return float(self.raw_map.max(initial=0.0))


def explain_volume(
    volume: Volume,
    model: LoadedVolumeModel,
    layer: str | None = None,
    target: int | str | None = None,
    method: str = "gradcam",
    *,
    top_k: int = 5,
    keep_trace: bool = False,
    progress: Progress | None = None,
) -> VolumeExplanation:
    """Explain why ``model`` classifies ``volume`` as ``target``.

    Example: ``explain_volume(volume, loaded, target="nodule").raw_map  # (d, h, w)``.

    Args:
        volume: The scan (:func:`gradcam_core.volumes.read_volume`).
        model: What :func:`gradcam_core.volume_models.load_volume_model` returned.
        layer: Dotted name of the target layer; default: ``model.default_layer_for(method)``.
        target: Class index or case-insensitive class name; default: the top-1 prediction.
        method: CAM method name (every method of :data:`gradcam_core.methods.METHODS` works on 3-D maps).
        top_k: Number of predictions to report.
        keep_trace: Also return every intermediate (activations, gradients, weights, pre-ReLU map).
        progress: ``progress(done, total)`` for methods that run many forward passes (Score-CAM); an exception
            raised by it cancels the explanation cleanly.

    Raises:
        GradCamError: (a subclass of) for a scan the model cannot take, a bad layer, class or method, with a
            one-sentence message.
    """
    inputs = volume_input(volume, model.preprocessing)
    classes = None if target is None else resolve_class(target, model.categories)
    layer_name = layer or model.default_layer_for(method)
    trace = trace_cam(model.model, inputs, layer_name, classes, method, progress=progress, activation=model.activation)
    raw_map = trace.cam[0].numpy().astype(np.float32)
    return VolumeExplanation(
        raw_map=raw_map,
        grid=volume.shape,
        predictions=predictions_of(trace.logits[:1], model.categories, model.activation, top_k),
        target=explained_target(trace, model.categories, model.activation),
        score=float(trace.scores[0]),
        model=model.name,
        layer=layer_name,
        method=trace.method,
        input_size=tuple(inputs.shape[2:]),
        trace=trace if keep_trace else None,
    )
