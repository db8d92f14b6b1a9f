"""The dashboard's I/O shell: MQTT in, HTTP and Server-Sent Events out.

One lock guards the fleet model; paho's thread applies messages under it (visit summaries
and alerts go to the store) and marks the device dirty. A flusher thread wakes at most
``max_updates_per_second`` times a second, takes the dirty tiles and offers them to every
browser, so a burst of messages from 20 kiosks becomes one small update per device, never
a backlog. Each browser connection is served by its own thread (ThreadingHTTPServer) that
drains its own bounded queue; a browser that falls behind is dropped, alone.
"""

from __future__ import annotations

import gzip
import json
import logging
import queue
import threading
import time
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from dashboard.config import DashboardConfig
from dashboard.fleet import Fleet
from dashboard.mqtt import Subscription
from dashboard.store import Store, local_day
from edge import __version__

_LOGGER = logging.getLogger(__name__)

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
KEEPALIVE_SECONDS = 15.0  # an SSE comment line, so proxies and browsers keep the stream open
CLIENT_QUEUE = 100  # updates; a browser this far behind is dropped (it reconnects for a snapshot)
WRITE_TIMEOUT_SECONDS = 20.0  # a browser that takes nothing for this long is dropped too
PRUNE_EVERY_SECONDS = 3600.0
# The tab's icon (a counter with a face), served at /favicon.ico where browsers look for it.
FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" '
    b'fill="#1d2330"/><circle cx="16" cy="14" r="8" fill="#f1b20f"/><circle cx="13" cy="12" r="1.3"/>'
    b'<circle cx="19" cy="12" r="1.3"/><path d="M12 16q4 3.5 8 0" stroke="#1d2330" stroke-width="1.6" '
    b'fill="none"/><rect x="5" y="25" width="22" height="3" rx="1.5" fill="#95a5a6"/></svg>'
)


def static_file(name: str) -> bytes | None:
    """A file of the page (package data), or None; never anything outside static/."""
    if "/" in name or "\\" in name or name.startswith(".") or not any(name.endswith(s) for s in STATIC_TYPES):
        return None
    path = resources.files("dashboard").joinpath("static", name)
    return path.read_bytes() if path.is_file() else None


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Listener:
    """One browser's bounded queue. ``offer`` never blocks and never raises: a browser whose
    queue is full is closed, and only that browser pays for it."""

    def __init__(self, size: int = CLIENT_QUEUE):
        self._queue: queue.Queue[bytes] = queue.Queue(size)
        self.closed = threading.Event()

    def offer(self, message: bytes) -> bool:
        if self.closed.is_set():
            return False
        try:
            self._queue.put_nowait(message)
            return True
        except queue.Full:
            self.close()
            return False

    def close(self) -> None:
        self.closed.set()
        with self._queue.mutex:  # room for the wake-up, whatever was waiting is moot
            self._queue.queue.clear()
            self._queue.not_full.notify_all()
        try:
            self._queue.put_nowait(b"")
        except queue.Full:  # another thread refilled it: the closed flag still ends it
            pass

    def next(self, timeout: float) -> bytes | None:
        """The next message; b"" once closed; None after ``timeout`` with nothing."""
        if self.closed.is_set():
            return b""
        try:
            message = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        return b"" if self.closed.is_set() else message


class Hub:
    """The fleet, the broker status and the browsers listening to them."""

    def __init__(self, config: DashboardConfig, store: Store, clock=time.time):
        self.config = config
        self.clock = clock
        self.store = store
        self.fleet = Fleet(config.mqtt.topic_prefix, store, config.alerts.keep_seconds, clock())
        self._lock = threading.Lock()
        self._dirty: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._clients: list[Listener] = []
        self.dropped = 0  # browsers dropped for falling behind
        self.broker = {
            "connected": False,
            "text": "connecting",
            "host": f"{config.mqtt.host}:{config.mqtt.port}",
            "since": clock(),  # since when the status is what it says
            "listening_since": None,  # the last accepted connection
        }

    # -- in: MQTT ------------------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        with self._lock:
            changed = self.fleet.apply(topic, payload, self.clock(), retained)
            if changed:
                self._dirty.add(changed)
        if changed:
            self._wake.set()

    def on_broker_status(self, connected: bool, text: str) -> None:
        with self._lock:
            now = self.clock()
            since = now if connected != self.broker["connected"] else self.broker["since"]
            self.broker = {
                **self.broker,
                "connected": connected,
                "text": text,
                "since": since,
                "listening_since": now if connected else self.broker["listening_since"],
            }
            message = sse("broker", self.broker)
        self._broadcast(message)

    # -- out: browsers -------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        return {
            "server_time": self.clock(),
            "stale_seconds": self.config.stale_seconds,
            "keep_alerts_seconds": self.config.alerts.keep_seconds,
            "prefix": self.config.mqtt.topic_prefix,
            "version": __version__,
        }

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {**self.meta(), "broker": self.broker, "devices": self.fleet.snapshot(self.clock())}

    def history(self, device: str | None, days: int | None) -> dict[str, Any]:
        days = max(1, min(days or self.config.store.history_days, self.config.store.history_days))
        now = self.clock()
        figures = self.store.history(local_day(now), days, device or None)
        return {**figures, "devices": self.store.all_devices(), "server_time": now}

    def subscribe(self) -> Listener:
        client = Listener()
        with self._lock:
            self._clients.append(client)
        return client

    def unsubscribe(self, client: Listener) -> None:
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)

    def _broadcast(self, message: bytes) -> None:
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            if not client.offer(message):
                self.unsubscribe(client)
                self.dropped += 1
                _LOGGER.warning("dropped a browser that fell %d updates behind (it reconnects)", CLIENT_QUEUE)

    def flush_loop(self) -> None:
        period = 1.0 / self.config.max_updates_per_second
        pruned = 0.0
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self._flush(period)
                if self.clock() - pruned > PRUNE_EVERY_SECONDS:
                    pruned = self.clock()
                    self.store.prune(pruned)
            except Exception:  # noqa: BLE001 - the page must keep updating whatever one flush met
                _LOGGER.exception("flushing the tiles failed")
            self._stop.wait(period)

    def _flush(self, period: float) -> None:
        with self._lock:
            now = self.clock()
            names = sorted(self._dirty | set(self.fleet.roll_over(now)) | set(self.fleet.expire_alerts(now)))
            self._dirty.clear()
            tiles = [self.fleet.tile(name, now) for name in names if name in self.fleet.devices]
        if tiles:
            self._broadcast(sse("devices", {**self.meta(), "devices": tiles}))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()


