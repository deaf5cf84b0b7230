"""Three planes of a 3-D scan and of its heatmap, as a viewer shows them: slices, projections, the peak.

Grids and axes. A scan's grid is ``(D, H, W)`` (slice ``k``, row ``j``, column ``i``, see
:mod:`gradcam_core.volumes`); a plane is named by the array axis it cuts (``0``: one slice ``k``, ``1``: one
row ``j``, ``2``: one column ``i``). :func:`map_slice`, :func:`map_projection` and :func:`scan_slice` return a
plane in array order (its rows along the lower remaining axis); :func:`plane_picture` and
:func:`projection_picture` turn it into what a radiologist expects on screen (see :class:`Plane`).

The heatmap is the low-resolution ``raw_map`` ``(d, h, w)`` of an explanation, which covers the whole scan. It
is enlarged exactly as ``torch.nn.functional.interpolate(mode="trilinear", align_corners=False)`` would
(voxel centres aligned, values beyond the outer centres held), but one plane at a time: the map is interpolated
along the cut axis at the plane's position, then the small 2-D result is resampled to the plane's size. The
full-resolution 3-D map is only built for an export (:func:`map_volume`)::

    plane = map_slice(result.raw_map, volume.shape, axis=0, index=120)       # (H, W) in [0, 1]
    picture = plane_picture(volume, result.raw_map, 0, (120, 256, 256), window)  # (side, side, 3) uint8 RGB
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .dicom import Window, apply_window, percentile_window
from .errors import RenderError
from .render import DEFAULT_COLORMAP, colorize, overlay
from .volumes import Volume

__all__ = [
    "PLANE_TITLES",
    "VIEW_SIDE",
    "Plane",
    "framed",
    "map_peak",
    "map_projection",
    "map_slice",
    "map_volume",
    "plane_of",
    "plane_picture",
    "projection_picture",
    "scan_slice",
    "scan_window",
    "with_crosshair",
]

Grid = tuple[int, int, int]
Position = tuple[int, int, int]

VIEW_SIDE = 384
"""Side in pixels of the square viewport each plane is fitted into (black around the picture)."""
PLANE_TITLES: dict[str, str] = {"x": "Sagittal", "y": "Coronal", "z": "Axial"}
"""A plane's title by the patient axis normal to it (RAS+: x left-right, y back-front, z feet-head)."""
_TOWARD = ("L", "P", "I")
"""Where the screen's columns and rows grow, for each patient axis (x, y, z): the radiological convention."""
_OPPOSITE = ("R", "A", "S")
_CROSSHAIR = (255, 255, 255)
_CROSSHAIR_ALPHA = 0.55
_LETTER = (235, 235, 120)
_MARGIN = 16
"""Pixels of black kept around a plane for the letters of the patient directions."""


