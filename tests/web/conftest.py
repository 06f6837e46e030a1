"""Fixtures for the web app: one app per session on the tiny model, real gunicorn for the
browser and server tests, and real images to build uploads from."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from webhelpers import NIH_PNG, gunicorn


@pytest.fixture(scope="session")
def app(tiny_model, tmp_path_factory):
    from chestx.web import create_app

    database = tmp_path_factory.mktemp("db") / "app.db"  # never the repository's instance/
    app = create_app(
        {
            "CHESTX_MODEL": str(tiny_model),
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{database}",
            "CHESTX_RATE_LIMIT": None,  # the suite posts hundreds of uploads from one address
        }
    )
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def radiograph_grey(cxr_dir) -> Image.Image:
    """A real 512 px NIH radiograph as an 8-bit greyscale Pillow image."""
    image = Image.open(cxr_dir / NIH_PNG)
    image.load()
    return image.convert("L")


@pytest.fixture(scope="session")
def radiograph_png(cxr_dir) -> bytes:
    return (cxr_dir / NIH_PNG).read_bytes()


@pytest.fixture(scope="session")
def colour_photo() -> bytes:
    import matplotlib

    return (Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").read_bytes()


# --- real gunicorn -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gunicorn_server(tiny_model, tmp_path_factory):
    """ChestX under real gunicorn (gunicorn.conf.py) on a free localhost port."""
    log = tmp_path_factory.mktemp("gunicorn") / "server.log"
    env = {
        "CHESTX_MODEL": str(tiny_model),
        "DATABASE_URL": f"sqlite:///{log.parent / 'server.db'}",
        "CHESTX_MAX_UPLOAD_MB": "5",
    }
    with gunicorn(env, log) as server:
        yield server


# --- Debian's Chromium, driven by Playwright ---------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
#: Flags for a sandboxed CI machine with no network but loopback.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium (never a downloaded browser), shared by the browser tests."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()
