"""Clip benchmark: the daemon's own pipeline against the thesis's loop, on the same clips.

Replays recorded clips through both in one run; prints tables and writes the figures as JSON.

Every configuration runs in its own process (``bench.worker``). See docs/benchmarks.md.

    python -m bench [--seconds 10] [--scenes one_face,...] [--sizes 640x480,1280x720]
                    [--pipelines fast,baseline] [--modes throughput,realtime,realtime-broker]
                    [--keras-model best.keras] [--faces-dir DIR] [--clips-dir DIR] [--out FILE]
                    [--set detector.scale_factor=1.2 ...] [--note TEXT]
                    [--variant NAME:model.path=OTHER.tflite ...]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import report
from bench.reference import ensure_reference
from bench.scenes import (
    DEFAULT_CLIPS_DIR,
    REPO_ROOT,
    SCENES,
    SIZES,
    ClipSpec,
    PortraitSource,
    ensure_clip,
    resolve_faces_dir,
)
from bench.worker import MODES, PIPELINES

_LOGGER = logging.getLogger(__name__)

DEFAULT_OUT = Path("bench") / "results" / "latest.json"  # relative to the repository root


def _choices(allowed: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [v for v in values if v not in allowed]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return values

    return parse


def _sizes(text: str) -> list[tuple[int, int]]:
    try:
        return [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",")]  # type: ignore[misc]
    except ValueError as err:
        raise argparse.ArgumentTypeError("sizes look like 640x480,1280x720") from err


def _variant(text: str) -> tuple[str, str]:
    name, sep, setting = text.partition(":")
    if not sep or not name.strip() or "=" not in setting:
        raise argparse.ArgumentTypeError("a variant looks like NAME:SECTION.KEY=VALUE")
    return name.strip(), setting.strip()


def variant_overrides(variants: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Each variant's settings, in the order first named (one NAME may be given several)."""
    grouped: dict[str, list[str]] = {}
    for name, setting in variants:
        grouped.setdefault(name, []).append(setting)
    return grouped


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip (default 10)")
    parser.add_argument(
        "--scenes",
        type=_choices(SCENES),
        default=list(SCENES),
        help=f"comma-separated, of {','.join(SCENES)} (default: all)",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=list(SIZES),
        help="comma-separated WIDTHxHEIGHT (default: 640x480,1280x720)",
    )
    parser.add_argument(
        "--pipelines",
        type=_choices(PIPELINES),
        default=list(PIPELINES),
        help=f"comma-separated, of {','.join(PIPELINES)} (default: both)",
    )
    parser.add_argument(
        "--modes",
        type=_choices(MODES),
        default=list(MODES),
        help=f"comma-separated, of {','.join(MODES)} (default: all)",
    )
    parser.add_argument(
        "--keras-model", help="the thesis's float Keras model; default: an untrained stand-in"
    )
    parser.add_argument(
        "--faces-dir",
        help=f"Yale face photographs (default: {Path('..') / 'shared/datasets/yale-faces'} "
        "beside the repository)",
    )
    parser.add_argument("--clips-dir", default=str(DEFAULT_CLIPS_DIR), help="cache of rendered clips")
    parser.add_argument("--out", help=f"results JSON (default: {DEFAULT_OUT} in the repository)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="change a setting of the edge pipeline's config, e.g. detector.scale_factor=1.2 "
        "(repeatable; the baseline is never changed)",
    )
    parser.add_argument(
        "--variant",
        type=_variant,
        action="append",
        default=[],
        metavar="NAME:SECTION.KEY=VALUE",
        help="also run the edge pipeline with this setting changed, labelled fast:NAME, right after "
        "the plain one on every clip and mode (repeatable; repeat a NAME for several settings), "
        "e.g. wide:model.path=wide.tflite: two models compared in one run",
    )
    parser.add_argument("--note", default="", help="recorded with the figures, e.g. what else was running")
    args = parser.parse_args(argv)
    if args.variant and "fast" not in args.pipelines:
        parser.error("--variant changes the edge pipeline: keep fast in --pipelines")
    args.variant = variant_overrides(args.variant)  # NAME -> its settings
    return args


def worker_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }


def run_worker(
    clip: Path,
    reference: Path,
    pipeline: str,
    mode: str,
    broker_port: int,
    keras_model: str | None,
    overrides: list[str],
) -> dict:
    command = [
        sys.executable,
        "-m",
        "bench.worker",
        "--clip",
        str(clip),
        "--reference",
        str(reference),
        "--pipeline",
        pipeline,
        "--mode",
        mode,
    ]
    if pipeline == "fast":
        command += [f"--set={item}" for item in overrides]
    if broker_port:
        command += ["--broker-port", str(broker_port)]
    if keras_model:
        command += ["--keras-model", keras_model]
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=worker_env(), capture_output=True, text=True, check=False
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-600:]}"}
    return json.loads(lines[-1])


