"""Bring your own model: a torchvision architecture + a weights file + a labels file.

This module only puts the pieces together, each of which has its own module: the file is read within a
limit (:mod:`.files`), its tensors as data only (:mod:`.checkpoints`), the architecture is recognised and
built from them (:mod:`.architectures`), the class names are read (:mod:`.labels`) and the normalisation
is set per channel (:mod:`.preprocess`). Another source of models adds a module beside these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from .architectures import (
    architecture_name,
    build_model,
    custom_architectures,
    default_layer,
    matching_architectures,
    recognise_architecture,
    square_input,
)
from .checkpoints import MAX_WEIGHTS_BYTES, WeightsSource, read_state_dict
from .errors import ModelError
from .files import path_of, read_bounded
from .labels import MAX_LABELS_BYTES, LabelsSource, read_labels
from .assembly import assemble_model
from .models import LoadedModel
from .sources import ModelRequest
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, per_channel
from .targets import check_activation

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAX_LABELS_BYTES",
    "MAX_WEIGHTS_BYTES",
    "custom_architectures",
    "load_custom_model",
    "matching_architectures",
]


def load_custom_model(
    architecture: str | None,
    weights: WeightsSource,
    labels: LabelsSource,
    *,
    activation: Literal["softmax", "sigmoid"] = "softmax",
    input_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    grayscale: bool = False,
    max_bytes: int = MAX_WEIGHTS_BYTES,
    name: str | None = None,
    file_name: str | None = None,
) -> LoadedModel:
    """Load your own classifier, in eval mode, ready for ``explain``.

    Example: ``explain("xray.png", load_custom_model(None, "chest.safetensors", "classes.txt"))``.

    Args:
        architecture: A torchvision classifier name, e.g. ``"resnet18"`` (see ``custom_architectures()``);
            ``None`` to recognise it from the weights (see :func:`matching_architectures`).
        weights: Path or bytes of its state dict: ``.safetensors``, or ``.pt``/``.pth`` saved with ``torch.save``
            (a ``{"state_dict": ...}`` wrapper and a DataParallel ``module.`` prefix are accepted).
        labels: Path or bytes of a labels file (one name per line, or JSON: a list, or a dict index -> name),
            or the names themselves; one per output of the model.
        activation: ``"softmax"`` for a single-label model, ``"sigmoid"`` for a multi-label one.
        input_size: Shorter side of the model input, in pixels.
        mean: Normalisation mean per channel (one value is repeated; for a 1-channel model three are averaged).
        std: Normalisation standard deviation, likewise.
        grayscale: Feed the image in grayscale (repeated to 3 channels unless the model takes 1 channel;
            a model whose first convolution takes 1 channel always gets grayscale).
        max_bytes: Largest weights file accepted.
        name: Name shown in results (default: the weights file's stem, or the architecture).
        file_name: The weights file's name when ``weights`` are bytes (an upload), shown in the model's title.

    Raises:
        ModelError: with one sentence, for an unknown architecture, an unreadable, unsafe, too large or
            mismatched weights file, or labels that do not fit the model.
    """
    arch = None if architecture is None else architecture_name(architecture)
    check_activation(activation)
    if isinstance(input_size, bool) or not isinstance(input_size, int) or not 32 <= input_size <= 2048:
        raise ModelError(f"The input size must be a whole number of pixels from 32 to 2048, not {input_size!r}.")
    data = read_bounded(weights, max_bytes, what="weights file", error=ModelError)
    path = path_of(weights)
    state = read_state_dict(data, max_bytes)
    arch = arch or recognise_architecture(state)
    model, outputs, channels = build_model(arch, state)
    categories = read_labels(labels, outputs)
    preprocessing = Preprocessing(
        size=input_size,
        mean=per_channel(mean, channels, "mean"),
        std=per_channel(std, channels, "standard deviation"),
        keep_aspect=not square_input(arch),
        grayscale=bool(grayscale) or channels == 1,
        channels=channels,
    )
    file_name = path.name if path is not None else file_name
    return assemble_model(
        model,
        categories,
        preprocessing,
        name=name or (path.stem if path is not None else arch),
        title=f"{arch} ({file_name or 'custom weights'})",
        weights=data,
        weights_file=path,
        activation=activation,
        default_layer=lambda layers: default_layer(arch, layers),
        subject=f"The {arch} model",
    )


def load(request: ModelRequest) -> LoadedModel:
    """The torchvision source (``sources.SOURCES["torchvision"]``): :func:`load_custom_model` for ``request``.

    Example: ``load(ModelRequest(weights="chest.pt", labels="classes.txt"))``.
    """
    if request.labels is None:
        raise ModelError("A torchvision model needs its class names: give a labels file.")
    options = {
        key: value
        for key, value in (("input_size", request.input_size), ("mean", request.mean), ("std", request.std))
        if value is not None
    }
    return load_custom_model(
        request.architecture,
        request.weights,
        request.labels,
        activation=request.activation,
        grayscale=request.grayscale,
        max_bytes=request.max_bytes,
        name=request.name,
        file_name=request.file_name,
        **options,
    )
