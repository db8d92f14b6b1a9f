"""Telling systemd the truth: READY, WATCHDOG, STATUS, STOPPING (sd_notify), and the journal.

Pure Python, so the kiosk box needs no compiler and no systemd-python: notifications go
through the documented datagram protocol on $NOTIFY_SOCKET (sd_notify(3)); log records go
to the journal's native socket with structured fields (systemd.journal-fields(7),
https://systemd.io/JOURNAL_NATIVE_PROTOCOL/), or, if that socket cannot take them, to stderr
with the ``<N>`` priority prefixes journald reads (SyslogLevelPrefix=, on by default).
Without $NOTIFY_SOCKET (not under systemd) every notification is a no-op, so the daemon
runs the same anywhere.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
import traceback

_LOGGER = logging.getLogger(__name__)


def _socket_notify(state: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
        return True
    except OSError as err:
        _LOGGER.debug("sd_notify to %s failed: %s", address, err)
        return False


class Notifier:
    def __init__(self, environ=os.environ):
        self.enabled = bool(environ.get("NOTIFY_SOCKET"))
        usec = environ.get("WATCHDOG_USEC")
        pid = environ.get("WATCHDOG_PID")
        watchdog_for_us = usec and (not pid or pid == str(os.getpid()))
        # Ping twice per watchdog period, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval = int(usec) / 2e6 if watchdog_for_us and usec.isdigit() else None
        self._notify = _socket_notify

    def notify(self, state: str) -> None:
        if self.enabled:
            self._notify(state)

    def ready(self, status: str = "") -> None:
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def reloading(self) -> None:
        self.notify("RELOADING=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")


def under_journal(environ=os.environ) -> bool:
    """True when stderr is connected to the journal (systemd sets JOURNAL_STREAM)."""
    stream = environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        device, inode = (int(v) for v in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
        return st.st_dev == device and st.st_ino == inode
    except (ValueError, OSError):
        return False


JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_IDENTIFIER = "fer-kiosk"
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def journal_priority(levelno: int) -> int:
    """syslog priority of a logging level (2 crit ... 7 debug); between levels, the lower one."""
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


def journal_datagram(fields: dict[str, str]) -> bytes:
    """One entry in the journal's native protocol: ``KEY=value`` lines; a value with a
    newline is sent as ``KEY``, newline, its length as 64-bit little endian, the bytes."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def record_fields(record: logging.LogRecord, message: str) -> dict[str, str]:
    """The journal fields of a log record: message, priority, where it was logged."""
    fields = {
        "MESSAGE": message,
        "PRIORITY": str(journal_priority(record.levelno)),
        "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
        "LOGGER": record.name,
        "CODE_FILE": record.pathname,
        "CODE_LINE": str(record.lineno),
        "CODE_FUNC": record.funcName,
        "THREAD_NAME": record.threadName or "",
    }
    if record.exc_info and record.exc_info[0] is not None:
        fields["TRACEBACK"] = "".join(traceback.format_exception(*record.exc_info))
    return fields


class JournalHandler(logging.Handler):
    """Log records as structured journal entries over the native socket. A record the
    socket refuses (journald restarting, an entry too large for one datagram) goes to
    stderr with its priority prefix instead: no line is ever dropped."""

    def __init__(self, address: str = JOURNAL_SOCKET, fallback: logging.Handler | None = None):
        super().__init__()
        self.address = address
        self.fallback = fallback or _prefixed_stderr_handler()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = f"{record.name}: {record.getMessage()}"
            self._sock.sendto(journal_datagram(record_fields(record, message)), self.address)
        except OSError:
            self.fallback.handle(record)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()


def _prefixed_stderr_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    # journald adds its own time stamps; <N> prefixes carry the priority.
    handler.setFormatter(_JournalPrefixFormatter())
    return handler


def log_handler(journal_socket: str = JOURNAL_SOCKET) -> logging.Handler:
    """The journal under systemd (with structured fields), stderr otherwise."""
    if under_journal():
        if os.path.exists(journal_socket):
            return JournalHandler(journal_socket)
        return _prefixed_stderr_handler()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


class _JournalPrefixFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = f"<{journal_priority(record.levelno)}>{record.name}: {record.getMessage()}"
        if record.exc_info:
            # Every line of a traceback keeps the priority, or journald files it as info.
            prefix = f"<{journal_priority(record.levelno)}>"
            text += "".join(
                "\n" + prefix + line for line in self.formatException(record.exc_info).splitlines()
            )
        return text
