"""Property-based fuzzing of the image and DICOM readers.

Every input, mutated real file or odd file made from scratch, must end in a sane Radiograph or an
ImageError with a 4xx status: never another exception, never a hang. A short run is part of
`make test`; a longer one:

    CHESTX_FUZZ_EXAMPLES=20000 .venv/bin/pytest tests/test_fuzz_images.py -s
"""

import os
from collections import Counter

import numpy as np
import pytest
from fuzz_inputs import mutated, odd_images
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chestx.errors import ImageError
from chestx.imaging import preprocess, read_image

EXAMPLES = int(os.environ.get("CHESTX_FUZZ_EXAMPLES", "300"))
OUTCOMES: Counter = Counter()


def _seeds(cxr_dir) -> list[bytes]:
    files = [
        cxr_dir / "nih" / "00000001_002.png",  # 8-bit PNG, 256 px
        cxr_dir / "padchest" / "16747_3_1.jpg",  # RGB JPEG
        *sorted((cxr_dir / "dicom").glob("*.dcm")),  # MONOCHROME1 and 2
    ]
    return [f.read_bytes() for f in files]


def _check(data: bytes) -> str:
    try:
        radiograph = read_image(data, min_size=64)
    except ImageError as error:
        assert 400 <= error.status < 500
        assert str(error)
        return f"refused {error.status}"
    pixels = radiograph.pixels
    assert pixels.ndim == 2 and pixels.dtype == np.float32
    assert np.isfinite(pixels).all() and pixels.min() >= 0.0 and pixels.max() <= 1.0
    assert np.isfinite(preprocess(pixels, 32)).all()
    return "read"


@pytest.fixture(scope="module")
def seeds(cxr_dir):
    return _seeds(cxr_dir)


@pytest.fixture(scope="module", autouse=True)
def report_outcomes(artifacts_dir):
    yield
    lines = [f"{count:6d}  {outcome}" for outcome, count in sorted(OUTCOMES.items())]
    text = f"fuzz cases: {sum(OUTCOMES.values())}\n" + "\n".join(lines)
    (artifacts_dir / "fuzz_images.txt").write_text(text + "\n")
    print("\n" + text)


def test_mutated_real_files(seeds):
    @settings(
        max_examples=EXAMPLES,
        deadline=5000,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(mutated(seeds))
    def run(data):
        OUTCOMES["mutated: " + _check(data)] += 1

    run()


@settings(
    max_examples=EXAMPLES,
    deadline=5000,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(odd_images())
def test_odd_files_made_from_scratch(data):
    OUTCOMES["odd: " + _check(data)] += 1


@given(st.binary(max_size=512))
@settings(max_examples=EXAMPLES, deadline=2000, derandomize=True)
def test_random_bytes(data):
    OUTCOMES["random: " + _check(data)] += 1
