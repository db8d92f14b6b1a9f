"""``python -m training.evaluate``: the figures of a .keras model, with the edge's own report.

The same command line and report as ``fer-kiosk evaluate`` (``edge.tools.evaluate``), which runs
.tflite models only: the edge never imports training. A .keras model has no contract: it is
read with the contract's defaults (labels, 48x48 input, face-crop rule), a single view
unless ``--views`` says otherwise, and the face normalization and validation split of the
run that saved it (``settings_of_model``; training's defaults for a model no run saved).
Several models, comma-separated, are evaluated as one ensemble (a distillation teacher):
their probabilities averaged.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

import training  # sets TensorFlow's environment before it is imported
from edge.contract import VIEW_SETS, ModelContract
from edge.tools.datasets import SPLIT_SEED, VALIDATION_FRACTION
from edge.tools.evaluate import EvaluationError, run
from edge.tools.evaluate_options import add_arguments
from training.run_folder import check_same_validation_split, settings_of_model
from training.settings import TrainingError, TrainSettings, model_list


class KerasClassifier:
    """A .keras model behind ``EmotionClassifier``'s interface (``contract``, ``labels``,
    ``classify``, ``classify_many``), so evaluation and the frame pipeline take either.
    Several models given comma-separated are an ensemble (a distillation teacher): their
    probabilities are averaged, each model seeing faces with its own run's normalization."""

    def __init__(self, model_path: str | Path, views: str | None = None):
        import keras

        paths = [Path(path) for path in model_list(str(model_path))]
        if not paths:
            raise EvaluationError(f"--model {str(model_path)!r} names no model")
        for path in paths:
            if path.suffix != ".keras":
                raise EvaluationError(
                    f"{path.name}: python -m training.evaluate takes a .keras "
                    "model; a .tflite is evaluated by fer-kiosk evaluate"
                )
            if not path.is_file():
                raise EvaluationError(f"model file {path} not found")
        # The report names a model by its file name, an ensemble by its members (source).
        self.model_path = paths[0] if len(paths) == 1 else None
        # Each model's face normalization and validation split as its run's settings say;
        # for a model no run saved: none, and training's default split.
        try:
            runs = [settings_of_model(path) for path in paths]
            split = _validation_split(runs)  # first: members that disagree are named as such
            _check_lineages(paths, runs)
        except TrainingError as err:
            raise EvaluationError(str(err)) from err
        normalizations = [run.face_normalization if run else "none" for run in runs]
        mixed = len(set(normalizations)) > 1
        self._members = [
            (keras.models.load_model(path, compile=False), normalization)
            for path, normalization in zip(paths, normalizations, strict=True)
        ]
        self.contract = ModelContract(
            views=VIEW_SETS[views or "single"],
            model_format="keras",
            face_normalization="none" if mixed else normalizations[0],
            source={
                "checkpoint": " + ".join(
                    f"{path.parent.name}/{path.name}" + (f" ({normalization})" if mixed else "")
                    for path, normalization in zip(paths, normalizations, strict=True)
                )
            },
            training_data={"settings": split},
        )

    @property
    def labels(self) -> tuple[str, ...]:
        return self.contract.labels

    def classify(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        return self._probabilities(crops[None] if crops.ndim == 2 else crops, self.contract.views)

    classify_many = classify

    def classify_with(self, crops: np.ndarray, views) -> np.ndarray:
        """Each face averaged over its own views (``views[i]`` for crop i), as
        ``EmotionClassifier.classify_with`` does: the frame pipeline (``--detect``) uses it."""
        crops = np.asarray(crops)
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        faces = [
            self._probabilities(crops[i : i + 1], tuple(views_of_face))
            for i, views_of_face in enumerate(views)
        ]
        return np.concatenate(faces)

    def _probabilities(self, crops: np.ndarray, views) -> np.ndarray:
        from training.model import ensemble_probabilities

        return ensemble_probabilities(self._members, crops, views)


def _validation_split(runs: list[TrainSettings | None]) -> dict[str, float | int]:
    """The validation split the models held out (training's default for a model no run
    saved): ``--usage validation`` evaluates on it, and members of an ensemble that held out
    different faces are refused, as one of them trained on the rest."""
    default = (VALIDATION_FRACTION, SPLIT_SEED)
    splits = {(run.validation_fraction, run.seed) if run else default for run in runs}
    if len(splits) > 1:
        raise EvaluationError(
            "the models held out different validation splits (fraction, seed): "
            + ", ".join(map(str, sorted(splits)))
        )
    fraction, seed = splits.pop()
    return {"validation_fraction": fraction, "seed": seed}


def _check_lineages(paths: list[Path], runs: list[TrainSettings | None]) -> None:
    """Refuses a model that learned from one that held out other validation faces (training's
    check, back through the runs each model descends from): a model training itself would
    have refused to make, so none of its figures is one to report."""
    reference = next((run for run in runs if run is not None), None)
    if reference is None:
        return
    checked: set[Path] = set()
    for path in paths:
        check_same_validation_split(path, reference, "--model", checked, whose="the evaluated split")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description=__doc__.replace("``", ""),  # the docstring's markup is not for a terminal
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(
        parser,
        None,
        "the .keras model to evaluate (e.g. RUN_DIR/best.keras), or several comma-separated: "
        "an ensemble, their probabilities averaged",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = training.missing_train_extra("python -m training.evaluate")
    if missing:  # a .keras model needs Keras; the edge's own evaluate takes a .tflite without it
        print(f"{missing} (a .tflite model: fer-kiosk evaluate)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(args, KerasClassifier)


if __name__ == "__main__":
    sys.exit(main())
