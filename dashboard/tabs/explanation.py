"""The Explanation tab: original, heatmap and overlay (and a segmentation's predicted mask) zooming together,
then predictions, downloads and help."""

from __future__ import annotations

import numpy as np
import streamlit as st

import gradcam_core as core
from gradcam_core.render import overlay
from gradcam_core.volume_export import EXPORT_NOTICE, check_image_export

from .. import choices, detail, downloads, figures, medical
from ..cache import Result
from ..page import Page
from ..settings import ImageInput, Settings
from ..text import method_title, plain, score_verb

COLOUR_WORDS: dict[str, tuple[str, str]] = {
    "jet": ("Red", "blue"),
    "turbo": ("Red", "dark blue"),
    "viridis": ("Yellow", "dark purple"),
    "cividis": ("Yellow", "dark blue"),
    "inferno": ("Yellow", "black"),
    "magma": ("Pale yellow", "black"),
    "plasma": ("Yellow", "dark blue"),
    "hot": ("White", "black"),
}
"""(strongest, weakest) colour of each colour map, in words."""
LARGE_PANEL = 390
"""Width in pixels the main panels are drawn for with *Large pictures*: a third of a 1280-pixel projector."""


def render(page: Page) -> None:
    """The three panels, the fine-detail option, then predictions beside downloads and help."""
    full = page.full_picture()
    panels(page.picture, page.size, page.result, page.settings, page.model)
    fine_detail(page)
    st.divider()
    left, right = st.columns([3, 2], gap="large")
    with left:
        predictions(page.result, page.model)
    with right:
        download_buttons(full, page.result, page.settings, page.model, medical.source_file(page.settings.image))
        how_to_read(page.result, page.settings)
        details(page.result, page.model)


