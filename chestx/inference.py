"""Loading a saved model with its card, once, and predicting the 14 probabilities.

The app, the command line and evaluation all go through ``Predictor``: it checks that model.h5
and model.json belong together and feeds images prepared by the shared preprocessing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chestx.card import ModelCard, check_card
from chestx.errors import ModelError
from chestx.imaging import Radiograph, load_for_model, preprocess, read_image
from chestx.labels import OBSERVATIONS

log = logging.getLogger(__name__)

DEFAULT_MODEL = Path("model/model.h5")
#: What CHESTX_RUNTIME may say (see Predictor).
RUNTIME_CHOICES = ("auto", "onnx", "openvino", "onnxruntime", "tensorflow")
HOW_TO_GET_A_MODEL = (
    "run `make run` (builds the demo model when none exists), `chestx demo-model`, or train one "
    "with `chestx train --data DIR`"
)


@dataclass(frozen=True)
class Prediction:
    probabilities: dict[str, float]  # observation -> probability, in OBSERVATIONS order
    seconds: float

    def ranked(self) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda item: item[1], reverse=True)


def card_path_for(model_path: Path) -> Path:
    return model_path.with_name("model.json") if model_path.suffix == ".h5" else model_path


class Predictor:
    """model.h5 and its card, loaded once per process, served by OpenVINO or ONNX Runtime.

    Safe to call from many threads: calls on the ONNX form are scheduled onto the cores by the
    served model's SessionPool, TensorFlow calls run one at a time.

    ``runtime`` (default "auto"; ``$CHESTX_RUNTIME`` overrides):
    - "auto" serves the ONNX form of model.h5 (chestx.export) on the fastest installed runtime
      (chestx.runtimes), converting it first if it is missing or stale, and falls back to
      TensorFlow only if that fails;
    - "onnx" is the same but never falls back; "openvino" or "onnxruntime" ask for one runtime;
    - "tensorflow" is the Keras model as a tf.function.
    TensorFlow is imported only for "tensorflow", for a conversion, or when ``model`` (the
    Keras model, e.g. for chestx.explain.GradCam) is first used.
    """

    def __init__(self, model_path: str | Path = DEFAULT_MODEL, runtime: str | None = None):
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelError(f"model file {self.model_path} not found: {HOW_TO_GET_A_MODEL}")
        self.card = ModelCard.load(card_path_for(self.model_path))
        runtime = (runtime or os.environ.get("CHESTX_RUNTIME") or "auto").lower()
        if runtime not in RUNTIME_CHOICES:
            raise ModelError(f"unknown runtime {runtime!r}: {', '.join(RUNTIME_CHOICES)}")
        self._keras = None
        self._keras_lock = threading.Lock()
        self.served = None
        if runtime != "tensorflow":
            onnx_runtime = "auto" if runtime in ("auto", "onnx") else runtime
            self.served = self._load_served(onnx_runtime, strict=runtime != "auto")
        if self.served is not None:
            self.runtime = self.served.runtime
            check_card(self.card, self.served.num_outputs, self.served.image_size)
            self._call = self.served.predict
        else:
            self.runtime = "tensorflow"
            model = self.model
            check_card(self.card, int(model.output_shape[-1]), int(model.input_shape[1]))
            self._call = _one_at_a_time(_compiled_call(model))

    def _load_served(self, runtime: str, strict: bool):
        from chestx import export

        try:
            return export.ensure_served(self.model_path, runtime=runtime)
        except ModelError:
            if strict:
                raise
        except Exception as error:  # tf2onnx, OpenVINO and ONNX Runtime raise many kinds
            if strict:
                raise ModelError(f"can't serve {self.model_path} from ONNX: {error}") from None
        log.warning("serving %s with TensorFlow: no ONNX form could be made", self.model_path)
        return None

    @property
    def model(self):
        """The Keras model, loaded (with TensorFlow) on first use only."""
        with self._keras_lock:
            if self._keras is None:
                self._keras = _load_keras(self.model_path)
            return self._keras

    @property
    def loaded(self) -> bool:
        return self.served is not None or self._keras is not None

    @property
    def image_size(self) -> int:
        return self.card.image_size

    def busy(self) -> bool:
        """True while another prediction runs or waits (chestx.session_pool): the cores are
        taken, so decoding an upload on two of them would only slow that prediction down."""
        return self.served is not None and self.served.pool.busy()

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """(N, 14) probabilities for preprocessed (N, size, size, 3) images."""
        return np.asarray(self._call(np.asarray(images, dtype=np.float32)))

    def predict_radiograph(self, radiograph: Radiograph) -> Prediction:
        start = time.perf_counter()
        return self.predict_image(preprocess(radiograph.pixels, self.image_size), start)

    def predict_image(self, image: np.ndarray, start: float | None = None) -> Prediction:
        """The prediction for one preprocessed (size, size, 3) image."""
        start = time.perf_counter() if start is None else start
        values = self.predict_batch(image[None])[0]
        return Prediction(
            dict(zip(OBSERVATIONS, map(float, values), strict=True)), time.perf_counter() - start
        )

    def predict_file(self, source: str | Path | bytes) -> Prediction:
        return self.predict_radiograph(read_image(source, min_size=self.image_size))

    def predict_paths(self, paths: list[str], batch_size: int = 16, progress: bool = False):
        """(N, 14) probabilities for image files, in batches."""
        from tqdm.auto import tqdm

        out = np.zeros((len(paths), len(OBSERVATIONS)), dtype=np.float32)
        for start in tqdm(range(0, len(paths), batch_size), disable=not progress, unit="batch"):
            chunk = paths[start : start + batch_size]
            images = np.stack([load_for_model(p, self.image_size) for p in chunk])
            out[start : start + len(chunk)] = self.predict_batch(images)
        return out


def _load_keras(path: Path):
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # h5py and keras raise many kinds for a bad file
        raise ModelError(
            f"model file {path} can't be loaded ({type(error).__name__}: {error}"[:300]
            + f"): {HOW_TO_GET_A_MODEL}"
        ) from None


def _one_at_a_time(call):
    """TensorFlow already uses every core for one call: two at once only slow both down."""
    lock = threading.Lock()

    def locked(images):
        with lock:
            return call(images)

    return locked


def _compiled_call(model):
    """The model as a tf.function: several times faster than model.predict for small batches."""
    import tensorflow as tf

    size = int(model.input_shape[1])

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    def call(images):
        return model(images, training=False)

    return lambda images: call(images).numpy()
