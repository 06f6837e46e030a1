"""ChestX under real gunicorn as a child process, for tests and benchmarks.

Like flask.testing, a helper for the test suite and bench/, never used by the app itself: start
``gunicorn --config gunicorn.conf.py app:app`` on a free 127.0.0.1 port with extra environment
variables and a log file, wait for /healthz, list the workers and their memory, stop it.

    with GunicornProcess({"CHESTX_MODEL": "model/model.h5"}, folder / "gunicorn.log") as server:
        server.wait_ready()
        body, content_type = multipart(data, "chest.png", {"override": "yes"})
        ...

Standard library only: importing it loads no model and no web framework of its own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

#: The repository: gunicorn runs here, where gunicorn.conf.py and app.py are.
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_pids(master: int) -> list[int]:
    """The gunicorn workers: the children of the master process ``master``, sorted."""
    try:
        return sorted(
            int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()
        )
    except OSError:
        return []


def rss_mb(pid: int) -> float:
    """Resident memory (VmRSS) of process ``pid`` in MB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def multipart(
    data: bytes,
    filename: str,
    fields: dict[str, str] | None = None,
    content_type: str = "application/octet-stream",
) -> tuple[bytes, str]:
    """A multipart/form-data body: ``fields`` first, then ``data`` as the field "file";
    returns (body, the request's Content-Type). Quotes and line breaks in ``filename`` are
    replaced so that any name makes a well-formed body."""
    before, after, request_type = multipart_around(filename, fields, content_type)
    return b"".join((before, data, after)), request_type


def multipart_around(
    filename: str,
    fields: dict[str, str] | None = None,
    content_type: str = "application/octet-stream",
) -> tuple[bytes, bytes, str]:
    """What ``multipart`` puts before and after the file's bytes, and the request's
    Content-Type: a load generator sends the three pieces as they are, without copying a
    1-2 MB file into each body."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in (fields or {}).items()
    ]
    safe = filename.replace('"', "%22").replace("\r", " ").replace("\n", " ")
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{safe}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode("utf-8", "replace")
    )
    after = f"\r\n--{boundary}--\r\n".encode()
    return b"".join(parts), after, f"multipart/form-data; boundary={boundary}"


class GunicornProcess:
    """gunicorn serving ChestX (gunicorn.conf.py) on 127.0.0.1, started on construction.

    The environment is this process's, with the rate limit off (every client is 127.0.0.1),
    TF_CPP_MIN_LOG_LEVEL=2, PORT and CHESTX_BIND=127.0.0.1, then ``env_extra`` over those;
    CHESTX_SECRET_KEY is never passed on. ``gunicorn_args``, when given, is GUNICORN_CMD_ARGS
    (``"--workers 2 --threads 4"``). stdout and stderr go to ``log_path``. Leaving a ``with``
    block stops it.
    """

    def __init__(
        self,
        env_extra: dict[str, str],
        log_path: Path,
        *,
        app: str = "app:app",
        gunicorn_args: str | None = None,
        port: int | None = None,
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(log_path)
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "CHESTX_RATE_LIMIT": "off",
            "PORT": str(self.port),
            "CHESTX_BIND": "127.0.0.1",  # localhost only
        }
        if gunicorn_args is not None:
            env["GUNICORN_CMD_ARGS"] = gunicorn_args
        env.update(env_extra)
        env.pop("CHESTX_SECRET_KEY", None)
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        with self.log.open("wb") as handle:
            self.process = subprocess.Popen(
                [gunicorn, "--config", "gunicorn.conf.py", app],
                cwd=REPO,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )

    def __enter__(self) -> GunicornProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        return worker_pids(self.process.pid)

    def wait_ready(self, seconds: float = 180, not_pid: int | None = None) -> int:
        """Wait until /healthz answers 200 and a worker other than ``not_pid`` runs; returns
        that worker's pid. RuntimeError, with gunicorn's log, when gunicorn exits first or
        ``seconds`` pass."""
        deadline = time.monotonic() + seconds
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"gunicorn exited with {self.process.returncode}:\n{self.log_text()}"
                )
            workers = [w for w in self.worker_pids() if w != not_pid]
            if workers:
                try:
                    with urllib.request.urlopen(self.url + "/healthz", timeout=5) as response:
                        if response.status == 200:
                            return workers[0]
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"gunicorn did not answer /healthz in {seconds:g} s:\n{self.log_text()[-3000:]}"
                )
            time.sleep(0.3)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in 30 s."""
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
