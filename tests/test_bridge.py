"""A fleet past one broker: deploy/mosquitto/bridge.conf between two real Mosquittos.

The kiosk's daemon publishes to its local broker; the bridge forwards its topics over TLS
to a central broker that runs the project's ACL; the dashboard subscribes there with its
own read-only login. A visit summary made while the uplink is down arrives once after it
is back.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from bench.harness import (
    Broker,
    Subscriber,
    make_certificates,
    start_daemon,
    start_dashboard,
    stop_daemon,
    wait_until,
)
from tests.conftest import ROOT
from tests.test_daemon_e2e import write_config

pytestmark = pytest.mark.slow

BRIDGE = ROOT / "deploy/mosquitto/bridge.conf"
ACL = ROOT / "deploy/mosquitto/acl"


def bridge_section(central_port: int, ca: Path, password: str) -> str:
    """The example's bridge, as an administrator fills it in (the listener and persistence
    lines above it are the test broker's own)."""
    text = BRIDGE.read_text()
    text = text[text.index("connection central") :]
    text = text.replace("address central.example.org:8883", f"address localhost:{central_port}")
    text = text.replace("bridge_cafile /etc/mosquitto/certs/central-ca.crt", f"bridge_cafile {ca}")
    text = text.replace("remote_password CHANGE-ME", f"remote_password {password}")
    return text.replace("restart_timeout 2 60", "restart_timeout 1 2") + "max_queued_messages 100000\n"


class CentralSubscriber:
    """The dashboard's login on the central broker, with a persistent session: what is
    published while it reconnects after the broker's restart is kept for it."""

    def __init__(self, port: int, ca: Path):
        self.events: list[dict] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id="central-collector",
            clean_session=False,
        )
        self.client.username_pw_set("dashboard", "dash-pass")
        self.client.tls_set(ca_certs=str(ca))
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("fer-kiosk/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("localhost", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        if message.topic.endswith("/events"):
            with self._lock:
                self.events.append(json.loads(message.payload))

    def ends(self) -> list[str]:
        with self._lock:
            return [e["event_id"] for e in self.events if e["type"] == "end"]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_bridge_forwards_a_kiosk_and_delivers_what_waited_during_an_outage(tmp_path):
    from bench.clips import one_visit_clip

    (tmp_path / "central").mkdir()
    (tmp_path / "kiosk").mkdir()
    certs = make_certificates(tmp_path / "central")
    passwords = tmp_path / "central/passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "kiosk-01", "kiosk-pass"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "dashboard", "dash-pass"], check=True)
    os.chmod(passwords, 0o600)
    central = Broker(
        tmp_path / "central",
        persistent=True,
        extra_config=(
            f"password_file {passwords}\nacl_file {ACL}\ncafile {certs['ca.crt']}\n"
            f"certfile {certs['server.crt']}\nkeyfile {certs['server.key']}\n"
        ),
    )
    central.config_path.write_text(
        central.config_path.read_text().replace("allow_anonymous true", "allow_anonymous false")
    )
    central.start()
    kiosk = Broker(
        tmp_path / "kiosk",
        persistent=True,
        extra_config=bridge_section(central.port, certs["ca.crt"], "kiosk-pass"),
    ).start()

    credentials = tmp_path / "dashboard-credentials"
    credentials.write_text("username=dashboard\npassword=dash-pass\n")
    credentials.chmod(0o600)
    dashboard, url, dashboard_log = start_dashboard(
        tmp_path,
        central.port,
        mqtt={
            "host": "localhost",
            "port": central.port,
            "credentials_file": str(credentials),
            "tls": {"enabled": True, "ca_file": str(certs["ca.crt"])},
        },
    )
    collector = CentralSubscriber(central.port, certs["ca.crt"])
    local = Subscriber(kiosk.port, "fer-kiosk/kiosk-01/events")
    clip = one_visit_clip(tmp_path / "visit.avi")  # played in a loop: a visit about every 8 s
    config = write_config(
        tmp_path / "config.yaml",
        kiosk.port,
        str(clip),
        mqtt={"device_id": "kiosk-01"},
        camera={"loop": True},
        spool={"path": str(tmp_path / "spool")},
    )
    daemon_log = tmp_path / "daemon.log"
    daemon = start_daemon(config, daemon_log)
    try:
        # 1. through the bridge: the central dashboard sees the kiosk and its first visit
        def device() -> dict | None:
            with urllib.request.urlopen(url + "/api/fleet", timeout=2) as response:
                devices = json.loads(response.read())["devices"]
            return next((d for d in devices if d["device"] == "kiosk-01" and d["online"]), None)

        assert wait_until(device, 30), (
            dashboard_log.read_text()[-2000:] + central.log_path.read_text()[-2000:]
        )
        assert wait_until(lambda: collector.ends(), 40), daemon_log.read_text()[-2000:]

        # 2. the uplink goes down; a visit ends meanwhile, delivered to the kiosk's broker
        def local_ends() -> set[str]:
            return {e["event_id"] for e in local.json_on("/events") if e["type"] == "end"}

        central.stop()
        before = local_ends()
        assert wait_until(lambda: local_ends() - before, 40), daemon_log.read_text()[-2000:]
        waited = sorted(local_ends() - before)
        assert waited[0] not in collector.ends()
        # 3. the uplink is back: what waited arrives at the centre, once
        central.start()
        assert wait_until(lambda: set(waited) <= set(collector.ends()), 30), kiosk.log_path.read_text()[
            -3000:
        ]
        assert wait_until(lambda: device() is not None, 20)
        time.sleep(2)  # a duplicate would follow at once
        ends = collector.ends()
        assert all(ends.count(event_id) == 1 for event_id in waited), ends
    finally:
        stop_daemon(daemon)
        collector.close()
        local.close()
        stop_daemon(dashboard, 15)
        kiosk.stop()
        central.stop()
    assert "Traceback" not in daemon_log.read_text() + dashboard_log.read_text()
