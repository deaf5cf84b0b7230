"""Bring your own model: a torchvision architecture + a weights file + a labels file.

A model file is a program, so only data is read: ``.safetensors`` (preferred), or a PyTorch checkpoint
(``.pt``/``.pth``) through ``torch.load(weights_only=True)``, which refuses anything but tensors and plain
containers. TorchScript archives and arbitrary pickles are refused. The format is recognised by its first
bytes, never by its extension. The number of classes is read from the classifier's weights.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import math
import os
import pickle
import struct
import warnings
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal

import safetensors.torch
import torch
import torchvision
from torch import Tensor, nn

from .errors import ModelError
from .imaging import open_regular_file
from .layers import LayerInfo, activated_layer, candidate_layers
from .models import MODELS, LoadedModel
from .preprocess import Preprocessing
from .targets import ACTIVATIONS

__all__ = [
    "MAX_LABELS_BYTES", "MAX_WEIGHTS_BYTES", "custom_architectures", "load_custom_model", "matching_architectures"
]

MAX_WEIGHTS_BYTES = 500 * 1024**2
MAX_LABELS_BYTES = 8 * 1024**2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MAX_TENSORS = 20_000
"""Most tensors a weights file may hold. torchvision's largest classifier (EfficientNet-V2-L) has about 1 700,
counting BatchNorm's counters; an absurd count is refused from the file's header or directory alone (145 000
empty tensors took 2.3 s and 120 MB to load, and the cost grows linearly)."""
MAX_INDEX_BYTES = 4 * 1024**2
"""Largest safetensors JSON header, or directory of a checkpoint archive: about 100 bytes per tensor, so 25 times
what the largest classifier needs (safetensors itself accepts a 100 MB header, whose parsing takes gigabytes)."""

_MAX_MEMBERS = MAX_TENSORS + 16  # a checkpoint archive: one member per tensor, plus a few records
_DAMAGED_SAFETENSORS = "The weights file starts like safetensors but is damaged or truncated."
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # {"state_dict": ..., "epoch": 3} and the like
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel, torch.compile
_SQUARE_INPUT = ("vit_", "swin_", "maxvit_")  # transformers want a fixed square input

WeightsSource = str | os.PathLike | bytes
LabelsSource = str | os.PathLike | bytes | Sequence[str]


def custom_architectures() -> list[str]:
    """Names of torchvision's image classifiers, the architectures a custom model can have."""
    return list(torchvision.models.list_models(module=torchvision.models))


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
    arch = None if architecture is None else _architecture(architecture)
    if activation not in ACTIVATIONS:
        raise ModelError(f"Unknown activation {activation!r}; choose softmax (single-label) or sigmoid (multi-label).")
    if isinstance(input_size, bool) or not isinstance(input_size, int) or not 32 <= input_size <= 2048:
        raise ModelError(f"The input size must be a whole number of pixels from 32 to 2048, not {input_size!r}.")
    data, path = _read(weights, "weights file", max_bytes)
    state = _state_dict(data, max_bytes)
    arch = arch or _recognised_architecture(state)
    model, outputs, channels = _build(arch, state)
    categories = _labels(labels, outputs)
    preprocessing = Preprocessing(
        size=input_size,
        mean=_per_channel(mean, channels, "mean"),
        std=_per_channel(std, channels, "standard deviation"),
        keep_aspect=not arch.startswith(_SQUARE_INPUT),
        grayscale=bool(grayscale) or channels == 1,
        channels=channels,
    )
    try:
        layers = candidate_layers(model, torch.zeros(1, channels, input_size, input_size))
    except Exception as exc:  # e.g. a ViT built for another input size
        raise ModelError(
            f"The {arch} model could not run on a {input_size}×{input_size} input ({type(exc).__name__}); "
            "check the input size it was trained with."
        ) from exc
    if not layers:
        raise ModelError(f"The {arch} model has no spatial feature map to explain at input size {input_size}.")
    file_name = path.name if path is not None else file_name
    default_layer = _default_layer(arch, layers)
    probe = torch.randn(1, channels, input_size, input_size, generator=torch.Generator().manual_seed(0))
    return LoadedModel(
        name=name or (path.stem if path is not None else arch),
        title=f"{arch} ({file_name or 'custom weights'})",
        model=model,
        categories=categories,
        preprocessing=preprocessing,
        default_layer=default_layer,
        layers=tuple(layers),
        weights_file=path,
        activation=activation,
        weights_sha256=hashlib.sha256(data).hexdigest(),
        activated_layer=activated_layer(model, layers, default_layer, probe),
    )


