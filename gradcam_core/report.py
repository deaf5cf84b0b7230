"""Provenance report: one self-contained HTML file recording what was explained, how, and with what.

The document embeds the image, the heatmap and the overlay as base64 PNG data URIs (downscaled
to at most :data:`MAX_REPORT_SIDE` pixels on the long side), uses inline CSS only, refers to no
external resource (a Content-Security-Policy forbids any), and HTML-escapes every string that
comes from the user, the model or the file. Its pieces (:func:`report_page`, :func:`figures`, the tables,
:func:`escape`) lay out the 3-D report too (:mod:`gradcam_core.volume_report`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import importlib.metadata
import os
import platform
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .explain import Explanation
from .models import LoadedModel
from .render import colorize, overlay, to_png_bytes
from .targets import Prediction

__all__ = ["CODE_ROWS", "DISCLAIMER", "MAX_REPORT_SIDE", "build_report", "data_table", "escape", "figures",
           "key_value_table", "library_versions", "model_weights_sha256", "predictions_table", "report_page",
           "utc_timestamp", "weights_sha256"]

DISCLAIMER = "Research and teaching tool — not a diagnostic device; do not use for clinical decisions."
MAX_REPORT_SIDE = 1024
"""Longest side, in pixels, of the pictures embedded in a report."""
CODE_ROWS = frozenset({"Weights SHA-256", "Layer", "Timestamp (UTC)"})
"""Rows of a :func:`key_value_table` whose values are shown in a monospace font."""

_CHUNK = 1 << 20
_TARGET_ROW = ' class="target"'
_CODE_CELL = ' class="code"'
_NUMBER_CELL = ' class="num"'


def weights_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks; cached per (path, mtime, size).

    Example: ``weights_sha256("resnet18.safetensors")  # "9f86d0..." (64 hex digits)``.

    Raises:
        OSError: The file cannot be read.
    """
    resolved = os.path.realpath(os.fspath(path))
    info = os.stat(resolved)
    return _sha256_of(resolved, info.st_mtime_ns, info.st_size)


@functools.lru_cache(maxsize=32)
def _sha256_of(path: str, mtime_ns: int, size: int) -> str:  # noqa: ARG001 - mtime and size are the cache key
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_weights_sha256(model: LoadedModel) -> str | None:
    """SHA-256 of a loaded model's weights: known for custom models, else read from its weights file (cached).

    Example: ``model_weights_sha256(load_model())  # the built-in weights' hash``.

    ``None`` when there is no weights file or it cannot be read.
    """
    if model.weights_sha256 is not None:
        return model.weights_sha256
    if model.weights_file is None:
        return None
    try:
        return weights_sha256(model.weights_file)
    except OSError:
        return None


def library_versions() -> dict[str, str]:
    """Versions of gradcam_core, Python and the libraries that shape a result.

    Example: ``library_versions()["torch"]  # "2.14.1"``.
    """
    import torch
    import torchvision
    from PIL import __version__ as pillow_version

    from . import __version__

    versions = {
        "gradcam_core": __version__,
        "Python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "Pillow": pillow_version,
        "OpenCV": cv2.__version__,
    }
    try:
        versions["pydicom"] = importlib.metadata.version("pydicom")
    except importlib.metadata.PackageNotFoundError:
        pass
    return versions


