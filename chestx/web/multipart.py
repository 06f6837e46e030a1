"""multipart/form-data parsed in one pass when the whole body is already in memory.

Werkzeug's parser is incremental: it feeds the body through its decoder 64 kB at a time and
searches each piece for the boundary with a regular expression, which took 3 to 5 ms for a
1.3 MB chest X-ray form, as long as decoding the JPEG. ``UploadRequest`` reads a body of
declared length in one piece, so here the parts are found with ``bytes.find`` on the whole of
it (reading and splitting such a form: 0.6 ms). Only the well-formed case is handled: no
preamble, CRLF line breaks, a closing delimiter, within Werkzeug's limits on parts and field
sizes. Anything else is left to Werkzeug's own parser, with its own errors and limits, so odd
or hostile forms are parsed exactly as before.
"""

from __future__ import annotations

import io
from typing import IO

from werkzeug.datastructures import FileStorage, Headers
from werkzeug.formparser import FormDataParser, MultiPartParser
from werkzeug.http import parse_options_header

#: Werkzeug's own rule for a field's charset (``get_part_charset`` reads only the headers).
_WERKZEUG_PARTS = MultiPartParser()


class InMemoryFormDataParser(FormDataParser):
    """Werkzeug's FormDataParser, with a one-pass path for a form held in a BytesIO."""

    def _parse_multipart(self, stream: IO[bytes], mimetype, content_length, options):
        if isinstance(stream, io.BytesIO):
            boundary = options.get("boundary", "").encode("ascii", "replace")
            parsed = split_form(
                stream.getvalue(), boundary, self.max_form_parts, self.max_form_memory_size
            )
            if parsed is not None:
                fields, files = parsed
                return stream, self.cls(fields), self.cls(files)
        return super()._parse_multipart(stream, mimetype, content_length, options)


def split_form(
    body: bytes, boundary: bytes, max_parts: int | None, max_field_bytes: int | None
) -> tuple[list[tuple[str, str]], list[tuple[str, FileStorage]]] | None:
    """The fields and files of a well-formed multipart body; None for anything else."""
    if not boundary or len(boundary) > 200:
        return None
    delimiter = b"--" + boundary
    if not body.startswith(delimiter + b"\r\n"):
        return None  # a preamble, or another line break: Werkzeug's parser handles those
    fields: list[tuple[str, str]] = []
    files: list[tuple[str, FileStorage]] = []
    separator = b"\r\n" + delimiter
    start = len(delimiter) + 2
    while True:
        if max_parts is not None and len(fields) + len(files) >= max_parts:
            return None  # Werkzeug refuses it (413)
        headers_end = body.find(b"\r\n\r\n", start)
        if headers_end < 0 or (
            max_field_bytes is not None and headers_end - start > max_field_bytes
        ):
            return None  # no end to the headers, or more of them than Werkzeug buffers (413)
        headers = _headers(body[start:headers_end])
        if headers is None:
            return None
        content_end = body.find(separator, headers_end + 4)
        if content_end < 0:
            return None
        content = body[headers_end + 4 : content_end]
        disposition, params = parse_options_header(headers.get("Content-Disposition"))
        if disposition != "form-data" or "name" not in params:
            return None
        name = params["name"]
        if "filename" in params:
            stream = io.BytesIO(content)
            files.append((name, FileStorage(stream, params["filename"], name, headers=headers)))
        else:
            if max_field_bytes is not None and len(content) > max_field_bytes:
                return None  # Werkzeug refuses it (413)
            charset = _WERKZEUG_PARTS.get_part_charset(headers)
            fields.append((name, content.decode(charset, "replace")))
        after = content_end + len(separator)
        if body[after : after + 2] == b"--":
            return fields, files  # the closing delimiter; an epilogue after it is ignored
        if body[after : after + 2] != b"\r\n":
            return None
        start = after + 2


def _headers(block: bytes) -> Headers | None:
    """A part's headers, one per line; None for folded lines, lines without a colon or bytes
    that aren't UTF-8 (Werkzeug's parser deals with those)."""
    headers = Headers()
    for line in block.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") or b":" not in line:
            return None
        try:
            name, value = line.decode().split(":", 1)
        except UnicodeDecodeError:
            return None
        headers.add(name.strip(" \t"), value.strip(" \t"))
    return headers
