"""One frame in, faces with emotion probabilities out: the path every command shares.

Per frame, top to bottom (``FramePipeline.process``): grayscale, find the faces, tell
which face is which (``FaceMatcher``: one key per person, the same on every frame),
choose which of them to classify and through which test-time views (``ClassifyPolicy``,
by key), crop them by the contract's rule, classify them in one interpreter call. The
daemon's loop then hands the keyed faces to the tracker, whose smoothing over time
averages what the views give.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.config import DetectorConfig, ModelConfig, TrackingConfig
from edge.contract import View
from edge.vision.classifier import EmotionClassifier
from edge.vision.detect import CASCADE_WINDOW, FaceFinder, HaarFaceDetector
from edge.vision.matching import FaceMatcher, center_distance
from edge.vision.preprocess import Box, crop_face, to_gray

# Still photos (`fer-kiosk classify`, evaluation on photos): detection at full resolution,
# every face down to the smallest the cascade can find.
PHOTO_DETECTOR = DetectorConfig(detect_width=0, min_face_size=CASCADE_WINDOW)


@dataclass
class StageTimes:
    """Seconds spent per stage for one frame (benchmarks and stats read these)."""

    grayscale: float = 0.0
    detect: float = 0.0
    preprocess: float = 0.0
    classify: float = 0.0


@dataclass(frozen=True)
class FaceResult:
    box: Box
    probabilities: np.ndarray
    key: int | None = None  # the matcher's key: the same person on every frame (None: a photo)


@dataclass(frozen=True)
class ClassifyRequest:
    """Classify face ``face`` (an index into this frame's boxes) through ``views``."""

    face: int
    views: tuple[View, ...]


@dataclass
class _Scheduled:
    """What the policy remembers of one face (by the matcher's key) between frames."""

    box: Box
    last_seen: float
    classified_at: float = -math.inf
    classified_box: Box | None = None
    next_view: int = 0
    probabilities: np.ndarray | None = None


@dataclass
class ClassifyPolicy:
    """Which faces to classify on a frame, and through which of the contract's views.

    - **Temporal views.** A face seen for the first time gets the whole view set at once (its
      ``new`` event keeps the accuracy of averaged views); after that each classification
      uses the next ``views_per_pass`` views of the set in turn, and the tracker's smoothing
      over time does the averaging the views used to do within a frame.
    - **A budget.** Each face is classified at most ``max_hz`` times a second; in between it
      keeps its last probabilities. Several faces share the frames fairly: on one frame at
      most as many routine classifications as the faces' combined rate asks for (at least
      one), the face that moved most since its last classification first, then the one that
      waited longest. New faces are always served on their first frame.
    - Without a time (a photo, ``now`` None) every face gets the whole set and nothing is kept.

    Faces are known by the matcher's keys; a face unseen for ``forget_seconds`` is forgotten
    (a key that comes back after that counts as new). ``max_hz`` and ``forget_seconds`` are
    settings (``from_config``): they have no defaults of their own here.
    """

    views: tuple[View, ...]
    max_hz: float
    forget_seconds: float
    views_per_pass: int = 1
    _faces: dict[int, _Scheduled] = field(default_factory=dict, repr=False)
    _slots: list[_Scheduled | None] = field(default_factory=list, repr=False)
    _last_frame: float | None = field(default=None, repr=False)

    @classmethod
    def from_config(
        cls, views: tuple[View, ...], model: ModelConfig, tracking: TrackingConfig
    ) -> ClassifyPolicy:
        return cls(views, max_hz=model.max_classify_hz, forget_seconds=tracking.max_missing_seconds)

    def plan(
        self, boxes: Sequence[Box], now: float | None, keys: Sequence[int] | None = None
    ) -> list[ClassifyRequest]:
        """The faces of this frame to classify, new faces first, then by priority. ``keys``:
        the matcher's key of each box (needed with a time)."""
        if now is None:
            self._slots = [None] * len(boxes)
            return [ClassifyRequest(i, self.views) for i in range(len(boxes))]
        if keys is None or len(keys) != len(boxes):
            raise ValueError("a frame with a time needs the matcher's key of each box")
        self._faces = {k: f for k, f in self._faces.items() if now - f.last_seen <= self.forget_seconds}
        slots: list[_Scheduled] = []
        for key, box in zip(keys, boxes):
            face = self._faces.setdefault(key, _Scheduled(box, now))
            face.box, face.last_seen = box, now
            slots.append(face)
        self._slots = slots
        new = [i for i, face in enumerate(slots) if face.probabilities is None]
        period = 1.0 / self.max_hz
        # 5 % slack: at 30 fps and 10 Hz, three frames (0.0999... s) are one period
        due = [
            i
            for i, face in enumerate(slots)
            if face.probabilities is not None and now - face.classified_at >= 0.95 * period
        ]
        frame_gap = min(now - self._last_frame, period) if self._last_frame is not None else period
        self._last_frame = now
        share = max(1, math.ceil(len(slots) * self.max_hz * frame_gap - 1e-6)) - len(new)
        due.sort(key=lambda i: (-self._moved(slots[i]), slots[i].classified_at))
        requests = [ClassifyRequest(i, self.views) for i in new]
        for i in due[: max(share, 0)]:
            face = slots[i]
            picked = tuple(
                self.views[(face.next_view + k) % len(self.views)]
                for k in range(min(self.views_per_pass, len(self.views)))
            )
            face.next_view = (face.next_view + len(picked)) % len(self.views)
            requests.append(ClassifyRequest(i, picked))
        for request in requests:
            slots[request.face].classified_at = now
            slots[request.face].classified_box = boxes[request.face]
        return requests

    @staticmethod
    def _moved(face: _Scheduled) -> float:
        """How far the face moved since its last classification, in face widths."""
        return center_distance(face.classified_box, face.box) if face.classified_box is not None else 0.0

    def record(self, requests: Sequence[ClassifyRequest], probabilities: np.ndarray) -> list[np.ndarray]:
        """Stores what the classifier said; returns, per face of the frame, its latest probabilities."""
        fresh = {request.face: p for request, p in zip(requests, probabilities)}
        latest = []
        for i, face in enumerate(self._slots):
            if face is None:
                latest.append(fresh[i])
                continue
            if i in fresh:
                face.probabilities = fresh[i]
            latest.append(face.probabilities)
        return latest


def in_zones(box: Box, zones: Sequence[Sequence[float]], frame_hw: tuple[int, int]) -> bool:
    """Whether the box's centre lies in one of the privacy ``zones`` ([x, y, w, h] in
    fractions of the frame)."""
    height, width = frame_hw
    cx, cy = (box[0] + box[2] / 2) / width, (box[1] + box[3] / 2) / height
    return any(x <= cx < x + w and y <= cy < y + h for x, y, w, h in zones)


def outside_zones(
    boxes: Sequence[Box], zones: Sequence[Sequence[float]], frame_hw: tuple[int, int]
) -> list[Box]:
    """The boxes whose centre lies in none of the privacy ``zones``."""
    return [box for box in boxes if not in_zones(box, zones, frame_hw)]


class FramePipeline:
    """Grayscale, find faces (minus the privacy zones), choose which to classify, crop them,
    classify them in one batch."""

    def __init__(
        self,
        detector: HaarFaceDetector,
        classifier: EmotionClassifier,
        policy: ClassifyPolicy | None = None,
        timer=time.perf_counter,
        ignore_zones: Sequence[Sequence[float]] = (),
        matcher: FaceMatcher | None = None,
    ):
        self.detector = detector
        self.ignore_zones = tuple(tuple(zone) for zone in ignore_zones)
        self.finder = FaceFinder(detector)
        # Without a policy and a matcher: the config's defaults (a photo needs neither).
        self.matcher = matcher if matcher is not None else FaceMatcher.from_config(TrackingConfig())
        self.classifier = classifier
        self.policy = (
            policy
            if policy is not None
            else ClassifyPolicy.from_config(classifier.contract.views, ModelConfig(), TrackingConfig())
        )
        self.timer = timer
        self.classified = 0  # faces sent to the model
        self.passes = 0  # model passes (a face through one view is one pass)

    def process(
        self, frame: np.ndarray, times: StageTimes | None = None, now: float | None = None
    ) -> list[FaceResult]:
        """``now``: the frame's monotonic time; None for a lone photo (full detection, all views)."""
        t = times if times is not None else StageTimes()
        clock, contract = self.timer, self.classifier.contract
        t0 = clock()
        gray = to_gray(frame)
        t1 = clock()
        known = self.matcher.on_last_frame() if now is not None else {}
        found = [
            (key, box)
            for key, box in self.finder.find(gray, now, known)
            if not in_zones(box, self.ignore_zones, gray.shape[:2])
        ]
        boxes = [box for _, box in found]
        keys = self.matcher.assign(boxes, now, [key for key, _ in found]) if now is not None else None
        t2 = clock()
        requests = self.policy.plan(boxes, now, keys)
        crops = [crop_face(gray, boxes[r.face], contract.crop, contract.input_hw) for r in requests]
        t3 = clock()
        fresh = self.classifier.classify_with(np.asarray(crops), [r.views for r in requests])
        latest = self.policy.record(requests, fresh)
        t4 = clock()
        self.classified += len(requests)
        self.passes += sum(len(r.views) for r in requests)
        t.grayscale, t.detect, t.preprocess, t.classify = t1 - t0, t2 - t1, t3 - t2, t4 - t3
        return [FaceResult(box, p, key) for box, p, key in zip(boxes, latest, keys or [None] * len(boxes))]