def panels(
    image: np.ndarray, full_size: tuple[int, int], result: Result, settings: Settings, model: core.LoadedModel
) -> None:
    """Original | heatmap | overlay (| predicted mask, for a segmentation model), same height, zooming together;
    ``image`` is the browser-sized copy."""
    mask = None
    if result.segmentation is not None:
        mask = figures.SegmentationPanel(result.segmentation, model.categories, result.region)
    panel = LARGE_PANEL if settings.large else figures.PANEL_WIDTH
    height = figures.panel_height(full_size, width=panel * 3 // 4 if mask is not None else panel)
    heat = result.heatmap_at(image.shape)
    blended = overlay(image, heat, settings.alpha, settings.colormap)
    strong, weak = COLOUR_WORDS.get(settings.colormap, ("Bright", "dark"))
    width, full_height = full_size
    method = method_title(result.method)
    titles = ("Original", f"{method} heatmap", "Overlay") + (("Predicted mask",) if mask is not None else ())
    for column, title in zip(st.columns(len(titles), gap="medium"), titles):
        column.markdown(f"**{title}**")
    scale = result.strength if settings.raw_units else None
    st.plotly_chart(
        figures.panels_figure(image, blended, result.raw_map, full_size, settings.colormap, height, scale, mask),
        config=figures.plot_config(),
        key="panels",
    )
    facts = core.METHODS.get(result.method)
    if facts is not None and not facts.class_specific:
        reading = f"{strong} = where the layer's dominant pattern is strongest, the same for every class"
    else:
        reading = f"{strong} = regions that most {score_verb(result.method)} the score for **{plain(result.target.label)}**"
    original, heatmap, combined, *rest = st.columns(len(titles), gap="medium")
    original.caption(
        f"{plain(settings.image.name)} · {width} × {full_height} px. Drag to zoom all "
        f"{'four' if mask is not None else 'three'}, double-click to reset."
    )
    heatmap.caption(f"{reading}; {weak} = none. Peak **{result.strength:.3g}** (raw units). Hover to read the value.")
    combined.caption(
        f"The heatmap over the image at {settings.alpha:.0%} opacity. The model saw the whole image "
        "(no crop), so the overlay covers exactly what it saw."
    )
    if mask is not None:
        outlined = "" if result.region is None else (
            f" The dashed line outlines the region explained, where the model sees "
            f"{plain(model.categories[result.target.index])}: {result.region.mean():.0%} of the image."
        )
        rest[0].caption(f"The class the model gives each pixel (legend below the picture).{outlined}")


def fine_detail(page: Page) -> None:
    """The Guided Grad-CAM toggle and panels (``detail``), or instead one sentence on why this model or target
    cannot have them: no gradients, or not a single class's score."""
    what = "Guided Grad-CAM"
    reason = choices.needs_gradients(what, page.model, page.result) or choices.needs_one_class(
        what, page.model, page.settings, page.result
    )
    if reason is None:
        detail.render(page.picture, page.size, page.result, page.settings, page.model)
        return
    st.caption(reason)


def predictions(result: Result, model: core.LoadedModel) -> None:
    """Bar chart of the top classes with the explained one highlighted."""
    st.subheader("Top predictions", anchor=False)
    st.plotly_chart(
        figures.predictions_figure(result.predictions, result.target),
        config={"displayModeBar": False},
        key="predictions",
    )
    independent = " Each class is scored on its own (multi-label, sigmoid)." if model.activation == "sigmoid" else ""
    st.caption(f"How sure the model is of each class. The blue bar is the class being explained.{independent}")


def download_buttons(
    image: np.ndarray, result: Result, settings: Settings, model: core.LoadedModel, dicom: ImageInput | None = None
) -> None:
    """A one-click HTML report, then overlay PNG, heatmap PNG, values (.npy) and JSON, and for a DICOM upload
    (``dicom``, the file ``image`` was rendered from) the heatmap as DICOM; each generated on click."""
    st.subheader("Download", anchor=False)
    stem = downloads.file_stem(settings.image.name)
    size = (image.shape[1], image.shape[0])
    model_title = model.title
    st.download_button(
        "Report (HTML)",
        downloads.html_report(image, result, settings, model),
        file_name=f"{stem}-report.html",
        mime="text/html",
        icon=":material/summarize:",
        type="primary",
        help="One self-contained page with the image, heatmap, overlay, predictions, settings, the weights' "
        "SHA-256 and library versions, to file or share.",
        on_click="ignore",
        width="stretch",
        key="download-report",
    )
    files = [
        ("Overlay PNG", downloads.overlay_png(image, result, settings.alpha, settings.colormap),
         f"{stem}-overlay.png", "image/png", ":material/image:", "The overlay at full resolution."),
        ("Heatmap PNG", downloads.heatmap_png(result, image.shape, settings.colormap),
         f"{stem}-heatmap.png", "image/png", ":material/gradient:", "The coloured heatmap at full resolution."),
        ("Values .npy", downloads.heatmap_npy(result, image.shape),
         f"{stem}-heatmap.npy", "application/octet-stream", ":material/data_array:",
         "The heatmap as numbers from 0 to 1, one per pixel (NumPy file), for analysis."),
        ("Report JSON", downloads.report(settings, result, size, model_title),
         f"{stem}-gradcam.json", "application/json", ":material/description:",
         "Settings, predictions and what was explained."),
    ]
    left, right = st.columns(2)
    for number, (label, data, name, mime, icon, tip) in enumerate(files):
        with left if number % 2 == 0 else right:
            st.download_button(
                label, data, file_name=name, mime=mime, icon=icon, help=tip, on_click="ignore", width="stretch",
                key=f"download-{number}",
            )
    if dicom is not None:
        dicom_download(image, result, dicom.data, stem)


def dicom_download(image: np.ndarray, result: Result, dicom: bytes, stem: str) -> None:
    """The heatmap as a DICOM Parametric Map over the uploaded file ``dicom``, below the sentence on what it
    carries of the source; or one sentence on why this file cannot have one (e.g. several frames)."""
    try:
        check_image_export(dicom)
    except core.GradCamError as err:
        st.caption(plain(str(err)))
        return
    st.caption(plain(EXPORT_NOTICE))
    st.download_button(
        "Heatmap (DICOM)", downloads.heatmap_dcm(dicom, result, image.shape), file_name=f"{stem}-heatmap.dcm",
        mime="application/dicom", icon=":material/download:", on_click="ignore", width="stretch",
        key="download-dicom",
        help="The values as a DICOM Parametric Map referencing the uploaded image, to view over it in a PACS "
        "viewer such as OHIF.",
    )


def how_to_read(result: Result, settings: Settings) -> None:
    """Plain-language help on what the map does and does not say."""
    rows, cols = result.raw_map.shape
    strong, weak = COLOUR_WORDS.get(settings.colormap, ("Bright", "dark"))
    with st.expander("How to read this map", icon=":material/help:"):
        st.markdown(
            f"""
- **{strong}** marks the regions whose features most **raised** the model's score for the chosen class;
  **{weak}** means little or no evidence. With *Counterfactual Grad-CAM* it is the opposite question:
  regions that **lowered** the score.
- Values are relative to this image: 1 is the strongest spot here, so two images' maps are not directly
  comparable.
- The map is **coarse**: it is computed on a {rows} × {cols} grid inside the network and smoothed up to the
  image size. It shows roughly *where* the evidence is, not exact outlines.
- It shows **where**, not **why**: the model may rely on the right place for the wrong reason.
  It is **not a diagnosis** and says nothing about whether the prediction is correct.
"""
        )


def details(result: Result, model: core.LoadedModel) -> None:
    """Numbers for the curious: layer shape, input size, class index, raw score."""
    layers = {info.name: info for info in model.layers}
    kind = f" ({layers[result.layer].kind})" if result.layer in layers else ""
    rows, cols = result.raw_map.shape
    height, width = result.input_size
    with st.expander("Technical details", icon=":material/tune:"):
        st.markdown(
            f"""
| | |
|---|---|
| Model | {plain(model.title)} ({plain(model.name)}) |
| Layer | {plain(result.layer)}{plain(kind)}, a {rows} × {cols} grid for this image |
| Method | {plain(result.method)} |
| Class | {plain(result.target.label)} (index {result.target.index}) |
| Class score (before softmax) | {result.score:.3f} |
| Strongest raw evidence | {result.strength:.4g} |
| Network input | {width} × {height} px (the whole image, resized) |
| Weights SHA-256 | `{downloads.weights_digest(model)}` |
"""
        )
