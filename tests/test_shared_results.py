"""The store that keeps explanations for every session: LRU order, time to live, thread safety."""

from __future__ import annotations

import threading

from dashboard.shared_results import SharedResults


def test_least_recently_used_goes_first() -> None:
    store = SharedResults[int](max_entries=2, ttl=60)
    store.put("a", 1)
    store.put("b", 2)
    assert store.get("a") == 1  # "a" is now the most recent
    store.put("c", 3)
    assert (store.get("a"), store.get("b"), store.get("c")) == (1, None, 3)
    assert len(store) == 2


def test_values_expire_after_their_time_to_live() -> None:
    now = [0.0]
    store = SharedResults[str](max_entries=4, ttl=10, clock=lambda: now[0])
    store.put("key", "value")
    now[0] = 10.0
    assert store.get("key") == "value"
    now[0] = 10.5
    assert store.get("key") is None and len(store) == 0


def test_concurrent_puts_keep_the_bound() -> None:
    store = SharedResults[int](max_entries=50, ttl=60)

    def fill(offset: int) -> None:
        for number in range(2000):
            store.put((offset, number), number)
            store.get((offset, number // 2))

    threads = [threading.Thread(target=fill, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store) == 50
    store.clear()
    assert len(store) == 0
