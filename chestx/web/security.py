"""CSRF protection for the browser form, the secret key, security headers on every response,
and a rate limit per client address on the two upload endpoints.

The Content-Security-Policy allows scripts, styles and images from this origin only: no inline
script or style anywhere, so an injected tag can't run. Result pages and images are marked
no-store: they are medical images and must not linger in shared caches.
"""

from __future__ import annotations

import secrets

from flask import Flask, Response, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
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

#: The endpoints that run the model: the upload form's POST and the API's predict.
RATE_LIMITED_ENDPOINTS = frozenset({"pages.analyse", "api.predict"})

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
    if request.endpoint != "static" or response.status_code >= 400:
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


def init_rate_limit(app: Flask) -> Limiter | None:
    """Limit the uploads one client address may make (CHESTX_RATE_LIMIT, per endpoint, moving
    window, counted in this process's memory); None when the limit is off.

    One Limiter per app, so apps built with other settings (tests) don't share counters. The
    429 carries Retry-After; errors.py writes its message. The client is the TCP peer: behind a
    reverse proxy every client looks the same unless the proxy's address is trusted (ProxyFix).
    """
    value = app.config.get("CHESTX_RATE_LIMIT")
    if not value:
        return None
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    limiter = Limiter(
        get_remote_address,
        default_limits=[value],
        default_limits_exempt_when=lambda: request.endpoint not in RATE_LIMITED_ENDPOINTS,
        storage_uri="memory://",
        strategy="moving-window",
        key_prefix="chestx",
    )
    limiter.init_app(app)
    return limiter
