"""Hardening in the app itself: the rate limit on uploads, security headers on every kind of
response, CSRF on every form, a 503 when the database is down, and no debug mode or traceback
whatever the settings say. (Real gunicorn, PostgreSQL and worker faults: test_web_faults.py.)"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError
from webhelpers import csrf_token, post_api, post_form

from chestx.errors import ConfigError
from chestx.web.config import DEFAULT_RATE_LIMIT, from_env, rate_limit

REPO = Path(__file__).resolve().parents[2]
LIMIT = "3 per minute"


@pytest.fixture(scope="module")
def limited_app(tiny_model, tmp_path_factory):
    """An app with a small rate limit and two test-only routes that fail (never in the app)."""
    from chestx.web import create_app

    folder = tmp_path_factory.mktemp("limited")
    app = create_app(
        {
            "CHESTX_MODEL": str(tiny_model),
            "TESTING": True,
            "CHESTX_WARM_UP": False,
            "DATABASE_URL": f"sqlite:///{folder / 'limited.db'}",
            "CHESTX_RATE_LIMIT": LIMIT,
            # What a careless deployment might set: the factory must override both.
            "DEBUG": True,
            "PROPAGATE_EXCEPTIONS": True,
        }
    )

    def boom():
        detail = "internal " + "detail /srv/secret.py"  # not in the source line the log quotes
        raise RuntimeError(detail + " that must not be shown")

    app.add_url_rule("/test-only/boom", "test_boom", boom)
    app.add_url_rule("/api/v1/test-only/boom", "test_api_boom", boom)
    yield app
    app.extensions["chestx_studies"].db.dispose()


def _exhaust(client, post) -> object:
    """Post junk until the limit answers 429 (the junk counts: every attempt does)."""
    for _ in range(10):
        response = post(client, b"not an image")
        if response.status_code == 429:
            return response
    pytest.fail("no 429 after 10 uploads")


# --- rate limit ------------------------------------------------------------------------------


def test_rate_limit_setting():
    assert from_env({})["CHESTX_RATE_LIMIT"] == DEFAULT_RATE_LIMIT == "60 per minute"
    assert from_env({"CHESTX_RATE_LIMIT": "10/second; 500 per day"})["CHESTX_RATE_LIMIT"]
    for off in ("0", "off", "OFF", "no", "false"):
        assert rate_limit(off) is None
    with pytest.raises(ConfigError, match="CHESTX_RATE_LIMIT"):
        rate_limit("as many as you like")


def test_uploads_over_the_limit_get_429_with_retry_after(limited_app, radiograph_png):
    client = limited_app.test_client()
    for name, post in (("page", post_form), ("api", post_api)):
        answered = [post(client, radiograph_png).status_code for _ in range(3)]
        assert answered == ([303] * 3 if name == "page" else [200] * 3), name
        refused = post(client, radiograph_png)
        assert refused.status_code == 429, name
        assert int(refused.headers["Retry-After"]) > 0, name
        if name == "api":
            assert "Too many uploads" in refused.json["error"] and refused.json["status"] == 429
        else:
            page = refused.get_data(as_text=True)
            assert "Too many uploads" in page and "3 per 1 minute" in page
            assert 'name="file"' in page  # the form again, for later
    # Only the two upload endpoints are limited: pages, JSON and health answer as usual.
    for path in ("/", "/healthz", "/api/v1/model", "/studies", "/api/v1/studies"):
        for _ in range(5):
            assert client.get(path).status_code == 200, path


def test_the_limit_is_per_client_address(limited_app, radiograph_png):
    client = limited_app.test_client()
    _exhaust(client, post_api)
    other = limited_app.test_client()
    response = other.post(
        "/api/v1/predict",
        data={"file": (io.BytesIO(radiograph_png), "chest.png")},
        environ_base={"REMOTE_ADDR": "192.0.2.7"},
    )
    assert response.status_code == 200


def test_test_apps_are_not_throttled(app):
    assert app.config["CHESTX_RATE_LIMIT"] is None and "limiter" not in app.extensions


# --- no debug, no traceback --------------------------------------------------------------------


def test_the_factory_never_enables_debug(limited_app, tiny_model, tmp_path, monkeypatch):
    assert limited_app.debug is False and limited_app.config["PROPAGATE_EXCEPTIONS"] is False
    monkeypatch.setenv("FLASK_DEBUG", "1")
    monkeypatch.setenv("FLASK_ENV", "development")
    from chestx.web import create_app

    app = create_app(
        {
            "CHESTX_MODEL": str(tiny_model),
            "CHESTX_WARM_UP": False,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'debug.db'}",
        }
    )
    assert app.debug is False and app.config["DEBUG"] is False
    app.extensions["chestx_studies"].db.dispose()


@pytest.mark.parametrize("path", ["/test-only/boom", "/api/v1/test-only/boom"])
def test_an_unexpected_error_is_a_plain_500(limited_app, path, caplog):
    response = limited_app.test_client().get(path)
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    for leak in ("Traceback", "RuntimeError", "internal detail", "/srv/secret.py", "Werkzeug"):
        assert leak not in text
    if path.startswith("/api/"):
        assert response.json["error"].startswith("Something went wrong")
    else:
        assert "Something went wrong" in text and response.mimetype == "text/html"
    # The log names the type and the place for whoever runs the server, not the message.
    assert "unexpected RuntimeError on GET" in caplog.text
    assert "internal detail" not in caplog.text


# --- database unavailable -------------------------------------------------------------------


def _database_down(*args, **kwargs):
    raise OperationalError(
        "INSERT INTO studies (display_name) VALUES (%(display_name)s)",
        {"display_name": "Doe^Jane.png"},
        Exception("connection to server on socket failed: No such file or directory"),
    )


def test_database_down_is_a_503_not_a_500(client, radiograph_png, monkeypatch, caplog):
    from chestx.web import studies

    monkeypatch.setattr(studies, "record", _database_down)
    monkeypatch.setattr(studies.StudyStore, "history", _database_down)
    api = post_api(client, radiograph_png, filename="Doe^Jane.png")
    assert api.status_code == 503 and api.headers["Retry-After"] == "30"
    assert "can't be reached" in api.json["error"] and "nothing was saved" in api.json["error"]
    page = post_form(client, radiograph_png, filename="Doe^Jane.png")
    assert page.status_code == 503 and "be reached just now" in page.get_data(as_text=True)
    assert "Traceback" not in page.get_data(as_text=True)
    assert client.get("/studies").status_code == 503
    assert client.get("/api/v1/studies").status_code == 503
    assert client.get("/healthz").status_code == 200  # the model still works
    assert "database unavailable on POST /api/v1/predict: OperationalError" in caplog.text
    assert "Doe" not in caplog.text  # the statement's parameters are never logged


# --- security headers on every response --------------------------------------------------------


def _upload_location(client, radiograph_png):
    return post_form(client, radiograph_png).headers["Location"]


CASES = {
    # name: (which app: "app" or "limited", request maker, expected status)
    "home": ("app", lambda c, png, mp: c.get("/"), 200),
    "upload redirect": ("app", lambda c, png, mp: post_form(c, png), 303),
    "result page": ("app", lambda c, png, mp: c.get(_upload_location(c, png)), 200),
    "result image": (
        "app",
        lambda c, png, mp: c.get(_upload_location(c, png) + "/image.png"),
        200,
    ),
    "heat map": (
        "app",
        lambda c, png, mp: c.get(_upload_location(c, png) + "/map/edema.png"),
        200,
    ),
    "static css": ("app", lambda c, png, mp: c.get("/static/chestx.css"), 200),
    "static js": ("app", lambda c, png, mp: c.get("/static/upload.js"), 200),
    "api predict": ("app", lambda c, png, mp: post_api(c, png), 200),
    "api model": ("app", lambda c, png, mp: c.get("/api/v1/model"), 200),
    "api studies": ("app", lambda c, png, mp: c.get("/api/v1/studies"), 200),
    "history": ("app", lambda c, png, mp: c.get("/studies"), 200),
    "worklist": ("app", lambda c, png, mp: c.get("/worklist"), 200),
    "csv": ("app", lambda c, png, mp: c.get("/studies.csv"), 200),
    "healthz": ("app", lambda c, png, mp: c.get("/healthz"), 200),
    "400 page": ("app", lambda c, png, mp: post_form(c, None), 400),
    "400 csrf": ("app", lambda c, png, mp: c.post("/", data={}), 400),
    "415 api": ("app", lambda c, png, mp: post_api(c, b"text"), 415),
    "404 page": ("app", lambda c, png, mp: c.get("/missing"), 404),
    "404 api": ("app", lambda c, png, mp: c.get("/api/v1/studies/nope"), 404),
    "404 static": ("app", lambda c, png, mp: c.get("/static/missing.css"), 404),
    "405 page": ("app", lambda c, png, mp: c.put("/"), 405),
    "405 api": ("app", lambda c, png, mp: c.get("/api/v1/predict"), 405),
    "413 page": ("app", lambda c, png, mp: post_form(c, bytes(200 * 1024)), 413),
    "413 api": ("app", lambda c, png, mp: post_api(c, bytes(200 * 1024)), 413),
    "429 page": ("limited", lambda c, png, mp: _exhaust(c, post_form), 429),
    "429 api": ("limited", lambda c, png, mp: _exhaust(c, post_api), 429),
    "500 page": ("limited", lambda c, png, mp: c.get("/test-only/boom"), 500),
    "500 api": ("limited", lambda c, png, mp: c.get("/api/v1/test-only/boom"), 500),
    "503 page": ("app", lambda c, png, mp: mp() or post_form(c, png), 503),
    "503 api": ("app", lambda c, png, mp: mp() or post_api(c, png), 503),
}


@pytest.mark.parametrize("name", CASES)
def test_security_headers_on_every_response(name, app, limited_app, radiograph_png, monkeypatch):
    from chestx.web import studies

    which, make, status = CASES[name]
    flask_app = app if which == "app" else limited_app
    if name.startswith("413"):
        monkeypatch.setitem(flask_app.config, "MAX_CONTENT_LENGTH", 100 * 1024)
    response = make(
        flask_app.test_client(),
        radiograph_png,
        lambda: monkeypatch.setattr(studies, "record", _database_down),
    )
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    headers = response.headers
    csp = headers.get("Content-Security-Policy", "")
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers.get("X-Content-Type-Options") == "nosniff"
    assert headers.get("X-Frame-Options") == "DENY"
    assert headers.get("Referrer-Policy") == "same-origin"
    assert headers.get("Cross-Origin-Opener-Policy") == "same-origin"
    assert "camera=()" in headers.get("Permissions-Policy", "")
    if not name.startswith("static "):  # a 404 under /static/ is no-store too
        assert headers.get("Cache-Control") == "no-store"


# --- CSRF on every form ----------------------------------------------------------------------

FORM = re.compile(r"<form\b[^>]*>.*?</form>", re.S)


def _post_forms(html: str) -> list[tuple[str, dict[str, str]]]:
    """(action, hidden fields) of every POST form on a page."""
    forms = []
    for form in FORM.findall(html):
        if 'method="post"' not in form.split(">", 1)[0]:
            continue
        action = re.search(r'action="([^"]*)"', form).group(1)
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form))
        forms.append((action, fields))
    return forms


def test_every_template_form_that_posts_is_known():
    posts = {
        template.name: len(re.findall(r'<form\b[^>]*method="post"', template.read_text()))
        for template in (REPO / "templates").glob("*.html")
    }
    assert {name: n for name, n in posts.items() if n} == {
        "_form.html": 1,  # the upload
        "_study_actions.html": 1,  # mark read / unread
        "study.html": 1,  # delete
    }


def test_every_browser_post_route_needs_the_csrf_token(app):
    """Every POST route outside the cookie-less JSON API is one of the forms tested below."""
    posting = {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if "POST" in rule.methods and not rule.rule.startswith("/api/")
    }
    assert posting == {"pages.analyse", "studies.mark_read", "studies.delete"}


def test_every_form_is_refused_without_its_token_and_works_with_it(client, radiograph_png):
    upload = post_form(client, radiograph_png, filename="csrf.png")
    assert upload.status_code == 303
    study_id = upload.headers["Location"].rsplit("/", 1)[-1]
    # The upload form (home page): no token -> 400, nothing saved.
    before = client.get("/api/v1/studies").get_json()["total"]
    bare = client.post("/", data={"file": (io.BytesIO(radiograph_png), "x.png")})
    assert bare.status_code == 400 and "expired or did not come from this site" in bare.text
    assert client.get("/api/v1/studies").get_json()["total"] == before
    forged = client.post("/", data={"csrf_token": "forged", "file": (io.BytesIO(b"x"), "x.png")})
    assert forged.status_code == 400

    forms = _post_forms(client.get(f"/studies/{study_id}").get_data(as_text=True))
    forms += _post_forms(client.get("/worklist").get_data(as_text=True))
    actions = {action.rsplit("/", 1)[-1] for action, _ in forms if "/studies/" in action}
    assert actions == {"read", "delete"}
    for action, fields in forms:
        assert fields.get("csrf_token"), action
        if action == "/" or not action.endswith(("/read", "/delete")):
            continue
        without = {k: v for k, v in fields.items() if k != "csrf_token"}
        assert client.post(action, data=without).status_code == 400, action
        assert client.get(f"/api/v1/studies/{study_id}").status_code == 200  # untouched
    # With the token, each works: mark read, then delete.
    read = [(a, f) for a, f in forms if a.endswith(f"{study_id}/read")][0]
    assert client.post(read[0], data=read[1]).status_code == 303
    assert client.get(f"/api/v1/studies/{study_id}").get_json()["read"] is True
    delete = [(a, f) for a, f in forms if a.endswith(f"{study_id}/delete")][0]
    assert client.post(delete[0], data=delete[1]).status_code == 303
    assert client.get(f"/api/v1/studies/{study_id}").status_code == 404
    # And the upload form with its token.
    assert post_form(client, radiograph_png).status_code == 303
    assert csrf_token(client)


# --- names and fields: never paths, never unescaped ------------------------------------------

HOSTILE_FIELD = "../../etc/<img src=x onerror=alert(1)>\x00\x1b[31m\r\n" + "x" * 5000 + ".png"


def test_hostile_form_fields_are_cleaned_and_escaped(
    client, radiograph_grey, tmp_path, monkeypatch
):
    from webhelpers import encode

    monkeypatch.chdir(tmp_path)
    data = encode(radiograph_grey.rotate(1), "PNG")  # bytes no other test uploads
    # CR/LF can't be in a multipart file name (browsers send %0D%0A); the name field takes them.
    filename = HOSTILE_FIELD.replace("\r\n", "\t")
    response = post_api(client, data, filename=filename, name=HOSTILE_FIELD)
    assert response.status_code == 200, response.json
    stored = client.get(response.json["study"]["links"]["api"]).get_json()["display_name"]
    assert "/" not in stored and "\x00" not in stored and "\x1b" not in stored
    assert "\n" not in stored and len(stored) <= 120 and stored.endswith(".png")
    for path in ("/studies", f"/studies/{response.json['study']['id']}"):
        page = client.get(path).get_data(as_text=True)
        assert "<img src=x" not in page, path
        assert "&lt;img src=x onerror=alert(1)&gt;" in page, path
    for path in ("/studies?finding=<script>alert(1)</script>", "/api/v1/studies?min=<b>1"):
        refused = client.get(path)
        assert refused.status_code == 400 and "<script>" not in refused.get_data(as_text=True)
        assert "<b>" not in refused.get_data(as_text=True)
    assert list(tmp_path.iterdir()) == []  # nothing written under any of those names
