import itertools

import numpy as np
import pytest

from bench.clips import astronaut_portrait, background, paste
from edge.config import DetectorConfig, TrackingConfig
from edge.vision.detect import (
    FaceFinder,
    HaarFaceDetector,
    changed_pixels,
    detection_scale,
    merge_boxes,
    motion_began,
    motion_regions,
    motion_thumbnail,
)
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


def test_an_arrival_is_found_on_its_first_frame_by_searching_where_it_moved():
    finder, find = finding(DetectorConfig(full_detect_seconds=100))
    clock = frames_at()
    empty = to_gray(background(640, 480, seed=3))
    assert find(empty, next(clock)) == [] and find(empty, next(clock)) == []
    assert finder.full_detections == 1  # nothing moved: no new full detection
    assert len(find(scene_with_face(200), next(clock))) == 1
    assert finder.full_detections == 1 and finder.motion_searches == 1  # its region, not the frame


@pytest.mark.parametrize("fps", [15.0, 30.0])
def test_periodic_full_detection_follows_time_not_frames(fps):
    # without the motion trigger, which would let a still scene's detections wait (below)
    finder, find = finding(DetectorConfig(full_detect_seconds=1.0, motion_trigger=False))
    still = scene_with_face(200)
    for now in itertools.islice(frames_at(fps), int(3 * fps)):  # 3 s of a still scene
        find(still, now)
    assert finder.full_detections == 3  # at 0, 1 and 2 s, at either frame rate


def test_a_scene_as_the_last_full_detection_saw_it_is_searched_again_only_now_and_then():
    """Nothing changed outside the known faces since the last full detection: the scheduled
    one would give the same answer, so it waits, at most STILL_SCENE_RECHECK_SECONDS; a
    change anywhere outside the faces brings it back on schedule."""
    recheck = FaceFinder.STILL_SCENE_RECHECK_SECONDS
    clock = frames_at()
    for scene in (empty_scene(), scene_with_face(200)):  # an empty counter; a customer standing still
        finder, find = finding(DetectorConfig(full_detect_seconds=1.0))
        for now in itertools.islice(clock, int(30 * (recheck + 1.5))):
            find(scene, now)
        assert finder.full_detections == 2  # the first frame's, and one after the recheck time
    # a change outside the faces (a chair moved at 0.5 s) is searched by the next scheduled
    # detection, at 1 s; the scene then stays as that one saw it
    finder, find = finding(DetectorConfig(full_detect_seconds=1.0))
    moved = with_square(empty_scene(), 450, 300)
    for index, now in enumerate(itertools.islice(frames_at(), 90)):
        find(empty_scene() if index < 15 else moved, now)
    assert finder.full_detections == 2  # at 0 and 1 s
    # something that keeps moving outside the faces: on schedule, once a second, as before
    finder, find = finding(DetectorConfig(full_detect_seconds=1.0))
    for index, now in enumerate(itertools.islice(frames_at(), 90)):
        find(with_square(empty_scene(), 40 + 5 * index, 300), now)
    assert finder.full_detections == 3  # at 0, 1 and 2 s


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


# Where it moved: the pure parts.


def test_changed_pixels_take_out_a_change_of_the_light():
    scene = to_gray(background(80, 60, seed=3))
    dimmed = (scene * 0.7).astype(np.uint8)
    assert not changed_pixels(dimmed, scene).any()  # the lamp dimmed: nothing moved
    moved = dimmed.copy()
    moved[10:20, 30:40] = 255
    changed = changed_pixels(moved, scene)
    assert changed[10:20, 30:40].all() and changed.sum() == 100  # only what moved, in the dimmer scene
    assert not changed_pixels(scene, scene).any()


def test_motion_thumbnail_is_the_frame_small_and_still_sees_a_small_face():
    frame = np.zeros((720, 1280), np.uint8)
    frame[300:372, 600:672] = 200  # the smallest face at 720p: 72 px
    thumb = motion_thumbnail(frame, (80, 60))
    assert thumb.shape == (60, 80) and thumb.max() >= 150
    assert motion_thumbnail(np.full((480, 640), 7, np.uint8), (80, 60)).tolist() == [[7] * 80] * 60


