"""deploy/: the systemd unit, install.sh/uninstall.sh in a scratch root, the Mosquitto example.

Everything happens under pytest's tmp_path: no file outside it is written and no
service is started except a Mosquitto on a free loopback port, stopped at the end.
Needs `systemd-analyze` (Debian package systemd) and `mosquitto`/`mosquitto_passwd`
(package mosquitto); the tests that need them skip, saying so, where they are missing.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "fer-kiosk.service"
DASHBOARD_UNIT = DEPLOY / "fer-kiosk-dashboard.service"
INSTALL = DEPLOY / "install.sh"
UNINSTALL = DEPLOY / "uninstall.sh"
MAX_EXPOSURE = 2.0

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze not found (Debian package systemd)"
)


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kwargs)


# ---- systemd unit -----------------------------------------------------------------------


def _system_unit_dir() -> Path | None:
    for candidate in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(candidate, "multi-user.target").exists():
            return Path(candidate)
    return None


def _stub_executable(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)


def _verify_root(
    tmp_path: Path, unit_text: str, name: str = "fer-kiosk.service"
) -> subprocess.CompletedProcess:
    """`systemd-analyze verify --root=R` on the unit installed in a scratch root R.

    verify checks that the Exec*= binaries exist; /opt/fer-kiosk/venv/bin/fer-kiosk does not on
    a build machine, so R gets stubs for it and /bin/kill (ExecReload=), plus a copy of the
    system's unit directory for the targets the unit refers to (multi-user.target...).
    """
    unit_dir = _system_unit_dir()
    if unit_dir is None:
        pytest.skip("no systemd unit directory (/usr/lib/systemd/system) to verify against")
    root = tmp_path / "root"
    shutil.copytree(unit_dir, root / "usr/lib/systemd/system", symlinks=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "bin").symlink_to("usr/bin")
    _stub_executable(root / "usr/bin/kill")
    _stub_executable(root / "opt/fer-kiosk/venv/bin/fer-kiosk")
    installed = root / "etc/systemd/system" / name
    installed.parent.mkdir(parents=True)
    installed.write_text(unit_text)
    return _run([SYSTEMD_ANALYZE, "verify", f"--root={root}", f"/etc/systemd/system/{name}"])


@needs_systemd_analyze
@pytest.mark.parametrize("unit", [UNIT, DASHBOARD_UNIT], ids=lambda p: p.name)
def test_unit_verify_is_clean(tmp_path, unit):
    result = _verify_root(tmp_path, unit.read_text(), unit.name)
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stderr
    about_unit = [line for line in result.stderr.splitlines() if "fer-kiosk" in line]
    assert about_unit == [], "systemd-analyze verify complains:\n" + "\n".join(about_unit)


@needs_systemd_analyze
def test_unit_verify_setup_catches_mistakes(tmp_path):
    """The scratch-root verify above is not vacuous: a bad key and a missing binary are reported."""
    text = UNIT.read_text().replace("[Service]\n", "[Service]\nNoSuchSetting=1\n", 1)
    text = text.replace("ExecReload=/bin/kill", "ExecReload=/bin/no-such-kill", 1)
    result = _verify_root(tmp_path, text)
    assert "NoSuchSetting" in result.stderr
    assert "no-such-kill" in result.stderr


@needs_systemd_analyze
@pytest.mark.parametrize("unit", [UNIT, DASHBOARD_UNIT], ids=lambda p: p.name)
def test_unit_security_exposure(unit):
    result = _run([SYSTEMD_ANALYZE, "security", "--offline=yes", str(unit)])
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, f"no exposure figure in the output:\n{result.stdout}\n{result.stderr}"
    exposure = float(match.group(1))
    print(f"systemd-analyze security --offline=yes {unit.relative_to(ROOT)}: exposure {exposure}")
    assert result.returncode == 0, result.stderr
    assert exposure <= MAX_EXPOSURE


def test_unit_settings():
    """The settings the daemon's behaviour depends on (cheap, needs no systemd)."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "30",
        "Restart": "on-failure",
        "RestartPreventExitStatus": "78",
        "StateDirectory": "fer-kiosk",
        "ConfigurationDirectory": "fer-kiosk",
        "LoadCredential": "mqtt:/etc/fer-kiosk/credentials",
        "ExecStart": "/opt/fer-kiosk/venv/bin/fer-kiosk run --config /etc/fer-kiosk/config.yaml",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "SupplementaryGroups": "video",
        "DevicePolicy": "closed",
        "DeviceAllow": "char-video4linux rw",
    }
    for key, value in expected.items():
        assert settings.get(key) == [value], key
    assert "PrivateDevices" not in settings  # it would hide /dev/video*
    assert not any("PASSWORD" in v.upper() for v in settings.get("Environment", []))


