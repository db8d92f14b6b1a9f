"""``python -m training.evaluate``: the figures of a .keras model, with the edge's own report.

The same command line and report as ``fer-kiosk evaluate`` (``edge.evaluate``), which runs
.tflite models only: the edge never imports training. A .keras model has no contract: it is
read with the contract's defaults (labels, 48x48 input, face-crop rule), a single view
unless ``--views`` says otherwise, and the validation split of training's defaults.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

import training  # noqa: F401  (sets TensorFlow's environment before it is imported)
from edge.contract import VIEW_SETS, ModelContract
from edge.evaluate import EvaluationError, run
from edge.evaluate_options import add_arguments
from training.run_folder import face_normalization_of


class KerasClassifier:
    """A .keras model behind ``EmotionClassifier``'s interface (``contract``, ``labels``,
    ``classify``, ``classify_many``), so evaluation and the frame pipeline take either."""

    def __init__(self, model_path: str | Path, views: str | None = None):
        import keras

        self.model_path = Path(model_path)
        if self.model_path.suffix != ".keras":
            raise EvaluationError(
                f"{self.model_path.name}: python -m training.evaluate takes a .keras "
                "model; a .tflite is evaluated by fer-kiosk evaluate"
            )
        if not self.model_path.is_file():
            raise EvaluationError(f"model file {self.model_path} not found")
        self.contract = ModelContract(
            views=VIEW_SETS[views or "single"],
            model_format="keras",
            # as its run folder's settings say; a model outside a run folder: none
            face_normalization=face_normalization_of(self.model_path) or "none",
        )
        self._model = keras.models.load_model(self.model_path, compile=False)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.contract.labels

    def classify(self, crops: np.ndarray) -> np.ndarray:
        from training.model import keras_probabilities

        crops = np.asarray(crops)
        crops = crops[None] if crops.ndim == 2 else crops
        return keras_probabilities(self._model, crops, self.contract.views, self.contract.face_normalization)

    classify_many = classify

    def classify_with(self, crops: np.ndarray, views) -> np.ndarray:
        """Each face averaged over its own views (``views[i]`` for crop i), as
        ``EmotionClassifier.classify_with`` does: the frame pipeline (``--detect``) uses it."""
        from training.model import keras_probabilities

        crops = np.asarray(crops)
        normalization = self.contract.face_normalization
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        faces = [
            keras_probabilities(self._model, crops[i : i + 1], tuple(face_views), normalization)
            for i, face_views in enumerate(views)
        ]
        return np.concatenate(faces)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser, None, "the .keras model to evaluate (e.g. RUN_DIR/best.keras)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(args, KerasClassifier)


if __name__ == "__main__":
    sys.exit(main())
