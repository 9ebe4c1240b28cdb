"""`mixer.api`, the coordinator's HTTP API (docs/mixer-api.md), under FastAPI's test client with
a fake ledger: every route's answers and error codes, a whole mix of real protocol peers over
HTTP, the ticker the app's lifespan runs, and hostile bodies that get a clean 4xx in the one
error shape."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from assets import Code, Fa, Keypair, Outpoint, Output, Transfer, decode_transaction, txid
from assets.codec import asset_from_wire, asset_to_wire
from ledger.client import LedgerRejected, LedgerUnavailable, Submitted
from mixer.api import MAX_BODY_BYTES, create_app
from mixer.auth import join_message, poll_params
from mixer.coordinator import Coordinator
from mixer.protocol import Input, Message, Peer, Session, decode_message

CHAIN = bytes(range(32))
COIN = Fa(1_000_000)


class FakeLedger:
    """Outputs in a dict; a transfer spends its inputs (signatures are the unit tests' part)."""

    def __init__(self) -> None:
        self.outputs: dict[Outpoint, tuple[Output, bool]] = {}
        self.landed: list[Transfer] = []
        self.unavailable = False

    def fund(self, owner: bytes) -> Outpoint:
        outpoint = Outpoint(os.urandom(32), 0)
        self.outputs[outpoint] = (Output(COIN, owner), False)
        return outpoint

    def output(self, txid: bytes, index: int) -> dict[str, Any] | None:
        if self.unavailable:
            raise LedgerUnavailable("down")
        found = self.outputs.get(Outpoint(txid, index))
        if found is None:
            return None
        output, spent = found
        return {
            "tx": txid.hex(),
            "index": index,
            "address": output.address.hex(),
            "asset": asset_to_wire(output.asset),
            "seq": 1,
            "spent_by": "ab" * 32 if spent else None,
        }

    def unspent(self, address: bytes) -> list[dict[str, Any]]:
        return []

    def transaction(self, txid: bytes) -> dict[str, Any] | None:
        return None

    def submit(self, raw: bytes) -> Submitted:
        decoded = decode_transaction(raw)
        assert isinstance(decoded.tx, Transfer)
        for outpoint in decoded.tx.inputs:
            output, spent = self.outputs[outpoint]
            if spent:
                raise LedgerRejected(Code.DOUBLE_SPEND, "spent", decoded.txid)
            self.outputs[outpoint] = (output, True)
        self.landed.append(decoded.tx)
        return Submitted(decoded.txid, len(self.landed), len(self.landed))


def read(pool: str, key: Keypair, after: int = 0, wait: float | None = None) -> dict[str, Any]:
    """The signed query of a read of `pool`'s events by `key`."""
    query: dict[str, Any] = poll_params(pool, key, after, int(time.time()))
    return query if wait is None else {**query, "wait": wait}


def join_body(key: Keypair, outpoint: Outpoint, at: float | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {
        "v": 1,
        "asset": asset_to_wire(COIN),
        "input": Input(outpoint, key.public_key).to_wire(),
        "at": int(time.time() if at is None else at),
    }
    return {**request, "signature": key.sign(join_message(request)).hex()}


@dataclass
class Mixer:
    ledger: FakeLedger
    coordinator: Coordinator
    http: TestClient
    keys: list[Keypair] = field(default_factory=list)

    def wallet(self) -> tuple[Keypair, Outpoint]:
        key = Keypair.generate()
        return key, self.ledger.fund(key.public_key)

    def join(self, key: Keypair, outpoint: Outpoint) -> str:
        answer = self.http.post("/v1/join", json=join_body(key, outpoint))
        assert answer.status_code == 201, answer.text
        pool: str = answer.json()["pool"]
        return pool

    def events(self, pool: str, key: Keypair, after: int = 0) -> dict[str, Any]:
        answer = self.http.get(f"/v1/pools/{pool}/events", params=read(pool, key, after, 0))
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found


@pytest.fixture
def mixer() -> Iterator[Mixer]:
    ledger = FakeLedger()
    coordinator = Coordinator(ledger, CHAIN, min_peers=3, max_peers=3, timeout_s=600)
    app = create_app(coordinator, ticker=False)
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Mixer(ledger, coordinator, http)


def error_of(answer: httpx.Response) -> str:
    """The error code of a refusal, checking the one error shape on the way."""
    body = answer.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) >= {"code", "message"} and isinstance(body["error"]["message"], str)
    assert "Traceback" not in answer.text
    code: str = body["error"]["code"]
    return code


def started_pool(mixer: Mixer) -> tuple[str, list[Keypair], dict[str, Any]]:
    wallets = [mixer.wallet() for _ in range(3)]
    pools = {mixer.join(key, outpoint) for key, outpoint in wallets}
    (pool,) = pools
    start = mixer.events(pool, wallets[0][0])["events"][0]
    assert start["type"] == "start"
    return pool, [key for key, _ in wallets], start


def session_of(pool: str, start: dict[str, Any]) -> Session:
    inputs = [
        Input(Outpoint(bytes.fromhex(p["tx"]), p["index"]), bytes.fromhex(p["owner"]))
        for p in start["peers"]
    ]
    return Session.of(CHAIN, pool, start["run"], asset_from_wire(start["asset"]), inputs)


# ----------------------------------------------------------------------------- a whole mix


def test_three_peers_mix_over_http(mixer: Mixer) -> None:
    pool, keys, start = started_pool(mixer)
    session = session_of(pool, start)
    assert session.id.hex() == start["session"]
    assert start["chain"] == CHAIN.hex() and start["asset"] == asset_to_wire(COIN)
    peers = {key.public_key: Peer(session, key, os.urandom(32)) for key in keys}
    cursors = {key.public_key: 0 for key in keys}
    outbox: list[Message] = [m for peer in peers.values() for m in peer.start()]
    landed: dict[bytes, dict[str, Any]] = {}
    for _ in range(50):  # rounds of posting and reading: a mix of 3 takes about ten
        if not outbox and len(landed) == 3:
            break
        for message in outbox:
            answer = mixer.http.post(
                f"/v1/pools/{pool}/messages", json={"message": message.to_wire(), "to": None}
            )
            assert answer.status_code == 202, answer.text
            assert isinstance(answer.json()["seq"], int)
        outbox = []
        for key in keys:
            answer = mixer.events(pool, key, cursors[key.public_key])
            cursors[key.public_key] = answer["next"]
            for event in answer["events"]:
                if event["type"] == "message":
                    message = decode_message(event["message"], session)
                    outbox.extend(peers[key.public_key].receive(message))
                elif event["type"] == "landed":
                    landed[key.public_key] = event
    (transfer,) = mixer.ledger.landed
    assert {o.address for o in transfer.outputs} == {p.output for p in peers.values()}
    assert {e["txid"] for e in landed.values()} == {txid(transfer).hex()}
    state = mixer.http.get(f"/v1/pools/{pool}")
    assert state.status_code == 200
    assert state.json() == {
        "pool": pool,
        "state": "landed",
        "peers": 3,
        "run": 1,
        "phase": "done",
        "asset": asset_to_wire(COIN),
    }


# ----------------------------------------------------------------------------- joining


def test_join_answers_the_pool_its_size_and_deadline(mixer: Mixer) -> None:
    key, outpoint = mixer.wallet()
    before = time.time()
    answer = mixer.http.post("/v1/join", json=join_body(key, outpoint))
    assert answer.status_code == 201
    body = answer.json()
    assert set(body) == {"pool", "peers", "starts_by"} and body["peers"] == 1
    assert before + 29 <= body["starts_by"] <= time.time() + 31
    state = mixer.http.get(f"/v1/pools/{body['pool']}").json()
    assert (state["state"], state["peers"], state["run"], state["phase"]) == ("forming", 1, 0, None)


def test_refused_joins_answer_their_codes(mixer: Mixer) -> None:
    key, outpoint = mixer.wallet()
    body = join_body(key, outpoint)

    def refused(wire: Any) -> tuple[int, str]:
        answer = mixer.http.post("/v1/join", json=wire)
        return answer.status_code, error_of(answer)

    assert refused({**body, "signature": "00" * 64}) == (401, "bad_signature")
    assert refused(join_body(key, outpoint, at=time.time() - 120)) == (401, "stale_request")
    assert refused(join_body(key, Outpoint(os.urandom(32), 0))) == (422, "not_unspent")
    mixer.ledger.unavailable = True
    assert refused(body) == (503, "ledger_unavailable")
    mixer.ledger.unavailable = False
    assert mixer.http.post("/v1/join", json=body).status_code == 201
    assert refused(body) == (409, "already_joined")
    assert refused({**body, "at": 1.5}) == (400, "malformed")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[" * 4000,
        b'{"v": 1e999}',
        b'{"v": NaN}',
        b"null",
        b'"text"',
        b'{"v": 1, "asset": [], "input": 7, "at": "now", "signature": null}',
        b'{"v": true, "asset": {"kind": "FA", "amount": 1}, "input": {}, "at": 0, "signature": ""}',
    ],
)
def test_hostile_join_bodies_get_a_clean_400(mixer: Mixer, raw: bytes) -> None:
    answer = mixer.http.post("/v1/join", content=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert error_of(answer) == "malformed"


def test_huge_bodies_are_refused_before_they_are_read(mixer: Mixer) -> None:
    join = mixer.http.post("/v1/join", content=b"{" + b" " * 10_000 + b"}")
    assert (join.status_code, error_of(join)) == (413, "too_large")
    pool, _, _ = started_pool(mixer)
    huge = b'{"message": "' + b"a" * MAX_BODY_BYTES + b'"}'
    answer = mixer.http.post(f"/v1/pools/{pool}/messages", content=huge)
    assert (answer.status_code, error_of(answer)) == (413, "too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while it streams
        for _ in range(5):
            yield b" " * (1024 * 1024)

    streamed = mixer.http.post(f"/v1/pools/{pool}/messages", content=chunks())
    assert (streamed.status_code, error_of(streamed)) == (413, "too_large")


# ----------------------------------------------------------------------------- following


def test_events_answer_in_order_with_the_next_seq(mixer: Mixer) -> None:
    pool, keys, start = started_pool(mixer)
    assert start["seq"] == 1
    session = session_of(pool, start)
    peer = Peer(session, keys[0], os.urandom(32))
    (announce,) = peer.start()
    seq = mixer.http.post(f"/v1/pools/{pool}/messages", json={"message": announce.to_wire()})
    assert seq.status_code == 202 and seq.json() == {"seq": 2}
    answer = mixer.events(pool, keys[1], after=1)
    assert answer["next"] == 2
    (event,) = answer["events"]
    assert event == {"seq": 2, "type": "message", "message": announce.to_wire()}
    assert mixer.events(pool, keys[1], after=2) == {"events": [], "next": 2}
    query = read(pool, keys[2])
    del query["after"]
    default = mixer.http.get(f"/v1/pools/{pool}/events", params=query)
    assert [e["seq"] for e in default.json()["events"]] == [1, 2]  # `after` defaults to 0
    state = mixer.http.get(f"/v1/pools/{pool}").json()
    assert (state["state"], state["run"], state["phase"]) == ("running", 1, "announce")


def test_events_refuse_reads_not_signed_by_a_peer_of_the_pool(mixer: Mixer) -> None:
    pool, keys, _ = started_pool(mixer)
    url = f"/v1/pools/{pool}/events"
    peer = keys[0].public_key.hex()
    signed = read(pool, keys[0], 0, 0)
    stranger = Keypair.generate()
    cases = [
        (url, read(pool, stranger, 0, 0), 403, "not_a_peer"),
        ("/v1/pools/nope/events", read("nope", keys[0], 0, 0), 404, "not_found"),
        (url, {"peer": peer, "wait": 0}, 401, "unauthenticated"),
        (url, {**signed, "signature": "00" * 64}, 401, "bad_signature"),
        (url, {**signed, "after": 1}, 401, "bad_signature"),
        (url, {**read(pool, stranger, 0, 0), "peer": peer}, 401, "bad_signature"),
        (url, read(f"{pool}0", keys[0], 0, 0), 401, "bad_signature"),
        (url, {**signed, "at": 1}, 401, "stale_request"),
        (url, {}, 400, "malformed"),
        (url, {**signed, "nonce": "00"}, 400, "malformed"),
        (url, {**signed, "extra": "1"}, 400, "malformed"),
        (url, {**signed, "peer": peer.upper()}, 400, "malformed"),
        (url, {**signed, "peer": "zz" * 32}, 400, "malformed"),
        (url, {**signed, "after": "-1"}, 400, "malformed"),
        (url, {**signed, "after": "1.5"}, 400, "malformed"),
        (url, {**signed, "after": "9" * 40}, 400, "malformed"),
        (url, {**signed, "wait": "nan"}, 400, "malformed"),
        (url, {**signed, "wait": "-1"}, 400, "malformed"),
        (url, {**signed, "wait": "inf"}, 400, "malformed"),
        (url, {**signed, "wait": "soon"}, 400, "malformed"),
    ]
    for path, params, status, code in cases:
        answer = mixer.http.get(path, params=params)
        assert (answer.status_code, error_of(answer)) == (status, code), (params, answer.text)
    assert mixer.http.get(url, params=signed).status_code == 200
    replayed = mixer.http.get(url, params=signed)
    assert (replayed.status_code, error_of(replayed)) == (401, "replayed_request")


def test_a_long_poll_waits_at_most_its_wait(mixer: Mixer) -> None:
    pool, keys, _ = started_pool(mixer)
    began = time.monotonic()
    answer = mixer.http.get(f"/v1/pools/{pool}/events", params=read(pool, keys[0], 1, 0.3))
    assert answer.status_code == 200 and answer.json() == {"events": [], "next": 1}
    assert 0.3 <= time.monotonic() - began < 5


# ----------------------------------------------------------------------------- messages


def test_refused_messages_answer_their_codes(mixer: Mixer) -> None:
    pool, keys, start = started_pool(mixer)
    session = session_of(pool, start)
    (announce,) = Peer(session, keys[0], os.urandom(32)).start()
    wire = announce.to_wire()
    url = f"/v1/pools/{pool}/messages"
    cases: list[tuple[str, Any, int, str]] = [
        (url, {"message": {**wire, "signature": "00" * 64}}, 400, "bad_message"),
        (url, {"message": {**wire, "kind": "gossip"}}, 400, "bad_message"),
        (url, {"message": {**wire, "session": "00" * 32}}, 400, "bad_message"),
        (url, {"message": {**wire, "body": {"ek": 5}}}, 400, "bad_message"),
        (url, {"message": {**wire, "body": []}}, 400, "bad_message"),
        (url, {"message": {**wire, "session": []}}, 400, "bad_message"),
        (url, {"message": {**wire, "session": {"a": 1}}}, 400, "bad_message"),
        (url, {"message": {**wire, "kind": ["announce"]}}, 400, "bad_message"),
        (url, {"message": {**wire, "sender": 2**70}}, 400, "bad_message"),
        (url, {"message": {**wire, "sender": True}}, 400, "bad_message"),
        (url, {"message": {**wire, "v": [1]}}, 400, "bad_message"),
        (url, {"message": {**wire, "signature": ["00"]}}, 400, "bad_message"),
        (url, {"message": {}}, 400, "bad_message"),
        (url, {"message": wire, "to": "everyone"}, 400, "malformed"),
        (url, {"message": wire, "to": [0, 9]}, 400, "malformed"),
        (url, {"message": wire, "to": [-1]}, 400, "malformed"),
        (url, {"message": wire, "extra": 1}, 400, "malformed"),
        (url, {"to": None}, 400, "malformed"),
        (url, {"message": [wire]}, 400, "malformed"),
        (url, [wire], 400, "malformed"),
        ("/v1/pools/nope/messages", {"message": wire}, 404, "not_found"),
    ]
    for path, body, status, code in cases:
        answer = mixer.http.post(path, json=body)
        assert (answer.status_code, error_of(answer)) == (status, code), (body, answer.text)
    for raw in (b"", b"{", b"\x00", b'{"message": 1.0}', b"[" * 50_000):
        answer = mixer.http.post(url, content=raw)
        assert (answer.status_code, error_of(answer)) == (400, "malformed"), raw[:20]


def test_messages_of_an_earlier_run_or_an_ended_pool_are_stale(mixer: Mixer) -> None:
    pool, keys, start = started_pool(mixer)
    session = session_of(pool, start)
    (announce,) = Peer(session, keys[0], os.urandom(32)).start()
    url = f"/v1/pools/{pool}/messages"
    assert mixer.http.post(url, json={"message": announce.to_wire()}).status_code == 202
    mixer.coordinator.tick(time.time() + 601)  # two peers silent: one left, the pool fails
    answer = mixer.http.post(url, json={"message": announce.to_wire()})
    assert (answer.status_code, error_of(answer)) == (409, "stale_run")
    events = mixer.events(pool, keys[0])["events"]
    assert [e["type"] for e in events][-2:] == ["timeout", "failed"]
    assert mixer.http.get(f"/v1/pools/{pool}").json()["state"] == "failed"


def test_a_pool_is_404_unknown_and_other_routes_keep_the_error_shape(mixer: Mixer) -> None:
    for method, path, status, code in [
        ("GET", "/v1/pools/nope", 404, "not_found"),
        ("GET", "/v1/pools/" + "x" * 5000, 404, "not_found"),
        ("GET", "/v1/nothing", 404, "not_found"),
        ("DELETE", "/v1/pools/nope", 405, "bad_request"),
        ("GET", "/v1/join", 405, "bad_request"),
    ]:
        answer = mixer.http.request(method, path)
        assert (answer.status_code, error_of(answer)) == (status, code), path


# ----------------------------------------------------------------------------- the ticker


def test_the_apps_ticker_ends_a_pool_that_is_too_small_at_its_deadline() -> None:
    ledger = FakeLedger()
    coordinator = Coordinator(ledger, CHAIN, min_peers=2, start_s=0.3)
    key = Keypair.generate()
    with TestClient(create_app(coordinator), raise_server_exceptions=False) as http:
        pool = http.post("/v1/join", json=join_body(key, ledger.fund(key.public_key))).json()
        answer = http.get(f"/v1/pools/{pool['pool']}/events", params=read(pool["pool"], key, 0, 10))
        (failed,) = answer.json()["events"]
        assert failed["type"] == "failed" and "1 of the 2" in failed["reason"]


def test_a_third_open_poll_of_a_peer_is_refused_with_retry_after(mixer: Mixer) -> None:
    pool, keys, _ = started_pool(mixer)
    url = f"/v1/pools/{pool}/events"
    with ThreadPoolExecutor(2) as held:
        waiting = [
            held.submit(mixer.http.get, url, params=read(pool, keys[0], 99, 3)) for _ in range(2)
        ]
        time.sleep(0.5)
        refused = mixer.http.get(url, params=read(pool, keys[0], 99, 3))
        assert (refused.status_code, error_of(refused)) == (429, "too_many_polls")
        assert 1 <= int(refused.headers["Retry-After"]) <= 3
        other = mixer.http.get(url, params=read(pool, keys[1], 0, 3))  # another peer: at once
        assert other.status_code == 200 and other.json()["events"]
        assert [w.result().status_code for w in waiting] == [200, 200]
    assert mixer.http.get(url, params=read(pool, keys[0], 99, 0)).status_code == 200
