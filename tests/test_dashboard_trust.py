"""The dashboard the counter can trust (issue 31), against a real Mosquitto and, for the page,
Debian's Chromium driven by Playwright: no visit missed across broker restarts timed
against the kiosk's flush, figures unchanged by a dashboard restart, true states during an
outage, the history view, an alert's lifetime, tablet and phone widths, and one slow
browser that costs only itself. Screenshots go to the test's folder (printed) and, with
FER_SCREENSHOTS=DIR, to DIR too."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from bench.harness import (
    EDGE,
    Broker,
    checkout_env,
    free_port,
    http_get,
    merged,
    stop_daemon,
    wait_until,
)
from dashboard.store import Store, visit_from_event
from tests.conftest import ROOT
from tests.helpers import browser_page, iso, publish, state, visit_end, wait_js


@pytest.fixture(autouse=True)
def own_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # never the real state folder


@pytest.fixture
def page():
    with browser_page() as opened:
        yield opened


TILE = '.tile[data-device="{}"]'


class Dashboard:
    """``fer-kiosk dashboard`` on a fixed port and store, so it can be stopped and started
    again where the page expects it."""

    def __init__(self, workdir: Path, broker_port: int, **settings):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "dashboard.log"
        self.config = workdir / "dashboard.yaml"
        base = {
            "http": {"port": self.port},
            "mqtt": {"host": "127.0.0.1", "port": broker_port, "client_id": "dashboard-under-test"},
            "store": {"path": str(workdir / "dashboard.sqlite3")},
        }
        sections = {k: v for k, v in settings.items() if isinstance(v, dict)}
        scalars = {k: v for k, v in settings.items() if not isinstance(v, dict)}
        self.config.write_text(yaml.safe_dump({**merged(base, sections), **scalars}))
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> Dashboard:
        with self.log.open("a") as out:
            self.process = subprocess.Popen(
                [*EDGE, "dashboard", "--config", str(self.config)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=checkout_env(),
            )
        if not wait_until(lambda: http_get(self.url + "/healthz") == b"ok\n", timeout):
            self.process.kill()
            raise AssertionError(f"the dashboard did not answer: {self.log.read_text()[-2000:]}")
        return self

    def connected(self) -> Dashboard:
        """Once subscribed: what kiosks publish from now on reaches it."""
        assert wait_until(lambda: self.fleet().get("broker", {}).get("connected"), 15), self.log.read_text()
        time.sleep(0.3)  # the SUBACK follows the CONNACK
        return self

    def fleet(self) -> dict:
        return json.loads(http_get(self.url + "/api/fleet") or b"{}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            assert stop_daemon(self.process, 15) == 0, self.log.read_text()[-3000:]
        self.process = None


def shot(browser_page, tmp_path: Path, name: str, **options) -> Path:
    path = tmp_path / f"{name}.png"
    browser_page.screenshot(path=str(path), **options)
    if os.environ.get("FER_SCREENSHOTS"):
        Path(os.environ["FER_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ["FER_SCREENSHOTS"]) / path.name)
    print(f"screenshot {path}")
    return path


def tile_of(dashboard: Dashboard, device: str) -> dict | None:
    return next((d for d in dashboard.fleet().get("devices", []) if d["device"] == device), None)


def now_iso(seconds_ago: float = 0.0) -> str:
    moment = datetime.fromtimestamp(time.time() - seconds_ago, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def alert(kind: str, alert_id: str, face: str, seconds_ago: float, **extra) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "type": kind,
            "device": "k1",
            "time": now_iso(0),
            "alert_id": alert_id,
            "face_id": face,
            "emotion": "angry",
            "probability": 0.71,
            "since": now_iso(seconds_ago),
            **extra,
        }
    ).encode()


# ---- no visit missed: 5 broker restarts timed against the kiosk's flush ---------------------


def connections(broker: Broker, client_id: str) -> list[str]:
    """The broker log's lines for each accepted connection of ``client_id``, in order."""
    return [
        line
        for line in broker.log_path.read_text(errors="replace").splitlines()
        if "New client connected" in line and f" as {client_id} " in line
    ]


