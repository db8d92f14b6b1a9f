"""Frames from a V4L2 camera, a video file or a stream, on their own thread.

The capture thread keeps only the newest frame: the processing loop always gets the
latest one with its timestamp, so a slow frame never builds up lag. When the source
cannot be opened, disappears or ends, the thread logs it once, retries with exponential
backoff and logs again when frames flow. Frames, not connections, mean a camera works: a
read that brings nothing for ``camera.stall_seconds`` is a stall (offline, ``no_frames``),
and the camera is opened again by a new reader. While the loop tracks nobody
(``set_idle``), only about ``camera.idle_fps`` frames a second are decoded and handed over;
the others are grabbed and passed over undecoded.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge.backoff import backoff_delays
from edge.camera.images import ImageError, check_size, image_size
from edge.camera.status import CameraStatus
from edge.config import CameraConfig

_LOGGER = logging.getLogger(__name__)

# FFmpeg prints its own lines on stderr ("[tcp @ 0x...] Connection ... failed"), in another
# format and at every retry; the capture logs one line per failure, naming the fix. OpenCV
# reads this variable when it opens its first FFmpeg capture (-8: AV_LOG_QUIET); whoever set
# it (to debug a camera, e.g. 32 for FFmpeg's info) keeps their choice.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


@dataclass(frozen=True)
class Frame:
    image: np.ndarray
    sequence: int  # increases by one per frame captured (gaps = frames the loop skipped)
    # When the frame was taken. A camera or stream: time.time() and time.monotonic() at
    # capture. A file: the start of the run plus the frame's own media time, so that a
    # recording gives the same visits, durations and alerts at any reading speed.
    wall_time: float  # for payloads
    monotonic: float  # for tracking, alerts and latency


# FFmpeg's codec tags of Motion-JPEG (as CAP_PROP_FOURCC reports them)
MOTION_JPEG_TAGS = frozenset({b"MJPG", b"mjpg", b"JPEG", b"jpeg"})
# Undecodable packets in a row after which a Motion-JPEG source counts as not delivering
CORRUPT_PACKETS_LIMIT = 30
# Where a JPEG's size (its SOF marker) must be found, after any EXIF block
JPEG_HEADER_BYTES = 1 << 16
# Readers left blocked in a camera's read (stalls) before no new one is started
MAX_ABANDONED_READERS = 4


class Capture(Protocol):
    """What FrameSource uses of a capture: cv2.VideoCapture, or a wrapper of one."""

    def isOpened(self) -> bool: ...
    def get(self, prop: int) -> float: ...
    def set(self, prop: int, value: float) -> bool: ...
    def grab(self) -> bool: ...  # the next frame, not decoded yet
    def retrieve(self) -> tuple[bool, np.ndarray | None]: ...  # the grabbed frame, decoded
    def read(self) -> tuple[bool, np.ndarray | None]: ...  # grab and retrieve
    def release(self) -> None: ...


class CaptureWrapper:
    """A capture around another one: everything but ``read`` is the inner capture's."""

    def __init__(self, capture: Capture):
        self._capture = capture

    def isOpened(self) -> bool:
        return self._capture.isOpened()

    def get(self, prop: int) -> float:
        return self._capture.get(prop)

    def set(self, prop: int, value: float) -> bool:
        return self._capture.set(prop, value)

    def grab(self) -> bool:
        return self._capture.grab()

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        return self._capture.retrieve()

    def read(self) -> tuple[bool, np.ndarray | None]:
        return self._capture.read()

    def release(self) -> None:
        self._capture.release()


