"""The dashboard's configuration: validated once at start, like the daemon's (exit 78)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.config import (
    LOG_LEVELS,
    MqttConfig,
    allowed,
    default_state_path,
    parse_section,
    read_config_data,
    safe_topic_part,
)

STORE_FILE = "dashboard.sqlite3"


@dataclass(frozen=True)
class HttpConfig:
    host: str = "127.0.0.1"  # 0.0.0.0: every interface (a tablet on the counter's network)
    port: int = field(default=8080, metadata=allowed(1, 65535))


@dataclass(frozen=True)
class StoreConfig:
    # The SQLite file that keeps visit summaries and alerts (never pixels). Empty: the unit's
    # StateDirectory= under systemd ($STATE_DIRECTORY/dashboard.sqlite3), else the user's
    # state folder ($XDG_STATE_HOME, by default ~/.local/state, /fer-kiosk/dashboard.sqlite3).
    path: str = ""
    # Summaries and alerts older than this many days are deleted (checked hourly).
    retention_days: int = field(default=90, metadata=allowed(1, 3650))
    # How many days back the page's history view reaches.
    history_days: int = field(default=28, metadata=allowed(1, 366))

    def problems(self) -> list[tuple[str, str]]:
        if self.path and Path(self.path).is_dir():
            return [("path", f"{self.path} is a folder; name the database file")]
        return []


@dataclass(frozen=True)
class AlertsConfig:
    # A cleared alert stays listed under "recent alerts" on its tile this long.
    keep_seconds: float = field(default=1800.0, metadata=allowed(0, 7 * 86400))


@dataclass(frozen=True)
class DashboardConfig:
    http: HttpConfig = field(default_factory=HttpConfig)
    # The broker and topic prefix, as in the kiosks' config and checked by the same rules;
    # give the dashboard its own, read-only login (mqtt.username / mqtt.credentials_file:
    # see deploy/mosquitto/acl). mqtt.client_id names its persistent session (empty:
    # fer-kiosk-dashboard-<host name>).
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    # A device not heard from for this long is marked stale (it publishes stats every
    # mqtt.stats_interval_seconds, 30 s by default, and state on every change).
    stale_seconds: float = field(default=90.0, metadata=allowed(1, 86400))
    # At most this many tile updates per second per browser (coalesced, newest wins).
    max_updates_per_second: float = field(default=10.0, metadata=allowed(0.5, 100))
    log_level: str = field(default="INFO", metadata=allowed(choices=LOG_LEVELS))

    @property
    def client_id(self) -> str:
        """The MQTT client id, stable across restarts: the broker keeps its session by it."""
        host = safe_topic_part(socket.gethostname().split(".")[0])
        return self.mqtt.client_id or f"fer-kiosk-dashboard-{host}"

    @property
    def store_path(self) -> Path:
        return Path(self.store.path) if self.store.path else default_state_path(STORE_FILE)


def _resolve_store_path(data: Any, base: Path) -> Any:
    """store.path relative to the config file, as the daemon's file paths are."""
    if isinstance(data, dict) and isinstance(data.get("store"), dict):
        path = data["store"].get("path")
        if isinstance(path, str) and path and not os.path.isabs(path):
            data = {**data, "store": {**data["store"], "path": str(base / path)}}
    return data


def load_dashboard_config(path: str | Path | None) -> DashboardConfig:
    """The validated dashboard config (ConfigError naming each bad key); no path: defaults."""
    if path is None:
        return DashboardConfig()
    data = _resolve_store_path(read_config_data(path), Path(path).absolute().parent)
    return parse_section(DashboardConfig, data, str(path))
