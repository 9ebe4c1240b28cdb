"""Health and metrics of the ledger node and the DSO node (issue 20): `/healthz`, `/readyz`
check by check, and scrapes parsed by prometheus-client's own text parser, whose figures move
as transactions are accepted and rejected (by code) and as bills are taken in and refused."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import OperationalError

from assets import (
    MAX_BILL_BYTES,
    Authorization,
    Keypair,
    close_bill,
    encode_bill,
    encode_transaction,
    sign_bill,
)
from dso.api import create_app as create_dso_app
from dso.service import DsoService
from dso.store import DsoStore
from ledger import InProcessSequencer, Ledger
from ledger.api import LedgerNode, create_app
from ledger.blocks import BlockHeader, SignedHead
from ledger.client import LedgerClient, LedgerUnavailable
from ledger.head_watch import HeadWatch
from ledger.replica import Follower
from ledger.store import Store
from service.metrics import serve_metrics
from simulation.scenario import Scenario

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    """Every sample of `registry` as the text format carries it, read back by the parser."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def figure(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


SIGNER = Keypair.generate()  # the watch checks no signature: any key signs the fake heads


class FakeHead:
    """A ledger node's head as a `HeadWatch` asks it: `height`, or unreachable when `down`."""

    base_url = "http://ledger.test"

    def __init__(self) -> None:
        self.height = 0
        self.down = False

    def head(self) -> SignedHead | None:
        if self.down:
            raise LedgerUnavailable("cannot reach the ledger node: connection refused")
        header = BlockHeader(bytes(32), self.height, bytes(32), 0, 0, bytes(32))
        return SignedHead.sign(header, SIGNER)

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- the ledger node


@pytest.fixture
def scenario() -> Scenario:
    return Scenario()


@pytest.fixture
def node(tmp_path: Path, scenario: Scenario) -> Iterator[LedgerNode]:
    store = Store(f"sqlite:///{tmp_path}/ledger.sqlite")
    found = LedgerNode(Ledger(store, scenario.genesis, scenario.sequencer))
    yield found
    found.close()
    store.close()


def test_the_ledgers_figures_move_with_accepted_and_rejected_transactions(
    node: LedgerNode, scenario: Scenario
) -> None:
    future = (int(time.time()) - scenario.epoch) // scenario.interval_s + 10
    tariffs = [scenario.regulate(future, price_consumption=p) for p in (200_000, 250_000)]
    forged = scenario.regulate(future, price_consumption=1, key=Keypair.generate())
    with TestClient(create_app(node)) as http:
        before = scrape(node.registry)
        assert figure(before, "petra_ledger_height") == 0
        assert figure(before, "petra_ledger_transactions_rejected_total", code="duplicate") == 0
        for tx in tariffs:
            answer = http.post("/v1/transactions", content=encode_transaction(tx))
            assert answer.status_code == 200, answer.text
        refused = {
            "duplicate": encode_transaction(tariffs[0]),
            "bad_signature": encode_transaction(forged),
            "malformed": b'{"type": "issue"}',
            "regulation_in_past": encode_transaction(scenario.regulate(0, price_consumption=1)),
        }
        for code, raw in refused.items():
            answer = http.post("/v1/transactions", content=raw)
            assert answer.json()["error"]["code"] == code, answer.text
    after = scrape(node.registry)
    assert figure(after, "petra_ledger_transactions_submitted_total") == 6
    assert figure(after, "petra_ledger_transactions_accepted_total") == 2
    for code in refused:
        assert figure(after, "petra_ledger_transactions_rejected_total", code=code) == 1
    assert figure(after, "petra_ledger_transactions_rejected_total", code="double_spend") == 0
    assert figure(after, "petra_ledger_height") == 2
    assert figure(after, "petra_ledger_tree_size") == 2
    assert figure(after, "petra_ledger_block_seconds_count") == 6  # one submission per block
    assert figure(after, "petra_ledger_block_transactions_sum") == 6
    assert figure(after, "petra_ledger_streams") == 0
    assert figure(after, "process_resident_memory_bytes") > 0


def test_the_metrics_port_serves_the_registry_in_the_text_format(node: LedgerNode) -> None:
    served = serve_metrics(node.registry, "127.0.0.1", 0)
    try:
        answer = httpx.get(f"http://127.0.0.1:{served.port}/metrics", timeout=10)
    finally:
        served.close()
    names = {f.name for f in text_string_to_metric_families(answer.text)}
    assert {"petra_ledger_height", "petra_ledger_transactions_rejected"} <= names


