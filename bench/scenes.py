"""The benchmark's clips: scripted kiosk scenes, rendered once and cached.

- ``one_face``: one person stays in front of the kiosk, swaying slightly;
- ``several_faces``: three people at once;
- ``enter_leave``: people walk in, stay and walk out one after another, with empty gaps;
- ``no_face``: the empty scene; for about half of it something moves or the light changes
  (motion triggers);
- ``walk_behind``: nobody at the kiosk; someone walks to and fro behind the counter, their
  back to the camera, for the whole clip;
- ``flicker``: nobody at the kiosk; a failing ceiling light flickers for the whole clip;
- ``walk_behind_arrival``, ``flicker_arrival``: the same, while two customers, one after
  the other, walk up to the kiosk (is a newcomer found as fast while something else moves?).

Faces are cut from the Yale photographs at run time (never copied into the repository); the
astronaut photograph stands in when that folder is absent. A clip's file name says what it
was made from, so clips of different sources or scripts never mix in the cache.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bench.clips import (
    Appearance,
    add_noise,
    astronaut_portrait,
    background,
    open_writer,
    paste,
    portrait_from_photo,
    render_clip,
)

_LOGGER = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
# Relative to the repository root: the shared data sets live beside the repository.
DEFAULT_FACES_DIR = Path("..") / "shared" / "datasets" / "yale-faces"
DEFAULT_CLIPS_DIR = Path("~/.cache/fer-kiosk/bench-clips")

SCENES = (
    "one_face",
    "several_faces",
    "enter_leave",
    "no_face",
    "walk_behind",
    "flicker",
    "walk_behind_arrival",
    "flicker_arrival",
)
SIZES = ((640, 480), (1280, 720))
# Bump when a scene's script changes: cached clips of the old script are then not reused.
SCRIPT_VERSION = 1
# Rotated per person so the clips mix glasses, expressions and side lighting.
CONDITIONS = ("noglasses", "glasses", "centerlight", "wink", "sleepy", "leftlight", "rightlight")
# First Yale subject per scene: each scene shows different people.
FIRST_SUBJECT = {
    "one_face": 0,
    "several_faces": 1,
    "enter_leave": 4,
    "walk_behind_arrival": 7,
    "flicker_arrival": 9,
}
PEOPLE = {"one_face": 1, "several_faces": 3, "enter_leave": 3, "walk_behind_arrival": 2, "flicker_arrival": 2}
# What goes on behind the customers in the scenes that have something going on.
BACKDROPS = {
    "walk_behind": "walker",
    "walk_behind_arrival": "walker",
    "flicker": "flicker",
    "flicker_arrival": "flicker",
}


@dataclass(frozen=True)
class ClipSpec:
    scene: str
    size: tuple[int, int]
    seconds: float
    fps: float = 30.0

    @property
    def frames(self) -> int:
        return max(1, round(self.seconds * self.fps))

    @property
    def size_name(self) -> str:
        return f"{self.size[0]}x{self.size[1]}"

    def file_name(self, faces_source: str) -> str:
        return f"{self.scene}_{self.size_name}_{self.seconds:g}s_{faces_source}_v{SCRIPT_VERSION}.avi"


class PortraitSource:
    """Head-and-shoulders portraits of distinct people: Yale photographs, or the astronaut."""

    def __init__(self, faces_dir: Path | None):
        self.photos: dict[str, list[Path]] = {}
        if faces_dir is not None and faces_dir.is_dir():
            for photo in sorted(faces_dir.glob("subject*_*.png")):
                self.photos.setdefault(photo.stem.split("_")[0], []).append(photo)
        self.name = "yale" if self.photos else "astronaut"

    def people(self, count: int, first: int) -> list[np.ndarray]:
        if not self.photos:
            return [astronaut_portrait()] * count
        subjects = sorted(self.photos)
        return [self._portrait(subjects[(first + k) % len(subjects)], first + k) for k in range(count)]

    def _portrait(self, subject: str, rotation: int) -> np.ndarray:
        by_condition = {p.stem.split("_", 1)[1]: p for p in self.photos[subject]}
        order = CONDITIONS[rotation % len(CONDITIONS) :] + CONDITIONS[: rotation % len(CONDITIONS)]
        for condition in order:
            if condition in by_condition:
                try:
                    return portrait_from_photo(by_condition[condition])
                except ValueError:
                    continue  # the cascade finds no face in this one: try the next photo
        raise ValueError(f"no usable photograph of {subject}")


def resolve_faces_dir(option: str | None) -> Path | None:
    """The Yale folder: the option (relative to the working directory) or the default
    (relative to the repository root); None, with a printed note, when it is absent."""
    path = Path(option).expanduser() if option else REPO_ROOT / DEFAULT_FACES_DIR
    if path.is_dir():
        return path.resolve()
    print(f"note: face photographs not found at {path}; clips use scikit-image's astronaut instead")
    return None


def _segments(
    portrait: np.ndarray, waypoints: list[tuple[int, tuple[float, float]]], height: float
) -> list[Appearance]:
    """One person on screen along a path of (frame, top-left) waypoints, without a break."""
    return [
        Appearance(portrait, start, end, start_xy, end_xy, height)
        for (start, start_xy), (end, end_xy) in itertools.pairwise(waypoints)
        if end > start
    ]


def _one_face(people: list[np.ndarray], n: int) -> list[Appearance]:
    path = [(0, (0.28, 0.18)), (n // 3, (0.33, 0.21)), (2 * n // 3, (0.27, 0.2)), (n, (0.31, 0.17))]
    return _segments(people[0], path, 0.55)


def _several_faces(people: list[np.ndarray], n: int) -> list[Appearance]:
    appearances = []
    for k, portrait in enumerate(people):
        x, drift = 0.01 + 0.34 * k, 0.01 if k % 2 else -0.01
        appearances += _segments(
            portrait, [(0, (x, 0.3 + 0.03 * k)), (n, (x + drift, 0.28 + 0.03 * k))], 0.33
        )
    return appearances


def _enter_leave(people: list[np.ndarray], n: int) -> list[Appearance]:
    """Each visit: walk in from the left edge, stay, walk out to the right; nobody in between."""
    gap = n // 10
    visit = (n - gap * (len(people) + 1)) // len(people)
    appearances = []
    for k, portrait in enumerate(people):
        start = gap + k * (visit + gap)
        walk = max(1, visit // 5)
        path = [
            (start, (-0.45, 0.22)),
            (start + walk, (0.25, 0.2)),
            (start + visit - walk, (0.32, 0.22)),
            (start + visit, (1.0, 0.2)),
        ]
        appearances += _segments(portrait, path, 0.5)
    return appearances


def _window(t: float, start: float, end: float) -> float | None:
    """Progress 0..1 through the part [start, end) of the clip, None outside it."""
    return (t - start) / (end - start) if start <= t < end else None


def render_empty_scene(path: Path, frames: int, size: tuple[int, int], fps: float, seed: int = 0) -> Path:
    """Nobody there, but now and then something changes: a box slides across (15-45 % of the
    clip), a ball bounces (50-60 %), the light dims by a quarter (70-78 %); still otherwise."""
    width, height = size
    writer = open_writer(path, size, fps)
    rng = np.random.default_rng(seed)
    scene = background(width, height, seed)
    for index in range(frames):
        t = index / max(frames - 1, 1)
        frame = scene.copy()
        slide = _window(t, 0.15, 0.45)
        if slide is not None:
            x = int((-0.2 + 1.2 * slide) * width)
            cv2.rectangle(
                frame, (x, int(0.55 * height)), (x + width // 5, int(0.8 * height)), (90, 70, 160), -1
            )
        bounce = _window(t, 0.5, 0.6)
        ball_y = (
            int(height * (0.3 + 0.15 * abs(np.sin(2 * np.pi * bounce))))
            if bounce is not None
            else int(0.3 * height)
        )
        cv2.circle(frame, (int(0.75 * width), ball_y), height // 16, (40, 200, 220), -1)
        dim = _window(t, 0.7, 0.78)
        gain = 1.0 - 0.25 * (dim if dim is not None else float(t >= 0.78))
        writer.write(add_noise(cv2.convertScaleAbs(frame, alpha=gain), rng))
    writer.release()
    return path


def _arrivals(people: list[np.ndarray], n: int) -> list[Appearance]:
    """Two visits: the first customer walks in at 15 % of the clip and out at 50 %, the
    second walks in at 60 % and stays to the end."""
    first, second = people
    walk = max(1, n // 15)
    return _segments(
        first,
        [
            (int(0.15 * n), (-0.45, 0.22)),
            (int(0.15 * n) + walk, (0.25, 0.2)),
            (int(0.5 * n) - walk, (0.3, 0.22)),
            (int(0.5 * n), (1.0, 0.2)),
        ],
        0.5,
    ) + _segments(
        second, [(int(0.6 * n), (1.0, 0.2)), (int(0.6 * n) + walk, (0.4, 0.21)), (n, (0.36, 0.2))], 0.5
    )


def draw_walker(frame: np.ndarray, t: float) -> None:
    """Someone behind the counter, their back to the camera (no face to find), walking to
    and fro across the frame: across in 3 s, out of view at each end; ``t`` in seconds.
    The counter's top hides them from the hips down."""
    height, width = frame.shape[:2]
    phase = (t / 6.0) % 1.0
    cx = int((-0.15 + 1.3 * (2 * phase if phase < 0.5 else 2 - 2 * phase)) * width)
    bob = int(0.006 * height * np.sin(2 * np.pi * 2.0 * t))
    swing = int(0.02 * height * np.sin(2 * np.pi * 1.0 * t))
    top, shoulders = int(0.16 * height) + bob, int(0.3 * height) + bob
    half = int(0.1 * height)
    for side in (-1, 1):  # arms
        arm_x = cx + side * (half + int(0.015 * height))
        cv2.line(
            frame,
            (arm_x, shoulders + int(0.02 * height)),
            (arm_x + side * swing, int(0.58 * height)),
            (70, 60, 110),
            int(0.035 * height),
        )
    cv2.rectangle(frame, (cx - half, shoulders), (cx + half, height), (150, 90, 60), -1)  # shirt
    for y in range(shoulders, height, max(1, int(0.04 * height))):  # its stripes
        cv2.line(frame, (cx - half, y), (cx + half, y), (120, 70, 45), max(1, int(0.008 * height)))
    cv2.rectangle(
        frame,
        (cx - int(0.03 * height), top + int(0.1 * height)),
        (cx + int(0.03 * height), shoulders),
        (120, 150, 190),
        -1,
    )  # neck
    cv2.ellipse(
        frame,
        (cx, top + int(0.065 * height)),
        (int(0.05 * height), int(0.07 * height)),
        0,
        0,
        360,
        (35, 45, 60),
        -1,
    )  # hair
    counter = int(0.62 * height)
    cv2.rectangle(frame, (0, counter), (width, height), (70, 110, 150), -1)
    cv2.line(frame, (0, counter), (width, counter), (40, 70, 100), max(2, int(0.01 * height)))


