"""Privacy: zones where faces are ignored, and a spool that forgets what it cannot deliver."""

from __future__ import annotations

import os
import time

import pytest

from edge.config import ConfigError, DetectorConfig, parse_config
from edge.mqtt.payloads import Message
from edge.mqtt.spool import DiskSpool
from edge.vision.pipeline import FramePipeline, outside_zones


def test_a_face_whose_centre_is_in_a_zone_is_dropped():
    boxes = [(10, 10, 100, 100), (500, 300, 80, 80)]
    assert outside_zones(boxes, [], (480, 640)) == boxes
    assert outside_zones(boxes, [(0.5, 0.5, 0.5, 0.5)], (480, 640)) == [
        (10, 10, 100, 100)
    ]  # right bottom quarter
    assert (
        outside_zones(boxes, [(0.0, 0.0, 0.1, 0.1)], (480, 640)) == boxes
    )  # the box's corner, not its centre
    assert outside_zones(boxes, [(0, 0, 1, 1)], (480, 640)) == []


def test_zones_are_validated_with_the_key_named():
    assert parse_config({"detector": {"ignore_zones": [[0.6, 0, 0.4, 1]]}}).detector.ignore_zones == (
        (0.6, 0, 0.4, 1),
    )
    for bad, words in [
        ([[0.6, 0, 0.5, 1]], "reaches outside"),
        ([[0.1, 0.2, 0.3]], "[x, y, width, height]"),
        ([[0, 0, 2, 1]], "fractions of the frame"),
        ("left", "expected a list"),
        ([[0, 0, "a", 1]], "ignore_zones[0][2]"),
    ]:
        with pytest.raises(ConfigError, match=r"detector\.ignore_zones") as err:
            parse_config({"detector": {"ignore_zones": bad}})
        assert words in str(err.value), str(err.value)


def test_the_real_pipeline_ignores_the_astronaut_inside_a_zone(astronaut_bgr):
    from edge import DEFAULT_MODEL
    from edge.vision.classifier import EmotionClassifier
    from edge.vision.detect import HaarFaceDetector

    classifier = EmotionClassifier(DEFAULT_MODEL)
    detector = DetectorConfig(detect_width=0, min_face_size=24)
    seen = FramePipeline(HaarFaceDetector(detector), classifier).process(astronaut_bgr)
    assert len(seen) == 1
    x, y, w, h = seen[0].box
    height, width = astronaut_bgr.shape[:2]
    zone = ((x + w / 2) / width - 0.1, (y + h / 2) / height - 0.1, 0.2, 0.2)  # around her face's centre
    hidden = FramePipeline(HaarFaceDetector(detector), classifier, ignore_zones=[zone]).process(astronaut_bgr)
    assert hidden == []
    elsewhere = FramePipeline(HaarFaceDetector(detector), classifier, ignore_zones=[(0, 0, 0.05, 0.05)])
    assert len(elsewhere.process(astronaut_bgr)) == 1


def test_the_spool_deletes_summaries_older_than_its_maximum_age(tmp_path, caplog):
    spool = DiskSpool(tmp_path / "spool", max_age_seconds=7 * 86400)
    old = spool.append(Message("t/events", b'{"a": 1}', 1))
    recent = spool.append(Message("t/events", b'{"a": 2}', 1))
    eight_days_ago = time.time() - 8 * 86400
    os.utime(tmp_path / "spool" / old, (eight_days_ago, eight_days_ago))
    reopened = DiskSpool(tmp_path / "spool", max_age_seconds=7 * 86400)  # as after a restart
    assert [name for name, _ in reopened.pending()] == [recent]
    assert reopened.expired == 1 and not (tmp_path / "spool" / old).exists()
    assert "older than 7 days" in caplog.text
    keep_all = DiskSpool(tmp_path / "spool", max_age_seconds=0)
    assert keep_all.expire(now=time.time() + 365 * 86400) == 0 and len(keep_all) == 1
