"""Reading CheXpert's train.csv / valid.csv (v1.0 and v1.0-small) with clear label handling.

Labels stay raw here (1, 0, -1, NaN for blank); ``chestx.policies`` turns them into targets.
Every problem with a CSV is reported with its line number and column, the way a person would
look for it in a spreadsheet, not as a pandas traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from chestx.errors import ConfigError, DataError
from chestx.labels import CSV_COLUMNS, LABEL_VALUES, OBSERVATIONS

VIEWS = frozenset({"Frontal", "Lateral"})
PROJECTIONS = frozenset({"AP", "PA", "LL", "RL", ""})


@dataclass(frozen=True)
class CheXpertData:
    """Images of one CSV: a metadata frame and the raw (N, 14) label array, row for row.

    ``frame`` has the columns path (absolute), patient, study, sex, age, view and projection.
    """

    frame: pd.DataFrame
    labels: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.frame) != len(self.labels):
            raise ValueError("frame and labels must have the same number of rows")

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def paths(self) -> list[str]:
        return self.frame["path"].tolist()

    @property
    def patients(self) -> np.ndarray:
        return self.frame["patient"].to_numpy()

    @property
    def studies(self) -> np.ndarray:
        return self.frame["study"].to_numpy()

    def select(self, rows: np.ndarray) -> CheXpertData:
        """A subset by boolean mask or integer positions."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return CheXpertData(
            self.frame.iloc[rows].reset_index(drop=True), self.labels[rows], self.source
        )

    def filter(
        self, frontal_only: bool = False, projections: Iterable[str] | None = None
    ) -> CheXpertData:
        """Keep frontal views only, and/or the given AP/PA values (e.g. {"PA"})."""
        keep = np.ones(len(self), dtype=bool)
        if frontal_only:
            keep &= (self.frame["view"] == "Frontal").to_numpy()
        if projections is not None:
            wanted = {p.upper() for p in projections}
            keep &= self.frame["projection"].isin(wanted).to_numpy()
        return self.select(keep)

    def split_by_patient(self, fraction: float, seed: int = 0) -> tuple[CheXpertData, CheXpertData]:
        """Split into (rest, held_out) with about ``fraction`` of the patients held out.

        Patients, not images, are drawn, so no patient's images end up on both sides.
        """
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"--val-split {fraction} must be between 0 and 1 (e.g. 0.1)")
        patients = np.sort(self.frame["patient"].unique())
        rng = np.random.default_rng(seed)
        held = rng.permutation(patients)[: max(1, round(fraction * len(patients)))]
        in_held = self.frame["patient"].isin(held).to_numpy()
        return self.select(~in_held), self.select(in_held)

    def label_counts(self) -> pd.DataFrame:
        """Counts of 1, -1, 0 and blank for each observation (rows) as in CHEXPERT.md."""
        raw = self.labels
        return pd.DataFrame(
            {
                "1.0": (raw == 1).sum(axis=0),
                "-1.0": (raw == -1).sum(axis=0),
                "0.0": (raw == 0).sum(axis=0),
                "blank": np.isnan(raw).sum(axis=0),
            },
            index=list(OBSERVATIONS),
        )


def _dataset_base(csv_path: Path, root: Path | None) -> Path:
    """The folder that CSV paths resolve against.

    CheXpert's paths begin with the dataset folder's own name (``CheXpert-v1.0-small/train/...``),
    so they resolve against that folder's parent.
    """
    return (root or csv_path.parent).resolve()


def _refuse_first(csv_name: str, column: str, bad, why) -> None:
    """Raise DataError at the first row where ``bad`` holds, naming its line and column.

    Line numbers count the header as line 1, as a spreadsheet shows them; ``why(row)`` says what
    is wrong with that row's value.
    """
    bad = np.asarray(bad, dtype=bool)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{csv_name} line {row + 2}, column {column!r}: {why(row)}")


def _resolve_paths(base: Path, raw_paths: pd.Series, csv_name: str) -> list[str]:
    """Absolute image paths; a path that is absolute or climbs out with '..' is refused."""
    relative = raw_paths.str.replace("\\", "/", regex=False)
    outside = relative.str.startswith("/") | relative.str.contains(r"(?:^|/)\.\.(?:/|$)")
    outside |= relative.str.match(r"^[A-Za-z]:")
    _refuse_first(
        csv_name,
        "Path",
        outside,
        lambda row: f"{raw_paths.iloc[row]!r} points outside the dataset folder",
    )
    # CheXpert's paths start with the dataset folder's own name: resolve those against its parent.
    own_name = relative.str.startswith(base.name + "/")
    anchor = np.where(own_name.to_numpy(), str(base.parent), str(base))
    return [f"{a}/{r}" for a, r in zip(anchor, relative, strict=True)]


