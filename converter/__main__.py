"""``python -m converter``: Keras model -> NAME.tflite + NAME.json (its contract), proven."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import training  # sets TensorFlow's environment first
from edge import DEFAULT_MODEL
from edge.config import allowed, range_problem

# The numeric options' valid values, refused as the daemon refuses a config's (one line
# naming each), before anything is loaded.
OPTION_RANGES = {
    "check_faces": allowed(0),
    "calibration_faces": allowed(1, 1_000_000),
    "max_accuracy_drop": allowed(0.0, 100.0),
    # A box shrunk by a quarter on each side still keeps its middle half; grown by a whole
    # box on each side the face fills a third of the crop.
    "crop_margin": allowed(-0.25, 1.0),
}


def build_parser() -> argparse.ArgumentParser:
    from converter import FORMATS
    from edge.contract import DEFAULT_CROP_MARGIN, FACE_NORMALIZATIONS, VIEW_SETS

    p = argparse.ArgumentParser(
        prog=training.prog_name("converter", "fer-kiosk-convert"),
        description="Convert a trained Keras model to TFLite, write its contract beside it and prove "
        "that it agrees with the Keras model (exit 1 when accuracy drops more than allowed).",
    )
    p.add_argument("--keras", required=True, help="trained model (.keras), e.g. RUN_DIR/best.keras")
    p.add_argument(
        "--out",
        default=str(DEFAULT_MODEL),
        help="output NAME.tflite; NAME.json is written beside it (default: the model the "
        "edge package ships, edge/models/emotion_int8.tflite)",
    )
    p.add_argument("--format", choices=FORMATS, default="int8")
    p.add_argument(
        "--face-normalization",
        choices=("auto", *FACE_NORMALIZATIONS),
        default="auto",
        help="what is done to each face before the model, written into the contract: auto (the "
        "default) takes it from --run-dir's settings or the run settings --keras carries (none, "
        "with a warning, when neither says; refused when the two disagree)",
    )
    p.add_argument(
        "--data", required=True, help="FER2013 (CSV or folders): calibration faces and check faces"
    )
    p.add_argument(
        "--check-usage", default="PublicTest", help="split to prove the conversion on (default PublicTest)"
    )
    p.add_argument("--check-faces", type=int, default=0, help="use only the first N check faces (0: all)")
    p.add_argument("--calibration-faces", type=int, default=500, help="Training faces to calibrate int8 on")
    p.add_argument("--max-accuracy-drop", type=float, default=1.0, help="allowed loss in accuracy points")
    p.add_argument(
        "--crop-margin",
        type=float,
        default=DEFAULT_CROP_MARGIN,
        help="fraction of the detector box added on each side before resizing (face-crop rule)",
    )
    p.add_argument(
        "--views",
        choices=("auto", *VIEW_SETS),
        default="auto",
        help="test-time views the daemon averages per face: single, mirror (face and mirror image) "
        "or mirror-shift (each also shifted 2 px four ways). auto: the best on the run's "
        "validation split (needs --run-dir; single without it). Never chosen on test data.",
    )
    p.add_argument(
        "--run-dir", help="the training run folder, to record the data and settings it was trained with"
    )
    p.add_argument(
        "--also-check-with",
        metavar="PYTHON",
        help="a Python with tflite-runtime (e.g. 2.14) that must load and run the file too "
        "(default: $FER_KIOSK_TFLITE214_PYTHON if set)",
    )
    return p


def option_problems(args: argparse.Namespace) -> list[str]:
    """Each numeric option out of its range, in words (``--calibration-faces: must be at least 1, got 0``)."""
    problems = ((name, range_problem(spec, getattr(args, name))) for name, spec in OPTION_RANGES.items())
    return [f"--{name.replace('_', '-')}: {problem}" for name, problem in problems if problem]


def chosen_face_normalization(option: str, keras_path: str, run_settings, run_dir: str | None) -> str:
    """The contract's face normalization: the option when given, else what the model was
    trained with (a wrong one would pass every check here, since both sides would get it,
    and lose accuracy on the box: so it is said loudly when nothing tells, and two sources
    that disagree are refused)."""
    from training.run_folder import face_normalization_of
    from training.settings import TrainingError

    beside = face_normalization_of(keras_path)
    from_run = run_settings.face_normalization if run_settings is not None else None
    if option != "auto":
        return option
    if beside is not None and from_run is not None and beside != from_run:
        raise TrainingError(
            f"--keras {keras_path} was trained with face normalization {beside!r} (the settings "
            f"of the run that saved it), --run-dir {run_dir} says {from_run!r}: which model is this?"
        )
    found = from_run or beside
    if found is None:
        logging.getLogger(__name__).warning(
            "--keras %s: no run's settings say how its faces were normalized; assuming none "
            "(a model trained with --face-normalization equalize needs --run-dir or "
            "--face-normalization equalize, or it loses accuracy on every face)",
            keras_path,
        )
        return "none"
    return found


def _without_machine_paths(key: str, value: str) -> str:
    """A setting that names files, without this machine's folders: the data file by its name,
    a model (several comma-separated for an ensemble teacher) by its run folder and name, as
    ``best.keras`` alone says nothing."""
    from training.settings import model_list

    if key == "data":
        return Path(value).name
    return ",".join(f"{Path(path).parent.name}/{Path(path).name}".lstrip("/") for path in model_list(value))


def _validation(keras_path: str, faces, settings):
    """Keras figures on the run's own validation split of FER2013's Training ``faces`` (carved
    as it was), and that split's faces (the class balance and temperature are fitted on them)."""
    import keras

    from converter.convert import validation_figures
    from edge.tools.datasets import FaceSet
    from training.data import split

    _, held = split(settings, faces.labels)
    model = keras.models.load_model(keras_path, compile=False)
    held_out = FaceSet(faces.images[held], faces.labels[held], faces.source)
    return validation_figures(model, held_out, settings.face_normalization), held_out


