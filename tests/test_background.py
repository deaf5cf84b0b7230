"""BackgroundWork: one job per key whoever asks, stopped only when nobody follows it, results kept."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from dashboard.background import BackgroundWork, Cancelled
from dashboard.shared_results import SharedResults


@pytest.fixture()
def pool():
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


class GatedWork:
    """Work of ``steps`` steps that waits at each step until the test opens the gate; counts its starts."""

    def __init__(self, steps: int = 3) -> None:
        self.steps = steps
        self.starts = 0
        self.gate = threading.Event()

    def __call__(self, progress) -> int:
        self.starts += 1
        for step in range(1, self.steps + 1):
            assert self.gate.wait(10)
            progress(step, self.steps)
        return 42


def test_two_followers_share_one_job_and_the_result_is_kept(pool) -> None:
    results: SharedResults[int] = SharedResults(max_entries=4, ttl=60)
    work = BackgroundWork(results, pool)
    gated = GatedWork()
    first = work.follow("key", "session-a", gated)
    again = work.follow("key", "session-a", gated)  # a rerun of the same session waits for the same job
    other = work.follow("key", "session-b", gated)
    assert first is again is other
    assert work.running("key")
    gated.gate.set()
    assert first.future.result(timeout=10) == 42
    assert gated.starts == 1
    assert results.get("key") == 42
    assert not work.running("key")
    assert (first.done, first.total) == (3, 3)


def test_one_follower_leaving_does_not_stop_anothers_work(pool) -> None:
    work = BackgroundWork(SharedResults(max_entries=4, ttl=60), pool)
    gated = GatedWork()
    job = work.follow("key", "session-a", gated)
    work.follow("key", "session-b", gated)
    work.leave("key", "session-a")
    gated.gate.set()
    assert job.future.result(timeout=10) == 42


def test_work_stops_when_its_last_follower_leaves_and_starts_afresh_when_asked_again(pool) -> None:
    results: SharedResults[int] = SharedResults(max_entries=4, ttl=60)
    work = BackgroundWork(results, pool)
    gated = GatedWork()
    job = work.follow("key", "session-a", gated)
    work.leave("key", "session-a")
    assert not work.running("key")
    gated.gate.set()
    with pytest.raises(Cancelled):
        job.future.result(timeout=10)
    assert results.get("key") is None
    again = work.follow("key", "session-a", gated)
    assert again is not job
    assert again.future.result(timeout=10) == 42


def test_an_error_reaches_the_follower_and_is_not_kept(pool) -> None:
    results: SharedResults[int] = SharedResults(max_entries=4, ttl=60)
    work = BackgroundWork(results, pool)

    def broken(progress) -> int:
        raise ValueError("bad image")

    job = work.follow("key", "session-a", broken)
    with pytest.raises(ValueError, match="bad image"):
        job.future.result(timeout=10)
    assert results.get("key") is None
    assert not work.running("key")
