"""A mosquitto broker on loopback for a simulated community and for the tests: anonymous,
without persistence, its files in a folder of its own (DESIGN.md section 11: with an explicit
listener mosquitto 2 refuses anonymous clients unless told; as root it drops to the
`mosquitto` user, which must be able to write its log)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

START_TIMEOUT_S = 15
DEBIAN_MOSQUITTO = Path("/usr/sbin/mosquitto")  # /usr/sbin is not on every user's PATH


class BrokerError(Exception):
    """The broker could not be started; the message carries its log's tail."""


def mosquitto_executable() -> Path | None:
    """Where mosquitto is installed, or None."""
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
            # A subscriber such as the monitoring service may fall behind a burst for a moment;
            # mosquitto's default drops QoS 1 messages beyond 1,000 queued for one client.
            "max_queued_messages 100000",
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

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Start the broker and wait until it accepts TCP connections (BrokerError if not)."""
        if self.running:
            return
        with self._output.open("ab") as output:
            self._process = subprocess.Popen(
                [str(self._executable), "-c", str(self._config)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._process.poll() is not None:
                raise BrokerError(
                    f"mosquitto exited with {self._process.returncode}:\n{self.logs()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"mosquitto is not accepting on port {self.port}:\n{self.logs()}"
                    ) from None
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
