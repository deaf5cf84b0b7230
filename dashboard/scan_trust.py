"""The 3-D scan tab's Trust check: the class probability as the map's hottest voxels are deleted first, against
a random order of the map's cells (``gradcam_core.volume_trust``).

The curve is computed once per scan, model, layer, class and method, on the shared worker threads with a
progress bar and Cancel (14 model inputs, scored in batches), like the images' faithfulness check.
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from gradcam_core.volume_trust import DeletionCurve, volume_deletion

from . import cache, figures
from .background import BackgroundWork, Progress
from .guard import reported_errors
from .progress import computed_in_background
from .scan_page import ScanPage
from .shared_results import SharedResults
from .text import method_title, plain

CANCELLED_KEY = "scan-trust-cancelled"
"""Session-state key: the deletion check the user cancelled (its store key)."""
TIE = 0.01
"""Areas closer than this (a percentage point of probability over the whole curve) read as a tie, not a verdict."""


@st.cache_resource(show_spinner=False)
def shared_curves() -> SharedResults[DeletionCurve]:
    """Deletion curves of every session, keyed by scan content, model key and settings."""
    return SharedResults(max_entries=32, ttl=3600)


@st.cache_resource(show_spinner=False)
def curves_work() -> BackgroundWork[DeletionCurve]:
    """Deletion checks in flight, finished ones kept in ``shared_curves``."""
    return BackgroundWork(shared_curves(), cache.worker_pool())


def deletion(page: ScanPage) -> DeletionCurve | None:
    """The deletion curve of the map on screen, computed once; ``None`` while the user has cancelled it."""
    result = page.result
    key = ("volume-deletion", page.files.digest, page.choice.key, result.layer, result.target.index, result.method)
    found = shared_curves().get(key)
    if found is not None:
        return found
    if st.session_state.get(CANCELLED_KEY) == key:
        st.info("The deletion check was cancelled.", icon=":material/info:")
        st.button("Run the deletion check", key="scan-trust-run", on_click=st.session_state.pop, args=(CANCELLED_KEY,))
        return None
    volume, model = page.volume, page.model

    def compute(progress: Progress) -> DeletionCurve:
        return volume_deletion(volume, model, result.raw_map, result.target.index, progress=progress)

    return computed_in_background(
        curves_work(), key, compute, lambda done, total: f"Deleting voxels: model run {done} of {total}…",
        "scan-trust", st.session_state.__setitem__, (CANCELLED_KEY, key),
    )


def render(page: ScanPage) -> None:
    """The verdict, the curve beside its areas, and what was deleted."""
    result = page.result
    label = plain(result.target.label)
    st.caption(
        f"Does the map point at what the model uses? Delete the hottest voxels first and watch the probability of "
        f"**{label}** fall. Passing does not prove the model right; failing is a reason for doubt."
    )
    curve = None
    with reported_errors("measuring faithfulness"):
        curve = deletion(page)
    if curve is None:
        return
    areas = f"(AUC {curve.deletion_auc:.3f} against {curve.random_deletion_auc:.3f})"
    if abs(curve.deletion_auc - curve.random_deletion_auc) < TIE:
        st.info(f"Deleting the hottest voxels first lowers the probability of {label} about as fast as a random "
                f"order {areas}: the map's order makes little difference here.", icon=":material/info:")
    elif curve.beats_random:
        st.success(f"Deleting the hottest voxels first lowers the probability of {label} faster than a random "
                   f"order {areas}.", icon=":material/check_circle:")
    else:
        st.warning(f"Treat this map with caution: deleting its hottest voxels first lowers the probability of "
                   f"{label} no faster than a random order {areas}.", icon=":material/flag:")
    chart, numbers = st.columns([3, 1], gap="large")
    with chart:
        st.plotly_chart(deletion_figure(curve), config={"displayModeBar": False}, key="scan-trust-curve")
    with numbers:
        st.metric("Deletion AUC (lower is better)", f"{curve.deletion_auc:.3f}",
                  f"{curve.deletion_auc - curve.random_deletion_auc:+.3f} vs random", delta_color="inverse")
        st.metric("Random order AUC", f"{curve.random_deletion_auc:.3f}")
    grid = " × ".join(str(n) for n in result.input_size)
    cells = " × ".join(str(n) for n in result.raw_map.shape)
    st.caption(
        f"Voxels of the model's input (the scan resized to {grid} = {curve.voxels:,} voxels) are deleted hottest "
        f"first by the {method_title(result.method)} map, at 1, 2, 5, 10, 20, 50 and 100 %; a deleted voxel takes "
        f"the input's mean value. The dashed line deletes in a seeded random order of the map's own {cells} "
        "cells. AUC: the area under each curve over the deleted share (0 to 1)."
    )


def deletion_figure(curve: DeletionCurve, height: int = 320) -> go.Figure:
    """The probability against the share deleted, the map's order solid, the random order dashed, AUC in the
    legend; the x axis stretches the first steps (square root), where a compact finding is deleted."""
    percent = 100 * curve.fractions
    figure = go.Figure([
        go.Scatter(
            x=percent ** 0.5, y=100 * values, customdata=percent, name=f"{name} (AUC {auc:.3f})", mode="lines+markers",
            line={"color": figures.NEGATIVE, "dash": dash, "width": 2.5 if dash == "solid" else 1.5},
            marker={"size": 6 if dash == "solid" else 4},
            hovertemplate=f"{name}<br>%{{customdata:.0f}}% of the voxels deleted: %{{y:.1f}}%<extra></extra>",
        )
        for name, values, auc, dash in (
            ("Hottest first", curve.deletion, curve.deletion_auc, "solid"),
            ("Random order", curve.random_deletion, curve.random_deletion_auc, "dash"),
        )
    ])
    ticks = [0, 1, 2, 5, 10, 20, 50, 100]
    figure.update_layout(
        height=height,
        margin={"l": 0, "r": 10, "t": 10, "b": 40},
        xaxis={"title": "Voxels deleted, hottest first (%, square-root scale)", "fixedrange": True,
               "tickvals": [t ** 0.5 for t in ticks], "ticktext": [str(t) for t in ticks], "range": [0, 10.2]},
        yaxis={"title": "Class probability (%)", "rangemode": "tozero", "fixedrange": True},
        legend={"orientation": "h", "y": -0.25},
        paper_bgcolor="rgba(0,0,0,0)",
    )
    return figure
