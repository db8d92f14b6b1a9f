"""Alerts a kiosk can act on: someone has looked upset for a while.

Pure: the present tracks and the time in, ``raised`` / ``cleared`` alerts out. The rule
(``rules.alerts`` in the config) looks at each confirmed person's smoothed probabilities,
the same ones the events and the state publish: an alert is raised when the person has
looked upset with at least ``min_probability`` for ``hold_seconds`` without a break
(``signal: top``: the top emotion is one of the rule's; ``summed``: the rule's emotions'
probabilities added up; switching between them, sad then angry, does not break it), and
cleared when that has not held for ``clear_seconds``, when the person leaves, or when the
daemon stops or reloads. Never any pixels: a face id, an emotion, a probability and times.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge.config import AlertRuleConfig

if TYPE_CHECKING:  # types only: the MQTT side never loads OpenCV through the tracker
    from edge.visits.tracking import Track

RAISED, CLEARED = "raised", "cleared"


@dataclass(frozen=True)
class Alert:
    kind: str  # RAISED | CLEARED
    alert_id: str
    face_id: str
    emotion: str  # the emotion at the moment it was raised (cleared: the same)
    probability: float
    since_wall: float  # when the condition started to hold
    wall_time: float  # when this was decided
    reason: str = ""  # cleared: recovered | left | shutdown | reload


@dataclass
class _Watch:
    since: float  # monotonic time the condition started to hold
    since_wall: float
    last_held: float
    raised: Alert | None = None


class AlertRules:
    def __init__(self, rule: AlertRuleConfig, labels: Sequence[str]):
        self.rule = rule
        self.labels = tuple(labels)
        self._watching: dict[str, _Watch] = {}

    def holds(self, track: Track) -> bool:
        """Does the rule's condition hold for this person right now?"""
        if track.emotion < 0:
            return False
        if self.rule.signal == "summed":
            return self.upset_probability(track) >= self.rule.min_probability
        return (
            self.labels[track.emotion] in self.rule.emotions
            and float(track.smoothed[track.emotion]) >= self.rule.min_probability
        )

    def upset_probability(self, track: Track) -> float:
        """The smoothed probabilities of the rule's emotions, added up."""
        upset = [i for i, name in enumerate(self.labels) if name in self.rule.emotions]
        return float(sum(track.smoothed[i] for i in upset))

    def _reading(self, track: Track) -> tuple[str, float]:
        """What a raised alert says: the rule's most probable emotion, and the probability the
        rule compared (summed: the sum; top: the top emotion's)."""
        if self.rule.signal == "summed":
            upset = [i for i, name in enumerate(self.labels) if name in self.rule.emotions]
            strongest = max(upset, key=lambda i: float(track.smoothed[i]))
            return self.labels[strongest], self.upset_probability(track)
        return self.labels[track.emotion], float(track.smoothed[track.emotion])

    def update(self, present: Sequence[Track], now: float, wall: float) -> list[Alert]:
        """The alerts raised and cleared by this moment; ``present``: the confirmed people."""
        if not self.rule.enabled:
            return []
        out: list[Alert] = []
        seen = set()
        for track in present:
            seen.add(track.face_id)
            watch = self._watching.get(track.face_id)
            if self.holds(track):
                if watch is None:
                    watch = self._watching[track.face_id] = _Watch(now, wall, now)
                watch.last_held = now
                if watch.raised is None and now - watch.since >= self.rule.hold_seconds:
                    emotion, probability = self._reading(track)
                    watch.raised = Alert(
                        RAISED,
                        uuid.uuid4().hex,
                        track.face_id,
                        emotion,
                        round(probability, 4),
                        watch.since_wall,
                        wall,
                    )
                    out.append(watch.raised)
            elif watch is not None:
                if watch.raised is None:
                    del self._watching[track.face_id]  # it must hold without a break
                elif now - watch.last_held >= self.rule.clear_seconds:
                    out.append(self._cleared(watch.raised, wall, "recovered"))
                    del self._watching[track.face_id]
        for face_id in [f for f in self._watching if f not in seen]:
            watch = self._watching.pop(face_id)
            if watch.raised is not None:
                out.append(self._cleared(watch.raised, wall, "left"))
        return out

    def clear_all(self, wall: float, reason: str) -> list[Alert]:
        """Clears every open alert (the daemon stops or reloads)."""
        out = [self._cleared(w.raised, wall, reason) for w in self._watching.values() if w.raised is not None]
        self._watching.clear()
        return out

    def open_alerts(self) -> list[Alert]:
        return [w.raised for w in self._watching.values() if w.raised is not None]

    @staticmethod
    def _cleared(raised: Alert, wall: float, reason: str) -> Alert:
        return Alert(
            CLEARED,
            raised.alert_id,
            raised.face_id,
            raised.emotion,
            raised.probability,
            raised.since_wall,
            wall,
            reason,
        )
