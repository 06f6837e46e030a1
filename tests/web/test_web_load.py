"""A short load test (bench/load.py): 8 clients post real radiographs to gunicorn for 25 s on the
tiny model; no error, no worker restart, memory within 10% of the post-warm-up figure. The full
run (16 clients, 5 minutes, the 224 px model) is `.venv/bin/python bench/load.py`."""

from __future__ import annotations

import json
import sys

import pytest
from webhelpers import REPO

sys.path.insert(0, str(REPO / "bench"))

import load  # noqa: E402

pytestmark = pytest.mark.slow


def test_short_load_run(tiny_model, artifacts_dir, capsys):
    figures = artifacts_dir / "load-short.json"
    code = load.main(
        ["--model", str(tiny_model), "--clients", "8", "--duration", "25", "--warmup", "10"]
        + ["--sample", "2", "--json", str(figures)]
    )
    printed = capsys.readouterr().out
    with capsys.disabled():
        print("\n" + printed)
    result = json.loads(figures.read_text())
    assert result["errors"] == 0, printed
    assert result["ok"] >= 8, printed
    assert result["workers_start"] == result["workers_end"], printed
    assert result["memory_growth"] <= 0.10, printed
    assert code == 0 and result["passed"], printed
