"""Pooled DenseNet121 features, computed once per image and size and cached on disk.

With a frozen backbone the head only ever sees these 1024 numbers per image, so training never
runs the backbone twice for the same file: the cache key is the backbone's starting weights, the
image size, and the file (absolute path, size, modification time).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from chestx.imaging import load_for_model
from chestx.network import FEATURE_DIM, pooled_features, weights_id

DEFAULT_CACHE_DIR = Path(os.environ.get("CHESTX_CACHE", ".cache")) / "features"


def file_key(path: str | Path) -> str:
    """Key of one image file: changes when the file is replaced or edited."""
    path = Path(path).resolve()
    stat = path.stat()
    text = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha1(text.encode()).hexdigest()


class FeatureCache:
    """Feature vectors on disk, one .npy per image under ``<dir>/<weights>-<size>/``."""

    def __init__(self, cache_dir: str | Path, weights: str | None, image_size: int, seed: int = 0):
        self.weights = weights
        self.image_size = image_size
        self.seed = seed
        self.folder = Path(cache_dir) / f"{weights_id(weights, seed)}-{image_size}"
        self._extractor = None
        self.computed = 0  # images run through the backbone by this object (for reports)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def extractor(self):
        """The pooled-feature model, built on first use (also exported with the head)."""
        if self._extractor is None:
            self._extractor = pooled_features(self.image_size, self.weights, self.seed)
        return self._extractor

    def features(
        self, paths: Sequence[str], batch_size: int = 32, progress: bool = True
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
        model = self.extractor()
        bar = tqdm(total=len(missing), desc="features", unit="img", disable=not progress)
        with ThreadPoolExecutor(max_workers=2) as pool:
            for start in range(0, len(missing), batch_size):
                rows = missing[start : start + batch_size]
                images = list(pool.map(lambda i: load_for_model(paths[i], self.image_size), rows))
                vectors = np.asarray(model.predict_on_batch(np.stack(images)), dtype=np.float32)
                for i, vector in zip(rows, vectors, strict=True):
                    out[i] = vector
                    target = self._path(keys[i])
                    target.parent.mkdir(parents=True, exist_ok=True)
                    temporary = target.with_suffix(f".{os.getpid()}.tmp.npy")
                    np.save(temporary, vector)
                    os.replace(temporary, target)  # atomic: a killed run leaves no torn file
                self.computed += len(rows)
                bar.update(len(rows))
        bar.close()
        return out