def test_a_primary_is_ready_until_its_store_fails_or_its_sequencer_stops(
    node: LedgerNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(create_app(node)) as http:
        assert http.get("/healthz").json() == {"status": "alive"}
        ready = http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"store": "ok", "sequencer": "ok"}

        def broken() -> None:
            raise OperationalError("SELECT", {}, Exception("disk I/O error"))

        with monkeypatch.context() as patched:
            patched.setattr(node.ledger.store, "head", broken)
            answer = http.get("/readyz")
            assert answer.status_code == 503
            assert answer.json()["error"]["checks"]["store"].startswith(
                "the ledger's store does not answer"
            )
        assert isinstance(node.sequencer, InProcessSequencer)
        assert node.sequencer.on_failure is not None
        node.sequencer.on_failure(OSError("no space left on device"))
        answer = http.get("/readyz")
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        error = answer.json()["error"]
        assert error["code"] == "not_ready"
        assert "no space left on device" in error["checks"]["sequencer"]
        assert http.get("/healthz").status_code == 200  # alive: its supervisor decides


def test_a_replica_is_ready_once_it_follows_its_primary_and_is_caught_up(
    tmp_path: Path, scenario: Scenario
) -> None:
    store = Store(f"sqlite:///{tmp_path}/replica.sqlite")
    replica = LedgerNode(Ledger(store, scenario.genesis), primary="http://ledger.test")
    primary, clock = FakeHead(), Clock()
    try:
        with TestClient(create_app(replica)) as http:
            answer = http.get("/readyz")
            assert answer.status_code == 503
            assert "does not follow its primary" in answer.json()["error"]["checks"]["primary"]
            follower = Follower(replica.ledger, LedgerClient(primary.base_url), tmp_path)
            watch = HeadWatch(primary, every_s=60, max_lag_blocks=3, clock=clock)
            replica.watch(follower, watch)  # its thread asks once at start
            watch.ask()
            assert http.get("/readyz").status_code == 200

            primary.height = 4  # the replica holds no block: 4 behind
            watch.ask()
            answer = http.get("/readyz")
            assert answer.status_code == 503
            assert "4 blocks behind" in answer.json()["error"]["checks"]["primary"]
            samples = scrape(replica.registry)
            assert figure(samples, "petra_ledger_replica_lag_blocks") == 4
            assert figure(samples, "petra_ledger_primary_silence_seconds") == 0

            primary.height = 3
            watch.ask()
            assert http.get("/readyz").status_code == 200
            clock.now += watch.max_silence_s + 1  # nothing heard since
            assert "has not answered for" in http.get("/readyz").json()["error"]["message"]
            primary.down = True
            watch.ask()
            assert "connection refused" in http.get("/readyz").json()["error"]["message"]
    finally:
        replica.close()
        store.close()


# ---------------------------------------------------------------- the DSO node


@pytest.fixture
def dso(tmp_path: Path, scenario: Scenario) -> Iterator[DsoService]:
    """A DSO node over no reachable ledger, its clock in interval 100, its watch of the ledger
    asking a `FakeHead`; its threads are not started (the test drives it)."""
    store = DsoStore(f"sqlite:///{tmp_path / 'dso.sqlite'}")
    client = LedgerClient("http://127.0.0.1:9", retries=0)
    service = DsoService(
        store, client, scenario.genesis, scenario.dso, clock=lambda: scenario.time_in(100)
    )
    service.ledger_watch.client.close()
    service.ledger_watch.client = FakeHead()
    yield service
    service.close()
    client.close()
    store.close()


def authorize_meter(service: DsoService, scenario: Scenario, meter: str, key: Keypair) -> None:
    """Put an authorization of `meter` in the DSO's schedule, as its index would."""
    regulation = scenario.regulate(0, authorize=[Authorization(meter, key.public_key, 1, 1)])
    with service.state.lock:
        service.state.schedule.apply(regulation, 0)


