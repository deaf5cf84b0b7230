"""A progress bar with a Cancel button for work that takes seconds, drawn outside any cached function."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import streamlit as st


@contextmanager
def progress_bar(
    describe: Callable[[int, int], str], cancel_key: str, on_cancel: Callable[..., None] | None = None, args: tuple = ()
) -> Iterator[Callable[[int, int], None]]:
    """A bar (and a Cancel button when ``on_cancel`` is given) for the block; yields ``progress(done, total)``.

    Clicking Cancel, or changing any setting, reruns the page: Streamlit stops the script at its next page update,
    i.e. inside ``progress``, and the work cleans up on the way out. Both elements are removed afterwards.

    Example::

        with progress_bar(lambda done, total: f"Run {done} of {total}…", "cancel-x", on_cancel) as progress:
            result = slow_work(progress=progress)
    """
    bar, stop = st.empty(), st.empty()
    if on_cancel is not None:
        stop.button("Cancel", key=cancel_key, on_click=on_cancel, args=args, icon=":material/close:")
    try:
        yield lambda done, total: bar.progress(done / total, text=describe(done, total))
    finally:
        bar.empty()
        stop.empty()
