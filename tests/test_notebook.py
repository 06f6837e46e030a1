"""The training notebook runs from start to end on generated data, so it can't rot."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "train_chexpert.ipynb"

pytestmark = pytest.mark.slow


def test_notebook_trains_evaluates_and_saves(demo_dataset, tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    parameters.source = "\n".join(
        [
            f"DATA_DIR = {str(demo_dataset)!r}",
            "POLICY = 'U-MultiClass'",
            "IMAGE_SIZE = 64",
            "EPOCHS = 2",
            "BATCH_SIZE = 16",
            "LEARNING_RATE = 1e-3",
            "WEIGHTS = 'none'",
            "FINE_TUNE = False",
            "MIXED_PRECISION = False",
            f"OUT_DIR = {str(tmp_path / 'model')!r}",
            f"REPORT_DIR = {str(tmp_path / 'reports')!r}",
            "SEED = 0",
        ]
    )
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()

    card = json.loads((tmp_path / "model" / "model.json").read_text())
    assert card["policy"] == "U-MultiClass" and card["image_size"] == 64
    assert (tmp_path / "model" / "model.h5").stat().st_size > 1_000_000
    report = json.loads((tmp_path / "reports" / "report.json").read_text())
    assert set(report["study_level"]["observations"]) == set(card["observations"])
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # label plot and ROC curve
    assert not [o for o in outputs if o.get("output_type") == "error"]
