"""Faces in a grayscale frame with OpenCV's Haar cascade (all faces, not only the largest)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from edge.config import DetectorConfig
from edge.vision.matching import MatchedFace
from edge.vision.preprocess import Box, iou

DEFAULT_CASCADE = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"


class DetectorError(Exception):
    pass


# The frontal-face cascade's smallest window: a face smaller than this in the image the
# cascade sees is never found.
CASCADE_WINDOW = 24


def detection_scale(frame_width: int, detect_width: int, min_face_size: int = CASCADE_WINDOW) -> float:
    """Factor from full-frame to detection-frame pixels (1.0: detect at full resolution).

    Never so small that a face of ``min_face_size`` shrinks below the cascade's window:
    at 1280x720 a fixed 320-pixel width would silently drop every face under 96 pixels."""
    if detect_width <= 0 or frame_width <= detect_width:
        return 1.0
    return min(1.0, max(detect_width / frame_width, CASCADE_WINDOW / max(min_face_size, 1)))


def load_cascade(path: str) -> cv2.CascadeClassifier:
    """OpenCV's cascade from ``path`` (empty: the bundled frontal-face one); DetectorError,
    naming ``detector.cascade`` and the file, when it cannot be read or is not a cascade
    (OpenCV itself raises SystemError for a malformed XML file, and says nothing useful)."""
    key = "detector.cascade" if path else "detector.cascade (OpenCV's bundled cascade)"
    path = path or str(DEFAULT_CASCADE)
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError as err:
        raise DetectorError(f"{key}: {path}: cannot read ({err.strerror})") from None
    if b"<opencv_storage>" not in head and b"<cascade" not in head:
        raise DetectorError(f"{key}: {path}: not an OpenCV Haar cascade (no <opencv_storage> XML)")
    try:
        cascade = cv2.CascadeClassifier(path)
    except (cv2.error, SystemError) as err:
        cause = err.__cause__ or err.__context__ or err
        func = str(getattr(cause, "func", ""))
        if "):" in func:  # XML parser: "file(line): what"
            detail = "XML line " + func.rsplit("(", 1)[-1].replace("):", ":")
        else:
            detail = f"OpenCV: {getattr(cause, 'err', None) or type(cause).__name__}"
        raise DetectorError(
            f"{key}: {path}: not a valid Haar cascade ({' '.join(detail.split())[:160]})"
        ) from None
    if cascade.empty():
        raise DetectorError(f"{key}: {path}: not a valid Haar cascade (OpenCV loaded no stages)")
    return cascade


class HaarFaceDetector:
    def __init__(self, config: DetectorConfig):
        self.config = config
        self._cascade = load_cascade(config.cascade)

    def detect(self, gray: np.ndarray, region: Box | None = None) -> list[Box]:
        """Face boxes (x, y, w, h) in full-frame pixels, largest first. ``region``: look only
        inside this box of the frame, at the scale a detection of the whole frame uses (so it
        finds there what a full detection would, for a fraction of the cost)."""
        c = self.config
        min_face = c.min_face_pixels(gray.shape[0])
        scale = detection_scale(gray.shape[1], c.detect_width, min_face)
        x0, y0, width, height = region if region is not None else (0, 0, gray.shape[1], gray.shape[0])
        image = gray[y0 : y0 + height, x0 : x0 + width]
        min_side = max(CASCADE_WINDOW, int(min_face * scale))
        if min(image.shape) * scale < min_side:
            return []  # no face of the smallest size fits in it
        # INTER_LINEAR, as the cascade's own image pyramid: INTER_AREA at the non-integer
        # ratios used here cost 1.4 ms per 1280x720 frame, and recall on the benchmark
        # clips stayed 100 % without it.
        small = (
            image
            if scale == 1.0
            else cv2.resize(
                image,
                (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                interpolation=cv2.INTER_LINEAR,
            )
        )
        max_side = int(c.max_face_size * scale) if c.max_face_size else 0
        found = self._cascade.detectMultiScale(
            small,
            scaleFactor=c.scale_factor,
            minNeighbors=c.min_neighbors,
            minSize=(min_side, min_side),
            maxSize=(max_side, max_side) if max_side else (0, 0),
        )
        boxes = [
            (
                x0 + int(round(x / scale)),
                y0 + int(round(y / scale)),
                int(round(w / scale)),
                int(round(h / scale)),
            )
            for (x, y, w, h) in (found if len(found) else [])
        ]
        return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)


def _expand(
    box: Box, left: float, top: float, right: float, bottom: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of ``box`` grown by multiples of its size, clamped to the frame."""
    x, y, w, h = box
    return (
        max(0, int(x - left * w)),
        max(0, int(y - top * h)),
        min(width, int(x + w + right * w)),
        min(height, int(y + h + bottom * h)),
    )


