"""Study history and the triage worklist: pages, JSON API and CSV export over the study store.

Every analysed upload is saved by ``record`` (pages.py and api.py call it after the analysis):
the same bytes analysed again by the same model reuse the stored row and its id. An upload the
input gate refuses (422) never reaches ``record``: refused uploads are not saved.

Pages: /studies (history), /worklist (unread by urgency), /studies/<id> (permalink),
/studies.csv. API: /api/v1/studies[...]. Forms (mark read, delete) are POST with CSRF.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    stream_with_context,
    url_for,
)

from chestx.errors import ConfigError
from chestx.labels import OBSERVATIONS
from chestx.web.db import Database, default_url
from chestx.web.db.models import Study
from chestx.web.db.repository import FINDINGS, Filter, NewStudy, StudyStore, display_name
from chestx.web.security import csrf

bp = Blueprint("studies", __name__)
api = Blueprint("studies_api", __name__, url_prefix="/api/v1/studies")

SLUGS = {name.lower().replace(" ", "-"): name for name in OBSERVATIONS}
EXTENSION = "chestx_studies"


def slug(observation: str) -> str:
    return observation.lower().replace(" ", "-")


# --- set-up --------------------------------------------------------------------------------


def init_app(app: Flask, web_root: Path) -> StudyStore:
    """Open the database, apply the migrations, register the pages and the API."""
    url = app.config.get("DATABASE_URL") or default_url(app.instance_path)
    db = Database(url)
    db.upgrade()
    image_dir = None
    if app.config.get("CHESTX_KEEP_IMAGES"):
        image_dir = Path(app.config.get("CHESTX_IMAGE_DIR") or Path(app.instance_path) / "images")
        image_dir = image_dir.resolve()
        if image_dir.is_relative_to(web_root.resolve()):
            raise ConfigError(f"CHESTX_IMAGE_DIR={image_dir} is inside the web root {web_root}")
    store = StudyStore(
        db, app.config["CHESTX_URGENCY_WEIGHTS"], app.config["CHESTX_PAGE_SIZE"], image_dir
    )
    app.extensions[EXTENSION] = store
    app.register_blueprint(bp)
    app.register_blueprint(api)
    csrf.exempt(api)
    return store


def _store() -> StudyStore:
    return current_app.extensions[EXTENSION]


# --- saving an analysis --------------------------------------------------------------------


def record(analysis, req=None) -> tuple[Study, bool]:
    """Save an analysed upload (or find it saved already); returns (study, created).

    On reuse the analysis shows the stored probabilities, so every page and answer for these
    bytes and this model agrees with the history. The display name is the client's file name
    (or the API's ``name`` field), sanitised; nothing from a DICOM header is read.
    """
    req = req or request
    upload = req.files.get("file")
    raw_name = req.values.get("name") or (upload.filename if upload is not None else None)
    card = current_app.extensions["chestx"].analyser.card
    width, height = analysis.original_size
    new = NewStudy(
        sha256=analysis.sha256,
        display_name=display_name(raw_name, f"{analysis.image_format} image"),
        model_name=card.name,
        model_version=str(card.version),
        image_format=analysis.image_format,
        width=width,
        height=height,
        gate_passed=analysis.verdict.passed,
        gate_overridden=analysis.overridden,
        gate_reasons=list(analysis.verdict.reasons),
        gate_statistics=dict(analysis.verdict.statistics),
        warnings=list(analysis.warnings),
        probabilities=analysis.prediction.probabilities,
        model_seconds=analysis.prediction.seconds,
    )
    store = _store()
    image_png = None
    if store.image_dir is not None:
        image_png = current_app.extensions["chestx"].analyser.image_png(analysis)
    study, created = store.save(new, image_png)
    if not created:
        analysis.prediction = dataclasses.replace(
            analysis.prediction, probabilities=study.probabilities
        )
    return study, created


# --- shared by pages and API ---------------------------------------------------------------


def _page_number() -> int:
    try:
        return max(1, int(request.args.get("page", "1")))
    except ValueError:
        abort(400, description="page must be a whole number from 1.")


def _filter() -> Filter:
    raw_finding = request.args.get("finding", "").strip()
    finding = None
    if raw_finding:
        finding = SLUGS.get(raw_finding.lower()) or SLUGS.get(slug(raw_finding))
        if finding is None or finding not in FINDINGS:
            abort(400, description=f"There is no finding called {raw_finding!r} to filter on.")
    raw_min = request.args.get("min", "").strip()
    try:
        minimum = float(raw_min) if raw_min else (0.5 if finding else 0.0)
    except ValueError:
        abort(400, description="min must be a probability from 0 to 1.")
    if not 0.0 <= minimum <= 1.0:
        abort(400, description="min must be a probability from 0 to 1.")
    return Filter(finding, minimum)


def _filter_args(filter: Filter) -> dict[str, str]:
    args = {}
    if filter.finding:
        args["finding"] = slug(filter.finding)
    if filter.min_probability > 0:
        args["min"] = f"{filter.min_probability:g}"
    return args


def _study_or_404(study_id: str) -> Study:
    study = _store().get(study_id) if len(study_id) <= 64 else None
    if study is None:
        abort(404, description="There is no study with this address (it may have been deleted).")
    return study


def _in_memory(study_id: str):
    return current_app.extensions["chestx"].store.get(study_id)


def links(study: Study) -> dict[str, str]:
    """Where a saved study lives: its permalink page and its JSON."""
    return {
        "page": url_for("studies.study", study_id=study.id),
        "api": url_for("studies_api.get_study", study_id=study.id),
    }


def study_json(study: Study) -> dict:
    store = _store()
    in_memory = _in_memory(study.id) is not None
    has_image = in_memory or store.image_path(study) is not None
    urls = links(study)
    if has_image:
        urls["image"] = url_for("studies.image", study_id=study.id)
    if in_memory:
        urls["result_page"] = url_for("pages.result", result_id=study.id)
    return {
        "id": study.id,
        "created_at": study.created_utc.isoformat(),
        "display_name": study.display_name,
        "sha256": study.sha256,
        "model": {"name": study.model_name, "version": study.model_version},
        "probabilities": study.probabilities,
        "urgency": store.urgency(study).to_dict(),
        "gate": {
            "passed": study.gate_passed,
            "overridden": study.gate_overridden,
            "reasons": study.gate_reasons,
            "statistics": study.gate_statistics,
        },
        "warnings": study.warnings,
        "image": {
            "format": study.image_format,
            "width": study.width,
            "height": study.height,
            "kept": store.image_path(study) is not None,
        },
        "read": study.read_at is not None,
        "read_at": study.read_utc.isoformat() if study.read_at else None,
        "links": urls,
    }


def _page_json(page, items: list[dict]) -> dict:
    return {
        "page": page.page,
        "per_page": page.per_page,
        "pages": page.pages,
        "total": page.total,
        "studies": items,
    }


def _per_page() -> int | None:
    raw = request.args.get("per_page", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 500:
        abort(400, description="per_page must be a whole number from 1 to 500.")
    return int(raw)


# --- pages ---------------------------------------------------------------------------------


@bp.get("/studies")
def history():
    filter = _filter()
    page = _store().history(_page_number(), filter)
    return render_template(
        "studies.html",
        page=page,
        filter=filter,
        filter_args=_filter_args(filter),
        findings=FINDINGS,
        slug=slug,
        urgency=_store().urgency,
        deleted=request.args.get("deleted") == "1",
    )


@bp.get("/worklist")
def worklist():
    page = _store().worklist(_page_number())
    return render_template(
        "worklist.html", page=page, weights=_store().weights, unread=_store().unread_count()
    )


@bp.get("/studies/<study_id>")
def study(study_id: str):
    study = _study_or_404(study_id)
    store = _store()
    return render_template(
        "study.html",
        study=study,
        urgency=store.urgency(study),
        in_memory=_in_memory(study.id) is not None,
        has_image=_in_memory(study.id) is not None or store.image_path(study) is not None,
        slug=slug,
    )


@bp.get("/studies/<study_id>/image.png")
def image(study_id: str):
    study = _study_or_404(study_id)
    analysis = _in_memory(study.id)
    if analysis is not None:
        png = current_app.extensions["chestx"].analyser.image_png(analysis)
        return Response(png, mimetype="image/png")
    path = _store().image_path(study)
    if path is None:
        abort(404, description="This study's image was not kept (CHESTX_KEEP_IMAGES is off).")
    return send_file(path, mimetype="image/png", max_age=0)


def _back(study_id: str):
    if request.form.get("back") == "study":
        return redirect(url_for("studies.study", study_id=study_id), code=303)
    return redirect(url_for("studies.worklist"), code=303)


@bp.post("/studies/<study_id>/read")
def mark_read(study_id: str):
    _study_or_404(study_id)
    _store().mark_read(study_id, request.form.get("read", "1") != "0")
    return _back(study_id)


@bp.post("/studies/<study_id>/delete")
def delete(study_id: str):
    _study_or_404(study_id)
    _store().delete(study_id)
    return redirect(url_for("studies.history", deleted=1), code=303)


CSV_HEADER = [
    "id",
    "created_at",
    "display_name",
    "sha256",
    "model_name",
    "model_version",
    "image_format",
    "width",
    "height",
    "gate_passed",
    "gate_overridden",
    "urgency",
    "read_at",
    *OBSERVATIONS,
]


def _cell(value: str) -> str:
    """Keep a spreadsheet from running a name as a formula (CSV injection)."""
    return "'" + value if value[:1] in {"=", "+", "-", "@", "\t", "\r"} else value


@bp.get("/studies.csv")
def export():
    filter = _filter()
    store = _store()

    def rows() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_HEADER)
        for study in store.export(filter):
            writer.writerow(
                [
                    study.id,
                    study.created_utc.isoformat(),
                    _cell(study.display_name),
                    study.sha256,
                    _cell(study.model_name),
                    _cell(study.model_version),
                    study.image_format,
                    study.width,
                    study.height,
                    int(study.gate_passed),
                    int(study.gate_overridden),
                    f"{store.urgency(study).score:.6f}",
                    study.read_utc.isoformat() if study.read_at else "",
                    *(f"{p:.6f}" for p in study.probabilities.values()),
                ]
            )
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        if buffer.getvalue():
            yield buffer.getvalue()

    return Response(
        stream_with_context(rows()),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="chestx-studies.csv"'},
    )


# --- JSON API ------------------------------------------------------------------------------


@api.get("")
def list_studies():
    page = _store().history(_page_number(), _filter(), _per_page())
    return jsonify(_page_json(page, [study_json(s) for s in page.items]))


@api.get("/worklist")
def list_worklist():
    page = _store().worklist(_page_number(), _per_page())
    return jsonify(
        {**_page_json(page, [study_json(s) for s, _ in page.items]), "weights": _store().weights}
    )


@api.get("/<study_id>")
def get_study(study_id: str):
    return jsonify(study_json(_study_or_404(study_id)))


@api.post("/<study_id>/read")
def api_mark_read(study_id: str):
    _study_or_404(study_id)
    body = request.get_json(silent=True) or {}
    read = body.get("read", request.values.get("read", "1") not in {"0", "false", "no"})
    study = _store().mark_read(study_id, bool(read))
    return jsonify(study_json(study))


@api.delete("/<study_id>")
def api_delete(study_id: str):
    _study_or_404(study_id)
    _store().delete(study_id)
    return jsonify({"deleted": study_id})
