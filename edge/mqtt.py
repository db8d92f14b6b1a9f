"""The one MQTT client of the daemon (paho-mqtt 2.x): a thin shell around pure messages.

- Connected means the broker *accepted* the connection (CONNACK success); only then is
  ``online`` published on the retained availability topic. ``offline`` is the last will.
- Every failure to connect (unreachable, TLS, refused credentials) is logged once with
  what went wrong, then retried with exponential backoff: never a tight loop.
- Messages marked ``keep`` (visit summaries) go through the on-disk spool and leave it only
  when the broker acknowledged them; other messages are dropped (and counted) while the
  broker is away.
- Credentials never appear in logs or in the config file.
"""

from __future__ import annotations

import codecs
import logging
import os
import ssl
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import paho.mqtt.client as mqtt

from edge.capture import backoff_delays
from edge.config import MqttConfig, TlsConfig
from edge.payloads import Message
from edge.spool import DiskSpool

_LOGGER = logging.getLogger(__name__)

ONLINE, OFFLINE = b"online", b"offline"


class CredentialsError(Exception):
    """A credentials or TLS file the daemon cannot use; the message names the file (and the
    config key) and what is wrong, in one line, without any secret."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str | None
    source: str  # where they came from, for the log (never the values)

    def __repr__(self) -> str:  # keeps the password out of any accidental log line
        return f"Credentials(username=<set>, password={'<set>' if self.password else None}, source={self.source!r})"


def _read_credentials_file(path: Path, label: str) -> dict[str, str]:
    """``username`` and ``password`` from a ``key=value`` file. Every defect is a
    CredentialsError naming ``label`` (the config key), the file and the line; a message
    never quotes the file's content, which holds the password."""
    where = f"{label}: {path}"
    try:
        with open(path, "rb") as handle:
            raw = handle.read(65_537)
    except OSError as err:
        raise CredentialsError(f"{where}: cannot read ({err.strerror})") from None
    if len(raw) > 65_536:
        raise CredentialsError(f"{where}: larger than 64 KB; expected lines username=... and password=...")
    if raw.startswith(codecs.BOM_UTF8):
        raise CredentialsError(f"{where}: starts with a UTF-8 byte-order mark (BOM), which would become part "
                               "of the first line; save it without one")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise CredentialsError(f"{where} line {line}: not UTF-8 (Latin-1 or another encoding?); "
                               "save the file as UTF-8") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in ("username", "password"):
            raise CredentialsError(f"{where} line {number}: expected username=... or password=...")
        if key in values:
            raise CredentialsError(f"{where} line {number}: {key} is given a second time")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise CredentialsError(f"{where} line {number}: the {key} contains a control character")
        values[key] = value
    return values


def _credential_files(config: MqttConfig, environ: Mapping[str, str]) -> list[tuple[Path, str]]:
    candidates = []
    if config.credentials_file:
        candidates.append((Path(config.credentials_file), "mqtt.credentials_file"))
    if environ.get("CREDENTIALS_DIRECTORY"):
        candidates.append((Path(environ["CREDENTIALS_DIRECTORY"]) / "mqtt", "systemd credential mqtt"))
    return candidates


def credentials_warnings(config: MqttConfig, environ: Mapping[str, str] = os.environ) -> list[str]:
    """A credentials file that others may read is used, with this warning."""
    warnings = []
    for path, label in _credential_files(config, environ):
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode) and mode & 0o077:
            warnings.append(f"{label}: {path} has mode {stat.S_IMODE(mode):04o}: the password is readable by "
                            f"{'everyone' if mode & 0o004 else 'its group'}; chmod 600 it")
    return warnings


def resolve_credentials(config: MqttConfig, environ: Mapping[str, str] = os.environ) -> Credentials | None:
    """Username and password from, in order: environment, credentials file, systemd credential."""
    if environ.get("FER_KIOSK_MQTT_PASSWORD") or environ.get("FER_KIOSK_MQTT_USERNAME"):
        return Credentials(environ.get("FER_KIOSK_MQTT_USERNAME", config.username),
                           environ.get("FER_KIOSK_MQTT_PASSWORD") or None, "environment")
    for path, label in _credential_files(config, environ):
        if path.is_file() or label == "mqtt.credentials_file":
            values = _read_credentials_file(path, label)
            if values.get("username") or values.get("password") or config.username:
                return Credentials(values.get("username", config.username), values.get("password") or None, str(path))
    if config.username:
        return Credentials(config.username, None, "config (no password)")
    return None


