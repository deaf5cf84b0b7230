"""The audit pipeline on Ray Data: read → decode → preprocess → batched explanation in actors → Parquet parts.

Stages:

1. **read**: the source's rows (:mod:`.audit_source`) become a dataset (``ray.data.from_items``).
2. **decode + preprocess** (:func:`prepare_batch`, Ray tasks): the file is read (bounded), hashed (SHA-256),
   skipped when ``(path, hash)`` is already in the output (resume), decoded like everywhere else in the engine
   (:func:`~gradcam_core.imaging.load_image`; DICOM in its own window, first frame), turned into the model's
   input (:func:`~gradcam_core.preprocess.to_input`) and a PNG thumbnail. A bad file becomes a row with its
   reason and travels on.
3. **explain** (:class:`Explainer`, a pool of Ray actors): each actor builds the model once from a picklable
   :data:`AuditModel` and explains its batches with :func:`~gradcam_core.cam.trace_cam`, images of one input
   size at a time, with one target per image (true label, prediction or a named class). The device is one
   switch: CUDA (one GPU per actor) when the cluster has GPUs, unless ``AuditSettings.device`` says otherwise.
4. **write** (the driver): each finished block is written as one Parquet part, atomically
   (:func:`~gradcam_core.audit_report.write_part`), so an interrupted audit continues where it stopped.

Each row carries its own stage times (``decode_s``, ``preprocess_s``, ``explain_s``, the batch's time shared by
its images); the driver adds the write time. Without an address Ray starts locally inside the call;
``ray_address`` or ``RAY_ADDRESS`` runs the same code on a cluster (paths must then be readable by every node).
Example::

    run = run_audit(read_source("data/val"), Path("audit"), AuditSettings(model="resnet50", target="true"))
    run.images_per_second
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from .audit_report import done_keys, output_schema, write_part, write_settings
from .audit_source import AuditSource
from .cam import trace_cam
from .dicom import is_dicom, read_dicom, render_frame
from .errors import AuditError, ImageError, TargetError
from .files import read_bounded
from .heat import Region, heat_stats
from .imaging import DEFAULT_MAX_BYTES, load_image
from .layers import resolve_layer
from .methods import get_method
from .models import DEFAULT_MODEL, LoadedModel, load_model
from .preprocess import Preprocessing, to_input
from .sources import ModelRequest, load_user_model
from .targets import probabilities, resolve_class

__all__ = [
    "TARGET_RULES", "AuditModel", "AuditRun", "AuditSettings", "Explainer", "build_model", "prepare_batch",
    "ray_session", "run_audit",
]

AuditModel = str | tuple[str, ModelRequest] | Callable[[], LoadedModel]
"""How every actor builds the model, picklable: a registry name (``"resnet50"``), ``(source, ModelRequest)`` for
a user's model (``load_user_model``), or a picklable function of no arguments returning a ``LoadedModel``."""

TARGET_RULES = ("predicted", "true")
"""Which class each image's map explains: its top-1 prediction or its true label; any other value names one
class (by name or index) for every image."""

Progress = Callable[[int, int, float], None]
"""Called as ``progress(done, total, images_per_second)`` after each written part, ``total`` counting the images
still to do (those already in the output left out); an exception it raises stops the audit, leaving every part
written so far."""


@dataclass(frozen=True)
class AuditSettings:
    """How to audit.

    Attributes:
        model: See :data:`AuditModel`.
        layer: Target layer; ``None``: the model's default layer for ``method``.
        method: CAM method name.
        target: ``"predicted"``, ``"true"`` or a class name or index (:data:`TARGET_RULES`).
        regions: Boxes whose share of each map's heat is recorded (column ``region_<name>``).
        workers: Explaining actors (one model each).
        batch_size: Images per block: per decoding task, per explained batch, per written part.
        device: ``"cuda"`` or ``"cpu"``; ``None``: CUDA when the cluster has GPUs.
        thumbnail: Longest side of the thumbnails, in pixels.
        max_bytes: Largest image file read.
    """

    model: AuditModel = DEFAULT_MODEL
    layer: str | None = None
    method: str = "gradcam"
    target: str = "predicted"
    regions: tuple[Region, ...] = ()
    workers: int = 1
    batch_size: int = 16
    device: str | None = None
    thumbnail: int = 96
    max_bytes: int = DEFAULT_MAX_BYTES


