"""The processing loop and the start-up that assembles it.

The loop receives its frame source, pipeline, tracker, publisher and clocks as arguments,
so tests can swap any of them; ``start_daemon`` builds the real ones from the config.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from edge.camera.capture import Frame
from edge.config import Config
from edge.daemon.stats import StatsCollector
from edge.mqtt.payloads import (
    Message,
    Topics,
    alert_message,
    camera_message,
    event_message,
    state_message,
    state_signature,
)
from edge.vision.pipeline import FramePipeline, StageTimes
from edge.visits.alerts import Alert, AlertRules
from edge.visits.tracking import FaceEvent, FaceTracker

_LOGGER = logging.getLogger(__name__)


class Source(Protocol):
    def latest(self, timeout: float) -> Frame | None: ...
    def set_idle(self, idle: bool) -> None: ...  # nobody in view: fewer frames will do


class Publisher(Protocol):
    def publish(self, message: Message, keep: bool = False) -> bool: ...


@dataclass
class LoopStats:
    frames: int = 0
    faces: int = 0
    events: int = 0


class ProcessingLoop:
    """Frames -> faces -> tracked people -> events and state, one ``step`` at a time."""

    def __init__(
        self,
        config: Config,
        source: Source,
        pipeline: FramePipeline,
        tracker: FaceTracker,
        publisher: Publisher,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        alerts: AlertRules | None = None,
        stats: LoopStats | None = None,
        collector: StatsCollector | None = None,
    ):
        self.config = config
        self.source, self.pipeline, self.tracker, self.publisher = source, pipeline, tracker, publisher
        self.alerts = alerts or AlertRules(config.rules.alerts, tracker.labels)
        self.clock, self.wall_clock = clock, wall_clock
        self.topics = Topics(config.base_topic)
        self.device_id = config.device_id
        self.stats = stats or LoopStats()
        self.collector = collector or StatsCollector()  # the machine's time: real fps and CPU
        self._state_signature: tuple | None = None
        self._state_published = -float("inf")
        self._camera_published = None  # the camera status last published

    def _publish_events(self, events: list[FaceEvent]) -> None:
        for event in events:
            # A visit summary must not be lost; frame-level news may be, and is counted.
            keep = event.kind == "end"
            self.publisher.publish(
                event_message(event, self.topics, self.device_id, self.config.mqtt.qos), keep=keep
            )
            self.stats.events += 1
            _LOGGER.debug("%s %s %s %.2f", event.kind, event.face_id, event.emotion, event.confidence)

    def _publish_alerts(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            # Like new/update: news of now (the retained state lists the open ones).
            self.publisher.publish(alert_message(alert, self.topics, self.device_id, self.config.mqtt.qos))
            _LOGGER.info(
                "alert %s: %s looked %s (%.2f) since %.1f s%s",
                alert.kind,
                alert.face_id,
                alert.emotion,
                alert.probability,
                alert.wall_time - alert.since_wall,
                f" ({alert.reason})" if alert.reason else "",
            )

    @property
    def camera(self):
        """The source's CameraStatus (None for a source that does not report one: tests, bench)."""
        return getattr(self.source, "status", None)

    def publish_camera(self, force: bool = False) -> None:
        """The retained camera topic, on every change of the camera's status (and on connect)."""
        camera = self.camera
        if camera is None or (camera == self._camera_published and not force):
            return
        if camera != self._camera_published and camera.cause != "starting":
            log = _LOGGER.debug  # edge.camera.capture logged this change already, in one line (README)
            log("camera %s: %s", "online" if camera.online else f"offline ({camera.cause})", camera.detail)
        self._camera_published = camera
        self.publisher.publish(self.camera_state())

    def camera_state(self) -> Message | None:
        camera = self.camera
        if camera is None:
            return None
        return camera_message(camera, self.topics, self.device_id, self.wall_clock(), self.config.mqtt.qos)

    def state(self, status: str = "running") -> Message:
        return state_message(
            self.tracker.present(),
            self.tracker.labels,
            self.topics,
            self.device_id,
            self.wall_clock(),
            self.config.mqtt.qos,
            status,
            self.alerts.open_alerts(),
            self.camera,
        )

    def publish_state(self, status: str = "running", force: bool = False) -> None:
        """On any change of who is there or of their emotion; while faces are present, also
        every heartbeat so the levels on the dashboards stay live."""
        present = self.tracker.present()
        camera = self.camera
        signature = (
            status,
            state_signature(present),
            tuple(a.alert_id for a in self.alerts.open_alerts()),
            None if camera is None else (camera.online, camera.cause),
        )
        now = self.clock()
        heartbeat = self.config.tracking.heartbeat_seconds
        due = bool(present) and heartbeat > 0 and now - self._state_published >= heartbeat
        if force or due or signature != self._state_signature:
            self._state_signature = signature
            self._state_published = now
            self.publisher.publish(self.state(status))

    def step(self, timeout: float = 0.2) -> Frame | None:
        """Processes the newest frame (or only the passing of time, when none came): the
        pipeline (grayscale, faces, which to classify, crops, emotions), then the tracker."""
        frame = self.source.latest(timeout)
        if frame is None:
            events = self.tracker.expire(self.clock(), self.wall_clock())
        else:
            times = StageTimes()
            faces = self.pipeline.process(frame.image, times, now=frame.monotonic)
            # the pipeline's matcher said which face is whose: the tracker keys on the same
            events = self.tracker.update(
                [(f.box, f.probabilities, f.key) for f in faces], frame.monotonic, frame.wall_time
            )
            self.stats.frames += 1
            self.stats.faces += len(faces)
            self.collector.frame(times, len(faces))
        # Nobody tracked, not even someone not yet confirmed or briefly lost: the source
        # may pass over frames (camera.idle_fps) until someone is.
        self.source.set_idle(not self.tracker.tracks)
        self._publish_events(events)
        self._publish_alerts(self.alerts.update(self.tracker.present(), self.clock(), self.wall_clock()))
        self.publish_camera()
        self.publish_state()
        return frame

    def end_visits(self, reason: str) -> None:
        """Clears the open alerts and ends every visit (summaries kept) because the daemon
        stops or reloads (``reason``: shutdown | reload), not because the customer left."""
        self._publish_alerts(self.alerts.clear_all(self.wall_clock(), reason))
        self._publish_events(self.tracker.end_all(self.clock(), self.wall_clock(), reason))

    def finish(self) -> None:
        """Ends every visit and marks the device stopped."""
        self.end_visits("shutdown")
        self.publish_state(status="stopped", force=True)
