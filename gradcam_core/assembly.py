"""The last step of every model source: a built module, its classes and preprocessing become a ``LoadedModel``.

Whatever the source (torchvision weights, timm, MONAI, ONNX, Hugging Face), the candidate layers, whether the
model segments, the default layer (the last feature map that is not a pooling; for a segmentation model the
deepest map that is not class scores; unless the source knows better), the activated layer of the methods
with non-negative weights and the weights' digest are found here, by the same rules::

    loaded = assemble_model(model, categories, preprocessing, name="chest", title="resnet18 (chest.pt)",
                            weights=data)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import ModelError
from .layers import LayerInfo, activated_layer, candidate_layers, last_feature_map, segmentation_layer
from .models import LoadedModel
from .modes import eval_mode
from .objectives import model_output
from .preprocess import Preprocessing
from .targets import check_activation

__all__ = ["assemble_model"]


def assemble_model(
    model: nn.Module,
    categories: Sequence[str],
    preprocessing: Preprocessing,
    *,
    name: str,
    title: str,
    weights: bytes | None = None,
    weights_file: Path | None = None,
    activation: str = "softmax",
    default_layer: Callable[[Sequence[LayerInfo]], str] | None = None,
    subject: str = "The model",
) -> LoadedModel:
    """``model`` (built, weights loaded) ready to explain: layers probed once, defaults chosen, in eval mode.

    Example: see the module docstring.

    Args:
        model: The classifier; it is put in eval mode.
        categories: One class name per output.
        preprocessing: How images become its inputs (``size`` and ``channels`` are used to probe it).
        name: Name shown in results and used as a cache key.
        title: Name shown to users.
        weights: The bytes the weights came from, hashed for the report.
        weights_file: Where they came from, when a path.
        activation: ``"softmax"`` or ``"sigmoid"``.
        default_layer: Picks the default among the candidate layers (default: ``layers.last_feature_map``, or
            ``layers.segmentation_layer`` for a model whose output is ``(N, C, H, W)``).
        subject: How messages name the model, e.g. ``"The resnet18 model"``.

    Raises:
        ModelError: the model cannot run on an input of the preprocessing's size, or has no spatial feature map.
    """
    check_activation(activation)
    model.eval()
    size, channels = preprocessing.size, preprocessing.channels
    try:
        layers = candidate_layers(model, torch.zeros(1, channels, size, size))
    except Exception as exc:  # e.g. a ViT built for another input size
        raise ModelError(
            f"{subject} could not run on a {size}×{size} input ({type(exc).__name__}); "
            "check the input size it was trained with."
        ) from exc
    if not layers:
        raise ModelError(f"{subject} has no spatial feature map to explain at input size {size}.")
    probe = torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(0))
    classes = _segmentation_classes(model, probe)
    if default_layer is not None:
        layer = default_layer(layers)
    else:
        layer = last_feature_map(layers) if classes is None else segmentation_layer(layers, classes)
    return LoadedModel(
        name=name,
        title=title,
        model=model,
        categories=tuple(categories),
        preprocessing=preprocessing,
        default_layer=layer,
        layers=tuple(layers),
        weights_file=weights_file,
        activation=activation,
        weights_sha256=None if weights is None else hashlib.sha256(weights).hexdigest(),
        activated_layer=activated_layer(model, layers, layer, probe),
        segmentation=classes is not None,
    )


def _segmentation_classes(model: nn.Module, probe: Tensor) -> int | None:
    """The number of classes if ``model`` segments (its output is ``(N, C, H, W)``, see ``objectives``), else None.

    An output the engine cannot read is left for :func:`gradcam_core.explain` to report.
    """
    with eval_mode(model), torch.no_grad():
        output = model(probe)
    try:
        scores = model_output(output)
    except ModelError:
        return None
    return int(scores.shape[1]) if scores.ndim == 4 else None
