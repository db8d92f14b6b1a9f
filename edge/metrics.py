"""Classification figures: pure functions over labels and predictions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are the true class, columns the predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(truth), np.asarray(predicted)), 1)
    return matrix


def classification_report(truth: np.ndarray, predicted: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    matrix = confusion_matrix(truth, predicted, len(labels))
    true_pos = np.diag(matrix).astype(np.float64)
    predicted_total = matrix.sum(axis=0)
    actual_total = matrix.sum(axis=1)
    precision = np.divide(true_pos, predicted_total, out=np.zeros_like(true_pos), where=predicted_total > 0)
    recall = np.divide(true_pos, actual_total, out=np.zeros_like(true_pos), where=actual_total > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(true_pos), where=denom > 0)
    n = int(matrix.sum())
    # Averages run over the classes the data has (CK+ has no neutral faces): a class without
    # faces has no recall to measure, and its F1 would be 0 whatever the model did.
    present = actual_total > 0
    return {
        "accuracy": float(true_pos.sum() / n) if n else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(labels, precision, recall, f1, actual_total)
        },
        "confusion_matrix": matrix.tolist(),
        "labels": list(labels),
        "n": n,
    }


def format_report(report: dict[str, Any]) -> str:
    labels = report["labels"]
    lines = [
        f"faces: {report['n']}   accuracy: {report['accuracy']:.4f}   "
        f"balanced accuracy: {report['balanced_accuracy']:.4f}   macro-F1: {report['macro_f1']:.4f}",
        "",
        f"{'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}",
    ]
    for name in labels:
        row = report["per_class"][name]
        lines.append(
            f"{name:<10}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>9d}"
        )
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    width = max(7, max(len(n) for n in labels) + 1)
    lines.append(" " * 10 + "".join(f"{n[: width - 1]:>{width}}" for n in labels))
    for name, row in zip(labels, report["confusion_matrix"]):
        lines.append(f"{name:<10}" + "".join(f"{v:>{width}d}" for v in row))
    return "\n".join(lines)