def test_motion_regions_are_grown_by_the_margin_clamped_and_in_frame_pixels():
    changed = np.zeros((60, 80), bool)
    changed[0:2, 0:2] = True  # the top left corner of the thumbnail: 16x16 px of a 640x480 frame
    assert motion_regions(changed, (640, 480), 24) == [(0, 0, 16 + 24, 16 + 24)]
    changed[30, 40] = True  # a pixel in the middle: 8x8 px at (320, 240)
    assert motion_regions(changed, (640, 480), 24) == [(0, 0, 40, 40), (296, 216, 56, 56)]
    assert motion_regions(np.zeros((60, 80), bool), (640, 480), 24) == []


def test_motion_regions_closer_than_two_margins_are_merged():
    changed = np.zeros((60, 80), bool)
    changed[30, 40] = changed[30, 44] = True  # 32 px apart at 640x480: the grown regions touch
    assert motion_regions(changed, (640, 480), 24) == [(296, 216, 88, 56)]
    assert len(motion_regions(changed, (640, 480), 8)) == 2


def test_merge_boxes_joins_overlapping_and_touching_boxes_until_none_do():
    assert merge_boxes([(0, 0, 10, 10), (10, 0, 10, 10), (100, 100, 5, 5)]) == [
        (0, 0, 20, 10),
        (100, 100, 5, 5),
    ]
    # a chain: the first two join into a box that then overlaps the third
    assert merge_boxes([(0, 0, 10, 10), (50, 0, 10, 10), (5, 5, 50, 2)]) == [(0, 0, 60, 10)]
    assert merge_boxes([]) == []


def test_motion_that_keeps_going_keeps_its_beginning_and_new_motion_begins_now():
    began, seen = np.full((60, 80), np.inf, np.float32), np.full((60, 80), -np.inf, np.float32)
    walker = np.zeros((60, 80), bool)
    walker[20:40, 10:14] = True
    began, seen = motion_began(walker, began, seen, 1.0, memory=0.5)
    assert began[walker].tolist() == [1.0] * 80 and np.isinf(began[~walker]).all()
    # a frame later the walker is a pixel further on; a customer appears far from them
    walker, customer = np.roll(walker, 1, axis=1), np.zeros((60, 80), bool)
    customer[10:30, 60:70] = True
    began, seen = motion_began(walker | customer, began, seen, 1.1, memory=0.5)
    assert began[walker].max() == 1.0 and began[customer].min() == np.float32(1.1)
    # motion that stopped is forgotten after `memory`: moving there again is new
    began, seen = motion_began(walker, began, seen, 1.7, memory=0.5)
    assert began[walker].min() == np.float32(1.7)


# Where it moved: the finder.


def counting_regions(finder: FaceFinder) -> list:
    """The region of each detection the finder runs from now on (None: the whole frame)."""
    regions, detect = [], finder.detector.detect

    def recorded(gray, region=None):
        regions.append(region)
        return detect(gray, region)

    finder.detector.detect = recorded
    return regions


def empty_scene() -> np.ndarray:
    return to_gray(background(640, 480, seed=3))


def with_square(gray: np.ndarray, x: int, y: int, side: int = 40) -> np.ndarray:
    frame = gray.copy()
    frame[y : y + side, x : x + side] = 250
    return frame


def test_motion_in_a_corner_searches_only_that_corner():
    finder, find = finding(DetectorConfig(full_detect_seconds=100))
    clock = frames_at()
    find(empty_scene(), next(clock))
    regions = counting_regions(finder)
    for step in range(10):
        assert find(with_square(empty_scene(), 20 + 4 * step, 20), next(clock)) == []
    assert finder.full_detections == 1 and regions and None not in regions
    assert all(x + w <= 160 and y + h <= 120 for x, y, w, h in regions), regions


