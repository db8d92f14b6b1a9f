import logging
import os
import shutil
import time

import cv2
import numpy as np

from bench.clips import one_visit_clip
from edge.backoff import backoff_delays
from edge.capture import FrameSource, describe_source
from edge.config import CameraConfig


def test_describe_source():
    assert describe_source(0) == ("camera", 0, cv2.CAP_V4L2)
    assert describe_source("/dev/video2")[0] == "camera"
    assert describe_source("rtsp://10.0.0.2/stream")[0] == "stream"
    assert describe_source("http://cam/mjpg")[0] == "stream"
    assert describe_source("clips/a.mp4")[0] == "file"


def test_backoff_doubles_up_to_the_limit():
    delays = backoff_delays(0.5, 3.0)
    assert [next(delays) for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_shortens_each_delay_by_up_to_its_share_and_never_exceeds_the_cap():
    import random

    delays = backoff_delays(1.0, 5.0, jitter=0.25, rng=random.Random(3))
    drawn = [next(delays) for _ in range(200)]
    assert all(0.75 <= d <= 1.0 for d in drawn[:1]) and all(3.75 <= d <= 5.0 for d in drawn[10:])
    assert len({round(d, 3) for d in drawn[10:]}) > 50  # spread out, not in lockstep


class FlakyCamera:
    """A VideoCapture stand-in: opens on the 3rd attempt, then delivers 5 frames and dies."""

    attempts = 0

    def __init__(self, target, backend):
        FlakyCamera.attempts += 1
        self.frames = 5 if FlakyCamera.attempts >= 3 else -1

    def isOpened(self):
        return self.frames >= 0

    def set(self, *args):
        return True

    def get(self, prop):
        return 30.0

    def read(self):
        if self.frames <= 0:
            return False, None
        self.frames -= 1
        return True, np.zeros((48, 64, 3), np.uint8)

    def release(self):
        pass


def test_camera_that_is_missing_then_dies_is_retried_and_logged_once(caplog):
    FlakyCamera.attempts = 0
    config = CameraConfig(source=0, retry_initial_seconds=0.01, retry_max_seconds=0.05)
    with caplog.at_level(logging.INFO, logger="edge.capture"):
        source = FrameSource(config, opener=FlakyCamera).start()
        frames = []
        deadline = time.monotonic() + 5
        while len(frames) < 6 and time.monotonic() < deadline:
            frame = source.latest(0.2)
            if frame is not None:
                frames.append(frame)
        source.stop()
    assert len(frames) >= 6  # it came back after dying
    sequences = [f.sequence for f in frames]
    assert sequences == sorted(sequences)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("retrying with backoff (up to" in m for m in messages) == 1
    assert any("stopped delivering frames; retrying" in m for m in messages)
    assert source.failures >= 3


def test_latest_hands_out_newest_frame_only_once(tmp_path):
    clip = one_visit_clip(tmp_path / "c.avi", fps=30)
    source = FrameSource(CameraConfig(source=str(clip), realtime=True)).start()
    try:
        first = source.latest(5)
        time.sleep(0.5)  # the loop is slow: ~15 frames pass meanwhile
        second = source.latest(5)
        assert second.sequence - first.sequence >= 10  # no backlog: we get the newest
        assert second.monotonic > first.monotonic
    finally:
        source.stop()


def test_file_that_appears_later_is_picked_up(tmp_path):
    target = tmp_path / "later.avi"
    source = FrameSource(
        CameraConfig(source=str(target), retry_initial_seconds=0.05, retry_max_seconds=0.1)
    ).start()
    try:
        assert source.latest(0.3) is None
        shutil.copy(one_visit_clip(tmp_path / "made.avi"), target)
        assert source.latest(5) is not None
    finally:
        source.stop()


def test_unpaced_file_hands_over_every_frame(tmp_path):
    clip = one_visit_clip(tmp_path / "c.avi")
    source = FrameSource(CameraConfig(source=str(clip), realtime=False, retry_initial_seconds=5)).start()
    seen = []
    try:
        while True:
            frame = source.latest(1.0)
            if frame is None:
                break
            seen.append(frame.sequence)
    finally:
        source.stop()
    assert seen == list(range(1, 211))


def test_why_a_source_is_unavailable_names_the_cause(tmp_path):
    from edge.capture import why_unavailable

    assert "no such device (/dev/video97 does not exist" in why_unavailable("camera", 97)
    assert "no such device" in why_unavailable("camera", str(tmp_path / "video0"))
    device = tmp_path / "video1"
    device.write_bytes(b"")
    assert "does not deliver video (busy" in why_unavailable("camera", str(device))
    if os.geteuid() != 0:  # root may open anything
        device.chmod(0)
        assert "is the service user in the video group?" in why_unavailable("camera", str(device))
    assert why_unavailable("file", str(tmp_path / "missing.avi")) == "no such file"


def test_network_source_that_never_answers_times_out_and_says_so(caplog):
    """A local TCP server that accepts and never answers, as an http:// and an rtsp:// camera:
    each open gives up after camera.open_timeout_seconds, naming the source (password hidden)
    and the timeout, and is retried with backoff."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []
    threading.Thread(target=lambda: [held.append(server.accept()) for _ in iter(int, 1)], daemon=True).start()
    port = server.getsockname()[1]
    try:
        for scheme in ("http", "rtsp"):
            caplog.clear()
            url = f"{scheme}://admin:s3cret@127.0.0.1:{port}/video"
            config = CameraConfig(
                source=url, open_timeout_seconds=1.5, retry_initial_seconds=30, retry_max_seconds=30
            )
            with caplog.at_level(logging.INFO, logger="edge.capture"):
                started = time.monotonic()
                source = FrameSource(config).start()
                deadline = started + 10
                while "no answer within" not in caplog.text and time.monotonic() < deadline:
                    time.sleep(0.05)
                waited = time.monotonic() - started
                source.stop()
            masked = f"{scheme}://admin:***@127.0.0.1:{port}/video"
            assert f"stream {masked}: opening (timeout 1.5 s, camera.open_timeout_seconds)" in caplog.text
            assert (
                f"stream {masked}: no answer within 1.5 s (camera.open_timeout_seconds): is the camera up, "
                "and is this its video URL?; retrying with backoff"
            ) in caplog.text, caplog.text
            assert 1.3 <= waited <= 5, f"{scheme}: gave up after {waited:.1f} s"
            assert "s3cret" not in caplog.text
            assert source.failures == 1 and not source.connected
    finally:
        server.close()
        for conn, _ in held:
            conn.close()
