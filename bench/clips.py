"""Synthetic clips made from real face photographs, for tests and benchmarks.

A clip is a scripted scene: textured synthetic backgrounds, and faces (cut from real
photographs) that enter, stay and leave. The script is known, so the ground truth is too:
which frames show which face, and where.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class Appearance:
    """One face on screen from ``start`` to ``end`` (frame indices), moving between two points."""

    portrait: np.ndarray  # BGR head-and-shoulders cut-out
    start: int
    end: int
    start_xy: tuple[float, float]  # top-left corner, as fractions of the frame size
    end_xy: tuple[float, float]
    height_fraction: float = 0.5  # portrait height as a fraction of the frame height

    def position(self, frame: int, width: int, height: int) -> tuple[int, int, int, int] | None:
        if not self.start <= frame < self.end:
            return None
        t = (frame - self.start) / max(self.end - self.start - 1, 1)
        x = self.start_xy[0] + (self.end_xy[0] - self.start_xy[0]) * t
        y = self.start_xy[1] + (self.end_xy[1] - self.start_xy[1]) * t
        h = int(height * self.height_fraction)
        w = int(h * self.portrait.shape[1] / self.portrait.shape[0])
        return int(x * width), int(y * height), w, h


def background(width: int, height: int, seed: int) -> np.ndarray:
    """A textured synthetic scene: gradient wall, a few shapes, sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(60, 180, 3)
    tilt = rng.uniform(-0.08, 0.08, 3)
    image = np.stack([base[c] + tilt[c] * (xx + yy) for c in range(3)], axis=-1)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(6):
        color = tuple(int(v) for v in rng.integers(20, 235, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            cv2.rectangle(
                image, (x, y), (x + int(rng.integers(30, 200)), y + int(rng.integers(30, 200))), color, -1
            )
        else:
            cv2.circle(image, (x, y), int(rng.integers(15, 80)), color, -1)
    return image


def add_noise(frame: np.ndarray, rng: np.random.Generator, sigma: float = 3.0) -> np.ndarray:
    noise = rng.normal(0, sigma, frame.shape)
    return np.clip(frame.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def paste(frame: np.ndarray, portrait: np.ndarray, box: tuple[int, int, int, int]) -> None:
    x, y, w, h = box
    resized = cv2.resize(portrait, (w, h), interpolation=cv2.INTER_AREA)
    fh, fw = frame.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, fw), min(y + h, fh)
    if x1 <= x0 or y1 <= y0:
        return
    frame[y0:y1, x0:x1] = resized[y0 - y : y1 - y, x0 - x : x1 - x]


def astronaut_portrait() -> np.ndarray:
    """Head and shoulders of scikit-image's astronaut photograph (a real smiling face), BGR."""
    from skimage import data

    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    return image[20:300, 110:340].copy()


def portrait_from_photo(path: str | Path, cascade_path: str | None = None) -> np.ndarray:
    """A head-and-shoulders cut-out around the largest face the cascade finds in a photo."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read {path}")
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    cascade = cv2.CascadeClassifier(
        cascade_path or str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml")
    )
    faces = cascade.detectMultiScale(gray, 1.1, 5, minSize=(30, 30))
    if len(faces) == 0:
        raise ValueError(f"no face found in {path}")
    x, y, w, h = max(faces, key=lambda b: b[2] * b[3])
    x0, y0 = max(0, x - w // 2), max(0, y - h // 2)
    x1, y1 = min(image.shape[1], x + w + w // 2), min(image.shape[0], y + h + h)
    return image[y0:y1, x0:x1].copy()


def open_writer(path: Path, size: tuple[int, int], fps: float) -> cv2.VideoWriter:
    """An MJPG .avi writer: a codec every OpenCV build can write and read back."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}")
    return writer


def render_clip(
    path: str | Path,
    appearances: Sequence[Appearance],
    frames: int,
    size: tuple[int, int] = (640, 480),
    fps: float = 30.0,
    seed: int = 0,
    scene_change_every: int = 0,
) -> Path:
    """Writes the clip (MJPG in .avi: readable by every OpenCV build) and returns its path."""
    path = Path(path)
    width, height = size
    writer = open_writer(path, size, fps)
    rng = np.random.default_rng(seed)
    scene = background(width, height, seed)
    for index in range(frames):
        if scene_change_every and index and index % scene_change_every == 0:
            scene = background(width, height, seed + index)
        frame = scene.copy()
        for appearance in appearances:
            box = appearance.position(index, width, height)
            if box is not None:
                paste(frame, appearance.portrait, box)
        writer.write(add_noise(frame, rng))
    writer.release()
    return path


def one_visit_clip(path: str | Path, fps: float = 30.0, size: tuple[int, int] = (640, 480)) -> Path:
    """The astronaut walks in, stays about 3 s, walks out; 1.5 s of empty scene before and after."""
    before, visit, after = int(1.5 * fps), int(3.5 * fps), int(2.0 * fps)
    face = Appearance(astronaut_portrait(), before, before + visit, (0.15, 0.2), (0.45, 0.25), 0.6)
    return render_clip(path, [face], before + visit + after, size, fps)


def visits_clip(
    path: str | Path,
    visits: int,
    visit_seconds: float = 2.5,
    gap_seconds: float = 1.5,
    fps: float = 30.0,
    size: tuple[int, int] = (640, 480),
) -> Path:
    """``visits`` separate visits of the astronaut, each followed by an empty scene."""
    portrait = astronaut_portrait()
    on, off = int(visit_seconds * fps), int(gap_seconds * fps)
    appearances = [
        Appearance(
            portrait,
            off + i * (on + off),
            off + i * (on + off) + on,
            (0.2 + 0.05 * (i % 3), 0.2),
            (0.4, 0.25),
            0.6,
        )
        for i in range(visits)
    ]
    return render_clip(path, appearances, off + visits * (on + off), size, fps)
