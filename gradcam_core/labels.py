"""Class names for your own model: a labels file (text or JSON) or a list, one unique name per output.

Example::

    read_labels(b'["cat", "dog", "bird"]', outputs=3)    # ("cat", "dog", "bird")
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

from .errors import ModelError
from .files import read_bounded
from .units import plural

__all__ = ["MAX_LABELS_BYTES", "LabelsSource", "parse_labels", "read_labels"]

MAX_LABELS_BYTES = 8 * 1024**2
"""Largest labels file accepted."""

LabelsSource = str | os.PathLike | bytes | Sequence[str]
"""A labels file by path or as bytes, or the class names themselves."""


def read_labels(labels: LabelsSource, outputs: int) -> tuple[str, ...]:
    """The class names of a model with ``outputs`` outputs, white space folded.

    Example: ``read_labels(["cat", "dog"], outputs=2)  # ("cat", "dog")``.

    Raises:
        ModelError: an unreadable file, an empty or repeated name (case-insensitive), or a count that is not
            ``outputs``.
    """
    if isinstance(labels, (str, os.PathLike, bytes, bytearray, memoryview)):
        data = read_bounded(labels, MAX_LABELS_BYTES, what="labels file", error=ModelError)
        names, what = parse_labels(data), "labels file"
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
            f"The {what} has {plural(len(names), 'name')} but the model has {plural(outputs, 'output')}."
        )
    return tuple(names)


def parse_labels(data: bytes) -> list[str]:
    """One name per line (blank lines ignored), or JSON: a list, or a dict index -> name (or name -> index).

    Example: ``parse_labels(b'{"0": "cat", "1": "dog"}')  # ["cat", "dog"]``.

    Raises:
        ModelError: not UTF-8, invalid JSON, or JSON of another shape.
    """
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