class GrayJpegCapture(CaptureWrapper):
    """A Motion-JPEG video or stream whose frames come as grayscale, decoded straight from
    each frame's JPEG packet (FFmpeg's raw mode) with libjpeg asked only for the luma.

    Why: everything downstream works on grayscale. Decoding the colour and converting it
    back costs about 1.9-2.2 ms per 1280x720 frame here, the luma alone 0.9-1.0 ms: at
    30 fps that is 3 % of a core the box keeps (0.35 ms, 1 %, at 640x480). The result is
    ``cvtColor(BGR2GRAY)`` of the colour decode up to rounding (on the test clip: mean
    difference 0.7 grey levels, 99 % of pixels within 2).

    Every packet's JPEG header is read before it is decoded: a packet whose size differs
    from the stream's (or, with no stream size, is above ``max_pixels``) is never decoded,
    and neither is one OpenCV refuses; such corrupt packets are skipped, and
    ``CORRUPT_PACKETS_LIMIT`` of them in a row end the read like a lost source. EXIF
    orientation is ignored, as FFmpeg's own decoding does."""

    def __init__(self, capture: Capture, size: tuple[int, int] | None, max_pixels: int | None):
        super().__init__(capture)
        self._size = size  # (width, height) the container declares; None: unknown
        self._max_pixels = max_pixels
        self.pending: np.ndarray | None = None  # a frame decoded before the first read()
        self._grabbed: np.ndarray | None = None  # the pending frame, grabbed and not retrieved

    def grab(self) -> bool:
        """The next packet, read and not decoded yet."""
        self._grabbed, self.pending = self.pending, None  # the first frame came decoded
        return True if self._grabbed is not None else self._capture.grab()

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        """The grabbed packet decoded; when it is corrupt, the next frame that decodes (as
        ``read``)."""
        image, self._grabbed = self._grabbed, None
        if image is None:
            ok, packet = self._capture.retrieve()
            image = self.decode(packet) if ok and packet is not None else None
        return (True, image) if image is not None else self.read()

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.pending is not None:
            image, self.pending = self.pending, None
            return True, image
        for _ in range(CORRUPT_PACKETS_LIMIT):
            ok, packet = self._capture.read()
            if not ok or packet is None:
                return False, None
            image = self.decode(packet)
            if image is not None:
                return True, image
        return False, None

    def decode(self, packet: np.ndarray) -> np.ndarray | None:
        """The luma of one JPEG packet as a 2-D uint8 image; None when it is not a JPEG of
        the stream's size (or within ``max_pixels``), or does not decode."""
        if packet.dtype != np.uint8 or packet.size < 4:
            return None
        data = packet.reshape(-1)
        header = image_size(data[:JPEG_HEADER_BYTES].tobytes())
        if header is None or header[0] != "JPEG":
            return None
        size = header[1:]
        if self._size is not None and size != self._size:
            return None
        if self._max_pixels is not None and size[0] * size[1] > self._max_pixels:
            return None
        try:
            image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
        except cv2.error:
            return None
        return image if image is not None and image.shape == (size[1], size[0]) else None


def open_capture(
    target: int | str, backend: int, params: list[int] | None = None, max_pixels: int | None = None
) -> Capture:
    """``cv2.VideoCapture(target, backend[, params])``; a Motion-JPEG file or stream read
    through FFmpeg comes back as a ``GrayJpegCapture`` (grayscale frames, decoded cheaper).
    Cameras (V4L2) keep OpenCV's own conversion. A stream larger than ``max_pixels`` is
    returned undecoded, for the caller to refuse."""

    def open_plain() -> cv2.VideoCapture:
        return cv2.VideoCapture(target, backend, params) if params else cv2.VideoCapture(target, backend)

    capture = open_plain()
    if not capture.isOpened() or capture.getBackendName() != "FFMPEG":
        return capture
    tag = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little")
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if tag not in MOTION_JPEG_TAGS or (max_pixels is not None and width * height > max_pixels):
        return capture
    if not capture.set(cv2.CAP_PROP_FORMAT, -1):
        return capture
    gray = GrayJpegCapture(capture, (width, height) if width > 0 and height > 0 else None, max_pixels)
    ok, packet = capture.read()
    if not ok or packet is None:
        return gray  # nothing came yet: its next read fails like any source's, and is retried
    gray.pending = gray.decode(packet)
    if gray.pending is not None:
        return gray
    # A packet came that libjpeg cannot decode on its own (some Motion-JPEG AVIs leave out
    # the Huffman tables): this source stays with FFmpeg's colour decoding.
    capture.release()
    return open_plain()


