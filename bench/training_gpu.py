"""Training throughput on a GPU: full fine-tuning of ChestX's network (DenseNet121 + head, the
14-logit U-Ones loss) at 224 and 320 px, mixed precision against float32 in the same run, and
whether chestx's image loader (the ``load_for_model`` that serving uses) keeps the GPU busy.

Runs on any Keras 3 backend with a GPU: TensorFlow (what ``chestx train`` uses), JAX or PyTorch.
Random weights (the cost is ImageNet's); batches stay the same so that only the steps are timed;
the loader row reads generated CheXpert-v1.0-small-sized JPEGs.

    KERAS_BACKEND=jax python bench/training_gpu.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from inference import machine, print_table  # noqa: E402


def accelerator() -> tuple[str, bool]:
    """The device Keras trains on, in words, and whether it is a GPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.device_kind} (jax {jax.__version__})", device.platform == "gpu"
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})", True
        return f"CPU (torch {torch.__version__})", False
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU (tensorflow {tf.__version__})", False
    name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    return f"{name} (tensorflow {tf.__version__})", True


def random_targets(rng, count: int):
    """U-Ones training targets for ``count`` images: 14 random 0/1 labels, then 14 mask ones."""
    import numpy as np

    labels = rng.integers(0, 2, (count, 14))
    return np.concatenate([labels, np.ones((count, 14))], axis=1).astype(np.float32)


def fine_tuning_rate(size: int, batch: int, precision: str, steps: int, seed: int = 0):
    """Images/s of whole-network training steps (backbone trainable), compile excluded.

    Returns (images/s, the compiled model): the loader row reuses its compiled step. Prints
    the compile's cost, epoch 1 less a timed epoch, since on a GPU that decides what fits a run.
    """
    import keras
    import numpy as np

    from chestx.network import classifier
    from chestx.policies import TargetLayout, parse_policy

    keras.config.set_dtype_policy(precision)  # mixed_float16 also wraps Adam in loss scaling
    keras.utils.set_random_seed(seed)
    layout = TargetLayout(parse_policy("U-Ones"))
    model = classifier(size, None, layout.num_logits, None, seed, trainable_backbone=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=layout.loss_fn())
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (batch, size, size, 3)).astype(np.float32)
    y = random_targets(rng, batch)

    class SameBatch(keras.utils.PyDataset):
        def __len__(self):
            return steps

        def __getitem__(self, index):
            return x, y

    timer = epoch_timer()
    # Epoch 1 compiles and warms up; epochs 2 and 3 are timed.
    model.fit(SameBatch(), epochs=3, verbose=0, callbacks=[timer])
    steady = min(timer.seconds[1:])
    print(f"compile, {size} px, {precision}: {timer.seconds[0] - steady:.0f} s")
    return batch * steps / steady, model


