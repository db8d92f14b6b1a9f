"""A broker outage in the middle of a clip with N visits: are all N visit summaries
delivered, how many duplicates arrive, and how long after the broker returns are the
daemon's availability, state and Home Assistant discovery back (the config's defaults)?

    python -m bench.outage [--visits 8] [--outage 40]

The dashboard subscribes with a persistent session (QoS 1), as docs/mqtt.md advises, so
the broker keeps what it accepted while the dashboard itself reconnects.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from bench.clips import visits_clip
from bench.harness import Broker, start_daemon, stop_daemon, write_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=8)
    parser.add_argument("--outage", type=float, default=40.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # visits of 4 s with 4 s gaps: the outage starts after the first visit and spans several
        clip = visits_clip(
            work / "visits.avi", args.visits, visit_seconds=4.0, gap_seconds=4.0 + args.outage / args.visits
        )
        broker = Broker(work, persistent=True).start()
        received: list[dict] = []
        arrived: dict[str, float] = {}  # topic kind -> last arrival (monotonic)

        def on_message(client, userdata, message) -> None:
            kind = (
                "discovery"
                if message.topic.startswith("homeassistant/")
                else message.topic.rsplit("/", 1)[-1]
            )
            arrived[kind] = time.monotonic()
            if kind == "events":
                received.append(json.loads(message.payload))

        def on_connect(client, userdata, flags, reason_code, properties) -> None:
            client.subscribe([("fer-kiosk/outage/#", 1), ("homeassistant/+/fer-kiosk_outage/#", 1)])

        dashboard = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="dash", clean_session=False
        )
        dashboard.on_connect, dashboard.on_message = on_connect, on_message
        dashboard.reconnect_delay_set(1, 2)
        dashboard.connect("127.0.0.1", broker.port)
        dashboard.loop_start()
        config = write_config(
            work / "config.yaml",
            broker.port,
            "outage",
            str(clip),
            camera={"retry_initial_seconds": 60, "retry_max_seconds": 60},
            spool={"path": str(work / "spool")},
        )
        log = work / "daemon.log"
        daemon = start_daemon(config, log)
        ends = lambda: [e for e in received if e["type"] == "end"]  # noqa: E731
        try:
            while not ends():
                time.sleep(0.1)
            broker.stop()
            down = time.monotonic()
            time.sleep(args.outage)
            broker.start()
            back = time.monotonic()
            kinds = ("availability", "state", "discovery")
            while not all(arrived.get(k, 0) > back for k in kinds) and time.monotonic() - back < 60:
                time.sleep(0.05)
            back_after = {k: round(arrived[k] - back, 2) if arrived.get(k, 0) > back else None for k in kinds}
            daemon.wait(args.outage + 20 * args.visits)  # camera.loop false: the run ends with the clip
            time.sleep(2)
        finally:
            stop_daemon(daemon)
            time.sleep(1)
            dashboard.loop_stop()
            broker.stop()
        unique = {e["event_id"] for e in ends()}
        print(
            json.dumps(
                {
                    "visits_in_clip": args.visits,
                    "outage_s": round(back - down, 1),
                    "summaries_received": len(ends()),
                    "unique_summaries": len(unique),
                    # after de-duplication by event_id, one summary per visit must remain
                    "summaries_after_dedup_per_visit": len(unique)
                    / max(len({e["face_id"] for e in ends()}), 1),
                    "duplicates_before_dedup": len(ends()) - len(unique),
                    "distinct_visits": len({e["face_id"] for e in ends()}),
                    "back_after_broker_returns_s": back_after,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
