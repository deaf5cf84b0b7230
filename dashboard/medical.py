"""DICOM uploads: a frame picker and a window/level control, and the 8-bit picture the model is shown.

The windowed frame becomes an ordinary PNG ``ImageInput``: from there the explanation, the downloads and the
report work as for any photo, and a new window or frame is a new image to the caches. The file it came from is
kept in the session (``source_file``) for the one download that needs it, the heatmap as DICOM. Nothing
identifying is shown: the picture is named after its modality and frame, never after the uploaded file (file
names of medical images often carry the patient's name), and only ``DicomImage.summary()``'s technical facts are
listed.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

import gradcam_core as core
from gradcam_core import DicomImage, Window
from gradcam_core.render import to_png_bytes

from .settings import ImageInput
from .text import plain
from .uploads import IMAGE_BYTES

CT_PRESETS = {
    "Soft tissue (L 40, W 400)": Window(40, 400),
    "Lung (L -600, W 1500)": Window(-600, 1500),
    "Bone (L 300, W 1500)": Window(300, 1500),
    "Brain (L 40, W 80)": Window(40, 80),
}
"""The usual CT windows, in Hounsfield units."""
CUSTOM = "Custom…"
BURNED_IN_WARNING = (
    "This file says its pixels carry burned-in text, which may show the patient's name or other details: check "
    "the picture before sharing the screen or the report."
)
BURNED_IN_FACT = "Burned-in annotation"
"""The ``DicomImage.summary()`` key present when the pixels carry burned-in text."""
SHOWN_FILE = "dicom-shown-file"
"""Session-state key of ``(picture digest, DICOM upload)``: the file the sidebar's picture was rendered from."""


@st.cache_resource(show_spinner="Reading the DICOM file…", max_entries=4, ttl=3600)
def read(digest: str, _data: bytes) -> DicomImage:
    """The decoded DICOM file ``_data`` (identified by its SHA-256 ``digest``), shared read-only."""
    return core.read_dicom(_data, max_bytes=IMAGE_BYTES)


@st.cache_data(show_spinner=False, max_entries=32, ttl=3600)
def rendered_png(digest: str, _data: bytes, frame: int, window: tuple[float, float] | None) -> bytes:
    """Frame ``frame`` of the DICOM file, windowed at ``(centre, width)`` (``None``: the file's window), as PNG."""
    picture = core.render_frame(read(digest, _data), frame, None if window is None else Window(*window))
    return to_png_bytes(np.asarray(picture), compress_level=1)


def as_picture(
    image: ImageInput, frame: int = 0, window: Window | None = None, window_name: str = "From the file"
) -> ImageInput:
    """``image`` itself, or for a DICOM file the rendered ``frame`` as a PNG image with its technical facts,
    including the frame and the window the model was shown (so a report can reproduce the picture)."""
    if not core.is_dicom(image.data):
        return image
    dicom = read(image.digest, image.data)
    png = rendered_png(image.digest, image.data, frame, None if window is None else (window.center, window.width))
    name = f"{dicom.modality or 'DICOM'} image, frame {frame + 1} of {dicom.num_frames}"
    shown = window or (None if dicom.is_color else dicom.default_window)
    facts = {**dicom.summary(), "Frame": f"{frame + 1} of {dicom.num_frames}"}
    if shown is not None:
        facts["Window"] = f"{window_name}: level {shown.center:g}, width {shown.width:g}"
    return ImageInput.from_bytes(name, png, facts=tuple(facts.items()))


def dicom_input(image: ImageInput) -> ImageInput:
    """Frame and window controls for a DICOM upload; returns the picture they give."""
    dicom = read(image.digest, image.data)
    key = image.digest[:16]
    facts = dicom.summary()
    st.caption(
        f"DICOM · {plain(facts['Modality'])} · {plain(facts['Image size'])} · {dicom.bits_stored}-bit"
        + (f" · {dicom.num_frames} frames" if dicom.num_frames > 1 else "")
        + ". Patient details are never shown."
    )
    if dicom.burned_in_annotation:
        st.warning(BURNED_IN_WARNING, icon=":material/visibility_off:")
    frame = 0
    if dicom.num_frames > 1:
        frame = st.slider("Frame", 1, dicom.num_frames, 1, key=f"frame-{key}") - 1
    if dicom.is_color:
        picture = as_picture(image, frame)
    else:
        window_name, window = window_control(dicom, key)
        picture = as_picture(image, frame, window, window_name)
    st.session_state[SHOWN_FILE] = (picture.digest, image)
    return picture


def source_file(picture: ImageInput) -> ImageInput | None:
    """The DICOM upload ``picture`` was rendered from in this session (for a DICOM export), else ``None``."""
    digest, image = st.session_state.get(SHOWN_FILE, ("", None))
    return image if digest == picture.digest else None


def window_control(dicom: DicomImage, key: str) -> tuple[str, Window]:
    """The window and its name: the file's own (preselected), the usual CT presets, the full range, or typed in."""
    units = "HU" if dicom.modality == "CT" else "units"
    low, high = float(dicom.frames.min()), float(dicom.frames.max())
    presets = {"From the file": dicom.default_window}
    if dicom.modality == "CT":
        presets |= CT_PRESETS
    presets["Full range"] = Window((low + high) / 2, max(high - low, 1e-6))
    name = st.selectbox(
        "Window",
        [*presets, CUSTOM],
        key=f"window-{key}",
        help="Which values are spread from black to white. The model sees the windowed picture, "
        "so the map follows the window.",
    )
    if name != CUSTOM:
        window = presets[name]
        st.caption(f"Level {window.center:g} {units} · width {window.width:g} {units}")
        return name, window
    level, width = st.columns(2)
    default = dicom.default_window
    center = level.number_input(f"Level ({units})", value=default.center, key=f"level-{key}")
    spread = width.number_input(f"Width ({units})", min_value=1e-6, value=default.width, key=f"width-{key}")
    return CUSTOM.rstrip("…"), Window(center, spread)
