"""Upload limits, enforced on the bytes the server received.

A file uploader's ``max_upload_size`` is checked by the browser only; the server itself caps every upload at
``server.maxUploadSize`` (500 MB, for model weights). A client that skips the widget (a hand-made upload
request, a faked size) must meet the same limits, so every upload's real size is checked here before it is
read, and the engine's decoders are given the same limits instead of their larger defaults.
"""

from __future__ import annotations

from typing import Protocol

from gradcam_core import GradCamError, format_size
from gradcam_core.custom import MAX_LABELS_BYTES, MAX_WEIGHTS_BYTES

__all__ = [
    "IMAGE_BYTES",
    "IMAGE_MB",
    "LABELS_BYTES",
    "LABELS_MB",
    "UploadTooLarge",
    "WEIGHTS_BYTES",
    "WEIGHTS_MB",
    "received",
]

MB = 2**20
IMAGE_MB = 25
"""Largest image, DICOM or mask upload."""
LABELS_MB = MAX_LABELS_BYTES // MB
WEIGHTS_MB = MAX_WEIGHTS_BYTES // MB
IMAGE_BYTES = IMAGE_MB * MB
LABELS_BYTES = LABELS_MB * MB
WEIGHTS_BYTES = WEIGHTS_MB * MB


class UploadTooLarge(GradCamError):
    """An upload is larger than its uploader's limit (whatever the browser claimed)."""


class Upload(Protocol):
    """What Streamlit's ``UploadedFile`` offers: its size as received and its bytes."""

    size: int

    def getvalue(self) -> bytes: ...


def received(upload: Upload, limit_mb: int, what: str) -> bytes:
    """The bytes of ``upload`` once its real size is within ``limit_mb`` megabytes.

    Args:
        upload: A file from ``st.file_uploader``.
        limit_mb: The uploader's limit, as given to its ``max_upload_size``.
        what: What the file is, for the message, e.g. ``"upload 2"`` or ``"the weights file"``.

    Raises:
        UploadTooLarge: one sentence naming ``what``, its size and the limit.

    Example::

        data = received(st.file_uploader("Image", max_upload_size=IMAGE_MB), IMAGE_MB, "the image")
    """
    size = upload.size
    if size > limit_mb * MB:
        subject = f"{what[0].upper()}{what[1:]}"
        raise UploadTooLarge(f"{subject} is {format_size(size)}, more than the {format_size(limit_mb * MB)} limit.")
    return upload.getvalue()