@dataclass(frozen=True)
class AuditRun:
    """What one call of :func:`run_audit` did.

    Attributes:
        total: Images in the source (and manifest rows refused).
        explained: Images explained by this call.
        failed: Bad files listed by this call.
        skipped: Images already in the output (resumed).
        seconds: Wall time of the pipeline.
        images_per_second: Rows processed by this call per second of wall time.
        stages: Seconds spent per stage, summed over images (``decode``, ``preprocess``, ``explain``) and in the
            driver (``write``).
    """

    total: int
    explained: int
    failed: int
    skipped: int
    seconds: float
    images_per_second: float
    stages: dict[str, float]


@dataclass(frozen=True)
class _Plan:
    """The resolved settings every actor needs (picklable)."""

    model: AuditModel
    layer: str
    method: str
    target: int | str | None  # a class index, "true", or None for the prediction
    regions: tuple[Region, ...]
    device: str
    group_columns: tuple[str, ...]


def build_model(spec: AuditModel) -> LoadedModel:
    """The model of an :data:`AuditModel`: ``build_model("resnet50")``.

    Raises:
        ModelError: the name, source or file is wrong (see ``load_model`` and ``load_user_model``).
    """
    if isinstance(spec, str):
        return load_model(spec)
    if isinstance(spec, tuple):
        return load_user_model(*spec)
    return spec()


def run_audit(
    source: AuditSource,
    out: str | os.PathLike[str],
    settings: AuditSettings = AuditSettings(),
    *,
    progress: Progress | None = None,
    ray_address: str | None = None,
) -> AuditRun:
    """Explain every image of ``source`` into the audit folder ``out``, continuing a previous run there.

    Example: ``run_audit(read_source("scans.csv"), "audit", AuditSettings(target="true")).explained``.

    Raises:
        AuditError: ``out`` holds an audit made with other settings, or the settings are invalid.
        GradCamError: the model, layer, method or class cannot be used (its own one-sentence message).
    """
    folder = Path(out)
    loaded = build_model(settings.model)
    plan = _plan(loaded, settings, source.group_columns)
    write_settings(folder, _settings_record(loaded, plan, source))
    schema = output_schema(source.group_columns, plan.regions)
    done = done_keys(folder)
    total = len(source.rows) + len(source.bad)
    resumed = len({path for path, _ in done} & {row.path for row in source.rows}) + len(source.bad)
    expected = total - resumed + sum((path, "") not in done for path, _ in source.bad)
    counts = {"explained": 0, "failed": 0, "processed": 0}
    stages = dict.fromkeys(("decode", "preprocess", "explain", "write"), 0.0)
    started = time.perf_counter()

    def record(table: pa.Table) -> None:
        tick = time.perf_counter()
        write_part(folder, table.select(schema.names).cast(schema))
        stages["write"] += time.perf_counter() - tick
        failed = table.num_rows - table.column("error").null_count
        counts["failed"] += failed
        counts["explained"] += table.num_rows - failed
        counts["processed"] += table.num_rows
        for stage in ("decode", "preprocess", "explain"):
            stages[stage] += float(np.nansum(table.column(f"{stage}_s").to_numpy(zero_copy_only=False)))
        if progress is not None:
            elapsed = time.perf_counter() - started
            progress(counts["processed"], max(expected, counts["processed"]), counts["processed"] / max(elapsed, 1e-9))

    refused = [(path, reason) for path, reason in source.bad if (path, "") not in done]
    if refused:
        record(_failed_rows(refused, schema))
    with ray_session(ray_address, settings.workers):
        dataset = _dataset(list(source.rows), plan, settings, loaded.preprocessing, done)
        for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            if table.num_rows:
                record(table)
    seconds = time.perf_counter() - started
    return AuditRun(
        total=total,
        explained=counts["explained"],
        failed=counts["failed"],
        skipped=total - counts["processed"],
        seconds=seconds,
        images_per_second=counts["processed"] / max(seconds, 1e-9),
        stages=stages,
    )


