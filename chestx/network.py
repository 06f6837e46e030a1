"""The network: DenseNet121 backbone and the original project's classification head.

Read top to bottom: ``backbone`` builds DenseNet121 from the chosen starting weights, ``head``
stacks the dense layers on its pooled features, ``classifier`` joins them into the model that is
saved as model.h5 (14 sigmoid outputs). Training builds the same layers with a wider final layer
(``TargetLayout.num_logits``) and ``fold_into_classifier`` turns that into the 14-way sigmoid.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from chestx.errors import ConfigError, ModelError
from chestx.labels import OBSERVATIONS

DEFAULT_IMAGE_SIZE = 224
PAPER_IMAGE_SIZE = 320
FEATURE_DIM = 1024  # DenseNet121's pooled feature width
LAST_CONV_LAYER = "relu"  # DenseNet121's final activation: the map Grad-CAM explains
OUTPUT_LAYER = "predictions"
IMAGENET_WEIGHTS_FILE = "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"

#: (kind, arguments) of the head layers after global average pooling, from the original project.
HEAD = (
    ("dropout", 0.25),
    ("dense", 128),
    ("dropout", 0.5),
    ("dense", 64),
    ("dropout", 0.5),
)


def weights_spec(weights: str | None) -> str | None:
    """Normalise --weights: 'imagenet', None (random init) or an existing local file."""
    if weights is None or str(weights).lower() in ("none", "random", ""):
        return None
    if str(weights).lower() == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelError(
            f"weights file {path} not found: pass --weights imagenet (downloads once), "
            "--weights none, or the path of a DenseNet121 'notop' .h5 file"
        )
    return str(path.resolve())


def weights_id(weights: str | None, seed: int) -> str:
    """A short key for what the backbone starts from, used by the feature cache."""
    if weights is None:
        return f"random-bncal16-seed{seed}"
    if weights == "imagenet":
        return "imagenet"
    digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:16]
    return f"file-{digest}"


def _check_image_size(image_size: int) -> None:
    if not 32 <= int(image_size) <= 1024:
        raise ConfigError(f"image size {image_size} is out of range (32 to 1024; 224 or 320)")


def backbone(image_size: int, weights: str | None, seed: int = 0, calibrate: bool = True):
    """DenseNet121 without its top, as a flat functional model over (size, size, 3) inputs.

    ``calibrate=False`` skips the batch-norm calibration of random weights: for a shell whose
    weights are about to be overwritten.
    """
    import keras

    _check_image_size(image_size)
    keras.utils.set_random_seed(seed)
    try:
        model = keras.applications.DenseNet121(
            include_top=False, weights=weights, input_shape=(image_size, image_size, 3)
        )
    except Exception as error:  # download failures surface as many exception types
        if weights == "imagenet":
            raise ModelError(
                "ImageNet weights for DenseNet121 could not be downloaded "
                f"({type(error).__name__}). Put {IMAGENET_WEIGHTS_FILE} in ~/.keras/models/ "
                "or pass --weights FILE (or --weights none to start from random weights)"
            ) from None
        raise ModelError(f"could not load DenseNet121 weights from {weights}: {error}") from None
    if weights is None and calibrate:
        _calibrate_batch_norm(model, image_size, seed)
    return model


def _calibrate_batch_norm(model, image_size: int, seed: int) -> None:
    """Give a randomly initialised backbone batch-norm statistics from real-looking input.

    Fresh batch-norm layers assume zero mean and unit variance everywhere, so the activations of a
    random DenseNet121 shrink layer after layer and its pooled features end up around 1e-3, too
    small for the head to learn from. One pass in training mode with momentum 0 over generated
    chests sets each layer's statistics to those of its actual input. Deterministic per seed, and
    independent of the training data, so cached features stay valid.
    """
    import keras

    from chestx.data.synthetic import calibration_images

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(calibration_images(16, image_size, seed), training=True)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum


def head(features, num_outputs: int, activation: str | None):
    """The head layers applied to pooled features; the last layer is named 'predictions'."""
    import keras

    x = features
    for number, (kind, argument) in enumerate(HEAD, start=1):
        if kind == "dropout":
            x = keras.layers.Dropout(argument, name=f"head_dropout_{number}")(x)
        else:
            x = keras.layers.Dense(argument, activation="elu", name=f"head_dense_{number}")(x)
    return keras.layers.Dense(num_outputs, activation=activation, name=OUTPUT_LAYER)(x)


def classifier(
    image_size: int = DEFAULT_IMAGE_SIZE,
    weights: str | None = None,
    num_outputs: int = len(OBSERVATIONS),
    activation: str | None = "sigmoid",
    seed: int = 0,
    trainable_backbone: bool = False,
    calibrate: bool = True,
):
    """DenseNet121 + pooling + head. With defaults this is the model saved as model.h5."""
    import keras

    base = backbone(image_size, weights, seed, calibrate)
    base.trainable = trainable_backbone
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(base.output)
    return keras.Model(base.input, head(pooled, num_outputs, activation), name="chestx_densenet121")


def head_on_features(num_outputs: int, seed: int = 0):
    """The head alone, over precomputed pooled features: training with a frozen backbone."""
    import keras

    keras.utils.set_random_seed(seed)
    features = keras.Input((FEATURE_DIM,), name="features")
    return keras.Model(features, head(features, num_outputs, None), name="chestx_head")


def pooled_features(image_size: int, weights: str | None, seed: int = 0):
    """DenseNet121 with global average pooling: what the feature cache stores per image."""
    import keras

    base = backbone(image_size, weights, seed)
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(base.output)
    return keras.Model(base.input, pooled, name="densenet121_features")


def fold_into_classifier(trained, target, fold: np.ndarray, fold_bias: np.ndarray) -> None:
    """Copy a trained network's weights into ``target``, folding the logits into 14 sigmoids.

    ``trained`` may be a head over features or a whole network; layers are matched by name, so
    backbone layers are copied only when ``trained`` has them. The final layer becomes
    W @ fold, b @ fold + fold_bias (see ``TargetLayout.fold_matrix``).
    """
    trained_layers = {layer.name: layer for layer in trained.layers}
    for layer in target.layers:
        source = trained_layers.get(layer.name)
        if source is None or not layer.weights:
            continue
        if layer.name == OUTPUT_LAYER:
            kernel, bias = source.get_weights()
            layer.set_weights([kernel @ fold, bias @ fold + fold_bias])
        else:
            layer.set_weights(source.get_weights())
