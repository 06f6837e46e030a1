"""The browser pages through Flask's test client: home, upload, result, its images, errors."""

from __future__ import annotations

import io
import re

from PIL import Image
from webhelpers import post_form

from chestx.labels import COMPETITION_TASKS, OBSERVATIONS


def result_page(client, data: bytes) -> tuple[str, str]:
    response = post_form(client, data, "radiograph.png")
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    location = response.headers["Location"]
    page = client.get(location)
    assert page.status_code == 200
    return location, page.get_data(as_text=True)


def test_homepage_says_what_chestx_is_and_is_not(client, app):
    page = client.get("/").get_data(as_text=True)
    card = app.extensions["chestx"].analyser.card
    assert "Not a diagnosis" in page or "not a diagnosis" in page
    assert "What it is not" in page
    for name in OBSERVATIONS:
        assert name in page
    assert card.name in page and card.version in page
    assert 'enctype="multipart/form-data"' in page
    assert 'name="csrf_token"' in page
    assert 'type="file"' in page and 'name="file"' in page
    assert ".dcm" in page


def test_demo_banner_and_model_name_on_every_page(client, app, radiograph_png):
    card = app.extensions["chestx"].analyser.card
    assert card.demo, "the tiny test model is a demo model"
    location, result = result_page(client, radiograph_png)
    pages = {
        "home": client.get("/").get_data(as_text=True),
        "result": result,
        "error": post_form(client, b"not an image").get_data(as_text=True),
        "not found": client.get("/no/such/page").get_data(as_text=True),
        "expired": client.get("/result/unknown-id").get_data(as_text=True),
    }
    for name, page in pages.items():
        assert 'class="demo-banner"' in page, name
        assert "mean nothing clinically" in page, name
        assert card.name in page, name


def test_result_page_lists_14_probabilities_highest_first(client, app, radiograph_png):
    location, page = result_page(client, radiograph_png)
    values = [float(v) for v in re.findall(r'data-probability="([0-9.]+)"', page)]
    row = r'<tr class="finding%s[^"]*">\s*<th scope="row">([^<]+)'
    names = [n.strip() for n in re.findall(row % "", page)]
    assert len(values) == 14 and len(names) == 14
    assert sorted(names) == sorted(OBSERVATIONS)
    assert values == sorted(values, reverse=True)
    assert all(0.0 <= v <= 1.0 for v in values)
    assert page.count("<meter") == 14
    marked = [n.strip() for n in re.findall(row % " task", page)]
    assert sorted(marked) == sorted(COMPETITION_TASKS)
    assert "Not a diagnosis" in page
    assert re.search(r'class="model-seconds">[0-9.]+ s<', page)
    # The model card in short: data, validation AUC, demo.
    assert "Trained on" in page and "mean AUC" in page and "demo" in page


def test_result_images_are_plain_pngs_served_separately(client, radiograph_png):
    location, page = result_page(client, radiograph_png)
    image = client.get(location + "/image.png")
    assert image.status_code == 200 and image.mimetype == "image/png"
    assert Image.open(io.BytesIO(image.data)).size == (512, 512)
    maps = re.findall(r'src="(/result/[^"]+/map/[a-z-]+\.png)"', page)
    assert len(maps) >= 2  # the chosen map and the top findings' thumbnails
    heat = client.get(maps[0])
    assert heat.status_code == 200 and heat.mimetype == "image/png"
    assert Image.open(io.BytesIO(heat.data)).mode == "RGB"
    assert heat.headers["Cache-Control"] == "no-store"


def test_choosing_a_finding_shows_its_map(client, radiograph_png):
    location, _ = result_page(client, radiograph_png)
    page = client.get(location + "?map=cardiomegaly").get_data(as_text=True)
    assert re.search(r'id="heatmap"\s+src="[^"]+/map/cardiomegaly\.png"', page)
    assert "evidence for <strong>Cardiomegaly</strong>" in page
    assert client.get(location + "/map/cardiomegaly.png").status_code == 200
    assert client.get(location + "/map/no-such-finding.png").status_code == 404


def test_expired_or_unknown_result_is_404_with_the_form(client):
    response = client.get("/result/not-a-real-id")
    assert response.status_code == 404
    page = response.get_data(as_text=True)
    assert "no longer available" in page and 'name="file"' in page
    assert client.get("/result/not-a-real-id/image.png").status_code == 404


def test_form_without_csrf_token_is_refused(client, radiograph_png):
    response = client.post(
        "/",
        data={"file": (io.BytesIO(radiograph_png), "x.png")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert "expired or did not come from this site" in response.get_data(as_text=True)


def test_405_and_404_are_pages_not_tracebacks(client):
    response = client.delete("/")
    assert response.status_code == 405
    assert "Traceback" not in response.get_data(as_text=True)
    assert client.get("/nothing-here").status_code == 404


def test_a_photo_is_refused_with_reasons_and_can_be_overridden(client, colour_photo):
    refused = post_form(client, colour_photo, "holiday.jpg")
    page = refused.get_data(as_text=True)
    assert refused.status_code == 422
    assert "Not a chest radiograph?" in page and 'class="gate-reasons"' in page
    assert "colour image" in page
    assert "data-probability" not in page
    assert 'name="override"' in page  # the form again, with the explicit override

    forced = post_form(client, colour_photo, "holiday.jpg", override="yes")
    assert forced.status_code == 303
    result = client.get(forced.headers["Location"]).get_data(as_text=True)
    assert "analysed anyway" in result and result.count("data-probability=") == 14


def test_homepage_form_offers_no_override(client):
    assert 'name="override"' not in client.get("/").get_data(as_text=True)
