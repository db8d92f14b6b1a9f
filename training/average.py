"""Weight averaging over the last epochs of a run (stochastic weight averaging).

The epochs at the end of a cosine schedule sit around one minimum; the mean of their
weights usually generalises better than any one of them. BatchNorm's moving statistics
do not average linearly, so they are measured again: one pass over the training faces in
training mode, with each layer's momentum set so that its moving mean and variance come
out as the plain average over all batches.

    python -m training.average --run-dir RUN --last 10 [--data fer2013.csv.gz]

Needs a run trained with --keep-epoch-weights. Writes RUN/averaged.keras and prints its
validation accuracy next to best.keras's, so the choice between them is made on the
validation split (never on PublicTest).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import training  # sets TensorFlow's environment before it is imported
from edge.vision.preprocess import normalize_faces
from training.data import split
from training.run_folder import RunFolder
from training.settings import TrainingError

if TYPE_CHECKING:  # Keras is imported where it is used: --help works without the train extra
    import keras

_LOGGER = logging.getLogger(__name__)


def average_weights(model: keras.Model, files: list[Path]) -> list[np.ndarray]:
    """The mean of the weights in ``files``, each loaded into ``model`` (same architecture)."""
    total: list[np.ndarray] | None = None
    for path in files:
        model.load_weights(path)
        weights = [w.astype(np.float64) for w in model.get_weights()]
        total = weights if total is None else [t + w for t, w in zip(total, weights)]
    assert total is not None
    return [(t / len(files)).astype(np.float32) for t in total]


def recompute_batchnorm(model: keras.Model, images: np.ndarray, batch_size: int = 256) -> None:
    """Sets every BatchNorm layer's moving statistics to their mean over ``images``."""
    import keras

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, np.float32))
        layer.moving_variance.assign(np.zeros(layer.moving_variance.shape, np.float32))
    try:
        for step, start in enumerate(range(0, len(images), batch_size)):
            for layer in layers:
                layer.momentum = step / (step + 1)  # moving <- running mean over the batches so far
            model(images[start : start + batch_size, ..., None].astype(np.float32), training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum


def accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray, normalization: str) -> float:
    from training.model import keras_probabilities

    return float((keras_probabilities(model, images, normalization=normalization).argmax(1) == labels).mean())


def average_run(run_dir: Path, last: int, data: str | None = None) -> dict:
    run = RunFolder(run_dir)
    settings = run.settings()
    if not settings.keep_epoch_weights:
        raise TrainingError(f"{run_dir} kept no per-epoch weights (train it with --keep-epoch-weights)")
    if data:
        settings = replace(settings, data=data)
    files = run.epoch_weights()[-last:]
    if len(files) < 2:
        raise TrainingError(f"{run_dir}/epochs has {len(files)} epoch weights; averaging needs at least 2")
    import keras

    from training.model import compile_model, untrained_model

    faces = run.training_faces(settings.data)
    train_idx, val_idx = split(settings, faces.labels)
    model = untrained_model(settings)
    model.set_weights(average_weights(untrained_model(settings), files))
    train_faces = faces.images[np.random.default_rng(settings.init_seed).permutation(train_idx)]
    recompute_batchnorm(model, normalize_faces(train_faces, settings.face_normalization))
    compile_model(model, settings.min_learning_rate)
    # Its optimizer built, so the file carries all of its state: loaded compiled (to train it
    # further), an optimizer saved unbuilt makes Keras warn that it skipped 104 variables.
    model.optimizer.build(model.trainable_variables)
    best = keras.models.load_model(run.best_checkpoint, compile=False)
    x_val, y_val = faces.images[val_idx], faces.labels[val_idx]
    summary = {
        "averaged_epochs": [f.name for f in files],
        "validation_accuracy": {
            "averaged": accuracy(model, x_val, y_val, settings.face_normalization),
            "best": accuracy(best, x_val, y_val, settings.face_normalization),
        },
    }
    run.save_averaging(model, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    prog = "python -m training.average"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--last", type=int, default=10, help="average the last N epochs (default 10)")
    parser.add_argument("--data", help="FER2013, if it moved since the run was trained")
    args = parser.parse_args(argv)
    missing = training.missing_train_extra(prog)
    if missing:
        print(missing, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = average_run(args.run_dir, args.last, args.data)
    except TrainingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
