"""Reading the uploaded file out of a request: the bytes only, never its name.

Two ways to send a file:
- multipart/form-data with a ``file`` field (the HTML form, ``curl -F file=@x.jpg``);
- to the API only, the file itself as the body, with its own type (``curl --data-binary @x.jpg
  -H 'Content-Type: image/jpeg'``): no form encoding to parse, the fastest way in.
"""

from __future__ import annotations

import io
from typing import IO

from flask import Request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.utils import cached_property
from werkzeug.wsgi import get_input_stream

from chestx.errors import ImageError
from chestx.web.multipart import InMemoryFormDataParser

FIELD = "file"
TRUE_WORDS = frozenset({"1", "yes", "true", "on"})
#: Body types taken as the file itself.
RAW_TYPES = frozenset({"application/octet-stream", "application/dicom"})
#: Uploads up to this size are parsed into memory (MAX_CONTENT_LENGTH, 20 MB by default, bounds
#: them); larger ones, if configured, go to an anonymous temporary file as Werkzeug does.
IN_MEMORY_BYTES = 64 * 1024 * 1024


class UploadRequest(Request):
    """Flask's request, with the body read in one piece and multipart file parts in memory.

    Werkzeug writes any part over 500 kB to a temporary file: a chest X-ray upload would touch
    the disk (patient data) and cost a write and a read-back on every request. A form read in
    one piece is also parsed in one pass (chestx.web.multipart)."""

    form_data_parser_class = InMemoryFormDataParser

    @cached_property
    def stream(self) -> IO[bytes]:
        """The body, read with one call when its length is declared and at most
        IN_MEMORY_BYTES. Werkzeug reads a body 64 kB at a time, and gunicorn copies what it has
        read ahead on every such read: a 1.3 MB form took 15 ms to read instead of 1.
        MAX_CONTENT_LENGTH is enforced as before (413)."""
        if self.shallow:
            raise RuntimeError("this request was created with shallow=True: no body")
        length = self.content_length
        if not length or length > IN_MEMORY_BYTES:
            return get_input_stream(self.environ, max_content_length=self.max_content_length)
        if self.max_content_length is not None and length > self.max_content_length:
            raise RequestEntityTooLarge()
        # Straight from the server's stream, never past Content-Length. Through Werkzeug's
        # LimitedStream, 1.3 MB from gunicorn cost 4.0 to 4.7 ms of CPU; directly, 2.5 to 2.7.
        stream = self.environ["wsgi.input"]
        try:
            body = stream.read(length)  # all of it with gunicorn; another server may give less
            if len(body) < length:
                rest = bytearray(body)
                while len(rest) < length:
                    piece = stream.read(length - len(rest))
                    if not piece:
                        raise ClientDisconnected()
                    rest += piece
                body = bytes(rest)
        except (OSError, ValueError):  # as LimitedStream does: the client went away mid-body
            raise ClientDisconnected() from None
        return io.BytesIO(body)

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        if total_content_length is not None and total_content_length <= IN_MEMORY_BYTES:
            return io.BytesIO()
        return super()._get_file_stream(
            total_content_length, content_type, filename, content_length
        )


def is_raw_upload(request: Request) -> bool:
    """True when the body is the file itself (an image/* or DICOM type), not a form."""
    return request.mimetype in RAW_TYPES or request.mimetype.startswith("image/")


def upload_bytes(request: Request) -> bytes:
    """The uploaded file's bytes. The client's file name is ignored: it may name a patient."""
    if is_raw_upload(request):
        data = request.get_data(cache=False)
        if not data:
            raise ImageError("the request body is empty: send the image file as the body", 400)
        return data
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
