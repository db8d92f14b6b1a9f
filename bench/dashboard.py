"""``python -m bench.dashboard``: what the dashboard costs and how fast a change reaches the page.

With a real Mosquitto, the dashboard process (its store in a temporary folder) and Debian's
Chromium (Playwright):

0. First load: the bytes the page's first load transfers (the page, its style, its script,
   the icon, and the first snapshot of the stream with every kiosk).
1. Fleet load: ``--devices`` simulated kiosks publish their state every second (and stats
   every 30 s, a visit summary now and then) for ``--seconds``; measured: the dashboard
   process's CPU (% of one core, from /proc) and RSS (peak), and in the browser the time
   each update takes to render, layout included (p50/p95).
2. Latency: the real daemon (``fer-kiosk run``) on a clip of visits publishes to the same
   broker; measured: from the time stamp of each state the daemon publishes to the moment
   the page has rendered it (same machine, same clock), p50/p95.

    python -m bench.dashboard [--devices 20] [--seconds 60] [--latency-seconds 40] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt

from bench.clips import visits_clip
from bench.harness import (
    BROWSER_ARGS,
    CHROMIUM,
    Broker,
    http_get,
    start_daemon,
    start_dashboard,
    stop_daemon,
    wait_until,
    write_config,
)
from bench.report import markdown_table

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def fake_state(device: str, rng: random.Random) -> dict:
    faces = [
        {
            "face_id": f"{device}-{i}",
            "emotion": rng.choice(EMOTIONS),
            "confidence": round(rng.uniform(0.3, 0.9), 4),
            "since": iso_now(),
        }
        for i in range(rng.randint(0, 3))
    ]
    levels = {e: round(rng.random() / 7, 4) for e in EMOTIONS}
    return {
        "v": 1,
        "device": device,
        "time": iso_now(),
        "status": "running",
        "face_count": len(faces),
        "dominant_emotion": faces[0]["emotion"] if faces else "none",
        "levels": levels,
        "faces": faces,
    }


def fake_visit(device: str, rng: random.Random) -> dict:
    return {
        "v": 1,
        "event_id": uuid.uuid4().hex,
        "type": "end",
        "device": device,
        "time": iso_now(),
        "face_id": f"{device}-v",
        "box": [0, 0, 1, 1],
        "emotion": "happy",
        "confidence": 0.6,
        "probabilities": {},
        "summary": {
            "first_seen": iso_now(),
            "last_seen": iso_now(),
            "duration_s": round(rng.uniform(5, 90), 1),
            "frames": 100,
            "dominant_emotion": rng.choice(EMOTIONS),
            "mean_probabilities": {},
            "emotion_seconds": {},
        },
    }


def publish_fleet(port: int, devices: int, seconds: float, stop: threading.Event) -> int:
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="bench-fleet")
    client.connect("127.0.0.1", port)
    client.loop_start()
    rng = random.Random(7)
    sent, deadline, tick = 0, time.monotonic() + seconds, 0
    while time.monotonic() < deadline and not stop.is_set():
        started = time.monotonic()
        for i in range(devices):
            name = f"kiosk-{i:02d}"
            if tick == 0:
                client.publish(f"fer-kiosk/{name}/availability", "online", qos=1, retain=True)
            client.publish(f"fer-kiosk/{name}/state", json.dumps(fake_state(name, rng)), qos=1, retain=True)
            sent += 1
            if tick % 30 == 0:
                client.publish(
                    f"fer-kiosk/{name}/stats", json.dumps({"version": "bench", "fps": 30.0}), qos=0
                )
            if rng.random() < 0.05:
                client.publish(f"fer-kiosk/{name}/events", json.dumps(fake_visit(name, rng)), qos=1)
        tick += 1
        stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))
    client.disconnect()
    client.loop_stop()
    return sent


def transferred(url: str, path: str) -> int:
    """The bytes a browser that takes gzip receives for ``path``."""
    request = urllib.request.Request(url + path, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return len(response.read())


def snapshot_bytes(url: str) -> int:
    """The bytes a browser receives for the stream's first snapshot: /api/fleet is the same
    JSON, sent as the stream is (gzip'd to a browser that takes it)."""
    return transferred(url, "/api/fleet")


def seed_store(path: Path, devices: int, days: int, per_day: int) -> None:
    """``days`` days of visits ending now, spread over the devices and the opening hours."""
    from dashboard.store import Store, visit_from_event

    store = Store(path)
    rng = random.Random(3)
    now = time.time()
    for day in range(days):
        batch = []
        for n in range(per_day):
            ended = now - day * 86400 - rng.uniform(0, 10 * 3600)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ended))
            event = fake_visit(f"kiosk-{n % devices:02d}", rng)
            event["summary"]["last_seen"] = event["summary"]["first_seen"] = stamp
            batch.append(visit_from_event(event["device"], event))
        store.add_visits(batch)
    store.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--latency-seconds", type=float, default=40)
    parser.add_argument(
        "--history-days",
        type=int,
        default=0,
        help="first fill the store with this many days of visits (a long-running counter's store)",
    )
    parser.add_argument("--visits-per-day", type=int, default=4000, help="with --history-days, for the fleet")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="fer-dashboard-bench-"))
    broker = Broker(work).start()
    if args.history_days:
        print(f"a store with {args.history_days} days of {args.visits_per_day} visits ...", file=sys.stderr)
        seed_store(work / "dashboard.sqlite3", args.devices, args.history_days, args.visits_per_day)
    dashboard, url, _ = start_dashboard(work, broker.port, store={"path": str(work / "dashboard.sqlite3")})
    figures: dict = {"load_before": os.getloadavg()}
    if args.history_days:
        started = time.monotonic()
        history = http_get(url + "/api/history") or b""
        figures["history"] = {
            "days": args.history_days,
            "visits": args.history_days * args.visits_per_day,
            "first_request_ms": round(1000 * (time.monotonic() - started), 1),
            "bytes": len(history),
            "rss_mb_after": round(memory_mb(dashboard.pid, "VmRSS"), 1),
            "store_mb": round((work / "dashboard.sqlite3").stat().st_size / 2**20, 1),
        }
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            sizes: dict[str, int] = {}
            page.on("requestfinished", lambda r: sizes.__setitem__(r.url, r.sizes()["responseBodySize"]))
            page.goto(url)
            assert wait_until(lambda: page.evaluate("window.__fer.snapshot"), 10)
            if not wait_until(lambda: any(u.endswith("/favicon.ico") for u in sizes), 5):
                sizes[url + "/favicon.ico"] = transferred(url, "/favicon.ico")  # headless may skip it
            figures["first_load"] = {
                "static_bytes": sum(sizes.values()),
                "files": {u.removeprefix(url): n for u, n in sizes.items()},
            }

            # 1. fleet load
            print(f"{args.devices} simulated kiosks for {args.seconds:.0f} s ...", file=sys.stderr)
            page.evaluate("window.__fer.updateMs = []; window.__fer.updates = 0")
            cpu0, t0 = cpu_seconds(dashboard.pid), time.monotonic()
            sent = publish_fleet(broker.port, args.devices, args.seconds, threading.Event())
            time.sleep(1)
            cpu1, t1 = cpu_seconds(dashboard.pid), time.monotonic()
            fleet = page.evaluate("window.__fer")
            tiles = page.evaluate("document.querySelectorAll('.tile').length")
            figures["fleet"] = {
                "devices": args.devices,
                "tiles": tiles,
                "states_sent": sent,
                "updates_rendered": fleet["updates"],
                "update_ms_p50": percentile(fleet["updateMs"], 0.5),
                "update_ms_p95": percentile(fleet["updateMs"], 0.95),
                "dashboard_cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 2),
                "dashboard_rss_mb": round(memory_mb(dashboard.pid, "VmRSS"), 1),
                "dashboard_peak_rss_mb": round(memory_mb(dashboard.pid, "VmHWM"), 1),
            }

            # 2. latency from the real daemon to the page
            print(f"the daemon on a clip for {args.latency_seconds:.0f} s ...", file=sys.stderr)
            page.evaluate("window.__fer.latencyMs = []")
            clip = visits_clip(work / "visits.avi", visits=3)
            daemon_config = write_config(
                work / "config.yaml",
                broker.port,
                "bench-kiosk",
                str(clip),
                camera={"loop": True},
                tracking={"heartbeat_seconds": 1.0},
                spool={"path": str(work / "spool")},
            )
            daemon = start_daemon(daemon_config, work / "daemon.log")
            time.sleep(args.latency_seconds)
            stop_daemon(daemon, 20)
            latency = page.evaluate("window.__fer.latencyMs")
            figures["latency"] = {
                "states": len(latency),
                "ms_p50": percentile(latency, 0.5),
                "ms_p95": percentile(latency, 0.95),
                "ms_max": percentile(latency, 1.0),
            }
            page.screenshot(path=str(work / "dashboard.png"), full_page=True)
            # the first load again, now with every kiosk in the stream's first snapshot
            figures["first_load"]["snapshot_bytes"] = snapshot_bytes(url)
            browser.close()
    finally:
        stop_daemon(dashboard, 15)
        broker.stop()
    figures["load_after"] = os.getloadavg()
    f, lat, first = figures["fleet"], figures["latency"], figures["first_load"]
    first_total = first["static_bytes"] + first["snapshot_bytes"]
    print(
        f"dashboard benchmark (load average {figures['load_before'][0]:.2f} before, "
        f"{figures['load_after'][0]:.2f} after; screenshot {work / 'dashboard.png'})"
    )
    print(
        markdown_table(
            ["target", "measured", "met"],
            [
                [
                    "page first load < 30 KB",
                    f"{first_total / 1024:.1f} KB: page, style, script, icon "
                    f"{first['static_bytes'] / 1024:.1f} KB "
                    f"+ first snapshot of {f['tiles']} kiosks {first['snapshot_bytes'] / 1024:.1f} KB",
                    _met(first_total, 30 * 1024 - 1),
                ],
                [
                    "render per update p95 <= 50 ms",
                    f"p95 {f['update_ms_p95']} ms, p50 {f['update_ms_p50']} ms "
                    f"({f['updates_rendered']} updates, {f['tiles']} tiles)",
                    _met(f["update_ms_p95"], 50),
                ],
                [
                    "dashboard RSS <= 70 MB",
                    f"{f['dashboard_rss_mb']} MB (peak {f['dashboard_peak_rss_mb']} MB)",
                    _met(f["dashboard_peak_rss_mb"], 70),
                ],
                [
                    f"dashboard CPU < 1 % of a core, {f['devices']} kiosks",
                    f"{f['dashboard_cpu_percent']} %",
                    _met(f["dashboard_cpu_percent"], 0.99),
                ],
                [
                    "daemon publish to page p95 < 200 ms",
                    f"p95 {lat['ms_p95']} ms, p50 {lat['ms_p50']} ms ({lat['states']} states)",
                    _met(lat["ms_p95"], 199),
                ],
            ],
        )
    )
    if "history" in figures:
        h = figures["history"]
        print(
            f"\nhistory view over a store of {h['visits']} visits ({h['days']} days, {h['store_mb']} MB): "
            f"first /api/history {h['first_request_ms']} ms, {h['bytes']} bytes; "
            f"RSS after it {h['rss_mb_after']} MB"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def _met(value: float | None, limit: float) -> str:
    return "?" if value is None else ("yes" if value <= limit else "no")


if __name__ == "__main__":
    sys.exit(main())
