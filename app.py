"""The WSGI entry point: `gunicorn app:app` (see gunicorn.conf.py) or `flask --app app run`.

A model that is missing or unreadable stops start-up with one line saying how to get one, not
a traceback. Under gunicorn the exit status 4 is its "app failed to load": the master stops
instead of starting new workers that would fail the same way.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from chestx.errors import ChestXError  # noqa: E402
from chestx.web import create_app  # noqa: E402

APP_LOAD_ERROR = 4  # gunicorn.arbiter.Arbiter.APP_LOAD_ERROR

try:
    app = create_app()
except ChestXError as error:
    print(f"ChestX can't start: {error}", file=sys.stderr, flush=True)
    raise SystemExit(APP_LOAD_ERROR) from None
