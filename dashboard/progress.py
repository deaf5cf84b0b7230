"""Waiting for slow work on the page: a progress bar and a Cancel button, while the work runs in the background.

The work itself runs on a worker thread (``BackgroundWork``), so a click that reruns the page (an opacity step,
another tab) does not restart it: the new run finds the same job and waits for it again. Cancel, or asking the
same place of the page for something else, makes this session leave the job; it stops when nobody follows it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Hashable
from concurrent.futures import wait
from typing import TypeVar

import streamlit as st

from .background import BackgroundWork, Progress

Value = TypeVar("Value")
POLL_SECONDS = 0.25
"""How often the bar is redrawn; each redraw is also where Streamlit can stop the script for a newer run."""
SESSION_KEY = "session-id"
FOLLOWING_KEY = "following"
"""Session state: the job key each place of the page waits for."""


def session_id() -> str:
    """A random id for this browser session (who follows a job; never shown, never derived from the user)."""
    return st.session_state.setdefault(SESSION_KEY, uuid.uuid4().hex)


def computed_in_background(
    work: BackgroundWork[Value],
    key: Hashable,
    compute: Callable[[Progress], Value],
    describe: Callable[[int, int], str],
    place: str,
    on_cancel: Callable[..., None] | None = None,
    args: tuple = (),
) -> Value:
    """The value of ``compute`` for ``key``, computed on a worker thread while a bar shows ``describe(done, total)``.

    ``place`` names where on the page the value is wanted (one job per place and session). With ``on_cancel``
    a Cancel button is drawn; clicking it leaves the job and calls ``on_cancel(*args)``.

    Example::

        found = computed_in_background(work, key, lambda progress: slow(progress=progress),
                                       lambda done, total: f"Run {done} of {total}…", "explanation", back_to_fast)
    """
    follower = session_id()
    following: dict[str, Hashable] = st.session_state.setdefault(FOLLOWING_KEY, {})
    previous = following.get(place)
    if previous is not None and previous != key:
        work.leave(previous, follower)  # this place now asks for something else
    following[place] = key
    job = work.follow(key, follower, compute)
    bar, stop = st.empty(), st.empty()
    if on_cancel is not None:
        stop.button("Cancel", key=f"cancel-{place}", on_click=cancel, args=(work, place, on_cancel, args),
                    icon=":material/close:")
    try:
        while not job.future.done():
            text = describe(job.done, job.total) if job.total else "Waiting for the server to start…"
            bar.progress(job.done / job.total if job.total else 0.0, text=text)
            wait([job.future], timeout=POLL_SECONDS)
    finally:
        bar.empty()
        stop.empty()
    following.pop(place, None)
    return job.future.result()


def cancel(work: BackgroundWork, place: str, on_cancel: Callable[..., None], args: tuple) -> None:
    """The Cancel button's callback: this session leaves the job at ``place``, then ``on_cancel(*args)``."""
    key = st.session_state.get(FOLLOWING_KEY, {}).pop(place, None)
    if key is not None:
        work.leave(key, session_id())
    on_cancel(*args)
