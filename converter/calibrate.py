"""Calibration of a converted model: one temperature, fitted on the validation split its
training held out, written into its contract (the .tflite is not touched).

The converter calls :func:`fit_calibration` on every model it writes; ``python -m
converter.calibrate`` fits it again for a model already converted (one converted before
calibration existed has temperature 1). Needs no TensorFlow: the probabilities come from
the daemon's own classifier.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edge import DEFAULT_MODEL
from edge.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)
from edge.classifier import EmotionClassifier
from edge.contract import ContractError, save_contract
from edge.datasets import DatasetError, FaceSet, load_fer2013, load_validation
from edge.evaluate import validation_settings

_LOGGER = logging.getLogger(__name__)


def fit_calibration(
    classifier: EmotionClassifier, validation: FaceSet, check: FaceSet
) -> tuple[float, dict[str, Any]]:
    """The temperature that makes the model's view-averaged probabilities honest, fitted on
    the validation split; the calibration error before and after on both sets. The
    classifier's own temperature is set aside (it is what is being fitted)."""
    classifier.contract = replace(classifier.contract, temperature=1.0)
    raw_val = classifier.classify_many(validation.images)
    raw_check = classifier.classify_many(check.images)
    temperature = fit_temperature(raw_val, validation.labels)

    def figures(raw: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        scaled = apply_temperature(raw, temperature)
        return {
            "ece_before": round(expected_calibration_error(raw, labels), 4),
            "ece_after": round(expected_calibration_error(scaled, labels), 4),
            "nll_before": round(negative_log_likelihood(raw, labels), 4),
            "nll_after": round(negative_log_likelihood(scaled, labels), 4),
        }

    report = {
        "temperature": temperature,
        "fitted_on": "validation split (carved from Training)",
        "validation": figures(raw_val, validation.labels),
        "check": figures(raw_check, check.labels),
    }
    _LOGGER.info(
        "calibration: temperature %.3f; ECE on the check faces %.3f -> %.3f",
        temperature,
        report["check"]["ece_before"],
        report["check"]["ece_after"],
    )
    return temperature, report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m converter.calibrate",
        description="Fit a converted model's calibration temperature on the validation split its "
        "training held out (carved from FER2013 Training as its contract records) and write it "
        "into the model's contract; the calibration error before and after is reported on the "
        "check split.",
    )
    p.add_argument(
        "--model",
        default=str(DEFAULT_MODEL),
        help="NAME.tflite with its NAME.json (default: the model the edge package ships)",
    )
    p.add_argument("--data", required=True, help="FER2013 (CSV or folders) the model was trained on")
    p.add_argument(
        "--check-usage",
        default="PublicTest",
        help="split the calibration error is reported on (default PublicTest)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model = Path(args.model)
    try:
        classifier = EmotionClassifier(model)  # a missing or damaged model is named here
        contract = classifier.contract
        validation = load_validation(args.data, *validation_settings(contract))
        check = load_fer2013(args.data, args.check_usage)
        temperature, report = fit_calibration(classifier, validation, check)
        evaluation = {**contract.evaluation, "calibration": report}
        save_contract(replace(contract, temperature=temperature, evaluation=evaluation), model)
    except (ContractError, DatasetError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"model": str(model), **report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
