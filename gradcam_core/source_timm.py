"""The timm source: any architecture of ``timm.list_models()`` by name, with the user's weights.

The network is built without downloading anything (``pretrained=False``), sized from the weights (classes from
the classifier named by the architecture's ``pretrained_cfg``, input channels from its first convolution) and
loaded strictly. The preprocessing (input size, mean, std, interpolation) is the architecture's
``pretrained_cfg`` unless the request overrides it; a model built for one input size (ViT, DeiT, Swin, EVA,
BEiT: ``fixed_input_size``) gets a square input of that size. Class names are optional::

    loaded = load(ModelRequest(weights="skin.safetensors", architecture="convnext_tiny", labels="classes.txt"))
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping

import timm
import torch
from timm.data import resolve_data_config
from torch import Tensor, nn
from torchvision.transforms import InterpolationMode

from .architectures import check_keys
from .assembly import assemble_model
from .checkpoints import read_state_dict
from .errors import ModelError
from .files import path_of, read_bounded
from .labels import read_labels
from .models import LoadedModel
from .preprocess import Preprocessing, per_channel
from .sources import ModelRequest

__all__ = ["load", "timm_architecture"]

_SIZES = range(32, 2049)  # input sizes accepted, in pixels


def load(request: ModelRequest) -> LoadedModel:
    """The timm source (``sources.SOURCES["timm"]``): ``request.architecture`` built with ``request.weights``.

    Example: ``load(ModelRequest(weights="cells.pt", architecture="resnet18")).categories  # ("class 0", ...)``.

    Without ``labels`` the classes are called ``"class 0"`` to ``"class N-1"``.

    Raises:
        ModelError: one sentence, for a missing or unknown architecture, an unreadable, unsafe or mismatched
            weights file, labels that do not fit, or an input size the network cannot take.
    """
    arch = timm_architecture(request.architecture)
    size = request.input_size
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size not in _SIZES):
        raise ModelError(f"The input size must be a whole number of pixels from 32 to 2048, not {size!r}.")
    data = read_bounded(request.weights, request.max_bytes, what="weights file", error=ModelError)
    path = path_of(request.weights)
    state = read_state_dict(data, request.max_bytes)
    model, outputs, channels = _build(arch, state, size)
    categories = (
        tuple(f"class {index}" for index in range(outputs))
        if request.labels is None
        else read_labels(request.labels, outputs)
    )
    file_name = path.name if path is not None else request.file_name
    return assemble_model(
        model,
        categories,
        _preprocessing(model, request, channels),
        name=request.name or (path.stem if path is not None else arch),
        title=f"{arch} ({file_name or 'custom weights'})",
        weights=data,
        weights_file=path,
        activation=request.activation,
        subject=f"The {arch} model",
    )


def timm_architecture(architecture: str | None) -> str:
    """The timm architecture called ``architecture`` (any case; a pretrained tag such as ``.fb_in22k`` may follow,
    which picks that tag's preprocessing).

    Example: ``timm_architecture(" ConvNeXt_Tiny ")  # "convnext_tiny"``.

    Raises:
        ModelError: no name given, or no such architecture (with the closest names as a hint).
    """
    if architecture is None or not str(architecture).strip():
        raise ModelError(
            "Name the timm architecture of these weights (such as resnet50, convnext_tiny or "
            "vit_base_patch16_224; all of them: timm.list_models()), since it cannot be told from the weights."
        )
    key = str(architecture).strip().lower()
    base, _, tag = key.partition(".")
    names = timm.list_models()
    if base in names and (not tag or timm.list_pretrained(key) == [key]):
        return key
    if base in names:
        raise ModelError(f"timm has no pretrained tag {tag!r} for {base}; give the architecture without it.")
    close = difflib.get_close_matches(base, names, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise ModelError(
        f"Unknown timm architecture {architecture!r}{hint}; use a name from timm.list_models(), such as "
        "resnet50, efficientnet_b0, convnext_tiny or vit_base_patch16_224."
    )


def _build(arch: str, state: dict[str, Tensor], size: int | None) -> tuple[nn.Module, int, int]:
    """``arch`` sized from ``state`` and loaded with it: ``(model, outputs, input channels)``."""
    cfg = _template(arch).pretrained_cfg
    outputs = _outputs(arch, state, cfg.get("classifier"))
    channels = _channels(arch, state, cfg.get("first_conv"))
    kwargs: dict[str, object] = {"num_classes": outputs, "in_chans": channels}
    if cfg.get("fixed_input_size") and size is not None and size != cfg["input_size"][-1]:
        kwargs["img_size"] = size  # a transformer's position table is made for one input size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = timm.create_model(arch, pretrained=False, **kwargs)
    except Exception as exc:
        raise ModelError(f"timm could not build {arch} for these weights ({type(exc).__name__}: {exc}).") from exc
    check_keys(model, state, arch)
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ModelError(f"The weights could not be loaded into {arch} ({type(exc).__name__}).") from exc
    return model.eval(), outputs, channels


def _template(arch: str) -> nn.Module:
    """``arch`` with its default settings on the meta device: its ``pretrained_cfg``, without memory or weights."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return timm.create_model(arch, pretrained=False)
    except Exception as exc:
        raise ModelError(f"timm could not build {arch} ({type(exc).__name__}).") from exc


def _outputs(arch: str, state: Mapping[str, Tensor], classifier: str | tuple[str, ...] | None) -> int:
    """The number of classes: the rows of the classifier's weight (every head of a distilled model alike)."""
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
    keys = [f"{head}.weight" for head in heads]
    if not keys or keys[0] not in state:
        raise ModelError(
            f"The weights have no classifier tensor {keys[0] if keys else 'head.weight'!r}, so they are not for "
            f"{arch} (their first key is {next(iter(state))!r}); check the architecture name."
        )
    weight = state[keys[0]]
    if weight.ndim == 0 or weight.shape[0] == 0:
        raise ModelError(f"The classifier tensor {keys[0]!r} of these weights has no outputs.")
    return int(weight.shape[0])


def _channels(arch: str, state: Mapping[str, Tensor], first_conv: str | tuple[str, ...] | None) -> int:
    """The input channels: those of the first convolution's weight (1 = grayscale, or 3)."""
    name = first_conv if isinstance(first_conv, str) else (first_conv or (None,))[0]
    weight = state.get(f"{name}.weight")
    if weight is None or weight.ndim < 2:
        return 3  # a missing or misshapen tensor is named by check_keys
    channels = int(weight.shape[1])
    if channels not in (1, 3):
        raise ModelError(
            f"The first convolution {name!r} of these {arch} weights takes {channels} input channels; only 1 "
            "(grayscale) or 3 (RGB) are supported."
        )
    return channels


def _preprocessing(model: nn.Module, request: ModelRequest, channels: int) -> Preprocessing:
    """The model's ``pretrained_cfg`` (through timm's ``resolve_data_config``), overridden by the request."""
    config = resolve_data_config({}, model=model)
    fixed = bool(model.pretrained_cfg.get("fixed_input_size"))
    size = request.input_size or min(config["input_size"][1:])
    try:
        interpolation = InterpolationMode(config.get("interpolation", "bilinear"))
    except ValueError:  # timm's "random" (training only) and the like
        interpolation = InterpolationMode.BILINEAR
    return Preprocessing(
        size=size,
        mean=per_channel(config["mean"] if request.mean is None else request.mean, channels, "mean"),
        std=per_channel(config["std"] if request.std is None else request.std, channels, "standard deviation"),
        interpolation=interpolation,
        keep_aspect=not fixed,
        grayscale=bool(request.grayscale) or channels == 1,
        channels=channels,
    )
