"""Plotly figures: the three image panels, the predictions chart and the teaching view (pure, no Streamlit)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gradcam_core import FaithfulnessCurves, Prediction, heatmap_from_map
from gradcam_core.masks import class_colour, mask_picture
from gradcam_core.render import colorize

from .pictures import jpeg_data_uri
from .text import plotly_text

HOVER_SIDE = 256
"""Longest side of the heatmap grid sent for hovering (keeps the page light for big images)."""
PANEL_WIDTH = 290
"""Width in pixels of a main panel beside the sidebar on a laptop screen."""
COLORBAR_ROOM = 40
"""Pixels under every panel: the heatmap's colour bar lives there, the other panels keep equal heights."""
PANEL_GAP = 0.02
"""Space between the linked panels, as a share of the figure's width."""
TOOLBAR_ROOM = 28
"""Pixels above every panel for Plotly's toolbar, which would otherwise cover the top of the image (on a phone,
where a tap shows it, it hid the top of every picture)."""
HIGHLIGHT = "#2b6cb0"
MUTED = "#c5d3e3"
POSITIVE = "#c0392b"
NEGATIVE = "#2e6da4"
BLUES = ("#2166ac", "#92c5de")
WHITE = "#f7f7f7"
REDS = ("#f4a582", "#b2182b")
CELL_TEXT_LIMIT = 160
"""Grids with at most this many cells print their values in the cells."""


def plot_config() -> dict[str, object]:
    """Plotly toolbar: zoom, pan and reset only (downloads have their own buttons)."""
    return {"displaylogo": False, "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d", "toImage"]}


def panel_height(size: tuple[int, int], width: int = PANEL_WIDTH) -> int:
    """Figure height for an image of ``size`` (width, height) shown about ``width`` pixels wide."""
    image_width, image_height = size
    return int(np.clip(width * image_height / image_width, 150, 460)) + COLORBAR_ROOM + TOOLBAR_ROOM


def colorscale(colormap: str, stops: int = 33) -> list[list[float | str]]:
    """Plotly colour scale with exactly the colours ``gradcam_core.render`` uses for ``colormap``."""
    ramp = colorize(np.linspace(0.0, 1.0, stops, dtype=np.float32)[None, :], colormap)[0]
    return [[i / (stops - 1), f"rgb({r},{g},{b})"] for i, (r, g, b) in enumerate(ramp.tolist())]


def image_figure(rgb: np.ndarray, size: tuple[int, int], height: int) -> go.Figure:
    """A zoomable picture; ``rgb`` may be a shrunk copy, axes are in pixels of the original ``size``."""
    return _frame(go.Figure(image_trace(rgb, size)), size, height)


def image_trace(rgb: np.ndarray, size: tuple[int, int]) -> go.Image:
    """``rgb`` (possibly a shrunk copy) placed on the pixel grid of the original ``size`` (width, height)."""
    width, full_height = size
    shown_height, shown_width = rgb.shape[:2]
    dx, dy = width / shown_width, full_height / shown_height
    return go.Image(source=jpeg_data_uri(rgb), x0=dx / 2, y0=dy / 2, dx=dx, dy=dy, hoverinfo="skip")


def heatmap_figure(
    raw_map: np.ndarray,
    size: tuple[int, int],
    colormap: str,
    height: int,
    label: str,
    scale: float | None = None,
    background: np.ndarray | None = None,
    opacity: float = 1.0,
) -> go.Figure:
    """``heatmap_trace`` as a figure ``height`` pixels high, over the RGB picture ``background`` if given."""
    trace = heatmap_trace(raw_map, size, colormap, label, scale, opacity)
    traces = [trace] if background is None else [image_trace(background, size), trace]
    return _frame(go.Figure(traces), size, height)


