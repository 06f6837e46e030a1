"""How well does the input gate separate chest radiographs from everything else?

Prints the pass rate on every real radiograph in ../shared/cxr and the refusal rate on generated
negatives: colour and greyscale photographs (the sample photos matplotlib and scikit-learn ship),
rendered documents and scans of them, screenshots, plots, drawings and synthetic images. Nothing
is downloaded. tests/web/test_web_gate.py imports ``positives`` and ``negatives`` from here, so the
test asserts the same figures this script prints.

    .venv/bin/python bench/input_gate.py [--verbose]
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

REPO = Path(__file__).resolve().parents[1]
CXR = REPO.parent / "shared" / "cxr"
sys.path.insert(0, str(REPO))

from chestx.gate import check  # noqa: E402
from chestx.imaging import read_image  # noqa: E402
from chestx.network import DEFAULT_IMAGE_SIZE  # noqa: E402

WORDS = [
    *[
        "the",
        "patient",
        "chest",
        "report",
        "normal",
        "findings",
        "lungs",
        "heart",
        "size",
        "within",
        "limits",
        "no",
        "acute",
    ],
    *[
        "process",
        "clinical",
        "history",
        "follow",
        "up",
        "impression",
        "comparison",
        "view",
        "technique",
    ],
]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def positives() -> list[Path]:
    """Every PNG, JPEG and DICOM radiograph in ../shared/cxr."""
    suffixes = {".png", ".jpg", ".jpeg", ".dcm"}
    return sorted(p for p in CXR.rglob("*") if p.suffix.lower() in suffixes)


def _photos() -> dict[str, bytes]:
    import matplotlib
    import sklearn.datasets

    mpl = Path(matplotlib.get_data_path()) / "sample_data"
    skl = Path(sklearn.datasets.__file__).parent / "images"
    out = {}
    for path in (mpl / "grace_hopper.jpg", skl / "china.jpg", skl / "flower.jpg"):
        image = Image.open(path)
        image.load()
        out[f"photo/{path.stem}.jpg"] = _jpeg(image)
        out[f"photo-grey/{path.stem}.jpg"] = _jpeg(image.convert("L"))
        # A tighter crop, as from a phone: another framing of the same scene.
        w, h = image.size
        out[f"photo-grey/{path.stem}-crop.jpg"] = _jpeg(
            image.crop((w // 6, h // 6, w - w // 6, h - h // 6)).convert("L")
        )
    for name in ("logo2.png", "Minduka_Present_Blue_Pack.png"):
        out[f"drawing/{name}"] = (mpl / name).read_bytes()
    return out


def _documents() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    out = {}
    for i, (size, width, height) in enumerate([(14, 850, 1100), (18, 1240, 1754), (24, 600, 800)]):
        page = Image.new("L", (width, height), 255)
        draw = ImageDraw.Draw(page)
        font = ImageFont.load_default(size=size)
        for y in range(40, height - 60, int(size * 1.6)):
            draw.text((50, y), " ".join(rng.choice(WORDS, 10)), fill=0, font=font)
        out[f"document/page{i}.png"] = _png(page)
        scan = page.convert("RGB").filter(ImageFilter.GaussianBlur(0.8))
        out[f"document/page{i}-scan.jpg"] = _jpeg(scan, 70)
    return out


def _screenshots() -> dict[str, bytes]:
    out = {}
    themes = {
        "light": ((250, 250, 250), (20, 20, 20), (230, 236, 245)),
        "dark": ((30, 30, 35), (220, 220, 220), (50, 54, 64)),
    }
    font = ImageFont.load_default(size=16)
    for name, (background, text, panel) in themes.items():
        shot = Image.new("RGB", (1280, 800), background)
        draw = ImageDraw.Draw(shot)
        draw.rectangle([0, 0, 1280, 40], fill=(60, 90, 160))
        draw.text((12, 10), "ChestX - Web Browser", fill=(255, 255, 255), font=font)
        draw.rectangle([0, 40, 240, 800], fill=panel)
        for k in range(12):
            draw.text((16, 60 + 30 * k), f"Menu item {k}", fill=text, font=font)
        for k in range(20):
            draw.text(
                (270, 70 + 30 * k), f"Line {k}: interface text and a link", fill=text, font=font
            )
        draw.rounded_rectangle([1000, 700, 1200, 750], 8, fill=(40, 120, 220))
        draw.text((1040, 715), "Upload", fill=(255, 255, 255), font=font)
        out[f"screenshot/{name}.png"] = _png(shot)
        out[f"screenshot/{name}-grey.png"] = _png(shot.convert("L"))
    return out


def _plots() -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(1)
    out = {}

    def save(fig, name: str) -> None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        plt.close(fig)
        out[f"plot/{name}.png"] = buffer.getvalue()

    x = np.linspace(0, 10, 200)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, np.sin(x), x, np.cos(x))
    save(fig, "line")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(range(8), rng.random(8))
    save(fig, "bar")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(rng.normal(size=300), rng.normal(size=300), c=rng.random(300))
    save(fig, "scatter")
    fig, ax = plt.subplots(figsize=(5, 5))
    fig.colorbar(ax.imshow(rng.random((20, 20)), cmap="viridis"))
    save(fig, "heatmap")
    fig, ax = plt.subplots(figsize=(5, 5))
    wave = np.linspace(0, 6, 200)
    ax.imshow(np.add.outer(np.sin(wave), np.cos(wave)), cmap="gray")
    ax.axis("off")
    save(fig, "grey-field")
    return out


def _drawings() -> dict[str, bytes]:
    rng = np.random.default_rng(2)
    out = {}
    shapes = Image.new("RGB", (800, 600), (255, 240, 200))
    draw = ImageDraw.Draw(shapes)
    draw.ellipse([100, 100, 300, 300], fill=(220, 40, 40))
    draw.rectangle([400, 200, 700, 500], fill=(40, 160, 60))
    draw.polygon([(500, 50), (700, 150), (450, 180)], fill=(30, 60, 200))
    out["drawing/shapes.png"] = _png(shapes)
    sketch = Image.new("L", (600, 600), 255)
    draw = ImageDraw.Draw(sketch)
    for _ in range(25):
        start = tuple(int(v) for v in rng.integers(0, 600, 2))
        end = tuple(int(v) for v in rng.integers(0, 600, 2))
        draw.line([start, end], fill=0, width=3)
    draw.ellipse([200, 150, 400, 450], outline=0, width=4)
    out["drawing/line-art.png"] = _png(sketch)
    return out


def _synthetic() -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    ramp = np.tile(np.linspace(0, 255, 512).astype(np.uint8), (512, 1))
    banner = rng.integers(60, 200, (100, 1000), dtype=np.uint8)
    return {
        "synthetic/noise.png": _png(Image.fromarray(rng.integers(0, 256, (512, 512), np.uint8))),
        "synthetic/black.png": _png(Image.new("L", (512, 512), 0)),
        "synthetic/white.png": _png(Image.new("L", (512, 512), 255)),
        "synthetic/gradient.png": _png(Image.fromarray(ramp)),
        "synthetic/tiny.png": _png(Image.new("L", (24, 24), 128)),
        "synthetic/banner.png": _png(Image.fromarray(banner).filter(ImageFilter.GaussianBlur(3))),
    }


GENERATORS: tuple[Callable[[], dict[str, bytes]], ...] = (
    _photos,
    _documents,
    _screenshots,
    _plots,
    _drawings,
    _synthetic,
)


def negatives() -> dict[str, bytes]:
    """Images that are not radiographs, by name ("category/name"), generated in memory."""
    out: dict[str, bytes] = {}
    for generate in GENERATORS:
        out.update(generate())
    return out


def verdict_for(source: bytes | Path, image_size: int = DEFAULT_IMAGE_SIZE):
    """Read a file exactly as the web app does for a model of that input size, then ask the
    gate (a large JPEG is decoded at reduced scale, as the app and training both do)."""
    return check(read_image(source, min_size=image_size))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="one line per image")
    args = parser.parse_args()

    real = positives()
    if not real:
        print(f"no radiographs found under {CXR}", file=sys.stderr)
        return 2
    refused_real = []
    for path in real:
        verdict = verdict_for(path)
        if not verdict.passed:
            refused_real.append((path.relative_to(CXR), verdict.reasons))
    passed = len(real) - len(refused_real)
    print(f"real radiographs passed: {passed}/{len(real)} ({passed / len(real):.1%})")
    for name, reasons in refused_real:
        print(f"  refused {name}: {'; '.join(reasons)}")

    fakes = negatives()
    by_category: dict[str, list[bool]] = {}
    let_through = []
    for name, data in fakes.items():
        verdict = verdict_for(data)
        by_category.setdefault(name.split("/")[0], []).append(not verdict.passed)
        if not verdict.passed and args.verbose:
            print(f"  refused {name}: {'; '.join(verdict.reasons)}")
        if verdict.passed:
            let_through.append(name)
    refused = sum(sum(v) for v in by_category.values())
    print(f"non-radiographs refused: {refused}/{len(fakes)} ({refused / len(fakes):.1%})")
    for category, outcomes in by_category.items():
        print(f"  {category:12s} {sum(outcomes)}/{len(outcomes)} refused")
    for name in let_through:
        print(f"  let through: {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
