"""The classification policy (temporal views, the budget) and the classifier's per-face views."""

import numpy as np
import pytest

from edge import DEFAULT_MODEL
from edge.config import ConfigError, TrackingConfig, parse_config
from edge.contract import VIEW_SETS
from edge.vision.classifier import EmotionClassifier
from edge.vision.matching import FaceMatcher
from edge.vision.pipeline import ClassifyPolicy

VIEWS = VIEW_SETS["mirror-shift"]
FACE = (100, 100, 80, 80)


def run(policy, frames, fps=30.0, matcher=None):
    """frames: list of lists of boxes, keyed by a matcher as the pipeline does; returns per
    frame {face index: views}, recording fake answers."""
    matcher = matcher or FaceMatcher.from_config(TrackingConfig())
    out = []
    for i, boxes in enumerate(frames):
        requests = policy.plan(boxes, i / fps, matcher.assign(boxes, i / fps))
        policy.record(requests, np.full((len(requests), 7), 1 / 7))
        out.append({r.face: r.views for r in requests})
    return out


def test_new_face_gets_every_view_then_one_view_at_a_time_in_turn_at_most_max_hz():
    plans = run(ClassifyPolicy(VIEWS, max_hz=10, forget_seconds=1.0), [[FACE]] * 31)
    assert plans[0] == {0: VIEWS}
    served = [i for i, plan in enumerate(plans) if plan]
    assert served == list(range(0, 31, 3))  # 10 Hz at 30 fps: every third frame
    rotation = [plans[i][0] for i in served[1:]]
    assert all(len(views) == 1 for views in rotation)
    assert [views[0] for views in rotation] == list(VIEWS)  # each view once, in turn


def test_several_faces_share_the_frames_fairly():
    faces = [(0, 100, 80, 80), (200, 100, 80, 80), (400, 100, 80, 80)]
    plans = run(ClassifyPolicy(VIEWS, max_hz=10, forget_seconds=1.0), [faces] * 61)
    assert plans[0] == {0: VIEWS, 1: VIEWS, 2: VIEWS}
    later = plans[1:]
    assert all(len(plan) <= 1 for plan in later)  # one face per frame, not three every third frame
    counts = [sum(face in plan for plan in later) for face in range(3)]
    assert max(counts) - min(counts) <= 1 and sum(counts) >= 18  # ~10 Hz each over 2 s


def test_the_face_that_moved_most_is_served_first():
    still, walker = (0, 100, 80, 80), (300, 100, 80, 80)
    policy = ClassifyPolicy(VIEWS, max_hz=10, forget_seconds=1.0)
    run(policy, [[still, walker]] * 3)  # both new at t=0, then not due for 0.1 s
    # at 0.1 s both are due, but a frame serves one: the one that moved half a face width
    requests = policy.plan([still, (340, 100, 80, 80)], 3 / 30, [1, 2])
    assert [r.face for r in requests] == [1]


def test_a_photo_gets_every_view_and_nothing_is_remembered():
    policy = ClassifyPolicy(VIEWS, max_hz=10, forget_seconds=1.0)
    for _ in range(2):
        requests = policy.plan([FACE, (300, 0, 50, 50)], None)
        assert [(r.face, r.views) for r in requests] == [(0, VIEWS), (1, VIEWS)]
        policy.record(requests, np.eye(7)[:2])


def test_a_face_gone_longer_than_forget_seconds_is_new_again():
    policy = ClassifyPolicy(VIEWS, max_hz=10, forget_seconds=1.0)
    run(policy, [[FACE]])
    assert policy.plan([], 0.5, []) == []
    assert policy.plan([FACE], 0.9, [1])[0].views == (VIEWS[0],)  # back within 1 s: same face
    policy.record([], np.zeros((0, 7)))
    assert policy.plan([FACE], 2.5, [1])[0].views == VIEWS


def test_faces_between_classifications_keep_their_last_answer():
    policy = ClassifyPolicy(VIEWS, max_hz=10, forget_seconds=1.0)
    answer = np.eye(7)[3]
    policy.record(policy.plan([FACE], 0.0, [1]), answer[None])
    requests = policy.plan([FACE], 1 / 30, [1])
    assert requests == []
    assert np.array_equal(policy.record(requests, np.zeros((0, 7)))[0], answer)


def test_the_policy_and_the_matcher_take_their_settings_from_the_config_alone():
    """No default of their own that could drift from the config's (the policy's max_hz once
    said 10 where the config said 15): built from their sections, or given every value."""
    import dataclasses
    import inspect

    from edge.config import ModelConfig
    from edge.vision.detect import HaarFaceDetector
    from edge.vision.pipeline import PHOTO_DETECTOR, FramePipeline

    required = {f.name for f in dataclasses.fields(ClassifyPolicy) if f.default is dataclasses.MISSING}
    assert {"max_hz", "forget_seconds"} <= required
    matcher_defaults = {
        name: p.default
        for name, p in inspect.signature(FaceMatcher).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert matcher_defaults == {}
    model, tracking = (
        ModelConfig(max_classify_hz=7.0),
        TrackingConfig(max_missing_seconds=0.4, iou_threshold=0.5),
    )
    policy = ClassifyPolicy.from_config(VIEWS, model, tracking)
    assert (policy.max_hz, policy.forget_seconds) == (7.0, 0.4)
    matcher = FaceMatcher.from_config(tracking)
    assert (matcher.iou_threshold, matcher.max_center_distance, matcher.forget_seconds) == (0.5, 0.6, 0.4)
    # without them (a photo's pipeline, which needs neither): the config's defaults
    pipeline = FramePipeline(HaarFaceDetector(PHOTO_DETECTOR), EmotionClassifier(DEFAULT_MODEL))
    assert pipeline.policy.max_hz == ModelConfig().max_classify_hz
    assert pipeline.matcher.forget_seconds == TrackingConfig().max_missing_seconds


@pytest.fixture(scope="module")
def classifier():
    return EmotionClassifier(DEFAULT_MODEL)


def test_classify_with_the_whole_set_is_classify(classifier):
    crops = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    views = classifier.contract.views
    assert np.allclose(classifier.classify_with(crops, [views] * 3), classifier.classify(crops), atol=1e-6)
    mixed = classifier.classify_with(crops, [views, (views[0],), views[5:7]])
    single = EmotionClassifier(DEFAULT_MODEL, views=(views[0],)).classify(crops[1:2])
    assert np.allclose(mixed[1], single[0], atol=1e-6) and np.allclose(
        mixed.sum(axis=1), 1, atol=0.01
    )  # int8 output: steps of 1/256


def test_replaced_keys_are_refused_with_what_replaces_them():
    with pytest.raises(ConfigError) as caught:
        parse_config({"detector": {"full_detect_every": 10}, "model": {"reclassify_seconds": 0.1}})
    text = str(caught.value)
    assert "detector.full_detect_every: replaced by detector.full_detect_seconds" in text
    assert "model.reclassify_seconds: replaced by model.max_classify_hz" in text
    config = parse_config({"detector": {"full_detect_seconds": 0.5}, "model": {"max_classify_hz": 5}})
    assert config.detector.full_detect_seconds == 0.5 and config.model.max_classify_hz == 5.0
