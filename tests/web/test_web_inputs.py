"""Every bad upload gets its status and a plain message, on the page and in the API; odd but
valid images (16-bit, RGBA, palette, CMYK, EXIF-rotated) are read and analysed."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from webhelpers import dicom_bytes, encode, png_header_bomb, post_api, post_form

from chestx.imaging import read_image


def _truncated_jpeg(image: Image.Image) -> bytes:
    data = encode(image, "JPEG", quality=90)
    return data[: len(data) // 2]


def _corrupt_png(image: Image.Image) -> bytes:
    data = bytearray(encode(image, "PNG"))
    data[200:1200] = bytes(1000)  # zero a stretch of the compressed pixel data
    return bytes(data)


BAD_INPUTS = {
    # name: (builder of the bytes from a real radiograph, status, words in the message)
    "empty form": (None, 400, "no file was chosen"),
    "empty file": (lambda image: b"", 400, "empty"),
    "text file": (lambda image: b"just some text\n" * 50, 415, "not an image"),
    "pdf": (lambda image: b"%PDF-1.4\n" + bytes(500), 415, "not an image"),
    "corrupt png": (_corrupt_png, 400, "corrupt"),
    "truncated jpeg": (_truncated_jpeg, 400, "truncated"),
    "decompression bomb": (lambda image: png_header_bomb(), 400, "too large to decode"),
    "dicom without pixel data": (lambda image: dicom_bytes("CR"), 400, "no pixel data"),
    "ct dicom": (
        lambda image: dicom_bytes("CT", np.zeros((64, 64), np.uint16)),
        422,
        "not a radiograph",
    ),
    "dicom pixel bomb": (
        lambda image: dicom_bytes("CR", np.zeros((4, 4), np.uint16), Rows=60000, Columns=60000),
        400,
        "too large to decode",
    ),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_upload_page(client, radiograph_grey, name):
    build, status, words = BAD_INPUTS[name]
    data = None if build is None else build(radiograph_grey)
    response = post_form(client, data)
    page = response.get_data(as_text=True)
    assert response.status_code == status, page[:800]
    assert words in page.lower()
    assert 'name="file"' in page, "the error page offers the form again"
    assert "Traceback" not in page and "data-probability" not in page


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_upload_api(client, radiograph_grey, name):
    build, status, words = BAD_INPUTS[name]
    data = None if build is None else build(radiograph_grey)
    response = post_api(client, data)
    assert response.status_code == status
    assert response.is_json and words in response.json["error"].lower()
    assert "probabilities" not in response.json


def test_oversize_upload_is_413(app, client, radiograph_png, monkeypatch):
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 100 * 1024)
    big = radiograph_png + bytes(200 * 1024)
    page = post_form(client, big)
    assert page.status_code == 413
    assert "larger than the upload limit" in page.get_data(as_text=True)
    api = post_api(client, big)
    assert api.status_code == 413 and "upload limit" in api.json["error"]


def test_upload_limit_comes_from_the_environment(monkeypatch):
    from chestx.web.config import from_env

    assert from_env({})["MAX_CONTENT_LENGTH"] == 20 * 1024 * 1024
    assert from_env({"CHESTX_MAX_UPLOAD_MB": "2"})["MAX_CONTENT_LENGTH"] == 2 * 1024 * 1024


def _exif_rotated(image: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise
    return encode(image.crop((0, 0, 512, 400)), "JPEG", quality=92, exif=exif)


GOOD_VARIANTS = {
    "16-bit png": lambda image: encode(
        Image.fromarray((np.asarray(image, np.uint16) * 257).astype(np.uint16)), "PNG"
    ),
    "rgba png": lambda image: encode(image.convert("RGBA"), "PNG"),
    "palette png": lambda image: encode(image.convert("P"), "PNG"),
    "cmyk jpeg": lambda image: encode(image.convert("CMYK"), "JPEG", quality=92),
    "exif-rotated jpeg": _exif_rotated,
}


@pytest.mark.parametrize("name", GOOD_VARIANTS)
def test_odd_but_valid_images_are_read_like_the_original(radiograph_grey, name):
    data = GOOD_VARIANTS[name](radiograph_grey)
    pixels = read_image(data).pixels
    original = np.asarray(radiograph_grey, np.float32) / 255.0
    if name == "exif-rotated jpeg":
        assert pixels.shape == (512, 400)  # portrait after applying the EXIF orientation
        expected = np.rot90(original[:400, :512], k=-1)
    else:
        assert pixels.shape == original.shape
        expected = original
    assert np.abs(pixels - expected).mean() < 0.02


@pytest.mark.parametrize("name", GOOD_VARIANTS)
def test_odd_but_valid_images_are_analysed(client, radiograph_grey, name):
    response = post_api(client, GOOD_VARIANTS[name](radiograph_grey))
    assert response.status_code == 200, response.json
    assert len(response.json["probabilities"]) == 14
    assert response.json["gate"]["passed"]


def test_exif_rotation_reaches_the_displayed_image(client, radiograph_grey):
    response = post_form(client, _exif_rotated(radiograph_grey))
    image = client.get(response.headers["Location"] + "/image.png")
    assert Image.open(io.BytesIO(image.data)).size == (400, 512)


def test_half_transparent_pixels_are_composited_over_black():
    image = Image.new("LA", (300, 300), (200, 128))
    assert read_image(encode(image, "PNG")).pixels.mean() == pytest.approx(100 / 255, abs=0.01)


class _BrokenBody(io.BytesIO):
    """A request body that ends early (the client went away) or then fails (a reset)."""

    def __init__(self, data: bytes, fail: bool):
        super().__init__(data)
        self.fail = fail

    def read(self, size: int | None = -1) -> bytes:
        piece = super().read(size)
        if not piece and self.fail:
            raise ConnectionResetError("connection reset by peer")
        return piece


@pytest.mark.parametrize("fail", [False, True], ids=["ends early", "reset"])
def test_a_body_shorter_than_its_content_length_is_400_not_500(client, radiograph_png, fail):
    half = radiograph_png[: len(radiograph_png) // 2]
    response = client.post(
        "/api/v1/predict",
        input_stream=_BrokenBody(half, fail),
        headers={"Content-Type": "image/png", "Content-Length": str(len(radiograph_png))},
    )
    assert response.status_code == 400
    assert "probabilities" not in (response.get_json(silent=True) or {})
