"""Load test: N clients post real radiographs to ChestX under gunicorn for a fixed time.

Starts ChestX with gunicorn.conf.py on 127.0.0.1 (a free port, a temporary SQLite study store,
the rate limit off), then N client threads (8 to 32, default 16) each post uploads from
../shared/cxr (PNG, JPEG and DICOM) to /api/v1/predict, one after the other, until the time is
up. Records every request's latency and status, and samples the workers' resident memory
(VmRSS from /proc) every few seconds. Prints latency percentiles, throughput, errors and memory
over time.

Pass: no error (every answer a 200, no broken connection), the same worker pids at the end
(none crashed or was restarted), and worker memory at the end within 10% of the memory at the
end of the warm-up. Exit status 1 otherwise. Localhost only; bounded in clients and time.

    .venv/bin/python bench/load.py [--model model/model.h5] [--clients 16] [--duration 300]
        [--warmup 30] [--sample 5] [--json load.json]

tests/web/test_web_load.py runs a short version (8 clients, 20 s, the tiny test model).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CXR = REPO.parent / "shared" / "cxr"
sys.path.insert(0, str(REPO))

from chestx.web.devserver import GunicornProcess, multipart, rss_mb, worker_pids  # noqa: E402

MAX_CLIENTS = 32
MAX_DURATION = 3600.0


def sample_images(cxr: Path = CXR) -> list[Path]:
    """Real radiographs of every kind: the NIH PNGs, PadChest, both DICOMs, the smaller half of
    the COVID JPEGs (most are 1-2 MB exports)."""
    jpegs = sorted((cxr / "covid").glob("*.jpg"), key=lambda p: (p.stat().st_size, p.name))
    chosen = sorted((cxr / "nih").glob("*.png")) + sorted((cxr / "padchest").glob("*"))
    return chosen + sorted((cxr / "dicom").glob("*.dcm")) + jpegs[: len(jpegs) // 2]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# --- the load ------------------------------------------------------------------------------


@dataclass
class Result:
    clients: int
    duration_s: float
    warmup_s: float
    requests: int = 0
    ok: int = 0
    errors: int = 0
    error_kinds: dict = field(default_factory=dict)
    throughput_per_s: float = 0.0
    latency_s: dict = field(default_factory=dict)
    memory_mb: list = field(default_factory=list)  # [seconds, total RSS of the workers, load]
    memory_warm_mb: float = 0.0
    memory_end_mb: float = 0.0
    memory_peak_mb: float = 0.0
    memory_growth: float = 0.0
    workers_start: list = field(default_factory=list)
    workers_end: list = field(default_factory=list)
    max_growth: float = 0.10

    @property
    def passed(self) -> bool:
        return (
            self.errors == 0
            and self.ok > 0
            and self.workers_start == self.workers_end
            and self.memory_growth <= self.max_growth
        )

    def table(self) -> str:
        lat = self.latency_s
        lines = [
            f"{self.clients} clients for {self.duration_s:.0f} s (warm-up {self.warmup_s:.0f} s)",
            f"requests {self.requests}, ok {self.ok}, errors {self.errors} {self.error_kinds}",
            f"throughput {self.throughput_per_s:.2f} uploads/s",
            "latency s: "
            + ", ".join(f"{k} {lat[k]:.3f}" for k in ("p50", "p90", "p99", "max", "mean")),
            "",
            "  time s   workers RSS MB   load avg (1 min)",
        ]
        lines += [f"  {t:6.0f}   {m:14.1f}   {load:6.2f}" for t, m, load in self.memory_mb]
        lines += [
            "",
            f"memory: {self.memory_warm_mb:.1f} MB after warm-up, {self.memory_end_mb:.1f} MB at "
            f"the end ({self.memory_growth:+.1%}; limit +{self.max_growth:.0%}), peak "
            f"{self.memory_peak_mb:.1f} MB",
            f"workers {self.workers_start} -> {self.workers_end}",
            "PASS" if self.passed else "FAIL",
        ]
        return "\n".join(lines)


def run_load(
    port: int,
    master: int,
    images: list[Path],
    clients: int,
    duration: float,
    warmup: float,
    sample_every: float,
    max_growth: float = 0.10,
) -> Result:
    payloads = [(p.name, p.read_bytes()) for p in images]
    records: list[tuple[float, float, int | str]] = []  # (start offset, seconds, status)
    lock = threading.Lock()
    result = Result(clients, duration, warmup, max_growth=max_growth)
    result.workers_start = worker_pids(master)
    started = time.monotonic()
    deadline = started + duration

    def client(index: int) -> None:
        turn = index
        while time.monotonic() < deadline:
            name, data = payloads[turn % len(payloads)]
            turn += clients
            body, content_type = multipart(data, name, {"override": "yes"})
            begin = time.monotonic()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                connection.request("POST", "/api/v1/predict", body, {"Content-Type": content_type})
                response = connection.getresponse()
                response.read()
                status: int | str = response.status
                connection.close()
            except (OSError, http.client.HTTPException) as error:
                status = type(error).__name__
            with lock:
                records.append((begin - started, time.monotonic() - begin, status))

    def sampler() -> None:
        while True:
            now = time.monotonic()
            total = sum(rss_mb(pid) for pid in worker_pids(master))
            result.memory_mb.append((round(now - started, 1), round(total, 1), os.getloadavg()[0]))
            if now >= deadline:
                return
            time.sleep(min(sample_every, max(0.0, deadline - now)))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    memory = threading.Thread(target=sampler, daemon=True)
    memory.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=duration + 180)
    memory.join(timeout=sample_every + 10)
    elapsed = time.monotonic() - started
    result.workers_end = worker_pids(master)

    latencies = [seconds for _, seconds, status in records if status == 200]
    result.requests = len(records)
    result.ok = len(latencies)
    result.errors = result.requests - result.ok
    kinds: dict[str, int] = {}
    for _, _, status in records:
        if status != 200:
            kinds[str(status)] = kinds.get(str(status), 0) + 1
    result.error_kinds = kinds
    result.throughput_per_s = result.ok / elapsed
    result.latency_s = {
        "p50": percentile(latencies, 50),
        "p90": percentile(latencies, 90),
        "p99": percentile(latencies, 99),
        "max": max(latencies, default=float("nan")),
        "mean": statistics.fmean(latencies) if latencies else float("nan"),
    }
    # Memory after warm-up and at the end: each the mean of three samples (RSS moves by a few
    # per cent between samples as uploads are decoded and freed).
    after_warmup = [m for t, m, _ in result.memory_mb if t >= warmup]
    head = after_warmup[:3]
    result.memory_warm_mb = statistics.fmean(head) if head else 0.0
    tail = after_warmup[-3:]
    result.memory_end_mb = statistics.fmean(tail) if tail else 0.0
    result.memory_peak_mb = max((m for _, m, _ in result.memory_mb), default=0.0)
    if result.memory_warm_mb:
        result.memory_growth = result.memory_end_mb / result.memory_warm_mb - 1
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "model" / "model.h5")
    parser.add_argument("--clients", type=int, default=16, help="8 to 32 (default 16)")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before memory counts")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--max-growth", type=float, default=0.10, help="memory growth allowed")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS:
        parser.error(f"--clients must be 1 to {MAX_CLIENTS}")
    if not 1 <= args.duration <= MAX_DURATION or not 0 <= args.warmup < args.duration:
        parser.error("--duration must be 1 to 3600 s and --warmup shorter than it")
    if not args.model.is_file():
        print(f"{args.model} not found: build one with `make demo-model`", file=sys.stderr)
        return 2
    images = sample_images()
    with tempfile.TemporaryDirectory(prefix="chestx-load.") as temporary:
        folder = Path(temporary)
        env = {
            "CHESTX_MODEL": str(args.model.resolve()),
            "DATABASE_URL": f"sqlite:///{folder / 'studies.db'}",
            "CHESTX_LOG_LEVEL": "warning",
        }  # on 127.0.0.1 only, the rate limit off (every client is 127.0.0.1)
        with GunicornProcess(env, folder / "gunicorn.log") as server:
            server.wait_ready(300)
            print(
                f"ChestX on 127.0.0.1:{server.port} (gunicorn.conf.py, model {args.model}); "
                f"{len(images)} real images; {os.cpu_count()} CPUs, load average "
                f"{os.getloadavg()[0]:.2f} before the run",
                flush=True,
            )
            result = run_load(
                server.port,
                server.process.pid,
                images,
                args.clients,
                args.duration,
                args.warmup,
                args.sample,
                args.max_growth,
            )
            log = server.log_text()
    print(result.table())
    for marker in ("Traceback", "WORKER TIMEOUT", "SIGKILL"):
        if marker in log:
            print(f"gunicorn log has {marker!r}:\n{log[-3000:]}")
            result.errors += 1
    if args.json:
        args.json.write_text(json.dumps({**asdict(result), "passed": result.passed}, indent=2))
    return 0 if result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
