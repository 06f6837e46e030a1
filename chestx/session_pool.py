"""Model sessions sized to the traffic: every core for a lone request, one core each under load.

ONNX Runtime splits each operator of one call across its threads, and every thread waits for
the slowest at the end of each of DenseNet121's ~400 operators. That barrier is what makes one
image fastest on all cores (lowest latency), and it is also what wastes time under load: on
this project's 2-core machine, one 2-thread session runs 15 images/s, while two 1-thread
sessions called side by side run 18 (bench/inference.py measures both).

So a ``SessionPool`` holds one wide session (all cores) and one narrow session (one thread) per
core, and hands out cores rather than sessions: a request that finds every core free and no one
waiting takes the wide session; otherwise it takes one core and a narrow session, and waits for
a core if none is free. Never more threads than cores run model code, whatever the traffic.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


class SessionPool:
    """Hands out the wide session or a narrow one, so model calls never oversubscribe cores.

    ``make_session(threads)`` builds one session. The narrow sessions are built in a background
    thread the first time a call has to wait (or by ``start_narrow``): never before the first
    answer, which they would slow down, and never in a process that calls one at a time, such
    as the command line. Until they are ready, every call takes the wide session, in turn.
    """

    def __init__(self, make_session: Callable[[int], Any], cores: int, wide: Any | None = None):
        self.cores = max(1, cores)
        self._make_session = make_session
        self.wide = wide if wide is not None else make_session(self.cores)
        self._narrow_free: list[Any] = []
        self._narrow_ready = self.cores == 1  # one core: the wide session is the narrow one
        self._building = False
        self._free_cores = self.cores
        self._waiting = 0
        self._condition = threading.Condition()
        self.calls = {"wide": 0, "narrow": 0}

    def start_narrow(self, background: bool = True) -> None:
        """Build the one-thread sessions now (in a thread of their own unless ``background`` is
        False); a no-op once they are built or being built."""
        with self._condition:
            claimed = self._claim_build()
        if claimed and background:
            self._launch_build()
        elif claimed:
            self._build_narrow()

    def _claim_build(self) -> bool:
        """True if the caller (holding the lock) is the one to build the narrow sessions."""
        if self._narrow_ready or self._building:
            return False
        self._building = True
        return True

    def _launch_build(self) -> None:
        # Not a daemon: a runtime still compiling when the interpreter exits aborts the process
        # ("terminate called without an active exception"); exit waits for it instead (< 1 s).
        threading.Thread(target=self._build_narrow, name="chestx-narrow-sessions").start()

    def _build_narrow(self) -> None:
        try:
            sessions = [self._make_session(1) for _ in range(self.cores)]
        except Exception as error:  # only throughput under load is lost: say so and go on
            log.warning(
                "one-thread model sessions could not be built (%s): serving one "
                "request at a time on all cores",
                error,
            )
            return
        with self._condition:
            self._narrow_free.extend(sessions)
            self._narrow_ready = True
            self._condition.notify_all()

    @property
    def narrow_ready(self) -> bool:
        return self._narrow_ready

    def busy(self) -> bool:
        """True while a model call runs or waits: every core has work, so other work on the
        request path had better stay on its own thread. Read without the lock: a hint."""
        return self._free_cores < self.cores or self._waiting > 0

    @contextmanager
    def session(self) -> Iterator[Any]:
        """A session to run one call on; the cores it uses are reserved until the block ends."""
        with self._condition:
            self._waiting += 1
            try:
                while not self._can_start():
                    if self._claim_build():  # calls queue up: time for one core each
                        self._launch_build()
                    self._condition.wait()
            finally:
                self._waiting -= 1
            if self._free_cores == self.cores and (self._waiting == 0 or not self._narrow_ready):
                taken, session = self.cores, self.wide
                self.calls["wide"] += 1
            else:
                taken, session = 1, self._narrow_session()
                self.calls["narrow"] += 1
            self._free_cores -= taken
        try:
            yield session
        finally:
            with self._condition:
                self._free_cores += taken
                if session is not self.wide:
                    self._narrow_free.append(session)
                self._condition.notify_all()

    def _can_start(self) -> bool:
        if not self._narrow_ready:
            return self._free_cores == self.cores  # the wide session only: one call at a time
        return self._free_cores > 0

    def _narrow_session(self) -> Any:
        if self.cores == 1:
            return self.wide
        return self._narrow_free.pop()
