"""A resumable training run.

A run lives in one folder (keep it outside the work tree)::

    settings.json   the settings it was started with; a resume must not change them
    state.json      epoch reached, learning rate, plateau and early-stopping counters
    last.keras      weights and optimizer state after the last finished epoch
    best.keras      the checkpoint with the best validation accuracy so far
    log.csv         one row per epoch
    report.json     validation and PublicTest figures of best.keras, when the run ends

A stopped run continues from ``last.keras`` with the same schedule: the counters of the
learning-rate drop and of early stopping are part of the saved state (Keras's own
callbacks keep them in memory only), and each epoch's shuffle and augmentation are drawn
from (seed, epoch).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import training  # noqa: F401  (sets TensorFlow's environment before it is imported)
import keras

from edge.contract import EMOTIONS, VIEW_SETS
from edge.datasets import FaceSet, load_fer2013, stratified_split
from edge.metrics import classification_report
from training.augment import Augmentation, augmented_epoch
from training.settings import CLASS_WEIGHT_MODES, SCHEDULES, TrainSettings
from training.model import ARCHITECTURES, keras_probabilities

_LOGGER = logging.getLogger(__name__)

class TrainingError(Exception):
    pass


@dataclass
class RunState:
    epoch: int = 0  # epochs finished
    learning_rate: float = 1e-3
    best_val_loss: float = float("inf")
    best_val_accuracy: float = -1.0
    best_epoch: int = -1
    lr_wait: int = 0
    stop_wait: int = 0
    finished: bool = False
    stop_reason: str = ""
    seconds: float = 0.0


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


def cosine_learning_rate(settings: TrainSettings, epoch: int) -> float:
    """Learning rate of 0-based ``epoch`` on a half cosine from the initial to the minimum."""
    progress = min(epoch / max(settings.epochs - 1, 1), 1.0)
    low, high = settings.min_learning_rate, settings.learning_rate
    return low + 0.5 * (high - low) * (1 + math.cos(math.pi * progress))


def _atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _atomic_save_model(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


class ResumableSchedule(keras.callbacks.Callback):
    """Best checkpoint, learning-rate drop and early stopping whose state survives a stop."""

    def __init__(self, run_dir: Path, settings: TrainSettings, state: RunState):
        super().__init__()
        self.run_dir, self.settings, self.state = run_dir, settings, state
        self._started = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._started = time.monotonic()
        if self.settings.schedule == "cosine":
            self.state.learning_rate = cosine_learning_rate(self.settings, epoch)
            self.model.optimizer.learning_rate.assign(self.state.learning_rate)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = logs or {}
        s, st = self.settings, self.state
        val_loss, val_acc = float(logs["val_loss"]), float(logs["val_accuracy"])
        st.epoch = epoch + 1
        st.seconds += time.monotonic() - self._started
        if val_acc > st.best_val_accuracy:
            st.best_val_accuracy, st.best_epoch = val_acc, epoch + 1
            _atomic_save_model(self.model, self.run_dir / "best.keras")
        if val_loss < st.best_val_loss - 1e-4:
            st.best_val_loss, st.lr_wait, st.stop_wait = val_loss, 0, 0
        else:
            st.lr_wait += 1
            st.stop_wait += 1
        if s.keep_epoch_weights:
            folder = self.run_dir / "epochs"
            folder.mkdir(exist_ok=True)
            self.model.save_weights(folder / f"epoch-{epoch + 1:03d}.weights.h5")
        if s.schedule == "plateau" and st.lr_wait >= s.lr_patience and st.learning_rate > s.min_learning_rate * 1.0001:
            st.learning_rate = max(st.learning_rate * s.lr_factor, s.min_learning_rate)
            st.lr_wait = 0
            self.model.optimizer.learning_rate.assign(st.learning_rate)
            _LOGGER.info("epoch %d: validation loss stalled; learning rate now %.2e", epoch + 1, st.learning_rate)
        if st.stop_wait >= s.stop_patience:
            st.finished, st.stop_reason = True, f"early stopping: no better validation loss for {s.stop_patience} epochs"
            self.model.stop_training = True
        elif st.epoch >= s.epochs:
            st.finished, st.stop_reason = True, f"reached the maximum of {s.epochs} epochs"
        _atomic_save_model(self.model, self.run_dir / "last.keras")
        _atomic_write_json(self.run_dir / "state.json", asdict(st))


def _configure_tensorflow() -> None:
    import tensorflow as tf

    # All cores inside an op, one op at a time: measured fastest for this small model on
    # 2 cores (about 75-85 s per epoch of 28,709 faces at batch size 64).
    try:
        tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count() or 1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process (tests): keep what it has
        pass


def _load_training_faces(settings: TrainSettings, run_dir: Path) -> FaceSet:
    # Parsing the 87 MB CSV costs ~20 s; a resumed run reads its own cache instead.
    cache = run_dir / "training-faces.npz"
    if cache.exists():
        with np.load(cache) as saved:
            return FaceSet(saved["images"], saved["labels"], str(saved["source"]))
    faces = load_fer2013(settings.data, "Training")
    np.savez(cache, images=faces.images, labels=faces.labels, source=faces.source)
    return faces


def _check_settings(run_dir: Path, settings: TrainSettings) -> None:
    path = run_dir / "settings.json"
    if not path.exists():
        _atomic_write_json(path, asdict(settings))
        return
    saved = json.loads(path.read_text())
    defaults = asdict(TrainSettings(data=settings.data))
    changed = {
        key: (saved.get(key), value)
        for key, value in asdict(settings).items()
        # A key the saved file lacks was added later; the run used its default.
        if key not in TrainSettings.RESUMABLE_CHANGES and saved.get(key, defaults.get(key)) != value
    }
    if changed:
        details = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise TrainingError(f"{run_dir} was started with other settings ({details}); use a new run folder")
    if saved != asdict(settings):
        _atomic_write_json(path, asdict(settings))


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


def _teacher_probabilities(settings: TrainSettings, run_dir: Path, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The teacher's softened probabilities on the (unaugmented) training faces, cached in
    the run folder: a resumed run trains against the very same targets."""
    cache = run_dir / "teacher-probabilities.npy"
    if cache.exists():
        saved = np.load(cache)
        if saved.shape == (len(images), len(EMOTIONS)):
            return saved
    source = Path(settings.teacher)
    if not source.is_file():
        raise TrainingError(f"--teacher {source}: no such model")
    if settings.teacher_views not in VIEW_SETS:
        raise TrainingError(f"--teacher-views {settings.teacher_views!r}: expected one of {sorted(VIEW_SETS)}")
    try:
        teacher = keras.models.load_model(source, compile=False)
    except Exception as err:
        raise TrainingError(f"--teacher {source}: cannot load it as a Keras model ({err})") from err
    raw = keras_probabilities(teacher, images, VIEW_SETS[settings.teacher_views])
    probabilities = soften(raw, settings.distill_temperature).astype(np.float32)
    np.save(cache, probabilities)
    _LOGGER.info("teacher %s (%s views) agrees with %.1f %% of the training labels", source,
                 settings.teacher_views, 100 * float((probabilities.argmax(1) == labels).mean()))
    return probabilities


