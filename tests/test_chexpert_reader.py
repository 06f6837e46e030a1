"""The CheXpert reader on the real train.csv (no images) and on broken CSVs."""

import gzip
import shutil

import numpy as np
import pytest

from chestx.data import read_chexpert
from chestx.errors import DataError
from chestx.labels import CSV_COLUMNS, OBSERVATIONS

# Figures from ../shared/CHEXPERT.md: (1.0, -1.0, 0.0, blank) per observation.
EXPECTED_COUNTS = {
    "No Finding": (22381, 0, 0, 201033),
    "Cardiomegaly": (27000, 8087, 11116, 177211),
    "Edema": (52246, 12984, 20726, 137458),
    "Consolidation": (14783, 27742, 28097, 152792),
    "Atelectasis": (33376, 33739, 1328, 154971),
    "Pleural Effusion": (86187, 11628, 35396, 90203),
    "Support Devices": (116001, 1079, 6137, 100197),
}


@pytest.fixture(scope="module")
def real_train(tmp_path_factory, chexpert_csv_gz):
    folder = tmp_path_factory.mktemp("real") / "CheXpert-v1.0-small"
    folder.mkdir()
    with gzip.open(chexpert_csv_gz, "rb") as source, open(folder / "train.csv", "wb") as target:
        shutil.copyfileobj(source, target)
    return read_chexpert(folder / "train.csv", check_files=False)


def test_real_train_csv_counts(real_train):
    frame = real_train.frame
    assert len(real_train) == 223_414
    assert frame["view"].value_counts().to_dict() == {"Frontal": 191_027, "Lateral": 32_387}
    assert frame["projection"].value_counts().to_dict() == {
        "AP": 161_590,
        "": 32_387,
        "PA": 29_420,
        "LL": 16,
        "RL": 1,
    }
    assert frame["patient"].nunique() == 64_540
    counts = real_train.label_counts()
    for observation, expected in EXPECTED_COUNTS.items():
        assert tuple(counts.loc[observation]) == expected


def test_paths_resolve_against_the_dataset_folders_parent(real_train):
    first = real_train.paths[0]
    assert first.endswith("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg")
    assert first.count("CheXpert-v1.0-small") == 1
    assert real_train.frame.loc[0, "study"] == "patient00001/study1"


def test_filters(real_train):
    assert len(real_train.filter(frontal_only=True)) == 191_027
    assert len(real_train.filter(projections={"PA"})) == 29_420
    assert len(real_train.filter(frontal_only=True, projections={"AP", "PA"})) == 191_010


def test_patient_split_has_no_patient_on_both_sides(real_train):
    rest, held = real_train.split_by_patient(0.1, seed=3)
    assert len(rest) + len(held) == len(real_train)
    assert not set(rest.patients) & set(held.patients)
    share = len(set(held.patients)) / 64_540
    assert share == pytest.approx(0.1, abs=0.001)
    again_rest, again_held = real_train.split_by_patient(0.1, seed=3)
    assert again_held.paths == held.paths  # reproducible from the seed


def _write_csv(folder, rows, columns=CSV_COLUMNS):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [",".join(columns)] + [",".join(r) for r in rows]
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    return folder / "train.csv"


def _row(path="CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", label="1.0"):
    return [path, "Female", "50", "Frontal", "AP"] + [label] + [""] * (len(OBSERVATIONS) - 1)


def test_missing_columns_are_named(tmp_path):
    columns = [c for c in CSV_COLUMNS if c not in ("Edema", "AP/PA")]
    csv = _write_csv(tmp_path / "CheXpert-v1.0-small", [], columns)
    with pytest.raises(DataError, match=r"missing column\(s\) 'AP/PA', 'Edema'"):
        read_chexpert(csv, check_files=False)


def test_unknown_label_names_line_and_column(tmp_path):
    rows = [_row(), _row(label="2.0")]
    csv = _write_csv(tmp_path / "CheXpert-v1.0-small", rows)
    with pytest.raises(DataError, match=r"line 3, column 'No Finding': label '2.0'"):
        read_chexpert(csv, check_files=False)


