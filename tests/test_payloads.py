import json

import jsonschema
import numpy as np

from edge.config import TrackingConfig
from edge.contract import EMOTIONS
from edge.mqtt.payloads import Topics, event_message, event_payload, iso_utc, state_message, state_payload
from edge.visits.tracking import FaceTracker
from tests.conftest import ROOT
from tests.helpers import p, run

SCHEMAS = {
    n: json.loads((ROOT / "docs" / "schema" / f"{n}.schema.json").read_text())
    for n in ("event", "state", "alert")
}


def test_iso_utc_has_milliseconds_and_z():
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1_700_000_000.1234) == "2023-11-14T22:13:20.123Z"


def _events():
    tracker = FaceTracker(
        TrackingConfig(min_frames=2, max_missing_seconds=0.1, heartbeat_seconds=0.5), EMOTIONS
    )
    frames = [[((10, 20, 80, 90), p("surprise"))] for _ in range(40)] + [[]] * 10
    return tracker, [e for _, e in run(tracker, frames)]


def test_event_payloads_match_the_documented_schema():
    _, events = _events()
    assert {e.kind for e in events} == {"new", "update", "end"}
    for event in events:
        payload = event_payload(event, "kiosk-1")
        jsonschema.validate(payload, SCHEMAS["event"])
        assert payload["box"] == [10, 20, 80, 90] and payload["emotion"] == "surprise"
        assert ("summary" in payload) == (event.kind == "end")


def test_messages_carry_topic_qos_and_no_pixels():
    _, events = _events()
    topics = Topics("fer-kiosk/kiosk-1")
    message = event_message(events[0], topics, "kiosk-1", qos=1)
    assert message.topic == "fer-kiosk/kiosk-1/events" and message.qos == 1 and not message.retain
    assert len(message.payload) < 1000  # numbers and labels only
    assert json.loads(message.payload)["device"] == "kiosk-1"


def test_state_is_retained_and_valid():
    tracker = FaceTracker(TrackingConfig(min_frames=1), EMOTIONS)
    tracker.update([((1, 2, 50, 50), p("neutral")), ((300, 2, 50, 50), p("happy"))], 0.0, 1_700_000_000.0)
    message = state_message(tracker.present(), EMOTIONS, Topics("x/y"), "y", 1_700_000_000.5, 1)
    assert message.retain and message.topic == "x/y/state"
    payload = json.loads(message.payload)
    jsonschema.validate(payload, SCHEMAS["state"])
    assert payload["face_count"] == 2 and {f["emotion"] for f in payload["faces"]} == {"neutral", "happy"}
    jsonschema.validate(state_payload([], EMOTIONS, "y", 0.0, "stopped"), SCHEMAS["state"])


def test_schema_rejects_what_it_should():
    _, events = _events()
    payload = event_payload(events[0], "k")
    bad = dict(payload, emotion="bored")
    try:
        jsonschema.validate(bad, SCHEMAS["event"])
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("schema accepted an unknown emotion")
    np.testing.assert_allclose(sum(payload["probabilities"].values()), 1.0, atol=0.01)


def test_every_example_in_the_mqtt_docs_is_valid():
    import re

    text = (ROOT / "docs" / "mqtt.md").read_text()
    examples = re.findall(r"<!-- schema: (\w+) -->\s*```json\n(.*?)```", text, re.S)
    assert len(examples) >= 4
    for schema, body in examples:
        jsonschema.validate(
            json.loads(body),
            SCHEMAS.get(schema)
            or json.loads((ROOT / "docs" / "schema" / f"{schema}.schema.json").read_text()),
        )


def test_alert_payloads_match_their_schema_and_the_state_lists_open_ones():
    from edge.mqtt.payloads import alert_message
    from edge.visits.alerts import CLEARED, RAISED, Alert

    raised = Alert(RAISED, "abc", "f-1", "angry", 0.71, 1_700_000_000.0, 1_700_000_005.0)
    message = alert_message(raised, Topics("x/y"), "y", 1)
    assert message.topic == "x/y/alerts" and not message.retain and message.qos == 1
    payload = json.loads(message.payload)
    jsonschema.validate(payload, SCHEMAS["alert"])
    assert payload["since"] == "2023-11-14T22:13:20.000Z" and "reason" not in payload
    cleared = Alert(CLEARED, "abc", "f-1", "angry", 0.71, 1_700_000_000.0, 1_700_000_009.0, "left")
    jsonschema.validate(json.loads(alert_message(cleared, Topics("x/y"), "y", 1).payload), SCHEMAS["alert"])
    try:
        jsonschema.validate({**payload, "type": "cleared"}, SCHEMAS["alert"])  # cleared needs its reason
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("schema accepted a cleared alert without a reason")
    state = state_payload([], EMOTIONS, "y", 0.0, "running", [raised])
    jsonschema.validate(state, SCHEMAS["state"])
    assert state["alerts"] == [
        {
            "alert_id": "abc",
            "face_id": "f-1",
            "emotion": "angry",
            "probability": 0.71,
            "since": "2023-11-14T22:13:20.000Z",
        }
    ]
