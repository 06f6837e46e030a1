"""Helpers for the web tests: posting uploads, building odd files, real gunicorn.

Kept out of conftest.py so test modules can import them (`from webhelpers import ...`: pytest
puts tests/web on sys.path, as it has no __init__.py).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chestx.web.devserver import GunicornProcess

REPO = Path(__file__).resolve().parents[2]
NIH_PNG = "nih/00000001_000.png"
COVID_JPEG = "covid/00870a9c.jpg"
DICOM_M2 = "dicom/siim_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
DICOM_M1 = "dicom/siim_monochrome1.dcm"
#: The pseudonymous PatientName and PatientID both shared DICOMs carry: must never be echoed.
PATIENT_TAG_VALUE = "16d7f894-55d7-4d95-8957-d18987f0e981"


def csrf_token(client) -> str:
    """The form's CSRF token, as a browser gets it: from the page, with the session cookie."""
    page = client.get("/").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the upload form has no CSRF token"
    return match.group(1)


def post_form(client, data: bytes | None, filename: str = "upload.bin", **fields):
    """Submit the upload form like a browser (with the CSRF token); no redirects followed."""
    form = {"csrf_token": csrf_token(client), **fields}
    if data is not None:
        form["file"] = (io.BytesIO(data), filename)
    return client.post("/", data=form, content_type="multipart/form-data")


def post_api(client, data: bytes | None, filename: str = "upload.bin", **fields):
    form = dict(fields)
    if data is not None:
        form["file"] = (io.BytesIO(data), filename)
    return client.post("/api/v1/predict", data=form, content_type="multipart/form-data")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_header_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header claims a huge image: a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def dicom_bytes(modality: str = "CR", pixels: np.ndarray | None = None, **tags) -> bytes:
    """A DICOM built with pydicom: with or without pixel data, of any modality."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "SECRET-ID-123"
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@contextlib.contextmanager
def gunicorn(env_extra: dict[str, str], log: Path, **options) -> Iterator[GunicornProcess]:
    """ChestX under real gunicorn (chestx.web.devserver), answering /healthz; stopped after.
    A server that exits or doesn't answer in 180 s fails the test with gunicorn's log.
    GUNICORN_CMD_ARGS is ``gunicorn_args`` (none unless given), never this environment's."""
    options.setdefault("gunicorn_args", "")
    with GunicornProcess(env_extra, log, **options) as server:
        try:
            server.wait_ready()
        except RuntimeError as error:
            pytest.fail(str(error))
        yield server
