"""torchvision classifiers and segmentation networks for your own weights: naming, recognising from a state
dict, and building them.

The number of classes is read from the classifier's weights (a segmentation network's: its head's last
convolution) and the number of input channels (1 or 3) from the first convolution's, so a fine-tuned model
needs no settings beyond its architecture, and often not even that::

    arch = recognise_architecture(state)             # "resnet18": the only one with these names and shapes
    built = build_model(arch, state)                 # BuiltModel(model, outputs=3, channels=1)

Segmentation networks (:data:`SEGMENTATION_ARCHITECTURES`: FCN, DeepLabV3, LR-ASPP) are built without any
pretrained backbone; their auxiliary head, when the weights hold one, is loaded and then dropped: it only helps
training and never reaches the output.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import NamedTuple

import torch
import torchvision
from torch import Tensor, nn

from .errors import ModelError
from .layers import LayerInfo, last_feature_map, segmentation_layer
from .models import MODELS
from .units import plural

__all__ = [
    "SEGMENTATION_ARCHITECTURES",
    "BuiltModel",
    "architecture_name",
    "build_model",
    "check_keys",
    "custom_architectures",
    "default_layer",
    "matching_architectures",
    "recognise_architecture",
    "square_input",
]

_SQUARE_INPUT = ("vit_", "swin_", "maxvit_")  # transformers want a fixed square input
_AUXILIARY = ("aux1.", "aux2.", "AuxLogits.", "aux_classifier.")

SEGMENTATION_ARCHITECTURES = (
    "fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
)
"""torchvision's segmentation networks a user's weights may have (they return ``{"out": (N, C, H, W)}``)."""
_SEGMENTATION_HEAD = "classifier."


class BuiltModel(NamedTuple):
    """A classifier built with its weights loaded, in eval mode, with its number of outputs and input channels."""

    model: nn.Module
    outputs: int
    channels: int


def custom_architectures() -> list[str]:
    """Names of torchvision's image classifiers, then of its segmentation networks: the architectures a custom
    model can have.

    Example: ``"resnet18" in custom_architectures()  # True``; ``"fcn_resnet50"`` too.
    """
    return [*torchvision.models.list_models(module=torchvision.models), *SEGMENTATION_ARCHITECTURES]


def architecture_name(architecture: str) -> str:
    """The torchvision classifier called ``architecture`` (any case): ``architecture_name(" ResNet18")  # "resnet18"``.

    Raises:
        ModelError: no such classifier (with the closest names as a hint).
    """
    names = custom_architectures()
    key = str(architecture).strip().lower()
    if key in names:
        return key
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise ModelError(
        f"Unknown architecture {architecture!r}{hint}; use a torchvision classifier name such as resnet18, "
        "resnet50, densenet121, efficientnet_b0, mobilenet_v3_large or convnext_tiny "
        "(all of them: torchvision.models.list_models()), or a segmentation network such as fcn_resnet50, "
        "deeplabv3_resnet50 or lraspp_mobilenet_v3_large."
    )


def square_input(arch: str) -> bool:
    """Whether ``arch`` needs a fixed square input (vision transformers): ``square_input("vit_b_16")  # True``."""
    return arch.startswith(_SQUARE_INPUT)


def matching_architectures(state: Mapping[str, Tensor]) -> list[str]:
    """The torchvision architectures whose parameters have exactly the names and shapes of ``state``.

    The classifier may have any number of outputs and the first convolution 1 or 3 input channels; auxiliary
    classifiers (GoogLeNet, Inception v3, FCN and DeepLabV3) are ignored. RegNets cannot be described without
    building them in full, so they are never recognised: name them. Example:
    ``matching_architectures(torchvision.models.resnet18(num_classes=3).state_dict())  # ["resnet18"]``.
    """
    names = {key for key in state if not _ignored_key(key)}
    return [
        arch
        for arch, signature in _signatures().items()
        if names == signature.keys()
        and all(_loose_shape(state[key].shape, free) == shape for key, (shape, free) in signature.items())
    ]


