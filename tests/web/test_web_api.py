"""The JSON API and the health check."""

from __future__ import annotations

import io
from dataclasses import asdict

from webhelpers import post_api

from chestx.labels import COMPETITION_TASKS, OBSERVATIONS
from chestx.web.devserver import multipart


def test_predict_returns_the_14_probabilities_and_the_model(app, client, radiograph_png):
    response = post_api(client, radiograph_png)
    assert response.status_code == 200
    body = response.json
    card = app.extensions["chestx"].analyser.card
    assert body["model"] == {
        "name": card.name,
        "version": card.version,
        "demo": True,
        "summary": card.summary,
    }
    assert list(body["probabilities"]) == list(OBSERVATIONS)  # CheXpert order
    assert all(0.0 <= p <= 1.0 for p in body["probabilities"].values())
    assert body["competition_tasks"] == list(COMPETITION_TASKS)
    ranked = [body["probabilities"][name] for name in body["ranked"]]
    assert ranked == sorted(ranked, reverse=True)
    assert 0 < body["seconds"]["model"] <= body["seconds"]["total"]
    assert body["gate"]["passed"] and not body["gate"]["overridden"]
    assert any("DEMO model" in w for w in body["warnings"])
    assert "not a diagnosis" in body["notice"]
    assert body["image"] == {"format": "PNG", "width": 512, "height": 512}


def test_predict_links_serve_the_image_and_maps(client, radiograph_png):
    links = post_api(client, radiograph_png).json["links"]
    assert client.get(links["image"]).mimetype == "image/png"
    assert len(links["heatmaps"]) == 3 and "No Finding" not in links["heatmaps"]
    for url in links["heatmaps"].values():
        assert client.get(url).status_code == 200
    assert client.get(links["result_page"]).status_code == 200


def test_same_image_same_answer(client, radiograph_png):
    first = post_api(client, radiograph_png).json["probabilities"]
    second = post_api(client, radiograph_png).json["probabilities"]
    assert first == second


def test_api_needs_no_csrf_token(client, radiograph_png):
    # post_api sends no token and no session cookie; the API must still answer.
    assert post_api(client, radiograph_png).status_code == 200


def test_model_card_endpoint(app, client):
    response = client.get("/api/v1/model")
    assert response.status_code == 200
    assert response.json == asdict(app.extensions["chestx"].analyser.card)


def test_healthz(app, client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json["model_loaded"] is True
    assert response.json["model"]["name"] == app.extensions["chestx"].analyser.card.name


def test_api_errors_are_json(client):
    wrong_method = client.get("/api/v1/predict")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json
    missing = client.get("/api/v1/nothing")
    assert missing.status_code == 404 and "error" in missing.json


def test_gate_refusal_and_override(client, colour_photo):
    refused = post_api(client, colour_photo)
    assert refused.status_code == 422
    assert "does not look like a chest radiograph" in refused.json["error"]
    assert refused.json["gate"]["passed"] is False
    assert any("colour" in reason for reason in refused.json["gate"]["reasons"])
    assert "probabilities" not in refused.json

    forced = post_api(client, colour_photo, override="yes")
    assert forced.status_code == 200
    assert forced.json["gate"]["overridden"] is True
    assert any("analysed anyway" in w for w in forced.json["warnings"])


def test_the_file_as_the_request_body_gets_the_same_answer_as_a_form(client, cxr_dir):
    """`curl --data-binary @x.jpg -H 'Content-Type: image/jpeg'`: no form to parse."""
    jpeg = next(p for p in sorted((cxr_dir / "covid").glob("*.jpg")) if p.stat().st_size > 1e6)
    data = jpeg.read_bytes()
    raw = client.post("/api/v1/predict", data=data, content_type="image/jpeg")
    form = post_api(client, data, "x.jpg")
    assert raw.status_code == 200 and form.status_code == 200
    assert raw.json["probabilities"] == form.json["probabilities"]
    assert raw.json["image"] == {"format": "JPEG", "width": 2000, "height": 2000}
    dicom = next(cxr_dir.rglob("*.dcm")).read_bytes()
    answer = client.post("/api/v1/predict", data=dicom, content_type="application/dicom")
    assert answer.status_code == 200 and answer.json["image"]["format"] == "DICOM"


def test_a_bad_request_body_gets_a_clear_error(client):
    empty = client.post("/api/v1/predict", data=b"", content_type="image/jpeg")
    assert empty.status_code == 400 and "body is empty" in empty.json["error"]
    text = client.post("/api/v1/predict", data=b"hello " * 100, content_type="image/png")
    assert text.status_code == 415
    truncated = client.post(
        "/api/v1/predict",
        data=b"\xff\xd8\xff\xe0" + b"\0" * 50,
        content_type="application/octet-stream",
    )
    assert truncated.status_code in (400, 415)
    assert "Traceback" not in truncated.get_data(as_text=True)


def test_a_large_form_upload_never_touches_a_temporary_file(client, cxr_dir, monkeypatch):
    """Werkzeug spools parts over 500 kB to disk; ChestX keeps uploads (patient images) in
    memory."""
    from werkzeug import formparser

    def no_disk(*args, **kwargs):
        raise AssertionError("an upload was written to a temporary file")

    # Werkzeug's default stream factory makes its files through these two names.
    monkeypatch.setattr(formparser, "SpooledTemporaryFile", no_disk, raising=False)
    monkeypatch.setattr(formparser, "TemporaryFile", no_disk, raising=False)
    jpeg = next(p for p in sorted((cxr_dir / "covid").glob("*.jpg")) if p.stat().st_size > 1e6)
    assert post_api(client, jpeg.read_bytes(), "x.jpg").status_code == 200


def test_a_large_form_is_read_from_the_socket_in_one_piece(client, cxr_dir):
    """Werkzeug reads 64 kB at a time, and gunicorn copies its read-ahead on every read: a
    1.3 MB form cost 15 ms to read. ChestX asks the server for the declared length at once."""
    jpeg = next(p for p in sorted((cxr_dir / "covid").glob("*.jpg")) if p.stat().st_size > 1e6)
    body, content_type = multipart(jpeg.read_bytes(), "x.jpg", content_type="image/jpeg")
    reads = []

    class CountingInput(io.BytesIO):
        def read(self, size=-1):
            reads.append(size)
            return super().read(size)

        def readinto(self, buffer):
            reads.append(len(buffer))
            return super().readinto(buffer)

    answer = client.post(
        "/api/v1/predict",
        data=body,
        content_type=content_type,
        environ_overrides={"wsgi.input": CountingInput(body)},
    )
    assert answer.status_code == 200
    assert reads and reads[0] == len(body) and len(reads) <= 2


def test_a_body_shorter_than_its_declared_length_is_a_clear_400(client):
    short = client.post(
        "/api/v1/predict",
        data=b"\xff\xd8\xff" * 10,
        content_type="image/jpeg",
        environ_overrides={"CONTENT_LENGTH": "5000"},
    )
    assert short.status_code == 400
    assert "Traceback" not in short.get_data(as_text=True)
