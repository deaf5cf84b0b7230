"""Files offered for download: built only when the user clicks (Streamlit calls these lazily)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable

import numpy as np

from gradcam_core import LoadedModel, Prediction, build_report, guide
from gradcam_core.render import colorize, gradient_to_rgb, overlay, to_png_bytes
from gradcam_core.report import model_weights_sha256
from gradcam_core.volume_export import heatmap_dicom_image

from .cache import Result
from .medical import BURNED_IN_FACT, BURNED_IN_WARNING
from .settings import Settings


def file_stem(name: str) -> str:
    """A safe file-name stem from an image name: ``"Retina (fundus)"`` -> ``"retina-fundus"``."""
    stem = name.rsplit(".", 1)[0] if "." in name else name
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-").lower()
    return stem or "image"


def overlay_png(image: np.ndarray, result: Result, alpha: float, colormap: str) -> Callable[[], bytes]:
    """The full-resolution overlay of ``image`` as PNG."""
    return lambda: to_png_bytes(overlay(image, result.heatmap_at(image.shape), alpha, colormap), compress_level=1)


def heatmap_png(result: Result, shape: tuple[int, ...], colormap: str) -> Callable[[], bytes]:
    """The coloured heatmap at the image's full resolution (``shape``) as PNG."""
    return lambda: to_png_bytes(colorize(result.heatmap_at(shape), colormap), compress_level=1)


def heatmap_npy(result: Result, shape: tuple[int, ...]) -> Callable[[], bytes]:
    """The heatmap values (float32, [0, 1], image size ``shape``) as a NumPy ``.npy`` file."""

    def build() -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, result.heatmap_at(shape), allow_pickle=False)
        return buffer.getvalue()

    return build


def heatmap_dcm(dicom: bytes, result: Result, shape: tuple[int, ...]) -> Callable[[], bytes]:
    """The values of :func:`heatmap_npy` as a DICOM Parametric Map over the DICOM file ``dicom`` the image was
    rendered from (new UIDs, the source referenced, only its patient and study identifiers copied)."""
    return lambda: heatmap_dicom_image(dicom, result.heatmap_at(shape))


def guided_gradcam_png(image: np.ndarray, result: Result, model: LoadedModel) -> Callable[[], bytes]:
    """Guided Grad-CAM of ``image`` at its full resolution as PNG (zero is grey)."""
    def build() -> bytes:
        guided = guide(result.explanation(image), model).guided_gradcam
        return to_png_bytes(gradient_to_rgb(guided), compress_level=1)

    return build


def weights_digest(model: LoadedModel) -> str:
    """The SHA-256 of the model's weights, or a note that it is not known."""
    return model_weights_sha256(model) or "not available"


def html_report(image: np.ndarray, result: Result, settings: Settings, model: LoadedModel) -> Callable[[], str]:
    """The self-contained HTML report (``gradcam_core.build_report``) of what is on screen."""
    return lambda: build_report(
        result.explanation(image),
        model_title=model.title,
        weights_file=model.weights_file,
        weights_hash=model_weights_sha256(model),
        alpha=settings.alpha,
        colormap=settings.colormap,
        image_name=settings.image.name,
        extra=dict(settings.image.facts) or None,
        warnings=[BURNED_IN_WARNING] if BURNED_IN_FACT in dict(settings.image.facts) else [],
    )


def report(settings: Settings, result: Result, image_size: tuple[int, int], model_title: str) -> str:
    """JSON with the image, the settings, the predictions and what was explained."""

    def prediction(p: Prediction) -> dict[str, object]:
        return {"index": p.index, "label": p.label, "probability": round(p.probability, 6)}

    width, height = image_size
    document = {
        "image": {
            "name": settings.image.name,
            "sha256": settings.image.digest,
            "width": width,
            "height": height,
            **({"facts": dict(settings.image.facts)} if settings.image.facts else {}),
        },
        "settings": {
            "model": settings.model,
            "layer": settings.layer,
            "class": "top prediction" if settings.target is None else (
                settings.target if isinstance(settings.target, int) else result.target.label),
            "method": settings.method,
            "alpha": settings.alpha,
            "colormap": settings.colormap,
        },
        "explanation": {
            "model": result.model,
            "model_title": model_title,
            "layer": result.layer,
            "method": result.method,
            "target": prediction(result.target),
            "score": result.score,
            "strength": result.strength,
            "input_size": list(result.input_size),
            "map_size": list(result.raw_map.shape),
        },
        "predictions": [prediction(p) for p in result.predictions],
    }
    return json.dumps(document, indent=2)