def recognise_architecture(state: Mapping[str, Tensor]) -> str:
    """The one architecture :func:`matching_architectures` finds: ``recognise_architecture(state)  # "resnet18"``.

    Raises:
        ModelError: none fits, or several do (then the user names one).
    """
    found = matching_architectures(state)
    if len(found) == 1:
        return found[0]
    if found:
        raise ModelError(f"These weights fit several architectures ({', '.join(found)}); choose one by name.")
    raise ModelError(
        f"These weights ({plural(len(state), 'tensor')}, first {next(iter(state))!r}) fit none of torchvision's "
        "classifiers as they are; choose the architecture by name to see what does not fit."
    )


def build_model(arch: str, state: dict[str, Tensor]) -> BuiltModel:
    """``arch`` with ``state`` loaded, sized from it: ``build_model("resnet18", state).outputs  # 3``.

    Raises:
        ModelError: one sentence naming what does not fit (the classifier, the first convolution, missing,
            unexpected or wrongly shaped tensors).
    """
    head = f"{_head(arch)}.weight"
    if head not in state:
        raise ModelError(
            f"The weights have no classifier tensor {head!r}, so they are not for {arch} (their first key is "
            f"{next(iter(state))!r}); check the architecture name."
        )
    _check_head_rank(arch, head, state[head])
    outputs = int(state[head].shape[0])
    kwargs: dict[str, object] = {"num_classes": outputs}
    if arch == "googlenet":
        kwargs.update(aux_logits=any(k.startswith("aux1.") for k in state), init_weights=False)
    elif arch == "inception_v3":
        kwargs.update(aux_logits=any(k.startswith("AuxLogits.") for k in state), init_weights=False)
    elif arch in SEGMENTATION_ARCHITECTURES and not arch.startswith("lraspp"):
        kwargs.update(aux_loss=any(k.startswith("aux_classifier.") for k in state))
    model = _get_model(arch, **kwargs)
    channels = _match_input_channels(model, state, arch)
    check_keys(model, state, arch)
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ModelError(f"The weights could not be loaded into {arch} ({type(exc).__name__}).") from exc
    if getattr(model, "aux_classifier", None) is not None:
        model.aux_classifier = None  # a training aid: it never reaches "out", so its maps would be empty
    return BuiltModel(model.eval(), outputs, channels)


def default_layer(arch: str, layers: Sequence[LayerInfo]) -> str:
    """The registry's choice for this architecture, else the last feature map that is not a pooling; for a
    segmentation network, the deepest map that is not class scores (``layers.segmentation_layer``).

    Example: ``default_layer("resnet50", candidate_layers(model))  # "layer4"``;
    ``default_layer("lraspp_mobilenet_v3_large", layers)  # "classifier.cbr"``.
    """
    names = [info.name for info in layers]
    spec = MODELS.get(arch)
    if spec is not None and spec.default_layer in names:
        return spec.default_layer
    if arch in SEGMENTATION_ARCHITECTURES:
        head = next((info for info in layers if info.name == _head(arch)), None)
        if head is not None:  # its channels are the classes
            return segmentation_layer(layers, head.shape[0])
    return last_feature_map(layers)


def _ignored_key(key: str) -> bool:
    return key.endswith("num_batches_tracked") or key.startswith(_AUXILIARY)


def _loose_shape(shape: Sequence[int], free: int | None) -> tuple[int, ...]:
    """``shape`` with dimension ``free`` (one that may differ between models of one architecture) set to -1."""
    return tuple(-1 if dim == free else size for dim, size in enumerate(shape))


@lru_cache(maxsize=1)
def _signatures() -> dict[str, dict[str, tuple[tuple[int, ...], int | None]]]:
    """Per architecture: each parameter's name -> (shape with its free dimension as -1, that dimension).

    Built once per process on the meta device (no memory, about 3 s for every architecture).
    """
    signatures = {}
    for arch in custom_architectures():
        try:
            model = _meta_model(arch)
        except Exception:  # RegNets compute their widths with tensors, which the meta device cannot read
            continue
        first_conv = f"{_first_conv(model)[0]}.weight"
        heads = _class_layers(arch, model)
        free = {first_conv: 1} | {f"{head}.{part}": 0 for head in heads for part in ("weight", "bias")}
        signatures[arch] = {
            key: (_loose_shape(value.shape, free.get(key)), free.get(key))
            for key, value in model.state_dict().items()
            if not _ignored_key(key)
        }
    return signatures


def _meta_model(arch: str) -> nn.Module:
    """The architecture with default settings, on the meta device (shapes only, no memory)."""
    with torch.device("meta"):
        return _get_model(arch)


