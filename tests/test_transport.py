"""edge.mqtt.transport on its own, against real servers: a real Mosquitto (plain and TLS), a TCP
server that accepts and never answers, servers that are not MQTT, two clients with the
same client id. Every failure must be named in one line, once, and retried with backoff."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import pytest

from bench.harness import make_certificates
from edge.config import parse_config
from edge.mqtt.client import tls_context
from edge.mqtt.transport import Transport
from tests.broker import Broker
from tests.conftest import wait_until


class FakeServer:
    """A TCP server on a free loopback port (or ``port``) that answers each connection with
    ``reply(first_bytes_received)``: None never answers and never closes."""

    def __init__(self, reply=None, port: int = 0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.accepted = 0
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.held.append(conn)
            if self.reply is not None:
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        try:
            conn.settimeout(5)
            data = conn.recv(1024)
            conn.sendall(self.reply(data))
            time.sleep(0.2)
            conn.close()
        except OSError:
            pass

    def close(self):
        self.sock.close()
        for conn in self.held:
            conn.close()


def mqtt_config(port: int, **mqtt) -> object:
    values = {
        "host": "127.0.0.1",
        "port": port,
        "connect_timeout_seconds": 2,
        "reconnect_max_seconds": 4,
        **mqtt,
    }
    return parse_config({"mqtt": values}).mqtt


def run_transport(config, seconds: float, client_id: str = "t", **kwargs) -> Transport:
    transport = Transport(config, client_id, **kwargs)
    transport.start()
    try:
        time.sleep(seconds)
    finally:
        transport.stop()
    return transport


def errors(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name == "edge.mqtt.transport"
    ]


@pytest.fixture
def certs(tmp_path) -> dict[str, Path]:
    return make_certificates(tmp_path)


@pytest.fixture
def tls_broker(tmp_path, certs):
    broker = Broker(
        tmp_path, f"cafile {certs['ca.crt']}\ncertfile {certs['server.crt']}\nkeyfile {certs['server.key']}\n"
    )
    broker.start()
    yield broker
    broker.stop()


def test_connects_reports_acknowledgements_and_reconnects_after_an_outage(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    broker = Broker(tmp_path).start()
    transport = Transport(mqtt_config(broker.port, reconnect_max_seconds=1), "t")
    connected, acked = [], []
    transport.on_connected = lambda: connected.append(time.monotonic())
    transport.on_acknowledged = acked.append
    transport.start()
    try:
        assert transport.wait_connected(10)
        info = transport.publish("t/x", b"1", 1, False)
        assert info is not None and wait_until(lambda: info.mid in acked, 5)
        broker.stop()
        assert wait_until(lambda: not transport.connected, 5)
        assert transport.publish("t/x", b"2", 1, False) is None  # nothing to hand it to
        time.sleep(2.5)  # retries at 1 s and 2 s find nobody listening
        broker.start()
        assert wait_until(lambda: len(connected) == 2, 10)
        assert transport.reconnects == 1
    finally:
        transport.stop()
        broker.stop()
    text = caplog.text
    assert "lost the MQTT broker" in text and "(reconnect 1)" in text
    assert "connection refused" in text  # while it was down, said once
    assert sum("connection refused" in e for e in errors(caplog)) == 1


def test_a_server_that_accepts_and_never_answers_is_named_and_retried_with_backoff(caplog):
    server = FakeServer(reply=None)
    try:
        run_transport(mqtt_config(server.port), 9.5)
    finally:
        server.close()
    expected = (
        "no answer to the MQTT CONNECT within 2 s (mqtt.connect_timeout_seconds): "
        "is it an MQTT broker? is this a TLS port?"
    )
    assert [e for e in errors(caplog) if expected in e] and len(errors(caplog)) == 1, errors(caplog)
    # 2 s waiting for a CONNACK, then 1 s, 2 s, 4 s of backoff: 3 attempts in 9.5 s, not a tight loop
    assert 2 <= server.accepted <= 3, server.accepted


def test_a_silent_server_on_8883_asks_whether_it_is_a_tls_port(caplog):
    try:
        server = FakeServer(reply=None, port=8883)
    except OSError:
        pytest.skip("127.0.0.1:8883 is in use here")
    try:
        run_transport(mqtt_config(8883), 3)
    finally:
        server.close()
    assert any(
        "no answer to the MQTT CONNECT within 2 s (mqtt.connect_timeout_seconds): is this a TLS port? "
        "8883 usually is; set mqtt.tls.enabled: true" in e
        for e in errors(caplog)
    ), errors(caplog)


@pytest.mark.parametrize(
    "reply, expected",
    [
        (
            lambda data: b"HTTP/1.1 400 Bad Request\r\n\r\n",
            "the server answered with something that is not MQTT ('HTTP/1.1 400 Bad'...): "
            "is mqtt.host/mqtt.port an MQTT broker?",
        ),
        (
            lambda data: b"\x15\x03\x03\x00\x02\x02\x46",  # a TLS alert record: protocol_version
            "the server answered the MQTT CONNECT with a TLS alert: is this a TLS port? "
            "set mqtt.tls.enabled: true",
        ),
        (
            lambda data: b"",  # accepts, reads the CONNECT, hangs up
            "the server closed the connection without answering the MQTT CONNECT: is this a TLS port",
        ),
    ],
    ids=["http", "tls-alert", "hangs-up"],
)
def test_a_server_that_is_not_mqtt_is_named(caplog, reply, expected):
    server = FakeServer(reply=reply)
    try:
        run_transport(mqtt_config(server.port), 2)
    finally:
        server.close()
    assert [e for e in errors(caplog) if expected in e], errors(caplog)
    assert len(errors(caplog)) == 1


def test_a_plain_client_against_a_real_mosquitto_tls_port_asks_whether_it_is_a_tls_port(tls_broker, caplog):
    run_transport(mqtt_config(tls_broker.port), 2)
    assert [e for e in errors(caplog) if "without answering the MQTT CONNECT: is this a TLS port" in e], (
        errors(caplog)
    )


def test_a_tls_client_against_a_real_plain_mosquitto_says_tls(tmp_path, broker, certs, caplog):
    config = mqtt_config(
        broker.port, host="localhost", tls={"enabled": True, "ca_file": str(certs["ca.crt"])}
    )
    run_transport(config, 2, tls_context=tls_context(config.tls))
    assert [
        e for e in errors(caplog) if "TLS handshake failed" in e and "is this a plain, non-TLS MQTT port" in e
    ], errors(caplog)


def test_a_tls_client_against_a_silent_server_says_tls(certs, caplog):
    server = FakeServer(reply=None)
    config = mqtt_config(
        server.port, host="localhost", tls={"enabled": True, "ca_file": str(certs["ca.crt"])}
    )
    try:
        run_transport(config, 3, tls_context=tls_context(config.tls))
    finally:
        server.close()
    assert [
        e
        for e in errors(caplog)
        if "TLS handshake failed: no answer to the TLS hello within mqtt.connect_timeout_seconds" in e
    ], errors(caplog)


def test_tls_to_a_real_mosquitto_connects(tls_broker, certs):
    config = mqtt_config(
        tls_broker.port, host="localhost", tls={"enabled": True, "ca_file": str(certs["ca.crt"])}
    )
    transport = Transport(config, "tls", tls_context=tls_context(config.tls))
    transport.start()
    try:
        assert transport.wait_connected(10)
    finally:
        transport.stop()


def test_two_clients_with_the_same_id_name_the_clash_once_and_back_off(broker, caplog):
    caplog.set_level(logging.INFO)
    config = mqtt_config(broker.port, reconnect_max_seconds=8)
    clients = [Transport(config, "fer-kiosk-clone") for _ in range(2)]
    for client in clients:
        client.start()
        time.sleep(0.3)
    time.sleep(25)
    for client in clients:
        client.stop()
    named = [
        e
        for e in errors(caplog)
        if "same client id 'fer-kiosk-clone'" in e
        and "mqtt.device_id" in e
        and "mqtt.client_id" in e
        and "instead of fighting" in e
    ]
    assert 1 <= len(named) <= 2, errors(caplog)  # once per client at most
    connections = sum("New client connected" in line for line in broker.log_path.read_text().splitlines())
    # Fighting at a 1 s backoff makes ~50 connections in 25 s; backing off, about a dozen.
    assert connections <= 14, connections


# -- the same, through the daemon ----------------------------------------------------------


@pytest.mark.slow
def test_the_daemon_names_a_silent_server_and_keeps_running(tmp_path, run_daemon):
    from tests.helpers import config_file

    server = FakeServer(reply=None)
    config = config_file(
        tmp_path,
        server.port,
        str(tmp_path / "no-camera.avi"),
        mqtt={"connect_timeout_seconds": 2, "reconnect_max_seconds": 4},
    )
    log = tmp_path / "d.log"
    daemon = run_daemon(config, log)
    try:
        assert wait_until(lambda: "no answer to the MQTT CONNECT within 2 s" in log.read_text(), 60), (
            log.read_text()
        )
        time.sleep(6)
        assert daemon.poll() is None
    finally:
        if daemon.poll() is None:
            daemon.terminate()
        daemon.wait(10)
        server.close()
    text = log.read_text()
    assert text.count("no answer to the MQTT CONNECT") == 1 and "Traceback" not in text
    assert server.accepted >= 2  # retried


@pytest.mark.slow
def test_two_daemons_with_the_same_device_id_say_so_and_back_off(tmp_path, broker, run_daemon):
    from tests.helpers import config_file

    daemons, logs = [], []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        config = config_file(
            folder, broker.port, str(folder / "no-camera.avi"), mqtt={"reconnect_max_seconds": 8}
        )
        logs.append(folder / "d.log")
        daemons.append(run_daemon(config, logs[-1]))
    try:
        assert wait_until(lambda: all("connected to MQTT broker" in log.read_text() for log in logs), 60)
        time.sleep(25)
        assert all(d.poll() is None for d in daemons)
    finally:
        for daemon in daemons:
            daemon.terminate()
            daemon.wait(10)
    texts = [log.read_text() for log in logs]
    named = sum(t.count("same client id 'fer-kiosk-svc'") for t in texts)
    assert 1 <= named <= 2 and all(t.count("same client id") <= 1 for t in texts), texts[0][-2000:]
    assert "mqtt.device_id" in "".join(texts) and "Traceback" not in "".join(texts)
    # The campaign saw 26 reconnects in 25 s; backing off makes a handful.
    reconnects = sum(t.count("(reconnect ") for t in texts)
    assert reconnects <= 12, reconnects
