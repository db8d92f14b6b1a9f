"""``python -m training``: train (or resume) the mini-Xception on FER2013."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, fields

import training  # sets TensorFlow's environment first


def build_parser() -> argparse.ArgumentParser:
    from training.augment import Augmentation
    from training.settings import ARCHITECTURE_NAMES, CLASS_WEIGHT_MODES, SCHEDULES, TrainSettings

    d = TrainSettings(data="")
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train the mini-Xception on FER2013 (CSV or image folders). "
        "Running the same command again resumes a stopped run from its last finished epoch.",
    )
    p.add_argument("--data", required=True, help="fer2013.csv[.gz] or a folder with train/<emotion>/ and test/<emotion>/")
    p.add_argument("--run-dir", required=True, help="folder for checkpoints, log and state (keep it outside the repository)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="maximum epochs; early stopping usually ends sooner")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--validation-fraction", type=float, default=d.validation_fraction,
                   help="share of Training held out (stratified) to pick the checkpoint and drive the schedule")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--class-weights", choices=CLASS_WEIGHT_MODES, default=d.class_weights,
                   help="weigh rare classes (disgust) up: 'balanced' = inverse frequency, 'sqrt' = its square root")
    p.add_argument("--lr-patience", type=int, default=d.lr_patience)
    p.add_argument("--stop-patience", type=int, default=d.stop_patience)
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                   help="plateau: drop the rate when validation loss stalls; cosine: anneal it over --epochs")
    p.add_argument("--min-learning-rate", type=float, default=d.min_learning_rate)
    p.add_argument("--init-from", default="", help="start from this .keras checkpoint (a second training stage)")
    p.add_argument("--keep-epoch-weights", action="store_true",
                   help="save every epoch's weights under RUN/epochs/ (for averaging them afterwards)")
    p.add_argument("--teacher", default="",
                   help="distil from this trained .keras model: its probabilities on each training face "
                   "are mixed into the target")
    p.add_argument("--teacher-views", default=d.teacher_views,
                   help="test-time views the teacher's probabilities are averaged over (single, mirror, mirror-shift)")
    p.add_argument("--distill-weight", type=float, default=d.distill_weight,
                   help="share of the target that is the teacher's distribution (the rest is the label)")
    p.add_argument("--distill-temperature", type=float, default=d.distill_temperature,
                   help="softens the teacher's distribution (1: as it is)")
    p.add_argument("--architecture", choices=ARCHITECTURE_NAMES, default=d.architecture,
                   help="mini_xception: the shipped model; vgg: a larger teacher to distil from")
    p.add_argument("--l2", type=float, default=None,
                   help="L2 weight on the convolutions (default: 0.01 for mini_xception, 1e-4 for vgg)")
    p.add_argument("--augmentation", type=json.loads, default={},
                   help="JSON object overriding augmentation fields, e.g. "
                   "'{\"erasing_probability\": 0.5, \"brightness\": 0.2}' (fields: "
                   + ", ".join(f.name for f in fields(Augmentation)) + ")")
    p.add_argument("--max-train-faces", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None,
                   help="1: progress bar (default on a terminal), 2: one line per epoch")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = training.missing_train_extra("fer-kiosk-train")
    if missing:
        print(missing, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from edge.datasets import DatasetError
    from training.settings import TrainSettings
    from training.train import TrainingError, final_report, train

    from training.augment import Augmentation

    unknown = set(args.augmentation) - {f.name for f in fields(Augmentation)}
    if unknown:
        print(f"error: --augmentation: unknown fields {sorted(unknown)}", file=sys.stderr)
        return 2
    l2 = args.l2 if args.l2 is not None else (1e-4 if args.architecture == "vgg" else TrainSettings(data="").l2)
    settings = TrainSettings(
        architecture=args.architecture,
        l2=l2,
        augmentation={**asdict(Augmentation()), **args.augmentation},
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
        class_weights=args.class_weights,
        lr_patience=args.lr_patience,
        stop_patience=args.stop_patience,
        max_train_faces=args.max_train_faces,
        schedule=args.schedule,
        min_learning_rate=args.min_learning_rate,
        init_from=args.init_from,
        keep_epoch_weights=args.keep_epoch_weights,
        teacher=args.teacher,
        teacher_views=args.teacher_views,
        distill_weight=args.distill_weight,
        distill_temperature=args.distill_temperature,
    )
    try:
        state = train(settings, args.run_dir, verbose=args.verbose)
        report = final_report(settings, args.run_dir)
    except (DatasetError, TrainingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    summary = {
        "state": asdict(state),
        "validation_accuracy": report["validation"]["accuracy"],
        "public_test_accuracy": report.get("PublicTest", {}).get("accuracy"),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