def main(argv: list[str] | None = None) -> int:
    """0: converted and proven; 2: the command line is wrong (argparse's refusals, an option
    out of range, the train extra missing); 1: the conversion failed or was refused."""
    args = build_parser().parse_args(argv)
    problems = option_problems(args)
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return 2
    missing = training.missing_train_extra(training.prog_name("converter", "fer-kiosk-convert"))
    if missing:
        print(missing, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from converter.convert import (
        ConversionError,
        calibration_faces,
        choose_views,
        convert_and_check,
        default_other_runtime,
    )
    from edge.contract import VIEW_SETS, ContractError, CropRule
    from edge.tools.datasets import DatasetError, FaceSet, load_fer2013
    from edge.vision.preprocess import normalize_faces
    from training.run_folder import RunFolder
    from training.settings import TrainingError

    try:
        check = load_fer2013(args.data, args.check_usage)
        if args.check_faces:
            check = FaceSet(check.images[: args.check_faces], check.labels[: args.check_faces], check.source)
        run = RunFolder(args.run_dir) if args.run_dir else None
        settings = run.settings() if run is not None else None
        normalization = chosen_face_normalization(args.face_normalization, args.keras, settings, args.run_dir)
        # Read once (about 4 s): the int8 calibration faces and the validation split come from it.
        training_faces = load_fer2013(args.data, "Training") if args.format == "int8" or run else None
        calibration = None
        if args.format == "int8":
            faces = calibration_faces(training_faces, args.calibration_faces, seed=0)
            calibration = normalize_faces(faces, normalization)
        training_data = {"data": Path(args.data).name, "usage": "Training"}
        validation = validation_faces = None
        if run is not None:
            # File names only: the machine's paths stay out of the shipped contract.
            paths = ("data", "init_from", "teacher")
            training_data["settings"] = {
                key: _without_machine_paths(key, value) if key in paths and value else value
                for key, value in asdict(settings).items()
            }
            state = run.state()
            if state is None:
                raise TrainingError(f"{run.path} has no state.json: the run never finished an epoch")
            recorded = ("epoch", "best_epoch", "best_val_accuracy", "stop_reason", "seconds")
            training_data["run"] = {key: getattr(state, key) for key in recorded}
            averaging = run.averaging()
            if Path(args.keras).name == run.averaged_checkpoint.name and averaging is not None:
                training_data["averaging"] = averaging  # python -m training.average
            validation, validation_faces = _validation(args.keras, training_faces, settings)
        views = args.views
        if views == "auto":
            views = choose_views(validation) if validation else "single"
            logging.getLogger(__name__).info(
                "test-time views: %s (%s)",
                views,
                "best on validation" if validation else "no --run-dir, no validation",
            )
        contract, result = convert_and_check(
            args.keras,
            args.out,
            args.format,
            check,
            calibration,
            max_accuracy_drop=args.max_accuracy_drop,
            crop=CropRule(margin=args.crop_margin),
            training_data=training_data,
            other_runtime_python=args.also_check_with or default_other_runtime(),
            check_name=f"{Path(args.data).name} {args.check_usage}",
            views=VIEW_SETS[views],
            validation=validation,
            validation_faces=validation_faces,
            face_normalization=normalization,
        )
    except (ConversionError, ContractError, DatasetError, TrainingError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "model": args.out,
                "format": contract.model_format,
                "bytes": Path(args.out).stat().st_size,
                "faces_checked": result.faces,
                "top1_agreement": round(result.agreement, 4),
                "keras_accuracy": round(result.keras_accuracy, 4),
                "tflite_accuracy": round(result.tflite_accuracy, 4),
                "accuracy_drop_points": round(result.accuracy_drop_points, 2),
                "views": views,
                "validation": validation,
                "calibration": contract.evaluation.get("calibration"),
                "checked_with": contract.checked_with,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