def flicker_levels(frames: int, seed: int = 0) -> np.ndarray:
    """A failing fluorescent tube, per frame: full light, or on about a third of the frames
    (in runs, as such tubes do) a dip to 55-85 %."""
    rng = np.random.default_rng(seed)
    levels = np.ones(frames)
    index = 0
    while index < frames:
        run = int(rng.integers(1, 6))
        if rng.random() < 0.35:
            levels[index : index + run] = rng.uniform(0.55, 0.85, size=len(levels[index : index + run]))
        index += run
    return levels


def light_falloff(height: int) -> np.ndarray:
    """How much of a dip of the ceiling light each row gets (1.2 times the dip at the top,
    0.8 at the bottom), shaped to multiply a (height, width, 3) frame."""
    return (1.2 - 0.4 * np.arange(height) / max(height - 1, 1))[:, None, None]


def render_busy_scene(
    path: Path,
    appearances: list[Appearance],
    frames: int,
    size: tuple[int, int],
    fps: float,
    backdrop: str,
    seed: int = 0,
) -> Path:
    """Customers (``appearances``) in front of a scene with something going on the whole
    time: ``walker`` (someone walking behind the counter) or ``flicker`` (the light)."""
    width, height = size
    writer = open_writer(path, size, fps)
    rng = np.random.default_rng(seed)
    scene = background(width, height, seed)
    levels = flicker_levels(frames, seed) if backdrop == "flicker" else np.ones(frames)
    falloff = light_falloff(height).astype(np.float32)
    for index in range(frames):
        frame = scene.copy()
        if backdrop == "walker":
            draw_walker(frame, index / fps)
        for appearance in appearances:
            box = appearance.position(index, width, height)
            if box is not None:
                paste(frame, appearance.portrait, box)
        if levels[index] != 1.0:
            gain = 1.0 - (1.0 - levels[index]) * falloff
            frame = np.clip(frame * gain, 0, 255).astype(np.uint8)
        writer.write(add_noise(frame, rng))
    writer.release()
    return path


