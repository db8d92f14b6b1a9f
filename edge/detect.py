"""Faces in a grayscale frame with OpenCV's Haar cascade (all faces, not only the largest)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.config import DetectorConfig
from edge.preprocess import Box

DEFAULT_CASCADE = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"


class DetectorError(Exception):
    pass


def detection_scale(frame_width: int, detect_width: int) -> float:
    """Factor from full-frame to detection-frame pixels (1.0: detect at full resolution)."""
    if detect_width <= 0 or frame_width <= detect_width:
        return 1.0
    return detect_width / frame_width


class HaarFaceDetector:
    def __init__(self, config: DetectorConfig):
        self.config = config
        path = Path(config.cascade) if config.cascade else DEFAULT_CASCADE
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise DetectorError(f"cannot load the Haar cascade {path}")

    def detect(self, gray: np.ndarray) -> list[Box]:
        """Face boxes (x, y, w, h) in full-frame pixels, largest first."""
        c = self.config
        scale = detection_scale(gray.shape[1], c.detect_width)
        small = gray if scale == 1.0 else cv2.resize(
            gray, (round(gray.shape[1] * scale), round(gray.shape[0] * scale)), interpolation=cv2.INTER_AREA
        )
        min_side = max(1, int(c.min_face_size * scale))
        max_side = int(c.max_face_size * scale) if c.max_face_size else 0
        found = self._cascade.detectMultiScale(
            small,
            scaleFactor=c.scale_factor,
            minNeighbors=c.min_neighbors,
            minSize=(min_side, min_side),
            maxSize=(max_side, max_side) if max_side else (0, 0),
        )
        boxes = [
            (int(round(x / scale)), int(round(y / scale)), int(round(w / scale)), int(round(h / scale)))
            for (x, y, w, h) in (found if len(found) else [])
        ]
        return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)
