"""`petra ledger serve` as a real process on loopback, on SQLite and PostgreSQL: docs/api.md."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from assets import (
    Authorization,
    Epa,
    Fa,
    Issue,
    Keypair,
    Outpoint,
    Output,
    Transaction,
    encode_transaction,
    txid,
)
from assets.codec import MAX_TX_BYTES
from assets.keyfile import dump_keys
from ledger.client import head_from_wire
from simulation.processes import stop
from simulation.scenario import Scenario, pay

from .nodes import assert_proofs_verify, authorize_now, serve_ledger


@dataclass
class Node:
    url: str
    scenario: Scenario
    meter: Keypair
    process: subprocess.Popen[bytes]
    nonce: int = 0

    def submit(self, tx: Transaction | bytes) -> httpx.Response:
        raw = tx if isinstance(tx, bytes) else encode_transaction(tx)
        return httpx.post(f"{self.url}/v1/transactions", content=raw, timeout=30)

    def get(self, path: str, **params: str | int) -> httpx.Response:
        return httpx.get(f"{self.url}/v1{path}", params=params, timeout=30)

    def issue(self, *outputs: Output) -> Issue:
        self.nonce += 1
        return self.scenario.issue("m1", self.meter, self.nonce, outputs)


@pytest.fixture
def node(store_url: str, tmp_path: Path) -> Iterator[Node]:
    """A node over a fresh store, with meter `m1` authorized and in force."""
    scenario = Scenario(epoch=int(time.time()) - 10, interval_s=1)
    meter = Keypair.generate()
    genesis, keys = tmp_path / "genesis.json", tmp_path / "keys.json"
    genesis.write_bytes(scenario.genesis_raw)
    keys.write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
    url, process = serve_ledger(genesis, keys, store_url, tmp_path / "node.log")
    authorize_now(url, scenario, [Authorization("m1", meter.public_key, 10**6, 10**6)])
    yield Node(url, scenario, meter, process)
    stop(process)


def test_submit_read_and_prove(node: Node) -> None:
    alice, bob = Keypair.generate(), Keypair.generate()
    issue = node.issue(pay(Fa(1_000), alice), pay(Epa(500, 10**6, 10**6 + 3), alice))
    answer = node.submit(issue)
    assert answer.status_code == 200, answer.text
    accepted = answer.json()
    assert accepted["txid"] == txid(issue).hex()
    again = node.submit(issue)
    assert again.status_code == 422
    assert again.json()["error"]["code"] == "duplicate"

    source = Outpoint(txid(issue), 0)
    transfer = node.scenario.transfer([source], [pay(Fa(1_000), bob)], alice)
    assert node.submit(transfer).status_code == 200
    spent = node.submit(node.scenario.transfer([source], [pay(Fa(1_000), alice)], alice))
    assert (spent.status_code, spent.json()["error"]["code"]) == (422, "double_spend")

    stored = node.get(f"/transactions/{txid(transfer).hex()}").json()
    assert stored["type"] == "transfer" and stored["height"] >= 1
    output = node.get(f"/outputs/{source.txid.hex()}/0").json()
    assert output["spent_by"] == stored["seq"]
    unspent = node.get(f"/addresses/{bob.public_key.hex()}/unspent").json()["outputs"]
    assert [(o["tx"], o["asset"]) for o in unspent] == [
        (txid(transfer).hex(), {"kind": "FA", "amount": 1_000})
    ]
    assert node.get("/regulation/10000000").json()["meters"][0]["meter"] == "m1"

    head = head_from_wire(node.get("/head").json())
    assert head.verifies(node.scenario.genesis.sequencer_keys)
    assert_proofs_verify(node.get, transfer, head)


def test_hostile_bodies_get_the_error_shape(node: Node) -> None:
    for body, status, code in [
        (b"", 400, "malformed"),
        (b"{", 400, "malformed"),
        (b'{"v":1.5}', 400, "malformed"),
        (b"x" * (MAX_TX_BYTES + 1), 413, "too_large"),
    ]:
        answer = node.submit(body)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), body[:20]

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while it streams
        for _ in range(MAX_TX_BYTES // 1024 + 2):
            yield b"x" * 1024

    answer = httpx.post(f"{node.url}/v1/transactions", content=chunks(), timeout=30)
    assert (answer.status_code, answer.json()["error"]["code"]) == (413, "too_large")
    for path in ("/outputs/zz/0", "/transactions/00", "/proofs/inclusion", "/blocks/x"):
        answer = node.get(path)
        assert answer.status_code == 400, path
        assert answer.json()["error"]["code"] == "bad_request"
    assert node.get("/blocks/999999").json()["error"]["code"] == "not_found"


def test_concurrent_submissions_spend_an_output_once(node: Node) -> None:
    alice = Keypair.generate()
    issue = node.issue(pay(Fa(100), alice))
    assert node.submit(issue).status_code == 200
    source = Outpoint(txid(issue), 0)
    rivals = [
        node.scenario.transfer([source], [pay(Fa(100), Keypair.generate())], alice)
        for _ in range(16)
    ]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(node.submit, rivals))
    codes = sorted("ok" if a.status_code == 200 else a.json()["error"]["code"] for a in answers)
    assert codes == ["double_spend"] * 15 + ["ok"]


def test_the_block_stream_delivers_every_block_in_order(node: Node) -> None:
    alice = Keypair.generate()
    seen: list[int] = []
    with httpx.stream("GET", f"{node.url}/v1/stream/blocks", params={"from": 1}, timeout=30) as s:
        lines = s.iter_lines()
        for n in range(3):  # new blocks after the stream started
            assert node.submit(node.issue(pay(Fa(n + 1), alice))).status_code == 200
        while len(seen) < 4:  # the regulation's block and the three issues'
            line = next(lines)
            if line.startswith("data: "):
                block = json.loads(line[len("data: ") :])
                seen.append(block["head"]["height"])
                assert len(block["transactions"]) >= 1
    assert seen == [1, 2, 3, 4]
