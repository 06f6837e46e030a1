"""Inference speed: the model as served (OpenVINO where installed, else ONNX Runtime, tuned)
against plain ONNX Runtime and the Keras model as a tf.function, at batch 1 and 8, plus
GFLOP/s, one-thread sessions side by side (as under load), and agreement with Keras.

Every runtime is timed in the same run, in interleaved rounds (the CPU may be shared), and the
table shows medians with the ratio to the baseline next to each figure.

    .venv/bin/python bench/inference.py [--model model/model.h5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: DenseNet121 + head, multiply-adds counted as 2 FLOPs, at 224 px (scales with the area).
GFLOP_AT_224 = 5.7


def gflop_per_image(size: int) -> float:
    return GFLOP_AT_224 * (size / 224) ** 2


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"{cpu}, {len(os.sched_getaffinity(0))} cores, {platform.system()}; load average at "
        f"the end {load} (other work on the machine slows every row alike; compare ratios)"
    )


def print_table(title: str, rows: list[tuple]) -> None:
    """rows: (figure, value, baseline name, baseline value, ratio, goal)"""
    print(f"\n{title}")
    header = ("figure", "ChestX", "baseline", "baseline value", "ratio", "goal")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(6)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


#: Pause before each runner's block of calls. ONNX Runtime's threads spin on after a call (its
#: default): without a pause the next runner shares the cores with them (30 ms slower here).
SETTLE_SECONDS = 0.05


def timed_rounds(runners: dict, rounds: int, calls: int) -> dict[str, float]:
    """Median seconds per call of each runner, alternating runners round by round; each block
    starts after a pause and one untimed call, so no runner pays for the one before."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for run in runners.values():
        run()  # first call: allocations, kernels
    for _ in range(rounds):
        for name, run in runners.items():
            time.sleep(SETTLE_SECONDS)
            run()
            for _ in range(calls):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def side_by_side(calls: list, seconds: float) -> float:
    """Calls per second when each of ``calls`` loops in its own thread for ``seconds``."""
    import threading

    for call in calls:
        call()  # first call: allocations
    counts = [0] * len(calls)
    stop = time.perf_counter() + seconds

    def loop(index: int) -> None:
        while time.perf_counter() < stop:
            calls[index]()
            counts[index] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(calls))]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - start)


def bare_throughput(
    new_session, image_size: int, cores: int, seconds: float, output: str = "predictions"
) -> dict[str, float]:
    """A graph's images/s without a server: one all-core session called in a loop at batch 1
    and 8, and one one-thread session per core called side by side (what the SessionPool does
    under load). The best of these is the baseline a server is held to. ``new_session(threads)``
    opens a session on the serving runtime."""
    import numpy as np

    rng = np.random.default_rng(0)
    one = rng.normal(0, 1, (1, image_size, image_size, 3)).astype(np.float32)
    eight = rng.normal(0, 1, (8, image_size, image_size, 3)).astype(np.float32)
    wide = new_session(cores)
    narrow = [new_session(1) for _ in range(cores)]

    def run(session, images):
        return lambda: session.run([output], {"image": images})

    return {
        "batch 1": side_by_side([run(wide, one)], seconds),
        "batch 8": 8 * side_by_side([run(wide, eight)], seconds),
        f"{len(narrow)} one-thread sessions": side_by_side(
            [run(session, one) for session in narrow], seconds
        ),
    }


