"""Start-up: configuration from the environment; a missing or broken model stops the app (and
gunicorn) with one line saying how to get a model."""

from __future__ import annotations

import subprocess
import sys

import pytest
from webhelpers import REPO

from chestx.errors import ConfigError, ModelError
from chestx.web.config import from_env
from chestx.web.devserver import GunicornProcess


def test_defaults():
    config = from_env({})
    assert config["CHESTX_MODEL"] == "model/model.h5"
    assert config["MAX_CONTENT_LENGTH"] == 20 * 1024 * 1024
    assert config["SESSION_COOKIE_SECURE"] is False


@pytest.mark.parametrize("value", ["abc", "-1", "0", "99999"])
def test_bad_upload_limit_is_a_config_error(value):
    with pytest.raises(ConfigError, match="CHESTX_MAX_UPLOAD_MB"):
        from_env({"CHESTX_MAX_UPLOAD_MB": value})


def test_missing_model_stops_create_app(tmp_path):
    from chestx.web import create_app

    with pytest.raises(ModelError, match="demo-model"):
        create_app({"CHESTX_MODEL": str(tmp_path / "nope.h5")})


def test_app_py_exits_with_one_line_when_the_model_is_missing(tmp_path):
    env = {"CHESTX_MODEL": str(tmp_path / "missing.h5"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", "import app"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 4
    assert "ChestX can't start" in result.stderr and "demo-model" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_gunicorn_exits_nonzero_with_the_message(tmp_path, tiny_model):
    broken = tmp_path / "model.h5"
    broken.write_bytes(b"this is not an HDF5 file")
    (tmp_path / "model.json").write_bytes(tiny_model.with_name("model.json").read_bytes())
    log = tmp_path / "gunicorn.log"
    with GunicornProcess({"CHESTX_MODEL": str(broken)}, log) as server:
        code = server.process.wait(timeout=180)
    text = log.read_text()
    assert code == 4, text  # gunicorn's "App failed to load": the master stops
    assert "ChestX can't start" in text, text
    assert "can't be loaded" in text and "demo-model" in text
    assert "Traceback" not in text


# --- a model that doesn't match its card, or is corrupt: refused at start-up ---------------------


def _copy_model(tiny_model, folder, **card_changes):
    """The tiny model (model.h5, its ONNX form, its card) in ``folder``, the card changed."""
    import json
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for sibling in tiny_model.parent.iterdir():
        if sibling.is_file() and sibling.name.startswith("model."):
            shutil.copy(sibling, folder / sibling.name)
    card = json.loads((folder / "model.json").read_text())
    card.update(card_changes)
    (folder / "model.json").write_text(json.dumps(card))
    return folder / "model.h5"


def _other_observations():
    from chestx.labels import OBSERVATIONS

    return [*OBSERVATIONS[:-1], "Tuberculosis"]


CARD_MISMATCHES = {
    "other observations": (
        lambda: {"observations": _other_observations()},
        "lists other observations than ChestX's 14",
    ),
    "fewer observations": (lambda: {"observations": ["Edema"]}, "other observations"),
    "other image size": (lambda: {"image_size": 224}, "takes 64 px images but its card says 224"),
}


@pytest.mark.parametrize("name", CARD_MISMATCHES)
def test_a_card_that_does_not_match_its_model_stops_start_up(tiny_model, tmp_path, name):
    from chestx.web import create_app

    changes, message = CARD_MISMATCHES[name]
    model = _copy_model(tiny_model, tmp_path / "model", **changes())
    with pytest.raises(ModelError, match=message):
        create_app({"CHESTX_MODEL": str(model), "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert not (tmp_path / "x.db").exists()  # refused before the database is opened


def test_app_py_refuses_a_mismatched_card_in_one_line(tiny_model, tmp_path):
    model = _copy_model(tiny_model, tmp_path / "model", image_size=224)
    env = {"CHESTX_MODEL": str(model), "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", "import app"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 4, result.stderr[-2000:]
    assert "ChestX can't start" in result.stderr and "card says 224" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("corruption", ["truncated", "not a model", "empty", "card missing"])
def test_a_corrupt_or_incomplete_model_stops_start_up(tiny_model, tmp_path, corruption):
    from chestx.web import create_app

    model = _copy_model(tiny_model, tmp_path / "model")
    data = model.read_bytes()
    if corruption == "truncated":
        model.write_bytes(data[: len(data) // 2])
    elif corruption == "not a model":
        model.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(4096))
    elif corruption == "empty":
        model.write_bytes(b"")
    else:
        (model.parent / "model.json").unlink()
    with pytest.raises(ModelError) as refused:
        create_app({"CHESTX_MODEL": str(model), "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    message = str(refused.value)
    assert "model" in message and "\n" not in message.strip()
    if corruption == "card missing":
        assert "model card" in message and "demo-model" in message
