"""Grad-CAM maps for the web app: one forward pass each, without TensorFlow when possible.

With the ONNX-served model (chestx.export) the graph also returns the last feature maps and the
gradient through the dense head is computed in numpy: a map costs about one prediction, and the
server never imports TensorFlow. A model whose head isn't the plain dense stack (or a server
running with CHESTX_RUNTIME=tensorflow) uses ``CompiledGradCam``: the same maths as
``chestx.explain.GradCam`` as one ``tf.function``, built the first time a map is asked for, so
TensorFlow is imported then and not at start-up. tests/web/test_web_heatmaps.py checks the maps
equal GradCam's.
"""

from __future__ import annotations

import threading

import numpy as np

from chestx.labels import index_of


class GradCamMaps:
    """One Grad-CAM map per call, for one observation, from whichever runtime serves."""

    def __init__(self, predictor):
        self.predictor = predictor
        self._compiled = None
        self._lock = threading.Lock()

    @property
    def uses_tensorflow(self) -> bool:
        served = self.predictor.served
        return served is None or served.head is None or not served.has_features

    def map(self, image: np.ndarray, observation: str) -> np.ndarray:
        """The map in [0, 1] on the feature grid (7 x 7 at 224 px), as GradCam.maps gives it."""
        if not self.uses_tensorflow:
            return self.predictor.served.gradcam(image, index_of(observation))
        with self._lock:
            if self._compiled is None:
                self._compiled = CompiledGradCam(self.predictor.model)
        return self._compiled.map(image, observation)


class CompiledGradCam:
    """Grad-CAM as one compiled TensorFlow graph: about ten times faster than eager mode."""

    def __init__(self, model):
        import tensorflow as tf

        from chestx.explain import GradCam

        gradient_model = GradCam(model).model
        size = int(model.input_shape[1])

        @tf.function(
            input_signature=[
                tf.TensorSpec([size, size, 3], tf.float32),
                tf.TensorSpec([], tf.int32),
            ]
        )
        def cam(image, index):
            with tf.GradientTape() as tape:
                features, outputs = gradient_model(image[None], training=False)
                target = outputs[0, index]
            gradients = tape.gradient(target, features)[0]
            weights = tf.reduce_mean(gradients, axis=(0, 1))
            return tf.nn.relu(tf.reduce_sum(features[0] * weights, axis=-1))

        self._cam = cam

    def map(self, image: np.ndarray, observation: str) -> np.ndarray:
        cam = self._cam(np.asarray(image, dtype=np.float32), np.int32(index_of(observation)))
        cam = np.asarray(cam)
        peak = float(cam.max())
        return cam / peak if peak > 0 else cam
