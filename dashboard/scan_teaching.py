"""The 3-D scan tab's How it works view: the channel weights α_k, then the weighted sum before and after the ReLU
at the layer's own grid, every slice of it, with the numbers of the scan on screen.

It reads the explanation's trace (``explain_volume(..., keep_trace=True)``, kept by ``volume_cache`` apart from
the plain explanation): one more forward pass and partial backward, the same computation as the map on screen.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from gradcam_core.cam import CamTrace
from gradcam_core.methods import get_method
from gradcam_core.render import DEFAULT_COLORMAP
from gradcam_core.teaching import top_channels
from gradcam_core.volume_cam import VolumeExplanation
from gradcam_core.volume_view import plane_of

from . import figures, volume_cache
from .scan_page import ScanPage
from .text import method_title, plain

COLUMNS = 4
"""Slices per row (in eight columns, Chromium cut the right of each slice off)."""
TOP = 5
"""Channels named under the weights."""
GRADCAM = r"\alpha_k^c = \frac{1}{d\,h\,w} \sum_s \sum_i \sum_j \frac{\partial y^c}{\partial A^k_{sij}}"


def render(page: ScanPage) -> None:
    """The weights, then the map at the layer's grid, each with a sentence on what it is."""
    result = page.result
    traced = volume_cache.explained(
        page.files, page.choice, page.model, page.layer, page.target, result.method, keep_trace=True,
        place="scan-teaching", on_cancel=lambda: st.session_state.__setitem__("scan-view", "Planes"),
    )
    st.caption(
        f"How the map for **{plain(result.target.label)}** is made, with the numbers of this scan: the same "
        "computation as the map on screen, shown at the layer's own grid before it is enlarged to the scan."
    )
    weights_section(traced, channel_weights(traced.trace))
    slices_section(traced, page)


def channel_weights(trace: CamTrace) -> np.ndarray:
    """``(K,)`` weight of each channel: α_k, or the mean over the cells of an element-wise method's weights."""
    return trace.weights[0].flatten(1).mean(1).numpy().astype(np.float32)


def weights_section(traced: VolumeExplanation, weights: np.ndarray) -> None:
    """Every channel's weight as sorted bars, the formula, the class score and the strongest channels."""
    label = plain(traced.target.label)
    d, h, w = traced.raw_map.shape
    elementwise = get_method(traced.method).elementwise
    name = "mean w" if elementwise else "α"
    st.subheader(f"1 · The weights: how much each of the {len(weights)} channels matters for {label}",
                 anchor=False, divider="gray")
    if traced.method == "gradcam":
        sentence = (f"$\\alpha_k^c$ is the mean over the layer's {d} × {h} × {w} = {d * h * w} cells of "
                    f"$\\partial y^c / \\partial A^k$: how much the score $y^c$ of **{label}** would change if "
                    "feature map $k$ grew a little everywhere.")
    else:
        sentence = (f"{method_title(traced.method)} turns the gradients (or scores) of the layer's {d} × {h} × {w} "
                    "cells into each channel's weight" + ("; the bars show each channel's **mean** weight."
                                                          if elementwise else "."))
    st.markdown(sentence)
    chart, numbers = st.columns([3, 2], gap="large")
    with chart:
        st.plotly_chart(figures.weights_figure(weights, [], 300, name), config={"displayModeBar": False},
                        key="scan-teaching-weights")
    with numbers:
        if traced.method == "gradcam":
            st.latex(GRADCAM)
        st.metric("Score $y^c$ before softmax", f"{traced.score:.3f}",
                  help=f"Softmax (or sigmoid) turns it into the probability {traced.target.probability:.1%}.")
        strongest = ", ".join(f"#{k} ({weights[k]:.3g})" for k in top_channels(weights, TOP))
        st.caption(f"{int((weights > 0).sum())} channels have a positive weight (red), {int((weights < 0).sum())} a "
                   f"negative one (blue). Largest: {strongest}.")


def slices_section(traced: VolumeExplanation, page: ScanPage) -> None:
    """The weighted sum (diverging colours) and the ReLU'd map, every slice of the layer's d axis."""
    label = plain(traced.target.label)
    trace = traced.trace
    weighted, cam = trace.weighted_sum[0].numpy(), trace.cam[0].numpy()
    plane = plane_of(page.volume, 0)
    d, h, w = cam.shape
    st.subheader(r"2 · The weighted sum $\sum_k \alpha_k^c A^k$, then the ReLU", anchor=False, divider="gray")
    st.markdown(
        f"Each feature map is multiplied by its weight and the {len(channel_weights(trace))} results are added up, "
        f"cell by cell: red cells raise the score of **{label}**, blue cells lower it. The ReLU, max(0, x), keeps "
        f"the red part: that is the map, {d} × {h} × {w} cells, which the Planes view enlarges to the whole scan. "
        f"Here are its {d} {plane.title.lower()} slices, laid out as the Planes view shows that plane."
    )
    signed, signed_range = figures.signed_scale(float(weighted.min()), float(weighted.max()))
    peak = float(cam.max(initial=0.0)) or 1.0
    colours = figures.colorscale(st.session_state.get("scan-colormap", DEFAULT_COLORMAP))
    rows = (
        ("Before the ReLU", weighted, "sum", signed, signed_range),
        ("After the ReLU: the map", cam, "map", colours, (0.0, peak)),
    )
    for title, values, what, scale, value_range in rows:
        st.markdown(f"**{title}**")
        for start in range(0, d, COLUMNS):
            for column, index in zip(st.columns(COLUMNS, gap="small"), range(start, min(d, start + COLUMNS))):
                grid = np.ascontiguousarray(plane.orient(values[index]))
                figure = figures.grid_figure(grid, slice_height(grid.shape), what, scale, value_range)
                figure.update_traces(showscale=False).update_layout(margin={"t": 4, "b": 4})
                column.caption(f"Slice {index + 1} of {d}")
                column.plotly_chart(figure, config={"displayModeBar": False}, key=f"scan-teaching-{what}-{index}")
    negative = int((weighted < 0).sum())
    st.caption(
        f"{negative} of the {weighted.size} cells were negative and became 0. One colour scale per row: white is 0, "
        f"the deepest blue {signed_range[0]:.3g}, the deepest red {signed_range[1]:.3g}; the map runs from 0 to its "
        f"peak {traced.strength:.3g}."
    )


def slice_height(shape: tuple[int, int]) -> int:
    """Pixels for one slice of ``shape`` (rows, columns) in a column a quarter of the page wide."""
    rows, cols = shape
    return int(np.clip(200 * rows / cols, 80, 320)) + 8
