"""``python -m bench.no_camera``: a kiosk without its camera, as systemd runs it, for minutes.

The daemon starts with a camera path that does not exist, a real Mosquitto and a
NOTIFY_SOCKET with a watchdog of 2 s (so it pings every second). Measured: READY (once, and
how soon), the time to the retained `camera` = offline with its cause, whether availability
stays online, the watchdog pings over the whole run (count and largest gap), and how soon
the camera is picked up when it appears at the end (a clip copied to the path).

    python -m bench.no_camera [--minutes 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.clips import one_visit_clip
from bench.harness import Broker, NotifySocket, Subscriber, start_daemon, stop_daemon, write_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.no_camera", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="fer-no-camera-"))
    broker = Broker(work).start()
    camera = work / "camera.avi"  # not there yet
    clip = one_visit_clip(work / "later.avi")
    sub = Subscriber(broker.port, "fer-kiosk/nocam/#")
    notify = NotifySocket(work / "notify.sock")
    config = write_config(
        work / "config.yaml", broker.port, "nocam", str(camera), spool={"path": str(work / "spool")}
    )
    log = work / "daemon.log"
    started = time.monotonic()
    daemon = start_daemon(config, log, notify=notify, env={"WATCHDOG_USEC": "2000000"})
    try:
        time.sleep(args.minutes * 60)
        alive = daemon.poll() is None
        no_camera_until = time.monotonic()
        shutil.copy(clip, camera)
        picked_up = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and picked_up is None:
            cameras = [json.loads(p) for t, p, _ in list(sub.messages) if t.endswith("/camera") and p]
            if cameras and cameras[-1]["status"] == "online":
                picked_up = time.monotonic() - no_camera_until
            time.sleep(0.1)
        availability = [p for t, p, _ in list(sub.messages) if t.endswith("/availability")]  # before the stop
    finally:
        code = stop_daemon(daemon, timeout=20)
        notify.close()
        sub.close()
        broker.stop()
    ready = notify.times("READY=1")
    pings = [t for t in notify.times("WATCHDOG=1") if t < no_camera_until]
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    cameras = [json.loads(p) for t, p, _ in sub.messages if t.endswith("/camera") and p]
    figures = {
        "minutes_without_camera": round((no_camera_until - started) / 60, 2),
        "daemon_alive_throughout": alive,
        "ready_count": len(ready),
        "ready_after_s": round(ready[0] - started, 2) if ready else None,
        "camera_causes_published": [c["cause"] for c in cameras],
        "availability_while_running": sorted({a.decode() for a in availability}),
        "watchdog_pings_without_camera": len(pings),
        "watchdog_largest_gap_s": round(max(gaps), 2) if gaps else None,
        "camera_picked_up_after_s": round(picked_up, 2) if picked_up is not None else None,
        "exit_code": code,
        "tracebacks_in_log": log.read_text().count("Traceback"),
        "log_lines_about_the_camera": sum(
            "camera offline" in line or "camera camera.avi" in line for line in log.read_text().splitlines()
        ),
    }
    print(json.dumps(figures, indent=2))
    return 0 if alive and len(ready) == 1 and picked_up is not None else 1


if __name__ == "__main__":
    sys.exit(main())
