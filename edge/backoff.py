"""Retry delays: exponential backoff with an optional jitter (pure; no I/O)."""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff_delays(
    initial: float, maximum: float, jitter: float = 0.0, rng: random.Random | None = None
) -> Iterator[float]:
    """initial, 2x, 4x ... capped at ``maximum``; each shortened by up to ``jitter`` (a
    fraction), so kiosks that lost the same broker do not all come back in the same instant,
    and a delay never exceeds ``maximum``."""
    rng = rng or random.Random()
    delay = initial
    while True:
        yield delay * (1.0 - jitter * rng.random())
        delay = min(delay * 2, maximum)
