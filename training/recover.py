"""A Keras mini-Xception rebuilt from a converted model, when its checkpoint is gone.

    python -m training.recover --model edge/models/emotion_int8.tflite --data fer2013.csv.gz \\
        --out bundled.keras

The converter folds each BatchNorm into the convolution before it, and the first layer's
rescaling into conv1; the .tflite keeps those folded kernels and biases (per channel, in int8).
Dequantized, they give the float network back within half a quantization step. BatchNorm is
then unfolded so that the network keeps its function in training mode too: each BatchNorm's
input is standardized over training faces (its kernel divided by the channel's spread), and
the BatchNorm is set to undo that and add the folded bias. Trained further (``--init-from``),
it continues the converted model, where BatchNorm layers set to identity would be scrambled by
the first batch's statistics.

The result carries the contract's training settings as every checkpoint a run saves does
(its split, face normalization and lineage), so training's leak check follows it. It is
compared with the converted file on the validation faces before it is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

import training  # noqa: F401  (sets TensorFlow's environment before it is imported)
from edge.classifier import EmotionClassifier
from edge.contract import ContractError, load_contract
from edge.datasets import load_fer2013
from edge.preprocess import normalize_faces
from training.data import split
from training.model import keras_probabilities, make_mini_xception
from training.run_folder import save_with_settings
from training.settings import TrainingError, TrainSettings

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldedLayer:
    """One Keras layer's weights as the converter left them (float, Keras layout)."""

    kernel: np.ndarray  # Conv2D's kernel, or SeparableConv2D's pointwise kernel: (kh, kw, in, out)
    bias: np.ndarray  # (out,): the folded BatchNorm's shift, or the layer's own bias
    depthwise: np.ndarray | None = None  # SeparableConv2D's depthwise kernel (kh, kw, in, 1)


