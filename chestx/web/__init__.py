"""The ChestX web app: ``create_app`` builds it, loading the model once per process.

Flask's application-factory layout: configuration from environment variables (config.py), the
pages and the JSON API as blueprints, one error-handling module, security headers and CSRF.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask

from chestx.inference import Predictor
from chestx.labels import COMPETITION_TASKS, OBSERVATIONS
from chestx.web import api, pages, studies
from chestx.web.analysis import Analyser
from chestx.web.config import FIXED, from_env
from chestx.web.errors import register_error_handlers
from chestx.web.security import csrf, init_rate_limit, init_security
from chestx.web.store import ResultStore
from chestx.web.upload import UploadRequest

#: templates/ and static/ live at the top of the repository, beside app.py.
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Services:
    """What every request shares: the loaded model and the recent results."""

    analyser: Analyser
    store: ResultStore


def _use_gunicorn_logging(app: Flask) -> None:
    """Under gunicorn, send the app's log lines to gunicorn's error log."""
    gunicorn_log = logging.getLogger("gunicorn.error")
    ours = logging.getLogger("chestx.web")
    if gunicorn_log.handlers and not ours.handlers:
        ours.handlers = gunicorn_log.handlers
        ours.setLevel(gunicorn_log.level)
        ours.propagate = False
    elif not ours.level:
        ours.setLevel(logging.INFO)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app. Raises ModelError (with how to get a model) if the model can't load.

    ``config`` overrides the environment (tests pass CHESTX_MODEL and the like).
    """
    app = Flask(
        __name__,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
        instance_path=str(ROOT / "instance"),
    )
    app.request_class = UploadRequest
    app.config.update(from_env())
    app.config.update(config or {})
    app.config.update(FIXED)
    app.json.sort_keys = False  # keep the 14 observations in CheXpert order
    _use_gunicorn_logging(app)

    predictor = Predictor(app.config["CHESTX_MODEL"])
    analyser = Analyser(predictor)
    if app.config.get("CHESTX_WARM_UP", True):
        analyser.warm_up()
    # The study store (migrations applied here), once the model is known to work.
    studies.init_app(app, ROOT / "static")
    app.extensions["chestx"] = Services(
        analyser,
        ResultStore(app.config["CHESTX_RESULTS_KEPT"], app.config["CHESTX_RESULT_SECONDS"]),
    )

    init_security(app)
    init_rate_limit(app)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.api)
    app.register_blueprint(api.ops)
    csrf.exempt(api.api)
    csrf.exempt(api.ops)
    register_error_handlers(app)

    @app.context_processor
    def model_context() -> dict[str, Any]:
        return {
            "card": predictor.card,
            "observations": OBSERVATIONS,
            "competition_tasks": COMPETITION_TASKS,
            "max_upload_bytes": app.config["MAX_CONTENT_LENGTH"],
            "max_upload_mb": app.config["MAX_CONTENT_LENGTH"] / (1024 * 1024),
        }

    logging.getLogger("chestx.web").info("ChestX ready: %s", predictor.card.summary)
    return app
