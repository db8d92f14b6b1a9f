"""The dashboard's configuration: validated once at start, like the daemon's (exit 78)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge.config import ConfigError, MqttConfig, _range, parse_section, read_config_data


@dataclass(frozen=True)
class HttpConfig:
    host: str = "127.0.0.1"  # 0.0.0.0: every interface (a tablet on the counter's network)
    port: int = field(default=8080, metadata=_range(1, 65535))


@dataclass(frozen=True)
class DashboardConfig:
    http: HttpConfig = field(default_factory=HttpConfig)
    # The broker and topic prefix, as in the kiosks' config; give the dashboard its own,
    # read-only login (mqtt.username / mqtt.credentials_file: see deploy/mosquitto/acl).
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    # A device not heard from for this long is marked stale (it publishes stats every
    # mqtt.stats_interval_seconds, 30 s by default, and state on every change).
    stale_seconds: float = field(default=90.0, metadata=_range(1, 86400))
    # At most this many tile updates per second per browser (coalesced, newest wins).
    max_updates_per_second: float = field(default=10.0, metadata=_range(0.5, 100))
    log_level: str = field(default="INFO", metadata=_range(choices=("DEBUG", "INFO", "WARNING", "ERROR")))


def load_dashboard_config(path: str | Path | None) -> DashboardConfig:
    if path is None:
        return DashboardConfig()
    config = parse_section(DashboardConfig, read_config_data(path), str(path))
    prefix = config.mqtt.topic_prefix
    if not prefix or any(ch in prefix for ch in "#+"):
        raise ConfigError(["mqtt.topic_prefix: must be a plain topic prefix"], str(path))
    return config
