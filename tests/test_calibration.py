"""Temperature scaling: the fitted temperature recovers a known one, never changes the
winner, and lowers the calibration error it is meant to lower. The class balance: answers
a rare class the model under-answers more often, chosen for macro-F1, and stays off when
nothing is rare."""

import numpy as np
import pytest

from edge.tools.calibration import (
    class_bias_of,
    expected_calibration_error,
    fit_class_balance,
    fit_temperature,
)
from edge.tools.metrics import classification_report
from edge.vision.calibration import calibrate


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
    scaled = calibrate(probs, t)
    assert (scaled.argmax(1) == probs.argmax(1)).all()
    assert np.allclose(scaled.sum(1), 1, atol=1e-5)
    before, after = expected_calibration_error(probs, labels), expected_calibration_error(scaled, labels)
    assert before > 0.1 and after < 0.03, (before, after)


def test_temperature_one_is_the_identity_and_ece_of_a_perfect_model_is_zero():
    probs, labels = overconfident(200)
    assert np.array_equal(calibrate(probs, 1.0), probs)
    one_hot = np.eye(7, dtype=np.float32)[labels]
    assert expected_calibration_error(one_hot, labels) == 0.0
    with pytest.raises(ValueError):
        fit_temperature(probs[:0], labels[:0])


def shy_of_a_rare_class(n=6000, seed=1):
    """Class 1 is rare (3 % of the faces) and the model, trained on those shares, is shy of
    it: its evidence for class 1 is real but its probabilities carry the prior's weight."""
    rng = np.random.default_rng(seed)
    shares = np.array([0.2, 0.03, 0.15, 0.25, 0.17, 0.1, 0.1])
    labels = rng.choice(7, size=n, p=shares)
    evidence = rng.normal(0, 1.0, (n, 7))
    evidence[np.arange(n), labels] += 1.6
    return softmax(evidence + np.log(shares)).astype(np.float32), labels


def test_class_balance_answers_a_rare_class_more_often_and_raises_macro_f1():
    probs, labels = shy_of_a_rare_class()
    strength, bias = fit_class_balance(probs, labels)
    assert 0 < strength <= 1 and len(bias) == 7 and abs(sum(bias)) < 1e-3
    assert bias == class_bias_of(labels, 7, strength) and bias[1] == max(bias)  # the rarest gains most
    names = [str(c) for c in range(7)]
    before = classification_report(labels, probs.argmax(1), names)
    balanced = calibrate(probs, 1.0, bias)
    after = classification_report(labels, balanced.argmax(1), names)
    assert after["per_class"]["1"]["recall"] > before["per_class"]["1"]["recall"] + 0.1
    assert after["macro_f1"] > before["macro_f1"] + 0.01
    # Fitted after the balance, the temperature keeps the balanced answers honest.
    t = fit_temperature(probs, labels, bias)
    scaled = calibrate(probs, t, bias)
    assert (scaled.argmax(1) == balanced.argmax(1)).all()
    assert expected_calibration_error(scaled, labels) < 0.03


def test_no_class_balance_when_the_classes_are_even():
    probs, labels = overconfident(3000)  # shares even, the model not shy of any class
    strength, bias = fit_class_balance(probs, labels)
    assert strength <= 0.1 and (bias == () or max(map(abs, bias)) < 0.05)
    with pytest.raises(ValueError):
        fit_class_balance(probs[:0], labels[:0])


def test_calibrate_never_rewrites_the_installed_packages_model(tmp_path, monkeypatch, capsys):
    """Without --model, converter.calibrate calibrates edge/models' bundled model in a checkout;
    from an installed package (site-packages) it refuses, saying to pass --model on a copy."""
    import shutil

    import converter.calibrate as calibrate
    from edge import DEFAULT_MODEL

    models = tmp_path / "lib/python3.11/site-packages/edge/models"
    models.mkdir(parents=True)
    for suffix in (".tflite", ".json"):
        shutil.copy(DEFAULT_MODEL.with_suffix(suffix), models)
    installed = models / DEFAULT_MODEL.name
    before = installed.with_suffix(".json").read_bytes()
    monkeypatch.setattr(calibrate, "DEFAULT_MODEL", installed)
    assert calibrate.main(["--data", str(tmp_path / "fer2013.csv")]) == 2
    said = capsys.readouterr().err.strip()
    assert said.startswith("error: --model not given, and the bundled model is inside the installed package")
    assert said.endswith("pass --model COPY.tflite") and "\n" not in said
    assert installed.with_suffix(".json").read_bytes() == before
