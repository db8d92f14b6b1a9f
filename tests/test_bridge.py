"""A fleet past one broker: deploy/mosquitto/bridge.conf between two real Mosquittos.

The kiosk box runs Debian's stock mosquitto.conf (a copy of the one the installed package
ships, its paths moved under a scratch folder) with the drop-in installed beside it as its
header says. The daemon publishes to the box's broker; the bridge forwards the kiosk's topics
and Home Assistant's discovery over TLS to a central broker that runs the project's ACL, and
brings Home Assistant's status back; the dashboard and a Home Assistant stand-in subscribe
there with their own logins. A visit summary made while the uplink is down arrives once after
it is back; a box that dies or goes silent is seen as gone at the centre.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pwd
import re
import shlex
import signal
import subprocess
import tarfile
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from bench.harness import (
    Broker,
    Subscriber,
    free_port,
    make_certificates,
    mosquitto_binary,
    start_dashboard,
    stop_daemon,
    wait_until,
)
from edge.contract import EMOTIONS
from edge.mqtt.homeassistant import discovery_messages
from edge.mqtt.payloads import Topics
from tests.conftest import ROOT
from tests.helpers import write_config

BRIDGE = ROOT / "deploy/mosquitto/bridge.conf"
ACL = ROOT / "deploy/mosquitto/acl"
STOCK = Path("/etc/mosquitto/mosquitto.conf")  # Debian's conffile
DROP_IN = "etc/mosquitto/conf.d/fer-kiosk-bridge.conf"  # where the header installs it
KEEPALIVE = 5  # the test's bridge keepalive (the file's 15 s; Mosquitto's minimum is 5)
# Mosquitto 2.0 drops a silent client once more than 1.5 keepalives (rounded down) have
# passed since its last packet, checking every 6 s: at most this long after the box fell
# silent, plus a second of rounding. 15 s for the test's 5 s, 30 s for the file's 15 s.
SILENT_DEATH_SECONDS = KEEPALIVE * 3 // 2 + 1 + 6 + 1
KIOSK = "kiosk-01"
PASSWORDS = {"kiosk-01": "kiosk-pass", "dashboard": "dash-pass", "homeassistant": "ha-pass"}


# -- Debian's stock mosquitto.conf and the drop-in beside it --------------------------------


def debian_stock_conf() -> str:
    """mosquitto.conf as the installed mosquitto package ships it: the conffile when dpkg
    says it is unchanged, else the copy inside the package apt downloaded."""
    query = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}\\n${Conffiles}\\n", "mosquitto"], capture_output=True, text=True
    )
    if query.returncode != 0:
        pytest.skip("Debian's mosquitto package is not installed (apt-get install mosquitto)")
    version, *conffiles = query.stdout.splitlines()
    recorded = {line.split()[0]: line.split()[1] for line in conffiles if len(line.split()) >= 2}
    if STOCK.exists() and hashlib.md5(STOCK.read_bytes()).hexdigest() == recorded.get(str(STOCK)):
        return STOCK.read_text()
    for deb in sorted(Path("/var/cache/apt/archives").glob("mosquitto_*.deb")):
        field = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True)
        if field.stdout.strip() == version:
            data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True)
            with tarfile.open(fileobj=io.BytesIO(data.stdout)) as archive:
                return archive.extractfile("./etc/mosquitto/mosquitto.conf").read().decode()
    pytest.skip(f"{STOCK} was changed locally and the mosquitto {version} package is not in apt's cache")


def options(text: str) -> set[str]:
    return {line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith("#")}


def header_commands(prefix: str) -> list[str]:
    """The drop-in header's command lines that start with ``prefix`` (comment marks removed)."""
    lines = [line.lstrip("#").strip() for line in BRIDGE.read_text().splitlines() if line.startswith("#")]
    return [line for line in lines if line.startswith(prefix)]


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} is not in the drop-in exactly once"
    return text.replace(old, new)


