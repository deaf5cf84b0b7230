"""3-D classifiers (CT, MRI volumes) built from the user's weights, read as data only, and their input volumes.

The architectures are MONAI networks built with ``spatial_dims=3`` (from :data:`gradcam_core.source_monai.NETWORKS`)
and torchvision's video ResNets; input channels and classes are read from the weights, never from code::

    loaded = load_volume_model(VolumeModelRequest("monai:densenet121", Path("ct.safetensors"),
                                                  VolumePreprocessing(size=(64, 128, 128))))
    inputs = volume_input(read_volume("scan.nii.gz"), loaded.preprocessing)      # (1, C, 64, 128, 128)

The whole volume is resized to the model's grid (trilinear, no crop), so a map covers the whole scan. The resize
runs slab by slab (in-plane first, then along the slices: trilinear interpolation is separable), so a 512 x 512 x
300 CT never gets a second full-size copy. No pretrained 3-D weights ship with the project.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional as F

from .architectures import check_keys
from .checkpoints import MAX_WEIGHTS_BYTES, read_state_dict
from .errors import ModelError, VolumeError
from .files import path_of, read_bounded
from .labels import read_labels
from .layers import activated_layer, candidate_layers, last_feature_map
from .methods import get_method
from .source_monai import NETWORKS, build_network, channels_and_classes
from .targets import check_activation
from .volumes import Volume

__all__ = [
    "INTENSITIES",
    "VOLUME_ARCHITECTURES",
    "LoadedVolumeModel",
    "VolumeModelRequest",
    "VolumePreprocessing",
    "load_volume_model",
    "volume_input",
]

_MONAI = {"densenet121": "DenseNet121", "densenet169": "DenseNet169", "resnet18": "ResNet18", "resnet34": "ResNet34",
          "resnet50": "ResNet50", "seresnet50": "SEResNet50", "efficientnet-b0": "EfficientNet-B0"}
_TORCHVISION = {"r3d_18": "R3D-18 (video ResNet)", "mc3_18": "MC3-18 (mixed-convolution video ResNet)",
                "r2plus1d_18": "R(2+1)D-18 (video ResNet)"}

VOLUME_ARCHITECTURES: dict[str, str] = {
    **{f"monai:{key}": f"MONAI {title} (3-D)" for key, title in _MONAI.items()},
    **{f"torchvision:{key}": f"torchvision {title}" for key, title in _TORCHVISION.items()},
}
"""Architecture key -> title shown to users, e.g. ``"torchvision:r3d_18" -> "torchvision R3D-18 (video ResNet)"``."""

INTENSITIES = ("zscore", "window")
"""How voxel values are scaled: z-score over the volume, or a (center, width) window clipped and scaled to [0, 1]."""

_SLAB_BYTES = 64 * 2**20  # voxels read at once while resizing: a few slices of a large CT


@dataclass(frozen=True)
class VolumePreprocessing:
    """How a scan becomes a model input ``(1, C, D, H, W)``.

    Attributes:
        size: ``(D, H, W)`` model input grid; the whole volume is resized to it (trilinear, no crop).
        intensity: ``"zscore"`` (mean 0, standard deviation 1 over the volume) or ``"window"``.
        window: ``(center, width)`` in the scan's units for ``"window"``, e.g. ``(40, 400)``; values are clipped
            to it, then scaled to [0, 1].
        channels: Model input channels; a 1-channel scan is repeated. :func:`load_volume_model` sets it from
            the weights.

    Raises:
        ModelError: a size that is not three whole numbers from 1 to 1024, an unknown intensity, or a window
            missing or not positive for ``"window"``.
    """

    size: tuple[int, int, int]
    intensity: str = "zscore"
    window: tuple[float, float] | None = None
    channels: int = 1

    def __post_init__(self) -> None:
        size = tuple(self.size) if isinstance(self.size, (tuple, list)) else ()
        if len(size) != 3 or not all(type(side) is int and 1 <= side <= 1024 for side in size):
            raise ModelError(f"The input grid must be three whole numbers (D, H, W) from 1 to 1024, not {self.size!r}.")
        object.__setattr__(self, "size", size)
        if self.intensity not in INTENSITIES:
            raise ModelError(f"Unknown intensity scaling {self.intensity!r}; choose zscore or window.")
        if self.intensity == "window" and (
            self.window is None or len(self.window) != 2 or not all(map(math.isfinite, self.window))
            or self.window[1] <= 0
        ):
            raise ModelError("A window needs a finite center and a positive width, e.g. (40, 400).")
        if type(self.channels) is not int or self.channels < 1:
            raise ModelError(f"The model's input channels must be a positive whole number, not {self.channels!r}.")


@dataclass(frozen=True)
class VolumeModelRequest:
    """What the user gives for a 3-D classifier.

    Attributes:
        architecture: A key of :data:`VOLUME_ARCHITECTURES`.
        weights: A ``.safetensors`` or ``.pt``/``.pth`` state dict, by path or as bytes (read with
            ``weights_only``; never a program).
        preprocessing: How scans become inputs.
        labels: Class names, one per line (or JSON, see :func:`gradcam_core.labels.read_labels`); ``None``:
            ``"class 0"``, ``"class 1"``...
        activation: ``"softmax"`` (single-label) or ``"sigmoid"`` (multi-label).
    """

    architecture: str
    weights: Path | bytes
    preprocessing: VolumePreprocessing
    labels: str | None = None
    activation: str = "softmax"


@dataclass(frozen=True, eq=False)
class LoadedVolumeModel:
    """A 3-D classifier ready to explain (see :func:`gradcam_core.volume_cam.explain_volume`).

    Attributes:
        name: Short name (the weights file's stem, or the architecture's).
        title: Name shown to users.
        model: The torch module, in eval mode.
        categories: Class names, index-aligned with the outputs.
        preprocessing: How scans become inputs (``channels`` read from the weights).
        default_layer: The last 3-D feature map that is not a pooling (``layers.last_feature_map``).
        layers: Candidate layers (5-D outputs larger than 1 x 1 x 1) in forward order.
        activation: ``"softmax"`` or ``"sigmoid"``.
        activated_layer: The default of methods with non-negative weights (``layers.activated_layer``).
        weights_sha256: SHA-256 of the weights file.
    """

    name: str
    title: str
    model: nn.Module
    categories: tuple[str, ...]
    preprocessing: VolumePreprocessing
    default_layer: str
    layers: tuple[str, ...]
    activation: str = "softmax"
    activated_layer: str | None = None
    weights_sha256: str | None = None

    def default_layer_for(self, method: str) -> str:
        """``default_layer``, or ``activated_layer`` for a method with non-negative weights (Score-CAM...)."""
        if get_method(method).nonnegative_weights and self.activated_layer is not None:
            return self.activated_layer
        return self.default_layer


def load_volume_model(request: VolumeModelRequest) -> LoadedVolumeModel:
    """Build ``request.architecture`` with the weights, probe its layers on the preprocessing's grid.

    Example: ``load_volume_model(VolumeModelRequest("torchvision:r3d_18", data, VolumePreprocessing((16, 112,
    112)))).default_layer  # "layer4"``.

    Raises:
        ModelError: an unknown architecture or activation, unreadable or unsafe weights (pickled objects,
            TorchScript), weights of another network (wrong keys or shapes), labels that do not match the
            classes, or a model that cannot run on the input grid; each with one sentence.
    """
    title = VOLUME_ARCHITECTURES.get(request.architecture) if isinstance(request.architecture, str) else None
    if title is None:
        raise ModelError(
            f"{request.architecture!r} is not a 3-D architecture offered here "
            f"(one of {', '.join(VOLUME_ARCHITECTURES)})."
        )
    check_activation(request.activation)
    data = read_bounded(request.weights, MAX_WEIGHTS_BYTES, what="weights file", error=ModelError)
    library, _, name = request.architecture.partition(":")
    model, channels, classes = _BUILDERS[library](name, read_state_dict(data))
    categories = (
        tuple(f"class {index}" for index in range(classes))
        if request.labels is None
        else read_labels(request.labels, classes)
    )
    preprocessing = replace(request.preprocessing, channels=channels)
    probe = torch.zeros(1, channels, *preprocessing.size)
    try:
        infos = candidate_layers(model, probe)
    except Exception as exc:  # e.g. an input grid smaller than the network's downsampling
        size = " x ".join(map(str, preprocessing.size))
        raise ModelError(
            f"The {title} could not run on a {size} input ({type(exc).__name__}); give a larger input grid."
        ) from exc
    infos = [info for info in infos if len(info.shape) == 4]
    if not infos:
        raise ModelError(f"The {title} has no 3-D feature map larger than 1 x 1 x 1 at this input grid; enlarge it.")
    default = last_feature_map(infos)
    noise = torch.randn(probe.shape, generator=torch.Generator().manual_seed(0))
    path = path_of(request.weights)
    return LoadedVolumeModel(
        name=path.stem if path is not None else name,
        title=f"{title} ({path.name if path is not None else 'your weights'})",
        model=model,
        categories=categories,
        preprocessing=preprocessing,
        default_layer=default,
        layers=tuple(info.name for info in infos),
        activation=request.activation,
        activated_layer=activated_layer(model, infos, default, noise),
        weights_sha256=hashlib.sha256(data).hexdigest(),
    )


def volume_input(volume: Volume, preprocessing: VolumePreprocessing) -> Tensor:
    """The model input ``(1, C, D, H, W)`` float32 of a scan: intensities scaled, whole volume resized.

    Example: ``volume_input(volume, VolumePreprocessing((32, 64, 64), "window", (40, 400))).shape``.

    A window is applied before the resize (so a bright bone never bleeds into soft tissue), a z-score with the
    volume's own mean and standard deviation (a constant volume becomes zeros). A one-channel scan is repeated
    to the model's channels.

    Raises:
        VolumeError: the scan has several channels, but not as many as the model takes.
    """
    voxels = volume.voxels if volume.voxels.ndim == 4 else volume.voxels[None]
    channels = voxels.shape[0]
    if channels not in (1, preprocessing.channels):
        raise VolumeError(
            f"The scan has {channels} channels but the model takes {preprocessing.channels}; give a scan with 1 "
            f"or {preprocessing.channels}."
        )
    scale = _window if preprocessing.intensity == "window" else _identity
    resized = torch.stack([_resize(channel, preprocessing.size, scale, preprocessing.window) for channel in voxels])
    if preprocessing.intensity == "zscore":
        resized = torch.stack([_zscore(values, channel) for values, channel in zip(resized, voxels, strict=True)])
    return resized.expand(preprocessing.channels, -1, -1, -1)[None].contiguous()


# --------------------------------------------------------------------------- building


def _monai(name: str, state: dict[str, Tensor]) -> tuple[nn.Module, int, int]:
    network = NETWORKS[name]
    counts = channels_and_classes(network, state)
    model = build_network(network.target, {**network.fixed, "spatial_dims": 3, **counts}, state)
    return model, counts[network.channels], counts[network.classes]


def _torchvision(name: str, state: dict[str, Tensor]) -> tuple[nn.Module, int, int]:
    head = state.get("fc.weight")
    if head is None or head.ndim != 2:
        raise ModelError(
            f"The weights have no classifier 'fc.weight', so they are not for {name}; check the architecture."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(torchvision.models.video, name)(weights=None, num_classes=int(head.shape[0]))
    channels = _match_stem(model, state)
    check_keys(model, state, name)
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ModelError(f"The weights could not be loaded into {name} ({type(exc).__name__}).") from exc
    return model.eval(), channels, int(head.shape[0])


def _match_stem(model: nn.Module, state: dict[str, Tensor]) -> int:
    """Make the first 3-D convolution take as many channels as the weights say (a 1-channel CT model, say)."""
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv3d))
    weight = state.get(f"{name}.weight")
    if weight is None or weight.ndim != 5 or weight.shape[1] == conv.in_channels:
        return conv.in_channels  # anything wrong is named by check_keys
    replacement = nn.Conv3d(int(weight.shape[1]), conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                            conv.dilation, conv.groups, conv.bias is not None)
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, replacement)
    return replacement.in_channels


_BUILDERS: dict[str, Callable[[str, dict[str, Tensor]], tuple[nn.Module, int, int]]] = {
    "monai": _monai,
    "torchvision": _torchvision,
}


# --------------------------------------------------------------------------- input


def _identity(values: Tensor, window: tuple[float, float] | None) -> Tensor:
    return values


def _window(values: Tensor, window: tuple[float, float] | None) -> Tensor:
    center, width = window
    low = center - width / 2
    return ((values - low) / width).clamp_(0.0, 1.0)


def _resize(
    voxels: np.ndarray,
    size: tuple[int, int, int],
    scale: Callable[[Tensor, tuple[float, float] | None], Tensor],
    window: tuple[float, float] | None,
) -> Tensor:
    """One channel ``(D, H, W)`` scaled, then resized trilinearly to ``size``: slabs of slices in-plane first,
    then along the slices (the same as one trilinear resize, without a full-size copy)."""
    depth, height, width = voxels.shape
    slab = max(1, _SLAB_BYTES // (4 * height * width))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # read-only voxels: torch warns, but nothing here writes to them
        source = torch.from_numpy(voxels)
    planes = torch.cat([
        F.interpolate(scale(source[start : start + slab].float(), window)[:, None], size=size[1:], mode="bilinear",
                      align_corners=False)[:, 0]
        for start in range(0, depth, slab)
    ])
    return F.interpolate(planes[None, None], size=size, mode="trilinear", align_corners=False)[0, 0]


def _zscore(values: Tensor, voxels: np.ndarray) -> Tensor:
    """``values`` minus the volume's mean, over its standard deviation (float64 sums, slab by slab)."""
    total = squares = 0.0
    flat = voxels.reshape(-1)
    step = _SLAB_BYTES // 8  # float64 copies of at most a slab's bytes
    for start in range(0, flat.size, step):
        part = flat[start : start + step].astype(np.float64)
        total += float(part.sum())
        squares += float(np.dot(part, part))
    mean = total / flat.size
    std = math.sqrt(max(squares / flat.size - mean * mean, 0.0))
    return (values - mean) / std if std > 0 else torch.zeros_like(values)
