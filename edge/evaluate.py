"""Accuracy of a model on FER2013 faces, for a .tflite (base install) or a .keras model.

A FER2013 image is already a face crop: it is classified whole, without the detector.
A .tflite model goes through ``EmotionClassifier``, the daemon's own code path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.contract import EMOTIONS, VIEW_SETS
from edge.datasets import FaceSet
from edge.metrics import classification_report


def predict_probabilities(
    model_path: str | Path, faces: FaceSet, views: str | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Probabilities for every face. ``views`` names a set in VIEW_SETS; None means the
    .tflite contract's own views (a .keras model has no contract: a single view)."""
    model_path = Path(model_path)
    if views is not None and views not in VIEW_SETS:
        raise ValueError(f"unknown view set {views!r}; expected one of {list(VIEW_SETS)}")
    if model_path.suffix == ".keras":
        try:
            import training  # noqa: F401  (TensorFlow's environment)
            import keras

            from training.model import keras_probabilities
        except ImportError as err:
            raise RuntimeError("evaluating a .keras model needs the train extra: pip install -e '.[train]'") from err
        model = keras.models.load_model(model_path, compile=False)
        return keras_probabilities(model, faces.images, VIEW_SETS[views or "single"]), EMOTIONS
    from edge.classifier import EmotionClassifier

    classifier = EmotionClassifier(model_path, views=None if views is None else VIEW_SETS[views])
    return classifier.classify_many(faces.images), classifier.labels


def evaluate(model_path: str | Path, faces: FaceSet, views: str | None = None) -> dict[str, Any]:
    probs, labels = predict_probabilities(model_path, faces, views)
    if tuple(labels) != EMOTIONS:
        raise RuntimeError(f"model labels {list(labels)} differ from FER2013's {list(EMOTIONS)}")
    report = classification_report(faces.labels, probs.argmax(axis=1), labels)
    report["model"] = Path(model_path).name
    return report


def confusion_matrix_image(report: dict[str, Any], title: str = "") -> np.ndarray:
    """A row-normalised confusion matrix as a BGR image (drawn with OpenCV: no matplotlib)."""
    labels, matrix = report["labels"], np.asarray(report["confusion_matrix"], dtype=np.float64)
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    cell, left, top = 70, 110, 90
    n = len(labels)
    image = np.full((top + n * cell + 20, left + n * cell + 20, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i in range(n):
        for j in range(n):
            shade = int(255 * (1 - rows[i, j]))
            x0, y0 = left + j * cell, top + i * cell
            cv2.rectangle(image, (x0, y0), (x0 + cell, y0 + cell), (255, shade, shade), -1)
            cv2.rectangle(image, (x0, y0), (x0 + cell, y0 + cell), (200, 200, 200), 1)
            color = (255, 255, 255) if rows[i, j] > 0.5 else (0, 0, 0)
            cv2.putText(image, f"{rows[i, j]:.2f}", (x0 + 12, y0 + 32), font, 0.5, color, 1, cv2.LINE_AA)
            cv2.putText(image, f"{int(matrix[i, j])}", (x0 + 12, y0 + 52), font, 0.4, color, 1, cv2.LINE_AA)
        cv2.putText(image, labels[i], (8, top + i * cell + 40), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(image, labels[i][:8], (left + i * cell + 4, top - 10), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    heading = title or f"accuracy {report['accuracy']:.3f}  macro-F1 {report['macro_f1']:.3f}  (rows: true)"
    cv2.putText(image, heading, (8, 30), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, "predicted ->", (left, 60), font, 0.45, (80, 80, 80), 1, cv2.LINE_AA)
    return image
