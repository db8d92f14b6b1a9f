"""Typed configuration, validated once at start.

One frozen dataclass per YAML section. Unknown keys, wrong types and out-of-range values
are all collected and reported together, each with the YAML path of the offending key
(``camera.fps: expected a number, got 'fast'``). Nothing else reads the YAML: the validated
object is handed to the parts that need it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import os
import re
import socket
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from edge.contract import VIEW_SETS

# The exit status of every command refused for its configuration (sysexits.h EX_CONFIG;
# the units' RestartPreventExitStatus=78: restarting cannot fix a bad file).
EX_CONFIG = 78

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(Exception):
    """The configuration is invalid; ``errors`` lists each problem with its YAML path."""

    def __init__(self, errors: list[str], source: str = "config"):
        self.errors = errors
        super().__init__(
            f"{source}: " + ("; ".join(errors) if len(errors) == 1 else "\n  " + "\n  ".join(errors))
        )


def allowed(lo: float | None = None, hi: float | None = None, choices: tuple | None = None) -> dict:
    """A setting's valid values, as a dataclass field's metadata: ``field(default=640,
    metadata=allowed(16, 8192))``. Any settings type may use it (the dashboard's, training's);
    ``range_problem`` says what is wrong with a value."""
    return {"min": lo, "max": hi, "choices": choices}


def range_problem(spec: dict, value: Any) -> str | None:
    """What is wrong with ``value`` under ``allowed(...)`` metadata ``spec``, in words
    (``must be at least 1, got 0``); None when it is valid."""
    if spec.get("choices") and value not in spec["choices"]:
        return f"must be one of {', '.join(map(str, spec['choices']))}, got {_show(value)}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.get("min") is not None and value < spec["min"]:
            return f"must be at least {spec['min']}, got {value!r}"
        if spec.get("max") is not None and value > spec["max"]:
            return f"must be at most {spec['max']}, got {value!r}"
    return None


# The default pixel limit, also for `fer-kiosk classify` (which reads no config).
DEFAULT_MAX_PIXELS = 16_000_000
# Chosen from python -m bench (docs/benchmarks.md, "Nobody in view: fewer frames").
IDLE_FPS = 15.0


@dataclass(frozen=True)
class CameraConfig:
    # A V4L2 device (0, "/dev/video0"), a video file or a stream URL (rtsp://, http://).
    source: int | str = 0
    width: int = field(default=640, metadata=allowed(16, 8192))
    height: int = field(default=480, metadata=allowed(16, 8192))
    fps: float = field(default=30.0, metadata=allowed(0.1, 240))
    # While no face is tracked, frames are decoded and processed at about this rate (the
    # others are passed over undecoded): an empty scene costs a fraction, and someone who
    # comes into view is seen at most one idle frame later. 0: every frame, always.
    idle_fps: float = field(default=IDLE_FPS, metadata=allowed(0.0, 240))
    loop: bool = False  # video files only: start again at the end
    # Video files are played at their own frame rate, like a camera; false reads as fast as
    # the pipeline takes frames (benchmarks).
    realtime: bool = True
    retry_initial_seconds: float = field(default=1.0, metadata=allowed(0.01, 3600))
    retry_max_seconds: float = field(default=30.0, metadata=allowed(0.01, 3600))
    # Network sources (rtsp://, http://): opening, and each read, give up after this long.
    open_timeout_seconds: float = field(default=10.0, metadata=allowed(0.5, 600))
    # Any source: a read that brings no frame for this long (a stream that keeps its
    # connection open and sends nothing, a hung device) makes the camera offline
    # (no_frames) and opens it again. Above a frame's period at the slowest fps.
    stall_seconds: float = field(default=10.0, metadata=allowed(1.0, 3600))
    # Frames (and image files as a source) larger than this many pixels are refused before
    # they are decoded whole: a 4K frame is 8.3 million; a 140 KB PNG can claim 144 million.
    max_frame_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata=allowed(65_536, 1_000_000_000))

    @property
    def display_name(self) -> str:
        """The source with its secrets hidden: what every log line and payload shows."""
        return redacted_source(self.source)


def redacted_source(source: int | str) -> str:
    """A camera source as logs, commands and payloads show it: a URL's user info keeps only
    the user name (``rtsp://admin:***@cam/``; a lone token becomes ``***``) and every query
    value is hidden (``?token=***``). The real source is used only where the camera is
    opened (edge/camera/capture.py)."""
    text = str(source)
    match = re.match(r"^([a-z][a-z0-9+.-]*://)([^?#]*)(.*)$", text, re.IGNORECASE | re.DOTALL)
    if not match:
        return text
    scheme, before_query, query = match.groups()
    # The user info ends at the last "@" before the query, so that a password with an
    # unescaped "/" or "@" in it (invalid, and common) is hidden whole.
    if "@" in before_query:
        userinfo, host = before_query.rsplit("@", 1)
        user, has_password, _ = userinfo.partition(":")
        before_query = f"{user.split('/')[0]}:***@{host}" if has_password else f"***@{host}"
    query = re.sub(r"([?&][^=&#]*=)[^&#]*", r"\1***", query)
    return scheme + before_query + query


# A config file is a few KB; anything this large is not one.
MAX_CONFIG_BYTES = 1_000_000


# Chosen from the benchmark's figures (docs/benchmarks.md, "Choosing the defaults").
FULL_DETECT_SECONDS = 1.0
MAX_CLASSIFY_HZ = 15.0
# Chosen from python -m bench (docs/benchmarks.md, "Customers who take their time": 5 Hz, chosen
# on 10 s clips, found customers who walk in over 1-2 s up to 0.4 s late).
MOTION_SEARCH_HZ = 30.0
# Chosen from python -m bench.labels (docs/benchmarks.md, "Labels that hold").
LABEL_MARGIN = 0.1
LABEL_HOLD_SECONDS = 1.0

# Keys of older releases: refused with what replaces them, not with a bare "unknown key".
REPLACED_KEYS = {
    "detector.full_detect_every": "replaced by detector.full_detect_seconds, a time rather than a frame "
    "count (10 frames at 30 fps were 0.33 s; 0 still means every frame)",
    "model.reclassify_seconds": "replaced by model.max_classify_hz (0.1 s was 10 Hz)",
    "model.reclassify_iou": "removed: model.max_classify_hz decides how often a face is classified, "
    "moving or not",
}


@dataclass(frozen=True)
class DetectorConfig:
    scale_factor: float = field(default=1.1, metadata=allowed(1.01, 2.0))
    min_neighbors: int = field(default=5, metadata=allowed(0, 50))
    # The smallest face to find comes from the kiosk's geometry (the farthest customer it
    # serves), as a share of the frame height so that it holds at any camera resolution:
    # 0.1 is 48 px at 640x480 and 72 px at 1280x720. min_face_size (pixels), when set,
    # overrides it. max_face_size: pixels, 0 means no upper limit.
    min_face_fraction: float = field(default=0.1, metadata=allowed(0.01, 1.0))
    min_face_size: int = field(default=0, metadata=allowed(0, 4096))
    max_face_size: int = field(default=0, metadata=allowed(0, 8192))
    # Detect on a copy of the frame scaled down to this width (0: full resolution).
    detect_width: int = field(default=320, metadata=allowed(0, 8192))
    cascade: str = ""  # empty: OpenCV's haarcascade_frontalface_default.xml
    # Between full-frame detections, faces are searched only near where they were, at
    # their own size (a fraction of the cost). A full-frame detection runs at once when a
    # known face is lost, and otherwise at most every full_detect_seconds (a time: 15 and
    # 30 fps cameras behave the same), so that someone who arrives without moving is found
    # too; with the motion trigger, a scene unchanged outside the known faces since the last
    # one waits up to FaceFinder.STILL_SCENE_RECHECK_SECONDS (5 s). 0: full-frame detection
    # on every frame. Replaces full_detect_every (frames).
    full_detect_seconds: float = field(default=FULL_DETECT_SECONDS, metadata=allowed(0.0, 3600))
    # Motion outside the known faces (someone arriving, someone passing behind the counter)
    # is searched where it happened: the changed regions, grown by the smallest face. New
    # motion is searched on every frame for its first half second.
    motion_trigger: bool = True
    # Fraction of a frame's pixels (outside known faces) that must change to count as motion.
    motion_fraction: float = field(default=0.002, metadata=allowed(0.0, 1.0))
    # Motion that goes on (someone walking to and fro behind the counter, a customer who
    # takes a second or two to walk up, a flickering light) is searched at most this often,
    # a search covering more than a fifth of the frame counting as several: at 30, motion
    # of a person's size on every frame, and at most motion_search_hz / 5 full-frame
    # detections a second whatever moves.
    motion_search_hz: float = field(default=MOTION_SEARCH_HZ, metadata=allowed(0.1, 240))
    # OpenCV's worker threads (process-wide). 1 costs the least CPU per frame: on 2 cores,
    # two threads made detection 18 % more expensive in CPU for a shorter wall time the
    # 30 fps loop does not need. 0: OpenCV's default (all cores).
    threads: int = field(default=1, metadata=allowed(0, 64))
    # Privacy zones: [x, y, width, height] in fractions of the frame (0..1, from the top
    # left). A face whose centre lies in one is never classified, tracked or published: the
    # staff's side of the counter, a poster, a screen showing faces.
    ignore_zones: tuple[tuple[float, ...], ...] = ()

    def min_face_pixels(self, frame_height: int) -> int:
        """The smallest face to find in a frame this tall, in its pixels."""
        return self.min_face_size or max(1, round(self.min_face_fraction * frame_height))


@dataclass(frozen=True)
class ModelConfig:
    path: str = ""  # empty: the bundled edge/models/emotion_int8.tflite
    num_threads: int = field(default=1, metadata=allowed(1, 64))
    # Each face is classified at most this often (a new face at once, with every view; then
    # one view per classification in turn, the tracker's smoothing averaging them); in
    # between it keeps its last probabilities. Several faces share the frames, the one that
    # moved most first. Replaces reclassify_seconds and reclassify_iou.
    max_classify_hz: float = field(default=MAX_CLASSIFY_HZ, metadata=allowed(0.1, 240))
    # Test-time views averaged per face. "contract": what the model's contract says (chosen
    # on validation data: mirror-shift, 10 passes, for the bundled model). A slower box can
    # trade accuracy for CPU: "mirror" (2 passes) or "single" (see edge/models/README.md).
    views: str = field(default="contract", metadata=allowed(choices=("contract", *VIEW_SETS)))


@dataclass(frozen=True)
class TrackingConfig:
    # A detection continues a face when their boxes overlap at least this much (IoU), or
    # when its centre lies within max_center_distance face widths of the face's last centre.
    iou_threshold: float = field(default=0.3, metadata=allowed(0.0, 1.0))
    max_center_distance: float = field(default=0.6, metadata=allowed(0.0, 10.0))
    # Frames a face must be seen in before it counts as a person (filters one-frame flukes).
    min_frames: int = field(default=3, metadata=allowed(1, 1000))
    # A face that has not been seen for this long has left: its `end` event is published.
    max_missing_seconds: float = field(default=1.0, metadata=allowed(0.0, 3600))
    # Time constant of the exponential smoothing of the probabilities.
    smoothing_seconds: float = field(default=0.5, metadata=allowed(0.0, 60))
    # Hysteresis of a person's label (the emotion `state`, `update` and alerts name): it
    # changes only when another emotion's smoothed probability leads the current one's by
    # label_margin, or has led it without a break for label_hold_seconds. 0 and 0: the
    # label is always the top emotion of the moment (a near-tie flaps).
    label_margin: float = field(default=LABEL_MARGIN, metadata=allowed(0.0, 1.0))
    label_hold_seconds: float = field(default=LABEL_HOLD_SECONDS, metadata=allowed(0.0, 60))
    # `update` when the smoothed emotion changes, at most once per min_update_seconds per
    # face, and at least every heartbeat_seconds while the face stays (0: only on change).
    min_update_seconds: float = field(default=0.5, metadata=allowed(0.0, 3600))
    heartbeat_seconds: float = field(default=2.0, metadata=allowed(0.0, 86400))


# The emotions that make a customer "upset": the alert rule's default, and what the model
# card's upset-vs-calm figures (edge/tools/evaluate.py) and bench.alerts measure.
UPSET_EMOTIONS = ("angry", "sad", "fear", "disgust")
ALERT_SIGNALS = ("top", "summed")


@dataclass(frozen=True)
class AlertRuleConfig:
    """An alert a kiosk can act on (a colleague steps in, the kiosk offers help): raised when
    a present person looks upset, by ``signal``, with at least ``min_probability`` for
    ``hold_seconds`` without a break, cleared when that has not held for ``clear_seconds``,
    or when the person leaves or the daemon stops. ``signal``: ``top``, the smoothed top
    emotion is one of ``emotions`` and that probable; ``summed``, the smoothed
    probabilities of ``emotions`` add up to it (a face split between angry and sad is
    still upset)."""

    enabled: bool = True
    emotions: tuple[str, ...] = UPSET_EMOTIONS
    signal: str = field(default="top", metadata=allowed(choices=ALERT_SIGNALS))
    # Defaults from figures (docs/benchmarks.md, "Alerts"): the calibrated probability of the
    # smoothed emotion; a real upset face holds it, the flicker of a neutral one does not.
    min_probability: float = field(default=0.6, metadata=allowed(0.0, 1.0))
    hold_seconds: float = field(default=5.0, metadata=allowed(0.0, 3600))
    clear_seconds: float = field(default=2.0, metadata=allowed(0.0, 3600))


@dataclass(frozen=True)
class RulesConfig:
    alerts: AlertRuleConfig = field(default_factory=AlertRuleConfig)


@dataclass(frozen=True)
class TlsConfig:
    enabled: bool = False
    ca_file: str = ""  # empty: the system's CA store
    cert_file: str = ""  # client certificate (optional)
    key_file: str = ""
    insecure: bool = False  # skip the host-name check (self-signed test brokers only)

    def problems(self) -> list[tuple[str, str]]:
        found = [
            (key, f"{getattr(self, key)} is not a file")
            for key in ("ca_file", "cert_file", "key_file")
            if getattr(self, key) and not Path(getattr(self, key)).is_file()
        ]
        if self.key_file and not self.cert_file:
            found.append(("key_file", "set only together with cert_file"))
        if (self.ca_file or self.cert_file) and not self.enabled:
            found.append(("", "certificate files are set but enabled is false"))
        return found


# The shortest wait before reconnecting to the broker, for every client of it (the daemon,
# `fer-kiosk watch`, the dashboard), and so the least mqtt.reconnect_max_seconds may be.
RECONNECT_MIN_SECONDS = 1.0


@dataclass(frozen=True)
class MqttConfig:
    """The broker settings of every program that talks to it: the daemon, `fer-kiosk watch`
    and `unregister` (the daemon's config) and the dashboard (its own file): one type, so
    one set of rules (``problems``) wherever it is read."""

    host: str = "localhost"
    port: int = field(default=1883, metadata=allowed(1, 65535))
    topic_prefix: str = "fer-kiosk"
    device_id: str = ""  # empty: this machine's host name
    client_id: str = ""  # empty: "fer-kiosk-<device_id>"
    qos: int = field(default=1, metadata=allowed(0, 2))
    keepalive: int = field(default=30, metadata=allowed(5, 3600))
    # Longest wait between reconnection attempts while the broker is away (with jitter): low,
    # so the retained availability, state and discovery are back within seconds of it.
    reconnect_max_seconds: float = field(default=5.0, metadata=allowed(RECONNECT_MIN_SECONDS, 3600))
    # A broker that accepts TCP (and TLS) but sends no CONNACK within this is given up on, saying so.
    connect_timeout_seconds: float = field(default=10.0, metadata=allowed(1, 600))
    # The password never goes in this file. It comes from FER_KIOSK_MQTT_PASSWORD, or from
    # credentials_file (lines username=... and password=..., mode 0600), or from systemd's
    # $CREDENTIALS_DIRECTORY/mqtt (LoadCredential=mqtt:...).
    username: str = ""
    credentials_file: str = ""
    tls: TlsConfig = field(default_factory=TlsConfig)
    stats_interval_seconds: float = field(default=30.0, metadata=allowed(1, 86400))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        problem = topic_prefix_problem(self.topic_prefix)
        if problem:
            found.append(("topic_prefix", problem))
        if self.device_id and not re.fullmatch(r"[A-Za-z0-9_-]+", self.device_id):
            # Home Assistant ignores discovery topics whose node id has other characters.
            found.append(
                (
                    "device_id",
                    f"{_show(self.device_id)} may contain only letters, digits, _ and - "
                    "(Home Assistant ignores discovery topics with other characters)",
                )
            )
        if any(ch in self.client_id for ch in "#+/") or len(self.client_id) > 128:
            found.append(("client_id", f"{_show(self.client_id)}: no #, + or /, at most 128 characters"))
        if self.credentials_file and not Path(self.credentials_file).is_file():
            found.append(("credentials_file", f"{self.credentials_file} is not a file"))
        return found


def topic_prefix_problem(prefix: str) -> str | None:
    """What keeps ``prefix`` from starting topics (an MQTT wildcard, an empty level at either
    end: topics no subscription would match as meant); None when it can."""
    if not prefix:
        return "must not be empty"
    if any(ch in prefix for ch in "#+") or prefix.startswith("/") or prefix.endswith("/"):
        return f"{_show(prefix)} may not contain # or + nor start or end with /"
    return None


@dataclass(frozen=True)
class HomeAssistantConfig:
    enabled: bool = True
    discovery_prefix: str = "homeassistant"

    def problems(self) -> list[tuple[str, str]]:
        problem = topic_prefix_problem(self.discovery_prefix)
        return [("discovery_prefix", problem)] if problem else []


@dataclass(frozen=True)
class SpoolConfig:
    # Where visit summaries wait while the broker is away (empty: $STATE_DIRECTORY/spool
    # under systemd, else ~/.local/state/fer-kiosk/spool).
    path: str = ""
    max_messages: int = field(default=10_000, metadata=allowed(1, 10_000_000))
    # A summary not delivered after this many days is deleted (0: kept until delivered). The
    # spool is the only place the kiosk stores anything about its customers (docs/privacy.md).
    max_age_days: float = field(default=7.0, metadata=allowed(0, 3650))


@dataclass(frozen=True)
class Config:
    camera: CameraConfig = field(default_factory=CameraConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    log_level: str = field(default="INFO", metadata=allowed(choices=LOG_LEVELS))

    @property
    def device_id(self) -> str:
        return self.mqtt.device_id or safe_topic_part(socket.gethostname())

    @property
    def base_topic(self) -> str:
        return f"{self.mqtt.topic_prefix}/{self.device_id}"


def safe_topic_part(text: str) -> str:
    """``text`` (a host name) as a topic level and a client id: other characters than
    letters, digits, - and _ become -."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text) or "kiosk"


def default_state_path(name: str) -> Path:
    """Where a fer-kiosk program keeps ``name`` when its config names no path: the unit's
    StateDirectory= under systemd ($STATE_DIRECTORY), else the user's state folder
    ($XDG_STATE_HOME, by default ~/.local/state) /fer-kiosk."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0]) / name
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fer-kiosk" / name


def is_file_path(value: str) -> bool:
    """Whether a setting's text names a file, relative to the config (a video, a model, a
    key) rather than a stream URL or a device under /dev."""
    return "://" not in value and not value.startswith("/dev/")


def _show(value: Any, limit: int = 60) -> str:
    """``repr`` of a value for an error line, cut short: a line, never megabytes."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + " ...)"


