"""Rendering of Grad-CAM heatmaps: colour maps, overlays and PNG export.

All functions work on numpy arrays in RGB order (OpenCV's BGR never leaks out) and are
built on OpenCV's uint8 kernels so that a 12-megapixel overlay takes a few tens of ms.
"""

from __future__ import annotations

import functools
import io
import math
from numbers import Real

import cv2
import numpy as np
from PIL import Image

from .errors import RenderError

__all__ = [
    "COLORMAPS",
    "DEFAULT_COLORMAP",
    "blend_colored",
    "colorize",
    "gradient_magnitude",
    "gradient_to_rgb",
    "heatmap_to_uint8",
    "overlay",
    "to_png_bytes",
]

DEFAULT_COLORMAP = "jet"

COLORMAPS: dict[str, int] = {
    "jet": cv2.COLORMAP_JET,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "cividis": cv2.COLORMAP_CIVIDIS,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "plasma": cv2.COLORMAP_PLASMA,
    "turbo": cv2.COLORMAP_TURBO,
    "hot": cv2.COLORMAP_HOT,
}
"""User-facing colour-map names -> OpenCV ``COLORMAP_*`` constants (``"jet"`` first)."""


def heatmap_to_uint8(heatmap: np.ndarray) -> np.ndarray:
    """Map a float heatmap in [0, 1] to uint8 0..255 (rounded).

    Example: ``heatmap_to_uint8(np.array([[0.0, 0.5, 1.0]]))  # [[0, 128, 255]]``.

    Values below 0 become 0, above 1 (and +inf) become 255, NaN and -inf become 0.
    A uint8 heatmap is taken as already scaled to 0..255 and returned as a copy.

    Args:
        heatmap: Array of shape (H, W) (a trailing axis of size 1 is accepted).

    Returns:
        A new C-contiguous uint8 array of shape (H, W).

    Raises:
        RenderError: The heatmap is not 2-D or not numeric.
    """
    return _unit_to_uint8(_as_2d(heatmap))


