"""Confidence that means what it says, and rare emotions that get answered: temperature
scaling, a class balance, and their measures.

A network trained with cross-entropy (and averaged over test-time views) is rarely
calibrated: of the faces it calls "happy, 0.9", far fewer or far more than 90 % are happy.
One temperature T, fitted on the validation split (never on test data) by minimising the
negative log-likelihood, rescales every answer. It never changes which emotion wins, only
how sure the payloads say the model is.

Trained on FER2013's shares (7,215 happy faces, 436 disgust), the model also answers the
rare emotions too seldom: it is right when it says "disgust" and rarely says it. A class
balance b = -tau * log(prior) added to the log-probabilities (logit adjustment, Menon et
al., 2021) moves the decision towards the rare classes; its strength tau in 0..1 is chosen
on the validation split for the best macro-F1 (0: none). The temperature is fitted after
it, so the balanced answers are calibrated too: p' = softmax((log(p) + b) / T). The
converter fits both and writes them into the model contract; the daemon applies them to
every face
(this module); the fitting and the measures are edge/tools/calibration.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Probabilities are floored here before their log is taken: an int8 output can round a class
# to exactly 0 on every view.
PROBABILITY_FLOOR = 1e-7


def calibrate(probabilities: np.ndarray, temperature: float, class_bias: Sequence[float] = ()) -> np.ndarray:
    """``softmax((log(p) + class_bias) / T)`` row by row; T = 1 without a bias returns the
    probabilities unchanged."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if (temperature == 1.0 and not len(class_bias)) or probabilities.size == 0:
        return probabilities
    logits = np.log(np.clip(probabilities, PROBABILITY_FLOOR, 1.0))
    if len(class_bias):
        logits += np.asarray(class_bias, dtype=np.float32)
    logits /= np.float32(temperature)
    logits -= logits.max(axis=-1, keepdims=True)
    scaled = np.exp(logits)
    return (scaled / scaled.sum(axis=-1, keepdims=True)).astype(np.float32)
