"""The dashboard's MQTT subscription: a persistent session, so no visit summary is missed.

Unlike ``fer-kiosk watch`` (a clean session: it shows what happens while it runs), the
dashboard counts visits, so it connects with a stable client id and ``clean_session``
off: while it is away (restarting, or reconnecting after the broker restarted) the broker
keeps its subscriptions and queues the QoS 1 messages for it. Only the events topic is
subscribed at QoS 1; state, stats and the rest at QoS 0, which a broker does not queue, so
a dashboard back after an hour is not flooded with states that are no longer true.

The broker must keep sessions across its own restarts for this to hold there too
(Mosquitto: ``persistence true``, Debian's default).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import paho.mqtt.client as mqtt

from edge.config import MqttConfig
from edge.mqtt.client import log_in, reconnect_delays
from edge.mqtt.transport import CLASH_BACKOFF_SECONDS, SHORT_CONNECTION_SECONDS, TAKEOVERS_BEFORE_NAMING

_LOGGER = logging.getLogger(__name__)


class Subscription:
    """One paho client on its own thread. ``on_message(topic, payload, retained)`` runs on
    paho's thread, before the message is acknowledged (a QoS 1 message whose handler did not
    finish is delivered again); ``on_status(connected, text)`` on every change."""

    def __init__(
        self,
        config: MqttConfig,
        client_id: str,
        topics: Sequence[tuple[str, int]],
        on_message: Callable[[str, bytes, bool], None],
        on_status: Callable[[bool, str], None],
    ):
        self.config = config
        self.client_id = client_id
        self.topics = list(topics)
        self._on_message = on_message
        self._on_status = on_status
        self._accepted_at = 0.0
        self._short = 0
        self._clash = False
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        log_in(self.client, config)  # CredentialsError names a bad file
        self.client.max_inflight_messages_set(100)
        self._normal_delays()
        self.client.on_connect = self._handle_connect
        self.client.on_disconnect = self._handle_disconnect
        self.client.on_connect_fail = self._handle_connect_fail
        self.client.on_message = self._handle_message
        self.where = f"{config.host}:{config.port}"

    def _normal_delays(self) -> None:
        self.client.reconnect_delay_set(*reconnect_delays(self.config))

    def start(self) -> None:
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive)
        self.client.loop_start()

    def stop(self) -> None:
        """A clean DISCONNECT: the broker keeps the session and queues for it until we are back."""
        self.client.disconnect()
        self.client.loop_stop()

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            _LOGGER.error("MQTT broker %s refused the dashboard: %s", self.where, reason_code)
            self._on_status(False, f"refused: {reason_code}")
            return
        self._accepted_at = time.monotonic()
        # Subscribing again also when the session was kept: the broker then sends the
        # retained states again, which is how tiles are filled after a reconnect.
        client.subscribe(self.topics)
        _LOGGER.info(
            "dashboard subscribed as %s on %s (%s session)",
            self.client_id,
            self.where,
            "kept" if flags.session_present else "new",
        )
        self._on_status(True, "connected")

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        lasted = time.monotonic() - self._accepted_at if self._accepted_at else None
        self._accepted_at = 0.0
        if not reason_code.is_failure:
            self._on_status(False, "disconnected")
            return
        if lasted is not None and lasted < SHORT_CONNECTION_SECONDS:
            self._short += 1
        elif lasted is not None:
            self._short = 0
            if self._clash:
                self._clash = False
                self._normal_delays()
        if self._short >= TAKEOVERS_BEFORE_NAMING:
            if not self._clash:
                self._clash = True
                _LOGGER.error(
                    "MQTT broker %s closed %d connections in a row within seconds of accepting them: "
                    "another client is most likely connected with the dashboard's client id %r and takes "
                    "its session over (two dashboards with the same mqtt.client_id or host name?); give "
                    "each dashboard its own mqtt.client_id. Backing off instead of fighting",
                    self.where,
                    self._short,
                    self.client_id,
                )
                self.client.reconnect_delay_set(int(CLASH_BACKOFF_SECONDS), int(CLASH_BACKOFF_SECONDS))
            self._on_status(False, f"another client uses the client id {self.client_id}")
            return
        self._on_status(False, "lost")

    def _handle_connect_fail(self, client, userdata) -> None:
        # The broker was not there: short connections before this were its restarts, not
        # another client taking our session (that happens while the broker accepts us).
        if not self._clash:
            self._short = 0

    def _handle_message(self, client, userdata, message) -> None:
        try:
            self._on_message(message.topic, message.payload, bool(message.retain))
        except Exception:  # noqa: BLE001 - one bad message never stops the subscriber
            _LOGGER.exception("message on %s could not be handled", message.topic)
