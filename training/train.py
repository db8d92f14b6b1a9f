"""A resumable training run: the epoch loop that puts the steps together.

    settings     training/settings.py    what the run is (the command line derives from it)
    run folder   training/run_folder.py  settings, state, checkpoints, caches; resuming
    data         training/data.py        the split, class weights, teacher targets, epoch input
    model        training/model.py       the architecture, built or loaded
    schedule     training/schedule.py    learning rate, best epoch, early stopping (pure)

A stopped run continues from ``last.keras`` with the same schedule: the counters of the
learning-rate drop and of early stopping are part of the saved state, and each epoch's
shuffle and augmentation are drawn from (init seed, epoch).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

import training  # sets TensorFlow's environment before it is imported
from edge.contract import EMOTIONS
from edge.tools.datasets import load_fer2013
from edge.tools.metrics import classification_report
from training.augment import Augmentation
from training.data import split, training_data
from training.model import build_model, compile_model, keras_probabilities
from training.run_folder import RunFolder, RunState, check_models_it_learns_from
from training.schedule import end_of_epoch, finish, learning_rate_for
from training.settings import TrainingError, TrainSettings

__all__ = ["TrainingError", "final_report", "train"]

_LOGGER = logging.getLogger(__name__)


class EpochEnd(keras.callbacks.Callback):
    """Applies the schedule around each epoch and saves what it decided: the best and last
    checkpoints, the epoch's weights if kept, then the state (last, so a kill between the
    two resumes at the epoch the checkpoint holds or reruns it)."""

    def __init__(self, run: RunFolder, settings: TrainSettings, state: RunState):
        super().__init__()
        self.run, self.settings, self.state = run, settings, state
        self._started = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._started = time.monotonic()
        self.state.learning_rate = learning_rate_for(self.settings, self.state, epoch)
        self.model.optimizer.learning_rate.assign(self.state.learning_rate)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = logs or {}
        state = self.state
        outcome = end_of_epoch(
            self.settings, state, epoch, float(logs["val_loss"]), float(logs["val_accuracy"])
        )
        state.seconds += time.monotonic() - self._started
        if outcome.best:
            self.run.save_model(self.model, self.run.best_checkpoint)
        if self.settings.keep_epoch_weights:
            self.run.save_epoch_weights(self.model, epoch + 1)
        if outcome.learning_rate_dropped:
            self.model.optimizer.learning_rate.assign(state.learning_rate)
            _LOGGER.info(
                "epoch %d: validation loss stalled; learning rate now %.2e", epoch + 1, state.learning_rate
            )
        if outcome.early_stop:
            self.model.stop_training = True
        self.run.save_model(self.model, self.run.last_checkpoint)
        self.run.save_state(state)


def _configure_tensorflow() -> None:
    import tensorflow as tf

    # All cores inside an op, one op at a time: measured fastest for this small model on
    # 2 cores (about 75-85 s per epoch of 28,709 faces at batch size 64).
    try:
        tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count() or 1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process (tests): keep what it has
        pass


def train(settings: TrainSettings, run_dir: str | Path, verbose: int | None = None) -> RunState:
    """Starts a run in ``run_dir`` or resumes it from its last finished epoch."""
    run = RunFolder(run_dir)
    check_models_it_learns_from(settings, run)  # before start() records settings that cannot run
    even_batches_only = training.onednn_enabled() and settings.architecture == "mini_xception"
    if even_batches_only and settings.batch_size % 2:
        raise TrainingError(
            f"--batch-size {settings.batch_size} with TF_ENABLE_ONEDNN_OPTS on: oneDNN crashes the "
            "mini-Xception's training step on a batch of odd size; take an even one or unset the variable"
        )
    state = run.start(settings)
    if state.is_over(settings):
        _LOGGER.info("run %s already finished (%s)", run.path, state.stop_reason)
        return state
    state.finished, state.stop_reason = False, ""

    _configure_tensorflow()
    if even_batches_only:
        _LOGGER.info("oneDNN is on: an epoch of odd length leaves its last face out (training/__init__.py)")
    keras.utils.set_random_seed(settings.init_seed + state.epoch)
    data = training_data(settings, run)
    if state.epoch > 0 and run.last_checkpoint.exists():
        model = keras.models.load_model(run.last_checkpoint)
        model.optimizer.learning_rate.assign(state.learning_rate)
        _LOGGER.info(
            "resuming %s at epoch %d (learning rate %.2e)", run.path, state.epoch + 1, state.learning_rate
        )
    else:
        state = RunState(learning_rate=settings.learning_rate)
        model = compile_model(build_model(settings), settings.learning_rate, data.soft_targets)
    callbacks = [EpochEnd(run, settings, state), keras.callbacks.CSVLogger(str(run.log_csv), append=True)]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    augmentation = Augmentation(**settings.augmentation)
    # One fit() call per epoch: each epoch's input is built whole from (init seed, epoch).
    while not state.finished and state.epoch < settings.epochs:
        x, y, sample_weights = data.epoch(settings, state.epoch, augmentation)
        if even_batches_only:  # see training/__init__.py: an odd-sized last batch would crash
            x, y, sample_weights = without_odd_face(x, y, sample_weights)
        model.fit(
            x,
            y,
            sample_weight=sample_weights,
            batch_size=settings.batch_size,
            shuffle=False,  # already shuffled, reproducibly
            validation_data=(data.x_val, data.y_val),
            epochs=state.epoch + 1,
            initial_epoch=state.epoch,
            callbacks=callbacks,
            verbose=verbose,
        )
    if not state.finished:  # fit returned without our schedule ending it (e.g. epochs reached)
        finish(settings, state)
        run.save_state(state)
    _LOGGER.info(
        "run finished after %d epochs (%s); best validation accuracy %.4f at epoch %d; %.0f s training",
        state.epoch,
        state.stop_reason,
        state.best_val_accuracy,
        state.best_epoch,
        state.seconds,
    )
    return state


def without_odd_face(*arrays: np.ndarray | None) -> tuple[np.ndarray | None, ...]:
    """The arrays (None passes through) without their last face when there is an odd number:
    with an even batch size every batch, the last one too, is then of even size. The face
    left out differs from epoch to epoch, as each epoch is shuffled anew."""
    kept = len(arrays[0]) // 2 * 2
    return tuple(None if array is None else array[:kept] for array in arrays)


def final_report(settings: TrainSettings, run_dir: str | Path) -> dict[str, Any]:
    """Figures of best.keras on the validation split and on PublicTest (never used to select)."""
    run = RunFolder(run_dir)
    model = keras.models.load_model(run.best_checkpoint)
    faces = run.training_faces(settings.data)
    _, val_idx = split(settings, faces.labels)
    report: dict[str, Any] = {
        "validation": _evaluate(
            model, faces.images[val_idx], faces.labels[val_idx], settings.face_normalization
        )
    }
    try:
        test = load_fer2013(settings.data, "PublicTest")
        report["PublicTest"] = _evaluate(model, test.images, test.labels, settings.face_normalization)
    except Exception as err:  # a CSV without PublicTest rows still gets its validation report
        _LOGGER.warning("no PublicTest report: %s", err)
    run.save_report(report)
    return report


def _evaluate(model: keras.Model, images, labels, normalization: str) -> dict[str, Any]:
    probabilities = keras_probabilities(model, images, normalization=normalization)
    return classification_report(labels, probabilities.argmax(axis=1), EMOTIONS)
