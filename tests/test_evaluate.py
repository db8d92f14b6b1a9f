"""Evaluation on labelled folders (face crops or photos), the model card, and the split of
.keras evaluation into training. Real cross-domain sets come from FER_WILD_PATH and
FER_CKPLUS_PATH (tests needing them skip without them); everything else is generated here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.contract import EMOTIONS
from edge.tools.datasets import (
    SPLIT_SEED,
    VALIDATION_FRACTION,
    DatasetError,
    load_face_folder,
    load_fer2013,
    load_validation,
    read_labelled_folder,
    stratified_split,
)
from edge.tools.metrics import classification_report
from tests.conftest import ROOT, synthetic_faces


def write_folder(
    root: Path,
    rows: list[tuple[str, str]],
    header: str = "file,emotion",
    extra: str = "",
    size: tuple[int, int] = (64, 64),
) -> Path:
    """Images of uniform gray (value 10 + 30 * row index) listed in root/labels.csv."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [header]
    for i, (name, emotion) in enumerate(rows):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name), np.full((*size, 3), 10 + 30 * i, np.uint8))
        lines.append(f"{name},{emotion}{extra}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def evaluate_cli(
    *args: str, env: dict[str, str] | None = None, module: str = "edge"
) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", module] + (["evaluate"] if module == "edge" else []) + list(args)
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})}
    )


# labels.csv


def test_labels_csv_maps_names_to_the_contract_order_and_keeps_extra_columns(tmp_path):
    root = write_folder(
        tmp_path / "set",
        [("images/a.png", "neutral"), ("images/b.png", "Angry"), ("c.png", " fear ")],
        header="file,emotion,subject",
        extra=",S010",
    )
    listed = read_labelled_folder(root)
    assert [f.relative_to(root).as_posix() for f in listed.files] == ["images/a.png", "images/b.png", "c.png"]
    assert listed.labels.tolist() == [6, 0, 2]


def test_face_crops_become_48x48_grayscale_in_listed_order(tmp_path):
    root = write_folder(tmp_path / "set", [("a.png", "happy"), ("b.png", "sad")], size=(100, 80))
    faces = load_face_folder(root)
    assert faces.images.shape == (2, 48, 48) and faces.images.dtype == np.uint8
    assert faces.images[0].min() == faces.images[0].max() == 10  # uniform gray stays its value
    assert faces.images[1].min() == 40
    assert faces.labels.tolist() == [EMOTIONS.index("happy"), EMOTIONS.index("sad")]


def test_unknown_emotion_is_refused_with_its_row(tmp_path):
    root = write_folder(tmp_path / "set", [("a.png", "happy"), ("b.png", "contempt")])
    with pytest.raises(DatasetError, match=r"labels.csv row 3: unknown emotion 'contempt'"):
        read_labelled_folder(root)


def test_missing_image_is_refused_with_its_name(tmp_path):
    root = write_folder(tmp_path / "set", [("a.png", "happy"), ("b.png", "sad")])
    (root / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"row 3: b.png not found"):
        read_labelled_folder(root)


