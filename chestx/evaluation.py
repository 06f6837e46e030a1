"""Per-observation AUC with bootstrap intervals, the 5-task mean, study-level results, reports.

An observation without both positives and negatives has no AUC: it is reported as undefined
(None / empty), never as 0.5 or 0, and left out of the means.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from chestx.labels import COMPETITION_TASKS, OBSERVATIONS

BOOTSTRAP_SAMPLES = 1000


@dataclass(frozen=True)
class ObservationResult:
    observation: str
    auc: float | None
    ci_low: float | None
    ci_high: float | None
    positives: int
    negatives: int


@dataclass
class EvaluationReport:
    level: str  # "image" or "study"
    results: list[ObservationResult]
    mean_competition_auc: float | None
    mean_auc: float | None
    count: int
    extra: dict = field(default_factory=dict)

    def auc(self, observation: str) -> float | None:
        return next(r.auc for r in self.results if r.observation == observation)

    def to_dict(self) -> dict:
        return {
            "level": self.level,
            "count": self.count,
            "mean_auc_competition_tasks": self.mean_competition_auc,
            "mean_auc_all_with_positives": self.mean_auc,
            "observations": {
                r.observation: {
                    "auc": r.auc,
                    "ci95": None if r.auc is None else [r.ci_low, r.ci_high],
                    "positives": r.positives,
                    "negatives": r.negatives,
                    "competition_task": r.observation in COMPETITION_TASKS,
                }
                for r in self.results
            },
            **self.extra,
        }


def binary_truth(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Truth for AUC from raw labels: blank counts as negative, uncertain rows are left out."""
    raw = np.asarray(raw, dtype=np.float32)
    valid = raw != -1
    return (raw == 1).astype(np.int8), valid


def auc_or_none(truth: np.ndarray, scores: np.ndarray) -> float | None:
    if truth.size == 0 or truth.min() == truth.max():
        return None
    return float(roc_auc_score(truth, scores))


def bootstrap_ci(
    truth: np.ndarray, scores: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[float | None, float | None]:
    """95% percentile interval of the AUC over resamples (those lacking a class are skipped).

    All resamples are ranked at once (Mann-Whitney form of the AUC, ties as average ranks),
    which is about a hundred times faster than calling roc_auc_score in a loop.
    """
    from scipy.stats import rankdata

    if samples <= 0:
        return None, None
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(truth), size=(samples, len(truth)))
    labels = truth[rows].astype(bool)
    ranks = rankdata(scores[rows], axis=1)
    positives = labels.sum(axis=1)
    negatives = labels.shape[1] - positives
    defined = (positives > 0) & (negatives > 0)
    if defined.sum() < samples // 2:
        return None, None
    rank_sum = np.where(labels, ranks, 0.0).sum(axis=1)
    aucs = (rank_sum - positives * (positives + 1) / 2.0)[defined] / (
        positives[defined] * negatives[defined]
    )
    low, high = np.percentile(aucs, [2.5, 97.5])
    return float(low), float(high)