def test_missing_image_names_line(tmp_path):
    csv = _write_csv(tmp_path / "CheXpert-v1.0-small", [_row()])
    with pytest.raises(DataError, match=r"line 2, column 'Path': image .* does not exist"):
        read_chexpert(csv)


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "a/../../x.jpg"])
def test_paths_outside_the_dataset_are_refused(tmp_path, path):
    csv = _write_csv(tmp_path / "CheXpert-v1.0-small", [_row(path=path)])
    with pytest.raises(DataError, match="line 2, column 'Path'.*outside the dataset folder"):
        read_chexpert(csv, check_files=False)


def test_bad_view_and_age_are_named(tmp_path):
    row = _row()
    row[3] = "Oblique"
    csv = _write_csv(tmp_path / "a" / "CheXpert-v1.0-small", [row])
    with pytest.raises(DataError, match="line 2, column 'Frontal/Lateral'"):
        read_chexpert(csv, check_files=False)
    row = _row()
    row[2] = "old"
    csv = _write_csv(tmp_path / "b" / "CheXpert-v1.0-small", [row])
    with pytest.raises(DataError, match="line 2, column 'Age'"):
        read_chexpert(csv, check_files=False)


def test_missing_csv_says_how_to_fix(tmp_path):
    with pytest.raises(DataError, match="demo-data"):
        read_chexpert(tmp_path / "train.csv")


def test_generated_dataset_has_chexperts_layout(demo_dataset):
    train = read_chexpert(demo_dataset / "train.csv")  # every image exists
    valid = read_chexpert(demo_dataset / "valid.csv")
    assert demo_dataset.name == "CheXpert-v1.0-small"
    assert set(train.frame["view"]) == {"Frontal", "Lateral"}
    assert set(train.frame["sex"]) == {"Male", "Female"}
    raw = train.labels
    assert (raw == -1).any() and np.isnan(raw).any() and (raw == 1).any() and (raw == 0).any()
    # Like CheXpert's valid.csv: no uncertain and no blank labels.
    assert not (valid.labels == -1).any() and not np.isnan(valid.labels).any()
    assert not set(train.patients) & set(valid.patients)
    # No Finding is 1 exactly when no pathology (Support Devices aside) is positive or uncertain.
    pathology = raw[:, 1:13]
    finding = ((pathology == 1) | (pathology == -1)).any(axis=1)
    assert ((raw[:, 0] == 1) == ~finding).all()


def _write_lines(folder, lines):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.csv").write_text("\n".join([",".join(CSV_COLUMNS), *lines]) + "\n")
    return folder / "train.csv"


BROKEN_ROWS = {
    # name: (the data lines, what the refusal must say)
    "cut-off row": ([",".join(_row()), ",".join(_row()[:4])], r"line 3: 4 fields where"),
    "row with an extra field": ([",".join(_row()), ",".join([*_row(), "x"])], r"line 3, saw 20"),
    "unclosed quote": ([",".join(_row()), '"CheXpert-v1.0-small/a.jpg,Female'], r"row 2"),
    "label that is a word": ([",".join(_row(label="yes"))], r"line 2, column 'No Finding'"),
    "label out of range": ([",".join(_row(label="3"))], r"line 2, column 'No Finding'"),
    "age that is a word": ([",".join(_row()).replace(",50,", ",fifty,")], r"line 2, column 'Age'"),
    "negative age": ([",".join(_row()).replace(",50,", ",-4,")], r"line 2, column 'Age'"),
    "path without folders": ([",".join(_row(path="x.jpg"))], r"line 2, column 'Path'"),
    "windows path outside": (
        [",".join(_row(path="..\\..\\etc\\passwd"))],
        r"line 2, column 'Path'.*outside the dataset folder",
    ),
    "empty path": ([",".join(_row(path=""))], r"line 2, column 'Path': empty path"),
}


@pytest.mark.parametrize("name", BROKEN_ROWS)
def test_broken_rows_are_refused_with_the_row_named(tmp_path, name):
    lines, message = BROKEN_ROWS[name]
    csv = _write_lines(tmp_path / "CheXpert-v1.0-small", lines)
    with pytest.raises(DataError, match=message):
        read_chexpert(csv, check_files=False)


def test_a_csv_that_is_not_text_is_refused(tmp_path):
    folder = tmp_path / "CheXpert-v1.0-small"
    folder.mkdir()
    (folder / "train.csv").write_bytes(",".join(CSV_COLUMNS).encode() + b"\n\xff\xfe\x00\x01")
    with pytest.raises(DataError, match="can't be read as CSV"):
        read_chexpert(folder / "train.csv", check_files=False)
