import dataclasses
import math
import re

import pytest

from edge.config import CameraConfig, Config, ConfigError, load_config, parse_config
from tests.conftest import ROOT


def errors_of(data) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    return err.value.errors


def test_defaults_run_out_of_the_box():
    config = parse_config({})
    assert config == Config()
    assert config.mqtt.host == "localhost" and config.mqtt.qos == 1
    assert config.base_topic.startswith("fer-kiosk/")


def test_shipped_config_equals_the_defaults():
    assert load_config(ROOT / "config.yaml") == Config()


@pytest.mark.parametrize(
    "data, expected",
    [
        (
            {"camra": {}},
            "camra: unknown key (expected one of camera, detector, model, tracking, mqtt, homeassistant, "
            "spool, rules, log_level)",
        ),
        ({"camera": {"colour": 1}}, "camera.colour: unknown key"),
        ({"camera": {"fps": "fast"}}, "camera.fps: expected a number, got 'fast'"),
        ({"camera": {"width": 640.5}}, "camera.width: expected an integer, got 640.5"),
        ({"camera": {"loop": "yes"}}, "camera.loop: expected true or false, got 'yes'"),
        ({"camera": {"source": 1.5}}, "camera.source: expected an integer or a string, got 1.5"),
        ({"camera": "usb"}, "camera: expected a mapping of settings, got 'usb'"),
        ({"mqtt": {"port": 0}}, "mqtt.port: must be at least 1, got 0"),
        ({"mqtt": {"qos": 3}}, "mqtt.qos: must be at most 2, got 3"),
        ({"mqtt": {"port": "1883"}}, "mqtt.port: expected an integer, got '1883'"),
        ({"mqtt": {"topic_prefix": "a/#"}}, "mqtt.topic_prefix: 'a/#' may not contain # or +"),
        ({"mqtt": {"client_id": "kiosk/1"}}, "mqtt.client_id: 'kiosk/1': no #, + or /"),
        (
            {"homeassistant": {"discovery_prefix": "homeassistant/"}},
            "homeassistant.discovery_prefix: 'homeassistant/' may not contain # or + nor start or end with /",
        ),
        (
            {"detector": {"min_face_size": 100, "max_face_size": 50}},
            "detector.max_face_size: 50 is below min_face_size 100",
        ),
        ({"detector": {"scale_factor": 1.0}}, "detector.scale_factor: must be at least 1.01, got 1.0"),
        ({"detector": {"motion_search_hz": 0}}, "detector.motion_search_hz: must be at least 0.1, got 0"),
        ({"detector": {"motion_search": 5}}, "detector.motion_search: unknown key"),
        ({"log_level": "LOUD"}, "log_level: must be one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'"),
        ({"model": {"path": "/nonexistent/m.tflite"}}, "model.path: /nonexistent/m.tflite is not a file"),
        ([1, 2], "top level: expected a mapping of settings, got [1, 2]"),
    ],
)
def test_each_bad_setting_is_named_by_its_yaml_path(data, expected):
    assert any(e.startswith(expected) for e in errors_of(data)), errors_of(data)


def test_all_problems_are_reported_at_once():
    errors = errors_of({"camera": {"fps": "x", "height": -1}, "mqtt": {"bogus": 1}})
    assert len(errors) == 3


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("camera:\n  fps: 30\n   width: 2\n")
    with pytest.raises(ConfigError, match=r"line 3, column \d+: not valid YAML"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "none.yaml")


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "clip.avi").write_bytes(b"")
    path = tmp_path / "c.yaml"
    path.write_text("camera:\n  source: clip.avi\n")
    assert load_config(path).camera.source == str(tmp_path / "clip.avi")
    path.write_text("camera:\n  source: rtsp://cam/stream\n")
    assert load_config(path).camera.source == "rtsp://cam/stream"
    path.write_text("camera:\n  source: /dev/video2\n")
    assert load_config(path).camera.source == "/dev/video2"


def test_empty_file_means_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("")
    assert load_config(path) == Config()


# -- inputs the loader refuses, each with one short line that says where -----------------


def load_errors(tmp_path, raw: bytes) -> list[str]:
    path = tmp_path / "c.yaml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "\n" not in str(err.value) or len(err.value.errors) > 1
    return err.value.errors


