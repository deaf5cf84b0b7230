"""The file formats a user may give the engine, listed once for the decoder's messages, the CLI and uploaders.

Example::

    from gradcam_core import UPLOAD_SUFFIXES
    st.file_uploader("Image", type=[suffix[1:] for suffix in UPLOAD_SUFFIXES])
"""

from __future__ import annotations

__all__ = ["DICOM_SUFFIXES", "IMAGE_FORMATS", "IMAGE_SUFFIXES", "UPLOAD_SUFFIXES", "image_format_list"]

IMAGE_FORMATS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("PNG", (".png",)),
    ("JPEG", (".jpg", ".jpeg")),
    ("WebP", (".webp",)),
    ("BMP", (".bmp",)),
    ("TIFF", (".tif", ".tiff")),
)
"""Picture formats a user may upload: (name shown to users, file name suffixes)."""

IMAGE_SUFFIXES: tuple[str, ...] = tuple(suffix for _, suffixes in IMAGE_FORMATS for suffix in suffixes)
"""Suffixes of the picture files :func:`~gradcam_core.imaging.load_image` is given by users."""

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
"""Suffixes of DICOM files (:func:`~gradcam_core.dicom.read_dicom`)."""

UPLOAD_SUFFIXES: tuple[str, ...] = IMAGE_SUFFIXES + DICOM_SUFFIXES
"""Every suffix a user may upload or a folder scan picks up, lower case with the dot."""


def image_format_list() -> str:
    """The picture formats in words: ``image_format_list()  # "PNG, JPEG, WebP, BMP or TIFF"``."""
    names = [name for name, _ in IMAGE_FORMATS]
    return f"{', '.join(names[:-1])} or {names[-1]}"
