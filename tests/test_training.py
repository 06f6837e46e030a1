"""Training on generated CheXpert-shaped data: it learns, it saves, it reloads, it reproduces."""

import json

import numpy as np
import pytest

from chestx.card import ModelCard
from chestx.data import read_chexpert
from chestx.data.synthetic import make_demo_dataset
from chestx.errors import ConfigError
from chestx.evaluation import mean_competition_auc
from chestx.features import FeatureCache
from chestx.inference import Predictor
from chestx.network import head_on_features
from chestx.policies import TargetLayout, parse_policy
from chestx.training import TrainConfig, train

pytestmark = pytest.mark.slow

SIZE = 128
SETTINGS = dict(image_size=SIZE, batch_size=32, learning_rate=2e-3, weights=None, progress=False)


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """A model trained on 150 generated patients, validated on a patient split of train.csv.

    valid.csv (50 other patients) is never seen in training or checkpoint choice: it is the
    held-out set the AUC is measured on.
    """
    root = make_demo_dataset(tmp_path_factory.mktemp("data"), 150, 50, image_size=160, seed=7)
    work = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        data=root,
        epochs=60,
        val_split=0.2,
        out=work / "model",
        cache_dir=work / "cache",
        **SETTINGS,
    )
    return config, train(config)


def test_learns_the_generated_signs_and_untrained_is_chance(learned, artifacts_dir):
    config, result = learned
    held_out = read_chexpert(config.data / "valid.csv")
    predictor = Predictor(result.model_path)
    trained_auc = mean_competition_auc(held_out.labels, predictor.predict_paths(held_out.paths))

    features = FeatureCache(config.cache_dir, None, SIZE).features(held_out.paths, progress=False)
    layout = TargetLayout(parse_policy(config.policy))
    untrained = [
        mean_competition_auc(
            held_out.labels,
            layout.probabilities(head_on_features(14, seed).predict(features, verbose=0)),
        )
        for seed in range(5)
    ]
    figures = {"trained_mean_auc_5_tasks": trained_auc, "untrained_mean_auc_5_tasks": untrained}
    (artifacts_dir / "training_auc.json").write_text(json.dumps(figures, indent=2))
    print(figures)
    assert trained_auc >= 0.85
    assert abs(np.mean(untrained) - 0.5) < 0.1


def test_reloaded_model_predicts_what_training_measured(learned):
    config, result = learned
    _, validation = read_chexpert(config.data / "train.csv").split_by_patient(0.2, config.seed)
    predictor = Predictor(result.model_path)
    reloaded = predictor.predict_paths(validation.paths)
    assert reloaded == pytest.approx(result.validation_probabilities, abs=1e-4)
    again = Predictor(result.model_path).predict_paths(validation.paths[:16])
    assert np.array_equal(again, reloaded[:16])


def test_model_card_describes_the_run(learned):
    config, result = learned
    card = ModelCard.load(result.model_path.with_name("model.json"))
    assert card.demo is False and card.image_size == SIZE and card.policy == "U-Ones"
    assert card.start_weights == "random"
    assert card.dataset["train_images"] + card.dataset["validation_images"] == len(
        read_chexpert(config.data / "train.csv")
    )
    assert card.mean_competition_auc == pytest.approx(
        max(h["val_mean_auc"] for h in result.history)
    )
    assert set(card.validation["observations"]) == set(card.observations)
    assert "tensorflow-cpu" in card.packages or "tensorflow" in card.packages


def test_features_are_cached_across_runs_and_training_reproduces(learned, tmp_path):
    config, first = learned
    again = [
        train(
            TrainConfig(
                data=config.data,
                epochs=2,
                val_split=0.2,
                out=tmp_path / f"m{i}",
                cache_dir=config.cache_dir,
                **SETTINGS,
            )
        )
        for i in range(2)
    ]
    assert [r.features_computed for r in again] == [0, 0]
    assert first.features_computed > 0
    assert np.array_equal(again[0].validation_probabilities, again[1].validation_probabilities)


def test_mixed_policies_train_and_fold_to_fourteen_sigmoids(learned, tmp_path):
    config, _ = learned
    result = train(
        TrainConfig(
            data=config.data,
            policy="paper",
            epochs=3,
            val_split=0.2,
            out=tmp_path,
            cache_dir=config.cache_dir,
            **SETTINGS,
        )
    )
    card = ModelCard.load(tmp_path / "model.json")
    assert card.policy["Cardiomegaly"] == "U-MultiClass"
    assert card.policy["Consolidation"] == "U-SelfTrained"
    # Two rounds (U-Ignore, then relabelled), each with its epochs.
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 1, 2, 3]
    probabilities = Predictor(result.model_path).predict_paths(
        read_chexpert(config.data / "valid.csv").paths[:4]
    )
    assert probabilities.shape == (4, 14) and ((probabilities > 0) & (probabilities < 1)).all()


def test_fine_tuning_trains_the_backbone_on_images_in_mixed_precision(tmp_path):
    """Fine-tuning as on a GPU. (In float32 the only difference is no dtype policy is set; one
    such run costs 3 minutes on the CI machine, so it is not repeated.)"""
    import keras

    root = make_demo_dataset(tmp_path / "data", 6, 4, image_size=64, seed=2)
    result = train(
        TrainConfig(
            data=root,
            epochs=1,
            image_size=32,
            batch_size=16,
            learning_rate=1e-4,
            weights=None,
            fine_tune=True,
            mixed_precision=True,
            out=tmp_path / "model",
            progress=False,
        )
    )
    assert result.features_computed == 0
    card = ModelCard.load(tmp_path / "model" / "model.json")
    assert card.fine_tuned_backbone is True
    assert card.training["precision"] == "mixed_float16"
    assert len(result.history) == 1
    # The saved model computes in float32, and Keras's global policy is back.
    assert keras.config.dtype_policy().name == "float32"
    saved = keras.models.load_model(tmp_path / "model" / "model.h5", compile=False)
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}


def test_mixed_precision_needs_fine_tuning(tmp_path):
    root = make_demo_dataset(tmp_path / "data", 4, 2, image_size=64, seed=2)
    with pytest.raises(ConfigError, match="mixed precision applies to --fine-tune"):
        train(TrainConfig(data=root, weights=None, mixed_precision=True, out=tmp_path / "m"))
