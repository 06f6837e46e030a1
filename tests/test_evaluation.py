"""AUCs, intervals, undefined observations and study-level maxima."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from chestx.evaluation import bootstrap_ci, evaluate, study_level, write_report
from chestx.labels import OBSERVATIONS


def _labels_and_scores(n=200, seed=0):
    rng = np.random.default_rng(seed)
    raw = rng.choice([0.0, 1.0], size=(n, len(OBSERVATIONS)))
    scores = np.clip(raw * 0.3 + rng.normal(0.35, 0.25, raw.shape), 0, 1)
    return raw, scores


def test_auc_matches_sklearn_and_interval_contains_it():
    raw, scores = _labels_and_scores()
    report = evaluate(raw, scores, bootstrap=300)
    for j, result in enumerate(report.results):
        assert result.auc == pytest.approx(roc_auc_score(raw[:, j], scores[:, j]))
        assert result.ci_low < result.auc < result.ci_high


def test_vectorised_bootstrap_agrees_with_a_plain_loop():
    raw, scores = _labels_and_scores(120, seed=4)
    truth, s = raw[:, 0].astype(int), scores[:, 0]
    low, high = bootstrap_ci(truth, s, samples=400, seed=1)
    rng = np.random.default_rng(1)
    rows = rng.integers(0, len(truth), size=(400, len(truth)))
    plain = [roc_auc_score(truth[r], s[r]) for r in rows]
    assert (low, high) == pytest.approx(tuple(np.percentile(plain, [2.5, 97.5])), abs=1e-9)


def test_observation_without_positives_is_undefined_not_half():
    raw, scores = _labels_and_scores()
    fracture = OBSERVATIONS.index("Fracture")
    raw[:, fracture] = 0.0
    report = evaluate(raw, scores, bootstrap=50)
    result = report.results[fracture]
    assert result.auc is None and result.ci_low is None and result.positives == 0
    defined = [r.auc for r in report.results if r.auc is not None]
    assert report.mean_auc == pytest.approx(np.mean(defined))
    assert len(defined) == 13


def test_uncertain_and_blank_rows_in_evaluation():
    raw = np.array([[1.0], [0.0], [-1.0], [np.nan]] * 5)
    raw = np.repeat(raw, len(OBSERVATIONS), axis=1)
    scores = np.tile(np.array([[0.9], [0.1], [0.0], [0.2]] * 5), (1, len(OBSERVATIONS)))
    result = evaluate(raw, scores, bootstrap=0).results[0]
    assert result.positives == 5 and result.negatives == 10  # uncertain left out, blank negative
    assert result.auc == 1.0


def test_study_level_takes_the_maximum_over_views():
    studies = np.array(["p1/s1", "p1/s1", "p2/s1"])
    raw = np.zeros((3, len(OBSERVATIONS)))
    probabilities = np.zeros((3, len(OBSERVATIONS)))
    probabilities[:, 0] = [0.2, 0.7, 0.4]
    study_raw, study_probabilities = study_level(studies, raw, probabilities)
    assert study_raw.shape == (2, len(OBSERVATIONS))
    assert study_probabilities[:, 0].tolist() == [0.7, 0.4]


def test_report_files(tmp_path):
    raw, scores = _labels_and_scores()
    report = evaluate(raw, scores, bootstrap=20)
    paths = write_report(report, report, raw, scores, tmp_path, {"model": "m"})
    document = json.loads(paths["json"].read_text())
    assert document["image_level"]["observations"]["Edema"]["auc"] == pytest.approx(
        report.auc("Edema")
    )
    assert paths["csv"].read_text().count("\n") == 1 + 2 * len(OBSERVATIONS)
    assert paths["roc"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