def _parse_labels(table: pd.DataFrame, csv_name: str) -> np.ndarray:
    labels = np.full((len(table), len(OBSERVATIONS)), np.nan, dtype=np.float32)
    for j, column in enumerate(OBSERVATIONS):
        text = table[column].fillna("").astype(str).str.strip()
        blank = text == ""
        values = pd.to_numeric(text.where(~blank), errors="coerce")
        bad = ~blank & (values.isna() | ~values.isin(LABEL_VALUES))
        _refuse_first(
            csv_name,
            column,
            bad,
            lambda row: f"label {text.iloc[row]!r} is not one of 1.0, 0.0, -1.0 or blank",  # noqa: B023
        )
        labels[:, j] = values.to_numpy(dtype=np.float32, na_value=np.nan)
    return labels


def _check_field_counts(csv_path: Path, name: str, expected: int) -> None:
    """pandas pads a row with too few fields with blanks: refuse it, naming its line."""
    import csv
    import gzip

    opener = gzip.open if csv_path.suffix == ".gz" else open
    with opener(csv_path, "rt", newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for row in reader:
            if row and len(row) != expected:
                raise DataError(
                    f"{name} line {reader.line_num}: {len(row)} fields where the header has "
                    f"{expected} (a broken or cut-off row)"
                )


def read_chexpert(
    csv_path: str | Path, root: str | Path | None = None, check_files: bool = True
) -> CheXpertData:
    """Read CheXpert's train.csv or valid.csv.

    ``root`` is the dataset folder (default: the CSV's folder). With ``check_files`` every image
    must exist; turn it off to study a CSV without its images.
    """
    csv_path = Path(csv_path)
    name = csv_path.name
    if not csv_path.is_file():
        raise DataError(
            f"{csv_path} not found: point --data at the CheXpert-v1.0-small folder "
            "(or make a small one with `chestx demo-data DIR`)"
        )
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_values=[])
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        raise DataError(f"{name} can't be read as CSV: {error}".splitlines()[0]) from None
    missing = [c for c in CSV_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(
            f"{name} is missing column(s) {', '.join(repr(c) for c in missing)}; "
            f"CheXpert's CSVs have: {', '.join(CSV_COLUMNS)}"
        )
    _check_field_counts(csv_path, name, len(table.columns))
    labels = _parse_labels(table, name)

    base = _dataset_base(csv_path, Path(root) if root else None)
    raw_paths = table["Path"].str.strip()
    _refuse_first(name, "Path", raw_paths == "", lambda row: "empty path")
    paths = _resolve_paths(base, raw_paths, name)
    if check_files:
        for i, path in enumerate(paths):
            if not os.path.isfile(path):
                raise DataError(
                    f"{name} line {i + 2}, column 'Path': image {path} does not exist "
                    "(is --data the dataset folder that holds this CSV?)"
                )

    views = table["Frontal/Lateral"].str.strip()
    _refuse_first(
        name,
        "Frontal/Lateral",
        ~views.isin(VIEWS),
        lambda row: f"{views.iloc[row]!r} is not Frontal or Lateral",
    )
    projections = table["AP/PA"].str.strip().str.upper()
    _refuse_first(
        name,
        "AP/PA",
        ~projections.isin(PROJECTIONS),
        lambda row: f"{projections.iloc[row]!r} is not AP, PA, LL, RL or blank",
    )
    ages = pd.to_numeric(table["Age"].str.strip(), errors="coerce")
    _refuse_first(
        name,
        "Age",
        ages.isna() & (table["Age"].str.strip() != ""),
        lambda row: f"{table['Age'].iloc[row]!r} is not a number",
    )
    _refuse_first(
        name,
        "Age",
        (ages < 0) | (ages > 150),
        lambda row: f"{table['Age'].iloc[row]!r} is not an age (0 to 150)",
    )

    # .../patient00001/study1/view1_frontal.jpg: the two folders above the file.
    folders = raw_paths.str.replace("\\", "/", regex=False).str.rsplit("/", n=3)
    _refuse_first(
        name,
        "Path",
        folders.str.len() < 3,
        lambda row: (
            f"{raw_paths.iloc[row]!r} is not <folder>/patientNNNNN/studyN/<image>, as in CheXpert"
        ),
    )
    patient = folders.str[-3]
    study = folders.str[-3] + "/" + folders.str[-2]
    frame = pd.DataFrame(
        {
            "path": paths,
            "patient": patient.to_numpy(),
            "study": study.to_numpy(),
            "sex": table["Sex"].str.strip().to_numpy(),
            "age": ages.to_numpy(),
            "view": views.to_numpy(),
            "projection": projections.to_numpy(),
        }
    )
    return CheXpertData(frame, labels, source=str(csv_path))
