"""The command line: help everywhere, one-line errors, and each command doing its job."""

import json
import subprocess
import sys

import pytest

from chestx.cli import main
from chestx.labels import OBSERVATIONS


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chestx", *args], capture_output=True, text=True, timeout=300
    )


def test_help_on_every_command():
    for command in ("", "train", "evaluate", "predict", "demo-data", "demo-model"):
        result = _run(*([command] if command else []), "--help")
        assert result.returncode == 0, result.stderr
        assert "usage: chestx" in result.stdout


def test_errors_end_in_one_line_without_traceback(tmp_path):
    result = _run("train", "--data", str(tmp_path / "nowhere"), "--weights", "none")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("chestx: error:")]
    assert len(lines) == 1 and "train.csv not found" in lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--policy", "U-Perhaps"], "unknown policy"),
        (["--weights", "/nope/weights.h5"], "weights file /nope/weights.h5 not found"),
        (["--image-size", "8", "--weights", "none"], "image size 8 is out of range"),
    ],
)
def test_bad_options_are_named(demo_dataset, tmp_path, capsys, args, message):
    code = main(["train", "--data", str(demo_dataset), "--out", str(tmp_path), *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_missing_model_says_how_to_get_one(tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path / "model.h5"), "x.png"]) == 2
    assert "chestx demo-model" in capsys.readouterr().err


def test_demo_data_writes_chexpert_layout(tmp_path, capsys):
    assert main(["demo-data", str(tmp_path), "--train-patients", "3", "--valid-patients", "2"]) == 0
    root = tmp_path / "CheXpert-v1.0-small"
    assert (root / "train.csv").is_file() and (root / "valid.csv").is_file()
    assert list((root / "train").glob("patient*/study*/view1_frontal.jpg"))


def test_predict_json_on_real_images_and_a_bad_file(tiny_model, cxr_dir, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    images = [
        str(cxr_dir / "nih" / "00000001_000.png"),
        str(next((cxr_dir / "dicom").glob("*.dcm"))),
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--model", str(tiny_model), "--json", *images, str(text)])
    assert exit_info.value.code == 2  # one file failed
    document = json.loads(capsys.readouterr().out)
    for image in images:
        probabilities = document["results"][image]["probabilities"]
        assert list(probabilities) == list(OBSERVATIONS)
        assert all(0.0 <= p <= 1.0 for p in probabilities.values())
    assert "not an image" in document["results"][str(text)]["error"]


def test_predict_table_says_demo(tiny_model, cxr_dir, capsys):
    assert (
        main(["predict", "--model", str(tiny_model), str(cxr_dir / "nih" / "00000001_000.png")])
        == 0
    )
    out = capsys.readouterr().out
    assert "DEMO MODEL" in out and "Pleural Effusion" in out


def test_evaluate_writes_reports(tiny_model, demo_dataset, tmp_path, capsys):
    out = tmp_path / "reports"
    code = main(
        [
            "evaluate",
            "--model",
            str(tiny_model),
            "--data",
            str(demo_dataset / "valid.csv"),
            "--out",
            str(out),
            "--bootstrap",
            "100",
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["image_level"]["count"] > report["study_level"]["count"]  # laterals fold in
    assert (out / "roc.png").stat().st_size > 1000
    assert "study level" in capsys.readouterr().out
