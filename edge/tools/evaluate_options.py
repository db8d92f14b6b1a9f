"""The command-line options of ``fer-kiosk evaluate`` and ``python -m training.evaluate``.

Apart from ``edge.tools.evaluate`` so that building the ``fer-kiosk`` parser (for every
subcommand, the dashboard's too) does not load OpenCV and numpy."""

from __future__ import annotations

import argparse
import os

from edge.contract import VIEW_SETS

# The model card's data options, each also read from an environment variable.
CARD_OPTIONS = {
    "fer2013": ("FER2013_PATH", "fer2013.csv[.gz] or its image folders: the validation and PublicTest rows"),
    "wild": ("FER_WILD_PATH", "the expressions-wild folder (face crops, labels.csv)"),
    "ckplus": ("FER_CKPLUS_PATH", "the CK+48 folder (face crops, labels.csv)"),
}


def add_arguments(parser: argparse.ArgumentParser, model_default: str | None, model_help: str) -> None:
    parser.add_argument("--model", default=model_default, required=model_default is None, help=model_help)
    parser.add_argument(
        "--data",
        help="fer2013.csv[.gz], a FER2013 image-folder root, or a folder with "
        "labels.csv (file,emotion) of face crops (or of photos, with --detect)",
    )
    parser.add_argument(
        "--usage",
        default="PublicTest",
        help="FER2013 split: PublicTest (default), PrivateTest, Training, or validation "
        "(the share of Training the model's training held out)",
    )
    parser.add_argument(
        "--detect",
        action="store_true",
        help="--data holds full-frame photos: find and crop faces with the daemon's "
        "detector and crop rule, and count photos with no face or several faces",
    )
    parser.add_argument(
        "--card",
        action="store_true",
        help="the model card's table: FER2013 validation and PublicTest, "
        "expressions-wild and CK+48 (the sources given below)",
    )
    for option, (env, what) in CARD_OPTIONS.items():
        parser.add_argument(
            f"--{option}",
            default=os.environ.get(env) or None,
            metavar="PATH",
            help=f"with --card: {what} (default: ${env})",
        )
    parser.add_argument(
        "--views",
        choices=tuple(VIEW_SETS),
        default=None,
        help="test-time views averaged per face (default: the model's own)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (with --card: a list, one per row)")
    parser.add_argument(
        "--confusion-png",
        metavar="FILE",
        help="also save the confusion matrix as a PNG (with --card: FILE-ROW.png per row)",
    )
