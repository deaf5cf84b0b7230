"""Small array helpers for pictures sent to the browser."""

from __future__ import annotations

import base64
import io

import cv2
import numpy as np
from PIL import Image


def shrink(array: np.ndarray, max_side: int) -> np.ndarray:
    """``array`` (H, W[, C]) resized so that its longer side is at most ``max_side`` (area averaging).

    Example: ``shrink(np.zeros((3000, 4000, 3), np.uint8), 1024).shape  # (768, 1024, 3)``.
    """
    height, width = array.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return array
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA)


def jpeg_data_uri(rgb: np.ndarray, quality: int = 90) -> str:
    """A ``data:image/jpeg;base64,...`` URI of a uint8 RGB array (compact for photos).

    Example: ``go.Image(source=jpeg_data_uri(rgb))``.
    """
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
