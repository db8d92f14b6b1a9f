"""FER2013 loaders for the two layouts users have.

- The Kaggle CSV (``emotion,pixels,Usage``), plain or gzip-compressed.
- Image folders: ``train/<emotion>/*.jpg`` and ``test/<emotion>/*.jpg``.

Labels always follow the model contract's order (``edge.contract.EMOTIONS``), never the
order in which folders are listed. Only numpy and OpenCV are needed, so the daemon's
``evaluate`` command can use this without the training extra.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.contract import EMOTIONS, INPUT_SIZE

_LOGGER = logging.getLogger(__name__)

USAGES = ("Training", "PublicTest", "PrivateTest")
# Kaggle's image-folder release has only two splits; its test/ is the CSV's test rows.
_FOLDER_FOR_USAGE = {"Training": "train", "PublicTest": "test", "PrivateTest": "test"}
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm"}
_PIXELS = INPUT_SIZE * INPUT_SIZE


class DatasetError(Exception):
    """The data set cannot be read; the message names the row or file at fault."""


@dataclass(frozen=True)
class FaceSet:
    images: np.ndarray  # uint8, (N, 48, 48)
    labels: np.ndarray  # int64, (N,), index into EMOTIONS
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(EMOTIONS))
        return {name: int(n) for name, n in zip(EMOTIONS, counts)}


def load_fer2013(path: str | Path, usage: str = "Training") -> FaceSet:
    """Loads one split from a CSV file (``.csv``/``.csv.gz``) or an image-folder root."""
    if usage not in USAGES:
        raise DatasetError(f"unknown usage {usage!r}; expected one of {', '.join(USAGES)}")
    path = Path(path)
    if path.is_dir():
        csvs = sorted(p for p in path.iterdir() if p.name.endswith((".csv", ".csv.gz")))
        if (path / _FOLDER_FOR_USAGE[usage]).is_dir():
            return _load_folders(path, usage)
        if len(csvs) == 1:
            return _load_csv(csvs[0], usage)
        raise DatasetError(
            f"{path}: expected a FER2013 CSV file or folders train/<emotion>/ and test/<emotion>/"
        )
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    return _load_csv(path, usage)


def _parse_pixels(text: str, where: str) -> np.ndarray:
    # np.fromstring is ~20x faster than splitting; anything it cannot read fully
    # (non-numeric token, wrong count) falls through to the exact check below.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            values = np.fromstring(text, dtype=np.int64, sep=" ")
        except (DeprecationWarning, ValueError):
            values = None
    if values is None or values.size != _PIXELS:
        tokens = text.split()
        for token in tokens:
            if not token.isdigit():
                raise DatasetError(f"{where}: pixel value {token!r} is not a whole number 0..255")
        raise DatasetError(f"{where}: {len(tokens)} pixel values, expected {_PIXELS} (48x48)")
    if values.min() < 0 or values.max() > 255:
        raise DatasetError(f"{where}: pixel values must be 0..255, found {values.min()}..{values.max()}")
    return values.astype(np.uint8).reshape(INPUT_SIZE, INPUT_SIZE)


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _load_csv(path: Path, usage: str) -> FaceSet:
    images: list[np.ndarray] = []
    labels: list[int] = []
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DatasetError(f"{path}: empty file")
            header = [h.strip() for h in header]
            missing = {"emotion", "pixels"} - set(header)
            if missing:
                raise DatasetError(f"{path}: header {header} lacks column(s) {sorted(missing)}")
            i_emotion, i_pixels = header.index("emotion"), header.index("pixels")
            i_usage = header.index("Usage") if "Usage" in header else None
            for row in reader:
                where = f"{path.name} row {reader.line_num}"
                if not row:
                    continue
                if len(row) != len(header):
                    raise DatasetError(f"{where}: {len(row)} fields, expected {len(header)}")
                row_usage = row[i_usage].strip() if i_usage is not None else "Training"
                if row_usage not in USAGES:
                    raise DatasetError(f"{where}: unknown Usage {row_usage!r}")
                if row_usage != usage:
                    continue
                label = row[i_emotion].strip()
                if not label.isdigit() or int(label) >= len(EMOTIONS):
                    raise DatasetError(
                        f"{where}: unknown emotion label {label!r}; expected 0..{len(EMOTIONS) - 1}"
                    )
                images.append(_parse_pixels(row[i_pixels], where))
                labels.append(int(label))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"{path}: cannot read: {err}") from err
    if not labels:
        raise DatasetError(f"{path}: no rows with Usage {usage}")
    _LOGGER.info("loaded %d %s faces from %s", len(labels), usage, path)
    return FaceSet(np.stack(images), np.asarray(labels, dtype=np.int64), str(path))


def _load_folders(root: Path, usage: str) -> FaceSet:
    split = root / _FOLDER_FOR_USAGE[usage]
    images: list[np.ndarray] = []
    labels: list[int] = []
    for folder in sorted(p for p in split.iterdir() if p.is_dir()):
        if folder.name.lower() not in EMOTIONS:
            raise DatasetError(f"{folder}: unknown emotion folder; expected one of {', '.join(EMOTIONS)}")
        label = EMOTIONS.index(folder.name.lower())
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            images.append(_to_input_size(read_image(file)))
            labels.append(label)
    if not labels:
        raise DatasetError(f"{split}: no images found in {split}/<emotion>/")
    _LOGGER.info("loaded %d %s faces from %s", len(labels), usage, split)
    return FaceSet(np.stack(images), np.asarray(labels, dtype=np.int64), str(split))


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): ``fraction`` of each class held out, reproducibly."""
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    held: list[np.ndarray] = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        rng.shuffle(idx)
        n_held = int(round(len(idx) * fraction))
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


