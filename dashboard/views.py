"""Above the tabs: the title, the one-sentence summary, warnings, and what to do when nothing can be explained."""

from __future__ import annotations

import streamlit as st

import gradcam_core as core

from .cache import Result
from .settings import ImageInput, Settings
from .text import map_subject, method_title, plain, score_verb

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
    if result.notice is not None:  # the map was computed another way (e.g. through onnxruntime)
        st.warning(plain(result.notice), icon=":material/warning:")
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


def photo_model_warning(model: core.LoadedModel, image: ImageInput) -> None:
    """A visible warning when a built-in (ImageNet) model is asked about a medical scan."""
    if dict(image.facts).get("Modality") and model.name in core.MODELS:
        st.warning(
            f"{plain(model.title)} learned from everyday photos (ImageNet), not medical images: its classes say "
            "little about a scan. Pick *Your own model* under Neural network to explain a model trained on your "
            "images.",
            icon=":material/warning:",
        )