def describe_source(source: int | str) -> tuple[str, int | str, int]:
    """(kind, what to open, OpenCV backend) for a configured source."""
    if isinstance(source, int):
        return "camera", source, cv2.CAP_V4L2
    match = re.fullmatch(r"/dev/video(\d+)", source)
    if match:
        return "camera", source, cv2.CAP_V4L2
    if re.match(r"^[a-z][a-z0-9+.-]*://", source, re.IGNORECASE):
        return "stream", source, cv2.CAP_FFMPEG
    return "file", source, cv2.CAP_ANY


def unavailable_cause(kind: str, source: int | str) -> tuple[str, str]:
    """(cause, detail) of a source that would not open, as far as the file system tells:
    the three causes an installer meets (no device, no permission, busy) need three fixes."""
    if kind == "camera":
        device = f"/dev/video{source}" if isinstance(source, int) else str(source)
        if not os.path.exists(device):
            return "not_found", f"no such device ({device} does not exist: no camera plugged in?)"
        if not os.access(device, os.R_OK | os.W_OK):
            return (
                "permission_denied",
                f"permission denied on {device} (is the service user in the video group?)",
            )
        return (
            "busy",
            f"{device} exists but does not deliver video (busy in another program, or not a capture device)",
        )
    if kind == "file" and not Path(str(source)).exists():
        return "not_found", "no such file"
    return "unreachable", "cannot be opened"


def why_unavailable(kind: str, source: int | str) -> str:
    return unavailable_cause(kind, source)[1]


