"""A restart under load loses no acknowledged transaction: `petra ledger serve` as a real
process, SIGKILLed (its whole process group) while 8 clients submit over HTTP, then started
again on the same store, on SQLite and PostgreSQL.

Each client issues from its own authorized meter, so its nonces strictly increase in ledger
order whatever the interleaving. A transaction is acknowledged when the node answered 200;
a client whose request fails at the transport level (the kill) stops, and that request counts
as not acknowledged: it may or may not be on the ledger.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from waiting import wait_until

from assets import Authorization, Fa, Keypair, encode_transaction, txid
from assets.keyfile import dump_keys
from ledger import merkle
from ledger.client import head_from_wire
from simulation.processes import stop
from simulation.scenario import Scenario, pay

from .nodes import authorize_now, serve_ledger

CLIENTS = 8
ACKS_BEFORE_KILL = 300
LOAD_TIMEOUT_S = 60


@dataclass
class Served:
    """One run of `petra ledger serve`."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL the node's whole process group: no shutdown code runs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        stop(self.process)


def serve(directory: Path, store_url: str, run: str) -> Served:
    """Start a node on `store_url` with the genesis and keys in `directory`; wait for it."""
    log = directory / f"node-{run}.log"
    url, process = serve_ledger(directory / "genesis.json", directory / "keys.json", store_url, log)
    return Served(url, process, log)


@dataclass
class Client:
    """Issues from meter `name` with strictly increasing nonces, until a request fails."""

    name: str
    key: Keypair
    scenario: Scenario
    nonce: int = 0  # the last one sent: that transaction may be on the ledger
    acknowledged: dict[str, bytes] = field(default_factory=dict)  # txid hex: its bytes
    unexpected: list[str] = field(default_factory=list)
    stopped_by: str | None = None

    def next_issue(self) -> tuple[str, bytes]:
        """The next issue's txid (hex) and bytes."""
        self.nonce += 1
        owner = Keypair.generate()
        issue = self.scenario.issue(self.name, self.key, self.nonce, [pay(Fa(self.nonce), owner)])
        return txid(issue).hex(), encode_transaction(issue)

    def run(self, url: str, stop: threading.Event) -> None:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set() and time.monotonic() < deadline:
                expected, raw = self.next_issue()
                try:
                    answer = http.post("/v1/transactions", content=raw)
                except httpx.TransportError as exc:  # the kill: not acknowledged
                    self.stopped_by = repr(exc)
                    return
                if answer.status_code != 200:
                    self.unexpected.append(f"{answer.status_code} {answer.text}")
                    return
                if answer.json().get("txid") != expected:
                    self.unexpected.append(f"200 for {expected}: {answer.text}")
                    return
                self.acknowledged[expected] = raw


@pytest.fixture
def chain(tmp_path: Path) -> tuple[Scenario, list[Client]]:
    """A one-second-interval genesis, its files in `tmp_path`, and one client per meter."""
    scenario = Scenario(epoch=int(time.time()) - 10, interval_s=1)
    (tmp_path / "genesis.json").write_bytes(scenario.genesis_raw)
    (tmp_path / "keys.json").write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
    clients = [Client(f"m{n}", Keypair.generate(), scenario) for n in range(CLIENTS)]
    return scenario, clients


def test_a_restart_under_load_loses_no_acknowledged_transaction(
    chain: tuple[Scenario, list[Client]], store_url: str, tmp_path: Path
) -> None:
    scenario, clients = chain
    first = serve(tmp_path, store_url, "first")
    try:
        authorize = [Authorization(c.name, c.key.public_key, 10**6, 10**6) for c in clients]
        authorize_now(first.url, scenario, authorize)

        halt = threading.Event()
        threads = [
            threading.Thread(target=c.run, args=(first.url, halt), name=c.name) for c in clients
        ]
        for thread in threads:
            thread.start()
        try:

            def enough_acknowledged() -> bool:
                assert all(t.is_alive() for t in threads), [c.unexpected for c in clients]
                return sum(len(c.acknowledged) for c in clients) >= ACKS_BEFORE_KILL

            wait_until(
                enough_acknowledged,
                LOAD_TIMEOUT_S,
                f"the node to acknowledge {ACKS_BEFORE_KILL} transactions",
                interval_s=0.01,
            )
            before = head_from_wire(httpx.get(f"{first.url}/v1/head", timeout=30).json())
            first.kill()  # while every client has a request in flight or about to be sent
            for thread in threads:
                thread.join(timeout=LOAD_TIMEOUT_S)
        finally:
            halt.set()
            for thread in threads:
                thread.join()
    finally:
        first.kill()

    assert [c.unexpected for c in clients] == [[]] * CLIENTS, "answers other than 200"
    assert all(c.stopped_by is not None for c in clients), "a client outlived the node"
    acknowledged = {t: raw for c in clients for t, raw in c.acknowledged.items()}
    assert len(acknowledged) >= ACKS_BEFORE_KILL

    second = serve(tmp_path, store_url, "second")
    try:
        with httpx.Client(base_url=f"{second.url}/v1", timeout=30) as http:
            head = head_from_wire(http.get("/head").json())
            assert head.verifies(scenario.genesis.sequencer_keys)
            assert head.header.height >= before.header.height
            size = head.header.tree_size
            # the head seen before the kill is a prefix of the one after the restart
            consistency = http.get("/proofs/consistency", params={"old": before.header.tree_size})
            assert consistency.status_code == 200, consistency.text
            assert merkle.verify_consistency(
                before.header.tree_size,
                size,
                before.header.root,
                head.header.root,
                [bytes.fromhex(h) for h in consistency.json()["proof"]],
            )
            for tx, raw in acknowledged.items():
                stored = http.get(f"/transactions/{tx}")
                assert stored.status_code == 200, f"acknowledged {tx} is lost: {stored.text}"
                proof = http.get("/proofs/inclusion", params={"txid": tx, "size": size}).json()
                leaf = merkle.leaf_hash(raw)
                assert bytes.fromhex(proof["leaf_hash"]) == leaf
                assert proof["index"] == stored.json()["seq"]
                path = [bytes.fromhex(h) for h in proof["proof"]]
                assert merkle.verify_inclusion(leaf, proof["index"], size, path, head.header.root)

            # the restarted node takes new submissions from every meter, after whatever
            # nonce the killed node may have stored without acknowledging it
            for client in clients:
                expected, raw = client.next_issue()
                answer = http.post("/transactions", content=raw)
                assert answer.status_code == 200, f"{client.name}: {answer.text}"
                assert answer.json()["txid"] == expected
                assert http.get(f"/transactions/{expected}").status_code == 200
            after = head_from_wire(http.get("/head").json())
            assert after.header.tree_size >= size + CLIENTS
    finally:
        second.stop()
