"""The checks and set-ups the integration tests make of ledger nodes, on the process harness
(`simulation.processes`): serve a ledger, authorize meters now, verify a node's proofs."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx

from assets import Authorization, Transaction, encode_transaction, txid
from ledger import merkle
from ledger.blocks import SignedHead
from ledger.client import head_from_wire
from simulation.processes import LedgerProcess
from simulation.scenario import Scenario


def serve_ledger(
    genesis: Path, keys: Path, store_url: str, log: Path, env: dict[str, str] | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    """`petra ledger serve` on a free loopback port, once it answers: its URL and process.
    It inherits the caller's environment (a test may set PETRA_PASSPHRASE), `env` added."""
    node = LedgerProcess(genesis, keys, store_url, log, env=env, unset=())
    node.wait_until_serving()
    return node.url, node.process


def authorize_now(url: str, scenario: Scenario, authorizations: Iterable[Authorization]) -> None:
    """Put `authorizations` on the ledger at `url` and return once they are in force.

    The scenario has one-second intervals: a regulation for the next interval is in force a
    second or two after it lands.
    """
    effective = int(time.time()) - scenario.epoch + 1
    regulation = scenario.regulate(effective, authorize=authorizations)
    answer = httpx.post(
        f"{url}/v1/transactions", content=encode_transaction(regulation), timeout=30
    )
    assert answer.status_code == 200, answer.text
    while int(time.time()) - scenario.epoch <= effective + 1:
        time.sleep(0.1)


def assert_proofs_verify(
    get: Callable[..., httpx.Response], tx: Transaction, head: SignedHead
) -> None:
    """The node's inclusion proof of `tx` and its consistency proof from block 1 both verify
    against `head`, hashed here from what was sent, not from what the node says."""
    proof = get("/proofs/inclusion", txid=txid(tx).hex()).json()
    leaf = merkle.leaf_hash(encode_transaction(tx))
    assert bytes.fromhex(proof["leaf_hash"]) == leaf
    size, root = head.header.tree_size, head.header.root
    path = [bytes.fromhex(h) for h in proof["proof"]]
    assert merkle.verify_inclusion(leaf, proof["index"], size, path, root)
    first = head_from_wire(get("/blocks/1").json()["head"])
    consistency = get("/proofs/consistency", old=first.header.tree_size).json()
    assert merkle.verify_consistency(
        first.header.tree_size,
        size,
        first.header.root,
        root,
        [bytes.fromhex(h) for h in consistency["proof"]],
    )
