"""A small in-memory store of recent analyses, so the result page and its images are separate
requests: the page doesn't wait for Grad-CAM maps it may never show.

Entries live only in this process's memory, under a random id, for a few minutes: nothing an
upload contained is ever written to disk, and no file name is kept. Least recently used entries
go first when the store is full.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


def new_id() -> str:
    """An unguessable id (128 bits): knowing one result's URL tells nothing about another's."""
    return secrets.token_urlsafe(16)


class ResultStore(Generic[T]):
    """Thread-safe LRU with a time limit per entry."""

    def __init__(self, capacity: int, seconds: float, clock=time.monotonic):
        self.capacity = capacity
        self.seconds = seconds
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, value: T, key: str | None = None) -> str:
        key = key or new_id()
        with self._lock:
            self._expire()
            self._items[key] = (self._clock(), value)
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return key

    def get(self, key: str) -> T | None:
        with self._lock:
            self._expire()
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[1]

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._items)

    def _expire(self) -> None:
        limit = self._clock() - self.seconds
        for key in [k for k, (stored, _) in self._items.items() if stored < limit]:
            del self._items[key]
