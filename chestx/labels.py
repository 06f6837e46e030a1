"""The 14 CheXpert observations and the tasks built on them.

The order is CheXpert's own column order: every array of 14 values in ChestX follows it.
"""

from __future__ import annotations

OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

#: The five competition tasks (Irvin et al. 2019): results are compared by their mean AUC.
COMPETITION_TASKS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)

#: Raw label values in CheXpert's CSVs. Blank cells are read as NaN ("not mentioned").
POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0
LABEL_VALUES: frozenset[float] = frozenset({POSITIVE, NEGATIVE, UNCERTAIN})

#: The metadata columns that precede the labels in train.csv and valid.csv.
META_COLUMNS: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
CSV_COLUMNS: tuple[str, ...] = META_COLUMNS + OBSERVATIONS


def index_of(observation: str) -> int:
    """Position of an observation in OBSERVATIONS, with a readable error for a typo."""
    try:
        return OBSERVATIONS.index(observation)
    except ValueError:
        raise ValueError(
            f"unknown observation {observation!r}; expected one of: {', '.join(OBSERVATIONS)}"
        ) from None


COMPETITION_INDICES: tuple[int, ...] = tuple(index_of(name) for name in COMPETITION_TASKS)
