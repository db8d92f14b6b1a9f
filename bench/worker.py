"""One benchmark run in its own process: one clip, one pipeline, one mode; prints one JSON line.

Its own process so that peak RSS and CPU time belong to this configuration alone, and the
baseline's TensorFlow never shares an address space with the edge pipeline.

Modes:
- ``throughput``: every frame, as fast as it goes, decoded on the loop's thread;
- ``realtime``: the file played at its frame rate like a camera (FrameSource), frames the
  loop is too slow for are skipped, as live, and while nobody is in view only
  ``camera.idle_fps`` frames a second are decoded (the daemon's own pipeline; the thesis's
  loop took every frame); events go nowhere;
- ``realtime-broker``: the same, with events published to a local MQTT broker.

    python -m bench.worker --clip CLIP.avi --pipeline fast|baseline --mode MODE
        [--reference CLIP.reference.json] [--broker-port N] [--keras-model M.keras]
        [--set SECTION.KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from bench.measure import (
    STAGES,
    ClipSource,
    RecordingPipeline,
    RecordingPublisher,
    RecordingSource,
    StepRecord,
    frame_count,
    peak_rss_mb,
    percentiles_ms,
    record_step,
    timed_opener,
)
from bench.reference import arrival_latency, load_reference, recall, reference_false_positives
from edge.camera.capture import Frame, FrameSource, open_capture
from edge.config import Config, parse_config
from edge.contract import EMOTIONS, INPUT_SIZE
from edge.daemon.loop import ProcessingLoop
from edge.daemon.service import build_pipeline, build_publisher
from edge.mqtt.delivery import Delivery
from edge.mqtt.payloads import Topics
from edge.visits.tracking import FaceTracker

_LOGGER = logging.getLogger(__name__)

PIPELINES = ("fast", "baseline")
CLIP_FPS = 30.0  # bench.scenes renders every clip at 30 fps
MODES = ("throughput", "realtime", "realtime-broker")


@dataclass
class Run:
    loop: ProcessingLoop
    source: RecordingSource
    pipeline: RecordingPipeline
    publisher: RecordingPublisher
    finished: Callable[[Frame | None], bool]
    frames_total: int


def parse_override(text: str) -> tuple[str, str, Any]:
    """``detector.scale_factor=1.2`` -> ("detector", "scale_factor", 1.2); values are YAML."""
    key, sep, value = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not (sep and dot and section and name):
        raise argparse.ArgumentTypeError(f"expected SECTION.KEY=VALUE, got {text!r}")
    return section, name, yaml.safe_load(value)


def bench_config(
    clip: Path, mode: str, broker_port: int, spool_dir: Path, overrides: list[tuple[str, str, Any]] = ()
) -> Config:
    """The daemon's defaults (plus any overrides), with the clip as camera; a clip that
    ended is not reopened."""
    data: dict[str, dict[str, Any]] = {
        "camera": {
            "source": str(clip),
            "realtime": mode != "throughput",
            "retry_initial_seconds": 3600,
            "retry_max_seconds": 3600,
        },
        "mqtt": {"host": "127.0.0.1", "port": broker_port or 1883, "device_id": "bench"},
        "spool": {"path": str(spool_dir)},
    }
    for section, name, value in overrides:
        data.setdefault(section, {})[name] = value
    return parse_config({**data, "log_level": "WARNING"}, "bench")


def make_pipeline(name: str, config: Config, keras_model: str | None):
    """The pipeline, warmed up: one-time costs (Keras tracing its predict function, LiteRT
    setting up its delegate) belong to start-up, which the footprint benchmark measures."""
    if name == "fast":
        pipeline = build_pipeline(config)
        pipeline.classifier.classify(np.zeros((1, INPUT_SIZE, INPUT_SIZE), np.uint8))
        return pipeline
    if not keras_model:
        raise SystemExit("--keras-model is required for the baseline")
    from bench.baseline import ThesisPipeline, load_keras_model  # TensorFlow: baseline only

    pipeline = ThesisPipeline(load_keras_model(keras_model))
    pipeline.model.predict(np.zeros((1, INPUT_SIZE, INPUT_SIZE, 1), np.float32), verbose=0)
    return pipeline


def connect_publisher(config: Config) -> Delivery:
    publisher = build_publisher(config, EMOTIONS)
    publisher.start()
    if not publisher.transport.wait_connected(5):
        raise SystemExit(f"no MQTT broker on 127.0.0.1:{config.mqtt.port}")
    return publisher


def throughput_run(
    clip: Path, config: Config, pipeline, read_seconds: list[float], opener: Callable
) -> tuple[Run, ClipSource]:
    clips = ClipSource(clip, read_seconds, opener)
    source = RecordingSource(clips)
    recording, publisher = (
        RecordingPipeline(pipeline),
        RecordingPublisher(None, Topics(config.base_topic).events),
    )
    loop = ProcessingLoop(
        config,
        source,
        recording,
        FaceTracker(config.tracking, EMOTIONS),
        publisher,
        clock=clips.clock,
        wall_clock=clips.wall_clock,
    )
    return Run(
        loop, source, recording, publisher, lambda frame: frame is None and clips.ended, frame_count(clip)
    ), clips


def realtime_run(
    clip: Path,
    config: Config,
    pipeline,
    read_seconds: list[float],
    inner_publisher: Delivery | None,
    opener: Callable,
) -> tuple[Run, FrameSource]:
    frames = FrameSource(config.camera, opener=timed_opener(read_seconds, opener))
    source = RecordingSource(frames)
    recording = RecordingPipeline(pipeline)
    publisher = RecordingPublisher(inner_publisher, Topics(config.base_topic).events)
    loop = ProcessingLoop(config, source, recording, FaceTracker(config.tracking, EMOTIONS), publisher)
    total = frame_count(clip)
    seen: list[bool] = []

    def finished(frame: Frame | None) -> bool:
        if frame is not None:
            seen.append(True)
            return frame.sequence >= total
        return bool(seen) and not frames.connected  # the file ended while the loop was busy

    return Run(loop, source, recording, publisher, finished, total), frames


def drive(run: Run, deadline: float) -> list[StepRecord]:
    records: list[StepRecord] = []
    while time.monotonic() < deadline:
        run.publisher.new_step()
        frame = run.loop.step(timeout=0.5)
        ended = time.perf_counter()
        if frame is not None:
            records.append(record_step(frame, run.source, run.pipeline, run.publisher, ended))
        if run.finished(frame):
            return records
    _LOGGER.warning("stopped at the deadline, before the clip ended")
    return records


def event_kinds(run: Run) -> dict[str, int]:
    return dict(Counter(json.loads(m.payload)["type"] for m in run.publisher.events))


def summarize(
    run: Run,
    records: list[StepRecord],
    read_seconds: list[float],
    start_cpu: float,
    start_wall: float,
    reference: list | None,
) -> dict[str, Any]:
    cpu = (records[-1].cpu if records else time.process_time()) - start_cpu
    wall = (records[-1].wall if records else time.perf_counter()) - start_wall
    processed = len(records)
    stages = {"decode": percentiles_ms(read_seconds)}
    stages.update({name: percentiles_ms([r.stages[name] for r in records]) for name in STAGES[1:]})
    latencies = [value for r in records for value in r.latencies]
    inner = run.pipeline.inner
    # passed over undecoded while nobody was in view (camera.idle_fps): by design, not
    # frames the loop was too slow for
    passed_over = getattr(run.source.inner, "passed_over", 0)
    skipped = run.frames_total - processed - passed_over
    result: dict[str, Any] = {
        "frames_total": run.frames_total,
        "frames_processed": processed,
        "frames_passed_over_idle": passed_over,
        "frames_skipped": skipped,
        "every_frame_processed": skipped == 0,
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "cpu_ms_per_frame": round(1000 * cpu / processed, 3) if processed else None,
        "cpu_percent_one_core": round(100 * cpu / wall, 1) if wall > 0 else None,
        "fps": round(processed / wall, 2) if wall > 0 else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "stages_ms": stages,
        # per frame, publish is mostly 0 (few frames cause a message): its cost per call tells more
        "publish_call_ms": dict(
            percentiles_ms(run.publisher.call_seconds), count=len(run.publisher.call_seconds)
        ),
        "latency_ms": dict(percentiles_ms(latencies), count=len(latencies)),
        "events": event_kinds(run),
        "faces_per_frame": round(sum(len(r.boxes) for r in records) / processed, 3) if processed else None,
        "classified": inner.classified,
    }
    # whichever the pipeline's finder counts (an older one, measured for a before/after,
    # has no motion searches)
    for counter in ("full_detections", "local_searches", "motion_searches"):
        if hasattr(getattr(inner, "finder", None), counter):
            result[counter] = getattr(inner.finder, counter)
    passes = getattr(inner, "passes", None)
    if passes is not None:
        result["model_passes"] = passes
    if reference is not None:
        result["detection"] = recall(reference, {r.sequence - 1: r.boxes for r in records})
        # on the clip's clock (frame i at i/30 s): a figure of the pipeline's decisions, not of the machine
        result["first_frame_to_new_ms"] = arrival_latency(
            reference, {r.sequence - 1: r.new_faces for r in records if r.new_faces}, CLIP_FPS
        )
    return result


def measure(args: argparse.Namespace) -> dict[str, Any]:
    clip = Path(args.clip)
    reference = load_reference(Path(args.reference)) if args.reference else None
    with tempfile.TemporaryDirectory(prefix="fer-bench-") as scratch:
        # The thesis's loop took every frame: it never ran with the daemon's idle rate.
        overrides = args.set + ([("camera", "idle_fps", 0)] if args.pipeline == "baseline" else [])
        config = bench_config(clip, args.mode, args.broker_port, Path(scratch) / "spool", overrides)
        pipeline = make_pipeline(args.pipeline, config, args.keras_model)
        inner_publisher = connect_publisher(config) if args.mode == "realtime-broker" else None
        read_seconds: list[float] = []
        # The thesis loop read colour frames (cv2.VideoCapture) and converted them itself.
        opener = open_capture if args.pipeline == "fast" else cv2.VideoCapture
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        if args.mode == "throughput":
            run, clips = throughput_run(clip, config, pipeline, read_seconds, opener)
            records = drive(run, time.monotonic() + args.max_seconds)
            clips.close()
        else:
            run, frames = realtime_run(clip, config, pipeline, read_seconds, inner_publisher, opener)
            frames.start()
            records = drive(run, time.monotonic() + args.max_seconds)
            frames.stop(timeout=1.0)
        result = summarize(run, records, read_seconds, start_cpu, start_wall, reference)
        if args.reference:
            result["detection"]["reference_false_positives"] = reference_false_positives(Path(args.reference))
        if inner_publisher is not None:
            inner_publisher.stop(timeout=2.0)
    if args.mode == "throughput":
        result["latency_ms"] = None  # frames carry the clip's clock, not capture times
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", required=True)
    parser.add_argument("--pipeline", choices=PIPELINES, required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--reference", help="the clip's reference boxes (bench.reference), for recall")
    parser.add_argument("--broker-port", type=int, default=0, help="local MQTT broker (realtime-broker mode)")
    parser.add_argument("--keras-model", help="the thesis's float Keras model (baseline)")
    parser.add_argument(
        "--set",
        type=parse_override,
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="change a setting of the daemon's config (fast pipeline), e.g. detector.scale_factor=1.2",
    )
    parser.add_argument("--max-seconds", type=float, default=900.0, help="give up after this long")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.mode == "realtime-broker" and not args.broker_port:
        parser.error("realtime-broker needs --broker-port")
    result = {"pipeline": args.pipeline, "mode": args.mode, "clip": Path(args.clip).name}
    result.update(measure(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