# Grey levels a thumbnail pixel must change by (beyond a change of the light) to count as motion.
CHANGE_LEVELS = 12


def motion_thumbnail(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The frame shrunk to ``size`` (width, height) for judging motion, each pixel the mean
    of the frame's under it. Halved first while it is 4 times the size or more: halving
    with INTER_LINEAR averages 2x2 pixels as INTER_AREA does, at a fifth of the cost (at
    1280x720 0.07 instead of 0.25 ms). Every pixel counts: a thumbnail of every 6th one,
    as cheap, took the sway of a still face for motion (a tenth more local searches)."""
    small = gray
    while small.shape[1] >= 4 * size[0] and small.shape[0] >= 4 * size[1]:
        small = cv2.resize(small, (small.shape[1] // 2, small.shape[0] // 2), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(small, size, interpolation=cv2.INTER_AREA)


def changed_pixels(thumb: np.ndarray, previous: np.ndarray, levels: float = CHANGE_LEVELS) -> np.ndarray:
    """Where two thumbnails of the scene differ by more than ``levels`` grey levels, but not
    where a change of the light explains it: when the scene as a whole got brighter or
    darker, the previous one is scaled by the median ratio of their brightness and what
    then differs by less than ``levels`` did not move. A lamp that dims or flickers over
    the whole scene moves nothing; whatever moves still differs from the scene behind it."""
    changed = cv2.absdiff(thumb, previous) > levels
    if not changed.any() or abs(float(thumb.mean()) - float(previous.mean())) < 1.0:  # the light as it was
        return changed
    now, before = thumb.astype(np.float32), previous.astype(np.float32)
    lit = before >= 16  # in the dark, the ratio is noise
    gain = float(np.median(now[lit] / before[lit])) if lit.any() else 1.0
    return changed & (np.abs(now - gain * before) > levels)


def merge_boxes(boxes: list[Box]) -> list[Box]:
    """Boxes that overlap or touch replaced by the box around them, until none do."""
    merged = list(boxes)
    joined = True
    while joined:
        joined = False
        for i, j in itertools.combinations(range(len(merged)), 2):
            (ax, ay, aw, ah), (bx, by, bw, bh) = merged[i], merged[j]
            if ax <= bx + bw and bx <= ax + aw and ay <= by + bh and by <= ay + ah:
                x0, y0 = min(ax, bx), min(ay, by)
                x1, y1 = max(ax + aw, bx + bw), max(ay + ah, by + bh)
                merged[i] = (x0, y0, x1 - x0, y1 - y0)
                del merged[j]
                joined = True
                break
    return merged


def motion_regions(changed: np.ndarray, frame_size: tuple[int, int], margin: int) -> list[Box]:
    """The parts of the frame to search for what moved: each connected region of the
    ``changed`` mask (a thumbnail of the frame), grown by ``margin`` frame pixels on every
    side (a face whose centre moved lies wholly inside), regions that then touch merged,
    as (x, y, w, h) boxes in the pixels of a frame of ``frame_size`` (width, height)."""
    width, height = frame_size
    rows, cols = changed.shape
    sx, sy = width / cols, height / rows
    # Growing the mask merges regions closer than two margins in one cheap step; the boxes
    # around regions can still overlap (an L beside a dot), hence the merge after.
    kernel = np.ones((2 * math.ceil(margin / sy) + 1, 2 * math.ceil(margin / sx) + 1), np.uint8)
    grown = cv2.dilate(changed.astype(np.uint8), kernel)
    count, _, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    boxes = []
    for x, y, w, h, _ in stats[1:count]:
        x0, y0 = max(0, math.floor(x * sx)), max(0, math.floor(y * sy))
        x1, y1 = min(width, math.ceil((x + w) * sx)), min(height, math.ceil((y + h) * sy))
        boxes.append((x0, y0, x1 - x0, y1 - y0))
    return merge_boxes(boxes)


def motion_began(
    changed: np.ndarray, began: np.ndarray, seen: np.ndarray, now: float, memory: float, reach: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel of the motion thumbnail, when the motion there began and when it was last
    seen, after a frame whose ``changed`` pixels are given: a pixel that changes continues
    the oldest motion seen within ``reach`` pixels in the last ``memory`` seconds (someone
    who keeps walking carries their beginning along), or begins new motion ``now``.
    Pixels that stopped moving keep theirs until ``memory`` has passed."""
    alive = np.where(now - seen <= memory, began, np.inf).astype(np.float32)
    nearby = cv2.erode(alive, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8))  # the oldest around
    return np.where(changed, np.minimum(nearby, now), alive), np.where(changed, now, seen)