def heatmap_trace(
    raw_map: np.ndarray,
    size: tuple[int, int],
    colormap: str,
    label: str,
    scale: float | None = None,
    opacity: float = 1.0,
) -> go.Heatmap:
    """The heatmap as a hoverable grid trace (at most ``HOVER_SIDE`` cells long) with a colour bar.

    Args:
        raw_map: (h, w) map at the layer's resolution, enlarged to the image.
        size: (width, height) of the original image; the axes are in its pixels.
        colormap: Colour map name (as used for the overlay).
        label: What the values measure, for the hover text and the colour bar.
        scale: ``None``: values divided by the map's maximum (0 to 1). Else raw values, colours running from 0
            to ``scale`` (a common scale makes several maps comparable; use the largest of their maxima).
        opacity: Opacity of the heatmap, 0 to 1.
    """
    width, full_height = size
    shrink = min(1.0, HOVER_SIDE / max(width, full_height))
    rows, cols = max(1, round(full_height * shrink)), max(1, round(width * shrink))
    top = 1.0 if scale is None else (scale if scale > 0 else 1.0)
    grid = heatmap_from_map(raw_map, (rows, cols), None if scale is None else top) * top
    xs = (np.arange(cols) + 0.5) * width / cols
    ys = (np.arange(rows) + 0.5) * full_height / rows
    value = ".2f" if scale is None else ".3g"
    trace = go.Heatmap(
        z=grid if scale is not None else np.round(grid, 3),
        x=xs,
        y=ys,
        zmin=0.0,
        zmax=top,
        colorscale=colorscale(colormap),
        opacity=opacity,
        hovertemplate=f"{label}: %{{z:{value}}}<br>x %{{x:.0f}}, y %{{y:.0f}} px<extra></extra>",
        colorbar={
            "orientation": "h",
            "thickness": 9,
            "len": 0.9,
            "x": 0.5,
            "xanchor": "center",
            "y": 0,
            "yanchor": "top",
            "ypad": 8,
            "tickvals": [0, 0.25, 0.5, 0.75, 1] if scale is None else None,
            "nticks": 5,
            "tickformat": "" if scale is None else ".2~g",
            "tickfont": {"size": 11},
            "outlinewidth": 0,
        },
    )
    return trace


def panels_figure(
    image: np.ndarray,
    blended: np.ndarray,
    raw_map: np.ndarray,
    size: tuple[int, int],
    colormap: str,
    height: int,
    scale: float | None = None,
    mask: SegmentationPanel | None = None,
) -> go.Figure:
    """Original | heatmap | overlay (| predicted mask) as one figure whose panels zoom and pan together.

    ``image`` and ``blended`` may be shrunk copies; the axes of every panel are in pixels of the original
    ``size`` (width, height). The heatmap and the overlay show the map's value on hover; ``scale`` as in
    ``heatmap_figure``. ``mask`` adds a fourth panel: a segmentation model's class per pixel, the explained
    region outlined, a legend of the classes present under it.
    """
    heat = heatmap_trace(raw_map, size, colormap, "evidence", scale)
    hover = heatmap_trace(raw_map, size, colormap, "evidence", scale, opacity=0.0)
    hover.update(showscale=False)  # the overlay's values, from an invisible grid over the blended picture
    panels: list[tuple[go.BaseTraceType, ...]] = [(image_trace(image, size),), (heat,), (image_trace(blended, size), hover)]
    if mask is not None:
        panels.append(mask.traces(size, image.shape[:2]))
    count = len(panels)
    share = (1 - (count - 1) * PANEL_GAP) / count
    heat.colorbar.update(len=0.9 * share, x=share + PANEL_GAP + share / 2)  # under the heatmap panel only
    width, image_height = size
    layout: dict[str, object] = {}
    for number, traces in enumerate(panels):
        suffix = "" if number == 0 else str(number + 1)
        for trace in traces:
            trace.update(xaxis=f"x{suffix}", yaxis=f"y{suffix}")
        start = number * (share + PANEL_GAP)
        layout[f"xaxis{suffix}"] = {"domain": [start, start + share], "matches": None if number == 0 else "x"}
        layout[f"yaxis{suffix}"] = {"anchor": f"x{suffix}", "matches": None if number == 0 else "y"}
    figure = _frame(go.Figure([trace for traces in panels for trace in traces]), size, height)
    figure.update_layout(layout)
    figure.update_xaxes(visible=False, range=[0, width], constrain="domain")
    figure.update_yaxes(visible=False, range=[image_height, 0], constrain="domain", constraintoward="top")
    figure.update_layout(yaxis={"scaleanchor": "x"})
    if mask is not None:
        if mask.region is not None:
            outline(figure, mask.region, size, axis=str(count))
        figure.update_layout(
            showlegend=True,
            legend={"orientation": "h", "x": 1 - share / 2, "xanchor": "center", "y": 0, "yanchor": "top",
                    "font": {"size": 11}, "itemclick": False, "itemdoubleclick": False,
                    "bgcolor": "rgba(0,0,0,0)"},
        )
    return figure


