"""``fer-kiosk watch``: the live events and device state, for the administrator at the kiosk."""

from __future__ import annotations

import json
import sys
import threading
import uuid
from datetime import datetime

import paho.mqtt.client as mqtt

from edge.config import Config


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
    if kind == "events":
        line = (f"{when} {device} {data.get('type', '?'):<6} {data.get('face_id', '?'):<12} "
                f"{data.get('emotion', '?'):<9} {data.get('confidence', 0):.2f} box {data.get('box')}")
        summary = data.get("summary")
        if summary:
            line += (f"  visit {summary['duration_s']:.1f} s, {summary['frames']} frames, "
                     f"mostly {summary['dominant_emotion']}")
        return line
    if kind == "state":
        faces = ", ".join(f"{f['face_id']} {f['emotion']} {f['confidence']:.2f}" for f in data.get("faces", []))
        return f"{when} {device} state  {data.get('status', '?')}: {data.get('face_count', 0)} face(s) {faces}"
    if kind == "stats":
        return f"{when} {device} stats  " + " ".join(f"{k}={v}" for k, v in data.items() if k not in ("v", "device", "time"))
    return f"{when} {topic}: {payload.decode(errors='replace')}"


def watch(config: Config, all_devices: bool = False, raw: bool = False, duration: float = 0, out=sys.stdout) -> int:
    topic = f"{config.mqtt.topic_prefix}/+/#" if all_devices else f"{config.base_topic}/#"
    done = threading.Event()
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"fer-kiosk-watch-{uuid.uuid4().hex[:6]}")

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            print(f"broker {config.mqtt.host}:{config.mqtt.port} refused: {reason_code}", file=sys.stderr)
            return
        client.subscribe(topic, qos=1)
        print(f"watching {topic} on {config.mqtt.host}:{config.mqtt.port} (Ctrl-C to stop)", file=sys.stderr)

    def on_message(client, userdata, message):
        line = message.payload.decode(errors="replace") if raw else format_message(message.topic, message.payload)
        print(f"{message.topic} {line}" if raw else line, file=out, flush=True)

    client.on_connect, client.on_message = on_connect, on_message
    client.connect_async(config.mqtt.host, config.mqtt.port, keepalive=config.mqtt.keepalive)
    client.loop_start()
    try:
        done.wait(duration if duration > 0 else None)
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    return 0
