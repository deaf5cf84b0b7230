"""Sidebar widgets: each function draws one group of controls and returns what the user picked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import streamlit as st
from streamlit.delta_generator import DeltaGenerator
from streamlit.runtime.uploaded_file_manager import UploadedFile

import gradcam_core as core
from gradcam_core import LoadedModel, ModelStatus, Prediction
from gradcam_core.masks import box_region
from gradcam_core.render import COLORMAPS, DEFAULT_COLORMAP

from . import cache, handoff
from .guard import reported_errors
from .medical import dicom_input
from .settings import ImageInput
from .text import plain
from .uploads import IMAGE_MB, received

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SAMPLES: dict[str, str] = {
    "chelsea.png": "Cat",
    "coffee.png": "Coffee cup",
    "astronaut.png": "Astronaut",
    "rocket.jpg": "Rocket",
    "retina.jpg": "Retina (fundus)",
}
"""Built-in sample files in ``assets/`` and their names on the page (the first one is shown on opening)."""

UPLOAD_TYPES = [suffix.removeprefix(".") for suffix in core.UPLOAD_SUFFIXES]
"""What the image uploader accepts: the engine's list (``gradcam_core.formats``)."""
OWN_MODEL = "own-model"
"""Option of the model menu that opens the form for the user's own model."""
METHOD_KEY = "method"
"""Session-state key of the method menu."""
ANOTHER_CLASS = -1
"""Option of the class menu that opens the search over every class."""

COLORMAP_NOTES: dict[str, str] = {
    "jet": "rainbow, red = strong",
    "turbo": "rainbow, red = strong",
    "viridis": "colour-blind friendly",
    "cividis": "colour-blind friendly",
    "hot": "black → white",
}


def image_inputs() -> tuple[ImageInput | None, tuple[ImageInput, ...]]:
    """The image to explain (an upload, or else the chosen built-in sample) and every uploaded file.

    A DICOM upload gets frame and window controls; the image returned is then the windowed picture
    (``None``, after a one-sentence error, when the DICOM file cannot be read). A DICOM file is never called by
    its file name (which often carries the patient's), only by its place among the uploads.
    """
    st.subheader("Image", divider="gray")
    uploads = st.file_uploader(
        "Upload images",
        type=UPLOAD_TYPES,
        accept_multiple_files=True,
        key="upload",
        max_upload_size=IMAGE_MB,
        help=f"{core.image_format_list().replace(' or ', ', ')} or DICOM; several at once for the gallery. "
        "Images stay on this server and are not stored.",
    )
    files = received_images(uploads or ())
    audited = None if uploads else handoff.picked()
    sample = st.selectbox(
        "…or use a built-in sample",
        list(SAMPLES),
        format_func=SAMPLES.__getitem__,
        key="sample",
        disabled=bool(uploads) or audited is not None,
        help="Remove the uploaded files (×) to go back to the samples." if uploads else None,
    )
    if audited is not None:
        st.caption(f"Showing {plain(audited.name)}, opened from the Audit tab.")
        st.button("Back to the samples", key="drop-audited", on_click=handoff.drop, icon=":material/undo:")
        image, files = audited, ()
    elif not uploads:
        return ImageInput.from_bytes(SAMPLES[sample], (ASSETS / sample).read_bytes()), ()
    elif not files:
        return None, ()
    else:
        chosen = 0
        if len(files) > 1:
            chosen = st.selectbox(
                "Image to explain", range(len(files)), format_func=lambda i: files[i].name, key="chosen-upload"
            )
        image = files[chosen]
    if not core.is_dicom(image.data):
        return image, files
    with reported_errors("reading the DICOM file"):
        return dicom_input(image), files
    return None, files


def received_images(uploads: Sequence[UploadedFile]) -> tuple[ImageInput, ...]:
    """The uploads within the size limit (a one-sentence error for each other one), DICOM files named by place."""
    files = []
    for number, upload in enumerate(uploads, start=1):
        with reported_errors(f"receiving upload {number}"):
            data = received(upload, IMAGE_MB, f"upload {number}" if len(uploads) > 1 else "the upload")
            name = f"Upload {number} (DICOM)" if core.is_dicom(data) else upload.name
            files.append(ImageInput.from_bytes(name, data))
    return tuple(files)


