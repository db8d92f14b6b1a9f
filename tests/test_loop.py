"""The daemon's loop through its seams: ProcessingLoop with a fake camera, detector,
classifier, clock and publisher (fast, no broker, no model), beside the real end-to-end
tests that run the daemon with all its real parts."""

from __future__ import annotations

import json

import numpy as np

from edge import DEFAULT_MODEL
from edge.capture import Frame
from edge.config import parse_config
from edge.contract import EMOTIONS, load_contract
from edge.daemon import ProcessingLoop
from edge.pipeline import ClassifyPolicy, FramePipeline
from edge.tracking import FaceTracker

SIZE = 80


class ScriptedDetector:
    """Full-frame detection that finds the bright and the dark square of the scripted frame."""

    def __init__(self, config, script):
        self.config = config
        self.script = script  # frame index -> boxes
        self.frame = 0

    def detect(self, gray):
        return list(self.script[self.frame])


class BrightnessClassifier:
    """The bundled model's contract, with answers from the crop: bright faces are happy,
    dark ones sad (so a face's probabilities tell whose crop they came from)."""

    def __init__(self):
        self.contract = load_contract(DEFAULT_MODEL)
        self.labels = self.contract.labels

    def classify_with(self, crops, views):
        out = np.full((len(crops), len(EMOTIONS)), 0.02)
        for row, crop in zip(out, crops):
            row[EMOTIONS.index("happy" if crop.mean() > 128 else "sad")] = 0.88
        return out


class FrameList:
    def __init__(self, frames):
        self.frames = list(frames)

    def latest(self, timeout):
        return self.frames.pop(0) if self.frames else None


class Recorder:
    def __init__(self):
        self.messages = []

    def publish(self, message, keep=False):
        self.messages.append((message, keep))
        return True

    def json_on(self, suffix):
        return [json.loads(m.payload) for m, _ in self.messages if m.topic.endswith(suffix)]


def crossing(steps: int = 12, speed: int = 40):
    """Two faces walking towards each other and past: the bright one left to right at
    y 100, the dark one right to left at y 120 (40 px a frame: at the crossing each face's
    last box overlaps the *other* face's new box more than its own)."""
    script, images = [], []
    for t in range(steps):
        a, b = (60 + speed * t, 100), (500 - speed * t, 120)
        image = np.full((480, 640), 100, np.uint8)
        image[b[1] : b[1] + SIZE, b[0] : b[0] + SIZE] = 30
        image[a[1] : a[1] + SIZE, a[0] : a[0] + SIZE] = 230
        script.append([(*a, SIZE, SIZE), (*b, SIZE, SIZE)])
        images.append(image)
    return script, images


def make_loop(script, images, **config_sections):
    config = parse_config(
        {
            "detector": {"full_detect_seconds": 0},
            "tracking": {"min_frames": 1, "heartbeat_seconds": 0.1, "max_missing_seconds": 0.5},
            **config_sections,
        }
    )
    detector = ScriptedDetector(config.detector, script)
    classifier = BrightnessClassifier()
    policy = ClassifyPolicy.from_config(classifier.contract.views, config.model, config.tracking)
    pipeline = FramePipeline(detector, classifier, policy)
    frames = [Frame(image, i + 1, 1e9 + i / 30, i / 30) for i, image in enumerate(images)]
    source = FrameList(frames)
    clock = {"now": 0.0}

    class Stepper:
        def latest(self, timeout):
            frame = source.latest(timeout)
            if frame is not None:
                detector.frame = frame.sequence - 1
                clock["now"] = frame.monotonic
            else:
                clock["now"] += 1.0
            return frame

    publisher = Recorder()
    loop = ProcessingLoop(
        config,
        Stepper(),
        pipeline,
        FaceTracker(config.tracking, classifier.labels, id_prefix="p"),
        publisher,
        clock=lambda: clock["now"],
        wall_clock=lambda: 1e9 + clock["now"],
    )
    return loop, publisher


def test_two_faces_that_cross_keep_their_own_probabilities_and_events():
    script, images = crossing()
    loop, publisher = make_loop(script, images)
    for _ in range(len(images) + 2):  # the frames, then time passing: both visits end
        loop.step()
    events = publisher.json_on("/events")
    by_face = {}
    for event in events:
        by_face.setdefault(event["face_id"], []).append(event)
    assert len(by_face) == 2, sorted(by_face)
    for face_events in by_face.values():
        assert [e["type"] for e in face_events][0] == "new" and face_events[-1]["type"] == "end"
        # each person is one colour all along: the crossing swapped no probabilities
        assert len({e["emotion"] for e in face_events}) == 1, [(e["type"], e["emotion"]) for e in face_events]
        xs = [e["box"][0] for e in face_events]
        assert xs == sorted(xs) or xs == sorted(xs, reverse=True)  # and one direction
    emotions = {face_events[0]["emotion"] for face_events in by_face.values()}
    assert emotions == {"happy", "sad"}