# ---- prune_venv.py ----------------------------------------------------------------------

PRUNE = DEPLOY / "prune_venv.py"


def _fake_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    packages = venv / "lib/python3.11/site-packages"
    for name in (
        "pip/__init__.py",
        "pip-24.0.dist-info/RECORD",
        "setuptools/__init__.py",
        "numpy/__init__.py",
        "numpy/_core/_multiarray_umath.so",
        "numpy/_core/tests/test_a.py",
        "numpy/lib/tests/test_b.py",
        "numpy/f2py/__init__.py",
        "numpy/f2py/tests/test_c.py",
        "cv2/cv2.abi3.so",
        "cv2/data/haarcascade_frontalface_default.xml",
        "cv2/data/haarcascade_frontalface_alt.xml",
        "cv2/data/haarcascade_eye.xml",
        "cv2/data/haarcascade_fullbody.xml",
        "cv2/data/haarcascade_frontalcatface.xml",
        "ai_edge_litert/interpreter.py",
        "ai_edge_litert/libLiteRt.so",
        "ai_edge_litert/libLiteRtWebGpuAccelerator.so",
        "ai_edge_litert/vendors/q/plugin.so",
        "paho/mqtt/client.py",
    ):
        (packages / name).parent.mkdir(parents=True, exist_ok=True)
        (packages / name).write_bytes(b"x" * 5000)
    return venv


def _tree(venv: Path) -> set[str]:
    packages = venv / "lib/python3.11/site-packages"
    return {str(p.relative_to(packages)) for p in packages.rglob("*") if p.is_file()}


def test_prune_removes_only_what_the_daemon_never_loads(tmp_path):
    venv = _fake_venv(tmp_path)
    before = _tree(venv)
    dry = _run(["python3", str(PRUNE), str(venv), "--dry-run"])
    assert dry.returncode == 0, dry.stderr
    assert "would remove ai_edge_litert/vendors" in dry.stdout and _tree(venv) == before

    result = _run(["python3", str(PRUNE), str(venv)])
    assert result.returncode == 0, result.stderr
    assert _tree(venv) == {
        "numpy/__init__.py",
        "numpy/_core/_multiarray_umath.so",
        "cv2/cv2.abi3.so",
        "cv2/data/haarcascade_frontalface_default.xml",
        "cv2/data/haarcascade_frontalface_alt.xml",
        "ai_edge_litert/interpreter.py",
        "ai_edge_litert/libLiteRt.so",
        "paho/mqtt/client.py",
    }
    assert "removed numpy/f2py " in result.stdout and "numpy/f2py/tests" not in result.stdout  # nested: once
    assert re.search(r"freed \d+\.\d MiB", result.stdout)
    # Running it again is harmless: nothing left to remove.
    again = _run(["python3", str(PRUNE), str(venv)])
    assert again.returncode == 0 and "freed 0.0 MiB" in again.stdout


def test_prune_refuses_a_folder_that_is_not_a_venv(tmp_path):
    result = _run(["python3", str(PRUNE), str(tmp_path)])
    assert result.returncode != 0 and "not a virtual environment" in result.stderr


@pytest.mark.slow
def _no_compiler_path(tmp_path: Path) -> str:
    """PATH with every C compiler name shadowed by one that fails, as on a box without gcc:
    if pip tried to build anything from source, the install would fail."""
    shims = tmp_path / "no-compiler"
    shims.mkdir()
    for name in ("gcc", "cc", "c++", "g++", "clang", "x86_64-linux-gnu-gcc", "aarch64-linux-gnu-gcc"):
        shim = shims / name
        shim.write_text('#!/bin/sh\necho "$0: no compiler on this box" >&2\nexit 127\n')
        shim.chmod(0o755)
    return f"{shims}:{os.environ['PATH']}"


