"""The audit folder: written part by part by the pipeline, analysed once at the end, read by the dashboard.

Layout of an audit folder::

    audit.json          the settings (model, layer, method, target rule, regions, groups); a run that would mix
                        settings is refused
    images/part-*.parquet
                        one row per image (:func:`output_schema`): identity (path, SHA-256), true label, group
                        columns, prediction, probability, correct, target, the map at the layer's resolution
                        (float32 bytes, ``map_height`` x ``map_width``), peak, border, corner and region shares,
                        a PNG thumbnail, stage times; a bad file has its reason in ``error``
    clusters.json       SpRAy per explained class (:mod:`.spray`): clusters with size, accuracy, mean map,
                        members (most typical first) and flags
    members.parquet     path, target, cluster, flagged
    groups.csv          accuracy and heat statistics per value of each group column (and of the true label)
    failed.csv          path and reason of every bad file

Example::

    audit = analyse_audit("audit")               # after run_audit
    audit = open_audit("audit")                  # later, e.g. in the dashboard
    [c for c in audit.clusters if c.flags]       # possible shortcuts
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from .errors import AuditError
from .files import read_bounded
from .heat import Region
from .spray import Cluster, spray
from .tables import spreadsheet_safe

__all__ = [
    "Audit", "analyse_audit", "done_keys", "open_audit", "output_schema", "read_images", "write_part",
    "write_settings",
]

IMAGES = "images"
SETTINGS = "audit.json"
CLUSTERS = "clusters.json"
MEMBERS = "members.parquet"
GROUPS = "groups.csv"
FAILED = "failed.csv"

_FIXED: tuple[tuple[str, pa.DataType], ...] = (
    ("path", pa.string()), ("sha256", pa.string()), ("label", pa.string()), ("error", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("thumbnail", pa.binary()),
    ("prediction", pa.string()), ("prediction_index", pa.int32()), ("probability", pa.float32()),
    ("correct", pa.bool_()), ("target", pa.string()), ("target_index", pa.int32()),
    ("target_probability", pa.float32()), ("score", pa.float32()), ("map", pa.binary()),
    ("map_height", pa.int32()), ("map_width", pa.int32()), ("peak_x", pa.float32()), ("peak_y", pa.float32()),
    ("border_share", pa.float32()), ("corner_share", pa.float32()),
)
_TIMES = (("decode_s", pa.float32()), ("preprocess_s", pa.float32()), ("explain_s", pa.float32()))


@dataclass(frozen=True, eq=False)
class Audit:
    """An audit folder, read.

    Attributes:
        folder: Where it is.
        settings: ``audit.json``: model, layer, method, target rule, regions, group columns, source.
        images: One row per explained image (columns of :func:`output_schema`; ``map`` holds the ``(h, w)``
            float32 map, ``thumbnail`` PNG bytes), plus ``cluster`` (its SpRAy cluster within its target class)
            and ``flagged`` (that cluster is a possible shortcut) once analysed; index 0..n-1.
        failed: ``path`` and ``error`` of every bad file.
        clusters: Every class's SpRAy clusters (``Cluster.members`` are positions in ``images``), class by class,
            largest first.
        groups: Statistics per value of the true label and of each group column (``column``, ``value``,
            ``images``, ``labelled``, ``accuracy``, ``mean_probability``, ``mean_border_share``,
            ``mean_corner_share``, ``flagged_share``,
            ``mean_region_<name>``).
    """

    folder: Path
    settings: dict[str, Any]
    images: pd.DataFrame
    failed: pd.DataFrame
    clusters: tuple[Cluster, ...]
    groups: pd.DataFrame

    def thumbnail(self, position: int) -> Image.Image:
        """The thumbnail of ``images`` row ``position``: ``audit.thumbnail(cluster.typical[0])``."""
        return Image.open(io.BytesIO(self.images["thumbnail"].iat[position])).convert("RGB")

    def image_file(self, position: int, max_bytes: int) -> bytes:
        """The bytes of ``images`` row ``position``'s file, as audited: ``audit.image_file(0, 25 * 2**20)``.

        Raises:
            AuditError: the file is gone, unreadable, over ``max_bytes``, or no longer the one audited (its
                SHA-256 differs), in one sentence that names the file by its name only, never by its path.
        """
        row = self.images.iloc[position]
        name = Path(str(row["path"])).name
        data = read_bounded(str(row["path"]), max_bytes, what=f"audited image {name}", error=AuditError, named=False)
        if hashlib.sha256(data).hexdigest() != row["sha256"]:
            raise AuditError(f"The audited image {name} has changed since the audit; audit it again to explain it.")
        return data

    def flagged(self) -> tuple[Cluster, ...]:
        """The clusters flagged as possible shortcuts."""
        return tuple(cluster for cluster in self.clusters if cluster.flags)


def output_schema(group_columns: tuple[str, ...] | list[str], regions: tuple[Region, ...] | list[Region]) -> pa.Schema:
    """The columns of every part: ``output_schema(("site",), [Region("tag", 0, 0, .2, .2)]).names``."""
    fields = [
        *_FIXED[:4], *((name, pa.string()) for name in group_columns), *_FIXED[4:],
        *((f"region_{region.name}", pa.float32()) for region in regions), *_TIMES,
    ]
    return pa.schema(fields)


def write_part(folder: str | os.PathLike[str], table: pa.Table) -> Path:
    """Write ``table`` as a new part of the audit in ``folder``, atomically (a crash leaves no half part).

    Example: ``write_part("audit", table)  # audit/images/part-<time>.parquet``.
    """
    parts = Path(folder) / IMAGES
    parts.mkdir(parents=True, exist_ok=True)
    path = parts / f"part-{time.time_ns():020d}-{os.getpid()}.parquet"
    partial = path.with_name(f".{path.name}.partial")
    pq.write_table(table, partial)
    os.replace(partial, path)
    return path


def done_keys(folder: str | os.PathLike[str]) -> frozenset[tuple[str, str]]:
    """``(path, sha256)`` of every row already written (``sha256`` is ``""`` for an unreadable file).

    Example: ``("data/cat/1.png", "9f86d0...") in done_keys("audit")``.
    """
    keys: set[tuple[str, str]] = set()
    for part in _parts(Path(folder)):
        table = pq.read_table(part, columns=["path", "sha256"])
        keys.update(zip(table.column("path").to_pylist(), table.column("sha256").to_pylist()))
    return frozenset(keys)


def write_settings(folder: str | os.PathLike[str], settings: dict[str, Any]) -> None:
    """Record the audit's settings in ``folder``, or check they match those of the audit already there.

    Example: ``write_settings("audit", {"model": "resnet50", ...})``.

    Raises:
        AuditError: the folder holds an audit with other settings, or cannot be written.
    """
    path = Path(folder) / SETTINGS
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        keep = {key: value for key, value in settings.items() if key != "source"}
        if {key: previous.get(key) for key in keep} != json.loads(json.dumps(keep)):
            raise AuditError(f"The folder {folder} holds an audit with other settings; choose another output folder.")
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise AuditError(f"The audit folder {folder} cannot be written ({exc.strerror or exc}).") from None


def read_images(folder: str | os.PathLike[str]) -> pd.DataFrame:
    """Every row written so far, the latest one per path (a file changed since is explained again), in part
    order, with ``map`` decoded to ``(h, w)`` arrays. Example: ``read_images("audit").probability.mean()``.

    Raises:
        AuditError: the folder holds no audit.
    """
    parts = _parts(Path(folder))
    if not parts:
        raise AuditError(f"The folder {folder} holds no audit results.")
    table = pa.concat_tables([pq.read_table(part) for part in parts], promote_options="default")
    frame = table.to_pandas(types_mapper=_nullable)
    frame = frame.drop_duplicates("path", keep="last").reset_index(drop=True)
    frame["map"] = [
        None if data is None else np.frombuffer(data, np.float32).reshape(int(h), int(w))
        for data, h, w in zip(frame["map"], frame["map_height"].fillna(0), frame["map_width"].fillna(0))
    ]
    return frame


def analyse_audit(
    folder: str | os.PathLike[str], *, object_box: Region | None = None, max_clusters: int = 8, seed: int = 0
) -> Audit:
    """Run SpRAy per explained class and the group statistics on an audit folder; write and return them.

    Example: ``analyse_audit("audit", object_box=Region("object", .2, .2, .8, .8)).flagged()``.

    Args:
        folder: The audit folder (after :func:`~gradcam_core.audit_run.run_audit`).
        object_box: Where the object is in every image; clusters with most heat outside it are flagged.
        max_clusters: Most clusters per class.
        seed: Seed of k-means.
    """
    root = Path(folder)
    settings = _settings(root)
    frame = read_images(root)
    images, failed = _split(frame)
    clusters: list[Cluster] = []
    cluster_of = np.full(len(images), -1)
    for target, rows in images.groupby("target", sort=True).indices.items():
        correct = [None if pd.isna(value) else bool(value) for value in images["correct"].iloc[rows]]
        found = spray(
            list(images["map"].iloc[rows]), correct, target=str(target), object_box=object_box,
            max_clusters=max_clusters, seed=seed,
        )
        cluster_of[rows] = found.assignments
        clusters.extend(
            dataclasses.replace(c, members=tuple(int(rows[m]) for m in c.members)) for c in found.clusters
        )
    _write_clusters(root, clusters, images, object_box)
    pq.write_table(_members_table(images, clusters, cluster_of), root / MEMBERS)
    images = _with_clusters(images, clusters, cluster_of)
    groups = _group_table(images, ["label", *settings.get("group_columns", [])], settings)
    _write_csv(root / GROUPS, groups)
    _write_csv(root / FAILED, failed)
    return Audit(root, settings, images, failed, tuple(clusters), groups)


def open_audit(folder: str | os.PathLike[str]) -> Audit:
    """Read an analysed audit folder: ``open_audit("audit").clusters``.

    Raises:
        AuditError: the folder holds no audit, or it was not analysed yet (:func:`analyse_audit`).
    """
    root = Path(folder)
    settings = _settings(root)
    images, failed = _split(read_images(root))
    if not (root / CLUSTERS).is_file():
        raise AuditError(f"The audit in {folder} has not been analysed yet; run analyse_audit on it first.")
    record = json.loads((root / CLUSTERS).read_text(encoding="utf-8"))
    position = {path: index for index, path in enumerate(images["path"])}
    clusters = tuple(
        Cluster(
            **{**item, "mean_map": np.asarray(item["mean_map"], np.float32), "flags": tuple(item["flags"]),
               "members": tuple(position[p] for p in item["members"] if p in position)}
        )
        for item in record["clusters"]
    )
    members = pq.read_table(root / MEMBERS).to_pandas()
    cluster_of = images["path"].map(dict(zip(members["path"], members["cluster"]))).fillna(-1).to_numpy(int)
    images = _with_clusters(images, list(clusters), cluster_of)
    groups = pd.read_csv(root / GROUPS, keep_default_na=False, na_values=[""]) if (root / GROUPS).is_file() else None
    return Audit(root, settings, images, failed, clusters, groups if groups is not None else pd.DataFrame())


def _parts(root: Path) -> list[Path]:
    folder = root / IMAGES
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


def _nullable(kind: pa.DataType) -> Any:
    """Keep nulls of boolean and integer columns (pandas' nullable dtypes)."""
    if kind == pa.bool_():
        return pd.BooleanDtype()
    if kind == pa.int32():
        return pd.Int32Dtype()
    return None


def _settings(root: Path) -> dict[str, Any]:
    path = root / SETTINGS
    if not path.is_file():
        raise AuditError(f"The folder {root} holds no audit ({SETTINGS} is missing).")
    return json.loads(path.read_text(encoding="utf-8"))


def _split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(explained images, bad files)."""
    bad = frame["error"].notna()
    failed = frame.loc[bad, ["path", "error"]].reset_index(drop=True)
    return frame.loc[~bad].reset_index(drop=True), failed


def _with_clusters(images: pd.DataFrame, clusters: list[Cluster], cluster_of: np.ndarray) -> pd.DataFrame:
    flagged = {(c.target, c.index) for c in clusters if c.flags}
    images = images.copy()
    images["cluster"] = cluster_of
    images["flagged"] = [(t, int(k)) in flagged for t, k in zip(images["target"], cluster_of)]
    return images


def _write_clusters(root: Path, clusters: list[Cluster], images: pd.DataFrame, object_box: Region | None) -> None:
    paths = images["path"].tolist()
    items = [
        {**{f.name: getattr(c, f.name) for f in dataclasses.fields(c)},
         "mean_map": np.round(c.mean_map, 5).tolist(), "members": [paths[m] for m in c.members],
         "flags": list(c.flags)}
        for c in clusters
    ]
    box = None if object_box is None else dataclasses.asdict(object_box)
    text = json.dumps({"object_box": box, "clusters": items}, ensure_ascii=False)
    (root / CLUSTERS).write_text(text + "\n", encoding="utf-8")


def _members_table(images: pd.DataFrame, clusters: list[Cluster], cluster_of: np.ndarray) -> pa.Table:
    flagged = {(c.target, c.index) for c in clusters if c.flags}
    targets = images["target"].astype(str).tolist()
    return pa.table({
        "path": pa.array(images["path"].tolist(), pa.string()),
        "target": pa.array(targets, pa.string()),
        "cluster": pa.array(cluster_of, pa.int32()),
        "flagged": pa.array([(t, int(k)) in flagged for t, k in zip(targets, cluster_of)], pa.bool_()),
    })


def _group_table(
    images: pd.DataFrame, columns: list[str], settings: dict[str, Any]
) -> pd.DataFrame:
    """Accuracy and heat statistics per value of each column (a missing value is ``(none)``)."""
    regions = [f"region_{name}" for name, *_ in settings.get("regions", [])]
    rows = []
    for column in columns:
        if column not in images.columns:
            continue
        values = images[column].astype(object).where(images[column].notna(), "(none)")
        for value, block in images.groupby(values, sort=True):
            correct = block["correct"].dropna()
            rows.append({
                "column": column, "value": str(value), "images": len(block),
                "labelled": len(correct), "accuracy": float(correct.mean()) if len(correct) else np.nan,
                "mean_probability": float(block["probability"].mean()),
                "mean_border_share": float(block["border_share"].mean()),
                "mean_corner_share": float(block["corner_share"].mean()),
                "flagged_share": float(block["flagged"].mean()),
                **{f"mean_{name}": float(block[name].mean()) for name in regions},
            })
    return pd.DataFrame(rows)


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    """A spreadsheet-safe CSV: every cell quoted, text that would start a formula made inert."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(list(frame.columns))
    writer.writerows([_cell(cell) for cell in row] for row in frame.itertuples(index=False))
    path.write_text(buffer.getvalue(), encoding="utf-8")


def _cell(value: object) -> str:
    if isinstance(value, str):
        return spreadsheet_safe(value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)
