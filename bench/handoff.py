"""``python -m bench.handoff``: what a visit's end costs the frame thread, before and after
summaries went to the disk from the sender.

Before: the frame thread appended each summary to the on-disk spool itself (a file write,
two fsyncs, under the spool's lock). After: it hands the summary over in memory
(``DiskSpool.append(write=False)``) and the sender writes it. Both are timed here in the
same run, on the same disk (``--dir``, default a temporary folder), with a real visit
summary's payload, while a second thread keeps writing as the sender does.

    python -m bench.handoff [--summaries 300] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edge.mqtt.payloads import Message
from edge.mqtt.spool import DiskSpool


def summary_message(n: int) -> Message:
    payload = {
        "v": 1,
        "event_id": f"{n:032x}",
        "type": "end",
        "face_id": f"abc123-{n}",
        "summary": {"duration_s": 3.2, "frames": 96, "mean_probabilities": {"happy": 0.6, "neutral": 0.3}},
    }
    return Message("fer-kiosk/box/events", json.dumps(payload).encode(), 1, label=f"end abc123-{n}")


def frame_thread_costs(folder: Path, summaries: int, write_on_frame_thread: bool) -> list[float]:
    """Seconds each hand-over took the caller (the frame thread)."""
    spool = DiskSpool(folder, limit=100_000)
    stop = threading.Event()

    def sender():
        while not stop.wait(0.005):
            spool.save()

    writer = threading.Thread(target=sender, daemon=True)
    writer.start()
    costs = []
    for n in range(summaries):
        started = time.perf_counter()
        spool.append(summary_message(n), write=write_on_frame_thread)
        costs.append(time.perf_counter() - started)
        time.sleep(0.01)  # visits end far apart; the disk is not saturated
    stop.set()
    writer.join()
    spool.save()
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.handoff", description=__doc__.split("\n\n")[0])
    parser.add_argument("--summaries", type=int, default=300)
    parser.add_argument(
        "--dir", default=None, help="a folder on the disk to measure (default: a temporary one)"
    )
    args = parser.parse_args(argv)
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="fer-kiosk-handoff-"))
    rows = {}
    for name, on_frame_thread in (
        ("before: the frame thread writes", True),
        ("after: the sender writes", False),
    ):
        folder = base / ("before" if on_frame_thread else "after")
        costs = np.asarray(frame_thread_costs(folder, args.summaries, on_frame_thread)) * 1000
        rows[name] = {
            "p50_ms": round(float(np.percentile(costs, 50)), 3),
            "p99_ms": round(float(np.percentile(costs, 99)), 3),
            "max_ms": round(float(costs.max()), 3),
        }
    print(json.dumps({"summaries": args.summaries, "folder": str(base), "frame_thread_cost": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
