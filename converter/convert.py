"""Keras -> TFLite, then proof that the converted file still agrees with the Keras model.

The proof runs the .tflite through ``edge.vision.classifier.EmotionClassifier``, the very code the
daemon uses, so a contract, quantization or preprocessing slip shows up here and not at
the kiosk.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import training  # noqa: F401  (sets TensorFlow's environment before it is imported)
from converter import FORMATS
from converter.calibrate import fit_calibration
from edge.contract import (
    EMOTIONS,
    VIEW_SETS,
    CropRule,
    ModelContract,
    View,
    file_sha256,
    save_contract,
)
from edge.tools.datasets import FaceSet, stratified_split
from edge.tools.metrics import classification_report
from edge.vision.arrays import dequantize
from edge.vision.classifier import EmotionClassifier, load_interpreter_class, tensor_quantization
from training.model import keras_probabilities

_LOGGER = logging.getLogger(__name__)

# Two runtimes running the same int8 file pick different kernels (XNNPACK, reference) that
# round differently: measured on the default model, LiteRT 2.3 and tflite-runtime 2.14 each
# differ from the float Keras model by 0.006 in mean probability and agree with each other on
# 97% of PublicTest faces (max single difference 0.12). A real incompatibility fails to load
# or disagrees wholesale; these bounds tell the two apart.
OTHER_RUNTIME_MEAN_TOLERANCE = 0.02
OTHER_RUNTIME_MIN_AGREEMENT = 0.95


class ConversionError(Exception):
    pass


@dataclass(frozen=True)
class CheckResult:
    faces: int
    agreement: float  # top-1 agreement between Keras and TFLite
    keras_accuracy: float
    tflite_accuracy: float
    max_probability_difference: float
    tflite_report: dict[str, Any]
    keras_report: dict[str, Any]

    @property
    def accuracy_drop_points(self) -> float:
        return 100.0 * (self.keras_accuracy - self.tflite_accuracy)


def calibration_faces(faces: FaceSet, n: int, seed: int) -> np.ndarray:
    """``n`` real faces drawn across all classes, for int8 calibration."""
    fraction = min(1.0, n / max(len(faces), 1))
    _, picked = stratified_split(faces.labels, fraction, seed)
    return faces.images[picked[:n]]


def convert_keras(model: keras.Model, fmt: str, calibration: np.ndarray | None = None) -> bytes:
    if fmt not in FORMATS:
        raise ConversionError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if fmt == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif fmt == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif fmt == "int8":
        if calibration is None or len(calibration) == 0:
            raise ConversionError("int8 conversion needs real faces to calibrate on (--data)")

        def representative():
            for face in calibration:
                yield [face[None, :, :, None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    # The converter prints every captured variable to stdout; keep the user's terminal readable.
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def operator_versions(tflite: bytes) -> dict[str, int]:
    """Builtin operators of a .tflite and the highest version of each it uses."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(tflite, 0))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops: dict[str, int] = {}
    for code in model.operatorCodes:
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = names.get(builtin, str(builtin))
        ops[name] = max(ops.get(name, 0), code.version)
    return ops


