"""The benchmark harness runs end to end on a tiny clip and reports sane figures.

Speed is measured by the benchmark (docs/benchmarks.md), never asserted here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.measure import STAGES
from bench.reference import (
    arrival_latency,
    ensure_reference,
    load_reference,
    on_people,
    recall,
    reference_false_positives,
)
from bench.report import speedups
from bench.scenes import ClipSpec, PortraitSource, ensure_clip, flicker_levels, resolve_faces_dir, script
from tests.conftest import ROOT

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
HAS_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> tuple[Path, Path]:
    """1.5 s at 640x480 of one person (Yale photograph, or the astronaut without them)."""
    clip = ensure_clip(
        ClipSpec("one_face", (640, 480), 1.5),
        PortraitSource(resolve_faces_dir(None)),
        tmp_path_factory.mktemp("clips"),
    )
    return clip, ensure_reference(clip)


def run_worker(clip: Path, reference: Path, *options: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "bench.worker", "--clip", str(clip), "--reference", str(reference), *options],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_sane_stages(stages: dict) -> None:
    assert set(stages) == set(STAGES)
    for name, figures in stages.items():
        assert 0 <= figures["p50"] <= figures["p95"], name


def test_fast_pipeline_throughput_run_reports_every_figure(tiny_clip):
    clip, reference = tiny_clip
    result = run_worker(clip, reference, "--pipeline", "fast", "--mode", "throughput")
    assert result["frames_total"] == result["frames_processed"] == 45
    assert result["frames_skipped"] == 0 and result["every_frame_processed"]
    assert_sane_stages(result["stages_ms"])
    assert result["cpu_ms_per_frame"] > 0 and result["cpu_seconds"] > 0
    assert result["fps"] > 0 and 0 < result["cpu_percent_one_core"] <= 100 * (os.cpu_count() or 1)
    assert 10 < result["peak_rss_mb"] < 4096
    assert result["latency_ms"] is None  # throughput frames carry the clip's clock
    assert result["publish_call_ms"]["count"] >= 1  # at least the `new` event and a state change
    assert 1 <= result["full_detections"] <= 45
    arrival = result["first_frame_to_new_ms"]
    assert arrival["people"] == 1 and arrival["missed"] == 0 and 0 <= arrival["p50"] <= 1000
    assert result["model_passes"] >= 10  # the whole view set on the face's first frame
    assert result["events"].get("new", 0) >= 1  # one person in view: a `new` event
    detection = result["detection"]
    assert detection["reference_false_positives"] == reference_false_positives(reference)
    assert detection["frames"] == 45 and detection["reference_faces"] > 0
    assert 0.0 <= detection["recall"] <= 1.0


def test_realtime_run_counts_skipped_frames_and_event_latency(tiny_clip):
    clip, reference = tiny_clip
    result = run_worker(clip, reference, "--pipeline", "fast", "--mode", "realtime")
    assert result["frames_processed"] + result["frames_skipped"] == result["frames_total"] == 45
    assert result["frames_processed"] > 0
    assert result["wall_seconds"] >= 1.0  # played at 30 fps, not faster
    latency = result["latency_ms"]
    assert latency["count"] >= 1 and 0 <= latency["p50"] <= latency["p95"]
    assert_sane_stages(result["stages_ms"])


def test_python_m_bench_writes_results_and_tables(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--seconds",
            "1",
            "--scenes",
            "no_face",
            "--sizes",
            "640x480",
            "--pipelines",
            "fast",
            "--modes",
            "throughput",
            "--clips-dir",
            str(tmp_path / "clips"),
            "--out",
            str(out),
            # the same pipeline again, labelled: how two models are compared in one run
            "--variant",
            "twin:model.path=edge/models/emotion_int8.tflite",
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    run, twin = report["runs"]
    assert (run["scene"], run["size"], run["pipeline"], run["mode"]) == (
        "no_face",
        "640x480",
        "fast",
        "throughput",
    )
    assert (twin["scene"], twin["pipeline"], twin["mode"]) == ("no_face", "fast:twin", "throughput")
    assert "error" not in twin and twin["frames_processed"] == run["frames_processed"]
    assert run["detection"]["reference_faces"] == 0 and run["detection"]["recall"] is None
    assert report["meta"]["seconds"] == 1 and report["speedups"] == []
    assert report["meta"]["variants"] == {"twin": ["model.path=edge/models/emotion_int8.tflite"]}
    assert "| no_face | 640x480 | fast |" in done.stdout
    assert "| no_face | 640x480 | fast:twin |" in done.stdout


def test_scenes_with_motion_behind_the_counter_have_their_customers_and_only_them(tmp_path):
    portraits = PortraitSource(resolve_faces_dir(None))
    for scene in ("walk_behind", "flicker"):
        assert script(ClipSpec(scene, (640, 480), 10), portraits) == []  # no face to find
    arrivals = script(ClipSpec("walk_behind_arrival", (640, 480), 10), portraits)
    on_screen = [{a.portrait.ctypes.data for a in arrivals if a.position(i, 640, 480)} for i in range(300)]
    assert [len(people) for people in on_screen[::30]] == [0, 0, 1, 1, 1, 0, 1, 1, 1, 1]
    clip = ensure_clip(ClipSpec("flicker_arrival", (640, 480), 1), portraits, tmp_path)
    people = json.loads(clip.with_suffix(".people.json").read_text())
    assert len(people) == 30 and people[0] == [] and len(people[10]) == 1  # walked in at 15 %


def test_the_flickering_light_dips_on_about_a_third_of_the_frames():
    levels = flicker_levels(3000)
    dips = levels < 1.0
    assert 0.25 < dips.mean() < 0.45 and levels.min() >= 0.55 and levels[dips].max() <= 0.85
    assert (flicker_levels(3000) == levels).all()  # the same clip every time


def test_recall_matches_each_reference_box_by_overlap():
    reference = [[(10, 10, 100, 100)], [(10, 10, 100, 100), (300, 10, 100, 100)], []]
    found = {0: [(20, 20, 100, 100)], 1: [(300, 200, 100, 100)], 2: [(0, 0, 50, 50)]}
    figures = recall(reference, found)
    assert figures["reference_faces"] == 3 and figures["matched"] == 1
    assert figures["recall"] == pytest.approx(1 / 3)
    assert figures["extra"] == 2  # frame 1's box is off both faces; frame 2 has no face at all


def test_arrival_latency_runs_from_a_persons_first_reference_frame_to_their_new_event():
    walker = [[(10 * i, 10, 100, 100)] for i in range(40)]
    sitter = [[] for _ in range(10)] + [[(400, 300, 100, 100)] for _ in range(30)]
    reference = [a + b for a, b in zip(walker, sitter)]
    figures = arrival_latency(reference, {2: [(22, 10, 100, 100)], 16: [(400, 302, 100, 100)]}, 30.0)
    assert figures["people"] == 2 and figures["missed"] == 0
    assert figures["p50"] == pytest.approx(1000 * (2 + 6) / 2 / 30, abs=0.1)  # 2 and 6 frames late
    assert arrival_latency(reference, {}, 30.0)["missed"] == 2


def test_reference_keeps_only_detections_on_a_person():
    person = (100, 50, 200, 250)
    face, scenery = (150, 80, 90, 90), (400, 300, 50, 50)
    faces, false_positives = on_people([[face, scenery], [scenery]], [[person], []])
    assert faces == [[face], []] and false_positives == 2


def test_speedup_is_baseline_over_fast_cpu_per_frame_on_the_same_clip():
    def run(pipeline: str, scene: str, cpu: float) -> dict:
        return {
            "scene": scene,
            "size": "640x480",
            "pipeline": pipeline,
            "mode": "throughput",
            "cpu_ms_per_frame": cpu,
        }

    rows = speedups(
        [run("fast", "one_face", 4.0), run("baseline", "one_face", 50.0), run("baseline", "no_face", 9.0)]
    )
    assert rows == [
        {
            "scene": "one_face",
            "size": "640x480",
            "faces": None,
            "baseline_cpu_ms_per_frame": 50.0,
            "fast_cpu_ms_per_frame": 4.0,
            "speedup": 12.5,
        }
    ]


@pytest.mark.skipif(not HAS_TENSORFLOW, reason="TensorFlow is not installed (the train extra): no baseline")
def test_thesis_loop_finds_the_face_and_classifies_it_with_keras(tiny_clip, tmp_path):
    import cv2

    from bench.baseline import (
        THESIS_WIDTH,
        ThesisPipeline,
        load_keras_model,
        make_standin_model,
        resize_to_width,
    )
    from edge.vision.pipeline import StageTimes

    clip, reference = tiny_clip
    pipeline = ThesisPipeline(load_keras_model(make_standin_model(tmp_path / "standin.keras")))
    capture = cv2.VideoCapture(str(clip))
    ok, frame = capture.read()
    capture.release()
    assert ok and resize_to_width(frame, THESIS_WIDTH).shape == (225, 300, 3)
    times = StageTimes()
    results = pipeline.process(frame, times)
    assert len(results) == 1 and pipeline.classified == 1
    probabilities = results[0].probabilities
    assert probabilities.shape == (7,) and np.isclose(probabilities.sum(), 1.0, atol=1e-3)
    # boxes come back in full-frame pixels, where the reference found the face
    assert recall(load_reference(reference), {0: [results[0].box]})["recall"] == 1.0
    assert times.detect > 0 and times.classify > 0 and times.preprocess > 0
