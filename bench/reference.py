"""Detection recall against the reference: Haar at full resolution on every frame.

The reference is what the daemon would find if it could afford the most expensive setting
(detect_width 0, a full detection on every frame); recall says how many of those faces a cheaper
pipeline still finds. The cascade also fires now and then on the scenery; since the clips
are scripted, a reference box counts as a face only when it lies on a person's cut-out.
Reference faces are cached next to the clip (they depend only on it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from edge.config import DetectorConfig
from edge.vision.detect import HaarFaceDetector
from edge.vision.matching import match
from edge.vision.preprocess import Box, iou, to_gray

MATCH_IOU = 0.3


def reference_path(clip: Path) -> Path:
    return clip.with_suffix(".reference.json")


def detect_every_frame(clip: Path) -> list[list[Box]]:
    detector = HaarFaceDetector(DetectorConfig(detect_width=0))
    capture = cv2.VideoCapture(str(clip))
    frames: list[list[Box]] = []
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            frames.append(detector.detect(to_gray(image)))
    finally:
        capture.release()
    return frames


def _inside(box: Box, person: Sequence[int]) -> bool:
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    x, y, w, h = person
    return x <= cx < x + w and y <= cy < y + h


def on_people(detections: list[list[Box]], people: list[list[Sequence[int]]]) -> tuple[list[list[Box]], int]:
    """The detections centred on a person's cut-out, and how many were not (the cascade's
    false positives on the scenery: not faces, so no pipeline should be asked to find them)."""
    kept = [
        [b for b in boxes if any(_inside(b, p) for p in (people[i] if i < len(people) else []))]
        for i, boxes in enumerate(detections)
    ]
    return kept, sum(len(b) for b in detections) - sum(len(b) for b in kept)


def ensure_reference(clip: Path) -> Path:
    """The cached reference faces of ``clip`` (computed first if missing or stale). Without
    the clip's ``.people.json`` (a clip not made by bench.scenes) every detection counts."""
    path = reference_path(clip)
    people = clip.with_suffix(".people.json")
    if (
        path.is_file()
        and path.stat().st_mtime >= clip.stat().st_mtime
        and isinstance(json.loads(path.read_text()), dict)
    ):
        return path
    detections = detect_every_frame(clip)
    faces, false_positives = (
        on_people(detections, json.loads(people.read_text())) if people.is_file() else (detections, 0)
    )
    partial = path.with_name(path.name + ".partial")
    partial.write_text(
        json.dumps(
            {"faces": [[list(b) for b in frame] for frame in faces], "false_positives": false_positives}
        )
    )
    partial.replace(path)
    return path


def load_reference(path: Path) -> list[list[Box]]:
    return [[tuple(b) for b in frame] for frame in json.loads(path.read_text())["faces"]]


def reference_false_positives(path: Path) -> int:
    return int(json.loads(path.read_text())["false_positives"])


def recall(
    reference: Sequence[Sequence[Box]], found: Mapping[int, Sequence[Box]], min_iou: float = MATCH_IOU
) -> dict:
    """Per reference box of each frame in ``found`` (0-based frame index -> boxes): matched
    when some found box overlaps it by ``min_iou``. ``extra``: found boxes matching none."""
    total = matched = extra = 0
    for index, boxes in found.items():
        truth = reference[index] if index < len(reference) else []
        total += len(truth)
        matched += sum(1 for r in truth if any(iou(r, b) >= min_iou for b in boxes))
        extra += sum(1 for b in boxes if all(iou(r, b) < min_iou for r in truth))
    return {
        "recall": matched / total if total else None,
        "reference_faces": total,
        "matched": matched,
        "extra": extra,
        "frames": len(found),
    }


def reference_people(
    reference: Sequence[Sequence[Box]], max_gap: int = 15, min_frames: int = 15
) -> list[dict[int, Box]]:
    """The people the reference sees, each as {frame index: box}: boxes linked from frame to
    frame by the tracker's matching rule; a person unseen for ``max_gap`` frames has left.
    Shorter than ``min_frames``: a fluke, left out."""
    people: list[dict[int, Box]] = []
    for index, boxes in enumerate(reference):
        live = [p for p in people if index - max(p) <= max_gap]
        pairs = match([p[max(p)] for p in live], boxes, MATCH_IOU, 0.6)
        for pi, bi in pairs:
            live[pi][index] = boxes[bi]
        people += [{index: box} for bi, box in enumerate(boxes) if bi not in {b for _, b in pairs}]
    return [p for p in people if len(p) >= min_frames]


def arrival_latency(
    reference: Sequence[Sequence[Box]], new_events: Mapping[int, Sequence[Box]], fps: float
) -> dict:
    """From each person's first frame in the reference to the pipeline's `new` event for them
    (the first whose box overlaps theirs, at or after their first frame), in ms of the clip's
    clock; ``missed``: people who never got one."""
    latencies, missed, used = [], 0, set()
    for person in reference_people(reference):
        first, last = min(person), max(person)
        hit = next(
            (
                (index, k)
                for index in sorted(new_events)
                if first <= index <= last
                for k, box in enumerate(new_events[index])
                if (index, k) not in used
                and iou(box, person[max(i for i in person if i <= index)]) >= MATCH_IOU
            ),
            None,
        )
        if hit is None:
            missed += 1
            continue
        used.add(hit)
        latencies.append(1000.0 * (hit[0] - first) / fps)
    values = np.asarray(latencies) if latencies else None
    return {
        "p50": round(float(np.percentile(values, 50)), 1) if values is not None else None,
        "p95": round(float(np.percentile(values, 95)), 1) if values is not None else None,
        "max": round(float(values.max()), 1) if values is not None else None,
        "people": len(latencies) + missed,
        "missed": missed,
    }
