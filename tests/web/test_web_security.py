"""Security headers on every kind of response, no inline script, CSRF, secrets, no debug."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from webhelpers import post_api, post_form

REPO = Path(__file__).resolve().parents[2]


def _responses(client, radiograph_png):
    location = post_form(client, radiograph_png).headers["Location"]
    return {
        "home": client.get("/"),
        "result": client.get(location),
        "image": client.get(location + "/image.png"),
        "static": client.get("/static/chestx.css"),
        "api": post_api(client, radiograph_png),
        "api error": post_api(client, b"text"),
        "page error": post_form(client, b"text"),
        "not found": client.get("/missing"),
        "healthz": client.get("/healthz"),
    }


def test_security_headers_on_every_response(client, radiograph_png):
    for name, response in _responses(client, radiograph_png).items():
        headers = response.headers
        csp = headers.get("Content-Security-Policy", "")
        assert "script-src 'self'" in csp, name
        assert "frame-ancestors 'none'" in csp, name
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, name
        assert headers.get("X-Content-Type-Options") == "nosniff", name
        assert headers.get("X-Frame-Options") == "DENY", name
        assert headers.get("Referrer-Policy") == "same-origin", name
        if name != "static":
            assert headers.get("Cache-Control") == "no-store", name


def test_templates_have_no_inline_script_or_style():
    for template in (REPO / "templates").glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name
        assert "<style" not in text and " style=" not in text, template.name
        assert not re.search(r"\son[a-z]+=", text), template.name  # onclick= and the like


def test_pages_have_no_inline_script(client, radiograph_png):
    for name in ("home", "result", "page error", "not found"):
        page = _responses(client, radiograph_png)[name].get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)", page), name


def test_no_debug_and_no_traceback(app, client, monkeypatch):
    assert app.debug is False and app.config["PROPAGATE_EXCEPTIONS"] is False

    def broken(*args, **kwargs):
        raise RuntimeError("internal detail that must not be shown")

    monkeypatch.setattr(app.extensions["chestx"].analyser, "analyse", broken)
    page = post_form(client, b"anything")
    assert page.status_code == 500
    text = page.get_data(as_text=True)
    assert "Traceback" not in text and "internal detail" not in text
    assert "Something went wrong" in text
    api = post_api(client, b"anything")
    assert api.status_code == 500 and "internal detail" not in api.json["error"]


def test_secret_key_from_environment_or_random(tiny_model, monkeypatch):
    from chestx.web.config import from_env

    assert from_env({"CHESTX_SECRET_KEY": "s3cret"})["SECRET_KEY"] == "s3cret"
    assert from_env({})["SECRET_KEY"] is None  # then init_security draws a random one


def test_random_secret_key_per_process(app):
    key = app.config["SECRET_KEY"]
    assert isinstance(key, str) and len(key) >= 32


def test_gunicorn_config_shares_one_key_between_workers(monkeypatch):
    monkeypatch.delenv("CHESTX_SECRET_KEY", raising=False)
    namespace: dict = {}
    exec(compile((REPO / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"), namespace)
    import os

    assert len(os.environ["CHESTX_SECRET_KEY"]) >= 32
    assert namespace["preload_app"] is False and namespace["workers"] >= 1
    assert namespace["bind"].endswith(":" + os.environ.get("PORT", "8000"))


@pytest.mark.parametrize("field", ["../../etc/passwd", "Doe^Jane.png"])
def test_upload_names_are_never_used(client, radiograph_png, field, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    response = post_form(client, radiograph_png, filename=field)
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Doe" not in page and "passwd" not in page
    assert list(tmp_path.iterdir()) == []
