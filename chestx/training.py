"""Training: from a CheXpert folder and a policy to model/model.h5 and its card.

With a frozen backbone (the default) the backbone's pooled features are computed once per image
and cached (``chestx.features``), and only the head trains, for seconds per epoch. With
``fine_tune`` the whole network trains on images, as in the CheXpert paper. Either way the best
epoch by mean AUC over the five competition tasks on the validation set is kept, U-SelfTrained
runs its two rounds, and the saved model ends in 14 sigmoids whatever the policies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chestx.card import ModelCard, check_card, now_iso, package_versions
from chestx.data import CheXpertData, read_chexpert
from chestx.errors import ConfigError, DataError
from chestx.evaluation import evaluate, mean_competition_auc
from chestx.export import export_after_training
from chestx.features import DEFAULT_CACHE_DIR, FeatureCache
from chestx.imaging import PREPROCESSING, load_for_model
from chestx.labels import OBSERVATIONS
from chestx.network import classifier, fold_into_classifier, head_on_features, weights_spec
from chestx.policies import U_SELF_TRAINED, TargetLayout, parse_policy
from chestx.runtimes import usable_cpus

log = logging.getLogger(__name__)

MODEL_FILE = "model.h5"
CARD_FILE = "model.json"


@dataclass
class TrainConfig:
    """Everything `chestx train` takes; the defaults follow the original project."""

    data: Path  # the CheXpert-v1.0-small folder (holds train.csv and valid.csv)
    policy: str = "U-Ones"
    image_size: int = 224
    epochs: int = 3
    batch_size: int = 16
    learning_rate: float = 1e-4
    weights: str | None = "imagenet"
    out: Path = Path("model")
    seed: int = 0
    fine_tune: bool = False
    mixed_precision: bool = False  # fine-tuning in float16 maths, float32 weights (GPUs)
    frontal_only: bool = False
    val_split: float | None = None  # None: validate on valid.csv, as the paper did
    cache_dir: Path = DEFAULT_CACHE_DIR
    demo: bool = False
    dataset_name: str | None = None
    progress: bool = True


@dataclass
class TrainResult:
    model_path: Path
    card: ModelCard
    history: list[dict] = field(default_factory=list)
    validation_probabilities: np.ndarray | None = None
    features_computed: int = 0  # images run through the backbone for the cache in this run


def load_splits(config: TrainConfig) -> tuple[CheXpertData, CheXpertData, str]:
    """Training and validation images: valid.csv, or a patient-level split of train.csv."""
    folder = Path(config.data)
    train = read_chexpert(folder / "train.csv", root=folder)
    if config.val_split:
        train, validation = train.split_by_patient(config.val_split, config.seed)
        where = f"{config.val_split:.0%} of train.csv's patients"
    else:
        validation = read_chexpert(folder / "valid.csv", root=folder)
        where = "valid.csv"
    if config.frontal_only:
        train, validation = train.filter(frontal_only=True), validation.filter(frontal_only=True)
    if len(train) == 0 or len(validation) == 0:
        raise DataError("no images left to train or validate on after filtering")
    return train, validation, where


class _Inputs:
    """What the trained network eats: cached features (frozen) or image files (fine-tuning)."""

    def __init__(self, config: TrainConfig, weights: str | None):
        self.config = config
        self.weights = weights
        self.cache = (
            None
            if config.fine_tune
            else FeatureCache(config.cache_dir, weights, config.image_size, config.seed)
        )

    def prepare(self, data: CheXpertData):
        if self.cache is not None:
            return self.cache.features(data.paths, progress=self.config.progress)
        return data.paths

    def batches(self, inputs, y: np.ndarray | None, shuffle: bool):
        return _image_batches(
            inputs, y, self.config.image_size, self.config.batch_size, shuffle, self.config.seed
        )

    def logits(self, model, inputs) -> np.ndarray:
        if self.cache is not None:
            return np.asarray(model.predict(inputs, batch_size=1024, verbose=0), np.float32)
        batches = self.batches(inputs, None, False)
        return np.asarray(model.predict(batches, verbose=0), np.float32)


def loader_workers() -> int:
    """Threads that read training images: one per core the process may use (at least 2).

    Decoding and resizing release the GIL, the Python around them doesn't: on a 16-core GPU
    machine 16 threads read 2.2x what one does, still 5x below what the GPU trains on
    (bench/training_gpu.py; docs/performance.md says what would close the gap).
    """
    return max(2, usable_cpus())


def _image_batches(paths, y, image_size, batch_size, shuffle, seed):
    """A keras PyDataset reading images through the shared ``load_for_model``."""
    import keras

    workers = loader_workers()

    class ImageBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=2 * workers)
            self.order = np.arange(len(paths))
            self.rng = np.random.default_rng(seed)
            if shuffle:
                self.rng.shuffle(self.order)

        def __len__(self):
            return int(np.ceil(len(paths) / batch_size))

        def __getitem__(self, index):
            rows = self.order[index * batch_size : (index + 1) * batch_size]
            x = np.stack([load_for_model(paths[i], image_size) for i in rows])
            return x if y is None else (x, y[rows])

        def on_epoch_end(self):
            if shuffle:
                self.rng.shuffle(self.order)

    return ImageBatches()


@contextmanager
def _precision(mixed: bool) -> Iterator[None]:
    """Layers built inside compute in float16 with float32 weights (Keras's mixed_float16, with
    loss scaling at compile), for a GPU's tensor cores. The policy is global in Keras, so it is
    put back: the served model is always built in float32."""
    import keras

    previous = keras.config.dtype_policy()
    if mixed:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _best_epoch_callback(score: Callable[[object], tuple[float | None, np.ndarray]], history):
    """Keeps the weights of the epoch with the best 5-task validation AUC."""
    import keras

    class BestByValidationAUC(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best = -np.inf
            self.best_weights = None
            self.best_probabilities = None

        def on_epoch_end(self, epoch, logs=None):
            value, probabilities = score(self.model)
            shown = float("nan") if value is None else value
            history.append({"epoch": epoch + 1, "loss": float(logs["loss"]), "val_mean_auc": value})
            print(f"epoch {epoch + 1}: loss {logs['loss']:.4f}, 5-task val AUC {shown:.4f}")
            if value is None:
                value = -1.0  # no defined AUC: keep the latest weights until one is
            if value > self.best:
                self.best = value
                self.best_weights = self.model.get_weights()
                self.best_probabilities = probabilities

        def on_train_end(self, logs=None):
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return BestByValidationAUC()


def train(config: TrainConfig) -> TrainResult:
    """Train, keep the best epoch, save model.h5 and model.json in ``config.out``."""
    if config.epochs < 1 or config.batch_size < 1 or config.learning_rate <= 0:
        raise ConfigError("epochs and batch size must be at least 1 and the learning rate > 0")
    if config.mixed_precision and not config.fine_tune:
        raise ConfigError(
            "mixed precision applies to --fine-tune: with a frozen backbone only the head "
            "trains, on cached float32 features, in seconds"
        )
    plan = parse_policy(config.policy)
    layout = TargetLayout(plan)
    weights = weights_spec(config.weights)
    train_data, validation_data, validation_source = load_splits(config)

    import keras
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()

    inputs = _Inputs(config, weights)
    train_inputs = inputs.prepare(train_data)
    validation_inputs = inputs.prepare(validation_data)
    history: list[dict] = []

    def score(model) -> tuple[float | None, np.ndarray]:
        probabilities = layout.probabilities(inputs.logits(model, validation_inputs))
        return mean_competition_auc(validation_data.labels, probabilities), probabilities

    def fit_round(soft: np.ndarray | None, round_name: str):
        keras.utils.set_random_seed(config.seed)
        if inputs.cache is not None:
            model = head_on_features(layout.num_logits, config.seed)
        else:
            with _precision(config.mixed_precision):
                model = classifier(
                    config.image_size, weights, layout.num_logits, None, config.seed, True
                )
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            loss=layout.loss_fn(),
            # XLA pays off on a GPU; on a CPU compiling DenseNet121's backward pass takes minutes.
            jit_compile="auto" if tf.config.list_physical_devices("GPU") else False,
        )
        y = layout.encode(train_data.labels, soft)
        best = _best_epoch_callback(score, history)
        print(f"training ({round_name}): {len(train_data)} images, {config.epochs} epochs")
        verbose = 1 if config.progress else 0
        if inputs.cache is not None:
            model.fit(
                train_inputs,
                y,
                batch_size=config.batch_size,
                epochs=config.epochs,
                shuffle=True,
                callbacks=[best],
                verbose=verbose,
            )
        else:
            model.fit(
                inputs.batches(train_inputs, y, True),
                epochs=config.epochs,
                callbacks=[best],
                verbose=verbose,
            )
        return model, best

    model, best = fit_round(None, "U-Ignore round" if U_SELF_TRAINED in plan.uses else "")
    if U_SELF_TRAINED in plan.uses:
        soft = layout.probabilities(inputs.logits(model, train_inputs))
        model, best = fit_round(soft, "U-SelfTrained, relabelled round")

    served = _export(model, inputs, layout, config)
    probabilities = best.best_probabilities
    report = evaluate(validation_data.labels, probabilities, bootstrap=200, seed=config.seed)
    card = _card(config, plan, weights, train_data, validation_data, validation_source, report)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _save_h5(served, out / MODEL_FILE)
    card.save(out / CARD_FILE)
    check_card(card, served.output_shape[-1], served.input_shape[1])
    tolerance = MIXED_PRECISION_TOLERANCE if config.mixed_precision else 1e-4
    _check_export(served, model, inputs, validation_data, layout, config.image_size, tolerance)
    export_after_training(out / MODEL_FILE, served, validation_data.paths, config.image_size)
    computed = inputs.cache.computed if inputs.cache is not None else 0
    return TrainResult(out / MODEL_FILE, card, history, probabilities, computed)


def _save_h5(model, path: Path) -> None:
    """Save as HDF5, the artifact the project promises, without Keras's 'legacy format' warning."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        model.save(path)
    finally:
        absl.setLevel(level)


