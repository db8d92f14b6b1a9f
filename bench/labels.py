"""``python -m bench.labels``: the figures behind the label's hysteresis (tracking.label_margin,
tracking.label_hold_seconds).

Recordings of labelled faces: one expressions-wild crop per visit (a few per emotion,
drawn with a fixed seed), on screen for ``--visit-seconds`` and gone for 1.5 s between
visits, rendered with the bench's clip maker into a cache folder (never committed). The
daemon's pipeline (detector, model with its views and calibration, classification
schedule) runs over each clip once, offline, on the clip's clock; its detections then feed
the tracker under each hysteresis setting, so every setting sees the very same faces. The
bench clips of calm people (Yale photographs) are measured the same way.

For each setting: visits found, `update` events per visit caused by a change of label
(heartbeats off), visit summaries whose `dominant_emotion` is the label (recordings), and
the share of on-screen time the live label was the right one (what `state` showed).

    python -m bench.labels --wild DIR [--faces-dir YALE] [--per-emotion 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from bench.clips import Appearance, render_clip
from bench.report import markdown_table
from bench.scenes import DEFAULT_CLIPS_DIR, ClipSpec, PortraitSource, ensure_clip, resolve_faces_dir
from edge.config import parse_config
from edge.contract import EMOTIONS
from edge.daemon.service import build_pipeline
from edge.tools.datasets import read_labelled_folder
from edge.visits.tracking import FaceTracker

FPS = 30.0
GAP_SECONDS = 1.5  # empty scene between two visits (and before the first)
# (label_margin, label_hold_seconds); (0, 0) is the label before hysteresis.
SETTINGS = ((0.0, 0.0), (0.05, 0.5), (0.1, 0.5), (0.1, 1.0), (0.15, 1.0), (0.2, 2.0))


def wild_visits(folder: str, per_emotion: int, seed: int = 2026) -> list[tuple[Path, int]]:
    """``per_emotion`` crops of each emotion (all of those that have fewer), drawn with ``seed``."""
    files = read_labelled_folder(folder)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in range(len(EMOTIONS)):
        mine = [f for f, lab in zip(files.files, files.labels) if lab == label]
        for index in rng.permutation(len(mine))[:per_emotion]:
            chosen.append((Path(mine[index]), label))
    order = rng.permutation(len(chosen))
    return [chosen[i] for i in order]


def render_visits(
    visits: list[tuple[Path, int]], path: Path, visit_seconds: float, gap_seconds: float
) -> Path:
    """One face a visit, still but for a slight drift, a gap of empty scene between visits."""
    on, off = int(visit_seconds * FPS), int(gap_seconds * FPS)
    appearances = []
    for i, (file, _) in enumerate(visits):
        crop = cv2.imread(str(file), cv2.IMREAD_COLOR)
        start = off + i * (on + off)
        appearances.append(Appearance(crop, start, start + on, (0.35, 0.25), (0.37, 0.25), 0.45))
    return render_clip(path, appearances, off + len(visits) * (on + off), (640, 480), FPS)


def detections_of(clip: Path, pipeline) -> list[list[tuple]]:
    """The pipeline's (box, probabilities) for every frame of the clip, on the clip's clock."""
    capture = cv2.VideoCapture(str(clip))
    frames = []
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        faces = pipeline.process(frame, now=index / FPS)
        frames.append([(f.box, f.probabilities, f.key) for f in faces])
        index += 1
    capture.release()
    return frames


def track(frames: list[list[tuple]], margin: float, hold: float) -> list:
    """Every visit's events under one hysteresis setting (heartbeats off: updates are changes)."""
    config = parse_config(
        {"tracking": {"label_margin": margin, "label_hold_seconds": hold, "heartbeat_seconds": 0}}
    ).tracking
    tracker = FaceTracker(config, EMOTIONS, id_prefix="b")
    events = []
    for index, detections in enumerate(frames):
        events += tracker.update(detections, index / FPS, 1e9 + index / FPS)
    end = len(frames) / FPS + 60
    events += tracker.expire(end, 1e9 + end)
    return events