# The validation split: a stratified share of Training, carved by ``stratified_split``.
# The same values as training's defaults (TrainSettings; a test holds them equal), so a
# model's validation figures can be measured again without TensorFlow.
VALIDATION_FRACTION = 0.1
SPLIT_SEED = 1337


def load_validation(
    path: str | Path, fraction: float = VALIDATION_FRACTION, seed: int = SPLIT_SEED
) -> FaceSet:
    """The faces training held out of Training to choose epochs and checkpoints on."""
    faces = load_fer2013(path, "Training")
    _, held = stratified_split(faces.labels, fraction, seed)
    return FaceSet(faces.images[held], faces.labels[held], f"{faces.source} validation")


# A labelled folder: any images, listed in ``labels.csv`` (``file,emotion``, more columns
# allowed, e.g. ``subject``), file paths relative to the folder, emotion names from EMOTIONS.
LABELS_FILE = "labels.csv"


@dataclass(frozen=True)
class LabelledFiles:
    files: tuple[Path, ...]
    labels: np.ndarray  # int64, (N,), index into EMOTIONS
    source: str

    def __len__(self) -> int:
        return len(self.files)


def is_labelled_folder(path: str | Path) -> bool:
    return (Path(path) / LABELS_FILE).is_file()


def holds_fer2013(folder: str | Path) -> bool:
    """Whether a folder looks like FER2013 as ``load_fer2013`` reads it: folders train/ or
    test/, or a single .csv[.gz]."""
    folder = Path(folder)
    if any((folder / name).is_dir() for name in set(_FOLDER_FOR_USAGE.values())):
        return True
    return len([p for p in folder.iterdir() if p.name.endswith((".csv", ".csv.gz"))]) == 1


def read_labelled_folder(root: str | Path) -> LabelledFiles:
    """The files and labels ``root/labels.csv`` lists; every file must exist."""
    root = Path(root)
    table = root / LABELS_FILE
    if not table.is_file():
        raise DatasetError(f"{root}: no {LABELS_FILE} (expected columns file,emotion)")
    files: list[Path] = []
    labels: list[int] = []
    try:
        with open(table, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = [h.strip().lower() for h in next(reader, [])]
            missing = {"file", "emotion"} - set(header)
            if missing:
                raise DatasetError(f"{table}: header {header} lacks column(s) {sorted(missing)}")
            i_file, i_emotion = header.index("file"), header.index("emotion")
            for row in reader:
                if not row or not any(field.strip() for field in row):
                    continue
                where = f"{table.name} row {reader.line_num}"
                if len(row) != len(header):
                    raise DatasetError(f"{where}: {len(row)} fields, expected {len(header)}")
                emotion = row[i_emotion].strip().lower()
                if emotion not in EMOTIONS:
                    raise DatasetError(
                        f"{where}: unknown emotion {row[i_emotion]!r}; expected one of {', '.join(EMOTIONS)}"
                    )
                file = root / row[i_file].strip()
                if not file.is_file():
                    raise DatasetError(f"{where}: {row[i_file].strip()} not found in {root}")
                files.append(file)
                labels.append(EMOTIONS.index(emotion))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"{table}: cannot read: {err}") from err
    if not files:
        raise DatasetError(f"{table}: no images listed")
    return LabelledFiles(tuple(files), np.asarray(labels, dtype=np.int64), str(root))


def read_image(file: Path, flags: int = cv2.IMREAD_GRAYSCALE) -> np.ndarray:
    image = cv2.imread(str(file), flags)
    if image is None:
        raise DatasetError(f"{file}: cannot read this image (corrupt or not an image)")
    return image


def load_face_folder(root: str | Path) -> FaceSet:
    """A labelled folder of face crops, each resized to the model's input like a FER2013 face."""
    listed = read_labelled_folder(root)
    images = [_to_input_size(read_image(file)) for file in listed.files]
    _LOGGER.info("loaded %d face crops from %s", len(images), listed.source)
    return FaceSet(np.stack(images), listed.labels, listed.source)


def _to_input_size(image: np.ndarray) -> np.ndarray:
    if image.shape == (INPUT_SIZE, INPUT_SIZE):
        return image
    shrinking = image.shape[0] > INPUT_SIZE or image.shape[1] > INPUT_SIZE
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (INPUT_SIZE, INPUT_SIZE), interpolation=interpolation)