def colorize(heatmap: np.ndarray, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """Colour a heatmap.

    Example: ``colorize(result.heatmap, "viridis").shape  # (H, W, 3)``.

    Args:
        heatmap: Float array (H, W) with values in [0, 1] (clipped; NaN -> 0).
        colormap: A key of :data:`COLORMAPS`.

    Returns:
        uint8 RGB array (H, W, 3); under ``"jet"`` 1.0 is red and 0.0 is blue.

    Raises:
        RenderError: Unknown colour map or malformed heatmap.
    """
    lut = _rgb_lut(_check_colormap(colormap))
    return cv2.applyColorMap(heatmap_to_uint8(heatmap), lut)


def blend_colored(
    image_rgb: np.ndarray, colored_rgb: np.ndarray, alpha: float = 0.5
) -> np.ndarray:
    """Blend ``(1 - alpha) * image + alpha * colored`` (both uint8 RGB of the same shape).

    Example: ``blend_colored(image, colorize(heatmap), alpha=0.4)``.

    Cheap enough to call on every slider move when the coloured heatmap is cached.

    Args:
        image_rgb: uint8 array (H, W, 3).
        colored_rgb: uint8 array (H, W, 3), e.g. from :func:`colorize`.
        alpha: Heatmap opacity in [0, 1].

    Returns:
        A new uint8 RGB array (H, W, 3).

    Raises:
        RenderError: Bad alpha, dtype or shapes.
    """
    alpha = _check_alpha(alpha)
    for name, arr in (("image", image_rgb), ("colored heatmap", colored_rgb)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise RenderError(f"{name} must be a uint8 array of shape (H, W, 3)")
    if image_rgb.shape != colored_rgb.shape:
        raise RenderError(
            f"image shape {image_rgb.shape} and colored heatmap shape {colored_rgb.shape} differ"
        )
    if alpha == 0.0:
        return image_rgb.copy()
    if alpha == 1.0:
        return colored_rgb.copy()
    return cv2.addWeighted(
        np.ascontiguousarray(image_rgb), 1.0 - alpha, np.ascontiguousarray(colored_rgb), alpha, 0.0
    )


def overlay(
    image: np.ndarray | Image.Image,
    heatmap: np.ndarray,
    alpha: float = 0.5,
    colormap: str = DEFAULT_COLORMAP,
) -> np.ndarray:
    """Overlay a coloured heatmap on an image.

    Example: ``Image.fromarray(overlay(result.image, result.heatmap, alpha=0.5)).save("overlay.png")``.

    Args:
        image: PIL image (any mode, converted to RGB) or array: uint8 (H, W, 3), (H, W, 4)
            (alpha dropped) or (H, W) grey; float arrays are taken as 0..1.
        heatmap: Float array (H, W) in [0, 1], same H and W as the image.
        alpha: Heatmap opacity in [0, 1].
        colormap: A key of :data:`COLORMAPS`.

    Returns:
        uint8 RGB array (H, W, 3).

    Raises:
        RenderError: Shape mismatch, alpha outside [0, 1], unknown colour map.
    """
    alpha = _check_alpha(alpha)
    _check_colormap(colormap)
    rgb = _image_to_rgb(image)
    heat = _as_2d(heatmap)
    if heat.shape != rgb.shape[:2]:
        raise RenderError(
            f"heatmap shape {heat.shape} does not match the image size {rgb.shape[:2]} (H, W)"
        )
    if alpha == 0.0:
        return np.array(rgb, dtype=np.uint8, copy=True)
    return blend_colored(rgb, colorize(heat, colormap), alpha)


def gradient_to_rgb(gradient: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """Show a signed gradient (e.g. guided backpropagation) as an image: zero is mid-grey.

    Example: ``gradient_to_rgb(guided.guided_backprop)  # (H, W, 3) uint8, grey where 0``.

    Each value is divided by the ``percentile`` of ``|gradient|`` over the whole image, so that a few
    extreme pixels do not wash the rest out, then mapped from [-1, 1] to 0..255 (beyond: clipped).

    Args:
        gradient: Float array (H, W, 3).
        percentile: Percentile of the absolute values shown at full contrast, in (0, 100].

    Returns:
        uint8 RGB array (H, W, 3); uniform grey for an all-zero gradient.

    Raises:
        RenderError: Malformed gradient or percentile.
    """
    values = _as_gradient(gradient)
    scale = _robust_scale(np.abs(values), percentile)
    return _unit_to_uint8(values * np.float32(0.5 / scale) + np.float32(0.5))


def gradient_magnitude(gradient: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """Per-pixel strength of a gradient: the largest absolute value over the channels, scaled to [0, 1].

    Example: ``overlay(image, gradient_magnitude(guided.guided_backprop))``.

    Args:
        gradient: Float array (H, W, 3).
        percentile: Percentile of the magnitudes mapped to 1.0 (larger ones are clipped), in (0, 100].

    Returns:
        float32 array (H, W) in [0, 1], ready for :func:`colorize` or :func:`overlay`.

    Raises:
        RenderError: Malformed gradient or percentile.
    """
    magnitude = np.abs(_as_gradient(gradient)).max(axis=2)
    scale = _robust_scale(magnitude, percentile)
    return np.clip(magnitude / np.float32(scale), 0.0, 1.0).astype(np.float32, copy=False)


def to_png_bytes(array: np.ndarray, *, compress_level: int = 6) -> bytes:
    """Encode a uint8 array (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA as PNG.

    Example: ``Path("map.png").write_bytes(to_png_bytes(colorize(heatmap)))``.

    Args:
        array: uint8 image array.
        compress_level: zlib level 0-9 (1 is much faster for large images).

    Returns:
        The PNG file bytes.

    Raises:
        RenderError: Not uint8 or not an image shape.
    """
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise RenderError(f"array must be uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise RenderError(f"array must have shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def _unit_to_uint8(values: np.ndarray) -> np.ndarray:
    """Numeric array with values in [0, 1] -> uint8 0..255 of the same shape (new array)."""
    arr = np.asarray(values)
    if arr.dtype == np.uint8:
        return arr.copy()
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise RenderError(f"values must be numeric, got dtype {arr.dtype}")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float32)
    shape = arr.shape
    flat = np.ascontiguousarray(arr).reshape(shape[0], -1) if arr.ndim > 2 else np.ascontiguousarray(arr)
    if flat.size == 0:
        return np.zeros(shape, dtype=np.uint8)
    if not cv2.checkRange(flat)[0]:  # NaN or +-inf present (rare): slow path
        flat = np.nan_to_num(flat, nan=0.0, posinf=1.0, neginf=0.0)
    # One saturating pass: round(x * 255) clipped to 0..255.
    return cv2.multiply(flat, 255.0, dtype=cv2.CV_8U).reshape(shape)


@functools.lru_cache(maxsize=None)
def _rgb_lut(cv_colormap: int) -> np.ndarray:
    """256x1x3 lookup table of an OpenCV colour map in RGB order (for applyColorMap)."""
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    lut = cv2.applyColorMap(ramp, cv_colormap)[:, :, ::-1]
    lut = np.ascontiguousarray(lut)
    lut.setflags(write=False)
    return lut


def _check_colormap(colormap: str) -> int:
    try:
        return COLORMAPS[colormap]
    except (KeyError, TypeError):
        valid = ", ".join(COLORMAPS)
        raise RenderError(f"unknown colormap {colormap!r}; valid names: {valid}") from None


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, Real):
        raise RenderError(f"alpha must be a number in [0, 1], got {alpha!r}")
    value = float(alpha)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise RenderError(f"alpha must be in [0, 1], got {alpha!r}")
    return value


def _as_gradient(gradient: np.ndarray) -> np.ndarray:
    arr = np.asarray(gradient)
    if arr.ndim != 3 or arr.shape[2] != 3 or not np.issubdtype(arr.dtype, np.floating):
        raise RenderError(f"gradient must be a float array of shape (H, W, 3), got {arr.dtype} {arr.shape}")
    return np.nan_to_num(arr.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)


def _robust_scale(magnitudes: np.ndarray, percentile: float) -> float:
    """The ``percentile`` of non-negative ``magnitudes`` (their maximum if that is 0; 1.0 if all are 0)."""
    if isinstance(percentile, bool) or not isinstance(percentile, Real) or not 0.0 < percentile <= 100.0:
        raise RenderError(f"percentile must be in (0, 100], got {percentile!r}")
    if magnitudes.size == 0:
        return 1.0
    scale = float(np.percentile(magnitudes, percentile))
    if scale <= 0.0:  # sparse gradients: most pixels exactly zero
        scale = float(magnitudes.max())
    return scale if scale > 0.0 else 1.0


def _as_2d(heatmap: np.ndarray) -> np.ndarray:
    arr = np.asarray(heatmap)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise RenderError(f"heatmap must have shape (H, W), got {arr.shape}")
    return arr


def _image_to_rgb(image: np.ndarray | Image.Image) -> np.ndarray:
    """Any supported image -> uint8 (H, W, 3) array (may be the input itself)."""
    if isinstance(image, Image.Image):
        rgb_img = image if image.mode == "RGB" else image.convert("RGB")
        return np.asarray(rgb_img)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise RenderError(f"image must be uint8 (or float in [0, 1]), got {arr.dtype}")
        arr = _unit_to_uint8(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_GRAY2RGB)
    if arr.ndim == 3 and arr.shape[2] == 4:
        return np.ascontiguousarray(arr[:, :, :3])
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr
    raise RenderError(f"image must have shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
