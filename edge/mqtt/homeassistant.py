"""Home Assistant MQTT discovery: retained config messages, built by pure functions.

As Home Assistant expects them today (2026): ``default_entity_id`` (``domain.slug``, the
entity id Home Assistant creates) instead of the retired ``object_id``, an ``origin`` block
naming the software that publishes, and one device per kiosk. Entities read the retained
state, camera and stats topics and the events topic; availability follows the daemon's
availability topic, and a kiosk behind a bridge whose bridge is down is unavailable too
(``availability_list``). Re-published whenever Home Assistant announces ``online`` on
``<discovery_prefix>/status``; ``fer-kiosk unregister`` clears them (``removal_messages``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from edge.mqtt.payloads import OFFLINE, ONLINE, Message, Topics

SUPPORT_URL = "https://github.com/fer-kiosk/fer-kiosk"

# The visit's end as a Home Assistant event: rendered only for `end` events (an empty
# rendering is ignored by Home Assistant's MQTT event platform).
VISIT_EVENT_TEMPLATE = (
    "{% if value_json.type == 'end' %}"
    '{"event_type": "visit_ended", "face_id": "{{ value_json.face_id }}", '
    '"dominant_emotion": "{{ value_json.summary.dominant_emotion }}", '
    '"duration_s": {{ value_json.summary.duration_s }}, "ended_by": "{{ value_json.summary.ended_by }}"}'
    "{% endif %}"
)


# What a bridge's notification ("1" up, "0" down: deploy/mosquitto/bridge.conf) means to Home
# Assistant: "0" makes the kiosk unavailable, "1" is ignored (neither payload below). The
# kiosk comes back with its own availability, which the box's broker sends again on every
# bridge connection (it is retained), so a bridge that is up never hides a stopped daemon.
BRIDGE_AVAILABILITY_TEMPLATE = "{{ 'offline' if value == '0' else 'bridge up' }}"


def availability_list(topics: Topics) -> list[dict[str, str]]:
    """Home Assistant's availability (mode ``latest``: the last message that says online or
    offline decides): the daemon's own topic, and the bridge's, which can only say offline.
    A kiosk without a bridge never publishes the second: the first alone decides."""
    return [
        {"topic": topics.availability, "payload_available": ONLINE, "payload_not_available": OFFLINE},
        {
            "topic": topics.bridge,
            "value_template": BRIDGE_AVAILABILITY_TEMPLATE,
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
        },
    ]


def node_id(device_id: str) -> str:
    return f"fer-kiosk_{device_id}"


def entity_slug(device_id: str, key: str) -> str:
    """The object part of the entity id Home Assistant creates: lower case, ``_`` only."""
    return f"fer_kiosk_{device_id}_{key}".lower().replace("-", "_")


def entities(topics: Topics, labels: Sequence[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(component, key, fields) of every entity of one kiosk."""
    found: list[tuple[str, str, dict[str, Any]]] = [
        (
            "sensor",
            "emotion",
            {
                "name": "Dominant emotion",
                "state_topic": topics.state,
                "value_template": "{{ value_json.dominant_emotion }}",
                "device_class": "enum",
                "options": ["none", *labels],
                "icon": "mdi:emoticon-outline",
            },
        ),
        (
            "sensor",
            "faces",
            {
                "name": "Faces present",
                "state_topic": topics.state,
                "value_template": "{{ value_json.face_count }}",
                "state_class": "measurement",
                "icon": "mdi:account-multiple",
            },
        ),
        (
            "binary_sensor",
            "occupancy",
            {
                "name": "Someone at the counter",
                "state_topic": topics.state,
                "value_template": "{{ 'ON' if value_json.face_count > 0 else 'OFF' }}",
                "device_class": "occupancy",
            },
        ),
        (
            "binary_sensor",
            "alert",
            {
                "name": "Customer alert",
                "state_topic": topics.state,
                # on while the state lists an open alert (rules.alerts): someone looked upset a while
                "value_template": "{{ 'ON' if value_json.alerts | default([]) | length > 0 else 'OFF' }}",
                "device_class": "problem",
                "icon": "mdi:account-alert",
            },
        ),
        (
            "event",
            "visit",
            {
                "name": "Visit",
                "state_topic": topics.events,
                "value_template": VISIT_EVENT_TEMPLATE,
                "event_types": ["visit_ended"],
                "icon": "mdi:account-arrow-right",
            },
        ),
        (
            "binary_sensor",
            "camera",
            {
                "name": "Camera",
                "state_topic": topics.camera,
                "entity_category": "diagnostic",
                "value_template": "{{ 'ON' if value_json.status == 'online' else 'OFF' }}",
                "device_class": "connectivity",
                "json_attributes_topic": topics.camera,
                "json_attributes_template": "{{ {'cause': value_json.cause, "
                "'detail': value_json.detail} | tojson }}",
            },
        ),
        (
            "sensor",
            "fps",
            {
                "name": "Frames per second",
                "state_topic": topics.stats,
                "entity_category": "diagnostic",
                "value_template": "{{ value_json.fps }}",
                "unit_of_measurement": "fps",
                "state_class": "measurement",
                "icon": "mdi:speedometer",
            },
        ),
        (
            "sensor",
            "spool",
            {
                "name": "Visits waiting for the broker",
                "state_topic": topics.stats,
                "entity_category": "diagnostic",
                "value_template": "{{ value_json.queued }}",
                "state_class": "measurement",
                "icon": "mdi:tray-full",
            },
        ),
    ]
    for label in labels:
        found.append(
            (
                "sensor",
                f"level_{label}",
                {
                    "name": f"{label.capitalize()} level",
                    "state_topic": topics.state,
                    "value_template": f"{{{{ (value_json.levels.{label} * 100) | round(1) }}}}",
                    "unit_of_measurement": "%",
                    "state_class": "measurement",
                    "icon": "mdi:chart-bell-curve",
                },
            )
        )
    return found