def model_choice(statuses: Sequence[ModelStatus]) -> ModelStatus | None:
    """The chosen registered model, or ``None`` for the user's own model (see ``own_model``).

    Models that cannot be loaded here are listed and labelled as unavailable.
    """
    st.subheader("Model", divider="gray")
    by_name = {status.name: status for status in statuses}
    names = [*by_name, OWN_MODEL]
    default = names.index(core.DEFAULT_MODEL) if core.DEFAULT_MODEL in by_name else 0

    def label(name: str) -> str:
        if name == OWN_MODEL:
            return "Your own model…"
        status = by_name[name]
        return status.title if status.available else f"{status.title} — weights not on this machine"

    name = st.selectbox(
        "Neural network",
        names,
        index=default,
        format_func=label,
        key="model",
        help="The image classifier whose decision is explained. Choose *Your own model…* to upload one.",
    )
    return by_name.get(name)


def class_choice(
    predictions: Sequence[Prediction] | None, model: LoadedModel | None, key: str, image: ImageInput | None = None
) -> int | core.Objective | None:
    """What to explain: one of the top predictions or any class by name (``None``: not ready); for a single-logit
    model the positive or the negative side, for a multi-label model optionally several classes together, for a
    segmentation model the class whose predicted region is explained, or its score over a box (:func:`region_choice`).

    Args:
        predictions: The model's top classes for this image, best first; ``None`` disables the control.
        model: The loaded model (for the list of every class).
        key: Widget key suffix; a new image or model gets fresh widgets, so the choice resets to the top class.
        image: The image explained (a segmentation's box is drawn in its pixels); ``None`` offers no box.
    """
    st.subheader("What to explain", divider="gray")
    if not predictions or model is None:
        st.selectbox("Class", ["—"], disabled=True, key="class-disabled")
        return None
    if len(model.categories) == 1 and not model.segmentation:
        return evidence_choice(predictions[0], key)
    if model.activation == "sigmoid" and not model.segmentation and len(model.categories) > 1:
        together = st.radio(
            "Explain", [False, True], format_func=lambda many: "Several classes together" if many else "One class",
            key=f"together-{key}", horizontal=True,
            help="Several classes together: the map of the sum of their scores, e.g. every finding of a chest model.",
        )
        if together:
            return classes_together(predictions, model, key)
    by_index = {p.index: p for p in predictions}
    choice = st.selectbox(
        "Region of class" if model.segmentation else "Class",
        [p.index for p in predictions] + [ANOTHER_CLASS],
        format_func=lambda i: "Another class…" if i == ANOTHER_CLASS else f"{by_index[i].label} — {by_index[i].probability:.1%}",
        key=f"class-{key}",
        help="The map shows where the evidence for this class is. The model's top guesses come first."
        if not model.segmentation else "The map shows what made the model call this class's region (outlined in "
        "the mask panel) this class. The classes covering most of the image come first.",
    )
    if model.segmentation:
        st.caption("Segmentation model: the map explains the class's score summed over the pixels the model gives "
                   "it; the percentage is its probability averaged over the image.")
    elif model.activation == "sigmoid":
        st.caption("Multi-label model: each class has its own probability (sigmoid); they need not add up to 100%.")
    if choice == ANOTHER_CLASS:
        categories = model.categories
        choice = st.selectbox(
            "Search every class",
            range(len(categories)),
            index=None,
            format_func=categories.__getitem__,
            placeholder=f"Type to search {len(categories)} classes",
            key=f"any-class-{key}",
        )
        if choice is None:
            st.caption(f"Showing the top class, {plain(predictions[0].label)}, until you pick one.")
            choice = predictions[0].index
    return region_choice(choice, model, image, key) if model.segmentation and image is not None else choice


