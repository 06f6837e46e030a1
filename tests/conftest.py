"""Shared fixtures: generated CheXpert-shaped data, a tiny trained model, the real radiographs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CXR = SHARED / "cxr"
CHEXPERT_CSV_GZ = SHARED / "chexpert" / "train.csv.gz"
ARTIFACTS = REPO / "test-artifacts"

#: The tiny model the app and inference tests load: small images so it trains in seconds.
TINY_IMAGE_SIZE = 64


class UnloadedKernel:
    """Stands in for a chestx.lazy_kernel.LazyKernel that hasn't loaded: the plain path runs.
    Counts the loads asked for."""

    def __init__(self):
        self.load_requests = 0

    def get(self):
        self.load_requests += 1
        return None

    def prepare(self, wait: bool = False) -> None:
        self.load_requests += 1

    def ready(self) -> bool:
        return False


@pytest.fixture
def unload(monkeypatch):
    """``unload(module, "_KERNEL")`` makes that module (jpeg_dc, resample, gate) take its plain
    path for one test."""

    def swap(module, attribute: str) -> UnloadedKernel:
        stand_in = UnloadedKernel()
        monkeypatch.setattr(module, attribute, stand_in)
        return stand_in

    return swap


@pytest.fixture(scope="session")
def cxr_dir() -> Path:
    if not CXR.is_dir():
        pytest.fail(f"{CXR} is missing: the real radiographs live beside the checkout")
    return CXR


@pytest.fixture(scope="session")
def radiograph_paths(cxr_dir) -> list[Path]:
    """Every image in ../shared/cxr (PNG, JPEG and DICOM)."""
    return sorted(
        p for p in cxr_dir.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".dcm"}
    )


@pytest.fixture(scope="session")
def chexpert_csv_gz() -> Path:
    """CheXpert's real train.csv, gzipped, without images."""
    if not CHEXPERT_CSV_GZ.is_file():
        pytest.fail(f"{CHEXPERT_CSV_GZ} is missing: it lives in ../shared beside the checkout")
    return CHEXPERT_CSV_GZ


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory) -> Path:
    """A small generated CheXpert-v1.0-small folder (train.csv, valid.csv, JPEGs)."""
    from chestx.data.synthetic import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("chexpert"), 30, 12, image_size=96, seed=1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, demo_dataset) -> Path:
    """model.h5 + model.json of a demo model trained for a few epochs at 64 px."""
    from chestx.training import TrainConfig, train

    out = tmp_path_factory.mktemp("model")
    result = train(
        TrainConfig(
            data=demo_dataset,
            policy="U-Ones",
            image_size=TINY_IMAGE_SIZE,
            epochs=3,
            batch_size=16,
            learning_rate=1e-3,
            weights=None,
            out=out,
            demo=True,
            dataset_name="generated test data",
            cache_dir=out / "cache",
            progress=False,
        )
    )
    return result.model_path
