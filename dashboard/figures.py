"""Plotly figures: the three image panels and the predictions chart (pure functions, no Streamlit)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from gradcam_core import Prediction
from gradcam_core.render import colorize

from .pictures import jpeg_data_uri, shrink

HOVER_SIDE = 256
"""Longest side of the heatmap grid sent for hovering (keeps the page light for big images)."""
COLORBAR_ROOM = 40
"""Pixels under every panel: the heatmap's colour bar lives there, the other panels keep equal heights."""
HIGHLIGHT = "#2b6cb0"
MUTED = "#c5d3e3"


def plot_config() -> dict[str, object]:
    """Plotly toolbar: zoom, pan and reset only (downloads have their own buttons)."""
    return {"displaylogo": False, "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d", "toImage"]}


def panel_height(size: tuple[int, int], width: int = 290) -> int:
    """Figure height for an image of ``size`` (width, height) shown about ``width`` pixels wide."""
    image_width, image_height = size
    return int(np.clip(width * image_height / image_width, 150, 460)) + COLORBAR_ROOM


def colorscale(colormap: str, stops: int = 33) -> list[list[float | str]]:
    """Plotly colour scale with exactly the colours ``gradcam_core.render`` uses for ``colormap``."""
    ramp = colorize(np.linspace(0.0, 1.0, stops, dtype=np.float32)[None, :], colormap)[0]
    return [[i / (stops - 1), f"rgb({r},{g},{b})"] for i, (r, g, b) in enumerate(ramp.tolist())]


def image_figure(rgb: np.ndarray, size: tuple[int, int], height: int) -> go.Figure:
    """A zoomable picture; ``rgb`` may be a shrunk copy, axes are in pixels of the original ``size``."""
    width, full_height = size
    shown_height, shown_width = rgb.shape[:2]
    dx, dy = width / shown_width, full_height / shown_height
    trace = go.Image(source=jpeg_data_uri(rgb), x0=dx / 2, y0=dy / 2, dx=dx, dy=dy, hoverinfo="skip")
    return _frame(go.Figure(trace), size, height)


def heatmap_figure(heatmap: np.ndarray, colormap: str, height: int, label: str) -> go.Figure:
    """The heatmap as a hoverable grid (at most ``HOVER_SIDE`` cells long) with a colour bar.

    Args:
        heatmap: (H, W) values in [0, 1] on the original image.
        colormap: Colour map name (as used for the overlay).
        height: Figure height in pixels.
        label: What the values measure, for the hover text and the colour bar.
    """
    full_height, width = heatmap.shape
    grid = shrink(heatmap.astype(np.float32), HOVER_SIDE)
    rows, cols = grid.shape
    xs = (np.arange(cols) + 0.5) * width / cols
    ys = (np.arange(rows) + 0.5) * full_height / rows
    trace = go.Heatmap(
        z=np.round(grid, 3),
        x=xs,
        y=ys,
        zmin=0.0,
        zmax=1.0,
        colorscale=colorscale(colormap),
        hovertemplate=f"{label}: %{{z:.2f}}<br>x %{{x:.0f}}, y %{{y:.0f}} px<extra></extra>",
        colorbar={
            "orientation": "h",
            "thickness": 9,
            "len": 0.9,
            "x": 0.5,
            "xanchor": "center",
            "y": 0,
            "yanchor": "top",
            "ypad": 8,
            "tickvals": [0, 0.25, 0.5, 0.75, 1],
            "tickfont": {"size": 11},
            "outlinewidth": 0,
        },
    )
    return _frame(go.Figure(trace), (width, full_height), height)


def predictions_figure(predictions: Sequence[Prediction], target: Prediction) -> go.Figure:
    """Horizontal bars of the top predictions, best on top, the explained class highlighted."""
    shown = list(predictions)
    if target.index not in {p.index for p in shown}:
        shown.append(target)
    labels = [p.label for p in shown]
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


def _frame(figure: go.Figure, size: tuple[int, int], height: int) -> go.Figure:
    """Hide the axes, keep pixels square, show the whole image, leave room for the colour bar."""
    width, image_height = size
    figure.update_layout(
        height=height,
        margin={"l": 0, "r": 0, "t": 0, "b": COLORBAR_ROOM},
        xaxis={"visible": False, "range": [0, width], "constrain": "domain"},
        yaxis={"visible": False, "range": [image_height, 0],
               "scaleanchor": "x", "constrain": "domain", "constraintoward": "top"},
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        dragmode="zoom",
    )
    return figure
