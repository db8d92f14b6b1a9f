"""Instruments around the daemon's own parts: they time and record, and change nothing.

Each wrapper stands in for the part it wraps (the loop cannot tell the difference):
- ``TimedCapture``: a capture whose ``read`` (decode) is timed, handed to ``FrameSource``
  as its opener in real-time runs: the daemon's ``open_capture`` (Motion-JPEG decoded
  to gray) for the edge pipeline, ``cv2.VideoCapture`` (colour) for the thesis loop;
- ``ClipSource``: every frame of a clip, decoded on the loop's own thread, for throughput
  runs, on the clip's clock;
- ``RecordingSource``, ``RecordingPipeline``, ``RecordingPublisher``: note when a frame was
  taken, its stage times and boxes, and when each event message was handed to the publisher.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.camera.capture import Capture, CaptureWrapper, Frame, open_capture
from edge.daemon.loop import Publisher, Source
from edge.mqtt.payloads import Message
from edge.vision.pipeline import StageTimes
from edge.vision.preprocess import Box

STAGES = ("decode", "grayscale", "detect", "preprocess", "classify", "track", "publish")


class TimedCapture(CaptureWrapper):
    """A capture as FrameSource uses it, with each successful read (or retrieve of a
    grabbed frame: nobody in view) timed."""

    def __init__(self, capture: Capture, read_seconds: list[float]):
        super().__init__(capture)
        self._read_seconds = read_seconds

    def _timed(self, read: Callable[[], tuple[bool, np.ndarray | None]]) -> tuple[bool, np.ndarray | None]:
        start = time.perf_counter()
        ok, image = read()
        if ok:
            self._read_seconds.append(time.perf_counter() - start)
        return ok, image

    def read(self) -> tuple[bool, np.ndarray | None]:
        return self._timed(self._capture.read)

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        return self._timed(self._capture.retrieve)


def timed_opener(read_seconds: list[float], opener: Callable = open_capture) -> Callable[..., TimedCapture]:
    return lambda *args: TimedCapture(opener(*args), read_seconds)


def frame_count(clip: Path) -> int:
    capture = cv2.VideoCapture(str(clip))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()


class ClipSource:
    """Every frame of a clip, read when asked (throughput runs).

    Frames are stamped on the clip's own clock (frame i at i / fps), and ``clock`` follows
    it: however fast frames are processed, the tracker, the classification budget and the
    full-detection timer see a 30 fps camera, so they do the work they would do live."""

    def __init__(self, clip: Path, read_seconds: list[float], opener: Callable = open_capture):
        self._capture = TimedCapture(opener(str(clip), cv2.CAP_ANY), read_seconds)
        self.fps = self._capture.get(cv2.CAP_PROP_FPS) or 30.0
        self._mono0, self._wall0 = time.monotonic(), time.time()
        self.sequence = 0
        self.ended = False

    def clock(self) -> float:
        return self._mono0 + self.sequence / self.fps

    def wall_clock(self) -> float:
        return self._wall0 + self.sequence / self.fps

    def latest(self, timeout: float) -> Frame | None:
        ok, image = self._capture.read()
        if not ok or image is None:
            self.ended = True
            return None
        frame = Frame(image, self.sequence + 1, self.wall_clock(), self.clock())
        self.sequence += 1
        return frame

    def set_idle(self, idle: bool) -> None:
        """Throughput runs take every frame, nobody in view or not."""

    def close(self) -> None:
        self._capture.release()


class RecordingSource:
    def __init__(self, inner: Source):
        self.inner = inner
        self.returned = 0.0  # perf_counter when latest() handed over a frame

    def latest(self, timeout: float) -> Frame | None:
        frame = self.inner.latest(timeout)
        self.returned = time.perf_counter()
        return frame

    def set_idle(self, idle: bool) -> None:
        self.inner.set_idle(idle)


class RecordingPipeline:
    def __init__(self, inner):
        self.inner = inner
        self.times = StageTimes()
        self.boxes: list[Box] = []

    def process(self, frame: np.ndarray, times: StageTimes | None = None, now: float | None = None) -> list:
        self.times = times if times is not None else StageTimes()
        results = self.inner.process(frame, self.times, now)
        self.boxes = [r.box for r in results]
        return results


class RecordingPublisher:
    """Hands every message on (to nothing when ``inner`` is None) and notes, per loop step,
    the seconds spent in ``publish`` and the monotonic time each event message was handed over."""

    def __init__(self, inner: Publisher | None, events_topic: str):
        self.inner = inner
        self.events_topic = events_topic
        self.events: list[Message] = []
        self.call_seconds: list[float] = []  # every publish() call, events and state alike
        self.step_seconds = 0.0
        self.step_event_times: list[float] = []
        self.step_new_boxes: list[Box] = []  # boxes of this step's `new` events

    def new_step(self) -> None:
        self.step_seconds, self.step_event_times, self.step_new_boxes = 0.0, [], []

    def publish(self, message: Message, keep: bool = False) -> bool:
        start = time.perf_counter()
        ok = self.inner.publish(message, keep) if self.inner is not None else True
        took = time.perf_counter() - start
        self.call_seconds.append(took)
        self.step_seconds += took
        if message.topic == self.events_topic:
            self.step_event_times.append(time.monotonic())
            self.events.append(message)
            payload = json.loads(message.payload)
            if payload.get("type") == "new":
                self.step_new_boxes.append(tuple(payload["box"]))
        return ok


@dataclass(frozen=True)
class StepRecord:
    """One processed frame: stage seconds, boxes found, event latencies, and the process's
    CPU and wall clocks when its step ended."""

    sequence: int
    stages: dict[str, float]
    boxes: list[Box]
    latencies: list[float]
    new_faces: list[Box]  # boxes of the `new` events this frame caused
    cpu: float
    wall: float


def record_step(
    frame: Frame,
    source: RecordingSource,
    pipeline: RecordingPipeline,
    publisher: RecordingPublisher,
    ended: float,
) -> StepRecord:
    t = pipeline.times
    in_pipeline = t.grayscale + t.detect + t.preprocess + t.classify
    # after the pipeline: tracking, building the messages, and publish() itself
    after = max(0.0, ended - source.returned - in_pipeline)
    stages = {
        "grayscale": t.grayscale,
        "detect": t.detect,
        "preprocess": t.preprocess,
        "classify": t.classify,
        "track": max(0.0, after - publisher.step_seconds),
        "publish": publisher.step_seconds,
    }
    latencies = [handed - frame.monotonic for handed in publisher.step_event_times]
    return StepRecord(
        frame.sequence,
        stages,
        list(pipeline.boxes),
        latencies,
        list(publisher.step_new_boxes),
        time.process_time(),
        ended,
    )


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec from the process that forked
    us, so a worker would report its parent's peak when that was larger."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    if not len(seconds):
        return {"p50": None, "p95": None}
    values = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "p50": round(float(np.percentile(values, 50)), 3),
        "p95": round(float(np.percentile(values, 95)), 3),
    }
