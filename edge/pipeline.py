"""One frame in, faces with emotion probabilities out: the path every command shares."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edge.classifier import EmotionClassifier
from edge.detect import HaarFaceDetector
from edge.preprocess import Box, crop_face, to_gray


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


@dataclass
class FramePipeline:
    detector: HaarFaceDetector
    classifier: EmotionClassifier
    timer: callable = field(default=time.perf_counter)

    def process(self, frame: np.ndarray, times: StageTimes | None = None) -> list[FaceResult]:
        t = times if times is not None else StageTimes()
        clock = self.timer
        t0 = clock()
        gray = to_gray(frame)
        t1 = clock()
        boxes = self.detector.detect(gray)
        t2 = clock()
        contract = self.classifier.contract
        crops = [crop_face(gray, box, contract.crop, contract.input_hw) for box in boxes]
        t3 = clock()
        probs = self.classifier.classify(np.stack(crops)) if crops else np.zeros((0, len(contract.labels)))
        t4 = clock()
        t.grayscale, t.detect, t.preprocess, t.classify = t1 - t0, t2 - t1, t3 - t2, t4 - t3
        return [FaceResult(box, p) for box, p in zip(boxes, probs)]
