"""The daemon with real parts around it, for tests and benchmarks alike: a Mosquitto on a
free loopback port, a subscriber that collects what it publishes, a NOTIFY_SOCKET like
systemd's, and starting and stopping ``fer-kiosk run`` (or ``fer-kiosk dashboard``) on a
config written for them.

    broker = Broker(workdir).start()
    config = write_config(workdir / "config.yaml", broker.port, "kiosk-1", str(clip), camera={"loop": True})
    notify = NotifySocket(workdir / "notify.sock")
    daemon = start_daemon(config, workdir / "daemon.log", notify=notify)
    ready_at = notify.wait_for("READY=1", 30, daemon)
    ...
    stop_daemon(daemon)

The tests import it (tests/conftest.py's ``broker`` and ``subscribe`` fixtures are built on
it); bench/ never imports tests/.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
EDGE = (sys.executable, "-m", "edge")  # the daemon from this checkout
# Debian's Chromium, as Playwright drives it for the dashboard's page (no browser download).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def wait_until(predicate: Callable[[], Any], timeout: float) -> bool:
    """Polls ``predicate`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


# -- the broker ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


class Broker:
    """A real Mosquitto on a free loopback port that can be stopped and restarted."""

    def __init__(
        self, workdir: Path, extra_config: str = "", port: int | None = None, persistent: bool = False
    ):
        """``persistent``: sessions and queued QoS 1 messages survive a stop and start, as on
        a real broker (what a dashboard with clean_session=False relies on)."""
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (Debian package mosquitto; .ci/run installs it)")
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.config_path = workdir / f"mosquitto-{self.port}.conf"
        self.log_path = workdir / f"mosquitto-{self.port}.log"
        # Started as root, mosquitto would switch to its own user and could not read the
        # test's private temporary files (password file, certificates, log).
        run_as = f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
        persistence = (
            f"persistence true\npersistence_location {workdir}/\nautosave_interval 1\n"
            if persistent
            else "persistence false\n"
        )
        self.config_path.write_text(
            run_as + f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n" + persistence + f"log_dest file {self.log_path}\n"
            "log_type all\n" + extra_config
        )
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> Broker:
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited: {self.process.stderr.read().decode()[-500:]} "
                    f"{self.log_path.read_text()[-500:] if self.log_path.exists() else ''}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class Subscriber:
    """Collects every message under a topic filter from a real broker."""

    def __init__(self, port: int, topic: str):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{port}"
        )

        def on_connect(client, userdata, flags, reason_code, properties):
            client.subscribe(topic, qos=1)

        def on_subscribe(client, userdata, mid, reason_codes, properties):
            self._subscribed.set()

        def on_message(client, userdata, message):
            with self._lock:
                self.messages.append((message.topic, message.payload, bool(message.retain)))

        self.client.on_connect, self.client.on_subscribe = on_connect, on_subscribe
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription to the test broker failed"

    def json_on(self, suffix: str) -> list[dict]:
        with self._lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith(suffix)]

    def wait_for(self, predicate: Callable[[], Any], timeout: float) -> bool:
        return wait_until(predicate, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class MjpegCamera:
    """A network camera as IP cameras are: Motion-JPEG over HTTP (multipart/x-mixed-replace)
    on a free loopback port, ``fps`` frames a second of one JPEG. ``silent`` set: the
    connection stays open and nothing is sent (a frozen camera). ``connections`` counts GETs.

        camera = MjpegCamera(jpeg).start()
        url = camera.url("admin:secret@")  # any user info: the server does not check it
        ...
        camera.stop()
    """

    def __init__(self, jpeg: bytes, fps: float = 30.0):
        import socketserver
        from http.server import BaseHTTPRequestHandler

        self.silent = threading.Event()
        self.connections: list[float] = []
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                camera.connections.append(time.monotonic())
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                try:
                    while True:
                        if not camera.silent.is_set():
                            self.wfile.write(head + jpeg + b"\r\n")
                        time.sleep(1 / fps)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]

    def start(self) -> MjpegCamera:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def url(self, userinfo: str = "", query: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}/video.mjpg" + (f"?{query}" if query else "")

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- systemd's side -------------------------------------------------------------------------


class NotifySocket:
    """A NOTIFY_SOCKET like systemd's: records every datagram line with its arrival time."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.received: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            for line in data.decode(errors="replace").splitlines():
                self.received.append((time.monotonic(), line))

    def times(self, prefix: str) -> list[float]:
        return [t for t, line in list(self.received) if line.startswith(prefix)]

    def wait_for(self, prefix: str, timeout: float, process: subprocess.Popen | None = None) -> float | None:
        """time.monotonic() at which the first line starting with ``prefix`` arrived; None
        after ``timeout`` s or once ``process`` has exited without sending it."""

        def arrived_or_exited() -> bool:
            return bool(self.times(prefix)) or (process is not None and process.poll() is not None)

        wait_until(arrived_or_exited, timeout)
        arrived = self.times(prefix)
        return arrived[0] if arrived else None

    def close(self) -> None:
        """Stops listening and removes the socket file (the path can be bound again)."""
        self._stop.set()
        self._thread.join()
        self.sock.close()
        self.path.unlink(missing_ok=True)


# -- the daemon -------------------------------------------------------------------------------


def merged(base: dict[str, dict], sections: Mapping[str, dict]) -> dict[str, dict]:
    """``base`` with each section's keys overridden by those in ``sections`` (one level deep)."""
    config = {name: dict(values) for name, values in base.items()}
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


def write_config(path: Path, port: int, device_id: str, source: str | None = None, **sections: dict) -> Path:
    """The daemon's config.yaml for a broker on 127.0.0.1:``port``: camera source (None:
    the default camera, or ``--source``), device id, then any section's keys given as
    keywords (``camera={"loop": True}``, ``spool={"path": ...}``)."""
    base: dict[str, dict] = {"mqtt": {"host": "127.0.0.1", "port": port, "device_id": device_id}}
    if source is not None:
        base["camera"] = {"source": source}
    path.write_text(yaml.safe_dump(merged(base, sections)))
    return path


def checkout_env() -> dict[str, str]:
    """This process's environment, with the checkout importable first."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def start_daemon(
    config: Path,
    log: Path,
    *,
    command: Sequence[str] = EDGE,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
    notify: NotifySocket | None = None,
    cwd: Path = ROOT,
    **popen: Any,
) -> subprocess.Popen:
    """``COMMAND run --config CONFIG ARGS`` with stdout and stderr appended to ``log``.

    ``command``: how to call fer-kiosk (default: ``python -m edge`` from this checkout);
    ``base_env``: its environment (default: this one with the checkout on PYTHONPATH), plus
    ``env``; ``notify``: the NOTIFY_SOCKET it reports to; ``popen``: more Popen options."""
    environment = {**(checkout_env() if base_env is None else base_env), **(env or {})}
    if notify is not None:
        environment["NOTIFY_SOCKET"] = str(notify.path)
    with log.open("a") as out:
        return subprocess.Popen(
            [*command, "run", "--config", str(config), *args],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
            **popen,
        )


def stop_daemon(process: subprocess.Popen, timeout: float = 10) -> int:
    """SIGTERM, as systemd stops it; its exit code."""
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout)


def http_get(url: str) -> bytes | None:
    """The body at ``url``, or None on any error (refused, 404, ...)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read()
    except OSError:
        return None


def start_dashboard(
    workdir: Path, broker_port: int, timeout: float = 20, **settings: Any
) -> tuple[subprocess.Popen, str, Path]:
    """``fer-kiosk dashboard`` on a free port for the broker on ``broker_port`` (``settings``:
    more config sections), once it answers /healthz: (process, its URL, its log)."""
    port = free_port()
    config = workdir / "dashboard.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "http": {"port": port},
                "mqtt": {"host": "127.0.0.1", "port": broker_port},
                # the store lives with the test, never in the user's state folder
                "store": {"path": str(workdir / "dashboard.sqlite3"), **settings.pop("store", {})},
                **settings,
            }
        )
    )
    log = workdir / "dashboard.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*EDGE, "dashboard", "--config", str(config)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=checkout_env(),
        )
    url = f"http://127.0.0.1:{port}"
    if not wait_until(lambda: http_get(url + "/healthz") == b"ok\n", timeout):
        process.kill()
        process.wait()
        raise AssertionError(f"the dashboard did not answer within {timeout} s: {log.read_text()[-2000:]}")
    return process, url, log


def make_certificates(directory: Path) -> dict[str, Path]:
    """A test CA, a server certificate for localhost/127.0.0.1 signed by it, and an
    unrelated CA (for "untrusted certificate" cases), made with openssl in ``directory``."""

    def openssl(command: str) -> None:
        subprocess.run(["openssl", *command.split()], cwd=directory, check=True, capture_output=True)

    openssl("req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.crt")
    openssl("req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr")
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out server.crt "
        "-extfile san.ext"
    )
    openssl("req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca -keyout other.key -out other.crt")
    return {name: directory / name for name in ("ca.crt", "server.crt", "server.key", "other.crt")}
