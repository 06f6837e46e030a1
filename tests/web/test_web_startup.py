"""Start-up: configuration from the environment; a missing or broken model stops the app (and
gunicorn) with one line saying how to get a model."""

from __future__ import annotations

import subprocess
import sys

import pytest
from webhelpers import REPO, free_port, start_gunicorn

from chestx.errors import ConfigError, ModelError
from chestx.web.config import from_env


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
    process = start_gunicorn({"CHESTX_MODEL": str(broken), "PORT": str(free_port())}, log)
    try:
        code = process.wait(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert code == 4, text  # gunicorn's "App failed to load": the master stops
    assert "ChestX can't start" in text, text
    assert "can't be loaded" in text and "demo-model" in text
    assert "Traceback" not in text
