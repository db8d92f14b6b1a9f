"""The MQTT connection (paho-mqtt 2.x): connect, TLS, reconnect with backoff, and a name
for every way it fails. It knows nothing of spools or acknowledgement bookkeeping: it
reports connections and PUBACKs to whoever listens (edge.mqtt.delivery).

- Connected means the broker *accepted* the connection (CONNACK success).
- Every failure is logged once, in one line that says what went wrong, then retried with
  exponential backoff: never a tight loop. Named failures: refused TCP, unknown host, TLS
  handshake (including a TLS client against a plain port), untrusted certificate, refused
  credentials, no CONNACK within ``mqtt.connect_timeout_seconds`` (with "is this a TLS
  port?" when the server answered with TLS or the port is 8883), a server that answers
  with something that is not MQTT, and a session taken over by another client with the
  same client id (which backs off instead of fighting).
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from edge.backoff import backoff_delays
from edge.config import RECONNECT_MIN_SECONDS, MqttConfig

_LOGGER = logging.getLogger(__name__)

TLS_PORT = 8883
# A connection the broker accepted and then closed within this many seconds is "short";
# several short ones in a row, while the broker keeps accepting us, is another client with
# our client id taking the session over each time we take it back.
SHORT_CONNECTION_SECONDS = 10.0
TAKEOVERS_BEFORE_NAMING = 3
RECONNECT_JITTER = 0.25  # each reconnect delay shortened by up to a quarter, at random
CLASH_BACKOFF_SECONDS = 60.0  # another client with our id: back off this far, not fight it


def describe_connect_error(err: BaseException, tls: bool = False, port: int = 0) -> str:
    """One line for an exception raised while connecting (TCP, then the TLS handshake)."""
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate is not trusted ({err.verify_message})"
    if tls and isinstance(err, (ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        reason = err.reason if isinstance(err, ssl.SSLError) and err.reason else (err.strerror or str(err))
        hint = ""
        if (
            isinstance(err, (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError))
            or "WRONG_VERSION_NUMBER" in str(reason).upper()
        ):
            hint = (
                " (the server closed the connection at the TLS hello: is this a plain, non-TLS MQTT port"
                f"{' such as 1883' if port != 1883 else ''}? or set mqtt.tls.enabled: false)"
            )
        return f"TLS handshake failed: {reason}{hint}"
    if tls and isinstance(err, TimeoutError) and "handshake" in str(err):
        return (
            "TLS handshake failed: no answer to the TLS hello within mqtt.connect_timeout_seconds "
            "(is this a TLS port? is it an MQTT broker?)"
        )
    if isinstance(err, ssl.SSLError):
        return f"TLS handshake failed ({err.reason or err})"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (is the broker running and listening on this port?)"
    if isinstance(err, socket.gaierror):
        return f"unknown host ({err})"
    if isinstance(err, TimeoutError):
        return "no answer to the TCP connection (host down or a firewall dropping it?)"
    return f"{err.__class__.__name__}: {err}"


def describe_first_bytes(data: bytes) -> str | None:
    """What a server's first bytes say when they are not a CONNACK; None when they may be one."""
    if not data or data[0] == 0x20:
        return None
    if len(data) >= 2 and data[0] in (0x15, 0x16) and data[1] == 0x03:
        what = "a TLS alert" if data[0] == 0x15 else "a TLS handshake"
        return (
            f"the server answered the MQTT CONNECT with {what}: is this a TLS port? "
            "set mqtt.tls.enabled: true"
        )
    shown = data[:16].decode("ascii", "backslashreplace")
    return (
        f"the server answered with something that is not MQTT ({shown!r}...): "
        "is mqtt.host/mqtt.port an MQTT broker?"
    )


