"""A person's visit, in Debian's Chromium driven by Playwright, against real gunicorn: upload a
real radiograph, read the 14 probabilities, see the heat map load, then upload a text file."""

from __future__ import annotations

import pytest
from webhelpers import COVID_JPEG

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.errors = errors
    yield page
    context.close()


def test_upload_a_radiograph_and_read_the_result(page, gunicorn_server, cxr_dir, artifacts_dir):
    page.goto(gunicorn_server.url + "/")
    assert "Demo model" in page.inner_text(".demo-banner")
    assert page.is_visible(".drop-hint")  # upload.js ran under the CSP
    page.screenshot(path=str(artifacts_dir / "web-home.png"), full_page=True)

    page.set_input_files("input[name=file]", str(cxr_dir / COVID_JPEG))
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "/result/" in page.url
    assert page.inner_text("h1") == "What the model sees"

    values = [float(v) for v in page.locator("td.probability").all_inner_texts()]
    assert len(values) == 14
    assert values == sorted(values, reverse=True)
    assert page.locator("tr.task").count() == 5

    for selector in ("img.radiograph", "img#heatmap", ".thumb img"):
        page.locator(selector).first.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => [...document.images].every(img => img.complete && img.naturalWidth > 0)",
        timeout=60_000,
    )
    assert page.eval_on_selector("img#heatmap", "img => img.naturalWidth") > 0
    assert "Not a diagnosis" in page.inner_text(".notice")
    page.screenshot(path=str(artifacts_dir / "web-result.png"), full_page=True)
    assert page.errors == [], page.errors  # no CSP violations or script errors


def test_upload_a_text_file_and_see_the_error(page, gunicorn_server, tmp_path, artifacts_dir):
    text = tmp_path / "notes.txt"
    text.write_text("this is not an X-ray\n" * 20)
    page.goto(gunicorn_server.url + "/")
    page.set_input_files("input[name=file]", str(text))
    with page.expect_navigation() as navigation:
        page.click("button[type=submit]")
    assert navigation.value.status == 415
    assert "not an image ChestX can read" in page.inner_text(".error-message")
    assert page.locator("input[name=file]").count() == 1  # the form again
    page.screenshot(path=str(artifacts_dir / "web-error.png"), full_page=True)


def test_a_photo_is_refused_with_the_reasons(page, gunicorn_server, tmp_path, colour_photo):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(colour_photo)
    page.goto(gunicorn_server.url + "/")
    page.set_input_files("input[name=file]", str(photo))
    with page.expect_navigation() as navigation:
        page.click("button[type=submit]")
    assert navigation.value.status == 422
    assert page.locator(".gate-reasons li").count() >= 1
    assert page.locator("td.probability").count() == 0
    assert page.locator("input[name=override]").count() == 1


DROP_FILE = """([name, base64, size]) => {
    const bytes = base64 ? Uint8Array.from(atob(base64), c => c.charCodeAt(0))
                         : new Uint8Array(size);
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name));
    const zone = document.querySelector('.dropzone');
    zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: transfer, bubbles: true,
                                                  cancelable: true}));
    zone.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true,
                                              cancelable: true}));
    return document.querySelector('input[name=file]').files.length;
}"""


def test_drag_and_drop_uploads_and_checks_the_size(page, gunicorn_server, radiograph_png):
    import base64

    page.goto(gunicorn_server.url + "/")
    # A file larger than the server's 5 MB limit is stopped before it is sent.
    assert page.evaluate(DROP_FILE, ["big.png", "", 6 * 1024 * 1024]) == 1
    assert "the limit is 5 MB" in page.inner_text(".form-message")
    assert page.is_disabled("button[type=submit]")
    # A radiograph dropped on the form is uploaded by the ordinary form post.
    encoded = base64.b64encode(radiograph_png).decode()
    assert page.evaluate(DROP_FILE, ["chest.png", encoded, 0]) == 1
    assert page.inner_text(".form-message") == "" and page.is_enabled("button[type=submit]")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "/result/" in page.url
    assert page.locator("td.probability").count() == 14
