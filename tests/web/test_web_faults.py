"""Faults under real gunicorn: a worker killed in the middle of requests, PostgreSQL stopped and
started again while the app runs, hostile files over HTTP, FLASK_DEBUG=1 in the environment,
and patient data of generated and real DICOMs in every page, answer, row and log line.

Each test starts its own server (gunicorn.conf.py; overrides on the command line only) so a
killed worker or a stopped database never disturbs another test. Figures go to
test-artifacts/faults-*.txt.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fuzz_inputs import dicom_bytes as fuzz_dicom
from fuzz_inputs import huge_png, mutated, odd_images, png_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webhelpers import (
    COVID_JPEG,
    DICOM_M1,
    DICOM_M2,
    NIH_PNG,
    PATIENT_TAG_VALUE,
    REPO,
    gunicorn,
)

from chestx.web.devserver import GunicornProcess, multipart

pytestmark = pytest.mark.slow


# --- a gunicorn of our own: each test starts one (webhelpers.gunicorn) ---------------------


def request(server: GunicornProcess, method: str, path: str, body=None, headers=None, timeout=60):
    """(status, headers, body bytes); status 0 and the error's name when the connection broke."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    except (OSError, http.client.HTTPException) as error:
        return 0, {}, type(error).__name__.encode()
    finally:
        connection.close()


def upload(
    server: GunicornProcess, data: bytes, filename: str = "chest.png", path="/api/v1/predict"
):
    body, content_type = multipart(data, filename, {"override": "yes"})
    return request(server, "POST", path, body, {"Content-Type": content_type})


