"""CSRF protection for the browser form, the secret key, and security headers on every response.

The Content-Security-Policy allows scripts, styles and images from this origin only: no inline
script or style anywhere, so an injected tag can't run. Result pages and images are marked
no-store: they are medical images and must not linger in shared caches.
"""

from __future__ import annotations

import secrets

from flask import Flask, Response, request
from flask_wtf.csrf import CSRFProtect

csrf = CSRFProtect()

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: behind HTTPS flask-wtf checks that a form post's Referer is
    # this site. Other sites never see a result URL.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}


def _add_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
    return response


def init_security(app: Flask) -> None:
    """A secret key (random per process unless CHESTX_SECRET_KEY is set), CSRF and headers.

    gunicorn.conf.py sets one random CHESTX_SECRET_KEY in the master before workers fork, so a
    form rendered by one worker validates in another.
    """
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = secrets.token_hex(32)
    csrf.init_app(app)
    app.after_request(_add_headers)
