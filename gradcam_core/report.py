"""Provenance report: one self-contained HTML file recording what was explained, how, and with what.

The document embeds the image, the heatmap and the overlay as base64 PNG data URIs (downscaled
to at most :data:`MAX_REPORT_SIDE` pixels on the long side), uses inline CSS only, refers to no
external resource (a Content-Security-Policy forbids any), and HTML-escapes every string that
comes from the user, the model or the file.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import importlib.metadata
import os
import platform
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .explain import Explanation
from .models import LoadedModel
from .render import colorize, overlay, to_png_bytes

__all__ = ["DISCLAIMER", "MAX_REPORT_SIDE", "build_report", "library_versions", "model_weights_sha256",
           "weights_sha256"]

DISCLAIMER = "Research and teaching tool — not a diagnostic device; do not use for clinical decisions."
MAX_REPORT_SIDE = 1024
"""Longest side, in pixels, of the pictures embedded in a report."""

_CHUNK = 1 << 20
_TARGET_ROW = ' class="target"'


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
    timestamp = _utc(now).isoformat(timespec="seconds")

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
        "Timestamp (UTC)": timestamp,
    }
    rows_html = "".join(
        f'<tr><th scope="row">{_esc(key)}</th><td{_code_class(key)}>{_esc(value)}</td></tr>'
        for key, value in settings.items()
    )
    extra_html = ""
    if extra:
        extra_rows = "".join(
            f'<tr><th scope="row">{_esc(key)}</th><td>{_esc(value)}</td></tr>' for key, value in extra.items()
        )
        extra_html = f'<h2>Image details</h2><table class="kv">{extra_rows}</table>'
    prediction_rows = "".join(
        f'<tr{_TARGET_ROW if p.index == target.index else ""}><td>{rank}</td><td>{_esc(p.label)}</td>'
        f'<td class="num">{p.index}</td><td class="num">{p.probability * 100:.2f}%</td></tr>'
        for rank, p in enumerate(explanation.predictions, start=1)
    )
    version_rows = "".join(
        f'<tr><th scope="row">{_esc(name)}</th><td class="code">{_esc(version)}</td></tr>'
        for name, version in library_versions().items()
    )
    figures = "".join(
        f'<figure><img id="{ident}" alt="{_esc(caption)}" src="data:image/png;base64,{_png_base64(array)}">'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
        for ident, caption, array in (
            ("image", "Image", np.asarray(picture)),
            ("heatmap", f"Heatmap ({colormap})", colored),
            ("overlay", f"Overlay (alpha {float(alpha):.2f})", blended),
        )
    )
    title = f"Grad-CAM report — {image_name}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_esc(title)}</h1>\n"
        f'<p class="note" role="note"><strong>{_esc(DISCLAIMER)}</strong></p>\n'
        + "".join(f'<p class="note" role="alert"><strong>{_esc(warning)}</strong></p>\n' for warning in warnings)
        + f'<div class="figures">{figures}</div>\n'
        f'<h2>Explanation</h2><table class="kv">{rows_html}</table>\n'
        f'<h2>Top predictions</h2><table class="preds"><thead><tr><th>Rank</th><th>Class</th>'
        f'<th>Index</th><th>Probability</th></tr></thead><tbody>{prediction_rows}</tbody></table>\n'
        f"{extra_html}\n"
        f'<h2>Software</h2><table class="kv">{version_rows}</table>\n'
        f'<p class="note">{_esc(DISCLAIMER)}</p>\n'
        "</body>\n</html>\n"
    )


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


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _code_class(key: str) -> str:
    return ' class="code"' if key in ("Weights SHA-256", "Layer", "Timestamp (UTC)") else ""


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
    ".preds thead th{background:#f5f5f5}.num{text-align:right;font-variant-numeric:tabular-nums}"
    "tr.target td{font-weight:700;background:#eef6ff}"
    ".code{font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}"
    "@media print{.figures{display:block}figure{page-break-inside:avoid;margin-bottom:1rem}}"
)
