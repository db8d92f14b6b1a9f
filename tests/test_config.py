import pytest

from edge.config import Config, ConfigError, load_config, parse_config
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
        ({"camra": {}}, "camra: unknown key (expected one of camera, detector, model, tracking, mqtt, homeassistant, spool, log_level)"),
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
        ({"detector": {"min_face_size": 100, "max_face_size": 50}}, "detector.max_face_size: 50 is below min_face_size 100"),
        ({"detector": {"scale_factor": 1.0}}, "detector.scale_factor: must be at least 1.01, got 1.0"),
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