def figures(events: list, truth: list[int] | None = None, period: float = 0.0, offset: float = 0.0) -> dict:
    """Visits, label changes per visit and, for a recording (``truth``: the label of the face
    shown from ``offset + i * period`` s), its visits' summaries and live labels against it."""
    ends = [e for e in events if e.kind == "end"]
    updates = sum(e.kind == "update" for e in events)
    out = {
        "visits": len(ends),
        "updates_per_visit": round(updates / len(ends), 3) if ends else None,
    }
    if truth is not None:
        shown: dict[int, object] = {}
        for end in ends:  # the face each visit showed: by when it started
            index = int((end.summary["first_seen"] - 1e9 - offset) // period)
            if 0 <= index < len(truth) and index not in shown:
                shown[index] = end
        right = sum(EMOTIONS[truth[i]] == e.summary["dominant_emotion"] for i, e in shown.items())
        label_time = sum(e.summary["emotion_seconds"].get(EMOTIONS[truth[i]], 0.0) for i, e in shown.items())
        on_screen = sum(e.summary["duration_s"] for e in shown.values())
        out["faces_found"] = len(shown)
        out["summaries_right"] = right
        out["label_time_right"] = round(label_time / on_screen, 4) if on_screen else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.labels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--wild", required=True, help="expressions-wild folder (labels.csv)")
    parser.add_argument("--faces-dir", default=None, help="Yale photographs for the calm clips")
    parser.add_argument("--per-emotion", type=int, default=10)
    parser.add_argument("--visit-seconds", type=float, default=3.0)
    parser.add_argument("--clips-dir", default=str(DEFAULT_CLIPS_DIR))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    clips_dir = Path(args.clips_dir).expanduser()
    clips_dir.mkdir(parents=True, exist_ok=True)
    pipeline = build_pipeline(parse_config({"log_level": "WARNING"}))
    visits = wild_visits(args.wild, args.per_emotion)
    name = f"labels_wild_{args.per_emotion}x7_{args.visit_seconds:g}s_gap{GAP_SECONDS:g}s.avi"
    recording = clips_dir / name
    if not recording.is_file():
        render_visits(visits, recording, args.visit_seconds, GAP_SECONDS)
    truth = [label for _, label in visits]
    portraits = PortraitSource(resolve_faces_dir(args.faces_dir))
    calm = [
        ensure_clip(ClipSpec(scene, (640, 480), 30.0), portraits, clips_dir)
        for scene in ("one_face", "several_faces", "enter_leave")
    ]
    recorded = {"recordings": detections_of(recording, pipeline)}
    recorded["calm clips"] = [frame for clip in calm for frame in detections_of(clip, pipeline)]

    results = []
    for margin, hold in SETTINGS:
        row = {"label_margin": margin, "label_hold_seconds": hold}
        period = args.visit_seconds + GAP_SECONDS
        row["recordings"] = figures(track(recorded["recordings"], margin, hold), truth, period, GAP_SECONDS)
        row["calm_clips"] = figures(track(recorded["calm clips"], margin, hold))
        results.append(row)
    print(
        f"recordings: {len(visits)} visits of expressions-wild faces ({args.per_emotion} per emotion, "
        f"{args.visit_seconds:g} s each); calm clips: {portraits.name}, 3 scenes of 30 s; "
        f"640x480, {FPS:g} fps"
    )
    print(
        markdown_table(
            [
                "margin",
                "hold",
                "faces found",
                "updates per visit",
                "summaries right",
                "live label right (time)",
                "calm clips: visits",
                "updates per visit",
            ],
            [
                [
                    f"{r['label_margin']:g}",
                    f"{r['label_hold_seconds']:g} s",
                    f"{r['recordings']['faces_found']} ({r['recordings']['visits']} visits)",
                    f"{r['recordings']['updates_per_visit']}",
                    f"{r['recordings']['summaries_right']} of {len(visits)}",
                    f"{r['recordings']['label_time_right'] * 100:.1f} %",
                    f"{r['calm_clips']['visits']}",
                    f"{r['calm_clips']['updates_per_visit']}",
                ]
                for r in results
            ],
        )
    )
    if args.out:
        Path(args.out).write_text(json.dumps({"visits": len(visits), "settings": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
