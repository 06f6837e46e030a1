"""Fuzzing the upload path end to end: hostile files and file names through the JSON API.

Whatever arrives, the answer is a 2xx or a 4xx with a message: never a 5xx, and a file name is
never echoed back unescaped. Longer run: CHESTX_FUZZ_EXAMPLES=5000 .venv/bin/pytest
tests/web/test_web_fuzz.py -s
"""

import io
import os
from collections import Counter

from fuzz_inputs import mutated, odd_images
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("CHESTX_FUZZ_EXAMPLES", "300"))
OUTCOMES: Counter = Counter()

HOSTILE_NAMES = st.one_of(
    st.sampled_from(
        [
            "../../etc/passwd",
            "..\\..\\windows\\win.ini",
            "/abs/path.png",
            "<script>alert(1)</script>.png",
            '"><img src=x onerror=alert(1)>.dcm',
            "name\x00with\x1fcontrol\r\nchars.jpg",
            "x" * 5000 + ".png",
            "",
        ]
    ),
    st.text(max_size=300),
)


def _post(client, data: bytes, filename: str):
    return client.post(
        "/api/v1/predict",
        data={"file": (io.BytesIO(data), filename)},
        content_type="multipart/form-data",
    )


def _check(response, filename: str) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert body is not None, "every API answer is JSON"
    if response.status_code >= 400:
        assert body.get("error")
    text = response.get_data(as_text=True)
    if "<" in filename:
        assert "<script>" not in text and "<img" not in text
    OUTCOMES[response.status_code] += 1


def test_hostile_files_and_names_through_the_api(app, cxr_dir, artifacts_dir):
    seeds = [
        (cxr_dir / "nih" / "00000001_002.png").read_bytes(),
        *(p.read_bytes() for p in sorted((cxr_dir / "dicom").glob("*.dcm"))),
    ]
    client = app.test_client()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )
    @given(st.one_of(mutated(seeds), odd_images()), HOSTILE_NAMES)
    def run(data, filename):
        _check(_post(client, data, filename), filename)

    run()
    # The server goes on answering real uploads afterwards.
    response = _post(client, seeds[0], "chest.png")
    assert response.status_code == 200
    summary = ", ".join(f"{status}: {count}" for status, count in sorted(OUTCOMES.items()))
    (artifacts_dir / "fuzz_api.txt").write_text(
        f"API fuzz cases {sum(OUTCOMES.values())}: {summary}\n"
    )
    print(f"\nAPI fuzz cases {sum(OUTCOMES.values())}: {summary}")
