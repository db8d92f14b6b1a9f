"""What a run trains on: the split of FER2013's Training faces, class weights, the teacher's
targets, and each epoch's input, built whole from (init seed, epoch)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.contract import EMOTIONS, VIEW_SETS
from edge.tools.datasets import stratified_split
from edge.vision.preprocess import normalize_faces
from training.augment import Augmentation, augmented_epoch, whole_grey_levels
from training.run_folder import RunFolder
from training.settings import CLASS_WEIGHT_MODES, TrainingError, TrainSettings

_LOGGER = logging.getLogger(__name__)


def class_weight_vector(labels: np.ndarray, mode: str) -> np.ndarray:
    counts = np.bincount(labels, minlength=len(EMOTIONS)).astype(np.float64)
    if mode == "none":
        return np.ones(len(EMOTIONS))
    weights = counts.sum() / (len(EMOTIONS) * np.maximum(counts, 1))
    if mode == "sqrt":
        weights = np.sqrt(weights)
    elif mode != "balanced":
        raise TrainingError(f"unknown class-weight mode {mode!r}; expected one of {CLASS_WEIGHT_MODES}")
    return weights / (weights * counts).sum() * counts.sum()  # mean weight per face stays 1


def soften(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities as a softmax of the same logits divided by ``temperature``."""
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    soft = np.exp(logits)
    return soft / soft.sum(axis=1, keepdims=True)


def distillation_targets(labels: np.ndarray, teacher: np.ndarray, weight: float) -> np.ndarray:
    """Training targets: ``weight`` of the teacher's distribution, the rest the true label."""
    one_hot = np.eye(len(EMOTIONS), dtype=np.float32)[labels]
    return ((1 - weight) * one_hot + weight * teacher).astype(np.float32)