def install_box(root: Path, central_port: int, ca: Path, keepalive: int = KEEPALIVE) -> Box:
    """A kiosk box under ``root``: Debian's stock mosquitto.conf with only its absolute paths
    moved under ``root``, and the drop-in installed and filled in as its header says. The
    test's own changes are the listener's port, a faster keepalive and reconnection, and a
    conf.d file that keeps the broker running as this user and logs everything."""
    stock = debian_stock_conf()
    config = re.sub(r"(?m)^(\w+ (?:\w+ )?)(/\S*)", lambda m: f"{m[1]}{root}{m[2]}", stock)
    assert options(config) == options(stock)
    assert all(str(root) in line for line in config.splitlines() if " /" in line and line[:1] != "#")
    for folder in ("etc/mosquitto/conf.d", "run/mosquitto", "var/lib/mosquitto", "var/log/mosquitto"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "etc/mosquitto/mosquitto.conf").write_text(config)

    # sudo install -m 0640 -o root -g mosquitto deploy/mosquitto/bridge.conf /etc/mosquitto/conf.d/...
    [install] = header_commands("sudo install ")
    assert shlex.split(install)[-2:] == ["deploy/mosquitto/bridge.conf", "/" + DROP_IN]
    mode = shlex.split(install)[shlex.split(install).index("-m") + 1]
    # sudoedit: the device id (here the example's own), the central broker, the password, its CA
    text = BRIDGE.read_text()
    text = replace_once(text, "address central.example.org:8883", f"address localhost:{central_port}")
    text = replace_once(text, "remote_password CHANGE-ME", f"remote_password {PASSWORDS[KIOSK]}")
    text = replace_once(text, "bridge_cafile /etc/mosquitto/certs/central-ca.crt", f"bridge_cafile {ca}")
    port = free_port()
    text = replace_once(text, "listener 1883 127.0.0.1", f"listener {port} 127.0.0.1")
    text = replace_once(text, "keepalive_interval 15", f"keepalive_interval {keepalive}")
    text = replace_once(text, "restart_timeout 2 60", "restart_timeout 1 2")
    (root / DROP_IN).write_text(text)
    (root / DROP_IN).chmod(int(mode, 8))
    (root / "etc/mosquitto/conf.d/test.conf").write_text(
        f"user {pwd.getpwuid(os.geteuid()).pw_name}\nlog_type all\n"
    )
    return Box(root, port)


class Box(Broker):
    """The box's Mosquitto, started as systemd starts Debian's: ``mosquitto -c
    /etc/mosquitto/mosquitto.conf`` (under the scratch root). Its configuration is the
    installed files, so Broker's own is not written."""

    def __init__(self, root: Path, port: int):
        binary = mosquitto_binary()
        if binary is None:
            pytest.skip("mosquitto is not installed")
        self.binary, self.workdir, self.port, self.process = binary, root, port, None
        self.config_path = root / "etc/mosquitto/mosquitto.conf"
        self.log_path = root / "var/log/mosquitto/mosquitto.log"

    def signal(self, number: int) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.wait()
        self.process = None


# -- the central broker and who reads it ------------------------------------------------------


def start_central(directory: Path) -> tuple[Broker, dict[str, Path]]:
    """The central broker: the project's ACL, a password per login, TLS, no anonymous access."""
    directory.mkdir()
    certs = make_certificates(directory)
    passwords = directory / "passwd"
    for number, (user, password) in enumerate(PASSWORDS.items()):
        create = ["-c"] if number == 0 else []
        subprocess.run(["mosquitto_passwd", "-b", *create, str(passwords), user, password], check=True)
    os.chmod(passwords, 0o600)
    central = Broker(
        directory,
        persistent=True,
        extra_config=(
            f"password_file {passwords}\nacl_file {ACL}\ncafile {certs['ca.crt']}\n"
            f"certfile {certs['server.crt']}\nkeyfile {certs['server.key']}\n"
        ),
    )
    central.config_path.write_text(
        central.config_path.read_text().replace("allow_anonymous true", "allow_anonymous false")
    )
    return central.start(), certs


