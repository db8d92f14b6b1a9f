"""The dashboard: its fleet model on plain values, its server against a real Mosquitto, and
the page in a real browser (Debian's Chromium driven by Playwright) fed by the real daemon
running on a clip."""

from __future__ import annotations

import gzip
import json
import sqlite3
import time
import urllib.request
from datetime import date
from pathlib import Path

import pytest

from bench.harness import (
    http_get,
    start_dashboard,
    stop_daemon,
    wait_until,
)
from dashboard.fleet import Fleet
from dashboard.store import SCHEMA_VERSION, Store, StoreError
from tests.conftest import ROOT
from tests.helpers import NOW, browser_page, fer_kiosk, iso, publish, state, visit_end, wait_js


@pytest.fixture(autouse=True)
def own_state_dir(tmp_path, monkeypatch):
    """A dashboard started without store.path keeps its store in the user's state folder:
    here the test's own, never the real one."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def make_fleet(path=":memory:", keep: float = 1800.0) -> Fleet:
    return Fleet("fer-kiosk", Store(path), keep, NOW)


# ---- the fleet model, pure ----------------------------------------------------------------


def test_tiles_follow_availability_state_and_stats():
    fleet = make_fleet()
    assert fleet.apply("fer-kiosk/k1/availability", b"online", NOW) == "k1"
    assert fleet.apply("fer-kiosk/k1/state", state("k1", [("a-1", "happy", 0.8)]), NOW) == "k1"
    assert (
        fleet.apply("fer-kiosk/k1/stats", json.dumps({"version": "0.2.0", "fps": 29.5}).encode(), NOW) == "k1"
    )
    tile = fleet.tile("k1", NOW)
    assert tile["online"] is True and tile["face_count"] == 1 and tile["faces"][0]["emotion"] == "happy"
    assert tile["camera"] == {"ok": True, "text": "30 fps"} and tile["version"] == "0.2.0"
    camera = {
        "status": "offline",
        "cause": "not_found",
        "detail": "no such device (/dev/video0 does not exist)",
        "since": iso(),
    }
    fleet.apply("fer-kiosk/k1/state", state("k1", [], camera=camera), NOW)
    fleet.apply("fer-kiosk/k1/stats", json.dumps({"fps": 0}).encode(), NOW)
    tile = fleet.tile("k1", NOW)  # the daemon's own word wins over the stats' fps
    assert tile["camera"]["ok"] is False and tile["camera"]["text"].startswith("not found: no such device")
    fleet.apply(
        "fer-kiosk/k1/camera", json.dumps({**camera, "status": "online", "cause": None}).encode(), NOW
    )
    assert fleet.tile("k1", NOW)["camera"]["ok"] is True
    starting = {**camera, "cause": "starting", "detail": "opening camera 0"}
    fleet.apply("fer-kiosk/k1/camera", json.dumps(starting).encode(), NOW)
    assert fleet.tile("k1", NOW)["camera"] == {  # starting is no fault: neither ok nor bad
        "ok": None,
        "cause": "starting",
        "from_state": True,
        "text": "starting",
    }
    fleet.apply("fer-kiosk/k1/state", state("k1", [("a-1", "happy", 0.8)]), NOW)
    fleet.apply("fer-kiosk/k1/availability", b"offline", NOW)
    tile = fleet.tile("k1", NOW)  # offline: nobody, no emotion, camera unknown
    assert tile["online"] is False and tile["face_count"] == 0 and tile["faces"] == []
    assert tile["dominant_emotion"] == "none" and tile["camera"]["ok"] is None


def test_messages_that_are_not_ours_or_not_valid_change_nothing():
    fleet = make_fleet()
    for topic, payload in [
        ("other/k1/state", state("k1", [])),
        ("fer-kiosk/k1/state/extra", b"{}"),
        ("fer-kiosk/k1/state", b"not json"),
        ("fer-kiosk/k1/state", b"[1, 2]"),
        ("fer-kiosk/k1/availability", b"maybe"),
        ("fer-kiosk/k1/commands", b"{}"),
        ("fer-kiosk/k1/state", b""),
    ]:
        assert fleet.apply(topic, payload, NOW) is None, topic
    assert fleet.devices == {}


def test_today_counts_each_visit_once_and_only_todays(tmp_path):
    fleet = make_fleet(tmp_path / "store.sqlite3")
    fleet.apply("fer-kiosk/k1/events", visit_end("k1", "e1", 30.0, "happy"), NOW)
    fleet.apply("fer-kiosk/k1/events", visit_end("k1", "e1", 30.0, "happy"), NOW)  # at least once: again
    fleet.apply("fer-kiosk/k1/events", visit_end("k1", "e2", 10.0, "sad"), NOW)
    fleet.apply("fer-kiosk/k1/events", visit_end("k1", "e3", 50.0, "happy"), NOW)
    fleet.apply("fer-kiosk/k1/events", visit_end("k1", "old", 99.0, "angry", ended_ago=3 * 86400), NOW)
    # cut short by the daemon: kept, listed, never counted (its length is not the customer's)
    fleet.apply("fer-kiosk/k1/events", visit_end("k1", "cut", 2.0, "fear", ended_by="shutdown"), NOW)
    today = fleet.tile("k1", NOW)["today"]
    assert today["visits"] == 3 and today["median_seconds"] == 30.0
    assert today["emotion_share"] == {"happy": 0.667, "sad": 0.333}
    assert [v["duration_s"] for v in today["last_visits"]] == [2.0, 50.0, 10.0, 30.0]
    assert today["last_visits"][0]["ended_by"] == "shutdown"
    tomorrow = NOW + 86400
    assert fleet.roll_over(tomorrow) == ["k1"] and fleet.tile("k1", tomorrow)["today"]["visits"] == 0
    # a restart: a new fleet on the same store knows today's kiosk and its figures at once
    again = make_fleet(tmp_path / "store.sqlite3")
    assert list(again.devices) == ["k1"] and again.tile("k1", NOW)["today"] == today
    assert len(again.store.visits(date.fromtimestamp(NOW - 4 * 86400), date.fromtimestamp(NOW))) == 5


def test_alerts_are_listed_with_their_times_for_a_while_without_face_ids():
    fleet = make_fleet(keep=60)
    fleet.apply("fer-kiosk/k1/state", state("k1", [("a-1", "angry", 0.8), ("a-2", "happy", 0.9)]), NOW)
    raised = {
        "type": "raised",
        "alert_id": "al-1",
        "face_id": "a-1",
        "emotion": "angry",
        "since": iso(10),
        "probability": 0.8,
        "time": iso(4),
    }
    fleet.apply("fer-kiosk/k1/alerts", json.dumps(raised).encode(), NOW)
    tile = fleet.tile("k1", NOW)
    assert [a["alert_id"] for a in tile["alerts"]] == ["al-1"]
    assert "a-1" not in json.dumps(tile) and "a-2" not in json.dumps(tile)  # no face id leaves
    cleared = {**raised, "type": "cleared", "reason": "recovered", "time": iso(1)}
    fleet.apply("fer-kiosk/k1/alerts", json.dumps(cleared).encode(), NOW)
    tile = fleet.tile("k1", NOW)
    assert tile["alerts"] == []
    [recent] = tile["recent_alerts"]
    assert recent["reason"] == "recovered" and round(NOW - recent["raised"]) == 4
    assert round(NOW - recent["cleared"]) == 1 and round(NOW - recent["since"]) == 10
    assert fleet.expire_alerts(NOW + 30) == [] and fleet.expire_alerts(NOW + 61) == ["k1"]
    assert fleet.tile("k1", NOW + 61)["recent_alerts"] == []
    # an alert whose person left without a cleared message is closed, reason left
    fleet.apply("fer-kiosk/k1/alerts", json.dumps({**raised, "alert_id": "al-2"}).encode(), NOW)
    fleet.apply("fer-kiosk/k1/state", state("k1", [("a-2", "happy", 0.9)]), NOW)
    tile = fleet.tile("k1", NOW)
    assert tile["alerts"] == [] and tile["recent_alerts"][0]["reason"] == "left"
    # an older daemon's alert without an id: keyed by a digest, never by the face id
    legacy = {k: v for k, v in raised.items() if k != "alert_id"}
    fleet.apply("fer-kiosk/k1/alerts", json.dumps(legacy).encode(), NOW)
    stored = [row[0] for row in fleet.store._db.execute("SELECT alert_id FROM alerts")]
    assert len(stored) == 3 and not any("a-1" in key for key in stored)
    assert "a-1" not in json.dumps(fleet.tile("k1", NOW))


def test_a_retained_state_is_as_old_as_its_time_stamp():
    """A freshly started dashboard gets the kiosks' retained states: "updated" is when the
    kiosk said it, not when the dashboard subscribed."""
    fleet = make_fleet()
    old = json.loads(state("k1", [("a-1", "happy", 0.8)]))
    old["time"] = iso(600)
    fleet.apply("fer-kiosk/k1/state", json.dumps(old).encode(), NOW, retained=True)
    fleet.apply("fer-kiosk/k1/availability", b"online", NOW, retained=True)
    assert round(NOW - fleet.tile("k1", NOW)["last_update"]) == 600
    fleet.apply("fer-kiosk/k1/state", state("k1", []), NOW)
    assert fleet.tile("k1", NOW)["last_update"] == NOW


def test_the_store_is_versioned_wal_and_keeps_only_what_it_should(tmp_path):
    path = tmp_path / "store.sqlite3"
    store = Store(path, retention_days=30)
    mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal" and store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    fleet = Fleet("fer-kiosk", store, 60, NOW)
    for n, days_ago in enumerate((0, 1, 29, 31, 400)):
        fleet.apply("fer-kiosk/k1/events", visit_end("k1", f"e{n}", 10.0, "happy", days_ago * 86400), NOW)
    assert store.prune(NOW) == 2
    kept = store.visits(date.fromtimestamp(NOW - 500 * 86400), date.fromtimestamp(NOW))
    assert sorted(v.event_id for v in kept) == ["e0", "e1", "e2"]
    columns = {row[1] for row in store._db.execute("PRAGMA table_info(visits)")}
    assert not columns & {"face_id", "box", "probabilities"}  # summaries only
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(StoreError, match="newer"):
        Store(path)
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (x)")
    with pytest.raises(StoreError, match="not a dashboard store"):
        Store(other)


def test_the_config_is_typed_and_refuses_unknown_keys(tmp_path, monkeypatch):
    from dashboard.config import DashboardConfig, load_dashboard_config
    from edge.config import ConfigError

    monkeypatch.setenv("XDG_STATE_HOME", "/srv/state")
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert str(DashboardConfig().store_path) == "/srv/state/fer-kiosk/dashboard.sqlite3"
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/fer-kiosk-dashboard")
    assert str(DashboardConfig().store_path) == "/var/lib/fer-kiosk-dashboard/dashboard.sqlite3"
    assert DashboardConfig().client_id.startswith("fer-kiosk-dashboard-")
    # the example in deploy/ is the defaults, written out
    assert load_dashboard_config(ROOT / "deploy" / "dashboard.yaml") == DashboardConfig()
    config = tmp_path / "dashboard.yaml"
    config.write_text("store:\n  path: data/dash.sqlite3\n  retention_days: 30\nalerts:\n  keep_seconds: 5\n")
    loaded = load_dashboard_config(config)
    assert loaded.store_path == tmp_path / "data" / "dash.sqlite3" and loaded.alerts.keep_seconds == 5
    config.write_text("store:\n  retention_days: 0\n  colour: red\nalerts:\n  keep_seconds: soon\n")
    with pytest.raises(ConfigError) as err:
        load_dashboard_config(config)
    assert {e.split(":")[0] for e in err.value.errors} == {
        "store.retention_days",
        "store.colour",
        "alerts.keep_seconds",
    }


def test_one_slow_browser_is_dropped_alone_without_raising():
    from dashboard.config import DashboardConfig
    from dashboard.server import CLIENT_QUEUE, Hub, sse

    hub = Hub(DashboardConfig(), Store(":memory:"))
    slow, fast = hub.subscribe(), hub.subscribe()
    received = 0
    for n in range(CLIENT_QUEUE * 3):
        hub._broadcast(sse("devices", {"n": n}))
        hub.on_broker_status(n % 2 == 0, "flapping")  # paho's thread broadcasts too
        while fast.next(0) not in (None, b""):
            received += 1
    assert slow.closed.is_set() and slow.next(0) == b"" and hub.dropped == 1
    assert not fast.closed.is_set() and received == CLIENT_QUEUE * 6


# ---- the server, with a real broker -----------------------------------------------------


def test_server_serves_the_fleet_the_page_and_nothing_else(tmp_path, broker):
    publish(
        broker.port,
        [
            ("fer-kiosk/k1/availability", b"online", True),
            ("fer-kiosk/k1/state", state("k1", [("a-1", "sad", 0.6)]), True),
        ],
    )
    dashboard, url, log = start_dashboard(tmp_path, broker.port)
    try:
        assert wait_until(lambda: json.loads(http_get(url + "/api/fleet"))["devices"], 10), log.read_text()
        fleet = json.loads(http_get(url + "/api/fleet"))
        assert fleet["broker"]["connected"] and fleet["devices"][0]["faces"][0]["emotion"] == "sad"
        assert b"Counter dashboard" in http_get(url + "/")
        assert b"EventSource" in http_get(url + "/static/app.js")
        assert http_get(url + "/favicon.ico").startswith(b"<svg")
        request = urllib.request.Request(url + "/static/app.js", headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=5) as response:  # a browser gets it gzip'd
            assert response.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(response.read()) == http_get(url + "/static/app.js")
        history = json.loads(http_get(url + "/api/history?days=7"))
        assert len(history["days"]) == 7 and len(history["hours"]) == 24
        for bad in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/fleet.py", "/nothing"):
            assert http_get(url + bad) is None, bad  # 404 raises in urlopen
        # The page server is the standard library and paho: OpenCV and numpy (30 MB of a
        # 60 MB budget) are never loaded, not even through fer-kiosk's command line.
        mapped = Path(f"/proc/{dashboard.pid}/maps").read_text()
        assert "cv2" not in mapped and "numpy" not in mapped
    finally:
        assert stop_daemon(dashboard, 15) == 0, log.read_text()
    assert "Traceback" not in log.read_text()


def test_a_bad_dashboard_config_is_refused_with_exit_78(tmp_path):
    config = tmp_path / "dashboard.yaml"
    config.write_text("http:\n  port: 99999\n  colour: red\n")
    result = fer_kiosk("dashboard", "--config", str(config))
    assert result.returncode == 78
    assert (
        "http.port" in result.stderr and "http.colour" in result.stderr and "Traceback" not in result.stderr
    )


@pytest.mark.parametrize(
    "mqtt, expected",
    [
        ('  device_id: "a b/#"\n', "mqtt.device_id: 'a b/#' may contain only letters, digits, _ and -"),
        ("  tls:\n    enabled: true\n    key_file: client.key\n", "mqtt.tls.key_file: set only together"),
        ("  topic_prefix: /lobby/\n", "mqtt.topic_prefix: '/lobby/' may not contain # or + nor start"),
    ],
)
def test_broker_settings_the_daemon_refuses_the_dashboard_refuses_in_the_same_line(tmp_path, mqtt, expected):
    """One type for the broker settings, with its rules: the dashboard's mqtt section is
    checked as the daemon's, and refused (exit 78) in the daemon's words, one line."""
    from edge.config import ConfigError, load_config

    (tmp_path / "client.key").write_text("a key without its certificate\n")
    config = tmp_path / "dashboard.yaml"
    config.write_text("mqtt:\n" + mqtt)
    with pytest.raises(ConfigError) as daemon:
        load_config(config)
    assert len(daemon.value.errors) == 1 and daemon.value.errors[0].startswith(expected)
    result = fer_kiosk("dashboard", "--config", str(config))
    assert result.returncode == 78
    assert result.stderr.splitlines() == [f"error: invalid configuration {config}: {daemon.value.errors[0]}"]


# ---- the page in a real browser, fed by the real daemon -----------------------------------


@pytest.fixture
def page():
    with browser_page() as opened:
        yield opened


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


@pytest.mark.slow
def test_the_page_follows_the_daemon_on_a_clip(tmp_path, broker, page, run_daemon):
    from bench.clips import one_visit_clip
    from tests.helpers import alerting_config

    dashboard, url, dashboard_log = start_dashboard(tmp_path, broker.port)
    page.goto(url)
    wait_js(page, "window.__fer.snapshot === true")
    clip = one_visit_clip(tmp_path / "visit.avi")
    # a rule the astronaut's face meets, so the real daemon raises (and clears) an alert
    config = alerting_config(tmp_path, broker.port, clip)
    daemon_log = tmp_path / "daemon.log"
    daemon = run_daemon(config, daemon_log)
    tile = '.tile[data-device="test-kiosk"]'
    try:
        page.wait_for_selector(tile, timeout=30_000)
        page.wait_for_selector(f'{tile} [data-role="availability"]:text("online")', timeout=30_000)
        # the astronaut walks in: one person with an emotion, and after a second an alert
        page.wait_for_selector(f'{tile} [data-role="face-count"]:text("1 person now")', timeout=30_000)
        emotion = page.inner_text(f"{tile} .face .emotion")
        assert emotion.strip().lower() in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
        page.wait_for_selector(f"{tile} .alert", timeout=10_000)
        assert any(word in page.inner_text(f"{tile} .alert") for word in ("happy", "neutral"))
        page.screenshot(path=str(tmp_path / "dashboard-alert.png"))
        # she walks out: the alert clears, the visit counts
        page.wait_for_selector(f'{tile} [data-role="visits"]:text("1")', timeout=30_000)
        page.wait_for_selector(f"{tile} .alert", state="detached", timeout=10_000)
        assert page.inner_text(f'{tile} [data-role="face-count"]') == "0 people now"
    finally:
        assert stop_daemon(daemon) == 0, daemon_log.read_text()[-3000:]
    page.wait_for_selector(f'{tile} [data-role="availability"]:text("offline")', timeout=10_000)
    page.screenshot(path=str(tmp_path / "dashboard-offline.png"))
    figures = page.evaluate("window.__fer")
    assert stop_daemon(dashboard, 15) == 0, dashboard_log.read_text()
    assert figures["latencyMs"] and figures["updateMs"]
    print(
        f"\nscreenshots in {tmp_path}; publish-to-page latency p95 {p95(figures['latencyMs']):.0f} ms "
        f"({len(figures['latencyMs'])} states); render per update p95 {p95(figures['updateMs']):.1f} ms"
    )
    assert "Traceback" not in dashboard_log.read_text()


def test_the_page_marks_a_silent_device_stale(tmp_path, broker, page):
    publish(
        broker.port,
        [("fer-kiosk/k9/availability", b"online", True), ("fer-kiosk/k9/state", state("k9", []), True)],
    )
    dashboard, url, log = start_dashboard(tmp_path, broker.port, stale_seconds=2)
    try:
        page.goto(url)
        tile = '.tile[data-device="k9"]'
        page.wait_for_selector(f'{tile} [data-role="availability"]:text("online")', timeout=10_000)
        page.wait_for_selector(f'{tile} [data-role="availability"]:text("stale")', timeout=10_000)
    finally:
        assert stop_daemon(dashboard, 15) == 0, log.read_text()


def test_twenty_devices_fit_a_tablet_and_stay_responsive(tmp_path, broker, page):
    dashboard, url, log = start_dashboard(tmp_path, broker.port)
    try:
        page.set_viewport_size({"width": 1280, "height": 800})  # a 10" tablet, landscape
        page.goto(url)
        wait_js(page, "window.__fer.snapshot === true")
        for second in range(5):
            publish(
                broker.port,
                [
                    (
                        f"fer-kiosk/kiosk-{i:02d}/state",
                        state(
                            f"kiosk-{i:02d}", [(f"f{i}", ("happy", "sad", "neutral")[(i + second) % 3], 0.7)]
                        ),
                        True,
                    )
                    for i in range(20)
                ],
            )
            time.sleep(1)
        wait_js(page, "document.querySelectorAll('.tile').length === 20")
        # every tile is at least as wide as a phone, none overflows the page
        widths = page.eval_on_selector_all(
            ".tile", "tiles => tiles.map(t => t.getBoundingClientRect().width)"
        )
        assert min(widths) >= 300 and page.evaluate(
            "document.documentElement.scrollWidth <= window.innerWidth"
        )
        page.screenshot(path=str(tmp_path / "dashboard-20.png"), full_page=True)
        figures = page.evaluate("window.__fer")
        print(
            f"\n20 devices: render per update p95 {p95(figures['updateMs']):.1f} ms "
            f"over {figures['updates']} updates"
        )
    finally:
        assert stop_daemon(dashboard, 15) == 0, log.read_text()


def test_the_dashboard_keeps_its_session_and_watch_does_not():
    """The dashboard counts visits: a stable id and a kept session, events at QoS 1 only.
    ``fer-kiosk watch`` shows what happens while it runs: a fresh session each time."""
    from dashboard.config import DashboardConfig
    from dashboard.mqtt import Subscription
    from edge.config import MqttConfig
    from edge.mqtt.subscriber import make_subscriber

    config = DashboardConfig()
    fleet = make_fleet()
    subscription = Subscription(config.mqtt, config.client_id, fleet.topics(), print, print)
    assert subscription.client._clean_session is False
    assert subscription.client._client_id == config.client_id.encode() == DashboardConfig().client_id.encode()
    assert {topic: qos for topic, qos in fleet.topics() if qos == 1} == {"fer-kiosk/+/events": 1}
    watch = make_subscriber(MqttConfig(), ["fer-kiosk/#"], print, "fer-kiosk-watch")
    assert watch._clean_session is True
