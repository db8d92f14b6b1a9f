"""The daemon as a service, with real parts: sd_notify socket, signals, TLS broker, outages."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import jsonschema
import paho.mqtt.client as mqtt
import pytest
import yaml

from bench.clips import one_visit_clip, visits_clip
from bench.harness import (
    Broker,
    NotifySocket,
    Subscriber,
    stop_daemon,
    wait_until,
)
from edge.config import parse_config
from edge.contract import EMOTIONS
from edge.mqtt.client import Credentials, resolve_credentials
from edge.mqtt.homeassistant import SUPPORT_URL, discovery_messages, removal_messages
from edge.mqtt.payloads import Topics
from tests.conftest import ROOT
from tests.helpers import SCHEMAS, config_file, fer_kiosk

pytestmark = pytest.mark.slow


def test_ready_without_a_camera_which_is_published_with_its_cause_and_picked_up_when_it_appears(
    tmp_path, broker, subscribe, run_daemon
):
    """Under systemd a missing camera is not a reason to die: READY once the config, model
    and MQTT client are up; the watchdog is fed while the loop lives; the retained camera
    topic says why there are no frames; availability stays online; when the camera (here: a
    clip at the configured path) appears, it is picked up."""
    clip = one_visit_clip(tmp_path / "made.avi")
    source = tmp_path / "camera.avi"  # does not exist yet
    notify = NotifySocket(tmp_path / "notify.sock")
    sub = subscribe(broker.port, "fer-kiosk/svc/#")
    config = config_file(
        tmp_path, broker.port, str(source), camera={"retry_initial_seconds": 0.5, "retry_max_seconds": 1}
    )
    log = tmp_path / "daemon.log"
    started = time.monotonic()
    daemon = run_daemon(config, log, env={"WATCHDOG_USEC": "1000000"}, notify=notify)
    try:
        assert wait_until(lambda: notify.times("READY=1"), 30), log.read_text()[-2000:]
        camera = lambda: [json.loads(p) for t, p, _ in sub.messages if t.endswith("/camera")]  # noqa: E731
        assert wait_until(lambda: any(c["cause"] == "not_found" for c in camera()), 5), log.read_text()[
            -2000:
        ]
        assert camera()[-1]["status"] == "offline" and "no such file" in camera()[-1]["detail"]
        time.sleep(4)  # no camera for a while: still alive, still fed, still online
        assert daemon.poll() is None
        assert [p for t, p, _ in sub.messages if t.endswith("/availability")][-1] == b"online"
        no_camera_until = time.monotonic()
        shutil.copy(clip, source)  # the camera appears
        assert wait_until(lambda: camera()[-1]["status"] == "online", 10), log.read_text()[-2000:]
        assert wait_until(lambda: any(e["type"] == "new" for e in sub.json_on("/events")), 15)
        state = sub.json_on("/state")[-1]
        assert state["camera"]["status"] == "online"
        sent_term = time.monotonic()
        assert stop_daemon(daemon) == 0
        stopped_after = time.monotonic() - sent_term
    finally:
        if daemon.poll() is None:
            daemon.kill()
        notify.close()
    ready = notify.times("READY=1")
    watchdog = notify.times("WATCHDOG=1")
    assert len(ready) == 1 and ready[0] - started < 30
    without_camera = [t for t in watchdog if ready[0] <= t < no_camera_until]
    assert len(without_camera) >= 6, (
        "the watchdog must be fed while the loop lives, camera or not"
    )  # ~0.6 s apart
    statuses = [line for _, line in notify.received if line.startswith("STATUS=")]
    assert any("camera offline (not_found)" in s for s in statuses), statuses
    assert any("fps" in s and "face(s)" in s and "broker connected" in s for s in statuses)
    assert notify.times("STOPPING=1")
    # said once, not per retry, and in one line: the capture's (README), not the loop's again
    assert log.read_text().count("no such file; retrying with backoff") == 1, log.read_text()[-2000:]
    assert "camera offline" not in log.read_text()
    assert stopped_after < 5.0, f"SIGTERM to exit took {stopped_after:.2f} s"
    print(f"SIGTERM to exit: {stopped_after:.2f} s")


def test_sigterm_publishes_offline_state_stopped_and_ends_visits(tmp_path, broker, subscribe, run_daemon):
    clip = one_visit_clip(tmp_path / "clip.avi")
    sub = subscribe(broker.port, "fer-kiosk/svc/#")
    daemon = run_daemon(config_file(tmp_path, broker.port, str(clip)), tmp_path / "d.log")
    try:
        assert sub.wait_for(lambda: any(e["type"] == "new" for e in sub.json_on("/events")), 30)
    finally:
        assert stop_daemon(daemon) == 0
    assert sub.wait_for(lambda: any(e["type"] == "end" for e in sub.json_on("/events")), 5)
    end = [e for e in sub.json_on("/events") if e["type"] == "end"][0]
    jsonschema.validate(end, SCHEMAS["event"])
    availability = [p for t, p, _ in sub.messages if t.endswith("/availability")]
    assert availability[0] == b"online" and availability[-1] == b"offline"
    assert sub.json_on("/state")[-1]["status"] == "stopped"
    for stats in sub.json_on("/stats"):
        jsonschema.validate(stats, SCHEMAS["stats"])
    assert sub.json_on("/stats"), "no stats message within the run"


def test_sighup_reloads_config_and_refuses_a_broken_one(tmp_path, broker, subscribe, run_daemon):
    clip = one_visit_clip(tmp_path / "clip.avi")
    config = config_file(tmp_path, broker.port, str(clip), camera={"loop": True})
    log = tmp_path / "d.log"
    sub = subscribe(broker.port, "#")
    daemon = run_daemon(config, log)
    try:
        assert sub.wait_for(lambda: any(t.startswith("fer-kiosk/svc/") for t, _, _ in sub.messages), 30)
        data = yaml.safe_load(config.read_text())
        data["mqtt"]["topic_prefix"] = "lobby"
        config.write_text(yaml.safe_dump(data))
        daemon.send_signal(signal.SIGHUP)
        assert sub.wait_for(lambda: any(t.startswith("lobby/svc/") for t, _, _ in sub.messages), 20), (
            log.read_text()[-2000:]
        )
        assert "reloaded configuration: mqtt changed" in log.read_text()
        config.write_text("camera:\n  fps: fast\n")
        daemon.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload refused" in log.read_text(), 10)
        assert "camera.fps: expected a number" in log.read_text()
        time.sleep(0.5)
        assert daemon.poll() is None
    finally:
        assert stop_daemon(daemon) == 0


def relabelled_model(folder: Path, renames: dict[str, str]) -> Path:
    """A copy of the bundled model whose contract names some labels otherwise (a model of
    one's own with its own emotions: same file, other names)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "own.tflite"
    shutil.copy(ROOT / "edge" / "models" / "emotion_int8.tflite", model)
    contract = json.loads((ROOT / "edge" / "models" / "emotion_int8.json").read_text())
    contract["labels"] = [renames.get(label, label) for label in contract["labels"]]
    (folder / "own.json").write_text(json.dumps(contract))
    return model


def test_alert_emotions_are_checked_against_the_loaded_models_labels(tmp_path):
    model = relabelled_model(tmp_path / "m", {"disgust": "contempt"})
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  path: {model}\n")  # the default rule names disgust
    result = fer_kiosk("run", "--config", str(config))
    assert result.returncode == 78, result.stderr
    assert "rules.alerts.emotions: disgust not among the model's labels" in result.stderr
    assert "contempt" in result.stderr and "own.tflite" in result.stderr
    config.write_text(f"model:\n  path: {model}\nrules:\n  alerts:\n    emotions: [angry, contempt]\n")
    check = fer_kiosk("check", "--config", str(config))
    assert check.returncode == 0, check.stderr


def test_a_reload_with_a_model_of_other_labels_rebuilds_tracker_alerts_and_discovery(
    tmp_path, broker, subscribe, run_daemon
):
    clip = one_visit_clip(tmp_path / "clip.avi")
    model = relabelled_model(tmp_path / "m", {"disgust": "contempt"})
    config = config_file(tmp_path, broker.port, str(clip), camera={"loop": True})
    log = tmp_path / "d.log"
    sub = subscribe(broker.port, "#")
    daemon = run_daemon(config, log)

    def states():
        return [json.loads(p) for t, p, _ in sub.messages if t == "fer-kiosk/svc/state"]

    try:
        assert sub.wait_for(lambda: any(s["faces"] for s in states()), 30), log.read_text()[-2000:]
        data = yaml.safe_load(config.read_text())
        data["model"] = {"path": str(model)}  # the rule still names disgust: refused
        config.write_text(yaml.safe_dump(data))
        daemon.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload refused" in log.read_text(), 20), log.read_text()[-2000:]
        assert "rules.alerts.emotions: disgust not among the model's labels" in log.read_text()
        data["rules"] = {"alerts": {"emotions": ["angry", "sad", "contempt"]}}
        config.write_text(yaml.safe_dump(data))
        daemon.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reloaded configuration" in log.read_text(), 20), log.read_text()[-2000:]

        def relabelled():
            return "contempt" in states()[-1]["levels"] and "disgust" not in states()[-1]["levels"]

        assert sub.wait_for(relabelled, 20), states()[-1]
        discovery = [t for t, _, _ in sub.messages if t.startswith("homeassistant/") and "contempt" in t]
        assert discovery, "Home Assistant was not told of the new label"
    finally:
        assert stop_daemon(daemon) == 0


def test_config_error_exits_78_without_starting(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("mqtt:\n  qos: 5\n")
    result = fer_kiosk("run", "--config", str(config))
    assert result.returncode == 78
    assert "mqtt.qos: must be at most 2, got 5" in result.stderr


def test_corrupt_model_exits_78_naming_the_file(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes((ROOT / "edge" / "models" / "emotion_int8.tflite").read_bytes()[:-10] + b"0123456789")
    (tmp_path / "m.json").write_text((ROOT / "edge" / "models" / "emotion_int8.json").read_text())
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  path: {model}\n")
    result = fer_kiosk("run", "--config", str(config))
    assert result.returncode == 78
    assert "m.tflite does not match its contract: sha256" in result.stderr


# -- discovery --------------------------------------------------------------------------


def test_discovery_payloads_as_home_assistant_expects_them_today():
    topics = Topics("fer-kiosk/k-1")
    messages = discovery_messages("homeassistant", "k-1", topics, EMOTIONS, "0.2.0", "mini-Xception")
    by_key = {m.topic.split("/")[-2]: json.loads(m.payload) for m in messages}
    assert len(messages) == len(by_key) == 8 + len(EMOTIONS)
    assert all(m.retain and m.topic.split("/")[2] == "fer-kiosk_k-1" for m in messages)
    assert {m.topic.split("/")[1] for m in messages} == {"sensor", "binary_sensor", "event"}
    for key, config in by_key.items():
        assert "object_id" not in config  # retired by Home Assistant in 2026.4
        component = next(m.topic.split("/")[1] for m in messages if m.topic.split("/")[-2] == key)
        assert config["default_entity_id"] == f"{component}.fer_kiosk_k_1_{key}"
        assert config["origin"] == {"name": "fer-kiosk", "sw_version": "0.2.0", "support_url": SUPPORT_URL}
        assert "availability_topic" not in config and config["availability_mode"] == "latest"
        assert [a["topic"] for a in config["availability"]] == [
            "fer-kiosk/k-1/availability",
            "fer-kiosk/k-1/bridge",  # a bridge's notification: docs/mqtt.md, Bridge
        ]
    emotion = by_key["emotion"]
    assert emotion["state_topic"] == "fer-kiosk/k-1/state"
    assert emotion["device"] == {
        "identifiers": ["fer-kiosk_k-1"],
        "name": "Emotion kiosk k-1",
        "model": "mini-Xception",
        "manufacturer": "fer-kiosk",
        "sw_version": "0.2.0",
    }
    assert emotion["options"] == ["none", *EMOTIONS]
    assert by_key["level_happy"]["unit_of_measurement"] == "%"
    assert by_key["occupancy"]["device_class"] == "occupancy" and by_key["alert"]["device_class"] == "problem"
    assert (
        by_key["camera"]["state_topic"] == "fer-kiosk/k-1/camera"
        and by_key["camera"]["entity_category"] == "diagnostic"
    )
    assert by_key["fps"]["state_topic"] == by_key["spool"]["state_topic"] == "fer-kiosk/k-1/stats"
    assert (
        by_key["visit"]["event_types"] == ["visit_ended"]
        and by_key["visit"]["state_topic"] == "fer-kiosk/k-1/events"
    )
    assert len({p["unique_id"] for p in by_key.values()}) == len(messages)
    removal = removal_messages("homeassistant", "k-1", topics, EMOTIONS)
    assert {m.topic for m in removal} >= {m.topic for m in messages} | {
        "fer-kiosk/k-1/state",
        "fer-kiosk/k-1/availability",
        "fer-kiosk/k-1/bridge",
    }
    assert all(m.payload == b"" and m.retain for m in removal)


def test_the_visit_event_template_renders_only_visit_ends():
    """Home Assistant renders the template with Jinja; so do we, to check what it sees."""
    jinja2 = pytest.importorskip("jinja2", reason="jinja2 renders the template as Home Assistant would")
    from edge.mqtt.homeassistant import VISIT_EVENT_TEMPLATE

    template = jinja2.Environment().from_string(VISIT_EVENT_TEMPLATE)
    end = {
        "type": "end",
        "face_id": "a-1",
        "summary": {"dominant_emotion": "happy", "duration_s": 12.5, "ended_by": "left"},
    }
    assert json.loads(template.render(value_json=end)) == {
        "event_type": "visit_ended",
        "face_id": "a-1",
        "dominant_emotion": "happy",
        "duration_s": 12.5,
        "ended_by": "left",
    }
    assert template.render(value_json={"type": "update", "face_id": "a-1"}).strip() == ""
    # every entity's template against a real payload of its topic
    state = {
        "face_count": 1,
        "dominant_emotion": "sad",
        "alerts": [{"face_id": "a-1"}],
        "levels": {e: 0.125 for e in EMOTIONS},
    }
    samples = {
        "state": state,
        "camera": {"status": "offline", "cause": "busy", "detail": "/dev/video0 busy"},
        "stats": {"fps": 29.5, "queued": 3},
        "events": end,
    }
    expected = {
        "emotion": "sad",
        "faces": "1",
        "occupancy": "ON",
        "alert": "ON",
        "camera": "OFF",
        "fps": "29.5",
        "spool": "3",
        "level_happy": "12.5",
    }
    env = jinja2.Environment()
    for message in discovery_messages("homeassistant", "k1", Topics("fer-kiosk/k1"), EMOTIONS, "0.2.0", "m"):
        config = json.loads(message.payload)
        key = message.topic.split("/")[-2]
        rendered = env.from_string(config["value_template"]).render(
            value_json=samples[config["state_topic"].rsplit("/", 1)[1]]
        )
        if key in expected:
            assert rendered == expected[key], key
        if "json_attributes_template" in config:
            assert json.loads(
                env.from_string(config["json_attributes_template"]).render(value_json=samples["camera"])
            ) == {"cause": "busy", "detail": "/dev/video0 busy"}


def test_discovery_is_retained_republished_on_ha_online_and_can_be_turned_off(
    tmp_path, broker, subscribe, run_daemon
):
    clip = one_visit_clip(tmp_path / "clip.avi")
    sub = subscribe(broker.port, "homeassistant/#")
    config = config_file(tmp_path, broker.port, str(clip), camera={"loop": True})
    daemon = run_daemon(config, tmp_path / "d.log")
    try:
        discovered = lambda: [t for t, _, _ in sub.messages if t.endswith("/config")]  # noqa: E731
        assert sub.wait_for(lambda: len(discovered()) == 15, 30)
        before = len(discovered())
        sub.client.publish("homeassistant/status", b"online", qos=1)
        assert sub.wait_for(lambda: len(discovered()) >= before + 15, 10)
    finally:
        stop_daemon(daemon)
    late = Subscriber(broker.port, "homeassistant/#")  # a Home Assistant that starts later
    try:
        assert late.wait_for(lambda: len(late.messages) == 15 and all(r for _, _, r in late.messages), 5)
    finally:
        late.close()
    off = parse_config({"homeassistant": {"enabled": False}})
    assert not off.homeassistant.enabled


def test_unregister_clears_every_retained_topic_so_home_assistant_forgets_the_kiosk(
    tmp_path, broker, subscribe, run_daemon
):
    clip = one_visit_clip(tmp_path / "clip.avi")
    config = config_file(tmp_path, broker.port, str(clip), camera={"loop": True})
    sub = subscribe(broker.port, "#")
    daemon = run_daemon(config, tmp_path / "d.log")
    try:
        assert sub.wait_for(lambda: len([t for t, _, _ in sub.messages if t.endswith("/config")]) == 15, 30)
        online = fer_kiosk("unregister", "--config", str(config))
        assert online.returncode == 1 and "svc is online: stop its daemon first" in online.stderr
    finally:
        assert stop_daemon(daemon) == 0
    done = fer_kiosk("unregister", "--config", str(config))
    assert done.returncode == 0, done.stderr
    # 15 discovery configs, the state, camera, availability and bridge topics
    assert "removed 19 retained topics of svc" in done.stdout
    late = Subscriber(broker.port, "#")  # what a Home Assistant starting now would find
    try:
        time.sleep(1.0)
        left = [t for t, _, retained in late.messages if retained and ("svc" in t)]
        assert left == [], left
    finally:
        late.close()


# -- credentials and TLS -----------------------------------------------------------------


def test_credentials_come_from_env_file_or_systemd_and_are_never_shown(tmp_path):
    config = parse_config({}).mqtt
    assert resolve_credentials(config, {}) is None
    creds = tmp_path / "creds"
    creds.write_text("# kiosk\nusername=kiosk-01\npassword=s3cret\n")
    os.chmod(creds, 0o600)
    from_systemd = (
        resolve_credentials(config, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
        if (tmp_path / "mqtt").exists()
        else None
    )
    assert from_systemd is None
    (tmp_path / "mqtt").write_text(creds.read_text())
    got = resolve_credentials(config, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert (got.username, got.password) == ("kiosk-01", "s3cret")
    assert "s3cret" not in repr(got) and "s3cret" not in str(got)
    env = resolve_credentials(config, {"FER_KIOSK_MQTT_USERNAME": "u", "FER_KIOSK_MQTT_PASSWORD": "p"})
    assert env == Credentials("u", "p", "environment")
    bad = tmp_path / "bad"
    bad.write_text("user: x\n")
    from edge.mqtt.client import CredentialsError

    with pytest.raises(CredentialsError, match="line 1: expected username"):
        resolve_credentials(parse_config({"mqtt": {"credentials_file": str(bad)}}).mqtt, {})


def tls_subscriber(port: int, ca: Path, topic: str) -> Subscriber:
    sub = Subscriber.__new__(Subscriber)
    sub.messages, sub._lock, sub._subscribed = [], threading.Lock(), threading.Event()
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="tls-sub")
    client.username_pw_set("watcher", "watch-pass")
    client.tls_set(ca_certs=str(ca))
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda c, u, mid, rcs, p: sub._subscribed.set()
    client.on_message = lambda c, u, m: sub.messages.append((m.topic, m.payload, bool(m.retain)))
    client.connect("localhost", port)
    client.loop_start()
    sub.client = client
    assert sub._subscribed.wait(10)
    return sub


def test_tls_and_password_right_credentials_connect(tmp_path, secure_broker, run_daemon):
    broker, certs = secure_broker
    clip = one_visit_clip(tmp_path / "clip.avi")
    creds = tmp_path / "credentials"
    creds.write_text("username=kiosk\npassword=right-pass\n")
    os.chmod(creds, 0o600)
    sub = tls_subscriber(broker.port, certs["ca.crt"], "fer-kiosk/svc/#")
    config = config_file(
        tmp_path,
        broker.port,
        str(clip),
        mqtt={
            "host": "localhost",
            "credentials_file": str(creds),
            "tls": {"enabled": True, "ca_file": str(certs["ca.crt"])},
        },
    )
    log = tmp_path / "d.log"
    daemon = run_daemon(config, log)
    try:
        assert sub.wait_for(
            lambda: any(t.endswith("/availability") and p == b"online" for t, p, _ in sub.messages), 30
        ), log.read_text()[-2000:]
        assert sub.wait_for(lambda: any(t.endswith("/events") for t, _, _ in sub.messages), 30)
    finally:
        assert stop_daemon(daemon) == 0
        sub.close()
    text = log.read_text()
    assert "right-pass" not in text and "MQTT credentials from" in text


@pytest.mark.parametrize("case", ["wrong password", "untrusted certificate"])
def test_wrong_credentials_or_tls_failure_is_a_clear_error_with_backoff(
    tmp_path, secure_broker, case, run_daemon
):
    broker, certs = secure_broker
    env = {
        "FER_KIOSK_MQTT_USERNAME": "kiosk",
        "FER_KIOSK_MQTT_PASSWORD": "wrong-pass" if case == "wrong password" else "right-pass",
    }
    ca = certs["ca.crt"] if case == "wrong password" else certs["other.crt"]
    config = config_file(
        tmp_path,
        broker.port,
        str(tmp_path / "none.avi"),
        mqtt={"host": "localhost", "reconnect_max_seconds": 4, "tls": {"enabled": True, "ca_file": str(ca)}},
    )
    expected = (
        "refused the connection: Not authorized"
        if case == "wrong password"
        else "TLS: the broker's certificate is not trusted"
    )
    log = tmp_path / "d.log"
    daemon = run_daemon(config, log, env=env)

    def attempts() -> int:
        # Mosquitto 2.0 logs a TLS handshake that fails as "New connection from ..." when the
        # handshake got that far, else as "Client connection from ... failed" ("unexpected
        # eof" is the fixture's own readiness probe, not the daemon).
        lines = broker.log_path.read_text().splitlines()
        return sum(
            "New connection from" in line
            or "Client connection from" in line
            and "failed" in line
            and "unexpected eof" not in line
            for line in lines
        )

    try:
        # The backoff is timed from the first refusal, not from the process start: a loaded
        # CI machine can take seconds to import and load the model before it connects.
        assert wait_until(lambda: expected in log.read_text(), 60), log.read_text()[-2000:]
        first = attempts()
        time.sleep(7.5)  # retries due 1, 3 and 7 s after the first refusal
        assert daemon.poll() is None, "the daemon must keep running and retrying"
        retries = attempts() - first
    finally:
        assert stop_daemon(daemon) == 0
    text = log.read_text()
    assert text.count(expected) == 1, text[-2000:]  # said once, clearly, not per attempt
    assert "retrying with backoff" in text and "Traceback" not in text and "wrong-pass" not in text
    # A tight loop would make hundreds; 1 s, 2 s, 4 s backoff makes 3 (2 if the machine lags).
    assert 2 <= retries <= 4, (
        f"{retries} retries in 7.5 s after the first refusal: backoff 1, 2, 4 s expected"
    )


# -- nothing lost ------------------------------------------------------------------------


def test_broker_outage_and_daemon_restart_lose_no_visit_summary(tmp_path, run_daemon):
    broker = Broker(tmp_path, persistent=True).start()
    received: list[dict] = []

    # A dashboard with a persistent session: QoS 1 messages wait for it across the outage.
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="dashboard", clean_session=False
    )
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("fer-kiosk/svc/events", qos=1)
    client.on_message = lambda c, u, m: received.append(json.loads(m.payload))
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    clip = visits_clip(tmp_path / "visits.avi", visits=4, visit_seconds=2.0, gap_seconds=1.5)
    log = tmp_path / "d.log"
    config = config_file(tmp_path, broker.port, str(clip))
    ends = lambda: [e for e in received if e["type"] == "end"]  # noqa: E731
    daemon = run_daemon(config, log)
    try:
        assert wait_until(lambda: len(ends()) >= 1, 30), log.read_text()[-2000:]
        broker.stop()  # outage: visits 2 and 3 end while the broker is away
        assert wait_until(lambda: log.read_text().count("file " + str(clip) + " ended") >= 1, 30)
        assert stop_daemon(daemon) == 0  # and the daemon restarts during the outage
        spooled = len(list((tmp_path / "spool").glob("*.json")))
        assert spooled >= 2, log.read_text()[-2000:]
        # restarted with a camera that shows nobody: it only has the spool to deliver
        config.write_text(config.read_text().replace(str(clip), str(tmp_path / "no-camera.avi")))
        daemon = run_daemon(config, log)
        time.sleep(2)
        broker.start()
        assert wait_until(lambda: len({e["event_id"] for e in ends()}) >= 4, 30), (
            len(ends()),
            log.read_text()[-3000:],
        )
        assert wait_until(lambda: not list((tmp_path / "spool").glob("*.json")), 10)
    finally:
        if daemon.poll() is None:
            stop_daemon(daemon)
        client.loop_stop()
        broker.stop()
    unique = {e["event_id"]: e for e in ends()}
    assert len(unique) == 4, [e["face_id"] for e in ends()]
    assert len({e["face_id"] for e in unique.values()}) == 4  # one summary per visit
    for event in unique.values():
        jsonschema.validate(event, SCHEMAS["event"])
    first_seen = [e["summary"]["first_seen"] for e in ends()]
    deduplicated = list(dict.fromkeys(e["event_id"] for e in ends()))
    assert [unique[i]["summary"]["first_seen"] for i in deduplicated] == sorted(set(first_seen))  # in order