def _plan(loaded: LoadedModel, settings: AuditSettings, group_columns: tuple[str, ...]) -> _Plan:
    """Check the settings against the model once, in the driver."""
    get_method(settings.method)
    layer = resolve_layer(loaded.model, settings.layer or loaded.default_layer_for(settings.method))[0]
    rule = settings.target.strip()
    target: int | str | None
    if rule.casefold() == "predicted":
        target = None
    elif rule.casefold() == "true":
        target = "true"
    else:
        target = resolve_class(rule, loaded.categories)
    if settings.workers < 1 or settings.batch_size < 1:
        raise AuditError("The audit needs at least one worker and a batch size of at least 1.")
    names = [region.name for region in settings.regions]
    if len(set(names)) != len(names):
        raise AuditError("Each region needs its own name.")
    return _Plan(
        settings.model, layer, settings.method, target, tuple(settings.regions), settings.device or "",
        tuple(group_columns),
    )


def _settings_record(loaded: LoadedModel, plan: _Plan, source: AuditSource) -> dict[str, Any]:
    """What must stay the same for a run to continue an audit folder."""
    if isinstance(plan.target, int):
        target = loaded.categories[plan.target]
    else:
        target = "predicted" if plan.target is None else "true"
    return {
        "model": loaded.name,
        "model_title": loaded.title,
        "weights_sha256": loaded.weights_sha256,
        "categories": list(loaded.categories),
        "layer": plan.layer,
        "method": plan.method,
        "target": target,
        "regions": [[r.name, r.x0, r.y0, r.x1, r.y1] for r in plan.regions],
        "group_columns": list(plan.group_columns),
        "source": source.description,
    }


def _dataset(
    rows: list[Any], plan: _Plan, settings: AuditSettings, preprocessing: Preprocessing, done: frozenset
) -> Any:
    """The lazy Ray dataset of the pipeline (read → prepare → explain)."""
    import ray.data

    device = plan.device or ("cuda" if ray.cluster_resources().get("GPU", 0) >= 1 else "cpu")
    plan = _Plan(**{**plan.__dict__, "device": device})
    items = [{"path": row.path, "label": row.label, **row.groups} for row in rows]
    blocks = max(1, math.ceil(len(items) / settings.batch_size))
    dataset = ray.data.from_items(items, override_num_blocks=blocks)
    dataset = dataset.map_batches(
        prepare_batch,
        batch_size=settings.batch_size,
        batch_format="pyarrow",
        fn_kwargs={
            "preprocessing": preprocessing, "done": done, "thumbnail": settings.thumbnail,
            "max_bytes": settings.max_bytes, "group_columns": plan.group_columns,
        },
    )
    return dataset.map_batches(
        Explainer,
        batch_size=settings.batch_size,
        batch_format="pyarrow",
        fn_constructor_kwargs={"plan": plan},
        compute=ray.data.ActorPoolStrategy(size=settings.workers),
        num_gpus=1 if device == "cuda" else 0,
    )


def prepare_batch(
    batch: pa.Table,
    *,
    preprocessing: Preprocessing,
    done: frozenset[tuple[str, str]] = frozenset(),
    thumbnail: int = 96,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    group_columns: tuple[str, ...] = (),
) -> pa.Table:
    """Read, hash, decode and preprocess a block of ``path``/``label``/group rows (the decode and preprocess
    stages); rows already ``done`` are dropped, bad files get their reason in ``error``.

    Example: ``prepare_batch(pa.table({"path": ["a.png"], "label": [None]}), preprocessing=loaded.preprocessing)``.
    """
    columns: dict[str, list[Any]] = {name: [] for name in _PREPARED}
    groups: dict[str, list[Any]] = {name: [] for name in group_columns}
    labels = batch.column("label").to_pylist() if "label" in batch.column_names else [None] * batch.num_rows
    group_values = {name: batch.column(name).to_pylist() for name in group_columns}
    for index, path in enumerate(batch.column("path").to_pylist()):
        start = time.perf_counter()
        digest, picture, error = "", None, None
        try:
            data = read_bounded(path, max_bytes)
            digest = hashlib.sha256(data).hexdigest()
            if (path, digest) in done:
                continue
            picture = render_frame(read_dicom(data, max_bytes=max_bytes)) if is_dicom(data[:132]) else load_image(
                data, max_bytes=max_bytes
            )
        except ImageError as exc:
            if (path, "") in done:
                continue
            error = str(exc)
        decoded = time.perf_counter()
        row = _prepare_picture(picture, preprocessing, thumbnail) if picture is not None else _NO_PICTURE
        columns["path"].append(path)
        columns["label"].append(labels[index])
        columns["sha256"].append(digest)
        columns["error"].append(error)
        for name, value in row.items():
            columns[name].append(value)
        columns["decode_s"].append(decoded - start)
        columns["preprocess_s"].append(time.perf_counter() - decoded)
        for name in group_columns:
            groups[name].append(group_values[name][index])
    return pa.table(
        {**{name: pa.array(values, _PREPARED[name]) for name, values in columns.items()},
         **{name: pa.array(values, pa.string()) for name, values in groups.items()}}
    )


