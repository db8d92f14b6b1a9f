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