def epoch_timer():
    """A Keras callback keeping each epoch's wall time; it reads the loss at the epoch's end, so
    the device has finished the epoch's steps."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            float(logs["loss"])
            self.seconds.append(time.perf_counter() - self.start)

    return EpochTimer()


def loader_rate(paths: list[str], size: int, threads: int, repeats: int = 2) -> float:
    """Images/s that ``load_for_model`` reaches on ``threads`` threads (decode, resize, scale)."""
    from chestx.imaging import load_for_model

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda p: load_for_model(p, size), paths[: threads * 2]))  # warm
        start = time.perf_counter()
        for _ in range(repeats):
            list(pool.map(lambda p: load_for_model(p, size), paths))
    return repeats * len(paths) / (time.perf_counter() - start)


def fit_from_files(model, paths: list[str], size: int, batch: int) -> float:
    """Images/s of the same compiled training step fed by chestx's own loader (training.py)."""
    import numpy as np

    from chestx.training import _image_batches

    y = random_targets(np.random.default_rng(1), len(paths))
    batches = _image_batches(paths, y, size, batch, True, 0)
    timer = epoch_timer()
    model.fit(batches, epochs=2, verbose=0, callbacks=[timer])
    return len(paths) / min(timer.seconds[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 320])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per epoch")
    parser.add_argument("--images", type=int, default=1024, help="JPEGs for the loader rows")
    parser.add_argument("--budget", type=float, default=1e9, help="seconds; later rows skipped")
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["mixed_float16", "float32"],
        choices=["mixed_float16", "float32"],
        help="the first is measured at every size and feeds the loader row; the others follow "
        "while --budget lasts (a compile takes minutes on a GPU: one call may not fit all)",
    )
    parser.add_argument("--json", type=Path, help="write the figures here as they come")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test (CPU too)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.batch_size, args.steps, args.images = [64], 4, 3, 32

    import keras

    from chestx.data.synthetic import make_demo_dataset
    from chestx.runtimes import usable_cpus
    from chestx.training import loader_workers

    began = time.perf_counter()
    batch, size, first = args.batch_size, args.sizes[0], args.precisions[0]
    device, on_gpu = accelerator()
    print(f"backend {keras.backend.backend()}, keras {keras.__version__}, device {device}")
    if not on_gpu and not args.quick:
        print("no GPU: this bench measures training on one (bench/training.py covers the CPU)")
        return 0
    figures: dict = {"device": device, "backend": keras.backend.backend(), "batch": batch}

    def record(name: str, value: float) -> None:
        figures[name] = value
        print(f"{name}: {value:.0f} images/s ({time.perf_counter() - began:.0f} s in)")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1))

    # The first precision at every size, then the loader, then the other precisions while
    # ``--budget`` lasts: each compile of DenseNet121's training step takes minutes.
    compiled = {}
    for each in args.sizes:
        rate, compiled[each] = fine_tuning_rate(each, batch, first, args.steps)
        record(f"fine_tune_{each}_{first}", rate)

    # The loader: CheXpert-v1.0-small-sized JPEGs (390 px) through load_for_model.
    temporary = Path(tempfile.mkdtemp(prefix="chestx-gpu-bench-"))
    root = make_demo_dataset(temporary / "data", args.images // 2, 2, 390, seed=3)
    paths = sorted(str(p) for p in root.rglob("*.jpg"))
    paths = paths[: len(paths) // batch * batch]
    workers = loader_workers()
    record("loader_1_thread", loader_rate(paths, size, 1))
    record("loader_all_threads", loader_rate(paths, size, workers))
    record("fine_tune_from_files", fit_from_files(compiled[size], paths, size, batch))

    for precision in args.precisions[1:]:
        for each in args.sizes:
            if time.perf_counter() - began < args.budget:
                rate = fine_tuning_rate(each, batch, precision, args.steps)[0]
                record(f"fine_tune_{each}_{precision}", rate)

    rows = []
    for each in args.sizes:
        fp32 = figures.get(f"fine_tune_{each}_float32")
        for precision in args.precisions:
            rate = figures.get(f"fine_tune_{each}_{precision}")
            shown = f"{rate:.0f}" if rate else "skipped (--budget)"
            if precision == "float32":
                rows.append((f"fine-tuning {each} px, float32 (images/s)", shown,
                             "-", "-", "-", "-"))  # fmt: skip
                continue
            rows.append((f"fine-tuning {each} px, mixed precision (images/s)", shown, "float32",
                         f"{fp32:.0f}" if fp32 else "not measured",
                         f"{rate / fp32:.2f}x" if rate and fp32 else "-", "-"))  # fmt: skip
    one, every = figures["loader_1_thread"], figures["loader_all_threads"]
    rows.append((f"loader, {workers} threads, {size} px (images/s)", f"{every:.0f}",
                 "1 thread", f"{one:.0f}", f"{every / one:.2f}x", "-"))  # fmt: skip
    resident, fed = figures[f"fine_tune_{size}_{first}"], figures["fine_tune_from_files"]
    rows.append((f"fine-tuning {size} px, {first}, fed from JPEG files (images/s)", f"{fed:.0f}",
                 "resident batch", f"{resident:.0f}", f"{fed / resident:.2f}x", "-"))  # fmt: skip
    cores = usable_cpus()
    print_table(f"Training on a GPU, batch {batch}, {device}, {cores} CPU cores", rows)
    print(f"\nmachine: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
