"""The study store under real gunicorn: 200 concurrent uploads on SQLite and PostgreSQL lose
and duplicate nothing; then a person's worklist in Debian's Chromium."""

from __future__ import annotations

import json
import urllib.request

import pytest
from studyhelpers import BACKENDS, fresh_database, store_concurrency
from webhelpers import COVID_JPEG, NIH_PNG

pytestmark = pytest.mark.slow

UPLOADS = 200
AT_ONCE = 8


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_uploads_lose_and_duplicate_nothing(
    backend, tiny_model, tmp_path, artifacts_dir
):
    """200 uploads, 8 at once, through gunicorn with 2 workers x 4 threads; most images are
    sent several times, so identical uploads race for the same row."""
    with fresh_database(backend, tmp_path) as url:
        figures = store_concurrency.run_one(tiny_model, url, backend, UPLOADS, AT_ONCE)
    print(figures.line())
    (artifacts_dir / f"store-concurrency-{backend}.json").write_text(
        json.dumps({**figures.__dict__, "passed": figures.passed}, indent=2)
    )
    assert figures.uploads == UPLOADS and figures.distinct >= 20
    assert figures.failed == 0, figures.line()
    assert figures.rows == figures.distinct, figures.line()
    assert figures.duplicates == 0 and figures.ids_per_image_max == 1, figures.line()


# --- the worklist in a browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def worklist_server(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("worklist")
    database = f"sqlite:///{folder / 'studies.db'}"
    log = folder / "gunicorn.log"
    with store_concurrency.start_server(tiny_model, database, log, workers=1) as server:
        server.wait_ready()
        yield server.url


def _api(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


@pytest.mark.browser
def test_worklist_in_the_browser(browser, worklist_server, cxr_dir, artifacts_dir):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    ids = []
    for name in (NIH_PNG, COVID_JPEG):
        page.goto(worklist_server + "/")
        page.set_input_files("input[name=file]", str(cxr_dir / name))
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert "/result/" in page.url
        ids.append(page.url.rsplit("/", 1)[-1].split("?")[0])
        page.click(".permalink a")  # the result is saved: its permanent page
        assert page.inner_text("h1") == name.rsplit("/", 1)[-1]
    # The expected order, from the stored probabilities.
    scores = {i: _api(f"{worklist_server}/api/v1/studies/{i}")["urgency"]["score"] for i in ids}
    expected = sorted(ids, key=lambda i: -scores[i])

    page.click("nav.site-nav >> text=Worklist")
    rows = page.locator("tr.study")
    assert [rows.nth(k).get_attribute("data-study-id") for k in range(2)] == expected
    shown = [float(v) for v in page.locator("td.urgency").all_inner_texts()]
    assert shown == sorted(shown, reverse=True)
    assert "×" in page.inner_text("tr.study >> nth=0 >> td.why")
    page.screenshot(path=str(artifacts_dir / "web-worklist.png"), full_page=True)

    # Mark the most urgent read: it leaves the worklist, the other stays.
    with page.expect_navigation():
        page.click(f'tr[data-study-id="{expected[0]}"] button.mark-read')
    assert page.url.endswith("/worklist")
    remaining = page.locator("tr.study")
    assert remaining.count() == 1 and remaining.get_attribute("data-study-id") == expected[1]
    assert page.inner_text(".unread-count") == "1"
    page.screenshot(path=str(artifacts_dir / "web-worklist-after-read.png"), full_page=True)

    page.click("nav.site-nav >> text=History")
    assert page.locator("tr.study").count() == 2
    assert page.locator("tr.study.read").get_attribute("data-study-id") == expected[0]
    page.screenshot(path=str(artifacts_dir / "web-studies.png"), full_page=True)
    assert errors == [], errors  # no CSP violations or script errors
    context.close()
