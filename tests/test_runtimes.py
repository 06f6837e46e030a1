"""chestx.runtimes: both runtimes open ChestX's ONNX files the same way and can be called from
several threads from their very first call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from chestx import runtimes
from chestx.errors import ModelError

REPO = Path(__file__).resolve().parents[1]

FIRST_CALLS_SIDE_BY_SIDE = """
import sys, threading
import numpy as np
from chestx import runtimes
graph = runtimes.open_graph(sys.argv[1], "openvino")
sessions = [graph.session(1) for _ in range(2)]
image = np.zeros((1, graph.image_size, graph.image_size, 3), np.float32)
together = threading.Barrier(len(sessions))

def first_call(session):
    together.wait()  # both first calls at the same moment
    session.run(["predictions"], {"image": image})

threads = [threading.Thread(target=first_call, args=(s,)) for s in sessions]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("done")
"""


def test_first_openvino_calls_from_two_threads_at_once_do_not_hang(tiny_model):
    """pybind11's first numpy lookup deadlocked with the GIL when two sessions made their first
    call together (it hung the feature cache's side-by-side extraction). The race needs a fresh
    process each time; without the fix about 3 runs in 8 hung, so 4 runs catch it 85 % of the
    time."""
    for _ in range(4):
        result = subprocess.run(
            [sys.executable, "-c", FIRST_CALLS_SIDE_BY_SIDE, str(tiny_model.with_suffix(".onnx"))],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip().endswith("done")


@pytest.mark.parametrize("runtime", runtimes.RUNTIMES)
def test_both_runtimes_read_the_same_graph(tiny_model, runtime):
    graph = runtimes.open_graph(tiny_model.with_suffix(".onnx"), runtime)
    assert graph.runtime == runtime
    assert graph.metadata["chestx_source_sha256"]
    assert {"predictions", "features"} <= set(graph.outputs)
    session = graph.session(1)
    images = np.zeros((3, graph.image_size, graph.image_size, 3), np.float32)
    predictions, features = session.run(["predictions", "features"], {"image": images})
    assert predictions.shape == (3, 14) and features.shape[0] == 3


def test_choose_prefers_openvino_and_names_the_fix_when_missing(monkeypatch):
    assert runtimes.choose("auto") == "openvino"
    assert runtimes.choose("ONNXRuntime") == "onnxruntime"
    monkeypatch.setattr(runtimes, "installed", lambda name: name == "onnxruntime")
    assert runtimes.choose("auto") == "onnxruntime"
    monkeypatch.setattr(runtimes, "installed", lambda name: False)
    with pytest.raises(ModelError, match="make install"):
        runtimes.choose("auto")
