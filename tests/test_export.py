"""The served form: model.h5 converted to ONNX, equal to Keras on real radiographs, kept fresh,
and a server that starts and explains without TensorFlow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from chestx import export, runtimes
from chestx.imaging import load_for_model
from chestx.inference import Predictor
from chestx.labels import OBSERVATIONS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def predictor(tiny_model) -> Predictor:
    return Predictor(tiny_model)


@pytest.fixture(scope="module")
def real_images(radiograph_paths, predictor) -> np.ndarray:
    """Preprocessed real radiographs: PNG, JPEG and DICOM, including 1-2 MB COVID JPEGs."""
    paths = radiograph_paths
    chosen = [p for p in paths if p.suffix.lower() == ".dcm"][:2]
    chosen += [p for p in paths if p.suffix.lower() == ".png"][:3]
    chosen += [p for p in paths if "covid" in p.parts and p.suffix.lower() in (".jpg", ".jpeg")][:5]
    assert len(chosen) >= 6
    return np.stack([load_for_model(p, predictor.image_size) for p in chosen])


def test_training_writes_a_fresh_onnx_beside_the_model(tiny_model, predictor):
    onnx_path = tiny_model.with_suffix(".onnx")
    assert onnx_path.is_file()
    assert predictor.runtime == "openvino"  # the fastest installed runtime (chestx.runtimes)
    assert predictor.served.path == onnx_path
    assert predictor.served.source_sha256 == export.file_sha256(tiny_model)
    assert predictor.served.check["max_abs_difference"]["predictions"] <= 1e-4


def test_served_model_equals_keras_on_real_radiographs(predictor, real_images):
    served = predictor.predict_batch(real_images)
    keras_values = np.asarray(predictor.model.predict(real_images, verbose=0))
    assert served.shape == (len(real_images), len(OBSERVATIONS))
    np.testing.assert_allclose(served, keras_values, atol=1e-4, rtol=0)
    one_by_one = np.concatenate([predictor.predict_batch(image[None]) for image in real_images])
    np.testing.assert_allclose(one_by_one, keras_values, atol=1e-4, rtol=0)


def test_onnx_runtime_serves_the_same_numbers_when_asked(tiny_model, predictor, real_images):
    """CHESTX_RUNTIME=onnxruntime (or a machine without OpenVINO) gives the same answers."""
    other = Predictor(tiny_model, runtime="onnxruntime")
    assert other.runtime == "onnxruntime"
    np.testing.assert_allclose(
        other.predict_batch(real_images), predictor.predict_batch(real_images), atol=1e-4
    )
    index = OBSERVATIONS.index("Cardiomegaly")
    np.testing.assert_allclose(
        other.served.gradcam(real_images[0], index),
        predictor.served.gradcam(real_images[0], index),
        atol=1e-3,
    )


def test_an_unknown_or_missing_runtime_is_a_clear_error(tiny_model, monkeypatch):
    from chestx.errors import ModelError

    with pytest.raises(ModelError, match="unknown runtime 'cuda'"):
        Predictor(tiny_model, runtime="cuda")
    monkeypatch.setattr(runtimes, "installed", lambda name: False)
    with pytest.raises(ModelError, match="openvino is not installed: run `make install`"):
        Predictor(tiny_model, runtime="openvino")


def test_gradcam_without_tensorflow_equals_gradcam(predictor, real_images):
    from chestx.explain import GradCam

    names = ["Cardiomegaly", "Edema", "Pleural Effusion"]
    for image in real_images[:3]:
        expected = GradCam(predictor.model).maps(image, names)
        for name in names:
            got = predictor.served.gradcam(image, OBSERVATIONS.index(name))
            assert got.shape == expected[name].shape
            np.testing.assert_allclose(got, expected[name], atol=1e-4)


def test_tensorflow_runtime_agrees(tiny_model, predictor, real_images):
    keras_predictor = Predictor(tiny_model, runtime="tensorflow")
    assert keras_predictor.runtime == "tensorflow"
    np.testing.assert_allclose(
        keras_predictor.predict_batch(real_images[:3]),
        predictor.predict_batch(real_images[:3]),
        atol=1e-4,
    )


def test_a_new_model_h5_makes_the_onnx_stale_and_it_is_converted_again(tiny_model, tmp_path):
    import keras

    for name in ("model.h5", "model.json", "model.onnx"):
        shutil.copy(tiny_model.with_name(name), tmp_path / name)
    copied = tmp_path / "model.h5"
    assert export.load_served(copied) is not None  # fresh: same bytes
    before = (tmp_path / "model.onnx").stat().st_mtime_ns

    model = keras.models.load_model(copied, compile=False)
    layer = model.get_layer("predictions")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias + 1.0])
    model.save(copied)
    assert export.load_served(copied) is None  # stale: made from the old model.h5

    predictor = Predictor(copied)  # converts at start-up, once
    assert predictor.runtime == "openvino"
    assert (tmp_path / "model.onnx").stat().st_mtime_ns != before
    assert predictor.served.source_sha256 == export.file_sha256(copied)
    images = export.check_inputs(predictor.image_size)
    np.testing.assert_allclose(
        predictor.predict_batch(images), model.predict(images, verbose=0), atol=1e-4
    )
    assert export.load_served(copied) is not None  # and the next start finds it fresh


def test_a_read_only_model_folder_uses_the_cache(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("CHESTX_CACHE", str(tmp_path / "cache"))
    digest = export.file_sha256(tiny_model)
    candidates = export.served_candidates(tiny_model, digest)
    assert candidates[0] == tiny_model.with_suffix(".onnx")
    assert candidates[1].parent == tmp_path / "cache" / "onnx"


APP_CHECK = """
import json, sys
from chestx.web import create_app
app = create_app({"CHESTX_MODEL": sys.argv[1], "TESTING": True})
at_start = sorted(m for m in ("tensorflow", "keras", "tf2onnx") if m in sys.modules)
client = app.test_client()
with open(sys.argv[2], "rb") as handle:
    response = client.post("/api/v1/predict", data={"file": (handle, "x.jpg")})
