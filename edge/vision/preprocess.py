"""From a detector's face box to the model's input: pure functions."""

from __future__ import annotations

import cv2
import numpy as np

from edge.contract import FACE_NORMALIZATIONS, CropRule

Box = tuple[int, int, int, int]  # x, y, w, h in frame pixels


def iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def expand_box(box: Box, rule: CropRule) -> Box:
    """The crop the model expects around a detector box: margin on each side, square."""
    x, y, w, h = box
    if rule.square:
        side = max(w, h)
        x, y, w, h = x + (w - side) / 2.0, y + (h - side) / 2.0, side, side
    mx, my = w * rule.margin, h * rule.margin
    return (int(round(x - mx)), int(round(y - my)), int(round(w + 2 * mx)), int(round(h + 2 * my)))


def crop_face(gray: np.ndarray, box: Box, rule: CropRule, size: tuple[int, int]) -> np.ndarray:
    """A uint8 face crop of ``size`` (h, w); parts outside the frame repeat its edge pixels."""
    x, y, w, h = expand_box(box, rule)
    if w <= 0 or h <= 0:
        raise ValueError(f"empty face box {box}")
    frame_h, frame_w = gray.shape[:2]
    pad_left, pad_top = max(0, -x), max(0, -y)
    pad_right, pad_bottom = max(0, x + w - frame_w), max(0, y + h - frame_h)
    region = gray[max(0, y) : min(frame_h, y + h), max(0, x) : min(frame_w, x + w)]
    if region.size == 0:
        raise ValueError(f"face box {box} lies outside the {frame_w}x{frame_h} frame")
    if pad_left or pad_top or pad_right or pad_bottom:
        region = cv2.copyMakeBorder(region, pad_top, pad_bottom, pad_left, pad_right, cv2.BORDER_REPLICATE)
    out_h, out_w = size
    shrinking = region.shape[0] > out_h
    return cv2.resize(region, (out_w, out_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def normalize_faces(crops: np.ndarray, method: str) -> np.ndarray:
    """uint8 face crops (N, h, w), each as the model sees it (the contract's
    ``face_normalization``): as it is, or histogram-equalized (OpenCV's ``equalizeHist``).
    Applied to each view of a face (after mirroring and shifting), as training applies it
    to each augmented face."""
    if method not in FACE_NORMALIZATIONS:
        raise ValueError(f"unknown face normalization {method!r}")
    crops = np.asarray(crops)
    if crops.ndim != 3 or crops.dtype != np.uint8:
        raise ValueError(f"face crops must be uint8 (N, h, w), got {crops.dtype} {crops.shape}")
    if method == "none" or len(crops) == 0:
        return crops
    return np.stack([cv2.equalizeHist(np.ascontiguousarray(crop)) for crop in crops])


def to_gray(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return frame
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
