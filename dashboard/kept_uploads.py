"""Uploads that outlive their uploader: a tab drawn only while it is open keeps its files in this session.

The page draws only the open tab, and Streamlit forgets the files of an uploader that was not drawn: after a
visit to another tab the uploader comes back empty. The files are therefore kept in this session's state (never
in a shared cache) from the moment they arrive until the user removes them with the uploader's ×, or uploads
others in their place. File names are not kept: a scan's often carries the patient's name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import streamlit as st

from .uploads import received

__all__ = ["KeptFiles", "kept_uploads"]


@dataclass(frozen=True)
class KeptFiles:
    """The files of one upload, as received.

    Attributes:
        data: Each file's bytes, in the order they were uploaded.
        digest: SHA-256 over the files' own SHA-256s (computed once, when they arrive).
        ids: The uploader's ids of the files (to tell a new upload from the same one drawn again).
    """

    data: tuple[bytes, ...] = field(repr=False)
    digest: str
    ids: tuple[str, ...]


def kept_uploads(
    label: str,
    key: str,
    types: Sequence[str],
    limit_mb: int,
    what: str,
    *,
    multiple: bool = False,
    help: str | None = None,
) -> KeptFiles | None:
    """An uploader whose files stay in this session while other tabs are open; ``None`` until files are given.

    ``what`` names the upload in a size error (``"the scan"``); ``key`` is the uploader's widget key and, with
    ``-kept`` added, the session-state key of the files.

    Raises:
        UploadTooLarge: A file is over ``limit_mb`` (as the other uploaders, whatever the browser claimed).
    """
    stored = f"{key}-kept"
    uploads = st.file_uploader(
        label, type=list(types), accept_multiple_files=multiple, key=key, max_upload_size=limit_mb, help=help,
        on_change=_forget_when_removed, args=(key, stored),
    )
    files = [] if not uploads else list(uploads) if multiple else [uploads]
    if files:
        ids = tuple(upload.file_id for upload in files)
        kept = st.session_state.get(stored)
        if kept is None or kept.ids != ids:
            data = tuple(
                received(upload, limit_mb, f"{what}, file {number}" if len(files) > 1 else what)
                for number, upload in enumerate(files, start=1)
            )
            digest = hashlib.sha256(b"".join(hashlib.sha256(part).digest() for part in data)).hexdigest()
            st.session_state[stored] = KeptFiles(data, digest, ids)
    elif stored in st.session_state:  # drawn again after another tab: the uploader is empty, the files are kept
        st.caption("In use: the files uploaded earlier in this session (upload others to replace them).")
    return st.session_state.get(stored)


def _forget_when_removed(key: str, stored: str) -> None:
    """The uploader's callback: the user changed its files; with none left, forget the kept ones."""
    if not st.session_state.get(key):
        st.session_state.pop(stored, None)

