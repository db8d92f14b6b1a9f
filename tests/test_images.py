"""Bounded work per input: image sizes read from headers, damaged files named as damaged."""

from __future__ import annotations

import json
import logging
import resource
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.camera.capture import FrameSource
from edge.camera.images import ImageError, image_size, read_image
from edge.config import CameraConfig
from tests.conftest import ROOT, wait_until

LIMIT = 16_000_000


def huge_png(path: Path, side: int = 12000) -> Path:
    """A 140 KB PNG that declares side x side pixels (all black): 7.6 GB once decoded whole."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compressobj(9)
    body = b"".join(rows.compress(b"\x00" * (side + 1)) for _ in range(side)) + rows.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", body)
        + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (300, 400, 3)).astype(np.uint8)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".tiff", ".ppm", ".pgm"])
def test_header_sizes_match_what_opencv_writes(tmp_path, photo, ext):
    path = tmp_path / f"a{ext}"
    assert cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY) if ext == ".pgm" else photo)
    kind, width, height = image_size(path.read_bytes())
    assert (width, height) == (400, 300), kind
    assert read_image(path, LIMIT).shape[:2] == (300, 400)


def test_lossless_webp_header(tmp_path, photo):
    path = tmp_path / "a.webp"
    cv2.imwrite(str(path), photo, [cv2.IMWRITE_WEBP_QUALITY, 101])  # >100: lossless (VP8L)
    assert image_size(path.read_bytes())[1:] == (400, 300)


def test_huge_image_is_refused_before_decoding(tmp_path):
    path = huge_png(tmp_path / "huge.png")
    assert path.stat().st_size < 200_000
    started = time.monotonic()
    with pytest.raises(ImageError) as err:
        read_image(path, LIMIT)
    assert time.monotonic() - started < 0.5
    assert (
        err.value.reason == "PNG of 12000x12000 = 144000000 pixels, above the limit of 16000000; "
        "not decoded (raise --max-pixels to 144000000 to read it)"
    )


def test_damaged_files_are_named_damaged(tmp_path, photo):
    ok, jpeg = cv2.imencode(".jpg", photo)
    ok, png = cv2.imencode(".png", photo)
    jpeg, png = jpeg.tobytes(), png.tobytes()
    cases = {
        "half.jpg": (jpeg[: len(jpeg) // 2], "damaged JPEG (truncated: no end-of-image marker)"),
        "half.png": (png[: len(png) // 2], "damaged PNG (it does not decode"),
        "header.jpg": (jpeg[:100], "not an image fer-kiosk reads"),
        "zero.png": (
            png[:16] + struct.pack(">II", 0, 300) + png[24:],
            "damaged PNG (its header declares 0x300",
        ),
        "notes.txt": (b"hello", "not an image fer-kiosk reads (PNG, JPEG, BMP, WebP, TIFF, PNM)"),
        "empty.png": (b"", "not an image fer-kiosk reads"),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageError) as err:
            read_image(tmp_path / name, LIMIT)
        assert err.value.reason.startswith(expected), (name, err.value.reason)
    with pytest.raises(ImageError, match="cannot read"):
        read_image(tmp_path, LIMIT)  # a folder


def test_a_gif_is_refused_by_name_with_the_formats_that_are_read(tmp_path, photo):
    """OpenCV 4.11 and later read a GIF's first frame, the 32-bit Pi's OpenCV nothing: fer-kiosk
    refuses GIF everywhere, saying so (README lists the formats), not as "not an image"."""
    animated = tmp_path / "wave.gif"
    screen = struct.pack("<HHBBB", 400, 300, 0xF0, 0, 0)  # 400x300, a 2-colour global table
    animated.write_bytes(b"GIF89a" + screen + b"\x00\x00\x00\xff\xff\xff" + b"\x3b")
    with pytest.raises(ImageError) as err:
        read_image(animated, LIMIT)
    assert err.value.reason == (
        "GIF is not read by fer-kiosk: save the photo as PNG or JPEG (PNG, JPEG, BMP, WebP, TIFF, PNM)"
    )


def test_classify_refuses_huge_and_damaged_images_in_one_line_each(tmp_path, photo):
    huge = huge_png(tmp_path / "huge.png")
    ok, jpeg = cv2.imencode(".jpg", photo)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(jpeg.tobytes()[:3000])
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg.tobytes())
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "edge", "classify", str(huge), str(truncated), str(good)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [
        f"{huge}: error: PNG of 12000x12000 = 144000000 pixels, above the limit of 16000000; "
        "not decoded (raise --max-pixels to 144000000 to read it)",
        f"{truncated}: error: damaged JPEG (truncated: no end-of-image marker)",
    ], result.stderr
    assert "Traceback" not in result.stderr and "Corrupt JPEG" not in result.stderr
    assert result.stdout.strip() == f"{good}: 0 face(s)"
    assert elapsed < 30 and peak_mb < 1500, (elapsed, peak_mb)  # was 20 s and 7.6 GB
    as_json = subprocess.run(
        [sys.executable, "-m", "edge", "classify", "--json", "--max-pixels", "100000", str(good)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(as_json.stdout) == {
        "image": str(good),
        "error": "JPEG of 400x300 = 120000 pixels, above the limit of 100000; "
        "not decoded (raise --max-pixels to 120000 to read it)",
    }


def test_file_camera_refuses_an_image_or_video_above_the_limit(tmp_path, caplog):
    huge = huge_png(tmp_path / "huge.png")
    small_video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(small_video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for _ in range(5):
        writer.write(np.zeros((240, 320, 3), np.uint8))
    writer.release()
    cases = [
        (
            str(huge),
            LIMIT,
            "huge.png: PNG of 12000x12000 = 144000000 pixels, above the limit of 16000000; "
            "not decoded (raise camera.max_frame_pixels to 144000000 to read it)",
        ),
        (str(small_video), 65_536, "frames of 320x240 = 76800 pixels, above camera.max_frame_pixels (65536)"),
    ]
    for source, limit, expected in cases:
        caplog.clear()
        config = CameraConfig(
            source=source,
            width=160,
            height=120,
            max_frame_pixels=limit,
            retry_initial_seconds=0.05,
            retry_max_seconds=0.1,
        )
        with caplog.at_level(logging.WARNING, logger="edge.camera.capture"):
            frames = FrameSource(config).start()
            try:
                assert wait_until(lambda: frames.failures >= 3, 10)
                assert frames.latest(0.1) is None and not frames.connected
            finally:
                frames.stop()
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and expected in lines[0], lines
    # under the limit the same video plays
    frames = FrameSource(CameraConfig(source=str(small_video), width=160, height=120, realtime=False)).start()
    try:
        assert frames.latest(10) is not None
    finally:
        frames.stop()
