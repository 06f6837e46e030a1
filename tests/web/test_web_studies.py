"""The study store on SQLite and on a real PostgreSQL server: migrations, save, reuse by hash,
worklist order, mark read, delete, pagination, filters; then the pages, API and CSV on both.

The PostgreSQL variants need CHESTX_TEST_POSTGRES_URL (`make test` starts a throwaway server
with scripts/postgres-test.sh); without it they skip with a loud reason.
"""

from __future__ import annotations

import csv
import io
import re
import threading

import pytest
from studyhelpers import BACKENDS, fresh_database, new_study, probabilities
from webhelpers import COVID_JPEG, DICOM_M2, NIH_PNG, PATIENT_TAG_VALUE, csrf_token, post_api

from chestx.errors import ConfigError
from chestx.web import db as db_module
from chestx.web.db import HEAD_REVISION, Database, alembic_config, current_revision, downgrade
from chestx.web.db.models import Base
from chestx.web.db.repository import Filter, StudyStore, display_name
from chestx.web.db.urgency import DEFAULT_WEIGHTS, parse_weights, urgency

# --- the store ---------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def database(request, tmp_path):
    with fresh_database(request.param, tmp_path) as url:
        db = Database(url)
        try:
            yield db
        finally:
            db.dispose()


@pytest.fixture
def store(database, tmp_path):
    database.upgrade()
    return StudyStore(database, DEFAULT_WEIGHTS, page_size=5, image_dir=tmp_path / "images")


def test_migrations_from_an_empty_database(database):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import inspect

    assert inspect(database.engine).get_table_names() == []
    database.upgrade()
    database.upgrade()  # a second start-up changes nothing
    assert current_revision(database.engine) == "0001_studies"
    with database.engine.connect() as connection:
        # The migrations build exactly what the models describe.
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    downgrade(database.engine, "base")  # down and up again
    assert "studies" not in inspect(database.engine).get_table_names()
    database.upgrade()
    assert "studies" in inspect(database.engine).get_table_names()


def test_head_revision_is_alembics_head():
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [HEAD_REVISION]


def test_a_database_at_the_head_starts_without_alembic(database, monkeypatch):
    database.upgrade()
    assert database.revisions() == [HEAD_REVISION]

    def alembic_upgrade(*args):
        raise RuntimeError("Alembic ran")

    monkeypatch.setattr(db_module, "upgrade", alembic_upgrade)
    database.upgrade()  # up to date: Alembic isn't called
    downgrade(database.engine, "base")  # an older database still goes through Alembic
    assert database.revisions() == []
    with pytest.raises(RuntimeError, match="Alembic ran"):
        database.upgrade()


def test_save_then_reuse_by_hash(store):
    first, created = store.save(new_study("a", Pneumothorax=0.9))
    assert created and len(first.id) >= 20
    again, created = store.save(new_study("a", Pneumothorax=0.1))
    assert not created and again.id == first.id
    assert again.probabilities["Pneumothorax"] == pytest.approx(0.9)  # the stored result
    other_model, created = store.save(new_study("a", version="2"))
    assert created and other_model.id != first.id
    assert store.count() == 2
    saved = store.get(first.id)
    assert saved.display_name == "a.png" and saved.gate_statistics == {"entropy": 7.1}
    assert saved.created_utc.tzinfo is not None and saved.read_at is None