def _initial_model(settings: TrainSettings) -> keras.Model:
    if settings.architecture not in ARCHITECTURES:
        raise TrainingError(f"unknown architecture {settings.architecture!r}; expected one of {sorted(ARCHITECTURES)}")
    model = ARCHITECTURES[settings.architecture](l2=settings.l2)
    if settings.init_from:
        source = Path(settings.init_from)
        if not source.is_file():
            raise TrainingError(f"--init-from {source}: no such checkpoint")
        try:
            model.set_weights(keras.models.load_model(source, compile=False).get_weights())
        except Exception as err:  # not a Keras file, or another architecture
            raise TrainingError(f"--init-from {source}: cannot load it as a {settings.architecture} ({err})") from err
        _LOGGER.info("starting from the weights of %s", source)
    return model


def train(settings: TrainSettings, run_dir: str | Path, verbose: int | None = None) -> RunState:
    """Starts a run in ``run_dir`` or resumes it from its last finished epoch."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if settings.schedule not in SCHEDULES:
        raise TrainingError(f"unknown schedule {settings.schedule!r}; expected one of {SCHEDULES}")
    _check_settings(run_dir, settings)
    state_path = run_dir / "state.json"
    state = RunState(**json.loads(state_path.read_text())) if state_path.exists() else RunState(
        learning_rate=settings.learning_rate
    )
    if state.finished and state.epoch >= settings.epochs or state.finished and "early" in state.stop_reason:
        _LOGGER.info("run %s already finished (%s)", run_dir, state.stop_reason)
        return state
    state.finished, state.stop_reason = False, ""

    _configure_tensorflow()
    keras.utils.set_random_seed(settings.seed + state.epoch)
    faces = _load_training_faces(settings, run_dir)
    train_idx, val_idx = stratified_split(faces.labels, settings.validation_fraction, settings.seed)
    if settings.max_train_faces:
        train_idx = train_idx[: settings.max_train_faces]
        val_idx = val_idx[: max(settings.max_train_faces // 4, 8)]
    x_train, y_train = faces.images[train_idx], faces.labels[train_idx]
    x_val = faces.images[val_idx][..., None].astype(np.float32)
    y_val = faces.labels[val_idx]
    teacher = _teacher_probabilities(settings, run_dir, x_train, y_train) if settings.teacher else None
    if teacher is not None:  # soft targets need the categorical loss; validation stays one-hot
        y_val = np.eye(len(EMOTIONS), dtype=np.float32)[y_val]
    weights = class_weight_vector(y_train, settings.class_weights)
    sample_weights = None if settings.class_weights == "none" else weights[y_train].astype(np.float32)
    _LOGGER.info(
        "training on %d faces, validating on %d (carved from Training, stratified, seed %d)",
        len(y_train), len(y_val), settings.seed,
    )

    augmentation = Augmentation(**settings.augmentation)
    last = run_dir / "last.keras"
    if state.epoch > 0 and last.exists():
        model = keras.models.load_model(last)
        model.optimizer.learning_rate.assign(state.learning_rate)
        _LOGGER.info("resuming %s at epoch %d (learning rate %.2e)", run_dir, state.epoch + 1, state.learning_rate)
    else:
        state = RunState(learning_rate=settings.learning_rate)
        model = _initial_model(settings)
        model.compile(
            optimizer=keras.optimizers.Adam(settings.learning_rate),
            loss="sparse_categorical_crossentropy" if teacher is None else "categorical_crossentropy",
            metrics=["accuracy"],
        )
    callbacks = [
        ResumableSchedule(run_dir, settings, state),
        keras.callbacks.CSVLogger(str(run_dir / "log.csv"), append=True),
    ]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    # One fit() call per epoch: each epoch's input is built whole from (seed, epoch).
    while not state.finished and state.epoch < settings.epochs:
        x, y, order = augmented_epoch(x_train, y_train, settings.seed, state.epoch, augmentation)
        if teacher is not None:
            y = distillation_targets(y, teacher[order], settings.distill_weight)
        model.fit(
            x, y,
            sample_weight=None if sample_weights is None else sample_weights[order],
            batch_size=settings.batch_size,
            shuffle=False,  # already shuffled, reproducibly
            validation_data=(x_val, y_val),
            epochs=state.epoch + 1,
            initial_epoch=state.epoch,
            callbacks=callbacks,
            verbose=verbose,
        )
    if not state.finished:  # fit returned without our schedule ending it (e.g. epochs reached)
        state.finished, state.stop_reason = True, f"reached the maximum of {settings.epochs} epochs"
        _atomic_write_json(state_path, asdict(state))
    _LOGGER.info(
        "run finished after %d epochs (%s); best validation accuracy %.4f at epoch %d; %.0f s training",
        state.epoch, state.stop_reason, state.best_val_accuracy, state.best_epoch, state.seconds,
    )
    return state


def final_report(settings: TrainSettings, run_dir: str | Path) -> dict[str, Any]:
    """Figures of best.keras on the validation split and on PublicTest (never used to select)."""
    run_dir = Path(run_dir)
    model = keras.models.load_model(run_dir / "best.keras")
    faces = _load_training_faces(settings, run_dir)
    _, val_idx = stratified_split(faces.labels, settings.validation_fraction, settings.seed)
    report: dict[str, Any] = {"validation": _evaluate(model, faces.images[val_idx], faces.labels[val_idx])}
    try:
        test = load_fer2013(settings.data, "PublicTest")
        report["PublicTest"] = _evaluate(model, test.images, test.labels)
    except Exception as err:  # a CSV without PublicTest rows still gets its validation report
        _LOGGER.warning("no PublicTest report: %s", err)
    _atomic_write_json(run_dir / "report.json", report)
    return report


def _evaluate(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    return classification_report(labels, keras_probabilities(model, images).argmax(axis=1), EMOTIONS)
