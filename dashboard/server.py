"""The dashboard's I/O shell: MQTT in, HTTP and Server-Sent Events out.

One lock guards the fleet model; paho's thread applies messages under it and marks the
device dirty. A flusher thread wakes at most ``max_updates_per_second`` times a second,
takes the dirty tiles and puts them on every browser's queue, so a burst of messages from
20 kiosks becomes one small update per device, never a backlog. Each browser connection is
served by its own thread (ThreadingHTTPServer) that drains its queue.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from dashboard.config import DashboardConfig
from dashboard.fleet import Fleet
from edge import __version__
from edge.subscriber import make_subscriber

_LOGGER = logging.getLogger(__name__)

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
KEEPALIVE_SECONDS = 15.0  # an SSE comment line, so proxies and browsers keep the stream open
CLIENT_QUEUE = 1000  # a browser this far behind is dropped (it reconnects and gets a snapshot)


def static_file(name: str) -> bytes | None:
    """A file of the page (package data), or None; never anything outside static/."""
    if "/" in name or "\\" in name or name.startswith(".") or not any(name.endswith(s) for s in STATIC_TYPES):
        return None
    path = resources.files("dashboard").joinpath("static", name)
    return path.read_bytes() if path.is_file() else None


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Hub:
    """The fleet, the broker status and the browsers listening to them."""

    def __init__(self, config: DashboardConfig, clock=time.time):
        self.config = config
        self.clock = clock
        self.fleet = Fleet(config.mqtt.topic_prefix)
        self._lock = threading.Lock()
        self._dirty: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._clients: list[queue.Queue] = []
        self.broker = {
            "connected": False,
            "text": "connecting",
            "host": f"{config.mqtt.host}:{config.mqtt.port}",
        }

    # -- in: MQTT ------------------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        with self._lock:
            changed = self.fleet.apply(topic, payload, self.clock())
            if changed:
                self._dirty.add(changed)
        if changed:
            self._wake.set()

    def on_broker_status(self, connected: bool, text: str) -> None:
        with self._lock:
            self.broker = {**self.broker, "connected": connected, "text": text}
        self._broadcast(sse("broker", self.broker))

    # -- out: browsers -------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        return {
            "server_time": self.clock(),
            "stale_seconds": self.config.stale_seconds,
            "prefix": self.config.mqtt.topic_prefix,
            "version": __version__,
        }

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {**self.meta(), "broker": self.broker, "devices": self.fleet.snapshot(self.clock())}

    def subscribe(self) -> queue.Queue:
        client: queue.Queue = queue.Queue(CLIENT_QUEUE)
        with self._lock:
            self._clients.append(client)
        return client

    def unsubscribe(self, client: queue.Queue) -> None:
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)

    def _broadcast(self, message: bytes) -> None:
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            try:
                client.put_nowait(message)
            except queue.Full:
                self.unsubscribe(client)
                client.put_nowait(b"")  # tells its thread to close: it reconnects for a snapshot

    def flush_loop(self) -> None:
        period = 1.0 / self.config.max_updates_per_second
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            with self._lock:
                now = self.clock()
                names = sorted(self._dirty | set(self.fleet.roll_over(now)))
                self._dirty.clear()
                tiles = [self.fleet.tile(name, now) for name in names]
            if tiles:
                self._broadcast(sse("devices", {**self.meta(), "devices": tiles}))
            self._stop.wait(period)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._broadcast(b"")


def make_handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"fer-kiosk-dashboard/{__version__}"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
            _LOGGER.debug("%s %s", self.address_string(), format % args)

        def _send(self, status: HTTPStatus, body: bytes, content_type: str, cache: str = "no-cache") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
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
            elif path == "/api/stream":
                self._stream()
            elif path == "/healthz":
                self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

        def _stream(self) -> None:
            client = hub.subscribe()
            try:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("X-Accel-Buffering", "no")  # nginx: do not buffer the stream
                self.end_headers()
                self.wfile.write(b"retry: 2000\n\n" + sse("snapshot", hub.snapshot()))
                self.wfile.flush()
                while True:
                    try:
                        message = client.get(timeout=KEEPALIVE_SECONDS)
                    except queue.Empty:
                        message = b": keepalive\n\n"
                    if not message:
                        break
                    self.wfile.write(message)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass  # the browser went away
            finally:
                hub.unsubscribe(client)
                self.close_connection = True

    return Handler


class DashboardServer:
    """The subscriber, the flusher and the HTTP server, started and stopped together."""

    def __init__(self, config: DashboardConfig):
        self.config = config
        self.hub = Hub(config)
        self.client = make_subscriber(
            config.mqtt,
            self.hub.fleet.topics(),
            self.hub.on_message,
            "fer-kiosk-dashboard",
            self.hub.on_broker_status,
        )
        self.httpd = ThreadingHTTPServer((config.http.host, config.http.port), make_handler(self.hub))
        self.httpd.daemon_threads = True
        self._flusher = threading.Thread(target=self.hub.flush_loop, name="flusher", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self.httpd.server_address[:2]

    def serve_forever(self) -> None:
        self.client.connect_async(
            self.config.mqtt.host, self.config.mqtt.port, keepalive=self.config.mqtt.keepalive
        )
        self.client.loop_start()
        self._flusher.start()
        host, port = self.address
        _LOGGER.info(
            "dashboard on http://%s:%d/ (devices under %s/ on %s:%d)",
            host,
            port,
            self.config.mqtt.topic_prefix,
            self.config.mqtt.host,
            self.config.mqtt.port,
        )
        try:
            self.httpd.serve_forever(poll_interval=0.5)
        finally:
            self.hub.stop()
            self.client.disconnect()
            self.client.loop_stop()
            self.httpd.server_close()

    def shutdown(self) -> None:
        self.httpd.shutdown()
