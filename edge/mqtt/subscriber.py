"""A read-only MQTT client for the tools that watch the kiosks (``fer-kiosk watch``, the
dashboard): the same broker settings, credentials and TLS as the daemon, reconnecting by
itself, and one clear line when the broker refuses it."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence

import paho.mqtt.client as mqtt

from edge.config import EX_CONFIG, MqttConfig
from edge.mqtt.client import log_in, reconnect_delays

_LOGGER = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes, bool], None]  # topic, payload, retained


def make_subscriber(
    config: MqttConfig,
    topics: Sequence[str],
    on_message: MessageHandler,
    client_name: str,
    on_status: Callable[[bool, str], None] | None = None,
) -> mqtt.Client:
    """A paho client (not yet connected) that subscribes to ``topics`` at QoS 1 after every
    connect and hands each message to ``on_message``. Credentials and TLS come from the
    ``mqtt`` section as for the daemon; a bad file raises CredentialsError."""
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"{client_name}-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    log_in(client, config)
    client.reconnect_delay_set(*reconnect_delays(config))
    where = f"{config.host}:{config.port}"

    def handle_connect(client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            _LOGGER.error("MQTT broker %s refused %s: %s", where, client_name, reason_code)
            if on_status:
                on_status(False, f"refused: {reason_code}")
            return
        for topic in topics:
            client.subscribe(topic, qos=1)
        _LOGGER.info("%s subscribed to %s on %s", client_name, ", ".join(topics), where)
        if on_status:
            on_status(True, "connected")

    def handle_disconnect(client, userdata, flags, reason_code, properties) -> None:
        if on_status:
            on_status(False, "disconnected" if not reason_code.is_failure else f"lost: {reason_code}")

    def handle_message(client, userdata, message) -> None:
        try:
            on_message(message.topic, message.payload, bool(message.retain))
        except Exception:  # noqa: BLE001 - one bad message never stops the subscriber
            _LOGGER.exception("message on %s could not be handled", message.topic)

    client.on_connect = handle_connect
    client.on_disconnect = handle_disconnect
    client.on_message = handle_message
    return client


class SubscriberError(Exception):
    """A tool could not connect: ``str()`` is the one line to print, ``exit_code`` the status
    (EX_CONFIG: a credentials or TLS file it cannot use; 1: the broker cannot be reached)."""

    def __init__(self, line: str, exit_code: int):
        super().__init__(line)
        self.exit_code = exit_code


def connect_subscriber(
    config: MqttConfig,
    topics: Sequence[str],
    on_message: MessageHandler,
    client_name: str,
    on_status: Callable[[bool, str], None] | None = None,
) -> mqtt.Client:
    """``make_subscriber``, connected (not yet looping); raises SubscriberError naming why not."""
    from edge.mqtt.client import CredentialsError
    from edge.mqtt.transport import describe_connect_error

    try:
        client = make_subscriber(config, topics, on_message, client_name, on_status)
    except CredentialsError as err:
        raise SubscriberError(f"error: {err}", EX_CONFIG) from None
    try:
        client.connect(config.host, config.port, keepalive=config.keepalive)
    except (OSError, ValueError) as err:  # refused, unknown host, TLS handshake failure
        where = f"{config.host}:{config.port}"
        raise SubscriberError(
            f"error: cannot reach the MQTT broker {where}: {describe_connect_error(err)}", 1
        ) from None
    return client