def _architecture(architecture: str) -> str:
    names = custom_architectures()
    key = str(architecture).strip().lower()
    if key in names:
        return key
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise ModelError(
        f"Unknown architecture {architecture!r}{hint}; use a torchvision classifier name such as resnet18, "
        "resnet50, densenet121, efficientnet_b0, mobilenet_v3_large or convnext_tiny "
        "(all of them: torchvision.models.list_models())."
    )


def matching_architectures(state: Mapping[str, Tensor]) -> list[str]:
    """The torchvision architectures whose parameters have exactly the names and shapes of ``state``.

    The classifier may have any number of outputs and the first convolution 1 or 3 input channels; auxiliary
    classifiers (GoogLeNet, Inception v3) are ignored. RegNets cannot be described without building them in
    full, so they are never recognised: name them.
    """
    names = {key for key in state if not _ignored_key(key)}
    return [
        arch
        for arch, signature in _signatures().items()
        if names == signature.keys()
        and all(_loose_shape(state[key].shape, free) == shape for key, (shape, free) in signature.items())
    ]


def _recognised_architecture(state: Mapping[str, Tensor]) -> str:
    found = matching_architectures(state)
    if len(found) == 1:
        return found[0]
    if found:
        raise ModelError(f"These weights fit several architectures ({', '.join(found)}); choose one by name.")
    raise ModelError(
        f"These weights ({_plural(len(state), 'tensor')}, first {next(iter(state))!r}) fit none of torchvision's "
        "classifiers as they are; choose the architecture by name to see what does not fit."
    )


_AUXILIARY = ("aux1.", "aux2.", "AuxLogits.")


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
        head = _head_of(model)
        free = {first_conv: 1, f"{head}.weight": 0, f"{head}.bias": 0}
        signatures[arch] = {
            key: (_loose_shape(value.shape, free.get(key)), free.get(key))
            for key, value in model.state_dict().items()
            if not _ignored_key(key)
        }
    return signatures


def _meta_model(arch: str) -> nn.Module:
    """The architecture with default settings, on the meta device (shapes only, no memory)."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(arch, weights=None)


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024**2:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024**2:.1f} MB"


def _read(source: WeightsSource, what: str, max_bytes: int) -> tuple[bytes, Path | None]:
    """The bytes of a file given by path or as bytes, refusing anything over ``max_bytes``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, path = bytes(source), None
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        data = _read_path(path, what, max_bytes)
    else:
        raise ModelError(f"The {what} is given as a path or bytes, not as {type(source).__name__}.")
    size = len(data)
    if size > max_bytes:
        raise ModelError(f"The {what} is {_human(size)}, over the {_human(max_bytes)} limit.")
    if size == 0:
        raise ModelError(f"The {what} is empty.")
    return data, path


def _read_path(path: Path, what: str, max_bytes: int) -> bytes:
    """A regular file's bytes (up to ``max_bytes + 1``); a FIFO or a device is refused, never read."""
    try:
        if not path.exists():
            raise ModelError(f"The {what} {path} does not exist.")
        if path.is_dir():
            raise ModelError(f"The {what} {path} is a folder, not a file.")
        handle = open_regular_file(path)
        if handle is None:
            raise ModelError(f"The {what} {path} is not a regular file.")
        with handle:
            size = os.fstat(handle.fileno()).st_size
            if size > max_bytes:
                raise ModelError(f"The {what} is {_human(size)}, over the {_human(max_bytes)} limit.")
            return handle.read(max_bytes + 1)
    except OSError as exc:
        raise ModelError(f"The {what} {path} could not be read ({exc.strerror or type(exc).__name__}).") from exc