class CentralClient:
    """A login on the central broker that records every message under ``topics`` with the
    time it arrived; with a persistent session (``clean_session=False``), what is published
    while it reconnects after the broker's restart is kept for it."""

    def __init__(self, port: int, ca: Path, user: str, topics: list[str], client_id: str):
        self.messages: list[tuple[float, str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.client.username_pw_set(user, PASSWORDS[user])
        self.client.tls_set(ca_certs=str(ca))
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.client.on_message = self._on_message
        self.client.connect("localhost", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append((time.monotonic(), message.topic, message.payload, bool(message.retain)))

    def on(self, topic: str, since: float = 0.0) -> list[bytes]:
        with self._lock:
            return [p for t, top, p, _ in self.messages if top == topic and t >= since]

    def ends(self) -> list[str]:
        with self._lock:
            events = [json.loads(p) for _, t, p, _ in self.messages if t.endswith("/events")]
        return [e["event_id"] for e in events if e["type"] == "end"]

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def home_assistant_available(config: dict, messages: list[tuple[str, bytes]]) -> bool:
    """Whether Home Assistant shows an entity of this discovery config as available after
    ``messages`` (topic, payload, in arrival order): its availability list, each entry's
    value_template rendered with Jinja as Home Assistant does, mode ``latest``."""
    jinja2 = pytest.importorskip("jinja2", reason="jinja2 renders the templates as Home Assistant would")
    assert config.get("availability_mode", "latest") == "latest"
    entries = {entry["topic"]: entry for entry in config["availability"]}
    available = False  # Home Assistant's start: unavailable until a topic says otherwise
    for topic, payload in messages:
        entry = entries.get(topic)
        if entry is None:
            continue
        value = payload.decode()
        if "value_template" in entry:
            value = jinja2.Environment().from_string(entry["value_template"]).render(value=value)
        if value == entry.get("payload_available", "online"):
            available = True
        elif value == entry.get("payload_not_available", "offline"):
            available = False
    return available


def fleet_device(url: str, device: str) -> dict | None:
    with urllib.request.urlopen(url + "/api/fleet", timeout=2) as response:
        devices = json.loads(response.read())["devices"]
    return next((d for d in devices if d["device"] == device), None)


def start_central_dashboard(tmp_path: Path, central: Broker, ca: Path):
    credentials = tmp_path / "dashboard-credentials"
    credentials.write_text(f"username=dashboard\npassword={PASSWORDS['dashboard']}\n")
    credentials.chmod(0o600)
    return start_dashboard(
        tmp_path,
        central.port,
        mqtt={
            "host": "localhost",
            "port": central.port,
            "credentials_file": str(credentials),
            "tls": {"enabled": True, "ca_file": str(ca)},
        },
    )


def start_kiosk(tmp_path: Path, box: Box, run_daemon):
    """The daemon on the box, on a looped recording: a visit about every 8 s."""
    from bench.clips import one_visit_clip

    clip = one_visit_clip(tmp_path / "visit.avi")
    config = write_config(
        tmp_path / "config.yaml",
        box.port,
        str(clip),
        mqtt={"device_id": KIOSK},
        camera={"loop": True},
        spool={"path": str(tmp_path / "spool")},
    )
    log = tmp_path / "daemon.log"
    return run_daemon(config, log), log


# -- the tests ----------------------------------------------------------------------------------


def test_the_drop_in_repeats_nothing_that_debian_s_stock_file_sets():
    stock = debian_stock_conf()
    assert not options(BRIDGE.read_text()) & options(stock), "the drop-in repeats a setting of the main file"
    # what the header says the box needs from the main file, checked with the header's command
    [check] = header_commands("grep -Ex ")
    argv = shlex.split(check)
    assert argv[-1] == str(STOCK)
    found = subprocess.run(argv[:-1], input=stock, capture_output=True, text=True, check=True).stdout
    assert found.splitlines() == [
        "persistence true",
        "persistence_location /var/lib/mosquitto/",
        "include_dir /etc/mosquitto/conf.d",
    ]


@pytest.mark.slow
def test_the_drop_in_starts_a_stock_debian_mosquitto_with_persistence(tmp_path):
    box = install_box(tmp_path / "box", free_port(), tmp_path / "no-ca.crt")  # no centre: it retries
    box.start()
    try:
        with_retained = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
        with_retained.connect("127.0.0.1", box.port)
        with_retained.loop_start()
        with_retained.publish(
            "fer-kiosk/kiosk-01/availability", b"online", qos=1, retain=True
        ).wait_for_publish(5)
        with_retained.disconnect()
        with_retained.loop_stop()
    finally:
        box.stop()
    log = box.log_path.read_text()
    assert f"Opening ipv4 listen socket on port {box.port}" in log and "Connecting bridge" in log, log[-2000:]
    # persistence comes from the stock file: the retained message outlives a restart
    assert (tmp_path / "box/var/lib/mosquitto/mosquitto.db").exists()
    box.start()
    try:
        sub = Subscriber(box.port, "fer-kiosk/#")
        retained = ("fer-kiosk/kiosk-01/availability", b"online", True)
        assert sub.wait_for(lambda: retained in sub.messages, 5), sub.messages
        sub.close()
    finally:
        box.stop()
    # the setup is faithful: the old drop-in's own persistence_location stops this Mosquitto
    (tmp_path / "box/etc/mosquitto/conf.d/old.conf").write_text(f"persistence_location {tmp_path}/\n")
    refused = subprocess.run(
        [box.binary, "-c", str(box.config_path)], capture_output=True, text=True, timeout=10
    )
    assert refused.returncode != 0 and "Duplicate persistence_location" in refused.stderr + refused.stdout


@pytest.mark.slow
def test_bridge_forwards_a_kiosk_and_delivers_what_waited_during_an_outage(tmp_path, run_daemon):
    central, certs = start_central(tmp_path / "central")
    box = install_box(tmp_path / "box", central.port, certs["ca.crt"]).start()
    dashboard, url, dashboard_log = start_central_dashboard(tmp_path, central, certs["ca.crt"])
    collector = CentralClient(
        central.port, certs["ca.crt"], "dashboard", ["fer-kiosk/#"], "central-collector"
    )
    local = Subscriber(box.port, "fer-kiosk/kiosk-01/events")
    daemon, daemon_log = start_kiosk(tmp_path, box, run_daemon)
    try:
        # 1. through the bridge: the central dashboard sees the kiosk and its first visit
        def device() -> dict | None:
            tile = fleet_device(url, KIOSK)
            return tile if tile and tile["online"] else None

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
        assert wait_until(lambda: set(waited) <= set(collector.ends()), 30), box.log_path.read_text()[-3000:]
        assert wait_until(lambda: device() is not None, 20)
        time.sleep(2)  # a duplicate would follow at once
        ends = collector.ends()
        assert all(ends.count(event_id) == 1 for event_id in waited), ends
    finally:
        stop_daemon(daemon)
        collector.close()
        local.close()
        stop_daemon(dashboard, 15)
        box.stop()
        central.stop()
    assert "Traceback" not in daemon_log.read_text() + dashboard_log.read_text()


def test_home_assistant_availability_follows_the_bridge():
    """The discovery config's availability, as Home Assistant reads it: the bridge's "0"
    takes the kiosk away, its "1" alone never brings back a kiosk whose daemon stopped."""
    topics = Topics(f"fer-kiosk/{KIOSK}")
    config = json.loads(discovery_messages("homeassistant", KIOSK, topics, EMOTIONS, "0", "m")[0].payload)
    availability, bridge = topics.availability, f"{topics.base}/bridge"

    def available(*messages: tuple[str, bytes]) -> bool:
        return home_assistant_available(config, list(messages))

    assert available((availability, b"online"))
    assert not available((availability, b"online"), (bridge, b"0"))  # the box is gone
    # it comes back: "1", then the box's broker sends the retained availability again
    assert not available((availability, b"online"), (bridge, b"0"), (bridge, b"1"))
    assert available((availability, b"online"), (bridge, b"0"), (bridge, b"1"), (availability, b"online"))
    assert not available((availability, b"offline"), (bridge, b"1"))  # a stopped daemon stays away
    assert available((bridge, b"1"), (availability, b"online"))
    assert not available((availability, b"online"), (availability, b"offline"))  # no bridge: as before


def test_the_dashboard_shows_a_kiosk_whose_bridge_is_down_as_unreachable():
    from dashboard.fleet import Fleet
    from dashboard.store import Store

    now = time.time()
    fleet = Fleet("fer-kiosk", Store(":memory:"), now=now)
    assert ("fer-kiosk/+/bridge", 0) in fleet.topics()
    state = {
        "v": 1,
        "device": KIOSK,
        "time": "2026-11-24T09:15:20.101Z",
        "status": "running",
        "face_count": 1,
        "dominant_emotion": "happy",
        "levels": {"happy": 0.83},
        "faces": [
            {"face_id": "a-1", "emotion": "happy", "confidence": 0.83, "since": "2026-11-24T09:15:02.317Z"}
        ],
    }
    base = f"fer-kiosk/{KIOSK}"
    fleet.apply(f"{base}/availability", b"online", now)
    fleet.apply(f"{base}/state", json.dumps(state).encode(), now)
    fleet.apply(f"{base}/bridge", b"1", now)
    tile = fleet.tile(KIOSK, now)
    assert tile["online"] is True and tile["bridge"] is True and tile["face_count"] == 1
    # the box is gone: its retained availability and state at the centre still say otherwise
    assert fleet.apply(f"{base}/bridge", b"0", now + 20) == KIOSK
    tile = fleet.tile(KIOSK, now + 20)
    assert tile["online"] is False and tile["bridge"] is False
    assert (tile["face_count"], tile["faces"], tile["dominant_emotion"], tile["levels"]) == (
        0,
        [],
        "none",
        {},
    )
    assert tile["last_update"] == now  # the "0" is the centre's word, not the kiosk's
    # back: "1", then its own availability and state count again
    fleet.apply(f"{base}/bridge", b"1", now + 40)
    assert fleet.tile(KIOSK, now + 40)["online"] is True and fleet.tile(KIOSK, now + 40)["face_count"] == 1
    assert fleet.apply(f"{base}/bridge", b"up", now) is None  # not a bridge's notification
    # a kiosk without a bridge: as before
    fleet.apply("fer-kiosk/kiosk-03/availability", b"online", now)
    assert fleet.tile("kiosk-03", now)["online"] is True and fleet.tile("kiosk-03", now)["bridge"] is None


@pytest.mark.slow
def test_home_assistant_crosses_the_bridge_and_the_centre_sees_a_box_die(tmp_path, run_daemon):
    central, certs = start_central(tmp_path / "central")
    box = install_box(tmp_path / "box", central.port, certs["ca.crt"]).start()
    dashboard, url, dashboard_log = start_central_dashboard(tmp_path, central, certs["ca.crt"])
    # Home Assistant's login at the centre: it reads the kiosks and the discovery configs
    home = CentralClient(
        central.port, certs["ca.crt"], "homeassistant", ["fer-kiosk/#", "homeassistant/#"], "home-assistant"
    )
    topics = Topics(f"fer-kiosk/{KIOSK}")
    expected = {m.topic for m in discovery_messages("homeassistant", KIOSK, topics, EMOTIONS, "0", "m")}
    bridge_topic = f"{topics.base}/bridge"
    daemon, daemon_log = start_kiosk(tmp_path, box, run_daemon)
    local = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="box-tool")
    local.connect("127.0.0.1", box.port)
    local.loop_start()

    def logs() -> str:
        return (
            daemon_log.read_text()[-2000:]
            + box.log_path.read_text()[-3000:]
            + central.log_path.read_text()[-3000:]
        )

    def discovered(since: float = 0.0) -> set[str]:
        return {topic for topic in expected if home.on(topic, since)}

    def availability_messages() -> list[tuple[str, bytes]]:
        with home._lock:
            return [(t, p) for _, t, p, _ in home.messages if t in (topics.availability, bridge_topic)]

    try:
        # 1. out: the daemon's discovery configs, its camera and the bridge's "1" reach the centre
        assert wait_until(lambda: discovered() == expected, 40), logs()
        assert wait_until(lambda: home.on(topics.camera), 10), logs()
        assert json.loads(home.on(topics.camera)[-1])["status"] in ("online", "offline")
        assert wait_until(lambda: home.on(bridge_topic), 10) and home.on(bridge_topic)[-1] == b"1"
        config = json.loads(home.on(sorted(expected)[0])[-1])
        # ...and discovery published by hand on the box too; another kiosk's never crosses
        for device in (KIOSK, "kiosk-02"):
            local.publish(f"homeassistant/sensor/fer-kiosk_{device}/x/config", b"{}", qos=1, retain=True)
        assert wait_until(lambda: home.on(f"homeassistant/sensor/fer-kiosk_{KIOSK}/x/config"), 10)
        time.sleep(1)
        assert not home.on("homeassistant/sensor/fer-kiosk_kiosk-02/x/config")

        # 2. in: Home Assistant's birth message at the centre makes the box's daemon publish again
        born = time.monotonic()
        home.publish("homeassistant/status", b"online")
        assert wait_until(lambda: discovered(born) == expected, 15), logs()

        # 3. the box goes silent (a power cut, a cable): the centre's broker notices the bridge's
        # missing keepalives and publishes its last will; the dashboard and Home Assistant follow
        def someone_there() -> bool:
            tile = fleet_device(url, KIOSK)
            return bool(tile and tile["online"] and tile["face_count"] >= 1)

        assert wait_until(someone_there, 40), dashboard_log.read_text()[-2000:]
        assert home_assistant_available(config, availability_messages())
        silent = time.monotonic()
        box.signal(signal.SIGSTOP)
        assert wait_until(lambda: b"0" in home.on(bridge_topic, silent), SILENT_DEATH_SECONDS), logs()
        seen = next(
            t for t, top, p, _ in list(home.messages) if top == bridge_topic and p == b"0" and t >= silent
        )
        print(f"silent box: the centre published its bridge's 0 after {seen - silent:.1f} s")
        assert json.loads(home.on(topics.state)[-1])["face_count"] >= 1  # what the centre last heard

        def gone() -> bool:
            tile = fleet_device(url, KIOSK)
            return bool(
                tile
                and tile["online"] is False
                and tile["face_count"] == 0
                and not tile["faces"]
                and tile["dominant_emotion"] == "none"
            )

        assert wait_until(gone, 2), fleet_device(url, KIOSK)
        assert not home_assistant_available(config, availability_messages())

        # 4. the box is back: "1", then its retained availability again
        box.signal(signal.SIGCONT)
        assert wait_until(lambda: home_assistant_available(config, availability_messages()), 20), logs()
        assert wait_until(lambda: (fleet_device(url, KIOSK) or {}).get("online") is True, 5)

        # 5. the box's broker is killed (the system still up): its connection closes at once
        killed = time.monotonic()
        box.kill()
        assert wait_until(lambda: b"0" in home.on(bridge_topic, killed), 3), logs()
        assert wait_until(gone, 2), fleet_device(url, KIOSK)
        assert not home_assistant_available(config, availability_messages())
    finally:
        if box.process is not None:
            box.signal(signal.SIGCONT)
        local.loop_stop()
        stop_daemon(daemon)
        home.close()
        stop_daemon(dashboard, 15)
        box.stop()
        central.stop()
    assert "Traceback" not in daemon_log.read_text() + dashboard_log.read_text()