class FaceFinder:
    """Faces per frame at a fraction of full detection's cost, without missing arrivals.

    - A full-frame detection runs at most every ``full_detect_seconds`` (a time, so 15 and
      30 fps cameras behave the same), so that someone who arrives without moving is found
      too, and at once when a known face is not found where it was searched (on that same
      frame: a lost face is never a missed frame). Without a frame time (a lone photo)
      every detection is a full one.
    - Motion outside the known faces (someone arriving, someone passing behind the counter,
      a door) is searched where it happened: the regions that changed, grown by the smallest
      face's size and merged where they touch, at the full detection's scale. New motion is
      searched on every frame for its first ``NEW_MOTION_SECONDS`` (someone walking up is
      found on the frame they come into view); motion that goes on without a face in it
      (someone walking to and fro behind the counter, a screen) at most
      ``motion_search_hz`` times a second, a search counting the fifths of the frame it
      covers, so it costs at most ``motion_search_hz / 5`` full detections a second; what
      waits is added up and searched together. A change of the light over the whole scene
      is no motion (``changed_pixels``); a change of most of the frame all the same is
      searched by a full detection, as motion that goes on.
    - In between, each face of the last frame (the matcher's, by key) is searched only in a
      small window around where it is heading (its last position plus its last step), scaled
      so the face is ~32 px wide, at sizes within 0.8-1.25x its own: a handful of cascade
      windows instead of a whole image pyramid, stepping sizes by at most 1.1 whatever
      ``detector.scale_factor`` says. (From 40 px and 0.7-1.45x, on the benchmark clips' 679
      searches at scale_factor 1.1: 1.05 instead of 1.84 ms each, the same faces found; a
      face the search misses costs a full detection, never a missed frame.)
    - A known face whose area did not change at all on the motion thumbnail keeps its box
      without any search (someone standing still costs almost nothing).
    Motion is judged on an 80x60 thumbnail, masked where known faces (and their bodies) are.

    ``find`` returns (key, box) pairs: the key of the face a local search found, None for a
    box of a full detection or a motion search (the matcher decides whose it is).
    """

    LOCAL_FACE_PIXELS = 32.0
    LOCAL_SIZE_RANGE = (0.8, 1.25)  # sizes searched, relative to the face's last size
    LOCAL_SCALE_FACTOR = 1.1  # the coarsest step between them: 5 sizes in that range
    THUMB = (80, 60)
    # Motion regions covering more of the frame than this are searched by one full
    # detection: one image pyramid costs less than overlapping pieces of it.
    WHOLE_FRAME_SHARE = 0.5
    # Changed pixels covering more of the frame than this are a change of the whole scene
    # (a light that is not even, the camera knocked), not someone: no clue where to look.
    GLOBAL_CHANGE_SHARE = 0.5
    # New motion is searched on every frame for this long: time for someone walking up to
    # come into full view. After that, motion that goes on is searched at the rate.
    NEW_MOTION_SECONDS = 0.5
    # A search of motion that goes on counts the fifths of the frame it covers (at least
    # one), so such motion costs at most motion_search_hz / 5 full detections a second.
    SEARCH_SHARE = 0.2
    # Margin around a changed region, in smallest faces: a face centred on its edge fits.
    MOTION_MARGIN_FACES = 0.5
    # A scene that has not changed outside the known faces since its last full detection
    # would only give that detection's answer again: its scheduled full detection waits, for
    # at most this long (then it runs all the same: the cascade may find on another frame's
    # noise a face it missed).
    STILL_SCENE_RECHECK_SECONDS = 5.0
    # How far (thumbnail pixels) motion may move from one frame to the next and still be
    # the same motion: 2 at 30 fps, more between frames further apart (camera.idle_fps),
    # or someone walking behind the counter would be new motion on every idle frame.
    MOTION_REACH_PER_SECOND = 60.0
    MOTION_REACH_MAX = 6

    def __init__(self, detector: HaarFaceDetector):
        self.detector = detector
        self.config = detector.config
        self._last_full = -math.inf  # monotonic time of the last full-frame detection
        self._thumb: np.ndarray | None = None
        self._thumb_at_full: np.ndarray | None = None  # the scene the last full detection saw
        self._full_waits_until = -math.inf  # a still scene's detection waits: asked again then
        self._pending: np.ndarray | None = None  # motion outside known faces not yet searched
        # Per pixel of the thumbnail: when the motion there began, when it was last seen.
        self._began = np.full(self.THUMB[::-1], np.inf, np.float32)
        self._seen = np.full(self.THUMB[::-1], -np.inf, np.float32)
        self._next_motion_search = -math.inf  # monotonic time from which ongoing motion may be searched
        self._last_frame: float | None = None  # monotonic time of the last frame motion was judged on
        self.full_detections = 0
        self.local_searches = 0
        self.motion_searches = 0

    def _motion(self, gray: np.ndarray, boxes: list[Box]) -> tuple[np.ndarray | None, list[bool]]:
        """(the thumbnail's pixels that changed outside the known faces, None on a first
        frame; for each known face: did its area change)."""
        thumb = motion_thumbnail(gray, self.THUMB)
        previous, self._thumb = self._thumb, thumb
        if previous is None:
            return None, [True] * len(boxes)
        changed = changed_pixels(thumb, previous)
        face_changed = [
            bool(changed[self._thumb_around(box, 0.1, 0.1, 0.1, 0.1, gray.shape)].any()) for box in boxes
        ]
        return self._outside_faces(changed, boxes, gray.shape), face_changed

    def _motion_reach(self, now: float) -> int:
        """``motion_began``'s reach for a frame at ``now``: as far as motion goes in the time
        since the last frame."""
        gap = now - self._last_frame if self._last_frame is not None else 0.0
        return min(self.MOTION_REACH_MAX, max(2, math.ceil(self.MOTION_REACH_PER_SECOND * gap - 1e-6)))

    def _outside_faces(self, changed: np.ndarray, boxes: list[Box], frame_hw: tuple[int, ...]) -> np.ndarray:
        """The changed thumbnail pixels but those around the known faces (a person's own
        head, shoulders and body move as they stand)."""
        outside = changed.copy()
        for box in boxes:
            outside[self._thumb_around(box, 1.0, 0.6, 1.0, 3.0, frame_hw)] = False
        return outside

    def _unchanged_since_full(self, boxes: list[Box], frame_hw: tuple[int, ...], now: float) -> bool:
        """Whether the scene outside the known faces is as the last full detection saw it
        (less than ``motion_fraction`` changed), that detection less than
        STILL_SCENE_RECHECK_SECONDS ago."""
        if self._thumb_at_full is None or self._thumb is None:
            return False
        if now - self._last_full >= self.STILL_SCENE_RECHECK_SECONDS:
            return False
        changed = self._outside_faces(changed_pixels(self._thumb, self._thumb_at_full), boxes, frame_hw)
        return changed.mean() <= self.config.motion_fraction

    def _motion_regions_due(self, gray: np.ndarray, now: float) -> list[Box]:
        """The regions to search for motion on this frame (the whole frame: one box of it),
        none when nothing waits: new motion on every frame, motion that goes on when the
        rate allows; what is not searched now waits, added up."""
        c = self.config
        pending = self._pending
        if pending is None or pending.mean() <= c.motion_fraction:
            return []
        frame_size = (gray.shape[1], gray.shape[0])
        whole = (0, 0, *frame_size)
        if pending.mean() > self.GLOBAL_CHANGE_SHARE:
            # The whole scene changed (not the light alone: that is taken out): no clue
            # where someone is, and never new motion, so never searched on every frame.
            regions, new = [whole], []
        else:
            margin = round(self.MOTION_MARGIN_FACES * c.min_face_pixels(frame_size[1]))
            regions = motion_regions(pending, frame_size, margin)
            new = [region for region in regions if self._has_new_motion(region, frame_size, now)]
        if now >= self._next_motion_search:
            searched, self._pending = regions, None
            share = sum(w * h for _, _, w, h in regions) / (frame_size[0] * frame_size[1])
            # 5 % slack: at 30 fps and 5 Hz, six frames (0.1999... s) are one period
            searches = max(1.0, share / self.SEARCH_SHARE)
            self._next_motion_search = now + 0.95 * searches / c.motion_search_hz
        elif new:
            searched = new
            for region in new:
                pending[self._thumb_slices(region, frame_size)] = False
        else:
            return []
        self.motion_searches += 1
        if sum(w * h for _, _, w, h in searched) > self.WHOLE_FRAME_SHARE * frame_size[0] * frame_size[1]:
            return [whole]
        return searched

    def _has_new_motion(self, region: Box, frame_size: tuple[int, int], now: float) -> bool:
        """Whether some of the motion waiting in ``region`` (of the frame) began less than
        NEW_MOTION_SECONDS ago."""
        where = self._thumb_slices(region, frame_size)
        began = self._began[where][self._pending[where]]
        return bool((now - began[np.isfinite(began)] < self.NEW_MOTION_SECONDS).any())

    def _thumb_around(
        self, box: Box, left: float, top: float, right: float, bottom: float, frame_hw: tuple[int, ...]
    ) -> tuple[slice, slice]:
        """The thumbnail's rows and columns under ``box`` grown by multiples of its size
        (``_expand``), in a frame of ``frame_hw`` (height, width)."""
        x0, y0, x1, y1 = _expand(box, left, top, right, bottom, frame_hw[1], frame_hw[0])
        return self._thumb_slices((x0, y0, x1 - x0, y1 - y0), (frame_hw[1], frame_hw[0]))

    def _thumb_slices(self, box: Box, frame_size: tuple[int, int]) -> tuple[slice, slice]:
        """The thumbnail's rows and columns under a box of the frame."""
        sx, sy = self.THUMB[0] / frame_size[0], self.THUMB[1] / frame_size[1]
        x, y, w, h = box
        return slice(math.floor(y * sy), math.ceil((y + h) * sy)), slice(
            math.floor(x * sx), math.ceil((x + w) * sx)
        )

    def _search_near(self, gray: np.ndarray, box: Box) -> Box | None:
        c = self.config
        x0, y0, x1, y1 = _expand(box, 0.5, 0.5, 0.5, 0.5, gray.shape[1], gray.shape[0])
        region = gray[y0:y1, x0:x1]
        if region.size == 0:
            return None
        scale = min(1.0, self.LOCAL_FACE_PIXELS / max(box[2], 1))
        if scale < 1.0:
            region = cv2.resize(
                region,
                (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale))),
                interpolation=cv2.INTER_LINEAR,
            )
        smallest, largest = (box[2] * scale * f for f in self.LOCAL_SIZE_RANGE)
        found = self.detector._cascade.detectMultiScale(
            region,
            # Window sizes step by the scale factor: a coarse one (1.2+) would leave one or no
            # size inside this narrow range, and every search would fail into a full detection.
            scaleFactor=min(c.scale_factor, self.LOCAL_SCALE_FACTOR),
            minNeighbors=c.min_neighbors,
            minSize=(max(1, int(smallest)), max(1, int(smallest))),
            maxSize=(int(largest) + 1, int(largest) + 1),
        )
        self.local_searches += 1
        if len(found) == 0:
            return None
        fx, fy, fw, fh = max(found, key=lambda b: b[2] * b[3])
        return (
            x0 + int(round(fx / scale)),
            y0 + int(round(fy / scale)),
            int(round(fw / scale)),
            int(round(fh / scale)),
        )

    def find(
        self, gray: np.ndarray, now: float | None = None, known: Mapping[int, MatchedFace] | None = None
    ) -> list[tuple[int | None, Box]]:
        """Faces of this frame, largest first; ``now``: its monotonic time (None: a lone
        photo); ``known``: the faces of the last frame by key (the matcher's)."""
        c = self.config
        known = dict(known or {})
        if now is None or c.full_detect_seconds <= 0:
            return self._full(gray, now)
        boxes = [face.box for face in known.values()]
        face_changed = [True] * len(boxes)
        if c.motion_trigger:
            outside, face_changed = self._motion(gray, boxes)
            if outside is not None and outside.any():
                self._pending = outside if self._pending is None else self._pending | outside
                self._began, self._seen = motion_began(
                    outside, self._began, self._seen, now, self.NEW_MOTION_SECONDS, self._motion_reach(now)
                )
            self._last_frame = now
        if now - self._last_full >= c.full_detect_seconds and now >= self._full_waits_until:
            if not (c.motion_trigger and self._unchanged_since_full(boxes, gray.shape, now)):
                return self._full(gray, now)
            self._full_waits_until = now + c.full_detect_seconds  # not asked on every frame
        regions = self._motion_regions_due(gray, now) if c.motion_trigger else []
        if regions == [(0, 0, gray.shape[1], gray.shape[0])]:
            return self._full(gray, now)
        found: list[tuple[int | None, Box]] = []
        for (key, face), changed in zip(known.items(), face_changed):
            if not changed:  # a face whose area did not change at all is where it was
                found.append((key, face.box))
                continue
            # Search where the face is heading: someone walking in moves a third of a face
            # width or more per frame, out of a window centred on where they were.
            box = self._search_near(gray, face.predicted)
            if box is None:
                # Lost (gone, turned, or faster than the window): look at the whole frame
                # now rather than miss them on this frame.
                return self._full(gray, now)
            if all(iou(box, other) < 0.5 for _, other in found):
                found.append((key, box))
        for region in regions:
            for box in self.detector.detect(gray, region):
                if all(iou(box, other) < 0.5 for _, other in found):
                    found.append((None, box))
        return _largest_first(found)

    def _full(self, gray: np.ndarray, now: float | None) -> list[tuple[int | None, Box]]:
        found = self.detector.detect(gray)
        self._last_full = now if now is not None else -math.inf
        # this frame's thumbnail, when find() made one for it (not for a photo, nor when every
        # frame gets a full detection)
        fresh = now is not None and self.config.motion_trigger and self.config.full_detect_seconds > 0
        self._thumb_at_full = self._thumb if fresh else None
        self._pending = None  # whatever moved, this detection has seen it
        self.full_detections += 1
        return [(None, box) for box in found]


def _largest_first(found: list[tuple[int | None, Box]]) -> list[tuple[int | None, Box]]:
    return sorted(found, key=lambda item: item[1][2] * item[1][3], reverse=True)
