"""``python -m training``: train (or resume) the mini-Xception on FER2013."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict

import training  # sets TensorFlow's environment first


def build_parser() -> argparse.ArgumentParser:
    from training.settings import add_arguments

    parser = argparse.ArgumentParser(
        prog=training.prog_name("training", "fer-kiosk-train"),
        description="Train the mini-Xception on FER2013 (CSV or image folders). "
        "Running the same command again resumes a stopped run from its last finished epoch.",
    )
    parser.add_argument(
        "--run-dir",
        required=True,
        help="folder for checkpoints, log and state (keep it outside the repository)",
    )
    add_arguments(parser)  # every training setting (training/settings.py)
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=None,
        help="1: progress bar (default on a terminal), 2: one line per epoch",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """0: trained; 2: the command line is wrong (argparse's refusals, a setting out of range,
    the train extra missing); 1: the run cannot start or go on (its data, its folder)."""
    from training.settings import TrainingError, settings_from_args

    args = build_parser().parse_args(argv)
    try:  # checked before anything is loaded, as argparse checks the rest of the command line
        settings = settings_from_args(args)
    except TrainingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    missing = training.missing_train_extra(training.prog_name("training", "fer-kiosk-train"))
    if missing:
        print(missing, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from edge.tools.datasets import DatasetError
    from training.train import final_report, train

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
