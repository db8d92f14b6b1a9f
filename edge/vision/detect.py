"""Faces in a grayscale frame with OpenCV's Haar cascade (all faces, not only the largest)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from edge.config import DetectorConfig
from edge.vision.matching import MatchedFace
from edge.vision.preprocess import Box, iou

DEFAULT_CASCADE = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"


class DetectorError(Exception):
    pass


# The frontal-face cascade's smallest window: a face smaller than this in the image the
# cascade sees is never found.
CASCADE_WINDOW = 24


def detection_scale(frame_width: int, detect_width: int, min_face_size: int = CASCADE_WINDOW) -> float:
    """Factor from full-frame to detection-frame pixels (1.0: detect at full resolution).

    Never so small that a face of ``min_face_size`` shrinks below the cascade's window:
    at 1280x720 a fixed 320-pixel width would silently drop every face under 96 pixels."""
    if detect_width <= 0 or frame_width <= detect_width:
        return 1.0
    return min(1.0, max(detect_width / frame_width, CASCADE_WINDOW / max(min_face_size, 1)))


def load_cascade(path: str) -> cv2.CascadeClassifier:
    """OpenCV's cascade from ``path`` (empty: the bundled frontal-face one); DetectorError,
    naming ``detector.cascade`` and the file, when it cannot be read or is not a cascade
    (OpenCV itself raises SystemError for a malformed XML file, and says nothing useful)."""
    key = "detector.cascade" if path else "detector.cascade (OpenCV's bundled cascade)"
    path = path or str(DEFAULT_CASCADE)
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError as err:
        raise DetectorError(f"{key}: {path}: cannot read ({err.strerror})") from None
    if b"<opencv_storage>" not in head and b"<cascade" not in head:
        raise DetectorError(f"{key}: {path}: not an OpenCV Haar cascade (no <opencv_storage> XML)")
    try:
        cascade = cv2.CascadeClassifier(path)
    except (cv2.error, SystemError) as err:
        cause = err.__cause__ or err.__context__ or err
        func = str(getattr(cause, "func", ""))
        if "):" in func:  # XML parser: "file(line): what"
            detail = "XML line " + func.rsplit("(", 1)[-1].replace("):", ":")
        else:
            detail = f"OpenCV: {getattr(cause, 'err', None) or type(cause).__name__}"
        raise DetectorError(
            f"{key}: {path}: not a valid Haar cascade ({' '.join(detail.split())[:160]})"
        ) from None
    if cascade.empty():
        raise DetectorError(f"{key}: {path}: not a valid Haar cascade (OpenCV loaded no stages)")
    return cascade


class HaarFaceDetector:
    def __init__(self, config: DetectorConfig):
        self.config = config
        self._cascade = load_cascade(config.cascade)

    def detect(self, gray: np.ndarray) -> list[Box]:
        """Face boxes (x, y, w, h) in full-frame pixels, largest first."""
        c = self.config
        min_face = c.min_face_pixels(gray.shape[0])
        scale = detection_scale(gray.shape[1], c.detect_width, min_face)
        # INTER_LINEAR, as the cascade's own image pyramid: INTER_AREA at the non-integer
        # ratios used here cost 1.4 ms per 1280x720 frame, and recall on the benchmark
        # clips stayed 100 % without it.
        small = (
            gray
            if scale == 1.0
            else cv2.resize(
                gray,
                (round(gray.shape[1] * scale), round(gray.shape[0] * scale)),
                interpolation=cv2.INTER_LINEAR,
            )
        )
        min_side = max(CASCADE_WINDOW, int(min_face * scale))
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


def _expand(
    box: Box, left: float, top: float, right: float, bottom: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of ``box`` grown by multiples of its size, clamped to the frame."""
    x, y, w, h = box
    return (
        max(0, int(x - left * w)),
        max(0, int(y - top * h)),
        min(width, int(x + w + right * w)),
        min(height, int(y + h + bottom * h)),
    )


