"""The runtimes that run ChestX's ONNX graphs: OpenVINO, else ONNX Runtime.

Both are driven through ONNX Runtime's own small interface, ``session.run(output_names,
{input_name: images})``, so the session pool, Grad-CAM, the feature cache and the benchmarks
work with either. ``choose("auto")`` takes OpenVINO when it is installed: on this project's
2-core Zen 3 machine it runs DenseNet121 at batch 1 and 224 px in 51-53 ms against ONNX
Runtime's 60-62 ms (bench/inference.py prints both), chiefly because it writes each dense
layer's output straight into the block's concatenated tensor instead of copying it.
``$CHESTX_RUNTIME=onnxruntime`` (or ``openvino``) picks one explicitly.

Sessions are made with an explicit thread count (the SessionPool asks for all cores or one) and
full fp32 precision: OpenVINO would otherwise run in bf16 on CPUs that have it, and the served
model must equal model.h5 to 1e-4.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from chestx.errors import ModelError

log = logging.getLogger(__name__)

#: In the order ``auto`` tries them.
RUNTIMES = ("openvino", "onnxruntime")


class Session(Protocol):
    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list: ...


def installed(runtime: str) -> bool:
    return importlib.util.find_spec(runtime) is not None


def choose(preferred: str = "auto") -> str:
    """'openvino' or 'onnxruntime': the one asked for, or for 'auto' the first installed."""
    preferred = preferred.lower()
    if preferred == "auto":
        for runtime in RUNTIMES:
            if installed(runtime):
                return runtime
        raise ModelError("neither OpenVINO nor ONNX Runtime is installed: run `make install`")
    if preferred not in RUNTIMES:
        raise ModelError(f"unknown runtime {preferred!r}: {', '.join(RUNTIMES)} or auto")
    if not installed(preferred):
        raise ModelError(f"{preferred} is not installed: run `make install`")
    return preferred


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity on Linux, else all of them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores this process may use: one inference thread each (SMT siblings only
    contend for the same vector units). ``$CHESTX_THREADS`` overrides."""
    configured = os.environ.get("CHESTX_THREADS")
    if configured:
        return max(1, int(configured))
    usable = usable_cpus()
    try:
        import psutil

        usable = min(usable, psutil.cpu_count(logical=False) or usable)
    except ImportError:
        pass
    return max(1, usable)


@dataclass
class Graph:
    """An ONNX file opened for one runtime: its input size, outputs, metadata, and sessions."""

    path: Path
    runtime: str
    image_size: int
    outputs: dict[str, tuple]  # output name -> shape (batch dimension unknown)
    metadata: dict[str, str]
    _first: Any = None  # the session opened to read the metadata (ONNX Runtime needs one)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def session(self, threads: int) -> Session:
        """A new session on ``threads`` threads (the first call may hand out the one already
        opened to read the file)."""
        with self._lock:
            if self._first is not None and self._first.threads == threads:
                first, self._first = self._first.session, None
                return first
        if self.runtime == "openvino":
            return OpenVinoSession(_compile_openvino(self.path, self.image_size, threads))
        return ort_session(self.path, threads)


@dataclass
class _Opened:
    session: Any
    threads: int


def open_graph(path: str | Path, runtime: str, threads: int | None = None) -> Graph:
    """Read an ONNX file's shapes and metadata with ``runtime``. Raises on a torn file."""
    path = Path(path)
    threads = threads or physical_cores()
    if runtime == "openvino":
        model = _openvino_core().read_model(str(path))
        rt_info = model.get_rt_info()  # ONNX metadata_props land under "framework"
        framework = rt_info["framework"] if "framework" in rt_info else {}  # noqa: SIM401 (RTMap has no .get)
        metadata = {key: str(value.astype(str)) for key, value in framework.items()}
        image_size = int(model.inputs[0].get_partial_shape()[1].get_length())
        outputs = {
            out.get_any_name(): tuple(
                d.get_length() if d.is_static else None for d in out.get_partial_shape()
            )
            for out in model.outputs
        }
        return Graph(path, runtime, image_size, outputs, metadata)
    session = ort_session(path, threads)
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    image_size = int(session.get_inputs()[0].shape[1])
    outputs = {out.name: tuple(out.shape) for out in session.get_outputs()}
    return Graph(path, runtime, image_size, outputs, metadata, _Opened(session, threads))


