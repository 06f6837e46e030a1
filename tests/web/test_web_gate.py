"""The input gate: every real radiograph passes, most things that aren't are refused."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chestx import gate
from chestx.imaging import read_image

BENCH = Path(__file__).resolve().parents[2] / "bench" / "input_gate.py"


@pytest.fixture(scope="module")
def bench():
    """bench/input_gate.py: the same positives, negatives and reading the figures come from."""
    spec = importlib.util.spec_from_file_location("input_gate_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def negative_verdicts(bench):
    return {name: bench.verdict_for(data) for name, data in bench.negatives().items()}


def test_every_real_radiograph_passes(bench, cxr_dir):
    paths = bench.positives()
    assert len(paths) >= 100 and any(p.suffix == ".dcm" for p in paths)
    refused = {
        str(p.relative_to(cxr_dir)): v.reasons
        for p in paths
        if not (v := bench.verdict_for(p)).passed
    }
    assert refused == {}


def test_most_non_radiographs_are_refused(negative_verdicts):
    refused = [name for name, verdict in negative_verdicts.items() if not verdict.passed]
    assert len(negative_verdicts) >= 30
    assert len(refused) / len(negative_verdicts) >= 0.85, sorted(
        set(negative_verdicts) - set(refused)
    )


@pytest.mark.parametrize(
    "category", ["photo", "document", "screenshot", "plot", "drawing", "synthetic"]
)
def test_every_colour_photo_document_screenshot_plot_drawing_is_refused(
    negative_verdicts, category
):
    verdicts = {n: v for n, v in negative_verdicts.items() if n.split("/")[0] == category}
    assert verdicts
    assert [n for n, v in verdicts.items() if v.passed] == []
    assert all(v.reasons for v in verdicts.values())


def _radiograph(pixels: np.ndarray, colourfulness: float = 0.0):
    from chestx.imaging import Radiograph

    height, width = pixels.shape
    return Radiograph(pixels.astype(np.float32), "PNG", (width, height), colourfulness)


def test_reasons_name_what_is_wrong(cxr_dir):
    real = read_image(cxr_dir / "nih" / "00000001_000.png")
    assert gate.check(real).passed
    tiny = _radiograph(real.pixels[:64, :64])
    assert any("tiny" in r for r in gate.check(tiny).reasons)
    banner = _radiograph(np.tile(real.pixels[200:260], (1, 1)))
    assert any("shape" in r for r in gate.check(banner).reasons)
    coloured = _radiograph(real.pixels, colourfulness=45.0)
    assert any("colour image" in r for r in gate.check(coloured).reasons)
    page = np.ones((800, 600), np.float32)
    page[100:700:20, 50:550] = 0.0  # lines of "text"
    assert any("pure white" in r for r in gate.check(_radiograph(page)).reasons)


def test_statistics_are_reported(cxr_dir):
    verdict = gate.check(read_image(cxr_dir / "nih" / "00000001_000.png"))
    stats = verdict.to_dict()["statistics"]
    assert {"colourfulness", "white_share", "flat_share", "entropy_bits", "detail"} <= set(stats)
    assert stats["width"] == 512 and stats["aspect_ratio"] == 1.0


def test_a_greyscale_radiograph_resized_small_still_passes(cxr_dir):
    image = Image.open(cxr_dir / "nih" / "00000001_000.png").convert("L").resize((200, 200))
    pixels = np.asarray(image, np.float32) / 255.0
    assert gate.check(_radiograph(pixels)).passed
