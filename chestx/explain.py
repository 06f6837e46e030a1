"""Grad-CAM maps: where in the image the evidence for a finding sits.

Selvaraju et al. 2017: weight DenseNet121's last feature maps by the mean gradient of one
observation's output and keep the positive part. A coarse map (7x7 at 224 px), shown as a heat
overlay: a hint for a reader, not a segmentation.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from chestx.labels import index_of
from chestx.network import LAST_CONV_LAYER


class GradCam:
    """Builds the gradient model once per loaded classifier."""

    def __init__(self, model):
        import keras

        self.model = keras.Model(
            model.inputs, [model.get_layer(LAST_CONV_LAYER).output, model.output]
        )
        self._compiled = None

    def maps(self, image: np.ndarray, observations: list[str]) -> dict[str, np.ndarray]:
        """Maps in [0, 1] on the feature grid for each observation, from one forward pass."""
        import tensorflow as tf

        indices = [index_of(name) for name in observations]
        batch = tf.convert_to_tensor(image[None].astype(np.float32))
        with tf.GradientTape(persistent=True) as tape:
            features, outputs = self.model(batch, training=False)
            targets = [outputs[0, j] for j in indices]
        result = {}
        for name, target in zip(observations, targets, strict=True):
            gradients = tape.gradient(target, features)[0]
            weights = tf.reduce_mean(gradients, axis=(0, 1))
            cam = tf.nn.relu(tf.reduce_sum(features[0] * weights, axis=-1)).numpy()
            peak = float(cam.max())
            result[name] = cam / peak if peak > 0 else cam
        del tape
        return result


def _jet(values: np.ndarray) -> np.ndarray:
    """A small jet-like colour map: blue (low) to red (high), as uint8 RGB."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    red = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    green = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    blue = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.concatenate([red, green, blue], axis=-1) * 255).astype(np.uint8)


def overlay_png(
    pixels: np.ndarray, cam: np.ndarray, max_side: int = 512, alpha: float = 0.45
) -> bytes:
    """The radiograph with the map laid over it, as PNG bytes."""
    base = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8), mode="L")
    base.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    heat = Image.fromarray((cam * 255).astype(np.uint8), mode="L").resize(
        base.size, Image.Resampling.BICUBIC
    )
    heat_values = np.asarray(heat, dtype=np.float32) / 255.0
    colour = _jet(heat_values).astype(np.float32)
    grey = np.repeat(np.asarray(base, dtype=np.float32)[..., None], 3, axis=-1)
    weight = alpha * heat_values[..., None]
    blended = (grey * (1 - weight) + colour * weight).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(blended, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()