def wait_for_file(path: Path, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


# --- a worker killed in the middle of requests ------------------------------------------------

STUDY_COLUMNS_NOT_NULL = [
    "id",
    "created_at",
    "sha256",
    "display_name",
    "model_name",
    "model_version",
    "image_format",
    "width",
    "height",
    "gate_passed",
    "gate_overridden",
    "model_seconds",
]


def _half_written_rows(connection: sqlite3.Connection) -> int:
    columns = [row[1] for row in connection.execute("PRAGMA table_info(studies)")]
    probabilities = [c for c in columns if c.startswith("p_")]
    assert len(probabilities) == 14
    nulls = " OR ".join(f"{c} IS NULL" for c in STUDY_COLUMNS_NOT_NULL + probabilities)
    ranges = " OR ".join(f"{c} < 0 OR {c} > 1" for c in probabilities)
    return connection.execute(
        f"SELECT count(*) FROM studies WHERE {nulls} OR {ranges} OR length(sha256) != 64"
    ).fetchone()[0]


def test_a_worker_killed_mid_request(tiny_model, tmp_path, cxr_dir, artifacts_dir):
    """SIGKILL the worker while one request is half-received and others are being analysed and
    saved: the master starts a new worker that answers, and every study in the database is
    whole (a study is one INSERT in one transaction)."""
    database = tmp_path / "studies.db"
    images = sorted((cxr_dir / "nih").glob("*.png")) + sorted((cxr_dir / "padchest").glob("*"))
    payloads = [(p.name, p.read_bytes()) for p in images]
    with gunicorn(
        {"CHESTX_MODEL": str(tiny_model), "DATABASE_URL": f"sqlite:///{database}"},
        tmp_path / "gunicorn.log",
    ) as server:
        worker = server.worker_pids()[0]
        results: list[tuple[int, bytes]] = []
        stop = threading.Event()

        def client(offset: int) -> None:
            index = offset
            while not stop.is_set():
                name, data = payloads[index % len(payloads)]
                status, _, body = upload(server, data, name)
                results.append((status, body))
                index += 3

        threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        # One request the worker is in the middle of: headers and half the body sent.
        body, content_type = multipart(payloads[0][1], "slow.png")
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        slow.sendall(
            (
                f"POST /api/v1/predict HTTP/1.1\r\nHost: localhost\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body[: len(body) // 2]
        )
        deadline = time.monotonic() + 60
        while sum(1 for s, _ in results if s == 200) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        answered_before = len(results)
        os.kill(worker, signal.SIGKILL)
        killed_at = time.monotonic()
        try:
            slow_answer = slow.recv(1024)  # the connection dies with the worker
        except OSError as error:
            slow_answer = type(error).__name__.encode()
        slow.close()
        new_worker = server.wait_ready(120, not_pid=worker)
        recovered_seconds = time.monotonic() - killed_at
        time.sleep(2)
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
        status, _, answer = upload(server, (cxr_dir / COVID_JPEG).read_bytes(), "after.jpg")
        assert status == 200, answer[:300]
        assert server.process.poll() is None, "the master must survive"
        log = server.log_text()

    assert new_worker != worker
    assert not slow_answer.startswith(b"HTTP/1.1 2"), slow_answer
    statuses = Counter(s for s, _ in results)
    assert statuses[200] >= 6
    assert set(statuses) <= {0, 200}, statuses  # answered, or cut off by the kill: no 5xx
    saved_ids = {json.loads(b)["study"]["id"] for s, b in results if s == 200}
    saved_ids.add(json.loads(answer)["study"]["id"])
    with contextlib.closing(sqlite3.connect(database)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = connection.execute("SELECT count(*) FROM studies").fetchone()[0]
        stored = {row[0] for row in connection.execute("SELECT id FROM studies")}
        half = _half_written_rows(connection)
    assert half == 0
    assert saved_ids <= stored  # every answered upload is saved
    assert rows <= len(payloads) + 1  # one row per distinct image: none twice
    assert "Traceback" not in log
    figures = (
        f"worker kill: {answered_before} answers before SIGKILL of worker {worker}; "
        f"in-flight slow request got {slow_answer[:40]!r}; new worker {new_worker} answered "
        f"after {recovered_seconds:.1f} s; statuses {dict(statuses)}; after: 200; "
        f"database: {rows} rows, {half} half-written, integrity ok, "
        f"{len(saved_ids)} answered ids all stored"
    )
    print("\n" + figures)
    (artifacts_dir / "faults-worker-kill.txt").write_text(figures + "\n")


# --- PostgreSQL stopped and started while the app runs --------------------------------------


def _postgres_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


@contextlib.contextmanager
def own_postgres():
    """A throwaway PostgreSQL server of this test's own (it stops it): initdb'd in a temporary
    folder, on a Unix socket there only. Yields (url, start, stop)."""
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip(
            "!!! PostgreSQL NOT TESTED: no /usr/lib/postgresql/*/bin/pg_ctl (apt-get install "
            "postgresql): the database-down test needs a server it may stop. !!!"
        )
    folder = Path(tempfile.mkdtemp(prefix="chestx-pg-down."))
    as_server: list[str] = []
    if os.getuid() == 0:  # the server refuses to run as root
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], capture_output=True)
        shutil.chown(folder, "postgres")
        as_server = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    options = f"-c listen_addresses= -k {folder} -p 5432 -c fsync=off -c max_connections=50"

    def pg_ctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*as_server, str(bindir / "pg_ctl"), "-D", str(data), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def start() -> None:
        result = pg_ctl("-o", options, "-l", str(folder / "server.log"), "-w", "-t", "30", "start")
        assert result.returncode == 0, result.stderr + (folder / "server.log").read_text()

    def stop() -> None:
        assert pg_ctl("-m", "fast", "-w", "stop").returncode == 0

    try:
        initdb = subprocess.run(
            [*as_server, str(bindir / "initdb"), "-D", str(data), "-U", "chestx"]
            + ["--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if initdb.returncode != 0:
            pytest.skip(f"!!! PostgreSQL NOT TESTED: initdb failed: {initdb.stderr[-500:]} !!!")
        start()
        yield f"postgresql+psycopg://chestx@/postgres?host={folder}&port=5432", start, stop
    finally:
        pg_ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_database_down_then_back(tiny_model, tmp_path, cxr_dir, artifacts_dir):
    """Stop PostgreSQL under a running server: uploads get a clear 503 (page and JSON), pages
    that read the store too, nothing crashes; start it again: the next upload is saved."""
    images = [(cxr_dir / name).read_bytes() for name in (NIH_PNG, COVID_JPEG, DICOM_M2)]
    with (
        own_postgres() as (url, start, stop),
        gunicorn(
            {"CHESTX_MODEL": str(tiny_model), "DATABASE_URL": url}, tmp_path / "gunicorn.log"
        ) as server,
    ):
        worker = server.worker_pids()[0]
        status, _, body = upload(server, images[0])
        assert status == 200, body[:300]
        stop()
        outcomes = {}
        status, headers, body = upload(server, images[1], "down.jpg")
        outcomes["api upload while down"] = status
        assert status == 503, body[:300]
        assert headers.get("Retry-After") == "30"
        message = json.loads(body)["error"]
        assert "database can't be reached" in message and "nothing was saved" in message
        body_form, content_type = multipart(images[1], "down.jpg")
        # The form needs its CSRF token: take it (and the cookie) from the home page.
        status, headers, home = request(server, "GET", "/")
        token = home.decode().split('name="csrf_token" value="')[1].split('"')[0]
        cookie = headers["Set-Cookie"].split(";")[0]
        body_form, content_type = multipart(images[1], "down.jpg", {"csrf_token": token})
        status, _, page = request(
            server, "POST", "/", body_form, {"Content-Type": content_type, "Cookie": cookie}
        )
        outcomes["form upload while down"] = status
        assert status == 503 and b"be reached just now" in page
        for path in ("/studies", "/worklist", "/api/v1/studies"):
            status, _, _ = request(server, "GET", path)
            outcomes[f"GET {path} while down"] = status
            assert status == 503, path
        status, _, _ = request(server, "GET", "/healthz")
        outcomes["healthz while down"] = status
        assert status == 200
        start()
        status, _, body = upload(server, images[2], "back.dcm")
        outcomes["first upload after restart"] = status
        assert status == 200, body[:300]
        assert json.loads(body)["study"]["reused"] is False
        status, _, listing = request(server, "GET", "/api/v1/studies")
        assert status == 200 and json.loads(listing)["total"] == 2  # nothing half-saved
        assert server.worker_pids() == [worker], "the worker never crashed"
        log = server.log_text()
    assert "database unavailable on POST /api/v1/predict: OperationalError" in log
    assert "Traceback" not in log
    figures = "database down: " + "; ".join(f"{k}: {v}" for k, v in outcomes.items())
    figures += f"; worker {worker} unchanged; 2 rows after"
    print("\n" + figures)
    (artifacts_dir / "faults-database-down.txt").write_text(figures + "\n")


# --- FLASK_DEBUG, hostile files and patient data, on one server -----------------------------

DEBUG_APP = '''
"""ChestX with a route that fails, for the tests only (never in the app)."""
from chestx.web import create_app

app = create_app()


def boom():
    raise RuntimeError("debug" + "-detail-7731")


app.add_url_rule("/test-only/boom", "test_boom", boom)
'''

SECRETS = {
    "PatientName": "Privacy^Alice^Quinn",
    "PatientID": "PID-7731-XQ",
    "PatientBirthDate": "19470312",
    "AccessionNumber": "ACC98765432",
    "OtherPatientIDs": "OTHER-5521",
}
#: Every form a leaked value could take: as stored, split, and the date written other ways.
LEAKS = [
    *SECRETS.values(),
    "Privacy",
    "Alice",
    "1947-03-12",
    "12/03/1947",
    "03/12/1947",
    PATIENT_TAG_VALUE,
    "16d7f894",
]


@pytest.fixture(scope="module")
def hostile_server(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "debug_app.py").write_text(DEBUG_APP)
    env = {
        "CHESTX_MODEL": str(tiny_model),
        "DATABASE_URL": f"sqlite:///{folder / 'studies.db'}",
        "CHESTX_MAX_UPLOAD_MB": "5",
        "CHESTX_KEEP_IMAGES": "1",
        "CHESTX_IMAGE_DIR": str(folder / "images"),
        "CHESTX_LOG_LEVEL": "debug",
        "FLASK_DEBUG": "1",
        "FLASK_ENV": "development",
        "PYTHONPATH": f"{folder}:{REPO}",
    }
    with gunicorn(env, folder / "gunicorn.log", app="debug_app:app") as server:
        server.folder = folder
        yield server


def test_flask_debug_in_the_environment_changes_nothing(hostile_server):
    status, headers, body = request(hostile_server, "GET", "/test-only/boom")
    assert status == 500
    text = body.decode()
    for leak in (
        "Traceback",
        "Werkzeug Debugger",
        "debug-detail-7731",
        "RuntimeError",
        "__debugger__",
    ):
        assert leak not in text
    assert "Something went wrong" in text
    status, _, _ = request(hostile_server, "GET", "/console")  # the debugger's console
    assert status == 404
    status, _, _ = request(hostile_server, "GET", "/test-only/boom?__debugger__=yes&cmd=resource")
    assert status == 500
    assert "debug-detail-7731" not in hostile_server.log_text()


def _generated_dicoms(cxr_dir) -> list[tuple[str, bytes]]:
    """The two real DICOMs, and each rewritten with a full set of made-up patient tags."""
    import pydicom

    files = []
    for name in (DICOM_M2, DICOM_M1):
        data = (cxr_dir / name).read_bytes()
        files.append((Path(name).name, data))
        dataset = pydicom.dcmread(io.BytesIO(data))
        for tag, value in SECRETS.items():
            setattr(dataset, tag, value)
        dataset.SOPInstanceUID = pydicom.uid.generate_uid()
        buffer = io.BytesIO()
        dataset.save_as(buffer)
        generated = buffer.getvalue()
        for value in SECRETS.values():
            assert value.encode() in generated  # the file does carry them
        files.append(("generated-" + Path(name).name, generated))
    files.append(("generated-small.dcm", _dicom_from_scratch_with_secrets(cxr_dir)))
    return files


def _dicom_from_scratch_with_secrets(cxr_dir) -> bytes:
    """A DICOM made from scratch (a real radiograph's pixels) with every patient tag set."""
    import pydicom
    from PIL import Image

    pixels = np.asarray(Image.open(cxr_dir / NIH_PNG).convert("L"), np.uint16) * 16
    dataset = pydicom.dcmread(io.BytesIO(fuzz_dicom(pixels, modality="CR")))
    for tag, value in SECRETS.items():
        setattr(dataset, tag, value)
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def test_patient_data_never_leaves(hostile_server, cxr_dir, artifacts_dir):
    """Patient name, id, birth date, accession number (and the real files' pseudonymous
    name/id) in no page, JSON answer, image, CSV, database row or log line."""
    server = hostile_server
    outputs: dict[str, bytes] = {}
    for name, data in _generated_dicoms(cxr_dir):
        status, _, body = upload(server, data, name.replace("siim_", "scan-"))
        assert status == 200, body[:300]
        answer = json.loads(body)
        assert answer["image"]["format"] == "DICOM"
        outputs[f"predict {name}"] = body
        links = answer["links"]
        study = answer["study"]["links"]
        for label, path in [
            ("result page", links["result_page"]),
            ("image", links["image"]),
            *[(f"map {k}", v) for k, v in links["heatmaps"].items()],
            ("study page", study["page"]),
            ("study json", study["api"]),
        ]:
            status, _, content = request(server, "GET", path)
            assert status == 200, path
            outputs[f"{label} {name}"] = content
    for path in (
        "/studies",
        "/worklist",
        "/studies.csv",
        "/api/v1/studies",
        "/api/v1/studies/worklist",
    ):
        status, _, content = request(server, "GET", path)
        assert status == 200
        outputs[path] = content
    with contextlib.closing(sqlite3.connect(server.folder / "studies.db")) as connection:
        tables = [
            r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        for table in tables:
            outputs[f"table {table}"] = repr(
                connection.execute(f"SELECT * FROM {table}").fetchall()
            ).encode()
    for image in (server.folder / "images").glob("*.png"):
        outputs[f"kept {image.name}"] = image.read_bytes()
    time.sleep(0.5)  # the access log line of the last request
    outputs["gunicorn log"] = server.log.read_bytes()
    assert b"analysed a DICOM image" in outputs["gunicorn log"]  # the app logs, at debug level
    found = [
        (where, leak)
        for where, output in outputs.items()
        for leak in LEAKS
        if leak.encode() in output
    ]
    assert found == []
    figures = (
        f"privacy: {len(_generated_dicoms(cxr_dir))} DICOMs (2 real, 3 generated with name, id, "
        f"birth date, accession number); {len(outputs)} outputs checked (pages, JSON, images, "
        f"CSV, {len(tables)} tables, kept images, gunicorn log at debug): 0 leaks"
    )
    print("\n" + figures)
    (artifacts_dir / "faults-privacy.txt").write_text(figures + "\n")


FUZZ_OVER_HTTP = int(os.environ.get("CHESTX_FUZZ_HTTP_EXAMPLES", "60"))


def _named_cases(cxr_dir) -> list[tuple[str, bytes, str]]:
    """Cases the issue names, each once: (what, bytes, file name)."""
    png = (cxr_dir / NIH_PNG).read_bytes()
    jpeg = (cxr_dir / COVID_JPEG).read_bytes()
    dicom = (cxr_dir / DICOM_M2).read_bytes()
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 4096, (64, 64), dtype=np.uint16)
    return [
        ("png named .dcm", png, "chest.dcm"),
        ("dicom named .jpg", dicom, "chest.jpg"),
        ("jpeg named .png", jpeg, "chest.png"),
        ("truncated png", png[: len(png) // 3], "cut.png"),
        ("truncated jpeg", jpeg[: len(jpeg) // 2], "cut.jpg"),
        ("truncated dicom", dicom[: len(dicom) // 2], "cut.dcm"),
        ("over the 5 MB limit", png + bytes(6 * 1024 * 1024), "big.png"),
        ("1x1 png", png_bytes(np.zeros((1, 1), np.uint8)), "dot.png"),
        ("20000x20000 png", huge_png(), "huge.png"),
        ("16-bit png", png_bytes(grey), "deep.png"),
        ("multi-frame dicom", fuzz_dicom(np.stack([grey, grey, grey]), frames=3), "cine.dcm"),
        ("dicom without pixels", fuzz_dicom(None), "empty.dcm"),
        (
            "jpeg 2000 dicom that can't be decoded",
            fuzz_dicom(grey, transfer_syntax="1.2.840.10008.1.2.4.90"),
            "j2k.dcm",
        ),
        ("empty file", b"", "nothing.png"),
    ]


def test_hostile_files_over_http_leave_the_worker_alive(hostile_server, cxr_dir, artifacts_dir):
    """Named hostile files, then a hypothesis burst of mutated and odd files, posted to real
    gunicorn: every answer a 2xx or a 4xx with a message, within 60 s, and the same worker
    answers afterwards (no crash, no restart)."""
    server = hostile_server
    worker = server.worker_pids()[0]
    outcomes: Counter = Counter()
    lines = []

    def check(data: bytes, filename: str) -> int:
        started = time.monotonic()
        status, headers, body = upload(server, data, filename)
        assert time.monotonic() - started < 60, "no hang"
        assert 200 <= status < 500, (status, body[:300])
        answer = json.loads(body)
        if status >= 400:
            assert answer["error"]
        outcomes[status] += 1
        return status

    for what, data, filename in _named_cases(cxr_dir):
        lines.append(f"{what}: {check(data, filename)}")
    seeds = [(cxr_dir / NIH_PNG).read_bytes(), (cxr_dir / DICOM_M2).read_bytes()]

    @settings(
        max_examples=FUZZ_OVER_HTTP,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(mutated(seeds), odd_images()), st.sampled_from(["a.png", "b.jpg", "c.dcm"]))
    def burst(data, filename):
        check(data, filename)

    burst()
    assert server.worker_pids() == [worker], "the worker crashed or was restarted"
    status, _, _ = request(server, "GET", "/healthz")
    assert status == 200
    log = server.log_text()
    assert "Traceback" not in log and "WORKER TIMEOUT" not in log and "SIGKILL" not in log
    summary = ", ".join(f"{status}: {count}" for status, count in sorted(outcomes.items()))
    figures = (
        f"HTTP fuzz against gunicorn: {sum(outcomes.values())} cases ({summary}); "
        f"worker {worker} alive throughout\n" + "\n".join(lines)
    )
    print("\n" + figures)
    (artifacts_dir / "faults-fuzz-http.txt").write_text(figures + "\n")
