"""Confidence that means what it says: temperature scaling and its measure.

A network trained with cross-entropy (and averaged over test-time views) is rarely
calibrated: of the faces it calls "happy, 0.9", far fewer or far more than 90 % are happy.
One temperature T, fitted on the validation split (never on test data) by minimising the
negative log-likelihood, rescales every answer: p' = softmax(log(p) / T). It never changes
which emotion wins, only how sure the payloads say the model is. The converter fits T and
writes it into the model contract; the daemon applies it to every face.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-7


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(p) / T)`` row by row; T = 1 returns the probabilities unchanged."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if temperature == 1.0 or probabilities.size == 0:
        return probabilities
    logits = np.log(np.clip(probabilities, _EPS, 1.0)) / np.float32(temperature)
    logits -= logits.max(axis=-1, keepdims=True)
    scaled = np.exp(logits)
    return (scaled / scaled.sum(axis=-1, keepdims=True)).astype(np.float32)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, _EPS, 1.0)).mean())


def fit_temperature(
    probabilities: np.ndarray, labels: np.ndarray, low: float = 0.05, high: float = 10.0
) -> float:
    """The T that minimises the negative log-likelihood of ``labels`` (golden-section search
    on log T; the NLL is unimodal in T for a fixed ranking)."""
    if len(labels) == 0:
        raise ValueError("no faces to fit a temperature on")
    ratio = (np.sqrt(5) - 1) / 2
    a, b = np.log(low), np.log(high)

    def loss(log_t: float) -> float:
        return negative_log_likelihood(apply_temperature(probabilities, float(np.exp(log_t))), labels)

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
