import json
import subprocess
import sys
import time

import paho.mqtt.client as mqtt

from edge.tools.watch import format_message
from tests.conftest import ROOT


def test_format_lines_for_events_state_and_stats():
    event = {
        "type": "end",
        "time": "2026-11-24T09:15:41.002Z",
        "device": "k1",
        "face_id": "a-1",
        "emotion": "happy",
        "confidence": 0.83,
        "box": [1, 2, 3, 4],
        "summary": {"duration_s": 37.6, "frames": 1102, "dominant_emotion": "happy"},
    }
    line = format_message("fer-kiosk/k1/events", json.dumps(event).encode())
    assert line.startswith("09:15:41 k1 end") and "visit 37.6 s, 1102 frames, mostly happy" in line
    state = {
        "time": "2026-11-24T09:15:41.002Z",
        "device": "k1",
        "status": "running",
        "face_count": 1,
        "faces": [{"face_id": "a-1", "emotion": "sad", "confidence": 0.5}],
    }
    assert "1 face(s) a-1 sad 0.50" in format_message("fer-kiosk/k1/state", json.dumps(state).encode())
    assert format_message("fer-kiosk/k1/availability", b"online").endswith("online")
    assert "not json" in format_message("fer-kiosk/k1/events", b"not json")


def test_camera_and_stats_read_as_words_not_json():
    offline = {
        "v": 1,
        "device": "k1",
        "time": "2026-11-24T09:15:41.002Z",
        "status": "offline",
        "cause": "not_found",
        "detail": "no such device (/dev/video0 does not exist: no camera plugged in?)",
        "since": "2026-11-24T09:15:40.900Z",
    }
    line = format_message("fer-kiosk/k1/camera", json.dumps(offline).encode())
    assert line == (
        "09:15:41 k1 camera offline (not_found): no such device (/dev/video0 does not exist: "
        "no camera plugged in?)"
    )
    online = {**offline, "status": "online", "cause": None, "detail": "camera 0: 640x480 frames"}
    assert format_message("fer-kiosk/k1/camera", json.dumps(online).encode()).endswith(
        "k1 camera online: camera 0: 640x480 frames"
    )
    stats = {"v": 1, "device": "k1", "time": "2026-11-24T09:15:41Z", "fps": 14.9, "camera": online}
    line = format_message("fer-kiosk/k1/stats", json.dumps(stats).encode())
    assert line == "09:15:41 k1 stats  fps=14.9 camera=online", line
    stats["camera"] = offline
    assert "camera=offline(not_found)" in format_message("fer-kiosk/k1/stats", json.dumps(stats).encode())


def test_the_same_camera_news_is_shown_once():
    """The daemon publishes its camera on the change and again on (re)connecting, 90 ms apart:
    one line. A change after it is shown, and so is the same news from another kiosk."""
    from edge.tools.watch import camera_repeat

    def camera(status, cause, time="2026-11-24T09:15:41.002Z"):
        payload = {"time": time, "status": status, "cause": cause, "detail": "d", "since": "S"}
        return json.dumps(payload).encode()

    shown: dict = {}
    assert not camera_repeat("fer-kiosk/k1/camera", camera("online", None), shown)
    assert camera_repeat("fer-kiosk/k1/camera", camera("online", None, "2026-11-24T09:15:41.090Z"), shown)
    assert not camera_repeat("fer-kiosk/k2/camera", camera("online", None), shown)
    assert not camera_repeat("fer-kiosk/k1/camera", camera("offline", "no_frames"), shown)
    assert not camera_repeat("fer-kiosk/k1/state", camera("offline", "no_frames"), shown)


def test_watch_shows_live_messages_from_a_real_broker(tmp_path, broker):
    config = tmp_path / "c.yaml"
    config.write_text(f"mqtt:\n  host: 127.0.0.1\n  port: {broker.port}\n  device_id: k1\n")
    watcher = subprocess.Popen(
        [sys.executable, "-m", "edge", "watch", "--config", str(config), "--duration", "4"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    event = {
        "type": "new",
        "time": "2026-11-24T09:15:02.417Z",
        "device": "k1",
        "face_id": "x-9",
        "emotion": "surprise",
        "confidence": 0.7,
        "box": [5, 6, 7, 8],
    }
    client.publish("fer-kiosk/k1/events", json.dumps(event), qos=1).wait_for_publish(5)
    client.publish("fer-kiosk/other/events", json.dumps(event), qos=1).wait_for_publish(5)
    client.loop_stop()
    out, err = watcher.communicate(timeout=15)
    assert watcher.returncode == 0, err
    assert "09:15:02 k1 new    x-9" in out and "surprise" in out
    assert out.count("x-9") == 1  # only this device without --all


def _watch(config_path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge", "watch", "--config", str(config_path), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_watch_without_a_broker_says_so_and_fails(tmp_path):
    from bench.harness import free_port

    config = tmp_path / "c.yaml"
    config.write_text(f"mqtt:\n  host: 127.0.0.1\n  port: {free_port()}\n  device_id: k1\n")
    result = _watch(config, "--duration", "2")
    assert result.returncode == 1, result
    assert "cannot reach the MQTT broker 127.0.0.1" in result.stderr and "Traceback" not in result.stderr


def test_watch_connects_with_the_configs_credentials_and_tls_and_names_a_refusal(tmp_path, secure_broker):
    broker, certs = secure_broker
    credentials = tmp_path / "credentials"
    credentials.write_text("username=watcher\npassword=watch-pass\n")
    credentials.chmod(0o600)
    mqtt_section = (
        f"mqtt:\n  host: localhost\n  port: {broker.port}\n  device_id: k1\n"
        f"  credentials_file: {credentials}\n  tls:\n    enabled: true\n    ca_file: {certs['ca.crt']}\n"
    )
    config = tmp_path / "c.yaml"
    config.write_text(mqtt_section)
    ok = _watch(config, "--duration", "2")
    assert ok.returncode == 0, ok.stderr
    assert f"watching fer-kiosk/k1/# on localhost:{broker.port}" in ok.stderr
    credentials.write_text("username=watcher\npassword=wrong\n")
    refused = _watch(config, "--duration", "2")
    assert refused.returncode == 1 and "refused" in refused.stderr and "Not authorized" in refused.stderr, (
        refused.stderr
    )
    config.write_text(
        mqtt_section.replace(
            "    enabled: true\n    ca_file: " + str(certs["ca.crt"]) + "\n", "    enabled: false\n"
        )
    )
    plain = _watch(config, "--duration", "2")  # a plain client against the TLS listener
    assert plain.returncode == 1 and "Traceback" not in plain.stderr, plain.stderr