def region_choice(index: int, model: LoadedModel, image: ImageInput, key: str) -> int | core.RegionScore:
    """A segmentation class over its predicted region (``index``), or over a box drawn in pixels of ``image``:
    ``RegionScore(index, box)`` with the box made a mask at the model's input (``masks.box_region``)."""
    boxed = st.radio(
        "Region", [False, True], format_func=lambda box: "A box" if box else "Predicted region",
        key=f"region-{key}", horizontal=True,
        help="A box explains the class's score summed over the box you give instead of over the pixels the model "
        "gives the class.",
    )
    if not boxed:
        return index
    height, width = cache.decode_image(image.digest, image.data).shape[:2]

    def edge(column: DeltaGenerator, name: str, side: str, limit: int, start: int) -> int:
        """One of the box's edges, in pixels, held between 0 and the image's ``limit``."""
        return int(column.number_input(f"{name} ({side})", min_value=0, max_value=limit, value=start, step=1,
                                       key=f"box-{name}-{key}"))

    (left, top), (right, bottom) = st.columns(2), st.columns(2)
    x0, y0 = edge(left, "x0", "left", width, 0), edge(top, "y0", "top", height, 0)
    x1, y1 = edge(right, "x1", "right", width, width), edge(bottom, "y1", "bottom", height, height)
    if x0 >= x1 or y0 >= y1:
        st.warning(f"The box needs x0 < x1 and y0 < y1 (it has {x0} to {x1} and {y0} to {y1}), so the predicted "
                   "region is explained until it does.", icon=":material/crop_free:")
        return index
    st.caption(f"A box of {x1 - x0} × {y1 - y0} px of the {width} × {height} px image, from ({x0}, {y0}).")
    size = model.preprocessing.input_size(width, height)
    return core.RegionScore(index, box_region((x0, y0, x1, y1), (width, height), size))


def evidence_choice(prediction: Prediction, key: str) -> int | core.Objective:
    """For a model with a single output (a binary logit): the evidence for its class, or against it."""
    negative = st.radio(
        "Evidence for",
        [False, True],
        format_func=lambda side: f"{'not ' if side else ''}{prediction.label} — "
        f"{1 - prediction.probability if side else prediction.probability:.1%}",
        key=f"evidence-{key}",
        help="A binary model has one output: positive evidence raises it, negative evidence lowers it.",
    )
    return core.BinaryLogit(positive=False) if negative else prediction.index


def classes_together(predictions: Sequence[Prediction], model: LoadedModel, key: str) -> int | core.Objective:
    """Several classes of a multi-label model explained together, with equal weights (their scores summed)."""
    categories = model.categories
    picked = st.multiselect(
        "Classes",
        range(len(categories)),
        default=[p.index for p in predictions[:2]],
        format_func=categories.__getitem__,
        key=f"classes-{key}",
        placeholder="Pick the classes to explain together",
    )
    if not picked:
        st.caption(f"Showing the top class, {plain(predictions[0].label)}, until you pick some.")
        return predictions[0].index
    st.caption("The classes' scores are added with equal weights (1 each): the map shows the evidence for any of them.")
    return picked[0] if len(picked) == 1 else core.WeightedClasses({index: 1.0 for index in picked})


def preselect_class(index: int, predictions: Sequence[Prediction], key: str) -> None:
    """Make ``index`` the choice of the class menu drawn next with ``key`` (see :func:`class_choice`)."""
    if index in {p.index for p in predictions}:
        st.session_state[f"class-{key}"] = index
    else:
        st.session_state[f"class-{key}"] = ANOTHER_CLASS
        st.session_state[f"any-class-{key}"] = index


def method_choice(model: LoadedModel | None = None) -> str:
    """The CAM method, from the registered methods that can explain ``model`` (``LoadedModel.methods``: a
    gradient-free model only has those without gradients, and a caption says why)."""
    methods = core.METHODS
    names = list(model.methods if model is not None else methods)
    if st.session_state.get(METHOD_KEY, names[0]) not in names:  # e.g. Grad-CAM kept from another model
        st.session_state[METHOD_KEY] = cache.default_method(model)
    name = st.selectbox(
        "Method",
        names,
        index=names.index(cache.default_method(model)),
        format_func=lambda key: f"{methods[key].title} (slow)" if methods[key].forward_passes else methods[key].title,
        key=METHOD_KEY,
        help="How the network's internal signals become a map. The methods weigh the same feature maps "
        "differently, so their maps can disagree: one spot for one method, the whole object for another. "
        "Where they agree, trust the map more.\n\n"
        + "\n".join(f"- **{methods[key].title}**: {methods[key].description} {methods[key].use}" for key in names),
    )
    if model is not None and model.gradient_free is not None:
        st.caption(plain(model.gradient_free))
    st.caption(f"{methods[name].description} {methods[name].use}")
    return name


