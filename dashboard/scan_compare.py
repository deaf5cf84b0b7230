"""The 3-D scan tab's Compare view: two or three classes (or methods) side by side on one plane of the scan.

Each panel is one explanation from ``volume_cache`` (computed once, as the planes' own), with one setting
changed. The colours run from 0 to the largest peak of the panels, in the maps' raw units, so weaker evidence
looks weaker, as on the Compare tab for images; hovering reads a panel's value.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import plotly.graph_objects as go
import streamlit as st

import gradcam_core as core
from gradcam_core.volume_cam import VolumeExplanation
from gradcam_core.volume_view import VIEW_SIDE, Plane, map_slice, scan_slice

from . import figures, volume_cache
from .scan_page import Display, ScanPage
from .text import method_title, plain, plotly_text

MAX_PANELS = 3
KINDS = ("Classes", "Methods")
METHODS_KEY = "scan-compare-methods"
DEFAULT_METHODS = ("gradcam", "gradcam++", "layercam")
PANEL_HEIGHT = 360
"""Pixels of one panel's figure (picture, toolbar and colour bar)."""


def render(page: ScanPage, display: Display) -> None:
    """What to compare and on which plane, then the panels on one colour scale."""
    st.caption(
        "The same scan explained with one thing changed: the evidence for one class next to another's, or what "
        "different methods make of it, on one plane (through the voxel the Planes view shows) and one colour scale."
    )
    kind_column, plane_column = st.columns([2, 3], vertical_alignment="bottom")
    with kind_column:
        kind = st.segmented_control("Compare", KINDS, default=KINDS[0], key="scan-compare-kind") or KINDS[0]
    titles = [plane.title for plane in display.planes]
    with plane_column:
        title = st.segmented_control("Plane", titles, default=titles[0], key="scan-compare-plane") or titles[0]
    plane = display.planes[titles.index(title)]
    variants = pick(kind, page)
    if len(variants) < 2:
        st.info("Pick two or three to compare.", icon=":material/info:")
        if not variants:
            return
    results = [
        (name, volume_cache.explained(page.files, page.choice, page.model, layer, target, method,
                                      on_cancel=partial(drop_method, method) if kind == "Methods" else None,
                                      place=f"scan-compare-{number}"))
        for number, (name, layer, target, method) in enumerate(variants)
    ]
    panels(results, page, display, plane, kind)


def pick(kind: str, page: ScanPage) -> list[tuple[str, str | None, int | None, str]]:
    """The panels: a title, and the layer, class and method of each (the page's, with one of them changed)."""
    result, model = page.result, page.model
    if kind == "Classes":
        ranked = [p.index for p in result.predictions]
        chosen = st.multiselect(
            "Classes", range(len(model.categories)), default=ranked[:MAX_PANELS], max_selections=MAX_PANELS,
            format_func=model.categories.__getitem__, key=f"scan-compare-classes-{page.choice.key[:16]}",
            placeholder="Type to search the classes",
        )
        top = ranked[0]
        return [(model.categories[i], page.layer, None if i == top else i, result.method) for i in chosen]
    methods = core.METHODS
    chosen = st.multiselect(
        "Methods", list(methods), default=[name for name in DEFAULT_METHODS if name in methods],
        max_selections=MAX_PANELS, key=METHODS_KEY,
        format_func=lambda name: methods[name].title,
        help="Each at the layer chosen above, or at its own default layer; a slow one (Score-CAM) shows a "
        "progress bar and Cancel.",
    )
    return [(methods[name].title, page.layer, page.target, name) for name in chosen]


def drop_method(method: str) -> None:
    """What Cancel does while a compared slow method runs: take it out of the compared methods."""
    st.session_state[METHODS_KEY] = [name for name in st.session_state[METHODS_KEY] if name != method]


def panels(results: list[tuple[str, VolumeExplanation]], page: ScanPage, display: Display, plane: Plane,
           kind: str) -> None:
    """The panels side by side on the colour scale of the strongest, each with its class, peak and share."""
    scale = max(found.strength for _, found in results) or None  # every map empty: nothing to calibrate
    index = display.position[plane.axis]
    for number, (column, (name, found)) in enumerate(zip(st.columns(len(results), gap="medium"), results)):
        with column:
            st.markdown(f"**{plain(name)}**")
            st.plotly_chart(plane_figure(page, display, plane, found, scale), config=figures.plot_config(),
                            key=f"scan-compare-panel-{number}")
            share = f" · {found.strength / scale:.0%} of the strongest" if scale else ""
            st.caption(
                f"{plain(found.target.label)} {found.target.probability:.1%} · {method_title(found.method)} · layer "
                f"{plain(found.layer)} · peak **{found.strength:.3g}**{share}"
            )
    count = page.volume.shape[plane.axis]
    note = (" Methods weight the feature maps differently, so their raw units are not strictly comparable."
            if kind == "Methods" else "")
    st.caption(
        f"{plane.title} plane {index + 1} of {count} (move it in the Planes view). One colour scale, 0 to the "
        f"strongest peak ({scale or 0:.3g}, raw units).{note}"
    )


def plane_figure(page: ScanPage, display: Display, plane: Plane, found: VolumeExplanation,
                 scale: float | None) -> go.Figure:
    """One plane of the scan with ``found``'s map over it in raw units (hover reads them), laid out as the Planes
    view lays it out (radiological, square millimetres), the patient directions at the edges."""
    height, width = plane.size(VIEW_SIDE)
    index = display.position[plane.axis]
    heat = map_slice(found.raw_map, page.volume.shape, plane.axis, index, plane.array_size((height, width)))
    grey = plane.orient(scan_slice(page.volume, plane.axis, index, display.window))
    figure = figures.heatmap_figure(
        np.ascontiguousarray(plane.orient(heat)) * found.strength, (width, height), display.colormap, PANEL_HEIGHT,
        "evidence", scale, background=np.repeat(grey[..., None], 3, axis=2), opacity=max(display.alpha, 0.05),
    )
    top, bottom, left, right = plane.edges
    for text, x, y, xanchor, yanchor in ((top, width / 2, 0, "center", "top"), (bottom, width / 2, height, "center",
                                         "bottom"), (left, 0, height / 2, "left", "middle"),
                                         (right, width, height / 2, "right", "middle")):
        figure.add_annotation(x=x, y=y, text=plotly_text(text), showarrow=False, xanchor=xanchor, yanchor=yanchor,
                              font={"color": "#ebeb78", "size": 12}, bgcolor="rgba(0,0,0,0.45)")
    return figure
