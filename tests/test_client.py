"""`LedgerClient` against the real ledger behind a fake HTTP layer (`httpx.MockTransport`).

`FakeNode` answers docs/api.md over a `Ledger` on SQLite: each submission becomes a block.
Faults (connection refused, an answer lost after the work was done, 503, a lying node) are
queued per request, so retries, reconnections and refusals are tested without sleeping.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import ledger.client
from assets import (
    Authorization,
    Code,
    Epa,
    Fa,
    Keypair,
    Outpoint,
    Signature,
    Transaction,
    encode_transaction,
    txid,
)
from assets.codec import genesis_to_wire
from ledger import Ledger
from ledger.api import output_to_wire, regulation_to_wire
from ledger.blocks import SignedHead
from ledger.client import (
    COMMENT,
    InclusionProof,
    LedgerClient,
    LedgerError,
    LedgerProtocolError,
    LedgerRejected,
    LedgerUnavailable,
    NotFound,
    Submitted,
    _server_sent_events,
    head_from_wire,
)
from ledger.store import Store, transactions
from petra.cli import app
from simulation.scenario import Scenario, pay

BASE = "http://ledger.test"
MAX_EPA = 10_000
MAX_ECA = 10_000
Fault = Callable[[httpx.Request], httpx.Response | None]


def refuse_connection(request: httpx.Request) -> None:
    raise httpx.ConnectError("connection refused", request=request)


def unavailable(_: httpx.Request) -> httpx.Response:
    return httpx.Response(503, json={"error": {"code": "unavailable", "message": "stopped"}})


class FakeNode:
    """docs/api.md over a real ledger. `faults`: consumed one per request, before answering."""

    def __init__(self, tmp_path: Path, regulate: bool = True) -> None:
        self.scenario = Scenario()
        self.meter = Keypair.generate()
        self.alice, self.bob = Keypair.generate(), Keypair.generate()
        store = Store(f"sqlite:///{tmp_path}/ledger.sqlite")
        self.ledger = Ledger(store, self.scenario.genesis, self.scenario.sequencer)
        self.store = store
        self.nonce = itertools.count(1)
        self.faults: list[Fault] = []
        self.lose_answers = 0  # submissions to accept and then drop the connection of
        self.requests: list[httpx.Request] = []
        self.drop_stream_after: int | None = None  # events before a stream is cut once
        self.lie: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None
        if regulate:
            authorize = Authorization("meter-1", self.meter.public_key, MAX_EPA, MAX_ECA)
            self.append(self.scenario.regulate(0, authorize=[authorize]), interval=0)

    # ------------------------------------------------------------ building the chain

    def append(self, tx: Transaction, interval: int = 1) -> None:
        time = self.scenario.time_in(interval)
        outcome = self.ledger.append_block([encode_transaction(tx)], time)
        assert outcome.outcomes[0].accepted, outcome.outcomes[0]

    def issue(self, amount: int = 1_000, to: Keypair | None = None) -> Transaction:
        return self.scenario.issue(
            "meter-1", self.meter, next(self.nonce), [pay(Fa(amount), to or self.alice)]
        )

    def grow(self, blocks: int) -> None:
        for _ in range(blocks):
            self.append(self.issue())

    # ------------------------------------------------------------ the HTTP layer

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def client(self, retries: int = 3) -> LedgerClient:
        client = LedgerClient(BASE, retries=retries, transport=self.transport())
        client.backoff_base_s = 0.0
        return client

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.faults:
            answer = self.faults.pop(0)(request)
            if answer is not None:
                return answer
        path = request.url.path.removeprefix("/v1")
        params = request.url.params
        try:
            if request.method == "POST" and path == "/transactions":
                return self.submit(request)
            body = self.read(path, params)
        except _Error as error:
            return error.response()
        if isinstance(body, httpx.Response):
            return body
        if self.lie is not None:
            body = self.lie(path, body)
        return httpx.Response(200, json=body)

    def submit(self, request: httpx.Request) -> httpx.Response:
        raw = request.content
        if len(raw) > 256 * 1024:
            raise _Error(413, "too_large", "the body is too large", tx=True)
        result = self.ledger.append_block([raw], self.scenario.time_in(1))
        outcome = result.outcomes[0]
        if outcome.code is not None:
            status = {Code.MALFORMED: 400, Code.TOO_LARGE: 413}.get(outcome.code, 422)
            raise _Error(status, outcome.code, outcome.message, outcome.txid, tx=True)
        if self.lose_answers:
            self.lose_answers -= 1
            raise httpx.ReadError("connection reset by peer", request=request)
        assert outcome.txid is not None and result.head is not None
        stored = self.store.transaction(outcome.txid)
        assert stored is not None
        body = {"txid": outcome.txid.hex(), "seq": stored.seq, "height": result.head.header.height}
        return httpx.Response(200, json=body)

    def read(self, path: str, params: httpx.QueryParams) -> dict[str, Any] | httpx.Response:
        parts = path.strip("/").split("/")
        match parts:
            case ["transactions"]:
                prefix = params["prefix"].lower()
                ids = self.store.txids_with_prefix(prefix, 11)
                return {
                    "prefix": prefix,
                    "txids": [t.hex() for t in ids[:10]],
                    "more": len(ids) > 10,
                }
            case ["transactions", tx]:
                stored = self.store.transaction(bytes.fromhex(tx))
                if stored is None:
                    raise _Error(404, "not_found", f"no transaction {tx}")
                return {
                    "txid": tx,
                    "seq": stored.seq,
                    "height": self.height_of(stored.seq),
                    "type": stored.type,
                    "transaction": json.loads(stored.body),
                }
            case ["outputs", tx, index]:
                outpoint = Outpoint(bytes.fromhex(tx), int(index))
                found = self.store.outputs({outpoint})
                if outpoint not in found:
                    raise _Error(404, "not_found", f"no output {tx}:{index}")
                return output_to_wire(found[outpoint])
            case ["addresses", address, "unspent"]:
                outputs = self.store.unspent(bytes.fromhex(address))
                return {"address": address, "outputs": [output_to_wire(o) for o in outputs]}
            case ["head"]:
                head = self.store.head()
                if head is None:
                    raise _Error(404, "not_found", "no block yet")
                return head.to_wire()
            case ["blocks", height]:
                block = self.store.block(int(height))
                if block is None:
                    raise _Error(404, "not_found", f"no block {height}")
                return self.block_wire(block)
            case ["blocks"]:
                first, limit = int(params.get("from", 1)), int(params.get("limit", 100))
                heads = [h for h in self.store.heads() if h.header.height >= first][:limit]
                return {"blocks": [self.block_wire(h) for h in heads]}
            case ["proofs", "inclusion"]:
                return self.inclusion(params)
            case ["proofs", "consistency"]:
                old = int(params["old"])
                new = int(params.get("new", self.size()))
                proof = self.ledger.consistency_proof(old, new)
                return {"old_size": old, "new_size": new, "proof": [h.hex() for h in proof]}
            case ["regulation", interval]:
                return self.regulation(int(interval))
            case ["genesis"]:
                return genesis_to_wire(self.scenario.genesis)
            case ["stream", "blocks"]:
                return self.stream(int(params.get("from", self.height() + 1)))
        raise _Error(404, "not_found", f"no route {path}")

    def inclusion(self, params: httpx.QueryParams) -> dict[str, Any]:
        if "txid" in params:
            stored = self.store.transaction(bytes.fromhex(params["txid"]))
            if stored is None:
                raise _Error(404, "not_found", "no such transaction")
            index = stored.seq
        else:
            index = int(params["index"])
        size = int(params.get("size", self.size()))
        if not index < size <= self.size():
            raise _Error(400, "bad_request", "need index < size <= the durable size")
        return {
            "index": index,
            "size": size,
            "leaf_hash": self.store.perfect_node(0, index).hex(),
            "proof": [h.hex() for h in self.ledger.inclusion_proof(index, size)],
        }

    def regulation(self, interval: int) -> dict[str, Any]:
        return regulation_to_wire(self.ledger.state.schedule, interval)

    def stream(self, first: int) -> httpx.Response:
        heads = [h for h in self.store.heads() if h.header.height >= first]
        cut, self.drop_stream_after = self.drop_stream_after, None

        def events() -> Iterator[bytes]:
            yield b": hello\n\n"
            for n, head in enumerate(heads):
                if n == cut:
                    raise httpx.RemoteProtocolError("peer closed connection")
                data = json.dumps(self.block_wire(head))
                yield f"event: block\nid: {head.header.height}\ndata: {data}\n\n".encode()

        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=events())

    def block_wire(self, head: SignedHead) -> dict[str, Any]:
        previous = self.store.block(head.header.height - 1)
        first = 0 if previous is None else previous.header.tree_size
        stored = self.store.transactions_in(first, head.header.tree_size)
        return {"head": head.to_wire(), "transactions": [t.body.hex() for t in stored]}

    def height_of(self, seq: int) -> int:
        return next(h.header.height for h in self.store.heads() if seq < h.header.tree_size)

    def head(self) -> SignedHead:
        head = self.store.head()
        assert head is not None
        return head

    def height(self) -> int:
        head = self.store.head()
        return 0 if head is None else head.header.height

    def size(self) -> int:
        head = self.store.head()
        return 0 if head is None else head.header.tree_size


@dataclasses.dataclass
class _Error(Exception):
    status: int
    code: str
    message: str
    txid: bytes | None = None
    tx: bool = False

    def response(self) -> httpx.Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.tx:
            error["txid"] = None if self.txid is None else self.txid.hex()
        return httpx.Response(self.status, json={"error": error})


@pytest.fixture
def node(tmp_path: Path) -> Iterator[FakeNode]:
    fake = FakeNode(tmp_path)
    yield fake
    fake.store.close()


# ---------------------------------------------------------------- submitting and reading


def test_submit_accepted_then_read_back(node: FakeNode) -> None:
    tx = node.issue(amount=7_000)
    with node.client() as client:
        submitted = client.submit(encode_transaction(tx))
        assert submitted == Submitted(txid(tx), seq=1, height=2)
        stored = client.transaction(txid(tx))
        assert stored is not None
        assert (stored["seq"], stored["height"], stored["type"]) == (1, 2, "issue")
        output = client.output(txid(tx), 0)
        assert output is not None
        assert output["asset"] == {"kind": "FA", "amount": 7_000}
        assert output["spent_by"] is None
        assert [o["tx"] for o in client.unspent(node.alice.public_key)] == [txid(tx).hex()]
        assert client.unspent(node.bob.public_key) == []


def test_getters_answer_none_for_what_is_not_there(node: FakeNode) -> None:
    with node.client() as client:
        assert client.transaction(bytes(32)) is None
        assert client.output(bytes(32), 0) is None
        assert client.block(99) is None
        assert client.blocks(99, 10) == []
        with pytest.raises(NotFound):
            client.inclusion_proof(txid=bytes(32))


def test_no_head_before_the_first_block(tmp_path: Path) -> None:
    empty = FakeNode(tmp_path, regulate=False)
    with empty.client() as client:
        assert client.head() is None
    empty.store.close()


def test_reads_parse_heads_blocks_regulation_and_genesis(node: FakeNode) -> None:
    node.grow(3)
    with node.client() as client:
        head = client.head()
        assert head == node.head()
        assert head is not None and head.verifies(node.scenario.genesis.sequencer_keys)
        block = client.block(2)
        assert block is not None
        assert block[0] == node.store.block(2)
        assert block[1] == [t.body for t in node.store.transactions_in(1, 2)]
        heights = [h.header.height for h, _ in client.blocks(2, 2)]
        assert heights == [2, 3]
        regulation = client.regulation(1)
        assert regulation["meters"][0]["meter"] == "meter-1"
        assert client.genesis() == node.scenario.genesis


def test_a_head_whose_hash_is_not_its_headers_is_refused(node: FakeNode) -> None:
    wire = node.head().to_wire()
    assert head_from_wire(wire) == node.head()
    with pytest.raises(LedgerProtocolError):
        head_from_wire({**wire, "time": wire["time"] + 1})
    with pytest.raises(LedgerProtocolError):
        head_from_wire({**wire, "root": "AB" * 32})


def _rejection(client: LedgerClient, raw: bytes) -> LedgerRejected:
    with pytest.raises(LedgerRejected) as caught:
        client.submit(raw)
    return caught.value


def test_each_rejection_maps_to_its_code(node: FakeNode) -> None:
    funded = node.issue(amount=1_000)
    node.append(funded)
    coin = Outpoint(txid(funded), 0)
    spend = node.scenario.transfer([coin], [pay(Fa(1_000), node.bob)], node.alice)
    node.append(spend)
    other_chain = Scenario()
    with node.client() as client:
        duplicate = _rejection(client, encode_transaction(funded))
        assert (duplicate.code, duplicate.txid) == (Code.DUPLICATE, txid(funded))
        again = node.scenario.transfer([coin], [pay(Fa(1_000), node.alice)], node.alice)
        assert _rejection(client, encode_transaction(again)).code is Code.DOUBLE_SPEND
        bobs = Outpoint(txid(spend), 0)
        stolen = node.scenario.transfer([bobs], [pay(Fa(1_000), node.alice)], node.alice)
        assert _rejection(client, encode_transaction(stolen)).code is Code.WRONG_SIGNERS
        signed = node.scenario.transfer([bobs], [pay(Fa(1_000), node.alice)], node.bob)
        forged = Signature(node.bob.public_key, bytes(64))
        unsigned = dataclasses.replace(signed, signatures=(forged,))
        assert _rejection(client, encode_transaction(unsigned)).code is Code.BAD_SIGNATURE
        unknown = node.scenario.transfer(
            [Outpoint(bytes(32), 0)], [pay(Fa(1), node.bob)], node.alice
        )
        assert _rejection(client, encode_transaction(unknown)).code is Code.UNKNOWN_INPUT
        foreign = other_chain.regulate(5)
        assert _rejection(client, encode_transaction(foreign)).code is Code.WRONG_CHAIN
        malformed = _rejection(client, b'{"v": 1')
        assert (malformed.code, malformed.txid) == (Code.MALFORMED, None)
        too_large = _rejection(client, b"x" * (256 * 1024 + 1))
        assert too_large.code is Code.TOO_LARGE
        over = node.scenario.issue("meter-1", node.meter, 99, [pay(Epa(MAX_EPA, 2, 3), node.alice)])
        assert _rejection(client, encode_transaction(over)).code is Code.LIMIT_EXCEEDED


def test_errors_that_are_not_rejections(node: FakeNode) -> None:
    internal = httpx.Response(500, json={"error": {"code": "internal", "message": "boom"}})
    garbage = httpx.Response(502, text="<html>bad gateway</html>")
    node.faults = [lambda _: internal, lambda _: garbage]
    with node.client() as client:
        with pytest.raises(LedgerError) as caught:
            client.head()
        assert (caught.value.status, caught.value.code) == (500, "internal")
        with pytest.raises(LedgerProtocolError):
            client.head()
        with pytest.raises(LedgerError) as bad:
            client.inclusion_proof(index=0, size=99)
        assert bad.value.code == "bad_request"
        with pytest.raises(ValueError):
            client.inclusion_proof()


# ---------------------------------------------------------------- retries


def test_gets_are_retried_on_connection_errors_and_503(node: FakeNode) -> None:
    node.faults = [refuse_connection, unavailable, refuse_connection]
    with node.client(retries=3) as client:
        assert client.head() == node.head()
    assert len(node.requests) == 4


def test_unreachable_after_the_retries(node: FakeNode) -> None:
    node.faults = [refuse_connection] * 10
    with node.client(retries=2) as client, pytest.raises(LedgerUnavailable):
        client.head()
    assert len(node.requests) == 3
    node.requests.clear()
    node.faults = [unavailable] * 10
    with node.client(retries=1) as client, pytest.raises(LedgerUnavailable):
        client.transaction(bytes(32))
    assert len(node.requests) == 2


def test_backoff_is_bounded_and_jittered(node: FakeNode, monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(time, "sleep", pauses.append)
    node.faults = [refuse_connection] * 10
    client = LedgerClient(BASE, retries=6, transport=node.transport())
    with client, pytest.raises(LedgerUnavailable):
        client.head()
    assert len(pauses) == 6
    ceilings = [min(client.backoff_cap_s, client.backoff_base_s * 2**n) for n in range(6)]
    assert all(0 <= p <= c for p, c in zip(pauses, ceilings, strict=True))


def test_submit_is_retried_when_the_connection_failed(node: FakeNode) -> None:
    tx = node.issue()
    node.faults = [refuse_connection, refuse_connection]
    with node.client(retries=2) as client:
        assert client.submit(encode_transaction(tx)).txid == txid(tx)
    assert [r.method for r in node.requests] == ["POST"] * 3


def test_submit_gives_up_after_the_retries_and_at_once_on_503(node: FakeNode) -> None:
    raw = encode_transaction(node.issue())
    node.faults = [refuse_connection] * 3
    with node.client(retries=2) as client, pytest.raises(LedgerUnavailable):
        client.submit(raw)
    node.requests.clear()
    node.faults = [unavailable, unavailable]
    with node.client(retries=2) as client, pytest.raises(LedgerUnavailable):
        client.submit(raw)
    assert len(node.requests) == 1  # 503 on a POST: the node refused it, never retried


def test_a_resubmission_after_a_lost_answer_is_the_first_acceptance(node: FakeNode) -> None:
    tx = node.issue()
    node.lose_answers = 1
    with node.client() as client:
        submitted = client.submit(encode_transaction(tx))
    assert submitted == Submitted(txid(tx), seq=1, height=2)
    assert [r.url.path for r in node.requests] == [
        "/v1/transactions",
        "/v1/transactions",  # comes back duplicate
        f"/v1/transactions/{txid(tx).hex()}",  # confirmed on the ledger
    ]
    assert node.size() == 2  # accepted once


def test_a_duplicate_without_a_lost_answer_stays_a_rejection(node: FakeNode) -> None:
    tx = node.issue()
    node.append(tx)
    with node.client() as client:
        assert _rejection(client, encode_transaction(tx)).code is Code.DUPLICATE


# ---------------------------------------------------------------- proofs


def test_inclusion_and_consistency_verify(node: FakeNode) -> None:
    txs = [node.issue() for _ in range(6)]
    old = node.head()
    for tx in txs:
        node.append(tx)
    new = node.head()
    with node.client() as client:
        for n, tx in enumerate(txs):
            proof = client.prove_inclusion(txid(tx), new)
            assert (proof.index, proof.size) == (n + 1, 7)
            assert client.verified_inclusion(txid(tx), new)
        raw = client.inclusion_proof(index=3, size=5)
        assert isinstance(raw, InclusionProof) and raw.size == 5
        assert not client.verified_inclusion(txid(txs[-1]), old)  # not yet in the old tree
        assert client.verified_consistency(old, new)
        assert client.verified_consistency(new, new)
        assert not client.verified_consistency(new, old)
        assert client.consistency_proof(1) == client.consistency_proof(1, 7)


def _flip(hex_hash: str) -> str:
    return ("0" if hex_hash[0] != "0" else "1") + hex_hash[1:]


def test_a_tampered_proof_or_root_is_refused(node: FakeNode) -> None:
    node.grow(5)
    old = node.store.block(3)
    new = node.head()
    assert old is not None
    tx = node.issue()
    with node.client() as client:
        stored = node.store.transactions_in(2, 3)[0]
        forged_root = dataclasses.replace(new.header, root=bytes(32))
        forged = SignedHead(forged_root, new.sequencer_key, new.signature)
        assert not client.verified_inclusion(stored.txid, forged)
        assert not client.verified_consistency(old, forged)
        assert not client.verified_inclusion(txid(tx), new)  # never submitted

        def flip_proof(path: str, body: dict[str, Any]) -> dict[str, Any]:
            if path.startswith("/proofs/") and body["proof"]:
                body["proof"][0] = _flip(body["proof"][0])
            return body

        node.lie = flip_proof
        assert not client.verified_inclusion(stored.txid, new)
        assert not client.verified_consistency(old, new)

        def other_index(path: str, body: dict[str, Any]) -> dict[str, Any]:
            if path == "/proofs/inclusion":
                body["index"] ^= 1
            return body

        node.lie = other_index
        assert not client.verified_inclusion(stored.txid, new)

        def other_transaction(path: str, body: dict[str, Any]) -> dict[str, Any]:
            if path.startswith("/transactions/"):
                body["transaction"]["nonce"] += 1
            return body

        node.lie = other_transaction
        assert not client.verified_inclusion(stored.txid, new)
        node.lie = None
        assert client.verified_inclusion(stored.txid, new)


def test_heads_that_cannot_both_be_true_are_refused(node: FakeNode) -> None:
    node.grow(2)
    head = node.head()
    fork = dataclasses.replace(head.header, time=head.header.time + 1)
    forked = SignedHead.sign(fork, node.scenario.sequencer)
    with node.client() as client:
        assert not client.verified_consistency(head, forked)  # same height, other block
        other_chain = dataclasses.replace(head.header, chain=bytes(32))
        assert not client.verified_consistency(
            head, SignedHead.sign(other_chain, Keypair.generate())
        )


# ---------------------------------------------------------------- Server-Sent Events


def test_server_sent_events_are_parsed_as_the_standard_says() -> None:
    lines = [
        ": keep-alive",
        "retry: 1000",
        "event: block",
        "id: 7",
        "data: {",
        "data:}",
        "",
        "",
        "data: plain",
        "",
        "event: block",
        "data: no end",
    ]
    assert list(_server_sent_events(iter(lines))) == [
        ("block", "{\n}", "7"),
        ("message", "plain", None),
    ]


def test_comments_are_reported_only_when_asked_for() -> None:
    lines = [": waiting", "event: block", "data: 1", "", ":no space"]
    assert list(_server_sent_events(iter(lines), comments=True)) == [
        (COMMENT, "waiting", None),
        ("block", "1", None),
        (COMMENT, "no space", None),
    ]
    assert list(_server_sent_events(iter(lines))) == [("block", "1", None)]


def test_stream_ends_at_a_keep_alive_once_told_to_stop(node: FakeNode) -> None:
    node.grow(1)  # blocks 1 and 2

    def blocks_then_idle(_: httpx.Request) -> httpx.Response:
        events = []
        for height in (1, 2):
            head = node.store.block(height)
            assert head is not None
            data = json.dumps(node.block_wire(head))
            events.append(f"event: block\nid: {height}\ndata: {data}\n\n")
        body = "".join(events) + ": waiting\n\n" * 3
        return httpx.Response(200, text=body, headers={"Content-Type": "text/event-stream"})

    node.faults = [blocks_then_idle]
    received: list[int] = []
    with node.client() as client:
        for head, _ in client.stream_blocks(1, stop=lambda: len(received) == 2):
            received.append(head.header.height)
    assert received == [1, 2]  # it returned at the first keep-alive after the stop
    assert len([r for r in node.requests if r.url.path == "/v1/stream/blocks"]) == 1


def test_stream_reconnects_from_the_last_block_received(node: FakeNode) -> None:
    node.grow(4)  # blocks 1 to 5
    node.drop_stream_after = 2
    with node.client() as client:
        blocks = list(itertools.islice(client.stream_blocks(1), 5))
    assert [h.header.height for h, _ in blocks] == [1, 2, 3, 4, 5]
    assert all(h == node.store.block(h.header.height) for h, _ in blocks)
    assert [len(raws) for _, raws in blocks] == [1] * 5
    streams = [r for r in node.requests if r.url.path == "/v1/stream/blocks"]
    assert [r.url.params["from"] for r in streams] == ["1", "3"]
    assert streams[1].headers["Last-Event-ID"] == "2"


def test_stream_gives_up_when_the_node_stays_unreachable(node: FakeNode) -> None:
    node.faults = [refuse_connection] * 10
    with node.client(retries=2) as client, pytest.raises(LedgerUnavailable):
        next(client.stream_blocks(1))
    assert len(node.requests) == 3


def test_stream_skips_blocks_delivered_twice_and_refuses_gaps(node: FakeNode) -> None:
    node.grow(2)
    with node.client() as client:
        stream = client.stream_blocks(2)
        assert next(stream)[0].header.height == 2
        assert next(stream)[0].header.height == 3

    def gap(_: httpx.Request) -> httpx.Response:
        head = node.store.block(3)
        assert head is not None
        data = json.dumps(node.block_wire(head))
        body = f"event: block\nid: 3\ndata: {data}\n\n"
        return httpx.Response(200, text=body, headers={"Content-Type": "text/event-stream"})

    node.faults = [gap]
    with node.client() as client, pytest.raises(LedgerProtocolError):
        next(client.stream_blocks(1))


# ---------------------------------------------------------------- the two CLI commands


@pytest.fixture
def cli(node: FakeNode, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """`petra` in process, its `LedgerClient`s talking to `node`."""
    real = LedgerClient

    def through_node(base_url: str, *args: Any, **kwargs: Any) -> LedgerClient:
        client = real(base_url, transport=node.transport())
        client.backoff_base_s = 0.0
        return client

    monkeypatch.setattr(ledger.client, "LedgerClient", through_node)
    return CliRunner()


def _genesis_file(node: FakeNode, tmp_path: Path) -> Path:
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(genesis_to_wire(node.scenario.genesis)))
    return path


def test_verify_proof(node: FakeNode, cli: CliRunner, tmp_path: Path) -> None:
    tx = node.issue()
    node.append(tx)
    node.grow(2)
    genesis = str(_genesis_file(node, tmp_path))
    args = ["ledger", "verify-proof", "--ledger", BASE, "--txid", txid(tx).hex()]
    done = cli.invoke(app, [*args, "--genesis", genesis])
    assert done.exit_code == 0, done.output
    root = node.head().header.root.hex()
    assert (
        done.stdout.strip() == f"verified: {txid(tx).hex()} is leaf 1 of tree size 4, root {root}"
    )
    trusting = cli.invoke(app, [*args, "--json"])
    assert trusting.exit_code == 0
    assert "trusted" in trusting.stderr
    assert json.loads(trusting.stdout)["index"] == 1
    unknown = cli.invoke(app, [*args[:-1], bytes(32).hex(), "--genesis", genesis])
    assert unknown.exit_code == 1
    assert "does not know" in unknown.stderr
    stranger = Scenario()
    other = tmp_path / "other.json"
    other.write_text(json.dumps(genesis_to_wire(stranger.genesis)))
    assert cli.invoke(app, [*args, "--genesis", str(other)]).exit_code == 1
    assert cli.invoke(app, [*args[:-1], "zz", "--genesis", genesis]).exit_code == 2
    node.faults = [refuse_connection] * 10
    down = cli.invoke(app, [*args, "--genesis", genesis])
    assert down.exit_code == 2
    assert "cannot reach" in down.stderr


def test_verify_proof_takes_the_start_of_a_txid(
    node: FakeNode, cli: CliRunner, tmp_path: Path
) -> None:
    tx = node.issue()
    node.append(tx)
    full = txid(tx).hex()
    args = [
        "ledger",
        "verify-proof",
        "--ledger",
        BASE,
        "--genesis",
        str(_genesis_file(node, tmp_path)),
    ]
    done = cli.invoke(app, [*args, "--txid", full[:5].upper()])
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith(f"verified: {full} is leaf 1")

    taken = {t.txid.hex()[:4] for t in node.store.transactions_in(0, node.size())}
    absent = next(p for p in (f"{n:04x}" for n in range(1 << 16)) if p not in taken)
    none = cli.invoke(app, [*args, "--txid", absent])
    assert none.exit_code == 2
    assert f"no transaction on the ledger starts with {absent}" in none.stderr

    twin = bytes.fromhex(full[:4] + ("00" if full[4:6] != "00" else "ff") * 30)
    with node.store.engine.begin() as conn:  # only its id is read: far beyond the log
        conn.execute(
            transactions.insert(),
            {"seq": 10**9, "txid": twin, "height": 10**9, "type": "transfer", "body": b"{}"}
            | {"leaf_hash": bytes(32)},
        )
    several = cli.invoke(app, [*args, "--txid", full[:4]])
    assert several.exit_code == 2
    assert full in several.stderr and twin.hex() in several.stderr
    assert cli.invoke(app, [*args, "--txid", full[:6]]).exit_code == 0

    for bad in ("%%%%", full[:3], full + "0"):
        refused = cli.invoke(app, [*args, "--txid", bad])
        assert refused.exit_code == 2
        assert "4 to 64 hex digits" in refused.stderr


def test_audit(node: FakeNode, cli: CliRunner, tmp_path: Path) -> None:
    genesis = str(_genesis_file(node, tmp_path))
    saved = tmp_path / "head.json"
    args = ["ledger", "audit", "--ledger", BASE, "--head", str(saved), "--genesis", genesis]
    created = cli.invoke(app, args)
    assert created.exit_code == 0, created.output
    assert "saved" in created.stdout
    assert head_from_wire(json.loads(saved.read_text())) == node.head()
    first = node.head()
    node.grow(3)
    grown = cli.invoke(app, [*args, "--json"])
    assert grown.exit_code == 0, grown.output
    assert json.loads(grown.stdout)["consistent"] is True
    assert head_from_wire(json.loads(saved.read_text())) == node.head()
    unchanged = cli.invoke(app, args)
    assert unchanged.exit_code == 0 and "consistent" in unchanged.stdout

    # A saved head the node's log does not extend: a fork signed by the same sequencer.
    fork = dataclasses.replace(first.header, root=bytes(32))
    saved.write_text(json.dumps(SignedHead.sign(fork, node.scenario.sequencer).to_wire()))
    before = saved.read_text()
    forked = cli.invoke(app, args)
    assert forked.exit_code == 1
    assert "not consistent" in forked.stderr
    assert "saved:" in forked.stdout and "current:" in forked.stdout
    assert saved.read_text() == before  # the evidence is kept
    saved.write_text("not a head")
    assert cli.invoke(app, args).exit_code == 2