def _type_name(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    if typing.get_origin(hint) is tuple:
        plural = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
        return f"a list of {plural.get(typing.get_args(hint)[0], 'values')}"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _convert(hint: Any, value: Any, path: str, errors: list[str]) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path, errors)
    if typing.get_origin(hint) is tuple:  # tuple[X, ...]: a YAML list of X
        if not isinstance(value, list):
            errors.append(f"{path}: expected {_type_name(hint)}, got {_show(value)}")
            return None
        item = typing.get_args(hint)[0]
        return tuple(_convert(item, v, f"{path}[{i}]", errors) for i, v in enumerate(value))
    if typing.get_origin(hint) in (Union, types.UnionType):
        for option in typing.get_args(hint):
            attempt: list[str] = []
            result = _convert(option, value, path, attempt)
            if not attempt:
                return result
        errors.append(f"{path}: expected {_type_name(hint)}, got {_show(value)}")
        return None
    # YAML's own types only: a quoted "30" is a string, not a number; true is not 1.
    ok = (
        (hint is bool and isinstance(value, bool))
        or (hint is int and isinstance(value, int) and not isinstance(value, bool))
        or (hint is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (hint is str and isinstance(value, str))
    )
    if not ok:
        errors.append(f"{path}: expected {_type_name(hint)}, got {_show(value)}")
        return None
    if hint is float and not math.isfinite(value):  # .nan, .inf: every comparison would lie
        errors.append(f"{path}: expected a finite number, got {value!r}")
        return None
    if hint is str and "\x00" in value:
        errors.append(f"{path}: contains a NUL character")
        return None
    return float(value) if hint is float else value


def _build(cls: type, data: Any, path: str, errors: list[str]) -> Any:
    where = path or "top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append(f"{where}: expected a mapping of settings, got {_show(data)}")
        return cls()
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known and f"{path}.{key}" in REPLACED_KEYS:
            errors.append(f"{path}.{key}: {REPLACED_KEYS[f'{path}.{key}']}")
        elif key not in known:
            errors.append(
                f"{path + '.' if path else ''}"
                f"{key if isinstance(key, str) and len(key) <= 60 else _show(key)}: "
                f"unknown key (expected one of {', '.join(known)})"
            )
    values = {}
    for name, spec in known.items():
        if name not in data:
            continue
        key_path = f"{path}.{name}" if path else name
        before = len(errors)
        value = _convert(hints[name], data[name], key_path, errors)
        if len(errors) == before:
            problem = range_problem(spec.metadata, value)
            if problem:
                errors.append(f"{key_path}: {problem}")
            values[name] = value
    return cls(**values)


def field_problems(settings: Any) -> list[str]:
    """Settings made in code rather than read from YAML (training's, from its command line
    or a run's settings.json) checked as a config's keys are: each scalar field's type
    (int, float, str, bool, or None where the type allows it) and its ``allowed(...)``
    range, one line each naming the field (``epochs: must be at least 1, got -1``)."""
    lines: list[str] = []
    hints = typing.get_type_hints(type(settings))
    for item in dataclasses.fields(settings):
        value, hint = getattr(settings, item.name), hints[item.name]
        options = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
        scalars = tuple(option for option in options if option in (int, float, str, bool))
        if not scalars or (value is None and type(None) in options):
            continue
        before = len(lines)
        _convert(functools.reduce(operator.or_, scalars), value, item.name, lines)
        problem = range_problem(item.metadata, value) if len(lines) == before else None
        if problem:
            lines.append(f"{item.name}: {problem}")
    return lines


def section_problems(section: Any, path: str = "") -> list[str]:
    """The rules between the keys of a section and of the sections inside it: each settings
    type that has them says so in a ``problems()`` method, (key, what is wrong) pairs, so
    the rules go wherever the type is used (MqttConfig in the daemon's config and the
    dashboard's). One line each, with its YAML path."""
    lines = []
    for item in dataclasses.fields(section):
        value = getattr(section, item.name)
        if dataclasses.is_dataclass(value):
            lines += section_problems(value, f"{path}.{item.name}" if path else item.name)
    for key, problem in section.problems() if hasattr(section, "problems") else ():
        where = ".".join(part for part in (path, key) if part) or "top level"
        lines.append(f"{where}: {problem}")
    return lines


def _cross_checks(config: Config) -> list[str]:
    errors = []
    d = config.detector
    if d.max_face_size and d.min_face_size and d.max_face_size < d.min_face_size:
        errors.append(f"detector.max_face_size: {d.max_face_size} is below min_face_size {d.min_face_size}")
    c = config.camera
    if c.retry_max_seconds < c.retry_initial_seconds:
        errors.append("camera.retry_max_seconds: must not be below retry_initial_seconds")
    if c.width * c.height > c.max_frame_pixels:
        errors.append(
            f"camera.max_frame_pixels: {c.max_frame_pixels} is below the requested "
            f"{c.width}x{c.height} = {c.width * c.height} pixels"
        )
    if config.model.path and not Path(config.model.path).is_file():
        errors.append(f"model.path: {config.model.path} is not a file")
    if d.cascade and not Path(d.cascade).is_file():
        errors.append(f"detector.cascade: {d.cascade} is not a file")
    for i, zone in enumerate(d.ignore_zones):
        if len(zone) != 4 or not all(0.0 <= v <= 1.0 for v in zone):
            errors.append(
                f"detector.ignore_zones[{i}]: expected [x, y, width, height], fractions of the frame "
                f"from 0 to 1, got {_show(list(zone))}"
            )
        elif zone[2] <= 0 or zone[3] <= 0 or zone[0] + zone[2] > 1.0001 or zone[1] + zone[3] > 1.0001:
            errors.append(
                f"detector.ignore_zones[{i}]: {_show(list(zone))} is empty or reaches outside the frame"
            )
    alerts = config.rules.alerts
    if not alerts.emotions:
        errors.append("rules.alerts.emotions: must name at least one emotion")
    # Whether the model has these emotions is checked against its contract's labels once it
    # is loaded (edge.daemon.service.check_alert_emotions): a model of one's own may name others.
    if len(set(alerts.emotions)) != len(alerts.emotions):
        errors.append("rules.alerts.emotions: names an emotion twice")
    return errors


def parse_config(data: Any, source: str = "config") -> Config:
    errors: list[str] = []
    config = _build(Config, data, "", errors)
    if not errors:
        errors = section_problems(config) + _cross_checks(config)
    if errors:
        raise ConfigError(errors, source)
    return config


def load_config(path: str | Path | None) -> Config:
    """Reads and validates a YAML file; no path means all defaults."""
    if path is None:
        return parse_config({}, "defaults")
    return parse_config(read_config_data(path), str(path))


def read_config_data(path: str | Path) -> Any:
    """The YAML of a config file, checked as every config is (size, encoding, duplicate keys,
    aliases), with relative file paths made relative to the file."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError([f"cannot read: {err.strerror}"], str(path)) from err
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"larger than {MAX_CONFIG_BYTES} bytes: not a fer-kiosk config"], str(path))
    data = parse_yaml(raw, str(path))
    # Relative paths in the file are relative to the file, not to wherever the daemon starts.
    return _resolve_paths(data, path.absolute().parent)


def parse_section(cls: type, data: Any, source: str = "config") -> Any:
    """Any config dataclass (the dashboard's, say) validated by the same rules as the daemon's:
    unknown keys, wrong types, out-of-range values and each section's ``problems()`` refused
    with their YAML path."""
    errors: list[str] = []
    built = _build(cls, data if data is not None else {}, "", errors)
    if not errors:
        errors = section_problems(built)
    if errors:
        raise ConfigError(errors, source)
    return built


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML without aliases: an alias can make a few hundred bytes expand to gigabytes
    (the "billion laughs"), and a config has no use for them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.get_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"aliases (*{event.anchor}) are not allowed in the config: write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def _duplicate_keys(node: yaml.Node, path: str, errors: list[str]) -> None:
    """Every key given twice in one mapping, by its YAML path (YAML itself keeps the last one
    silently, so the first setting would be ignored without a word)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            key_path = f"{path}.{key}" if path and key is not None else str(key)
            if key is not None:
                if key in seen:
                    errors.append(
                        f"{key_path}: duplicate key (lines {seen[key]} and {key_node.start_mark.line + 1})"
                    )
                else:
                    seen[key] = key_node.start_mark.line + 1
            _duplicate_keys(value_node, key_path, errors)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicate_keys(item, f"{path}[{i}]", errors)


def parse_yaml(raw: bytes, source: str = "config") -> Any:
    """The data of a YAML config: UTF-8 only, no aliases, no duplicate keys, each refused
    with one line that says where."""
    try:
        text = raw.decode("utf-8-sig")  # a UTF-8 byte-order mark is allowed by YAML
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        hint = " (it looks like UTF-16)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ConfigError(
            [f"line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x}){hint}; save it as UTF-8"], source
        ) from None
    loader = None
    try:
        loader = _StrictLoader(text)  # the reader refuses control characters here already
        node = loader.get_single_node()
        errors: list[str] = []
        if node is not None:
            _duplicate_keys(node, "", errors)
        if errors:
            raise ConfigError(errors, source)
        return loader.construct_document(node) if node is not None else None
    except yaml.reader.ReaderError as err:
        line = text[: err.position].count("\n") + 1
        raise ConfigError(
            [f"line {line}: character #x{err.character:04x} is not allowed in YAML text"], source
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join((getattr(err, "problem", None) or str(err)).split())
        raise ConfigError([f"{where}not valid YAML ({problem})"], source) from None
    except RecursionError:
        raise ConfigError(["not valid YAML (nested too deeply)"], source) from None
    finally:
        if loader is not None:
            loader.dispose()


def _resolve_paths(data: Any, base: Path) -> Any:
    if not isinstance(data, dict):
        return data
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    mqtt = data.get("mqtt")
    if isinstance(mqtt, dict) and isinstance(mqtt.get("tls"), dict):
        data["mqtt"] = dict(mqtt, tls=dict(mqtt["tls"]))
    for keys in (
        ("model", "path"),
        ("detector", "cascade"),
        ("camera", "source"),
        ("spool", "path"),
        ("mqtt", "credentials_file"),
        ("mqtt", "tls", "ca_file"),
        ("mqtt", "tls", "cert_file"),
        ("mqtt", "tls", "key_file"),
    ):
        parent = data
        for key in keys[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        value = parent.get(keys[-1])
        if isinstance(value, str) and value and is_file_path(value) and not os.path.isabs(value):
            parent[keys[-1]] = str(base / value)
    return data