def make_handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"fer-kiosk-dashboard/{__version__}"
        protocol_version = "HTTP/1.1"
        timeout = WRITE_TIMEOUT_SECONDS  # the socket's: a browser that reads nothing ends its thread

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
            _LOGGER.debug("%s %s", self.address_string(), format % args)

        def _gzip(self) -> bool:
            """Whether the browser takes gzip: a tablet on the counter's Wi-Fi loads a third."""
            return "gzip" in self.headers.get("Accept-Encoding", "")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str, cache: str = "no-cache") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            if len(body) > 512 and self._gzip():
                body = gzip.compress(body, compresslevel=6, mtime=0)
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Vary", "Accept-Encoding")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", cache)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header(
                "Content-Security-Policy",
                "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
            )
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, static_file("index.html") or b"", STATIC_TYPES[".html"])
            elif path == "/favicon.ico":  # browsers ask for it whatever the page links
                self._send(HTTPStatus.OK, FAVICON, STATIC_TYPES[".svg"], "max-age=86400")
            elif path.startswith("/static/"):
                name = path[len("/static/") :]
                body = static_file(name)
                if body is None:
                    self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
                else:
                    self._send(
                        HTTPStatus.OK, body, STATIC_TYPES["." + name.rsplit(".", 1)[-1]], "max-age=300"
                    )
            elif path == "/api/fleet":
                self._send(HTTPStatus.OK, json.dumps(hub.snapshot()).encode(), "application/json")
            elif path == "/api/history":
                query = parse_qs(self.path.split("?", 1)[1] if "?" in self.path else "")
                device = (query.get("device") or [""])[0]
                days = (query.get("days") or [""])[0]
                body = hub.history(device, int(days) if days.isdigit() else None)
                self._send(HTTPStatus.OK, json.dumps(body).encode(), "application/json")
            elif path == "/api/stream":
                self._stream()
            elif path == "/healthz":
                self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

        def _stream(self) -> None:
            client = hub.subscribe()
            # gzip'd as it goes, each message flushed whole (a small window: little memory)
            packer = zlib.compressobj(6, zlib.DEFLATED, 16 + 12, 5) if self._gzip() else None

            def write(data: bytes) -> None:
                if packer is not None:
                    data = packer.compress(data) + packer.flush(zlib.Z_SYNC_FLUSH)
                self.wfile.write(data)
                self.wfile.flush()

            try:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("X-Accel-Buffering", "no")  # nginx: do not buffer the stream
                if packer is not None:
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Vary", "Accept-Encoding")
                self.end_headers()
                write(b"retry: 2000\n\n" + sse("snapshot", hub.snapshot()))
                while True:
                    message = client.next(KEEPALIVE_SECONDS)
                    if message is None:
                        message = b": keepalive\n\n"
                    if not message:
                        break
                    write(message)
            except (OSError, ValueError):
                pass  # the browser went away, or took nothing for WRITE_TIMEOUT_SECONDS
            finally:
                hub.unsubscribe(client)
                self.close_connection = True

    return Handler


class DashboardServer:
    """The store, the subscription, the flusher and the HTTP server, started and stopped together."""

    def __init__(self, config: DashboardConfig):
        self.config = config
        self.store = Store(config.store_path, config.store.retention_days)
        self.hub = Hub(config, self.store)
        self.subscription = Subscription(
            config.mqtt,
            config.client_id,
            self.hub.fleet.topics(),
            self.hub.on_message,
            self.hub.on_broker_status,
        )
        self.httpd = ThreadingHTTPServer((config.http.host, config.http.port), make_handler(self.hub))
        self.httpd.daemon_threads = True
        self._flusher = threading.Thread(target=self.hub.flush_loop, name="flusher", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self.httpd.server_address[:2]

    def serve_forever(self) -> None:
        self.subscription.start()
        self._flusher.start()
        host, port = self.address
        _LOGGER.info(
            "dashboard on http://%s:%d/ (devices under %s/ on %s:%d as %s; store %s)",
            host,
            port,
            self.config.mqtt.topic_prefix,
            self.config.mqtt.host,
            self.config.mqtt.port,
            self.config.client_id,
            self.config.store_path,
        )
        try:
            self.httpd.serve_forever(poll_interval=0.5)
        finally:
            self.subscription.stop()
            self.hub.stop()
            self._flusher.join(2)
            self.httpd.server_close()
            self.store.close()

    def shutdown(self) -> None:
        self.httpd.shutdown()
