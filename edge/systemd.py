"""Telling systemd the truth: READY, WATCHDOG, STATUS, STOPPING (sd_notify), and the journal.

Uses systemd-python (``systemd.daemon.notify``, ``systemd.journal.JournalHandler``) when it
is installed. Without it, notifications still reach systemd through the documented
datagram protocol on $NOTIFY_SOCKET; without $NOTIFY_SOCKET (not under systemd) every call
is a no-op, so the daemon runs the same anywhere.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

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
        try:
            from systemd import daemon  # systemd-python

            self._notify = lambda state: daemon.notify(state)
        except ImportError:
            pass

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


def log_handler() -> logging.Handler:
    """The journal under systemd (with structured fields), stderr otherwise."""
    if under_journal():
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER="fer-kiosk")
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            return handler
        except ImportError:
            handler = logging.StreamHandler(sys.stderr)
            # journald adds its own time stamps; <N> prefixes carry the priority.
            handler.setFormatter(_JournalPrefixFormatter())
            return handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


class _JournalPrefixFormatter(logging.Formatter):
    _PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self._PRIORITY.get(record.levelno, 6)}>{record.name}: {record.getMessage()}"
