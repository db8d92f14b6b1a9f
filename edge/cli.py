"""``python -m edge`` / ``fer-kiosk``: the daemon and its tools."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from edge import DEFAULT_MODEL

EX_CONFIG = 78  # sysexits.h: configuration error (systemd's RestartPreventExitStatus)


def _evaluate(args: argparse.Namespace) -> int:
    import cv2

    from edge.contract import ContractError
    from edge.datasets import DatasetError, load_fer2013
    from edge.evaluate import confusion_matrix_image, evaluate
    from edge.metrics import format_report

    try:
        faces = load_fer2013(args.data, args.usage)
        report = evaluate(args.model, faces)
    except (DatasetError, ContractError, RuntimeError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    report["data"] = f"{Path(args.data).name} {args.usage}"
    if args.confusion_png:
        cv2.imwrite(args.confusion_png, confusion_matrix_image(report, f"{report['model']} on {report['data']}"))
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['model']} on {report['data']}")
        print(format_report(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fer-kiosk", description=__doc__)
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("evaluate", help="accuracy, macro-F1, per-class figures and confusion matrix on FER2013")
    ev.add_argument("--data", required=True, help="fer2013.csv[.gz] or a folder with train/ and test/")
    ev.add_argument("--usage", default="PublicTest", help="split to evaluate (default PublicTest)")
    ev.add_argument("--model", default=str(DEFAULT_MODEL), help="a .tflite (with its .json) or a .keras model")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--confusion-png", metavar="FILE", help="also save the confusion matrix as a PNG")
    ev.set_defaults(handler=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return args.handler(args)