def bill_of(scenario: Scenario, meter: str, key: Keypair, interval: int) -> bytes:
    unsigned = close_bill(
        chain=scenario.chain,
        meter=meter,
        interval=interval,
        closed_height=0,
        interval_s=scenario.interval_s,
        measured_j=3_600_000,
        issued_epa_w=0,
        deposited_epa_w=0,
        fa_issued=0,
        fa_deposited=0,
        price_consumption=None,
        price_production=None,
        issues=(),
        deposits=(),
    )
    return encode_bill(sign_bill(unsigned, key))


def test_the_dsos_figures_move_with_bills_taken_in_and_refused(
    dso: DsoService, scenario: Scenario
) -> None:
    key = Keypair.generate()
    authorize_meter(dso, scenario, "m1", key)
    with TestClient(create_dso_app(dso), raise_server_exceptions=False) as http:
        before = scrape(dso.registry)
        assert figure(before, "petra_dso_bills", status="pending") == 0
        assert figure(before, "petra_dso_meters_authorized") == 1
        good = bill_of(scenario, "m1", key, 7)
        assert http.post("/v1/bills", content=good).status_code == 201
        assert http.post("/v1/bills", content=good).status_code == 200  # the same, again
        refused = {
            "bad_signature": bill_of(scenario, "m1", Keypair.generate(), 8),
            "meter_unknown": bill_of(scenario, "m2", key, 7),
            "interval_open": bill_of(scenario, "m1", key, 100),
            "malformed": b"{}",
            "too_large": b"x" * (MAX_BILL_BYTES + 1),
        }
        for code, raw in refused.items():
            answer = http.post("/v1/bills", content=raw)
            assert answer.json()["error"]["code"] == code, answer.text
    stored = dso.store.bills(0, 1_000)
    with dso.store.writing() as conn:  # a bill the reconciliation flagged, kept as it would be
        flagged = dataclasses.replace(stored[0], id=bytes(32), interval=9, status="flagged")
        dso.store.add_bills(conn, [(flagged, [])])
    after = scrape(dso.registry)
    assert figure(after, "petra_dso_bills_received_total") == 1
    for code in refused:
        assert figure(after, "petra_dso_bill_refusals_total", code=code) == 1
    assert figure(after, "petra_dso_bill_refusals_total", code="bill_conflict") == 0
    bills = {s: figure(after, "petra_dso_bills", status=s) for s in ("pending", "reconciled")}
    assert sum(bills.values()) == 1 and bills[stored[0].status] == 1
    assert figure(after, "petra_dso_bills", status="flagged") == 1


def test_the_dso_is_ready_while_the_ledger_answers_and_its_index_is_caught_up(
    dso: DsoService,
) -> None:
    ledger = dso.ledger_watch.client
    assert isinstance(ledger, FakeHead)
    with TestClient(create_dso_app(dso)) as http:
        assert http.get("/healthz").json() == {"status": "alive"}
        answer = http.get("/readyz")
        assert answer.status_code == 503
        assert "has not answered yet" in answer.json()["error"]["checks"]["ledger"]
        dso.ledger_watch.ask()
        assert http.get("/readyz").json() == {
            "status": "ready",
            "checks": {"store": "ok", "ledger": "ok"},
        }
        ledger.height = 50  # the index holds nothing yet
        dso.ledger_watch.ask()
        answer = http.get("/readyz")
        assert answer.status_code == 503
        assert "50 blocks behind" in answer.json()["error"]["message"]
        samples = scrape(dso.registry)
        assert figure(samples, "petra_dso_ledger_height") == 0
        assert figure(samples, "petra_dso_ledger_lag_blocks") == 50
        ledger.down = True
        dso.ledger_watch.ask()
        assert "connection refused" in http.get("/readyz").json()["error"]["checks"]["ledger"]


def test_a_ledger_node_counts_each_block_once_whatever_the_load(
    node: LedgerNode, scenario: Scenario
) -> None:
    """Many submissions at once are cut into fewer blocks: every transaction still counts once."""
    assert node.sequencer is not None
    tickets = [node.sequencer.submit(b"{}") for _ in itertools.repeat(None, 50)]
    for ticket in tickets:
        assert ticket.result(10).code is not None
    samples = scrape(node.registry)
    assert figure(samples, "petra_ledger_transactions_rejected_total", code="malformed") == 50
    assert figure(samples, "petra_ledger_block_transactions_sum") == 50
    assert figure(samples, "petra_ledger_block_seconds_count") == figure(
        samples, "petra_ledger_block_transactions_count"
    )
