"""Calibration of a converted model: a class balance and a temperature, fitted on the
validation split its training held out, written into its contract (the .tflite is not
touched).

The converter calls :func:`fit_calibration` on every model it writes; ``python -m
converter.calibrate`` fits it again for a model already converted (one converted before
calibration existed has temperature 1 and no class balance). Needs no TensorFlow: the
probabilities come from the daemon's own classifier.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge import DEFAULT_MODEL
from edge.contract import ContractError, save_contract
from edge.tools.calibration import (
    expected_calibration_error,
    fit_class_balance,
    fit_temperature,
    negative_log_likelihood,
)
from edge.tools.datasets import DatasetError, FaceSet, load_fer2013, load_validation
from edge.tools.evaluate import validation_settings
from edge.tools.metrics import classification_report
from edge.vision.calibration import calibrate
from edge.vision.classifier import EmotionClassifier

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    """What the converter writes into a contract: the temperature, the class balance, and
    the figures before and after on the validation split and the check faces."""

    temperature: float
    class_bias: tuple[float, ...]
    report: dict[str, Any]


def fit_calibration(classifier: EmotionClassifier, validation: FaceSet, check: FaceSet) -> Calibration:
    """The class balance with the best macro-F1 on the validation split, then the temperature
    that makes the balanced probabilities honest there; the calibration error, NLL and
    macro-F1 before and after on both sets. The classifier's own calibration is set aside (it
    is what is being fitted)."""
    classifier.contract = replace(classifier.contract, temperature=1.0, class_bias=())
    raw_val = classifier.classify_many(validation.images)
    raw_check = classifier.classify_many(check.images)
    strength, class_bias = fit_class_balance(raw_val, validation.labels)
    temperature = fit_temperature(raw_val, validation.labels, class_bias)
    names = list(classifier.labels)

    def figures(raw: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        scaled = calibrate(raw, temperature, class_bias)
        before, after = (classification_report(labels, p.argmax(1), names) for p in (raw, scaled))
        return {
            "ece_before": round(expected_calibration_error(raw, labels), 4),
            "ece_after": round(expected_calibration_error(scaled, labels), 4),
            "nll_before": round(negative_log_likelihood(raw, labels), 4),
            "nll_after": round(negative_log_likelihood(scaled, labels), 4),
            "accuracy_before": round(before["accuracy"], 4),
            "accuracy_after": round(after["accuracy"], 4),
            "macro_f1_before": round(before["macro_f1"], 4),
            "macro_f1_after": round(after["macro_f1"], 4),
            "recall_after": {name: round(row["recall"], 4) for name, row in after["per_class"].items()},
        }

    report = {
        "temperature": temperature,
        "class_balance_strength": strength,
        "class_bias": list(class_bias),
        "fitted_on": "validation split (carved from Training)",
        "validation": figures(raw_val, validation.labels),
        "check": figures(raw_check, check.labels),
    }
    _LOGGER.info(
        "calibration: class balance %.1f, temperature %.3f; on the check faces ECE %.3f -> %.3f, "
        "macro-F1 %.3f -> %.3f",
        strength,
        temperature,
        report["check"]["ece_before"],
        report["check"]["ece_after"],
        report["check"]["macro_f1_before"],
        report["check"]["macro_f1_after"],
    )
    return Calibration(temperature, class_bias, report)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m converter.calibrate",
        description="Fit a converted model's class balance and calibration temperature on the "
        "validation split its training held out (carved from FER2013 Training as its contract "
        "records) and write them into the model's contract; their effect (calibration error, "
        "accuracy, macro-F1) is reported on the check split.",
    )
    p.add_argument(
        "--model",
        default=None,
        help="NAME.tflite with its NAME.json, whose contract is rewritten (default, in a checkout "
        "only: edge/models' bundled model; an installed package's is never rewritten)",
    )
    p.add_argument("--data", required=True, help="FER2013 (CSV or folders) the model was trained on")
    p.add_argument(
        "--check-usage",
        default="PublicTest",
        help="split the calibration error is reported on (default PublicTest)",
    )
    return p


def installed_package(path: Path) -> bool:
    """Whether ``path`` lies in an installed package (site-packages), not in a checkout."""
    return any(part in ("site-packages", "dist-packages") for part in path.parts)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.model is None and installed_package(DEFAULT_MODEL):
        print(
            f"error: --model not given, and the bundled model is inside the installed package "
            f"({DEFAULT_MODEL.parent}), which this would rewrite: copy {DEFAULT_MODEL.name} and "
            f"{DEFAULT_MODEL.with_suffix('.json').name} elsewhere and pass --model COPY.tflite",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model = Path(args.model) if args.model is not None else DEFAULT_MODEL
    try:
        classifier = EmotionClassifier(model)  # a missing or damaged model is named here
        contract = classifier.contract
        validation = load_validation(args.data, *validation_settings(contract))
        check = load_fer2013(args.data, args.check_usage)
        fitted = fit_calibration(classifier, validation, check)
        evaluation = {**contract.evaluation, "calibration": fitted.report}
        recalibrated = replace(
            contract, temperature=fitted.temperature, class_bias=fitted.class_bias, evaluation=evaluation
        )
        save_contract(recalibrated, model)
    except (ContractError, DatasetError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"model": str(model), **fitted.report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
