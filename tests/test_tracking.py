import numpy as np
import pytest

from edge.config import TrackingConfig
from edge.contract import EMOTIONS
from edge.vision.matching import center_distance, match
from edge.vision.preprocess import iou
from edge.visits.tracking import FaceTracker, relabel, smoothing_weight
from tests.helpers import p, run


def test_iou_and_centre_distance():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert center_distance((0, 0, 10, 10), (10, 0, 10, 10)) == pytest.approx(1.0)


def test_match_prefers_overlap_then_nearest_and_is_one_to_one():
    tracks = [(0, 0, 100, 100), (300, 0, 100, 100)]
    detections = [(310, 5, 100, 100), (5, 5, 100, 100), (600, 0, 100, 100)]
    assert sorted(match(tracks, detections, 0.3, 0.6)) == [(0, 1), (1, 0)]
    # a fast move with no overlap is still matched when the centre is near enough
    assert match([(0, 0, 100, 100)], [(55, 0, 40, 40)], 0.3, 0.6) == [(0, 0)]
    assert match([(0, 0, 100, 100)], [(200, 0, 100, 100)], 0.3, 0.6) == []


def test_smoothing_weight_depends_on_time_not_frames():
    assert smoothing_weight(0.5, 0.5) == pytest.approx(1 - np.exp(-1))
    assert smoothing_weight(1.0, 0.0) == 1.0
    assert smoothing_weight(0.0, 0.5) == 0.0


def test_a_face_walking_across_keeps_one_id_and_gets_new_updates_end():
    config = TrackingConfig(
        min_frames=3, max_missing_seconds=0.5, heartbeat_seconds=1.0, min_update_seconds=0.5
    )
    tracker = FaceTracker(config, EMOTIONS, id_prefix="t")
    frames = [[((10 + 4 * i, 50, 80, 80), p("happy"))] for i in range(90)] + [[]] * 30
    events = run(tracker, frames)
    kinds = [e.kind for _, e in events]
    assert kinds[0] == "new" and kinds[-1] == "end" and set(kinds[1:-1]) == {"update"}
    assert {e.face_id for _, e in events} == {"t-1"}
    assert events[0][0] == 2  # confirmed on its third frame
    assert 2 <= kinds.count("update") <= 3  # heartbeats every 1 s over 3 s
    end = events[-1][1]
    assert end.summary["frames"] == 90 and end.summary["dominant_emotion"] == "happy"
    assert end.summary["ended_by"] == "left"
    assert end.summary["duration_s"] == pytest.approx(89 / 30, abs=1e-3)
    assert end.summary["emotion_seconds"] == {"happy": pytest.approx(89 / 30, abs=1e-3)}
    assert events[-1][0] == 90 + 15  # unseen for more than 0.5 s


def test_emotion_change_publishes_update_at_a_bounded_rate():
    config = TrackingConfig(
        min_frames=1, smoothing_seconds=0.0, heartbeat_seconds=0.0, min_update_seconds=0.5
    )
    tracker = FaceTracker(config, EMOTIONS, id_prefix="t")
    # flickers every frame between happy and sad: updates no more often than every 0.5 s
    frames = [[((50, 50, 80, 80), p("happy" if i % 2 else "sad"))] for i in range(60)]
    events = run(tracker, frames)
    updates = [i for i, e in events if e.kind == "update"]
    assert 2 <= len(updates) <= 4
    assert all(b - a >= 15 for a, b in zip(updates, updates[1:]))