@dataclass(frozen=True, eq=False)
class SegmentationPanel:
    """What the predicted-mask panel shows: the class of each pixel, the class names, the explained region.

    Attributes:
        segmentation: ``(h, w)`` class index per pixel (``ExplanationSummary.segmentation``).
        categories: The model's class names.
        region: ``(h, w)`` bool region explained (``ExplanationSummary.region``), or ``None``.
    """

    segmentation: np.ndarray
    categories: Sequence[str]
    region: np.ndarray | None = None

    def present(self) -> list[int]:
        """The classes the model gives some pixel, most pixels first."""
        counts = np.bincount(self.segmentation.ravel().astype(np.int64), minlength=len(self.categories))
        return [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]

    def traces(self, size: tuple[int, int], shown: tuple[int, int]) -> tuple[go.BaseTraceType, ...]:
        """The mask as a picture ``shown`` (height, width) on the pixel grid of ``size``, hovering its class name,
        and one legend entry per class present."""
        picture = image_trace(mask_picture(self.segmentation, None, shown), size)
        names = np.array([plotly_text(name) for name in self.categories], dtype=object)
        rows, cols = self.segmentation.shape
        width, height = size
        hover = go.Heatmap(
            z=np.zeros((rows, cols)), x=(np.arange(cols) + 0.5) * width / cols, y=(np.arange(rows) + 0.5) * height / rows,
            customdata=names[np.clip(self.segmentation, 0, len(names) - 1)], opacity=0.0, showscale=False,
            hovertemplate="%{customdata}<br>x %{x:.0f}, y %{y:.0f} px<extra></extra>", showlegend=False,
        )
        legend = [
            go.Scatter(
                x=[None], y=[None], mode="markers", name=plotly_text(self.categories[index]),
                marker={"symbol": "square", "size": 11, "color": "rgb({},{},{})".format(*class_colour(index)),
                        "line": {"color": "#888", "width": 1}},
            )
            for index in self.present()
        ]
        return (picture, hover, *legend)


def predictions_figure(predictions: Sequence[Prediction], target: Prediction) -> go.Figure:
    """Horizontal bars of the top predictions, best on top, the explained class highlighted."""
    shown = list(predictions)
    if target.index not in {p.index for p in shown}:
        shown.append(target)
    labels = [plotly_text(p.label) for p in shown]
    values = [100 * p.probability for p in shown]
    figure = go.Figure(
        go.Bar(
            x=values,
            y=labels,
            orientation="h",
            marker_color=[HIGHLIGHT if p.index == target.index else MUTED for p in shown],
            text=[f"{v:.1f}%" for v in values],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x:.1f}%<extra></extra>",
        )
    )
    figure.update_layout(
        height=60 + 34 * len(shown),
        margin={"l": 0, "r": 40, "t": 10, "b": 30},
        xaxis={"title": "Probability (%)", "range": [0, max(values) * 1.15 + 1], "fixedrange": True},
        yaxis={"autorange": "reversed", "fixedrange": True},
        bargap=0.35,
        showlegend=False,
    )
    return figure


def curves_figure(curves: FaithfulnessCurves, height: int = 320) -> go.Figure:
    """Deletion and insertion curves (solid) with their random-order baselines (dashed), AUC in the legend."""
    percent = 100 * curves.fractions
    lines = (
        ("Deletion", curves.deletion, curves.deletion_auc, NEGATIVE, "solid"),
        ("Insertion", curves.insertion, curves.insertion_auc, POSITIVE, "solid"),
        ("Deletion, random order", curves.random_deletion, curves.random_deletion_auc, NEGATIVE, "dash"),
        ("Insertion, random order", curves.random_insertion, curves.random_insertion_auc, POSITIVE, "dash"),
    )
    figure = go.Figure(
        [
            go.Scatter(
                x=percent,
                y=100 * values,
                name=f"{name} (AUC {auc:.3f})",
                mode="lines",
                line={"color": colour, "dash": dash, "width": 2.5 if dash == "solid" else 1.5},
                hovertemplate=f"{name}<br>%{{x:.0f}}% of the pixels: %{{y:.1f}}%<extra></extra>",
            )
            for name, values, auc, colour, dash in lines
        ]
    )
    figure.update_layout(
        height=height,
        margin={"l": 0, "r": 10, "t": 10, "b": 40},
        xaxis={"title": "Pixels deleted or revealed, hottest first (%)", "range": [0, 100], "fixedrange": True},
        yaxis={"title": "Class probability (%)", "rangemode": "tozero", "fixedrange": True},
        legend={"orientation": "h", "y": -0.25},
        paper_bgcolor="rgba(0,0,0,0)",
    )
    return figure


