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

The rebuilt network is compared with the converted file on the validation faces (one view,
uncalibrated) and written only if they give the same answer for at least ``--min-agreement``
of them. The result carries the contract's training settings as every checkpoint a run saves does
(its split, face normalization and lineage), so training's leak check follows it.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import training  # sets TensorFlow's environment before it is imported
from edge.contract import ContractError, load_contract
from edge.tools.datasets import load_fer2013
from edge.vision.classifier import EmotionClassifier
from edge.vision.preprocess import normalize_faces
from training.data import split
from training.run_folder import save_with_settings
from training.settings import TrainingError, TrainSettings

if TYPE_CHECKING:  # Keras is imported where it is used: --help works without the train extra
    import keras

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldedLayer:
    """One Keras layer's weights as the converter left them (float, Keras layout)."""

    kernel: np.ndarray  # Conv2D's kernel, or SeparableConv2D's pointwise kernel: (kh, kw, in, out)
    bias: np.ndarray  # (out,): the folded BatchNorm's shift, or the layer's own bias
    depthwise: np.ndarray | None = None  # SeparableConv2D's depthwise kernel (kh, kw, in, multiplier)


def folded_layers(tflite: bytes, layer_names: set[str]) -> dict[str, FoldedLayer]:
    """The convolutions of a converted Keras model (int8 or float32), by Keras layer name,
    dequantized."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(tflite, 0))
    graph = model.subgraphs[0]
    opcodes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    dtypes = {
        schema.TensorType.INT8: np.int8,
        schema.TensorType.INT32: np.int32,
        schema.TensorType.FLOAT32: np.float32,
    }
    found: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        kind = opcodes.get(max(code.builtinCode, code.deprecatedBuiltinCode))
        if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        kernel_tensor = graph.tensors[op.inputs[1]]
        name = _layer_of(kernel_tensor.name.decode(), layer_names)
        if kind in found.get(name, {}):
            raise TrainingError(f"two {kind} operators belong to layer {name}: not a model this can rebuild")
        weights = _constant(model, kernel_tensor, dtypes)
        out_channels = weights.shape[-1 if kind == "DEPTHWISE_CONV_2D" else 0]
        bias = (
            _constant(model, graph.tensors[op.inputs[2]], dtypes)
            if op.inputs[2] >= 0
            else np.zeros(out_channels)
        )
        found.setdefault(name, {})[kind] = (weights, bias)
    layers = {}
    for name, ops in found.items():
        if "CONV_2D" not in ops:
            raise TrainingError(f"layer {name} has a depthwise convolution without its pointwise one")
        weights, bias = ops["CONV_2D"]
        kernel = weights.transpose(1, 2, 3, 0)  # TFLite (out, kh, kw, in) -> Keras (kh, kw, in, out)
        depthwise = None
        if "DEPTHWISE_CONV_2D" in ops:
            dw_weights, dw_bias = ops["DEPTHWISE_CONV_2D"]
            depthwise = dw_weights[0].reshape(
                *dw_weights.shape[1:3], kernel.shape[2], -1
            )  # (kh, kw, in, mult)
            bias = bias + dw_bias @ kernel[0, 0]  # the depthwise bias, carried through the pointwise kernel
        layers[name] = FoldedLayer(kernel, bias, depthwise)
    return layers


def _constant(model, tensor, dtypes) -> np.ndarray:
    """A constant tensor's values, dequantized (per channel where it is)."""
    if tensor.type not in dtypes or model.buffers[tensor.buffer].data is None:
        raise TrainingError(
            f"tensor {tensor.name.decode()!r} is not a stored int8, int32 or float32 constant"
        )
    values = np.frombuffer(bytes(model.buffers[tensor.buffer].data), dtype=dtypes[tensor.type])
    values = values.astype(np.float64).reshape(tensor.shape)
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return values
    shape = [1] * values.ndim
    shape[q.quantizedDimension] = -1
    return (values - np.asarray(q.zeroPoint).reshape(shape)) * np.asarray(q.scale).reshape(shape)


def _layer_of(tensor_name: str, layer_names: set[str]) -> str:
    """The Keras layer a kernel tensor belongs to: its name holds 'MODEL/LAYER_1/...' parts,
    fused with the BatchNorm's and activation's names."""
    parts = [part.split("/") for part in tensor_name.split(";")]
    found = {re.sub(r"_\d+$", "", segments[1]) for segments in parts if len(segments) > 1} & layer_names
    if len(found) != 1:
        raise TrainingError(f"cannot tell which layer tensor {tensor_name!r} belongs to")
    return found.pop()


def unfold_rescaling(layer: FoldedLayer, scale: float, offset: float) -> FoldedLayer:
    """conv1 with the model's first layer (x * scale + offset) taken back out of it: the
    converter folded it in (exact, as conv1 pads nothing)."""
    kernel = layer.kernel / scale
    return FoldedLayer(kernel, layer.bias - offset * kernel.sum(axis=(0, 1, 2)), layer.depthwise)


def unfolded_batchnorm(shift: np.ndarray, mean: np.ndarray, spread: np.ndarray, epsilon: float) -> list:
    """BatchNorm weights (gamma, beta, moving mean, moving variance) that, after a kernel
    divided by ``spread`` (output x / spread), give x + shift: in inference, and in training
    on batches whose statistics are those measured (mean, spread of x)."""
    # gamma * (x / spread - mean / spread) / sqrt(1 + eps) + beta == x + shift
    return [spread * np.sqrt(1 + epsilon), shift + mean, mean / spread, np.ones_like(mean)]