def _get_model(arch: str, **kwargs: object) -> nn.Module:
    """``arch`` built with random weights; never a pretrained backbone (a segmentation network would fetch one)."""
    if arch in SEGMENTATION_ARCHITECTURES:
        kwargs["weights_backbone"] = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(arch, weights=None, **kwargs)


def _head(arch: str) -> str:
    """Dotted name of the classifier layer of ``arch``."""
    return _head_info(arch)[0]


@lru_cache(maxsize=None)
def _head_info(arch: str) -> tuple[str, tuple[int, ...]]:
    """Dotted name of the classifier layer of ``arch`` and the shape of its weight (default number of classes)."""
    try:
        model = _meta_model(arch)
    except Exception:  # some initialisers cannot run on the meta device
        model = _get_model(arch)
    head = _head_of(model)
    return head, tuple(model.get_submodule(head).weight.shape)


def _head_of(model: nn.Module) -> str:
    """Dotted name of the classifier layer: the last Linear (the last Conv2d for SqueezeNet and the segmentation
    networks)."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    convs = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    return (linears or convs)[-1]


def _class_layers(arch: str, model: nn.Module) -> list[str]:
    """Every layer of ``arch`` with one output per class: the classifier layer, and for a segmentation network
    the other convolutions of its head with as many outputs (LR-ASPP adds low- and high-resolution scores)."""
    head = _head_of(model)
    if arch not in SEGMENTATION_ARCHITECTURES:
        return [head]
    classes = model.get_submodule(head).out_channels
    return [
        name for name, module in model.named_modules()
        if name.startswith(_SEGMENTATION_HEAD) and isinstance(module, nn.Conv2d) and module.out_channels == classes
    ]


def _check_head_rank(arch: str, head: str, weight: Tensor) -> None:
    """Refuse a classifier weight with the wrong number of dimensions (e.g. a vector where a matrix belongs)."""
    want = _head_info(arch)[1]
    if weight.ndim == len(want):
        return  # the number of outputs is free; check_keys compares the other dimensions
    shape = "×".join(map(str, weight.shape)) or "a single number"
    expected = "×".join(["N", *map(str, want[1:])])
    raise ModelError(
        f"The weights do not fit {arch}: the classifier tensor {head!r} has the wrong shape ({shape}, not {expected} "
        "for N classes); check the architecture name."
    )


def _match_input_channels(model: nn.Module, state: dict[str, Tensor], arch: str) -> int:
    """Make the first convolution take as many channels as the weights say (1 = grayscale, or 3)."""
    name, conv = _first_conv(model)
    weight = state.get(f"{name}.weight")
    if weight is None or weight.ndim != 4 or weight.shape[1] == conv.in_channels:
        return conv.in_channels  # a missing key is reported by check_keys
    channels = int(weight.shape[1])
    if channels != 1:
        raise ModelError(
            f"The first convolution {name!r} of these {arch} weights takes {channels} input channels; only 1 "
            "(grayscale) or 3 (RGB) are supported."
        )
    replacement = nn.Conv2d(
        1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups,
        conv.bias is not None, conv.padding_mode,
    )
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, replacement)
    return 1


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    return next((name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d))


def check_keys(model: nn.Module, state: Mapping[str, Tensor], arch: str) -> None:
    """Refuse ``state`` unless it has exactly ``model``'s keys and shapes (BatchNorm's counters may be missing).

    Example: ``check_keys(resnet18, state, "resnet18")`` raises ``ModelError("The weights do not fit resnet18:
    1 key of resnet18 missing (such as 'fc.bias'); check the architecture name.")``.

    Raises:
        ModelError: one sentence naming what does not fit: missing keys, unexpected keys, wrong shapes.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    parts = []
    if missing:
        parts.append(f"{plural(len(missing), 'key')} of {arch} missing (such as {missing[0]!r})")
    if unexpected:
        parts.append(f"{plural(len(unexpected), 'unexpected key')} (such as {unexpected[0]!r})")
    if wrong:
        key = wrong[0]
        shape = "×".join(map(str, state[key].shape))
        want = "×".join(map(str, expected[key].shape))
        parts.append(f"{plural(len(wrong), 'tensor')} of the wrong shape (such as {key!r}: {shape}, not {want})")
    if parts:
        raise ModelError(f"The weights do not fit {arch}: {', '.join(parts)}; check the architecture name.")