def discovery_topic(discovery_prefix: str, component: str, device_id: str, key: str) -> str:
    return f"{discovery_prefix}/{component}/{node_id(device_id)}/{key}/config"


def discovery_messages(
    discovery_prefix: str, device_id: str, topics: Topics, labels: Sequence[str], sw_version: str, model: str
) -> list[Message]:
    node = node_id(device_id)
    device = {
        "identifiers": [node],
        "name": f"Emotion kiosk {device_id}",
        "model": model,
        "manufacturer": "fer-kiosk",
        "sw_version": sw_version,
    }
    origin = {"name": "fer-kiosk", "sw_version": sw_version, "support_url": SUPPORT_URL}
    common = {
        "availability": availability_list(topics),
        "availability_mode": "latest",
        "device": device,
        "origin": origin,
    }
    messages = []
    for component, key, fields in entities(topics, labels):
        config = {
            **fields,
            **common,
            "unique_id": f"{node}_{key}",
            "default_entity_id": f"{component}.{entity_slug(device_id, key)}",
        }
        messages.append(
            Message(
                discovery_topic(discovery_prefix, component, device_id, key),
                json.dumps(config, separators=(",", ":")).encode(),
                1,
                retain=True,
            )
        )
    return messages


def removal_messages(
    discovery_prefix: str, device_id: str, topics: Topics, labels: Sequence[str]
) -> list[Message]:
    """Empty retained messages that remove the kiosk from Home Assistant and from the broker:
    every discovery config, then the retained state, camera and availability, and a bridge's
    state (only where the kiosk's bridge no longer runs: a running bridge publishes it again)."""
    messages = [
        Message(discovery_topic(discovery_prefix, component, device_id, key), b"", 1, retain=True)
        for component, key, _ in entities(topics, labels)
    ]
    return messages + [
        Message(topic, b"", 1, retain=True)
        for topic in (topics.state, topics.camera, topics.availability, topics.bridge)
    ]
