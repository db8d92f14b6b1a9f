"""What the dashboard knows about every kiosk, built from the messages they publish.

Pure: messages in (topic, payload, time received), tiles out. No MQTT, no HTTP, no clock of
its own, so every rule here is tested with plain values. The topic layout and payloads are
the daemon's (docs/mqtt.md): ``<prefix>/<device>/{availability,state,events,alerts,stats}``.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from edge.contract import EMOTIONS

LAST_VISITS = 8  # the last visits listed on a tile
KINDS = ("availability", "state", "events", "alerts", "stats", "camera")


def parse_time(text: Any) -> datetime | None:
    """A payload's ISO-8601 UTC time (``2026-11-24T09:15:02.417Z``), or None."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def local_day(when: datetime) -> date:
    """The dashboard's own calendar day of a moment: 'today' is the counter's day."""
    return when.astimezone().date()


@dataclass
class Today:
    day: date
    durations: list[float] = field(default_factory=list)
    dominant: Counter = field(default_factory=Counter)
    last_visits: deque = field(default_factory=lambda: deque(maxlen=LAST_VISITS))
    event_ids: set[str] = field(default_factory=set)  # delivery is at least once

    def add_visit(self, event: dict[str, Any], summary: dict[str, Any]) -> bool:
        event_id = str(event.get("event_id", ""))
        if event_id and event_id in self.event_ids:
            return False
        self.event_ids.add(event_id)
        duration = float(summary.get("duration_s", 0.0))
        emotion = str(summary.get("dominant_emotion", "none"))
        self.durations.append(duration)
        self.dominant[emotion] += 1
        self.last_visits.appendleft(
            {
                "face_id": event.get("face_id"),
                "ended": summary.get("last_seen") or event.get("time"),
                "duration_s": round(duration, 1),
                "dominant_emotion": emotion,
            }
        )
        return True

    def to_dict(self) -> dict[str, Any]:
        visits = len(self.durations)
        return {
            "date": self.day.isoformat(),
            "visits": visits,
            "median_seconds": round(statistics.median(self.durations), 1) if visits else None,
            "emotion_share": {
                name: round(self.dominant[name] / visits, 3) for name in EMOTIONS if self.dominant[name]
            }
            if visits
            else {},
            "last_visits": list(self.last_visits),
        }


@dataclass
class Device:
    device: str
    online: bool | None = None  # None: no availability message seen yet
    status: str = "unknown"
    face_count: int = 0
    dominant_emotion: str = "none"
    levels: dict[str, float] = field(default_factory=dict)
    faces: list[dict[str, Any]] = field(default_factory=list)
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)  # face_id -> open alert
    camera: dict[str, Any] = field(default_factory=lambda: {"ok": None, "text": "unknown"})
    version: str | None = None
    fps: float | None = None
    last_update: float = 0.0  # when the dashboard last heard from it (its own clock)
    last_state_time: str | None = None  # the state payload's own time stamp
    today: Today | None = None

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "device": self.device,
            "online": self.online,
            "status": self.status,
            "camera": self.camera,
            "face_count": self.face_count,
            "dominant_emotion": self.dominant_emotion,
            "levels": self.levels,
            "faces": self.faces,
            "alerts": sorted(self.alerts.values(), key=lambda a: str(a.get("since", ""))),
            "version": self.version,
            "fps": self.fps,
            "last_update": self.last_update,
            "last_state_time": self.last_state_time,
            "today": self.today.to_dict() if self.today else Today(local_day_now(now)).to_dict(),
        }


def camera_tile(camera: dict[str, Any]) -> dict[str, Any]:
    """The daemon's camera object (docs/mqtt.md, Camera) as a tile shows it."""
    online = camera.get("status") == "online"
    return {
        "ok": online,
        "cause": camera.get("cause"),
        "from_state": True,
        "text": "ok" if online else f"{camera.get('cause') or 'offline'}: {camera.get('detail', '')}",
    }


def local_day_now(now: float) -> date:
    return datetime.fromtimestamp(now).astimezone().date()