def _interpreter_contract(path: Path, fmt: str, **fields: Any) -> ModelContract:
    """The contract as the runtime sees the file: shapes, types and quantization read back."""
    interpreter_class, runtime = load_interpreter_class()
    interpreter = interpreter_class(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    return ModelContract(
        labels=EMOTIONS,
        input_shape=tuple(int(v) for v in inp["shape"]),
        input_dtype=np.dtype(inp["dtype"]).name,
        output_dtype=np.dtype(out["dtype"]).name,
        input_quantization=tensor_quantization(inp),
        output_quantization=tensor_quantization(out),
        sha256=file_sha256(path),
        model_format=fmt,
        checked_with={"runtime": runtime},
        **fields,
    )


def check_conversion(model: keras.Model, tflite_path: Path, faces: FaceSet) -> CheckResult:
    classifier = EmotionClassifier(tflite_path)
    tflite_probs = classifier.classify_many(faces.images)
    contract = classifier.contract
    keras_probs = keras_probabilities(model, faces.images, contract.views, contract.face_normalization)
    tflite_top, keras_top = tflite_probs.argmax(1), keras_probs.argmax(1)
    tflite_report = classification_report(faces.labels, tflite_top, EMOTIONS)
    keras_report = classification_report(faces.labels, keras_top, EMOTIONS)
    return CheckResult(
        faces=len(faces),
        agreement=float((tflite_top == keras_top).mean()),
        keras_accuracy=keras_report["accuracy"],
        tflite_accuracy=tflite_report["accuracy"],
        max_probability_difference=float(np.abs(tflite_probs - keras_probs).max()),
        tflite_report=tflite_report,
        keras_report=keras_report,
    )


_OTHER_RUNTIME_SCRIPT = """
import json, sys
import numpy as np
from tflite_runtime.interpreter import Interpreter
import tflite_runtime
path, faces_path = sys.argv[1], sys.argv[2]
faces = np.load(faces_path)
interp = Interpreter(model_path=path)
inp = interp.get_input_details()[0]; out = interp.get_output_details()[0]
interp.resize_tensor_input(inp["index"], [len(faces), *inp["shape"][1:]]); interp.allocate_tensors()
interp.set_tensor(inp["index"], faces.astype(inp["dtype"])); interp.invoke()
output = interp.get_tensor(out["index"]).astype(float).tolist()
print(json.dumps({"version": tflite_runtime.__version__, "output": output}))
"""


def check_with_tflite_runtime(python: str, classifier: EmotionClassifier, images: np.ndarray) -> str:
    """Runs the file in another Python's tflite-runtime (e.g. 2.14) and compares probabilities.

    See OTHER_RUNTIME_MEAN_TOLERANCE for why the bounds are on the mean and on top-1.
    """
    tflite_path = classifier.model_path
    classifier_inputs = classifier.prepare(images)
    expected = classifier.invoke_many(images)
    with tempfile.TemporaryDirectory() as tmp:
        faces_path = Path(tmp) / "faces.npy"
        np.save(faces_path, classifier_inputs)
        result = subprocess.run(
            [python, "-c", _OTHER_RUNTIME_SCRIPT, str(tflite_path), str(faces_path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-3:]
        raise ConversionError(f"{tflite_path} does not run in {python}'s tflite-runtime: {' | '.join(tail)}")
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    output = np.asarray(answer["output"], dtype=np.float32)
    if classifier.contract.output_quantization is not None:
        output = dequantize(output, classifier.contract.output_quantization)
    mean_difference = float(np.abs(output - expected).mean())
    agreement = float((output.argmax(1) == expected.argmax(1)).mean())
    if mean_difference > OTHER_RUNTIME_MEAN_TOLERANCE or agreement < OTHER_RUNTIME_MIN_AGREEMENT:
        raise ConversionError(
            f"tflite-runtime {answer['version']} and {classifier.runtime} disagree on the same faces: "
            f"mean probability difference {mean_difference:.4f} (limit {OTHER_RUNTIME_MEAN_TOLERANCE}), "
            f"top-1 agreement {agreement:.1%} (at least {OTHER_RUNTIME_MIN_AGREEMENT:.0%})"
        )
    return (
        f"tflite-runtime {answer['version']} (top-1 agreement {agreement:.1%}, "
        f"mean probability difference {mean_difference:.4f})"
    )


def convert_and_check(
    keras_path: str | Path,
    out_path: str | Path,
    fmt: str,
    check_faces: FaceSet,
    calibration: np.ndarray | None,
    max_accuracy_drop: float = 1.0,
    crop: CropRule = CropRule(),
    training_data: dict[str, Any] | None = None,
    other_runtime_python: str | None = None,
    check_name: str = "",
    views: tuple[View, ...] = (View(),),
    validation: dict[str, Any] | None = None,
    validation_faces: FaceSet | None = None,
    face_normalization: str = "none",
) -> tuple[ModelContract, CheckResult]:
    """Converts, writes NAME.tflite and NAME.json, proves agreement; raises when it fails.
    With ``validation_faces``, also fits the class balance and calibration temperature on them
    (never on the check faces, on which their effect is only reported)."""
    keras_path, out_path = Path(keras_path), Path(out_path)
    try:
        model = keras.models.load_model(keras_path, compile=False)
    except Exception as err:  # Keras raises many types for a bad file
        raise ConversionError(f"cannot load Keras model {keras_path}: {err}") from err
    tflite = convert_keras(model, fmt, calibration)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(tflite)
    ops = operator_versions(tflite)
    source = {
        "checkpoint": keras_path.name,
        "sha256": file_sha256(keras_path),
        "parameters": model.count_params(),
    }
    contract = _interpreter_contract(
        out_path,
        fmt,
        crop=crop,
        source=source,
        training_data=training_data or {},
        views=views,
        face_normalization=face_normalization,
    )
    save_contract(contract, out_path)
    check = check_conversion(model, out_path, check_faces)
    checked_with = {
        "runtime": contract.checked_with["runtime"],
        "converter": f"tensorflow {tf.__version__}, keras {keras.__version__}",
        "python": platform.python_version(),
        "operators": ops,
    }
    if other_runtime_python:
        checked_with["also_runs_in"] = check_with_tflite_runtime(
            other_runtime_python, EmotionClassifier(out_path), check_faces.images
        )
    evaluation = {
        "data": check_name or Path(check_faces.source).name,
        "faces": check.faces,
        "tflite": _figures(check.tflite_report),
        "keras": _figures(check.keras_report),
        "top1_agreement": check.agreement,
        "accuracy_drop_points": check.accuracy_drop_points,
        "max_probability_difference": check.max_probability_difference,
    }
    if validation:
        evaluation["validation"] = validation
    calibration_fields = {}
    if validation_faces is not None and len(validation_faces.labels):
        fitted = fit_calibration(EmotionClassifier(out_path), validation_faces, check_faces)
        evaluation["calibration"] = fitted.report
        calibration_fields = {"temperature": fitted.temperature, "class_bias": fitted.class_bias}
    contract = replace(contract, checked_with=checked_with, evaluation=evaluation, **calibration_fields)
    save_contract(contract, out_path)
    if check.accuracy_drop_points > max_accuracy_drop:
        raise ConversionError(
            f"{fmt} conversion loses {check.accuracy_drop_points:.2f} accuracy points "
            f"(Keras {check.keras_accuracy:.4f}, TFLite {check.tflite_accuracy:.4f} on {check.faces} faces); "
            f"the limit is {max_accuracy_drop:.2f}. {out_path} was written for inspection "
            "but is not fit to ship."
        )
    return contract, check


def validation_figures(model: keras.Model, faces: FaceSet, normalization: str = "none") -> dict[str, Any]:
    """Keras accuracy on held-out Training faces for every view set in VIEW_SETS: the data
    on which the test-time views are chosen (never the test split)."""

    def accuracy(views: tuple[View, ...]) -> float:
        probabilities = keras_probabilities(model, faces.images, views, normalization)
        return float((probabilities.argmax(1) == faces.labels).mean())

    return {"faces": len(faces), "accuracy": {name: accuracy(views) for name, views in VIEW_SETS.items()}}


def choose_views(validation: dict[str, Any]) -> str:
    """The view set with the best validation accuracy; on a tie, the one with fewer views."""
    accuracy = validation["accuracy"]
    return max(VIEW_SETS, key=lambda name: (round(accuracy[name], 6), -len(VIEW_SETS[name])))


def _figures(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "recall": {k: v["recall"] for k, v in report["per_class"].items()},
        "confusion_matrix": report["confusion_matrix"],
    }


def default_other_runtime() -> str | None:
    """A Python with tflite-runtime 2.14 to prove compatibility with, if one is configured."""
    python = os.environ.get("FER_KIOSK_TFLITE214_PYTHON")
    return python if python and Path(python).exists() else None
