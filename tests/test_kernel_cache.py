"""Every numba kernel loads from numba's disk cache in a new process instead of compiling.

A kernel that captures another jitted function in a closure gets a new cache key in every
process (the captured dispatcher pickles differently each time), so every gunicorn worker
compiled all three afresh: about 11 s of CPU, taken from its first uploads."""

from __future__ import annotations

import json
import subprocess
import sys

from chestx import gate, jpeg_dc, resample

MODULES = (jpeg_dc, resample, gate)

LOAD_AND_REPORT = """
import json
from chestx import gate, jpeg_dc, resample
report = {}
for module in (jpeg_dc, resample, gate):
    module.prepare(wait=True)
    stats = module._KERNEL.get().stats
    report[module.__name__] = [sum(stats.cache_hits.values()), sum(stats.cache_misses.values())]
print(json.dumps(report))
"""


def test_a_new_process_loads_every_kernel_from_the_cache():
    for module in MODULES:  # fills the cache, if this checkout's is empty
        module.prepare(wait=True)
        assert module.ready(), f"{module.__name__}'s kernel couldn't load (see the log)"
    run = subprocess.run(
        [sys.executable, "-c", LOAD_AND_REPORT], capture_output=True, text=True, check=True
    )
    report = json.loads(run.stdout)
    assert report == {module.__name__: [1, 0] for module in MODULES}, report
