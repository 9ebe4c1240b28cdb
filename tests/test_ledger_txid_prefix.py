"""Transactions named by a prefix of their id (docs/cli.md, Ids): the store's query is a range
of the txid index, so a prefix's case does not matter (SQLite's LIKE ignores case only for
ASCII, GLOB never) and no character is a wildcard (`%`, `_`, `*`, `[`); the node's
`GET /v1/transactions?prefix=` answers at most ten ids and whether there are more, and
refuses a prefix that is not 4 to 64 hex digits with 400 `bad_request`."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from assets import Authorization, Fa, Keypair, encode_transaction
from ledger import Ledger
from ledger.api import MAX_PREFIX_MATCHES, LedgerNode, create_app
from ledger.store import Store, transactions
from simulation.scenario import Scenario, pay

ADVERSARIAL = ["%", "%%%%", "____", "ab%d", "ab_d", "****", "[a-f]*", "zzzz", "abc ", "ab\x00c"]


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A ledger of a regulation and five issues, on SQLite."""
    scenario = Scenario()
    meter = Keypair.generate()
    ledger = Ledger(Store(f"sqlite:///{tmp_path}/l.sqlite"), scenario.genesis, scenario.sequencer)
    authorize = Authorization("meter-1", meter.public_key, 10_000, 10_000)
    raws = [encode_transaction(scenario.regulate(0, authorize=[authorize]))]
    nonces = itertools.count(1)
    for _ in range(5):
        outputs = [pay(Fa(1_000), Keypair.generate())]
        raws.append(encode_transaction(scenario.issue("meter-1", meter, next(nonces), outputs)))
    for n, raw in enumerate(raws):
        outcome = ledger.append_block([raw], scenario.time_in(min(n, 1)))
        assert outcome.outcomes[0].accepted, outcome.outcomes[0]
    yield ledger
    ledger.store.close()


def stored_txids(store: Store) -> list[bytes]:
    with store.engine.connect() as conn:
        return sorted(bytes(row.txid) for row in conn.execute(transactions.select()))


def add_txids(store: Store, txids: list[bytes]) -> None:
    """Rows of `transactions` with these ids, far beyond the log (only their ids are read)."""
    rows = [
        {"seq": 10**9 + n, "txid": t, "height": 10**9, "type": "transfer", "body": b"{}"}
        | {"leaf_hash": bytes(32)}
        for n, t in enumerate(txids)
    ]
    with store.engine.begin() as conn:
        conn.execute(transactions.insert(), rows)


def test_a_prefix_of_either_case_finds_its_transaction(ledger: Ledger) -> None:
    store = ledger.store
    for txid in stored_txids(store):
        full = txid.hex()
        for prefix in (full[:4], full[:4].upper(), full[:5], full[:7].upper(), full, full.upper()):
            found = store.txids_with_prefix(prefix, 10)
            assert txid in found
            assert all(t.hex().startswith(prefix.lower()) for t in found)


def test_a_prefix_that_starts_no_id_finds_none(ledger: Ledger) -> None:
    taken = {t.hex()[:4] for t in stored_txids(ledger.store)}
    absent = next(p for p in (f"{n:04x}" for n in range(1 << 16)) if p not in taken)
    assert ledger.store.txids_with_prefix(absent, 10) == []


def test_the_range_ends_at_the_last_id_starting_so_and_the_limit_holds(ledger: Ledger) -> None:
    alike = [bytes.fromhex("abcd" + f"{n:02x}" * 30) for n in (0x00, 0x7F, 0xFF)]
    neighbours = [bytes.fromhex("abcc" + "ff" * 30), bytes.fromhex("abce" + "00" * 30)]
    add_txids(ledger.store, alike + neighbours)
    assert ledger.store.txids_with_prefix("ABCD", 10) == alike
    assert ledger.store.txids_with_prefix("abcd", 2) == alike[:2]
    assert ledger.store.txids_with_prefix("abcdf", 10) == [alike[2]]
    assert ledger.store.txids_with_prefix("abcd" + "ff" * 30, 10) == [alike[2]]


@pytest.mark.parametrize("prefix", [*ADVERSARIAL, "", "a" * 65], ids=repr)
def test_the_store_refuses_a_prefix_that_is_not_hex(ledger: Ledger, prefix: str) -> None:
    with pytest.raises(ValueError, match="hex digits"):
        ledger.store.txids_with_prefix(prefix, 10)


@pytest.fixture
def http(ledger: Ledger) -> Iterator[TestClient]:
    node = LedgerNode(ledger, primary="http://primary.test")  # a replica: no sequencer to run
    with TestClient(create_app(node)) as client:
        yield client


def test_the_node_answers_the_ids_a_prefix_starts(ledger: Ledger, http: TestClient) -> None:
    txid = stored_txids(ledger.store)[0].hex()
    answer = http.get("/v1/transactions", params={"prefix": txid[:6].upper()})
    assert answer.status_code == 200
    assert answer.json() == {"prefix": txid[:6], "txids": [txid], "more": False}


def test_the_node_answers_ten_ids_at_most_and_says_there_are_more(
    ledger: Ledger, http: TestClient
) -> None:
    alike = [bytes.fromhex("abcd" + f"{n:060x}") for n in range(MAX_PREFIX_MATCHES + 2)]
    add_txids(ledger.store, alike)
    answer = http.get("/v1/transactions", params={"prefix": "abcd"}).json()
    assert answer["txids"] == [t.hex() for t in alike[:MAX_PREFIX_MATCHES]]
    assert answer["more"] is True
    last = alike[-1].hex()
    exact = http.get("/v1/transactions", params={"prefix": last}).json()
    assert exact == {"prefix": last, "txids": [last], "more": False}


@pytest.mark.parametrize("prefix", [*ADVERSARIAL, "abc", "a" * 65], ids=repr)
def test_the_node_refuses_a_prefix_that_is_not_4_to_64_hex_digits(
    http: TestClient, prefix: str
) -> None:
    answer = http.get("/v1/transactions", params={"prefix": prefix})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "bad_request"
    assert "hex digits" in answer.json()["error"]["message"]


def test_the_node_refuses_a_listing_without_a_prefix(http: TestClient) -> None:
    answer = http.get("/v1/transactions")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "bad_request"
