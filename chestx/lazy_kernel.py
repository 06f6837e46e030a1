"""numba kernels loaded off the request path, in a background thread, on first use.

Importing numba and loading a compiled kernel from numba's disk cache takes about a second (the
first time, compiling the three kernels takes about 16 s of CPU), which the web app can't spend
before its first answer. So the first caller that wants a kernel starts loading it and takes its
plain path meanwhile (numpy or Pillow); later callers get the kernel. Every kernel has such a
plain path giving the same numbers (their tests hold the two equal), so which one ran never
shows in a result. The kernels themselves live in chestx.kernels.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Kernel = TypeVar("Kernel")


class LazyKernel(Generic[Kernel]):
    """A kernel that ``build`` compiles (or loads from numba's cache) in a background thread.

    ``build`` imports numba, defines the kernel and calls it once with the argument types every
    real call uses, so that no call compiles. If it fails (no numba, no writable cache, an
    unsupported CPU), the plain path stays in use and the reason is logged once."""

    def __init__(self, name: str, build: Callable[[], Kernel]):
        self.name = name
        self._build = build
        self._kernel: Kernel | None = None
        self._loading: threading.Thread | None = None
        self._lock = threading.Lock()

    def get(self) -> Kernel | None:
        """The kernel, or None until it is loaded (the first call starts loading it)."""
        kernel = self._kernel
        if kernel is None:
            self.prepare()
        return kernel

    def prepare(self, wait: bool = False) -> None:
        """Start loading the kernel (once); ``wait`` blocks until that is over."""
        with self._lock:
            if self._loading is None:
                self._loading = threading.Thread(target=self._load, name=self.name, daemon=True)
                self._loading.start()
        if wait:
            self._loading.join()

    def ready(self) -> bool:
        return self._kernel is not None

    def _load(self) -> None:
        try:
            kernel = self._build()
        except Exception:
            log.warning("%s is unavailable; the plain path runs instead", self.name, exc_info=True)
            return
        self._kernel = kernel
