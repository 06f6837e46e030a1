"""The JSON API (``/api/v1``) and the health check. CSRF-exempt: it takes no cookies."""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, current_app, jsonify, request, url_for

from chestx.labels import COMPETITION_TASKS
from chestx.web import studies
from chestx.web.analysis import Analysis
from chestx.web.pages import slug
from chestx.web.upload import upload_bytes, wants_override

api = Blueprint("api", __name__, url_prefix="/api/v1")
ops = Blueprint("ops", __name__)

NOTICE = (
    "Decision support only: these are a model's probabilities, not a diagnosis. A qualified "
    "clinician must read the image."
)


def _services():
    return current_app.extensions["chestx"]


def model_summary() -> dict:
    card = _services().analyser.card
    return {
        "name": card.name,
        "version": card.version,
        "demo": card.demo,
        "summary": card.summary,
    }


def prediction_json(analysis: Analysis, result_id: str) -> dict:
    width, height = analysis.original_size
    return {
        "model": model_summary(),
        "probabilities": analysis.prediction.probabilities,
        "ranked": [name for name, _ in analysis.ranked()],
        "competition_tasks": list(COMPETITION_TASKS),
        "seconds": {
            "model": round(analysis.prediction.seconds, 4),
            "total": round(analysis.seconds_total, 4),
        },
        "image": {"format": analysis.image_format, "width": width, "height": height},
        "gate": {**analysis.verdict.to_dict(), "overridden": analysis.overridden},
        "warnings": analysis.warnings,
        "notice": NOTICE,
        "links": {
            "result_page": url_for("pages.result", result_id=result_id),
            "image": url_for("pages.image", result_id=result_id),
            "heatmaps": {
                name: url_for("pages.heatmap", result_id=result_id, name=slug(name))
                for name in analysis.top_findings(3)
            },
        },
    }


@api.post("/predict")
def predict():
    data = upload_bytes(request)
    analysis = _services().analyser.analyse(data, wants_override(request))
    study, created = studies.record(analysis)  # saved, or reused for the same bytes
    result_id = _services().store.put(analysis, key=study.id)
    body = prediction_json(analysis, result_id)
    body["study"] = {"id": study.id, "reused": not created, "links": studies.links(study)}
    return jsonify(body)


@api.get("/model")
def model():
    return jsonify(asdict(_services().analyser.card))


@ops.get("/healthz")
def healthz():
    services = current_app.extensions.get("chestx")
    loaded = services is not None and services.analyser.predictor.loaded
    return jsonify(
        {
            "status": "ok" if loaded else "no model",
            "model_loaded": loaded,
            "model": model_summary() if loaded else None,
        }
    ), (200 if loaded else 503)