class FrameSource:
    """A started thread that captures frames; ``latest()`` returns the newest unseen one."""

    def __init__(self, config: CameraConfig, opener: Callable[..., Capture] | None = None):
        self.config = config
        self.kind, self._target, self._backend = describe_source(config.source)
        self.name = config.display_name  # never the source itself: a URL may hold a password
        # OpenCV's own warnings would repeat at every retry; the reason is logged once, below.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        self._opener = opener or partial(open_capture, max_pixels=config.max_frame_pixels)
        self._lock = threading.Condition()
        self._frame: Frame | None = None
        self._taken = -1
        self._taken_frame: Frame | None = None
        # A file's timeline: where its media time 0 lies on the two clocks (set at its first
        # frame), and the media time the next play of a looping file starts at.
        self._media_origin: tuple[float, float] | None = None
        self._media_next = 0.0
        self._sequence = 0
        self._stop = threading.Event()
        # A reader that blocks inside the camera's read (a stream that keeps its connection
        # open and sends nothing, a device that hangs) cannot be interrupted: the watch thread
        # abandons it (a new generation) and starts another; the old one exits if it ever wakes.
        self._generation = 0
        self._reading_since: float | None = None  # monotonic start of the read in progress
        self._abandoned: list[threading.Thread] = []
        self._thread = self._reader(0)
        self._watch_thread = threading.Thread(target=self._watch, name="capture-watch", daemon=True)
        self.connected = False
        self.finished = False  # a file with loop: false was played to its end: no more frames
        self.status = CameraStatus(False, "starting", f"{self.kind} {self.name}: opening", time.time())
        self.failures = 0  # times the source was lost or could not be opened
        self._refused: str | None = None  # why the last open refused the source (too large)
        self._announced = False  # the stream's first open was logged
        self._idle = False  # nobody in view: frames at camera.idle_fps (set_idle)
        self.passed_over = 0  # frames grabbed and not decoded because nobody was in view

    def start(self) -> FrameSource:
        self._thread.start()
        self._watch_thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._thread.join(timeout)
        self._watch_thread.join(timeout)

    def _reader(self, generation: int) -> threading.Thread:
        return threading.Thread(target=self._run, args=(generation,), name="capture", daemon=True)

    def _current(self, generation: int) -> bool:
        """Is a reader of this generation still the one wanted?"""
        return generation == self._generation and not self._stop.is_set()

    def _watch(self) -> None:
        """Frames, not connections, mean a camera works: a read that has not returned for
        camera.stall_seconds makes the camera offline (no_frames) and a new reader opens it again."""
        stall = self.config.stall_seconds
        while not self._stop.wait(min(1.0, stall / 4)):
            since = self._reading_since
            if since is None or time.monotonic() - since < stall:
                continue
            self._reading_since = None
            self.connected = False
            self.failures += 1
            self._set_status(
                False,
                "no_frames",
                f"{self.kind} {self.name}: no frame for {stall:g} s (camera.stall_seconds); reopening",
            )
            _LOGGER.warning(
                "%s %s: no frame for %g s (camera.stall_seconds), the connection still open; reopening",
                self.kind,
                self.name,
                stall,
            )
            self._abandoned = [t for t in self._abandoned if t.is_alive()] + [self._thread]
            if len(self._abandoned) >= MAX_ABANDONED_READERS:
                _LOGGER.error(
                    "%s %s: %d readers are stuck in the camera's driver; not opening it again "
                    "until one returns",
                    self.kind,
                    self.name,
                    len(self._abandoned),
                )
                while len([t for t in self._abandoned if t.is_alive()]) >= MAX_ABANDONED_READERS:
                    if self._stop.wait(stall):
                        return
            with self._lock:
                self._generation += 1
                self._thread = self._reader(self._generation)
            self._thread.start()

    def set_idle(self, idle: bool) -> None:
        """Whether nobody is in view (the loop tracks no face): a live source then decodes
        and hands over only about ``camera.idle_fps`` frames a second, and passes over the
        others undecoded (their sequence numbers are skipped). Frames come at the camera's
        full rate again from the next one after ``set_idle(False)``. An unpaced file
        (``camera.realtime: false``) hands over every frame all the same."""
        self._idle = idle

    def _idle_gap(self) -> float:
        """Seconds between the frames decoded while nobody is in view (0: every frame).
        Three quarters of the idle period: at 30 fps and 15 idle fps every other frame
        (a decoded frame 67 ms after the last, 17 ms of jitter either way) whatever fps
        the source reports (a stream may say 90000)."""
        idle_fps = self.config.idle_fps
        if idle_fps <= 0 or (self.kind == "file" and not self.config.realtime):
            return 0.0
        return 0.75 / idle_fps

    def latest(self, timeout: float) -> Frame | None:
        """The newest frame not yet returned, waiting up to ``timeout`` s for one."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._frame is None or self._frame.sequence == self._taken:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return None
                self._lock.wait(remaining)
            self._taken = self._frame.sequence
            self._taken_frame = self._frame
            self._lock.notify_all()  # an unpaced file's reader waits for the hand-over
            return self._frame

    def clock(self) -> float:
        """Now, for tracking and alerts: a file's time is the media time of the last frame
        handed out (it moves only as frames are processed, at whatever speed); a camera's
        and a stream's is time.monotonic()."""
        frame = self._taken_frame
        return frame.monotonic if self.kind == "file" and frame is not None else time.monotonic()

    def wall_clock(self) -> float:
        """Now, for payloads, on the same timeline as ``clock``."""
        frame = self._taken_frame
        return frame.wall_time if self.kind == "file" and frame is not None else time.time()

    def _too_large(self, width: float, height: float) -> str | None:
        limit = self.config.max_frame_pixels
        if width * height > limit:
            return (
                f"frames of {int(width)}x{int(height)} = {int(width * height)} pixels, above "
                f"camera.max_frame_pixels ({limit}); not decoded"
            )
        return None

    def _open(self) -> Capture | None:
        self._refused = None
        if self.kind == "file" and not Path(str(self._target)).exists():
            return None
        if self.kind == "file":
            # An image file as the source: its header says its size before anything decodes it.
            try:
                with open(str(self._target), "rb") as handle:
                    head = handle.read(1 << 16)
                if image_size(head) is not None:
                    check_size(self._target, head, self.config.max_frame_pixels, "camera.max_frame_pixels")
            except ImageError as err:
                self._refused = err.reason
                return None
            except OSError as err:
                self._refused = f"cannot read ({err.strerror})"
                return None
        if self.kind == "stream":
            capture = self._open_stream()
            if capture is None:
                return None
        else:
            capture = self._opener(self._target, self._backend)
        if not capture.isOpened():
            capture.release()
            return None
        if self.kind != "camera":  # a video's size is known once open, before its first frame
            self._refused = self._too_large(
                capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)
            )
            if self._refused:
                capture.release()
                return None
        if self.kind == "camera":
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.height)
            capture.set(cv2.CAP_PROP_FPS, self.config.fps)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return capture

    def _open_stream(self) -> Capture | None:
        """Opens a network source with a timeout on the open and on every read (FFmpeg's
        interrupt callback), so a camera that accepts and never answers cannot hang us."""
        timeout_ms = int(self.config.open_timeout_seconds * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        if not self._announced:
            _LOGGER.info(
                "stream %s: opening (timeout %g s, camera.open_timeout_seconds)",
                self.name,
                self.config.open_timeout_seconds,
            )
            self._announced = True
        started = time.monotonic()
        capture = self._opener(self._target, self._backend, params)
        if capture.isOpened():
            return capture
        capture.release()
        waited = time.monotonic() - started
        if waited >= 0.9 * self.config.open_timeout_seconds:
            self._refused = (
                f"no answer within {self.config.open_timeout_seconds:g} s "
                "(camera.open_timeout_seconds): is the camera up, and is this its video URL?"
            )
        else:
            self._refused = (
                f"cannot be opened (after {waited:.1f} s: refused, not found, or not a video stream)"
            )
        return None

    def _run(self, generation: int) -> None:
        delays = backoff_delays(self.config.retry_initial_seconds, self.config.retry_max_seconds)
        logged_down = generation > 0  # a reader after a stall: the stall was logged
        if generation:
            self._stop.wait(next(delays))
        while self._current(generation):
            try:
                capture = self._open()
            except Exception as err:  # OpenCV raising on a source: retried like any other failure
                capture, self._refused = None, f"cannot be opened ({type(err).__name__}: {err})"[:300]
            if not self._current(generation):
                if capture is not None:
                    capture.release()
                return
            if capture is None:
                self.failures += 1
                cause, detail = unavailable_cause(self.kind, self.config.source)
                if self._refused:
                    cause, detail = ("unreachable" if self.kind == "stream" else "refused"), self._refused
                self._set_status(False, cause, detail)
                delay = next(delays)
                if not logged_down:
                    _LOGGER.warning(
                        "%s %s: %s; retrying with backoff (up to %.0f s)",
                        self.kind,
                        self.name,
                        self._refused or why_unavailable(self.kind, self.config.source),
                        self.config.retry_max_seconds,
                    )
                    logged_down = True
                self._stop.wait(delay)
                continue
            failure = ""
            try:
                ended = self._read_until_lost(capture, generation)
            except Exception as err:  # a frame OpenCV raised on must not end the capture thread
                ended, failure = False, f" ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
            finally:
                capture.release()
            if not self._current(generation):
                return
            if ended and self.kind == "file" and self.config.loop:
                continue
            if ended and self.kind == "file":
                # A recording played once: the run is over (loop: true plays it again).
                self.connected, self.finished = False, True
                self._set_status(False, "ended", f"file {self.name} ended")
                _LOGGER.info("file %s ended (camera.loop is false): no more frames", self.name)
                with self._lock:
                    self._lock.notify_all()
                break
            self._set_status(False, "no_frames", f"{self.kind} {self.name} stopped delivering frames")
            self.connected = False
            self.failures += 1
            _LOGGER.warning(
                "%s %s %s%s; retrying with backoff",
                self.kind,
                self.name,
                "ended" if ended else "stopped delivering frames",
                failure,
            )
            logged_down = True
            delays = backoff_delays(self.config.retry_initial_seconds, self.config.retry_max_seconds)
            self._stop.wait(next(delays))
        if self._current(generation) or self._stop.is_set():
            self.connected = False

    def _set_status(self, online: bool, cause: str, detail: str) -> None:
        if (online, cause) != (self.status.online, self.status.cause):
            self.status = CameraStatus(online, cause, detail, time.time())

    def _read_until_lost(self, capture: Capture, generation: int = 0) -> bool:
        """Reads frames until the source fails; True when a file simply ended."""
        paced = self.kind == "file" and self.config.realtime
        fps = capture.get(cv2.CAP_PROP_FPS)
        if not fps > 0:  # 0 or NaN: not said
            fps = self.config.fps
        period = 1.0 / fps
        idle_gap = self._idle_gap()
        decoded_at = -math.inf  # when the last frame decoded was taken (a file: its media time)
        next_due = time.monotonic()
        first = True
        play_start, in_play = self._media_next, -period  # a file's media time, this play
        while self._current(generation):
            # Nobody in view: each frame is grabbed, and decoded only if it is the idle
            # frame due or the loop found someone meanwhile (decided once the frame is there,
            # after a file's pacing, so a face found on the last frame gets this one).
            # Decoding is most of what an empty scene costs (a 1280x720 Motion-JPEG frame:
            # 0.7 ms of 2.3).
            grab_only = self._idle and idle_gap > 0 and not first
            read = (lambda: (capture.grab(), None)) if grab_only else capture.read
            ok, image = self._watched_read(generation, read)
            if not self._current(generation):
                return False  # abandoned while it read (a stall): another reader took over
            if not ok or (image is None and not grab_only):
                return self.kind == "file"
            if paced:
                next_due += period
                self._stop.wait(max(0.0, next_due - time.monotonic()))
            if self.kind == "file":
                position = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                # the file's own timestamp; one period on where it does not move forward
                in_play = position if position > in_play else in_play + period
                taken = in_play
            else:
                taken = time.monotonic()
            if grab_only and (not self._idle or taken - decoded_at >= idle_gap):
                ok, image = self._watched_read(generation, capture.retrieve)
                if not self._current(generation):
                    return False
                if not ok or image is None:
                    return self.kind == "file"
            if image is not None:
                decoded_at = taken
            self.passed_over += image is None
            if image is not None and image.shape[0] * image.shape[1] > self.config.max_frame_pixels:
                # the size changed mid-stream
                _LOGGER.warning(
                    "%s %s: %s",
                    self.kind,
                    self.name,
                    self._too_large(image.shape[1], image.shape[0]),
                )
                return False
            if first:
                if not self.connected:  # once per source: not again at each play of a looping file
                    _LOGGER.info(
                        "%s %s delivers %dx%d frames",
                        self.kind,
                        self.name,
                        image.shape[1],
                        image.shape[0],
                    )
                self.connected, first = True, False
                self._set_status(
                    True,
                    "",
                    f"{self.kind} {self.name}: {image.shape[1]}x{image.shape[0]} frames",
                )
            if self.kind == "file" and not paced:
                # Unpaced file (benchmarks): hand over every frame, wait until it was taken.
                with self._lock:
                    while (
                        self._frame is not None
                        and self._frame.sequence != self._taken
                        and not self._stop.is_set()
                    ):
                        self._lock.wait(0.1)
            if self.kind == "file":
                self._media_next = play_start + in_play + period
                wall, monotonic = self._media_time(play_start + in_play)
            else:
                wall, monotonic = time.time(), time.monotonic()
            with self._lock:
                if generation != self._generation:
                    return False
                self._sequence += 1
                if image is not None:
                    self._frame = Frame(image, self._sequence, wall, monotonic)
                    self._lock.notify_all()
        return False

    def _watched_read(
        self, generation: int, read: Callable[[], tuple[bool, np.ndarray | None]]
    ) -> tuple[bool, np.ndarray | None]:
        """``read()``, watched for a stall (``_watch`` sees how long it has been running)."""
        self._reading_since = time.monotonic()
        try:
            return read()
        finally:
            if generation == self._generation:
                self._reading_since = None

    def _media_time(self, media: float) -> tuple[float, float]:
        """(wall, monotonic) of a file's media time: the run's start plus it."""
        if self._media_origin is None:
            self._media_origin = (time.time() - media, time.monotonic() - media)
        wall_origin, monotonic_origin = self._media_origin
        return wall_origin + media, monotonic_origin + media
