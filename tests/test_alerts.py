"""Alerts: the rule on plain tracks and times, then the real daemon on a clip."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from bench.harness import stop_daemon
from edge.config import AlertRuleConfig
from edge.contract import EMOTIONS
from edge.visits.alerts import CLEARED, RAISED, AlertRules
from edge.visits.tracking import Track
from tests.conftest import ROOT

RULE = AlertRuleConfig(emotions=("angry", "sad"), min_probability=0.5, hold_seconds=5.0, clear_seconds=2.0)


def track(face_id: str, emotion: str, probability: float) -> Track:
    smoothed = np.full(len(EMOTIONS), (1 - probability) / (len(EMOTIONS) - 1), np.float32)
    smoothed[EMOTIONS.index(emotion)] = probability
    return Track(
        face_id,
        (0, 0, 10, 10),
        0.0,
        0.0,
        0.0,
        0.0,
        smoothed,
        smoothed.copy(),
        10,
        True,
        int(smoothed.argmax()),
    )


def run(rules: AlertRules, timeline: list[tuple[float, list[Track]]]) -> list[tuple[float, str, str, str]]:
    out = []
    for now, present in timeline:
        out += [(now, a.kind, a.face_id, a.reason) for a in rules.update(present, now, 1000 + now)]
    return out


def test_raised_after_holding_and_cleared_after_recovering():
    rules = AlertRules(RULE, EMOTIONS)
    timeline = [(t, [track("a", "angry", 0.7)]) for t in range(0, 7)]
    timeline += [(t, [track("a", "happy", 0.8)]) for t in range(7, 11)]
    assert run(rules, timeline) == [(5, RAISED, "a", ""), (8, CLEARED, "a", "recovered")]  # last held at 6


def test_a_break_restarts_the_clock_but_switching_between_the_rules_emotions_does_not():
    rules = AlertRules(RULE, EMOTIONS)
    broken = [
        (0, [track("a", "sad", 0.6)]),
        (3, [track("a", "neutral", 0.6)]),
        (4, [track("a", "sad", 0.6)]),
        (8, [track("a", "sad", 0.6)]),
        (9, [track("a", "sad", 0.6)]),
    ]
    assert run(rules, broken) == [(9, RAISED, "a", "")]
    rules = AlertRules(RULE, EMOTIONS)
    switching = [
        (0, [track("b", "sad", 0.6)]),
        (3, [track("b", "angry", 0.6)]),
        (5, [track("b", "angry", 0.6)]),
    ]
    assert run(rules, switching) == [(5, RAISED, "b", "")]


def test_below_the_probability_nothing_is_raised_and_a_short_dip_does_not_clear():
    rules = AlertRules(RULE, EMOTIONS)
    assert run(rules, [(t, [track("a", "angry", 0.45)]) for t in range(0, 20)]) == []
    rules = AlertRules(RULE, EMOTIONS)
    timeline = [(t, [track("a", "angry", 0.8)]) for t in range(0, 6)]
    timeline += [
        (6, [track("a", "neutral", 0.8)]),
        (7, [track("a", "angry", 0.8)]),
        (8, [track("a", "angry", 0.8)]),
    ]
    assert run(rules, timeline) == [(5, RAISED, "a", "")]  # 1 s dip < clear_seconds


def test_leaving_stopping_and_the_state_list():
    rules = AlertRules(RULE, EMOTIONS)
    timeline = [(t, [track("a", "angry", 0.9), track("b", "sad", 0.9)]) for t in range(0, 6)]
    assert [k for _, k, _, _ in run(rules, timeline)] == [RAISED, RAISED]
    assert {a.face_id for a in rules.open_alerts()} == {"a", "b"}
    assert run(rules, [(6, [track("b", "sad", 0.9)])]) == [(6, CLEARED, "a", "left")]
    stopped = rules.clear_all(2000.0, "shutdown")
    assert [(a.kind, a.face_id, a.reason) for a in stopped] == [(CLEARED, "b", "shutdown")]
    assert rules.open_alerts() == [] and rules.clear_all(2001.0, "shutdown") == []


def test_a_disabled_rule_raises_nothing():
    rules = AlertRules(AlertRuleConfig(enabled=False), EMOTIONS)
    assert run(rules, [(t, [track("a", "angry", 0.99)]) for t in range(0, 30)]) == []


@pytest.mark.slow
def test_the_daemon_raises_and_clears_an_alert_on_a_clip(tmp_path, broker, subscribe, run_daemon):
    """The real pipeline: a rule that the astronaut's smile meets raises an alert while she is
    there, listed in the retained state, and clears it when she walks out."""
    from bench.clips import one_visit_clip
    from tests.helpers import alerting_config

    schema = json.loads((ROOT / "docs/schema/alert.schema.json").read_text())
    clip = one_visit_clip(tmp_path / "visit.avi")
    sub = subscribe(broker.port, "fer-kiosk/test-kiosk/#")
    config = alerting_config(tmp_path, broker.port, clip)
    log = tmp_path / "daemon.log"
    process = run_daemon(config, log)
    assert sub.wait_for(lambda: any(a["type"] == "cleared" for a in sub.json_on("/alerts")), 60), (
        log.read_text()[-3000:]
    )
    assert stop_daemon(process) == 0
    alerts = sub.json_on("/alerts")
    for alert in alerts:
        jsonschema.validate(alert, schema)
    assert [a["type"] for a in alerts][:2] == ["raised", "cleared"]
    assert alerts[0]["alert_id"] == alerts[1]["alert_id"] and alerts[1]["reason"] == "left"
    assert any(
        s["alerts"] and s["alerts"][0]["alert_id"] == alerts[0]["alert_id"] for s in sub.json_on("/state")
    )


@pytest.mark.slow
def test_a_reload_ends_visits_and_alerts_as_reloads_and_keeps_the_command_lines_log_level(
    tmp_path, broker, subscribe
):
    """SIGHUP with changed tracking settings: the open visit ends with ended_by reload and its
    alert clears with reason reload (not as the customer leaving); --log-level DEBUG from the
    command line outranks the config's INFO afterwards too; the uptime is not reset."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from bench.clips import one_visit_clip
    from tests.helpers import alerting_config

    clip = one_visit_clip(tmp_path / "visit.avi")
    sub = subscribe(broker.port, "fer-kiosk/test-kiosk/#")
    config = alerting_config(
        tmp_path, broker.port, clip, 0.5, camera={"loop": True}, mqtt={"stats_interval_seconds": 1}
    )
    log = tmp_path / "daemon.log"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "edge", "--log-level", "DEBUG", "run", "--config", str(config)],
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert sub.wait_for(lambda: any(a["type"] == "raised" for a in sub.json_on("/alerts")), 60), (
            log.read_text()[-3000:]
        )
        uptime_before = sub.json_on("/stats")[-1]["uptime_s"]
        data = yaml.safe_load(config.read_text())
        data["tracking"]["smoothing_seconds"] = 0.4
        config.write_text(yaml.safe_dump(data))
        daemon.send_signal(signal.SIGHUP)
        assert sub.wait_for(lambda: any(a.get("reason") == "reload" for a in sub.json_on("/alerts")), 20), (
            log.read_text()[-3000:]
        )
        assert sub.wait_for(
            lambda: any(
                e["type"] == "end" and e["summary"]["ended_by"] == "reload" for e in sub.json_on("/events")
            ),
            10,
        )
        reloaded_at = log.read_text().index("reloaded configuration")
        assert sub.wait_for(lambda: " DEBUG " in log.read_text()[reloaded_at:], 10)
        time.sleep(1.5)
        assert sub.json_on("/stats")[-1]["uptime_s"] > uptime_before
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
