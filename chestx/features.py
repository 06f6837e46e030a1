"""Pooled DenseNet121 features, computed once per image and size and cached on disk.

With a frozen backbone the head only ever sees these 1024 numbers per image, so training never
runs the backbone twice for the same file: the cache key is the backbone's starting weights, the
image size, and the file (absolute path, size, modification time).

The backbone itself runs on the serving runtime, OpenVINO or ONNX Runtime (chestx.runtimes): its
ONNX form is converted once per weights and size, checked against Keras to 1e-4 and kept in the
cache folder as extractor.onnx, so it runs at serving's speed, with one one-thread session per
core side by side, as serving runs under load. Each core's worker reads, runs and stores one
image after another, so one core's decoding overlaps the other's model and no core waits for
another. Below ``ONNX_MIN_IMAGES`` missing images, with no extractor.onnx yet, the conversion
(tens of seconds) would cost more than it saves and Keras runs instead, a batch at a time, with
the next batch decoded in a thread while the current one is in the model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from chestx.imaging import load_for_model
from chestx.network import FEATURE_DIM, pooled_features, weights_id
from chestx.runtimes import physical_cores

DEFAULT_CACHE_DIR = Path(os.environ.get("CHESTX_CACHE", ".cache")) / "features"
#: Fewest missing images worth converting the backbone to ONNX for.
ONNX_MIN_IMAGES = 160

log = logging.getLogger(__name__)


def file_key(path: str | Path) -> str:
    """Key of one image file: changes when the file is replaced or edited."""
    path = Path(path).resolve()
    stat = path.stat()
    text = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha1(text.encode()).hexdigest()


class SideBySide:
    """One one-thread session per core over ``graph``, one image per call: on 2 cores that gets
    10-20 % more images per second through than one all-core session (the same reason serving
    does it under load)."""

    def __init__(self, graph):
        self.sessions = [graph.session(1) for _ in range(physical_cores())]

    @staticmethod
    def one(session, image: np.ndarray) -> np.ndarray:
        """The pooled features of one preprocessed (size, size, 3) image."""
        from chestx import export

        return session.run([export.FEATURES], {export.INPUT_NAME: image[None]})[0][0]


class FeatureCache:
    """Feature vectors on disk, one .npy per image under ``<dir>/<weights>-<size>/``."""

    def __init__(self, cache_dir: str | Path, weights: str | None, image_size: int, seed: int = 0):
        self.weights = weights
        self.image_size = image_size
        self.seed = seed
        self.folder = Path(cache_dir) / f"{weights_id(weights, seed)}-{image_size}"
        self._extractor = None
        self._onnx_runner: tuple[SideBySide, int] | None = None
        self.computed = 0  # images run through the backbone by this object (for reports)
        self.runtime: str | None = None  # what computed them: "openvino", "onnxruntime", ...

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def extractor(self):
        """The pooled-feature model, built on first use (also exported with the head)."""
        if self._extractor is None:
            self._extractor = pooled_features(self.image_size, self.weights, self.seed)
        return self._extractor

    def runner(self, missing: int):
        """What computes pooled features, and its batch size: a SideBySide over the ONNX
        backbone (one image per call, per core), or Keras's batch function. The ONNX one is
        kept: its sessions take a second to compile, so a run that asks for features several
        times (train, then validation) compiles them once."""
        from chestx import export

        if self._onnx_runner is not None:
            return self._onnx_runner

        path = self.folder / "extractor.onnx"
        key = f"{self.folder.name}"
        graph = export.load_extractor(path, key)
        if (
            graph is None
            and missing >= ONNX_MIN_IMAGES
            and os.environ.get("CHESTX_RUNTIME", "auto") not in ("tensorflow",)
        ):
            try:
                graph = export.export_extractor(self.extractor(), path, key)
            except Exception as error:  # tf2onnx raises many kinds: Keras still works
                log.warning("feature extraction stays on Keras: %s", str(error)[:300])
        if graph is not None:
            self.runtime = graph.runtime
            self._onnx_runner = SideBySide(graph), 1  # one image per call, per core
            return self._onnx_runner
        model = self.extractor()
        self.runtime = "tensorflow"
        return (lambda images: model.predict_on_batch(images)), 32

    def features(
        self, paths: Sequence[str], batch_size: int | None = None, progress: bool = True
    ) -> np.ndarray:
        """(N, 1024) features for ``paths``, computing and storing only the missing ones."""
        from tqdm.auto import tqdm

        keys = [file_key(p) for p in paths]
        out = np.zeros((len(paths), FEATURE_DIM), dtype=np.float32)
        missing = []
        for i, key in enumerate(keys):
            cached = self._path(key)
            if cached.is_file():
                out[i] = np.load(cached)
            else:
                missing.append(i)
        if not missing:
            return out
        run, default_batch = self.runner(len(missing))
        bar = tqdm(total=len(missing), desc="features", unit="img", disable=not progress)
        if isinstance(run, SideBySide):
            self._each_core_on_its_own(run, paths, keys, missing, out, bar)
        else:
            self._in_batches(run, batch_size or default_batch, paths, keys, missing, out, bar)
        bar.close()
        return out

    def _each_core_on_its_own(self, run: SideBySide, paths, keys, missing, out, bar) -> None:
        """A worker per session reads, runs and stores the next missing image, until none are
        left: while one decodes, the other's model runs, and no core waits at a batch's end."""
        lock = threading.Lock()
        todo = iter(missing)

        def work(session) -> None:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                vector = run.one(session, load_for_model(paths[i], self.image_size))
                out[i] = vector
                self._store(keys[i], vector)
                with lock:
                    self.computed += 1
                    bar.update(1)

        with ThreadPoolExecutor(max_workers=len(run.sessions)) as pool:
            for done in [pool.submit(work, session) for session in run.sessions]:
                done.result()

    def _in_batches(self, run, batch_size: int, paths, keys, missing, out, bar) -> None:
        """Batches through ``run``, the next one decoded while this one is in the model."""
        chunks = [
            missing[start : start + batch_size] for start in range(0, len(missing), batch_size)
        ]

        def load(rows):
            return np.stack([load_for_model(paths[i], self.image_size) for i in rows])

        with ThreadPoolExecutor(max_workers=2) as pool:
            pending = pool.submit(load, chunks[0])
            for number, rows in enumerate(chunks):
                images = pending.result()
                if number + 1 < len(chunks):  # decode the next batch while this one runs
                    pending = pool.submit(load, chunks[number + 1])
                vectors = np.asarray(run(np.ascontiguousarray(images, np.float32)), np.float32)
                for i, vector in zip(rows, vectors, strict=True):
                    out[i] = vector
                    self._store(keys[i], vector)
                self.computed += len(rows)
                bar.update(len(rows))

    def _store(self, key: str, vector: np.ndarray) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(temporary, vector)
        os.replace(temporary, target)  # atomic: a killed run leaves no torn file
