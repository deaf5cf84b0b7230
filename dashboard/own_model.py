"""Sidebar form for the user's own model: architecture, weights, labels, output activation and preprocessing."""

from __future__ import annotations

import hashlib

import streamlit as st

import gradcam_core as core
from gradcam_core.custom import IMAGENET_MEAN, IMAGENET_STD

from .settings import OwnModel
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
    """The user's model as chosen in the sidebar; ``None`` until the weights and labels are uploaded."""
    architecture = st.selectbox(
        "Architecture",
        [RECOGNISE, *core.custom_architectures()],
        format_func=lambda name: "Recognise from the weights" if name == RECOGNISE else name,
        key="own-architecture",
        help="The torchvision architecture the weights were trained with; by default it is recognised from the "
        "names and shapes of the weights (RegNets must be named).",
    )
    weights = st.file_uploader(
        "Weights (.safetensors, .pt or .pth)",
        type=["safetensors", "pt", "pth"],
        key="own-weights",
        max_upload_size=WEIGHTS_MB,
        help="The model's state dict. Only tensors are read: files that contain code are refused.",
    )
    labels = st.file_uploader(
        "Class names (.txt or .json)",
        type=["txt", "json"],
        key="own-labels",
        max_upload_size=LABELS_MB,
        help="One name per line, in the order of the model's outputs (or a JSON list).",
    )
    activation = st.radio(
        "Output", list(ACTIVATIONS), format_func=ACTIVATIONS.__getitem__, key="own-activation", horizontal=False
    )
    with st.expander("Preprocessing", icon=":material/tune:"):
        size = st.number_input("Input size (shorter side, px)", 32, 2048, 224, 16, key="own-size")
        mean, std = normalisation()
        grayscale = st.checkbox("Grayscale model", key="own-grayscale", help="Feed the image in shades of grey.")
    if weights is None or labels is None:
        st.caption("Upload the weights and the class names to explain with your model.")
        return None
    if mean is None or std is None:
        return None
    weights_data = received(weights, WEIGHTS_MB, "the weights file")
    labels_data = received(labels, LABELS_MB, "the class names file")
    return OwnModel(
        architecture=None if architecture == RECOGNISE else architecture,
        weights_name=weights.name,
        weights=weights_data,
        labels=labels_data,
        files_digest=files_digest(weights.file_id, labels.file_id, weights_data, labels_data),
        activation=activation,
        input_size=int(size),
        mean=mean,
        std=std,
        grayscale=grayscale,
    )


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
