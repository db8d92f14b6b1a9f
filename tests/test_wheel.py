"""The product as users get it: the wheel built with `python -m build`, installed into a
fresh virtual environment outside the checkout, and run from there.

An editable install hides packaging mistakes (a model the wheel does not carry, a module
left out); these tests run nothing from the checkout. They need network access or a pip
cache for the wheel's dependencies, like any `pip install`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import tomllib

from bench.clips import one_visit_clip
from bench.harness import start_daemon, stop_daemon, wait_until, write_config
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _clean_env() -> dict[str, str]:
    """The environment of a user's shell: nothing points back into the checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """bin/ of a fresh venv with the built wheel (base install: no extras) installed."""
    work = tmp_path_factory.mktemp("wheel")
    dist = work / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    wheels = list(dist.glob("fer_kiosk-*.whl"))
    assert len(wheels) == 1, list(dist.iterdir())
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True, timeout=300)
    pip = subprocess.run(
        [str(work / "venv/bin/python"), "-m", "pip", "install", "-q", str(wheels[0])],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=work,
        env=_clean_env(),
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    return work / "venv/bin"


def run(bin_dir: Path, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=_clean_env(),
    )


def test_version(installed, tmp_path):
    result = run(installed, "fer-kiosk", "--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"fer-kiosk {VERSION}", result


def test_check_on_the_shipped_config_uses_the_model_inside_the_package(installed, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text((ROOT / "config.yaml").read_text())
    result = run(installed, "fer-kiosk", "check", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"fer-kiosk {VERSION}" in result.stdout
    model_line = next(line for line in result.stdout.splitlines() if "model:" in line)
    assert "site-packages/edge/models/emotion_int8.tflite" in model_line
    assert str(ROOT) not in result.stdout


def test_classify_finds_the_astronauts_happy_face(installed, tmp_path):
    from skimage import data

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    result = run(installed, "fer-kiosk", "classify", str(photo), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(answer["faces"]) == 1, answer
    assert answer["faces"][0]["emotion"] == "happy", answer


@pytest.mark.parametrize("machine", ["x86_64", "aarch64", "armv7l", "armv8l", "armv6l"])
def test_the_wheel_carries_each_platforms_dependency_set(installed, machine):
    """What pip on a Raspberry Pi reads is the wheel's Requires-Dist, not pyproject.toml: the
    same set for every machine (32-bit ARM: tflite-runtime 2.14, numpy<2, OpenCV < 4.12)."""
    from email.parser import Parser

    from tests.platforms import requirements_for, select

    (metadata,) = installed.parent.glob("lib/python*/site-packages/fer_kiosk-*.dist-info/METADATA")
    requires = Parser().parsestr(metadata.read_text()).get_all("Requires-Dist")
    assert sorted(map(str, select(requires, machine))) == sorted(map(str, requirements_for(machine)))


def test_an_unreadable_photo_is_named_and_exits_1(installed, tmp_path):
    bad = tmp_path / "not-a-photo.jpg"
    bad.write_bytes(b"plain text")
    result = run(installed, "fer-kiosk", "classify", str(bad), cwd=tmp_path)
    assert result.returncode == 1 and "not-a-photo.jpg" in result.stderr


@pytest.mark.parametrize("tool", ["fer-kiosk-train", "fer-kiosk-convert"])
def test_training_tools_without_the_train_extra_say_what_to_install(installed, tmp_path, tool):
    helped = run(installed, tool, "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "--data" in helped.stdout, helped.stderr
    used = run(installed, tool, "--data", "x.csv", "--run-dir", "r", "--keras", "m.keras", cwd=tmp_path)
    if tool == "fer-kiosk-train":
        used = run(installed, tool, "--data", "x.csv", "--run-dir", "r", cwd=tmp_path)
    assert used.returncode == 2, used.stdout + used.stderr
    lines = used.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'fer-kiosk[train]'" in lines[0], used.stderr


def test_run_on_a_recording_publishes_events(installed, tmp_path, broker, subscribe):
    """`fer-kiosk run --source CLIP` from the installed wheel: a visit reaches the broker."""
    clip = one_visit_clip(tmp_path / "visit.avi")
    config = write_config(
        tmp_path / "config.yaml",
        broker.port,
        "wheel-kiosk",
        mqtt={"stats_interval_seconds": 1},
        spool={"path": str(tmp_path / "spool")},
    )
    sub = subscribe(broker.port, "fer-kiosk/wheel-kiosk/#")
    log = tmp_path / "daemon.log"
    daemon = start_daemon(
        config,
        log,
        command=[str(installed / "fer-kiosk")],
        args=["--source", str(clip)],
        base_env=_clean_env(),
        cwd=tmp_path,
    )
    try:
        assert sub.wait_for(lambda: any(e["type"] == "end" for e in sub.json_on("/events")), 60), (
            log.read_text()[-3000:]
        )
        assert sub.wait_for(lambda: sub.json_on("/stats"), 10), log.read_text()[-3000:]
    finally:
        code = stop_daemon(daemon, 20)
    assert code == 0, log.read_text()[-3000:]
    kinds = [e["type"] for e in sub.json_on("/events")]
    assert kinds[0] == "new" and kinds[-1] == "end"
    assert {s["version"] for s in sub.json_on("/stats")} == {VERSION}


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_quickstart_sets_up_the_broker_and_runs_the_daemon(tmp_path, subscribe):
    """README's first command, on a recording: it starts Mosquitto on localhost:1883 when no
    broker listens there, installs the package (not editable) and runs the daemon."""
    import signal

    had_broker = _listening(1883)
    clip = one_visit_clip(tmp_path / "visit.avi")
    log = tmp_path / "quickstart.log"
    env = {
        **_clean_env(),
        "FER_KIOSK_VENV": str(tmp_path / "venv"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    with log.open("w") as out:
        quickstart = subprocess.Popen(
            ["bash", str(ROOT / "deploy/quickstart.sh"), "--source", str(clip)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert wait_until(lambda: _listening(1883), 300), log.read_text()[-3000:]
        sub = subscribe(1883, "fer-kiosk/+/events")
        assert sub.wait_for(lambda: any(e["type"] == "end" for e in sub.json_on("/events")), 300), (
            log.read_text()[-3000:]
        )
    finally:
        os.killpg(quickstart.pid, signal.SIGTERM)
        code = quickstart.wait(30)
        if not had_broker:  # stop the Mosquitto the script started for this test
            subprocess.run(
                ["pkill", "-f", "^/usr/sbin/mosquitto -d -p 1883$|^mosquitto -d -p 1883$"], check=False
            )
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "quickstart: installing fer-kiosk into" in text and f"fer-kiosk {VERSION}" in text
    assert ("starting Mosquitto" in text) != had_broker, text[:2000]
