"""Which face of this frame is which face of the last: one matcher per frame.

``FaceMatcher.assign`` gives each box of a frame a key, the same key a person had on the
frames before (or a new one). The local face search (edge.vision.detect), the classification
schedule (edge.vision.pipeline) and the tracker (edge.visits.tracking) all key on it, so they cannot
disagree on who is new, and a face's cached probabilities stay with that face when two
people cross. Pure: boxes and times in, keys out.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from edge.config import TrackingConfig
from edge.vision.preprocess import Box, iou


def center_distance(a: Box, b: Box) -> float:
    """Distance between box centres, in widths of box ``a``."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return math.hypot((ax + aw / 2) - (bx + bw / 2), (ay + ah / 2) - (by + bh / 2)) / max(aw, 1)


def match(
    tracks: Sequence[Box], detections: Sequence[Box], iou_threshold: float, max_distance: float
) -> list[tuple[int, int]]:
    """Greedy one-to-one pairs (track index, detection index): best overlap first, then nearest centre."""
    pairs: list[tuple[int, int]] = []
    used_t: set[int] = set()
    used_d: set[int] = set()
    scored = sorted(
        ((iou(t, d), ti, di) for ti, t in enumerate(tracks) for di, d in enumerate(detections)),
        reverse=True,
    )
    for score, ti, di in scored:
        if score < iou_threshold or score == 0:
            break
        if ti not in used_t and di not in used_d:
            pairs.append((ti, di))
            used_t.add(ti)
            used_d.add(di)
    near = sorted(
        (center_distance(t, d), ti, di)
        for ti, t in enumerate(tracks)
        for di, d in enumerate(detections)
        if ti not in used_t and di not in used_d
    )
    for distance, ti, di in near:
        if distance > max_distance:
            break
        if ti not in used_t and di not in used_d:
            pairs.append((ti, di))
            used_t.add(ti)
            used_d.add(di)
    return pairs


def shifted(box: Box, step: tuple[int, int]) -> Box:
    return (box[0] + step[0], box[1] + step[1], box[2], box[3])


@dataclass
class MatchedFace:
    box: Box
    last_seen: float
    step: tuple[int, int] = (0, 0)  # motion per frame at its last sighting

    @property
    def predicted(self) -> Box:
        """Where the face is heading: its last box plus its last step."""
        return shifted(self.box, self.step)


class FaceMatcher:
    """Keys of faces across frames: a box continues the face whose predicted box it overlaps
    most (IoU at least ``iou_threshold``), or whose centre is nearest (within
    ``max_center_distance`` face widths); a face unseen for ``forget_seconds`` is forgotten."""

    def __init__(self, iou_threshold: float, max_center_distance: float, forget_seconds: float):
        self.iou_threshold = iou_threshold
        self.max_center_distance = max_center_distance
        self.forget_seconds = forget_seconds
        self.faces: dict[int, MatchedFace] = {}
        self.last_frame: float | None = None
        self._keys = itertools.count(1)

    @classmethod
    def from_config(cls, tracking: TrackingConfig) -> FaceMatcher:
        return cls(tracking.iou_threshold, tracking.max_center_distance, tracking.max_missing_seconds)

    def assign(
        self, boxes: Sequence[Box], now: float, known: Sequence[int | None] | None = None
    ) -> list[int]:
        """A key per box. ``known``: keys already decided (the local search found that face
        where it was heading), None where the matcher decides."""
        self.forget(now)
        keys: list[int | None] = list(known) if known is not None else [None] * len(boxes)
        taken = {k for k in keys if k is not None}
        open_keys = [k for k in self.faces if k not in taken]
        open_boxes = [i for i, k in enumerate(keys) if k is None]
        for ti, di in match(
            [self.faces[k].predicted for k in open_keys],
            [boxes[i] for i in open_boxes],
            self.iou_threshold,
            self.max_center_distance,
        ):
            keys[open_boxes[di]] = open_keys[ti]
        out = []
        for box, key in zip(boxes, keys):
            if key is None:
                key = next(self._keys)
            previous = self.faces.get(key)
            step = (box[0] - previous.box[0], box[1] - previous.box[1]) if previous else (0, 0)
            self.faces[key] = MatchedFace(box, now, step)
            out.append(key)
        self.last_frame = now
        return out

    def forget(self, now: float) -> list[int]:
        """Forgets the faces unseen for ``forget_seconds``; returns their keys."""
        gone = [k for k, f in self.faces.items() if now - f.last_seen > self.forget_seconds]
        for key in gone:
            del self.faces[key]
        return gone

    def on_last_frame(self) -> dict[int, MatchedFace]:
        """The faces the last frame had (not those missing for a while)."""
        return {k: f for k, f in self.faces.items() if f.last_seen == self.last_frame}
