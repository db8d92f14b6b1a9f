"""The mini-Xception of the thesis (Arriaga et al., 2017), as one pure builder; the VGG
teacher; and a run's model: built for its settings, or loaded from a checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
from keras import layers, regularizers

from edge.contract import (
    EMOTIONS,
    INPUT_SIZE,
    NORMALIZATION_OFFSET,
    NORMALIZATION_SCALE,
    View,
)
from edge.vision.arrays import all_views, average_views
from edge.vision.preprocess import normalize_faces
from training.settings import DEFAULT_L2, TrainingError, TrainSettings

_LOGGER = logging.getLogger(__name__)

# 58,423 trainable and non-trainable parameters at 48x48x1 with 7 classes (BatchNorm's
# moving statistics included), the figure the thesis gives; tests hold the builder to it.
EXPECTED_PARAMETERS = 58_423


def make_mini_xception(
    input_shape: tuple[int, int, int] = (INPUT_SIZE, INPUT_SIZE, 1),
    num_classes: int = len(EMOTIONS),
    l2: float = DEFAULT_L2["mini_xception"],
    width: float = 1.0,
) -> keras.Model:
    """Builds the mini-Xception; its input is raw grayscale pixels 0..255.

    ``width`` multiplies the filters of every convolution but the last (8, then 16, 32, 64,
    128 per block): 1 is the thesis's network (58,423 parameters), 2 the same blocks with
    twice the filters (about 4x the parameters and the multiply-adds), room to learn for a
    box that can afford it.

    The normalization to [-1, 1] is the model's first layer, so it travels with the
    weights into every saved and converted file and is never retyped by a caller.

    L2 regularization: the thesis passes ``kernel_regularizer`` to every convolution, but
    Keras's SeparableConv2D ignored that argument, so the published results were obtained
    with L2 on the two plain 3x3 convolutions only. We reproduce what was run, not what was
    written.
    """
    reg = regularizers.L2(l2)
    inputs = keras.Input(shape=input_shape, name="pixels")
    x = layers.Rescaling(NORMALIZATION_SCALE, NORMALIZATION_OFFSET, name="normalize")(inputs)

    def filters(base: int) -> int:
        return max(1, round(base * width))

    for i in (1, 2):
        x = layers.Conv2D(filters(8), 3, use_bias=False, kernel_regularizer=reg, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"conv{i}_bn")(x)
        x = layers.Activation("relu", name=f"conv{i}_relu")(x)

    for block, base in enumerate((16, 32, 64, 128), start=1):
        block_filters = filters(base)
        residual = layers.Conv2D(
            block_filters, 1, strides=2, padding="same", use_bias=False, name=f"block{block}_shortcut"
        )(x)
        residual = layers.BatchNormalization(name=f"block{block}_shortcut_bn")(residual)
        x = layers.SeparableConv2D(
            block_filters, 3, padding="same", use_bias=False, name=f"block{block}_sep1"
        )(x)
        x = layers.BatchNormalization(name=f"block{block}_sep1_bn")(x)
        x = layers.Activation("relu", name=f"block{block}_sep1_relu")(x)
        x = layers.SeparableConv2D(
            block_filters, 3, padding="same", use_bias=False, name=f"block{block}_sep2"
        )(x)
        x = layers.BatchNormalization(name=f"block{block}_sep2_bn")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"block{block}_pool")(x)
        x = layers.Add(name=f"block{block}_add")([x, residual])

    x = layers.Conv2D(num_classes, 3, padding="same", name="class_maps")(x)
    x = layers.GlobalAveragePooling2D(name="average")(x)
    outputs = layers.Activation("softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mini_xception")


def make_vgg_teacher(
    input_shape: tuple[int, int, int] = (INPUT_SIZE, INPUT_SIZE, 1),
    num_classes: int = len(EMOTIONS),
    l2: float = DEFAULT_L2["vgg"],
    widths: tuple[int, ...] = (32, 64, 128, 256),
    dropout: float = 0.5,
) -> keras.Model:
    """A VGG-style teacher for distillation (about 1.8 M parameters, 30x the student).

    Four stages of two 3x3 convolutions with BatchNorm, each halving the face (48 -> 3),
    then one dense layer: the layout of the best plain FER2013 networks (Khaireddin & Chen,
    2021), narrowed so that an epoch fits a few minutes on 2 CPU cores. It is a training
    artifact only; the daemon always runs the mini-Xception. Same raw-pixel input and
    normalization layer as the student, so every tool that feeds one feeds the other.
    """
    reg = regularizers.L2(l2)
    inputs = keras.Input(shape=input_shape, name="pixels")
    x = layers.Rescaling(NORMALIZATION_SCALE, NORMALIZATION_OFFSET, name="normalize")(inputs)
    for stage, filters in enumerate(widths, start=1):
        for i in (1, 2):
            x = layers.Conv2D(
                filters,
                3,
                padding="same",
                use_bias=False,
                kernel_regularizer=reg,
                name=f"stage{stage}_conv{i}",
            )(x)
            x = layers.BatchNormalization(name=f"stage{stage}_bn{i}")(x)
            x = layers.Activation("relu", name=f"stage{stage}_relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="dropout1")(x)
    x = layers.Dense(256, use_bias=False, kernel_regularizer=reg, name="dense")(x)
    x = layers.BatchNormalization(name="dense_bn")(x)
    x = layers.Activation("relu", name="dense_relu")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="vgg_teacher")


# What `--architecture` may name (training/settings.py: ARCHITECTURE_NAMES). The shipped
# model is always the mini-Xception.
ARCHITECTURES = {"mini_xception": make_mini_xception, "vgg": make_vgg_teacher}


def untrained_model(settings: TrainSettings) -> keras.Model:
    """The run's network (architecture, width, L2) with fresh random weights."""
    options = {"width": settings.width} if settings.architecture == "mini_xception" else {}
    return ARCHITECTURES[settings.architecture](l2=settings.l2, **options)


