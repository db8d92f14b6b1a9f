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
    predicted = np.asarray(report["confusion_matrix"]).sum(axis=0)
    for name, guessed in zip(labels, predicted):
        row = report["per_class"][name]
        if row["support"] == 0:  # a class the set does not have (CK+ has no neutral): "–", as the card
            note = f"; predicted for {guessed} face(s)" if guessed else ""
            lines.append(f"{name:<10}{'–':>10}{'–':>10}{'–':>10}{0:>9d}  not in this set{note}")
            continue
        lines.append(
            f"{name:<10}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>9d}"
        )
    lines += ["", "confusion matrix (rows: true, columns: predicted; no row for a class not in the set)"]
    width = max(7, max(len(n) for n in labels) + 1)
    lines.append(" " * 10 + "".join(f"{n[: width - 1]:>{width}}" for n in labels))
    for name, row in zip(labels, report["confusion_matrix"]):
        if report["per_class"][name]["support"]:
            lines.append(f"{name:<10}" + "".join(f"{v:>{width}d}" for v in row))
    return "\n".join(lines)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for telling ``positive`` from the rest: the
    chance that a random positive scores above a random negative (ties count half), by
    the Mann-Whitney rank sum. None when one side has no faces."""
    scores = np.asarray(scores, np.float64)
    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # average ranks over ties (1-based)
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def upset_report(
    probabilities: np.ndarray,
    truth: np.ndarray,
    labels: Sequence[str],
    upset: Sequence[str],
    thresholds: Sequence[float],
) -> dict[str, Any]:
    """How well the summed probability of the ``upset`` emotions tells upset faces (labelled
    with one of them) from calm ones (every other label), and how an alert condition does
    on single faces at each threshold: ``summed`` (the upset emotions' probabilities added
    up reach it) and ``top`` (the top emotion is an upset one and alone reaches it).
    Recall is over upset faces, the false-alarm rate over calm ones."""
    probabilities = np.asarray(probabilities, np.float64)
    columns = [labels.index(name) for name in upset]
    is_upset = np.isin(np.asarray(truth), columns)
    summed = probabilities[:, columns].sum(axis=1)
    top = probabilities.argmax(axis=1)
    top_upset = np.isin(top, columns)
    top_probability = probabilities.max(axis=1)

    def rates(fires: np.ndarray) -> dict[str, float | None]:
        return {
            "recall": float(fires[is_upset].mean()) if is_upset.any() else None,
            "false_alarm_rate": float(fires[~is_upset].mean()) if (~is_upset).any() else None,
        }

    return {
        "emotions": list(upset),
        "upset_faces": int(is_upset.sum()),
        "calm_faces": int((~is_upset).sum()),
        "auc": roc_auc(summed, is_upset),
        "at": [
            {
                "threshold": float(t),
                "summed": rates(summed >= t),
                "top": rates(top_upset & (top_probability >= t)),
            }
            for t in thresholds
        ],
    }