@dataclass(frozen=True)
class Plane:
    """How one plane of a scan is laid on the screen.

    Attributes:
        axis: The array axis the plane cuts (0, 1 or 2).
        title: ``"Axial"``, ``"Coronal"`` or ``"Sagittal"``: the patient axis nearest to the plane's normal.
        rows_axis: The array axis running down the screen.
        cols_axis: The array axis running across the screen.
        flip_rows: Whether the rows run against ``rows_axis``'s indices.
        flip_cols: Whether the columns run against ``cols_axis``'s indices.
        voxels: ``(rows, columns)`` of the plane in scan voxels, as shown.
        spacing: ``(row, column)`` voxel size in mm, as shown.
        edges: Patient directions at the ``(top, bottom, left, right)`` edges, e.g. ``("A", "P", "R", "L")``.
    """

    axis: int
    title: str
    rows_axis: int
    cols_axis: int
    flip_rows: bool
    flip_cols: bool
    voxels: tuple[int, int]
    spacing: tuple[float, float]
    edges: tuple[str, str, str, str]

    def orient(self, plane: np.ndarray) -> np.ndarray:
        """A plane in array order (rows along the lower remaining axis) turned to the screen's order (a view)."""
        shown = plane.swapaxes(0, 1) if self.rows_axis > self.cols_axis else plane
        return shown[:: -1 if self.flip_rows else 1, :: -1 if self.flip_cols else 1]

    def size(self, side: int = VIEW_SIDE) -> tuple[int, int]:
        """``(height, width)`` in screen pixels: the plane's extent in mm fitted into ``side`` x ``side``.

        Every screen pixel covers a square of the patient: a 0.7 x 0.7 x 5 mm CT's coronal plane gives each 5-mm
        slice about 7 times the screen height it gives a 0.7-mm column in width, so the body keeps its
        proportions instead of looking squashed.
        """
        height = self.voxels[0] * self.spacing[0]
        width = self.voxels[1] * self.spacing[1]
        scale = side / max(height, width)
        return max(1, min(side, round(height * scale))), max(1, min(side, round(width * scale)))

    def box(self, side: int = VIEW_SIDE) -> tuple[int, int, int, int]:
        """Where the plane's picture sits in a ``side`` x ``side`` viewport: ``(top, left, height, width)``,
        centred, with a black margin around it for the patient directions."""
        height, width = self.size(side - 2 * _MARGIN)
        return (side - height) // 2, (side - width) // 2, height, width

    def array_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """A screen ``(height, width)`` in array order (what :func:`map_slice` is asked for, before ``orient``)."""
        return size[::-1] if self.rows_axis > self.cols_axis else size

    def screen(self, axis: int, index: int, length: int) -> float:
        """Where voxel ``index`` of array ``axis`` (``rows_axis`` or ``cols_axis``) falls on a screen side of
        ``length`` pixels: its centre, counted from the top or left edge."""
        count = self.voxels[0] if axis == self.rows_axis else self.voxels[1]
        flipped = self.flip_rows if axis == self.rows_axis else self.flip_cols
        place = count - 1 - index if flipped else index
        return (place + 0.5) * length / count


def plane_of(volume: Volume, axis: int) -> Plane:
    """How the plane cutting ``axis`` of ``volume`` is shown, in the radiological convention.

    Each voxel axis is matched to the patient axis it runs closest to (nibabel's ``io_orientation``, so an
    oblique scan gets its nearest plane); the screen's columns then grow toward the patient's left (x) or back
    (y) and its rows toward the back (y) or the feet (z). So: axial seen from the feet (the patient's right on
    the screen's left, front up), coronal seen from the front (right on the left, head up), sagittal seen from
    the patient's left (front on the left, head up). Aspect ratio: see :meth:`Plane.size`.
    """
    import nibabel as nib

    _check_axis(axis)
    orientation = nib.orientations.io_orientation(volume.affine)  # per (i, j, k): [patient axis, +1 toward RAS]
    patient = {a: int(orientation[2 - a, 0]) for a in range(3)}
    toward_ras = {a: orientation[2 - a, 1] > 0 for a in range(3)}
    first, second = (a for a in range(3) if a != axis)
    rows_axis, cols_axis = (first, second) if patient[first] > patient[second] else (second, first)
    spacing = volume.spacing
    row_side, col_side = patient[rows_axis], patient[cols_axis]
    return Plane(
        axis=axis,
        title=PLANE_TITLES["xyz"[patient[axis]]],
        rows_axis=rows_axis,
        cols_axis=cols_axis,
        flip_rows=bool(toward_ras[rows_axis]),
        flip_cols=bool(toward_ras[cols_axis]),
        voxels=(volume.shape[rows_axis], volume.shape[cols_axis]),
        spacing=(spacing[rows_axis], spacing[cols_axis]),
        edges=(_OPPOSITE[row_side], _TOWARD[row_side], _OPPOSITE[col_side], _TOWARD[col_side]),
    )


# --------------------------------------------------------------------------- the heatmap on the scan's grid


