"""Settings from environment variables, read once when the app is created.

Every setting has a default that works for `make serve` on one machine; docs/web.md lists them.
A value that can't be used stops start-up with a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from chestx.errors import ConfigError
from chestx.web.db.urgency import parse_weights

DEFAULT_MODEL = "model/model.h5"
DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_RESULTS_KEPT = 32
DEFAULT_RESULT_MINUTES = 10.0
DEFAULT_PAGE_SIZE = 25
#: Uploads (form and API, each counted apart) one client address may make; "off" disables.
DEFAULT_RATE_LIMIT = "60 per minute"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
OFF_WORDS = frozenset({"0", "off", "false", "no", "none"})


def _number(environ: Mapping[str, str], name: str, default: float, low: float, high: float):
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw} is out of range ({low:g} to {high:g})")
    return value


def rate_limit(raw: str | None) -> str | None:
    """CHESTX_RATE_LIMIT: a flask-limiter limit ("60 per minute", "10/second; 500/day"), or
    None when off. Empty means the default."""
    raw = (raw or "").strip()
    if not raw:
        return DEFAULT_RATE_LIMIT
    if raw.lower() in OFF_WORDS:
        return None
    from limits import parse_many

    try:
        parse_many(raw)
    except ValueError:
        raise ConfigError(
            f"CHESTX_RATE_LIMIT={raw!r} is not a rate limit: write e.g. '60 per minute' or 'off'"
        ) from None
    return raw


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Flask config keys built from CHESTX_* variables (see docs/web.md)."""
    env = os.environ if environ is None else environ
    max_mb = _number(env, "CHESTX_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB, 0.01, 1024)
    return {
        "CHESTX_MODEL": env.get("CHESTX_MODEL", "").strip() or DEFAULT_MODEL,
        "MAX_CONTENT_LENGTH": int(max_mb * 1024 * 1024),
        "SECRET_KEY": env.get("CHESTX_SECRET_KEY", "").strip() or None,
        "CHESTX_RESULTS_KEPT": int(
            _number(env, "CHESTX_RESULTS_KEPT", DEFAULT_RESULTS_KEPT, 1, 10_000)
        ),
        "CHESTX_RESULT_SECONDS": 60
        * _number(env, "CHESTX_RESULT_MINUTES", DEFAULT_RESULT_MINUTES, 0.1, 24 * 60),
        # Set CHESTX_SECURE_COOKIES=1 behind HTTPS so the session cookie is never sent in clear.
        "SESSION_COOKIE_SECURE": env.get("CHESTX_SECURE_COOKIES", "") in {"1", "true", "yes"},
        # The study store (docs/web.md): None means chestx.db (SQLite) in the instance folder.
        "DATABASE_URL": env.get("DATABASE_URL", "").strip() or None,
        "CHESTX_KEEP_IMAGES": env.get("CHESTX_KEEP_IMAGES", "").strip().lower() in TRUE_WORDS,
        "CHESTX_IMAGE_DIR": env.get("CHESTX_IMAGE_DIR", "").strip() or None,
        "CHESTX_URGENCY_WEIGHTS": parse_weights(env.get("CHESTX_URGENCY_WEIGHTS", "")),
        "CHESTX_PAGE_SIZE": int(_number(env, "CHESTX_PAGE_SIZE", DEFAULT_PAGE_SIZE, 1, 500)),
        "CHESTX_RATE_LIMIT": rate_limit(env.get("CHESTX_RATE_LIMIT")),
    }


#: Fixed settings: production-safe whatever the environment says.
FIXED: dict[str, Any] = {
    "DEBUG": False,
    "PROPAGATE_EXCEPTIONS": False,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "WTF_CSRF_TIME_LIMIT": 3600 * 4,  # a form left open for an afternoon still posts
}