@pytest.mark.parametrize(
    "raw, expected",
    [
        (
            b"tracking:\n  max_missing_seconds: .nan\n",
            "tracking.max_missing_seconds: expected a finite number, got nan",
        ),
        (b"camera:\n  fps: .inf\n", "camera.fps: expected a finite number, got inf"),
        (b"camera:\n  fps: -.inf\n", "camera.fps: expected a finite number, got -inf"),
        (b"camera:\n  fps: 30\n  width: 640\n  fps: 20\n", "camera.fps: duplicate key (lines 2 and 4)"),
        (
            b"mqtt:\n  tls:\n    enabled: true\n    enabled: false\n",
            "mqtt.tls.enabled: duplicate key (lines 3 and 4)",
        ),
        (b"camera: {}\ncamera: {}\n", "camera: duplicate key (lines 1 and 2)"),
        (
            "camera:\n  fps: 30\n".encode("utf-16"),
            "line 1: not UTF-8 text (byte 0xff) (it looks like UTF-16)",
        ),
        (b"camera:\n  source: caf\xe9.avi\n", "line 2: not UTF-8 text (byte 0xe9)"),
        (b"camera:\n  fps: 3\x000\n", "line 2: character #x0000 is not allowed"),
        (b"a: &x 1\nb: *x\n", "line 2, column 4: not valid YAML (aliases (*x) are not allowed"),
        (b"[" * 20000 + b"]" * 20000, "not valid YAML (nested too deeply)"),
        (b"# padding\n" * 200_000, "larger than 1000000 bytes"),
        (b"mqtt:\n  device_id: !!binary aGVsbG8=\n", "mqtt.device_id: expected a string, got b'hello'"),
    ],
)
def test_unusable_config_files_are_refused_naming_where(tmp_path, raw, expected):
    errors = load_errors(tmp_path, raw)
    assert any(e.startswith(expected) for e in errors), errors


def test_a_utf8_byte_order_mark_is_allowed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbfcamera:\n  fps: 25\n")
    assert load_config(path).camera.fps == 25.0


def test_an_alias_bomb_gives_a_short_error_line_quickly(tmp_path):
    import time

    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    lines.append("camera: *a9")  # 9**10 strings if it were expanded
    started = time.monotonic()
    errors = load_errors(tmp_path, "\n".join(lines).encode())
    assert time.monotonic() - started < 1.0
    assert len(str(errors)) < 300 and "aliases (*a0) are not allowed" in errors[0]


def test_long_values_are_cut_short_in_error_lines():
    errors = errors_of({"camera": {"fps": "x" * 10_000}, "mqtt": {"y" * 5000: 1}})
    assert all(len(e) < 400 for e in errors), [len(e) for e in errors]


def test_pixel_limit_is_validated_and_must_fit_the_requested_camera_size():
    assert parse_config({}).camera.max_frame_pixels >= 3840 * 2160  # a 4K frame fits
    assert any(
        e.startswith("camera.max_frame_pixels: must be at least")
        for e in errors_of({"camera": {"max_frame_pixels": 10}})
    )
    assert any(
        e.startswith("camera.max_frame_pixels: expected an integer")
        for e in errors_of({"camera": {"max_frame_pixels": 1.5e7}})
    )
    assert errors_of({"camera": {"width": 1920, "height": 1080, "max_frame_pixels": 1_000_000}}) == [
        "camera.max_frame_pixels: 1000000 is below the requested 1920x1080 = 2073600 pixels"
    ]


def test_a_source_is_shown_without_its_secrets():
    from edge.config import redacted_source

    assert redacted_source("rtsp://admin:s3cr@t/x@cam:554/live?token=abc&ch=1#f") == (
        "rtsp://admin:***@cam:554/live?token=***&ch=***#f"
    )
    assert redacted_source("http://TOKEN@cam/video.mjpg") == "http://***@cam/video.mjpg"
    assert redacted_source("http://cam/video.mjpg") == "http://cam/video.mjpg"
    assert redacted_source("/videos/a?b=c.mp4") == "/videos/a?b=c.mp4"  # a file name, not a URL
    assert redacted_source(0) == "0"
    assert CameraConfig(source="http://u:p@h/").display_name == "http://u:***@h/"


# ---- every setting and constant in one place ----------------------------------------------

# "`name` (default V", "`name`, default V", "`name` (V by default", "`name` defaults to V":
# what the documentation says a setting's default is.
DOCUMENTED_DEFAULT = re.compile(
    r"`(?P<name>--[a-z0-9-]+|[a-z_]+(?:\.[a-z_]+)*)`\s*"
    r"(?:[(,]\s*default\s+(?P<given>[^;:)]+)"
    r"|\(\s*(?P<before>[^;:),]+?)\s+by default"
    r"|defaults to (?P<to>[\d.]+))"
)
NOT_OURS = {"max_queued_messages"}  # Mosquitto's