class FaceFinder:
    """Faces per frame at a fraction of full detection's cost, without missing arrivals.

    - A full-frame detection runs when the scene asks for it: at once when something moves
      outside the known faces (someone arriving) or a known face is not found where it was
      searched (on that same frame: a lost face is never a missed frame), and otherwise at
      most every ``full_detect_seconds`` (a time, so 15 and 30 fps cameras behave the same).
      Without a frame time (a lone photo) every detection is a full one.
    - In between, each face of the last frame (the matcher's, by key) is searched only in a
      small window around where it is heading (its last position plus its last step), scaled
      so the face is ~32 px wide, at sizes within 0.8-1.25x its own: a handful of cascade
      windows instead of a whole image pyramid, stepping sizes by at most 1.1 whatever
      ``detector.scale_factor`` says. (From 40 px and 0.7-1.45x, on the benchmark clips' 679
      searches at scale_factor 1.1: 1.05 instead of 1.84 ms each, the same faces found; a
      face the search misses costs a full detection, never a missed frame.)
    - A known face whose area did not change at all on the motion thumbnail keeps its box
      without any search (someone standing still costs almost nothing).
    Motion is judged on an 80x60 thumbnail, masked where known faces (and their bodies) are.

    ``find`` returns (key, box) pairs: the key of the face a local search found, None for a
    box of a full detection (the matcher decides whose it is).
    """

    LOCAL_FACE_PIXELS = 32.0
    LOCAL_SIZE_RANGE = (0.8, 1.25)  # sizes searched, relative to the face's last size
    LOCAL_SCALE_FACTOR = 1.1  # the coarsest step between them: 5 sizes in that range
    THUMB = (80, 60)

    def __init__(self, detector: HaarFaceDetector):
        self.detector = detector
        self.config = detector.config
        self._last_full = -math.inf  # monotonic time of the last full-frame detection
        self._thumb: np.ndarray | None = None
        self.full_detections = 0
        self.local_searches = 0

    def _motion(self, gray: np.ndarray, boxes: list[Box]) -> tuple[bool, list[bool]]:
        """(motion outside the known faces, for each known face: did its area change)."""
        thumb = cv2.resize(gray, self.THUMB, interpolation=cv2.INTER_AREA)
        previous, self._thumb = self._thumb, thumb
        if previous is None:
            return True, [True] * len(boxes)
        changed = cv2.absdiff(thumb, previous) > 12
        sx, sy = self.THUMB[0] / gray.shape[1], self.THUMB[1] / gray.shape[0]
        face_changed = []
        outside = changed.copy()
        for box in boxes:
            x0, y0, x1, y1 = _expand(box, 0.1, 0.1, 0.1, 0.1, gray.shape[1], gray.shape[0])
            face_changed.append(
                bool(
                    changed[int(y0 * sy) : int(np.ceil(y1 * sy)), int(x0 * sx) : int(np.ceil(x1 * sx))].any()
                )
            )
            x0, y0, x1, y1 = _expand(box, 1.0, 0.6, 1.0, 3.0, gray.shape[1], gray.shape[0])
            outside[int(y0 * sy) : int(np.ceil(y1 * sy)), int(x0 * sx) : int(np.ceil(x1 * sx))] = False
        return outside.mean() > self.config.motion_fraction, face_changed

    def _search_near(self, gray: np.ndarray, box: Box) -> Box | None:
        c = self.config
        x0, y0, x1, y1 = _expand(box, 0.5, 0.5, 0.5, 0.5, gray.shape[1], gray.shape[0])
        region = gray[y0:y1, x0:x1]
        if region.size == 0:
            return None
        scale = min(1.0, self.LOCAL_FACE_PIXELS / max(box[2], 1))
        if scale < 1.0:
            region = cv2.resize(
                region,
                (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale))),
                interpolation=cv2.INTER_LINEAR,
            )
        smallest, largest = (box[2] * scale * f for f in self.LOCAL_SIZE_RANGE)
        found = self.detector._cascade.detectMultiScale(
            region,
            # Window sizes step by the scale factor: a coarse one (1.2+) would leave one or no
            # size inside this narrow range, and every search would fail into a full detection.
            scaleFactor=min(c.scale_factor, self.LOCAL_SCALE_FACTOR),
            minNeighbors=c.min_neighbors,
            minSize=(max(1, int(smallest)), max(1, int(smallest))),
            maxSize=(int(largest) + 1, int(largest) + 1),
        )
        self.local_searches += 1
        if len(found) == 0:
            return None
        fx, fy, fw, fh = max(found, key=lambda b: b[2] * b[3])
        return (
            x0 + int(round(fx / scale)),
            y0 + int(round(fy / scale)),
            int(round(fw / scale)),
            int(round(fh / scale)),
        )

    def find(
        self, gray: np.ndarray, now: float | None = None, known: Mapping[int, MatchedFace] | None = None
    ) -> list[tuple[int | None, Box]]:
        """Faces of this frame, largest first; ``now``: its monotonic time (None: a lone
        photo); ``known``: the faces of the last frame by key (the matcher's)."""
        c = self.config
        known = dict(known or {})
        if now is None or c.full_detect_seconds <= 0:
            return self._full(gray, now)
        boxes = [face.box for face in known.values()]
        if c.motion_trigger:
            moved, face_changed = self._motion(gray, boxes)
        else:
            moved, face_changed = False, [True] * len(boxes)
        if moved or now - self._last_full >= c.full_detect_seconds:
            return self._full(gray, now)
        found: list[tuple[int | None, Box]] = []
        for (key, face), changed in zip(known.items(), face_changed):
            if not changed:  # a face whose area did not change at all is where it was
                found.append((key, face.box))
                continue
            # Search where the face is heading: someone walking in moves a third of a face
            # width or more per frame, out of a window centred on where they were.
            box = self._search_near(gray, face.predicted)
            if box is None:
                # Lost (gone, turned, or faster than the window): look at the whole frame
                # now rather than miss them on this frame.
                return self._full(gray, now)
            if all(iou(box, other) < 0.5 for _, other in found):
                found.append((key, box))
        return _largest_first(found)

    def _full(self, gray: np.ndarray, now: float | None) -> list[tuple[int | None, Box]]:
        found = self.detector.detect(gray)
        self._last_full = now if now is not None else -math.inf
        self.full_detections += 1
        return [(None, box) for box in found]


def _largest_first(found: list[tuple[int | None, Box]]) -> list[tuple[int | None, Box]]:
    return sorted(found, key=lambda item: item[1][2] * item[1][3], reverse=True)
