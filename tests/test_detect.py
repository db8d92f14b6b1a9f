import itertools

import numpy as np
import pytest

from bench.clips import astronaut_portrait, background, paste
from edge.config import DetectorConfig, TrackingConfig
from edge.vision.detect import FaceFinder, HaarFaceDetector, detection_scale
from edge.vision.matching import FaceMatcher
from edge.vision.preprocess import to_gray


def test_detection_scale_never_hides_faces_of_the_minimum_size():
    assert detection_scale(640, 320, 48) == 0.5
    assert detection_scale(1280, 320, 48) == 0.5  # not 0.25: a 48 px face must stay >= 24 px
    assert detection_scale(1280, 320, 200) == 0.25
    assert detection_scale(320, 320, 48) == 1.0 and detection_scale(640, 0, 48) == 1.0


def test_smallest_face_follows_the_frame_height_unless_given_in_pixels():
    from edge.config import DetectorConfig

    default = DetectorConfig()
    assert default.min_face_pixels(480) == 48 and default.min_face_pixels(720) == 72
    # The kiosk's geometry holds at 720p: detect at 1/3 scale, not at 1/2 as a fixed 48 px would.
    assert detection_scale(1280, 320, default.min_face_pixels(720)) == 24 / 72
    assert DetectorConfig(min_face_size=30).min_face_pixels(720) == 30


def scene_with_face(x: int) -> np.ndarray:
    frame = background(640, 480, seed=3)
    paste(frame, astronaut_portrait(), (x, 60, 230, 280))
    return to_gray(frame)


def finding(config: DetectorConfig):
    """A FaceFinder with the matcher the pipeline gives it: (finder, find(gray, now) -> boxes)."""
    finder, matcher = FaceFinder(HaarFaceDetector(config)), FaceMatcher.from_config(TrackingConfig())

    def find(gray, now=None):
        found = finder.find(gray, now, matcher.on_last_frame() if now is not None else {})
        boxes = [box for _, box in found]
        if now is not None:
            matcher.assign(boxes, now, [key for key, _ in found])
        return boxes

    return finder, find


def frames_at(fps: float = 30.0):
    """Frame times of a camera at ``fps``: 0, 1/fps, 2/fps, ..."""
    return (i / fps for i in itertools.count())


def test_still_face_is_kept_without_searching_and_moving_face_is_followed():
    finder, find = finding(DetectorConfig(full_detect_seconds=100))
    clock = frames_at()
    still = scene_with_face(200)
    first = find(still, next(clock))
    assert len(first) == 1 and finder.full_detections == 1
    for _ in range(5):
        assert find(still, next(clock)) == first
    assert finder.local_searches == 0 and finder.full_detections == 1
    moved = find(scene_with_face(212), next(clock))
    assert len(moved) == 1 and moved[0][0] > first[0][0]
    assert finder.local_searches == 1 and finder.full_detections == 1


@pytest.mark.parametrize("scale_factor", [1.1, 1.2, 1.3])
def test_a_moving_face_is_found_by_the_local_search_at_any_scale_factor(scale_factor):
    """The local search looks at a narrow band of sizes; a coarse detector.scale_factor
    must not leave it without a window size in that band (every search would then fall
    back to a full detection)."""
    finder, find = finding(DetectorConfig(full_detect_seconds=100, scale_factor=scale_factor))
    clock = frames_at()
    assert len(find(scene_with_face(200), next(clock))) == 1
    for x in range(206, 260, 6):
        assert len(find(scene_with_face(x), next(clock))) == 1
    assert finder.full_detections == 1 and finder.local_searches == 9


def test_arrival_elsewhere_triggers_a_full_detection():
    finder, find = finding(DetectorConfig(full_detect_seconds=100))
    clock = frames_at()
    empty = to_gray(background(640, 480, seed=3))
    assert find(empty, next(clock)) == [] and find(empty, next(clock)) == []
    assert finder.full_detections == 1  # nothing moved: no new full detection
    assert len(find(scene_with_face(200), next(clock))) == 1
    assert finder.full_detections == 2


@pytest.mark.parametrize("fps", [15.0, 30.0])
def test_periodic_full_detection_follows_time_not_frames(fps):
    finder, find = finding(DetectorConfig(full_detect_seconds=1.0))
    still = scene_with_face(200)
    for now in itertools.islice(frames_at(fps), int(3 * fps)):  # 3 s of a still scene
        find(still, now)
    assert finder.full_detections == 3  # at 0, 1 and 2 s, at either frame rate


def test_a_photo_without_a_time_always_gets_a_full_detection():
    finder, find = finding(DetectorConfig(full_detect_seconds=100))
    still = scene_with_face(200)
    assert find(still) == find(still) and finder.full_detections == 2


def test_fast_walker_is_searched_where_heading_and_never_missed_on_a_frame():
    # 60 px per frame: more than the search window's margin around the last position (half
    # a face width, 54 px), still the same person by the matcher's rule (0.6 face widths).
    finder, find = finding(DetectorConfig(full_detect_seconds=100, motion_trigger=False))
    clock = frames_at()
    offset = None
    for x in [0, 60, 120, 180, 240]:
        boxes = find(scene_with_face(x), next(clock))
        assert len(boxes) == 1, (x, boxes)
        offset = boxes[0][0] - x if offset is None else offset  # the face within the portrait
        assert abs(boxes[0][0] - x - offset) < 10, (x, boxes)
    # Frame 1 lost the face near its old place and ran a full detection on that very frame;
    # from then on the search followed its step without one.
    assert finder.full_detections == 2 and finder.local_searches >= 3


def test_pipeline_sets_opencvs_threads_from_the_config():
    import cv2

    from edge.config import parse_config
    from edge.daemon.service import build_pipeline

    before = cv2.getNumThreads()
    try:
        build_pipeline(parse_config({"detector": {"threads": 1}}))
        assert cv2.getNumThreads() == 1
        cv2.setNumThreads(2)
        build_pipeline(parse_config({"detector": {"threads": 0}}))  # 0: leave OpenCV's own setting
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)