def build_report(
    explanation: Explanation,
    *,
    model_title: str,
    weights_file: str | os.PathLike[str] | None,
    weights_hash: str | None = None,
    alpha: float,
    colormap: str,
    image_name: str,
    extra: Mapping[str, str] | None = None,
    warnings: Sequence[str] = (),
    now: datetime | None = None,
) -> str:
    """A self-contained HTML report of one explanation.

    Example: ``build_report(result, model_title="ResNet-50", weights_file=None, alpha=0.5, colormap="jet",
    image_name="cat.jpg")`` is the text of a ``.html`` file.

    Args:
        explanation: What :func:`~gradcam_core.explain.explain` returned.
        model_title: Model name shown to users (``LoadedModel.title``).
        weights_file: The weights' path (``LoadedModel.weights_file``); only its name and SHA-256 are
            written. ``None``: recorded as not available.
        weights_hash: The weights' SHA-256 when already known (``model_weights_sha256``); the file is then not
            read, and a model uploaded as bytes (no file) still gets its hash recorded.
        alpha: Heatmap opacity of the overlay.
        colormap: Colour map of the heatmap and overlay (a key of ``render.COLORMAPS``).
        image_name: Name of the explained image, e.g. the uploaded file's name.
        extra: More rows for the report, e.g. ``DicomImage.summary()``.
        warnings: Sentences shown prominently under the title, e.g. that a scan's pixels carry burned-in text.
        now: Time of the report (default: now); naive datetimes are taken as UTC.

    Returns:
        The HTML document.

    Raises:
        ValueError: Unknown colour map or alpha outside [0, 1].
    """
    picture, heatmap = _downscaled(explanation.image, explanation.heatmap)
    colored = colorize(heatmap, colormap)
    blended = overlay(picture, heatmap, alpha=alpha, colormap=colormap)

    weights_name = "not available" if weights_file is None else Path(weights_file).name
    if weights_hash is None and weights_file is not None:
        try:
            weights_hash = weights_sha256(weights_file)
        except OSError:
            weights_hash = "not available (file unreadable)"
    weights_hash = weights_hash or "not available"

    target = explanation.target
    settings = {
        "Image": image_name,
        "Image size": f"{explanation.image.width} × {explanation.image.height} px",
        "Model": f"{model_title} ({explanation.model})",
        "Weights file": weights_name,
        "Weights SHA-256": weights_hash,
        "Target class": f"{target.label} (index {target.index})",
        "Target probability": f"{target.probability:.4f}",
        "Target score (logit)": f"{explanation.score:.4f}",
        "Method": explanation.method,
        "Layer": explanation.layer,
        "Alpha": f"{float(alpha):.2f}",
        "Colormap": colormap,
        "Evidence strength (map maximum)": f"{explanation.strength:.4g}",
        "Model input size": f"{explanation.input_size[1]} × {explanation.input_size[0]} px",
        "Timestamp (UTC)": utc_timestamp(now),
    }
    body = (
        figures([
            ("image", "Image", np.asarray(picture)),
            ("heatmap", f"Heatmap ({colormap})", colored),
            ("overlay", f"Overlay (alpha {float(alpha):.2f})", blended),
        ])
        + f"\n<h2>Explanation</h2>{key_value_table(settings)}\n"
        f"<h2>Top predictions</h2>{predictions_table(explanation.predictions, target.index)}\n"
        + (f"<h2>Image details</h2>{key_value_table(extra, code=())}\n" if extra else "")
    )
    return report_page(f"Grad-CAM report — {image_name}", body, warnings=warnings)


def report_page(title: str, body: str, *, warnings: Sequence[str] = ()) -> str:
    """A whole report document around ``body``: the head with its Content-Security-Policy and inline CSS, the
    title, the disclaimer and ``warnings`` on top, then ``body``, then the library versions and the disclaimer.

    Example: ``report_page("Grad-CAM report — 3-D scan", figures(pictures) + key_value_table(facts))``.

    Args:
        title: Plain text (escaped here).
        body: HTML built with :func:`figures`, :func:`key_value_table`, :func:`data_table` and :func:`escape`:
            every string from a user, a model or a file escaped, every picture a data URI.
        warnings: Sentences shown prominently under the title.
    """
    versions = library_versions()
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{escape(title)}</h1>\n"
        f'<p class="note" role="note"><strong>{escape(DISCLAIMER)}</strong></p>\n'
        + "".join(f'<p class="note" role="alert"><strong>{escape(warning)}</strong></p>\n' for warning in warnings)
        + body
        + f"<h2>Software</h2>{key_value_table(versions, code=versions)}\n"
        f'<p class="note">{escape(DISCLAIMER)}</p>\n'
        "</body>\n</html>\n"
    )


def figures(pictures: Sequence[tuple[str, str, np.ndarray]]) -> str:
    """A row of pictures, each ``(id, caption, RGB uint8 array)``, embedded as PNG data URIs."""
    items = "".join(
        f'<figure><img id="{escape(ident)}" alt="{escape(caption)}" src="data:image/png;base64,{_png_base64(array)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
        for ident, caption, array in pictures
    )
    return f'<div class="figures">{items}</div>'


