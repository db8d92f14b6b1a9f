"""The daemon's loop through its seams: ProcessingLoop with a fake camera, detector,
classifier, clock and publisher (fast, no broker, no model), beside the real end-to-end
tests that run the daemon with all its real parts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge import DEFAULT_MODEL
from edge.camera.capture import Frame
from edge.camera.status import CameraStatus
from edge.config import parse_config
from edge.contract import EMOTIONS, load_contract
from edge.daemon.loop import ProcessingLoop
from edge.vision.pipeline import ClassifyPolicy, FramePipeline
from edge.visits.tracking import FaceTracker

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
        self.model_path = DEFAULT_MODEL
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
        self.idle: list[bool] = []  # what the loop told the source after each step

    def latest(self, timeout):
        return self.frames.pop(0) if self.frames else None

    def set_idle(self, idle):
        self.idle.append(idle)


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

        def set_idle(self, idle):
            source.set_idle(idle)

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


# -- Service.reload through its parts ---------------------------------------------------------


class FakeNotifier:
    watchdog_interval = None

    def __init__(self):
        self.sent = []

    def ready(self, status=""):
        self.sent.append("READY")

    def reloading(self):
        self.sent.append("RELOADING")

    def stopping(self):
        self.sent.append("STOPPING")

    def status(self, line):
        pass

    def watchdog(self):
        pass


class FakeSource:
    """A camera that shows the bright square where the first script frame has it, forever."""

    def __init__(self, camera_config):
        self.config = camera_config
        self.started = self.stopped = False
        self.finished = False
        self.status = CameraStatus(True, "", "fake camera", 0.0)
        self.sequence = 0

    def start(self):
        self.started = True
        return self

    def stop(self, timeout=1.0):
        self.stopped = True

    def latest(self, timeout):
        self.sequence += 1
        image = np.full((480, 640), 100, np.uint8)
        image[100 : 100 + SIZE, 200 : 200 + SIZE] = 230
        return Frame(image, self.sequence, 1e9 + self.sequence / 30, self.sequence / 30)

    def set_idle(self, idle):
        pass

    def clock(self):
        return self.sequence / 30

    def wall_clock(self):
        return 1e9 + self.sequence / 30


class FakeTransport:
    connected = False
    reconnects = 0

    def subscribe(self, topic, callback):
        pass


class FakePublisher(Recorder):
    dropped = 0

    def __init__(self, spool_dir):
        super().__init__()
        from edge.mqtt.spool import DiskSpool

        self.spool = DiskSpool(spool_dir)
        self.transport = FakeTransport()
        self.started = self.stopped = False

    def start(self):
        self.started = True

    def stop(self, timeout=2.5):
        self.stopped = True


def fake_parts(tmp_path, built):
    from edge.daemon.service import Parts

    def pipeline(config):
        built.append("pipeline")
        detector = ScriptedDetector(config.detector, [[(200, 100, SIZE, SIZE)]])
        classifier = BrightnessClassifier()
        policy = ClassifyPolicy.from_config(classifier.contract.views, config.model, config.tracking)
        return FramePipeline(detector, classifier, policy)

    def publisher(config, labels, current_state, spool=None):
        built.append("publisher")
        return FakePublisher(tmp_path / "spool")

    def source(camera):
        built.append("source")
        return FakeSource(camera)

    return Parts(check=lambda config: [], pipeline=pipeline, publisher=publisher, source=source)


@pytest.fixture(autouse=True)
def root_log_level():
    """A reload sets the root logger's level from the config: put it back for later tests."""
    import logging

    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def service_with(tmp_path, text):
    import yaml

    from edge.config import load_config
    from edge.daemon.service import Service

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(text))
    built = []
    notifier = FakeNotifier()
    service = Service(load_config(str(path)), str(path), notifier=notifier, parts=fake_parts(tmp_path, built))
    return service, path, built, notifier


BASE = {
    "detector": {"full_detect_seconds": 0},
    "tracking": {"min_frames": 1, "heartbeat_seconds": 0},
    "spool": {"path": "unused"},
}


def test_a_reload_that_changes_nothing_rebuilds_nothing_and_says_ready(tmp_path):
    service, _, built, notifier = service_with(tmp_path, BASE)
    assert built == ["pipeline", "publisher", "source"]
    service.reload()
    assert built == ["pipeline", "publisher", "source"]
    assert notifier.sent == ["RELOADING", "READY"]


def test_a_reload_of_tracking_ends_the_visits_as_reloads_and_rebuilds_only_what_depends_on_it(tmp_path):
    import yaml

    service, path, built, _ = service_with(tmp_path, BASE)
    for _ in range(3):
        service.loop.step(0)
    assert service.tracker.present(), "the face is a person"
    publisher, source = service.publisher, service.source
    path.write_text(yaml.safe_dump({**BASE, "tracking": {"min_frames": 2, "heartbeat_seconds": 0}}))
    service.reload()
    ends = [json.loads(m.payload) for m, keep in publisher.messages if keep]
    assert [e["summary"]["ended_by"] for e in ends] == ["reload"]
    assert built == ["pipeline", "publisher", "source", "pipeline"]  # the matcher follows tracking
    assert service.publisher is publisher and service.source is source
    assert service.config.tracking.min_frames == 2 and not service.tracker.present()