class Fleet:
    """Every device seen under the topic prefix."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.devices: dict[str, Device] = {}

    def topics(self) -> list[str]:
        return [f"{self.prefix}/+/{kind}" for kind in KINDS]

    def apply(self, topic: str, payload: bytes, now: float) -> str | None:
        """Takes one message; returns the device whose tile changed (None: not ours)."""
        parts = topic.split("/")
        if len(parts) != len(self.prefix.split("/")) + 2 or not topic.startswith(self.prefix + "/"):
            return None
        device_id, kind = parts[-2], parts[-1]
        if kind not in KINDS:
            return None
        if kind == "availability":
            text = payload.decode("utf-8", "replace").strip()
            if text not in ("online", "offline"):
                return None
            device = self._device(device_id)
            device.online = text == "online"
            if not device.online:
                device.alerts.clear()  # a stopped daemon raises nothing
        else:
            try:
                data = json.loads(payload)
            except (ValueError, UnicodeDecodeError):
                return None
            if not isinstance(data, dict):
                return None
            device = self._device(device_id)
            getattr(self, f"_on_{kind}")(device, data, now)
        device.last_update = now
        return device_id

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        return [self.devices[name].to_dict(now) for name in sorted(self.devices)]

    def tile(self, device_id: str, now: float) -> dict[str, Any]:
        return self.devices[device_id].to_dict(now)

    # -- one handler per topic kind -----------------------------------------------------

    def _device(self, device_id: str) -> Device:
        if device_id not in self.devices:
            self.devices[device_id] = Device(device_id)
        return self.devices[device_id]

    def _on_state(self, device: Device, data: dict[str, Any], now: float) -> None:
        device.status = str(data.get("status", "unknown"))
        device.face_count = int(data.get("face_count", 0))
        device.dominant_emotion = str(data.get("dominant_emotion", "none"))
        device.levels = {k: float(v) for k, v in (data.get("levels") or {}).items()}
        device.faces = [
            {k: face.get(k) for k in ("face_id", "emotion", "confidence", "since")}
            for face in data.get("faces", [])
            if isinstance(face, dict)
        ]
        device.last_state_time = data.get("time")
        if isinstance(data.get("camera"), dict):  # the daemon's own view of its camera
            device.camera = camera_tile(data["camera"])
        if isinstance(data.get("alerts"), list):  # open alerts, retained with the state
            device.alerts = {str(a.get("face_id")): a for a in data["alerts"] if isinstance(a, dict)}
        present = {face["face_id"] for face in device.faces}
        device.alerts = {k: v for k, v in device.alerts.items() if k in present}
        if device.status == "stopped":
            device.alerts.clear()

    def _on_events(self, device: Device, data: dict[str, Any], now: float) -> None:
        summary = data.get("summary")
        if data.get("type") != "end" or not isinstance(summary, dict):
            return
        ended = parse_time(summary.get("last_seen")) or parse_time(data.get("time"))
        if ended is None:
            return
        day, today = local_day(ended), local_day_now(now)
        if day != today:
            return  # a visit of another day (a spool emptied late): not today's figures
        if device.today is None or device.today.day != today:
            device.today = Today(today)
        device.today.add_visit(data, summary)

    def _on_alerts(self, device: Device, data: dict[str, Any], now: float) -> None:
        face_id = str(data.get("face_id"))
        if data.get("type") == "raised":
            device.alerts[face_id] = {
                k: data.get(k) for k in ("face_id", "emotion", "since", "probability", "alert_id")
            }
        elif data.get("type") == "cleared":
            device.alerts.pop(face_id, None)

    def _on_camera(self, device: Device, data: dict[str, Any], now: float) -> None:
        device.camera = camera_tile(data)

    def _on_stats(self, device: Device, data: dict[str, Any], now: float) -> None:
        device.version = data.get("version")
        fps = data.get("fps")
        device.fps = float(fps) if isinstance(fps, (int, float)) else None
        if not device.camera.get("from_state") and device.fps is not None:  # older daemons: frames say it
            device.camera = {
                "ok": device.fps > 0,
                "text": f"{device.fps:.0f} fps" if device.fps > 0 else "no frames",
            }

    def roll_over(self, now: float) -> list[str]:
        """Devices whose 'today' ended at midnight (their tiles must be resent)."""
        today = local_day_now(now)
        changed = []
        for name, device in self.devices.items():
            if device.today is not None and device.today.day != today:
                device.today = Today(today)
                changed.append(name)
        return changed
