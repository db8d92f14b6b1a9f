"""Running figures for the stats topic and systemd's STATUS line."""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any

import numpy as np

from edge.vision.pipeline import StageTimes


def rss_mb() -> float:
    """Resident memory now, in MB (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return 0.0


class StatsCollector:
    def __init__(self, window: int = 600, clock=time.monotonic):
        self._clock = clock
        self.started = clock()
        self._frames: deque[float] = deque(maxlen=window)
        self._detect: deque[float] = deque(maxlen=window)
        self._classify: deque[float] = deque(maxlen=window)
        self._cpu_mark = (clock(), self._cpu_seconds())
        self.faces = 0

    @staticmethod
    def _cpu_seconds() -> float:
        times = os.times()
        return times.user + times.system

    def frame(self, times: StageTimes, faces: int) -> None:
        self._frames.append(self._clock())
        self._detect.append(times.detect * 1000)
        if faces:
            self._classify.append(times.classify * 1000)
        self.faces = faces

    def fps(self) -> float:
        now = self._clock()
        recent = [t for t in self._frames if now - t <= 5.0]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def snapshot(self) -> dict[str, Any]:
        now, cpu = self._clock(), self._cpu_seconds()
        mark_time, mark_cpu = self._cpu_mark
        self._cpu_mark = (now, cpu)

        def pct(values, q):
            return round(float(np.percentile(values, q)), 2) if values else None

        return {
            "fps": round(self.fps(), 2),
            "detect_ms_p50": pct(self._detect, 50),
            "detect_ms_p95": pct(self._detect, 95),
            "classify_ms_p50": pct(self._classify, 50),
            "classify_ms_p95": pct(self._classify, 95),
            "faces": self.faces,
            "uptime_s": round(now - self.started, 1),
            "cpu_percent": round(100.0 * (cpu - mark_cpu) / max(now - mark_time, 1e-6), 1),
            "rss_mb": round(rss_mb(), 1),
        }
