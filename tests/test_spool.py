"""The spool on real files: malformed and unknown entries, failing writes, fsync."""

from __future__ import annotations

import json
import logging
import os
import resource
import signal

import pytest

from edge.mqtt.payloads import Message
from edge.mqtt.spool import DiskSpool, SpoolError, check_spool_dir


def message(n: int) -> Message:
    return Message("fer-kiosk/k/events", json.dumps({"type": "end", "event_id": f"e{n}"}).encode(), 1, False)


def event_ids(spool: DiskSpool) -> list[str]:
    return [json.loads(m.payload)["event_id"] for _, m in spool.pending()]


def test_malformed_entries_are_moved_aside_and_the_rest_go_on(tmp_path, caplog):
    directory = tmp_path / "spool"
    directory.mkdir()
    good = {"topic": "fer-kiosk/k/events", "payload": '{"event_id": "e1"}', "qos": 1, "retain": False}
    entries = {
        1: json.dumps({"topic": "x"}),  # the entry that used to kill the sender (KeyError)
        2: json.dumps(good),
        3: "{not json",
        4: json.dumps([1, 2]),
        5: json.dumps(dict(good, qos="1")),
        6: json.dumps(dict(good, topic="a/#")),
    }
    for n, text in entries.items():
        (directory / f"{n:016d}.json").write_text(text)
    (directory / f"{7:016d}.json").write_bytes(b"\xff\xfe\x00garbage")
    (directory / "notes.json").write_text("{}")  # not an entry: ignored, left alone
    (directory / "README").write_text("hello")
    spool = DiskSpool(directory)
    assert len(spool) == 7
    with caplog.at_level(logging.WARNING, logger="edge.mqtt.spool"):
        pending = spool.pending()
    assert [name for name, _ in pending] == [f"{2:016d}.json"]
    assert json.loads(pending[0][1].payload) == {"event_id": "e1"}
    moved = sorted(p.name for p in (directory / "bad").iterdir())
    assert moved == [f"{n:016d}.json" for n in (1, 3, 4, 5, 6, 7)]
    assert len(spool) == 1 and spool.moved_aside == 6
    assert (directory / "notes.json").exists() and (directory / "README").exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 6 and all("moved aside" in w for w in warnings)
    # new entries continue after the highest sequence number, in order
    spool.append(message(8))
    assert event_ids(spool) == ["e1", "e8"]
    assert DiskSpool(directory).pending()[-1][0] == f"{8:016d}.json"


def test_spool_path_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "spool"
    path.write_text("")
    assert "is not a folder" in check_spool_dir(path)
    with pytest.raises(SpoolError, match="is not a folder"):
        DiskSpool(path)
    assert check_spool_dir(tmp_path / "new" / "spool") is None  # created at start
    assert "cannot be created" in check_spool_dir(path / "below")


@pytest.fixture
def file_size_limit():
    """Writes past 4 KB fail with EFBIG: a real failing write, also for root (who is not
    stopped by file modes)."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def limit(on: bool):
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, old_limit[1]) if on else old_limit)

    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_failing_write_keeps_the_message_in_memory_logs_once_and_retries(
    tmp_path, caplog, file_size_limit, monkeypatch
):
    import edge.mqtt.spool

    spool = DiskSpool(tmp_path / "spool")
    spool.append(message(1))
    big = Message("fer-kiosk/k/events", json.dumps({"event_id": "e2", "pad": "x" * 8000}).encode(), 1, False)
    with caplog.at_level(logging.INFO, logger="edge.mqtt.spool"):
        file_size_limit(True)
        spool.append(big)  # fails: too large for the limit
        spool.append(message(3))  # kept behind it, in order, not tried before the retry is due
        spool.retry_writes()
        file_size_limit(False)
    assert spool.unsaved == 2 and len(spool) == 3
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == [f"{1:016d}.json"]  # no .tmp left over
    assert event_ids(spool) == ["e1", "e2", "e3"]  # still sendable, in order
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot write to the spool" in errors[0] and "File too large" in errors[0]
    # retried once the retry is due: written in order, the backlog is gone
    monkeypatch.setattr(edge.mqtt.spool, "RETRY_SECONDS", 0.0)
    spool._next_retry = 0.0
    spool.retry_writes()
    assert spool.unsaved == 0
    assert event_ids(DiskSpool(tmp_path / "spool")) == ["e1", "e2", "e3"]


def test_delivered_in_memory_message_needs_no_file(tmp_path, file_size_limit):
    spool = DiskSpool(tmp_path / "spool")
    file_size_limit(True)
    try:
        spool.append(Message("t/x", b"y" * 9000, 1, False))
    finally:
        file_size_limit(False)
    ((name, _),) = spool.pending()
    spool.remove(name)  # acknowledged by the broker
    assert len(spool) == 0 and spool.unsaved == 0


def test_each_entry_and_the_folder_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    spool = DiskSpool(tmp_path / "spool")
    monkeypatch.setattr(os, "fsync", fsync)
    spool.append(message(1))
    assert synced == [f"{1:016d}.json.tmp", "spool"]  # the file, then its folder after the rename