def folded_layers(tflite: bytes, layer_names: set[str]) -> dict[str, FoldedLayer]:
    """The convolutions of a converted Keras model, by Keras layer name (dequantized)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(tflite, 0))
    graph = model.subgraphs[0]
    opcodes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def constant(index: int) -> np.ndarray:
        tensor = graph.tensors[index]
        dtypes = {schema.TensorType.INT8: np.int8, schema.TensorType.INT32: np.int32}
        dtype = dtypes.get(tensor.type, np.float32)
        values = np.frombuffer(bytes(model.buffers[tensor.buffer].data), dtype=dtype).astype(np.float64)
        values = values.reshape(tensor.shape)
        q = tensor.quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            return values
        shape = [1] * values.ndim
        shape[q.quantizedDimension] = -1
        return (values - np.asarray(q.zeroPoint).reshape(shape)) * np.asarray(q.scale).reshape(shape)

    def layer_of(index: int) -> str:
        """The Keras layer a kernel tensor belongs to: its name holds 'MODEL/LAYER_1/...' parts,
        fused with the BatchNorm's and activation's names."""
        found = set()
        for part in graph.tensors[index].name.decode().split(";"):
            segments = part.split("/")
            if len(segments) > 1:
                name = re.sub(r"_\d+$", "", segments[1])
                if name in layer_names:
                    found.add(name)
        if len(found) != 1:
            raise TrainingError(f"cannot tell which layer tensor {graph.tensors[index].name!r} belongs to")
        return found.pop()

    kernels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        kind = opcodes.get(max(code.builtinCode, code.deprecatedBuiltinCode))
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            weights = constant(op.inputs[1])
            bias = (
                constant(op.inputs[2])
                if op.inputs[2] >= 0
                else np.zeros(weights.shape[-1 if kind == "DEPTHWISE_CONV_2D" else 0])
            )
            kernels.setdefault(layer_of(op.inputs[1]), {})[kind] = (weights, bias)
    layers = {}
    for name, ops in kernels.items():
        weights, bias = ops["CONV_2D"]
        kernel = weights.transpose(1, 2, 3, 0)  # TFLite (out, kh, kw, in) -> Keras (kh, kw, in, out)
        depthwise = None
        if "DEPTHWISE_CONV_2D" in ops:
            dw_weights, dw_bias = ops["DEPTHWISE_CONV_2D"]
            depthwise = dw_weights[0][..., None]  # (1, kh, kw, in) -> (kh, kw, in, 1)
            bias = bias + dw_bias @ kernel[0, 0]  # the pointwise kernel carries the depthwise bias on
        layers[name] = FoldedLayer(kernel, bias, depthwise)
    return layers


def rebuild(model_path: Path, faces: np.ndarray) -> tuple[keras.Model, TrainSettings]:
    """The float mini-Xception of a converted model, its BatchNorm statistics measured on
    ``faces`` (uint8, N x 48 x 48, as the run saw them), and the settings it was trained with."""
    contract = load_contract(model_path)
    settings = training_settings(model_path)
    if settings.architecture != "mini_xception":
        raise TrainingError(f"{model_path} is a {settings.architecture}; only the mini-Xception is rebuilt")
    model = make_mini_xception(l2=settings.l2)
    convolutions = {
        layer.name
        for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.SeparableConv2D))
    }
    folded = folded_layers(model_path.read_bytes(), convolutions)
    missing = sorted(convolutions - set(folded))
    if missing:
        raise TrainingError(f"{model_path} has no kernels for {', '.join(missing)}: not a mini-Xception")

    shifts: dict[str, np.ndarray] = {}
    for name, layer in folded.items():
        kernel, bias = layer.kernel, layer.bias
        if name == "conv1":  # the rescaling x * scale + offset was folded into conv1's weights
            kernel = kernel / contract.normalization_scale
            bias = bias - contract.normalization_offset * kernel.sum(axis=(0, 1, 2))
        target = model.get_layer(name)
        if name == "class_maps":
            target.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
            continue
        weights = [kernel] if layer.depthwise is None else [layer.depthwise, kernel]
        target.set_weights([w.astype(np.float32) for w in weights])
        shifts[name] = bias

    # Each convolution's output, measured over the faces (BatchNorm's input; BatchNorm is not
    # yet set, but BatchNorm outputs only feed later layers, so set them first as exact shifts).
    for name, bias in shifts.items():
        norm = model.get_layer(name + "_bn")
        norm.set_weights(
            [np.ones_like(bias), np.zeros_like(bias), -bias, np.full_like(bias, 1 - norm.epsilon)]
        )
    probe = keras.Model(model.input, [model.get_layer(name).output for name in shifts])
    images = normalize(faces, settings)
    outputs = probe.predict(images, batch_size=256, verbose=0)
    for name, output in zip(shifts, outputs):
        channels = output.reshape(-1, output.shape[-1]).astype(np.float64)
        mean, spread = channels.mean(axis=0), channels.std(axis=0) + 1e-8
        layer = model.get_layer(name)
        weights = layer.get_weights()
        weights[-1] = weights[-1] / spread.astype(np.float32)  # each output channel at unit spread
        layer.set_weights(weights)
        norm = model.get_layer(name + "_bn")
        # gamma * (x / spread - mean / spread) / sqrt(1 + eps) + beta == x + shift
        norm.set_weights(
            [
                spread * np.sqrt(1 + norm.epsilon),
                shifts[name] + mean,
                mean / spread,
                np.ones_like(mean),
            ]
        )
    return model, settings


def training_settings(model_path: Path) -> TrainSettings:
    """How a converted model was trained, as its contract records (the converter copies the
    run's settings into it)."""
    saved = load_contract(model_path).training_data.get("settings")
    if not saved:
        raise TrainingError(f"{model_path}'s contract does not say how it was trained (no training settings)")
    return TrainSettings.from_dict(saved)


def normalize(faces: np.ndarray, settings: TrainSettings) -> np.ndarray:
    return normalize_faces(faces, settings.face_normalization).astype(np.float32)[..., None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="the converted mini-Xception (.tflite)")
    parser.add_argument(
        "--data", required=True, help="fer2013.csv[.gz]: the Training faces it was trained on"
    )
    parser.add_argument("--out", required=True, type=Path, help="the .keras file to write")
    parser.add_argument("--faces", type=int, default=4000, help="training faces to measure BatchNorm on")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = training_settings(args.model)
        faces = load_fer2013(args.data, "Training")
        train_idx, val_idx = split(settings, faces.labels)
        sample = np.random.default_rng(0).permutation(train_idx)[: args.faces]
        model, settings = rebuild(args.model, faces.images[sample])
        # The check: the rebuilt network against the converted file, one view each, uncalibrated.
        x_val, y_val = faces.images[val_idx], faces.labels[val_idx]
        ours = keras_probabilities(model, x_val, normalization=settings.face_normalization)
        converted = EmotionClassifier(args.model)
        theirs = np.concatenate([converted.invoke(x_val[i : i + 256]) for i in range(0, len(x_val), 256)])
    except (TrainingError, ContractError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    report = {
        "validation_faces": len(y_val),
        "accuracy_rebuilt": float((ours.argmax(1) == y_val).mean()),
        "accuracy_converted": float((theirs.argmax(1) == y_val).mean()),
        "top1_agreement": float((ours.argmax(1) == theirs.argmax(1)).mean()),
    }
    print(json.dumps(report, indent=2))
    save_with_settings(model, args.out, json.dumps(asdict(settings), indent=2).encode())
    _LOGGER.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