body = response.get_json()
maps = [client.get(link).status_code for link in body["links"]["heatmaps"].values()]
print(json.dumps({
    "at_start": at_start,
    "status": response.status_code,
    "maps": maps,
    "after": sorted(m for m in ("tensorflow", "keras") if m in sys.modules),
    "runtime": app.extensions["chestx"].analyser.predictor.runtime,
}))
"""


def test_app_starts_predicts_and_explains_without_tensorflow(tiny_model, cxr_dir, tmp_path):
    jpeg = next(p for p in sorted((cxr_dir / "covid").iterdir()) if p.suffix.lower() == ".jpg")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CHESTX_CACHE": str(tmp_path)}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'studies.db'}"
    result = subprocess.run(
        [sys.executable, "-c", APP_CHECK, str(tiny_model), str(jpeg)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["at_start"] == []
    assert report["status"] == 200
    assert report["maps"] and set(report["maps"]) == {200}
    assert report["after"] == []
    assert report["runtime"] == "openvino"


def test_export_command(tiny_model, tmp_path):
    from chestx.cli import main

    out = tmp_path / "exported.onnx"
    assert main(["export-onnx", "--model", str(tiny_model), "--out", str(out)]) == 0
    session = runtimes.ort_session(out)
    meta = session.get_modelmeta().custom_metadata_map
    assert meta[export.SOURCE_KEY] == export.file_sha256(tiny_model)
    assert json.loads(meta[export.CHECK_KEY])["inputs_checked"] >= 3


#: The performance benchmarks (docs/performance.md); bench/ holds others too.
BENCHES = ("inference.py", "serving.py", "training.py", "explain.py")


def test_bench_scripts_have_help():
    for script in (REPO / "bench" / name for name in BENCHES):
        result = subprocess.run(
            [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"{script.name}: {result.stderr[-500:]}"
        assert "usage" in result.stdout.lower()


def test_readme_material_names_every_bench():
    text = (REPO / "docs" / "performance.md").read_text()
    for name in BENCHES:
        assert f"bench/{name}" in text


def test_feature_cache_runs_the_backbone_on_onnx_once(demo_dataset, tmp_path, monkeypatch):
    from chestx import features
    from chestx.data import read_chexpert

    monkeypatch.setattr(features, "ONNX_MIN_IMAGES", 1)
    paths = read_chexpert(demo_dataset / "valid.csv", root=demo_dataset).paths[:5]
    cache = features.FeatureCache(tmp_path, None, 64, seed=0)
    got = cache.features(paths, progress=False)
    assert cache.runtime == "openvino" and cache.computed == len(paths)
    assert (cache.folder / "extractor.onnx").is_file()
    images = np.stack([load_for_model(p, 64) for p in paths])
    expected = np.asarray(cache.extractor().predict(images, verbose=0))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)

    again = features.FeatureCache(tmp_path, None, 64, seed=0)
    assert np.array_equal(again.features(paths, progress=False), got)
    assert again.computed == 0  # every vector came from disk


def test_concurrent_calls_on_one_core_sessions_give_the_same_probabilities(predictor, real_images):
    """Under load the pool runs calls on one-thread sessions: same numbers as the wide one."""
    from concurrent.futures import ThreadPoolExecutor

    served = predictor.served
    alone = [predictor.predict_batch(image[None])[0] for image in real_images]
    served.pool.start_narrow(background=False)
    narrow_before = served.pool.calls["narrow"]
    with ThreadPoolExecutor(max_workers=6) as pool:
        together = list(
            pool.map(lambda image: predictor.predict_batch(image[None])[0], real_images)
        )
    assert served.pool.calls["narrow"] > narrow_before
    np.testing.assert_allclose(np.stack(together), np.stack(alone), atol=1e-5, rtol=0)
