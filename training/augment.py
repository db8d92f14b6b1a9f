"""Data augmentation with OpenCV on the host, outside TensorFlow's graph.

Why not Keras's random layers in a ``tf.data`` map: on this project's reference machine
(tensorflow-cpu 2.21, Keras 3.15, 2 cores) they crashed inside a parallel map. A 48x48
``cv2.warpAffine`` costs microseconds, so one epoch of augmentation is well under a second
on the main thread, and it is reproducible: every epoch's draws come from (seed, epoch),
which is what lets a stopped run resume on the very same schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Augmentation:
    rotation_degrees: float = 10.0
    shift_fraction: float = 0.1
    zoom_fraction: float = 0.1
    horizontal_flip: bool = True


def affine_matrices(n: int, size: int, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """``n`` random 2x3 affine matrices (rotation, zoom, shift, flip) about the centre."""
    angle = np.deg2rad(rng.uniform(-aug.rotation_degrees, aug.rotation_degrees, n))
    zoom = rng.uniform(1 - aug.zoom_fraction, 1 + aug.zoom_fraction, n)
    shift = rng.uniform(-aug.shift_fraction, aug.shift_fraction, (n, 2)) * size
    flip = np.where(rng.random(n) < 0.5, -1.0, 1.0) if aug.horizontal_flip else np.ones(n)
    cos, sin = np.cos(angle) * zoom, np.sin(angle) * zoom
    c = (size - 1) / 2.0
    m = np.empty((n, 2, 3), dtype=np.float64)
    m[:, 0, 0], m[:, 0, 1] = cos * flip, -sin
    m[:, 1, 0], m[:, 1, 1] = sin * flip, cos
    # Keep the centre fixed, then shift.
    m[:, 0, 2] = c - (m[:, 0, 0] * c + m[:, 0, 1] * c) + shift[:, 0]
    m[:, 1, 2] = c - (m[:, 1, 0] * c + m[:, 1, 1] * c) + shift[:, 1]
    return m


def warp_batch(images: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    size = images.shape[1]
    out = np.empty_like(images)
    for i, (image, matrix) in enumerate(zip(images, matrices)):
        out[i] = cv2.warpAffine(
            image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    return out


def augmented_epoch(
    images: np.ndarray,
    labels: np.ndarray,
    seed: int,
    epoch: int,
    augmentation: Augmentation | None = Augmentation(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One epoch of training input: (shuffled augmented images, labels, permutation).

    A pure function of (seed, epoch): a resumed run sees exactly the epochs it would have.
    Built whole in memory (28,709 faces x 48 x 48 x 4 bytes = 265 MB as float32, well under
    a second of OpenCV) because feeding Keras from a Python PyDataset made an epoch about
    three times slower on 2 cores than feeding it an array.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(labels))
    batch = images[order]
    if augmentation is not None:
        batch = warp_batch(batch, affine_matrices(len(order), images.shape[1], augmentation, rng))
    return batch[..., None].astype(np.float32), labels[order], order
