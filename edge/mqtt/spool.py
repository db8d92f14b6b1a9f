"""A bounded, ordered, on-disk queue of messages that must reach the broker.

One file per message, named by a sequence number, written atomically (temporary file,
fsync, rename, fsync of the folder), so a crash or power cut leaves either the whole
message or none. A message is removed only after the broker acknowledged it (PUBACK), so
delivery is at least once: a message sent just before a crash is sent again after the
restart, and subscribers drop the duplicate by its ``event_id``.

The spool never stops and never loses on its own account:
- entries are validated when read; a malformed one is moved aside to ``bad/`` with a
  warning and the others go on; files that are not entries (``notes.json``) are ignored;
- a write that fails (disk full, folder not writable) keeps the message in memory, in
  order, where it can still be sent; the failure is logged once, the write retried
  (``retry_writes``) and the backlog counted (``unsaved``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path

from edge.mqtt.payloads import Message

_LOGGER = logging.getLogger(__name__)

ENTRY = re.compile(r"^\d{16}\.json$")
BAD_FOLDER = "bad"
RETRY_SECONDS = 5.0


class SpoolError(Exception):
    """The spool folder cannot be used at all (its path is a file, it cannot be created or
    listed); the message names the folder and what is wrong."""


def check_spool_dir(directory: str | Path) -> str | None:
    """What makes ``directory`` unusable as the spool (None: usable), without creating it:
    a file in the way, a folder that cannot be written, or no way to create it."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        return f"{path} is not a folder (a file of that name is in the way)"
    if path.is_dir():
        try:
            fd, name = tempfile.mkstemp(dir=path, prefix=".write-test-")
            os.close(fd)
            os.unlink(name)
        except OSError as err:
            return f"{path}: cannot write in this folder ({err.strerror})"
        return None
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{path} cannot be created: {parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{path} cannot be created: {parent} is not writable"
    return None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _record(message: Message) -> dict:
    return {
        "topic": message.topic,
        "payload": message.payload.decode(),
        "qos": message.qos,
        "retain": message.retain,
    }


def _message(record: object) -> Message:
    """The message of a spool record; ValueError says what is wrong with it."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    topic, payload, qos, retain = (record.get(k) for k in ("topic", "payload", "qos", "retain"))
    if not isinstance(topic, str) or not topic or any(ch in topic for ch in "#+\x00"):
        raise ValueError("no valid topic")
    if not isinstance(payload, str):
        raise ValueError("no payload string")
    if qos not in (0, 1, 2) or isinstance(qos, bool):
        raise ValueError("qos is not 0, 1 or 2")
    if not isinstance(retain, bool):
        raise ValueError("retain is not true or false")
    return Message(topic, payload.encode(), qos, retain)


class DiskSpool:
    def __init__(self, directory: str | Path, limit: int = 10_000, max_age_seconds: float = 0.0):
        self.directory = Path(directory)
        self.limit = limit
        self.max_age_seconds = max_age_seconds  # 0: kept until delivered
        self.expired = 0
        self._next_expire = 0.0  # monotonic: expire() looks at the files at most hourly
        self.dropped = 0
        self.moved_aside = 0
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # one writer of the backlog at a time
        self._unsaved: dict[str, dict] = {}  # name -> record, waiting to be written (in order)
        self._labels: dict[str, str] = {}  # name -> what the log calls it, until written
        self._write_error: str | None = None
        self._next_retry = 0.0
        self._unremovable: set[str] = set()
        try:
            if self.directory.exists() and not self.directory.is_dir():
                raise SpoolError(f"{self.directory} is not a folder (a file of that name is in the way)")
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            for stale in self.directory.glob("*.tmp"):
                stale.unlink(missing_ok=True)
            names = [p.name for p in self.directory.iterdir()]
        except OSError as err:
            raise SpoolError(f"{self.directory}: cannot use this folder ({err.strerror})") from None
        self._names = sorted(n for n in names if ENTRY.match(n))
        others = [n for n in names if not ENTRY.match(n) and n != BAD_FOLDER]
        if others:
            _LOGGER.info(
                "spool %s: ignoring %d file(s) that are not spool entries (%s)",
                self.directory,
                len(others),
                ", ".join(sorted(others)[:3]) + (", ..." if len(others) > 3 else ""),
            )
        self._next = int(self._names[-1].split(".")[0]) + 1 if self._names else 1
        self.expire()
        if self._names:
            _LOGGER.info(
                "spool %s holds %d undelivered message(s) from before", self.directory, len(self._names)
            )

    def expire(self, now: float | None = None) -> int:
        """Deletes entries older than ``max_age_seconds`` (by the time they were written): a
        visit summary is not kept for ever on a box whose broker never comes back."""
        if not self.max_age_seconds or (now is None and time.monotonic() < self._next_expire):
            return 0
        self._next_expire = time.monotonic() + 3600
        cutoff = (time.time() if now is None else now) - self.max_age_seconds
        with self._lock:
            names = [n for n in self._names if n not in self._unsaved]
        old = []
        for name in names:
            try:
                if (self.directory / name).stat().st_mtime < cutoff:
                    old.append(name)
            except OSError:
                continue
        for name in old:
            self.remove(name)
        if old:
            self.expired += len(old)
            _LOGGER.warning(
                "spool %s: deleted %d undelivered visit summar%s older than %.0f days (spool.max_age_days)",
                self.directory,
                len(old),
                "y" if len(old) == 1 else "ies",
                self.max_age_seconds / 86400,
            )
        return len(old)

    # -- writing --------------------------------------------------------------------------

    def _write(self, name: str, record: dict) -> None:
        tmp = self.directory / (name + ".tmp")
        try:
            with open(tmp, "w") as handle:
                json.dump(record, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.directory / name)
            _fsync_dir(self.directory)  # the rename itself must survive a power cut
        except OSError:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise

    def _write_unsaved(self) -> bool:
        """Writes the in-memory backlog to disk, oldest first; False at the first failure
        (logged once per kind of failure), after which it waits RETRY_SECONDS. The files
        are written outside ``_lock`` (one writer at a time), so that ``append`` and
        ``remove`` (paho's acknowledgements) never wait for an fsync."""
        with self._writing:
            with self._lock:
                if not self._unsaved or (
                    self._write_error is not None and time.monotonic() < self._next_retry
                ):
                    return not self._unsaved
                backlog = list(self._unsaved.items())
            for name, record in backlog:
                try:
                    self._write(name, record)
                except OSError as err:
                    with self._lock:
                        self._write_failed(f"{err.strerror or err}")
                    return False
                with self._lock:
                    label = self._labels.pop(name, "")
                    written = self._unsaved.pop(name, None) is not None
                if not written:  # acknowledged or dropped while it was written: not kept
                    self._unlink(name)
                    continue
                _LOGGER.debug("spooled %s (%s)", label or "a message", name)
            with self._lock:
                if self._write_error is not None:
                    _LOGGER.warning("the spool %s is writable again: the backlog is on disk", self.directory)
                    self._write_error = None
            return True

    def _write_failed(self, problem: str) -> None:
        """Call with the lock held."""
        if problem != self._write_error:
            _LOGGER.error(
                "cannot write to the spool %s (%s): keeping %d visit summar%s in memory, "
                "still sent when the broker is there; retrying every %.0f s",
                self.directory,
                problem,
                len(self._unsaved),
                "y" if len(self._unsaved) == 1 else "ies",
                RETRY_SECONDS,
            )
            self._write_error = problem
        self._next_retry = time.monotonic() + RETRY_SECONDS

    def append(self, message: Message, write: bool = True) -> str:
        """Keeps ``message`` (in order) and writes it to disk; ``write`` False keeps it in
        memory only, for ``save`` to write from another thread (no disk wait for the caller)."""
        record = _record(message)
        with self._lock:
            name = f"{self._next:016d}.json"
            self._next += 1
            self._unsaved[name] = record
            self._labels[name] = message.label
            self._names.append(name)
            while len(self._names) > self.limit:
                oldest = self._names.pop(0)
                self._labels.pop(oldest, None)
                if self._unsaved.pop(oldest, None) is None:
                    self._unlink(oldest)
                self.dropped += 1
                _LOGGER.warning("spool full (%d messages): dropped the oldest, %s", self.limit, oldest)
        if write:
            self._write_unsaved()
        return name

    def save(self) -> None:
        """Writes what ``append(write=False)`` kept in memory (after a failure to write, at
        most every RETRY_SECONDS)."""
        self._write_unsaved()

    def retry_writes(self) -> None:
        """Tries again to write what is kept in memory (at most every RETRY_SECONDS)."""
        self._write_unsaved()

    @property
    def unsaved(self) -> int:
        """Messages kept only in memory because the spool could not be written."""
        with self._lock:
            return len(self._unsaved)

    # -- reading --------------------------------------------------------------------------

    def pending(self, skip: set[str] = frozenset()) -> list[tuple[str, Message]]:
        """Messages not yet acknowledged, oldest first, except those named in ``skip``
        (already sent and waiting for their acknowledgement: not read again)."""
        with self._lock:
            names = [name for name in self._names if name not in skip]
            unsaved = dict(self._unsaved)
        out = []
        for name in names:
            if name in unsaved:
                out.append((name, _message(unsaved[name])))
                continue
            try:
                record = json.loads((self.directory / name).read_bytes())
                out.append((name, _message(record)))
            except FileNotFoundError:
                with self._lock:  # acknowledged meanwhile, or removed by hand
                    if name in self._names and not (self.directory / name).exists():
                        self._names.remove(name)
            except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                self._move_aside(name, err)
        return out

    def _move_aside(self, name: str, err: Exception) -> None:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)[:200]
        bad = self.directory / BAD_FOLDER
        try:
            bad.mkdir(exist_ok=True, mode=0o700)
            target = bad / name
            if target.exists():
                target = bad / f"{name}.{time.time_ns()}"
            os.replace(self.directory / name, target)
            _LOGGER.warning(
                "spool entry %s is malformed (%s): moved aside to %s; the others go on", name, reason, target
            )
        except OSError as move_err:
            _LOGGER.warning(
                "spool entry %s is malformed (%s) and cannot be moved aside (%s): skipped",
                name,
                reason,
                move_err.strerror,
            )
        with self._lock:
            if name in self._names:
                self._names.remove(name)
            self.moved_aside += 1

    # -- removing -------------------------------------------------------------------------

    def _unlink(self, name: str) -> None:
        try:
            (self.directory / name).unlink(missing_ok=True)
        except OSError as err:
            # Delivered, but its file stays: sent again after a restart (at least once).
            if not self._unremovable:
                _LOGGER.error(
                    "cannot remove delivered spool entry %s (%s); it will be sent again after a restart",
                    name,
                    err.strerror,
                )
            self._unremovable.add(name)

    def remove(self, name: str) -> None:
        with self._lock:
            if name in self._names:
                self._names.remove(name)
            self._labels.pop(name, None)
            if self._unsaved.pop(name, None) is None:
                self._unlink(name)

    def __len__(self) -> int:
        with self._lock:
            return len(self._names)
