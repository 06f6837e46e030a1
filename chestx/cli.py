"""`chestx` / `python -m chestx`: train, evaluate, predict, and make demo data or a demo model.

Every error a user can cause ends in one line on stderr and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from chestx.errors import ChestXError
from chestx.policies import POLICIES

DEMO_DATA_DIR = Path(".cache/demo-data")
DEMO_DATASET_NAME = "ChestX generated demo data (CheXpert-v1.0-small layout, synthetic signs)"
#: Settings of the demo model: enough for the generated signs, a couple of minutes on 2 cores.
DEMO_SETTINGS = {"train_patients": 150, "valid_patients": 50, "epochs": 60, "learning_rate": 2e-3}


def _quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ log: 2.21 prints a harmless 'NodeDef mentions attribute
    use_unbounded_threadpool' error line for every epoch. Set TF_CPP_MIN_LOG_LEVEL=0 to see it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def cmd_train(args: argparse.Namespace) -> None:
    from chestx.training import TrainConfig, train

    result = train(
        TrainConfig(
            data=Path(args.data),
            policy=args.policy,
            image_size=args.image_size,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            weights=args.weights,
            out=Path(args.out),
            seed=args.seed,
            fine_tune=args.fine_tune,
            mixed_precision=args.mixed_precision,
            frontal_only=args.frontal_only,
            val_split=args.val_split,
            cache_dir=Path(args.cache_dir),
            progress=not args.no_progress,
        )
    )
    print(f"saved {result.model_path} and its card; {result.card.summary}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from chestx.data import read_chexpert
    from chestx.evaluation import evaluate, format_table, study_level, write_report
    from chestx.inference import Predictor

    predictor = Predictor(args.model)
    csv_path = Path(args.data)
    data = read_chexpert(csv_path, root=args.root or csv_path.parent)
    probabilities = predictor.predict_paths(data.paths, args.batch_size, progress=True)
    image_report = evaluate(data.labels, probabilities, "image", args.bootstrap, args.seed)
    study_raw, study_probabilities = study_level(data.studies, data.labels, probabilities)
    study_report = evaluate(study_raw, study_probabilities, "study", args.bootstrap, args.seed)
    meta = {
        "model": predictor.card.name,
        "model_version": predictor.card.version,
        "data": str(csv_path),
        "title": f"{predictor.card.name} on {csv_path.name}",
    }
    paths = write_report(image_report, study_report, study_raw, study_probabilities, args.out, meta)
    print("image level\n" + format_table(image_report))
    print("\nstudy level (maximum over views)\n" + format_table(study_report))
    print("\nwrote " + ", ".join(str(p) for p in paths.values()))


def cmd_predict(args: argparse.Namespace) -> None:
    from chestx.inference import Predictor

    predictor = Predictor(args.model)
    results = {}
    for name in args.files:
        try:
            prediction = predictor.predict_file(Path(name))
        except ChestXError as error:
            results[name] = {"error": str(error)}
            continue
        results[name] = {"probabilities": prediction.probabilities, "seconds": prediction.seconds}
    failed = any("error" in r for r in results.values())
    if args.json:
        print(json.dumps({"model": predictor.card.name, "results": results}, indent=2))
        if failed:
            raise SystemExit(2)
        return
    print(f"# {predictor.card.summary}")
    if predictor.card.demo:
        print("# DEMO MODEL: trained on generated images; its numbers mean nothing clinically")
    for name, result in results.items():
        print(f"\n{name}")
        if "error" in result:
            print(f"  error: {result['error']}")
            continue
        for observation, value in result["probabilities"].items():
            print(f"  {observation:28} {value:6.3f}")
    if failed:
        raise SystemExit(2)


def cmd_export_onnx(args: argparse.Namespace) -> None:
    from chestx.export import export_onnx

    path = export_onnx(Path(args.model), out=args.out)
    print(f"wrote {path}: the served form of {args.model}, checked against it to 1e-4")


def cmd_demo_data(args: argparse.Namespace) -> None:
    from chestx.data.synthetic import make_demo_dataset

    root = make_demo_dataset(
        args.dir, args.train_patients, args.valid_patients, args.size, args.seed
    )
    print(f"wrote {root} (train.csv, valid.csv and images)")


def cmd_demo_model(args: argparse.Namespace) -> None:
    from chestx.data.synthetic import FOLDER_NAME, make_demo_dataset
    from chestx.training import TrainConfig, train

    start = time.perf_counter()
    root = Path(args.data_dir) / FOLDER_NAME
    if not (root / "valid.csv").is_file():
        make_demo_dataset(
            args.data_dir,
            DEMO_SETTINGS["train_patients"],
            DEMO_SETTINGS["valid_patients"],
            seed=args.seed,
        )
    result = train(
        TrainConfig(
            data=root,
            policy="U-Ones",
            image_size=args.image_size,
            epochs=DEMO_SETTINGS["epochs"],
            batch_size=32,
            learning_rate=DEMO_SETTINGS["learning_rate"],
            weights=None,
            out=Path(args.out),
            seed=args.seed,
            demo=True,
            dataset_name=DEMO_DATASET_NAME,
            cache_dir=Path(args.cache_dir),
            progress=not args.no_progress,
        )
    )
    print(
        f"saved {result.model_path} in {time.perf_counter() - start:.0f} s; {result.card.summary}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chestx",
        description="ChestX: 14 CheXpert observations from a chest radiograph (not a diagnosis).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train on a CheXpert folder, save model.h5 + card")
    train.add_argument("--data", required=True, help="the CheXpert-v1.0-small folder")
    train.add_argument(
        "--policy",
        default="U-Ones",
        help=f"one of {', '.join(POLICIES)}; 'paper' for the paper's per-task choice; or a "
        "mapping like 'Atelectasis=U-Ones,Cardiomegaly=U-MultiClass,default=U-Zeros'",
    )
    train.add_argument("--epochs", type=int, default=3)
    train.add_argument("--image-size", type=int, default=224, help="224 (default) or 320 (paper)")
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    train.add_argument(
        "--weights", default="imagenet", help="imagenet, none, or a DenseNet121 notop .h5 file"
    )
    train.add_argument("--out", default="model", help="folder for model.h5 and model.json")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--fine-tune",
        action="store_true",
        help="train the whole network on images (default: frozen backbone, cached features)",
    )
    train.add_argument(
        "--mixed-precision",
        action="store_true",
        help="with --fine-tune: float16 maths, float32 weights (for a GPU's tensor cores)",
    )
    train.add_argument("--frontal-only", action="store_true", help="drop lateral views")
    train.add_argument(
        "--val-split",
        type=float,
        default=None,
        help="validate on this fraction of train.csv's patients instead of valid.csv",
    )
    train.add_argument("--cache-dir", default=".cache/features", help="feature cache folder")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser("evaluate", help="AUCs, intervals, ROC plot and reports")
    evaluate.add_argument("--model", default="model/model.h5")
    evaluate.add_argument("--data", required=True, help="a CheXpert CSV, e.g. DIR/valid.csv")
    evaluate.add_argument("--root", default=None, help="dataset folder (default: the CSV's)")
    evaluate.add_argument("--out", default="reports", help="folder for report.json/.csv, roc.png")
    evaluate.add_argument("--batch-size", type=int, default=16)
    evaluate.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.set_defaults(func=cmd_evaluate)

    predict = commands.add_parser("predict", help="print the 14 probabilities for image files")
    predict.add_argument("files", nargs="+", help="PNG, JPEG or DICOM files")
    predict.add_argument("--model", default="model/model.h5")
    predict.add_argument("--json", action="store_true", help="JSON instead of a table")
    predict.set_defaults(func=cmd_predict)

    export = commands.add_parser(
        "export-onnx", help="convert model.h5 to the ONNX file the app serves (done by training)"
    )
    export.add_argument("--model", default="model/model.h5")
    export.add_argument("--out", default=None, help="default: model.onnx beside model.h5")
    export.set_defaults(func=cmd_export_onnx)

    demo_data = commands.add_parser("demo-data", help="write a small CheXpert-shaped dataset")
    demo_data.add_argument("dir", help="where CheXpert-v1.0-small/ is created")
    demo_data.add_argument("--train-patients", type=int, default=150)
    demo_data.add_argument("--valid-patients", type=int, default=50)
    demo_data.add_argument("--size", type=int, default=256, help="image width in pixels")
    demo_data.add_argument("--seed", type=int, default=0)
    demo_data.set_defaults(func=cmd_demo_data)

    demo_model = commands.add_parser(
        "demo-model", help="train a clearly labelled demo model on generated data"
    )
    demo_model.add_argument("--out", default="model")
    demo_model.add_argument("--data-dir", default=str(DEMO_DATA_DIR))
    demo_model.add_argument("--image-size", type=int, default=224)
    demo_model.add_argument("--seed", type=int, default=0)
    demo_model.add_argument("--cache-dir", default=".cache/features")
    demo_model.add_argument("--no-progress", action="store_true")
    demo_model.set_defaults(func=cmd_demo_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_tensorflow()
    try:
        args.func(args)
    except ChestXError as error:
        print(f"chestx: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chestx: interrupted", file=sys.stderr)
        return 130
    return 0
