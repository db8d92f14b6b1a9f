"""One rule for every input, with real files, real signals and a real Mosquitto: a file the
daemon cannot use gives one line naming it, and exit 78 from `check` and from `run`; a
fault at run time (a bad reload, a malformed spool entry, a spool that cannot be written)
leaves the daemon running and loses no visit summary. Never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from bench.clips import one_visit_clip, visits_clip
from bench.harness import NotifySocket
from tests.conftest import ROOT, wait_until
from tests.helpers import SCHEMAS, config_file


def edge(*args: str, config: Path, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args, "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        **kwargs,
    )


def openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def self_signed(directory: Path, name: str, *extra: str) -> tuple[Path, Path]:
    openssl(
        directory,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.crt",
        *(extra or ("-nodes",)),
    )
    return directory / f"{name}.crt", directory / f"{name}.key"


def _drop_file_mode_override() -> None:
    """In the child, before exec: root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
    (dropped from the bounding set, so gone after exec) obeys file modes like any user."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def obeying_file_modes() -> dict:
    """subprocess arguments that make the child subject to file modes (root is not)."""
    return {"preexec_fn": _drop_file_mode_override} if os.geteuid() == 0 else {}


def unreadable(path: Path) -> dict:
    """Makes ``path`` unreadable for the process that `check`/`run` becomes; returns the
    keyword arguments for subprocess.run."""
    os.chmod(path, 0o000)
    return obeying_file_modes()


