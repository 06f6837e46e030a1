"""The compiled Grad-CAM the app serves gives the same maps as chestx.explain.GradCam."""

from __future__ import annotations

import numpy as np

from chestx.explain import GradCam
from chestx.imaging import load_for_model


def test_compiled_maps_match_gradcam(app, cxr_dir):
    analyser = app.extensions["chestx"].analyser
    image = load_for_model(cxr_dir / "nih" / "00000001_000.png", analyser.predictor.image_size)
    names = ["Cardiomegaly", "Pleural Effusion", "Support Devices"]
    expected = GradCam(analyser.predictor.model).maps(image, names)
    for name in names:
        got = analyser.gradcam.map(image, name)
        assert got.shape == expected[name].shape
        assert got.min() >= 0.0 and got.max() <= 1.0
        np.testing.assert_allclose(got, expected[name], atol=1e-4)
