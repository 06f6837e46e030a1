"""How the app reads an upload: exactly as training reads a file, with the larger display copy
decoded only when a page asks for it."""

from __future__ import annotations

import hashlib

import numpy as np

from chestx.imaging import load_for_model
from chestx.web.analysis import DISPLAY_DECODE_SIZE


def large_jpeg(cxr_dir) -> bytes:
    path = next(p for p in sorted((cxr_dir / "covid").glob("*.jpg")) if p.stat().st_size > 1e6)
    return path.read_bytes()


def test_the_model_sees_an_upload_exactly_as_training_reads_the_file(app, cxr_dir):
    analyser = app.extensions["chestx"].analyser
    for data in (large_jpeg(cxr_dir), next(cxr_dir.rglob("*.dcm")).read_bytes()):
        analysis = analyser.analyse(data)
        expected = load_for_model(data, analyser.predictor.image_size)
        np.testing.assert_array_equal(analysis.model_input, expected)
        # The study store's key, hashed beside the gate: the upload's own sha256.
        assert analysis.sha256 == hashlib.sha256(data).hexdigest()


def test_a_large_jpeg_is_decoded_for_display_only_when_shown(app, cxr_dir):
    analyser = app.extensions["chestx"].analyser
    data = large_jpeg(cxr_dir)
    analysis = analyser.analyse(data)
    assert analysis.upload is data and analysis._display_pixels is None
    png = analyser.image_png(analysis)
    assert png.startswith(b"\x89PNG")
    shown = analysis.display_pixels()
    assert min(shown.shape) >= DISPLAY_DECODE_SIZE  # 2000 px decoded at 1/4: 500 px
    assert analysis.upload is None  # the bytes are dropped once the pixels exist


def test_a_png_keeps_no_upload_bytes(app, radiograph_png):
    analysis = app.extensions["chestx"].analyser.analyse(radiograph_png)
    assert analysis.upload is None
    assert analysis.display_pixels().shape == (512, 512)