# name -> (files to write, config section values, expected error text)
def make_case(case: str, d: Path) -> tuple[dict, str, dict]:
    """(config, expected text in the one error line, extra subprocess arguments)."""
    mqtt: dict = {}
    config: dict = {"spool": {"path": str(d / "spool")}, "mqtt": mqtt}
    creds = d / "credentials"
    kwargs: dict = {}
    if case == "credentials malformed":
        creds.write_text("user: kiosk\npassword: secret\n")
        expected = f"mqtt.credentials_file: {creds} line 1: expected username=... or password=..."
    elif case == "credentials with BOM":
        creds.write_bytes(b"\xef\xbb\xbfusername=kiosk\npassword=secret\n")
        expected = f"mqtt.credentials_file: {creds}: starts with a UTF-8 byte-order mark"
    elif case == "credentials in latin-1":
        creds.write_bytes("username=kiosk\npassword=gl\u00fcck\n".encode("latin-1"))
        expected = f"mqtt.credentials_file: {creds} line 2: not UTF-8"
    elif case == "credentials unreadable":
        creds.write_text("username=kiosk\npassword=secret\n")
        kwargs = unreadable(creds)
        expected = f"mqtt.credentials_file: {creds}: cannot read (Permission denied)"
    elif case == "credentials given twice":
        creds.write_text("username=a\nusername=b\n")
        expected = f"mqtt.credentials_file: {creds} line 2: username is given a second time"
    elif case == "CA not PEM":
        (d / "ca.crt").write_bytes(os.urandom(600))
        mqtt["tls"] = {"enabled": True, "ca_file": str(d / "ca.crt")}
        expected = f"mqtt.tls.ca_file: {d / 'ca.crt'}: no PEM certificate in it"
    elif case == "CA is a key":
        _, key = self_signed(d, "ca")
        mqtt["tls"] = {"enabled": True, "ca_file": str(key)}
        expected = f"mqtt.tls.ca_file: {key}: no PEM certificate in it"
    elif case == "client cert not PEM":
        _, key = self_signed(d, "client")
        (d / "client.crt").write_text("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
        mqtt["tls"] = {"enabled": True, "cert_file": str(d / "client.crt"), "key_file": str(key)}
        expected = f"mqtt.tls.cert_file: {d / 'client.crt'}: no PEM certificate in it"
    elif case == "client key of another cert":
        cert, _ = self_signed(d, "client")
        _, other = self_signed(d, "other")
        mqtt["tls"] = {"enabled": True, "cert_file": str(cert), "key_file": str(other)}
        expected = f"mqtt.tls.key_file: {other}: the private key does not belong to the certificate"
    elif case == "client key encrypted":
        cert, key = self_signed(d, "client", "-passout", "pass:secret")
        mqtt["tls"] = {"enabled": True, "cert_file": str(cert), "key_file": str(key)}
        expected = f"mqtt.tls.key_file: {key}: the private key is encrypted"
    elif case == "spool path is a file":
        (d / "spool").write_text("")
        expected = f"spool.path: {d / 'spool'} is not a folder"
    elif case == "cascade malformed":
        (d / "cascade.xml").write_text(
            '<?xml version="1.0"?>\n<opencv_storage><cascade>x</cascade></opencv_storage>\n'
        )
        config["detector"] = {"cascade": str(d / "cascade.xml")}
        expected = f"detector.cascade: {d / 'cascade.xml'}: not a valid Haar cascade"
    elif case == "cascade not XML":
        (d / "cascade.xml").write_bytes(os.urandom(300))
        config["detector"] = {"cascade": str(d / "cascade.xml")}
        expected = f"detector.cascade: {d / 'cascade.xml'}: not an OpenCV Haar cascade"
    else:
        raise AssertionError(case)
    if creds.exists():
        mqtt["credentials_file"] = str(creds)
        if case != "credentials unreadable":
            os.chmod(creds, 0o600)
    return config, expected, kwargs


CASES = [
    "credentials malformed",
    "credentials with BOM",
    "credentials in latin-1",
    "credentials unreadable",
    "credentials given twice",
    "CA not PEM",
    "CA is a key",
    "client cert not PEM",
    "client key of another cert",
    "client key encrypted",
    "spool path is a file",
    "cascade malformed",
    "cascade not XML",
]


@pytest.fixture
def shared_dir():
    """A temporary folder of its own, outside pytest's (removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix="fer-kiosk-test-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("case", CASES)
def test_check_and_run_refuse_an_unusable_file_in_one_line_with_78(shared_dir, case):
    config_data, expected, kwargs = make_case(case, shared_dir)
    config = shared_dir / "config.yaml"
    config.write_text(yaml.safe_dump(config_data))
    os.chmod(config, 0o644)
    check = edge("check", config=config, **kwargs)
    errors = [line for line in check.stderr.splitlines() if line.startswith("error:")]
    assert check.returncode == 78, check.stderr
    assert len(errors) == 1 and expected in errors[0], check.stderr
    assert "Traceback" not in check.stderr and "secret" not in check.stderr + check.stdout
    run = edge("run", config=config, **kwargs)
    assert run.returncode == 78, run.stderr[-2000:]
    assert expected in run.stderr and "Traceback" not in run.stderr and "secret" not in run.stderr


def test_credentials_readable_by_others_are_used_with_a_warning(tmp_path):
    creds = tmp_path / "credentials"
    creds.write_text("username=kiosk\npassword=secret\n")
    os.chmod(creds, 0o644)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"mqtt": {"credentials_file": str(creds)}, "spool": {"path": str(tmp_path / "s")}})
    )
    check = edge("check", config=config)
    assert check.returncode == 0 and "valid" in check.stdout
    assert (
        f"warning: mqtt.credentials_file: {creds} has mode 0644: the password is readable by everyone; "
        "chmod 600 it" in check.stderr.splitlines()
    )


def test_unwritable_spool_folder_is_refused_by_check(shared_dir):
    spool = shared_dir / "spool"
    spool.mkdir()
    kwargs = unreadable(spool)
    config = shared_dir / "config.yaml"
    config.write_text(yaml.safe_dump({"spool": {"path": str(spool)}}))
    os.chmod(config, 0o644)
    check = edge("check", config=config, **kwargs)
    assert check.returncode == 78
    assert (
        check.stderr.strip() == f"error: spool.path: {spool}: cannot write in this folder (Permission denied)"
    )


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("camera:\n  fps: 30\n".encode("utf-16"), "not UTF-8 text"),
        (os.urandom(2000).replace(b"\n", b" "), "not UTF-8 text"),
        (
            b'a: &a ["x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\n'
            b"camera: [*b,*b,*b,*b,*b,*b]\n",
            "aliases (*a) are not allowed",
        ),
        (
            b"tracking:\n  max_missing_seconds: .nan\n",
            "tracking.max_missing_seconds: expected a finite number, got nan",
        ),
        (b"camera:\n  fps: 30\n  fps: 25\n", "camera.fps: duplicate key (lines 2 and 3)"),
    ],
)
def test_unusable_config_file_gives_one_short_line_and_78(tmp_path, raw, expected):
    config = tmp_path / "config.yaml"
    config.write_bytes(raw)
    for command in ("check", "run"):
        result = edge(command, config=config)
        assert result.returncode == 78 and expected in result.stderr, result.stderr[-1000:]
        assert "Traceback" not in result.stderr and len(result.stderr) < 1000


# -- at run time -------------------------------------------------------------------------


def test_sighup_to_unusable_files_is_refused_and_the_daemon_keeps_running(
    tmp_path, broker, subscribe, run_daemon
):
    clip = one_visit_clip(tmp_path / "clip.avi")
    config = config_file(tmp_path, broker.port, str(clip), camera={"loop": True})
    good = yaml.safe_load(config.read_text())
    log = tmp_path / "d.log"
    sub = subscribe(broker.port, "fer-kiosk/svc/stats")
    daemon = run_daemon(config, log)
    bad_creds = tmp_path / "creds"
    bad_creds.write_bytes(b"\xef\xbb\xbfusername=kiosk\n")
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    (tmp_path / "spool-file").write_text("")
    (tmp_path / "cascade.xml").write_text("<opencv_storage><cascade>1</cascade></opencv_storage>")
    bad = [
        ({"mqtt": {"credentials_file": str(bad_creds)}}, "byte-order mark"),
        ({"mqtt": {"tls": {"enabled": True, "ca_file": str(tmp_path / "ca.pem")}}}, "mqtt.tls.ca_file"),
        ({"spool": {"path": str(tmp_path / "spool-file")}}, "is not a folder"),
        ({"detector": {"cascade": str(tmp_path / "cascade.xml")}}, "not a valid Haar cascade"),
    ]
    try:
        assert sub.wait_for(lambda: sub.json_on("/stats"), 30), log.read_text()[-2000:]
        for number, (change, expected) in enumerate(bad, 1):
            data = json.loads(json.dumps(good))
            for section, values in change.items():
                data[section] = {**data.get(section, {}), **values}
            config.write_text(yaml.safe_dump(data))
            daemon.send_signal(signal.SIGHUP)
            assert wait_until(lambda: log.read_text().count("reload refused") == number, 15), log.read_text()[
                -2000:
            ]
            assert expected in log.read_text().split("reload refused")[-1]
        config.write_bytes("camera:\n  fps: 30\n".encode("utf-16"))
        daemon.send_signal(signal.SIGHUP)
        assert wait_until(lambda: log.read_text().count("reload refused") == len(bad) + 1, 15)
        seen = len(sub.json_on("/stats"))
        assert sub.wait_for(lambda: len(sub.json_on("/stats")) >= seen + 2, 10), (
            "the daemon stopped publishing"
        )
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
    text = log.read_text()
    assert "Traceback" not in text and "reloaded configuration" not in text


def spool_entry(n: int, event_id: str) -> dict:
    payload = {"v": 1, "type": "end", "event_id": event_id}
    return {"topic": "fer-kiosk/svc/events", "payload": json.dumps(payload), "qos": 1, "retain": False}


def test_malformed_and_unknown_spool_files_do_not_stop_delivery(tmp_path, broker, subscribe, run_daemon):
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / f"{1:016d}.json").write_text(json.dumps({"topic": "x"}))  # stopped all delivery before
    (spool / f"{2:016d}.json").write_text(json.dumps(spool_entry(2, "old-1")))
    (spool / f"{3:016d}.json").write_text("{truncated")
    (spool / f"{4:016d}.json").write_text(json.dumps(spool_entry(4, "old-2")))
    (spool / "notes.json").write_text("{}")  # exit 1 at start before
    (spool / "stray").write_text("x")
    clip = visits_clip(tmp_path / "visits.avi", visits=2, visit_seconds=2.0, gap_seconds=1.5)
    config = config_file(tmp_path, broker.port, str(clip))
    log = tmp_path / "d.log"
    sub = subscribe(broker.port, "fer-kiosk/svc/events")
    assert edge("check", config=config).returncode == 0
    daemon = run_daemon(config, log)
    ends = lambda: [e for e in sub.json_on("/events") if e["type"] == "end"]  # noqa: E731
    try:
        assert sub.wait_for(lambda: len({e["event_id"] for e in ends()}) >= 4, 40), log.read_text()[-3000:]
        assert daemon.poll() is None
        assert wait_until(
            lambda: sorted(p.name for p in spool.iterdir()) == ["bad", "notes.json", "stray"], 10
        )
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
    ids = [e["event_id"] for e in ends()]
    assert ids[:2] == ["old-1", "old-2"] and len(set(ids)) == 4
    assert sorted(p.name for p in (spool / "bad").iterdir()) == [f"{1:016d}.json", f"{3:016d}.json"]
    text = log.read_text()
    assert text.count("moved aside") == 2 and "Traceback" not in text


def fill(directory: Path) -> None:
    """Fills the file system of ``directory`` to the last byte."""
    for name, chunk in (("filler", 4096), ("filler-last-bytes", 1)):
        try:
            with open(directory / name, "wb", buffering=0) as handle:
                while True:
                    handle.write(b"\0" * chunk)
        except OSError:
            pass


@pytest.mark.parametrize("fault", ["disk full", "folder not writable"])
def test_a_spool_that_cannot_be_written_loses_no_visit_and_the_daemon_keeps_running(
    shared_dir, broker, subscribe, fault, run_daemon
):
    """ENOSPC on a full tmpfs, or EACCES on a folder the daemon may no longer write: the
    summaries stay in memory, are reported, and reach the broker when it returns; the
    failure is logged once."""
    spool = shared_dir / "spool"
    spool.mkdir()
    kwargs: dict = {}
    if fault == "disk full":
        if (
            os.geteuid() != 0
            or subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(spool)], capture_output=True
            ).returncode
            != 0
        ):
            pytest.skip("mounting a small tmpfs needs root")
    else:
        kwargs = obeying_file_modes()
    try:
        clip = visits_clip(shared_dir / "visits.avi", visits=2, visit_seconds=2.0, gap_seconds=1.5)
        os.chmod(clip, 0o644)
        notify = NotifySocket(shared_dir / "notify.sock")
        os.chmod(notify.path, 0o777)
        config = config_file(shared_dir, broker.port, str(clip), camera={"loop": True})
        os.chmod(config, 0o644)
        log = shared_dir / "d.log"
        log.write_text("")
        os.chmod(log, 0o666)
        broker.stop()  # the visits end while the broker is away: only the spool holds them
        daemon = run_daemon(config, log, notify=notify, **kwargs)
        try:
            assert wait_until(lambda: "delivers" in log.read_text(), 60), log.read_text()[
                -2000:
            ]  # frames flow
            if fault == "disk full":
                fill(spool)
            else:
                os.chmod(spool, 0o500)
            assert wait_until(
                lambda: (
                    "not written to disk" in " ".join(s for _, s in notify.received[-5:])
                    and "summaries queued" in notify.received[-1][1]
                ),
                40,
            ), (log.read_text()[-3000:], notify.received[-3:])
            assert daemon.poll() is None
            sub = subscribe(broker.start().port, "fer-kiosk/svc/#")
            assert sub.wait_for(
                lambda: len({e["event_id"] for e in sub.json_on("/events") if e["type"] == "end"}) >= 2, 30
            ), log.read_text()[-3000:]
            assert sub.wait_for(lambda: sub.json_on("/stats"), 10)
            for stats in sub.json_on("/stats"):
                jsonschema.validate(stats, SCHEMAS["stats"])
            assert sub.wait_for(lambda: sub.json_on("/stats")[-1]["spool_unsaved"] == 0, 10)
            assert daemon.poll() is None
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(10) == 0
            notify.close()
    finally:
        os.chmod(spool, 0o700)
        if fault == "disk full":
            subprocess.run(["umount", str(spool)], check=False)
    text = log.read_text()
    problem = "No space left on device" if fault == "disk full" else "Permission denied"
    assert text.count("cannot write to the spool") == 1 and problem in text, text[-3000:]
    assert "Traceback" not in text
