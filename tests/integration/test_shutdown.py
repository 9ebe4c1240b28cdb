"""Every service stops cleanly and promptly on SIGTERM, as a supervisor (systemd) sends it:
exit status 0 (uvicorn once re-raised the signal, so the commands' clean-up never ran and the
status was 143) within STOP_WITHIN_S, a log that says it stopped, and no traceback in it, even
with clients holding it: an idle keep-alive connection, a request whose body never ends, and
the block stream where the service has one. Each service is a real `petra` process; the
ledger node's worker processes are checked in `test_ledger_hostile.py`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hostile import assert_no_traceback

from assets import Keypair
from assets.keyfile import dump_keys
from simulation.bench.bidstore import BidStoreProcess
from simulation.bench.mixer import CoordinatorProcess
from simulation.devices import SimulatedSdm630
from simulation.processes import LedgerProcess, free_port, start_petra, stop
from simulation.scenario import Scenario

from .test_dso_cli import PASSPHRASE, petra

# The grace period for open requests is half a second and a service exits within one second
# of SIGTERM; the rest leaves room for a loaded machine.
STOP_WITHIN_S = 2.0
START_WITHIN_S = 60.0


@dataclass
class Chain:
    scenario: Scenario
    folder: Path
    genesis: Path
    ledger: LedgerProcess


@dataclass
class Service:
    """A started service: its process and log, where it answers (`probe`, any HTTP answer),
    where a request reads a body (`upload`), and the stream it serves, if any."""

    process: subprocess.Popen[bytes]
    log: Path
    url: str
    probe: str
    upload: str
    stream: str | None = None


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    folder = tmp_path_factory.mktemp("shutdown")
    scenario = Scenario(epoch=int(time.time()) - 20, interval_s=60)
    ledger = LedgerProcess.of_scenario(scenario, folder)
    try:
        ledger.wait_until_serving()
        yield Chain(scenario, folder, folder / "genesis.json", ledger)
    finally:
        ledger.stop()


def ledger_node(chain: Chain, _: ExitStack) -> Service:
    folder = chain.folder / "ledger"
    folder.mkdir()
    node = LedgerProcess.of_scenario(chain.scenario, folder)
    stream = "/v1/stream/blocks"
    return Service(node.process, node.log_path, node.url, "/v1/head", "/v1/transactions", stream)


def replica(chain: Chain, _: ExitStack) -> Service:
    port = free_port()
    log = chain.folder / "replica.log"
    process = start_petra(
        *("ledger", "replicate", "--ledger", chain.ledger.url, "--genesis", str(chain.genesis)),
        *("--store", f"sqlite:///{chain.folder / 'replica.sqlite'}", "--port", str(port)),
        *("--evidence", str(chain.folder / "evidence")),
        log=log,
    )
    url = f"http://127.0.0.1:{port}"
    return Service(process, log, url, "/v1/genesis", "/v1/transactions", "/v1/stream/blocks")


def mixer(chain: Chain, _: ExitStack) -> Service:
    log = chain.folder / "mixer.log"
    started = CoordinatorProcess(chain.genesis, chain.ledger.url, 3, log)
    return Service(started.process, log, started.url, "/v1/pools/none", "/v1/join")


def bidstore(chain: Chain, _: ExitStack) -> Service:
    started = BidStoreProcess(chain.genesis, chain.ledger.url, chain.folder, 10)
    return Service(started.process, started.log_path, started.url, "/v1/status", "/v1/orders")


def dso(chain: Chain, _: ExitStack) -> Service:
    keys, passphrase = chain.folder / "dso-keys.json", chain.folder / "passphrase"
    keys.write_bytes(dump_keys({"dso-0": chain.scenario.dso}, PASSPHRASE))
    passphrase.write_bytes(PASSPHRASE + b"\n")
    store = f"sqlite:///{chain.folder / 'dso.sqlite'}"
    assert petra("dso", "init", "--store", store).code == 0
    port = free_port()
    log = chain.folder / "dso.log"
    process = start_petra(
        *("dso", "serve", "--genesis", str(chain.genesis), "--keys", str(keys)),
        *("--passphrase-file", str(passphrase), "--ledger", chain.ledger.url),
        *("--store", store, "--port", str(port)),
        log=log,
    )
    return Service(process, log, f"http://127.0.0.1:{port}", "/v1/status", "/v1/bills")


def meter(chain: Chain, held: ExitStack) -> Service:
    """`petra meter run` reading a simulated SDM630, billing a DSO that is not there."""
    folder = chain.folder / "meter"
    folder.mkdir()
    device = SimulatedSdm630(clock=time.time)
    device.start()
    held.callback(device.stop)
    (folder / "meter-keys.json").write_bytes(dump_keys({"meter": Keypair.generate()}, PASSPHRASE))
    port = free_port()
    (folder / "meter.toml").write_text(
        f'[meter]\nid = "ES0021000000000001AB"\nkeys = "meter-keys.json"\n'
        f'genesis = "{chain.genesis}"\nowner = "{Keypair.generate().public_key.hex()}"\n'
        f'ledger = "{chain.ledger.url}"\ndso = "http://127.0.0.1:{free_port()}"\n'
        f'store = "sqlite:///{folder / "meter.sqlite"}"\nclosing_delay_s = 1\n'
        f"credit_line = 1000000\napi_port = {port}\n\n"
        f'[[source]]\nname = "grid"\nkind = "sdm630"\nport = {device.port}\npoll_s = 0.2\n'
    )
    log = folder / "meter.log"
    process = start_petra(
        *("meter", "run", "--config", str(folder / "meter.toml")),
        log=log,
        env={"PETRA_PASSPHRASE": PASSPHRASE.decode()},
    )
    return Service(process, log, f"http://127.0.0.1:{port}", "/v1/status", "/v1/status")


# Each by the role its log lines name it by (`petra.console.configure_logging`).
SERVICES: dict[str, Callable[[Chain, ExitStack], Service]] = {
    "ledger": ledger_node,
    "replica": replica,
    "mixer": mixer,
    "bidstore": bidstore,
    "dso": dso,
    "meter": meter,
}


def wait_serving(name: str, service: Service) -> None:
    deadline = time.monotonic() + START_WITHIN_S
    while True:  # serving: any HTTP answer will do
        try:
            httpx.get(service.url + service.probe, timeout=1)
            return
        except httpx.TransportError:
            assert service.process.poll() is None, service.log.read_text()
            assert time.monotonic() < deadline, f"{name} did not start: {service.log.read_text()}"
            time.sleep(0.1)


def stalled_upload(service: Service, held: ExitStack) -> None:
    """A request whose headers arrived and whose body never ends (a slow or stuck client)."""
    host, port = service.url.removeprefix("http://").split(":")
    connection = held.enter_context(socket.create_connection((host, int(port)), timeout=5))
    connection.sendall(
        f"POST {service.upload} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n{".encode()
    )


def terminate(process: subprocess.Popen[bytes], log: Path) -> float:
    """SIGTERM the process alone; its exit status must be 0. The seconds it took."""
    began = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    try:
        status = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        stop(process)
        pytest.fail(f"still running 30 s after SIGTERM: {log.read_text()[-2000:]}")
    took = time.monotonic() - began
    assert status == 0, f"exit status {status}: {log.read_text()[-2000:]}"
    assert_no_traceback(log)
    return took


@pytest.mark.parametrize("name", SERVICES)
def test_sigterm_stops_the_service_promptly_with_status_0(chain: Chain, name: str) -> None:
    with ExitStack() as held:
        service = SERVICES[name](chain, held)
        held.callback(stop, service.process)
        wait_serving(name, service)
        idle = held.enter_context(httpx.Client(timeout=30))  # a keep-alive connection, idle
        idle.get(service.url + service.probe)
        stalled_upload(service, held)
        lines: Iterator[str] = iter(())
        if service.stream is not None:
            client = held.enter_context(httpx.Client(timeout=30))
            stream = held.enter_context(client.stream("GET", service.url + service.stream))
            lines = stream.iter_lines()
            assert next(lines) == ": waiting"
        took = terminate(service.process, service.log)
        # an open stream ends when the service begins to stop, without a block of its own
        assert all(line in ("", ": waiting") for line in lines)
    assert took < STOP_WITHIN_S, f"{name} took {took:.1f} s to stop: {service.log.read_text()}"
    logged = service.log.read_text().splitlines()
    assert any(line.endswith(f" {name} INFO stopped") for line in logged), logged[-20:]
