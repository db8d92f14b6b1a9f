"""What the dashboard knows about every kiosk, built from the messages they publish.

Messages in (topic, payload, time received, retained or not), tiles out. No MQTT, no HTTP,
no clock of its own; what must outlive the process (visit summaries, alerts) goes to the
store, and a tile's "today" and recent alerts are read back from it, so a restart changes
nothing. The topic layout and payloads are the daemon's (docs/mqtt.md):
``<prefix>/<device>/{availability,state,events,alerts,stats,camera}``, and ``bridge`` from
the kiosk box's Mosquitto bridge when the kiosk is behind one (docs/mqtt.md, Bridge).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from dashboard.store import Store, local_day, parse_time, visit_from_event
from edge.mqtt.payloads import AVAILABILITY, BRIDGE, EVENTS, OFFLINE, ONLINE, TOPIC_KINDS

# The daemon's camera causes (docs/mqtt.md, Camera) in words; "starting" is no fault.
CAMERA_CAUSES = {
    "starting": "starting",
    "not_found": "not found",
    "permission_denied": "permission denied",
    "busy": "busy",
    "unreachable": "unreachable",
    "refused": "frames too large",
    "no_frames": "no frames",
    "ended": "recording ended",
}
UNKNOWN_CAMERA = {"ok": None, "text": "unknown"}
ALERT_KEYS = ("alert_id", "emotion", "probability", "since")  # what a page gets: no face id


def local_day_now(now: float) -> date:
    return local_day(now)


def alert_key(alert: dict[str, Any]) -> str:
    """An alert's id; for a payload without one (older daemons), a digest, so that no face id
    is ever stored or sent to a page in its place."""
    if alert.get("alert_id"):
        return str(alert["alert_id"])
    seed = f"{alert.get('face_id')}|{alert.get('since')}|{alert.get('emotion')}"
    return "h-" + hashlib.sha256(seed.encode()).hexdigest()[:16]


def camera_tile(camera: dict[str, Any]) -> dict[str, Any]:
    """The daemon's camera object (docs/mqtt.md, Camera) as a tile shows it: ok True (frames),
    False (a fault, with its cause) or None (starting: not known yet, not an error)."""
    cause = camera.get("cause")
    if camera.get("status") == "online":
        return {"ok": True, "cause": None, "from_state": True, "text": "ok"}
    words = CAMERA_CAUSES.get(str(cause), str(cause or "offline").replace("_", " "))
    return {
        "ok": None if cause == "starting" else False,
        "cause": cause,
        "from_state": True,
        "text": words if cause == "starting" else f"{words}: {camera.get('detail', '')}".rstrip(": "),
    }


@dataclass
class Device:
    device: str
    online: bool | None = None  # None: no availability message seen yet
    status: str = "unknown"
    face_count: int = 0
    dominant_emotion: str = "none"
    levels: dict[str, float] = field(default_factory=dict)
    faces: list[dict[str, Any]] = field(default_factory=list)  # with face ids: never sent out
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)  # alert id -> open alert
    camera: dict[str, Any] = field(default_factory=lambda: dict(UNKNOWN_CAMERA))
    version: str | None = None
    fps: float | None = None
    # When it was last heard from: a live message's arrival, a retained one's own time stamp
    # (a retained state from an hour ago is an hour old, however late we subscribed).
    last_heard: float = 0.0
    last_state_time: str | None = None  # the state payload's own time stamp
    # The box's bridge to this broker: False while it is down (the kiosk is unreachable,
    # whatever its retained availability and state still say), None without a bridge.
    bridge_up: bool | None = None

    def hear(self, when: float) -> None:
        self.last_heard = max(self.last_heard, when)

    def live(self) -> dict[str, Any]:
        """What is true now, as far as the kiosk said: nothing while it is offline."""
        if self.online is False or self.status == "stopped" or self.bridge_up is False:
            return {
                "face_count": 0,
                "dominant_emotion": "none",
                "levels": {},
                "faces": [],
                "alerts": [],
                "camera": dict(UNKNOWN_CAMERA),
            }
        return {
            "face_count": self.face_count,
            "dominant_emotion": self.dominant_emotion,
            "levels": self.levels,
            "faces": [{k: f.get(k) for k in ("emotion", "confidence", "since")} for f in self.faces],
            "alerts": sorted(
                ({k: a.get(k) for k in ALERT_KEYS} for a in self.alerts.values()),
                key=lambda a: str(a.get("since", "")),
            ),
            "camera": self.camera,
        }


class Fleet:
    """Every device seen under the topic prefix, with the store behind it."""

    def __init__(self, prefix: str, store: Store, keep_alerts_seconds: float = 1800.0, now: float = 0.0):
        self.prefix = prefix
        self.store = store
        self.keep_alerts_seconds = keep_alerts_seconds
        self.devices: dict[str, Device] = {}
        self._today: dict[str, dict[str, Any]] = {}  # device -> its day's figures, from the store
        self._recent: dict[str, list[dict[str, Any]]] = {}  # device -> recent alerts, from the store
        if now:
            for name in store.devices_on(local_day(now)):  # a restart shows today's kiosks at once
                self._device(name)

    def topics(self) -> list[tuple[str, int]]:
        """(filter, QoS): QoS 1 for the events only (the one kind that must never be missed),
        so a dashboard that was away gets every visit summary and not a flood of old states."""
        return [(f"{self.prefix}/+/{kind}", 1 if kind == EVENTS else 0) for kind in TOPIC_KINDS]

    def apply(self, topic: str, payload: bytes, now: float, retained: bool = False) -> str | None:
        """Takes one message; returns the device whose tile changed (None: not ours)."""
        parts = topic.split("/")
        if len(parts) != len(self.prefix.split("/")) + 2 or not topic.startswith(self.prefix + "/"):
            return None
        device_id, kind = parts[-2], parts[-1]
        if kind not in TOPIC_KINDS:
            return None
        if kind == BRIDGE:
            return self._on_bridge(device_id, payload, now, retained)
        if kind == AVAILABILITY:
            text = payload.decode("utf-8", "replace").strip()
            if text not in (ONLINE, OFFLINE):
                return None
            device = self._device(device_id)
            device.online = text == ONLINE
            if not device.online:
                self._close_alerts(device, now, "offline")  # a stopped daemon raises nothing
            if not retained:
                device.hear(now)
            return device_id
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict):
            return None
        device = self._device(device_id)
        getattr(self, f"_on_{kind}")(device, data, now)
        if kind != EVENTS:  # a summary re-sent from a spool says nothing about now
            stamped = parse_time(data.get("time"))
            device.hear(min(now, stamped) if retained and stamped else now)
        return device_id

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        return [self.tile(name, now) for name in sorted(self.devices)]

    def tile(self, device_id: str, now: float) -> dict[str, Any]:
        device = self.devices[device_id]
        return {
            "device": device.device,
            "online": False if device.bridge_up is False else device.online,
            "bridge": device.bridge_up,
            "status": device.status,
            **device.live(),
            "recent_alerts": self.recent_alerts(device_id, now),
            "version": device.version,
            "fps": device.fps,
            "last_update": device.last_heard,
            "last_state_time": device.last_state_time,
            "today": self.today(device_id, now),
        }

    def today(self, device_id: str, now: float) -> dict[str, Any]:
        day = local_day(now)
        cached = self._today.get(device_id)
        if cached is None or cached["date"] != day.isoformat():
            cached = self._today[device_id] = self.store.today(day, device_id)
        return cached

    def recent_alerts(self, device_id: str, now: float) -> list[dict[str, Any]]:
        if device_id not in self._recent:
            self._recent[device_id] = self.store.recent_alerts(device_id, now - self.keep_alerts_seconds)
        return self._recent[device_id]

    def roll_over(self, now: float) -> list[str]:
        """Devices whose 'today' ended at midnight (their tiles must be resent)."""
        day = local_day(now).isoformat()
        changed = [name for name, figures in self._today.items() if figures["date"] != day]
        for name in changed:
            del self._today[name]
        return changed

    def expire_alerts(self, now: float) -> list[str]:
        """Devices with a cleared alert that has now been listed long enough."""
        cutoff = now - self.keep_alerts_seconds
        changed = [
            name
            for name, alerts in self._recent.items()
            if any(a["cleared"] is not None and a["cleared"] < cutoff for a in alerts)
        ]
        for name in changed:
            del self._recent[name]
        return changed

    # -- one handler per topic kind -----------------------------------------------------

    def _on_bridge(self, device_id: str, payload: bytes, now: float, retained: bool) -> str | None:
        """The bridge's notification: "1" when the box's bridge connects, "0" (its last will,
        published by this broker) when it is gone. Down: the tile is unreachable (not online,
        nobody, no emotion); up: the kiosk's own availability and state count again."""
        text = payload.decode("utf-8", "replace").strip()
        if text not in ("0", "1"):
            return None
        device = self._device(device_id)
        device.bridge_up = text == "1"
        if device.bridge_up and not retained:
            device.hear(now)  # the "0" comes from this broker, not from the kiosk
        return device_id

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
        when = parse_time(data.get("time")) or now
        if isinstance(data.get("camera"), dict):  # the daemon's own view of its camera
            device.camera = camera_tile(data["camera"])
        if isinstance(data.get("alerts"), list):  # open alerts, retained with the state
            for alert in data["alerts"]:
                if isinstance(alert, dict):
                    self._raise(device, alert, when)
        present = {face["face_id"] for face in device.faces}
        for key, alert in list(device.alerts.items()):
            if alert.get("face_id") not in present:
                self._clear(device, key, when, "left")
        if device.status == "stopped":
            self._close_alerts(device, when, "shutdown")

    def _on_events(self, device: Device, data: dict[str, Any], now: float) -> None:
        visit = visit_from_event(device.device, data)
        if visit is not None and self.store.add_visit(visit):  # False: seen before
            self._today.pop(device.device, None)

    def _on_alerts(self, device: Device, data: dict[str, Any], now: float) -> None:
        when = parse_time(data.get("time")) or now
        if data.get("type") == "raised":
            self._raise(device, data, when)
        elif data.get("type") == "cleared":
            self._clear(device, alert_key(data), when, str(data.get("reason") or "recovered"))

    def _on_camera(self, device: Device, data: dict[str, Any], now: float) -> None:
        device.camera = camera_tile(data)

    def _on_stats(self, device: Device, data: dict[str, Any], now: float) -> None:
        device.version = data.get("version")
        fps = data.get("fps")
        device.fps = float(fps) if isinstance(fps, (int, float)) else None
        if isinstance(data.get("camera"), dict):
            device.camera = camera_tile(data["camera"])
        elif not device.camera.get("from_state") and device.fps is not None:  # older daemons: frames say it
            device.camera = {
                "ok": device.fps > 0,
                "text": f"{device.fps:.0f} fps" if device.fps > 0 else "no frames",
            }

    # -- alerts: open ones here, every one in the store -----------------------------------

    def _raise(self, device: Device, alert: dict[str, Any], when: float) -> None:
        key = alert_key(alert)
        if key in device.alerts:
            return
        device.alerts[key] = {
            k: alert.get(k) for k in ("face_id", "emotion", "since", "probability", "alert_id")
        }
        device.alerts[key]["alert_id"] = key
        since = parse_time(alert.get("since")) or when
        probability = alert.get("probability")
        self.store.alert_raised(
            device.device,
            key,
            str(alert.get("emotion", "")),
            float(probability) if isinstance(probability, (int, float)) else None,
            since,
            when,
        )
        self._recent.pop(device.device, None)

    def _clear(self, device: Device, key: str, when: float, reason: str) -> None:
        device.alerts.pop(key, None)
        if self.store.alert_cleared(key, when, reason):
            self._recent.pop(device.device, None)

    def _close_alerts(self, device: Device, when: float, reason: str) -> None:
        for key in set(device.alerts) | set(self.store.open_alerts(device.device)):
            self._clear(device, key, when, reason)
