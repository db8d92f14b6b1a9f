from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.contract import EMOTIONS
from edge.tools.datasets import DatasetError, load_fer2013, stratified_split
from tests.conftest import synthetic_faces, write_fer_csv


@pytest.mark.parametrize("name", ["faces.csv", "faces.csv.gz"])
def test_csv_loads_each_usage(tmp_path, name):
    images, labels = synthetic_faces(3)
    usages = ["Training", "PublicTest", "PrivateTest"] * 7
    path = write_fer_csv(tmp_path / name, images, labels, usages)
    for usage in ("Training", "PublicTest", "PrivateTest"):
        faces = load_fer2013(path, usage)
        keep = [u == usage for u in usages]
        assert len(faces) == sum(keep)
        np.testing.assert_array_equal(faces.images, images[keep])
        np.testing.assert_array_equal(faces.labels, labels[keep])
        assert faces.images.dtype == np.uint8 and faces.images.shape[1:] == (48, 48)


def _csv(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    return path


GOOD = " ".join(["10"] * 2304)


@pytest.mark.parametrize(
    "row, message",
    [
        (f"0,{' '.join(['10'] * 2303)},Training", "row 3: 2303 pixel values, expected 2304"),
        (f"9,{GOOD},Training", "row 3: unknown emotion label '9'"),
        (f"happy,{GOOD},Training", "row 3: unknown emotion label 'happy'"),
        (f"0,{GOOD[:-2]}x1,Training", "row 3: pixel value 'x1' is not a whole number"),
        (f"0,{GOOD[:-2]}300,Training", "row 3: pixel values must be 0..255"),
        (f"0,{GOOD},Validation", "row 3: unknown Usage 'Validation'"),
        (f"0,{GOOD}", "row 3: 2 fields, expected 3"),
    ],
)
def test_malformed_csv_row_is_named(tmp_path, row, message):
    path = _csv(tmp_path, [f"1,{GOOD},Training", row])
    with pytest.raises(DatasetError, match=message.replace("(", r"\(")):
        load_fer2013(path, "Training")


def test_csv_without_columns_is_refused(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("label,image\n1,2\n")
    with pytest.raises(DatasetError, match="lacks column"):
        load_fer2013(path)


def _folders(tmp_path: Path, order: list[str]) -> Path:
    images, labels = synthetic_faces(2)
    for split in ("train", "test"):
        for name in order:
            (tmp_path / split / name).mkdir(parents=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            cv2.imwrite(str(tmp_path / split / EMOTIONS[label] / f"{i}.png"), image)
    return tmp_path


def test_folders_follow_contract_label_order_not_folder_order(tmp_path):
    # Created in reverse: whatever order a file system lists them in, labels follow EMOTIONS.
    root = _folders(tmp_path, list(reversed(EMOTIONS)))
    faces = load_fer2013(root, "Training")
    assert faces.class_counts() == {name: 2 for name in EMOTIONS}
    for image, label in zip(faces.images, faces.labels):
        # synthetic class k has its bright bar at row 4 + 6k
        assert int(np.argmax(image.mean(axis=1))) in range(4 + 6 * label, 8 + 6 * label)
    assert len(load_fer2013(root, "PublicTest")) == 14


def test_unreadable_image_names_the_file(tmp_path):
    root = _folders(tmp_path, list(EMOTIONS))
    bad = root / "train" / "fear" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="broken.jpg: cannot read this image"):
        load_fer2013(root, "Training")


def test_unknown_emotion_folder_is_refused(tmp_path):
    root = _folders(tmp_path, list(EMOTIONS))
    (root / "train" / "contempt").mkdir()
    with pytest.raises(DatasetError, match="contempt: unknown emotion folder"):
        load_fer2013(root, "Training")


def test_missing_path_and_unknown_usage(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_fer2013(tmp_path / "nothing.csv")
    with pytest.raises(DatasetError, match="unknown usage"):
        load_fer2013(tmp_path, "Validation")


def test_stratified_split_keeps_class_shares_and_is_reproducible():
    labels = np.repeat(np.arange(7), [40, 5, 40, 70, 50, 30, 50])
    keep, held = stratified_split(labels, 0.2, seed=3)
    assert len(np.intersect1d(keep, held)) == 0 and len(keep) + len(held) == len(labels)
    assert np.bincount(labels[held]).tolist() == [8, 1, 8, 14, 10, 6, 10]
    np.testing.assert_array_equal(held, stratified_split(labels, 0.2, seed=3)[1])
