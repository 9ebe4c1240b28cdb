"""Health and metrics of real `petra ledger serve`, `petra ledger replicate` and `petra dso
serve` processes (issue 20): the DSO and the replica turn unready when the ledger process stops
and ready again when it returns on the same port over the same store; each metrics port is
scraped and read by prometheus-client's parser, its figures moving as the test drives the
nodes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_until

from assets import encode_transaction
from assets.keyfile import dump_keys
from simulation.processes import PetraProcess, free_port
from simulation.scenario import Scenario

pytestmark = pytest.mark.slow

PASSPHRASE = b"correct horse battery staple"
INTERVAL_S = 2
READY_WITHIN_S = 20  # a node's watch asks every second; a restart takes a few


@dataclass
class Files:
    folder: Path
    scenario: Scenario
    genesis: Path
    ledger_keys: Path
    dso_keys: Path
    passphrase: Path


@pytest.fixture
def files(tmp_path: Path) -> Files:
    scenario = Scenario(epoch=int(time.time()) - 10 * INTERVAL_S, interval_s=INTERVAL_S)
    found = Files(
        tmp_path,
        scenario,
        tmp_path / "genesis.json",
        tmp_path / "ledger-keys.json",
        tmp_path / "dso-keys.json",
        tmp_path / "passphrase",
    )
    found.genesis.write_bytes(scenario.genesis_raw)
    found.ledger_keys.write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
    found.dso_keys.write_bytes(dump_keys({"dso-0": scenario.dso}, PASSPHRASE))
    found.passphrase.write_bytes(PASSPHRASE + b"\n")
    return found


def ledger_process(files: Files, port: int, metrics_port: int, log: str) -> PetraProcess:
    node = PetraProcess(
        [
            *("ledger", "serve", "--genesis", str(files.genesis), "--keys", str(files.ledger_keys)),
            *("--store", f"sqlite:///{files.folder / 'ledger.sqlite'}", "--port", str(port)),
            *("--metrics-port", str(metrics_port)),
        ],
        files.folder / log,
        f"http://127.0.0.1:{port}",
        probe="/healthz",
        what="ledger node",
    )
    node.wait_until_serving()
    return node


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples at http://127.0.0.1:port/metrics, read by prometheus-client's parser."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def unready_because(url: str) -> str | None:
    """The `/readyz` message of a node that answers unready; None while it is ready."""
    answer = httpx.get(f"{url}/readyz", timeout=5)
    return None if answer.status_code == 200 else str(answer.json()["error"]["message"])


@dataclass
class Nodes:
    files: Files
    ledger: PetraProcess
    ledger_port: int
    ledger_metrics: int
    replica: PetraProcess
    replica_metrics: int
    dso: PetraProcess
    dso_metrics: int


@pytest.fixture
def nodes(files: Files) -> Iterator[Nodes]:
    """A ledger node, a replica of it and a DSO node over it, each with its metrics port."""
    ledger_port, ports = free_port(), [free_port() for _ in range(5)]
    ledger = ledger_process(files, ledger_port, ports[0], "ledger.log")
    started = [ledger]
    try:
        replica = PetraProcess(
            [
                *("ledger", "replicate", "--ledger", ledger.url),
                *("--genesis", str(files.genesis), "--port", str(ports[1])),
                *("--store", f"sqlite:///{files.folder / 'replica.sqlite'}"),
                *("--evidence", str(files.folder / "evidence"), "--metrics-port", str(ports[2])),
            ],
            files.folder / "replica.log",
            f"http://127.0.0.1:{ports[1]}",
            probe="/healthz",
            what="replica",
        )
        started.append(replica)
        dso_port = free_port()
        dso = PetraProcess(
            [
                *("dso", "serve", "--genesis", str(files.genesis), "--keys", str(files.dso_keys)),
                *("--passphrase-file", str(files.passphrase), "--ledger", ledger.url),
                *("--store", f"sqlite:///{files.folder / 'dso.sqlite'}"),
                *("--port", str(dso_port), "--metrics-port", str(ports[3])),
            ],
            files.folder / "dso.log",
            f"http://127.0.0.1:{dso_port}",
            probe="/healthz",
            what="DSO node",
        )
        started.append(dso)
        replica.wait_until_serving()
        dso.wait_until_serving()
        running = Nodes(files, ledger, ledger_port, ports[0], replica, ports[2], dso, ports[3])
        try:
            yield running
        finally:
            started.append(running.ledger)  # a test may have restarted it
    finally:
        for process in reversed(started):
            process.stop()


def test_the_dso_and_the_replica_are_unready_while_the_ledger_is_down(nodes: Nodes) -> None:
    for node in (nodes.ledger, nodes.replica, nodes.dso):
        assert httpx.get(f"{node.url}/healthz", timeout=5).json() == {"status": "alive"}
        wait_until(partial(ready, node.url), READY_WITHIN_S, f"{node.what} ready")

    nodes.ledger.stop()
    for node in (nodes.replica, nodes.dso):
        reason = wait_until(
            partial(unready_because, node.url), READY_WITHIN_S, f"{node.what} unready"
        )
        assert nodes.ledger.url in reason
    assert httpx.get(f"{nodes.dso.url}/healthz", timeout=5).status_code == 200  # still alive

    # Back on the same port over the same store: both follow it again.
    nodes.ledger = ledger_process(
        nodes.files, nodes.ledger_port, nodes.ledger_metrics, "ledger-again.log"
    )
    for node in (nodes.replica, nodes.dso):
        wait_until(partial(ready, node.url), READY_WITHIN_S, f"{node.what} ready again")


def test_each_nodes_metrics_port_is_scraped_as_the_nodes_work(nodes: Nodes) -> None:
    scenario = nodes.files.scenario
    before = metrics(nodes.ledger_metrics)
    assert before[("petra_ledger_height", ())] == 0
    future = (int(time.time()) - scenario.epoch) // INTERVAL_S + 100
    tariff = encode_transaction(scenario.regulate(future, price_consumption=200_000))
    for raw in (tariff, tariff, b"{}"):
        httpx.post(f"{nodes.ledger.url}/v1/transactions", content=raw, timeout=30)
    refused = httpx.post(f"{nodes.dso.url}/v1/bills", content=b"{}", timeout=30)
    assert refused.json()["error"]["code"] == "malformed"

    ledger = metrics(nodes.ledger_metrics)
    assert ledger[("petra_ledger_transactions_submitted_total", ())] == 3
    assert ledger[("petra_ledger_transactions_accepted_total", ())] == 1
    for code in ("duplicate", "malformed"):
        assert ledger[("petra_ledger_transactions_rejected_total", (("code", code),))] == 1
    assert ledger[("petra_ledger_height", ())] == 1
    assert ledger[("petra_ledger_block_seconds_count", ())] == 3
    assert ledger[("process_resident_memory_bytes", ())] > 0

    def indexed(port: int, name: str) -> bool:
        return metrics(port).get((name, ())) == 1

    wait_until(lambda: indexed(nodes.dso_metrics, "petra_dso_ledger_height"), 10, "DSO index")
    wait_until(lambda: indexed(nodes.replica_metrics, "petra_ledger_height"), 10, "replica")
    dso = metrics(nodes.dso_metrics)
    assert dso[("petra_dso_bill_refusals_total", (("code", "malformed"),))] == 1
    assert dso[("petra_dso_bills_received_total", ())] == 0
    assert dso[("petra_dso_bills", (("status", "pending"),))] == 0
    assert dso[("petra_dso_ledger_lag_blocks", ())] == 0
    replica = metrics(nodes.replica_metrics)
    assert replica[("petra_ledger_replica_lag_blocks", ())] == 0
    assert ("petra_ledger_transactions_submitted_total", ()) in replica  # counts none: a replica
    assert replica[("petra_ledger_transactions_submitted_total", ())] == 0