def near_tie(i: int) -> np.ndarray:
    """happy and neutral within a few hundredths, trading the lead every few frames."""
    probs = np.full(7, 0.014)
    lead = 0.02 if (i // 7) % 2 else -0.02
    probs[EMOTIONS.index("happy")] = 0.465 + lead / 2
    probs[EMOTIONS.index("neutral")] = 0.465 - lead / 2
    return probs


def test_a_near_tie_does_not_flap_the_label_and_events_name_what_the_state_names():
    flapping = TrackingConfig(
        min_frames=1,
        smoothing_seconds=0.1,
        heartbeat_seconds=0.0,
        min_update_seconds=0.5,
        label_margin=0.0,
        label_hold_seconds=0.0,
    )
    held = TrackingConfig(min_frames=1, smoothing_seconds=0.1, heartbeat_seconds=0.0, min_update_seconds=0.5)
    frames = [[((50, 50, 80, 80), near_tie(i))] for i in range(90)]  # 3 s
    before = [e for _, e in run(FaceTracker(flapping, EMOTIONS, id_prefix="t"), frames) if e.kind == "update"]
    tracker = FaceTracker(held, EMOTIONS, id_prefix="t")
    after = []
    for i, detections in enumerate(frames):
        for event in tracker.update(detections, i / 30, 1_700_000_000 + i / 30):
            after.append(event)
            # what an update names is what the state names (the track's label)
            track = tracker.present()[0]
            assert event.emotion == EMOTIONS[track.emotion]
            assert event.confidence == pytest.approx(track.smoothed[track.emotion])
    assert len(before) >= 4
    assert [e.kind for e in after] == ["new"]  # neither leads by 0.1, nor for 1 s


def test_a_real_change_of_emotion_takes_over_by_margin_at_once_or_by_time():
    happy, sad = EMOTIONS.index("happy"), EMOTIONS.index("sad")
    smoothed = np.zeros(7)
    smoothed[[happy, sad]] = 0.3, 0.5
    assert relabel(happy, smoothed, None, 10.0, 0.1, 1.0) == (sad, None)  # leads by 0.2
    smoothed[[happy, sad]] = 0.44, 0.46
    assert relabel(happy, smoothed, None, 10.0, 0.1, 1.0) == (happy, 10.0)  # starts the clock
    assert relabel(happy, smoothed, 10.0, 10.5, 0.1, 1.0) == (happy, 10.0)
    assert relabel(happy, smoothed, 10.0, 11.0, 0.1, 1.0) == (sad, None)  # led for 1 s
    smoothed[[happy, sad]] = 0.5, 0.3
    assert relabel(happy, smoothed, 10.0, 10.5, 0.1, 1.0) == (happy, None)  # the lead broke: reset
    assert relabel(-1, smoothed, None, 0.0, 0.1, 1.0) == (happy, None)


def test_smoothing_ignores_a_one_frame_flicker():
    config = TrackingConfig(
        min_frames=1, smoothing_seconds=0.5, heartbeat_seconds=0.0, min_update_seconds=0.0
    )
    tracker = FaceTracker(config, EMOTIONS, id_prefix="t")
    frames = [[((50, 50, 80, 80), p("sad" if i == 20 else "happy"))] for i in range(40)]
    assert [e.kind for _, e in run(tracker, frames)] == ["new"]


def test_one_frame_fluke_never_becomes_a_person():
    tracker = FaceTracker(TrackingConfig(min_frames=3, max_missing_seconds=0.2), EMOTIONS)
    frames = [[((50, 50, 80, 80), p("fear"))]] + [[]] * 20
    assert run(tracker, frames) == []


def test_two_people_get_two_ids_and_end_all_summarises_both():
    tracker = FaceTracker(TrackingConfig(min_frames=2), EMOTIONS, id_prefix="t")
    frames = [[((10, 10, 80, 80), p("happy")), ((400, 10, 80, 80), p("angry"))] for _ in range(5)]
    events = run(tracker, frames)
    assert sorted(e.face_id for _, e in events if e.kind == "new") == ["t-1", "t-2"]
    ends = tracker.end_all(1.0, 1_700_000_001.0)
    assert {e.face_id: e.summary["dominant_emotion"] for e in ends} == {"t-1": "happy", "t-2": "angry"}
    assert {e.summary["ended_by"] for e in ends} == {"shutdown"}  # the daemon ended them, not the customers
    assert tracker.present() == []


def test_the_summary_says_how_the_person_seemed_on_arrival_at_the_peak_and_on_leaving():
    tracker = FaceTracker(TrackingConfig(min_frames=3, smoothing_seconds=0.2), EMOTIONS, id_prefix="t")
    box = (10, 10, 80, 80)
    frames = (
        [[(box, p("neutral", 0.8))]] * 30 + [[(box, p("angry", 0.95))]] * 30 + [[(box, p("happy", 0.7))]] * 60
    )
    frames += [[]] * 40  # gone: the visit ends
    ends = [e for _, e in run(tracker, frames) if e.kind == "end"]
    summary = ends[0].summary
    assert summary["arrival"]["emotion"] == "neutral" and summary["arrival"]["time"] == pytest.approx(
        1_700_000_000 + 2 / 30
    )
    assert summary["peak"]["emotion"] == "angry" and summary["peak"]["probability"] > 0.9
    assert 1_700_000_001 < summary["peak"]["time"] < 1_700_000_002  # during the angry second
    assert summary["departure"]["emotion"] == "happy" and summary["departure"]["time"] == pytest.approx(
        1_700_000_000 + 119 / 30
    )
