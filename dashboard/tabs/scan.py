"""The 3-D scan tab: a CT or MRI volume explained by the user's 3-D classifier, in three linked planes.

The scan and the model are given here (the sidebar is for the 2-D tabs; this tab has its own opacity and colour
map). The explanation runs once per scan, model and setting (``volume_cache``); the slice
sliders, the window, "Go to the peak" and the display settings only redraw pictures from its small map
(``gradcam_core.volume_view``), never the model. Nothing identifying is shown: no file name, no patient tag.
Besides the planes, the same explanation has three views of its own modules: Compare (``scan_compare``), Trust
check (``scan_trust``) and How it works (``scan_teaching``).
"""

from __future__ import annotations

import io

import numpy as np
import streamlit as st
from PIL import Image

import gradcam_core as core
from gradcam_core import Window
from gradcam_core.volume_cam import VolumeExplanation
from gradcam_core.volume_export import EXPORT_NOTICE, heatmap_dicom, heatmap_nifti
from gradcam_core.volume_models import LoadedVolumeModel
from gradcam_core.volume_report import build_volume_report
from gradcam_core.volume_view import (
    map_peak,
    map_volume,
    plane_of,
    plane_picture,
    projection_picture,
    with_crosshair,
)
from gradcam_core.volumes import Volume

from .. import cache, controls, figures, scan_compare, scan_teaching, scan_trust, volume_cache
from ..guard import reported_errors
from ..kept_uploads import KeptFiles, kept_uploads
from ..medical import CT_PRESETS, CUSTOM
from ..page import Page
from ..scan_page import Display, ScanPage
from ..text import map_subject, method_title, plain
from ..volume_model import VolumeModelChoice, volume_model_form

SCAN_MB = 500
"""Largest scan file (the server's cap on any upload); the engine's limits on the whole scan apply after."""
SCAN_TYPES = ["nii", "nii.gz", "npy", "zip", *(suffix.removeprefix(".") for suffix in core.DICOM_SUFFIXES)]
METHOD_KEY = "scan-method"
DEFAULT_LAYER = ""
"""Option of the layer menu: the method's default layer."""
PLANE_ORDER = ("Axial", "Coronal", "Sagittal")
FROM_THE_SCAN = "From the scan"
VIEWS = ("Planes", "Compare", "Trust check", "How it works")
"""The views of one explanation, the planes first."""


def render(page: Page | None) -> None:
    """The inputs (collapsed once both files are given), then the viewer; the sidebar's image plays no part."""
    del page
    st.caption(
        "Explain a CT or MRI volume with your own 3-D classifier: upload the scan and the model, then move "
        "through the three planes. Moving a slider or the window never runs the model again."
    )
    ready = all(f"{key}-kept" in st.session_state for key in ("scan-upload", "scan-weights"))
    scan = choice = None
    with st.expander("Scan and 3-D model", expanded=not ready, icon=":material/view_in_ar:"):
        left, right = st.columns(2, gap="large")
        with left, reported_errors("reading the scan"):
            scan = scan_input()
        with right, reported_errors("reading your 3-D model's files"):
            choice = volume_model_form()
    if scan is None or choice is None:
        return
    model = None
    with reported_errors("loading your 3-D model"):
        model = volume_cache.load_model(choice.key, choice)
    if model is not None:
        with reported_errors("explaining the scan"):
            viewer(*scan, choice, model)


def scan_input() -> tuple[KeptFiles, Volume] | None:
    """The uploaded scan, read (cached) and described in non-identifying facts; ``None`` until one is given."""
    files = kept_uploads(
        "Scan (NIfTI, DICOM files or a zip of a series, enhanced DICOM, .npy)", "scan-upload", SCAN_TYPES, SCAN_MB,
        "the scan", multiple=True,
        help="One .nii or .nii.gz file, the DICOM files of one series (or one zip of them; files without a "
        ".dcm suffix go in a zip), one enhanced multi-frame DICOM, or a .npy array (D, H, W). Scans stay on "
        "this server and are not stored.",
    )
    if files is None:
        st.caption("Upload a scan to explain.")
        return None
    volume = volume_cache.scan(files)
    facts = volume.summary()
    st.caption(" · ".join(plain(value) for value in facts.values()) + ". Patient details are never shown.")
    return files, volume


