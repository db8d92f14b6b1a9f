"""MQTT messages, built by pure functions (documented in docs/mqtt.md, schemas in docs/schema/).

Never any pixels: boxes, labels and numbers only.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from edge.camera.status import CameraStatus
from edge.visits.alerts import Alert

if TYPE_CHECKING:  # types only: the MQTT side never loads OpenCV through the tracker
    from edge.visits.tracking import FaceEvent, Track

PAYLOAD_VERSION = 1


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    label: str = field(default="", compare=False)  # for the log only ("end <face_id>")


# The topics under <topic_prefix>/<device_id>/ (docs/mqtt.md): the daemon publishes all but
# BRIDGE, which the kiosk box's Mosquitto bridge publishes (deploy/mosquitto/bridge.conf).
AVAILABILITY, STATE, EVENTS, ALERTS, STATS, CAMERA, BRIDGE = (
    "availability",
    "state",
    "events",
    "alerts",
    "stats",
    "camera",
    "bridge",
)
TOPIC_KINDS = (AVAILABILITY, STATE, EVENTS, ALERTS, STATS, CAMERA, BRIDGE)
# What the availability topic says: online after each accepted connection, offline on a stop
# and as the last will.
ONLINE, OFFLINE = "online", "offline"


@dataclass(frozen=True)
class Topics:
    base: str  # <topic_prefix>/<device_id>

    @property
    def events(self) -> str:
        return f"{self.base}/{EVENTS}"

    @property
    def state(self) -> str:
        return f"{self.base}/{STATE}"

    @property
    def availability(self) -> str:
        return f"{self.base}/{AVAILABILITY}"

    @property
    def stats(self) -> str:
        return f"{self.base}/{STATS}"

    @property
    def alerts(self) -> str:
        return f"{self.base}/{ALERTS}"

    @property
    def camera(self) -> str:
        return f"{self.base}/{CAMERA}"

    @property
    def bridge(self) -> str:
        """Where the kiosk box's bridge says whether it is connected (docs/mqtt.md, Bridge)."""
        return f"{self.base}/{BRIDGE}"


def iso_utc(timestamp: float) -> str:
    """UTC ISO-8601 with milliseconds and a Z: 2026-11-24T04:50:00.123Z."""
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=False).encode()


def event_payload(event: FaceEvent, device_id: str, event_id: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "v": PAYLOAD_VERSION,
        "event_id": event_id or uuid.uuid4().hex,
        "type": event.kind,
        "device": device_id,
        "time": iso_utc(event.wall_time),
        "face_id": event.face_id,
        "box": list(event.box),
        "emotion": event.emotion,
        "confidence": round(event.confidence, 4),
        "probabilities": {k: round(v, 4) for k, v in event.probabilities.items()},
    }
    if event.summary is not None:
        summary = dict(event.summary)
        summary["first_seen"] = iso_utc(summary["first_seen"])
        summary["last_seen"] = iso_utc(summary["last_seen"])
        for moment in ("arrival", "departure", "peak"):
            if summary.get(moment):
                summary[moment] = {**summary[moment], "time": iso_utc(summary[moment]["time"])}
        payload["summary"] = summary
    return payload


def event_message(event: FaceEvent, topics: Topics, device_id: str, qos: int) -> Message:
    return Message(
        topics.events, _dumps(event_payload(event, device_id)), qos, label=f"{event.kind} {event.face_id}"
    )


def camera_summary(status: CameraStatus) -> dict[str, Any]:
    """The camera as the state and the stats carry it."""
    return {
        "status": "online" if status.online else "offline",
        "cause": status.cause or None,
        "detail": status.detail,
        "since": iso_utc(status.since),
    }


def camera_message(
    status: CameraStatus, topics: Topics, device_id: str, wall_time: float, qos: int
) -> Message:
    """Retained: a dashboard or Home Assistant sees at once whether the camera works and,
    if not, why (not_found, permission_denied, busy, unreachable, refused, no_frames, ended)."""
    payload = {
        "v": PAYLOAD_VERSION,
        "device": device_id,
        "time": iso_utc(wall_time),
        **camera_summary(status),
    }
    return Message(topics.camera, _dumps(payload), qos, retain=True)


def alert_summary(alert: Alert) -> dict[str, Any]:
    """An open alert as the state lists it."""
    return {
        "alert_id": alert.alert_id,
        "face_id": alert.face_id,
        "emotion": alert.emotion,
        "probability": alert.probability,
        "since": iso_utc(alert.since_wall),
    }


def alert_payload(alert: Alert, device_id: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "v": PAYLOAD_VERSION,
        "type": alert.kind,
        "device": device_id,
        "time": iso_utc(alert.wall_time),
        **alert_summary(alert),
    }
    if alert.reason:
        payload["reason"] = alert.reason
    return payload


def alert_message(alert: Alert, topics: Topics, device_id: str, qos: int) -> Message:
    return Message(topics.alerts, _dumps(alert_payload(alert, device_id)), qos)


def state_payload(
    tracks: Sequence[Track],
    labels: Sequence[str],
    device_id: str,
    wall_time: float,
    status: str = "running",
    alerts: Sequence[Alert] = (),
    camera: CameraStatus | None = None,
) -> dict[str, Any]:
    faces = [
        {
            "face_id": t.face_id,
            "box": list(t.box),
            "emotion": labels[t.emotion],
            "confidence": round(float(t.smoothed[t.emotion]), 4),
            "since": iso_utc(t.first_seen_wall),
        }
        for t in tracks
    ]
    levels = {name: 0.0 for name in labels}
    if tracks:
        mean = sum(t.smoothed for t in tracks) / len(tracks)
        levels = {name: round(float(v), 4) for name, v in zip(labels, mean)}
    return {
        "v": PAYLOAD_VERSION,
        "device": device_id,
        "time": iso_utc(wall_time),
        "status": status,
        "face_count": len(faces),
        # Over everyone present: the emotion with the highest mean smoothed probability.
        "dominant_emotion": max(levels, key=levels.get) if tracks else "none",
        "levels": levels,
        "faces": faces,
        # Open alerts (rules.alerts), so a dashboard that starts late still sees them.
        "alerts": [alert_summary(a) for a in alerts],
        **({"camera": camera_summary(camera)} if camera is not None else {}),
    }


def state_message(
    tracks: Sequence[Track],
    labels: Sequence[str],
    topics: Topics,
    device_id: str,
    wall_time: float,
    qos: int,
    status: str = "running",
    alerts: Sequence[Alert] = (),
    camera: CameraStatus | None = None,
) -> Message:
    payload = state_payload(tracks, labels, device_id, wall_time, status, alerts, camera)
    return Message(topics.state, _dumps(payload), qos, retain=True)


def stats_message(
    figures: dict[str, Any], topics: Topics, device_id: str, wall_time: float, version: str
) -> Message:
    payload = {
        "v": PAYLOAD_VERSION,
        "device": device_id,
        "time": iso_utc(wall_time),
        "version": version,
        **figures,
    }
    return Message(topics.stats, _dumps(payload), 0)


def state_signature(tracks: Sequence[Track]) -> tuple:
    """What a state message shows, minus boxes and confidences: publish when this changes."""
    return tuple((t.face_id, t.emotion) for t in tracks)
