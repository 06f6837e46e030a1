"""Reading the uploaded file out of a request: the bytes only, never its name."""

from __future__ import annotations

from flask import Request

from chestx.errors import ImageError

FIELD = "file"
TRUE_WORDS = frozenset({"1", "yes", "true", "on"})


def upload_bytes(request: Request) -> bytes:
    """The bytes of the ``file`` field. The client's file name is ignored: it may name a patient."""
    upload = request.files.get(FIELD)
    data = upload.read() if upload is not None else b""
    if not data:
        if upload is None or not upload.filename:
            raise ImageError(
                "no file was chosen: choose a PNG, JPEG or DICOM (.dcm) chest radiograph", 400
            )
        raise ImageError("the uploaded file is empty", 400)
    return data


def wants_override(request: Request) -> bool:
    """True when the user confirmed that a refused image is a chest radiograph after all."""
    return request.values.get("override", "").strip().lower() in TRUE_WORDS
