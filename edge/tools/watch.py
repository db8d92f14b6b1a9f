"""``fer-kiosk watch``: the live events and device state, for the administrator at the kiosk."""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime

from edge.config import Config
from edge.mqtt.payloads import CAMERA, EVENTS, STATE, STATS


def format_message(topic: str, payload: bytes) -> str:
    """One readable line for a message on the project's topic tree."""
    kind = topic.rsplit("/", 1)[-1]
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return f"{topic}: {payload.decode(errors='replace')}"
    if not isinstance(data, dict):
        return f"{topic}: {data}"
    when = str(data.get("time", ""))[11:19] or datetime.now().strftime("%H:%M:%S")
    device = data.get("device", topic.split("/")[-2] if "/" in topic else "?")
    if kind == EVENTS:
        line = (
            f"{when} {device} {data.get('type', '?'):<6} {data.get('face_id', '?'):<12} "
            f"{data.get('emotion', '?'):<9} {data.get('confidence', 0):.2f} box {data.get('box')}"
        )
        summary = data.get("summary")
        if summary:
            line += (
                f"  visit {summary['duration_s']:.1f} s, {summary['frames']} frames, "
                f"mostly {summary['dominant_emotion']}"
            )
        return line
    if kind == STATE:
        faces = ", ".join(
            f"{f['face_id']} {f['emotion']} {f['confidence']:.2f}" for f in data.get("faces", [])
        )
        return (
            f"{when} {device} state  {data.get('status', '?')}: {data.get('face_count', 0)} face(s) {faces}"
        )
    if kind == CAMERA:
        return f"{when} {device} camera {camera_text(data)}: {data.get('detail', '')}"
    if kind == STATS:
        return f"{when} {device} stats  " + " ".join(
            f"{k}={_stats_value(k, v)}" for k, v in data.items() if k not in ("v", "device", "time")
        )
    return f"{when} {topic}: {payload.decode(errors='replace')}"


def camera_text(camera: dict) -> str:
    """``online``, or ``offline (cause)``: the camera as the camera topic and the stats say it."""
    status = camera.get("status", "?")
    return f"{status} ({camera['cause']})" if camera.get("cause") else str(status)


def _stats_value(key: str, value: object) -> str:
    if key == "camera" and isinstance(value, dict):
        return camera_text(value).replace(" ", "")  # one token: offline(not_found)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def camera_repeat(topic: str, payload: bytes, shown: dict[str, tuple]) -> bool:
    """Whether a camera message says what the last one on its topic said. The daemon
    publishes its camera again on every (re)connection, right after the change itself: the
    same status, cause, detail and since, shown once. ``shown`` remembers per topic."""
    if topic.rsplit("/", 1)[-1] != CAMERA:
        return False
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return False
    if not isinstance(data, dict):
        return False
    said = tuple(data.get(k) for k in ("status", "cause", "detail", "since"))
    repeat = shown.get(topic) == said
    shown[topic] = said
    return repeat


def watch(
    config: Config,
    all_devices: bool = False,
    raw: bool = False,
    duration: float = 0,
    out=sys.stdout,
    connect_timeout: float = 10.0,
) -> int:
    """Prints what the kiosk (or every kiosk) publishes. Connects as the daemon does (its
    credentials and TLS); 1 with one clear line when the broker cannot be reached or
    refuses, 78 when a credentials or TLS file cannot be used."""
    from edge.mqtt.subscriber import SubscriberError, connect_subscriber

    topic = f"{config.mqtt.topic_prefix}/+/#" if all_devices else f"{config.base_topic}/#"
    where = f"{config.mqtt.host}:{config.mqtt.port}"
    done = threading.Event()
    outcome: dict[str, str] = {}

    camera_shown: dict[str, tuple] = {}

    def on_message(topic_name: str, payload: bytes, retained: bool) -> None:
        if not raw and camera_repeat(topic_name, payload, camera_shown):
            return
        line = payload.decode(errors="replace") if raw else format_message(topic_name, payload)
        print(f"{topic_name} {line}" if raw else line, file=out, flush=True)

    def on_status(connected: bool, text: str) -> None:
        if connected and "connected" not in outcome:
            outcome["connected"] = text
            print(f"watching {topic} on {where} (Ctrl-C to stop)", file=sys.stderr)
        elif text.startswith("refused"):
            outcome["refused"] = text
            done.set()

    try:
        client = connect_subscriber(config.mqtt, [topic], on_message, "fer-kiosk-watch", on_status)
    except SubscriberError as err:
        print(err, file=sys.stderr)
        return err.exit_code
    client.loop_start()
    try:
        deadline = time.monotonic() + connect_timeout
        while "connected" not in outcome and not done.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        if "refused" in outcome:
            print(
                f"error: the MQTT broker {where} {outcome['refused']} "
                "(check mqtt.username / credentials_file)",
                file=sys.stderr,
            )
            return 1
        if "connected" not in outcome:
            print(
                f"error: the MQTT broker {where} did not answer within {connect_timeout:g} s "
                f"(is it an MQTT port{'' if config.mqtt.tls.enabled else ', or does it expect TLS'}?)",
                file=sys.stderr,
            )
            return 1
        remaining = duration - (time.monotonic() - (deadline - connect_timeout)) if duration > 0 else None
        done.wait(max(0.0, remaining) if remaining is not None else None)
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    return 0
