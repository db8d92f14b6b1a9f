"""Home Assistant MQTT discovery: retained config messages, built by pure functions.

Entities read the retained state topic; availability follows the daemon's availability
topic. Re-published whenever Home Assistant announces ``online`` on ``<prefix>/status``.
"""

from __future__ import annotations

import json
from typing import Sequence

from edge.payloads import Message, Topics


def node_id(device_id: str) -> str:
    return f"fer-kiosk_{device_id}"


def discovery_messages(discovery_prefix: str, device_id: str, topics: Topics, labels: Sequence[str],
                       sw_version: str, model: str) -> list[Message]:
    node = node_id(device_id)
    device = {
        "identifiers": [node],
        "name": f"Emotion kiosk {device_id}",
        "model": model,
        "manufacturer": "fer-kiosk",
        "sw_version": sw_version,
    }
    common = {
        "state_topic": topics.state,
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
    }
    entities = [
        ("sensor", "emotion", {
            "name": "Dominant emotion",
            "value_template": "{{ value_json.dominant_emotion }}",
            "device_class": "enum",
            "options": ["none", *labels],
            "icon": "mdi:emoticon-outline",
        }),
        ("sensor", "faces", {
            "name": "Faces present",
            "value_template": "{{ value_json.face_count }}",
            "state_class": "measurement",
            "icon": "mdi:account-multiple",
        }),
    ]
    entities.append(("binary_sensor", "alert", {
        "name": "Customer alert",
        # On while the state lists an open alert (rules.alerts): someone looked upset a while.
        "value_template": "{{ 'ON' if value_json.alerts | default([]) | length > 0 else 'OFF' }}",
        "device_class": "problem",
        "icon": "mdi:account-alert",
    }))
    for label in labels:
        entities.append(("sensor", f"level_{label}", {
            "name": f"{label.capitalize()} level",
            "value_template": f"{{{{ (value_json.levels.{label} * 100) | round(1) }}}}",
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "icon": "mdi:chart-bell-curve",
        }))
    messages = []
    for component, key, fields in entities:
        config = {**fields, **common, "unique_id": f"{node}_{key}", "object_id": f"{node}_{key}"}
        topic = f"{discovery_prefix}/{component}/{node}/{key}/config"
        messages.append(Message(topic, json.dumps(config, separators=(",", ":")).encode(), 1, retain=True))
    return messages
