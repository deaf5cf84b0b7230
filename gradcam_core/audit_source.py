"""What an audit reads: the images of a folder or a manifest, each with its true label and group columns.

A SOURCE is one of:

* a folder of images laid out like torchvision's ``ImageFolder``: each sub-folder is a class and names the true
  label of every image below it; files directly in the folder have no label;
* a folder of DICOM files (with a ``.dcm``/``.dicom`` suffix or none at all): the same rules;
* a CSV or Parquet manifest: a ``path`` column (relative to the manifest's folder, or absolute), an optional
  ``label`` column and any other columns as groups (``site``, ``scanner``...).

Only the file list is read here; files are opened by the pipeline (:mod:`.audit_run`), which lists a missing or
corrupt file with its reason. Example::

    source = read_source("data/train")          # ImageFolder layout
    source.rows[0]                              # AuditRow(path='data/train/cat/1.png', label='cat', groups={})
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AuditError
from .formats import UPLOAD_SUFFIXES

__all__ = ["MANIFEST_SUFFIXES", "RESERVED_COLUMNS", "AuditRow", "AuditSource", "read_source"]

MANIFEST_SUFFIXES = (".csv", ".parquet")
MAX_MANIFEST_BYTES = 512 * 2**20

RESERVED_COLUMNS = frozenset({
    "path", "sha256", "label", "width", "height", "thumbnail", "error", "prediction", "prediction_index",
    "probability", "correct", "target", "target_index", "target_probability", "score", "map", "map_height",
    "map_width", "peak_x", "peak_y", "border_share", "corner_share", "decode_s", "preprocess_s", "explain_s",
    "cluster", "flagged",
})
"""Column names of the audit's own output, which a group column may not take (region columns start with
``region_``)."""


@dataclass(frozen=True)
class AuditRow:
    """One image to audit.

    Attributes:
        path: The file, as the pipeline will open it.
        label: Its true label (class name), or ``None`` when unknown.
        groups: Its group values by column name (``{"site": "A"}``); a missing value is ``None``.
    """

    path: str
    label: str | None = None
    groups: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditSource:
    """The images of a SOURCE, and the manifest rows that could not be used.

    Attributes:
        rows: The images in source order, each path once.
        group_columns: Names of the group columns, in the manifest's order.
        bad: ``(path, reason)`` of every manifest row refused before opening any file.
        description: What the source was, for the audit's settings (``"ImageFolder data/train"``).
    """

    rows: tuple[AuditRow, ...]
    group_columns: tuple[str, ...] = ()
    bad: tuple[tuple[str, str], ...] = ()
    description: str = ""


def read_source(
    source: str | os.PathLike[str],
    *,
    path_column: str = "path",
    label_column: str = "label",
    group_columns: Sequence[str] | None = None,
) -> AuditSource:
    """The images of a folder (ImageFolder layout, DICOM files) or of a CSV/Parquet manifest.

    Example: ``read_source("manifest.csv", group_columns=["site"]).group_columns  # ("site",)``.

    Args:
        source: A folder, or a ``.csv`` / ``.parquet`` manifest.
        path_column: The manifest's column of image paths.
        label_column: The manifest's column of true labels (optional in the file).
        group_columns: The manifest's columns to group by; ``None``: every other column.

    Raises:
        AuditError: the source is missing, not a folder or manifest, holds no image, or the manifest has no
            path column or a group column named like an output column.
    """
    path = Path(source).absolute()  # rows name their files wherever the audit is read later (the dashboard)
    if path.is_dir():
        return _folder(path)
    if path.suffix.lower() in MANIFEST_SUFFIXES and path.is_file():
        return _manifest(path, path_column, label_column, group_columns)
    if not path.exists():
        raise AuditError(f"The audit source {path} does not exist.")
    raise AuditError(f"The audit source must be a folder or a manifest ({', '.join(MANIFEST_SUFFIXES)}).")


def _folder(root: Path) -> AuditSource:
    """Images directly in ``root`` (no label) and below each sub-folder (labelled with its name)."""
    rows = [AuditRow(str(path)) for path in _image_files(root, recursive=False)]
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in classes:
        rows.extend(AuditRow(str(path), folder.name) for path in _image_files(folder, recursive=True))
    if not rows:
        raise AuditError(
            f"The folder {root} holds no image files ({', '.join(UPLOAD_SUFFIXES)}, or DICOM without a suffix)."
        )
    layout = "ImageFolder" if classes else "folder"
    return AuditSource(tuple(rows), description=f"{layout} {root}")


def _image_files(folder: Path, *, recursive: bool) -> list[Path]:
    """Image files (known suffix, or none: DICOM files often have none), hidden files left out, in name order."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        path for path in found
        if path.is_file() and not path.name.startswith(".")
        and (path.suffix.lower() in UPLOAD_SUFFIXES or not path.suffix)
    )


def _manifest(
    path: Path, path_column: str, label_column: str, group_columns: Sequence[str] | None
) -> AuditSource:
    """Rows of a CSV or Parquet manifest; relative paths are relative to its folder."""
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise AuditError(f"The manifest {path.name} is larger than {MAX_MANIFEST_BYTES // 2**20} MB.")
    columns, records = _read_table(path)
    if path_column not in columns:
        raise AuditError(f"The manifest {path.name} has no {path_column!r} column of image paths.")
    if group_columns is None:
        groups = tuple(c for c in columns if c not in (path_column, label_column))
    else:
        missing = [c for c in group_columns if c not in columns]
        if missing:
            raise AuditError(f"The manifest {path.name} has no {missing[0]!r} column.")
        groups = tuple(group_columns)
    reserved = [c for c in groups if c in RESERVED_COLUMNS or c.startswith("region_")]
    if reserved:
        raise AuditError(f"The group column {reserved[0]!r} is named like an audit output column; rename it.")
    rows: list[AuditRow] = []
    bad: list[tuple[str, str]] = []
    seen: set[str] = set()
    for number, record in enumerate(records, start=2):
        given = _text(record.get(path_column))
        if given is None:
            bad.append((f"{path.name}:{number}", "The manifest row has no image path."))
            continue
        image = str(path.parent / given) if not Path(given).is_absolute() else given
        if image in seen:
            bad.append((image, "The image is listed more than once in the manifest; only its first row is used."))
            continue
        seen.add(image)
        label = _text(record.get(label_column)) if label_column in columns else None
        rows.append(AuditRow(image, label, {c: _text(record.get(c)) for c in groups}))
    if not rows:
        raise AuditError(f"The manifest {path.name} lists no image.")
    return AuditSource(tuple(rows), groups, tuple(bad), f"manifest {path}")


def _read_table(path: Path) -> tuple[list[str], list[dict[str, object]]]:
    """Column names and rows of a manifest."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad manifest for the user
            raise AuditError(f"The manifest {path.name} is not a readable Parquet file.") from exc
        return list(table.column_names), table.to_pylist()
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            records = list(reader)
            return list(reader.fieldnames or []), records
    except (UnicodeDecodeError, csv.Error) as exc:
        raise AuditError(f"The manifest {path.name} is not a readable UTF-8 CSV file.") from exc


def _text(value: object) -> str | None:
    """A cell as text; empty or missing is ``None``."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None
