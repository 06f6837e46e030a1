"""The served form of a model: model.h5 converted to ONNX, checked against it, run by OpenVINO
or ONNX Runtime (chestx.runtimes).

model.h5 + model.json stay the artifacts (the notebook and ``chestx train`` write them). Serving
derives ``model.onnx`` beside model.h5 (or under ``$CHESTX_CACHE/onnx/`` when that folder is
read-only) with tf2onnx, and only keeps it if its outputs equal Keras's to 1e-4 on real-looking
and random inputs. The ONNX file records the sha256 of the model.h5 it came from, so a new
model.h5 makes it stale and it is converted again.

Why: on a 2-core AVX2 CPU OpenVINO runs DenseNet121 at batch 1 in about 52 ms and ONNX Runtime
in 60 ms, against 83-100 ms for a Keras ``tf.function``; importing either runtime and compiling
the graph take under 1 s, against about 12 s for TensorFlow, model and first call. Serving never
imports TensorFlow: the ONNX graph also returns the last feature maps ('relu'), and Grad-CAM's
gradient through the small dense head is computed here in numpy (exact: global average pooling
spreads the pooled gradient evenly over the 7 x 7 grid), so a map costs one forward pass.

``chestx train`` / ``chestx demo-model`` convert at the end, ``chestx export-onnx`` on demand;
``Predictor`` converts at start-up only when no fresh ONNX file exists (logged, needs TF).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chestx import runtimes
from chestx.errors import ModelError
from chestx.network import LAST_CONV_LAYER, OUTPUT_LAYER
from chestx.runtimes import Graph, physical_cores
from chestx.session_pool import SessionPool

log = logging.getLogger(__name__)

INPUT_NAME = "image"
PREDICTIONS = "predictions"
FEATURES = "features"
OPSET = 17
TOLERANCE = 1e-4
#: Metadata keys stored in the ONNX file.
SOURCE_KEY = "chestx_source_sha256"
HEAD_KEY = "chestx_head_npz"
CHECK_KEY = "chestx_check"
#: Head activations whose derivative ``_activation_grad`` knows.
ACTIVATIONS = ("linear", "elu", "relu", "sigmoid")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_root() -> Path:
    return Path(os.environ.get("CHESTX_CACHE", ".cache")) / "onnx"


def served_candidates(model_path: str | Path, digest: str) -> list[Path]:
    """Where the ONNX form of ``model_path`` may live: beside it, then in the cache."""
    model_path = Path(model_path)
    return [model_path.with_suffix(".onnx"), cache_root() / f"{digest[:24]}.onnx"]


# --- the head's gradient, for Grad-CAM without TensorFlow ----------------------------------


@dataclass(frozen=True)
class DenseLayer:
    kernel: np.ndarray  # (inputs, outputs)
    bias: np.ndarray
    activation: str


def _activation(name: str, z: np.ndarray) -> np.ndarray:
    if name == "elu":
        return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))
    if name == "relu":
        return np.maximum(z, 0)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    return z


def _activation_grad(name: str, z: np.ndarray, a: np.ndarray) -> np.ndarray:
    if name == "elu":
        return np.where(z > 0, 1.0, np.exp(np.minimum(z, 0)))
    if name == "relu":
        return (z > 0).astype(z.dtype)
    if name == "sigmoid":
        return a * (1.0 - a)
    return np.ones_like(z)


def head_layers(model) -> list[DenseLayer] | None:
    """The dense layers between global pooling of 'relu' and the output, or None if the model
    has another shape (Grad-CAM then needs TensorFlow)."""
    import keras

    names = [layer.name for layer in model.layers]
    if LAST_CONV_LAYER not in names or OUTPUT_LAYER not in names:
        return None
    start = names.index(LAST_CONV_LAYER)
    after = model.layers[start + 1 :]
    if not after or not isinstance(after[0], keras.layers.GlobalAveragePooling2D):
        return None
    layers = []
    for layer in after[1:]:
        if isinstance(layer, keras.layers.Dropout):
            continue
        if not isinstance(layer, keras.layers.Dense):
            return None
        activation = keras.activations.serialize(layer.activation)
        activation = activation if isinstance(activation, str) else activation.get("config", "")
        if activation not in ACTIVATIONS:
            return None
        kernel, bias = layer.get_weights()
        layers.append(DenseLayer(kernel.astype(np.float32), bias.astype(np.float32), activation))
    return layers if layers and after[-1].name == OUTPUT_LAYER else None


def _pack_head(layers: list[DenseLayer]) -> str:
    arrays = {}
    for i, layer in enumerate(layers):
        arrays[f"kernel{i}"] = layer.kernel
        arrays[f"bias{i}"] = layer.bias
    arrays["activations"] = np.array([layer.activation for layer in layers])
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _unpack_head(text: str) -> list[DenseLayer]:
    with np.load(io.BytesIO(base64.b64decode(text))) as data:
        activations = [str(a) for a in data["activations"]]
        return [
            DenseLayer(data[f"kernel{i}"], data[f"bias{i}"], name)
            for i, name in enumerate(activations)
        ]


def gradcam_from_features(
    features: np.ndarray, head: list[DenseLayer], output_index: int
) -> np.ndarray:
    """Grad-CAM (Selvaraju et al.) for one image from its (H, W, C) last feature maps.

    The gradient of output ``output_index`` with respect to every feature-map cell is the
    gradient with respect to the pooled vector divided by H*W, so Grad-CAM's channel weights
    (the spatial mean of that gradient) are exactly d(output)/d(pooled) / (H*W).
    """
    features = np.asarray(features, dtype=np.float64)
    height, width, _ = features.shape
    x = features.mean(axis=(0, 1))
    cache = []
    for layer in head:
        z = x @ layer.kernel + layer.bias
        a = _activation(layer.activation, z)
        cache.append((z, a))
        x = a
    grad = np.zeros_like(x)
    grad[output_index] = 1.0
    for layer, (z, a) in zip(reversed(head), reversed(cache), strict=True):
        grad = (grad * _activation_grad(layer.activation, z, a)) @ layer.kernel.T
    weights = grad / (height * width)
    cam = np.maximum((features * weights).sum(axis=-1), 0.0).astype(np.float32)
    peak = float(cam.max())
    return cam / peak if peak > 0 else cam


# --- the served model -----------------------------------------------------------------------


class ServedModel:
    """The exported graph on OpenVINO or ONNX Runtime (chestx.runtimes), plus the head for
    Grad-CAM.

    Calls go through a SessionPool: all cores for a lone request, one core per request under
    load (chestx.session_pool). ``session`` is the all-cores one."""

    def __init__(
        self, graph: Graph, source_sha256: str, head, check: dict, threads: int | None = None
    ):
        self.graph = graph
        self.path = graph.path
        self.runtime = graph.runtime
        self.source_sha256 = source_sha256
        self.head = head
        self.check = check
        self.image_size = graph.image_size
        self.num_outputs = int(graph.outputs[PREDICTIONS][-1])
        self.has_features = FEATURES in graph.outputs
        cores = threads or physical_cores()
        self.session = graph.session(cores)
        self.pool = SessionPool(self._warm_session, cores, wide=self.session)

    def new_session(self, threads: int):
        """Another session over the same graph (bench/ compares thread counts with it)."""
        return self.graph.session(threads)

    def _warm_session(self, threads: int):
        """A new session, run once (its first call allocates its memory)."""
        session = self.graph.session(threads)
        blank = np.zeros((1, self.image_size, self.image_size, 3), dtype=np.float32)
        session.run([PREDICTIONS], {INPUT_NAME: blank})
        return session

    def predict(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.float32)
        with self.pool.session() as session:
            return session.run([PREDICTIONS], {INPUT_NAME: images})[0]

    def gradcam(self, image: np.ndarray, output_index: int) -> np.ndarray:
        """The Grad-CAM map in [0, 1] on the feature grid, from one forward pass."""
        if self.head is None or not self.has_features:
            raise ModelError("this ONNX model has no Grad-CAM head")
        batch = np.ascontiguousarray(np.asarray(image, dtype=np.float32)[None])
        with self.pool.session() as session:
            features = session.run([FEATURES], {INPUT_NAME: batch})[0][0]
        return gradcam_from_features(features, self.head, output_index)


def load_served(
    model_path: str | Path,
    threads: int | None = None,
    digest: str | None = None,
    runtime: str = "auto",
) -> ServedModel | None:
    """The fresh ONNX form of ``model_path`` on ``runtime`` if one exists, else None."""
    runtime = runtimes.choose(runtime)
    digest = digest or file_sha256(model_path)
    for candidate in served_candidates(model_path, digest):
        if not candidate.is_file():
            continue
        try:
            graph = runtimes.open_graph(candidate, runtime, threads)
        except Exception as error:  # a torn or foreign file: convert again
            log.warning("ignoring %s: %s", candidate, str(error)[:200])
            continue
        meta = graph.metadata
        if meta.get(SOURCE_KEY) != digest:
            log.info("%s is stale (made from another model.h5)", candidate)
            continue
        head = _unpack_head(meta[HEAD_KEY]) if meta.get(HEAD_KEY) else None
        check = json.loads(meta.get(CHECK_KEY, "{}"))
        return ServedModel(graph, digest, head, check, threads)
    return None


def _load_keras(model_path: Path):
    import keras

    try:
        return keras.models.load_model(model_path, compile=False)
    except Exception as error:
        raise ModelError(f"model file {model_path} can't be loaded ({error})"[:300]) from None


def _to_onnx(model, outputs: dict):
    """tf2onnx conversion of ``model`` with named outputs (name -> Keras tensor)."""
    import keras
    import tensorflow as tf
    import tf2onnx

    size = int(model.input_shape[1])
    wrapped = keras.Model(model.input, list(outputs.values()))
    names = list(outputs)
    spec = (tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=spec)
    def call(image):
        values = wrapped(image, training=False)
        values = values if isinstance(values, list | tuple) else [values]
        return {
            name: tf.identity(value, name=name) for name, value in zip(names, values, strict=True)
        }

    proto, _ = tf2onnx.convert.from_function(call, input_signature=spec, opset=OPSET)
    return proto


def check_inputs(size: int, images: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Inputs the conversion is checked on: given images, a generated chest and noise."""
    from chestx.data.synthetic import calibration_images

    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 1.0, (1, size, size, 3)).astype(np.float32)
    parts = [calibration_images(2, size, seed).astype(np.float32), noise]
    if images is not None and len(images):
        parts.insert(0, np.asarray(images, dtype=np.float32))
    return np.concatenate(parts)


