"""The steps of one CAM computation as plain NumPy arrays, for teaching figures and notebooks.

``explain(..., keep_trace=True)`` keeps every intermediate of its one forward pass and one partial backward
(a :class:`~gradcam_core.cam.CamTrace` of tensors). :func:`cam_steps` turns image 0 of that trace into a
:class:`CamSteps` of NumPy arrays: nothing is recomputed, so the figures show exactly the numbers behind the
map. In a notebook::

    import matplotlib.pyplot as plt, numpy as np
    from gradcam_core import explain, teaching
    result = explain("assets/chelsea.png", keep_trace=True)     # one forward, one partial backward
    steps = teaching.cam_steps(result.trace)                     # NumPy: A^k, alpha_k^c, sum, ReLU, y^c
    top = teaching.top_channels(steps.weights, 8)                # the 8 channels with the largest weights
    plt.bar(range(steps.num_channels), np.sort(steps.weights)[::-1])

``steps.cam`` equals ``result.raw_map`` and ``heatmap_from_map(steps.cam, (H, W))`` equals ``result.heatmap``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from .cam import CamTrace
from .methods import get_method

__all__ = ["CamSteps", "cam_steps", "channel_weights", "top_channels"]

Order = Literal["largest", "smallest", "magnitude"]


@dataclass(frozen=True, eq=False)
class CamSteps:
    """One image's CAM computation, step by step, as NumPy arrays.

    Shapes: K channels, (h, w) the layer's spatial size.

    Attributes:
        activations: ``(n, h, w)`` float32 feature maps A^k of the channels in ``channels`` (all K unless
            :meth:`keep` dropped some).
        channels: ``(n,)`` channel indices of ``activations``.
        weights: ``(K,)`` float32 channel weights alpha_k^c. For element-wise methods (HiResCAM, LayerCAM) the
            weights are ``(K, h, w)`` maps and this is their spatial mean.
        elementwise: Whether the method weights every cell separately (``CamMethod.elementwise``; then
            ``weights`` is a mean).
        contributions: ``(K,)`` float32 spatial mean of each channel's term weights_k * A^k of the weighted sum
            (they add up to the mean of ``weighted_sum``): what each channel brings to the map.
        weighted_sum: ``(h, w)`` float32 sum_k weights_k * A^k, before the ReLU.
        cam: ``(h, w)`` float32 ReLU of ``weighted_sum``: the raw map.
        score: y^c, the explained class score before softmax.
        target: Index of the explained class.
        method: Registry name of the CAM method.
    """

    activations: np.ndarray
    channels: np.ndarray
    weights: np.ndarray
    elementwise: bool
    contributions: np.ndarray
    weighted_sum: np.ndarray
    cam: np.ndarray
    score: float
    target: int
    method: str

    @property
    def num_channels(self) -> int:
        """K, the layer's number of channels."""
        return int(self.weights.shape[0])

    def activation(self, channel: int) -> np.ndarray:
        """A^k for channel ``k``, ``(h, w)``.

        Raises:
            KeyError: the channel was dropped by :meth:`keep`.
        """
        found = np.flatnonzero(self.channels == channel)
        if not found.size:
            raise KeyError(f"Channel {channel} was not kept.")
        return self.activations[found[0]]

    def keep(self, channels: np.ndarray) -> CamSteps:
        """A copy holding only the feature maps of ``channels`` (weights and maps are kept whole)."""
        wanted = np.asarray(channels, dtype=np.int64).reshape(-1)
        maps = [self.activation(int(c)) for c in wanted]
        kept = np.stack(maps) if maps else self.activations[:0]
        return replace(self, activations=kept.copy(), channels=wanted.copy())


def cam_steps(trace: CamTrace, index: int = 0) -> CamSteps:
    """Image ``index`` of ``trace`` as NumPy arrays; only the means (``weights``, ``contributions``) are computed.

    Example: ``cam_steps(explain("cat.jpg", keep_trace=True).trace).weights  # (K,) alpha_k^c``.
    """
    activations = trace.activations[index].numpy().astype(np.float32, copy=False)
    return CamSteps(
        activations=activations,
        channels=np.arange(activations.shape[0]),
        weights=channel_weights(trace, index),
        elementwise=get_method(trace.method).elementwise,
        contributions=(trace.weights[index] * trace.activations[index]).mean(dim=(1, 2)).numpy().astype(np.float32),
        weighted_sum=trace.weighted_sum[index].numpy().astype(np.float32, copy=False),
        cam=trace.cam[index].numpy().astype(np.float32, copy=False),
        score=float(trace.scores[index]),
        target=int(trace.targets[index]),
        method=trace.method,
    )


def channel_weights(trace: CamTrace, index: int = 0) -> np.ndarray:
    """``(K,)`` float32 weight of each channel: alpha_k^c, or the spatial mean of element-wise weights.

    Example: ``channel_weights(trace_cam(model, x, "layer4"))  # (2048,)``.
    """
    weights = trace.weights[index]
    if get_method(trace.method).elementwise:
        weights = weights.mean(dim=(1, 2))
    return weights.reshape(weights.shape[0]).numpy().astype(np.float32, copy=False)


def top_channels(weights: np.ndarray, k: int, order: Order = "largest") -> np.ndarray:
    """Indices of ``k`` channels: the largest weights first, the most negative first, or the largest |weight|.

    Ties keep the lower channel index first. Example: ``top_channels(np.array([0.1, -2.0, 0.5]), 2)  # [2, 0]``.
    """
    weights = np.asarray(weights)
    key = {"largest": -weights, "smallest": weights, "magnitude": -np.abs(weights)}[order]
    return np.argsort(key, kind="stable")[: max(0, k)]

