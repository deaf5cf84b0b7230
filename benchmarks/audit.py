"""Audit throughput against a plain batched-inference pipeline over the same files with the same decoding.

Run with ``python -m benchmarks.audit [IMAGES]`` (default 96 images; a few minutes on 2 cores). Both pipelines are
Ray Data: the same read and the same decode/preprocess stage (:func:`gradcam_core.audit_run.prepare_batch`),
then a pool of actors holding the model once: the plain one only runs ``model(x)`` under ``inference_mode``, the
audit runs :func:`~gradcam_core.audit_run.run_audit` (Grad-CAM per image, heat statistics, thumbnails, Parquet
parts). Models: the built-in EfficientNet-Lite0 and a ResNet-50 with random weights (no download); 1 and 2
actors. Reported: steady images/s (from the first finished block to the last, so the actors' start is left out)
and the audit's seconds per image in each stage (summed over the workers, so they add up to more than the wall
time with 2 workers). The issue asks for at least 0.8x.
"""

from __future__ import annotations

import functools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
import torch
import torchvision
from PIL import Image

from gradcam_core import DEFAULT_MODEL, Preprocessing, assemble_model
from gradcam_core.models import imagenet_categories
from gradcam_core.audit_run import AuditSettings, build_model, prepare_batch, ray_session, run_audit
from gradcam_core.audit_source import read_source

from .report import environment, load_average, markdown_table, write_report

BATCH = 16
WORKERS = (1, 2)


class PlainPredictor:
    """The baseline's explain stage: the model's forward pass on the batch, nothing else."""

    def __init__(self, model: object) -> None:
        self.loaded = build_model(model)

    def __call__(self, batch: pa.Table) -> pa.Table:
        shapes = batch.column("input_shape").to_pylist()
        inputs = batch.column("input").to_pylist()
        predictions = [-1] * batch.num_rows
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, shape in enumerate(shapes):
            if shape is not None:
                groups.setdefault(tuple(shape), []).append(index)
        with torch.inference_mode():
            for shape, rows in groups.items():
                x = torch.from_numpy(np.stack([np.frombuffer(inputs[i], np.float32).reshape(shape) for i in rows]))
                for row, label in zip(rows, self.loaded.model(x).argmax(1).tolist()):
                    predictions[row] = label
        return pa.table({"path": batch.column("path"), "prediction": pa.array(predictions, pa.int32())})


def resnet50_random() -> functools.partial:
    """ResNet-50 with random weights, as a picklable model spec."""
    preprocessing = Preprocessing(size=224)
    model = torchvision.models.resnet50(weights=None).eval()
    return functools.partial(
        assemble_model, model, imagenet_categories(), preprocessing, name="resnet50-random", title="ResNet-50 (random)"
    )


def _images(folder: Path, count: int) -> None:
    """``count`` 320 x 240 JPEG pictures (smooth colour fields with a disc), in one class folder."""
    rng = np.random.default_rng(0)
    (folder / "things").mkdir(parents=True)
    yy, xx = np.mgrid[:240, :320]
    for index in range(count):
        base = rng.uniform(0, 255, 3) * (0.5 + 0.5 * np.sin(xx[..., None] / rng.uniform(20, 60)))
        cy, cx = rng.uniform(60, 180), rng.uniform(80, 240)
        base[(yy - cy) ** 2 + (xx - cx) ** 2 < 40**2] = rng.uniform(0, 255, 3)
        Image.fromarray(base.clip(0, 255).astype(np.uint8)).save(folder / "things" / f"{index:04d}.jpg", quality=90)


def _plain_rate(folder: Path, model: object, workers: int) -> float:
    """Steady images/s of the plain pipeline."""
    source = read_source(folder)
    items = [{"path": row.path, "label": row.label} for row in source.rows]
    preprocessing = build_model(model).preprocessing
    dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items) // BATCH)).map_batches(
        prepare_batch, batch_size=BATCH, batch_format="pyarrow", fn_kwargs={"preprocessing": preprocessing}
    ).map_batches(
        PlainPredictor, batch_size=BATCH, batch_format="pyarrow", fn_constructor_kwargs={"model": model},
        compute=ray.data.ActorPoolStrategy(size=workers),
    )
    first, done, first_rows = None, 0, 0
    for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        done += table.num_rows
        if first is None:
            first, first_rows = time.perf_counter(), table.num_rows
    return (done - first_rows) / max(time.perf_counter() - first, 1e-9)


def _audit_rate(folder: Path, model: object, workers: int) -> tuple[float, dict[str, float]]:
    """Steady images/s of the audit and its seconds per image per stage."""
    marks: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory() as out:
        run = run_audit(
            read_source(folder), Path(out) / "audit", AuditSettings(model=model, workers=workers, batch_size=BATCH),
            progress=lambda done, total, rate: marks.append((time.perf_counter(), done)),
        )
    (t0, n0), (t1, n1) = marks[0], marks[-1]
    per_image = {stage: seconds / max(run.explained, 1) for stage, seconds in run.stages.items()}
    return (n1 - n0) / max(t1 - t0, 1e-9), per_image


def main(count: int = 96) -> str:
    """Run the benchmark on ``count`` generated images; print and save the report."""
    load = load_average()
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    models = {"EfficientNet-Lite0 (built-in)": DEFAULT_MODEL, "ResNet-50 (random weights)": resnet50_random()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        _images(folder, count)
        with ray_session(workers=max(WORKERS)):
            for title, model in models.items():
                for workers in WORKERS:
                    plain = _plain_rate(folder, model, workers)
                    audit, stages = _audit_rate(folder, model, workers)
                    rows.append([
                        title, workers, f"{plain:.1f}", f"{audit:.1f}", f"**{audit / plain:.2f}x**",
                        *(f"{1000 * stages[s]:.1f}" for s in ("decode", "preprocess", "explain", "write")),
                    ])
    table = markdown_table(
        ["model", "workers", "plain images/s", "audit images/s", "ratio", "decode ms", "preprocess ms",
         "explain ms", "write ms"],
        rows, align="lrrrrrrrr",
    )
    text = (
        f"# Audit throughput\n\n{count} generated 320 x 240 JPEGs, batches of {BATCH}; steady rates (actor start "
        "left out); stage times per image, summed over workers.\n\n"
        f"{table}\n\n{environment(load)}\n"
    )
    return write_report("audit", text)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 96)