def _compare(session, wanted: dict[str, np.ndarray], inputs: np.ndarray) -> dict[str, float]:
    got = session.run(list(wanted), {INPUT_NAME: inputs})
    return {
        name: float(np.abs(value - expected).max())
        for (name, expected), value in zip(wanted.items(), got, strict=True)
    }


def _write_atomic(proto, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_bytes(proto.SerializeToString())
    os.replace(temporary, target)


def export_onnx(
    model_path: str | Path,
    keras_model=None,
    images: np.ndarray | None = None,
    out: str | Path | None = None,
) -> Path:
    """Convert model.h5 to ONNX, check it against Keras to 1e-4, write it; return its path.

    ``keras_model`` skips reloading model.h5 when the caller holds it (end of training);
    ``images`` are preprocessed real images to check on besides the generated ones.
    """
    import onnx

    model_path = Path(model_path)
    start = time.perf_counter()
    digest = file_sha256(model_path)
    model = keras_model if keras_model is not None else _load_keras(model_path)
    size = int(model.input_shape[1])
    outputs = {PREDICTIONS: model.output}
    head = head_layers(model)
    if head is not None:
        outputs[FEATURES] = model.get_layer(LAST_CONV_LAYER).output
    proto = _to_onnx(model, outputs)

    inputs = check_inputs(size, images)
    import keras

    expected_model = keras.Model(model.input, list(outputs.values()))
    expected = expected_model.predict(inputs, verbose=0, batch_size=8)
    expected = expected if isinstance(expected, list) else [expected]
    wanted = dict(zip(outputs, (np.asarray(e) for e in expected), strict=True))
    session = runtimes.ort_session(proto.SerializeToString())
    differences = _compare(session, wanted, inputs)
    if differences[PREDICTIONS] > TOLERANCE:
        raise ModelError(
            f"the ONNX conversion of {model_path} disagrees with Keras "
            f"(max difference {differences[PREDICTIONS]:.2e} > {TOLERANCE:g}); serving can use "
            "TensorFlow instead: CHESTX_RUNTIME=tensorflow"
        )
    gradcam_difference = None
    if head is not None:
        gradcam_difference = _check_gradcam(model, head, wanted[FEATURES][0], inputs[0])

    check = {
        "max_abs_difference": differences,
        "gradcam_max_abs_difference": gradcam_difference,
        "inputs_checked": len(inputs),
        "tolerance": TOLERANCE,
        "image_size": size,
        "seconds": round(time.perf_counter() - start, 1),
    }
    meta = {SOURCE_KEY: digest, CHECK_KEY: json.dumps(check)}
    if head is not None:
        meta[HEAD_KEY] = _pack_head(head)
    onnx.helper.set_model_props(proto, meta)
    proto.producer_name = "chestx (tf2onnx)"

    targets = [Path(out)] if out is not None else served_candidates(model_path, digest)
    for target in targets:
        try:
            _write_atomic(proto, target)
        except OSError as error:
            log.warning("can't write %s (%s)", target, error)
            continue
        log.info(
            "wrote %s from %s in %.1f s; max difference from Keras %.1e",
            target,
            model_path.name,
            check["seconds"],
            differences[PREDICTIONS],
        )
        runtimes.precompile(target)
        return target
    raise ModelError(f"could not write the ONNX form of {model_path} anywhere: {targets}")


def _check_gradcam(model, head, features: np.ndarray, image: np.ndarray) -> float:
    """The numpy Grad-CAM must equal TensorFlow's (chestx.explain.GradCam) on one input."""
    from chestx.explain import GradCam
    from chestx.labels import OBSERVATIONS

    names = list(OBSERVATIONS[:3])
    expected = GradCam(model).maps(image, names)
    worst = 0.0
    for index, name in enumerate(names):
        got = gradcam_from_features(features, head, index)
        worst = max(worst, float(np.abs(got - expected[name]).max()))
    if worst > 1e-3:
        raise ModelError(f"numpy Grad-CAM disagrees with TensorFlow's (max {worst:.2e})")
    return worst


def ensure_served(
    model_path: str | Path,
    threads: int | None = None,
    convert: bool = True,
    runtime: str = "auto",
) -> ServedModel | None:
    """The served ONNX model for ``model_path``: the fresh file, or a conversion made now."""
    digest = file_sha256(model_path)
    served = load_served(model_path, threads, digest, runtime)
    if served is not None or not convert:
        return served
    log.warning(
        "no up-to-date ONNX form of %s: converting it now (imports TensorFlow; about 20-60 s, "
        "once; `chestx export-onnx` or training does it ahead of time)",
        model_path,
    )
    export_onnx(model_path)
    return load_served(model_path, threads, digest, runtime)


def export_after_training(model_path: Path, keras_model, image_paths, image_size: int):
    """Convert a freshly saved model.h5 so serving starts without TensorFlow; a failure only
    warns (the server then converts at start-up or serves with TensorFlow)."""
    from chestx.imaging import load_for_model

    try:
        images = np.stack([load_for_model(p, image_size) for p in list(image_paths)[:2]])
        path = export_onnx(model_path, keras_model, images)
    except Exception as error:  # tf2onnx raises many kinds; training's result stands
        log.warning("could not convert %s to ONNX: %s", model_path, str(error)[:300])
        return None
    print(f"wrote {path} (the served form, checked against model.h5 to {TOLERANCE:g})")
    return path


# --- the frozen backbone, for the feature cache ---------------------------------------------

EXTRACTOR_KEY = "chestx_extractor"


def load_extractor(path: Path, key: str) -> Graph | None:
    """The pooled-feature backbone at ``path`` opened on the serving runtime (OpenVINO where
    installed, else ONNX Runtime) if it was made for ``key`` (weights id and image size)."""
    if not path.is_file():
        return None
    try:
        graph = runtimes.open_graph(path, runtimes.choose("auto"), threads=1)
    except Exception as error:
        log.warning("ignoring %s: %s", path, str(error)[:200])
        return None
    if graph.metadata.get(EXTRACTOR_KEY) != key:
        return None
    return graph


def export_extractor(keras_model, path: Path, key: str) -> Graph | None:
    """Convert the pooled-feature model to ONNX, check it against Keras, write it, and return
    it opened as ``load_extractor`` does. Raises ModelError if the two disagree."""
    import onnx

    start = time.perf_counter()
    proto = _to_onnx(keras_model, {FEATURES: keras_model.output})
    inputs = check_inputs(int(keras_model.input_shape[1]))
    expected = np.asarray(keras_model.predict(inputs, verbose=0, batch_size=8))
    session = runtimes.ort_session(proto.SerializeToString())
    got = session.run([FEATURES], {INPUT_NAME: inputs})[0]
    if not np.allclose(got, expected, atol=TOLERANCE, rtol=TOLERANCE):
        raise ModelError(
            "the ONNX feature extractor disagrees with Keras "
            f"(max difference {np.abs(got - expected).max():.2e})"
        )
    onnx.helper.set_model_props(proto, {EXTRACTOR_KEY: key})
    _write_atomic(proto, path)
    log.info("wrote %s in %.1f s", path, time.perf_counter() - start)
    return load_extractor(path, key)
