"""The model contract: everything the daemon must know about a model file.

The converter writes it once, as ``NAME.json`` beside ``NAME.tflite``; training,
the converter and the daemon all read it through this module, so label order,
input size, normalization and the face-crop rule are never retyped elsewhere.
This module is pure Python (no numpy, no TensorFlow): the command line and the
dashboard import it for the labels alone. The arithmetic the contract prescribes on
arrays (test-time views, int8 quantization) is in ``edge.vision.arrays``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

CONTRACT_VERSION = 1

# Fixed by the model contract and by FER2013's own numbering (emotion 0..6).
# Folder names, dictionary order or anything else never decide this order.
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

INPUT_SIZE = 48

# Pixels 0..255 map to [-1, 1]: x * scale + offset (as in the thesis's preprocess_input).
# The model applies this itself (its first layer), so callers feed grayscale pixels 0..255
# (after the contract's face_normalization, which the classifier applies).
NORMALIZATION_SCALE = 1.0 / 127.5
NORMALIZATION_OFFSET = -1.0

# How a detector's face box becomes the model's input (see crop_face in edge.vision.preprocess).
# FER2013 crops match OpenCV's Haar box (median box/crop side 0.98, centred: measured by
# bench/crop_margin.py); margin is the fraction of the box added on each side.
DEFAULT_CROP_MARGIN = 0.0


class ContractError(Exception):
    """A model contract is missing, malformed or disagrees with its model file."""


@dataclass(frozen=True)
class Quantization:
    scale: float
    zero_point: int


@dataclass(frozen=True)
class CropRule:
    margin: float = DEFAULT_CROP_MARGIN
    square: bool = True


@dataclass(frozen=True)
class View:
    """One test-time view of a face crop: mirrored or not, then shifted by whole pixels
    (dx right, dy down; the edge pixels are repeated into the gap)."""

    flip: bool = False
    dx: int = 0
    dy: int = 0


# What may be done to each 48x48 face crop before the model sees it (and before its views):
# "equalize" is OpenCV's histogram equalization, which this copy of FER2013's faces already
# carry (each face's histogram is nearly flat: mean 131, spread 77.5 +- 6 grey levels),
# while camera crops and other data sets do not. Training, the converter, evaluation and
# the daemon all apply the contract's choice (edge.vision.preprocess.normalize_faces).
FACE_NORMALIZATIONS = ("none", "equalize")

# The view sets the converter chooses among, on the validation split (never on test data).
VIEW_SETS: dict[str, tuple[View, ...]] = {
    "single": (View(),),
    "mirror": (View(), View(flip=True)),
    # The face and its mirror, each also shifted 2 px each way: 10 passes (about 0.33 ms of
    # CPU each for the bundled int8 model) for about one accuracy point on FER2013.
    "mirror-shift": tuple(
        View(flip, dx, dy) for flip in (False, True) for dx, dy in ((0, 0), (2, 0), (-2, 0), (0, 2), (0, -2))
    ),
}


@dataclass(frozen=True)
class ModelContract:
    labels: tuple[str, ...] = EMOTIONS
    input_shape: tuple[int, ...] = (1, INPUT_SIZE, INPUT_SIZE, 1)
    input_dtype: str = "float32"
    output_dtype: str = "float32"
    normalization_scale: float = NORMALIZATION_SCALE
    normalization_offset: float = NORMALIZATION_OFFSET
    input_quantization: Quantization | None = None
    output_quantization: Quantization | None = None
    crop: CropRule = field(default_factory=CropRule)
    # Test-time augmentation: the probabilities are averaged over these views of the crop
    # (decided by the converter on the validation split, never on test data).
    views: tuple[View, ...] = (View(),)
    # Calibration: the view-averaged probabilities p become
    # softmax((log(p) + class_bias) / temperature) (edge.vision.calibration), both fitted by the
    # converter on the validation split; 1 and () leave them as they are.
    temperature: float = 1.0
    class_bias: tuple[float, ...] = ()
    face_normalization: str = "none"  # one of FACE_NORMALIZATIONS
    sha256: str = ""
    model_format: str = "float32"
    source: dict[str, Any] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    checked_with: dict[str, Any] = field(default_factory=dict)
    version: int = CONTRACT_VERSION

    @property
    def input_hw(self) -> tuple[int, int]:
        return int(self.input_shape[1]), int(self.input_shape[2])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = list(self.labels)
        data["views"] = [asdict(view) for view in self.views]
        data["input_shape"] = list(self.input_shape)
        # Left out when they change nothing, as in contracts before the fields: older edges read it.
        if self.face_normalization == "none":
            del data["face_normalization"]
        if not self.class_bias:
            del data["class_bias"]
        else:
            data["class_bias"] = list(self.class_bias)
        data["normalization"] = {
            "formula": "x * scale + offset, x = grayscale pixel 0..255",
            "applied_by": "model (its first layer): feed pixels 0..255 (after face_normalization)",
            "scale": data.pop("normalization_scale"),
            "offset": data.pop("normalization_offset"),
        }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelContract:
        # Checked before anything else: a contract from a newer converter may carry fields this
        # edge cannot apply, and silently ignoring one (say a calibration) would change answers.
        version = data.get("version", CONTRACT_VERSION) if isinstance(data, dict) else CONTRACT_VERSION
        if type(version) is not int or version != CONTRACT_VERSION:
            raise ContractError(
                f"model contract version {version!r} is not supported (expected "
                f"{CONTRACT_VERSION}): it was written for another fer-kiosk release"
            )
        unknown = _unknown_fields(data)
        if unknown:
            raise ContractError(
                f"model contract has fields this fer-kiosk does not know: {', '.join(unknown)} "
                "(written by a newer converter? upgrade fer-kiosk; edited by hand? check the spelling)"
            )
        try:
            data = dict(data)
            norm = data.pop("normalization")
            for key in ("input_quantization", "output_quantization"):
                if data.get(key) is not None:
                    data[key] = Quantization(float(data[key]["scale"]), int(data[key]["zero_point"]))
            data["crop"] = CropRule(**data.get("crop", {}))
            if "flip_average" in data:  # contracts written before views existed
                data["views"] = [
                    asdict(v) for v in VIEW_SETS["mirror" if data.pop("flip_average") else "single"]
                ]
            data["views"] = tuple(
                View(bool(v.get("flip", False)), int(v.get("dx", 0)), int(v.get("dy", 0)))
                for v in data.get("views", [{}])
            )
            if not data["views"]:
                raise ValueError("'views' is empty: a model needs at least one view of the face")
            data["labels"] = tuple(data["labels"])
            data["class_bias"] = tuple(float(b) for b in data.get("class_bias", ()))
            data["input_shape"] = tuple(int(v) for v in data["input_shape"])
            contract = cls(
                normalization_scale=float(norm["scale"]),
                normalization_offset=float(norm["offset"]),
                **data,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ContractError(f"malformed model contract: {err!r}") from err
        if not (isinstance(contract.temperature, (int, float)) and 0.01 <= contract.temperature <= 100):
            raise ContractError(
                f"model contract temperature {contract.temperature!r} is not a number in 0.01..100"
            )
        if contract.class_bias and (
            len(contract.class_bias) != len(contract.labels)
            or not all(math.isfinite(b) and abs(b) <= 20 for b in contract.class_bias)
        ):
            raise ContractError(
                f"model contract class_bias {list(contract.class_bias)} is not one number in -20..20 "
                f"per label ({len(contract.labels)})"
            )
        if contract.face_normalization not in FACE_NORMALIZATIONS:
            raise ContractError(
                f"model contract face_normalization {contract.face_normalization!r} is not one of "
                f"{', '.join(FACE_NORMALIZATIONS)}"
            )
        if len(contract.labels) != len(set(contract.labels)):
            raise ContractError(f"model contract repeats a label: {list(contract.labels)}")
        return contract


# The keys a contract file may hold: the fields, the normalization written as one object, and
# flip_average (contracts written before views existed); and those of the objects inside it.
_CONTRACT_KEYS = (
    {f.name for f in fields(ModelContract)} - {"normalization_scale", "normalization_offset"}
) | {"normalization", "flip_average"}
_NESTED_KEYS = {
    "crop": {f.name for f in fields(CropRule)},
    "input_quantization": {f.name for f in fields(Quantization)},
    "output_quantization": {f.name for f in fields(Quantization)},
    "normalization": set(ModelContract().to_dict()["normalization"]),  # as to_dict writes it
}
_VIEW_KEYS = {f.name for f in fields(View)}


def _unknown_fields(data: Any) -> list[str]:
    """Keys of a contract file that no field of this release reads ('crop.margin' style)."""
    if not isinstance(data, dict):
        return []
    unknown = sorted(set(data) - _CONTRACT_KEYS)
    for key, known in _NESTED_KEYS.items():
        if isinstance(data.get(key), dict):
            unknown += [f"{key}.{name}" for name in sorted(set(data[key]) - known)]
    for i, view in enumerate(data.get("views") or []):
        if isinstance(view, dict):
            unknown += [f"views[{i}].{name}" for name in sorted(set(view) - _VIEW_KEYS)]
    return unknown


def contract_path_for(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_contract(model_path: str | Path) -> ModelContract:
    """Reads the contract that sits beside ``model_path``."""
    path = contract_path_for(model_path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ContractError(
            f"model contract {path} not found: a .tflite model needs the .json the converter writes beside it"
        ) from err
    except json.JSONDecodeError as err:
        raise ContractError(f"model contract {path} is not valid JSON: {err}") from err
    return ModelContract.from_dict(data)


def save_contract(contract: ModelContract, model_path: str | Path) -> Path:
    path = contract_path_for(model_path)
    path.write_text(json.dumps(contract.to_dict(), indent=2, sort_keys=False) + "\n")
    return path