def grid_figure(
    grid: np.ndarray,
    height: int,
    label: str,
    colorscale: str | list[list[float | str]],
    value_range: tuple[float, float],
    ticks: Sequence[float] | None = None,
) -> go.Figure:
    """A small (h, w) map drawn cell by cell (as the network sees it), values printed in the cells when few.

    Args:
        grid: ``(h, w)`` values.
        height: Figure height in pixels (the colour bar lives in its bottom ``COLORBAR_ROOM`` pixels).
        label: What the values are, for the hover text.
        colorscale: Plotly colour scale.
        value_range: ``(zmin, zmax)`` of the colour scale.
        ticks: Colour bar ticks; default: Plotly's.
    """
    rows, cols = grid.shape
    low, high = value_range
    text = cell_text(grid) if grid.size <= CELL_TEXT_LIMIT else None
    trace = go.Heatmap(
        z=grid,
        x=np.arange(cols) + 0.5,
        y=np.arange(rows) + 0.5,
        zmin=low,
        zmax=high,
        colorscale=colorscale,
        text=text,
        texttemplate="%{text}" if text is not None else None,
        textfont={"size": 10},
        hovertemplate=f"{label}: %{{z:.4g}}<br>row %{{y:.0f}}, column %{{x:.0f}}<extra></extra>",
        xgap=1 if grid.size <= CELL_TEXT_LIMIT else 0,
        ygap=1 if grid.size <= CELL_TEXT_LIMIT else 0,
        colorbar={
            "orientation": "h", "thickness": 9, "len": 0.9, "x": 0.5, "xanchor": "center", "y": 0,
            "yanchor": "top", "ypad": 8, "tickfont": {"size": 11}, "outlinewidth": 0,
            **({"tickvals": list(ticks)} if ticks is not None else {}),
        },
    )
    return _frame(go.Figure(trace), (cols, rows), height)


def cell_text(grid: np.ndarray) -> list[list[str]]:
    """The values of ``grid`` with three significant digits of its largest magnitude (``"0.196"``, ``"-1.2"``).

    Exact zeros read ``"0"``; values too small for those digits keep one digit (``"-4e-04"``), so that a small
    negative value never reads as zero.
    """
    largest = float(np.abs(grid).max(initial=0.0))
    decimals = int(np.clip(2 - np.floor(np.log10(largest)), 0, 6)) if largest > 0 else 0

    def text(value: float) -> str:
        if value == 0:
            return "0"
        fixed = f"{value:.{decimals}f}"
        return fixed if float(fixed) != 0 else f"{value:.0e}"

    return [[text(value) for value in row] for row in grid.tolist()]


def signed_scale(low: float, high: float) -> tuple[list[list[float | str]], tuple[float, float]]:
    """Colour scale and range for signed values: white at 0, deepest blue at ``low``, deepest red at ``high``.

    The two sides are stretched separately, so that small negative values stay visible next to large positive
    ones (the colour bar shows the true values).
    """
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if high <= low:
        return [[0.0, WHITE], [1.0, REDS[1]]], (0.0, 1.0)
    zero = -low / (high - low)
    scale: list[list[float | str]] = []
    if low < 0:
        scale += [[0.0, BLUES[0]], [zero / 2, BLUES[1]]]
    scale.append([zero, WHITE])
    if high > 0:
        scale += [[zero + (1 - zero) / 2, REDS[0]], [1.0, REDS[1]]]
    return scale, (low, high)


