"""The one MQTT client of the daemon (paho-mqtt 2.x): a thin shell around pure messages.

It reports connected only when the broker accepted the connection (CONNACK success), and
reconnects with backoff by itself. While the broker is away, messages the caller marks as
``keep`` wait in order in the spool (visit summaries); the rest are dropped and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable, Iterable

import paho.mqtt.client as mqtt

from edge.config import MqttConfig
from edge.payloads import Message

_LOGGER = logging.getLogger(__name__)


class MemorySpool:
    """In-order, bounded store of messages waiting for the broker."""

    def __init__(self, limit: int = 10_000):
        self._items: deque[Message] = deque()
        self.limit = limit
        self.dropped = 0

    def append(self, message: Message) -> None:
        if len(self._items) >= self.limit:
            self._items.popleft()
            self.dropped += 1
        self._items.append(message)

    def peek(self) -> Message | None:
        return self._items[0] if self._items else None

    def pop(self) -> None:
        self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)


class MqttPublisher:
    def __init__(
        self,
        config: MqttConfig,
        client_id: str,
        will: Message | None = None,
        on_connected: Callable[[], Iterable[Message]] | None = None,
        spool: MemorySpool | None = None,
    ):
        self.config = config
        self._on_connected = on_connected
        self.spool = spool if spool is not None else MemorySpool()
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.published = 0
        self.dropped = 0
        self.connects = 0
        self._last_error: str | None = None
        self._in_flight: list[mqtt.MQTTMessageInfo] = []
        self._stopping = False
        self._client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=int(config.reconnect_max_seconds))
        self._client.max_inflight_messages_set(100)
        if will is not None:
            self._client.will_set(will.topic, will.payload, will.qos, will.retain)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def start(self) -> None:
        _LOGGER.info("connecting to MQTT broker %s:%d", self.config.host, self.config.port)
        self._client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive)
        self._client.loop_start()

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._connected.clear()
            message = f"MQTT broker {self.config.host}:{self.config.port} refused the connection: {reason_code}"
            if message != self._last_error:
                _LOGGER.error("%s; retrying with backoff", message)
                self._last_error = message
            return
        self.connects += 1
        self._last_error = None
        _LOGGER.info("connected to MQTT broker %s:%d", self.config.host, self.config.port)
        self._connected.set()
        for message in self._on_connected() if self._on_connected else ():
            self._send(message)
        self.flush()

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._stopping:
            _LOGGER.warning("lost the MQTT broker (%s); reconnecting with backoff", reason_code)

    def _send(self, message: Message) -> bool:
        info = self._client.publish(message.topic, message.payload, message.qos, message.retain)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self.published += 1
            self._in_flight = [i for i in self._in_flight if not i.is_published()]
            if message.qos > 0:
                self._in_flight.append(info)
            return True
        return False

    def publish(self, message: Message, keep: bool = False) -> bool:
        """Sends now if connected; otherwise spools it (``keep``) or drops and counts it."""
        with self._lock:
            if self._connected.is_set() and len(self.spool) == 0 and self._send(message):
                return True
            if keep:
                self.spool.append(message)
            else:
                self.dropped += 1
            return False

    def flush(self) -> None:
        """Sends spooled messages in order while the broker is there."""
        with self._lock:
            while self._connected.is_set():
                message = self.spool.peek()
                if message is None or not self._send(message):
                    break
                self.spool.pop()

    def stop(self, timeout: float = 2.0) -> None:
        """Waits (up to ``timeout`` s) for messages in flight to be acknowledged, then disconnects."""
        deadline = time.monotonic() + timeout
        with self._lock:
            pending = list(self._in_flight)
        for info in pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._connected.is_set():
                break
            try:
                info.wait_for_publish(remaining)
            except (RuntimeError, ValueError):
                break
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
