"""The browser pages: home with the upload form, the result page, and its two kinds of image.

The upload is a plain form post (works without JavaScript) answered by a redirect to the
result page (POST/redirect/GET), whose images are separate requests to the in-memory store.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)

from chestx.labels import OBSERVATIONS
from chestx.web import studies
from chestx.web.analysis import Analysis
from chestx.web.upload import upload_bytes, wants_override

bp = Blueprint("pages", __name__)


def slug(observation: str) -> str:
    return observation.lower().replace(" ", "-")


SLUGS = {slug(name): name for name in OBSERVATIONS}


def _services():
    return current_app.extensions["chestx"]


def _analysis(result_id: str) -> Analysis:
    analysis = _services().store.get(result_id)
    if analysis is None:
        minutes = current_app.config["CHESTX_RESULT_SECONDS"] / 60
        abort(
            404,
            description=(
                "This result is no longer available: results are kept in memory only, for "
                f"{minutes:g} minutes, and never written to disk. Upload the image again."
            ),
        )
    return analysis


def _png(data: bytes) -> Response:
    return Response(data, mimetype="image/png")


@bp.get("/")
def index():
    return render_template("index.html")


@bp.post("/")
def analyse():
    data = upload_bytes(request)
    analysis = _services().analyser.analyse(data, wants_override(request))
    study, _ = studies.record(analysis)  # saved, or the same bytes' earlier study
    result_id = _services().store.put(analysis, key=study.id)
    return redirect(url_for("pages.result", result_id=result_id), code=303)


@bp.get("/result/<result_id>")
def result(result_id: str):
    analysis = _analysis(result_id)
    top = analysis.top_findings(3)
    chosen = SLUGS.get(request.args.get("map", ""), top[0])
    return render_template(
        "result.html",
        result_id=result_id,
        analysis=analysis,
        top=top,
        chosen=chosen,
        slug=slug,
    )


@bp.get("/result/<result_id>/image.png")
def image(result_id: str):
    analysis = _analysis(result_id)
    return _png(_services().analyser.image_png(analysis))


@bp.get("/result/<result_id>/map/<name>.png")
def heatmap(result_id: str, name: str):
    observation = SLUGS.get(name)
    if observation is None:
        abort(404, description=f"There is no observation called {name!r}.")
    analysis = _analysis(result_id)
    return _png(_services().analyser.heatmap_png(analysis, observation))
