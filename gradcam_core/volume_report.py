"""The HTML report of a 3-D explanation: the three planes through the map's peak, the map's projections and the
hottest slices of each axis, with the provenance of the 2-D report.

The page is the 2-D report's (:func:`gradcam_core.report.report_page`): one self-contained file, pictures as PNG
data URIs, inline CSS, a Content-Security-Policy that forbids any external resource, every name escaped. Nothing
identifying goes in: no file name, no patient tag, only the scan's technical facts (:meth:`Volume.summary`)::

    document = build_volume_report(volume, explain_volume(volume, loaded), loaded)   # the text of a .html file
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from .dicom import Window
from .errors import RenderError
from .render import DEFAULT_COLORMAP
from .report import data_table, escape, figures, key_value_table, predictions_table, report_page, utc_timestamp
from .volume_cam import VolumeExplanation
from .volume_models import LoadedVolumeModel, VolumePreprocessing
from .volume_view import (
    Plane,
    map_peak,
    map_slice,
    plane_of,
    plane_picture,
    projection_picture,
    scan_window,
    with_crosshair,
)
from .volumes import Volume

__all__ = ["HOTTEST_SLICES", "HotSlice", "build_volume_report", "hottest_slices"]

HOTTEST_SLICES = 5
"""Slices listed per axis in a report."""
_PLANE_ORDER = ("Axial", "Coronal", "Sagittal")
"""The planes in the order the dashboard shows them."""


@dataclass(frozen=True)
class HotSlice:
    """One slice of the map enlarged to the scan's voxels, with its heat (0 to 1 of the map's peak).

    Attributes:
        index: The slice's index along its axis, from 0 (the dashboard's sliders and the report count from 1).
        maximum: The largest map value on the slice.
        mean: The mean map value over the slice.
    """

    index: int
    maximum: float
    mean: float


def hottest_slices(
    raw_map: np.ndarray, grid: tuple[int, int, int], axis: int, count: int = HOTTEST_SLICES
) -> tuple[HotSlice, ...]:
    """The ``count`` slices along ``axis`` where the map is hottest: the largest maximum first, ties broken by the
    larger mean, then by the lower index.

    Each slice is the plane the viewer shows (:func:`~gradcam_core.volume_view.map_slice`: the map enlarged to the
    scan's voxels), made one at a time, so a large scan never gets a full-size map.

    Example: ``hottest_slices(result.raw_map, volume.shape, 0)[0].index  # an axial slice through the peak``.

    Raises:
        RenderError: A malformed map or grid, a bad axis, or a count that is not a positive whole number.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise RenderError(f"The number of slices to list must be a positive whole number, not {count!r}.")

    def heat(index: int) -> HotSlice:
        plane = map_slice(raw_map, grid, axis, index)
        return HotSlice(index, float(plane.max()), float(plane.mean(dtype=np.float64)))

    ranked = [heat(0)]  # checks the map, the grid and the axis before the loop uses them
    ranked += [heat(index) for index in range(1, int(grid[axis]))]
    ranked.sort(key=lambda hot: (-hot.maximum, -hot.mean, hot.index))
    return tuple(ranked[:count])


def build_volume_report(
    volume: Volume,
    explanation: VolumeExplanation,
    model: LoadedVolumeModel,
    *,
    window: Window | None = None,
    alpha: float = 0.5,
    colormap: str = DEFAULT_COLORMAP,
    count: int = HOTTEST_SLICES,
    now: datetime | None = None,
) -> str:
    """A self-contained HTML report of one scan's explanation.

    Example: ``build_volume_report(volume, result, loaded, alpha=0.4, colormap="viridis")`` is the text of a
    ``.html`` file.

    It holds the axial, coronal and sagittal planes through the map's peak (:func:`~gradcam_core.volume_view.
    map_peak`) with the overlay and the crosshair, the map's three maximum-intensity projections, the ``count``
    hottest slices of each axis (:func:`hottest_slices`, numbered from 1 as on the dashboard's sliders), the
    predictions, the explained class and its score, the model, layer and method, the model's input grid and
    preprocessing, its weights' SHA-256, the scan's technical facts, the library versions and the disclaimer.

    Args:
        volume: The explained scan.
        explanation: What :func:`~gradcam_core.volume_cam.explain_volume` returned for ``volume``.
        model: The model that explained it.
        window: Grey levels of the planes (default: the scan's own, :func:`~gradcam_core.volume_view.scan_window`).
        alpha: Heatmap opacity over the planes.
        colormap: Colour map of the heatmap (a key of ``render.COLORMAPS``).
        count: Hottest slices listed per axis.
        now: Time of the report (default: now); naive datetimes are taken as UTC.

    Raises:
        RenderError: The explanation is of a scan of another size, an unknown colour map, an alpha outside [0, 1],
            or a ``count`` that is not a positive whole number.
    """
    grid, raw_map = volume.shape, explanation.raw_map
    if tuple(explanation.grid) != grid:
        raise RenderError(
            f"The explanation is of a scan of {_size(explanation.grid)} voxels, not of this one's {_size(grid)}."
        )
    window = window or scan_window(volume)
    peak = map_peak(raw_map, grid)
    shown = {axis: plane_of(volume, axis) for axis in range(3)}
    axes = sorted(shown, key=lambda axis: _PLANE_ORDER.index(shown[axis].title))
    planes = figures([
        (f"plane-{shown[axis].title.lower()}", f"{shown[axis].title}: slice {peak[axis] + 1} of {grid[axis]}",
         plane_picture(volume, raw_map, axis, peak, window, alpha, colormap))
        for axis in axes
    ])
    projections = figures([
        (f"projection-{shown[axis].title.lower()}", f"{shown[axis].title}: maximum-intensity projection",
         with_crosshair(projection_picture(volume, raw_map, axis, colormap), shown[axis], peak))
        for axis in axes
    ])
    target = explanation.target
    settings = {
        "Model": f"{model.title} ({explanation.model})",
        "Weights SHA-256": model.weights_sha256 or "not available",
        "Target class": f"{target.label} (index {target.index})",
        "Target probability": f"{target.probability:.4f}",
        "Target score (logit)": f"{explanation.score:.4f}",
        "Method": explanation.method,
        "Layer": explanation.layer,
        "Evidence strength (map maximum)": f"{explanation.strength:.4g}",
        "Map grid": f"{_size(raw_map.shape)} cells, covering the whole scan",
        "Map peak": ", ".join(f"{shown[axis].title.lower()} {peak[axis] + 1}" for axis in axes),
        "Model input size": f"{_size(explanation.input_size)} voxels (the whole scan resized, not cropped)",
        "Intensity scaling": _intensity(model.preprocessing),
        "Model input channels": str(model.preprocessing.channels),
        "Window shown": f"level {window.center:.6g}, width {window.width:.6g}",
        "Alpha": f"{float(alpha):.2f}",
        "Colormap": colormap,
        "Timestamp (UTC)": utc_timestamp(now),
    }
    body = (
        "<h2>Three planes through the map's peak</h2>\n"
        f"<p>{escape(_planes_note(shown, axes, peak, grid))}</p>\n{planes}\n"
        "<h2>Where the heat is: maximum-intensity projections</h2>\n"
        "<p>The strongest map value along each line of sight; the lines cross at the peak.</p>\n"
        f"{projections}\n"
        f"<h2>Hottest slices</h2>\n{_hottest_table(raw_map, grid, shown, axes, peak, count, explanation.strength)}\n"
        f"<h2>Explanation</h2>{key_value_table(settings)}\n"
        f"<h2>Top predictions</h2>{predictions_table(explanation.predictions, target.index)}\n"
        f"<h2>Scan</h2><p>Technical facts only: no file name, no patient details.</p>"
        f"{key_value_table(volume.summary(), code=())}\n"
    )
    return report_page("Grad-CAM report — 3-D scan", body)


def _hottest_table(
    raw_map: np.ndarray,
    grid: tuple[int, int, int],
    shown: dict[int, Plane],
    axes: list[int],
    peak: tuple[int, int, int],
    count: int,
    strength: float,
) -> str:
    """The definition of the hottest slices, then their table (rows through the peak marked)."""
    if strength <= 0:
        return "<p>The map is zero everywhere: no slice holds more evidence than another.</p>"
    rows, marked = [], set()
    for axis in axes:
        for rank, hot in enumerate(hottest_slices(raw_map, grid, axis, count), start=1):
            if hot.index == peak[axis]:
                marked.add(len(rows))
            rows.append((shown[axis].title, rank, hot.index + 1, f"{hot.maximum:.3f}", f"{hot.mean:.3f}"))
    definition = (
        f"For each axis, the {count} slices whose map reaches the highest value: the map enlarged to the scan's "
        "voxels as on screen, 0 to 1 of its peak; ties go to the slice with the larger mean, then to the lower "
        "slice number. Slices are numbered from 1, as on the dashboard's sliders; a slice through the peak is in "
        "bold."
    )
    table = data_table(["Plane", "Rank", "Slice", "Map maximum", "Map mean"], rows, numeric=(1, 2, 3, 4),
                       marked=marked)
    return f"<p>{escape(definition)}</p>{table}"


def _planes_note(
    shown: dict[int, Plane], axes: list[int], peak: tuple[int, int, int], grid: tuple[int, int, int]
) -> str:
    """Where the planes cut the scan and how they are laid out."""
    where = ", ".join(f"{shown[axis].title.lower()} slice {peak[axis] + 1} of {grid[axis]}" for axis in axes)
    return (
        f"The voxel under the map's maximum: {where}. Each plane as a radiologist reads it (R/L: the patient's right "
        "and left, A/P: front and back, S/I: head and feet), in square millimetres; the lines mark the other two "
        "planes."
    )


def _intensity(preprocessing: VolumePreprocessing) -> str:
    """How voxel values were scaled for the model, in words."""
    if preprocessing.intensity == "window" and preprocessing.window is not None:
        center, width = preprocessing.window
        return f"window level {center:.6g}, width {width:.6g}, clipped and scaled to 0–1"
    return "z-score over the scan (mean 0, standard deviation 1)"


def _size(shape: tuple[int, ...]) -> str:
    return " × ".join(str(int(side)) for side in shape)
