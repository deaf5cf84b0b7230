"""Where a user's own model comes from: one registry entry per source, one module per source.

A source turns what the user gave (a :class:`ModelRequest`: a weights file, a model file or folder, class
names, optional preprocessing) into a ``LoadedModel`` through :func:`assembly.assemble_model`, so every source
gets the same layers, defaults and safety. A file is always data: no source runs code from it. Each source's
module is imported only when it is used, so its library (timm, MONAI, ONNX, transformers) costs nothing to
the others::

    loaded = load_user_model("torchvision", ModelRequest(weights="chest.safetensors", labels="classes.txt"))

Adding a source is one module with a ``load(request) -> LoadedModel`` function and one entry in ``SOURCES``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import import_module
from types import MappingProxyType
from typing import Literal

from .checkpoints import MAX_WEIGHTS_BYTES
from .errors import ModelError
from .files import FileSource
from .labels import LabelsSource
from .models import LoadedModel

__all__ = ["ModelRequest", "ModelSource", "SOURCES", "load_user_model"]


@dataclass(frozen=True)
class ModelRequest:
    """What a user gives for their own model, whatever its source (the CLI's options, the dashboard's form).

    Attributes:
        weights: Path or bytes of the model's file: weights, an ``.onnx`` graph, or a zip (Hugging Face folder,
            MONAI bundle); a folder path where the source takes folders.
        labels: Class names (a file's path or bytes, or the names); ``None`` where the model file holds them.
        architecture: The network's name in the source's library; ``None`` to recognise it where possible.
        activation: ``"softmax"`` for a single-label model, ``"sigmoid"`` for a multi-label one.
        input_size: Shorter side of the input in pixels; ``None``: the source's own (e.g. timm's config).
        mean: Normalisation mean per channel; ``None``: the source's own, else ImageNet's.
        std: Normalisation standard deviation per channel, likewise.
        grayscale: Feed the image in grayscale.
        name: Name shown in results (default: from the file or the architecture).
        file_name: The file's name when ``weights`` are bytes (an upload), for the title.
        max_bytes: Largest file accepted.
    """

    weights: FileSource
    labels: LabelsSource | None = None
    architecture: str | None = None
    activation: Literal["softmax", "sigmoid"] = "softmax"
    input_size: int | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    grayscale: bool = False
    name: str | None = None
    file_name: str | None = None
    max_bytes: int = MAX_WEIGHTS_BYTES


@dataclass(frozen=True)
class ModelSource:
    """One source of models.

    Attributes:
        name: Registry key, also the CLI's ``--source`` value, e.g. ``"timm"``.
        title: Shown to users, e.g. ``"timm network + your weights"``.
        module: Module of ``gradcam_core`` with ``load(request: ModelRequest) -> LoadedModel``.
        suffixes: File name suffixes of the model file it takes (lower case, with the dot).
        needs_architecture: The user must name the network (``False``: recognised, or held by the file).
        needs_labels: The user must give class names (``False``: the model file holds them, or they are optional).
        files: One sentence on the files a user needs.
        own_preprocessing: The model file (or its library) says how to feed it: input size, mean and std
            (the request's values override it).
    """

    name: str
    title: str
    module: str
    suffixes: tuple[str, ...]
    needs_architecture: bool
    needs_labels: bool
    files: str
    own_preprocessing: bool = False

    def load(self, request: ModelRequest) -> LoadedModel:
        """The model of ``request`` from this source: ``SOURCES["torchvision"].load(ModelRequest(...))``."""
        return import_module(f"{__package__}.{self.module}").load(request)


SOURCES = MappingProxyType({
    source.name: source
    for source in (
        ModelSource(
            name="torchvision",
            title="torchvision network + your weights",
            module="custom",
            suffixes=(".safetensors", ".pt", ".pth"),
            needs_architecture=False,
            needs_labels=True,
            files="A state dict (.safetensors, or .pt/.pth saved with torch.save) and a class names file; "
            "the architecture is recognised from the weights.",
        ),
        ModelSource(
            name="onnx",
            title="ONNX model file",
            module="source_onnx",
            suffixes=(".onnx",),
            needs_architecture=False,
            needs_labels=True,
            files="A single self-contained .onnx file (standard operators, no external data) and a class names file.",
        ),
        ModelSource(
            name="timm",
            title="timm network + your weights",
            module="source_timm",
            suffixes=(".safetensors", ".pt", ".pth"),
            needs_architecture=True,
            needs_labels=False,
            files="A state dict (.safetensors, or .pt/.pth saved with torch.save) of a timm architecture you name, "
            "and optionally a class names file (else the classes are called class 0, class 1, ...).",
        ),
        ModelSource(
            name="huggingface",
            title="Hugging Face image classifier (folder or zip)",
            module="source_huggingface",
            suffixes=(".zip",),
            needs_architecture=False,
            needs_labels=False,
            files="A folder saved with save_pretrained, or a zip of it: config.json (class names from id2label), "
            "model.safetensors and preprocessor_config.json.",
            own_preprocessing=True,
        ),
        ModelSource(
            name="monai",
            title="MONAI network + your weights, or a MONAI bundle",
            module="source_monai",
            suffixes=(".safetensors", ".pt", ".pth", ".zip"),
            needs_architecture=True,
            needs_labels=True,
            files="A state dict (.safetensors, or .pt/.pth) of a 2-D monai.networks.nets classifier you name and a "
            "class names file; or a MONAI bundle (folder or zip) whose configs/inference.json holds plain values.",
        ),
    )
})
"""Every model source by name, in the order they are offered."""


def load_user_model(source: str, request: ModelRequest) -> LoadedModel:
    """The user's model from ``source`` (a key of ``SOURCES``).

    Example: ``load_user_model("torchvision", ModelRequest(weights="chest.pt", labels="classes.txt"))``.

    Raises:
        ModelError: an unknown source, or the source's own one-sentence refusal.
    """
    found = SOURCES.get(source)
    if found is None:
        raise ModelError(f"Unknown model source {source!r}; choose one of {', '.join(SOURCES)}.")
    return found.load(request)