def test_motion_that_goes_on_is_searched_at_the_rate_and_a_newcomer_at_once():
    """Someone walking behind the counter for 3 s: searched on every frame for the first
    half second, then at most motion_search_hz times a second, never with a full detection;
    a customer who arrives meanwhile is found on the frame they appear."""
    finder, find = finding(DetectorConfig(full_detect_seconds=100, motion_search_hz=5))
    clock = frames_at()
    find(empty_scene(), next(clock))
    for step in range(90):
        find(with_square(empty_scene(), 20 + 2 * step, 380), next(clock))
    assert finder.full_detections == 1
    assert finder.motion_searches <= 15 + 2.5 * 5 + 1, finder.motion_searches
    arrived = with_square(scene_with_face(340), 20 + 2 * 90, 380)
    assert len(find(arrived, next(clock))) == 1 and finder.full_detections == 1


def test_someone_walking_behind_the_counter_seen_at_the_idle_frame_rate_is_still_motion_that_goes_on():
    """At 15 fps (camera.idle_fps) a brisk walker moves 2.5 thumbnail pixels between frames,
    beyond the 2 that join motion at 30 fps: without a reach that grows with the time
    between frames, they were new motion on every frame (searched on every frame)."""
    finder, find = finding(DetectorConfig(full_detect_seconds=100, motion_search_hz=5))
    clock = frames_at(fps=15)
    find(empty_scene(), next(clock))
    for step in range(30):  # 2 s across the frame, 300 px a second
        find(with_square(empty_scene(), 20 + 20 * step, 380), next(clock))
    assert finder.full_detections == 1
    # the first half second on every frame (8), then at most 5 a second
    assert finder.motion_searches <= 8 + 1.5 * 5 + 2, finder.motion_searches


def test_a_flicker_over_the_whole_scene_costs_at_most_the_rate_in_full_detections():
    finder, find = finding(DetectorConfig(full_detect_seconds=100, motion_search_hz=5))
    clock = frames_at()
    scene = empty_scene().astype(np.float32)
    # uneven, two lamps flickering in turn: one change of the light cannot explain it
    ramp = np.linspace(0.4, 1.0, 640, dtype=np.float32)[None, :]
    flicker = [(scene * ramp).astype(np.uint8), (scene * ramp[:, ::-1]).astype(np.uint8)]
    thumbs = [motion_thumbnail(frame, (80, 60)) for frame in flicker]
    assert changed_pixels(thumbs[1], thumbs[0]).mean() > 0.5
    for frame in range(90):  # 3 s, the lamps taking turns
        find(flicker[frame % 2], next(clock))
    # the first frame's, then one a second: motion_search_hz / 5 (before: one on every frame)
    assert finder.full_detections <= 1 + 3 + 1, finder.full_detections
    evenly = [scene.astype(np.uint8), (scene * 0.6).astype(np.uint8)]
    finder, find = finding(DetectorConfig(full_detect_seconds=100, motion_search_hz=5))
    for frame in range(90):
        find(evenly[frame % 2], next(clock))
    assert finder.full_detections == 1 and finder.motion_searches == 0  # an even flicker: no motion at all


def test_a_newcomer_who_comes_without_moving_is_found_by_the_scheduled_full_detection():
    """A face that fades in over 2 s changes each frame too little to count as motion; the
    full detection on its schedule finds it all the same."""
    finder, find = finding(DetectorConfig(full_detect_seconds=1.0))
    empty, face = empty_scene().astype(np.float32), scene_with_face(200).astype(np.float32)
    found_at = None
    for index, now in enumerate(itertools.islice(frames_at(), 120)):
        alpha = min(1.0, index / 60)
        boxes = find((empty * (1 - alpha) + face * alpha).astype(np.uint8), now)
        if boxes and found_at is None:
            found_at = now
    assert finder.motion_searches == 0
    # at 0 and 1 s; then only the face changes, which the local search follows
    assert found_at is not None and found_at <= 3.0 and finder.full_detections == 2
