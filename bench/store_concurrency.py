"""Concurrent uploads through gunicorn: does the study store lose or duplicate a row?

Starts ChestX under gunicorn (gunicorn.conf.py, with 2 workers x 4 threads so two processes
and several threads write at once) on SQLite and, when a server is given, on PostgreSQL; posts
200 uploads, 8 at a time, of real radiographs from ../shared/cxr where most images are sent
several times (so identical uploads race for the same row); then counts the rows.

Pass: every request answered 200, rows = distinct images, no (sha256, model) twice, and every
upload of the same bytes got the same study id. tests/web/test_web_studies_server.py runs the
same check.

    .venv/bin/python bench/store_concurrency.py [--model model/model.h5]
        [--postgres postgresql+psycopg://user@/db?host=/tmp/...] [--uploads 200] [--at-once 8]

scripts/postgres-test.sh .venv/bin/python bench/store_concurrency.py runs both databases.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CXR = REPO.parent / "shared" / "cxr"
sys.path.insert(0, str(REPO))

from chestx.web.devserver import GunicornProcess, multipart  # noqa: E402


def sample_images(cxr: Path = CXR, count: int = 24) -> list[Path]:
    """Small real radiographs: the NIH PNGs, PadChest, both DICOMs, then the smallest JPEGs."""
    chosen = sorted((cxr / "nih").glob("*.png")) + sorted((cxr / "padchest").glob("*"))
    chosen += sorted((cxr / "dicom").glob("*.dcm"))
    jpegs = sorted((cxr / "covid").glob("*.jpg"), key=lambda p: (p.stat().st_size, p.name))
    chosen += jpegs
    return chosen[:count]


def upload_plan(images: list[Path], total: int, seed: int = 0) -> list[Path]:
    """``total`` uploads: every image at least once, the rest drawn at random (repeats)."""
    rng = random.Random(seed)
    plan = list(images) + [rng.choice(images) for _ in range(total - len(images))]
    rng.shuffle(plan)
    return plan


def post_upload(url: str, data: bytes, filename: str) -> tuple[int, dict]:
    body, content_type = multipart(data, filename, {"override": "yes"})
    request = urllib.request.Request(
        url + "/api/v1/predict", body, {"Content-Type": content_type}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.load(error)
        except ValueError:
            return error.code, {}
    except OSError as error:
        return 0, {"error": str(error)}


@dataclass
class Figures:
    database: str
    uploads: int
    at_once: int
    distinct: int
    ok: int
    failed: int
    rows: int
    duplicates: int
    ids_per_image_max: int
    seconds: float

    @property
    def passed(self) -> bool:
        return (
            self.failed == 0
            and self.ok == self.uploads
            and self.rows == self.distinct
            and self.duplicates == 0
            and self.ids_per_image_max == 1
        )

    def line(self) -> str:
        return (
            f"{self.database}: {self.uploads} uploads, {self.at_once} at once, "
            f"{self.distinct} distinct -> {self.rows} rows, {self.duplicates} duplicates, "
            f"{self.failed} failed requests, {self.seconds:.1f} s "
            f"({self.uploads / self.seconds:.1f} uploads/s): " + ("PASS" if self.passed else "FAIL")
        )


def run_uploads(url: str, plan: list[Path], at_once: int = 8) -> tuple[list, float]:
    payloads = {path: path.read_bytes() for path in set(plan)}
    start = time.perf_counter()
    with ThreadPoolExecutor(at_once) as pool:
        results = list(pool.map(lambda p: (p, *post_upload(url, payloads[p], p.name)), plan))
    return results, time.perf_counter() - start


def count_rows(database_url: str) -> tuple[int, int]:
    """(rows, number of (sha256, model) keys stored more than once)."""
    from sqlalchemy import create_engine, text

    from chestx.web.db import normalise_url

    engine = create_engine(normalise_url(database_url))
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT count(*) FROM studies")).scalar_one()
            duplicates = connection.execute(
                text(
                    "SELECT count(*) FROM (SELECT sha256 FROM studies GROUP BY sha256, "
                    "model_name, model_version HAVING count(*) > 1) AS twice"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    return rows, duplicates


def measure(url: str, database_url: str, label: str, plan: list[Path], at_once: int) -> Figures:
    results, seconds = run_uploads(url, plan, at_once)
    ok = sum(1 for _, status, _ in results if status == 200)
    ids: dict[str, set[str]] = {}
    for path, status, body in results:
        if status == 200:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            ids.setdefault(digest, set()).add(body["study"]["id"])
    distinct = len({hashlib.sha256(p.read_bytes()).hexdigest() for p in plan})
    rows, duplicates = count_rows(database_url)
    return Figures(
        database=label,
        uploads=len(plan),
        at_once=at_once,
        distinct=distinct,
        ok=ok,
        failed=len(plan) - ok,
        rows=rows,
        duplicates=duplicates,
        ids_per_image_max=max((len(v) for v in ids.values()), default=0),
        seconds=seconds,
    )


def start_server(model: Path, database_url: str, log: Path, workers: int = 2) -> GunicornProcess:
    """ChestX under gunicorn, the rate limit off (200 uploads from one address)."""
    return GunicornProcess(
        {
            "CHESTX_MODEL": str(model),
            "DATABASE_URL": database_url,
            "CHESTX_LOG_LEVEL": "warning",
        },
        log,
        # Two processes, four threads each: writers race across processes and threads.
        gunicorn_args=f"--workers {workers} --threads 4",
    )


def run_one(model: Path, database_url: str, label: str, uploads: int, at_once: int) -> Figures:
    plan = upload_plan(sample_images(), uploads)
    with (
        tempfile.TemporaryDirectory() as folder,
        start_server(model, database_url, Path(folder) / "gunicorn.log") as server,
    ):
        server.wait_ready()
        return measure(server.url, database_url, label, plan, at_once)


def fresh_postgres_database(admin_url: str) -> tuple[str, callable]:
    """A new, empty database on the server of ``admin_url``; returns (url, drop)."""
    import psycopg
    from sqlalchemy.engine import make_url

    from chestx.web.db import normalise_url

    admin = normalise_url(admin_url)
    name = "chestx_" + uuid.uuid4().hex[:12]
    conninfo = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    url = make_url(str(admin.set(database=name).render_as_string(hide_password=False)))
    return url.render_as_string(hide_password=False), drop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "model" / "model.h5")
    parser.add_argument("--postgres", default=os.environ.get("CHESTX_TEST_POSTGRES_URL"))
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--at-once", type=int, default=8)
    args = parser.parse_args()
    figures = []
    with tempfile.TemporaryDirectory() as folder:
        sqlite_url = f"sqlite:///{folder}/studies.db"
        figures.append(run_one(args.model, sqlite_url, "SQLite", args.uploads, args.at_once))
        print(figures[-1].line(), flush=True)
    if args.postgres:
        url, drop = fresh_postgres_database(args.postgres)
        try:
            figures.append(run_one(args.model, url, "PostgreSQL", args.uploads, args.at_once))
            print(figures[-1].line(), flush=True)
        finally:
            drop()
    else:
        print("PostgreSQL: skipped (no --postgres and no CHESTX_TEST_POSTGRES_URL)")
    print(json.dumps([asdict(f) for f in figures]))
    return 0 if all(f.passed for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
