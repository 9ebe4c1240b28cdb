"""A real mosquitto broker on loopback for the session, which tests may stop and start again.

Use it with `from services.mosquitto import Mosquitto, mosquitto_fixture  # noqa: F401` and a
`mosquitto: Mosquitto` argument.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulation.processes import free_port

MOSQUITTO_START_TIMEOUT_S = 15
DEBIAN_MOSQUITTO = Path("/usr/sbin/mosquitto")  # /usr/sbin is not on every user's PATH


def _mosquitto_executable() -> Path | None:
    found = shutil.which("mosquitto")
    if found is not None:
        return Path(found)
    return DEBIAN_MOSQUITTO if os.access(DEBIAN_MOSQUITTO, os.X_OK) else None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path.name})"


class Mosquitto:
    """A mosquitto process on `host:port`; `stop()` and `start()` keep the same port."""

    host = "127.0.0.1"

    def __init__(self, executable: Path, workdir: Path, port: int) -> None:
        self.port = port
        self._executable = executable
        self._workdir = workdir
        self._config = workdir / "mosquitto.conf"
        self._log = workdir / "mosquitto.log"
        self._output = workdir / "output.log"
        self._process: subprocess.Popen[bytes] | None = None
        lines = [
            f"listener {port} {self.host}",
            # An explicit listener makes mosquitto 2 refuse anonymous clients by default.
            "allow_anonymous true",
            "persistence false",
            f"log_dest file {self._log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # As root mosquitto drops to the `mosquitto` user, which must write the log.
            try:
                user = pwd.getpwnam("mosquitto")
            except KeyError:
                lines.append("user root")
            else:
                os.chown(workdir, user.pw_uid, user.pw_gid)
        self._config.write_text("\n".join(lines) + "\n")
        self._config.chmod(0o644)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the broker and wait until it accepts TCP connections."""
        if self.running:
            return
        with self._output.open("ab") as output:
            self._process = subprocess.Popen(
                [str(self._executable), "-c", str(self._config)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + MOSQUITTO_START_TIMEOUT_S
        while True:
            if self._process.poll() is not None:
                pytest.fail(f"mosquitto exited with {self._process.returncode}:\n{self.logs()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mosquitto is not accepting on port {self.port}:\n{self.logs()}")
                time.sleep(0.05)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the broker: SIGTERM, or SIGKILL to play a crash. Clients see the link drop."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def logs(self) -> str:
        """The tail of the broker's log and of its standard output, for failure messages."""
        return f"--- mosquitto.log ---\n{_tail(self._log)}\n--- output ---\n{_tail(self._output)}"


@pytest.fixture(scope="session", name="mosquitto")
def mosquitto_fixture() -> Iterator[Mosquitto]:
    """A mosquitto broker on a free loopback port, anonymous, without persistence."""
    executable = _mosquitto_executable()
    if executable is None:
        pytest.skip(
            "mosquitto not installed: run `make system-deps` (needs Debian's mosquitto package)"
        )
    workdir = Path(tempfile.mkdtemp(prefix="petra-mosquitto-"))
    broker = Mosquitto(executable, workdir, free_port())
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
