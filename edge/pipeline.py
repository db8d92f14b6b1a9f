"""One frame in, faces with emotion probabilities out: the path every command shares."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edge.classifier import EmotionClassifier
from edge.config import ModelConfig
from edge.detect import FaceFinder, HaarFaceDetector
from edge.preprocess import Box, crop_face, to_gray
from edge.tracking import iou


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


class FramePipeline:
    """Grayscale, find faces, crop them by the contract's rule, classify them in one batch.

    A face that has not moved since it was last classified keeps those probabilities for
    up to ``reclassify_seconds`` (the tracker smooths over time anyway)."""

    def __init__(self, detector: HaarFaceDetector, classifier: EmotionClassifier,
                 model_config: ModelConfig = ModelConfig(), timer=time.perf_counter):
        self.detector = detector
        self.finder = FaceFinder(detector)
        self.classifier = classifier
        self.model_config = model_config
        self.timer = timer
        self._cache: list[tuple[Box, np.ndarray, float]] = []
        self.classified = 0

    def process(self, frame: np.ndarray, times: StageTimes | None = None, now: float | None = None) -> list[FaceResult]:
        t = times if times is not None else StageTimes()
        clock = self.timer
        t0 = clock()
        gray = to_gray(frame)
        t1 = clock()
        boxes = self.finder.find(gray)
        t2 = clock()
        contract = self.classifier.contract
        m = self.model_config
        probs: list[np.ndarray | None] = [None] * len(boxes)
        if now is not None and m.reclassify_seconds > 0:
            for i, box in enumerate(boxes):
                for cached_box, cached_probs, when in self._cache:
                    if now - when <= m.reclassify_seconds and iou(box, cached_box) >= m.reclassify_iou:
                        probs[i] = cached_probs
                        break
        todo = [i for i, p in enumerate(probs) if p is None]
        crops = [crop_face(gray, boxes[i], contract.crop, contract.input_hw) for i in todo]
        t3 = clock()
        if crops:
            fresh = self.classifier.classify(np.stack(crops))
            self.classified += len(crops)
            stamp = now if now is not None else 0.0
            kept = [entry for entry in self._cache if now is not None and now - entry[2] <= m.reclassify_seconds]
            for i, p in zip(todo, fresh):
                probs[i] = p
                kept.append((boxes[i], p, stamp))
            self._cache = kept[-32:]
        t4 = clock()
        t.grayscale, t.detect, t.preprocess, t.classify = t1 - t0, t2 - t1, t3 - t2, t4 - t3
        return [FaceResult(box, p) for box, p in zip(boxes, probs)]