def test_unreadable_image_and_bad_header_and_no_labels_file_are_refused(tmp_path):
    root = write_folder(tmp_path / "set", [("a.png", "happy")])
    (root / "a.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"a.png: cannot read this image"):
        load_face_folder(root)
    (root / "labels.csv").write_text("path,label\na.png,happy\n")
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['emotion', 'file'\]"):
        read_labelled_folder(root)
    with pytest.raises(DatasetError, match="no labels.csv"):
        read_labelled_folder(tmp_path)


# figures


def test_balanced_accuracy_and_macro_f1_average_only_the_classes_the_data_has():
    # No neutral faces (like CK+), but one face predicted neutral.
    truth = np.array([0, 0, 0, 3])
    predicted = np.array([0, 0, 6, 3])
    report = classification_report(truth, predicted, EMOTIONS)
    assert report["accuracy"] == pytest.approx(0.75)
    assert report["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert report["macro_f1"] == pytest.approx((0.8 + 1.0) / 2)  # angry: P 1, R 2/3
    assert report["per_class"]["neutral"]["support"] == 0


def test_roc_auc_counts_pairs_ranked_right_and_ties_as_half():
    from edge.tools.metrics import roc_auc

    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([1, 1, 0, 0])) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([1, 1, 0, 0])) == 0.0
    # positives 0.5, 0.3; negatives 0.5, 0.1: pairs (0.5>0.1), (0.3>0.1), (0.5=0.5 half), (0.3<0.5)
    assert roc_auc(np.array([0.5, 0.3, 0.5, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(2.5 / 4)
    assert roc_auc(np.array([0.5, 0.3]), np.array([1, 1])) is None


def test_upset_signal_sums_the_rule_emotions_and_the_top_rule_needs_one_to_lead():
    from edge.tools.metrics import upset_report

    def face(**p):
        row = np.zeros(len(EMOTIONS))
        for name, value in p.items():
            row[EMOTIONS.index(name)] = value
        return row

    probabilities = np.array(
        [
            face(angry=0.35, sad=0.35, neutral=0.3),  # upset, split: summed 0.7, top (angry) 0.35
            face(angry=0.8, neutral=0.2),  # upset, clear
            face(neutral=0.9, sad=0.1),  # calm
            face(happy=0.5, fear=0.45, neutral=0.05),  # calm, but fear close behind
        ]
    )
    truth = np.array([EMOTIONS.index(e) for e in ("sad", "angry", "neutral", "happy")])
    report = upset_report(probabilities, truth, EMOTIONS, ("angry", "sad", "fear", "disgust"), (0.4, 0.6))
    assert (report["upset_faces"], report["calm_faces"]) == (2, 2)
    assert report["auc"] == 1.0  # summed: 0.7, 0.8 against 0.1, 0.45
    at_04, at_06 = report["at"]
    assert at_04["summed"] == {"recall": 1.0, "false_alarm_rate": 0.5}
    assert at_04["top"] == {"recall": 0.5, "false_alarm_rate": 0.0}
    assert at_06["summed"] == {"recall": 1.0, "false_alarm_rate": 0.0}


def test_ship_score_is_the_mean_of_the_rule_figures_and_needs_every_row():
    from edge.tools.evaluate import ship_score

    def row(name, f1, auc):
        return {"data": name, "macro_f1": f1, "upset": {"auc": auc}}

    rows = [row("FER2013 validation", 0.6, 0.9), row("expressions-wild", 0.4, 0.8), row("CK+48", 0.7, 1.0)]
    assert ship_score(rows) == pytest.approx((0.6 + 0.4 + 0.7 + 0.8 + 1.0) / 5)
    assert ship_score(rows[:2]) is None


def test_validation_split_is_the_one_training_carves(synthetic_csv):
    from training.settings import TrainSettings

    defaults = TrainSettings(data="")
    assert (defaults.validation_fraction, defaults.seed) == (VALIDATION_FRACTION, SPLIT_SEED)
    training = load_fer2013(synthetic_csv, "Training")
    _, held = stratified_split(training.labels, VALIDATION_FRACTION, SPLIT_SEED)
    validation = load_validation(synthetic_csv)
    assert len(validation) == 42  # 10 % of 60 faces of each of 7 classes
    assert np.array_equal(validation.images, training.images[held])
    other = load_validation(synthetic_csv, seed=SPLIT_SEED + 1)
    assert not np.array_equal(other.images, validation.images)


# the command line


def test_detect_finds_the_astronaut_and_counts_photos_without_or_with_several_faces(tmp_path, astronaut_bgr):
    root = tmp_path / "photos"
    root.mkdir()
    cv2.imwrite(str(root / "astronaut.jpg"), astronaut_bgr)
    cv2.imwrite(str(root / "wall.png"), np.full((300, 400, 3), 128, np.uint8))
    cv2.imwrite(str(root / "two.jpg"), np.hstack([astronaut_bgr, astronaut_bgr]))
    (root / "labels.csv").write_text(
        "file,emotion,subject\nastronaut.jpg,happy,ec\nwall.png,neutral,-\ntwo.jpg,happy,ec\n"
    )
    result = evaluate_cli("--data", str(root), "--detect", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["detection"] == {
        "images": 3,
        "with_face": 2,
        "no_face": 1,
        "several_faces": 1,
        "accuracy_of_all_images": pytest.approx(report["accuracy"] * 2 / 3),
        "no_face_files": ["wall.png"],
        "several_faces_files": ["two.jpg"],
    }
    assert report["n"] == 2 and report["per_class"]["happy"]["support"] == 2
    assert report["per_class"]["happy"]["recall"] == 1.0  # the smiling astronaut is happy
    assert report["data"] == "photos (photos, detected)" and report["views"] == "mirror-shift"
    assert report["face_normalization"] == "none"  # the bundled model's contract says nothing: none
    matrix = np.asarray(report["confusion_matrix"])
    assert matrix.shape == (7, 7) and matrix.sum() == 2

    text = evaluate_cli("--data", str(root), "--detect", "--views", "single")
    assert text.returncode == 0, text.stderr
    assert "no face: 1" in text.stdout and "several faces: 1" in text.stdout and "views single" in text.stdout


def test_card_gathers_every_source_given_and_reads_paths_from_the_environment(tmp_path, synthetic_csv):
    crops = tmp_path / "crops"
    crops.mkdir()
    images, labels = synthetic_faces(2, seed=5)
    lines = ["file,emotion"]
    for i, (image, label) in enumerate(zip(images, labels)):
        cv2.imwrite(str(crops / f"{i}.png"), image)
        lines.append(f"{i}.png,{EMOTIONS[label]}")
    (crops / "labels.csv").write_text("\n".join(lines) + "\n")
    png = tmp_path / "cm.png"
    env = {"FER2013_PATH": str(synthetic_csv), "FER_WILD_PATH": "", "FER_CKPLUS_PATH": str(crops)}
    result = evaluate_cli("--card", "--json", "--confusion-png", str(png), env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["data"] for r in rows] == ["FER2013 validation", "FER2013 PublicTest", "CK+48"]
    assert [r["n"] for r in rows] == [42, 70, 14]
    keys = {"accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion_matrix", "upset"}
    assert all(keys <= set(r) for r in rows)
    assert all(r["upset"]["emotions"] == ["angry", "sad", "fear", "disgust"] for r in rows)
    assert all(r["upset"]["upset_faces"] + r["upset"]["calm_faces"] == r["n"] for r in rows)
    assert sorted(p.name for p in tmp_path.glob("cm-*.png")) == [
        "cm-ck-48.png",
        "cm-fer2013-publictest.png",
        "cm-fer2013-validation.png",
    ]

    env = {**env, "FER2013_PATH": "", "FER_CKPLUS_PATH": ""}
    table = evaluate_cli("--card", "--wild", str(crops), env=env)
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith(
        "| data | faces | accuracy | balanced accuracy | macro-F1 | ECE | upset AUC "
        "| upset recall / false alarms (top >= 0.6) | angry |"
    )
    assert len(rows) == 2 and rows[1].startswith("| expressions-wild | 14 |")


def test_card_or_data_is_required():
    env = {"FER2013_PATH": "", "FER_WILD_PATH": "", "FER_CKPLUS_PATH": ""}
    nothing = evaluate_cli("--card", env=env)
    assert nothing.returncode == 1 and "FER_WILD_PATH" in nothing.stderr
    neither = evaluate_cli(env=env)
    assert neither.returncode == 1 and "--data PATH or --card" in neither.stderr


def test_edge_refuses_a_keras_model_and_names_training_evaluate(tmp_path, synthetic_csv):
    result = evaluate_cli("--data", str(synthetic_csv), "--model", str(tmp_path / "best.keras"))
    assert result.returncode == 1
    assert "python -m training.evaluate" in result.stderr


def test_edge_evaluate_never_imports_training():
    code = (
        "import sys, edge.cli, edge.tools.evaluate; edge.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('training', 'tensorflow', 'keras')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_training_evaluate_reports_a_keras_model_with_the_same_report(tmp_path):
    pytest.importorskip("keras", reason="the train extra")
    import training  # noqa: F401
    from training.model import make_mini_xception

    model_path = tmp_path / "m.keras"
    make_mini_xception().save(model_path)
    crops = write_folder(tmp_path / "crops", [("a.png", "happy"), ("b.png", "sad"), ("c.png", "fear")])
    result = evaluate_cli(
        "--model",
        str(model_path),
        "--data",
        str(crops),
        "--views",
        "mirror",
        "--json",
        module="training.evaluate",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == "m.keras" and report["views"] == "mirror" and report["n"] == 3
    assert report["data"] == "crops (face crops)" and list(report["per_class"]) == list(EMOTIONS)
    tflite = evaluate_cli("--model", "model.tflite", "--data", str(crops), module="training.evaluate")
    assert tflite.returncode == 1 and "fer-kiosk evaluate" in tflite.stderr


def test_training_evaluate_runs_a_keras_model_through_the_detector(tmp_path, astronaut_bgr):
    """--detect puts photos through the daemon's frame pipeline, which asks the classifier
    for each face's own views (classify_with): the Keras classifier has them too."""
    pytest.importorskip("keras", reason="the train extra")
    import training  # noqa: F401
    from training.model import make_mini_xception

    model_path = tmp_path / "m.keras"
    make_mini_xception().save(model_path)
    root = tmp_path / "photos"
    root.mkdir()
    cv2.imwrite(str(root / "astronaut.jpg"), astronaut_bgr)
    (root / "labels.csv").write_text("file,emotion\nastronaut.jpg,happy\n")
    result = evaluate_cli(
        "--model", str(model_path), "--data", str(root), "--detect", "--json", module="training.evaluate"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 1 and report["detection"]["with_face"] == 1


# the real cross-domain sets (paths from the environment)


def _dataset(env: str) -> Path:
    value = os.environ.get(env)
    if not value:
        pytest.skip(f"{env} is not set (point it at the folder with labels.csv)")
    if not Path(value).is_dir():
        pytest.skip(f"{env}={value} is not a folder")
    return Path(value)


@pytest.mark.parametrize(
    "env, counts",
    [
        (
            "FER_WILD_PATH",
            {
                "angry": 252,
                "disgust": 208,
                "fear": 21,
                "happy": 300,
                "sad": 268,
                "surprise": 300,
                "neutral": 300,
            },
        ),
        (
            "FER_CKPLUS_PATH",
            {
                "angry": 135,
                "disgust": 177,
                "fear": 75,
                "happy": 207,
                "sad": 84,
                "surprise": 249,
                "neutral": 0,
            },
        ),
    ],
)
def test_bundled_model_on_a_cross_domain_set(env, counts):
    root = _dataset(env)
    result = evaluate_cli("--data", str(root), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {k: v["support"] for k, v in report["per_class"].items()} == counts
    assert report["n"] == sum(counts.values())
    assert 0.3 < report["accuracy"] < 1.0  # far above chance (1/7): labels and crops line up
    # the summed upset probability tells upset from calm faces far better than chance
    assert report["upset"]["auc"] > 0.75


def test_a_class_the_set_lacks_reads_as_a_dash_not_as_zeros():
    """CK+48 has no neutral faces: its row says "–" as the model card does, and how often the
    model answered neutral anyway; the matrix has no all-zero neutral row."""
    from edge.tools.metrics import format_report

    neutral = EMOTIONS.index("neutral")
    truth = np.array([0, 1, 2, 3, 4, 5, 3])
    predicted = np.array([0, 1, neutral, 3, 4, 5, neutral])
    text = format_report(classification_report(truth, predicted, EMOTIONS))
    row = next(line for line in text.splitlines() if line.startswith("neutral"))
    assert row.split() == [
        "neutral",
        "–",
        "–",
        "–",
        "0",
        "not",
        "in",
        "this",
        "set;",
        "predicted",
        "for",
        "2",
        "face(s)",
    ]
    matrix = text.split("confusion matrix")[1].splitlines()
    assert [line.split()[0] for line in matrix[2:]] == [
        "angry",
        "disgust",
        "fear",
        "happy",
        "sad",
        "surprise",
    ]


def test_a_folder_without_labels_csv_says_to_add_one(tmp_path):
    from edge.tools.evaluate import load_source

    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(DatasetError) as err:
        load_source(tmp_path, "PublicTest", (0.1, 0))
    assert str(err.value) == (
        f"{tmp_path}: no labels.csv and no FER2013 in it: add a labels.csv with the columns file,emotion "
        "(README), or point --data at fer2013.csv or a folder with train/ and test/"
    )
