"""Process start to first event: launches the daemon on a clip where a face is present
from the first frame, with a real local Mosquitto, and times (from the moment the process
is spawned) the first `new` event a subscriber receives. Also reports the event rate.

    python -m bench.first_event [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.clips import Appearance, astronaut_portrait, render_clip
from bench.harness import Broker, Subscriber, start_daemon, stop_daemon, write_config


def measure(workdir: Path, broker: Broker, clip: Path, run: int) -> dict:
    device = f"first-event-{run}"
    sub = Subscriber(broker.port, f"fer-kiosk/{device}/events")
    config = write_config(
        workdir / f"config-{run}.yaml",
        broker.port,
        device,
        str(clip),
        spool={"path": str(workdir / f"spool-{run}")},
    )
    started = time.monotonic()
    daemon = start_daemon(config, workdir / f"daemon-{run}.log")
    try:
        sub.wait_for(lambda: sub.json_on("/events"), 60)
        first = time.monotonic() - started
        time.sleep(6)  # the face stays: count the events that flow (heartbeat updates)
        events = sub.json_on("/events")
    finally:
        stop_daemon(daemon)
        sub.close()
    kinds = [e["type"] for e in events]
    return {
        "start_to_first_event_s": round(first, 3),
        "first_event": kinds[0] if kinds else None,
        "events_in_first_7s": len(kinds),
        "face_ids": len({e["face_id"] for e in events}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        clip = render_clip(
            workdir / "present.avi",
            [Appearance(astronaut_portrait(), 0, 600, (0.3, 0.2), (0.35, 0.2), 0.6)],
            600,
        )
        broker = Broker(workdir).start()
        try:
            results = [measure(workdir, broker, clip, run) for run in range(args.runs)]
        finally:
            broker.stop()
    print(
        json.dumps(
            {
                "runs": results,
                "median_start_to_first_event_s": sorted(r["start_to_first_event_s"] for r in results)[
                    len(results) // 2
                ],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
