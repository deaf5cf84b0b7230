"""Sidebar form for the user's own model: its source, architecture, file, labels, output and preprocessing."""

from __future__ import annotations

import hashlib

import streamlit as st

import gradcam_core as core
from gradcam_core.custom import IMAGENET_MEAN, IMAGENET_STD

from .settings import OwnModel
from .text import plain
from .uploads import LABELS_MB, WEIGHTS_MB, received

NORMALISATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "ImageNet (mean 0.485, 0.456, 0.406 · std 0.229, 0.224, 0.225)": (IMAGENET_MEAN, IMAGENET_STD),
    "Centred (mean 0.5 · std 0.5)": ((0.5,), (0.5,)),
    "None (pixels from 0 to 1)": ((0.0,), (1.0,)),
    "Custom…": None,
}
"""Input normalisations offered (mean, std per channel; one value applies to every channel)."""
RECOGNISE = "recognise"
"""Option of the architecture menu: recognise the architecture from the weights."""
DIGESTS_KEY = "own-model-digests"
"""Session-state key of the uploads' content hashes."""
ACTIVATIONS = {
    "softmax": "One label per image (softmax)",
    "sigmoid": "Several labels per image (sigmoid)",
}


def own_model_form() -> OwnModel | None:
    """The user's model as chosen in the sidebar; ``None`` until every file it needs is uploaded."""
    source = st.selectbox(
        "Model source",
        list(core.SOURCES),
        format_func=lambda name: core.SOURCES[name].title,
        key="own-source",
        help="Where your model comes from. Model files are read as data only: files that contain code are refused.",
    )
    facts = core.SOURCES[source]
    st.caption(plain(facts.files))
    architecture = architecture_choice(facts)
    weights = st.file_uploader(
        f"Model file ({', '.join(facts.suffixes)})",
        type=[suffix.removeprefix(".") for suffix in facts.suffixes],
        key=f"own-weights-{source}",
        max_upload_size=WEIGHTS_MB,
        help=facts.files,
    )
    labels = st.file_uploader(
        "Class names (.txt or .json)" + ("" if facts.needs_labels else ", optional"),
        type=["txt", "json"],
        key="own-labels",
        max_upload_size=LABELS_MB,
        help="One name per line, in the order of the model's outputs (or a JSON list).",
    )
    activation = st.radio(
        "Output", list(ACTIVATIONS), format_func=ACTIVATIONS.__getitem__, key="own-activation", horizontal=False
    )
    with st.expander("Preprocessing", icon=":material/tune:"):
        own = facts.own_preprocessing and st.checkbox(
            "The model's own (from its configuration)", value=True, key="own-preprocessing",
            help="Input size, mean and standard deviation as the model file or its library states them.",
        )
        size = None if own else int(st.number_input("Input size (shorter side, px)", 32, 2048, 224, 16, key="own-size"))
        mean, std = (None, None) if own else normalisation()
        grayscale = st.checkbox("Grayscale model", key="own-grayscale", help="Feed the image in shades of grey.")
    missing = [what for what, absent in (
        ("the model file", weights is None),
        ("the class names", labels is None and facts.needs_labels),
        ("the architecture's name", facts.needs_architecture and not architecture),
    ) if absent]
    if missing:
        st.caption(f"Give {' and '.join(missing)} to explain with your model.")
        return None
    if not own and (mean is None or std is None):
        return None
    weights_data = received(weights, WEIGHTS_MB, "the model file")
    labels_data = None if labels is None else received(labels, LABELS_MB, "the class names file")
    return OwnModel(
        architecture=architecture,
        weights_name=weights.name,
        weights=weights_data,
        labels=labels_data,
        files_digest=files_digest(weights.file_id, labels.file_id if labels else "", weights_data, labels_data or b""),
        source=source,
        activation=activation,
        input_size=size,
        mean=mean,
        std=std,
        grayscale=grayscale,
    )


def architecture_choice(facts: core.ModelSource) -> str | None:
    """The network's name: a menu of torchvision's (or recognised from the weights), typed for other libraries."""
    if facts.name == "torchvision":
        chosen = st.selectbox(
            "Architecture",
            [RECOGNISE, *core.custom_architectures()],
            format_func=lambda name: "Recognise from the weights" if name == RECOGNISE else name,
            key="own-architecture",
            help="The torchvision architecture the weights were trained with; by default it is recognised from the "
            "names and shapes of the weights (RegNets must be named).",
        )
        return None if chosen == RECOGNISE else chosen
    if not facts.needs_architecture:
        return None
    typed = st.text_input(
        "Architecture", key=f"own-architecture-{facts.name}", placeholder="e.g. resnet18",
        help=f"The network's name as its library ({facts.name}) knows it.",
    )
    return typed.strip() or None


def files_digest(weights_id: str, labels_id: str, weights: bytes, labels: bytes) -> str:
    """SHA-256 over both files' hashes, computed once per upload (a weights file can be hundreds of MB).

    Remembered in this session only, under the uploads' ids: nothing a client names reaches a shared cache.
    """
    memo = st.session_state.setdefault(DIGESTS_KEY, {})
    ids = (weights_id, labels_id)
    if ids not in memo:
        digest = hashlib.sha256(hashlib.sha256(weights).digest())
        digest.update(hashlib.sha256(labels).digest())
        memo.clear()  # only the current pair is worth keeping
        memo[ids] = digest.hexdigest()
    return memo[ids]


def normalisation() -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """Mean and standard deviation per channel, from a preset or typed in (``None``: not valid yet)."""
    preset = st.selectbox("Normalisation", list(NORMALISATIONS), key="own-normalisation")
    values = NORMALISATIONS[preset]
    if values is not None:
        return values
    mean = numbers(st.text_input("Mean", "0.485, 0.456, 0.406", key="own-mean"), "mean")
    std = numbers(st.text_input("Standard deviation", "0.229, 0.224, 0.225", key="own-std"), "standard deviation")
    return mean, std


def numbers(text: str, what: str) -> tuple[float, ...] | None:
    """Comma-separated numbers (one or three), or ``None`` after a one-sentence error."""
    try:
        values = tuple(float(part) for part in text.replace(";", ",").split(","))
    except ValueError:
        values = ()
    if len(values) not in (1, 3):
        st.error(f"Type the {what} as one number or three numbers separated by commas.", icon=":material/error:")
        return None
    return values
