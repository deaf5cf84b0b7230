"""Where a map's heat sits: its peak, its share on the image border, in a corner and in given regions.

Every model input is the whole image resized (never cropped, :mod:`.preprocess`), so a map's cells stand for
fractions of the image: regions are boxes in fractions of width and height, ``(x0, y0, x1, y1)`` from the top
left. Shares are measured on the map normalised to sum 1 and upsampled bilinearly to a fixed grid, so they do
not depend on the layer's resolution. Example::

    stats = heat_stats(result.raw_map, [Region("tag", 0.0, 0.0, 0.2, 0.2)])
    stats.corner_share, stats.regions["tag"]    # e.g. 0.71, 0.71
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .errors import AuditError

__all__ = [
    "BORDER_WIDTH", "CORNER_SIZE", "CORNERS", "GRID", "HeatStats", "Region", "border_share", "box_share",
    "heat_grid", "heat_stats", "hottest_corner", "parse_region",
]

GRID = 80
"""Side of the grid shares are measured on (border and corner boxes fall on whole cells)."""
BORDER_WIDTH = 0.1
"""The border is the band this fraction of each side wide (36% of the image's area)."""
CORNER_SIZE = 0.2
"""A corner is the square this fraction of each side wide (4% of the image's area)."""


@dataclass(frozen=True)
class Region:
    """A named box in fractions of the image: ``Region("ruler", 0.0, 0.8, 1.0, 1.0)`` is its bottom fifth."""

    name: str
    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise AuditError(f"The region name {self.name!r} must be letters, digits and underscores.")
        if not (0.0 <= self.x0 < self.x1 <= 1.0 and 0.0 <= self.y0 < self.y1 <= 1.0):
            raise AuditError(f"The region {self.name!r} must be a box with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1.")


CORNERS: tuple[Region, ...] = (
    Region("top_left", 0.0, 0.0, CORNER_SIZE, CORNER_SIZE),
    Region("top_right", 1.0 - CORNER_SIZE, 0.0, 1.0, CORNER_SIZE),
    Region("bottom_left", 0.0, 1.0 - CORNER_SIZE, CORNER_SIZE, 1.0),
    Region("bottom_right", 1.0 - CORNER_SIZE, 1.0 - CORNER_SIZE, 1.0, 1.0),
)
_INNER = Region("inner", BORDER_WIDTH, BORDER_WIDTH, 1.0 - BORDER_WIDTH, 1.0 - BORDER_WIDTH)


@dataclass(frozen=True)
class HeatStats:
    """Where one map's heat sits.

    Attributes:
        peak_x: Horizontal position of the hottest cell's centre, as a fraction of the width.
        peak_y: Vertical position, as a fraction of the height.
        border_share: Share of the heat in the border band (:data:`BORDER_WIDTH`); a uniform map has 0.36.
        corner_share: Share of the heat in the hottest corner (:data:`CORNER_SIZE`); a uniform map has 0.04.
        corner: Name of that corner (``"top_left"``...).
        regions: Share of the heat in each given region, by name.
    """

    peak_x: float
    peak_y: float
    border_share: float
    corner_share: float
    corner: str
    regions: dict[str, float]


def parse_region(text: str) -> Region:
    """A region from ``"name=x0,y0,x1,y1"`` (fractions): ``parse_region("tag=0,0,0.2,0.2")``.

    Raises:
        AuditError: the text is not of that form, or the box is empty or outside the image.
    """
    name, sep, box = text.partition("=")
    try:
        values = [float(part) for part in box.split(",")]
    except ValueError:
        values = []
    if not sep or len(values) != 4:
        raise AuditError(f"A region is written name=x0,y0,x1,y1 in fractions of the image, not {text!r}.")
    return Region(name.strip(), *values)


def heat_grid(raw_map: np.ndarray, size: int = GRID) -> np.ndarray:
    """``raw_map`` (``(h, w)``, non-negative) upsampled to ``size`` x ``size`` and normalised to sum 1 (all zeros
    when it has no heat). Example: ``heat_grid(result.raw_map).sum()  # 1.0``."""
    grid = cv2.resize(np.asarray(raw_map, np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    grid = np.clip(grid.astype(np.float64), 0.0, None)
    total = grid.sum()
    return grid / total if total > 0 else grid


def box_share(grid: np.ndarray, region: Region) -> float:
    """Share of a normalised grid's heat inside ``region``: ``box_share(heat_grid(m), CORNERS[0])``."""
    height, width = grid.shape
    rows = slice(round(region.y0 * height), round(region.y1 * height))
    cols = slice(round(region.x0 * width), round(region.x1 * width))
    return float(grid[rows, cols].sum())


def border_share(grid: np.ndarray) -> float:
    """Share of a normalised grid's heat in the border band: ``border_share(heat_grid(m))  # 0.36 if uniform``."""
    return float(grid.sum()) - box_share(grid, _INNER)


def hottest_corner(grid: np.ndarray) -> tuple[str, float]:
    """The corner holding most of a normalised grid's heat, and its share: ``("top_left", 0.7)``."""
    shares = [box_share(grid, corner) for corner in CORNERS]
    hottest = int(np.argmax(shares))
    return CORNERS[hottest].name, shares[hottest]


def heat_stats(raw_map: np.ndarray, regions: tuple[Region, ...] | list[Region] = ()) -> HeatStats:
    """Peak, border, corner and region shares of one map.

    Example: ``heat_stats(result.raw_map).border_share  # 0.12``.
    """
    raw = np.asarray(raw_map, np.float32)
    row, col = np.unravel_index(int(np.argmax(raw)), raw.shape)
    grid = heat_grid(raw)
    corner, corner_share = hottest_corner(grid)
    return HeatStats(
        peak_x=float((col + 0.5) / raw.shape[1]),
        peak_y=float((row + 0.5) / raw.shape[0]),
        border_share=border_share(grid),
        corner_share=corner_share,
        corner=corner,
        regions={region.name: box_share(grid, region) for region in regions},
    )
