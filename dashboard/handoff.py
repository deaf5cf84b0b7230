"""One audited image handed from the Audit tab to the rest of the page, in this session only.

A click on an audited image puts its file (read again from the server and checked against the audit's SHA-256),
the audit's model, method, layer and class into this session's state, and opens the Explanation tab: the sidebar
then shows that image instead of a sample until the user uploads a file or goes back to the samples.
"""

from __future__ import annotations

import streamlit as st

import gradcam_core as core
from gradcam_core.audit_report import Audit
from gradcam_core.errors import GradCamError

from .settings import ImageInput
from .uploads import IMAGE_BYTES

PICKED = "audit-picked"
"""Session-state key of the handed-over image (an ``ImageInput``)."""
PENDING_CLASS = "audit-picked-class"
"""Session-state key of ``(image digest, class index)``: the class menu's choice once that image is on the page."""
NOTE = "audit-pick-note"
"""Session-state key of a one-sentence note for the Audit tab (why an image could not be opened)."""
EXPLANATION_VIEW = "Explanation"
"""The tab that opens (a title of ``app.TABS``)."""


def open_audited(audit: Audit, position: int) -> None:
    """Button callback: hand ``audit.images`` row ``position`` over and open the Explanation tab.

    On failure (the file gone or changed since the audit) nothing changes but the note of the Audit tab.
    """
    row = audit.images.iloc[position]
    try:
        data = audit.image_file(position, IMAGE_BYTES)
    except GradCamError as err:
        st.session_state[NOTE] = str(err)
        return
    name = f"Audited image {position + 1} (DICOM)" if core.is_dicom(data) else str(row["path"]).rsplit("/", 1)[-1]
    picked = ImageInput.from_bytes(name, data)
    st.session_state[PICKED] = picked
    st.session_state.pop(NOTE, None)
    settings = audit.settings
    model, method, layer = settings.get("model"), settings.get("method"), settings.get("layer")
    if model in {status.name for status in core.available_models() if status.available}:
        st.session_state["model"] = model
        if layer:
            st.session_state[f"layer-{model}"] = layer
    if method in core.METHODS:
        st.session_state["method"] = method
    if settings.get("target") != "predicted" and row.get("target_index") is not None:
        st.session_state[PENDING_CLASS] = (picked.digest, int(row["target_index"]))
    st.session_state["view"] = EXPLANATION_VIEW


def picked() -> ImageInput | None:
    """The image handed over by the Audit tab, if any."""
    return st.session_state.get(PICKED)


def drop() -> None:
    """Forget the handed-over image (the sidebar goes back to the samples)."""
    st.session_state.pop(PICKED, None)
    st.session_state.pop(PENDING_CLASS, None)


def pending_class(digest: str) -> int | None:
    """The audited class to preselect for the image ``digest``, once (``None`` afterwards or for another image)."""
    pending = st.session_state.get(PENDING_CLASS)
    if pending is None or pending[0] != digest:
        return None
    del st.session_state[PENDING_CLASS]
    return pending[1]
