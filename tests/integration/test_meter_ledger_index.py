"""`smartmeter.ledger_index.MeterLedgerIndex` against a real `petra ledger serve` process: what
it learns from the ledger, and that after a restart it knows the same without reading old blocks
again."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from assets import (
    AssetKind,
    Authorization,
    DepositFact,
    Epa,
    Fa,
    IssuedFact,
    Keypair,
    Outpoint,
    Output,
    Transaction,
    encode_transaction,
    txid,
)
from assets.keyfile import dump_keys
from ledger.client import LedgerClient
from ledger.schedule import MeterStatus, Prices
from simulation.processes import stop
from simulation.scenario import Scenario, pay
from smartmeter.deposits import deposit_key
from smartmeter.ledger_index import MeterLedgerIndex
from smartmeter.store import MeterStore

from .nodes import authorize_now, serve_ledger

SEED = bytes(range(32))  # the meter's deposit seed
LIMIT = 10**6  # MAXEPA and MAXECA of both meters, W
WAIT_S = 30


@dataclass
class Ledger:
    url: str
    scenario: Scenario
    m1: Keypair
    m2: Keypair
    process: subprocess.Popen[bytes]

    def submit(self, tx: Transaction) -> int:
        """The height of the block `tx` landed in."""
        answer = httpx.post(
            f"{self.url}/v1/transactions", content=encode_transaction(tx), timeout=30
        )
        assert answer.status_code == 200, answer.text
        return int(answer.json()["height"])

    def interval_of(self, height: int) -> int:
        """The interval block `height`'s time falls in."""
        found = LedgerClient(self.url).block(height)
        assert found is not None
        return self.scenario.genesis.interval_at(found[0].header.time)

    def now(self) -> int:
        return int(time.time()) - self.scenario.epoch


class CountingTransport(httpx.HTTPTransport):
    """The real HTTP transport, remembering the path and query of every request."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, dict[str, str]]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.asked.append((request.url.path, dict(request.url.params)))
        return super().handle_request(request)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A ledger node on SQLite with meters `m1` and `m2` authorized and in force."""
    scenario = Scenario(epoch=int(time.time()) - 10, interval_s=1)
    m1, m2 = Keypair.generate(), Keypair.generate()
    genesis, keys = tmp_path / "genesis.json", tmp_path / "keys.json"
    genesis.write_bytes(scenario.genesis_raw)
    keys.write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
    store = f"sqlite:///{tmp_path}/ledger.sqlite"
    url, process = serve_ledger(genesis, keys, store, tmp_path / "node.log")
    authorize_now(
        url,
        scenario,
        [
            Authorization("m1", m1.public_key, LIMIT, LIMIT),
            Authorization("m2", m2.public_key, LIMIT, LIMIT),
        ],
    )
    yield Ledger(url, scenario, m1, m2, process)
    stop(process)


def test_the_watcher_learns_regulations_own_issues_and_deposits_and_keeps_them(
    ledger: Ledger, tmp_path: Path
) -> None:
    scenario, genesis = ledger.scenario, ledger.scenario.genesis
    meter_db = f"sqlite:///{tmp_path}/meter.sqlite"
    ledger_index = MeterLedgerIndex(
        LedgerClient(ledger.url), MeterStore(meter_db), genesis, "m1", SEED, lookahead=5
    )
    handed = ledger_index.next_deposit_address()
    assert handed == deposit_key(SEED, 0).public_key
    ahead = deposit_key(SEED, 3).public_key  # watched, not handed out yet

    priced_after = ledger.now() + 2
    ledger.submit(
        scenario.regulate(priced_after, price_consumption=250_000, price_production=80_000)
    )
    alice, bob, stranger = Keypair.generate(), Keypair.generate(), Keypair.generate()
    epa = Epa(500, 10**6, 10**6 + 3)
    own = scenario.issue("m1", ledger.m1, 1, [pay(Fa(1_000), alice), pay(epa, alice)])
    own_height = ledger.submit(own)
    ledger.submit(scenario.issue("m2", ledger.m2, 1, [pay(Fa(7), bob)]))
    paying = scenario.transfer(
        [Outpoint(txid(own), 0), Outpoint(txid(own), 1)],
        [
            Output(Fa(600), handed),
            Output(Fa(300), ahead),
            pay(Fa(100), stranger),
            Output(epa, handed),
        ],
        alice,
    )
    height = ledger.submit(paying)

    ledger_index.start()
    try:
        assert ledger_index.wait_for(height, WAIT_S), (
            ledger_index.problem or ledger_index.last_error
        )
    finally:
        ledger_index.stop()
    issues = [IssuedFact(txid(own), own_height, ledger.interval_of(own_height), own.outputs)]
    deposits = [
        DepositFact(Outpoint(txid(paying), i), asset, height, ledger.interval_of(height))
        for i, asset in ((0, Fa(600)), (1, Fa(300)), (3, epa))
    ]

    def knows_it_all(w: MeterLedgerIndex) -> None:
        assert w.height >= height and w.problem is None
        assert w.prices_at(priced_after) == Prices(None, None)
        assert w.prices_at(priced_after + 1) == Prices(250_000, 80_000)
        assert w.status_at(10**6) == MeterStatus(ledger.m1.public_key, LIMIT, LIMIT, False)
        assert w.issues() == issues and w.issues(max_height=own_height - 1) == []
        assert w.deposits() == deposits and w.deposits(max_height=height - 1) == []
        with w.lock:
            assert (w.issued.fa_issued, w.issued.fa_deposited) == (1_000, 900)
            assert w.issued.power[AssetKind.EPA].value_at(10**6) == 500

    knows_it_all(ledger_index)
    # Index 3 was paid before it was handed out: it is never handed out.
    assert ledger_index.next_deposit_address() == deposit_key(SEED, 4).public_key

    # Restarted on the same database: the same state before reading a single block...
    transport = CountingTransport()
    again = MeterLedgerIndex(
        LedgerClient(ledger.url, transport=transport),
        MeterStore(meter_db),
        genesis,
        "m1",
        SEED,
        lookahead=5,
    )
    knows_it_all(again)
    assert again.height == height and transport.asked == []
    # ...and then only the new blocks.
    repriced_after = priced_after + 1_000  # far enough not to change what knows_it_all checks
    later = ledger.submit(scenario.regulate(repriced_after, price_consumption=300_000))
    again.start()
    try:
        assert again.wait_for(later, WAIT_S), again.problem or again.last_error
    finally:
        again.stop()
    assert transport.asked and all(
        path == "/v1/blocks" and int(params["from"]) > height for path, params in transport.asked
    )
    assert again.prices_at(repriced_after + 1) == Prices(300_000, 80_000)
    assert again.next_deposit_address() == deposit_key(SEED, 5).public_key

    # A meter that lost its database finds its deposits again, and hands out no used address.
    rebuilt = MeterLedgerIndex(
        LedgerClient(ledger.url),
        MeterStore(f"sqlite:///{tmp_path}/lost.sqlite"),
        genesis,
        "m1",
        SEED,
        lookahead=5,
    )
    assert rebuilt.poll() == later
    knows_it_all(rebuilt)
    assert rebuilt.next_deposit_address() == deposit_key(SEED, 4).public_key
