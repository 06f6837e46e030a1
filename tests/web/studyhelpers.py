"""Helpers for the study-store tests: a fresh database on each backend, sample studies.

PostgreSQL comes from CHESTX_TEST_POSTGRES_URL (scripts/postgres-test.sh, run by `make test`,
starts a throwaway server and sets it); without it the PostgreSQL variants skip, loudly.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import store_concurrency  # noqa: E402

from chestx.labels import OBSERVATIONS  # noqa: E402
from chestx.web.db.repository import NewStudy  # noqa: E402

POSTGRES_ENV = "CHESTX_TEST_POSTGRES_URL"


def postgres_skip_reason() -> str:
    why = os.environ.get("CHESTX_TEST_POSTGRES_SKIP_REASON") or f"{POSTGRES_ENV} is not set"
    return (
        f"!!! PostgreSQL NOT TESTED: {why}. Run `make test` (scripts/postgres-test.sh starts a "
        "throwaway PostgreSQL server) to test the study store on PostgreSQL too. !!!"
    )


BACKENDS = ["sqlite", "postgresql"]


@contextlib.contextmanager
def fresh_database(backend: str, folder: Path) -> Iterator[str]:
    """The URL of a new, empty database (no tables) on ``backend``; dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'studies.db'}"
        return
    admin = os.environ.get(POSTGRES_ENV)
    if not admin:
        pytest.skip(postgres_skip_reason())
    url, drop = store_concurrency.fresh_postgres_database(admin)
    try:
        yield url
    finally:
        drop()


def probabilities(**named: float) -> dict[str, float]:
    """14 probabilities, 0.01 except those named (``Pleural_Effusion=0.7``)."""
    values = {name: 0.01 for name in OBSERVATIONS}
    for key, value in named.items():
        values[key.replace("_", " ")] = value
    return values


def new_study(tag: str, version: str = "1", **named: float) -> NewStudy:
    return NewStudy(
        sha256=hashlib.sha256(tag.encode()).hexdigest(),
        display_name=f"{tag}.png",
        model_name="test-model",
        model_version=version,
        image_format="PNG",
        width=512,
        height=512,
        gate_passed=True,
        gate_overridden=False,
        probabilities=probabilities(**named),
        model_seconds=0.01,
        gate_reasons=[],
        gate_statistics={"entropy": 7.1},
        warnings=["demo"],
    )