def real_images(size: int, count: int):
    import numpy as np

    from chestx.imaging import load_for_model

    folder = REPO.parent / "shared" / "cxr"
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".png", ".dcm"))
    step = max(1, len(paths) // count)
    return np.stack([load_for_model(p, size) for p in paths[::step][:count]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="model/model.h5")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (about 1 minute)")
    parser.add_argument("--no-tensorflow", action="store_true", help="skip the tf.function row")
    args = parser.parse_args(argv)

    import numpy as np
    import onnxruntime as ort

    from chestx import runtimes
    from chestx.inference import Predictor

    model_path = Path(args.model)
    if not model_path.is_file():
        print(f"{model_path} not found: build one with `make demo-model`", file=sys.stderr)
        return 2
    predictor = Predictor(model_path, runtime="onnx")
    size = predictor.image_size
    onnx_path = str(predictor.served.path)
    plain = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    tuned_ort = runtimes.ort_session(onnx_path)
    spinning = runtimes.ort_session(onnx_path, spinning=True)
    rng = np.random.default_rng(0)
    batch1 = rng.normal(0, 1, (1, size, size, 3)).astype(np.float32)
    batch8 = rng.normal(0, 1, (8, size, size, 3)).astype(np.float32)
    rounds, calls = (3, 4) if args.quick else (6, 6)

    def plain_run(x):
        return plain.run(["predictions"], {"image": x})[0]

    runners1 = {
        "served": lambda: predictor.predict_batch(batch1),
        "plain": lambda: plain_run(batch1),
        "tuned ort": lambda: tuned_ort.run(["predictions"], {"image": batch1}),
        "spinning": lambda: spinning.run(["predictions"], {"image": batch1}),
    }
    runners8 = {
        "served": lambda: predictor.predict_batch(batch8),
        "plain": lambda: plain_run(batch8),
    }
    keras_call = None
    if not args.no_tensorflow:
        from chestx.inference import _compiled_call

        keras_call = _compiled_call(predictor.model)
        runners1["tf.function"] = lambda: keras_call(batch1)
        runners8["tf.function"] = lambda: keras_call(batch8)

    t1 = timed_rounds(runners1, rounds, calls)
    t8 = timed_rounds(runners8, rounds, max(1, calls // 2))
    gflop = gflop_per_image(size)

    served = predictor.served
    throughput = bare_throughput(
        served.new_session, size, served.pool.cores, 3.0 if args.quick else 8.0
    )
    pooled_name = next(name for name in throughput if "one-thread" in name)

    images = real_images(size, 8)
    served_out = predictor.predict_batch(images)
    worst = None
    if not args.no_tensorflow:
        worst = float(
            np.abs(served_out - np.asarray(predictor.model.predict(images, verbose=0))).max()
        )

    versions = f"onnxruntime {ort.__version__}"
    if predictor.runtime == "openvino":
        import openvino

        versions += f", openvino {openvino.__version__.split('-')[0]}"
    print(f"machine: {machine()}; {versions}; model {model_path} ({size} px)")
    print(
        f"served: {predictor.runtime}, {predictor.served.pool.cores} threads for a lone call, "
        "fp32; ONNX Runtime as ChestX tunes it: spinning off, all graph optimisations"
    )
    rows = [
        (
            "batch-1 latency (ms)",
            f"{t1['served'] * 1e3:.1f}",
            "plain ONNX Runtime",
            f"{t1['plain'] * 1e3:.1f}",
            f"{t1['plain'] / t1['served']:.2f}x speed",
            ">= 0.95x",
        ),
        (
            "batch-8 throughput (img/s)",
            f"{8 / t8['served']:.1f}",
            "plain ONNX Runtime",
            f"{8 / t8['plain']:.1f}",
            f"{t8['plain'] / t8['served']:.2f}x",
            ">= 0.95x",
        ),
        (
            "batch-1 GFLOP/s, from the median latency",
            f"{gflop / t1['served']:.0f}",
            "goal",
            "100",
            f"{gflop / t1['served'] / 100:.2f}x",
            ">= 1.00x",
        ),
        (
            "batch-1 GFLOP/s, calls back to back",
            f"{gflop * throughput['batch 1']:.0f}",
            "goal",
            "100",
            f"{gflop * throughput['batch 1'] / 100:.2f}x",
            ">= 1.00x",
        ),
        (
            f"throughput, {pooled_name} side by side (img/s)",
            f"{throughput[pooled_name]:.1f}",
            "served, all cores, batch 1",
            f"{throughput['batch 1']:.1f}",
            f"{throughput[pooled_name] / throughput['batch 1']:.2f}x",
            "(under load)",
        ),
        (
            "batch-1 latency vs ChestX's ONNX Runtime (ms)",
            f"{t1['served'] * 1e3:.1f}",
            "ONNX Runtime, tuned",
            f"{t1['tuned ort'] * 1e3:.1f}",
            f"{t1['tuned ort'] / t1['served']:.2f}x speed",
            "(choice)",
        ),
        (
            "ONNX Runtime with spinning threads (ms)",
            f"{t1['spinning'] * 1e3:.1f}",
            "ONNX Runtime, tuned",
            f"{t1['tuned ort'] * 1e3:.1f}",
            f"{t1['tuned ort'] / t1['spinning']:.2f}x speed",
            "(choice)",
        ),
    ]
    if keras_call is not None:
        rows += [
            (
                "batch-1 latency vs Keras (ms)",
                f"{t1['served'] * 1e3:.1f}",
                "Keras tf.function",
                f"{t1['tf.function'] * 1e3:.1f}",
                f"{t1['tf.function'] / t1['served']:.2f}x speed",
                "",
            ),
            (
                "batch-8 throughput vs Keras (img/s)",
                f"{8 / t8['served']:.1f}",
                "Keras tf.function",
                f"{8 / t8['tf.function']:.1f}",
                f"{t8['tf.function'] / t8['served']:.2f}x",
                "",
            ),
            (
                "max abs. difference from Keras, 8 real",
                f"{worst:.1e}",
                "tolerance",
                "1e-4",
                f"{worst / 1e-4:.3f}x",
                "<= 1x",
            ),
        ]
    print_table(f"Inference at {size} px ({gflop:.1f} GFLOP per image), medians", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
