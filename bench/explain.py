"""Explanations: what a Grad-CAM map costs next to one prediction, and that the result page
doesn't wait for maps.

Served maps run on ONNX Runtime (the graph also returns the last feature maps; the gradient
through the dense head is numpy). Timed in the same run, interleaved: one batch-1 prediction,
one map, one map as the web app serves it (with the PNG overlay), the TensorFlow compiled
Grad-CAM it replaces (skipped with --quick), and the result page through the Flask app.

    .venv/bin/python bench/explain.py [--model model/model.h5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from inference import machine, print_table, timed_rounds  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="model/model.h5")
    parser.add_argument("--quick", action="store_true", help="skip the TensorFlow comparison")
    args = parser.parse_args(argv)

    model_path = Path(args.model).resolve()
    if not model_path.is_file():
        print(f"{model_path} not found: build one with `make demo-model`", file=sys.stderr)
        return 2
    temporary = Path(tempfile.mkdtemp(prefix="chestx-bench-"))
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{temporary / 'studies.db'}")

    from chestx.explain import overlay_png
    from chestx.web import create_app
    from chestx.web.analysis import MAP_SIDE

    app = create_app({"CHESTX_MODEL": str(model_path), "TESTING": True})
    analyser = app.extensions["chestx"].analyser
    predictor = analyser.predictor
    jpeg = sorted((REPO.parent / "shared" / "cxr" / "covid").glob("*.jpg"))[0]
    client = app.test_client()
    with open(jpeg, "rb") as handle:
        body = client.post("/api/v1/predict", data={"file": (handle, "x.jpg")}).get_json()
    result_page = body["links"]["result_page"]
    image = analyser.analyse(jpeg.read_bytes())
    x = image.model_input
    name = image.top_findings(1)[0]

    def served_png():
        overlay_png(image.display_pixels(), analyser.gradcam.map(x, name), max_side=MAP_SIDE)

    def page():
        start = time.perf_counter()
        assert client.get(result_page).status_code == 200
        return time.perf_counter() - start

    runners = {
        "predict": lambda: predictor.predict_batch(x[None]),
        "map": lambda: analyser.gradcam.map(x, name),
        "map png": served_png,
        "page": page,
    }
    tensorflow_map = None
    if not args.quick:
        from chestx.web.heatmaps import CompiledGradCam

        tensorflow_map = CompiledGradCam(predictor.model)
        runners["tf map"] = lambda: tensorflow_map.map(x, name)
    t = timed_rounds(runners, 3 if args.quick else 5, 4)

    print(f"machine: {machine()}; model {model_path} ({predictor.image_size} px)")
    print(f"maps computed by: {'TensorFlow' if analyser.gradcam.uses_tensorflow else 'ONNX'}")
    p = t["predict"]
    rows = [
        (
            "Grad-CAM map (ms)",
            f"{t['map'] * 1e3:.1f}",
            "one prediction",
            f"{p * 1e3:.1f}",
            f"{t['map'] / p:.2f}x",
            "<= 3.00x",
        ),
        (
            "map as served, with PNG overlay (ms)",
            f"{t['map png'] * 1e3:.1f}",
            "one prediction",
            f"{p * 1e3:.1f}",
            f"{t['map png'] / p:.2f}x",
            "<= 3.00x",
        ),
        (
            "result page HTML (ms)",
            f"{t['page'] * 1e3:.1f}",
            "one prediction",
            f"{p * 1e3:.1f}",
            f"{t['page'] / p:.2f}x",
            "no map computed",
        ),
    ]
    if tensorflow_map is not None:
        rows.append(
            (
                "TensorFlow compiled Grad-CAM (ms)",
                f"{t['tf map'] * 1e3:.1f}",
                "one prediction",
                f"{p * 1e3:.1f}",
                f"{t['tf map'] / p:.2f}x",
                "(replaced)",
            )
        )
    print_table("Grad-CAM maps, medians", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