def viewer(files: KeptFiles, volume: Volume, choice: VolumeModelChoice, model: LoadedVolumeModel) -> None:
    """Method, layer and class; the summary; the view (planes, compare, trust check, how it works); predictions
    and downloads."""
    method_column, layer_column, class_column = st.columns(3)
    with method_column:
        method = method_choice()
    with layer_column:
        layer = layer_choice(model, method, choice.key)
    top = volume_cache.explained(files, choice, model, None, None, cache.default_method())
    with class_column:
        target = class_choice(top, model, f"{files.digest[:12]}-{choice.key[:12]}")
    result = volume_cache.explained(files, choice, model, layer, target, method, on_cancel=use_default_method)
    summary(result, model)
    view = st.segmented_control(
        "View", VIEWS, default=VIEWS[0], key="scan-view", persist_state="page",
        help="Planes: the map on the scan. Compare: classes or methods side by side. Trust check: does deleting "
        "the hottest voxels drop the probability faster than chance? How it works: the weights and the map at "
        "the layer's own grid.",
    ) or VIEWS[0]
    page = ScanPage(files, choice, volume, model, result, layer, target)
    if view == "Trust check":
        scan_trust.render(page)
    elif view == "How it works":
        scan_teaching.render(page)
    else:
        planes(page, compare=view == "Compare")
    st.divider()
    left, right = st.columns([3, 2], gap="large")
    with left:
        st.subheader("Top predictions", anchor=False)
        st.plotly_chart(figures.predictions_figure(result.predictions, result.target),
                        config={"displayModeBar": False}, key="scan-predictions")
    with right:
        download_buttons(volume, result, model)


def method_choice() -> str:
    """The CAM method (the same registry as the sidebar's)."""
    methods = core.METHODS
    names = list(methods)
    return st.selectbox(
        "Method", names, index=names.index(cache.default_method()), key=METHOD_KEY, persist_state="page",
        format_func=lambda key: f"{methods[key].title} (slow)" if methods[key].forward_passes else methods[key].title,
        help="How the network's internal signals become a map; the slow ones run the model once per feature map "
        "(a progress bar and Cancel while they run).",
    )


def use_default_method() -> None:
    """What Cancel does while a slow method runs: back to the default method."""
    st.session_state[METHOD_KEY] = cache.default_method()


def layer_choice(model: LoadedVolumeModel, method: str, key: str) -> str | None:
    """The target layer: the method's default (``None``) or one of the model's 3-D feature maps."""
    default = model.default_layer_for(method)
    chosen = st.selectbox(
        "Layer", [DEFAULT_LAYER, *model.layers], key=f"scan-layer-{key[:16]}", persist_state="page",
        format_func=lambda name: f"{default} (default)" if name == DEFAULT_LAYER else name,
        help="Where in the network to look; the default, a late layer, gives the most class-specific map.",
    )
    return chosen or None


def class_choice(top: VolumeExplanation, model: LoadedVolumeModel, key: str) -> int | None:
    """The class to explain, the model's best guesses first (``None``: its top class)."""
    probability = {p.index: p.probability for p in top.predictions}
    order = [p.index for p in top.predictions] + [i for i in range(len(model.categories)) if i not in probability]
    chosen = st.selectbox(
        "Class", order, key=f"scan-class-{key}", persist_state="page",
        format_func=lambda i: f"{model.categories[i]} — {probability[i]:.1%}" if i in probability
        else model.categories[i],
        help="The map shows where the evidence for this class is.",
    )
    return None if chosen == top.predictions[0].index else chosen


def summary(result: VolumeExplanation, model: LoadedVolumeModel) -> None:
    """One sentence: the model's answer and what the map shows, at which layer and resolution."""
    top, target = result.predictions[0], result.target
    cells = " × ".join(str(n) for n in result.raw_map.shape)
    grid = " × ".join(str(n) for n in result.input_size)
    st.markdown(
        f"{plain(model.title)} answers **{plain(top.label)}** ({top.probability:.1%}). The map shows "
        f"{map_subject(result.method, target.label)} ({target.probability:.1%}) by {method_title(result.method)} "
        f"at layer {plain(result.layer)}: {cells} cells for the {grid} input the whole scan was resized to, so "
        f"it is coarse. Peak **{result.strength:.3g}** (raw units)."
    )


def planes(page: ScanPage, compare: bool = False) -> None:
    """Window, opacity, colour map and "Go to the peak", then the three planes with their sliders and the map's
    projections; with ``compare``, the Compare view on the current plane instead."""
    files, choice, volume, result = page.files, page.choice, page.volume, page.result
    key = (files.digest, choice.key, result.layer, result.target.index, result.method)
    shown = {axis: plane_of(volume, axis) for axis in range(3)}  # one plane per patient axis, whatever the scan's
    axes = sorted(shown, key=lambda axis: PLANE_ORDER.index(shown[axis].title))
    keys = [f"scan-slice-{axis}-{files.digest[:12]}" for axis in range(3)]
    peak = map_peak(result.raw_map, volume.shape)
    window_column, opacity_column, colour_column, peak_column = st.columns([3, 2, 2, 2], vertical_alignment="bottom")
    with window_column:
        window = window_control(files.digest, volume)
    with opacity_column:
        alpha = st.slider("Heatmap opacity", 0.0, 1.0, 0.5, 0.05, key="scan-alpha", persist_state="page",
                          help="0 shows only the scan.")
    with colour_column:
        colormap = controls.colormap_choice("scan-colormap", persist_state="page")
    with peak_column:
        st.button(
            "Go to the peak", key="scan-go-to-peak", on_click=go_to, args=(keys, peak), icon=":material/my_location:",
            width="stretch", help="Move the three planes to the voxel under the map's maximum.",
        )
    if compare:
        position = tuple(int(st.session_state.get(key, index + 1)) - 1 for key, index in zip(keys, peak))
        scan_compare.render(page, Display(window, alpha, colormap, position, tuple(shown[axis] for axis in axes)))
        return
    slots, position = [], list(peak)
    for column, axis in zip(st.columns(3, gap="small"), axes):
        plane, count = shown[axis], volume.shape[axis]
        with column:
            st.markdown(f"**{plane.title}**")
            slots.append(st.empty())
            position[axis] = st.slider(
                f"{plane.title} plane", 1, count, peak[axis] + 1, key=keys[axis], persist_state="page",
                format=f"%d of {count}", label_visibility="collapsed",
            ) - 1
    for slot, axis in zip(slots, axes):
        picture = plane_picture(volume, result.raw_map, axis, tuple(position), window, alpha, colormap)
        slot.image(jpeg(picture), width="stretch")
    st.caption(
        "Each plane as a radiologist reads it (R/L: the patient's right and left, A/P: front and back, S/I: head "
        "and feet), with square millimetres; the lines mark the other two planes. The map's peak: "
        + ", ".join(f"{shown[axis].title.lower()} {peak[axis] + 1}" for axis in axes)
        + "."
    )
    st.markdown("**Where the heat is** — the strongest value along each line of sight (maximum-intensity "
                "projections of the map), with the current planes marked:")
    for column, axis in zip(st.columns(3, gap="small"), axes):
        projection = projection_of(key, result, volume, axis, colormap)
        column.image(jpeg(with_crosshair(projection, shown[axis], tuple(position))), width="stretch")


