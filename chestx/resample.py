"""The model's input in one pass: Pillow's bilinear resize of a float image, clipped to [0, 1]
and normalised per channel, with Pillow's numbers exactly, and without holding the GIL.

``imaging.preprocess`` resizes with Pillow (mode F, BILINEAR), then clips and normalises with
numpy: 0.8 to 1 ms for a 250 px radiograph on this machine, most of it in Pillow's resize and in
numpy's passes over the three channels. This kernel does the same arithmetic in the same order,
as Pillow 13's Resample.c does it:

- each axis's weights from ``precompute_coeffs`` (a triangle filter stretched by the scale when
  shrinking, normalised to sum 1), in double precision;
- two passes, each summing its taps in double and storing float32; the vertical pass first when
  the height shrinks by more than twice as many pixels as the width, else the horizontal one,
  over only the rows the vertical pass will read;
- then the clip and ``(grey - mean) / std`` in float32, as numpy does it.

So its output equals Pillow's bit for bit (tests check it on real radiographs and on odd shapes),
and ``preprocess`` gives the same numbers whichever path ran. It is loaded in the background on
first use (chestx.lazy_kernel): until then, and without numba, Pillow's path runs.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from chestx.lazy_kernel import LazyKernel


@functools.lru_cache(maxsize=64)
def bilinear_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs`` for BILINEAR over a whole axis: for each output pixel,
    its first input pixel and number of taps (bounds, int64 (out, 2)), and the taps' weights
    (float64 (out, ksize), zero past the taps). Python floats are C doubles: the same numbers."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = 1.0 * filter_scale  # BILINEAR's support is 1
    ksize = math.ceil(support) * 2 + 1
    bounds = np.zeros((out_size, 2), np.int64)
    weights = np.zeros((out_size, ksize), np.float64)
    inverse = 1.0 / filter_scale
    for index in range(out_size):
        centre = 0.0 + (index + 0.5) * scale
        first = max(int(centre - support + 0.5), 0)
        taps = min(int(centre + support + 0.5), in_size) - first
        row, total = [], 0.0
        for tap in range(taps):
            distance = abs((tap + first - centre + 0.5) * inverse)
            row.append(1.0 - distance if distance < 1.0 else 0.0)
            total += row[-1]  # left to right, as C adds (Python 3.12's sum() compensates)
        weights[index, :taps] = [w / total for w in row] if total != 0.0 else row
        bounds[index] = first, taps
    return bounds, weights


def vertical_first(height: int, width: int, out_height: int, out_width: int) -> bool:
    """Pillow 13 resizes vertically first when the height shrinks by more than twice as many
    pixels as the width (fewer rows for the horizontal pass)."""
    return height - out_height > 0 and height - out_height > (width - out_width) * 2


def model_input(
    pixels: np.ndarray, image_size: int, mean: np.ndarray, std: np.ndarray
) -> np.ndarray | None:
    """``(image_size, image_size, 3)`` float32: greyscale ``pixels`` resized as Pillow would,
    clipped to [0, 1], then ``(grey - mean[c]) / std[c]`` per channel. None while the kernel
    isn't loaded (the caller then takes Pillow's path, which gives the same numbers)."""
    kernel = _KERNEL.get()
    if kernel is None:
        return None
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    if not pixels.flags.writeable:  # numba compiles read-only arrays separately: not here
        pixels = pixels.copy()
    height, width = pixels.shape
    horizontal = bilinear_weights(width, image_size)
    vertical = bilinear_weights(height, image_size)
    out = np.empty((image_size, image_size, 3), np.float32)
    first = vertical_first(height, width, image_size, image_size)
    kernel(pixels, *horizontal, *vertical, first, _float32(mean), _float32(std), out)
    return out


def _float32(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float32)


def _build():
    """Import the kernel (and numba, in the loading thread) and load its one signature."""
    from chestx.kernels.bilinear import kernel

    pixels = np.zeros((4, 4), np.float32)
    out = np.empty((2, 2, 3), np.float32)
    ones = np.ones(3, np.float32)
    kernel(pixels, *bilinear_weights(4, 2), *bilinear_weights(4, 2), False, ones, ones, out)
    return kernel


_KERNEL = LazyKernel("chestx-resample", _build)
prepare = _KERNEL.prepare
ready = _KERNEL.ready
