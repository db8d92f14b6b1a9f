"""A bounded, ordered, on-disk queue of messages that must reach the broker.

One file per message, named by a sequence number, written atomically (temporary file,
fsync, rename), so a crash or power cut leaves either the whole message or none. A message
is removed only after the broker acknowledged it (PUBACK), so delivery is at least once:
a message sent just before a crash is sent again after the restart, and subscribers drop
the duplicate by its ``event_id``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from edge.payloads import Message

_LOGGER = logging.getLogger(__name__)


def default_spool_dir() -> Path:
    state = os.environ.get("STATE_DIRECTORY")  # set by systemd's StateDirectory=
    if state:
        return Path(state.split(":")[0]) / "spool"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fer-kiosk" / "spool"


class DiskSpool:
    def __init__(self, directory: str | Path, limit: int = 10_000):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.limit = limit
        self.dropped = 0
        self._lock = threading.Lock()
        for stale in self.directory.glob("*.tmp"):
            stale.unlink(missing_ok=True)
        self._names = sorted(p.name for p in self.directory.glob("*.json"))
        self._next = int(self._names[-1].split(".")[0]) + 1 if self._names else 1
        if self._names:
            _LOGGER.info("spool %s holds %d undelivered message(s) from before", self.directory, len(self._names))

    def append(self, message: Message) -> str:
        record = {"topic": message.topic, "payload": message.payload.decode(), "qos": message.qos, "retain": message.retain}
        with self._lock:
            name = f"{self._next:016d}.json"
            self._next += 1
            tmp = self.directory / (name + ".tmp")
            with open(tmp, "w") as handle:
                json.dump(record, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.directory / name)
            self._names.append(name)
            while len(self._names) > self.limit:
                oldest = self._names.pop(0)
                (self.directory / oldest).unlink(missing_ok=True)
                self.dropped += 1
                _LOGGER.warning("spool full (%d messages): dropped the oldest, %s", self.limit, oldest)
        return name

    def pending(self, skip: set[str] = frozenset()) -> list[tuple[str, Message]]:
        """Messages not yet acknowledged, oldest first, except those named in ``skip``
        (already sent and waiting for their acknowledgement: not read again)."""
        with self._lock:
            names = [name for name in self._names if name not in skip]
        out = []
        for name in names:
            try:
                record = json.loads((self.directory / name).read_text())
            except FileNotFoundError:
                continue  # acknowledged meanwhile
            except (OSError, ValueError) as err:
                _LOGGER.error("spool file %s is unreadable (%s); removing it", name, err)
                self.remove(name)
                continue
            out.append((name, Message(record["topic"], record["payload"].encode(), record["qos"], record["retain"])))
        return out

    def remove(self, name: str) -> None:
        with self._lock:
            if name in self._names:
                self._names.remove(name)
            (self.directory / name).unlink(missing_ok=True)

    def __len__(self) -> int:
        with self._lock:
            return len(self._names)
