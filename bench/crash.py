"""The crash benchmark: is every finished visit delivered exactly once when the daemon is
SIGKILLed during a broker outage and restarted?

    python -m bench.crash [--runs 20] [--seed 1]

Each run: a real Mosquitto (persistent) and a dashboard with a persistent session; the
daemon plays a clip of several visits; after the first visit summary arrives the broker
goes down; at a random moment while later visits end during the outage the daemon gets
SIGKILL; a new daemon starts (with no camera: it has only the spool to deliver), then the
broker comes back. A visit counts as finished when its `end` was logged as spooled (the
daemon runs with --log-level DEBUG; the spool logs each entry once it is on disk) or is
found in the spool after the kill, or was received. The run passes when every finished visit reached the
dashboard exactly once after de-duplication by `event_id` (one event_id per visit, none
for an unfinished one) and the spool is empty at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from bench.clips import visits_clip
from bench.harness import EDGE, Broker, start_daemon, stop_daemon, wait_until, write_config

DEVICE = "crash"
END_LINE = re.compile(r"edge\.spool: spooled end (\S+) ")


def start(config: Path, log: Path) -> subprocess.Popen:
    # DEBUG: the spool logs each visit summary once it is on disk
    return start_daemon(config, log, command=(*EDGE, "--log-level", "DEBUG"))


def spooled(spool: Path) -> list[dict]:
    """The events in the spool folder (entries only; bad/ is reported separately)."""
    events = []
    for path in sorted(spool.glob("*.json")):
        try:
            events.append(json.loads(json.loads(path.read_text())["payload"]))
        except (OSError, ValueError, KeyError, TypeError):
            events.append({"unreadable": path.name})
    return events


def one_run(work: Path, clip: Path, rng: random.Random) -> dict:
    broker = Broker(work, persistent=True).start()
    received: list[dict] = []
    dashboard = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="dash", clean_session=False
    )
    dashboard.on_connect = lambda c, u, f, rc, p: c.subscribe(f"fer-kiosk/{DEVICE}/events", qos=1)
    dashboard.on_message = lambda c, u, m: received.append(json.loads(m.payload))
    dashboard.reconnect_delay_set(1, 2)
    dashboard.connect("127.0.0.1", broker.port)
    dashboard.loop_start()
    spool = work / "spool"
    config = work / "config.yaml"
    write_config(
        config,
        broker.port,
        DEVICE,
        str(clip),
        camera={"retry_initial_seconds": 60, "retry_max_seconds": 60},
        mqtt={"reconnect_max_seconds": 2},
        spool={"path": str(spool)},
    )
    log_a, log_b = work / "daemon-a.log", work / "daemon-b.log"
    ends = lambda: [e for e in received if e.get("type") == "end"]  # noqa: E731
    daemon = start(config, log_a)
    result: dict = {}
    try:
        if not wait_until(lambda: ends() or daemon.poll() is not None, 60) or daemon.poll() is not None:
            raise RuntimeError(f"no visit summary within 60 s: {log_a.read_text()[-1500:]}")
        time.sleep(rng.uniform(0.0, 2.0))
        broker.stop()
        outage_started = time.monotonic()
        kill_after = rng.uniform(1.0, 12.0)  # the clip's later visits end during these seconds
        time.sleep(kill_after)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        at_kill = spooled(spool)
        received_before = {e["event_id"] for e in ends()}
        logged = set(END_LINE.findall(log_a.read_text()))
        # restarted during the outage, with a camera that is not there: only the spool to deliver
        config.write_text(config.read_text().replace(str(clip), str(work / "no-camera.avi")))
        daemon = start(config, log_b)
        time.sleep(rng.uniform(1.0, 3.0))
        broker.start()
        outage_s = time.monotonic() - outage_started
        finished_faces = logged | {e.get("face_id") for e in at_kill} | {e["face_id"] for e in ends()}
        wait_until(
            lambda: not list(spool.glob("*.json")) and {e["face_id"] for e in ends()} >= finished_faces, 30
        )
        time.sleep(1.0)  # late duplicates, if any, arrive too
        stop_daemon(daemon)
        delivered = ends()
        by_face: dict[str, set[str]] = {}
        for event in delivered:
            by_face.setdefault(event["face_id"], set()).add(event["event_id"])
        stuck = (
            [p.name for p in spool.glob("*.json")] + [p.name for p in (spool / "bad").glob("*")]
            if spool.exists()
            else []
        )
        lost = sorted(f for f in finished_faces if f not in by_face)
        twice = sorted(f for f, ids in by_face.items() if len(ids) > 1)  # one visit, two summaries
        unexpected = sorted(f for f in by_face if f not in finished_faces)
        result = {
            "kill_s_into_outage": round(kill_after, 1),
            "outage_s": round(outage_s, 1),
            "finished_visits": len(finished_faces),
            "delivered_before_outage": len(received_before),
            "spooled_at_kill": len(at_kill),
            "ends_logged_by_killed_daemon": len(logged),
            "delivered_unique": len({e["event_id"] for e in delivered}),
            "received_with_duplicates": len(delivered),
            "lost": lost,
            "two_summaries_for_one_visit": twice,
            "unexpected": unexpected,
            "stuck_in_spool": stuck,
        }
        result["ok"] = not (lost or twice or unexpected or stuck) and result["delivered_unique"] == len(
            finished_faces
        )
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
        dashboard.loop_stop()
        broker.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--visits", type=int, default=6)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = visits_clip(Path(tmp) / "visits.avi", args.visits, visit_seconds=2.0, gap_seconds=1.5)
        for run in range(args.runs):
            work = Path(tmp) / f"run-{run}"
            work.mkdir()
            started = time.monotonic()
            try:
                result = one_run(work, clip, rng)
            except Exception as err:  # noqa: BLE001 - a broken run is reported, the others go on
                result = {"ok": False, "error": f"{type(err).__name__}: {err}"[:500]}
            result["run"], result["seconds"] = run + 1, round(time.monotonic() - started, 1)
            results.append(result)
            print(json.dumps(result), flush=True)
    ok = [r for r in results if r.get("ok")]
    print(
        json.dumps(
            {
                "runs": len(results),
                "runs_ok": len(ok),
                "finished_visits": sum(r.get("finished_visits", 0) for r in results),
                "delivered_unique": sum(r.get("delivered_unique", 0) for r in results),
                "spooled_at_kill": sum(r.get("spooled_at_kill", 0) for r in results),
                "duplicates_before_dedup": sum(
                    r.get("received_with_duplicates", 0) - r.get("delivered_unique", 0) for r in results
                ),
                "lost": sum(len(r.get("lost", [])) for r in results),
                "two_summaries_for_one_visit": sum(
                    len(r.get("two_summaries_for_one_visit", [])) for r in results
                ),
                "stuck_in_spool": sum(len(r.get("stuck_in_spool", [])) for r in results),
            },
            indent=2,
        )
    )
    sys.exit(0 if len(ok) == len(results) else 1)


if __name__ == "__main__":
    main()
