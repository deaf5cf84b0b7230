"""Main-area rendering: summary, the three panels, predictions, downloads and help."""

from __future__ import annotations

import numpy as np
import streamlit as st

import gradcam_core as core
from gradcam_core.render import overlay

from . import downloads, figures
from .cache import Result
from .settings import Settings
from .text import map_subject, method_title, plain, score_verb

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
UNLIKELY = 0.01
"""Below this probability a class's map gets a warning: normalised to its own peak, it exaggerates."""


def header() -> None:
    """Title and one line on what the page does."""
    st.title("What is the network looking at?", anchor=False)
    st.caption(
        "Grad-CAM highlights the parts of an image that drove an image classifier's answer. "
        "Pick an image and a class in the sidebar. For teaching and discussion, not for diagnosis."
    )


def recovery_hint(model_ok: bool) -> None:
    """What to do next when nothing can be explained: about the image if the model is fine, else the model."""
    if model_ok:
        st.caption("Upload another image, or remove this one (×) in the sidebar to go back to the samples.")
    else:
        st.caption(f"Pick another model in the sidebar, e.g. the built-in {core.MODELS[core.DEFAULT_MODEL].title}.")


def summary(result: Result, model_title: str, settings: Settings) -> None:
    """One sentence: what the model sees and what the map explains."""
    top = result.predictions[0]
    method = method_title(result.method)
    target = result.target
    odds = "" if target.index == top.index else f" ({target.probability:.1%})"
    facts = core.METHODS.get(result.method)
    where = "" if facts is not None and not facts.class_specific else "where it found "
    st.markdown(
        f"**{plain(model_title)}** sees **{plain(top.label)}** ({top.probability:.1%}). "
        f"The maps show {where}{map_subject(result.method, target.label)}{odds} "
        f"— {method}, layer {plain(result.layer)}."
    )
    if result.strength <= 0:
        st.info(
            f"The map is empty: no region of this image {score_verb(result.method)} the score of "
            f"{plain(result.target.label)} at this layer. Try another layer or class.",
            icon=":material/info:",
        )
    elif target.probability < UNLIKELY and (facts is None or facts.class_specific):
        st.warning(
            f"The model gives {plain(target.label)} almost no probability ({target.probability:.1%}). The map is "
            "scaled to its own peak, so it makes this weak evidence look as strong as a likely class's: compare "
            "it with the top class on a common scale (Compare tab) before reading much into it.",
            icon=":material/warning:",
        )


def panels(image: np.ndarray, full_size: tuple[int, int], result: Result, settings: Settings) -> None:
    """Original | heatmap | overlay, same height, zooming together; ``image`` is the browser-sized copy."""
    height = figures.panel_height(full_size, width=LARGE_PANEL if settings.large else figures.PANEL_WIDTH)
    heat = result.heatmap_at(image.shape)
    blended = overlay(image, heat, settings.alpha, settings.colormap)
    strong, weak = COLOUR_WORDS.get(settings.colormap, ("Bright", "dark"))
    width, full_height = full_size
    method = method_title(result.method)
    for column, title in zip(st.columns(3, gap="medium"), ("Original", f"{method} heatmap", "Overlay")):
        column.markdown(f"**{title}**")
    scale = result.strength if settings.raw_units else None
    st.plotly_chart(
        figures.panels_figure(image, blended, result.raw_map, full_size, settings.colormap, height, scale),
        config=figures.plot_config(),
        key="panels",
    )
    facts = core.METHODS.get(result.method)
    if facts is not None and not facts.class_specific:
        reading = f"{strong} = where the layer's dominant pattern is strongest, the same for every class"
    else:
        reading = f"{strong} = regions that most {score_verb(result.method)} the score for **{plain(result.target.label)}**"
    original, heatmap, combined = st.columns(3, gap="medium")
    original.caption(
        f"{plain(settings.image.name)} · {width} × {full_height} px. Drag to zoom all three, double-click to reset."
    )
    heatmap.caption(f"{reading}; {weak} = none. Peak **{result.strength:.3g}** (raw units). Hover to read the value.")
    combined.caption(
        f"The heatmap over the image at {settings.alpha:.0%} opacity. The model saw the whole image "
        "(no crop), so the overlay covers exactly what it saw."
    )


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


def download_buttons(image: np.ndarray, result: Result, settings: Settings, model: core.LoadedModel) -> None:
    """A one-click HTML report, then overlay PNG, heatmap PNG, values (.npy) and JSON, generated on click."""
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