def map_slice(
    raw_map: np.ndarray, grid: Grid, axis: int, index: int, size: tuple[int, int] | None = None
) -> np.ndarray:
    """The heatmap on one plane of the scan, in [0, 1] (the whole map divided by its maximum).

    Example: ``map_slice(raw_map, (300, 512, 512), 0, 150).shape  # (512, 512)``.

    Exactly the plane ``index`` along ``axis`` of the map enlarged to ``grid`` by trilinear interpolation with
    ``align_corners=False`` (as PyTorch's), computed without the 3-D enlargement: one interpolation along
    ``axis``, then a bilinear resampling of the small plane.

    Args:
        raw_map: ``(d, h, w)`` non-negative map covering the whole scan.
        grid: The scan's ``(D, H, W)``.
        axis: The array axis cut (0, 1 or 2).
        index: The plane's index along ``axis``.
        size: ``(rows, columns)`` to resample the plane to instead of the scan's (array order): the same
            interpolation on a coarser or finer grid over the same extent (a screen's).

    Returns:
        float32 ``(rows, columns)``, rows along the lower remaining axis; all zeros for a map without heat.

    Raises:
        RenderError: A malformed map, grid, axis or index.
    """
    values, grid = _checked_map(raw_map, grid)
    _check_plane(grid, axis, index)
    return _resampled(_planes(values, axis, grid[axis], [int(index)])[0], _plane_size(grid, axis, size))


