"""A real Mosquitto broker for tests, on a free loopback port, that can be stopped and restarted."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


class Broker:
    def __init__(self, workdir: Path, extra_config: str = "", port: int | None = None, persistent: bool = False):
        """``persistent``: sessions and queued QoS 1 messages survive a stop and start, as on
        a real broker (what a dashboard with clean_session=False relies on)."""
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (Debian package mosquitto; .ci/run installs it)")
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.config_path = workdir / f"mosquitto-{self.port}.conf"
        self.log_path = workdir / f"mosquitto-{self.port}.log"
        # Started as root, mosquitto would switch to its own user and could not read the
        # test's private temporary files (password file, certificates, log).
        run_as = f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
        persistence = (f"persistence true\npersistence_location {workdir}/\nautosave_interval 1\n" if persistent
                       else "persistence false\n")
        self.config_path.write_text(
            run_as + f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            + persistence
            + f"log_dest file {self.log_path}\n"
            "log_type all\n" + extra_config
        )
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> "Broker":
        self.process = subprocess.Popen([self.binary, "-c", str(self.config_path)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.process.stderr.read().decode()[-500:]} "
                                   f"{self.log_path.read_text()[-500:] if self.log_path.exists() else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