class Transport:
    """One paho client on its own thread. Listeners (set before ``start``):

    - ``on_connected()``: after every accepted connection (on the network thread);
    - ``on_acknowledged(mid)``: the broker acknowledged a QoS >= 1 publish (PUBACK);
    - ``subscribe(topic, callback)``: ``callback(payload)`` for messages on ``topic``,
      subscribed again after every connect.

    Listeners must be quick: paho holds its callback lock while calling them.
    """

    def __init__(
        self,
        config: MqttConfig,
        client_id: str,
        will: tuple[str, bytes] | None = None,
        tls_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
    ):
        self.config = config
        self.client_id = client_id
        self.connect_timeout = config.connect_timeout_seconds
        self.on_connected: Callable[[], None] | None = None
        self.on_acknowledged: Callable[[int], None] | None = None
        self._subscriptions: dict[str, Callable[[bytes], None]] = {}
        self._connected = threading.Event()
        self._stop = threading.Event()
        self.connects = 0
        self._last_failure: str | None = None
        self._refused: str | None = None
        self._first_bytes: bytes | None = None
        self._accepted_at = 0.0
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
            reconnect_on_failure=False,  # our own loop reconnects, with backoff and clear logs
        )
        self._client.connect_timeout = self.connect_timeout  # TCP connect and TLS handshake
        self._client.max_inflight_messages_set(100)
        if will is not None:
            self._client.will_set(will[0], will[1], qos=1, retain=True)
        if username is not None or password is not None:
            self._client.username_pw_set(username, password)
        self.tls = tls_context is not None
        if tls_context is not None:
            self._client.tls_set_context(tls_context)
            self._client.tls_insecure_set(not tls_context.check_hostname)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_publish = self._handle_publish
        self._client.on_message = self._handle_message

    # -- what others see -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)

    @property
    def where(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.config.host}:{self.config.port}"

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def subscribe(self, topic: str, callback: Callable[[bytes], None]) -> None:
        self._subscriptions[topic] = callback

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> mqtt.MQTTMessageInfo | None:
        """Hands a message to paho; None when it could not take it (not connected)."""
        info = self._client.publish(topic, payload, qos, retain)
        return info if info.rc == mqtt.MQTT_ERR_SUCCESS else None

    def start(self) -> None:
        _LOGGER.info("connecting to %s", self.where)
        self._thread.start()

    def stop(self) -> None:
        """Disconnects (a clean DISCONNECT: the broker does not send the last will)."""
        self._stop.set()
        self._client.disconnect()
        if self._thread.is_alive():
            self._thread.join(2.0)

    # -- the connection loop ---------------------------------------------------------

    def _log_failure(self, what: str, delay: float) -> None:
        if what != self._last_failure:
            _LOGGER.error(
                "MQTT broker %s:%d: %s; retrying with backoff (next in %.0f s, at most every %.0f s)",
                self.config.host,
                self.config.port,
                what,
                delay,
                self.config.reconnect_max_seconds,
            )
            self._last_failure = what

    def _delays(self):
        # A low cap with jitter: the retained availability, state and discovery are back within
        # a few seconds of the broker, and a fleet does not reconnect in lockstep.
        return backoff_delays(
            RECONNECT_MIN_SECONDS, self.config.reconnect_max_seconds, jitter=RECONNECT_JITTER
        )

    def _run(self) -> None:
        delays = self._delays()
        clash_delays = backoff_delays(
            self.config.reconnect_max_seconds, CLASH_BACKOFF_SECONDS, jitter=RECONNECT_JITTER
        )
        short_connections = 0
        clash = False
        while not self._stop.is_set():
            self._refused, self._first_bytes = None, None
            try:
                self._client.connect(self.config.host, self.config.port, keepalive=self.config.keepalive)
            except (OSError, ValueError) as err:  # ssl.SSLError and socket.gaierror are OSErrors
                short_connections = short_connections if clash else 0
                delay = next(delays)
                self._log_failure(describe_connect_error(err, self.tls, self.config.port), delay)
                self._stop.wait(delay)
                continue
            connects_before = self.connects
            failure = self._serve()  # returns when the connection ends
            lasted = time.monotonic() - self._accepted_at if self.connects > connects_before else 0.0
            self._connected.clear()
            if self._stop.is_set():
                break
            if self.connects == connects_before:  # never accepted
                short_connections = short_connections if clash else 0
                delay = next(delays)
                self._log_failure(failure, delay)
                self._stop.wait(delay)
                continue
            stable_after = (
                max(SHORT_CONNECTION_SECONDS, 2 * CLASH_BACKOFF_SECONDS)
                if clash
                else SHORT_CONNECTION_SECONDS
            )
            if lasted >= stable_after:
                short_connections, clash = 0, False
                clash_delays = backoff_delays(
                    self.config.reconnect_max_seconds, CLASH_BACKOFF_SECONDS, jitter=RECONNECT_JITTER
                )
                delays = self._delays()  # it worked: start over
                _LOGGER.warning("lost the MQTT broker (%s); reconnecting with backoff", failure)
                self._stop.wait(next(delays))
                continue
            short_connections += 1
            if short_connections >= TAKEOVERS_BEFORE_NAMING:
                delay = next(clash_delays)  # no fresh start: back off, longer and longer, instead of fighting
                if not clash:
                    clash = True
                    _LOGGER.error(
                        "MQTT broker %s:%d closed %d connections in a row within seconds of accepting them: "
                        "another client is most likely connected with the same client id %r and takes the "
                        "session over "
                        "(mqtt.client_id, by default fer-kiosk-<mqtt.device_id>: two kiosks with the same "
                        "mqtt.device_id, a cloned SD card?); give each kiosk its own mqtt.device_id. "
                        "Backing off (next in %.0f s, at most every %.0f s) instead of fighting",
                        self.config.host,
                        self.config.port,
                        short_connections,
                        self.client_id,
                        delay,
                        CLASH_BACKOFF_SECONDS,
                    )
                self._stop.wait(delay)
            else:
                _LOGGER.warning("lost the MQTT broker (%s); reconnecting with backoff", failure)
                self._stop.wait(next(delays))

    def _serve(self) -> str:
        """Runs the network loop until the connection ends; what ended it, in words."""
        started = time.monotonic()
        stop_seen: float | None = None
        while True:
            waiting = not self._connected.is_set() and self._refused is None and not self._stop.is_set()
            if self._stop.is_set():
                stop_seen = stop_seen or time.monotonic()
                if time.monotonic() - stop_seen > 1.0:  # DISCONNECT could not be written: give up
                    return "stopped"
            elif waiting and time.monotonic() - started >= self.connect_timeout:
                return self._give_up(
                    self._no_connack(
                        f"no answer to the MQTT CONNECT within "
                        f"{self.connect_timeout:g} s (mqtt.connect_timeout_seconds)"
                    )
                )
            if waiting and not self.tls and self._first_bytes is None:
                # Wait for the server's first bytes here and look at them before paho reads them.
                self._wait_readable(0.25)
                verdict = self._peek_first_bytes()
                if verdict is not None:
                    return self._give_up(verdict)
                rc = self._client.loop(0.0)
            else:
                rc = self._client.loop(0.25)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                if self._refused is not None:
                    return self._refused
                if self._accepted_at >= started:  # an accepted connection ended
                    return mqtt.error_string(rc)
                if rc == mqtt.MQTT_ERR_KEEPALIVE:
                    return self._no_connack(
                        f"no answer to the MQTT CONNECT within "
                        f"{time.monotonic() - started:.0f} s (mqtt.keepalive)"
                    )
                return describe_first_bytes(self._first_bytes or b"") or self._no_connack(
                    "the server closed the connection without answering the MQTT CONNECT", closed=True
                )

    def _no_connack(self, what: str, closed: bool = False) -> str:
        if self.tls:
            return f"{what} (the TLS handshake succeeded: is it an MQTT broker behind a TLS proxy?)"
        if self.config.port == TLS_PORT:
            return f"{what}: is this a TLS port? {TLS_PORT} usually is; set mqtt.tls.enabled: true"
        if closed:  # an MQTT broker answers a CONNECT, even to refuse it; a TLS listener hangs up
            return (
                f"{what}: is this a TLS port (then set mqtt.tls.enabled: true)? "
                "an MQTT broker answers even to refuse"
            )
        return f"{what}: is it an MQTT broker? is this a TLS port?"

    def _wait_readable(self, timeout: float) -> None:
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            try:
                select.select([sock], [], [], timeout)
            except (OSError, ValueError):
                pass

    def _peek_first_bytes(self) -> str | None:
        """Before the CONNACK, looks at (without consuming) what a plain server sent first."""
        if self.tls or self._first_bytes is not None:
            return None
        sock = self._client.socket()
        if not isinstance(sock, socket.socket):
            return None
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                self._first_bytes = sock.recv(16, socket.MSG_PEEK)
        except OSError:
            return None
        return describe_first_bytes(self._first_bytes or b"")

    def _give_up(self, why: str) -> str:
        """Ends a connection that will not become one; returns ``why``."""
        self._client.disconnect()
        self._drain()
        return why

    def _drain(self) -> None:
        """Lets paho write its DISCONNECT and close the socket (at most a second)."""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and self._client.loop(0.1) == mqtt.MQTT_ERR_SUCCESS:
            pass

    # -- paho's callbacks (network thread) --------------------------------------------

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = f"refused the connection: {reason_code}"
            return
        self.connects += 1
        self._accepted_at = time.monotonic()
        _LOGGER.info(
            "connected to MQTT broker %s:%d%s",
            self.config.host,
            self.config.port,
            f" (reconnect {self.connects - 1})" if self.connects > 1 else "",
        )
        self._last_failure = None
        self._connected.set()
        for topic in self._subscriptions:
            client.subscribe(topic, qos=1)
        if self.on_connected is not None:
            self.on_connected()

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()

    def _handle_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if self.on_acknowledged is not None:
            self.on_acknowledged(mid)

    def _handle_message(self, client, userdata, message) -> None:
        callback = self._subscriptions.get(message.topic)
        if callback is not None:
            try:
                callback(message.payload)
            except Exception:  # noqa: BLE001 - a bad message must not kill the network thread
                _LOGGER.exception("handling a message on %s failed", message.topic)
