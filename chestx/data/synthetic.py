"""A small dataset in CheXpert-v1.0-small's exact layout, with signs a model can learn.

Real CheXpert needs a registration and 11 GB, so tests, the notebook's CI run and the demo model
use this instead. Each image is a schematic chest (body, lungs, spine, heart) with noise; every
observation that is positive draws its own sign: a patch of grating with an orientation and period
unique to that observation, at a plausible place. Uncertain labels (-1) draw the sign half of the
time, so they really are uncertain. The generated numbers mean nothing clinically.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from chestx.labels import CSV_COLUMNS, OBSERVATIONS

FOLDER_NAME = "CheXpert-v1.0-small"
NO_FINDING = 0
SUPPORT_DEVICES = len(OBSERVATIONS) - 1
PATHOLOGIES = range(1, SUPPORT_DEVICES)  # what "No Finding" excludes


@dataclass(frozen=True)
class Sign:
    """Where an observation's grating sits (fractions of width/height) and how it looks."""

    x: float
    y: float
    angle_deg: float
    period: float  # in fractions of the image width


def _signs() -> dict[int, Sign]:
    places = [
        (0.50, 0.45),
        (0.55, 0.60),
        (0.30, 0.40),
        (0.30, 0.25),
        (0.70, 0.65),
        (0.72, 0.45),
        (0.28, 0.60),
        (0.68, 0.28),
        (0.50, 0.20),
        (0.25, 0.78),
        (0.70, 0.30),
        (0.15, 0.50),
        (0.50, 0.75),
    ]
    periods = (0.020, 0.035, 0.055, 0.080)
    return {
        j: Sign(x, y, angle_deg=45.0 * (k % 4), period=periods[(k // 4) % 4] + 0.004 * (k // 16))
        for k, (j, (x, y)) in enumerate(zip(range(1, len(OBSERVATIONS)), places, strict=True))
    }


SIGNS = _signs()


def _ellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, rx: float, ry: float):
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def _chest(rng: np.random.Generator, width: int, height: int, lateral: bool) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    xx, yy = xx / width, yy / height
    jitter = rng.normal(0, 0.02, size=6)
    image = np.full((height, width), 0.08, dtype=np.float32)
    if lateral:
        image[_ellipse(xx, yy, 0.5 + jitter[0], 0.55, 0.36, 0.5)] = 0.55
        image[_ellipse(xx, yy, 0.5 + jitter[1], 0.45, 0.25, 0.3)] = 0.3
        image[(xx > 0.72 + jitter[2]) & (xx < 0.78 + jitter[2]) & (yy > 0.1)] = 0.8
    else:
        image[_ellipse(xx, yy, 0.5 + jitter[0], 0.55, 0.45, 0.5)] = 0.55
        for side, shift in ((0.3, jitter[1]), (0.7, jitter[2])):
            image[_ellipse(xx, yy, side + shift, 0.45, 0.15, 0.3)] = 0.25
        image[(np.abs(xx - 0.5 - jitter[3]) < 0.035) & (yy > 0.05)] = 0.8
        image[_ellipse(xx, yy, 0.56 + jitter[4], 0.62, 0.12 + abs(jitter[5]), 0.1)] = 0.62
    return image


def _draw_sign(image: np.ndarray, sign: Sign, rng: np.random.Generator) -> None:
    height, width = image.shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx = (sign.x + rng.normal(0, 0.02)) * width
    cy = (sign.y + rng.normal(0, 0.02)) * height
    radius = 0.11 * width
    distance = np.hypot(xx - cx, yy - cy)
    envelope = np.clip(1.5 - distance / radius, 0.0, 1.0)
    theta = np.deg2rad(sign.angle_deg)
    phase = (xx * np.cos(theta) + yy * np.sin(theta)) / (sign.period * width)
    image += 0.35 * envelope * np.sin(2 * np.pi * phase + rng.uniform(0, 2 * np.pi))


def _draw_labels(rng: np.random.Generator, validation: bool) -> np.ndarray:
    """Raw labels for one study: 1, 0, -1 or NaN (blank), with No Finding derived."""
    labels = np.full(len(OBSERVATIONS), np.nan, dtype=np.float32)
    healthy = rng.random() < (0.2 if validation else 0.25)
    choices = np.array([1.0, 0.0]) if validation else np.array([1.0, -1.0, 0.0, np.nan])
    weights = np.array([0.3, 0.7]) if validation else np.array([0.22, 0.08, 0.15, 0.55])
    for j in range(1, len(OBSERVATIONS)):
        if healthy and j in PATHOLOGIES:
            labels[j] = 0.0 if validation else np.nan
        else:
            labels[j] = rng.choice(choices, p=weights)
    pathology = labels[1:SUPPORT_DEVICES]
    has_finding = np.any((pathology == 1) | (pathology == -1))
    labels[NO_FINDING] = 0.0 if (has_finding and validation) else (np.nan if has_finding else 1.0)
    return labels


def _render(labels: np.ndarray, rng: np.random.Generator, size: int, lateral: bool) -> Image.Image:
    width, height = size, int(round(size * 1.15))
    image = _chest(rng, width, height, lateral)
    for j, sign in SIGNS.items():
        value = labels[j]
        if value == 1 or (value == -1 and rng.random() < 0.5):
            _draw_sign(image, sign, rng)
    image += rng.normal(0, 0.03, size=image.shape).astype(np.float32)
    return Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8), mode="L")


def _label_cell(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.1f}"


def make_demo_dataset(
    out_dir: str | Path,
    train_patients: int = 150,
    valid_patients: int = 50,
    image_size: int = 256,
    seed: int = 0,
) -> Path:
    """Write ``out_dir/CheXpert-v1.0-small`` (train.csv, valid.csv, images) and return its path."""
    rng = np.random.default_rng(seed)
    root = Path(out_dir) / FOLDER_NAME
    for split, n_patients, first_id in (
        ("train", train_patients, 1),
        ("valid", valid_patients, 64541),
    ):
        validation = split == "valid"
        rows: list[list[str]] = []
        for patient_id in range(first_id, first_id + n_patients):
            sex = rng.choice(["Male", "Female"])
            age = int(rng.integers(18, 91))
            n_studies = 1 if validation else int(rng.integers(1, 4))
            for study in range(1, n_studies + 1):
                labels = _draw_labels(rng, validation)
                projection = str(rng.choice(["AP", "PA"], p=[0.7, 0.3]))
                views = [("frontal", "Frontal", projection)]
                if rng.random() < 0.3:
                    views.append(("lateral", "Lateral", ""))
                for number, (suffix, view, ap_pa) in enumerate(views, start=1):
                    relative = (
                        f"{split}/patient{patient_id:05d}/study{study}/view{number}_{suffix}.jpg"
                    )
                    target = root / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _render(labels, rng, image_size, lateral=view == "Lateral").save(
                        target, quality=92
                    )
                    rows.append(
                        [f"{FOLDER_NAME}/{relative}", sex, str(age), view, ap_pa]
                        + [_label_cell(v) for v in labels]
                    )
        with open(root / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(rows)
    return root


def calibration_images(count: int, image_size: int, seed: int = 0) -> np.ndarray:
    """Preprocessed generated chests, for setting a random backbone's batch-norm statistics."""
    from chestx.imaging import preprocess

    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        labels = _draw_labels(rng, validation=False)
        picture = _render(labels, rng, image_size, lateral=i % 4 == 3)
        images.append(preprocess(np.asarray(picture, dtype=np.float32) / 255.0, image_size))
    return np.stack(images)