def _state_dict(data: bytes, max_bytes: int) -> dict[str, Tensor]:
    """Parameter name -> tensor, read as data only (format recognised by its first bytes)."""
    if _is_safetensors(data):
        _check_safetensors_header(data)
        try:
            loaded: object = safetensors.torch.load(data)
        except Exception as exc:
            raise ModelError(_DAMAGED_SAFETENSORS) from exc
    elif data[:4] == b"PK\x03\x04":
        _check_zip_directory(data)
        try:
            entries = zipfile.ZipFile(io.BytesIO(data)).infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise ModelError("The weights file is a damaged or truncated PyTorch checkpoint.") from exc
        if len(entries) > _MAX_MEMBERS:
            raise ModelError(_too_many_tensors(len(entries)))
        names = [entry.filename for entry in entries]
        unpacked = sum(entry.file_size for entry in entries)
        if unpacked > max_bytes:  # a compressed archive that would unpack past the limit
            raise ModelError(f"The weights file unpacks to {_human(unpacked)}, over the {_human(max_bytes)} limit.")
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            raise ModelError(
                "The weights file is a TorchScript program, which is never run here; save the model's "
                "state_dict() instead, preferably with safetensors.torch.save_file."
            )
        loaded = _torch_load(data)
    elif data[:1] == b"\x80":  # a pickle: torch.save's legacy format (or a crafted one, refused by weights_only)
        loaded = _torch_load(data)
    else:
        raise ModelError(
            "The weights file is neither safetensors nor a PyTorch checkpoint; save the model's state_dict() "
            "with safetensors.torch.save_file (or torch.save)."
        )
    return _plain_state_dict(loaded)