def script(spec: ClipSpec, portraits: PortraitSource) -> list[Appearance]:
    if spec.scene not in PEOPLE:
        return []
    scripts = {
        "one_face": _one_face,
        "several_faces": _several_faces,
        "enter_leave": _enter_leave,
        "walk_behind_arrival": _arrivals,
        "flicker_arrival": _arrivals,
    }
    return scripts[spec.scene](portraits.people(PEOPLE[spec.scene], FIRST_SUBJECT[spec.scene]), spec.frames)


def people_boxes(spec: ClipSpec, appearances: list[Appearance]) -> list[list[tuple[int, int, int, int]]]:
    """Per frame, the box (x, y, w, h) of each person's cut-out on screen: the ground truth."""
    width, height = spec.size
    return [
        [box for a in appearances if (box := a.position(index, width, height)) is not None]
        for index in range(spec.frames)
    ]


def people_path(clip: Path) -> Path:
    return clip.with_suffix(".people.json")


def ensure_clip(spec: ClipSpec, portraits: PortraitSource, clips_dir: Path) -> Path:
    """The cached clip for ``spec`` and, beside it, where its people are (rendered first if missing)."""
    clips_dir.mkdir(parents=True, exist_ok=True)
    path = clips_dir / spec.file_name(portraits.name)
    if path.is_file() and people_path(path).is_file():
        return path
    appearances = script(spec, portraits)
    if not path.is_file():
        _LOGGER.info("rendering %s", path.name)
        # written under another name first: an interrupted render never passes for a cached clip
        partial = path.with_name(path.stem + ".partial.avi")
        if spec.scene == "no_face":
            render_empty_scene(partial, spec.frames, spec.size, spec.fps)
        elif spec.scene in BACKDROPS:
            render_busy_scene(partial, appearances, spec.frames, spec.size, spec.fps, BACKDROPS[spec.scene])
        else:
            render_clip(partial, appearances, spec.frames, spec.size, spec.fps)
        partial.replace(path)
    people_path(path).write_text(json.dumps(people_boxes(spec, appearances)))
    return path
