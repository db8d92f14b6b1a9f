"""``python -m bench.footprint``: what the kiosk costs before it does anything useful.

- Size on disk of a base install: a fresh virtual environment in a temporary directory,
  ``pip install`` of the project without extras (from a scratch copy of the source, so no
  build files land in the repository), then pruned by ``deploy/prune_venv.py`` as
  ``deploy/install.sh`` does; the whole venv (before and after pruning) and its site-packages.
- Time from process start to READY: the daemon (``fer-kiosk run``) started as systemd
  would start it, with NOTIFY_SOCKET pointing at a datagram socket we listen on, a clip as
  camera and a local broker; measured to the arrival of ``READY=1``.
- Peak RSS (VmHWM) and CPU of that daemon after a few seconds of the clip.

    python -m bench.footprint [--starts 3] [--run-seconds 5] [--skip-install] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import Broker, NotifySocket, start_daemon, stop_daemon, write_config
from bench.report import markdown_table
from bench.scenes import (
    DEFAULT_CLIPS_DIR,
    REPO_ROOT,
    ClipSpec,
    PortraitSource,
    ensure_clip,
    resolve_faces_dir,
)
from edge import DEFAULT_MODEL

_LOGGER = logging.getLogger(__name__)

MIB = 1024 * 1024
TARGETS = {"install_mb": 250.0, "ready_seconds": 3.0, "daemon_peak_rss_mb": 150.0}
DEFAULT_OUT = Path("bench") / "results" / "footprint.json"  # relative to the repository root
# What a build of the project needs, and nothing the build could scribble into.
SOURCE_IGNORE = shutil.ignore_patterns(
    ".git", ".venv*", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache", ".benchmarks", "results"
)


def disk_usage(path: Path) -> int:
    """Bytes of disk taken by the files under ``path`` (like ``du``; symlinks not followed)."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python*/site-packages"))


def largest_entries(directory: Path, count: int = 6) -> list[tuple[str, float]]:
    sizes = [
        (entry.name, disk_usage(entry) / MIB if entry.is_dir() else entry.lstat().st_blocks * 512 / MIB)
        for entry in directory.iterdir()
    ]
    return [(name, round(size, 1)) for name, size in sorted(sizes, key=lambda s: -s[1])[:count]]


def base_install(scratch: Path) -> tuple[Path, dict[str, Any]]:
    """A fresh venv with the project installed without extras, then pruned as
    ``deploy/install.sh`` prunes it (``deploy/prune_venv.py``); its sizes before and after."""
    source, venv = scratch / "source", scratch / "venv"
    shutil.copytree(REPO_ROOT, source, ignore=SOURCE_IGNORE)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    started = time.monotonic()
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(source),
        ],
        check=True,
    )
    seconds = time.monotonic() - started
    packages = site_packages(venv)
    as_pip_leaves_it = disk_usage(venv)
    largest_before = largest_entries(packages)
    pruned = subprocess.run(
        [str(venv / "bin" / "python"), str(REPO_ROOT / "deploy" / "prune_venv.py"), str(venv)],
        check=True,
        capture_output=True,
        text=True,
    )
    return venv, {
        "venv_mb": round(disk_usage(venv) / MIB, 1),
        "site_packages_mb": round(disk_usage(packages) / MIB, 1),
        "pip_venv_mb": round(as_pip_leaves_it / MIB, 1),
        "pruned": pruned.stdout.strip().splitlines()[-1],
        "largest_in_site_packages_mb": largest_entries(packages),
        "largest_before_pruning_mb": largest_before,
        "bundled_model_installed": any(packages.rglob(DEFAULT_MODEL.name)),
        "tensorflow_installed": (packages / "tensorflow").exists(),
        "pip_install_seconds": round(seconds, 1),
    }


@dataclass(frozen=True)
class Usage:
    peak_rss_mb: float
    cpu_seconds: float


def process_usage(pid: int) -> Usage:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return Usage(int(status["VmHWM"].split()[0]) / 1024, ticks / os.sysconf("SC_CLK_TCK"))


def daemon_config(path: Path, clip: Path, port: int, scratch: Path) -> Path:
    # the package does not carry the model: deploy/install.sh copies it and sets model.path too
    return write_config(
        path,
        port,
        "bench-footprint",
        str(clip),
        camera={"loop": True},
        model={"path": str(DEFAULT_MODEL)},
        spool={"path": str(scratch / "spool")},
    )


