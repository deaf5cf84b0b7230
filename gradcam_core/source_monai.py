"""The MONAI source (2-D): a ``monai.networks.nets`` classifier or ``SegResNet`` you name + its weights, or a
MONAI bundle.

By name, the network is one of :data:`NETWORKS` (matched case-insensitively), built with ``spatial_dims=2`` and
the input channels and classes its weights hold (a segmentation network's classes: its last convolution's). A
bundle (a folder, or a zip of it) is read as data, never run: ``configs/inference.json`` gives the
``network_def`` (its ``_target_`` one of :data:`BUNDLE_TARGETS` in ``monai.networks.nets``, its arguments plain
values; a segmentation network's classes are its ``out_channels``), ``models/model.safetensors`` or
``models/model.pt`` the weights (tensors only), ``configs/metadata.json`` the class names and input size when it
has them. A bundle config can run Python (``$`` expressions, ``@`` references, ``%`` macros, any ``_target_``):
every such value in the parts read is refused::

    loaded = load(ModelRequest(weights="chest.safetensors", architecture="DenseNet121", labels="classes.txt"))
    loaded = load(ModelRequest(weights="spleen_classifier.zip"))          # a bundle: all from its files
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import inspect

import torch
from torch import Tensor, nn

from .archives import json_object, read_model_files
from .assembly import assemble_model
from .checkpoints import read_state_dict
from .errors import ModelError
from .files import path_of, read_bounded
from .labels import read_labels
from .models import LoadedModel
from .preprocess import Preprocessing, per_channel
from .sources import ModelRequest

__all__ = [
    "BUNDLE_TARGETS", "NETWORKS", "SEGMENTATION_TARGETS", "MonaiNetwork", "build_network", "channels_and_classes",
    "construct_network", "load", "load_bundle", "load_named",
]


@dataclass(frozen=True)
class MonaiNetwork:
    """How to build one classifier of ``monai.networks.nets``.

    Attributes:
        target: Its class or function name in ``monai.networks.nets``.
        channels: Keyword of its input channels.
        classes: Keyword of its number of classes.
        fixed: Other keywords, always given (e.g. EfficientNet's ``model_name``).
        segmentation: It segments: its classes are its last convolution's outputs, not its last linear layer's.
    """

    target: str
    channels: str = "in_channels"
    classes: str = "out_channels"
    fixed: Mapping[str, object] = field(default_factory=dict)
    segmentation: bool = False


def _networks() -> dict[str, MonaiNetwork]:
    densenets = ("DenseNet121", "DenseNet169", "DenseNet201", "DenseNet264")
    networks = {name.lower(): MonaiNetwork(name) for name in densenets}
    networks |= {
        name.lower(): MonaiNetwork(name, classes="num_classes")
        for name in ("SEResNet50", "SEResNet101", "SEResNet152", "SEResNext50", "SEResNext101")
    }
    networks |= {
        f"resnet{depth}": MonaiNetwork(f"resnet{depth}", channels="n_input_channels", classes="num_classes")
        for depth in (10, 18, 34, 50, 101, 152)
    }
    networks |= {
        f"efficientnet-b{size}": MonaiNetwork(
            "EfficientNetBN", classes="num_classes", fixed={"model_name": f"efficientnet-b{size}", "pretrained": False}
        )
        for size in range(8)
    }
    networks["segresnet"] = MonaiNetwork("SegResNet", segmentation=True)
    return networks


NETWORKS: Mapping[str, MonaiNetwork] = _networks()
"""Networks you may name (lower case): the classifiers DenseNet121-264, SEResNet50-152, SEResNext50/101,
resnet10-152, efficientnet-b0 to b7, and the segmentation network SegResNet (MONAI's default widths and blocks:
other settings come with a bundle)."""

SEGMENTATION_TARGETS = frozenset({"UNet", "SegResNet"})
"""Segmentation networks a bundle may hold: their classes are their ``out_channels``."""

BUNDLE_TARGETS = frozenset({"DenseNet", "EfficientNetBN", "SEResNet50", "SEResNet101", "SEResNet152", "SEResNext50",
                            "SEResNext101", "DenseNet121", "DenseNet169", "DenseNet201", "DenseNet264"}
                           | SEGMENTATION_TARGETS)
"""``_target_`` names a bundle's ``network_def`` may use (bare, or as ``monai.networks.nets.<name>``): the
classifiers, and the segmentation networks of :data:`SEGMENTATION_TARGETS`."""

_BUNDLE_CONFIG = "configs/inference.json"
_METADATA = "configs/metadata.json"
_BUNDLE_WEIGHTS = ("models/model.safetensors", "models/model.pt")
_EXPRESSION_MARKS = ("$", "@", "%")
_DEFAULT_SIZE = 224
_TAIL = 65_536  # bytes read from a zip's end to look for a bundle's directory


def load(request: ModelRequest) -> LoadedModel:
    """The MONAI source (``sources.SOURCES["monai"]``): a bundle if ``request.weights`` is one, else by name.

    Example: ``load(ModelRequest(weights="w.pt", architecture="densenet121", labels=["normal", "pneumonia"]))``.

    Raises:
        ModelError: with one sentence (see :func:`load_named` and :func:`load_bundle`).
    """
    if _is_bundle(request.weights):
        return load_bundle(request)
    return load_named(request)


def load_named(request: ModelRequest) -> LoadedModel:
    """A network of :data:`NETWORKS` named by ``request.architecture``, channels and classes read from its weights.

    Example: ``load_named(ModelRequest(weights="w.safetensors", architecture="DenseNet121", labels="c.txt"))``.

    Raises:
        ModelError: no or an unknown architecture, no labels, unreadable weights or weights that do not fit.
    """
    if not request.architecture:
        raise ModelError(f"Name the MONAI network of the weights (one of {', '.join(NETWORKS)}).")
    network = NETWORKS.get(request.architecture.strip().lower())
    if network is None:
        raise ModelError(
            f"{request.architecture!r} is not a MONAI classifier offered here (one of {', '.join(NETWORKS)})."
        )
    if request.labels is None:
        raise ModelError("A MONAI model needs its class names: give a labels file.")
    weights = read_bounded(request.weights, request.max_bytes, what="weights file", error=ModelError)
    state = read_state_dict(weights, request.max_bytes)
    arguments = {**network.fixed, "spatial_dims": 2, **channels_and_classes(network, state)}
    model = build_network(network.target, arguments, state)
    return _assemble(model, request, weights, network.target, arguments[network.channels],
                     read_labels(request.labels, arguments[network.classes]), None)


def load_bundle(request: ModelRequest) -> LoadedModel:
    """The network of a MONAI bundle (folder or zip), read as plain data.

    Example: ``load_bundle(ModelRequest(weights="classifier_bundle.zip"))``.

    Raises:
        ModelError: an expression, a reference or a ``_target_`` outside :data:`BUNDLE_TARGETS` in the parts read,
            a 3-D network, missing files, weights that do not fit, or no class names.
    """
    files = read_model_files(
        request.weights, (_BUNDLE_CONFIG, _METADATA, *_BUNDLE_WEIGHTS), anchor=_BUNDLE_CONFIG,
        max_bytes=request.max_bytes, what="MONAI bundle", large=_BUNDLE_WEIGHTS,
    )
    if _BUNDLE_CONFIG not in files:
        raise ModelError("The MONAI bundle lacks configs/inference.json (a YAML config is not read here).")
    weights = next((files[name] for name in _BUNDLE_WEIGHTS if name in files), None)
    if weights is None:
        raise ModelError("The MONAI bundle lacks models/model.safetensors or models/model.pt.")
    config = json_object(files[_BUNDLE_CONFIG], "MONAI bundle's configs/inference.json")
    target, arguments = _network_def(config)
    metadata = json_object(files[_METADATA], "MONAI bundle's configs/metadata.json") if _METADATA in files else {}
    state = read_state_dict(weights, request.max_bytes)
    model = build_network(target, arguments, state)
    classes = _out_channels(target, arguments) if target in SEGMENTATION_TARGETS else _outputs(model, state)
    labels = request.labels if request.labels is not None else _metadata_labels(metadata)
    if labels is None:
        raise ModelError("The MONAI bundle's metadata names no classes: give a labels file.")
    channels = next(value.shape[1] for value in _ordered(model, state) if value.ndim >= 3)
    return _assemble(model, request, weights, target, channels, read_labels(labels, classes), _metadata_size(metadata))


def _is_bundle(source: object) -> bool:
    """A folder, or a zip whose directory (at its end: a bundle's is small) names ``configs/inference.json``;
    a ``torch.save`` checkpoint is a zip too, but never holds that name."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        head, tail = bytes(source[:4]), bytes(source[-_TAIL:])
    else:
        try:
            path = Path(source)
            if path.is_dir():
                return True
            if not path.is_file():
                return False  # read_bounded says what is wrong
            with path.open("rb") as handle:
                head = handle.read(4)
                handle.seek(max(0, path.stat().st_size - _TAIL))
                tail = handle.read(_TAIL)
        except (OSError, TypeError, ValueError):
            return False
    return head == b"PK\x03\x04" and _BUNDLE_CONFIG.encode() in tail


def channels_and_classes(network: MonaiNetwork, state: Mapping[str, Tensor]) -> dict[str, int]:
    """Input channels (the first convolution's) and classes (the last linear layer's, or a segmentation network's
    last convolution's), read from the weights."""
    with torch.device("meta"):
        probe = {**network.fixed, "spatial_dims": 2, network.channels: 1, network.classes: 1}
        empty = construct_network(network.target, probe)
    shapes = empty.state_dict()
    first = next(key for key, value in shapes.items() if value.ndim >= 3)
    last = [key for key, value in shapes.items() if value.ndim == (4 if network.segmentation else 2)][-1]
    for key in (first, last):
        if key not in state:
            raise ModelError(f"The weights do not fit the MONAI {network.target}: they lack {key!r}.")
    return {network.channels: int(state[first].shape[1]), network.classes: int(state[last].shape[0])}


def construct_network(target: str, arguments: Mapping[str, object]) -> nn.Module:
    """``monai.networks.nets.<target>(**arguments)``; a failure is one sentence (``ModelError``)."""
    from monai.networks import nets

    try:
        return getattr(nets, target)(**arguments)
    except Exception as exc:
        raise ModelError(f"The MONAI {target} cannot be built with these settings ({type(exc).__name__}).") from exc


def build_network(target: str, arguments: Mapping[str, object], state: Mapping[str, Tensor]) -> nn.Module:
    """The network with ``state`` loaded strictly; its size checked on an empty copy before it is allocated."""
    with torch.device("meta"):
        expected = construct_network(target, arguments).state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        what = f"lack {missing[0]!r}" if missing else f"hold {unexpected[0]!r}, unknown to it"
        raise ModelError(f"The weights do not fit the MONAI {target}: they {what} ({len(missing) + len(unexpected)} "
                         "keys differ).")
    wrong = next((key for key in expected if tuple(state[key].shape) != tuple(expected[key].shape)), None)
    if wrong is not None:
        raise ModelError(f"The weights do not fit the MONAI {target}: {wrong!r} is {tuple(state[wrong].shape)} in "
                         f"the weights but {tuple(expected[wrong].shape)} in the network.")
    model = construct_network(target, arguments)
    model.load_state_dict(state, strict=True)
    return model.float().eval()


def _ordered(model: nn.Module, state: Mapping[str, Tensor]) -> list[Tensor]:
    return [state[key] for key in model.state_dict()]


def _outputs(model: nn.Module, state: Mapping[str, Tensor]) -> int:
    return int([value for value in _ordered(model, state) if value.ndim == 2][-1].shape[0])


def _out_channels(target: str, arguments: Mapping[str, object]) -> int:
    """A segmentation network's classes: its ``out_channels`` as given, else the constructor's default."""
    from monai.networks import nets

    default = inspect.signature(getattr(nets, target)).parameters["out_channels"].default
    return int(arguments.get("out_channels", default))


def _network_def(config: Mapping) -> tuple[str, dict[str, object]]:
    """The ``network_def``'s target (a name of :data:`BUNDLE_TARGETS`) and its plain-value 2-D arguments."""
    network = config.get("network_def")
    if not isinstance(network, dict):
        raise ModelError("The MONAI bundle's inference.json has no network_def to read.")
    target = network.get("_target_")
    name = target.removeprefix("monai.networks.nets.") if isinstance(target, str) else None
    if name not in BUNDLE_TARGETS:
        raise ModelError(
            f"The MONAI bundle's network_def targets {target!r}, not a classifier or segmentation network of "
            "monai.networks.nets; bundle configs can run code, so only those are read."
        )
    arguments = {key: value for key, value in network.items() if key != "_target_"}
    _check_plain(arguments, "network_def")
    if any(key.startswith("_") for key in arguments):
        raise ModelError("The MONAI bundle's network_def uses a special key (like _requires_), which is not read.")
    if "pretrained" in arguments and arguments["pretrained"] is not False:
        raise ModelError("The MONAI bundle's network_def asks for downloaded weights (pretrained); set it to false.")
    dims = arguments.get("spatial_dims", arguments.get("dimensions"))
    if dims != 2:
        raise ModelError(f"The MONAI bundle's network is {dims}-D; only 2-D networks are explained here.")
    if name == "EfficientNetBN":
        arguments.setdefault("pretrained", False)
    return name, arguments


def _check_plain(value: object, where: str) -> None:
    """Refuse anything but plain values: expressions, references, macros and nested ``_target_`` included."""
    if isinstance(value, str):
        if value.lstrip().startswith(_EXPRESSION_MARKS):
            raise ModelError(
                f"The MONAI bundle's {where} holds an expression {value[:40]!r}; bundle expressions run Python and "
                "are never evaluated here."
            )
    elif isinstance(value, dict):
        if "_target_" in value:
            raise ModelError(f"The MONAI bundle's {where} builds an object ({value['_target_']!r}), which is not read.")
        for key, item in value.items():
            _check_plain(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            _check_plain(item, where)
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise ModelError(f"The MONAI bundle's {where} holds a value that is not plain data.")


def _metadata_labels(metadata: Mapping) -> list[str] | None:
    """Class names from ``network_data_format.outputs.<first>.channel_def`` (index -> name), if plain strings."""
    outputs = metadata.get("network_data_format", {}).get("outputs", {}) if isinstance(metadata, dict) else {}
    first = next(iter(outputs.values()), None) if isinstance(outputs, dict) else None
    names = first.get("channel_def") if isinstance(first, dict) else None
    if not isinstance(names, dict) or not all(isinstance(name, str) for name in names.values()):
        return None
    try:
        indexed = {int(key): name for key, name in names.items()}
    except ValueError:
        return None
    return [indexed[i] for i in sorted(indexed)] if sorted(indexed) == list(range(len(indexed))) else None


def _metadata_size(metadata: Mapping) -> int | None:
    """The input's shorter side from ``network_data_format.inputs.<first>.spatial_shape``, if two whole numbers."""
    inputs = metadata.get("network_data_format", {}).get("inputs", {}) if isinstance(metadata, dict) else {}
    first = next(iter(inputs.values()), None) if isinstance(inputs, dict) else None
    shape = first.get("spatial_shape") if isinstance(first, dict) else None
    if isinstance(shape, list) and len(shape) == 2 and all(type(side) is int and side >= 16 for side in shape):
        return min(shape)
    return None


def _assemble(model: nn.Module, request: ModelRequest, weights: bytes, target: str, channels: int,
              categories: tuple[str, ...], bundle_size: int | None) -> LoadedModel:
    """The model ready to explain: MONAI inputs are intensities scaled to [0, 1] unless a mean and std are given."""
    size = request.input_size or bundle_size or _DEFAULT_SIZE
    if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 2048:
        raise ModelError(f"The input size must be a whole number of pixels from 16 to 2048, not {size!r}.")
    preprocessing = Preprocessing(
        size=size,
        mean=per_channel(request.mean if request.mean is not None else [0.0], channels, "mean"),
        std=per_channel(request.std if request.std is not None else [1.0], channels, "standard deviation"),
        grayscale=bool(request.grayscale) or channels == 1,
        channels=channels,
    )
    source = request.weights
    path = path_of(source)
    file_name = path.name if path is not None else request.file_name
    return assemble_model(
        model,
        categories,
        preprocessing,
        name=request.name or (path.stem if path is not None else target),
        title=f"MONAI {target} ({file_name or 'your weights'})",
        weights=weights,
        weights_file=path,
        activation=request.activation,
        subject=f"The MONAI {target} model",
    )
