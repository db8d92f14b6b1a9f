"""The thesis's real-time loop as written, to measure the edge pipeline against.

Per frame: ``imutils.resize(frame, width=300)``, grayscale, ``detectMultiScale(gray,
scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))``, and for every face its box resized to
48x48 and one Keras ``model.predict`` call with the float model. It quacks like
``edge.vision.pipeline.FramePipeline`` (``process(frame, times, now)``), so the daemon's own loop,
tracker and publisher run it unchanged.

TensorFlow is imported only here, and only through ``training`` (which sets TensorFlow's
environment first): the fast pipeline's worker never loads it.

    python -m bench.baseline --make-model PATH.keras   # an untrained stand-in (same cost)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.contract import INPUT_SIZE
from edge.vision.detect import DEFAULT_CASCADE
from edge.vision.pipeline import FaceResult, StageTimes

THESIS_WIDTH = 300


def resize_to_width(image: np.ndarray, width: int) -> np.ndarray:
    """``imutils.resize(image, width=width)``: keeps the aspect ratio, INTER_AREA, int() height."""
    h, w = image.shape[:2]
    return cv2.resize(image, (width, int(h * width / float(w))), interpolation=cv2.INTER_AREA)


def load_keras_model(path: str | Path) -> Any:
    import keras

    import training  # noqa: F401  - sets TensorFlow's environment before TensorFlow loads

    return keras.models.load_model(str(path), compile=False)


class ThesisPipeline:
    """One frame in, faces with probabilities out, the thesis's way."""

    def __init__(self, model: Any, cascade_path: Path = DEFAULT_CASCADE, timer=time.perf_counter):
        self.model = model
        self.cascade = cv2.CascadeClassifier(str(cascade_path))
        self.timer = timer
        self.classified = 0

    def process(
        self, frame: np.ndarray, times: StageTimes | None = None, now: float | None = None
    ) -> list[FaceResult]:
        t = times if times is not None else StageTimes()
        clock = self.timer
        t0 = clock()
        small = resize_to_width(frame, THESIS_WIDTH)
        t1 = clock()
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        t2 = clock()
        faces = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
        t3 = clock()
        # the down-scaling counts as detection, as in the edge pipeline (which scales in detect)
        t.grayscale, t.detect, t.preprocess, t.classify = t2 - t1, (t1 - t0) + (t3 - t2), 0.0, 0.0
        scale = frame.shape[1] / float(THESIS_WIDTH)
        results = []
        for x, y, w, h in faces if len(faces) else []:
            p0 = clock()
            roi = cv2.resize(gray[y : y + h, x : x + w], (INPUT_SIZE, INPUT_SIZE))
            batch = roi.astype(np.float32)[None, :, :, None]  # raw 0..255: the model normalizes
            p1 = clock()
            probabilities = self.model.predict(batch, verbose=0)[0]
            p2 = clock()
            t.preprocess += p1 - p0
            t.classify += p2 - p1
            self.classified += 1
            box = (round(x * scale), round(y * scale), round(w * scale), round(h * scale))
            results.append(FaceResult(box, np.asarray(probabilities, dtype=np.float32)))
        return results


def make_standin_model(path: Path) -> Path:
    """An untrained mini-Xception: the same layers, so the same cost per ``predict``."""
    import training  # noqa: F401  - must precede any TensorFlow/Keras import
    from training.model import make_mini_xception

    path.parent.mkdir(parents=True, exist_ok=True)
    make_mini_xception().save(str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="Makes an untrained stand-in of the thesis's Keras model.")
    parser.add_argument("--make-model", required=True, type=Path, help="where to write the .keras file")
    args = parser.parse_args()
    print(make_standin_model(args.make_model))


if __name__ == "__main__":
    main()
