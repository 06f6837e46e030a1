"""The numba kernels for the model input and the gate give the numbers of their plain paths.

``preprocess`` and ``gate.measure`` take the kernel once it is loaded and Pillow/numpy before:
training, serving and a study's saved gate statistics must not depend on which ran."""

from __future__ import annotations

import numpy as np
import pytest

from chestx import gate, imaging, resample
from chestx.imaging import Radiograph

#: Shapes for both pass orders, up- and downscaling, an unchanged side and a tiny image.
ODD_SHAPES = [(250, 300), (300, 250), (225, 223), (2000, 1600), (224, 224), (100, 150), (3, 3)]


@pytest.fixture(scope="module")
def radiographs(radiograph_paths) -> list[Radiograph]:
    """Every real radiograph in ../shared/cxr, read as the app reads it for a 224 px model."""
    return [imaging.read_image(path, min_size=224) for path in radiograph_paths]


@pytest.fixture(scope="module", autouse=True)
def loaded():
    for module in (resample, gate):
        module.prepare(wait=True)
    assert resample.ready() and gate.ready(), "numba couldn't load (see the log)"


def test_the_pass_order_follows_pillow_13():
    assert resample.vertical_first(300, 250, 224, 224)  # height shrinks > 2x as much
    assert not resample.vertical_first(250, 300, 224, 224)
    assert not resample.vertical_first(260, 250, 224, 224)  # 36 < 2 x 26
    assert not resample.vertical_first(100, 80, 224, 224)  # enlarged: horizontal first


def test_the_weights_are_pillows_triangle_filter():
    bounds, weights = resample.bilinear_weights(250, 224)
    assert weights.shape == (224, 5)  # ceil(250 / 224) * 2 + 1 taps at most
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    assert bounds[0, 0] == 0 and bounds[-1, 0] + bounds[-1, 1] == 250
    bounds, weights = resample.bilinear_weights(224, 224)  # same size: each pixel is itself
    assert (weights[:, 0] == 1.0).all() and (weights[:, 1:] == 0.0).all()


@pytest.mark.parametrize("size", [224, 320])
def test_preprocess_is_the_same_with_the_kernel_on_real_radiographs(radiographs, size, unload):
    with_kernel = [imaging.preprocess(r.pixels, size) for r in radiographs]
    unload(resample, "_KERNEL")
    for radiograph, fast in zip(radiographs, with_kernel, strict=True):
        np.testing.assert_array_equal(fast, imaging.preprocess(radiograph.pixels, size))
    assert len(radiographs) >= 100


@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_preprocess_is_the_same_with_the_kernel_on_odd_shapes(shape, unload):
    # Values past [0, 1] check the clip; a float64, non-contiguous input the conversion.
    pixels = np.random.default_rng(sum(shape)).uniform(-0.2, 1.2, shape)[:, ::-1]
    with_kernel = imaging.preprocess(pixels, 224)
    assert with_kernel.shape == (224, 224, 3) and with_kernel.dtype == np.float32
    unload(resample, "_KERNEL")
    np.testing.assert_array_equal(with_kernel, imaging.preprocess(pixels, 224))


def test_without_the_kernel_preprocess_starts_loading_it(unload):
    kernel = unload(resample, "_KERNEL")
    assert imaging.preprocess(np.zeros((250, 250), np.float32), 224).shape == (224, 224, 3)
    assert kernel.load_requests == 1


def non_radiographs() -> list[Radiograph]:
    """Images the gate refuses, each for a different reason, and one too small to measure."""
    rng = np.random.default_rng(7)
    page = np.ones((300, 220), np.float32)
    page[40:260:12, 20:200] = 0.0  # lines of "text" on white
    ramp = np.tile(np.linspace(0, 1, 256, dtype=np.float32), (256, 1))
    noise = rng.random((256, 256), dtype=np.float32)
    flat = np.full((200, 200), 0.6, np.float32)
    flat[50:150, 50:150] = 0.3
    tiny = rng.random((2, 40), dtype=np.float32)
    shapes = [page, ramp, noise, flat, tiny]
    return [Radiograph(p, "PNG", (p.shape[1], p.shape[0]), 0.0) for p in shapes]


def test_the_gate_measures_the_same_with_the_kernel(radiographs, unload):
    images = radiographs + non_radiographs()
    with_kernel = [gate.check(r) for r in images]
    assert sum(not verdict.passed for verdict in with_kernel) >= 5
    unload(gate, "_KERNEL")
    for radiograph, fast in zip(images, with_kernel, strict=True):
        plain = gate.check(radiograph)
        assert fast.statistics == plain.statistics
        assert (fast.passed, fast.reasons) == (plain.passed, plain.reasons)
