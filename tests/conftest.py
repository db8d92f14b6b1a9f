"""Shared fixtures. Nothing here comes from FER2013: data sets are generated.

Tests that need FER2013 take its path from FER2013_PATH (the CSV or the image-folder
root) and skip, with that reason, when it is not set.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.harness import Broker, Subscriber, start_daemon, stop_daemon, wait_until  # noqa: F401
from edge.contract import EMOTIONS

ROOT = Path(__file__).resolve().parent.parent


def synthetic_faces(n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 48x48 'faces': each class is a bright bar at its own height, plus noise."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(len(EMOTIONS)):
        for _ in range(n_per_class):
            image = rng.integers(40, 90, (48, 48)).astype(np.uint8)
            row = 4 + label * 6
            image[row : row + 4, 6:42] = rng.integers(200, 255)
            images.append(image)
            labels.append(label)
    return np.stack(images), np.asarray(labels)


def write_fer_csv(path: Path, images: np.ndarray, labels: np.ndarray, usages: list[str]) -> Path:
    lines = ["emotion,pixels,Usage"]
    for image, label, usage in zip(images, labels, usages):
        lines.append(f"{label},{' '.join(str(v) for v in image.ravel())},{usage}")
    data = ("\n".join(lines) + "\n").encode()
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory) -> Path:
    """A FER2013-layout CSV.gz: 60 Training and 10 PublicTest faces per class."""
    train_x, train_y = synthetic_faces(60, seed=1)
    test_x, test_y = synthetic_faces(10, seed=2)
    images = np.concatenate([train_x, test_x])
    labels = np.concatenate([train_y, test_y])
    usages = ["Training"] * len(train_y) + ["PublicTest"] * len(test_y)
    return write_fer_csv(tmp_path_factory.mktemp("fer") / "synthetic.csv.gz", images, labels, usages)


@pytest.fixture(scope="session")
def fer2013_path() -> Path:
    value = os.environ.get("FER2013_PATH")
    if not value:
        pytest.skip("FER2013_PATH is not set (point it at fer2013.csv[.gz] or the image-folder root)")
    path = Path(value)
    if not path.exists():
        pytest.skip(f"FER2013_PATH={value} does not exist")
    return path


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    """scikit-image's astronaut: a real photograph of a smiling face (Eileen Collins)."""
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture
def broker(tmp_path):
    """A real Mosquitto on a free loopback port, started for this test and stopped after it."""
    instance = Broker(tmp_path).start()
    yield instance
    instance.stop()


@pytest.fixture
def subscribe():
    made = []

    def make(port: int, topic: str) -> Subscriber:
        sub = Subscriber(port, topic)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()


@pytest.fixture
def secure_broker(tmp_path):
    """A real Mosquitto with TLS and passwords (kiosk/right-pass, watcher/watch-pass)."""
    import os
    import subprocess

    from bench.harness import make_certificates

    certs = make_certificates(tmp_path)
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "kiosk", "right-pass"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "watcher", "watch-pass"], check=True)
    os.chmod(passwords, 0o600)
    extra = (
        f"password_file {passwords}\ncafile {certs['ca.crt']}\ncertfile {certs['server.crt']}\n"
        f"keyfile {certs['server.key']}\n"
    )
    instance = Broker(tmp_path, extra)
    instance.config_path.write_text(
        instance.config_path.read_text().replace("allow_anonymous true", "allow_anonymous false")
    )
    instance.start()
    yield instance, certs
    instance.stop()


@pytest.fixture
def run_daemon(tmp_path):
    """``run_daemon(config, log=None, **options)``: ``fer-kiosk run --config CONFIG`` in a
    subprocess (bench.harness.start_daemon), its output in ``log`` (default
    tmp_path/daemon.log); whatever still runs at the end of the test is stopped (SIGTERM,
    then killed), also when the test failed half-way."""
    import subprocess

    started = []

    def start(config, log=None, **options):
        process = start_daemon(config, log or tmp_path / "daemon.log", **options)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            try:
                stop_daemon(process)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
