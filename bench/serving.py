"""Serving: ChestX under real gunicorn (gunicorn.conf.py, as `make run` serves it) on localhost.

Measures, in one run, against the bare model in this process (the same ONNX session settings):
start-up to the first answered prediction, the median of single requests to POST
/api/v1/predict with real 1-2 MB JPEGs from ../shared/cxr/covid, throughput with 8 clients
posting at once, failures, and the resident memory of each worker. Only 127.0.0.1 is used.

    .venv/bin/python bench/serving.py [--model model/model.h5] [--quick] [--seconds 60]
"""

from __future__ import annotations

import argparse
import http.client
import json
import runpy
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from inference import machine, print_table, timed_rounds  # noqa: E402

from chestx.web.devserver import GunicornProcess, multipart, rss_mb  # noqa: E402

COVID = REPO.parent / "shared" / "cxr" / "covid"


def jpegs(count: int) -> list[Path]:
    """Real 1-2 MB chest JPEGs."""
    files = sorted(p for p in COVID.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    sized = [p for p in files if 1_000_000 <= p.stat().st_size <= 2_100_000]
    return (sized or files)[:count]


class Client:
    """One keep-alive connection posting uploads."""

    def __init__(self, port: int):
        self.port = port
        self.connection = None

    def post(self, body: bytes, content_type: str) -> int:
        self.last = None
        for attempt in range(2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.connection.request(
                    "POST", "/api/v1/predict", body, {"Content-Type": content_type}
                )
                response = self.connection.getresponse()
                self.last = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.connection.close()
                    self.connection = None
                return response.status
            except (OSError, http.client.HTTPException):
                self.connection.close()
                self.connection = None
                if attempt:
                    raise
        return 0


def gunicorn_settings() -> str:
    conf = runpy.run_path(str(REPO / "gunicorn.conf.py"))
    return ", ".join(f"{key}={conf.get(key)}" for key in ("workers", "worker_class", "threads"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="model/model.h5")
    parser.add_argument("--quick", action="store_true", help="20 s of load, fewer requests")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load test")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)
    seconds = 20.0 if args.quick else args.seconds

    import numpy as np

    from chestx.inference import Predictor

    model_path = Path(args.model).resolve()
    if not model_path.is_file():
        print(f"{model_path} not found: build one with `make demo-model`", file=sys.stderr)
        return 2
    uploads = [multipart(p.read_bytes(), p.name, content_type="image/jpeg") for p in jpegs(6)]
    temporary = Path(tempfile.mkdtemp(prefix="chestx-bench-"))
    # On 127.0.0.1, with the per-client rate limit (60 a minute by default) off, as it would
    # refuse a load test from one address; everything else is as `make run` serves.
    env = {
        "CHESTX_MODEL": str(model_path),
        "CHESTX_LOG_LEVEL": "warning",
        "DATABASE_URL": f"sqlite:///{temporary / 'studies.db'}",
        "CHESTX_CACHE": str(temporary / "cache"),
    }
    started = time.perf_counter()
    server = GunicornProcess(env, temporary / "gunicorn.log")
    port = server.port
    try:
        first_answer = None
        client = Client(port)
        while time.perf_counter() - started < 120:
            if server.process.poll() is not None:
                print(server.log_text()[-3000:], file=sys.stderr)
                return 1
            try:
                if client.post(*uploads[0]) == 200:
                    first_answer = time.perf_counter() - started
                    break
            except OSError:
                client.connection = None
                time.sleep(0.02)
        if first_answer is None:
            print("no answer in 120 s", file=sys.stderr)
            return 1

        # The bare model, in this process, same session settings, on the same preprocessed size.
        predictor = Predictor(model_path, runtime="onnx")
        size = predictor.image_size
        run = predictor.predict_batch
        rng = np.random.default_rng(0)
        one = rng.normal(0, 1, (1, size, size, 3)).astype(np.float32)
        eight = rng.normal(0, 1, (8, size, size, 3)).astype(np.float32)

        # Single requests, interleaved with bare batch-1 calls so both see the same machine.
        requests = 8 if args.quick else 20
        request_times, bare_times, in_server, in_model = [], [], [], []
        for i in range(requests):
            body, content_type = uploads[i % len(uploads)]
            start = time.perf_counter()
            status = client.post(body, content_type)
            request_times.append(time.perf_counter() - start)
            assert status == 200, status
            reported = json.loads(client.last)["seconds"]
            in_server.append(reported["total"])
            in_model.append(reported["model"])
            bare_times.append(timed_rounds({"b": lambda: run(one)}, 1, 1)["b"])
        bare1 = statistics.median(bare_times)
        single = statistics.median(request_times)
        bare = timed_rounds(
            {
                "b1": lambda: run(one),
                "b8": lambda: run(eight),
            },
            2 if args.quick else 3,
            3,
        )
        best_before = max(1 / bare["b1"], 8 / bare["b8"])
        best_batch = 1 if 1 / bare["b1"] >= 8 / bare["b8"] else 8

        # Load: N clients posting at once for `seconds`.
        done, failed, peak = [0], [0], {}
        stop = time.perf_counter() + seconds
        lock = threading.Lock()

        def post_loop(number: int):
            own = Client(port)
            i = number
            while time.perf_counter() < stop:
                body, content_type = uploads[i % len(uploads)]
                i += 1
                try:
                    ok = own.post(body, content_type) == 200
                except OSError:
                    ok = False
                with lock:
                    (done if ok else failed)[0] += 1

        threads = [threading.Thread(target=post_loop, args=(n,)) for n in range(args.clients)]
        load_start = time.perf_counter()
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            for pid in server.worker_pids():
                peak[pid] = max(peak.get(pid, 0.0), rss_mb(pid))
            time.sleep(0.5)
        elapsed = time.perf_counter() - load_start
        # The bare model again, right after the load (the CPU is shared): the mean of both.
        bare = timed_rounds({"b1": lambda: run(one), "b8": lambda: run(eight)}, 2, 3)
        best = (best_before + max(1 / bare["b1"], 8 / bare["b8"])) / 2
        run = predictor = None
        throughput = done[0] / elapsed
        workers = len(peak)
        worst_rss = max(peak.values()) if peak else 0.0
    finally:
        server.stop()

    settings = gunicorn_settings()
    print(f"machine: {machine()}; model {model_path} ({size} px); gunicorn: {settings}")
    rows = [
        (
            "start to first answer (s)",
            f"{first_answer:.2f}",
            "goal",
            "3.0",
            f"{first_answer / 3:.2f}x",
            "<= 1.00x",
        ),
        (
            "one request, median (ms)",
            f"{single * 1e3:.0f}",
            "bare model, batch 1",
            f"{bare1 * 1e3:.0f}",
            f"{single / bare1:.2f}x",
            "<= 1.30x",
        ),
        (
            f"{args.clients} clients, {seconds:.0f} s (img/s)",
            f"{throughput:.1f}",
            f"bare model, best (batch {best_batch})",
            f"{best:.1f}",
            f"{throughput / best:.2f}x",
            ">= 0.85x",
        ),
        (
            "  of which: in the app (decode, gate, model) (ms)",
            f"{statistics.median(in_server) * 1e3:.0f}",
            "bare model, batch 1",
            f"{bare1 * 1e3:.0f}",
            f"{statistics.median(in_server) / bare1:.2f}x",
            "",
        ),
        (
            "  of which: the model call in the server (ms)",
            f"{statistics.median(in_model) * 1e3:.0f}",
            "bare model, batch 1",
            f"{bare1 * 1e3:.0f}",
            f"{statistics.median(in_model) / bare1:.2f}x",
            "",
        ),
        ("failed requests", f"{failed[0]}", "answered", f"{done[0]}", "", "0"),
        (
            f"peak RSS per worker (MB, {workers} worker)",
            f"{worst_rss:.0f}",
            "goal",
            "1536",
            f"{worst_rss / 1536:.2f}x",
            "<= 1.00x",
        ),
    ]
    print_table("Serving through gunicorn on 127.0.0.1 (1-2 MB JPEG uploads)", rows)
    return 0 if failed[0] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
