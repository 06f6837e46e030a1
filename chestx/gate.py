"""The input gate: is an upload plausibly a chest radiograph, or a photo, document or screenshot?

The model answers for any picture it is given, so a holiday photo would get "probabilities" too.
The gate looks at a few simple image statistics, each of which a person can check by eye, and
names every reason an image does not look like a radiograph. It is deliberately conservative:
the thresholds sit well outside the range of the real radiographs in ../shared/cxr (all pass,
see bench/input_gate.py), so it refuses obvious non-radiographs and lets borderline images
through. It can't tell a chest from a knee: that is the reader's job.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from chestx.imaging import Radiograph
from chestx.lazy_kernel import LazyKernel

#: Statistics are measured on the image shrunk to this size, so they don't depend on resolution.
ANALYSIS_SIDE = 256

#: Thresholds, each with the range measured on the 109 real radiographs in ../shared/cxr.
MIN_SIDE = 128  # px; real ones: 256 and more
MIN_ASPECT, MAX_ASPECT = 0.5, 2.0  # width / height; real ones: 0.83 to 1.35
MAX_COLOURFULNESS = 20.0  # Hasler-Suesstrunk; real ones: 0 to 12 (coloured arrows, labels)
MIN_SPREAD = 0.08  # 5th to 95th percentile of grey; real ones: 0.18 and more
MAX_WHITE = 0.02  # share of pure white pixels; real ones: under 0.01
MAX_FLAT = 0.20  # share in 3x3 patches of one exact non-black shade; real ones: under 0.10
MIN_ENTROPY = 4.5  # bits of the grey histogram; real ones: 5.6 and more
#: Detail depends on how the image was shrunk: these ranges are for images read as the app reads
#: them, a large JPEG decoded at the model's input size (DCT scaling to 1/8 for 2000 px).
MAX_DETAIL = 20.0  # mean |Laplacian| in grey levels; real ones: 3.0 to 18.3
MIN_DETAIL = 1.0  # synthetic ramps and flat fills have none
MAX_EDGE_CONCENTRATION = 0.45  # share of gradient in the strongest 5 %; real ones: under 0.43


@dataclass(frozen=True)
class GateVerdict:
    """Whether the upload looks like a radiograph, why not, and the measured statistics."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    statistics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _analysis_pixels(pixels: np.ndarray) -> np.ndarray:
    """Grey levels 0-255 (float) at most ANALYSIS_SIDE a side."""
    if max(pixels.shape) <= ANALYSIS_SIDE:  # what thumbnail() would return: skip the copy
        return np.clip(np.asarray(pixels, dtype=np.float32), 0.0, 1.0) * np.float32(255)
    image = Image.fromarray(np.asarray(pixels, dtype=np.float32), mode="F")
    image.thumbnail((ANALYSIS_SIDE, ANALYSIS_SIDE), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * np.float32(255)


def _flat_share(levels: np.ndarray) -> float:
    """Share of pixels whose 3x3 neighbourhood is one exact shade other than black.

    Separable: a 3 x 3 patch is one shade when each of its three rows is, and its middle
    column too (4 comparisons per pixel instead of 9)."""
    centre = levels[1:-1, 1:-1]
    rows = (levels[:, :-2] == levels[:, 1:-1]) & (levels[:, 2:] == levels[:, 1:-1])
    flat = rows[:-2] & rows[1:-1] & rows[2:]
    flat &= levels[:-2, 1:-1] == centre
    flat &= levels[2:, 1:-1] == centre
    flat &= centre > 5
    return np.count_nonzero(flat) / flat.size


def _percentiles(counts: np.ndarray, *percents: float) -> list[float]:
    """np.percentile's default (linear) percentiles of the grey levels, from their counts per
    level: the k-th smallest level is the first whose cumulative count passes k."""
    cumulative = np.cumsum(counts)
    count = int(cumulative[-1])
    results = []
    for percent in percents:
        position = percent / 100 * (count - 1)
        low = int(position)
        high = min(low + 1, count - 1)
        low_level, high_level = np.searchsorted(cumulative, [low, high], side="right")
        results.append(float(low_level + (high_level - low_level) * (position - low)))
    return results


def _mean_abs_laplacian(grey: np.ndarray) -> float:
    """Mean |4 x centre - its 4 neighbours| inside the border (computed in place; float32
    pixels, summed in float64 as the kernel does)."""
    laplacian = grey[1:-1, 1:-1] * np.float32(4)
    laplacian -= grey[:-2, 1:-1]
    laplacian -= grey[2:, 1:-1]
    laplacian -= grey[1:-1, :-2]
    laplacian -= grey[1:-1, 2:]
    return float(np.abs(laplacian, out=laplacian).sum(dtype=np.float64)) / laplacian.size


def _gradient_magnitude(grey: np.ndarray) -> np.ndarray:
    """|np.gradient(grey)|, the same numbers (central differences, one-sided at the edges),
    computed in place."""
    gy = np.empty_like(grey)
    np.subtract(grey[2:], grey[:-2], out=gy[1:-1])
    gy[1:-1] /= np.float32(2)
    gy[0], gy[-1] = grey[1] - grey[0], grey[-1] - grey[-2]
    gx = np.empty_like(grey)
    np.subtract(grey[:, 2:], grey[:, :-2], out=gx[:, 1:-1])
    gx[:, 1:-1] /= np.float32(2)
    gx[:, 0], gx[:, -1] = grey[:, 1] - grey[:, 0], grey[:, -1] - grey[:, -2]
    gx *= gx
    gy *= gy
    gx += gy
    return np.sqrt(gx, out=gx)


def _strongest_sum(magnitude: np.ndarray, top: int) -> float:
    """The sum of the ``top`` largest values, found without a full sort (numpy's partition:
    numba's took 8x as long)."""
    return float(np.partition(magnitude, magnitude.size - top)[-top:].sum(dtype=np.float64))


def _plain_sums(grey: np.ndarray, levels: np.ndarray):
    """numpy's way to what the kernel returns, for when it isn't loaded (at least 3 x 3)."""
    counts = np.bincount(levels.ravel(), minlength=256)
    magnitude = _gradient_magnitude(grey).ravel()
    total = float(magnitude.sum(dtype=np.float64))
    return counts, _flat_share(levels), _mean_abs_laplacian(grey), magnitude, total


def measure(radiograph: Radiograph) -> dict[str, float]:
    """The statistics the gate decides on. With the kernel (chestx.lazy_kernel) a 250 px
    radiograph takes 1.2 to 1.3 ms in the server, without it 1.5 to 1.7: the same numbers."""
    width, height = radiograph.original_size
    grey = _analysis_pixels(radiograph.pixels)
    levels = np.round(grey).astype(np.uint8)  # grey is 0-255: fits
    if min(grey.shape) >= 3:
        kernel = _KERNEL.get()
        sums = kernel(grey, levels) if kernel is not None else _plain_sums(grey, levels)
        counts, flat_share, detail, magnitude, total = sums
        strongest = _strongest_sum(magnitude, max(1, magnitude.size // 20))  # the top 5 %
    else:  # too small for neighbourhoods (check() refuses it for its size)
        counts = np.bincount(levels.ravel(), minlength=256)
        flat_share, detail, total, strongest = 1.0, 0.0, 0.0, 0.0
    histogram = counts / levels.size
    used = histogram[histogram > 0]
    p5, p95 = _percentiles(counts, 5, 95)
    stats = {
        "width": float(width),
        "height": float(height),
        "aspect_ratio": width / height if height else 0.0,
        "colourfulness": float(radiograph.colourfulness),
        "spread": float(p95 - p5) / 255.0,
        "white_share": float(histogram[250:].sum()),
        "flat_share": float(flat_share),
        "entropy_bits": max(0.0, float(-(used * np.log2(used)).sum())),
        "detail": float(detail),
        "edge_concentration": strongest / total if total > 0 else 0.0,
    }
    return {key: round(value, 4) for key, value in stats.items()}


def _build_statistics_kernel():
    """Import the one-pass statistics kernel (chestx.kernels.gate_statistics) and load its
    one signature."""
    from chestx.kernels.gate_statistics import statistics

    grey = np.zeros((4, 4), np.float32)
    statistics(grey, np.zeros((4, 4), np.uint8))
    return statistics


_KERNEL = LazyKernel("chestx-gate", _build_statistics_kernel)
prepare = _KERNEL.prepare
ready = _KERNEL.ready


def check(radiograph: Radiograph) -> GateVerdict:
    """Measure the image and list every way it does not look like a chest radiograph."""
    s = measure(radiograph)
    reasons = []
    if min(s["width"], s["height"]) < MIN_SIDE:
        reasons.append(
            f"it is tiny ({s['width']:.0f} x {s['height']:.0f} px); a radiograph is at least "
            f"{MIN_SIDE} px a side"
        )
    if not MIN_ASPECT <= s["aspect_ratio"] <= MAX_ASPECT:
        reasons.append(
            f"its shape (width/height {s['aspect_ratio']:.2f}) is not that of a chest radiograph"
        )
    if s["colourfulness"] > MAX_COLOURFULNESS:
        reasons.append(
            f"it is a colour image (colourfulness {s['colourfulness']:.0f}); radiographs are grey"
        )
    if s["spread"] < MIN_SPREAD:
        reasons.append("it is almost uniform: there is next to no contrast in it")
    if s["white_share"] > MAX_WHITE:
        reasons.append(
            f"{s['white_share']:.0%} of it is pure white, as in a document, plot or screenshot"
        )
    if s["flat_share"] > MAX_FLAT:
        reasons.append(
            f"{s['flat_share']:.0%} of it is flat areas of one exact shade, as in a drawing or "
            "screenshot"
        )
    if s["entropy_bits"] < MIN_ENTROPY:
        reasons.append(
            f"it uses few grey levels ({s['entropy_bits']:.1f} bits), as in text or line art"
        )
    if s["detail"] > MAX_DETAIL:
        reasons.append(
            "it has far more fine detail and sharp edges than a radiograph, as a photograph or "
            "text has"
        )
    if s["detail"] < MIN_DETAIL and s["spread"] >= MIN_SPREAD:
        reasons.append("it has no texture at all, as a synthetic gradient has")
    if s["edge_concentration"] > MAX_EDGE_CONCENTRATION:
        reasons.append("its edges are thin lines on flat areas, as in a plot or drawing")
    return GateVerdict(passed=not reasons, reasons=reasons, statistics=s)
