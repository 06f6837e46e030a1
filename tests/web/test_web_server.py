"""ChestX under real gunicorn: uploads over HTTP, the upload limit, and logs without patients."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import pytest
from webhelpers import COVID_JPEG, DICOM_M1, DICOM_M2, PATIENT_TAG_VALUE

pytestmark = pytest.mark.slow


def multipart(data: bytes, filename: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post(url: str, data: bytes, filename: str = "upload.bin") -> tuple[int, dict]:
    body, content_type = multipart(data, filename)
    request = urllib.request.Request(url, body, {"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_healthz_and_security_headers(gunicorn_server):
    with urllib.request.urlopen(gunicorn_server.url + "/healthz", timeout=10) as response:
        assert response.status == 200
        assert json.load(response)["model_loaded"] is True
        assert response.headers["X-Frame-Options"] == "DENY"


def test_predict_over_http(gunicorn_server, cxr_dir):
    status, body = post(
        gunicorn_server.url + "/api/v1/predict", (cxr_dir / COVID_JPEG).read_bytes()
    )
    assert status == 200
    assert len(body["probabilities"]) == 14 and body["image"]["format"] == "JPEG"


def test_upload_limit_is_413_over_http(gunicorn_server):
    # The server runs with CHESTX_MAX_UPLOAD_MB=5.
    status, body = post(gunicorn_server.url + "/api/v1/predict", bytes(6 * 1024 * 1024))
    assert status == 413 and "upload limit of 5 MB" in body["error"]


def test_patient_tags_never_reach_the_server_log(gunicorn_server, cxr_dir):
    for name in (DICOM_M2, DICOM_M1):
        status, body = post(
            gunicorn_server.url + "/api/v1/predict", (cxr_dir / name).read_bytes(), "Doe_Jane.dcm"
        )
        assert status == 200 and body["image"]["format"] == "DICOM"
        assert PATIENT_TAG_VALUE not in json.dumps(body)
    log = gunicorn_server.log_text()
    assert "analysed a DICOM image" in log  # the app does log, and to this file
    assert PATIENT_TAG_VALUE not in log and "16d7f894" not in log and "Doe_Jane" not in log
    assert "Traceback" not in log