@st.cache_data(show_spinner=False, max_entries=24, ttl=3600)
def projection_of(key: tuple, _result: VolumeExplanation, _volume: Volume, axis: int, colormap: str) -> np.ndarray:
    """The map's projection along ``axis`` in ``colormap``, once per explanation ``key`` (scan, model, settings)."""
    return projection_picture(_volume, _result.raw_map, axis, colormap)


def go_to(keys: list[str], position: tuple[int, int, int]) -> None:
    """The "Go to the peak" callback: the three sliders to ``position`` (slider values count from 1)."""
    for key, index in zip(keys, position):
        st.session_state[key] = index + 1


def window_control(digest: str, volume: Volume) -> Window:
    """Level and width of the grey levels: the scan's own, the usual CT presets, or typed in."""
    opening = volume_cache.window_of(digest, volume)
    presets = {FROM_THE_SCAN: opening}
    if volume.modality in ("CT", ""):
        presets |= CT_PRESETS
    name = st.selectbox(
        "Window", [*presets, CUSTOM], key="scan-window", persist_state="page",
        help="Which voxel values are spread from black to white (display only: the model's input is set in the "
        "form above).",
    )
    if name != CUSTOM:
        return presets[name]
    level, width = st.columns(2)
    return Window(
        level.number_input("Level", value=opening.center, key="scan-level", persist_state="page"),
        width.number_input("Width", min_value=1e-3, value=opening.width, key="scan-width", persist_state="page"),
    )


def download_buttons(volume: Volume, result: VolumeExplanation, model: LoadedVolumeModel) -> None:
    """The HTML report, the heatmap on the scan's grid as NIfTI, and for a DICOM scan as a Parametric Map (each
    built on click)."""
    st.subheader("Download", anchor=False)
    display = {name: st.session_state[key] for name, key in (("alpha", "scan-alpha"), ("colormap", "scan-colormap"))
               if key in st.session_state}  # the opacity and colour map on screen, read now: not at the click
    st.download_button(
        "Report (HTML)", lambda: build_volume_report(volume, result, model, **display),
        file_name="scan-report.html", mime="text/html", icon=":material/summarize:", type="primary",
        on_click="ignore", key="scan-download-report", width="stretch",
        help="One self-contained page: the three planes through the map's peak (at the scan's own window), the "
        "projections, the hottest slices, predictions, settings, the weights' SHA-256 and library versions; no "
        "file name and no patient details.",
    )
    st.download_button(
        "Heatmap (NIfTI)", lambda: heatmap_nifti(volume, map_volume(result.raw_map, volume.shape)),
        file_name="heatmap.nii.gz", mime="application/gzip", icon=":material/download:", on_click="ignore",
        key="scan-download-nifti", width="stretch",
        help="The map on the scan's voxel grid, 0 to 1 of its peak, with the scan's geometry: it opens over the "
        "scan in 3D Slicer or ITK-SNAP.",
    )
    if volume.dicom is None:
        return
    st.caption(plain(EXPORT_NOTICE))
    st.download_button(
        "Heatmap (DICOM Parametric Map)", lambda: heatmap_dicom(volume, map_volume(result.raw_map, volume.shape)),
        file_name="heatmap.dcm", mime="application/dicom", icon=":material/download:", on_click="ignore",
        key="scan-download-dicom", width="stretch",
        help="A DICOM object referencing the source series, to view over it in a PACS viewer.",
    )


def jpeg(picture: np.ndarray) -> bytes:
    """A picture as JPEG bytes for the browser (quicker to make and send than PNG)."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()