def test_a_broken_config_is_refused_on_reload_and_the_running_one_kept(tmp_path):
    service, path, built, notifier = service_with(tmp_path, BASE)
    path.write_text("camera:\n  fps: fast\n")
    running = service.config
    service.reload()
    assert service.config is running and built == ["pipeline", "publisher", "source"]
    assert notifier.sent == ["RELOADING", "READY"]


def test_a_reload_with_another_camera_replaces_the_source_and_ends_the_visits(tmp_path):
    import yaml

    service, path, built, _ = service_with(tmp_path, BASE)
    service.source.start()
    for _ in range(3):
        service.loop.step(0)
    old = service.source
    path.write_text(yaml.safe_dump({**BASE, "camera": {"source": "/dev/video3"}}))
    service.reload()
    assert old.stopped and service.source is not old and service.source.started
    assert built[-1] == "source" and service.loop.source is service.source
    ends = [json.loads(m.payload) for m, keep in service.publisher.messages if keep]
    assert [e["summary"]["ended_by"] for e in ends] == ["reload"]


# -- ProcessingLoop on its own ----------------------------------------------------------------


def still_face(frames: int):
    script = [[(200, 100, SIZE, SIZE)]] * frames
    image = np.full((480, 640), 100, np.uint8)
    image[100 : 100 + SIZE, 200 : 200 + SIZE] = 30  # dark: the classifier says sad
    return script, [image] * frames


def test_finish_ends_every_visit_as_a_shutdown_kept_for_the_spool_and_says_stopped():
    loop, publisher = make_loop(*still_face(5))
    for _ in range(5):
        loop.step()
    loop.finish()
    ends = [(json.loads(m.payload), keep) for m, keep in publisher.messages if m.topic.endswith("/events")]
    ends = [(e, keep) for e, keep in ends if e["type"] == "end"]
    assert len(ends) == 1 and ends[0][1] is True  # a visit summary goes through the spool
    assert ends[0][0]["summary"]["ended_by"] == "shutdown"
    assert publisher.json_on("/state")[-1]["status"] == "stopped"
    news = [keep for m, keep in publisher.messages if m.topic.endswith("/events")][:-1]
    assert news and not any(news)  # new/update are news of now, not kept


def test_an_upset_face_raises_an_alert_after_the_hold_time_on_the_loops_clock():
    script, images = still_face(200)  # sad at 0.88, 200 frames: 6.6 s on the clip's clock
    loop, publisher = make_loop(script, images, rules={"alerts": {"hold_seconds": 5, "min_probability": 0.6}})
    raised_at = None
    for i in range(len(images)):
        loop.step()
        if raised_at is None and publisher.json_on("/alerts"):
            raised_at = i / 30
    alerts = publisher.json_on("/alerts")
    assert alerts and alerts[0]["type"] == "raised" and alerts[0]["emotion"] == "sad"
    assert 5.0 <= raised_at <= 5.2, raised_at  # the frames' time, not the machine's


def test_the_camera_topic_is_published_on_each_change_of_the_cameras_status_only():
    loop, publisher = make_loop(*still_face(6))
    statuses = [CameraStatus(False, "starting", "opening", 0.0)] * 2 + [CameraStatus(True, "", "ok", 1.0)] * 4

    class WithStatus:
        def __init__(self, inner):
            self.inner, self.status = inner, statuses[0]

        def latest(self, timeout):
            self.status = statuses.pop(0) if statuses else self.status
            return self.inner.latest(timeout)

        def set_idle(self, idle):
            self.inner.set_idle(idle)

    loop.source = WithStatus(loop.source)
    for _ in range(6):
        loop.step()
    cameras = [json.loads(m.payload)["status"] for m, _ in publisher.messages if m.topic.endswith("/camera")]
    assert cameras == ["offline", "online"]


def test_the_source_is_told_idle_while_nobody_is_tracked_and_busy_from_the_first_face_on():
    """Idle (camera.idle_fps) only while the tracker holds nobody: a face found once, not
    yet confirmed, or briefly lost is full rate; after max_missing_seconds without it, idle."""
    empty = np.full((480, 640), 100, np.uint8)
    face_script, face_images = still_face(4)
    script = [[]] * 3 + face_script + [[]] * 30  # 30 frames: 1 s, past max_missing_seconds 0.5
    images = [empty] * 3 + face_images + [empty] * 30
    loop, _ = make_loop(script, images, tracking={"min_frames": 3, "max_missing_seconds": 0.5})
    told = []

    class Listening:
        def __init__(self, inner):
            self.inner = inner

        def latest(self, timeout):
            return self.inner.latest(timeout)

        def set_idle(self, idle):
            told.append(idle)

    loop.source = Listening(loop.source)
    for _ in range(len(images)):
        loop.step()
    assert told[:3] == [True] * 3  # nobody yet
    assert told[3:7] == [False] * 4  # from the face's first frame, before its `new` (3 frames)
    missing = told[7:]
    gone = missing.index(True)  # the face stays tracked for 0.5 s after its last frame
    assert 14 <= gone <= 16 and set(missing[:gone]) == {False} and set(missing[gone:]) == {True}