class _PassphraseNeeded(Exception):
    pass


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal, which a service has not got.
    raise _PassphraseNeeded()


def _ssl_reason(err: ssl.SSLError) -> str:
    return err.reason or (err.strerror if isinstance(err.strerror, str) else None) or str(err)


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """The client's TLS context from ``mqtt.tls``: every file is read and parsed here, at
    start, and a file that cannot be used raises CredentialsError naming its key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and host-name checks
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        if path:
            try:
                with open(path, "rb") as handle:
                    handle.read(1)
            except OSError as err:
                raise CredentialsError(f"mqtt.tls.{key}: {path}: cannot read ({err.strerror})") from None
    if tls.ca_file:
        try:
            context.load_verify_locations(cafile=tls.ca_file)
        except (ssl.SSLError, ValueError) as err:
            raise CredentialsError(f"mqtt.tls.ca_file: {tls.ca_file}: no PEM certificate in it "
                                   f"({_ssl_reason(err)})") from None
    else:
        context.load_default_certs()
    if tls.cert_file:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=tls.cert_file)
        except (ssl.SSLError, ValueError) as err:
            raise CredentialsError(f"mqtt.tls.cert_file: {tls.cert_file}: no PEM certificate in it "
                                   f"({_ssl_reason(err)})") from None
        key_label = f"mqtt.tls.key_file: {tls.key_file}" if tls.key_file else f"mqtt.tls.cert_file: {tls.cert_file}"
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file or None, password=_no_passphrase)
        except _PassphraseNeeded:
            raise CredentialsError(f"{key_label}: the private key is encrypted and a service cannot type its "
                                   "pass phrase; use an unencrypted key readable only by the service") from None
        except ssl.SSLError as err:
            reason = _ssl_reason(err)
            what = ("the private key does not belong to the certificate" if "MISMATCH" in reason.upper()
                    else f"no PEM private key in it ({reason})")
            raise CredentialsError(f"{key_label}: {what}") from None
    context.check_hostname = not tls.insecure
    return context


def describe_connect_error(err: BaseException) -> str:
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate is not trusted ({err.verify_message})"
    if isinstance(err, ssl.SSLError):
        return f"TLS handshake failed ({err.reason or err})"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (is the broker running and listening on this port?)"
    if isinstance(err, OSError) and err.__class__.__name__ == "gaierror":
        return f"unknown host ({err})"
    return f"{err.__class__.__name__}: {err}"


class MqttPublisher:
    """Three threads touch the client: the caller's (publish), paho's network loop (our
    callbacks) and the sender (spool flushing, the hello after each connect). No lock of
    ours is ever held while calling into paho, and callbacks only flip flags and record
    acknowledgements: paho holds its own callback lock while it calls them."""

    def __init__(
        self,
        config: MqttConfig,
        client_id: str,
        availability_topic: str,
        spool: DiskSpool,
        on_connected: Callable[[], Iterable[Message]] | None = None,
        credentials: Credentials | None = None,
    ):
        self.config = config
        self.availability_topic = availability_topic
        self.spool = spool
        self._on_connected = on_connected
        self._lock = threading.Lock()  # guards the bookkeeping below, never held across paho calls
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._hello_due = False
        self.dropped = 0
        self.connects = 0
        self._last_failure: str | None = None
        self._in_flight: list[mqtt.MQTTMessageInfo] = []
        self._spool_in_flight: dict[int, str] = {}  # mid -> spool file
        self._acked_early: set[int] = set()  # PUBACKs that beat the bookkeeping of their send
        self._subscriptions: dict[str, Callable[[bytes], None]] = {}
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
            reconnect_on_failure=False,  # our own loop reconnects, with backoff and clear logs
        )
        self._client.max_inflight_messages_set(100)
        self._client.will_set(availability_topic, OFFLINE, qos=1, retain=True)
        if credentials is not None:
            self._client.username_pw_set(credentials.username, credentials.password)
            _LOGGER.info("MQTT credentials from %s", credentials.source)
        tls = config.tls
        if tls.enabled:
            self._client.tls_set_context(tls_context(tls))  # CredentialsError names a bad file
            self._client.tls_insecure_set(tls.insecure)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_publish = self._handle_publish
        self._client.on_message = self._handle_message

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def subscribe(self, topic: str, callback: Callable[[bytes], None]) -> None:
        """Calls ``callback(payload)`` for messages on ``topic`` (re-subscribed on every connect)."""
        self._subscriptions[topic] = callback

    def start(self) -> None:
        scheme = "mqtts" if self.config.tls.enabled else "mqtt"
        _LOGGER.info("connecting to %s://%s:%d", scheme, self.config.host, self.config.port)
        self._thread.start()
        self._sender.start()

    # -- connection ---------------------------------------------------------------------

    def _log_failure(self, what: str, delay: float) -> None:
        if what != self._last_failure:
            _LOGGER.error("MQTT broker %s:%d: %s; retrying with backoff (next in %.0f s, at most every %.0f s)",
                          self.config.host, self.config.port, what, delay, self.config.reconnect_max_seconds)
            self._last_failure = what

    def _run(self) -> None:
        delays = backoff_delays(1.0, self.config.reconnect_max_seconds)
        while not self._stop.is_set():
            try:
                self._client.connect(self.config.host, self.config.port, keepalive=self.config.keepalive)
            except (OSError, ValueError) as err:  # ssl.SSLError and socket.gaierror are OSErrors
                delay = next(delays)
                self._log_failure(describe_connect_error(err), delay)
                self._stop.wait(delay)
                continue
            connects_before = self.connects
            self._client.loop_forever(retry_first_connection=False)  # returns when the connection ends
            self._connected.clear()
            if self._stop.is_set():
                break
            if self.connects > connects_before:
                _LOGGER.warning("lost the MQTT broker; reconnecting with backoff")
                delays = backoff_delays(1.0, self.config.reconnect_max_seconds)  # it worked: start over
            self._stop.wait(next(delays))

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._log_failure(f"refused the connection: {reason_code}", 1.0)
            return
        self.connects += 1
        _LOGGER.info("connected to MQTT broker %s:%d%s", self.config.host, self.config.port,
                     f" (reconnect {self.connects - 1})" if self.connects > 1 else "")
        self._last_failure = None
        with self._lock:
            self._spool_in_flight.clear()  # whatever was in flight is sent again: at least once
            self._acked_early.clear()
            self._hello_due = True
        self._connected.set()
        self._wake.set()

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()

    def _handle_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            name = self._spool_in_flight.pop(mid, None)
            if name is None:
                self._acked_early.add(mid)
        if name is not None:
            self.spool.remove(name)

    def _handle_message(self, client, userdata, message) -> None:
        callback = self._subscriptions.get(message.topic)
        if callback is not None:
            try:
                callback(message.payload)
            except Exception:  # noqa: BLE001 - a bad message must not kill the network thread
                _LOGGER.exception("handling a message on %s failed", message.topic)

    # -- sending ------------------------------------------------------------------------

    def _send(self, message: Message) -> mqtt.MQTTMessageInfo | None:
        info = self._client.publish(message.topic, message.payload, message.qos, message.retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return None
        with self._lock:
            if message.qos > 0:
                self._in_flight = [i for i in self._in_flight if not i.is_published()]
                self._in_flight.append(info)
        return info

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if not self._connected.is_set():
                continue
            with self._lock:
                hello, self._hello_due = self._hello_due, False
            if hello:
                # only now, after the broker accepted us: online, discovery, current state
                self._send(Message(self.availability_topic, ONLINE, 1, True))
                for message in self._on_connected() if self._on_connected else ():
                    self._send(message)
                for topic in self._subscriptions:
                    self._client.subscribe(topic, qos=1)
            try:
                self._flush()
            except Exception as err:  # noqa: BLE001 - the sender must outlive any one bad spool entry
                _LOGGER.error("sending spooled summaries failed (%s: %s); trying again", type(err).__name__, err)
                self._stop.wait(1.0)

    def _flush(self) -> None:
        """Sends spooled messages, oldest first, that are not already waiting for their PUBACK."""
        if not self._connected.is_set() or not len(self.spool):
            return
        with self._lock:
            waiting = set(self._spool_in_flight.values())
        for name, message in self.spool.pending(skip=waiting):
            if not self._connected.is_set():
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
            self.spool.append(message)
            self._wake.set()
            return self.connected
        if self._connected.is_set() and self._send(message) is not None:
            return True
        with self._lock:
            self.dropped += 1
        return False

    def stop(self, timeout: float = 2.5) -> None:
        """Delivers what is spooled (while the broker is there), publishes ``offline``, waits
        for the broker's acknowledgements (up to ``timeout`` s in all), then disconnects."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self._connected.is_set() and len(self.spool) and time.monotonic() < deadline - 0.5:
            time.sleep(0.02)
        if self._connected.is_set():
            self._send(Message(self.availability_topic, OFFLINE, 1, True))
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
        self._stop.set()
        self._wake.set()
        self._client.disconnect()
        self._thread.join(1.0)
        self._sender.join(1.0)
