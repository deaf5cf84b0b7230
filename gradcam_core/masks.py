"""Segmentation masks as pictures and regions: class colours, region outlines, a mask image or a box as a region.

A segmentation's predicted classes are drawn with one colour per class index (:data:`CLASS_COLOURS`, the
colour-blind-safe Okabe-Ito set, repeated past eight classes), the explained region outlined in white::

    picture = mask_picture(result.segmentation, result.region, (300, 451))     # (300, 451, 3) uint8
    region = region_from_picture(load_image("mask.png"), (224, 336))          # (224, 336) bool
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["CLASS_COLOURS", "box_region", "class_colour", "mask_picture", "outlines", "region_from_picture"]

CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
)
"""RGB colour of class 0, 1, 2...: Okabe and Ito's eight (class 0, often the background, black)."""
OUTLINE = (255, 255, 255)
"""Colour of the explained region's outline."""


def class_colour(index: int) -> tuple[int, int, int]:
    """The RGB colour of class ``index``: ``class_colour(1)  # (230, 159, 0)``."""
    return CLASS_COLOURS[index % len(CLASS_COLOURS)]


def mask_picture(segmentation: np.ndarray, region: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    """``(height, width, 3)`` uint8: each pixel in its class's colour, the region outlined (2 px, white).

    Args:
        segmentation: ``(h, w)`` class index per pixel (``Explanation.segmentation``), enlarged with nearest
            neighbours.
        region: ``(h, w)`` bool region explained, or ``None``.
        size: ``(height, width)`` of the picture.
    """
    height, width = size
    classes = cv2.resize(segmentation.astype(np.int32), (width, height), interpolation=cv2.INTER_NEAREST)
    palette = np.array(CLASS_COLOURS, dtype=np.uint8)
    picture = np.ascontiguousarray(palette[classes % len(CLASS_COLOURS)])
    if region is not None:
        lines = [np.round(line).astype(np.int32) for line in outlines(region, size)]
        cv2.polylines(picture, lines, isClosed=True, color=OUTLINE, thickness=2)
    return picture


def outlines(region: np.ndarray, size: tuple[int, int]) -> list[np.ndarray]:
    """The region's outer boundaries as closed polygons ``(k, 2)`` of (x, y) in pixels of ``size`` (height, width).

    The region ``(h, w)`` is outlined along its cells' edges, then scaled, so the outline is the same whatever
    the picture's size. Example: ``outlines(np.ones((2, 2), bool), (10, 10))[0]  # corners of the 10×10 frame``.
    """
    rows, cols = region.shape
    height, width = size
    # Each cell doubled (and a margin): a traced boundary pixel then lies on one side of its cell only, so its
    # cell edge is known: left/top of the pixel, or right/bottom where the next pixel is outside.
    grid = np.zeros((2 * rows + 2, 2 * cols + 2), np.uint8)
    grid[1:-1, 1:-1] = np.repeat(np.repeat(region.astype(np.uint8), 2, axis=0), 2, axis=1)
    contours, _ = cv2.findContours(grid, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        x, y = contour[:, 0, 0], contour[:, 0, 1]
        cells = np.stack([(x - 1) / 2 + 0.5 * (grid[y, x + 1] == 0), (y - 1) / 2 + 0.5 * (grid[y + 1, x] == 0)], 1)
        polygons.append(cells * [width / cols, height / rows])
    return polygons


def region_from_picture(picture: Image.Image, size: tuple[int, int]) -> Tensor:
    """A mask image as a region ``(height, width)`` bool: its non-zero pixels, resized with nearest neighbours.

    ``picture`` is an RGB image as ``imaging.load_image`` returns it (transparency is white, so inside); ``size``
    is ``(height, width)``, e.g. the model's input for the explained image.
    """
    inside = np.asarray(picture).reshape(picture.height, picture.width, -1).any(axis=2)
    height, width = size
    resized = cv2.resize(inside.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    return torch.from_numpy(resized > 0)


def box_region(box: tuple[float, float, float, float], image: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """A box ``(x0, y0, x1, y1)`` in pixels of an ``image`` (width, height) as a region ``(height, width)`` bool
    of ``size``: the cells whose centres fall inside it (at least one cell).

    Example: ``box_region((0, 0, 50, 100), (100, 100), (4, 4))[:, :2].all()  # True``.
    """
    x0, y0, x1, y1 = box
    width, height = image
    rows, cols = size
    xs = (np.arange(cols) + 0.5) * width / cols
    ys = (np.arange(rows) + 0.5) * height / rows
    inside = (ys[:, None] >= min(y0, y1)) & (ys[:, None] <= max(y0, y1)) & (xs >= min(x0, x1)) & (xs <= max(x0, x1))
    if not inside.any():  # a box thinner than a cell: the cell under its centre
        row = min(rows - 1, int((y0 + y1) / 2 * rows / height))
        col = min(cols - 1, int((x0 + x1) / 2 * cols / width))
        inside[max(row, 0), max(col, 0)] = True
    return torch.from_numpy(inside)
