"""Bounded reading of the files a user gives: images, DICOM files, weights and labels alike.

A path is looked at with ``stat()`` before it is opened (opening a FIFO or a device could block), opened
without blocking and looked at again on the open descriptor (a FIFO swapped in meanwhile is refused), and
never read past its limit. Every refusal is one sentence in the caller's error type, naming the file unless
the caller asks not to (DICOM file names often hold a patient's name)::

    data = read_bounded("model.safetensors", 500 * 2**20, what="weights file", error=ModelError)
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import IO

from .errors import GradCamError, ImageError
from .units import format_size

__all__ = ["FileSource", "check_size", "open_bounded", "open_regular_file", "path_of", "read_bounded"]

FileSource = str | os.PathLike[str] | bytes | bytearray | memoryview
"""A file given by its path or by its bytes (an upload)."""


def read_bounded(
    source: FileSource,
    max_bytes: int | None,
    *,
    what: str = "file",
    error: type[GradCamError] = ImageError,
    named: bool = True,
) -> bytes:
    """The bytes of a file given by path or as bytes, refused when empty or over ``max_bytes`` (``None``: no limit).

    Example: ``read_bounded(b"", 10)`` raises ``ImageError("The file is empty.")``.

    Args:
        source: A path, or the file's bytes.
        max_bytes: Largest accepted size.
        what: What the file is, for messages (``"weights file"``).
        error: The error type raised.
        named: Name the file in messages (``False`` for files whose names may identify a patient).

    Raises:
        error: The file is missing, not a regular file, unreadable, empty or too large, or ``source`` is
            neither a path nor bytes.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        check_size(len(data), max_bytes, _subject(what), error)
        return data
    if not isinstance(source, (str, os.PathLike)):
        raise error(f"The {what} is given as a path or bytes, not as {type(source).__name__}.")
    subject = _subject(what, source if named else None)
    with open_bounded(source, max_bytes, what=what, error=error, named=named) as handle:
        try:
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
        except OSError:
            raise error(f"{subject} cannot be read.") from None
    check_size(len(data), max_bytes, subject, error)  # it may have changed since it was opened
    return data


def open_bounded(
    path: str | os.PathLike[str],
    max_bytes: int | None,
    *,
    what: str = "file",
    error: type[GradCamError] = ImageError,
    named: bool = True,
) -> IO[bytes]:
    """``path`` opened for binary reading, after refusing a missing, non-regular, empty or too large file.

    Example: ``with open_bounded("cat.png", 2**20) as handle: head = handle.read(16)``.

    Arguments and errors are those of :func:`read_bounded`; the caller closes the handle.
    """
    subject = _subject(what, path if named else None)
    place = _subject("path", path if named else None)
    try:
        info = os.stat(path)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise error(_cannot_open(exc, subject)) from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{place} is a folder, not a file.")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{place} is not a regular file.")
    check_size(info.st_size, max_bytes, subject, error)
    try:
        handle = open_regular_file(path)
    except OSError as exc:
        raise error(_cannot_open(exc, subject)) from None
    if handle is None:  # replaced by a FIFO or a device since the stat() above
        raise error(f"{place} is not a regular file.")
    return handle


def check_size(size: int, max_bytes: int | None, subject: str, error: type[GradCamError]) -> None:
    """Refuse an empty file, or one over ``max_bytes``: ``check_size(0, 10, "The file", ImageError)`` raises.

    ``subject`` begins the sentence (``"The weights file"``).
    """
    if size == 0:
        raise error(f"{subject} is empty.")
    if max_bytes is not None and size > max_bytes:
        raise error(f"{subject} is {format_size(size)}, more than the {format_size(max_bytes)} limit.")


def open_regular_file(path: str | os.PathLike[str]) -> IO[bytes] | None:
    """``path`` opened for binary reading, or ``None`` when it is not a regular file (a FIFO, a device, a folder).

    The file is opened without blocking and checked on the open descriptor, so a FIFO never hangs the caller,
    even one swapped in after an earlier ``stat()``. Raises ``OSError`` when the path cannot be opened.
    Example: ``open_regular_file("/dev/zero")  # None``.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise


def _subject(what: str, path: str | os.PathLike[str] | None = None) -> str:
    """``"The weights file"``, or with the path: ``"The weights file '/tmp/w.pt'"``."""
    return f"The {what}" if path is None else f"The {what} '{os.fsdecode(os.fspath(path))}'"


def _cannot_open(exc: OSError | ValueError, subject: str) -> str:
    """Why ``stat()`` or ``open()`` failed, as a sentence about ``subject``."""
    if isinstance(exc, FileNotFoundError):
        return f"{subject} does not exist."
    if isinstance(exc, PermissionError):
        return f"{subject} cannot be opened (permission denied)."
    return f"{subject} cannot be opened."


def path_of(source: FileSource) -> Path | None:
    """The path of a file given by path, ``None`` for one given as bytes: ``path_of(b"...")  # None``."""
    return None if isinstance(source, (bytes, bytearray, memoryview)) else Path(source)