def _export(trained, inputs: _Inputs, layout: TargetLayout, config: TrainConfig):
    """The 14-sigmoid classifier with the trained weights (and the frozen backbone's)."""
    served = classifier(
        config.image_size, None, len(OBSERVATIONS), "sigmoid", config.seed, calibrate=False
    )
    fold, bias = layout.fold_matrix()
    if inputs.cache is not None:
        fold_into_classifier(inputs.cache.extractor(), served, fold, bias)
    fold_into_classifier(trained, served, fold, bias)
    return served


#: How far the float32 model saved may differ from the float16 maths that trained (probabilities).
MIXED_PRECISION_TOLERANCE = 1e-2


def _check_export(
    served, trained, inputs: _Inputs, data: CheXpertData, layout, size, tolerance: float
) -> None:
    """The saved model must give what training measured, on a few validation images."""
    paths = data.paths[:4]
    images = np.stack([load_for_model(p, size) for p in paths])
    from_served = np.asarray(served.predict(images, verbose=0))
    expected = layout.probabilities(
        inputs.logits(trained, inputs.prepare(data.select(np.arange(len(paths)))))
    )
    if not np.allclose(from_served, expected, atol=tolerance):
        raise RuntimeError(
            "exported model disagrees with the trained network "
            f"(max difference {np.abs(from_served - expected).max():.2e})"
        )


def _card(config, plan, weights, train_data, validation_data, validation_source, report):
    from chestx import __version__

    dataset_name = config.dataset_name or Path(config.data).name
    return ModelCard(
        name="chestx-densenet121" + ("-demo" if config.demo else ""),
        version=f"{__version__}+{now_iso()[:10]}",
        created=now_iso(),
        demo=config.demo,
        observations=list(OBSERVATIONS),
        image_size=config.image_size,
        preprocessing=PREPROCESSING,
        policy=plan.describe(),
        start_weights="random"
        if weights is None
        else ("imagenet" if weights == "imagenet" else Path(weights).name),
        fine_tuned_backbone=config.fine_tune,
        dataset={
            "name": dataset_name,
            "train_images": len(train_data),
            "train_patients": int(len(np.unique(train_data.patients))),
            "validation_images": len(validation_data),
            "validation_source": validation_source,
            "frontal_only": config.frontal_only,
        },
        training={
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "seed": config.seed,
            "optimizer": "Adam",
            "precision": "mixed_float16" if config.mixed_precision else "float32",
        },
        validation=report.to_dict() | {"source": validation_source},
        packages=package_versions(),
    )