@pytest.mark.slow
def test_no_visit_is_missed_across_five_broker_restarts(tmp_path, run_daemon):
    """The real daemon plays visits on a loop; five times the broker stops while a visit ends
    (its summary waits in the daemon's spool) and restarts; the daemon (reconnecting within
    a second) flushes the summary before the dashboard (its next attempt 15 s after the loss) is back.
    Every summary the broker took is counted exactly once."""
    from bench.clips import visits_clip

    broker = Broker(tmp_path, persistent=True).start()
    dashboard = Dashboard(tmp_path, broker.port, mqtt={"reconnect_max_seconds": 30}).start()
    clip = visits_clip(tmp_path / "visits.avi", 3, visit_seconds=2.5, gap_seconds=2.0)
    spool = tmp_path / "spool"
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "camera": {"source": str(clip), "loop": True},
                "mqtt": {
                    "host": "127.0.0.1",
                    "port": broker.port,
                    "device_id": "k1",
                    "reconnect_max_seconds": 1,
                },
                "spool": {"path": str(spool)},
                "homeassistant": {"enabled": False},
            }
        )
    )
    truth = Truth(broker.port)
    daemon = run_daemon(config, tmp_path / "daemon.log")
    kept_ids = lambda: {v.event_id for v in stored(tmp_path)}  # noqa: E731
    held = lambda: [p for p in spool.glob("*.json")] if spool.exists() else []  # noqa: E731
    counted = lambda: (tile_of(dashboard, "k1") or {}).get("today", {}).get("visits", 0)  # noqa: E731
    kiosk_first = 0
    try:
        assert wait_until(lambda: counted() >= 1, 90), dashboard.log.read_text()[-2000:]
        for restart in range(5):
            broker.stop()
            lost = time.monotonic()
            assert wait_until(lambda: len(held()) >= 1, 30), f"restart {restart}: no summary held"
            # the dashboard's attempts come 1, 3, 7, 15 s after the loss (paho's backoff,
            # doubling up to 30 s): back at 9 s, the broker sees the kiosk's flush first
            time.sleep(max(0.0, lost + 9.0 - time.monotonic()))
            kiosk_before = len(connections(broker, "fer-kiosk-k1"))
            dash_before = len(connections(broker, "dashboard-under-test"))
            broker.start()
            assert wait_until(lambda: not held(), 30), f"restart {restart}: the spool was not flushed"
            flushed_at = time.monotonic()
            assert wait_until(lambda: len(connections(broker, "dashboard-under-test")) > dash_before, 40)
            back_after = time.monotonic() - flushed_at
            kiosk_first += len(connections(broker, "fer-kiosk-k1")) > kiosk_before and back_after > 0.2
            print(f"restart {restart + 1}: spool flushed {back_after:.1f} s before the dashboard was back")
            time.sleep(1)
    finally:
        assert stop_daemon(daemon, 30) == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    assert wait_until(lambda: truth.summaries() and set(truth.summaries()) <= kept_ids(), 20)
    time.sleep(2)
    dashboard.stop()
    truth.close()
    broker.stop()
    sent = truth.summaries()
    kept = [v.event_id for v in stored(tmp_path)]
    assert len(kept) == len(set(kept)) and set(kept) == set(sent), (len(kept), len(set(sent)))
    assert kiosk_first == 5, f"only {kiosk_first} of 5 restarts had the flush before the dashboard"
    print(f"{len(set(sent))} summaries sent, {len(kept)} kept once each; flush first in {kiosk_first} of 5")


def stored(workdir: Path) -> list:
    store = Store(workdir / "dashboard.sqlite3", readonly=True)
    try:
        return store.visits(date.today() - timedelta(days=1), date.today() + timedelta(days=1))
    finally:
        store.close()