def _is_safetensors(data: bytes) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header starting with ``{``."""
    return len(data) >= 10 and data[8:9] == b"{" and int.from_bytes(data[:8], "little") < 100 * 1024**2


def _check_safetensors_header(data: bytes) -> None:
    """Refuse a safetensors header that is too long or lists too many tensors, before safetensors parses it."""
    length = int.from_bytes(data[:8], "little")
    if length > MAX_INDEX_BYTES:
        raise ModelError(
            f"The weights file's safetensors header is {_human(length)}, over the {_human(MAX_INDEX_BYTES)} "
            "a classifier needs."
        )
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ModelError(_DAMAGED_SAFETENSORS) from None
    if not isinstance(header, dict):
        raise ModelError(_DAMAGED_SAFETENSORS)
    tensors = len(header) - ("__metadata__" in header)
    if tensors > MAX_TENSORS:
        raise ModelError(_too_many_tensors(tensors))


def _check_zip_directory(data: bytes) -> None:
    """Refuse a checkpoint archive whose directory lists too many members, before ``zipfile`` parses it."""
    found = _zip_directory(data)
    if found is None:
        return  # zipfile reports the damage
    members, size = found
    if members > _MAX_MEMBERS:
        raise ModelError(_too_many_tensors(members))
    if size > MAX_INDEX_BYTES:
        raise ModelError(
            f"The weights file's archive directory is {_human(size)}, over the {_human(MAX_INDEX_BYTES)} "
            "a classifier needs."
        )


def _zip_directory(data: bytes) -> tuple[int, int] | None:
    """(members, directory size in bytes) from a zip's end-of-central-directory record (zip64 too)."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
    if end < 0 or end + 22 > len(data):
        return None
    members, size = struct.unpack("<HI", data[end + 10 : end + 16])
    locator = end - 20
    if (members == 0xFFFF or size == 0xFFFFFFFF) and locator >= 0 and data[locator : locator + 4] == b"PK\x06\x07":
        record = int.from_bytes(data[locator + 8 : locator + 16], "little")
        if data[record : record + 4] == b"PK\x06\x06" and record + 48 <= len(data):
            members, size = struct.unpack("<QQ", data[record + 32 : record + 48])
    return members, size


def _too_many_tensors(count: int) -> str:
    return (
        f"The weights file holds {count:,} tensors, more than the {MAX_TENSORS:,} a classifier could have; "
        "it is refused."
    )


def _torch_load(data: bytes) -> object:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(
            "The weights file holds Python objects besides tensors, which are never unpickled here (a pickle "
            "can run code); save the model's state_dict() instead, preferably with safetensors."
        ) from exc
    except Exception as exc:
        raise ModelError(
            f"The weights file is a damaged or truncated PyTorch checkpoint ({type(exc).__name__})."
        ) from exc


def _plain_state_dict(loaded: object) -> dict[str, Tensor]:
    """Unwrap ``{"state_dict": ...}``-style checkpoints and strip DataParallel / compile prefixes."""
    if isinstance(loaded, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not loaded:
        raise ModelError("The weights file holds no state dict (a mapping of parameter names to tensors).")
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise ModelError(
                f"The weights file's entry {key!r} is a {type(value).__name__}, not a tensor; save the model's "
                "state_dict()."
            )
    state = dict(loaded)  # a plain dict: no version metadata, so BatchNorm may lack num_batches_tracked
    for prefix in _PREFIXES:
        if all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def _head(arch: str) -> str:
    """Dotted name of the classifier layer of ``arch``."""
    return _head_info(arch)[0]


@lru_cache(maxsize=None)
def _head_info(arch: str) -> tuple[str, tuple[int, ...]]:
    """Dotted name of the classifier layer of ``arch`` and the shape of its weight (default number of classes)."""
    try:
        model = _meta_model(arch)
    except Exception:  # some initialisers cannot run on the meta device
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torchvision.models.get_model(arch, weights=None)
    head = _head_of(model)
    return head, tuple(model.get_submodule(head).weight.shape)


def _head_of(model: nn.Module) -> str:
    """Dotted name of the classifier layer: the last Linear (the last Conv2d for SqueezeNet)."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    convs = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    return (linears or convs)[-1]


def _build(arch: str, state: dict[str, Tensor]) -> tuple[nn.Module, int, int]:
    """The model with ``state`` loaded, its number of outputs and of input channels."""
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.get_model(arch, weights=None, **kwargs)
    channels = _match_input_channels(model, state, arch)
    _check_keys(model, state, arch)
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ModelError(f"The weights could not be loaded into {arch} ({type(exc).__name__}).") from exc
    return model.eval(), outputs, channels


def _check_head_rank(arch: str, head: str, weight: Tensor) -> None:
    """Refuse a classifier weight with the wrong number of dimensions (e.g. a vector where a matrix belongs)."""
    want = _head_info(arch)[1]
    if weight.ndim == len(want):
        return  # the number of outputs is free; _check_keys compares the other dimensions
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
        return conv.in_channels  # a missing key is reported by _check_keys
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


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _check_keys(model: nn.Module, state: dict[str, Tensor], arch: str) -> None:
    """One sentence naming what does not fit: missing keys, unexpected keys, wrong shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    parts = []
    if missing:
        parts.append(f"{_plural(len(missing), 'key')} of {arch} missing (such as {missing[0]!r})")
    if unexpected:
        parts.append(f"{_plural(len(unexpected), 'unexpected key')} (such as {unexpected[0]!r})")
    if wrong:
        key = wrong[0]
        shape = "×".join(map(str, state[key].shape))
        want = "×".join(map(str, expected[key].shape))
        parts.append(f"{_plural(len(wrong), 'tensor')} of the wrong shape (such as {key!r}: {shape}, not {want})")
    if parts:
        raise ModelError(f"The weights do not fit {arch}: {', '.join(parts)}; check the architecture name.")


def _labels(labels: LabelsSource, outputs: int) -> tuple[str, ...]:
    if isinstance(labels, (str, os.PathLike, bytes, bytearray, memoryview)):
        data, _ = _read(labels, "labels file", MAX_LABELS_BYTES)
        names, what = _parse_labels(data), "labels file"
    elif isinstance(labels, Iterable):
        names, what = list(labels), "labels list"
        if not all(isinstance(n, str) for n in names):
            raise ModelError("The labels list must hold class names as strings.")
    else:
        raise ModelError(
            f"The labels are given as a file path, bytes or a list of names, not as {type(labels).__name__}."
        )
    names = [" ".join(n.split()) for n in names]
    if any(not n for n in names):
        raise ModelError(f"The {what} has an empty class name at position {names.index('')}.")
    seen: dict[str, str] = {}
    for label in names:
        if label.casefold() in seen:
            raise ModelError(f"The {what} names {label!r} twice; class names must be unique.")
        seen[label.casefold()] = label
    if len(names) != outputs:
        raise ModelError(
            f"The {what} has {_plural(len(names), 'name')} but the model has {_plural(outputs, 'output')}."
        )
    return tuple(names)


def _parse_labels(data: bytes) -> list[str]:
    """One name per line (blank lines ignored), or JSON: a list, or a dict index -> name (or name -> index)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ModelError("The labels file is not UTF-8 text.") from None
    stripped = text.strip()
    if stripped[:1] not in ("[", "{"):
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        parsed = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise ModelError(f"The labels file looks like JSON but is not valid (line {exc.lineno}: {exc.msg}).") from None
    if isinstance(parsed, dict) and parsed and all(type(v) is int for v in parsed.values()):
        parsed = {str(index): label for label, index in parsed.items()}  # name -> index
    if isinstance(parsed, dict):
        try:
            indexed = {int(key): value for key, value in parsed.items()}
        except ValueError:
            raise ModelError("The labels JSON maps keys that are not class indices (0, 1, 2...).") from None
        if sorted(indexed) != list(range(len(indexed))):
            raise ModelError(f"The labels JSON must give every class index from 0 to {len(indexed) - 1} once.")
        parsed = [indexed[i] for i in range(len(indexed))]
    if not isinstance(parsed, list):
        raise ModelError("The labels JSON must be a list of names or a dict from class index to name.")
    names = []
    for item in parsed:
        if isinstance(item, list) and item and all(isinstance(part, str) for part in item):
            item = item[-1]  # ImageNet's class index style: ["n01440764", "tench"]
        if not isinstance(item, str):
            raise ModelError(f"The labels JSON holds a {type(item).__name__} where a class name should be.")
        names.append(item)
    return names


def _per_channel(values: Sequence[float], channels: int, what: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ModelError(f"The normalisation {what} must be numbers, one per channel.") from None
    if len(numbers) == 1:
        numbers = numbers * channels
    elif len(numbers) == 3 and channels == 1:
        numbers = (sum(numbers) / 3,)  # RGB statistics for a grayscale model: their average
    if len(numbers) != channels:
        raise ModelError(f"The normalisation {what} has {len(numbers)} values; give 1 or {channels}.")
    if not all(math.isfinite(v) for v in numbers) or (what != "mean" and min(numbers) <= 0):
        raise ModelError(f"The normalisation {what} must be finite{'' if what == 'mean' else ' and positive'}.")
    return numbers


def _default_layer(arch: str, layers: Sequence[LayerInfo]) -> str:
    """The registry's choice for this architecture, else the last feature map that is not a pooling."""
    names = [info.name for info in layers]
    spec = MODELS.get(arch)
    if spec is not None and spec.default_layer in names:
        return spec.default_layer
    unpooled = [info.name for info in layers if "Pool" not in info.kind]
    return (unpooled or names)[-1]
