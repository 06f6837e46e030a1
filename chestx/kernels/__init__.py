"""numba kernels, each imported only by the ``LazyKernel`` that loads it (chestx.lazy_kernel).

Each kernel and its helpers are module-level functions: numba's disk cache keys a closure by
its captured values, and a captured dispatcher pickles differently in every process, so kernels
defined inside a function were compiled afresh by every process (about 11 s of CPU for the
three, on a worker's first uploads). Here they load from the cache in well under a second.
The plain paths (Pillow, numpy) stay in ``jpeg_dc``, ``resample`` and ``gate``; each module here
imports numba, which the web app must not do before its first answer.
"""
