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

from edge.vision.preprocess import normalize_faces


@dataclass(frozen=True)
class Augmentation:
    rotation_degrees: float = 10.0
    shift_fraction: float = 0.1
    zoom_fraction: float = 0.1
    horizontal_flip: bool = True
    # Photometric changes a real camera brings (all off by default: the thesis used none).
    brightness: float = 0.0  # pixels shifted by up to +-brightness * 255
    contrast: float = 0.0  # spread around the face's mean scaled by 1 +- contrast
    gamma: float = 0.0  # gamma drawn from [1 - gamma, 1 + gamma]
    blur_probability: float = 0.0  # Gaussian blur, sigma 0.5..1.2 px
    noise_std: float = 0.0  # Gaussian sensor noise, in pixel values
    # Random erasing (Zhong et al., 2020): a rectangle of 2-20 % of the face filled with noise.
    erasing_probability: float = 0.0


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


def photometric_batch(images: np.ndarray, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, gamma, blur and noise on uint8 faces; float32 0..255 out."""
    n = len(images)
    out = images.astype(np.float32)
    if aug.blur_probability > 0:
        for i in np.flatnonzero(rng.random(n) < aug.blur_probability):
            out[i] = cv2.GaussianBlur(out[i], (0, 0), float(rng.uniform(0.5, 1.2)))
    if aug.gamma > 0:
        gamma = rng.uniform(1 - aug.gamma, 1 + aug.gamma, (n, 1, 1)).astype(np.float32)
        out = 255.0 * (out / 255.0) ** gamma
    if aug.contrast > 0:
        factor = rng.uniform(1 - aug.contrast, 1 + aug.contrast, (n, 1, 1)).astype(np.float32)
        mean = out.mean(axis=(1, 2), keepdims=True)
        out = mean + (out - mean) * factor
    if aug.brightness > 0:
        out += rng.uniform(-aug.brightness, aug.brightness, (n, 1, 1)).astype(np.float32) * 255
    if aug.noise_std > 0:
        out += rng.normal(0, aug.noise_std, out.shape).astype(np.float32)
    return np.clip(out, 0, 255)


def erase_batch(images: np.ndarray, probability: float, rng: np.random.Generator) -> np.ndarray:
    """Random erasing in place on float faces: one rectangle of 2-20 % of the area (aspect
    0.3..3.3) per chosen face, filled with uniform noise."""
    n, h, w = images.shape
    for i in np.flatnonzero(rng.random(n) < probability):
        area = rng.uniform(0.02, 0.2) * h * w
        aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
        eh = int(min(h, round(np.sqrt(area * aspect))))
        ew = int(min(w, round(np.sqrt(area / aspect))))
        top, left = rng.integers(0, h - eh + 1), rng.integers(0, w - ew + 1)
        images[i, top : top + eh, left : left + ew] = rng.uniform(0, 255, (eh, ew))
    return images


def whole_grey_levels(faces: np.ndarray) -> np.ndarray:
    """Float faces rounded to uint8, as a camera delivers them."""
    return np.clip(np.rint(faces), 0, 255).astype(np.uint8)


def augmented_epoch(
    images: np.ndarray,
    labels: np.ndarray,
    seed: int,
    epoch: int,
    augmentation: Augmentation | None = Augmentation(),
    normalization: str = "none",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One epoch of training input: (shuffled augmented images, labels, permutation).

    A pure function of (seed, epoch): a resumed run sees exactly the epochs it would have.
    Built whole in memory (28,709 faces x 48 x 48 x 4 bytes = 265 MB as float32, well under
    a second of OpenCV) because feeding Keras from a Python PyDataset made an epoch about
    three times slower on 2 cores than feeding it an array. ``normalization`` (the model
    contract's ``face_normalization``) comes last, on the augmented face rounded to whole grey
    levels, as the daemon applies it to a camera's crop.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(labels))
    batch = images[order]
    if augmentation is not None:
        batch = warp_batch(batch, affine_matrices(len(order), images.shape[1], augmentation, rng))
        batch = photometric_batch(batch, augmentation, rng)
        if augmentation.erasing_probability > 0:
            batch = erase_batch(batch, augmentation.erasing_probability, rng)
    if normalization != "none":
        batch = normalize_faces(whole_grey_levels(batch), normalization)
    return batch[..., None].astype(np.float32), labels[order], order
