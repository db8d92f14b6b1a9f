"""Helpers the tests share (builders of configs and payloads, a browser page, a tracker
driver), in one module: no test module imports another. The daemon, broker and
subscriber harness that benchmarks use too is bench/harness.py; fixtures are in conftest.py.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from bench import harness
from bench.harness import BROWSER_ARGS, CHROMIUM, merged, wait_until
from edge.contract import EMOTIONS
from tests.conftest import ROOT

# from test_dashboard.py
NOW = time.time()


# from test_dashboard.py
def iso(seconds_ago: float = 0.0) -> str:
    moment = datetime.fromtimestamp(NOW - seconds_ago, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# from test_dashboard.py
def state(device: str, faces: list[tuple[str, str, float]], status: str = "running", **extra) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "device": device,
            "time": iso(),
            "status": status,
            "face_count": len(faces),
            "dominant_emotion": faces[0][1] if faces else "none",
            "levels": {"happy": 0.5},
            "faces": [{"face_id": f, "emotion": e, "confidence": c, "since": iso(5)} for f, e, c in faces],
            **extra,
        }
    ).encode()


# from test_dashboard.py
def visit_end(
    device: str, event_id: str, duration: float, emotion: str, ended_ago: float = 0.0, ended_by: str = "left"
) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "event_id": event_id,
            "type": "end",
            "device": device,
            "time": iso(ended_ago),
            "face_id": "f-1",
            "box": [0, 0, 10, 10],
            "emotion": emotion,
            "confidence": 0.7,
            "probabilities": {},
            "summary": {
                "ended_by": ended_by,
                "first_seen": iso(ended_ago + duration),
                "last_seen": iso(ended_ago),
                "duration_s": duration,
                "frames": 10,
                "dominant_emotion": emotion,
                "mean_probabilities": {},
                "emotion_seconds": {},
            },
        }
    ).encode()


# from test_dashboard.py
def publish(port: int, messages: list[tuple[str, bytes, bool]]) -> None:
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    for topic, payload, retain in messages:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


# from test_dashboard.py
@contextlib.contextmanager
def browser_page():
    """A page in Debian's Chromium (skips the test without Playwright or Chromium)."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (tests/run.sh installs it)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield browser.new_page(viewport={"width": 1024, "height": 768})
        browser.close()


# from test_dashboard.py
def wait_js(page, expression: str, timeout: float = 10.0) -> None:
    """Polls a JavaScript expression from outside the page: Playwright's wait_for_function
    would evaluate it inside, which the page's Content-Security-Policy (rightly) forbids."""
    assert wait_until(lambda: page.evaluate(expression), timeout), (
        f"not true within {timeout} s: {expression}"
    )


# from test_service.py
SCHEMAS = {
    n: json.loads((ROOT / "docs" / "schema" / f"{n}.schema.json").read_text())
    for n in ("event", "state", "stats")
}


# from test_service.py
def config_file(tmp_path: Path, port: int, source: str, **sections) -> Path:
    """tmp_path/config.yaml for device svc: quick camera retries and reconnects, stats every second."""
    defaults = {
        "camera": {"retry_initial_seconds": 0.5, "retry_max_seconds": 1.0},
        "mqtt": {"reconnect_max_seconds": 2, "stats_interval_seconds": 1},
        "spool": {"path": str(tmp_path / "spool")},
    }
    return harness.write_config(tmp_path / "config.yaml", port, "svc", source, **merged(defaults, sections))


# from test_daemon_e2e.py
def write_config(path: Path, port: int, source: str, **sections) -> Path:
    """A config for device test-kiosk: quick camera retries, a heartbeat every second."""
    defaults = {
        "camera": {"retry_initial_seconds": 0.5, "retry_max_seconds": 2.0},
        "tracking": {"heartbeat_seconds": 1.0},
    }
    return harness.write_config(path, port, "test-kiosk", source, **merged(defaults, sections))


def alerting_config(folder: Path, port: int, clip: Path, hold_seconds: float = 1.0, **sections) -> Path:
    """A config (folder/config.yaml, spool in folder/spool) whose alert rule the astronaut's
    face of bench.clips meets, so that a real daemon raises the alert and clears it when the
    visit ends."""
    rule = {
        "emotions": ["happy", "neutral"],
        "min_probability": 0.3,
        "hold_seconds": hold_seconds,
        "clear_seconds": 0.5,
    }
    return write_config(
        folder / "config.yaml",
        port,
        str(clip),
        **merged({"spool": {"path": str(folder / "spool")}, "rules": {"alerts": rule}}, sections),
    )


# from test_tracking.py
def p(label: str, confidence: float = 0.9) -> np.ndarray:
    probs = np.full(7, (1 - confidence) / 6)
    probs[EMOTIONS.index(label)] = confidence
    return probs


# from test_tracking.py
def run(tracker, frames, fps=30.0):
    """frames: list of lists of (box, probs); returns all events with their frame index."""
    out = []
    for i, detections in enumerate(frames):
        t = i / fps
        for event in tracker.update(detections, t, 1_700_000_000 + t):
            out.append((i, event))
    return out


def fer_kiosk(*args: str, timeout: float = 60, **options) -> subprocess.CompletedProcess:
    """``python -m edge ARGS`` from the checkout, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        **options,
    )