_PREPARED: dict[str, pa.DataType] = {
    "path": pa.string(), "label": pa.string(), "sha256": pa.string(), "error": pa.string(),
    "width": pa.int32(), "height": pa.int32(), "thumbnail": pa.binary(), "input": pa.binary(),
    "input_shape": pa.list_(pa.int32()), "decode_s": pa.float32(), "preprocess_s": pa.float32(),
}
_NO_PICTURE = {"width": None, "height": None, "thumbnail": None, "input": None, "input_shape": None}


def _prepare_picture(picture: Any, preprocessing: Preprocessing, thumbnail: int) -> dict[str, Any]:
    """The model input (float32 bytes and shape) and a PNG thumbnail of a decoded picture."""
    inputs = to_input(picture, preprocessing)[0].numpy()
    small = picture.copy()
    small.thumbnail((thumbnail, thumbnail))
    buffer = io.BytesIO()
    small.save(buffer, format="PNG", compress_level=1)
    return {
        "width": picture.width, "height": picture.height, "thumbnail": buffer.getvalue(),
        "input": inputs.tobytes(), "input_shape": list(inputs.shape),
    }


class Explainer:
    """The explain stage: a Ray actor that builds the model once and explains blocks of prepared rows.

    Example (without Ray): ``Explainer(plan)(prepare_batch(rows, preprocessing=prep))``.
    """

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.loaded = build_model(plan.model)
        self.device = torch.device(plan.device or "cpu")
        self.loaded.model.to(self.device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        count = batch.num_rows
        results: list[dict[str, Any]] = [{} for _ in range(count)]
        errors = batch.column("error").to_pylist()
        shapes = batch.column("input_shape").to_pylist()
        labels = batch.column("label").to_pylist()
        inputs = batch.column("input").to_pylist()
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index in range(count):
            if errors[index] is None:
                by_shape.setdefault(tuple(shapes[index]), []).append(index)
        start = time.perf_counter()
        for shape, indexes in by_shape.items():
            self._explain(indexes, shape, inputs, labels, errors, results)
        share = (time.perf_counter() - start) / max(1, count)
        return _result_table(batch, results, errors, share, self.plan.regions)

    def _explain(
        self,
        indexes: list[int],
        shape: tuple[int, ...],
        inputs: list[bytes],
        labels: list[str | None],
        errors: list[str | None],
        results: list[dict[str, Any]],
    ) -> None:
        """Explain the images at ``indexes`` (all of input ``shape``) in one batch, filling ``results``."""
        categories = self.loaded.categories
        truths = [self._label_index(labels[i]) for i in indexes]
        if self.plan.target == "true":
            kept = [(i, t) for i, t in zip(indexes, truths) if t is not None]
            for i, t in zip(indexes, truths):
                if t is None:
                    errors[i] = _no_true_class(labels[i])
            indexes, truths = [i for i, _ in kept], [t for _, t in kept]
            targets: Any = truths
        else:
            targets = self.plan.target
        if not indexes:
            return
        stacked = np.stack([np.frombuffer(inputs[i], np.float32).reshape(shape) for i in indexes])
        tensor = torch.from_numpy(stacked).to(self.device)
        trace = trace_cam(
            self.loaded.model, tensor, self.plan.layer, targets, self.plan.method, activation=self.loaded.activation
        )
        probs = probabilities(trace.logits, self.loaded.activation).cpu()
        maps = trace.cam.detach().cpu().numpy().astype(np.float32)
        target_idx = trace.targets.cpu().tolist()
        for row, (i, truth) in enumerate(zip(indexes, truths)):
            predicted = int(probs[row].argmax())
            stats = heat_stats(maps[row], self.plan.regions)
            results[i] = {
                "prediction": categories[predicted], "prediction_index": predicted,
                "probability": float(probs[row, predicted]),
                "correct": None if truth is None else predicted == truth,
                "target": categories[target_idx[row]], "target_index": target_idx[row],
                "target_probability": float(probs[row, target_idx[row]]), "score": float(trace.scores[row]),
                "map": maps[row].tobytes(), "map_height": maps.shape[1], "map_width": maps.shape[2],
                "peak_x": stats.peak_x, "peak_y": stats.peak_y, "border_share": stats.border_share,
                "corner_share": stats.corner_share,
                **{f"region_{name}": share for name, share in stats.regions.items()},
            }

    def _label_index(self, label: str | None) -> int | None:
        if label is None:
            return None
        try:
            return resolve_class(label, self.loaded.categories)
        except TargetError:
            return None


def _no_true_class(label: str | None) -> str:
    if label is None:
        return "The image has no true label to explain."
    return f"Its label {label!r} is not one of the model's classes."


_EXPLAINED: dict[str, pa.DataType] = {
    "prediction": pa.string(), "prediction_index": pa.int32(), "probability": pa.float32(), "correct": pa.bool_(),
    "target": pa.string(), "target_index": pa.int32(), "target_probability": pa.float32(), "score": pa.float32(),
    "map": pa.binary(), "map_height": pa.int32(), "map_width": pa.int32(), "peak_x": pa.float32(),
    "peak_y": pa.float32(), "border_share": pa.float32(), "corner_share": pa.float32(),
}


def _result_table(
    batch: pa.Table, results: list[dict[str, Any]], errors: list[str | None], share: float,
    regions: tuple[Region, ...],
) -> pa.Table:
    """The prepared batch without its inputs, with the explanation's columns (null for failed rows)."""
    kept = batch.drop_columns(["input", "input_shape"])
    table = kept.set_column(kept.column_names.index("error"), "error", pa.array(errors, pa.string()))
    types = {**_EXPLAINED, **{f"region_{region.name}": pa.float32() for region in regions}}
    for name, kind in types.items():
        table = table.append_column(name, pa.array([row.get(name) for row in results], kind))
    explained = [share if errors[i] is None else 0.0 for i in range(len(errors))]
    return table.append_column("explain_s", pa.array(explained, pa.float32()))


def _failed_rows(refused: list[tuple[str, str]], schema: pa.Schema) -> pa.Table:
    """Rows for manifest entries refused before any file was opened."""
    columns = {name: pa.nulls(len(refused), schema.field(name).type) for name in schema.names}
    columns["path"] = pa.array([path for path, _ in refused], pa.string())
    columns["sha256"] = pa.array([""] * len(refused), pa.string())
    columns["error"] = pa.array([reason for _, reason in refused], pa.string())
    for stage in ("decode_s", "preprocess_s", "explain_s"):
        columns[stage] = pa.array([0.0] * len(refused), pa.float32())
    return pa.table(columns, schema=schema)


@contextmanager
def ray_session(address: str | None = None, workers: int = 1) -> Iterator[None]:
    """Ray for one audit: the caller's if already running, else a cluster at ``address`` (or ``RAY_ADDRESS``),
    else a local instance started here (no dashboard, workers' logs kept off the terminal) and stopped after.

    Ray Data's own progress bars and run logs are switched off for the duration (the audit shows its own).
    Example: ``with ray_session(workers=2): ...``.
    """
    import ray
    from ray.data import DataContext

    started = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            # Logical CPUs: one per actor plus one for decoding, so actors never starve the decode tasks.
            cpus = max(os.cpu_count() or 1, workers + 1)
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        started = True
    context = DataContext.get_current()
    saved = (context.enable_progress_bars, context.print_on_execution_start)
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    context.enable_progress_bars, context.print_on_execution_start = False, False
    data_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        context.enable_progress_bars, context.print_on_execution_start = saved
        data_logger.setLevel(level)
        if started:
            ray.shutdown()

