"""The private Tor network on loopback: an onion service answers through it, and
`petra tor testnet up|down` leaves nothing running."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from services.tor import tor_network_fixture

from bidstore.onion import publish_onion
from simulation.tornet import STATE_FILE, TorNetwork, running_tor_pids, tor_executables

__all__ = ["tor_network_fixture"]

pytestmark = [pytest.mark.tor, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ONION_GREETING = b"petra bid store over tor\n"
ONION_TIMEOUT_S = 90
CLI_TIMEOUT_S = 240


class _Greeter(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(ONION_GREETING)))
        self.end_headers()
        self.wfile.write(ONION_GREETING)

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass


@pytest.fixture(name="greeter_port")
def greeter_port_fixture() -> Iterator[int]:
    """A tiny HTTP server on loopback that answers every GET with ONION_GREETING."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Greeter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_onion_service_answers_through_the_private_network(
    tor_network: TorNetwork, greeter_port: int
) -> None:
    onion, key = publish_onion(tor_network.control_port, greeter_port)
    assert onion.endswith(".onion") and len(onion) == 56 + len(".onion")
    # socks5:// with a name: httpx (through socksio) hands the name to Tor to resolve.
    proxy = f"socks5://127.0.0.1:{tor_network.socks_port}"
    deadline = time.monotonic() + ONION_TIMEOUT_S
    with httpx.Client(proxy=proxy, timeout=30) as client:
        while True:
            try:
                answer = client.get(f"http://{onion}/")
                break
            except httpx.TransportError:  # the first circuits to a new service may fail
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    assert answer.status_code == 200
    assert answer.content == ONION_GREETING
    # The same key publishes the same address again, once the first service is gone.
    with tor_network.controller() as controller:
        assert controller.remove_ephemeral_hidden_service(onion.removesuffix(".onion"))
    assert publish_onion(tor_network.control_port, greeter_port, key) == (onion, key)


def _listening_addresses(pids: list[int]) -> set[str]:
    """The local `address:port`s (hex, as /proc/net/tcp* writes them) the processes listen on."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = fd.readlink().name
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    addresses = set()
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                addresses.add(fields[1])
    return addresses


def _listening_ports(pids: list[int]) -> set[int]:
    return {int(address.rsplit(":", 1)[1], 16) for address in _listening_addresses(pids)}


def test_cli_testnet_up_then_down_leaves_no_tor_running(tmp_path: Path) -> None:
    if tor_executables() is None:
        pytest.skip("tor and tor-gencert not installed: run `make system-deps` (Debian's tor)")
    directory = tmp_path / "tornet"
    petra = (sys.executable, "-c", "from petra.cli import main; main()", "tor", "testnet")
    up = subprocess.run(
        [*petra, "up", "--dir", str(directory), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    try:
        assert up.returncode == 0, up.stderr
        ports = json.loads(up.stdout)
        print(f"petra tor testnet up bootstrapped in {ports['bootstrap_s']} s")
        assert (directory / STATE_FILE).exists()
        pids = running_tor_pids(directory)
        assert len(pids) == 3 + 3 + 1
        # Loopback only: 0100007F is 127.0.0.1.
        assert {address.split(":")[0] for address in _listening_addresses(pids)} == {"0100007F"}
        assert {ports["socks_port"], ports["control_port"]} <= _listening_ports(pids)
    finally:
        down = subprocess.run(
            [*petra, "down", "--dir", str(directory)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert down.returncode == 0, down.stderr
    assert running_tor_pids(directory) == []
    assert not (directory / STATE_FILE).exists()
    again = subprocess.run(
        [*petra, "down", "--dir", str(directory)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode != 0 and "no Tor network" in again.stderr
