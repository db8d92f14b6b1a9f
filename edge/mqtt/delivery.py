"""The daemon's publisher: delivery over a transport (edge.mqtt.transport: connect, TLS,
reconnect, failures named). What must arrive, arrives; what may be lost, is counted.

- Connected means the broker *accepted* the connection (CONNACK success); only then is
  ``online`` published on the retained availability topic. ``offline`` is the last will,
  and what a clean stop publishes.
- Messages marked ``keep`` (visit summaries) go through the on-disk spool first and leave
  it only when the broker acknowledged them (PUBACK): at least once, in order, across
  outages and restarts. After every new connection whatever was in flight is sent again.
  The caller's thread (the frame loop) only hands them over: the sender writes them to
  disk (two fsyncs each), so a frame never waits on the disk.
- Other messages are sent if the broker is there, else dropped and counted.
- After every accepted connection, ``online`` on the availability topic and the
  ``on_connected`` messages (discovery, current state) are published, from the sender
  thread, never from paho's network thread.

Three threads touch it: the caller's (publish), the transport's network thread (the
connected and acknowledged notices, which only flip flags and record acknowledgements),
and the sender (spool flushing, the hello after each connect). No lock of ours is held
while calling into the transport.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import paho.mqtt.client as mqtt

from edge.mqtt.payloads import OFFLINE, ONLINE, Message
from edge.mqtt.spool import DiskSpool
from edge.mqtt.transport import Transport

_LOGGER = logging.getLogger(__name__)


class Delivery:
    """The publisher the daemon's loop and service use; it starts and stops its transport,
    whose own state (``connected``, ``reconnects``, ``subscribe``) is read from it directly."""

    def __init__(
        self,
        transport: Transport,
        spool: DiskSpool,
        availability_topic: str,
        on_connected: Callable[[], Iterable[Message]] | None = None,
    ):
        self.transport = transport
        self.spool = spool
        self.availability_topic = availability_topic
        self._on_connected = on_connected
        self._lock = threading.Lock()  # guards the bookkeeping below
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._hello_due = False
        self.dropped = 0
        self._in_flight: list[mqtt.MQTTMessageInfo] = []
        self._spool_in_flight: dict[int, str] = {}  # mid -> spool file
        self._acked_early: set[int] = set()  # PUBACKs that beat the bookkeeping of their send
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        transport.on_connected = self._handle_connected
        transport.on_acknowledged = self._handle_acknowledged

    def start(self) -> None:
        self.transport.start()
        self._sender.start()

    # -- notices from the transport (network thread) ----------------------------------

    def _handle_connected(self) -> None:
        with self._lock:
            self._spool_in_flight.clear()  # whatever was in flight is sent again: at least once
            self._acked_early.clear()
            self._hello_due = True
        self._wake.set()

    def _handle_acknowledged(self, mid: int) -> None:
        with self._lock:
            name = self._spool_in_flight.pop(mid, None)
            if name is None:
                self._acked_early.add(mid)
        if name is not None:
            self.spool.remove(name)

    # -- sending -------------------------------------------------------------------------

    def _send(self, message: Message) -> mqtt.MQTTMessageInfo | None:
        info = self.transport.publish(message.topic, message.payload, message.qos, message.retain)
        if info is not None and message.qos > 0:
            with self._lock:
                self._in_flight = [i for i in self._in_flight if not i.is_published()]
                self._in_flight.append(info)
        return info

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self.spool.save()  # summaries handed over by publish(keep=True), broker or not
            except Exception:  # noqa: BLE001 - kept in memory and retried: the sender goes on
                _LOGGER.exception("writing visit summaries to the spool failed")
            if not self.transport.connected:
                continue
            with self._lock:
                hello, self._hello_due = self._hello_due, False
            if hello:
                # only now, after the broker accepted us: online, discovery, current state
                self._send(Message(self.availability_topic, ONLINE.encode(), 1, True))
                try:
                    for message in self._on_connected() if self._on_connected else ():
                        self._send(message)
                except Exception:  # noqa: BLE001 - a failing hello must not stop the summaries
                    _LOGGER.exception("building the messages sent after connecting failed")
            try:
                self._flush()
            except Exception as err:  # noqa: BLE001 - the sender must outlive any one bad spool entry
                _LOGGER.error(
                    "sending spooled summaries failed (%s: %s); trying again", type(err).__name__, err
                )
                self._stop.wait(1.0)

    def _flush(self) -> None:
        """Sends spooled messages, oldest first, that are not already waiting for their PUBACK."""
        if not self.transport.connected or not len(self.spool):
            return
        with self._lock:
            waiting = set(self._spool_in_flight.values())
        for name, message in self.spool.pending(skip=waiting):
            if not self.transport.connected:
                return
            info = self._send(Message(message.topic, message.payload, max(message.qos, 1), message.retain))
            if info is None:
                return
            with self._lock:
                acked = info.mid in self._acked_early
                self._acked_early.discard(info.mid)
                if not acked:
                    self._spool_in_flight[info.mid] = name
            if acked:
                self.spool.remove(name)

    def publish(self, message: Message, keep: bool = False) -> bool:
        """Sends now if connected. ``keep``: goes through the on-disk spool first, so it
        survives a broker outage and a restart; otherwise dropped (and counted) when offline."""
        if keep:
            self.spool.append(message, write=False)  # the sender writes it to disk
            self._wake.set()
            return self.transport.connected
        if self.transport.connected and self._send(message) is not None:
            return True
        with self._lock:
            self.dropped += 1
        return False

    def stop(self, timeout: float = 2.5) -> None:
        """Delivers what is spooled (while the broker is there), publishes ``offline``, waits
        for the broker's acknowledgements (up to ``timeout`` s in all), then disconnects."""
        deadline = time.monotonic() + timeout
        self.spool.save()  # what was handed over last (the visits ended by the stop) is on disk first
        self._wake.set()
        while self.transport.connected and len(self.spool) and time.monotonic() < deadline - 0.5:
            time.sleep(0.02)
        if self.transport.connected:
            self._send(Message(self.availability_topic, OFFLINE.encode(), 1, True))
        with self._lock:
            pending = list(self._in_flight)
        for info in pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.transport.connected:
                break
            try:
                info.wait_for_publish(remaining)
            except (RuntimeError, ValueError):
                break
        self._stop.set()
        self._wake.set()
        if self._sender.is_alive():
            self._sender.join(1.0)
        self.transport.stop()
