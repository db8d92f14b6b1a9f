"""Figures of the bundled model on FER2013 (needs FER2013_PATH; skipped without it)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge import DEFAULT_MODEL
from edge.contract import EMOTIONS, load_contract
from edge.tools.datasets import load_fer2013
from tests.conftest import ROOT


def test_evaluate_json_reproduces_the_contract_figures(fer2013_path, tmp_path):
    png = tmp_path / "cm.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge",
            "evaluate",
            "--data",
            str(fer2013_path),
            "--usage",
            "PublicTest",
            "--json",
            "--confusion-png",
            str(png),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) >= {"accuracy", "macro_f1", "per_class", "confusion_matrix", "n"}
    assert report["n"] == 3589 and list(report["per_class"]) == list(EMOTIONS)
    assert all(set(v) >= {"precision", "recall"} for v in report["per_class"].values())
    matrix = np.asarray(report["confusion_matrix"])
    assert matrix.shape == (7, 7) and matrix.sum() == 3589
    assert np.trace(matrix) / 3589 == pytest.approx(report["accuracy"])
    contract = load_contract(DEFAULT_MODEL)
    if (
        "PublicTest" in contract.evaluation.get("data", "")
        and contract.evaluation.get("faces") == report["n"]
    ):
        # The conversion's check ran before calibration; a class balance fitted after it
        # moves the answers, and the calibration's report says by how much.
        calibrated = contract.evaluation.get("calibration", {}).get("check", {}).get("accuracy_after")
        if contract.class_bias and calibrated is not None:
            assert report["accuracy"] == pytest.approx(calibrated, abs=1e-4)
        else:
            assert report["accuracy"] == pytest.approx(contract.evaluation["tflite"]["accuracy"], abs=1e-9)
    assert png.stat().st_size > 1000


def test_training_split_loads_with_published_counts(fer2013_path):
    faces = load_fer2013(fer2013_path, "Training")
    if len(faces) == 28709:  # the official release
        assert faces.class_counts()["disgust"] == 436 and faces.class_counts()["happy"] == 7215


def test_bundled_model_runs_in_tflite_runtime_2_14(astronaut_bgr):
    python = os.environ.get("FER_KIOSK_TFLITE214_PYTHON")
    if not python or not Path(python).exists():
        pytest.skip("FER_KIOSK_TFLITE214_PYTHON is not set (tests/run.sh makes that environment when it can)")
    import training  # noqa: F401  (before TensorFlow: sets its environment)

    pytest.importorskip("tensorflow", reason="the check lives in the converter (train extra)")
    from converter.convert import check_with_tflite_runtime
    from edge.contract import CropRule
    from edge.vision.classifier import EmotionClassifier
    from edge.vision.preprocess import crop_face, to_gray

    # Real face crops (synthetic noise faces sit near class ties, where top-1 flips between
    # runtimes on rounding alone): the astronaut's face at 30 offsets and sizes.
    gray = to_gray(astronaut_bgr)
    images = np.stack(
        [
            crop_face(gray, (165 + dx, 55 + dy, 100 + ds, 100 + ds), CropRule(), (48, 48))
            for dx in (-10, 0, 10)
            for dy in (-10, 0, 10)
            for ds in (-15, 0, 15)
        ]
        + [crop_face(gray, (170, 60, 100, 100), CropRule(), (48, 48))[:, ::-1]] * 3
    )
    answer = check_with_tflite_runtime(python, EmotionClassifier(DEFAULT_MODEL), images)
    assert answer.startswith("tflite-runtime 2.14")
