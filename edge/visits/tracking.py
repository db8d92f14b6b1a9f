"""People, not frames: face identities across frames and their event lifecycle.

Pure logic: no I/O, no clocks of its own. Each call gets the detections of one frame and
the frame's times; it returns the events that frame caused:

- ``new`` when a face has been seen in ``min_frames`` frames,
- ``update`` when its label changes (at most once per ``min_update_seconds``) and at least
  every ``heartbeat_seconds`` while it stays. The label is the smoothed top emotion with
  hysteresis: another emotion takes over only when it leads by ``label_margin`` or has led
  for ``label_hold_seconds`` (``relabel``), so a near-tie does not flap; events and the
  state both name it,
- ``end`` when it has not been seen for ``max_missing_seconds``, with a visit summary.
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.config import TrackingConfig
from edge.vision.matching import FaceMatcher
from edge.vision.preprocess import Box


def relabel(
    current: int,
    smoothed: np.ndarray,
    leader_since: float | None,
    now: float,
    margin: float,
    hold_seconds: float,
) -> tuple[int, float | None]:
    """(label, since when another emotion has led it): the label stays until the smoothed
    top emotion leads it by ``margin``, or has led it without a break for ``hold_seconds``."""
    top = int(np.argmax(smoothed))
    if current < 0 or top == current:
        return top, None
    lead = float(smoothed[top] - smoothed[current])
    since = now if leader_since is None else leader_since
    if lead >= margin or now - since >= hold_seconds:
        return top, None
    return current, since


def smoothing_weight(dt: float, time_constant: float) -> float:
    """Weight of the new sample in an exponential moving average over time (not frames)."""
    if time_constant <= 0:
        return 1.0
    return 1.0 - math.exp(-max(dt, 0.0) / time_constant)


@dataclass
class Track:
    face_id: str
    box: Box
    first_seen: float  # monotonic
    first_seen_wall: float
    last_seen: float
    last_seen_wall: float
    smoothed: np.ndarray
    probability_sum: np.ndarray
    frames: int = 1
    confirmed: bool = False
    emotion: int = -1  # the label: index of the smoothed top emotion, with hysteresis
    leader_since: float | None = None  # since when another emotion has led the label
    last_published: float = -math.inf  # monotonic time of the last new/update event
    published_emotion: int = -1
    emotion_seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    arrival: dict | None = None  # the smoothed emotion when the face became a person
    peak: dict | None = None  # the strongest expression of the visit (see _note_peak)
    key: int = 0  # the matcher's key (edge.vision.matching): the same person on every frame


@dataclass(frozen=True)
class FaceEvent:
    kind: str  # "new" | "update" | "end"
    face_id: str
    wall_time: float
    monotonic: float
    box: Box
    emotion: str
    confidence: float
    probabilities: dict[str, float]
    summary: dict | None = None


class FaceTracker:
    def __init__(self, config: TrackingConfig, labels: Sequence[str], id_prefix: str | None = None):
        self.config = config
        self.labels = tuple(labels)
        self.tracks: list[Track] = []
        # Keys for callers that give boxes without them (tests, offline tools); the daemon's
        # pipeline gives each face the key of its own matcher, the one matcher of a frame.
        self._matcher = FaceMatcher.from_config(config)
        # Ids are unique across restarts of the daemon, not only within one run.
        self._prefix = id_prefix if id_prefix is not None else uuid.uuid4().hex[:6]
        self._counter = itertools.count(1)

    def _event(
        self, kind: str, track: Track, now: float, wall: float, summary: dict | None = None
    ) -> FaceEvent:
        probs = track.smoothed
        return FaceEvent(
            kind=kind,
            face_id=track.face_id,
            wall_time=wall,
            monotonic=now,
            box=track.box,
            emotion=self.labels[track.emotion],
            confidence=float(probs[track.emotion]),
            probabilities={name: float(p) for name, p in zip(self.labels, probs)},
            summary=summary,
        )

    def _moment(self, track: Track, index: int, wall: float) -> dict:
        return {
            "emotion": self.labels[index],
            "probability": round(float(track.smoothed[index]), 4),
            "time": wall,
        }

    def _note_peak(self, track: Track, wall: float) -> None:
        """The peak of a visit: the highest smoothed probability any emotion but neutral
        reached, and when (the moment the person showed the most)."""
        expressive = [i for i, name in enumerate(self.labels) if name != "neutral"] or list(
            range(len(self.labels))
        )
        best = max(expressive, key=lambda i: track.smoothed[i])
        if track.peak is None or track.smoothed[best] > track.peak["probability"]:
            track.peak = self._moment(track, best, wall)

    def _summary(self, track: Track, ended_by: str = "left") -> dict:
        mean = track.probability_sum / track.frames
        return {
            # left: the person was no longer seen; shutdown / reload: the daemon ended the
            # visit (shutdown, or a reload of settings that restarts tracking), not the customer.
            "ended_by": ended_by,
            "first_seen": track.first_seen_wall,
            "last_seen": track.last_seen_wall,
            "duration_s": round(track.last_seen - track.first_seen, 3),
            "frames": track.frames,
            "dominant_emotion": self.labels[int(np.argmax(mean))],
            "mean_probabilities": {name: round(float(p), 4) for name, p in zip(self.labels, mean)},
            "emotion_seconds": {
                name: round(float(s), 3) for name, s in zip(self.labels, track.emotion_seconds) if s > 0
            },
            # how the person seemed on arrival, on leaving, and at the strongest moment
            "arrival": track.arrival,
            "departure": self._moment(track, track.emotion, track.last_seen_wall),
            "peak": track.peak,
        }

    def update(self, detections: Sequence[tuple], now: float, wall: float) -> list[FaceEvent]:
        """One frame's faces: (box, probabilities, key) with the matcher's key of each, or
        (box, probabilities) for this tracker to match; returns the events they cause."""
        c = self.config
        events: list[FaceEvent] = []
        boxes = [d[0] for d in detections]
        if all(len(d) > 2 and d[2] is not None for d in detections):
            keys = [d[2] for d in detections]
        else:
            keys = self._matcher.assign(boxes, now)
        by_key = {t.key: t for t in self.tracks}
        for key, (box, probs, *_) in zip(keys, detections):
            track = by_key.get(key)
            if track is None:
                p = np.asarray(probs, dtype=np.float64)
                track = Track(
                    face_id=f"{self._prefix}-{next(self._counter)}",
                    key=key,
                    box=box,
                    first_seen=now,
                    first_seen_wall=wall,
                    last_seen=now,
                    last_seen_wall=wall,
                    smoothed=p.copy(),
                    probability_sum=p.copy(),
                    emotion=int(np.argmax(p)),
                    emotion_seconds=np.zeros(len(self.labels)),
                )
                self.tracks.append(track)
                by_key[key] = track
                events.extend(self._lifecycle(track, now, wall))
                continue
            dt = now - track.last_seen
            if track.emotion >= 0:
                track.emotion_seconds[track.emotion] += max(dt, 0.0)
            w = smoothing_weight(dt, c.smoothing_seconds)
            track.smoothed = (1 - w) * track.smoothed + w * np.asarray(probs, dtype=np.float64)
            track.probability_sum += probs
            track.box, track.last_seen, track.last_seen_wall = box, now, wall
            track.frames += 1
            track.emotion, track.leader_since = relabel(
                track.emotion, track.smoothed, track.leader_since, now, c.label_margin, c.label_hold_seconds
            )
            if track.confirmed:
                self._note_peak(track, wall)
            events.extend(self._lifecycle(track, now, wall))
        events.extend(self.expire(now, wall))
        return events

    def _lifecycle(self, track: Track, now: float, wall: float) -> list[FaceEvent]:
        c = self.config
        if not track.confirmed:
            if track.frames >= c.min_frames:
                track.confirmed = True
                track.arrival = self._moment(track, track.emotion, wall)
                self._note_peak(track, wall)
                track.last_published, track.published_emotion = now, track.emotion
                return [self._event("new", track, now, wall)]
            return []
        since = now - track.last_published
        changed = track.emotion != track.published_emotion and since >= c.min_update_seconds
        heartbeat = c.heartbeat_seconds > 0 and since >= c.heartbeat_seconds
        if changed or heartbeat:
            track.last_published, track.published_emotion = now, track.emotion
            return [self._event("update", track, now, wall)]
        return []

    def expire(self, now: float, wall: float) -> list[FaceEvent]:
        """Ends faces unseen for ``max_missing_seconds``; call it also when no frame came."""
        events = []
        keep = []
        for track in self.tracks:
            if now - track.last_seen > self.config.max_missing_seconds:
                if track.confirmed:
                    events.append(self._event("end", track, now, wall, self._summary(track)))
            else:
                keep.append(track)
        self.tracks = keep
        return events

    def end_all(self, now: float, wall: float, ended_by: str = "shutdown") -> list[FaceEvent]:
        """Ends every face (shutdown, reload): their visits still get a summary."""
        events = [
            self._event("end", t, now, wall, self._summary(t, ended_by)) for t in self.tracks if t.confirmed
        ]
        self.tracks = []
        return events

    def present(self) -> list[Track]:
        return [t for t in self.tracks if t.confirmed]
