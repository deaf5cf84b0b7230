"""The 3-D model form of the scan tab: architecture, weights, class names, output, input grid and intensities.

Every control keeps its value while another tab is open (``persist_state``), and the files stay in this session
(``kept_uploads``), so coming back to the tab finds the same model and the same cached explanation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import streamlit as st

from gradcam_core.volume_models import VOLUME_ARCHITECTURES, VolumeModelRequest, VolumePreprocessing

from .kept_uploads import KeptFiles, kept_uploads
from .own_model import ACTIVATIONS
from .uploads import LABELS_MB, WEIGHTS_MB

INTENSITIES = {
    "zscore": "Z-score over the scan",
    "window": "A window, scaled 0 to 1",
}
"""How the model's input voxels were scaled in training (``VolumePreprocessing.intensity``)."""
DEFAULT_GRID = (64, 64, 64)
DEFAULT_WINDOW = (40.0, 400.0)
"""Level and width offered for a window (CT soft tissue, in Hounsfield units)."""
GRID_AXES = ("Slices (D)", "Rows (H)", "Columns (W)")


@dataclass(frozen=True)
class VolumeModelChoice:
    """A 3-D model as the user gave it: files (kept in this session) and options.

    Attributes:
        architecture: A key of ``VOLUME_ARCHITECTURES``.
        weights: The weights file.
        labels: The class names file, if given.
        preprocessing: Input grid and intensity scaling.
        activation: ``"softmax"`` or ``"sigmoid"``.
    """

    architecture: str
    weights: KeptFiles
    labels: KeptFiles | None
    preprocessing: VolumePreprocessing
    activation: str

    @property
    def key(self) -> str:
        """``"volume-"`` and a hash of the files and options: same files and options, same key (and cached model)."""
        options = (self.weights.digest, self.labels.digest if self.labels else None, self.architecture,
                   self.preprocessing, self.activation)
        return f"volume-{hashlib.sha256(repr(options).encode()).hexdigest()[:24]}"

    def request(self) -> VolumeModelRequest:
        """What the engine's ``load_volume_model`` takes (the bytes themselves: no file name reaches the model)."""
        return VolumeModelRequest(
            architecture=self.architecture,
            weights=self.weights.data[0],
            preprocessing=self.preprocessing,
            labels=self.labels.data[0] if self.labels else None,
            activation=self.activation,
        )


def volume_model_form() -> VolumeModelChoice | None:
    """The user's 3-D model as chosen in the form; ``None`` (with a note) until its weights are given."""
    architecture = st.selectbox(
        "Architecture", list(VOLUME_ARCHITECTURES), format_func=VOLUME_ARCHITECTURES.__getitem__,
        key="scan-architecture", persist_state="page",
        help="The 3-D network the weights were trained with; input channels and classes are read from the weights.",
    )
    weights = kept_uploads(
        "Weights (.safetensors, .pt or .pth)", "scan-weights", ["safetensors", "pt", "pth"], WEIGHTS_MB,
        "the weights file",
        help="The network's state dict. It is read as data only: a file holding code is refused.",
    )
    labels = kept_uploads(
        "Class names (.txt or .json), optional", "scan-labels", ["txt", "json"], LABELS_MB, "the class names file",
        help="One name per line, in the order of the model's outputs (or a JSON list); else class 0, class 1…",
    )
    activation = st.radio(
        "Output", list(ACTIVATIONS), format_func=ACTIVATIONS.__getitem__, key="scan-activation", horizontal=True,
        persist_state="page",
    )
    grid = tuple(
        int(column.number_input(title, 8, 512, default, 8, key=f"scan-grid-{number}", persist_state="page"))
        for number, (column, title, default) in enumerate(zip(st.columns(3), GRID_AXES, DEFAULT_GRID))
    )
    intensity = st.radio(
        "Input intensities", list(INTENSITIES), format_func=INTENSITIES.__getitem__, key="scan-intensity",
        horizontal=True, persist_state="page",
        help="As in training: a z-score (mean 0, standard deviation 1 over the scan) or a window clipped and "
        "scaled to 0-1. The whole scan is resized to the input grid (no crop), so the map covers all of it.",
    )
    window = None
    if intensity == "window":
        level, width = st.columns(2)
        window = (
            float(level.number_input("Level", value=DEFAULT_WINDOW[0], key="scan-input-level", persist_state="page")),
            float(width.number_input("Width", min_value=1e-3, value=DEFAULT_WINDOW[1], key="scan-input-width",
                                     persist_state="page")),
        )
    if weights is None:
        st.caption("Give the weights file to explain the scan with your 3-D model.")
        return None
    return VolumeModelChoice(
        architecture=architecture,
        weights=weights,
        labels=labels,
        preprocessing=VolumePreprocessing(size=grid, intensity=intensity, window=window),
        activation=activation,
    )
