"""The in-memory result store: least recently used first out, and a time limit."""

from __future__ import annotations

from chestx.web.store import ResultStore, new_id


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_least_recently_used_goes_first():
    store = ResultStore(capacity=2, seconds=60)
    a = store.put("a")
    b = store.put("b")
    assert store.get(a) == "a"  # a is now the most recent
    c = store.put("c")
    assert store.get(b) is None and store.get(a) == "a" and store.get(c) == "c"
    assert len(store) == 2


def test_entries_expire():
    clock = Clock()
    store = ResultStore(capacity=10, seconds=60, clock=clock)
    key = store.put("x")
    clock.now = 59
    assert store.get(key) == "x"
    clock.now = 61
    assert store.get(key) is None and len(store) == 0


def test_ids_are_random_and_long():
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) >= 20 for i in ids)