def test_identical_saves_at_once_make_one_row(store):
    """Eight threads save the same upload at the same moment: one row, one id for all."""
    barrier = threading.Barrier(8)
    results = []

    def save():
        barrier.wait()
        results.append(store.save(new_study("same", Edema=0.4)))

    threads = [threading.Thread(target=save) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.count() == 1
    assert len({study.id for study, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_worklist_order_explained_and_mark_read(store):
    store.save(new_study("effusion", Pleural_Effusion=0.8))  # 1.5 x 0.8 = 1.2
    store.save(new_study("pneumothorax", Pneumothorax=0.6))  # 3 x 0.6 = 1.8
    store.save(new_study("quiet", Cardiomegaly=0.9))  # nothing urgent
    store.save(new_study("edema", Edema=0.7, Consolidation=0.2))  # 1.4 + 0.4 = 1.8 + ...
    page = store.worklist()
    names = [study.display_name for study, _ in page.items]
    scores = [u.score for _, u in page.items]
    assert scores == sorted(scores, reverse=True)
    assert names[-1] == "quiet.png" and names.index("pneumothorax.png") < names.index(
        "effusion.png"
    )
    pneumothorax = next(u for s, u in page.items if s.display_name == "pneumothorax.png")
    assert pneumothorax.terms[0].finding == "Pneumothorax"
    assert str(pneumothorax.terms[0]) == "Pneumothorax 0.60 × 3 = 1.80"
    # SQL ordering and the Python score agree, term by term.
    for study, explained in page.items:
        assert explained.score == pytest.approx(urgency(study.probabilities, store.weights).score)

    top = page.items[0][0]
    assert store.mark_read(top.id).read_at is not None
    assert top.id not in [s.id for s, _ in store.worklist().items]
    assert store.history().total == 4  # still in the history
    assert store.mark_read(top.id, read=False).read_at is None
    assert store.worklist().total == 4

    # Other weights, other order: Cardiomegaly alone counts now.
    reweighted = StudyStore(store.db, {"Cardiomegaly": 1.0})
    assert reweighted.worklist().items[0][0].display_name == "quiet.png"


def test_delete_removes_row_and_kept_image(store):
    study, _ = store.save(new_study("kept"), image_png=b"\x89PNG fake")
    path = store.image_path(study)
    assert path is not None and path.read_bytes() == b"\x89PNG fake"
    assert path.parent == store.image_dir and re.fullmatch(r"[0-9a-f]{32}\.png", path.name)
    # The same upload again keeps no second copy.
    again, created = store.save(new_study("kept"), image_png=b"\x89PNG fake")
    assert not created and len(list(store.image_dir.iterdir())) == 1
    assert store.delete(study.id)
    assert store.get(study.id) is None and not path.exists()
    assert not store.delete(study.id)
    assert store.count() == 0


def test_history_pagination_newest_first_and_filter(store):
    ids = [store.save(new_study(f"s{i:02d}", Edema=i / 20))[0].id for i in range(12)]
    first = store.history(page=1)
    assert (first.total, first.pages, len(first.items)) == (12, 3, 5)
    assert first.items[0].id == ids[-1]  # newest first
    everything = [s.id for p in (1, 2, 3) for s in store.history(page=p).items]
    assert everything == ids[::-1]  # every study once, none twice
    assert store.history(page=4).items == []
    edema = store.history(filter=Filter("Edema", 0.4), per_page=50)
    assert sorted(s.display_name for s in edema.items) == [f"s{i:02d}.png" for i in range(8, 12)]
    assert store.history(filter=Filter(None, 0.5), per_page=50).total == 2  # any finding
    assert len(list(store.export(Filter("Edema", 0.4)))) == 4


def test_display_names_are_cleaned():
    assert display_name("C:\\Users\\x\\Desktop\\chest.png") == "chest.png"
    assert display_name("../../etc/pass\x00wd\x1b[31m.png") == "passwd[31m.png"
    assert display_name("a\u202egnp.exe") == "agnp.exe"  # no right-to-left override
    assert display_name("   ") == "upload"
    long = display_name("x" * 500 + ".png")
    assert len(long) == 120 and long.endswith("….png")


def test_urgency_weights_from_configuration():
    assert parse_weights("") == DEFAULT_WEIGHTS
    assert parse_weights("pneumothorax=5, pleural-effusion=1, Edema=0") == {
        "Pneumothorax": 5.0,
        "Pleural Effusion": 1.0,
    }
    for bad in ("Pneumothorax", "Nothing=1", "Edema=x", "Edema=-1", "Edema=0"):
        with pytest.raises(ConfigError, match="CHESTX_URGENCY_WEIGHTS"):
            parse_weights(bad)
    explained = urgency(probabilities(Pneumothorax=0.82), {"Pneumothorax": 3})
    assert explained.why == "Pneumothorax 0.82 × 3 = 2.46"


# --- pages, API and CSV on both backends --------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def studies_app(request, tiny_model, tmp_path_factory):
    from chestx.web import create_app

    folder = tmp_path_factory.mktemp(f"studies-{request.param}")
    with fresh_database(request.param, folder) as url:
        app = create_app(
            {
                "CHESTX_MODEL": str(tiny_model),
                "TESTING": True,
                "CHESTX_WARM_UP": False,
                "DATABASE_URL": url,
                "CHESTX_KEEP_IMAGES": True,
                "CHESTX_IMAGE_DIR": str(folder / "images"),
                "CHESTX_PAGE_SIZE": 2,
                "CHESTX_RATE_LIMIT": None,
            }
        )
        yield app
        app.extensions["chestx_studies"].db.dispose()


@pytest.fixture
def web(studies_app):
    return studies_app.test_client()


def _store(app) -> StudyStore:
    return app.extensions["chestx_studies"]


def _clear(app):
    store = _store(app)
    for study in list(store.export()):
        store.delete(study.id)


def test_uploads_are_saved_and_reused_through_the_api(studies_app, web, cxr_dir):
    _clear(studies_app)
    data = (cxr_dir / NIH_PNG).read_bytes()
    first = post_api(web, data, "chest.png").get_json()
    second = post_api(web, data, "renamed.png").get_json()
    assert first["study"]["reused"] is False and second["study"]["reused"] is True
    assert first["study"]["id"] == second["study"]["id"]
    assert first["probabilities"] == second["probabilities"]
    listing = web.get("/api/v1/studies").get_json()
    assert listing["total"] == 1
    saved = listing["studies"][0]
    assert saved["display_name"] == "chest.png" and saved["image"]["kept"] is True
    assert saved["model"]["name"] == first["model"]["name"]
    assert saved["probabilities"] == pytest.approx(first["probabilities"])
    assert set(saved["urgency"]) == {"score", "why", "terms"}
    assert web.get(saved["links"]["page"]).status_code == 200
    assert web.get(f"/studies/{saved['id']}/image.png").mimetype == "image/png"
    assert web.get(first["links"]["result_page"]).status_code == 200


def test_a_refused_upload_is_not_saved(studies_app, web, colour_photo):
    before = _store(studies_app).count()
    response = post_api(web, colour_photo, "photo.jpg")
    assert response.status_code == 422
    assert _store(studies_app).count() == before


def test_no_dicom_patient_data_is_stored(studies_app, web, cxr_dir):
    from sqlalchemy import text

    response = post_api(web, (cxr_dir / DICOM_M2).read_bytes(), "../x/\x07scan<b>.dcm")
    assert response.status_code == 200
    study_id = response.get_json()["study"]["id"]
    store = _store(studies_app)
    assert store.get(study_id).display_name == "scan<b>.dcm"
    with store.db.engine.connect() as connection:
        dump = repr(connection.execute(text("SELECT * FROM studies")).all())
    assert PATIENT_TAG_VALUE not in dump and "16d7f894" not in dump
    kept = store.image_path(store.get(study_id))
    assert kept.read_bytes().startswith(b"\x89PNG") and PATIENT_TAG_VALUE.encode() not in (
        kept.read_bytes()
    )
    page = web.get(f"/studies/{study_id}").get_data(as_text=True)
    assert "scan&lt;b&gt;.dcm" in page and PATIENT_TAG_VALUE not in page
    assert PATIENT_TAG_VALUE not in web.get("/studies.csv").get_data(as_text=True)


def _form_post(web, path, **fields):
    return web.post(path, data={"csrf_token": csrf_token(web), **fields})


def test_pages_worklist_mark_read_and_delete(studies_app, web, cxr_dir):
    _clear(studies_app)
    ids = {}
    for name in (NIH_PNG, COVID_JPEG, DICOM_M2):
        body = post_api(web, (cxr_dir / name).read_bytes(), name.split("/")[-1]).get_json()
        ids[name] = body["study"]["id"]
    api = web.get("/api/v1/studies/worklist?per_page=10").get_json()
    expected = [s["id"] for s in api["studies"]]
    scores = [s["urgency"]["score"] for s in api["studies"]]
    assert sorted(expected) == sorted(ids.values()) and scores == sorted(scores, reverse=True)

    page = web.get("/worklist").get_data(as_text=True)  # page size 2
    assert re.findall(r'data-study-id="([^"]+)"', page) == expected[:2]
    assert "×" in page and "Mark read" in page and "page 1 of 2" in page
    second = web.get("/worklist?page=2").get_data(as_text=True)
    assert re.findall(r'data-study-id="([^"]+)"', second) == expected[2:]

    top = expected[0]
    # Mark read needs POST and the form's CSRF token.
    assert web.get(f"/studies/{top}/read").status_code == 405
    assert web.post(f"/studies/{top}/read").status_code == 400
    response = _form_post(web, f"/studies/{top}/read", back="worklist")
    assert response.status_code == 303 and response.location.endswith("/worklist")
    assert top not in web.get("/worklist").get_data(as_text=True)
    assert web.get(f"/api/v1/studies/{top}").get_json()["read"] is True

    history = web.get("/studies").get_data(as_text=True)
    assert "page 1 of 2" in history and "Export as CSV" in history
    study_page = web.get(f"/studies/{top}").get_data(as_text=True)
    assert "Mark unread" in study_page and "Delete this study" in study_page
    assert 'td class="num probability"' in study_page

    kept = _store(studies_app).image_path(_store(studies_app).get(top))
    assert web.post(f"/studies/{top}/delete").status_code == 400  # no CSRF token
    response = _form_post(web, f"/studies/{top}/delete")
    assert response.status_code == 303 and "deleted=1" in response.location
    assert web.get(f"/studies/{top}").status_code == 404 and not kept.exists()
    assert web.get(f"/api/v1/studies/{top}").status_code == 404


def test_api_mark_read_delete_filter_and_pages(studies_app, web, cxr_dir):
    _clear(studies_app)
    for name in (NIH_PNG, COVID_JPEG, DICOM_M2):
        post_api(web, (cxr_dir / name).read_bytes(), name)
    listing = web.get("/api/v1/studies?per_page=2").get_json()
    assert (listing["total"], listing["pages"], len(listing["studies"])) == (3, 2, 2)
    rest = web.get("/api/v1/studies?per_page=2&page=2").get_json()["studies"]
    assert len(rest) == 1 and rest[0]["id"] not in {s["id"] for s in listing["studies"]}
    study = listing["studies"][0]
    assert web.post(f"/api/v1/studies/{study['id']}/read").get_json()["read"] is True
    assert web.get("/api/v1/studies/worklist").get_json()["total"] == 2
    best = max(study["probabilities"]["Edema"] for study in [study])
    filtered = web.get(f"/api/v1/studies?finding=edema&min={best}&per_page=10").get_json()
    assert study["id"] in {s["id"] for s in filtered["studies"]}
    assert all(s["probabilities"]["Edema"] >= best for s in filtered["studies"])
    assert web.get("/api/v1/studies?finding=nonsense").status_code == 400
    assert web.get("/api/v1/studies?min=2").status_code == 400
    assert web.delete(f"/api/v1/studies/{study['id']}").get_json() == {"deleted": study["id"]}
    assert web.delete(f"/api/v1/studies/{study['id']}").status_code == 404
    assert web.get("/api/v1/studies").get_json()["total"] == 2


def test_csv_export(studies_app, web, cxr_dir):
    _clear(studies_app)
    post_api(web, (cxr_dir / NIH_PNG).read_bytes(), "=HYPERLINK(1).png")
    post_api(web, (cxr_dir / COVID_JPEG).read_bytes(), "covid.jpg")
    response = web.get("/studies.csv")
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [r["display_name"] for r in rows] == ["covid.jpg", "'=HYPERLINK(1).png"]
    assert {"Pneumothorax", "urgency", "sha256", "created_at"} <= set(rows[0])
    assert float(rows[0]["Pneumothorax"]) >= 0
    edema = web.get("/studies.csv?finding=edema&min=1").get_data(as_text=True)
    assert len(edema.strip().splitlines()) == 1  # the header only


def test_a_database_that_cannot_be_used_stops_start_up(tiny_model, tmp_path):
    from chestx.web import create_app

    for url, message in (
        (f"postgresql://nobody@/chestx?host={tmp_path}/no-server", "can't be used"),
        ("mysql://x@localhost/db", "supports sqlite and postgresql"),
        ("not a url", "not a database URL"),
    ):
        with pytest.raises(ConfigError, match=message):
            create_app(
                {"CHESTX_MODEL": str(tiny_model), "CHESTX_WARM_UP": False, "DATABASE_URL": url}
            )