# --- ONNX Runtime ---------------------------------------------------------------------------


def ort_options(threads: int | None = None, spinning: bool = False):
    """ONNX Runtime settings for serving (bench/inference.py compares them).

    Threads that spin while waiting for work win a few per cent on an idle machine but burn the
    cores that decoding other uploads (or other programs) need; they are off by default."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    return options


def ort_session(source: str | Path | bytes, threads: int | None = None, spinning: bool = False):
    """An ONNX Runtime CPU session over a file or serialized model."""
    import onnxruntime as ort

    if isinstance(source, Path):
        source = str(source)
    return ort.InferenceSession(
        source, sess_options=ort_options(threads, spinning), providers=["CPUExecutionProvider"]
    )


# --- OpenVINO -------------------------------------------------------------------------------

_core = None
_core_lock = threading.Lock()


def _openvino_core():
    """One OpenVINO Core per process, caching compiled models under $CHESTX_CACHE/openvino
    (a cached model compiles in 0.15 s instead of 0.6 s, which keeps start-up under 3 s)."""
    global _core
    with _core_lock:
        if _core is None:
            import openvino as ov

            core = ov.Core()
            # pybind11 looks up numpy's C API on first use behind a call_once that can deadlock
            # with the GIL when two threads get there together (two sessions' first calls, side
            # by side, hung the feature cache). Looking it up here, once, under our lock, fixes it.
            _ = ov.Tensor(np.zeros(1, dtype=np.float32)).data
            cache = Path(os.environ.get("CHESTX_CACHE", ".cache")) / "openvino"
            try:
                cache.mkdir(parents=True, exist_ok=True)
                core.set_property({"CACHE_DIR": str(cache)})
            except OSError:
                pass  # a read-only checkout: compile every time, 0.5 s slower to start
            _core = core
        return _core


def _compile_openvino(path: Path, image_size: int, threads: int):
    core = _openvino_core()
    model = core.read_model(str(path))
    model.reshape([1, image_size, image_size, 3])  # batch 1: larger batches run image by image
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": "f32",
        # Pinned threads would put every one-thread session on the same core.
        "ENABLE_CPU_PINNING": False,
    }
    return core.compile_model(model, "CPU", config)


def precompile(path: str | Path) -> None:
    """Fill OpenVINO's compile cache for ``path`` as the server will open it (all cores for a
    lone request, one core per request under load), so the first start after training or
    conversion compiles from the cache: 0.5 s less before the first answer. Only a warning
    if it fails: the server then compiles at start-up."""
    if not installed("openvino"):
        return
    try:
        graph = open_graph(path, "openvino")
        for threads in sorted({physical_cores(), 1}):
            graph.session(threads)
    except Exception as error:  # OpenVINO raises many kinds; serving still works without it
        log.warning("could not precompile %s with OpenVINO: %s", path, str(error)[:200])


class OpenVinoSession:
    """A compiled OpenVINO model behind ONNX Runtime's ``run``. It is compiled for batch 1 (the
    fastest per image on a CPU); a batch runs image by image. Not for two threads at once:
    the SessionPool gives each call its own session."""

    def __init__(self, compiled):
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._ports = {out.get_any_name(): out for out in compiled.outputs}

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list:
        (images,) = feeds.values()
        names = list(output_names or self._ports)
        if len(images) == 0:  # nothing to run: empty outputs of the right shape
            return [np.zeros((0, *self._ports[name].get_shape()[1:]), np.float32) for name in names]
        results: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for image in np.asarray(images, dtype=np.float32):
            answer = self._request.infer({0: image[None]})  # outputs are copies
            for name in names:
                results[name].append(answer[self._ports[name]])
        return [np.concatenate(results[name]) for name in names]