def build_model(settings: TrainSettings) -> keras.Model:
    """The run's architecture with its L2 weight: random weights, or ``init_from``'s."""
    model = untrained_model(settings)
    if settings.init_from:
        source = Path(settings.init_from)
        if not source.is_file():
            raise TrainingError(f"--init-from {source}: no such checkpoint")
        try:
            model.set_weights(keras.models.load_model(source, compile=False).get_weights())
        except Exception as err:  # not a Keras file, or another architecture
            raise TrainingError(
                f"--init-from {source}: cannot load it as a {settings.architecture} ({err})"
            ) from err
        _LOGGER.info("starting from the weights of %s", source)
    return model


def compile_model(model: keras.Model, learning_rate: float, soft_targets: bool = False) -> keras.Model:
    """Adam, accuracy; soft (distillation) targets need the categorical loss."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="categorical_crossentropy" if soft_targets else "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def keras_probabilities(
    model: keras.Model,
    images: np.ndarray,
    views: tuple[View, ...] = (View(),),
    normalization: str = "none",
    chunk: int = 4096,
) -> np.ndarray:
    """The Keras model's probabilities, averaged over test-time views, each view normalized,
    the way the daemon's classifier does it. Chunked: ten views of all 28,709
    training faces as float32 would be 2.6 GB at once."""
    out = []
    for start in range(0, len(images), chunk):
        views_of_faces = normalize_faces(all_views(images[start : start + chunk], views), normalization)
        stacked = views_of_faces[..., None].astype(np.float32)
        out.append(average_views(model.predict(stacked, batch_size=256, verbose=0), len(views)))
    return np.concatenate(out) if out else np.zeros((0, len(EMOTIONS)), np.float32)


def ensemble_probabilities(
    members: list[tuple[keras.Model, str]], images: np.ndarray, views: tuple[View, ...]
) -> np.ndarray:
    """The mean of ``keras_probabilities`` over an ensemble's (model, face normalization)
    members, each seeing faces as its run normalized them: a distillation teacher's answer."""
    return np.mean([keras_probabilities(model, images, views, norm) for model, norm in members], axis=0)