def key_value_table(rows: Mapping[str, object], *, code: Collection[str] = CODE_ROWS) -> str:
    """A two-column table, one row per key; the values of the keys in ``code`` in a monospace font."""
    cells = "".join(
        f'<tr><th scope="row">{escape(key)}</th><td{_CODE_CELL if key in code else ""}>{escape(value)}</td></tr>'
        for key, value in rows.items()
    )
    return f'<table class="kv">{cells}</table>'


def data_table(
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    numeric: Collection[int] = (),
    marked: Collection[int] = (),
) -> str:
    """A table with a header row; the columns ``numeric`` aligned right, the rows ``marked`` (by number) in bold."""
    head = "".join(f"<th>{escape(name)}</th>" for name in header)
    body = "".join(
        f"<tr{_TARGET_ROW if number in marked else ''}>"
        + "".join(f"<td{_NUMBER_CELL if column in numeric else ''}>{escape(value)}</td>"
                  for column, value in enumerate(row))
        + "</tr>"
        for number, row in enumerate(rows)
    )
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def predictions_table(predictions: Sequence[Prediction], target_index: int) -> str:
    """Rank, class, index and probability of each prediction; the explained class's row in bold."""
    return data_table(
        ["Rank", "Class", "Index", "Probability"],
        [(rank, p.label, p.index, f"{p.probability * 100:.2f}%") for rank, p in enumerate(predictions, start=1)],
        numeric=(2, 3),
        marked={number for number, p in enumerate(predictions) if p.index == target_index},
    )


def escape(value: object) -> str:
    """``value`` as HTML text, quotes included: every string from a user, a model or a file goes through it."""
    return html.escape(str(value), quote=True)


def utc_timestamp(now: datetime | None = None) -> str:
    """``now`` (default: the current time; naive: taken as UTC) in UTC, ISO 8601 to the second."""
    return _utc(now).isoformat(timespec="seconds")


def _downscaled(image: Image.Image, heatmap: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """Image and heatmap at most MAX_REPORT_SIDE on the long side, same aspect."""
    width, height = image.size
    scale = MAX_REPORT_SIDE / max(width, height)
    picture = image if image.mode == "RGB" else image.convert("RGB")
    if scale >= 1.0:
        return picture, heatmap
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = picture.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    small_heat = cv2.resize(np.asarray(heatmap, np.float32), size, interpolation=cv2.INTER_AREA)
    return small, np.clip(small_heat, 0.0, 1.0)


def _png_base64(array: np.ndarray) -> str:
    return base64.b64encode(to_png_bytes(np.asarray(array, np.uint8))).decode("ascii")


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    if now.tzinfo is None:
        return now.replace(tzinfo=timezone.utc)
    return now.astimezone(timezone.utc)


_CSS = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:70rem;"
    "padding:0 1rem;color:#1b1b1b;background:#fff}"
    "h1{font-size:1.5rem;word-break:break-all}h2{font-size:1.15rem;margin-top:1.8rem}"
    ".note{border:2px solid #b45309;background:#fff7ed;padding:.6rem .9rem;border-radius:.4rem}"
    ".figures{display:flex;flex-wrap:wrap;gap:1rem}"
    "figure{margin:0;flex:1 1 18rem}figure img{width:100%;height:auto;display:block;border:1px solid #ccc}"
    "figcaption{font-size:.9rem;color:#444;margin-top:.3rem}"
    "table{border-collapse:collapse;margin-top:.5rem}"
    "th,td{border:1px solid #ddd;padding:.3rem .6rem;text-align:left;vertical-align:top}"
    ".kv th{background:#f5f5f5;font-weight:600;white-space:nowrap}"
    ".data thead th{background:#f5f5f5}.num{text-align:right;font-variant-numeric:tabular-nums}"
    "tr.target td{font-weight:700;background:#eef6ff}"
    ".code{font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}"
    "@media print{.figures{display:block}figure{page-break-inside:avoid;margin-bottom:1rem}}"
)
