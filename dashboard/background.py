"""Slow work that survives a click: each computation runs once on a worker thread, followed by the sessions
that asked for it.

A Streamlit script is stopped and restarted by every click (an opacity step, another tab). Work done inside the
script would restart from zero each time; here it runs on a shared worker thread instead, and each new run of
the script simply waits for it again. The work stops early only when every session that asked for it has left
(``leave``: Cancel, or another setting asked for in its place), so one session never cancels another's work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from gradcam_core import GradCamError

from .shared_results import SharedResults

Value = TypeVar("Value")
Progress = Callable[[int, int], None]


class Cancelled(GradCamError):
    """Nobody waits for this work any more (raised inside the work, at its next progress report)."""


@dataclass
class Job(Generic[Value]):
    """One computation in flight: its future, how far it got, and the sessions waiting for it."""

    stop: threading.Event = field(default_factory=threading.Event)
    followers: set[str] = field(default_factory=set)
    done: int = 0
    total: int = 0
    future: Future[Value] = field(default_factory=Future)

    def report(self, done: int, total: int) -> None:
        """The work's progress callback: records the step, or stops the work when nobody follows it."""
        if self.stop.is_set():
            raise Cancelled("The work was cancelled.")
        self.done, self.total = done, total


class BackgroundWork(Generic[Value]):
    """Computations keyed like ``results`` (where each finished value is kept), run once each on ``pool``.

    Example::

        work = BackgroundWork(SharedResults(max_entries=8, ttl=60), ThreadPoolExecutor(2))
        job = work.follow(("image", "scorecam"), "session-1", lambda progress: slow(progress=progress))
        job.future.result()          # the value; a second follower of the same key shares the same job
    """

    def __init__(self, results: SharedResults[Value], pool: Executor) -> None:
        self._results = results
        self._pool = pool
        self._jobs: dict[Hashable, Job[Value]] = {}
        self._lock = threading.Lock()

    def follow(self, key: Hashable, follower: str, work: Callable[[Progress], Value]) -> Job[Value]:
        """The job computing ``key`` (started now unless it already runs), with ``follower`` waiting for it."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None or job.stop.is_set():
                job = Job()
                self._jobs[key] = job
                self._pool.submit(self._run, key, job, work)
            job.followers.add(follower)
            return job

    def leave(self, key: Hashable, follower: str) -> None:
        """``follower`` no longer waits for ``key``; the work stops when nobody else does."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                return
            job.followers.discard(follower)
            if not job.followers:
                job.stop.set()

    def running(self, key: Hashable) -> bool:
        """Whether ``key`` is being computed (and not cancelled)."""
        with self._lock:
            job = self._jobs.get(key)
            return job is not None and not job.stop.is_set()

    def _run(self, key: Hashable, job: Job[Value], work: Callable[[Progress], Value]) -> None:
        """Compute on a worker thread; keep the value in the results, hand it (or the error) to the followers."""
        try:
            job.report(0, 0)
            value = self._results.put(key, work(job.report))
        except Exception as error:  # noqa: BLE001 - handed to the waiting sessions, which report it
            self._forget(key, job)
            job.future.set_exception(error)
        else:
            self._forget(key, job)
            job.future.set_result(value)

    def _forget(self, key: Hashable, job: Job[Value]) -> None:
        """Drop the finished ``job`` (unless a newer job for ``key`` has replaced it)."""
        with self._lock:
            if self._jobs.get(key) is job:
                del self._jobs[key]