def mean_competition_auc(raw: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Mean AUC over the five competition tasks (None if none is defined): checkpoint choice."""
    values = []
    for name in COMPETITION_TASKS:
        j = OBSERVATIONS.index(name)
        truth, valid = binary_truth(raw[:, j])
        value = auc_or_none(truth[valid], probabilities[valid, j])
        if value is not None:
            values.append(value)
    return float(np.mean(values)) if values else None


def evaluate(
    raw: np.ndarray,
    probabilities: np.ndarray,
    level: str = "image",
    bootstrap: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> EvaluationReport:
    """AUC, interval and counts for each observation, and the two means."""
    raw = np.asarray(raw, dtype=np.float32)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    results = []
    for j, name in enumerate(OBSERVATIONS):
        truth, valid = binary_truth(raw[:, j])
        t, s = truth[valid], probabilities[valid, j]
        value = auc_or_none(t, s)
        low, high = bootstrap_ci(t, s, bootstrap, seed) if value is not None else (None, None)
        results.append(
            ObservationResult(name, value, low, high, int(t.sum()), int(len(t) - t.sum()))
        )
    defined = [r.auc for r in results if r.auc is not None]
    tasks = [r.auc for r in results if r.observation in COMPETITION_TASKS and r.auc is not None]
    return EvaluationReport(
        level=level,
        results=results,
        mean_competition_auc=float(np.mean(tasks)) if tasks else None,
        mean_auc=float(np.mean(defined)) if defined else None,
        count=len(raw),
    )


def study_level(
    studies: np.ndarray, raw: np.ndarray, probabilities: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One row per study: the maximum probability over its views, as in the CheXpert paper.

    CheXpert's labels come from the study's report, so all views of a study share them.
    """
    groups = pd.DataFrame({"study": studies}).groupby("study", sort=True).indices.values()
    study_raw = np.stack([raw[rows[0]] for rows in groups])
    study_probabilities = np.stack([probabilities[rows].max(axis=0) for rows in groups])
    return study_raw, study_probabilities


def roc_figure(raw: np.ndarray, probabilities: np.ndarray, path: Path, title: str) -> None:
    """ROC curves of the five competition tasks as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 6), dpi=100)
    for name in COMPETITION_TASKS:
        j = OBSERVATIONS.index(name)
        truth, valid = binary_truth(raw[:, j])
        value = auc_or_none(truth[valid], probabilities[valid, j])
        if value is None:
            axis.plot([], [], label=f"{name} (AUC undefined)")
            continue
        fpr, tpr, _ = roc_curve(truth[valid], probabilities[valid, j])
        axis.plot(fpr, tpr, label=f"{name} (AUC {value:.3f})")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    axis.set(xlabel="False positive rate", ylabel="True positive rate", title=title)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_report(
    image_report: EvaluationReport,
    study_report: EvaluationReport,
    raw: np.ndarray,
    probabilities: np.ndarray,
    out_dir: str | Path,
    meta: dict,
) -> dict[str, Path]:
    """report.json, report.csv and roc.png in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "csv": out / "report.csv", "roc": out / "roc.png"}
    document = {
        **meta,
        "image_level": image_report.to_dict(),
        "study_level": study_report.to_dict(),
    }
    paths["json"].write_text(json.dumps(document, indent=2))
    with open(paths["csv"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["level", "observation", "auc", "ci95_low", "ci95_high", "positives", "negatives"]
        )
        for report in (image_report, study_report):
            for r in report.results:
                writer.writerow(
                    [
                        report.level,
                        r.observation,
                        _cell(r.auc),
                        _cell(r.ci_low),
                        _cell(r.ci_high),
                        r.positives,
                        r.negatives,
                    ]
                )
    roc_figure(raw, probabilities, paths["roc"], meta.get("title", "ROC, competition tasks"))
    return paths


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def format_table(report: EvaluationReport) -> str:
    """A plain-text table for the terminal and the notebook."""
    lines = [f"{'observation':28} {'AUC':>6}  {'95% CI':>15}  {'pos':>5} {'neg':>5}"]
    for r in report.results:
        mark = "*" if r.observation in COMPETITION_TASKS else " "
        auc = "undef" if r.auc is None else f"{r.auc:.3f}"
        ci = "" if r.ci_low is None else f"{r.ci_low:.3f}-{r.ci_high:.3f}"
        counts = f"{r.positives:5d} {r.negatives:5d}"
        lines.append(f"{r.observation:27}{mark} {auc:>6}  {ci:>15}  {counts}")
    mean5 = (
        "undefined" if report.mean_competition_auc is None else f"{report.mean_competition_auc:.3f}"
    )
    mean = "undefined" if report.mean_auc is None else f"{report.mean_auc:.3f}"
    lines.append(
        f"mean AUC, 5 competition tasks (*): {mean5}; all observations with positives: {mean}"
    )
    return "\n".join(lines)