def test_install_with_venv_prunes_it_and_the_daemon_still_loads(tmp_path):
    """The real installer end to end in a scratch root, with no compiler: it builds the
    wheel, installs it, prunes, runs the venv check; a second run (an upgrade) restores pip
    with ensurepip before installing again. The model comes from inside the package."""
    root = tmp_path / "root"
    root.mkdir()
    env = {**os.environ, "PATH": _no_compiler_path(tmp_path)}
    for attempt in ("install", "upgrade"):
        result = subprocess.run(
            ["bash", str(INSTALL), "--root", str(root), "--no-apt", "--no-start"],
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
        )
        assert result.returncode == 0, f"{attempt}: " + (result.stdout + result.stderr)[-3000:]
        assert "no compiler on this box" not in result.stdout + result.stderr
        assert (
            "venv check: the bundled model, ai-edge-litert" in result.stdout
            or "venv check: the bundled model, tflite-runtime" in result.stdout
        )
    packages = next((root / "opt/fer-kiosk/venv/lib").glob("python3*/site-packages"))
    assert (
        not (packages / "pip").exists()
        and (packages / "cv2/data/haarcascade_frontalface_default.xml").exists()
    )
    assert (packages / "edge/models/emotion_int8.tflite").read_bytes() == (
        ROOT / "edge/models/emotion_int8.tflite"
    ).read_bytes()
    assert not (root / "opt/fer-kiosk/models").exists()
    fer_kiosk = str(root / "opt/fer-kiosk/venv/bin/fer-kiosk")
    check = subprocess.run(
        [fer_kiosk, "check", "--config", str(root / "etc/fer-kiosk/config.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "site-packages/edge/models/emotion_int8.tflite" in check.stdout


# ---- install.sh / uninstall.sh in a scratch root -----------------------------------------


def _install(root: Path, *extra: str) -> subprocess.CompletedProcess:
    result = _run(["bash", str(INSTALL), "--root", str(root), "--no-venv", "--no-start", *extra])
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_install_help_and_bad_option():
    assert _run(["bash", str(INSTALL), "--help"]).returncode == 0
    assert "--root" in _run(["bash", str(INSTALL), "--help"]).stdout
    assert _run(["bash", str(INSTALL), "--bogus"]).returncode == 2
    assert _run(["bash", str(INSTALL), "--wheel", str(ROOT / "README.md")]).returncode == 2
    assert _run(["bash", str(UNINSTALL), "--help"]).returncode == 0
    assert _run(["bash", str(UNINSTALL), "--bogus"]).returncode == 2


def test_install_uninstall_layout(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    said = _install(root).stdout
    # what it says is where it writes: under --root, never the target system's own path
    assert f"install.sh: writing {root}/etc/fer-kiosk/config.yaml\n" in said, said
    assert f"install.sh: installed {root}/etc/systemd/system/fer-kiosk.service\n" in said, said

    unit = root / "etc/systemd/system/fer-kiosk.service"
    assert unit.read_text() == UNIT.read_text()
    wants = root / "etc/systemd/system/multi-user.target.wants/fer-kiosk.service"
    assert wants.is_symlink() and os.readlink(wants) == "/etc/systemd/system/fer-kiosk.service"

    assert not (root / "opt/fer-kiosk/venv").exists()  # --no-venv
    assert not (root / "opt/fer-kiosk/models").exists()  # the model is inside the package

    # The config is the repository's as it is: model.path empty means the packaged model.
    etc = root / "etc/fer-kiosk"
    assert (etc / "config.yaml").read_text() == (ROOT / "config.yaml").read_text()
    assert yaml.safe_load((etc / "config.yaml").read_text())["model"]["path"] == ""
    assert (etc / "config.yaml.dist").read_text() == (etc / "config.yaml").read_text()

    credentials = etc / "credentials"
    info = credentials.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    if os.geteuid() == 0:
        assert info.st_uid == 0 and info.st_gid == 0
    assert "password" in credentials.read_text()

    # A second run keeps the admin's config and credentials, refreshes the rest.
    (etc / "config.yaml").write_text((etc / "config.yaml").read_text() + "# edited by the admin\n")
    credentials.write_text("username=kiosk-01\npassword=secret\n")
    _install(root)
    assert (etc / "config.yaml").read_text().endswith("# edited by the admin\n")
    assert "edited" not in (etc / "config.yaml.dist").read_text()
    assert credentials.read_text() == "username=kiosk-01\npassword=secret\n"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600

    # State as systemd's DynamicUser= leaves it: /var/lib/private/fer-kiosk + symlink.
    state = root / "var/lib/private/fer-kiosk/spool"
    state.mkdir(parents=True)
    (state / "0001.json").write_text("{}")
    (root / "var/lib/fer-kiosk").symlink_to("private/fer-kiosk")

    result = _run(["bash", str(UNINSTALL), "--root", str(root)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert not unit.exists() and not wants.is_symlink()
    assert not (root / "opt/fer-kiosk").exists()
    assert (etc / "config.yaml").read_text().endswith("# edited by the admin\n")
    assert credentials.exists()
    assert (state / "0001.json").exists()

    result = _run(["bash", str(UNINSTALL), "--root", str(root), "--purge"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert not etc.exists()
    assert not (root / "var/lib/private/fer-kiosk").exists()
    assert not (root / "var/lib/fer-kiosk").is_symlink()


# ---- Mosquitto example config and ACL ---------------------------------------------------

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
PASSWORDS = {
    "kiosk-01": "pw-kiosk-01",
    "kiosk-02": "pw-kiosk-02",
    "dashboard": "pw-dashboard",
    "homeassistant": "pw-homeassistant",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def broker(tmp_path):
    """deploy/mosquitto/fer-kiosk.conf + acl, paths filled in, on a free loopback port."""
    if MOSQUITTO is None or MOSQUITTO_PASSWD is None:
        pytest.skip("mosquitto / mosquitto_passwd not installed (Debian package mosquitto)")
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt 2.x is needed for the broker tests")
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    passwd = workdir / "passwd"
    for i, (user, password) in enumerate(PASSWORDS.items()):
        flags = ["-b", "-c"] if i == 0 else ["-b"]
        subprocess.run([MOSQUITTO_PASSWD, *flags, str(passwd), user, password], check=True, timeout=30)
    acl = workdir / "acl"
    shutil.copy(DEPLOY / "mosquitto/acl", acl)
    # Add a second kiosk by uncommenting its block, the way an admin would.
    text, count = re.subn(
        r"^# (user kiosk-02\n)# (.*\n)# (.*\n)# (.*\n)", r"\1\2\3\4", acl.read_text(), flags=re.M
    )
    assert count == 1, "the commented kiosk-02 block is missing from deploy/mosquitto/acl"
    acl.write_text(text)

    port = _free_port()
    text = (DEPLOY / "mosquitto/fer-kiosk.conf").read_text()
    replacements = [
        (r"^listener 1883 127\.0\.0\.1$", f"listener {port} 127.0.0.1"),
        (r"^password_file .*$", f"password_file {passwd}"),
        (r"^acl_file .*$", f"acl_file {acl}"),
    ]
    for pattern, value in replacements:
        text, count = re.subn(pattern, value, text, flags=re.M)
        assert count == 1, f"{pattern} not found exactly once in fer-kiosk.conf"
    log = workdir / "mosquitto.log"
    config = workdir / "mosquitto.conf"
    # As root, mosquitto would switch to its own user, which cannot enter pytest's 0700 tmp
    # directories; `user root` keeps it as it is (a test-only setting).
    test_settings = f"\npersistence false\nlog_dest file {log}\nlog_type all\n"
    if os.geteuid() == 0:
        test_settings += "user root\n"
    config.write_text(text + test_settings)

    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                pytest.fail(f"mosquitto rejected the config: {process.stderr.read()} {log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mosquitto did not listen on {port}: {log.read_text()}")
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(log.read_text()[-3000:])


class Peer:
    """A paho-mqtt 2.x client that records what it receives."""

    def __init__(self, port: int, user: str | None, password: str | None = None):
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"test-{user}-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv311,
        )
        if user is not None:
            self.client.username_pw_set(user, password if password is not None else PASSWORDS[user])
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.connect_reason = None
        self.granted: list = []
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.connected.wait(5), "no CONNACK"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connect_reason = reason_code
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.granted = list(reason_codes)
        self.subscribed.set()

    def _on_message(self, client, userdata, message):
        with self.lock:
            self.messages.append((message.topic, message.payload))
            self.lock.notify_all()

    def subscribe(self, *topics: str) -> list:
        self.subscribed.clear()
        self.client.subscribe([(topic, 1) for topic in topics])
        assert self.subscribed.wait(5), "no SUBACK"
        return self.granted

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def wait_for(self, payload: bytes, timeout: float = 5.0) -> list[tuple[str, bytes]]:
        with self.lock:
            assert self.lock.wait_for(lambda: any(p == payload for _, p in self.messages), timeout), (
                f"{payload!r} not received; got {self.messages}"
            )
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_mosquitto_acl_confines_each_kiosk(broker):
    peers = []
    try:
        kiosk = Peer(broker, "kiosk-01")
        dashboard = Peer(broker, "dashboard")
        homeassistant = Peer(broker, "homeassistant")
        peers += [kiosk, dashboard, homeassistant]
        for peer in peers:
            assert not peer.connect_reason.is_failure, peer.connect_reason

        assert not any(code.is_failure for code in dashboard.subscribe("fer-kiosk/#"))
        assert not any(code.is_failure for code in homeassistant.subscribe("homeassistant/#"))
        # Mosquitto grants any SUBSCRIBE and applies `read` when it delivers: the kiosk gets
        # Home Assistant's status but nothing under fer-kiosk/ (checked at the end).
        kiosk.subscribe("homeassistant/status", "fer-kiosk/#")

        # Forged messages first, then the legitimate one on the same connection: MQTT keeps
        # one client's messages in order, so once the legitimate one has arrived a forged
        # one that was let through would have arrived before it.
        kiosk.publish("fer-kiosk/kiosk-02/events", b"forged event")
        kiosk.publish("fer-kiosk/kiosk-01/events", b"own event")
        received = dashboard.wait_for(b"own event")
        assert received == [("fer-kiosk/kiosk-01/events", b"own event")]

        kiosk.publish("homeassistant/sensor/fer-kiosk_kiosk-02/emotion/config", b"forged discovery")
        kiosk.publish("homeassistant/status", b"forged status")
        kiosk.publish("homeassistant/sensor/fer-kiosk_kiosk-01/emotion/config", b"own discovery")
        received = homeassistant.wait_for(b"own discovery")
        assert received == [("homeassistant/sensor/fer-kiosk_kiosk-01/emotion/config", b"own discovery")]

        # The dashboard reads but cannot write.
        dashboard.publish("fer-kiosk/kiosk-01/events", b"dashboard forgery")
        kiosk.publish("fer-kiosk/kiosk-01/state", b"own state")
        received = dashboard.wait_for(b"own state")
        assert b"dashboard forgery" not in [payload for _, payload in received]

        # A second kiosk, set up from the commented template, is confined the same way.
        other = Peer(broker, "kiosk-02")
        peers.append(other)
        other.publish("fer-kiosk/kiosk-01/state", b"kiosk-02 forgery")
        other.publish("fer-kiosk/kiosk-02/state", b"kiosk-02 state")
        received = dashboard.wait_for(b"kiosk-02 state")
        assert b"kiosk-02 forgery" not in [payload for _, payload in received]

        # Last: everything above has been acknowledged, so the broker has already routed it;
        # the kiosk has received none of it, only the status it may read.
        homeassistant.publish("homeassistant/status", b"online")
        assert kiosk.wait_for(b"online") == [("homeassistant/status", b"online")]
    finally:
        for peer in peers:
            peer.close()


def test_mosquitto_refuses_anonymous_and_wrong_password(broker):
    for user, password in ((None, None), ("kiosk-01", "wrong")):
        peer = Peer(broker, user, password)
        try:
            assert peer.connect_reason.is_failure, (user, peer.connect_reason)
        finally:
            peer.close()


# ---- the installer on real boxes: refusals before anything changes, --dry-run -----------


SYSTEM_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else shutil.which("python3")


def _tree_of(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _fake_python(tmp_path: Path, facts: str) -> Path:
    """A python3 that tells the platform check ``facts`` ("machine bits version") and is
    the real interpreter otherwise: a Raspberry Pi's Python, seen from here."""
    fake = tmp_path / "bin/python3"
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_text(
        f'#!/bin/sh\ncase "$2" in *calcsize*) echo "{facts}"; exit 0;; esac\nexec {SYSTEM_PYTHON} "$@"\n'
    )
    fake.chmod(0o755)
    return fake


PLATFORMS = [
    ("armv6l 32 3.11", "armv6l (Raspberry Pi Zero / Zero W / 1) has no TFLite runtime"),
    ("aarch64 32 3.11", "32-bit Python (PY) on a 64-bit ARM kernel"),
    ("armv7l 32 3.13", "Python 3.13 on 32-bit ARM (armv7l): tflite-runtime 2.14"),
    ("riscv64 64 3.11", "riscv64: no TFLite runtime wheel for it. Use an x86-64"),
]


@pytest.mark.parametrize(
    ("facts", "reason"), PLATFORMS, ids=[p[0].split()[0] + "-" + p[0].split()[1] for p in PLATFORMS]
)
def test_install_refuses_a_platform_without_a_runtime_before_writing(tmp_path, facts, reason):
    python = _fake_python(tmp_path, facts)
    root = tmp_path / "root"
    root.mkdir()
    result = _run(
        ["bash", str(INSTALL), "--root", str(root), "--no-apt", "--no-start", "--python", str(python)]
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"install.sh: cannot install here: {reason.replace('PY', str(python))}" in result.stderr
    assert "Use " in result.stderr  # what to use instead
    assert _tree_of(root) == []


@pytest.mark.parametrize(
    ("facts", "reason"), PLATFORMS, ids=[p[0].split()[0] + "-" + p[0].split()[1] for p in PLATFORMS]
)
def test_quickstart_refuses_a_platform_without_a_runtime_up_front(tmp_path, facts, reason):
    python = _fake_python(tmp_path, facts)
    env = {**os.environ, "PYTHON": str(python), "FER_KIOSK_VENV": str(tmp_path / "venv")}
    result = _run(["bash", str(DEPLOY / "quickstart.sh")], env=env, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(f"quickstart: cannot run here: {reason.replace('PY', str(python))}")
    assert result.stdout == "" and not (tmp_path / "venv").exists()


def test_an_armv6l_kernel_is_refused_before_apt_get(tmp_path):
    """On a Pi Zero the check needs no Python: `uname -m` says armv6l."""
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "uname").write_text(
        f'#!/bin/sh\n[ "$1" = -m ] && {{ echo armv6l; exit 0; }}\nexec {shutil.which("uname")} "$@"\n'
    )
    (shims / "uname").chmod(0o755)
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}
    result = _run(["bash", str(INSTALL), "--dry-run"], env=env)
    assert result.returncode == 1 and "cannot install here: armv6l" in result.stderr
    assert "would run: apt-get" in result.stdout  # --dry-run: it says so, and goes on listing
    result = _run(["bash", str(DEPLOY / "quickstart.sh")], env={**env, "PYTHON": "/nonexistent"})
    assert result.returncode == 1 and result.stderr.startswith("quickstart: cannot run here: armv6l")


def test_dry_run_lists_every_file_and_command_and_changes_nothing(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    result = _run(["bash", str(INSTALL), "--root", str(root), "--dry-run"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert _tree_of(root) == []
    out = result.stdout
    for expected in (
        f"would run: install -m 0644 {UNIT} {root}/etc/systemd/system/fer-kiosk.service",
        f"would run: install -m 0644 {ROOT}/config.yaml {root}/etc/fer-kiosk/config.yaml.dist.tmp",
        f"would run: install -m 0644 {root}/etc/fer-kiosk/config.yaml.dist {root}/etc/fer-kiosk/config.yaml",
        f"would write: {root}/etc/fer-kiosk/credentials",
        f"would run: chmod 0600 {root}/etc/fer-kiosk/credentials",
        f"-m venv {root}/opt/fer-kiosk/venv",
        f"would run: {root}/opt/fer-kiosk/venv/bin/python -m pip install",
        f"would run: {root}/opt/fer-kiosk/venv/bin/python {DEPLOY}/prune_venv.py {root}/opt/fer-kiosk/venv",
        f"would run: install -m 0644 {ROOT}/docs/deploy.md {root}/opt/fer-kiosk/docs/deploy.md",
        f"would run: ln -sfn /etc/systemd/system/fer-kiosk.service {root}/etc/systemd/system/multi-user",
        "--dry-run: nothing was changed",
    ):
        assert expected in out, f"{expected!r} not in:\n{out}"
    # Every line is a check, a note or a would-be change: nothing was done quietly.
    assert all(line.startswith("install.sh: ") for line in out.splitlines()), out


@pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="this machine runs systemd")
def test_without_systemd_the_installer_says_so_before_writing_anything():
    """A container or WSL without systemd: refused before apt-get and before any file."""
    before = {p: p.exists() for p in (Path("/etc/fer-kiosk"), Path("/opt/fer-kiosk"))}
    result = _run(["bash", str(INSTALL), "--no-apt", "--no-venv"])
    if os.geteuid() != 0:
        assert result.returncode == 1 and "run as root" in result.stderr
        return
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot install here: this system is not running systemd" in result.stderr
    assert "bash deploy/quickstart.sh" in result.stderr and result.stdout == ""
    assert {p: p.exists() for p in before} == before
    dry = _run(["bash", str(INSTALL), "--dry-run"])
    assert dry.returncode == 1 and "not running systemd" in dry.stderr
    assert "would run: systemctl enable fer-kiosk.service" in dry.stdout


def test_a_python_under_root_or_home_is_refused_for_the_service(tmp_path):
    """pyenv's Python under /root: root can run it, the service (DynamicUser=, ProtectHome=yes)
    cannot. The installer refuses it and names the Python to use."""
    import sys

    base = os.path.realpath(sys.base_prefix)
    if not base.startswith(("/root/", "/home/")):
        pytest.skip(f"this Python ({base}) is not under /root or /home")
    root = tmp_path / "root"
    root.mkdir()
    result = _run(["bash", str(INSTALL), "--root", str(root), "--no-apt", "--python", sys.executable])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the service cannot run it there (its unit has ProtectHome=yes" in result.stderr
    assert "--python /usr/bin/python3" in result.stderr and _tree_of(root) == []


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_a_python_the_service_user_cannot_run_is_refused(tmp_path):
    """Checked as nobody (setpriv), as the service's dynamic user would run it."""
    python = tmp_path / "python3"
    python.write_text(
        '#!/bin/sh\nif [ "$(id -u)" != 0 ]; then echo "python3: Permission denied" >&2; exit 126; fi\n'
        f'exec {SYSTEM_PYTHON} "$@"\n'
    )
    python.chmod(0o755)
    root = tmp_path / "root"
    root.mkdir()
    result = _run(["bash", str(INSTALL), "--root", str(root), "--no-apt", "--python", str(python)])
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{python} cannot be run by an unprivileged user (as the service's user: " in result.stderr
    assert "Permission denied" in result.stderr
    assert "--python /usr/bin/python3" in result.stderr and _tree_of(root) == []


def test_the_test_command_never_uses_the_venv_quickstart_makes_for_users():
    """deploy/quickstart.sh installs fer-kiosk into .venv "as users get it"; tests/run.sh must
    not turn that into an editable install with TensorFlow (issue 36)."""
    run_sh = (ROOT / "tests/run.sh").read_text()
    venvs = re.findall(r"^\s*venv=(\S+)$", run_sh, flags=re.M)
    assert sorted(venvs) == [".venv-edge", ".venv-test"], venvs
    assert re.search(
        r"^venv=\$\{FER_KIOSK_VENV:-\.venv\}$", (DEPLOY / "quickstart.sh").read_text(), flags=re.M
    )
    # --edge: no browser to install, no browser driver in its extra.
    assert "[ $edge_only -eq 1 ] || command -v chromium" in run_sh
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())
    edge_test = extras["project"]["optional-dependencies"]["edge-test"]
    assert not any(r.startswith(("playwright", "ruff", "tensorflow")) for r in edge_test), edge_test