def map_projection(raw_map: np.ndarray, grid: Grid, axis: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """The maximum-intensity projection along ``axis`` of the heatmap enlarged to ``grid``, in [0, 1].

    Exactly the maximum over every plane :func:`map_slice` gives: along ``axis`` each enlarged plane mixes two
    neighbouring map planes with a weight that changes linearly, so only the planes with the smallest and
    largest weight of each pair can hold a maximum; those (at most ``2 d``) are enlarged and compared.

    Args:
        raw_map, grid, axis, size: As for :func:`map_slice`.

    Returns:
        float32 ``(rows, columns)`` in array order.
    """
    values, grid = _checked_map(raw_map, grid)
    _check_axis(axis)
    lower, _upper, share = _samples(values.shape[axis], grid[axis])
    candidates = set()
    for pair in np.unique(lower):  # the planes mixing map planes ``pair`` and ``pair + 1``
        rows = np.flatnonzero(lower == pair)
        candidates |= {int(rows[np.argmin(share[rows])]), int(rows[np.argmax(share[rows])])}
    target = _plane_size(grid, axis, size)
    return np.max([_resampled(plane, target) for plane in _planes(values, axis, grid[axis], sorted(candidates))], axis=0)


def map_volume(raw_map: np.ndarray, grid: Grid) -> np.ndarray:
    """The whole heatmap on the scan's grid ``(D, H, W)``, float32 in [0, 1] (for an export; built slice by slice)."""
    values, grid = _checked_map(raw_map, grid)
    out = np.empty(grid, dtype=np.float32)
    for k in range(grid[0]):
        out[k] = _resampled(_planes(values, 0, grid[0], [k])[0], grid[1:])
    return out


def map_peak(raw_map: np.ndarray, grid: Grid) -> Position:
    """The scan voxel ``(k, j, i)`` under the map's maximum: where the enlarged map gives the hottest cell its
    full weight, nearest the cell's centre.

    Along each axis that is the voxel whose centre is nearest the cell's centre, except at the scan's edges,
    where a band of voxels beyond the outer cells' centres all hold those cells' values: then the voxel of the
    band nearest the centre. On a tie between two voxels the lower index wins, as ``argmax`` would.

    Example: ``map_peak(np.eye(2)[None], (4, 8, 8))  # (1, 1, 1)`` for the cell (0, 0, 0).
    """
    values, grid = _checked_map(raw_map, grid)
    cell = np.unravel_index(int(np.argmax(values)), values.shape)
    peak = []
    for where, cells, voxels in zip(cell, values.shape, grid):
        lower, upper, share = _samples(cells, voxels)
        weight = np.where(lower == where, 1.0 - share, 0.0) + np.where(upper == where, share, 0.0)  # the cell's share
        best = np.flatnonzero(weight >= weight.max() - 1e-9)
        centre = (where + 0.5) * voxels / cells - 0.5  # the cell's centre in voxel positions
        peak.append(int(best[np.argmin(np.abs(best - centre))]))
    return peak[0], peak[1], peak[2]


# --------------------------------------------------------------------------- the scan


def scan_window(volume: Volume) -> Window:
    """The window a scan opens with: its own (DICOM), else one over its 0.5-99.5 percentiles of values."""
    return volume.default_window or percentile_window(volume.voxels)


def scan_slice(volume: Volume, axis: int, index: int, window: Window, channel: int = 0) -> np.ndarray:
    """One plane of the scan, windowed to uint8 (DICOM's linear VOI window, as 2-D DICOM pictures), array order.

    Example: ``scan_slice(volume, 0, 40, Window(40, 400)).shape  # (H, W)``, a soft-tissue axial slice of a CT.

    Args:
        volume: The scan.
        axis: The array axis cut (0, 1 or 2).
        index: The plane's index along ``axis``.
        window: Level and width in the voxels' units.
        channel: For a ``(C, D, H, W)`` volume, the channel shown.

    Raises:
        RenderError: A bad axis, index or channel.
    """
    _check_axis(axis)
    grid = volume.shape
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < grid[axis]:
        raise RenderError(f"Plane {index!r} is outside the scan's {grid[axis]} planes along axis {axis}.")
    if not 0 <= channel < volume.channels:
        raise RenderError(f"Channel {channel!r} is outside the scan's {volume.channels} channels.")
    voxels = volume.voxels[channel] if volume.voxels.ndim == 4 else volume.voxels
    return apply_window(np.take(voxels, int(index), axis=axis), window)


# --------------------------------------------------------------------------- pictures


def plane_picture(
    volume: Volume,
    raw_map: np.ndarray,
    axis: int,
    position: Position,
    window: Window,
    alpha: float = 0.5,
    colormap: str = DEFAULT_COLORMAP,
    *,
    side: int = VIEW_SIDE,
    channel: int = 0,
    crosshair: bool = True,
) -> np.ndarray:
    """One plane of the scan with the heatmap over it, on screen: ``(side, side, 3)`` uint8 RGB.

    The plane through ``position`` ``(k, j, i)`` cutting ``axis``, windowed, in the radiological convention
    and aspect ratio of :func:`plane_of`, the heatmap blended at ``alpha`` with ``colormap`` (as 2-D overlays),
    fitted into a black square with the patient directions at its edges (:func:`framed`) and, with
    ``crosshair``, lines where the two other planes cut it (:func:`with_crosshair`).
    """
    plane = plane_of(volume, axis)
    size = plane.box(side)[2:]
    grey = _fitted(plane.orient(scan_slice(volume, axis, position[axis], window, channel)), size)
    heat = plane.orient(map_slice(raw_map, volume.shape, axis, position[axis], plane.array_size(size)))
    picture = framed(overlay(grey, np.ascontiguousarray(heat), alpha, colormap), plane, side)
    return with_crosshair(picture, plane, position) if crosshair else picture


def projection_picture(
    volume: Volume, raw_map: np.ndarray, axis: int, colormap: str = DEFAULT_COLORMAP, *, side: int = VIEW_SIDE
) -> np.ndarray:
    """The heatmap's maximum-intensity projection along ``axis`` in colour, laid out as :func:`plane_picture`
    lays out that plane: ``(side, side, 3)`` uint8 RGB (add the crosshair with :func:`with_crosshair`)."""
    plane = plane_of(volume, axis)
    size = plane.box(side)[2:]
    heat = plane.orient(map_projection(raw_map, volume.shape, axis, plane.array_size(size)))
    return framed(colorize(np.ascontiguousarray(heat), colormap), plane, side)


def framed(picture: np.ndarray, plane: Plane, side: int = VIEW_SIDE) -> np.ndarray:
    """``picture`` (at ``plane.box(side)``'s size) in its box of a black ``side`` x ``side`` square, with the
    patient directions (``plane.edges``) in the middle of its four sides."""
    top, left, height, width = plane.box(side)
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    canvas[top : top + height, left : left + width] = picture
    top_letter, bottom_letter, left_letter, right_letter = plane.edges
    middle = side // 2
    for letter, (x, y) in (
        (top_letter, (middle - 5, _MARGIN - 3)),
        (bottom_letter, (middle - 5, side - 3)),
        (left_letter, (2, middle + 6)),
        (right_letter, (side - _MARGIN + 2, middle + 6)),
    ):
        cv2.putText(canvas, letter, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, _LETTER, 1, cv2.LINE_AA)
    return canvas


def with_crosshair(picture: np.ndarray, plane: Plane, position: Position) -> np.ndarray:
    """A :func:`framed` picture of ``plane`` with translucent lines where the two other planes through
    ``position`` ``(k, j, i)`` cut it (a new array)."""
    top, left, height, width = plane.box(picture.shape[0])
    y = top + int(plane.screen(plane.rows_axis, position[plane.rows_axis], height))
    x = left + int(plane.screen(plane.cols_axis, position[plane.cols_axis], width))
    lines = picture.copy()
    lines[y, left : left + width] = _CROSSHAIR
    lines[top : top + height, x] = _CROSSHAIR
    return cv2.addWeighted(lines, _CROSSHAIR_ALPHA, picture, 1 - _CROSSHAIR_ALPHA, 0.0)


def _fitted(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A uint8 plane resized to ``(height, width)``: averaged when shrunk, bilinear when enlarged."""
    height, width = size
    if grey.shape == (height, width):
        return np.ascontiguousarray(grey)
    shrinking = height * width < grey.shape[0] * grey.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(grey), (width, height), interpolation=interpolation)


# --------------------------------------------------------------------------- interpolation


def _samples(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each of ``size_out`` outputs samples ``size_in`` inputs, as PyTorch's ``align_corners=False``: the
    lower and upper input and the upper one's share.

    Output ``n`` samples the input at ``(n + 0.5) * size_in / size_out - 0.5``, clamped to the first and last
    centres. The same rule for enlarging and shrinking, unlike OpenCV's ``resize``, which averages when it shrinks.
    """
    source = np.maximum((np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5, 0.0)
    lower = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    upper = np.minimum(lower + 1, size_in - 1)
    return lower, upper, np.clip(source - lower, 0.0, 1.0)


def _planes(values: np.ndarray, axis: int, size: int, indices: list[int]) -> np.ndarray:
    """Planes ``indices`` of ``values`` enlarged (or shrunk) to ``size`` along ``axis``, ``(len(indices), ...)``."""
    values = np.moveaxis(values, axis, 0)  # the other two axes keep their order
    lower, upper, share = _samples(values.shape[0], size)
    chosen = np.asarray(indices)
    share = share[chosen].reshape(-1, 1, 1)
    return values[lower[chosen]] * (1.0 - share) + values[upper[chosen]] * share


def _resampled(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A small 2-D plane resampled bilinearly to ``size`` (see ``_samples``), float32 clipped to [0, 1].

    Two gathers and a weighted sum per axis (no matrix product: BLAS threads would compete with torch's)."""
    out = plane.astype(np.float32)
    for axis, length in enumerate(size):
        lower, upper, share = _samples(out.shape[axis], length)
        share = share.astype(np.float32).reshape((-1, 1) if axis == 0 else (1, -1))
        out = np.take(out, lower, axis) * (1.0 - share) + np.take(out, upper, axis) * share
    return np.clip(out, 0.0, 1.0, out=out)


def _plane_size(grid: Grid, axis: int, size: tuple[int, int] | None) -> tuple[int, int]:
    if size is None:
        first, second = (grid[a] for a in range(3) if a != axis)
        return first, second
    if len(size) != 2 or min(size) < 1:
        raise RenderError(f"A plane's size must be two positive numbers, not {size!r}.")
    return int(size[0]), int(size[1])


def _checked_map(raw_map: np.ndarray, grid: Grid) -> tuple[np.ndarray, Grid]:
    """The map divided by its maximum (float64, zeros without heat) and the grid, both checked."""
    values = np.asarray(raw_map)
    if values.ndim != 3 or 0 in values.shape or not np.issubdtype(values.dtype, np.number):
        raise RenderError(f"A volume's map must be a non-empty 3-D array of numbers, not of shape {values.shape}.")
    if len(grid) != 3 or any(isinstance(n, bool) or int(n) < 1 for n in grid):
        raise RenderError(f"A scan's grid must be three positive sizes, not {grid!r}.")
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(values.max())
    return (values / peak if peak > 0 else np.zeros_like(values)), (int(grid[0]), int(grid[1]), int(grid[2]))


def _check_plane(grid: Grid, axis: int, index: int) -> None:
    _check_axis(axis)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < grid[axis]:
        raise RenderError(f"Plane {index!r} is outside the scan's {grid[axis]} planes along axis {axis}.")


def _check_axis(axis: int) -> None:
    if isinstance(axis, bool) or axis not in (0, 1, 2):
        raise RenderError(f"The axis must be 0 (slices), 1 (rows) or 2 (columns), not {axis!r}.")
