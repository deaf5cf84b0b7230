"""Turn failures into one sentence on the page; tracebacks and server paths go to the server log only."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from gradcam_core import GradCamError, ModelUnavailableError

from .text import plain

logger = logging.getLogger(__name__)


@contextmanager
def reported_errors(doing: str, about: str | None = None) -> Iterator[None]:
    """Run the block; on failure show one sentence with ``st.error`` and skip the rest of the block.

    Args:
        doing: What the block does, for the generic message, e.g. ``"explaining the image"``. Never a name
            from the user: it goes to the server log too.
        about: What the message is about when several things fail alike, e.g. ``"Upload 2"`` (prefixed).
    """
    prefix = f"{plain(about)}: " if about else ""
    try:
        yield
    except ModelUnavailableError as err:  # its sentence names a folder of the server: for the log only
        logger.warning("Model unavailable while %s: %s", doing, err)
        st.error(f"{prefix}This model could not be loaded on this server; pick another model.", icon=":material/error:")
    except GradCamError as err:
        st.error(prefix + plain(str(err)), icon=":material/error:")
    except Exception:  # noqa: BLE001 - never let a traceback reach the browser
        logger.exception("Unexpected failure while %s", doing)
        st.error(
            f"{prefix}Something went wrong while {doing}; try another image or setting.",
            icon=":material/error:",
        )