def teacher_probabilities(
    settings: TrainSettings, run: RunFolder, images: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """The teacher's softened probabilities, cached in the run folder: a resumed run trains
    against the very same targets. Several teachers (an ensemble) are averaged before softening.

    By default (faces, classes): training face i judged unaugmented. With
    ``teacher_augmented_epochs`` N: (N, faces, classes), row i of epoch k the judgement of
    the i-th face of augmented epoch k in that epoch's shuffled order, the very face the
    student is shown (a shift that cut off the mouth gets the teacher's doubt, not the
    label's certainty); saved after each epoch, so a stopped run resumes the judging."""
    cached = run.teacher_probabilities(len(images), len(EMOTIONS))
    epochs = settings.teacher_augmented_epochs
    if epochs == 0:
        if cached is not None and cached.ndim == 2:
            return cached
        probabilities = _judged(settings, _load_teachers(settings), images, labels, "unaugmented faces")
        run.save_teacher_probabilities(probabilities)
        return probabilities
    judged = list(cached) if cached is not None and cached.ndim == 3 else []
    teachers = _load_teachers(settings) if len(judged) < epochs else []
    augmentation = Augmentation(**settings.augmentation)
    for epoch in range(len(judged), epochs):
        shown, shown_labels, _ = augmented_epoch(images, labels, settings.init_seed, epoch, augmentation)
        faces = whole_grey_levels(shown[..., 0])
        what = f"augmented epoch {epoch + 1} of {epochs}"
        judged.append(_judged(settings, teachers, faces, shown_labels, what))
        run.save_teacher_probabilities(np.stack(judged))
    return np.stack(judged[:epochs])


def _judged(
    settings: TrainSettings, teachers: list[tuple[Any, str]], faces: np.ndarray, labels: np.ndarray, what: str
) -> np.ndarray:
    """The teachers' mean probabilities on uint8 ``faces`` (each over the teacher views, on
    faces normalized as its run normalized them), softened."""
    from training.model import ensemble_probabilities

    raw = ensemble_probabilities(teachers, faces, VIEW_SETS[settings.teacher_views])
    probabilities = soften(raw, settings.distill_temperature).astype(np.float32)
    _LOGGER.info(
        "teacher %s (%s views) agrees with %.1f %% of the training labels on %s",
        " + ".join(settings.teachers),
        settings.teacher_views,
        100 * float((probabilities.argmax(1) == labels).mean()),
        what,
    )
    return probabilities


def _load_teachers(settings: TrainSettings) -> list[tuple[Any, str]]:
    """(model, face normalization) of each teacher: it sees faces as it was trained to (its own
    run's normalization; for a model no run saved nothing says, and faces are taken as they are)."""
    import keras

    from training.run_folder import face_normalization_of

    teachers = []
    for path in settings.teachers:
        if not Path(path).is_file():
            raise TrainingError(f"--teacher {path}: no such model")
        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as err:
            raise TrainingError(f"--teacher {path}: cannot load it as a Keras model ({err})") from err
        teachers.append((model, face_normalization_of(path) or "none"))
    return teachers


def split(settings: TrainSettings, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the faces that train and of the validation faces (stratified, by the seed)."""
    return stratified_split(labels, settings.validation_fraction, settings.seed)


@dataclass(frozen=True)
class TrainingData:
    images: np.ndarray  # uint8 training faces, unaugmented
    labels: np.ndarray
    x_val: np.ndarray  # float32 validation faces with a channel axis
    y_val: np.ndarray  # labels, or one-hot rows when the targets are soft
    teacher: np.ndarray | None  # per training face, or per judged epoch (teacher_probabilities)
    sample_weights: np.ndarray | None  # per training face, from the class weights

    @property
    def soft_targets(self) -> bool:
        return self.teacher is not None

    def epoch(self, settings: TrainSettings, epoch: int, augmentation: Augmentation):
        """(inputs, targets, sample weights) of 0-based ``epoch``: shuffled and augmented as
        drawn from (init seed, epoch), so a resumed run sees exactly the epochs it would have.
        With a teacher that judged N augmented epochs, epoch e is augmented epoch e mod N again,
        with the teacher's targets for those very faces, in an order of its own (drawn from
        (init seed, e, 1): not the order augmented epoch e would have had)."""
        judged_epochs = self.teacher is not None and settings.teacher_augmented_epochs > 0
        drawn = epoch % settings.teacher_augmented_epochs if judged_epochs else epoch
        x, y, order = augmented_epoch(
            self.images, self.labels, settings.init_seed, drawn, augmentation, settings.face_normalization
        )
        if judged_epochs:
            y = distillation_targets(y, self.teacher[drawn], settings.distill_weight)
            again = np.random.default_rng([settings.init_seed, epoch, 1]).permutation(len(y))
            x, y, order = x[again], y[again], order[again]
        elif self.teacher is not None:
            y = distillation_targets(y, self.teacher[order], settings.distill_weight)
        return x, y, None if self.sample_weights is None else self.sample_weights[order]


def training_data(settings: TrainSettings, run: RunFolder) -> TrainingData:
    faces = run.training_faces(settings.data)
    train_idx, val_idx = split(settings, faces.labels)
    if settings.max_train_faces:
        train_idx = train_idx[: settings.max_train_faces]
        val_idx = val_idx[: max(settings.max_train_faces // 4, 8)]
    images, labels = faces.images[train_idx], faces.labels[train_idx]
    x_val = normalize_faces(faces.images[val_idx], settings.face_normalization)[..., None].astype(np.float32)
    y_val = faces.labels[val_idx]
    teacher = teacher_probabilities(settings, run, images, labels) if settings.teacher else None
    if teacher is not None:  # soft targets need the categorical loss; validation stays one-hot
        y_val = np.eye(len(EMOTIONS), dtype=np.float32)[y_val]
    weights = class_weight_vector(labels, settings.class_weights)
    sample_weights = None if settings.class_weights == "none" else weights[labels].astype(np.float32)
    _LOGGER.info(
        "training on %d faces, validating on %d (carved from Training, stratified, seed %d)",
        len(labels),
        len(y_val),
        settings.seed,
    )
    return TrainingData(images, labels, x_val, y_val, teacher, sample_weights)
