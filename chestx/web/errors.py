"""Every error ends in a plain message with the right status: a page with the upload form for
the browser, ``{"error": ...}`` for the API. Never a traceback, never a 500 for bad input.
"""

from __future__ import annotations

import logging
import traceback

from flask import Flask, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from chestx.errors import ImageError
from chestx.web.analysis import GateRefusal

log = logging.getLogger("chestx.web")

GENERIC_MESSAGES = {
    400: "The request could not be understood.",
    404: "There is no page at this address.",
    405: "This address does not accept that kind of request.",
    429: "Too many uploads from your address in a short time. Wait a minute and try again.",
    500: "Something went wrong on our side. The error was logged (without your image); "
    "please try again.",
}


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def _respond(message: str, status: int, verdict=None):
    if _wants_json():
        body = {"error": message, "status": status}
        if verdict is not None:
            body["gate"] = verdict.to_dict()
        return jsonify(body), status
    return (
        render_template("error.html", message=message, status=status, verdict=verdict),
        status,
    )


#: An oversize upload is read and dropped up to this size before the 413 goes out, so the client
#: finishes sending and sees the message; past it the connection is simply closed.
DRAIN_LIMIT = 64 * 1024 * 1024


def _drain_request_body() -> None:
    """Read the rest of a refused upload: a server that answers and closes while the browser is
    still sending makes it show "connection reset" instead of the 413 page."""
    length = request.content_length or 0
    if not 0 < length <= DRAIN_LIMIT:
        return
    stream = request.environ.get("wsgi.input")
    if stream is None:
        return
    remaining = length
    try:
        while remaining > 0:
            chunk = stream.read(min(remaining, 1024 * 1024))
            if not chunk:
                break
            remaining -= len(chunk)
    except OSError:  # the client gave up: nothing to answer
        pass


def _too_large_message() -> str:
    limit = current_app.config["MAX_CONTENT_LENGTH"] / (1024 * 1024)
    return (
        f"The file is larger than the upload limit of {limit:g} MB. Upload a smaller export "
        "of the radiograph (a PNG or JPEG of a few MB is plenty)."
    )


def handle_image_error(error: ImageError):
    """Bad uploads: corrupt, truncated, not an image, not a radiograph."""
    message = str(error)
    message = message[0].upper() + message[1:] if message else "The file can't be read."
    if not message.endswith("."):
        message += "."
    verdict = error.verdict if isinstance(error, GateRefusal) else None
    return _respond(message, error.status, verdict)


def handle_csrf(error: CSRFError):
    return _respond(
        "The form had expired or did not come from this site. Choose the file again and resubmit.",
        400,
    )


def handle_http(error: HTTPException):
    status = error.code or 500
    if status == 413:
        _drain_request_body()
        message = _too_large_message()
    elif status == 429:  # flask-limiter's description is the limit itself ("60 per 1 minute")
        _drain_request_body()
        message = GENERIC_MESSAGES[429] + f" (The limit is {error.description}.)"
    elif error.description and error.description != type(error).description:
        message = error.description  # one of ours, written for the user
    else:
        message = GENERIC_MESSAGES.get(status, error.name + ".")
    return _respond(message, status)


def handle_unexpected(error: Exception):
    """Log the type and where it happened (no message: it could quote the upload), show 500."""
    where = "".join(traceback.format_tb(error.__traceback__))
    log.error(
        "unexpected %s on %s %s\n%s", type(error).__name__, request.method, request.path, where
    )
    return _respond(GENERIC_MESSAGES[500], 500)


#: Seconds a client is told to wait (Retry-After) when the database is unreachable.
DATABASE_RETRY_SECONDS = 30
DATABASE_UNAVAILABLE = (
    "The study database can't be reached just now, so nothing was saved. Please try again in "
    "a minute."
)


def handle_database_unavailable(error: Exception):
    """The database is down or unreachable (or SQLite stays locked): 503, never a 500. The
    engine's pre-ping reconnects by itself once it is back. Logged without the message: it
    can quote the statement's parameters (a file name)."""
    orig = getattr(error, "orig", None)
    log.error(
        "database unavailable on %s %s: %s%s",
        request.method,
        request.path,
        type(error).__name__,
        f" ({type(orig).__module__}.{type(orig).__name__})" if orig is not None else "",
    )
    response, status = _respond(DATABASE_UNAVAILABLE, 503)
    response = current_app.make_response((response, status))
    response.headers["Retry-After"] = str(DATABASE_RETRY_SECONDS)
    return response


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ImageError, handle_image_error)
    app.register_error_handler(CSRFError, handle_csrf)
    app.register_error_handler(HTTPException, handle_http)
    for database_error in (OperationalError, InterfaceError, PoolTimeout):
        app.register_error_handler(database_error, handle_database_unavailable)
    app.register_error_handler(Exception, handle_unexpected)
