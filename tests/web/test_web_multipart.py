"""Forms parsed in one pass give what Werkzeug's own parser gives, or are left to it."""

from __future__ import annotations

import io

import pytest
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from chestx.web import multipart as fast
from chestx.web.devserver import multipart
from chestx.web.upload import UploadRequest

JPEG_LIKE = b"\xff\xd8" + bytes(range(256)) * 4000 + b"\r\n--not-the-boundary\r\n\xff\xd9"


def parse(parser_class, body: bytes, content_type: str, **limits):
    parser = parser_class(max_form_parts=limits.get("parts", 1000), **_memory(limits))
    mimetype, options = content_type.split(";", 1)[0], {}
    if "boundary=" in content_type:
        options["boundary"] = content_type.split("boundary=", 1)[1]
    _, form, files = parser.parse(io.BytesIO(body), mimetype, len(body), options)
    return (
        list(form.items(multi=True)),
        [(k, f.filename, f.content_type, f.read()) for k, f in files.items(multi=True)],
    )


def _memory(limits):
    return {"max_form_memory_size": limits["memory"]} if "memory" in limits else {}


def both(body: bytes, content_type: str, **limits):
    ours = parse(fast.InMemoryFormDataParser, body, content_type, **limits)
    assert ours == parse(FormDataParser, body, content_type, **limits)
    return ours


def test_the_upload_form_is_split_as_werkzeug_splits_it():
    body, content_type = multipart(
        JPEG_LIKE, "chest é.jpg", {"override": "1", "name": "Ünïcode"}, "image/jpeg"
    )
    fields, files = both(body, content_type)
    assert fields == [("override", "1"), ("name", "Ünïcode")]
    assert files == [("file", "chest é.jpg", "image/jpeg", JPEG_LIKE)]
    boundary = content_type.split("boundary=")[1].encode()
    assert fast.split_form(body, boundary, 1000, None) is not None  # the one-pass path ran


@pytest.mark.parametrize(
    "change",
    [
        lambda body: b"a preamble\r\n" + body,
        lambda body: body.replace(b"\r\n", b"\n"),
        lambda body: body[: body.rindex(b"--")],  # no closing delimiter
        lambda body: body.replace(
            b"Content-Disposition: form-data", b"Content-Disposition:\r\n\tform-data", 1
        ),
        lambda body: body.replace(b"form-data;", b"attachment;", 1),
        lambda body: body[: len(body) // 2],  # truncated
        lambda body: b"",
    ],
)
def test_anything_unusual_is_left_to_werkzeug(change):
    body, content_type = multipart(JPEG_LIKE, "x.jpg", {"override": "yes"}, "image/jpeg")
    odd = change(body)
    boundary = content_type.split("boundary=")[1].encode()
    assert fast.split_form(odd, boundary, 1000, None) is None
    try:
        expected = parse(FormDataParser, odd, content_type)
    except ValueError as error:
        with pytest.raises(type(error)):
            parse(fast.InMemoryFormDataParser, odd, content_type)
    else:
        assert parse(fast.InMemoryFormDataParser, odd, content_type) == expected


def test_werkzeugs_limits_still_apply():
    fields = {f"f{i}": "x" for i in range(5)}
    body, content_type = multipart(JPEG_LIKE, "x.jpg", fields)
    with pytest.raises(RequestEntityTooLarge):
        parse(fast.InMemoryFormDataParser, body, content_type, parts=3)
    # Werkzeug's field and header limit (over its 64 kB reads, or every read would exceed it).
    limit = 100_000
    body, content_type = multipart(JPEG_LIKE, "x.jpg", {"note": "y" * 200_000})
    with pytest.raises(RequestEntityTooLarge):
        parse(fast.InMemoryFormDataParser, body, content_type, memory=limit)
    body, content_type = multipart(JPEG_LIKE, "x" * 200_000 + ".jpg")  # a 200 kB header line
    with pytest.raises(RequestEntityTooLarge):
        parse(fast.InMemoryFormDataParser, body, content_type, memory=limit)
    body, content_type = multipart(JPEG_LIKE, "x.jpg", {"note": "y" * 50_000})
    assert both(body, content_type, memory=limit)[0] == [("note", "y" * 50_000)]


def test_uploads_use_the_one_pass_parser():
    assert UploadRequest.form_data_parser_class is fast.InMemoryFormDataParser
