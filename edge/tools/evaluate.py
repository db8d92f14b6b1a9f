"""How well a model does on labelled faces, and the model card that gathers those figures.

Sources, all giving the same report (``edge.tools.metrics.classification_report``):

- FER2013 (CSV or image folders): a split, or ``validation``, the share of Training that
  training held out (``edge.tools.datasets.load_validation``).
- A folder with ``labels.csv`` of face crops: each image is classified whole, resized to
  the model's input, like a FER2013 face.
- A folder with ``labels.csv`` of photos, with ``detect``: each photo goes through the
  daemon's own ``FramePipeline`` (Haar detector, the contract's crop rule); the largest
  face is the one classified, and photos with no face or several faces are counted.

This module runs a .tflite model through ``EmotionClassifier``, the daemon's code path: the
edge never imports training. ``python -m training.evaluate`` does the same for a .keras
model with its own classifier and this module's code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edge.config import AlertRuleConfig, DetectorConfig
from edge.contract import EMOTIONS, VIEW_SETS, ContractError, ModelContract
from edge.tools.calibration import expected_calibration_error
from edge.tools.datasets import (
    SPLIT_SEED,
    VALIDATION_FRACTION,
    DatasetError,
    FaceSet,
    LabelledFiles,
    holds_fer2013,
    is_labelled_folder,
    load_face_folder,
    load_fer2013,
    load_validation,
    read_image,
    read_labelled_folder,
)
from edge.tools.evaluate_options import CARD_OPTIONS
from edge.tools.metrics import classification_report, format_report, upset_report
from edge.vision.detect import HaarFaceDetector
from edge.vision.pipeline import PHOTO_DETECTOR, FramePipeline

KERAS_HINT = "a .keras model is evaluated by training: python -m training.evaluate --model FILE.keras"
VALIDATION = "validation"  # the usage name of the split carved from Training

# The model card's rows (option, row name, FER2013 usage; a labelled folder of face crops has
# no usage); its options are in edge.tools.evaluate_options.
CARD_ROWS = (
    ("fer2013", "FER2013 validation", VALIDATION),
    ("fer2013", "FER2013 PublicTest", "PublicTest"),
    ("wild", "expressions-wild", None),
    ("ckplus", "CK+48", None),
)


# The upset-vs-calm figures are those of the default alert rule (rules.alerts): its emotions,
# its signal and threshold, and 0.4 beside them (a lower bar, for comparison).
ALERT_RULE = AlertRuleConfig()
UPSET_THRESHOLDS = tuple(sorted({0.4, 0.5, ALERT_RULE.min_probability}))

# The ship rule (docs/model.md, "The ship rule"): a candidate's score is the mean of these
# figures of its card; it ships if that beats the shipped model's and its FER2013
# validation accuracy is at most SHIP_MAX_VALIDATION_DROP below the shipped model's.
SHIP_SCORE_FIGURES = (
    ("FER2013 validation", "macro_f1"),
    ("expressions-wild", "macro_f1"),
    ("CK+48", "macro_f1"),
    ("expressions-wild", "upset_auc"),
    ("CK+48", "upset_auc"),
)
SHIP_MAX_VALIDATION_DROP = 0.01


class Classifier(Protocol):
    """What evaluation needs of a model: ``EmotionClassifier`` or training's Keras twin."""

    contract: ModelContract

    @property
    def labels(self) -> tuple[str, ...]: ...

    def classify(self, crops: np.ndarray) -> np.ndarray: ...

    def classify_many(self, crops: np.ndarray) -> np.ndarray: ...


class EvaluationError(Exception):
    """Nothing to evaluate, or a model that cannot be evaluated here; the message says why."""


def load_classifier(model_path: str | Path, views: str | None = None):
    """The daemon's classifier for a .tflite; ``views`` overrides the contract's views."""
    from edge.vision.classifier import EmotionClassifier

    model_path = Path(model_path)
    if model_path.suffix == ".keras":
        raise EvaluationError(f"{model_path.name}: fer-kiosk evaluates .tflite models; {KERAS_HINT}")
    return EmotionClassifier(model_path, views=None if views is None else VIEW_SETS[views])


