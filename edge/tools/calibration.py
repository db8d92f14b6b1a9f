"""Fitting the calibration the daemon applies (edge/vision/calibration.py) on labelled
faces, and its measures: the class balance's strength (best macro-F1), the temperature (least
negative log-likelihood), and the expected calibration error. Used by the converter, which
writes what it fits into the model contract, and by evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.tools.metrics import classification_report
from edge.vision.calibration import PROBABILITY_FLOOR, calibrate

# The class balance's strengths tried on validation: a coarse grid, so that choosing among
# them does not fit the validation faces' noise.
BALANCE_STRENGTHS = tuple(round(0.1 * step, 1) for step in range(11))


def class_bias_of(labels: np.ndarray, classes: int, strength: float) -> tuple[float, ...]:
    """``-strength * log(share of each class among labels)``, centred on 0 (a class without
    faces is treated as having one)."""
    counts = np.maximum(np.bincount(np.asarray(labels), minlength=classes), 1)
    bias = -strength * np.log(counts / counts.sum())
    return tuple(round(float(b), 4) for b in bias - bias.mean())


def fit_class_balance(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, tuple[float, ...]]:
    """The strength in ``BALANCE_STRENGTHS`` whose class balance gives the best macro-F1 of
    ``labels`` (ties go to the weaker one), and that balance."""
    if len(labels) == 0:
        raise ValueError("no faces to fit a class balance on")
    classes = probabilities.shape[1]
    names = [str(c) for c in range(classes)]

    def macro_f1(strength: float) -> float:
        predicted = calibrate(probabilities, 1.0, class_bias_of(labels, classes, strength)).argmax(axis=1)
        return classification_report(labels, predicted, names)["macro_f1"]

    strength = max(BALANCE_STRENGTHS, key=lambda s: (round(macro_f1(s), 9), -s))
    return strength, (class_bias_of(labels, classes, strength) if strength > 0 else ())


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, PROBABILITY_FLOOR, 1.0)).mean())


def fit_temperature(
    probabilities: np.ndarray,
    labels: np.ndarray,
    class_bias: Sequence[float] = (),
    low: float = 0.05,
    high: float = 10.0,
) -> float:
    """The T that minimises the negative log-likelihood of ``labels`` (golden-section search
    on log T; the NLL is unimodal in T for a fixed ranking), after ``class_bias``."""
    if len(labels) == 0:
        raise ValueError("no faces to fit a temperature on")
    ratio = (np.sqrt(5) - 1) / 2
    a, b = np.log(low), np.log(high)

    def loss(log_t: float) -> float:
        return negative_log_likelihood(calibrate(probabilities, float(np.exp(log_t)), class_bias), labels)

    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(d)
    return round(float(np.exp((a + b) / 2)), 4)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE (Guo et al., 2017): over equal-width confidence bins, the share-weighted gap
    between how sure the top answer is and how often it is right. 0 is perfect."""
    probabilities = np.asarray(probabilities)
    if len(labels) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return float(error)