def one_start(
    command: list[str], env: dict[str, str], config: Path, scratch: Path, run_seconds: float, timeout: float
) -> dict[str, Any]:
    """Starts the daemon, times READY, lets it run, reads its peak RSS and CPU, stops it."""
    notify = NotifySocket(scratch / "notify.sock")
    log = scratch / "daemon.log"
    started = time.monotonic()
    process = start_daemon(config, log, command=command, base_env=env, notify=notify, cwd=scratch)
    try:
        ready = notify.wait_for("READY=1", timeout, process)
        if ready is None:
            raise RuntimeError(f"no READY=1 (exit code {process.poll()}): {log.read_text()[-800:]}")
        before = process_usage(process.pid)
        time.sleep(run_seconds)
        after = process_usage(process.pid)
    finally:
        exit_code = stop_daemon(process, 15)
        notify.close()
    return {
        "ready_seconds": round(ready - started, 3),
        "peak_rss_mb": round(after.peak_rss_mb, 1),
        "cpu_percent_one_core": round(100 * (after.cpu_seconds - before.cpu_seconds) / run_seconds, 1),
        "exit_code": exit_code,
    }


def daemon_figures(
    command: list[str], env: dict[str, str], clip: Path, scratch: Path, starts: int, run_seconds: float
) -> dict[str, Any]:
    broker = Broker(scratch).start()
    try:
        config = daemon_config(scratch / "config.yaml", clip, broker.port, scratch)
        runs = [one_start(command, env, config, scratch, run_seconds, timeout=60) for _ in range(starts)]
    finally:
        broker.stop()
    ready = [r["ready_seconds"] for r in runs]
    return {
        "ready_seconds_median": round(statistics.median(ready), 3),
        "ready_seconds_max": max(ready),
        "daemon_peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "daemon_cpu_percent_one_core": [r["cpu_percent_one_core"] for r in runs],
        "starts": runs,
    }


def checks(figures: dict[str, Any]) -> list[list[str]]:
    rows = []
    if "install" in figures:
        size = figures["install"]["venv_mb"]
        packages = figures["install"]["site_packages_mb"]
        rows.append(
            [
                f"base install <= {TARGETS['install_mb']:.0f} MB",
                f"{size} MB as deploy/install.sh leaves it (site-packages {packages} MB; "
                f"{figures['install']['pip_venv_mb']} MB as pip leaves it, before pruning)",
                "yes" if size <= TARGETS["install_mb"] else "**NO**",
            ]
        )
    daemon = figures["daemon"]
    rows.append(
        [
            f"start to READY <= {TARGETS['ready_seconds']:.0f} s",
            f"median {daemon['ready_seconds_median']} s, max {daemon['ready_seconds_max']} s",
            "yes" if daemon["ready_seconds_max"] <= TARGETS["ready_seconds"] else "**NO**",
        ]
    )
    rows.append(
        [
            f"daemon peak RSS <= {TARGETS['daemon_peak_rss_mb']:.0f} MB",
            f"{daemon['daemon_peak_rss_mb']} MB",
            "yes" if daemon["daemon_peak_rss_mb"] <= TARGETS["daemon_peak_rss_mb"] else "**NO**",
        ]
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.footprint", description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3, help="daemon starts to time (default 3)")
    parser.add_argument("--run-seconds", type=float, default=5.0, help="clip seconds before reading peak RSS")
    parser.add_argument(
        "--skip-install",
        action="store_true",
        help="no fresh venv: run the daemon from this environment (not a base install)",
    )
    parser.add_argument("--faces-dir", help="Yale face photographs (as for python -m bench)")
    parser.add_argument("--clips-dir", default=str(DEFAULT_CLIPS_DIR))
    parser.add_argument("--out", help=f"results JSON (default: {DEFAULT_OUT} in the repository)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    clip = ensure_clip(
        ClipSpec("one_face", (640, 480), 10.0),
        PortraitSource(resolve_faces_dir(args.faces_dir)),
        Path(args.clips_dir).expanduser(),
    )
    figures: dict[str, Any] = {"load_before": " ".join(f"{v:.2f}" for v in os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="fer-footprint-") as tmp:
        scratch = Path(tmp)
        env = dict(os.environ)
        if args.skip_install:
            command = [sys.executable, "-m", "edge"]
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
            figures["daemon_environment"] = "this environment (--skip-install)"
        else:
            _LOGGER.info("installing the project into a fresh venv (no extras)...")
            venv, figures["install"] = base_install(scratch)
            command = [str(venv / "bin" / "fer-kiosk")]
            figures["daemon_environment"] = "fresh base install, pruned as deploy/install.sh does"
        _LOGGER.info("starting the daemon %d times...", args.starts)
        figures["daemon"] = daemon_figures(command, env, clip, scratch, args.starts, args.run_seconds)
    figures["load_after"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    out = Path(args.out) if args.out else REPO_ROOT / DEFAULT_OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=1))
    print(
        f"footprint (load average {figures['load_before']} before / {figures['load_after']} after), "
        f"daemon from {figures['daemon_environment']}"
    )
    print(markdown_table(["target", "measured", "met"], checks(figures)))
    if "install" in figures:
        print(
            "largest in site-packages (MB):",
            ", ".join(f"{n} {s}" for n, s in figures["install"]["largest_in_site_packages_mb"]),
        )
        if not figures["install"]["bundled_model_installed"]:
            print(
                "note: the package does not contain the model (deploy/install.sh copies it beside the venv); "
                "as there, the daemon was given it through model.path"
            )
    print(f"figures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
