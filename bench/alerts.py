"""``python -m bench.alerts``: the figures behind the default alert rule (rules.alerts).

1. Single faces, the dev sets (face crops, the shipped model with its views and
   calibration): for each probability threshold and signal, how often the rule's
   condition holds (top: the top emotion is one of the rule's and at least that probable;
   summed: the rule's emotions' probabilities add up to it) on faces *labelled*
   with one of the rule's emotions (wanted) and on the others (a false alarm if it held).
   One face is one frame: the hold time is what turns a frame's flicker into nothing.
2. Clips: the daemon's pipeline, tracker and rule, offline, over the bench clips of
   people from the Yale photographs (calm faces: glasses, light, a wink, sleepy), at each
   signal, threshold and hold time: alerts raised per person-minute; every one is a false alarm.

    python -m bench.alerts [--wild DIR] [--ckplus DIR] [--faces-dir YALE] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from bench.report import markdown_table
from bench.scenes import DEFAULT_CLIPS_DIR, ClipSpec, PortraitSource, ensure_clip, resolve_faces_dir
from edge import DEFAULT_MODEL
from edge.config import ALERT_SIGNALS, UPSET_EMOTIONS, parse_config
from edge.contract import EMOTIONS
from edge.daemon.service import build_pipeline
from edge.tools.datasets import load_face_folder
from edge.tools.metrics import upset_report
from edge.vision.classifier import EmotionClassifier
from edge.visits.alerts import RAISED, AlertRules
from edge.visits.tracking import FaceTracker

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
HOLDS = (2.0, 5.0, 10.0)
SIGNALS = ALERT_SIGNALS


def condition_rates(probabilities: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Per threshold and signal: how often the rule's condition holds on single faces
    labelled upset (wanted) and on the others (a false alarm if it held)."""
    report = upset_report(probabilities, labels, EMOTIONS, UPSET_EMOTIONS, THRESHOLDS)
    return [
        {
            "threshold": row["threshold"],
            "signal": signal,
            "upset_faces": report["upset_faces"],
            "other_faces": report["calm_faces"],
            "held_on_upset": _rounded(row[signal]["recall"]),
            "held_on_others": _rounded(row[signal]["false_alarm_rate"]),
            "auc": _rounded(report["auc"]),
        }
        for row in report["at"]
        for signal in SIGNALS
    ]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def clip_alerts(clip: Path, threshold: float, hold: float, signal: str) -> tuple[int, float]:
    """(alerts raised, person-seconds) for one clip through the daemon's parts, offline."""
    rule = {"min_probability": threshold, "hold_seconds": hold, "signal": signal}
    config = parse_config({"rules": {"alerts": rule}})
    pipeline = build_pipeline(config)
    tracker = FaceTracker(config.tracking, pipeline.classifier.labels)
    rules = AlertRules(config.rules.alerts, pipeline.classifier.labels)
    capture = cv2.VideoCapture(str(clip))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    raised, person_seconds, index = 0, 0.0, 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        now = index / fps
        faces = pipeline.process(frame, now=now)
        tracker.update([(f.box, f.probabilities, f.key) for f in faces], now, 1e9 + now)
        present = tracker.present()
        person_seconds += len(present) / fps
        raised += sum(a.kind == RAISED for a in rules.update(present, now, 1e9 + now))
        index += 1
    capture.release()
    return raised, person_seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.alerts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--wild", default=None, help="expressions-wild folder (labels.csv)")
    parser.add_argument("--ckplus", default=None, help="CK+48 folder (labels.csv)")
    parser.add_argument("--faces-dir", default=None, help="Yale photographs for the clips")
    parser.add_argument("--clip-seconds", type=float, default=30.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    figures: dict = {"rule_emotions": UPSET_EMOTIONS, "dev_sets": {}, "clips": []}

    classifier = EmotionClassifier(DEFAULT_MODEL)
    for name, folder in (("expressions-wild", args.wild), ("CK+48", args.ckplus)):
        if not folder:
            continue
        faces = load_face_folder(folder)
        figures["dev_sets"][name] = condition_rates(classifier.classify_many(faces.images), faces.labels)
        rates = figures["dev_sets"][name]
        print(f"{name}: one frame of each face; upset-vs-calm ROC AUC {rates[0]['auc']}", file=sys.stderr)
        print(
            markdown_table(
                ["threshold", "signal", "holds on upset faces", "holds on other faces"],
                [
                    [
                        f"{r['threshold']:.1f}",
                        r["signal"],
                        f"{r['held_on_upset']} of {r['upset_faces']}",
                        f"{r['held_on_others']} of {r['other_faces']}",
                    ]
                    for r in rates
                ],
            )
        )

    portraits = PortraitSource(resolve_faces_dir(args.faces_dir))
    clips = [
        ensure_clip(ClipSpec(scene, (640, 480), args.clip_seconds), portraits, DEFAULT_CLIPS_DIR.expanduser())
        for scene in ("one_face", "several_faces", "enter_leave")
    ]
    rows = []
    for signal in SIGNALS:
        for threshold in THRESHOLDS:
            for hold in HOLDS:
                raised = seconds = 0.0
                for clip in clips:
                    r, s = clip_alerts(clip, threshold, hold, signal)
                    raised, seconds = raised + r, seconds + s
                per_minute = raised / (seconds / 60) if seconds else float("nan")
                figures["clips"].append(
                    {
                        "signal": signal,
                        "threshold": threshold,
                        "hold_seconds": hold,
                        "alerts": int(raised),
                        "person_minutes": round(seconds / 60, 2),
                        "per_person_minute": round(per_minute, 3),
                    }
                )
                rows.append(
                    [
                        signal,
                        f"{threshold:.1f}",
                        f"{hold:g} s",
                        f"{int(raised)}",
                        f"{seconds / 60:.1f}",
                        f"{per_minute:.3f}",
                    ]
                )
    print(
        f"clips of calm people ({portraits.name}), 640x480, {args.clip_seconds:g} s each: "
        "every alert is a false alarm"
    )
    print(
        markdown_table(
            ["signal", "threshold", "hold", "alerts", "person-minutes", "alerts per person-minute"], rows
        )
    )
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