def report_from_predictions(
    truth: np.ndarray, predicted: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    if tuple(labels) != EMOTIONS:
        raise ContractError(f"model labels {list(labels)} differ from the data's {list(EMOTIONS)}")
    return classification_report(np.asarray(truth, np.int64), np.asarray(predicted, np.int64), labels)


def evaluate_faces(classifier: Classifier, faces: FaceSet) -> dict[str, Any]:
    """Each image is a face crop: classified whole."""
    probs = classifier.classify_many(faces.images)
    report = report_from_predictions(faces.labels, probs.argmax(axis=1), classifier.labels)
    # How far the confidences the payloads carry are from how often the model is right.
    report["expected_calibration_error"] = round(expected_calibration_error(probs, faces.labels), 4)
    report["upset"] = upset_figures(probs, faces.labels, classifier.labels)
    return report


def upset_figures(probabilities: np.ndarray, truth: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Upset (the alert rule's emotions) against calm: what the alerts act on."""
    return upset_report(probabilities, truth, labels, ALERT_RULE.emotions, UPSET_THRESHOLDS)


def rule_rates(upset: dict[str, Any], rule: AlertRuleConfig = ALERT_RULE) -> dict[str, float | None]:
    """Recall and false-alarm rate of ``rule``'s condition on single faces."""
    row = next(r for r in upset["at"] if r["threshold"] == rule.min_probability)
    return row[rule.signal]


def ship_score(rows: list[dict[str, Any]]) -> float | None:
    """The ship rule's score of a card (None without all of its rows)."""
    by_name = {row["data"]: row for row in rows}
    figures = []
    for name, figure in SHIP_SCORE_FIGURES:
        row = by_name.get(name)
        if row is None:
            return None
        value = row["upset"]["auc"] if figure == "upset_auc" else row[figure]
        if value is None:
            return None
        figures.append(value)
    return float(np.mean(figures))


def evaluate_photos(
    classifier: Classifier, photos: LabelledFiles, detector: DetectorConfig = PHOTO_DETECTOR
) -> dict[str, Any]:
    """Each image is a photo: faces found and cropped by the daemon's pipeline, the largest
    one classified. Photos without a face are left out of the figures and counted."""
    pipeline = FramePipeline(HaarFaceDetector(detector), classifier)
    truth, probabilities, no_face, several = [], [], [], []
    root = Path(photos.source)
    for file, label in zip(photos.files, photos.labels):
        faces = pipeline.process(read_image(file, cv2.IMREAD_COLOR))  # largest first
        name = str(file.relative_to(root)) if file.is_relative_to(root) else str(file)
        if not faces:
            no_face.append(name)
            continue
        if len(faces) > 1:
            several.append(name)
        truth.append(label)
        probabilities.append(faces[0].probabilities)
    probs = np.asarray(probabilities, np.float64).reshape(-1, len(classifier.labels))
    report = report_from_predictions(np.asarray(truth), probs.argmax(axis=1), classifier.labels)
    report["upset"] = upset_figures(probs, np.asarray(truth, np.int64), classifier.labels)
    correct = int(np.trace(np.asarray(report["confusion_matrix"])))
    report["detection"] = {
        "images": len(photos),
        "with_face": len(truth),
        "no_face": len(no_face),
        "several_faces": len(several),
        # a photo without a face counted as a miss: what a user of the kiosk sees
        "accuracy_of_all_images": correct / len(photos),
        "no_face_files": no_face,
        "several_faces_files": several,
    }
    return report


def validation_settings(contract: ModelContract) -> tuple[float, int]:
    """(fraction, seed) of the validation split the model was trained with, from its
    contract's training settings; training's defaults when the contract does not say."""
    settings = contract.training_data.get("settings", {})
    return (
        float(settings.get("validation_fraction", VALIDATION_FRACTION)),
        int(settings.get("seed", SPLIT_SEED)),
    )


def load_source(path: str | Path, usage: str, validation: tuple[float, int]) -> FaceSet:
    """Face crops from a labelled folder, or one FER2013 split (``validation``: carved from
    Training with ``validation`` = (fraction, seed))."""
    if is_labelled_folder(path):
        return load_face_folder(path)
    if Path(path).is_dir() and not holds_fer2013(path):
        raise DatasetError(
            f"{path}: no labels.csv and no FER2013 in it: add a labels.csv with the columns "
            "file,emotion (README), or point --data at fer2013.csv or a folder with train/ and test/"
        )
    if usage == VALIDATION:
        return load_validation(path, *validation)
    return load_fer2013(path, usage)


def evaluate_source(
    classifier: Classifier, path: str | Path, usage: str = "PublicTest", detect: bool = False
) -> dict[str, Any]:
    """The report for one source, with ``model``, ``data`` and ``views`` filled in."""
    path = Path(path)
    name = path.resolve().name
    if detect:
        if not is_labelled_folder(path):
            raise DatasetError(f"{path}: --detect needs a folder of photos with labels.csv")
        report = evaluate_photos(classifier, read_labelled_folder(path))
        data = f"{name} (photos, detected)"
    else:
        faces = load_source(path, usage, validation_settings(classifier.contract))
        report = evaluate_faces(classifier, faces)
        data = f"{name} (face crops)" if is_labelled_folder(path) else f"{name} {usage}"
    contract = classifier.contract
    return {
        "model": _model_name(classifier),
        "data": data,
        "views": _views_name(contract),
        "face_normalization": contract.face_normalization,
        **report,
    }


def model_card(classifier: Classifier, paths: dict[str, str | Path | None]) -> list[dict[str, Any]]:
    """One report per card row whose data is given (``paths``: option name -> path)."""
    return [
        {**evaluate_source(classifier, paths[option], usage or "PublicTest"), "data": name}
        for option, name, usage in CARD_ROWS
        if paths.get(option)
    ]


def format_card(rows: list[dict[str, Any]]) -> str:
    """The model card's table (Markdown): overall figures, then recall per class with its count."""
    rule = f"{ALERT_RULE.signal} >= {ALERT_RULE.min_probability:g}"
    head = (
        "| data | faces | accuracy | balanced accuracy | macro-F1 | ECE | upset AUC "
        f"| upset recall / false alarms ({rule}) | " + " | ".join(EMOTIONS) + " |"
    )
    lines = [head, "|---" * (8 + len(EMOTIONS)) + "|"]
    for row in rows:
        recalls = [
            f"{c['recall']:.3f} ({c['support']})" if c["support"] else "–"
            for c in (row["per_class"][name] for name in EMOTIONS)
        ]
        figures = [
            row["data"],
            f"{row['n']:,}",
            f"{row['accuracy'] * 100:.2f} %",
            f"{row['balanced_accuracy'] * 100:.2f} %",
            f"{row['macro_f1']:.3f}",
            f"{row['expected_calibration_error']:.3f}" if "expected_calibration_error" in row else "–",
            *_upset_cells(row.get("upset")),
            *recalls,
        ]
        lines.append("| " + " | ".join(figures) + " |")
    score = ship_score(rows)
    if score is not None:
        lines += ["", f"ship score (docs/model.md, the ship rule): {score:.4f}"]
    return "\n".join(lines)


def _upset_cells(upset: dict[str, Any] | None) -> list[str]:
    if not upset or upset["auc"] is None:
        return ["–", "–"]
    rates = rule_rates(upset)
    return [f"{upset['auc']:.3f}", f"{rates['recall'] * 100:.1f} % / {rates['false_alarm_rate'] * 100:.1f} %"]


def format_upset(report: dict[str, Any]) -> str:
    """The upset-vs-calm lines of a single report."""
    upset = report.get("upset")
    if not upset or upset["auc"] is None:
        return "upset vs calm: needs faces of both kinds"
    lines = [
        f"upset ({', '.join(upset['emotions'])}) vs calm: {upset['upset_faces']} upset, "
        f"{upset['calm_faces']} calm faces; ROC AUC of the summed probability {upset['auc']:.4f}"
    ]
    for row in upset["at"]:
        lines.append(
            f"  at {row['threshold']:.2f}: summed recall {row['summed']['recall']:.3f}, false alarms "
            f"{row['summed']['false_alarm_rate']:.3f}; top emotion recall {row['top']['recall']:.3f}, "
            f"false alarms {row['top']['false_alarm_rate']:.3f}"
        )
    return "\n".join(lines)


def format_detection(report: dict[str, Any]) -> str:
    d = report["detection"]
    return (
        f"photos: {d['images']}   with a face: {d['with_face']}   no face: {d['no_face']}   "
        f"several faces: {d['several_faces']}   accuracy counting photos without a face as "
        f"misses: {d['accuracy_of_all_images']:.4f}"
    )


def _model_name(classifier: Classifier) -> str:
    path = getattr(classifier, "model_path", None)
    return Path(path).name if path else classifier.contract.source.get("checkpoint", "model")


def _how(report: dict[str, Any]) -> str:
    """How the faces were shown to the model: its views, and its face normalization if any."""
    normalization = report.get("face_normalization", "none")
    return f"views {report['views']}" + (f", faces {normalization}d" if normalization != "none" else "")


def _views_name(contract: ModelContract) -> str:
    return next((name for name, views in VIEW_SETS.items() if views == contract.views), "custom")


# The command line, shared by ``fer-kiosk evaluate`` and ``python -m training.evaluate``.


def run(args: argparse.Namespace, load: Callable[[str, str | None], Classifier]) -> int:
    """Runs the parsed command with ``load(model, views)``; prints the report, returns the exit status."""
    try:
        if args.card == bool(args.data):
            raise EvaluationError(
                "give either --data PATH or --card (with --fer2013, --wild, --ckplus "
                "or their environment variables)"
            )
        paths = {option: getattr(args, option) for option in CARD_OPTIONS}
        if args.card and not any(paths.values()):
            raise EvaluationError(
                "--card: no data; give --fer2013, --wild or --ckplus (or "
                + ", ".join(env for env, _ in CARD_OPTIONS.values())
                + ")"
            )
        classifier = load(args.model, args.views)
        if args.card:
            reports = model_card(classifier, paths)
        else:
            reports = [evaluate_source(classifier, args.data, args.usage, args.detect)]
    except (EvaluationError, DatasetError, ContractError, RuntimeError, ImportError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.confusion_png:
        for report in reports:
            target = Path(args.confusion_png)
            if args.card:
                slug = "".join(c if c.isalnum() else "-" for c in report["data"].lower())
                target = target.with_name(f"{target.stem}-{slug}{target.suffix or '.png'}")
            cv2.imwrite(str(target), confusion_matrix_image(report, f"{report['model']} on {report['data']}"))
    if args.json:
        print(json.dumps(reports if args.card else reports[0]))
    elif args.card:
        print(f"{reports[0]['model']}, {_how(reports[0])}\n")
        print(format_card(reports))
    else:
        report = reports[0]
        print(f"{report['model']} on {report['data']}, {_how(report)}")
        if "detection" in report:
            print(format_detection(report))
        print(format_report(report))
        print()
        print(format_upset(report))
    return 0


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
        cv2.putText(
            image, labels[i][:8], (left + i * cell + 4, top - 10), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA
        )
    heading = title or f"accuracy {report['accuracy']:.3f}  macro-F1 {report['macro_f1']:.3f}  (rows: true)"
    cv2.putText(image, heading, (8, 30), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, "predicted ->", (left, 60), font, 0.45, (80, 80, 80), 1, cv2.LINE_AA)
    return image
