"""Reading a weights file as data only: a state dict of tensors, never a program.

A model file is a program, so only data is read: ``.safetensors`` (preferred), or a PyTorch checkpoint
(``.pt``/``.pth``) through ``torch.load(weights_only=True)``, which refuses anything but tensors and plain
containers. TorchScript archives and arbitrary pickles are refused. The format is recognised by its first
bytes, never by its extension, and every count or size in a header is checked before a parser reads it::

    state = read_state_dict(Path("resnet18.safetensors").read_bytes())   # {"conv1.weight": tensor, ...}
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import warnings
import zipfile
from collections.abc import Mapping

import safetensors.torch
import torch
from torch import Tensor

from .errors import ModelError
from .units import format_size

__all__ = ["MAX_INDEX_BYTES", "MAX_TENSORS", "MAX_WEIGHTS_BYTES", "WeightsSource", "read_state_dict"]

MAX_WEIGHTS_BYTES = 500 * 1024**2
"""Largest weights file accepted by default."""

MAX_TENSORS = 20_000
"""Most tensors a weights file may hold. torchvision's largest classifier (EfficientNet-V2-L) has about 1 700,
counting BatchNorm's counters; an absurd count is refused from the file's header or directory alone (145 000
empty tensors took 2.3 s and 120 MB to load, and the cost grows linearly)."""
MAX_INDEX_BYTES = 4 * 1024**2
"""Largest safetensors JSON header, or directory of a checkpoint archive: about 100 bytes per tensor, so 25 times
what the largest classifier needs (safetensors itself accepts a 100 MB header, whose parsing takes gigabytes)."""

WeightsSource = str | os.PathLike | bytes
"""A weights file, by path or as bytes (an upload)."""

_MAX_MEMBERS = MAX_TENSORS + 16  # a checkpoint archive: one member per tensor, plus a few records
_DAMAGED_SAFETENSORS = "The weights file starts like safetensors but is damaged or truncated."
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # {"state_dict": ..., "epoch": 3} and the like
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel, torch.compile


def read_state_dict(data: bytes, max_bytes: int = MAX_WEIGHTS_BYTES) -> dict[str, Tensor]:
    """Parameter name -> tensor from a weights file's bytes, read as data only (format told by its first bytes).

    A ``{"state_dict": ...}``-style wrapper is unwrapped and a DataParallel ``module.`` or ``torch.compile``
    ``_orig_mod.`` prefix stripped. Example: ``read_state_dict(data)["fc.weight"].shape  # (1000, 512)``.

    Args:
        data: The file's bytes.
        max_bytes: Largest size a compressed checkpoint may unpack to.

    Raises:
        ModelError: an unknown, damaged, unsafe (pickled objects, TorchScript) or oversized file, or one that
            holds no state dict.
    """
    if _is_safetensors(data):
        loaded: object = _load_safetensors(data)
    elif data[:4] == b"PK\x03\x04":
        loaded = _load_checkpoint_archive(data, max_bytes)
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


def _load_safetensors(data: bytes) -> dict[str, Tensor]:
    _check_safetensors_header(data)
    try:
        return safetensors.torch.load(data)
    except Exception as exc:
        raise ModelError(_DAMAGED_SAFETENSORS) from exc


def _check_safetensors_header(data: bytes) -> None:
    """Refuse a safetensors header that is too long or lists too many tensors, before safetensors parses it."""
    length = int.from_bytes(data[:8], "little")
    if length > MAX_INDEX_BYTES:
        raise ModelError(
            f"The weights file's safetensors header is {format_size(length)}, over the "
            f"{format_size(MAX_INDEX_BYTES)} a classifier needs."
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


def _load_checkpoint_archive(data: bytes, max_bytes: int) -> object:
    """A ``torch.save`` zip archive: its directory checked, TorchScript refused, then the tensors loaded."""
    _check_zip_directory(data)
    try:
        entries = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelError("The weights file is a damaged or truncated PyTorch checkpoint.") from exc
    if len(entries) > _MAX_MEMBERS:
        raise ModelError(_too_many_tensors(len(entries)))
    unpacked = sum(entry.file_size for entry in entries)
    if unpacked > max_bytes:  # a compressed archive that would unpack past the limit
        raise ModelError(
            f"The weights file unpacks to {format_size(unpacked)}, over the {format_size(max_bytes)} limit."
        )
    if any(entry.filename.endswith("constants.pkl") or "/code/" in entry.filename for entry in entries):
        raise ModelError(
            "The weights file is a TorchScript program, which is never run here; save the model's "
            "state_dict() instead, preferably with safetensors.torch.save_file."
        )
    return _torch_load(data)


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
            f"The weights file's archive directory is {format_size(size)}, over the "
            f"{format_size(MAX_INDEX_BYTES)} a classifier needs."
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