def standin_model(scratch: Path) -> str | None:
    """An untrained mini-Xception (same cost per predict), or None when TensorFlow is missing."""
    path = scratch / "standin.keras"
    done = subprocess.run(
        [sys.executable, "-m", "bench.baseline", "--make-model", str(path)],
        cwd=REPO_ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
        print(f"note: no baseline (cannot build a Keras model here: {reason})")
        return None
    print(
        "note: the baseline uses an untrained stand-in of the thesis's model (same layers, same cost); "
        "pass --keras-model for the trained one"
    )
    return str(path)


@contextlib.contextmanager
def local_broker(scratch: Path, wanted: bool) -> Iterator[int]:
    """A Mosquitto on a free loopback port for the realtime-broker runs (0 when not wanted or
    not installed)."""
    if not wanted:
        yield 0
        return
    from bench.harness import Broker

    try:
        broker = Broker(scratch).start()
    except RuntimeError as err:
        print(f"note: no realtime-broker runs: {err}")
        yield 0
        return
    try:
        yield broker.port
    finally:
        broker.stop()


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def prepare_clips(args: argparse.Namespace) -> tuple[list[tuple[ClipSpec, Path, Path]], str]:
    portraits = PortraitSource(resolve_faces_dir(args.faces_dir))
    clips_dir = Path(args.clips_dir).expanduser()
    prepared = []
    for size in args.sizes:
        for scene in args.scenes:
            spec = ClipSpec(scene, size, args.seconds)
            clip = ensure_clip(spec, portraits, clips_dir)
            _LOGGER.info("reference detections for %s", clip.name)
            prepared.append((spec, clip, ensure_reference(clip)))
    return prepared, portraits.name


def measure_all(
    args: argparse.Namespace,
    clips: list[tuple[ClipSpec, Path, Path]],
    keras_model: str | None,
    broker_port: int,
) -> list[dict[str, Any]]:
    # (label, worker pipeline, settings changed): the plain edge pipeline, then each variant
    # of it, so the runs compared are neighbours in time on the same clip.
    pipelines: list[tuple[str, str, list[str]]] = []
    for pipeline in args.pipelines:
        if pipeline == "baseline" and not keras_model:
            continue
        pipelines.append((pipeline, pipeline, args.set if pipeline == "fast" else []))
        if pipeline == "fast":
            pipelines += [
                (f"fast:{name}", "fast", [*args.set, *settings]) for name, settings in args.variant.items()
            ]
    modes = [m for m in args.modes if m != "realtime-broker" or broker_port]
    plan = [(spec, clip, ref, p, m) for spec, clip, ref in clips for p in pipelines for m in modes]
    runs = []
    for number, (spec, clip, ref, (label, pipeline, overrides), mode) in enumerate(plan, 1):
        result = run_worker(
            clip, ref, pipeline, mode, broker_port if mode == "realtime-broker" else 0, keras_model, overrides
        )
        # the worker names the pipeline it ran (fast); the label says which variant of it
        result = {"scene": spec.scene, "size": spec.size_name, "mode": mode, **result, "pipeline": label}
        runs.append(result)
        summary = result.get("error") or (
            f"{result['fps']} fps, {result['cpu_ms_per_frame']} CPU ms/frame, "
            f"{result['cpu_percent_one_core']} % of a core, "
            f"{result['frames_skipped']} skipped, {result.get('frames_passed_over_idle', 0)} passed over idle"
        )
        _LOGGER.info(
            "[%d/%d] %s %s %s %s: %s", number, len(plan), spec.scene, spec.size_name, label, mode, summary
        )
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out) if args.out else REPO_ROOT / DEFAULT_OUT
    started, load_before = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), _load()
    clips, faces = prepare_clips(args)
    with tempfile.TemporaryDirectory(prefix="fer-bench-") as scratch:
        keras_model = args.keras_model
        if "baseline" in args.pipelines and not keras_model:
            keras_model = standin_model(Path(scratch))
        with local_broker(Path(scratch), "realtime-broker" in args.modes) as port:
            runs = measure_all(args, clips, keras_model, port)
    meta = {
        "started": started,
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_before": load_before,
        "load_after": _load(),
        "note": args.note,
        "seconds": args.seconds,
        "faces": faces,
        "overrides": args.set,
        "variants": args.variant,
        "keras_model": (
            Path(args.keras_model).name
            if args.keras_model
            else "untrained stand-in"
            if keras_model
            else "none"
        ),
    }
    speedups = report.speedups(runs)
    result = {
        "meta": meta,
        "runs": runs,
        "speedups": speedups,
        "checks": report.target_checks(runs, speedups),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(report.render(result))
    print(f"\nfigures written to {out}")
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
