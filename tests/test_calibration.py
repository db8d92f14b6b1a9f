"""Temperature scaling: the fitted temperature recovers a known one, never changes the
winner, and lowers the calibration error it is meant to lower."""

import numpy as np
import pytest

from edge.calibration import apply_temperature, expected_calibration_error, fit_temperature


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def overconfident(n=4000, true_t=2.5, seed=0):
    """Labels drawn from softmax(z); the model reports softmax(z * true_t): overconfident."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, 7))
    calibrated = softmax(logits)
    labels = np.array([rng.choice(7, p=p) for p in calibrated])
    return softmax(logits * true_t).astype(np.float32), labels


def test_fit_recovers_the_temperature_that_made_it_overconfident():
    probs, labels = overconfident()
    assert fit_temperature(probs, labels) == pytest.approx(2.5, rel=0.1)


def test_scaling_keeps_the_winner_and_lowers_ece():
    probs, labels = overconfident()
    t = fit_temperature(probs, labels)
    scaled = apply_temperature(probs, t)
    assert (scaled.argmax(1) == probs.argmax(1)).all()
    assert np.allclose(scaled.sum(1), 1, atol=1e-5)
    before, after = expected_calibration_error(probs, labels), expected_calibration_error(scaled, labels)
    assert before > 0.1 and after < 0.03, (before, after)


def test_temperature_one_is_the_identity_and_ece_of_a_perfect_model_is_zero():
    probs, labels = overconfident(200)
    assert np.array_equal(apply_temperature(probs, 1.0), probs)
    one_hot = np.eye(7, dtype=np.float32)[labels]
    assert expected_calibration_error(one_hot, labels) == 0.0
    with pytest.raises(ValueError):
        fit_temperature(probs[:0], labels[:0])
