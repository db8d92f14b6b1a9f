"""Logging to the journal without systemd-python: the native protocol and its fallback."""

from __future__ import annotations

import logging
import socket
import struct

from edge.daemon.systemd import JournalHandler, journal_datagram, journal_priority


def parse_datagram(data: bytes) -> dict[str, str]:
    """The reader's side of the journal's native protocol (as journald parses it)."""
    fields, rest = {}, data
    while rest:
        line, _, after = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            rest = after
        else:  # KEY \n <u64 length> <bytes> \n
            (length,) = struct.unpack("<Q", after[:8])
            fields[line.decode()] = after[8 : 8 + length].decode()
            assert after[8 + length : 9 + length] == b"\n"
            rest = after[9 + length :]
    return fields


def test_priorities_follow_syslog():
    assert [journal_priority(level) for level in (10, 20, 30, 40, 50)] == [7, 6, 4, 3, 2]
    assert journal_priority(25) == 6 and journal_priority(5) == 7


def test_multiline_values_use_the_binary_framing():
    data = journal_datagram({"MESSAGE": "one\ntwo", "PRIORITY": "3"})
    assert data.startswith(b"MESSAGE\n" + struct.pack("<Q", 7) + b"one\ntwo\n")
    assert parse_datagram(data) == {"MESSAGE": "one\ntwo", "PRIORITY": "3"}


def test_records_reach_the_socket_with_structured_fields(tmp_path):
    address = str(tmp_path / "journal.socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as journal:
        journal.bind(address)
        journal.settimeout(5)
        handler = JournalHandler(address)
        logger = logging.getLogger("edge.test_journal")
        logger.addHandler(handler)
        logger.propagate = False
        try:
            logger.warning("camera %s: no such device", 0)
            try:
                raise ValueError("broken")
            except ValueError:
                logger.exception("visit lost")
        finally:
            logger.removeHandler(handler)
            handler.close()
        first = parse_datagram(journal.recv(65536))
        second = parse_datagram(journal.recv(65536))
    assert first["MESSAGE"] == "edge.test_journal: camera 0: no such device"
    assert first["PRIORITY"] == "4" and first["SYSLOG_IDENTIFIER"] == "fer-kiosk"
    assert first["LOGGER"] == "edge.test_journal" and first["CODE_FUNC"].startswith("test_records")
    assert second["PRIORITY"] == "3" and "ValueError: broken" in second["TRACEBACK"]


def test_a_socket_that_refuses_falls_back_to_prefixed_stderr(tmp_path, capsys):
    handler = JournalHandler(str(tmp_path / "no-journal-here"))
    logger = logging.getLogger("edge.test_fallback")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("spool full")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert capsys.readouterr().err == "<3>edge.test_fallback: spool full\n"