def channel_statistics(model: keras.Model, names: list[str], images: np.ndarray) -> dict:
    """Mean and spread of each named layer's output channels over ``images``, batch by batch
    (the outputs of 4,000 faces would take gigabytes at once)."""
    import keras

    probe = keras.Model(model.input, [model.get_layer(name).output for name in names])
    sums = {name: 0.0 for name in names}
    squares = {name: 0.0 for name in names}
    count = {name: 0 for name in names}
    for start in range(0, len(images), 256):
        for name, output in zip(names, probe(images[start : start + 256], training=False)):
            channels = np.asarray(output, np.float64).reshape(-1, output.shape[-1])
            sums[name] = sums[name] + channels.sum(axis=0)
            squares[name] = squares[name] + (channels**2).sum(axis=0)
            count[name] += len(channels)
    statistics = {}
    for name in names:
        mean = sums[name] / count[name]
        spread = np.sqrt(np.maximum(squares[name] / count[name] - mean**2, 0.0))
        statistics[name] = (mean, np.where(spread < 1e-6, 1.0, spread))  # a dead channel keeps its kernel
    return statistics


def rebuild(model_path: Path, settings: TrainSettings, faces: np.ndarray) -> keras.Model:
    """The float mini-Xception of a converted model trained with ``settings``, its BatchNorm
    statistics measured on ``faces`` (uint8, N x 48 x 48, as its run saw them)."""
    import keras

    from training.model import make_mini_xception

    contract = load_contract(model_path)
    if settings.architecture != "mini_xception" or contract.model_format not in ("int8", "float32"):
        raise TrainingError(
            f"{model_path} is a {contract.model_format} {settings.architecture}; "
            "only int8 or float32 mini-Xceptions are rebuilt"
        )
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
    folded["conv1"] = unfold_rescaling(
        folded["conv1"], contract.normalization_scale, contract.normalization_offset
    )

    model.get_layer("class_maps").set_weights(
        [w.astype(np.float32) for w in (folded["class_maps"].kernel, folded["class_maps"].bias)]
    )
    normalized = sorted(convolutions - {"class_maps"})
    for name in normalized:  # first as exact shifts (x + bias), to measure each layer's output
        layer, norm = folded[name], model.get_layer(name + "_bn")
        weights = [layer.kernel] if layer.depthwise is None else [layer.depthwise, layer.kernel]
        model.get_layer(name).set_weights([w.astype(np.float32) for w in weights])
        norm.set_weights(
            [
                np.ones_like(layer.bias),
                np.zeros_like(layer.bias),
                -layer.bias,
                np.full_like(layer.bias, 1 - norm.epsilon),
            ]
        )
    images = normalize_faces(faces, settings.face_normalization).astype(np.float32)[..., None]
    statistics = channel_statistics(model, normalized, images)
    for name in normalized:  # then each output channel at unit spread, BatchNorm undoing it
        mean, spread = statistics[name]
        weights = model.get_layer(name).get_weights()
        weights[-1] = weights[-1] / spread.astype(np.float32)  # the (pointwise) kernel's output channels
        model.get_layer(name).set_weights(weights)
        norm = model.get_layer(name + "_bn")
        norm.set_weights(
            [w.astype(np.float32) for w in unfolded_batchnorm(folded[name].bias, mean, spread, norm.epsilon)]
        )
    return model


def training_settings(model_path: Path) -> TrainSettings:
    """How a converted model was trained, as its contract records (the converter copies the
    run's settings into it)."""
    saved = load_contract(model_path).training_data.get("settings")
    if not saved:
        raise TrainingError(f"{model_path}'s contract does not say how it was trained (no training settings)")
    return TrainSettings.from_dict(saved)


def agreement_report(ours: np.ndarray, theirs: np.ndarray, labels: np.ndarray) -> dict:
    return {
        "validation_faces": len(labels),
        "accuracy_rebuilt": float((ours.argmax(1) == labels).mean()),
        "accuracy_converted": float((theirs.argmax(1) == labels).mean()),
        "top1_agreement": float((ours.argmax(1) == theirs.argmax(1)).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    prog = "python -m training.recover"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="the converted mini-Xception (.tflite)")
    parser.add_argument("--data", required=True, help="fer2013.csv[.gz], the faces it trained on")
    parser.add_argument("--out", required=True, type=Path, help="the .keras file to write")
    parser.add_argument("--faces", type=int, default=4000, help="training faces to measure BatchNorm on")
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=0.95,
        help="the share of validation faces both must answer alike",
    )
    args = parser.parse_args(argv)
    missing = training.missing_train_extra(prog)
    if missing:
        print(missing, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from training.model import keras_probabilities

    try:
        settings = training_settings(args.model)
        faces = load_fer2013(args.data, "Training")
        train_idx, val_idx = split(settings, faces.labels)
        sample = np.random.default_rng(0).permutation(train_idx)[: args.faces]
        model = rebuild(args.model, settings, faces.images[sample])
        # The check: the rebuilt network against the converted file, one view each, uncalibrated.
        x_val, y_val = faces.images[val_idx], faces.labels[val_idx]
        ours = keras_probabilities(model, x_val, normalization=settings.face_normalization)
        theirs = EmotionClassifier(args.model).invoke_many(x_val)
        report = agreement_report(ours, theirs, y_val)
        print(json.dumps(report, indent=2))
        if report["top1_agreement"] < args.min_agreement:
            raise TrainingError(
                f"the rebuilt network answers as {args.model} for {report['top1_agreement']:.1%} of the "
                f"validation faces (--min-agreement {args.min_agreement:.0%}); nothing written"
            )
        args.out.parent.mkdir(parents=True, exist_ok=True)  # as docs/model.md's command: a new folder
        save_with_settings(model, args.out, json.dumps(asdict(settings), indent=2).encode())
    except (TrainingError, ContractError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    _LOGGER.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
