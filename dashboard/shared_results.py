"""Results shared by every session: a small thread-safe LRU store keyed by content, with a time to live.

Streamlit's ``st.cache_data`` records every page element created while a cached function runs and replays it
on later hits; a progress bar drawn by a slow computation then cannot be replayed and the hit fails
(``CacheReplayClosureError``). Slow work therefore runs outside Streamlit's caches, draws its own progress, and
keeps its result here. Keys are content hashes and settings, never names chosen by a client, and values are
read-only, so one session's result can serve another without exposing anything but the same pixels' maps.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Value = TypeVar("Value")


class SharedResults(Generic[Value]):
    """At most ``max_entries`` values, each kept ``ttl`` seconds after it was stored, least recently used first out.

    Example::

        store = SharedResults[int](max_entries=2, ttl=60)
        store.put(("a", 1), 10)
        store.get(("a", 1))          # 10
        store.get(("b", 2))          # None
    """

    def __init__(self, max_entries: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[Hashable, tuple[float, Value]] = OrderedDict()
        self._lock = threading.Lock()
        self._max_entries = max_entries
        self._ttl = ttl
        self._clock = clock

    def get(self, key: Hashable) -> Value | None:
        """The value stored under ``key``, or ``None`` when absent or expired."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            stored, value = entry
            if self._clock() - stored > self._ttl:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Value) -> Value:
        """Store ``value`` under ``key`` (evicting the least recently used beyond ``max_entries``); returns it."""
        with self._lock:
            self._entries[key] = (self._clock(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget every value."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
