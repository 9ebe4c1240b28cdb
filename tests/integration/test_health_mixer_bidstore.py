"""Readiness and metrics of the mixer coordinator and the bid store as real processes (issue
20): `petra ledger serve`, `petra mixer serve` and `petra bidstore serve` on loopback. Both
are ready while the ledger answers; when the ledger process stops, `/readyz` turns 503 naming
the ledger, and 200 again once the same ledger is back on the same port. Their metrics ports
are scraped and read by prometheus-client's parser, the figures moving with what the test
sends."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_until

from assets.keyfile import dump_keys
from simulation.processes import HOST, PetraProcess, free_port
from simulation.scenario import Scenario

pytestmark = pytest.mark.slow

READY_TIMEOUT_S = 20.0  # a follower retries with backoff: well within this


@dataclass
class Ledger:
    """`petra ledger serve` over one store, on one port across restarts."""

    folder: Path
    port: int
    process: PetraProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        self.process = PetraProcess(
            [
                *("ledger", "serve", "--genesis", str(self.folder / "genesis.json")),
                *("--keys", str(self.folder / "keys.json")),
                *("--store", f"sqlite:///{self.folder / 'ledger.sqlite'}"),
                *("--port", str(self.port), "--metrics-port", "0"),
            ],
            self.folder / "ledger.log",
            self.url,
            probe="/v1/genesis",
            what="ledger node",
        )
        self.process.wait_until_serving()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


@dataclass(frozen=True)
class Served:
    """A role's process, its API URL and its metrics port."""

    process: PetraProcess
    metrics_port: int

    @property
    def url(self) -> str:
        return self.process.url

    def readyz(self) -> httpx.Response:
        return httpx.get(f"{self.url}/readyz", timeout=5)

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"http://{HOST}:{self.metrics_port}/metrics", timeout=5).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


def serve_role(role: str, ledger: Ledger, folder: Path, probe: str, *extra: str) -> Served:
    port, metrics_port = free_port(), free_port()
    process = PetraProcess(
        [
            *(role, "serve", "--genesis", str(folder / "genesis.json"), "--ledger", ledger.url),
            *("--port", str(port), "--metrics-port", str(metrics_port), *extra),
        ],
        folder / f"{role}.log",
        f"http://{HOST}:{port}",
        probe=probe,
        what=role,
    )
    process.wait_until_serving()
    return Served(process, metrics_port)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ledger, Served, Served]]:
    folder = tmp_path_factory.mktemp("health")
    scenario = Scenario(epoch=int(time.time()) - 10, interval_s=1)
    (folder / "genesis.json").write_bytes(scenario.genesis_raw)
    fd = os.open(folder / "keys.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as keys:
        keys.write(dump_keys({"sequencer-0": scenario.sequencer}, None))
    ledger = Ledger(folder, free_port())
    ledger.start()
    started: list[Served] = []
    try:
        started.append(serve_role("mixer", ledger, folder, "/healthz"))
        started.append(serve_role("bidstore", ledger, folder, "/healthz"))
        yield ledger, started[0], started[1]
    finally:
        for served in started:
            served.process.stop()
        ledger.stop()


def ready(served: Served) -> bool:
    return served.readyz().status_code == 200


def not_ready(served: Served) -> str | None:
    """The ledger check's sentence while `served` is not ready, else None."""
    answer = served.readyz()
    if answer.status_code != 503:
        return None
    problem: str = answer.json()["error"]["checks"]["ledger"]
    return problem


def test_both_turn_unready_when_the_ledger_stops_and_ready_when_it_returns(
    services: tuple[Ledger, Served, Served],
) -> None:
    ledger, mixer, store = services
    for served in (mixer, store):
        wait_until(partial(ready, served), READY_TIMEOUT_S, f"{served.url} ready")
        assert httpx.get(f"{served.url}/healthz", timeout=5).json() == {"status": "alive"}

    ledger.stop()
    try:
        for served in (mixer, store):
            problem = wait_until(
                partial(not_ready, served), READY_TIMEOUT_S, f"{served.url} unready"
            )
            assert "ledger" in problem
            assert httpx.get(f"{served.url}/healthz", timeout=5).status_code == 200
    finally:
        ledger.start()  # the same store on the same port
    for served in (mixer, store):
        wait_until(partial(ready, served), READY_TIMEOUT_S, f"{served.url} ready again")


def test_the_mixers_metrics_port_counts_its_refusals(
    services: tuple[Ledger, Served, Served],
) -> None:
    _, mixer, _ = services
    before = mixer.scrape()
    assert before[("petra_mixer_pools", (("state", "forming"),))] == 0
    assert ("process_resident_memory_bytes", ()) in before
    refused = before.get(("petra_mixer_refusals_total", (("code", "malformed"),)), 0)
    answer = httpx.post(f"{mixer.url}/v1/join", json={"v": 1}, timeout=5)
    assert answer.json()["error"]["code"] == "malformed"
    after = mixer.scrape()
    assert after[("petra_mixer_refusals_total", (("code", "malformed"),))] == refused + 1
    assert after[("petra_mixer_ledger_contact_age_seconds", ())] < 10


def test_the_bid_stores_metrics_port_counts_orders_and_follows_the_ledger(
    services: tuple[Ledger, Served, Served],
) -> None:
    _, _, store = services
    wait_until(lambda: ready(store), READY_TIMEOUT_S, "the bid store ready")
    before = store.scrape()
    assert before[("petra_bidstore_open_orders", (("side", "ask"),))] == 0
    assert before[("petra_bidstore_ledger_lag_blocks", ())] == 0
    refused = before[("petra_bidstore_orders_total", (("outcome", "refused"),))]
    answer = httpx.post(f"{store.url}/v1/orders", content=b"[]", timeout=5)
    assert answer.status_code == 400
    after = store.scrape()
    assert after[("petra_bidstore_orders_total", (("outcome", "refused"),))] == refused + 1
    assert after[("petra_bidstore_refusals_total", (("code", "malformed"),))] >= 1
    assert after[("petra_bidstore_trades_total", (("status", "settled"),))] == 0
