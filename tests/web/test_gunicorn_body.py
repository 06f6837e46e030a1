"""Bodies received straight from gunicorn's socket (chestx.web.gunicorn_body): the same bytes,
the connection left where gunicorn expects it, and gunicorn's own reading for anything else."""

from __future__ import annotations

import io
import json
import socket
import threading
import uuid

import pytest
from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.unreader import SocketUnreader
from PIL import Image
from webhelpers import COVID_JPEG
from werkzeug.exceptions import ClientDisconnected

from chestx.web.gunicorn_body import read_body

NEXT_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def gunicorn_environ(sock: socket.socket, length: int, read_ahead: bytes = b"") -> dict:
    """The environ gunicorn builds for a body of ``length`` bytes, with ``read_ahead`` already
    read past the headers, as its parser leaves it."""
    unreader = SocketUnreader(sock)
    unreader.unread(read_ahead)
    return {"wsgi.input": Body(LengthReader(unreader, length)), "gunicorn.socket": sock}


@pytest.fixture
def sockets():
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


@pytest.mark.parametrize("ahead", [0, 1000, 2_000_000])
def test_the_body_is_the_bytes_sent_and_what_follows_stays_for_gunicorn(sockets, ahead):
    server, client = sockets
    body = bytes(range(256)) * 8000  # 2 MB
    sent = body + NEXT_REQUEST  # a pipelined request behind the body
    environ = gunicorn_environ(server, len(body), sent[:ahead])
    sender = threading.Thread(target=client.sendall, args=(sent[ahead:],))
    sender.start()
    assert read_body(environ, len(body)) == body
    sender.join()
    gunicorn_reader = environ["wsgi.input"].reader
    assert gunicorn_reader.length == 0  # consumed: nothing more to wait for
    assert environ["wsgi.input"].read() == b""
    leftover = gunicorn_reader.unreader.read(len(NEXT_REQUEST))
    assert leftover == NEXT_REQUEST  # the next request starts where gunicorn will look


def test_a_client_gone_mid_body_fails_the_request_and_the_connection(sockets):
    server, client = sockets
    environ = gunicorn_environ(server, 1000, b"x" * 10)
    client.sendall(b"y" * 100)
    client.shutdown(socket.SHUT_WR)
    with pytest.raises(ClientDisconnected):
        read_body(environ, 1000)
    assert environ["wsgi.input"].failed is True  # gunicorn won't reuse the connection


def test_anything_else_is_left_to_gunicorns_reader(sockets):
    server, _ = sockets
    assert read_body({"wsgi.input": object()}, 10) is None  # another server
    started = gunicorn_environ(server, 10, b"0123456789")
    assert started["wsgi.input"].read(3) == b"012"  # partly read already
    assert read_body(started, 10) is None
    chunked = {
        "wsgi.input": Body(ChunkedReader(None, SocketUnreader(server))),
        "gunicorn.socket": server,
    }
    assert read_body(chunked, 10) is None
    assert read_body(gunicorn_environ(server, 10), 11) is None  # another length


def http_post(path: str, body: bytes, content_type: str = "image/jpeg") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def read_response(stream) -> tuple[int, dict]:
    status = int(stream.readline().split()[1])
    headers = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, json.loads(stream.read(int(headers["content-length"])))


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same picture, new bytes: a JPEG comment segment after the start marker."""
    comment = text.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


@pytest.mark.slow
def test_uploads_pipelined_on_one_connection_under_gunicorn(gunicorn_server, cxr_dir):
    jpeg = (cxr_dir / COVID_JPEG).read_bytes()
    width, height = Image.open(io.BytesIO(jpeg)).size
    new = with_comment(jpeg, f"pipelined {uuid.uuid4()}")
    with socket.create_connection(("127.0.0.1", gunicorn_server.port), timeout=60) as sock:
        # Two uploads and a health check sent at once: each body ends where the next begins.
        sock.sendall(
            http_post("/api/v1/predict", jpeg) + http_post("/api/v1/predict", new) + NEXT_REQUEST
        )
        stream = sock.makefile("rb")
        first, second, health = (read_response(stream) for _ in range(3))
    for status, answer in (first, second):
        assert status == 200 and len(answer["probabilities"]) == 14
        assert (answer["image"]["width"], answer["image"]["height"]) == (width, height)
    assert second[1]["study"]["reused"] is False  # its own bytes, read whole
    assert health[0] == 200 and health[1]["model_loaded"] is True


@pytest.mark.slow
def test_a_client_gone_mid_upload_leaves_the_server_serving(gunicorn_server, cxr_dir):
    jpeg = (cxr_dir / COVID_JPEG).read_bytes()
    with socket.create_connection(("127.0.0.1", gunicorn_server.port), timeout=60) as sock:
        sock.sendall(http_post("/api/v1/predict", jpeg)[: len(jpeg) // 2])
    with socket.create_connection(("127.0.0.1", gunicorn_server.port), timeout=60) as sock:
        sock.sendall(http_post("/api/v1/predict", jpeg))
        status, answer = read_response(sock.makefile("rb"))
    assert status == 200 and len(answer["probabilities"]) == 14
