"""`petra ledger replicate` as a real process following a real `petra ledger serve`: it reaches
the primary's head byte for byte and serves reads, and stops with exit code 3 and the evidence
when a block is tampered with on its way (through a fake primary in this process)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from assets import Authorization, Fa, Issue, Keypair, Outpoint, Transaction, encode_transaction
from assets import txid as transaction_id
from assets.canonical import canonical_json
from assets.keyfile import dump_keys
from ledger.blocks import SignedHead
from ledger.client import head_from_wire
from ledger.store import Store
from simulation.processes import free_port, start_petra, stop, wait_serving
from simulation.scenario import Scenario, pay

from .nodes import assert_proofs_verify

FOLLOW_TIMEOUT_S = 30
TAMPERED_HEIGHT = 3

Alteration = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class Primary:
    url: str
    scenario: Scenario
    meter: Keypair
    genesis_file: Path
    nonce: int = 0
    owner: Keypair = field(default_factory=Keypair.generate)

    def submit(self, tx: Transaction | bytes) -> httpx.Response:
        raw = tx if isinstance(tx, bytes) else encode_transaction(tx)
        return httpx.post(f"{self.url}/v1/transactions", content=raw, timeout=30)

    def issue(self, amount: int) -> Issue:
        """An issue of `amount` FA to `owner`, accepted in a block of its own."""
        self.nonce += 1
        issue = self.scenario.issue("m1", self.meter, self.nonce, [pay(Fa(amount), self.owner)])
        answer = self.submit(issue)
        assert answer.status_code == 200, answer.text
        return issue


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Primary]:
    """A primary on SQLite with meter `m1` authorized and a few blocks: shared by the module's
    tests, which only add blocks to it."""
    tmp = tmp_path_factory.mktemp("primary")
    # one-second intervals, so that a regulation is in force a second or two after it lands
    scenario = Scenario(epoch=int(time.time()) - 10, interval_s=1)
    meter = Keypair.generate()
    (tmp / "genesis.json").write_bytes(scenario.genesis_raw)
    (tmp / "keys.json").write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
    port = free_port()
    process = start_petra(
        *("ledger", "serve", "--genesis", str(tmp / "genesis.json"), "--keys"),
        *(str(tmp / "keys.json"), "--store", f"sqlite:///{tmp}/primary.sqlite"),
        *("--port", str(port)),
        log=tmp / "primary.log",
    )
    url = f"http://127.0.0.1:{port}"
    wait_serving(url, process, tmp / "primary.log")
    served = Primary(url, scenario, meter, tmp / "genesis.json")
    effective = int(time.time()) - scenario.epoch + 1
    regulation = scenario.regulate(
        effective, authorize=[Authorization("m1", meter.public_key, 10**6, 10**6)]
    )
    assert served.submit(regulation).status_code == 200
    while int(time.time()) - scenario.epoch <= effective + 1:
        time.sleep(0.1)
    for amount in (1, 2, 3):  # blocks 2 to 4: past TAMPERED_HEIGHT
        served.issue(amount)
    yield served
    stop(process)


@dataclass
class Replica:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    evidence: Path

    def get(self, path: str, **params: str | int) -> httpx.Response:
        return httpx.get(f"{self.url}/v1{path}", params=params, timeout=30)


@pytest.fixture
def start_replica(
    primary: Primary, store_url: str, tmp_path: Path
) -> Iterator[Callable[..., Replica]]:
    """Starts `petra ledger replicate --ledger <url>` over the test's store (the same store each
    time it is called in a test); waits until it serves unless `serving=False` (a replica fed
    a tampered block may stop before its read API is up)."""
    started: list[Replica] = []

    def start(source: str, serving: bool = True) -> Replica:
        port = free_port()
        log = tmp_path / f"replica-{len(started)}.log"
        process = start_petra(
            *("ledger", "replicate", "--ledger", source, "--genesis", str(primary.genesis_file)),
            *("--store", store_url, "--port", str(port), "--evidence", str(tmp_path / "evidence")),
            log=log,
        )
        replica = Replica(f"http://127.0.0.1:{port}", process, log, tmp_path / "evidence")
        started.append(replica)
        if serving:
            wait_serving(replica.url, process, log)
        return replica

    yield start
    for replica in started:
        stop(replica.process)


def _wait_caught_up(replica: Replica, primary: Primary) -> bytes:
    """The replica's `GET /v1/head` once it is the primary's, byte for byte."""
    expected = httpx.get(f"{primary.url}/v1/head", timeout=30).content
    deadline = time.monotonic() + FOLLOW_TIMEOUT_S
    while (answer := replica.get("/head")).content != expected:
        assert replica.process.poll() is None, replica.log.read_text()
        assert time.monotonic() < deadline, f"replica at {answer.text}, primary at {expected!r}"
        time.sleep(0.1)
    return expected


def test_the_replica_follows_serves_reads_and_refuses_submissions(
    primary: Primary, start_replica: Callable[[str], Replica]
) -> None:
    replica = start_replica(primary.url)
    _wait_caught_up(replica, primary)
    # blocks made while it follows, one of them a transfer
    issue = primary.issue(40)
    transfer = primary.scenario.transfer(
        [Outpoint(transaction_id(issue), 0)], [pay(Fa(40), Keypair.generate())], primary.owner
    )
    assert primary.submit(transfer).status_code == 200
    head = head_from_wire(json.loads(_wait_caught_up(replica, primary)))
    assert head.verifies(primary.scenario.genesis.sequencer_keys)

    txid = transaction_id(transfer).hex()
    for read in (f"/transactions/{txid}", f"/outputs/{transaction_id(issue).hex()}/0"):
        assert replica.get(read).json() == httpx.get(f"{primary.url}/v1{read}").json()
    assert_proofs_verify(replica.get, transfer, head)


def test_a_replica_of_another_genesis_refuses_to_follow(
    primary: Primary, tmp_path: Path, store_url: str
) -> None:
    other = tmp_path / "other-genesis.json"
    other.write_bytes(replace(primary.scenario, name="another community").genesis_raw)
    result = subprocess.run(
        [
            *(sys.executable, "-c", "from petra.cli import main; main()", "ledger", "replicate"),
            *("--ledger", primary.url, "--genesis", str(other), "--store", store_url),
            *("--port", str(free_port()), "--evidence", str(tmp_path / "evidence")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "another chain" in result.stderr


# ---------------------------------------------------------------- tampering on the way


class FakePrimary:
    """Serves a real primary's API, passing block `TAMPERED_HEIGHT` through `alter` wherever
    a block is served (`/v1/blocks`, `/v1/blocks/{height}`, the block stream)."""

    def __init__(self, upstream: str, alter: Alteration) -> None:
        self.upstream = upstream
        self.alter = alter
        self.closing = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()

    def block(self, wire: dict[str, Any]) -> dict[str, Any]:
        return self.alter(wire) if wire["head"]["height"] == TAMPERED_HEIGHT else wire

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/v1/stream/blocks":
                    self.stream(int(parse_qs(url.query).get("from", ["1"])[0]))
                    return
                answer = httpx.get(f"{fake.upstream}{self.path}", timeout=30)
                body = answer.content
                if answer.status_code == 200 and url.path.startswith("/v1/blocks"):
                    wire = answer.json()
                    if "blocks" in wire:
                        wire["blocks"] = [fake.block(b) for b in wire["blocks"]]
                    else:
                        wire = fake.block(wire)
                    body = json.dumps(wire).encode()
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers["content-type"])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def stream(self, height: int) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                try:
                    while not fake.closing.is_set():
                        blocks = httpx.get(
                            f"{fake.upstream}/v1/blocks", params={"from": height}, timeout=30
                        ).json()["blocks"]
                        for wire in blocks:
                            data = json.dumps(fake.block(wire))
                            event = f"event: block\nid: {height}\ndata: {data}\n\n"
                            self.wfile.write(event.encode())
                            height += 1
                        if not blocks:
                            self.wfile.write(b": waiting\n\n")
                            time.sleep(0.2)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler


def _change_a_transaction(wire: dict[str, Any]) -> dict[str, Any]:
    tx = json.loads(bytes.fromhex(wire["transactions"][0]))
    tx["outputs"][0]["asset"]["amount"] += 1_000  # the issuer's signature no longer holds
    return {**wire, "transactions": [canonical_json(tx).hex(), *wire["transactions"][1:]]}


def _break_the_signature(wire: dict[str, Any]) -> dict[str, Any]:
    signature = bytearray(bytes.fromhex(wire["head"]["signature"]))
    signature[0] ^= 1
    return {**wire, "head": {**wire["head"], "signature": signature.hex()}}


def _resign(key: Keypair, prev: bytes | None = None, root: bytes | None = None) -> Alteration:
    """A head with another `prev` or `root`, signed again with the sequencer's own key: a
    sequencer that rewrites its history rather than a forger."""

    def alter(wire: dict[str, Any]) -> dict[str, Any]:
        header = head_from_wire(wire["head"]).header
        header = replace(header, prev=prev or header.prev, root=root or header.root)
        return {**wire, "head": SignedHead.sign(header, key).to_wire()}

    return alter


OTHER_HASH = hashlib.sha256(b"another history").digest()


@pytest.mark.parametrize(
    ("tampering", "reason"),
    [
        ("transaction", "refused here: bad_signature"),
        ("signature", "not signed by a sequencer key"),
        ("prev", "rewrote its history"),
        ("root", "consistency proof"),
    ],
)
def test_a_tampered_block_stops_the_replica_with_evidence(
    primary: Primary,
    start_replica: Callable[..., Replica],
    store_url: str,
    tampering: str,
    reason: str,
) -> None:
    key = primary.scenario.sequencer
    alter = {
        "transaction": _change_a_transaction,
        "signature": _break_the_signature,
        "prev": _resign(key, prev=OTHER_HASH),
        "root": _resign(key, root=OTHER_HASH),
    }[tampering]
    fake = FakePrimary(primary.url, alter)
    try:
        replica = start_replica(fake.url, serving=False)
        try:
            replica.process.wait(timeout=FOLLOW_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the replica did not stop: {replica.log.read_text()}")
        # the block as served, fetched while the fake primary still serves it
        served = httpx.get(f"{fake.url}/v1/blocks/{TAMPERED_HEIGHT}", timeout=30).json()
    finally:
        fake.close()
    stderr = replica.log.read_text()
    assert replica.process.returncode == 3, stderr
    path = replica.evidence / f"evidence-{TAMPERED_HEIGHT}.json"
    assert str(path) in stderr
    evidence = json.loads(path.read_text())
    assert reason in evidence["reason"], evidence["reason"]
    assert evidence["primary_head"] == served["head"]
    assert evidence["transactions"] == served["transactions"]
    assert evidence["our_head"]["height"] == TAMPERED_HEIGHT - 1
    with pytest.raises(httpx.TransportError):  # the read API stopped with it
        replica.get("/head")
    store = Store(store_url)  # nothing of the tampered block was kept
    try:
        kept = store.head()
        assert kept is not None and kept.header.height == TAMPERED_HEIGHT - 1
    finally:
        store.close()