class Truth:
    """An independent reader of the summaries: plain paho, its own persistent session."""

    def __init__(self, port: int):
        import paho.mqtt.client as mqtt

        self._ids: list[str] = []
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="truth", clean_session=False
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("fer-kiosk/+/events", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        event = json.loads(message.payload)
        if event.get("type") == "end":
            self._ids.append(event["event_id"])

    def summaries(self) -> list[str]:
        return list(self._ids)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ---- the page in a real browser -------------------------------------------------------------


def test_an_outage_shows_unknown_not_offline_and_recovers(tmp_path, page):
    broker = Broker(tmp_path, persistent=True).start()
    dashboard = Dashboard(tmp_path, broker.port).start().connected()
    publish(
        broker.port,
        [
            ("fer-kiosk/k1/availability", b"online", True),
            ("fer-kiosk/k1/state", state("k1", [("a-1", "happy", 0.8)]), True),
            ("fer-kiosk/k1/events", visit_end("k1", "e1", 42.0, "happy"), False),
        ],
    )
    tile = TILE.format("k1")
    try:
        page.goto(dashboard.url)
        page.wait_for_selector(f'{tile} [data-role="availability"]:text("ONLINE")', timeout=10_000)
        page.wait_for_selector(f'{tile} [data-role="visits"]:text("1")', timeout=10_000)
        assert "1 visit today" in page.inner_text("#summary")  # not "1 visits"
        broker.stop()
        page.wait_for_selector("#broker:text('broker lost since')", timeout=10_000)
        badge = page.inner_text(f'{tile} [data-role="availability"]')
        assert badge.startswith("unknown since") and "OFFLINE" not in page.inner_text("#devices")
        assert "lost its MQTT broker" in page.inner_text("#banner")
        assert "kiosks online" not in page.inner_text("#summary")  # no "0/1 online" while we cannot know
        assert page.inner_text(f'{tile} [data-role="visits"]') == "1"  # the last known, greyed
        shot(page, tmp_path, "dashboard-outage")
        broker.start()
        page.wait_for_selector(f'{tile} [data-role="availability"]:text("ONLINE")', timeout=20_000)
        assert page.is_hidden("#banner") and page.inner_text("#summary").startswith("1/1 kiosks online")
    finally:
        dashboard.stop()
        broker.stop()


def test_a_dashboard_restart_changes_no_figure(tmp_path, broker, page):
    messages = [("fer-kiosk/k1/availability", b"online", True), ("fer-kiosk/k1/state", state("k1", []), True)]
    for n, (duration, emotion) in enumerate([(30, "happy"), (12, "sad"), (75, "happy"), (20, "neutral")]):
        messages.append(("fer-kiosk/k1/events", visit_end("k1", f"v{n}", duration, emotion, n * 60), False))
    messages.append(("fer-kiosk/k1/events", visit_end("k1", "cut", 3, "fear", ended_by="shutdown"), False))
    messages.append(("fer-kiosk/k1/events", visit_end("k1", "lastweek", 50, "sad", 6 * 86400), False))
    dashboard = Dashboard(tmp_path, broker.port).start().connected()
    publish(broker.port, messages)
    tile = TILE.format("k1")
    try:
        assert wait_until(lambda: (tile_of(dashboard, "k1") or {}).get("today", {}).get("visits") == 4, 10)
        page.goto(dashboard.url)
        page.wait_for_selector(f'{tile} [data-role="visits"]:text("4")', timeout=10_000)
        before_text = page.inner_text(f"{tile} .today")
        before = tile_of(dashboard, "k1")["today"], history(dashboard)
        assert before[0]["median_seconds"] == 25.0  # the cut-short visit is not in the median
        assert "not counted" in before_text
        dashboard.stop()
        page.wait_for_selector("#banner:text('not answering')", timeout=10_000)
        assert page.inner_text(f'{tile} [data-role="availability"]').startswith("unknown since")
        shot(page, tmp_path, "dashboard-down")
        dashboard.start()
        page.wait_for_selector("#banner", state="hidden", timeout=15_000)
        page.wait_for_selector(f'{tile} [data-role="availability"]:text("ONLINE")', timeout=10_000)
        after = tile_of(dashboard, "k1")["today"], history(dashboard)
        assert after == before and page.inner_text(f"{tile} .today") == before_text
        assert after[1]["days"][-7]["visits"] == 1  # last week's visit, kept
    finally:
        dashboard.stop()


def history(dashboard: Dashboard) -> dict:
    body = json.loads(http_get(dashboard.url + "/api/history"))
    body.pop("server_time")
    return body


def seed_history(path: Path, days: int = 28) -> int:
    """Visits over the last ``days`` days (a few per day, more after a "second desk" two
    weeks ago), some cut short, and alerts: what the history view draws."""
    store = Store(path)
    now = time.time()
    emotions = ("happy", "neutral", "sad", "angry", "surprise")
    count = 0
    for day in range(days):
        for n in range(3 + (day % 5) + (6 if day < 14 else 0)):
            ended = now - day * 86400 - n * 1500
            event = json.loads(visit_end("k1", f"d{day}-{n}", 20 + 7 * (n % 6), emotions[(day + n) % 5]))
            event["summary"]["last_seen"] = iso(time.time() - ended)
            event["summary"]["first_seen"] = iso(time.time() - ended + 20)
            if n == 0:
                event["summary"]["ended_by"] = "reload"
            visit = visit_from_event("k1" if n % 3 else "k2", event)
            count += store.add_visit(visit) and visit.counted
        for n in range(day % 3):
            raised = now - day * 86400 - n * 3000
            store.alert_raised("k1", f"al-{day}-{n}", "angry", 0.7, raised - 5, raised)
            store.alert_cleared(f"al-{day}-{n}", raised + 12, "recovered")
    store.close()
    return count


def test_the_history_view_draws_its_charts_itself(tmp_path, broker, page):
    counted = seed_history(tmp_path / "dashboard.sqlite3")
    dashboard = Dashboard(tmp_path, broker.port).start()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto(dashboard.url + "/#history")
        page.wait_for_selector('[data-chart="days"] svg rect', timeout=10_000)
        h = page.evaluate("window.__fer.history")
        assert sum(d["visits"] for d in h["days"]) == counted and len(h["days"]) == 28
        assert sum(x["visits"] for x in h["hours"]) == h["days"][-1]["visits"]
        assert h["days"][-1]["alerts"] == 0 and h["days"][-2]["alerts"] == 1
        # every bar carries its number: no value only in a tooltip
        days_chart = page.inner_text('[data-chart="days"]')
        for d in h["days"]:
            assert str(d["visits"]) in days_chart
        assert page.locator('[data-chart="median"] text.v').count() == 28
        assert page.locator('[data-chart="alerts"] text.v').count() == sum(
            1 for d in h["days"] if d["alerts"]
        )
        assert "Happy" in page.inner_text("#legend") and "Alerts" in page.inner_text("#legend")
        shot(page, tmp_path, "dashboard-history", full_page=True)
        page.select_option("#hist-device", "k2")
        wait_js(page, "window.__fer.history.device === 'k2'")
        assert page.evaluate("window.__fer.history.days.every(d => d.alerts === 0)")
        assert all(url.startswith(dashboard.url) for url in requests), requests  # nothing from outside
    finally:
        dashboard.stop()


def test_an_alert_stays_listed_after_it_clears_for_the_configured_while(tmp_path, broker, page):
    dashboard = Dashboard(tmp_path, broker.port, alerts={"keep_seconds": 6}).start()
    tile = TILE.format("k1")
    try:
        page.goto(dashboard.url)
        publish(
            broker.port,
            [
                ("fer-kiosk/k1/availability", b"online", True),
                ("fer-kiosk/k1/state", state("k1", [("41b80d-13", "angry", 0.71)]), True),
                ("fer-kiosk/k1/alerts", alert("raised", "al-1", "41b80d-13", 6), False),
            ],
        )
        page.wait_for_selector(f"{tile} .alert", timeout=10_000)
        text = page.inner_text(f"{tile} .alert")
        assert text.startswith("⚠ A customer has looked angry for ") and "41b80d" not in page.content()
        assert "alerting" in page.get_attribute(tile, "class")
        # the alert colour is not the offline colour
        alert_colour = page.eval_on_selector(f"{tile} .alert", "e => getComputedStyle(e).borderColor")
        shot(page, tmp_path, "dashboard-alert-open")
        publish(
            broker.port,
            [
                ("fer-kiosk/k1/alerts", alert("cleared", "al-1", "41b80d-13", 8, reason="left"), False),
                ("fer-kiosk/k1/state", state("k1", []), True),
            ],
        )
        page.wait_for_selector(f"{tile} .alert", state="detached", timeout=10_000)
        cleared_at = time.monotonic()
        page.wait_for_selector(f'{tile} [data-role="face-count"]:text("0 people now")', timeout=5_000)
        recent = page.inner_text(f'{tile} [data-role="recent-alerts"]')
        assert "A customer looked angry for" in recent and "raised" in recent and "cleared" in recent
        assert "they left" in recent
        shot(page, tmp_path, "dashboard-alert-cleared")
        page.wait_for_selector(f'{tile} [data-role="recent-alerts"]', state="detached", timeout=15_000)
        listed = time.monotonic() - cleared_at
        assert 3.0 < listed < 10.0, listed
        # an offline kiosk: its own colour, not the alert's
        publish(broker.port, [("fer-kiosk/k1/availability", b"offline", True)])
        page.wait_for_selector(f'{tile} [data-role="availability"]:text("OFFLINE")', timeout=10_000)
        offline_colour = page.eval_on_selector(tile, "e => getComputedStyle(e).borderLeftColor")
        assert offline_colour != alert_colour, (offline_colour, alert_colour)
        assert page.inner_text(f'{tile} [data-role="camera"]') == "camera: unknown"
        assert page.inner_text(f'{tile} [data-role="face-count"]') == "0 people now"
    finally:
        dashboard.stop()


@pytest.mark.parametrize("width,height,name", [(768, 1024, "tablet"), (390, 844, "phone")])
def test_tablet_and_phone_widths_are_readable(tmp_path, broker, page, width, height, name):
    messages = []
    for i, device in enumerate(("kiosk-01", "kiosk-02", "kiosk-03")):
        faces = [("f1", "happy", 0.83), ("f2", "surprise", 0.55)][: 2 - i % 2] if i < 2 else []
        messages += [
            (f"fer-kiosk/{device}/availability", b"online", True),
            (f"fer-kiosk/{device}/state", state(device, faces), True),
            (f"fer-kiosk/{device}/events", visit_end(device, f"{device}-1", 42.0, "happy"), False),
            (f"fer-kiosk/{device}/events", visit_end(device, f"{device}-2", 95.0, "disgust"), False),
        ]
    dashboard = Dashboard(tmp_path, broker.port).start().connected()
    publish(broker.port, messages)
    responses: list[tuple[str, int]] = []
    page.on("response", lambda r: responses.append((r.url, r.status)))
    try:
        page.set_viewport_size({"width": width, "height": height})
        page.goto(dashboard.url)
        page.wait_for_selector(f'{TILE.format("kiosk-03")} [data-role="visits"]:text("2")', timeout=10_000)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        levels = page.inner_text(f"{TILE.format('kiosk-01')} .levels")
        for full in ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"):
            assert full in levels
        assert "%" in levels and "83 %" in page.inner_text(f"{TILE.format('kiosk-01')} .faces")
        share = page.inner_text(f'{TILE.format("kiosk-01")} [data-role="share"]')
        assert "Happy 50 %" in share and "Disgust 50 %" in share
        # nothing cut: every label fits its box
        cut = page.evaluate(
            "[...document.querySelectorAll('.level span, .face .emotion, .legend span, .badge')]"
            ".filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)"
        )
        assert cut == []
        wait_until(lambda: any(url.endswith("/favicon.ico") for url, _ in responses), 5)
        assert all(status < 400 for _, status in responses), responses
        shot(page, tmp_path, f"dashboard-{name}", full_page=True)
        page.goto(dashboard.url + "/#history")
        page.wait_for_selector('[data-chart="hours"] svg text.v', timeout=10_000)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        # the charts' numbers are drawn at the width shown: legible on a phone too
        heights = page.eval_on_selector_all("svg text", "ts => ts.map(t => t.getBoundingClientRect().height)")
        assert min(heights) >= 10, heights
        shot(page, tmp_path, f"dashboard-{name}-history", full_page=True)
    finally:
        dashboard.stop()


# ---- one slow browser ------------------------------------------------------------------------


def test_a_browser_that_never_reads_is_dropped_while_another_keeps_receiving(tmp_path, broker):
    dashboard = Dashboard(tmp_path, broker.port, max_updates_per_second=100).start()
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", dashboard.port))
    slow.sendall(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
    fast = socket.create_connection(("127.0.0.1", dashboard.port))
    fast.sendall(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")
    fast.settimeout(5)
    received = bytearray()
    crowd = [(f"face-{n}", ("happy", "sad", "neutral")[n % 3], 0.5) for n in range(30)]  # big tiles
    deadline = time.monotonic() + 90
    try:
        while "dropped a browser" not in dashboard.log.read_text() and time.monotonic() < deadline:
            publish(
                broker.port,
                [
                    (f"fer-kiosk/k{i:02d}/state", state(f"k{i:02d}", crowd, round=time.time()), False)
                    for i in range(20)
                ],
            )
            fast.setblocking(False)
            while True:  # the fast one reads all it is given
                try:
                    chunk = fast.recv(1 << 20)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                received += chunk
        assert "dropped a browser" in dashboard.log.read_text(), "the slow browser was never dropped"
        before = received.count(b"event: devices")
        publish(broker.port, [("fer-kiosk/k00/state", state("k00", [("a", "sad", 0.6)]), False)])
        fast.settimeout(5)
        fast.setblocking(True)
        deadline = time.monotonic() + 5
        while received.count(b"event: devices") == before and time.monotonic() < deadline:
            received += fast.recv(1 << 20)
        assert received.count(b"event: devices") > before  # the other browser still gets updates
        assert http_get(dashboard.url + "/healthz") == b"ok\n"
    finally:
        slow.close()
        fast.close()
        dashboard.stop()
    assert "Traceback" not in dashboard.log.read_text()


# ---- the box's command line ------------------------------------------------------------------


def test_export_writes_the_summaries_of_a_date_range_as_csv(tmp_path):
    import csv

    seed_history(tmp_path / "dashboard.sqlite3")
    config = tmp_path / "dashboard.yaml"
    config.write_text("store:\n  path: dashboard.sqlite3\n")  # relative to the config file
    start, end = date.today() - timedelta(days=6), date.today() - timedelta(days=1)
    out = tmp_path / "week.csv"

    def export(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*EDGE, "dashboard", "export", *args],
            cwd=ROOT,
            env=checkout_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    result = export("--config", str(config), "--from", str(start), "--to", str(end), "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    store = Store(tmp_path / "dashboard.sqlite3", readonly=True)
    expected = store.visits(start, end)
    assert [r["event_id"] for r in rows] == [v.event_id for v in expected] and rows
    assert {r["ended_by"] for r in rows} == {"left", "reload"}
    assert all(r["counted"] == ("0" if r["ended_by"] == "reload" else "1") for r in rows)
    assert "face_id" not in rows[0] and set(rows[0]) >= {"first_seen", "duration_s", "dominant_emotion"}
    assert f"{len(rows)} visit summaries from {start} to {end}" in result.stderr
    one = export("--store", str(tmp_path / "dashboard.sqlite3"), "--from", str(end), "--device", "k2")
    assert one.returncode == 0 and one.stdout.count("\n") == 1 + len(store.visits(end, end, "k2"))
    assert export("--store", str(tmp_path / "dashboard.sqlite3"), "--from", "yesterday").returncode != 0
    missing = export("--store", str(tmp_path / "none.sqlite3"))
    assert missing.returncode == 1 and "no such store" in missing.stderr and "Traceback" not in missing.stderr


def test_two_dashboards_with_one_client_id_are_told_apart_in_the_log(tmp_path, broker):
    """The broker lets one client per id in: two dashboards configured alike would take the
    session from each other for ever; the dashboard says so and backs off instead."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Dashboard(tmp_path / "a", broker.port).start()
    second = Dashboard(tmp_path / "b", broker.port).start()
    said = "another client is most likely connected with the dashboard's client id 'dashboard-under-test'"
    try:
        assert wait_until(lambda: said in first.log.read_text() + second.log.read_text(), 60)
    finally:
        first.stop()
        second.stop()


def test_a_kiosk_whose_bridge_is_down_reads_unreachable_with_nobody_shown(tmp_path, broker, page):
    """Issue 32: the centre's broker keeps the kiosk's retained `online` and state when its
    box dies; the bridge's last will ("0" on <prefix>/<device>/bridge) is what the page goes by."""
    person = state("k1", [("f-1", "happy", 0.8)])
    messages = [("fer-kiosk/k1/availability", b"online", True), ("fer-kiosk/k1/state", person, True)]
    messages.append(("fer-kiosk/k1/bridge", b"1", True))
    dashboard = Dashboard(tmp_path, broker.port).start().connected()
    publish(broker.port, messages)
    tile = TILE.format("k1")
    try:
        page.goto(dashboard.url)
        page.wait_for_selector(f'{tile} [data-role="availability"]:text("ONLINE")', timeout=10_000)
        publish(broker.port, [("fer-kiosk/k1/bridge", b"0", True)])
        page.wait_for_selector(f'{tile} [data-role="availability"]:text("UNREACHABLE")', timeout=10_000)
        text = page.inner_text(tile)
        assert "bridge is down" in text and "Happy" not in text.split("today")[0]
        shot(page, tmp_path, "bridge-down")
    finally:
        dashboard.stop()