def _code_default(name: str):
    """The default the code gives a setting named as the documentation names it."""
    from converter.__main__ import build_parser as converter_parser
    from dashboard.config import DashboardConfig
    from training.settings import TrainSettings

    if name.startswith("--"):
        key = name[2:].replace("-", "_")
        settings = {f.name: f for f in dataclasses.fields(TrainSettings)}
        if key in settings:
            return settings[key].default
        return converter_parser().get_default(key)
    parts = name.split(".")
    for root in (Config(), DashboardConfig()):
        value = root
        for part in parts:
            value = getattr(value, part, None) if dataclasses.is_dataclass(value) else None
        if value is not None:
            return value
    found = [getattr(section, name) for section in _sections(Config()) if hasattr(section, name)]
    assert len(found) == 1, f"`{name}` names no single setting"
    return found[0]


def _sections(section):
    yield section
    for item in dataclasses.fields(section):
        value = getattr(section, item.name)
        if dataclasses.is_dataclass(value):
            yield from _sections(value)


def _documented_value(text: str):
    """A default as written in prose: `fer-kiosk`, 16 million, 30 min, 1 point, a, b, c."""
    text = " ".join(text.strip("` ").split())
    number = re.fullmatch(r"([\d.]+)\s*(million|min|s|points?)?", text)
    if number:
        scale = {"million": 1e6, "min": 60.0}.get(number.group(2), 1.0)
        return float(number.group(1)) * scale
    if "," in text:
        return tuple(word.strip() for word in text.split(","))
    return text


def test_every_documented_default_is_the_codes():
    """What README.md and docs/ say a setting's default is (the daemon's and the dashboard's
    config, training's and the converter's options), read from the prose, against the code;
    config.yaml and deploy/dashboard.yaml are held to the code by their own tests."""
    claims = 0
    for path in [
        ROOT / "README.md",
        ROOT / "edge" / "models" / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
    ]:
        for match in DOCUMENTED_DEFAULT.finditer(path.read_text(encoding="utf-8")):
            if match["name"] in NOT_OURS:
                continue
            said = _documented_value(match["given"] or match["before"] or match["to"])
            code = _code_default(match["name"])
            where = (
                f"{path.relative_to(ROOT)}: `{match['name']}` documented as {said!r}, the code says {code!r}"
            )
            if isinstance(said, float):
                assert isinstance(code, (int, float)) and math.isclose(said, code), where
            else:
                assert said == code, where
            claims += 1
    assert claims >= 15  # the pattern still finds what the documentation says


def test_defaults_said_in_prose_are_the_codes():
    from edge.config import DEFAULT_MAX_PIXELS
    from edge.tools.datasets import SPLIT_SEED, VALIDATION_FRACTION
    from training.settings import DEFAULT_L2, TrainSettings

    model_md = (ROOT / "docs" / "model.md").read_text(encoding="utf-8")
    training = re.search(
        r"Adam (\S+), batch (\d+); learning rate ×(\S+) after (\d+) epochs without a\s+better "
        r"validation loss; early stop after (\d+);",
        model_md,
    )
    defaults = TrainSettings(data="x")
    assert training and [float(v) for v in training.groups()] == [
        defaults.learning_rate,
        defaults.batch_size,
        defaults.lr_factor,
        defaults.lr_patience,
        defaults.stop_patience,
    ]
    assert f"L2 {DEFAULT_L2['mini_xception']:g} on the two plain convolutions" in model_md
    split = re.search(r"`stratified_split`, (\d+) %, seed (\d+) by default", model_md)
    assert split and (int(split[1]) / 100, int(split[2])) == (VALIDATION_FRACTION, SPLIT_SEED)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"above {DEFAULT_MAX_PIXELS // 1_000_000} MP: --max-pixels N" in readme


def test_shared_constants_are_not_retyped():
    """The exit status of a refused configuration, the log levels, the pixel limit and the
    reconnect floor are defined once (edge/config.py) and imported everywhere else."""
    import ast

    home = ROOT / "edge" / "config.py"
    retyped = []
    for folder in ("edge", "dashboard", "training", "converter", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == home:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                literal = isinstance(node, ast.Constant) and not isinstance(node.value, bool)
                if literal and node.value in (78, 16_000_000):
                    retyped.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value}")
                if isinstance(node, ast.Tuple) and [getattr(e, "value", None) for e in node.elts] == [
                    "DEBUG",
                    "INFO",
                    "WARNING",
                    "ERROR",
                ]:
                    retyped.append(f"{path.relative_to(ROOT)}:{node.lineno}: the log levels")
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "reconnect_delay_set":
                    if any(isinstance(arg, ast.Constant) for arg in node.args) and folder != "bench":
                        retyped.append(f"{path.relative_to(ROOT)}:{node.lineno}: a reconnect delay")
    assert retyped == []
