"""Every HTTP service stops cleanly on SIGTERM, as a supervisor (systemd) sends it: exit
status 0 (uvicorn once re-raised the signal, so the commands' clean-up never ran and the
status was 143), promptly, with no traceback in its log, even with a long-lived request open.
The ledger node's worker processes are checked in `test_ledger_hostile.py`."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hostile import assert_no_traceback

from assets.keyfile import dump_keys
from simulation.bench.bidstore import BidStoreProcess
from simulation.bench.mixer import CoordinatorProcess
from simulation.processes import LedgerProcess, free_port, start_petra, stop
from simulation.scenario import Scenario

from .test_dso_cli import PASSPHRASE, petra, wait_dso

STOP_WITHIN_S = 5.0  # the grace period is one second; the rest is the commands' clean-up


@dataclass
class Chain:
    scenario: Scenario
    folder: Path
    genesis: Path
    ledger: LedgerProcess


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


def terminate(process: subprocess.Popen[bytes], log: Path) -> float:
    """SIGTERM the process alone; its exit status must be 0. The seconds it took."""
    began = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    try:
        status = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        stop(process)
        pytest.fail(f"still running 30 s after SIGTERM: {log.read_text()[-2000:]}")
    assert status == 0, f"exit status {status}: {log.read_text()[-2000:]}"
    assert_no_traceback(log)
    return time.monotonic() - began


def replica(chain: Chain) -> tuple[subprocess.Popen[bytes], Path, str]:
    port = free_port()
    log = chain.folder / "replica.log"
    process = start_petra(
        *("ledger", "replicate", "--from", chain.ledger.url, "--genesis", str(chain.genesis)),
        *("--store", f"sqlite:///{chain.folder / 'replica.sqlite'}", "--port", str(port)),
        *("--evidence", str(chain.folder / "evidence")),
        log=log,
    )
    return process, log, f"http://127.0.0.1:{port}/v1/genesis"


def coordinator(chain: Chain) -> tuple[subprocess.Popen[bytes], Path, str]:
    log = chain.folder / "mixer.log"
    started = CoordinatorProcess(chain.genesis, chain.ledger.url, 3, log)
    return started.process, log, f"{started.url}/v1/pools/none"


def bid_store(chain: Chain) -> tuple[subprocess.Popen[bytes], Path, str]:
    started = BidStoreProcess(chain.genesis, chain.ledger.url, chain.folder, 10)
    return started.process, started.log_path, f"{started.url}/v1/status"


def dso_node(chain: Chain) -> tuple[subprocess.Popen[bytes], Path, str]:
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
    wait_dso(f"http://127.0.0.1:{port}", process, log)
    return process, log, f"http://127.0.0.1:{port}/v1/status"


SERVICES: dict[str, Callable[[Chain], tuple[subprocess.Popen[bytes], Path, str]]] = {
    "replica": replica,
    "mixer": coordinator,
    "bidstore": bid_store,
    "dso": dso_node,
}


@pytest.mark.parametrize("name", SERVICES)
def test_sigterm_stops_the_service_with_status_0(chain: Chain, name: str) -> None:
    process, log, probe = SERVICES[name](chain)
    try:
        deadline = time.monotonic() + 60
        while True:  # serving: any HTTP answer will do
            try:
                httpx.get(probe, timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"{name} did not start: {log.read_text()}"
                time.sleep(0.1)
        took = terminate(process, log)
    finally:
        stop(process)
    assert took < STOP_WITHIN_S, f"{name} took {took:.1f} s to stop"


def test_sigterm_ends_an_open_block_stream_and_the_node_exits_0(chain: Chain) -> None:
    """A reader of the block stream does not hold the node up, nor make it log a traceback:
    the stream ends when the node begins to stop."""
    scenario = Scenario(epoch=int(time.time()) - 20, interval_s=60)
    folder = chain.folder / "streaming"
    folder.mkdir()
    node = LedgerProcess.of_scenario(scenario, folder)
    try:
        node.wait_until_serving()
        with httpx.stream("GET", f"{node.url}/v1/stream/blocks", timeout=30) as stream:
            lines = stream.iter_lines()
            assert next(lines) == ": waiting"
            took = terminate(node.process, node.log_path)
            assert list(lines) == [] or all(line in ("", ": waiting") for line in lines)
    finally:
        node.stop()
    assert took < STOP_WITHIN_S
