"""Reading a few named files of a saved model folder, given as a folder or as a zip of it, within limits.

A zip is checked before anything is unpacked: its member count, its total unpacked size, and every member's
path (no absolute path, no ``..``, no drive or backslash, no duplicate). The folder's root is where its
``anchor`` file is (at the zip's root or in its one top folder); only the names asked for are read from there,
each within its own limit::

    files = read_model_files("vit.zip", ("config.json", "model.safetensors"), anchor="config.json",
                             max_bytes=500 * 2**20, what="Hugging Face model")
    files["config.json"]   # bytes; a name that is absent is missing from the dict
"""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from collections.abc import Collection, Sequence
from pathlib import Path, PurePosixPath

from .errors import ModelError
from .files import FileSource, check_size, read_bounded
from .units import format_size

__all__ = ["MAX_MEMBERS", "MAX_SMALL_FILE_BYTES", "json_object", "read_model_files"]

MAX_MEMBERS = 1_000
"""Most members a model zip may list: a saved model folder holds a handful of files."""
MAX_SMALL_FILE_BYTES = 4 * 1024**2
"""Limit of every file that is not a weights file (configs, metadata)."""


def read_model_files(
    source: FileSource,
    names: Sequence[str],
    *,
    anchor: str,
    max_bytes: int,
    what: str,
    large: Collection[str] = (),
) -> dict[str, bytes]:
    """The files of ``names`` (paths relative to the folder's root, with ``/``) found in a folder or a zip.

    Example: see the module docstring.

    Args:
        source: A folder's path, or a zip by path or bytes.
        names: The files to read; absent ones are left out of the result.
        anchor: The file that marks the folder's root inside a zip (e.g. ``"config.json"``).
        max_bytes: Limit of the zip, of its unpacked total, and of each file of ``large``.
        what: What the folder is, for messages (``"Hugging Face model"``).
        large: Names that may take up to ``max_bytes`` (weights); the others get ``MAX_SMALL_FILE_BYTES``.

    Raises:
        ModelError: with one sentence, for a file that is neither a folder nor a zip, a damaged zip, too many
            members, an unsafe or repeated path, no single anchor, or a file over its limit.
    """
    limits = {name: max_bytes if name in large else MAX_SMALL_FILE_BYTES for name in names}
    if not isinstance(source, (bytes, bytearray, memoryview)) and _is_folder(source):
        root = Path(source)
        return {
            name: read_bounded(root / name, limit, what=f"{what}'s {name}", error=ModelError, named=False)
            for name, limit in limits.items()
            if (root / name).exists()
        }
    data = read_bounded(source, max_bytes, what=f"{what} file", error=ModelError)
    if data[:4] != b"PK\x03\x04":
        raise ModelError(f"The {what} must be a folder or a zip of it.")
    try:
        return _read_zip(zipfile.ZipFile(io.BytesIO(data)), limits, anchor, max_bytes, what)
    except ModelError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        raise ModelError(f"The {what} zip is damaged or unreadable ({type(exc).__name__}).") from exc


def _is_folder(source: str | os.PathLike[str]) -> bool:
    try:
        return stat.S_ISDIR(os.stat(source).st_mode)
    except (OSError, ValueError, TypeError):
        return False  # read_bounded says what is wrong


def _read_zip(
    archive: zipfile.ZipFile, limits: dict[str, int], anchor: str, max_bytes: int, what: str
) -> dict[str, bytes]:
    members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise ModelError(f"The {what} zip lists {len(members):,} files, more than a saved model holds.")
    unpacked = sum(member.file_size for member in members)
    if unpacked > max_bytes:
        raise ModelError(f"The {what} zip unpacks to {format_size(unpacked)}, over the {format_size(max_bytes)} limit.")
    paths: dict[PurePosixPath, zipfile.ZipInfo] = {}
    for member in members:
        path = PurePosixPath(member.filename)
        if "\\" in member.filename or ":" in member.filename or path.is_absolute() or ".." in path.parts:
            raise ModelError(f"The {what} zip holds an unsafe path {member.filename!r}; it is refused.")
        if path in paths:
            raise ModelError(f"The {what} zip holds {member.filename!r} twice; it is refused.")
        paths[path] = member
    depth = len(PurePosixPath(anchor).parts)
    roots = [
        PurePosixPath(*path.parts[:-depth])
        for path in paths
        if path.parts[-depth:] == PurePosixPath(anchor).parts and len(path.parts) <= depth + 1
    ]
    if len(roots) != 1:
        raise ModelError(f"The {what} zip must hold one {anchor}, at its root or in its one folder.")
    found = {}
    for name, limit in limits.items():
        member = paths.get(roots[0] / name)
        if member is None or member.is_dir():
            continue
        subject = f"The {what}'s {name}"
        check_size(member.file_size, limit, subject, ModelError)
        with archive.open(member) as handle:
            data = handle.read(limit + 1)
        check_size(len(data), limit, subject, ModelError)
        found[name] = data
    return found


def json_object(data: bytes, what: str) -> dict:
    """A model file's JSON object, read as data: ``json_object(b'{"a": 1}', "config.json")  # {"a": 1}``.

    Raises:
        ModelError: "The {what} is not valid JSON." or "The {what} must hold a JSON object."
    """
    try:
        parsed = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ModelError(f"The {what} is not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise ModelError(f"The {what} must hold a JSON object.")
    return parsed
