"""SessionPool: all cores for a lone call, one core per call when calls queue up, and never more
threads running model code than there are cores."""

from __future__ import annotations

import threading
import time

import pytest

from chestx.session_pool import SessionPool


class FakeSession:
    """Stands in for an ONNX Runtime session: records how many threads it would use."""

    def __init__(self, threads: int):
        self.threads = threads


class Meter:
    """Counts the model threads running at once, as the pool hands out sessions."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.used: list[int] = []

    def call(self, pool: SessionPool, seconds: float = 0.02) -> None:
        with pool.session() as session:
            with self.lock:
                self.running += session.threads
                self.peak = max(self.peak, self.running)
                self.used.append(session.threads)
            time.sleep(seconds)
            with self.lock:
                self.running -= session.threads


def ready_pool(cores: int = 2) -> SessionPool:
    pool = SessionPool(FakeSession, cores)
    pool.start_narrow(background=False)
    return pool


def call_together(meter: Meter, pool: SessionPool, count: int, seconds: float = 0.02) -> None:
    """``count`` calls from as many threads at once; returns when all are done."""
    threads = [threading.Thread(target=meter.call, args=(pool, seconds)) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def wait_until_ready(pool: SessionPool) -> None:
    for _ in range(100):
        if pool.narrow_ready:
            return
        time.sleep(0.02)


def test_a_lone_call_gets_every_core():
    pool = ready_pool(2)
    meter = Meter()
    for _ in range(3):
        meter.call(pool, 0.0)
    assert meter.used == [2, 2, 2]
    assert pool.calls == {"wide": 3, "narrow": 0}


def test_queued_calls_run_side_by_side_on_one_core_each_and_never_oversubscribe():
    pool = ready_pool(2)
    meter = Meter()
    call_together(meter, pool, 12)
    assert len(meter.used) == 12
    assert meter.peak <= 2  # threads running model code, wide counting as 2
    assert pool.calls["narrow"] >= 8  # under load, nearly all calls share the cores
    assert meter.running == 0


def test_until_the_narrow_sessions_exist_calls_take_turns_on_the_wide_one():
    release = threading.Event()

    def make(threads: int) -> FakeSession:
        if threads == 1:
            release.wait(10)  # the narrow sessions take a while to build
        return FakeSession(threads)

    pool = SessionPool(make, 2)
    meter = Meter()
    call_together(meter, pool, 6)
    assert meter.used == [2] * 6 and meter.peak == 2
    release.set()


def test_narrow_sessions_are_built_only_when_calls_queue_up():
    built: list[int] = []

    def make(threads: int) -> FakeSession:
        built.append(threads)
        return FakeSession(threads)

    pool = SessionPool(make, 2)
    meter = Meter()
    for _ in range(5):
        meter.call(pool, 0.0)  # one at a time, as the command line calls
    assert built == [2] and not pool.narrow_ready
    call_together(meter, pool, 4, 0.05)
    wait_until_ready(pool)
    assert pool.narrow_ready and built == [2, 1, 1]
    call_together(meter, pool, 6)
    assert pool.calls["narrow"] >= 4 and meter.peak <= 2


def test_narrow_sessions_are_built_in_the_background():
    built = threading.Event()

    def make(threads: int) -> FakeSession:
        if threads == 1:
            built.wait(5)
        return FakeSession(threads)

    pool = SessionPool(make, 2)
    started = time.perf_counter()
    pool.start_narrow()  # returns at once: the build waits for `built`
    assert time.perf_counter() - started < 1 and not pool.narrow_ready
    built.set()
    wait_until_ready(pool)
    assert pool.narrow_ready


def test_a_failed_narrow_build_still_serves_on_the_wide_session(caplog):
    def make(threads: int) -> FakeSession:
        if threads == 1:
            raise RuntimeError("out of memory")
        return FakeSession(threads)

    pool = SessionPool(make, 2)
    pool.start_narrow(background=False)
    assert not pool.narrow_ready
    assert "could not be built" in caplog.text
    meter = Meter()
    call_together(meter, pool, 4)
    assert meter.used == [2] * 4


def test_one_core_has_one_session():
    pool = ready_pool(1)
    assert pool.narrow_ready
    meter = Meter()
    call_together(meter, pool, 4)
    assert meter.peak == 1


def test_a_call_that_raises_gives_its_cores_back():
    pool = ready_pool(2)
    with pytest.raises(ValueError), pool.session():
        raise ValueError("bad input")
    meter = Meter()
    meter.call(pool, 0.0)
    assert meter.used == [2]


def test_busy_while_a_call_runs_or_waits_and_idle_after():
    pool = ready_pool(2)
    assert not pool.busy()
    inside, release = threading.Event(), threading.Event()

    def hold():
        with pool.session():
            inside.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    inside.wait(5)
    assert pool.busy()
    release.set()
    holder.join()
    assert not pool.busy()