def use_default_method() -> None:
    """Switch the sidebar back to the default method (what Cancel does while a slow method runs)."""
    st.session_state[METHOD_KEY] = cache.default_method()


def layer_choice(model: LoadedModel | None, method: str) -> str | None:
    """The target layer among the model's candidates, ``method``'s default preselected (``None``: no model).

    The menu follows the method's default (``LoadedModel.default_layer_for``) until the user picks a layer.
    """
    if model is None:
        st.selectbox("Layer", ["—"], disabled=True, key="layer-disabled")
        return None
    infos = {info.name: info for info in model.layers}
    names = list(infos)
    default = model.default_layer_for(method)
    if default not in infos:
        names.append(default)
    key, shown_default = f"layer-{model.name}", f"layer-default-{model.name}"
    if key in st.session_state and st.session_state[key] == st.session_state.get(shown_default):
        st.session_state[key] = default  # not picked by the user: follow the method
    st.session_state[shown_default] = default

    def label(name: str) -> str:
        if name not in infos:
            return f"{name} (recommended)" if name == default else name
        channels, height, width = infos[name].shape
        text = f"{height}×{width} · {name} · {channels} maps"
        return f"{text} · recommended" if name == default else text

    preselect = {} if key in st.session_state else {"index": names.index(default)}
    layer = st.selectbox(
        "Layer",
        names,
        **preselect,
        format_func=label,
        key=key,
        help="Where in the network to look. The default, a late layer, gives the most class-specific map; "
        "earlier layers give finer but less meaningful maps.",
    )
    described = infos[layer].describe() if layer in infos else layer
    if layer != default:
        st.caption(f"{plain(described)}. Earlier layers give sharper but less class-specific maps.")
    elif default != model.default_layer:
        st.caption(
            f"{plain(described)}: the default for {core.METHODS[method].title}, the last feature map after an "
            "activation function. Its weights are never negative, so it needs positive feature maps to show anything."
        )
    else:
        st.caption(f"{plain(described)}: the default, the network's last feature map, usually the most telling.")
    cost_note(model, method, layer)
    return layer


def cost_note(model: LoadedModel, method: str, layer: str) -> None:
    """For a method that runs the model once per feature map: how many runs, and roughly how long here."""
    infos = {info.name: info for info in model.layers}
    if not core.METHODS[method].forward_passes or layer not in infos:
        return
    channels = infos[layer].shape[0]
    seconds = channels * cache.forward_seconds(model)
    st.caption(
        f"{core.METHODS[method].title} runs the model once per feature map: {channels} runs at this layer, "
        f"about {seconds:.0f} s on this server when it is idle (a progress bar and Cancel while it runs)."
    )


def colormap_choice(key: str = "colormap", **options: object) -> str:
    """The heatmap's colour map, each named with what it is good for (``options``, e.g. ``persist_state``)."""
    names = list(COLORMAPS)
    return st.selectbox(
        "Colour map",
        names,
        index=names.index(DEFAULT_COLORMAP) if DEFAULT_COLORMAP in names else 0,
        format_func=lambda name: f"{name} ({COLORMAP_NOTES[name]})" if name in COLORMAP_NOTES else name,
        key=key,
        **options,
    )


def display_choice() -> dict[str, object]:
    """Overlay opacity, colour map, colour-bar units and picture size (``Settings`` fields); none re-runs the model."""
    st.subheader("Display", divider="gray")
    alpha = st.slider("Heatmap opacity", 0.0, 1.0, 0.5, 0.05, key="alpha", help="0 shows only the image.")
    colormap = colormap_choice()
    raw_units = st.toggle(
        "Colour bar labels in raw units",
        key="raw-units",
        help="Relabels the colour bar with the map's own values (class score per unit of the layer's output) "
        "instead of 0 to 1; the colours stay scaled to this map's peak. To see several maps on one scale, use "
        "the common scale of the Compare and Gallery tabs.",
    )
    large = st.toggle(
        "Large pictures",
        key="large",
        help="For a projector or a wide screen: taller panels that fill the page once the sidebar is collapsed "
        "(« at its top).",
    )
    return {"alpha": alpha, "colormap": colormap, "raw_units": raw_units, "large": large}