def tiles_figure(maps: Sequence[np.ndarray], titles: Sequence[str], height: int) -> go.Figure:
    """Feature maps side by side on one shared colour scale (dark = 0), each titled with its channel and weight."""
    count = max(1, len(maps))
    low = min([0.0] + [float(m.min()) for m in maps])
    high = max([low + 1e-6] + [float(m.max()) for m in maps])
    figure = make_subplots(rows=1, cols=count, subplot_titles=list(titles), horizontal_spacing=0.012)
    for number, (grid, title) in enumerate(zip(maps, titles, strict=True), start=1):
        rows, cols = grid.shape
        figure.add_trace(
            go.Heatmap(
                z=grid,
                x=np.arange(cols) + 0.5,
                y=np.arange(rows) + 0.5,
                coloraxis="coloraxis",
                hovertemplate=f"{title}<br>A: %{{z:.3g}}<br>row %{{y:.0f}}, column %{{x:.0f}}<extra></extra>",
            ),
            row=1,
            col=number,
        )
        suffix = "" if number == 1 else str(number)
        figure.update_layout({
            f"xaxis{suffix}": {"visible": False, "range": [0, cols], "constrain": "domain"},
            f"yaxis{suffix}": {"visible": False, "range": [rows, 0], "scaleanchor": f"x{suffix}",
                               "constrain": "domain", "constraintoward": "top"},
        })
    figure.update_annotations(font={"size": 11})
    figure.update_layout(
        height=height,
        margin={"l": 0, "r": 0, "t": 22, "b": COLORBAR_ROOM},
        coloraxis={
            "colorscale": "Viridis", "cmin": low, "cmax": high,
            "colorbar": {"orientation": "h", "thickness": 9, "len": 0.4, "x": 0.5, "xanchor": "center", "y": 0,
                         "yanchor": "top", "ypad": 8, "tickfont": {"size": 11}, "outlinewidth": 0,
                         "title": {"text": "activation", "side": "right", "font": {"size": 11}}},
        },
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return figure


def weights_figure(weights: np.ndarray, marked: Sequence[int], height: int, name: str = "α") -> go.Figure:
    """Every channel's weight as a bar, sorted from largest to most negative; a dot over each ``marked`` channel."""
    order = np.argsort(-weights, kind="stable")
    values = weights[order]
    rank = {int(k): r for r, k in enumerate(order.tolist(), start=1)}
    marked = [int(k) for k in marked]
    limit = float(np.abs(values).max(initial=0.0)) or 1.0
    figure = go.Figure(
        [
            go.Bar(
                x=np.arange(1, len(values) + 1),
                y=values,
                customdata=order,
                marker={"color": np.where(values >= 0, POSITIVE, NEGATIVE), "line": {"width": 0}},
                hovertemplate=f"channel %{{customdata}}<br>{name} = %{{y:.3g}}<br>rank %{{x}}<extra></extra>",
            ),
            go.Scatter(
                x=[rank[k] for k in marked],
                y=[float(weights[k]) + (0.06 if weights[k] >= 0 else -0.06) * limit for k in marked],
                customdata=marked,
                mode="markers",
                marker={"color": "#222", "size": 7, "symbol": "diamond"},
                hovertemplate="tile: channel %{customdata}<br>rank %{x}<extra></extra>",
            ),
        ]
    )
    figure.update_layout(
        height=height,
        margin={"l": 0, "r": 10, "t": 10, "b": 40},
        bargap=0,
        xaxis={"title": f"the {len(values)} channels, sorted by weight", "fixedrange": True, "showgrid": False},
        yaxis={"title": f"weight {name}", "fixedrange": True, "zeroline": True, "zerolinecolor": "#888",
               "exponentformat": "e",
               "range": [min(0.0, float(values.min())) - 0.12 * limit, max(0.0, float(values.max())) + 0.12 * limit]},
        showlegend=False,
        paper_bgcolor="rgba(0,0,0,0)",
    )
    return figure


def signed_overlay_figure(
    rgb: np.ndarray, grid: np.ndarray, value_range: tuple[float, float], size: tuple[int, int], height: int, label: str
) -> go.Figure:
    """A signed (h, w) map as translucent cells over the picture: red positive, blue negative, white zero.

    Args:
        rgb: The browser-sized picture.
        grid: ``(h, w)`` values, e.g. the weighted sum before the ReLU.
        value_range: ``(low, high)`` for ``signed_scale`` (share it to compare maps).
        size: ``(width, height)`` of the original image: the axes are in its pixels.
        label: What the values are, for the hover text.
    """
    figure = image_figure(rgb, size, height)
    width, full_height = size
    rows, cols = grid.shape
    scale, (low, high) = signed_scale(*value_range)
    figure.add_trace(
        go.Heatmap(
            z=grid,
            x=(np.arange(cols) + 0.5) * width / cols,
            y=(np.arange(rows) + 0.5) * full_height / rows,
            zmin=low,
            zmax=high,
            colorscale=scale,
            opacity=0.6,
            hovertemplate=f"{label}: %{{z:.3g}}<extra></extra>",
            colorbar={
                "orientation": "h", "thickness": 9, "len": 0.9, "x": 0.5, "xanchor": "center", "y": 0,
                "yanchor": "top", "ypad": 8, "tickfont": {"size": 11}, "outlinewidth": 0,
            },
        )
    )
    return figure


def weights_comparison_figure(
    first: np.ndarray, second: np.ndarray, labels: tuple[str, str], height: int
) -> go.Figure:
    """One dot per channel: its weight for the first class (across) and for the second (up), with the diagonal."""
    labels = (plotly_text(labels[0]), plotly_text(labels[1]))
    limit = float(max(np.abs(first).max(initial=0.0), np.abs(second).max(initial=0.0))) * 1.05 or 1.0
    figure = go.Figure(
        [
            go.Scatter(
                x=[-limit, limit], y=[-limit, limit], mode="lines", hoverinfo="skip",
                line={"color": "#999", "width": 1, "dash": "dot"},
            ),
            go.Scatter(
                x=first,
                y=second,
                customdata=np.arange(len(first)),
                mode="markers",
                marker={"size": 5, "color": HIGHLIGHT, "opacity": 0.5},
                hovertemplate=(
                    f"channel %{{customdata}}<br>{labels[0]}: %{{x:.3g}}<br>{labels[1]}: %{{y:.3g}}<extra></extra>"
                ),
            ),
        ]
    )
    axis = {"range": [-limit, limit], "zeroline": True, "zerolinecolor": "#888", "fixedrange": True,
            "exponentformat": "e"}
    figure.update_layout(
        height=height,
        margin={"l": 0, "r": 10, "t": 10, "b": 40},
        xaxis={**axis, "title": f"weight for {labels[0]}"},
        yaxis={**axis, "title": f"weight for {labels[1]}", "scaleanchor": "x"},
        showlegend=False,
        paper_bgcolor="rgba(0,0,0,0)",
    )
    return figure


def _frame(figure: go.Figure, size: tuple[int, int], height: int) -> go.Figure:
    """Hide the axes, keep pixels square, show the whole image, leave room for the toolbar and the colour bar."""
    width, image_height = size
    figure.update_layout(
        height=height,
        margin={"l": 0, "r": 0, "t": TOOLBAR_ROOM, "b": COLORBAR_ROOM},
        xaxis={"visible": False, "range": [0, width], "constrain": "domain"},
        yaxis={"visible": False, "range": [image_height, 0],
               "scaleanchor": "x", "constrain": "domain", "constraintoward": "top"},
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        dragmode="zoom",
    )
    return figure


def outline(figure: go.Figure, mask: np.ndarray, size: tuple[int, int], axis: str = "") -> go.Figure:
    """Outline the regions of the boolean ``mask`` (any resolution) on ``figure``, whose axes are in pixels of
    an image of ``size`` (width, height): a white dashed line over a dark one, visible on every colour map.
    ``axis`` names the panel of a figure with several (``"4"``: axes x4 and y4)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    scale = np.array([size[0] / mask.shape[1], size[1] / mask.shape[0]])
    for contour in contours:
        points = (contour[:, 0, :] + 0.5) * scale
        path = "M " + " L ".join(f"{x:.1f},{y:.1f}" for x, y in points) + " Z"
        axes = {"xref": f"x{axis}", "yref": f"y{axis}"}
        figure.add_shape(type="path", path=path, line={"color": "rgba(0,0,0,0.6)", "width": 4}, **axes)
        figure.add_shape(type="path", path=path, line={"color": "white", "width": 2, "dash": "dash"}, **axes)
    return figure
