"""The mixer client's pure pieces and its refusals of a coordinator that deviates, against a
scripted coordinator (httpx.MockTransport)."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from assets import Fa, Keypair, Outpoint, verify
from assets.codec import asset_to_wire
from mixer.auth import poll_message
from mixer.client import MixClient, MixError, join_request, join_signing_message, silence_refuted
from mixer.protocol import Input, Message, Peer, Session

CHAIN = bytes(32)
ASSET = Fa(1_000_000)


def _input(key: Keypair) -> Input:
    return Input(Outpoint(hashlib.sha256(key.public_key).digest(), 0), key.public_key)


def test_join_request_is_signed_by_the_owner_over_the_rest() -> None:
    key = Keypair.generate()
    request = join_request(ASSET, _input(key).outpoint, key, 1_764_480_000)
    assert set(request) == {"v", "asset", "input", "at", "signature"}
    signature = bytes.fromhex(request["signature"])
    assert verify(key.public_key, join_signing_message(request), signature)
    assert not verify(key.public_key, join_signing_message({**request, "at": 1}), signature)


def _peers(count: int) -> tuple[Session, list[Peer]]:
    keys = [Keypair.generate() for _ in range(count)]
    session = Session.of(CHAIN, "pool", 1, ASSET, [_input(k) for k in keys])
    by_owner = {k.public_key: k for k in keys}
    peers = [Peer(session, by_owner[p.owner], Keypair.generate().public_key) for p in session.peers]
    return session, peers


def test_a_timeout_is_refuted_only_by_what_the_peer_holds() -> None:
    _, peers = _peers(3)
    announcements: list[Message] = [m for p in peers for m in p.start()[:1]]
    me = peers[2]
    assert silence_refuted(me, [2]) is not None  # itself
    assert silence_refuted(me, [0]) is None  # nothing from peer 0 yet
    me.receive(announcements[0])
    assert silence_refuted(me, [0]) is not None  # its announcement is here
    assert silence_refuted(me, [1]) is None


def _scripted(events: list[dict[str, Any]]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/join":
            return httpx.Response(201, json={"pool": "pool", "peers": 3, "starts_by": 0})
        if request.url.path.endswith("/messages"):
            return httpx.Response(202, json={"seq": 1})
        after = int(request.url.params["after"])
        shown = [e for e in events if e["seq"] > after]
        return httpx.Response(200, json={"events": shown, "next": len(events)})

    return httpx.MockTransport(answer)


def _start(session: Session) -> dict[str, Any]:
    return {
        "type": "start",
        "run": session.run,
        "session": session.id.hex(),
        "chain": CHAIN.hex(),
        "asset": asset_to_wire(ASSET),
        "peers": [p.to_wire() for p in session.peers],
    }


@pytest.mark.parametrize("dropped", [0, 2], ids=["nobody-dropped", "two-dropped"])
def test_a_next_run_without_the_right_culprits_is_refused(dropped: int) -> None:
    """The coordinator named one peer silent; a next run that does not drop exactly that one
    is refused."""
    key = Keypair.generate()
    others = [Keypair.generate() for _ in range(3)]
    session = Session.of(CHAIN, "pool", 1, ASSET, [_input(k) for k in [key, *others]])
    silent = next(n for n, p in enumerate(session.peers) if p.owner != key.public_key)
    mine = session.index_of(key.public_key)
    wrong = [n for n in range(session.size) if n != mine][:dropped]
    events = [
        _start(session),
        {"type": "timeout", "run": 1, "silent": [silent]},
        _start(session.without(wrong)),
    ]
    events = [{**e, "seq": n} for n, e in enumerate(events, start=1)]
    client = MixClient(
        "http://coordinator",
        None,  # type: ignore[arg-type]  # never reached: the client refuses before
        CHAIN,
        key,
        _input(key).outpoint,
        ASSET,
        transport=_scripted(events),
    )
    with pytest.raises(MixError) as refused:
        client.run()
    assert refused.value.code == "coordinator_deviated"
    assert client.bytes_sent > 0  # its join and its announcement of run 1
    assert [e["type"] for e in client.events] == ["start", "timeout", "start"]


def test_polls_are_signed_afresh_and_a_push_back_is_waited_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each read of the events is signed by the peer's key with a nonce never used before; a
    429 or 503 with Retry-After is waited out (not counted as a failure), and a deviating
    coordinator is still refused after it."""
    key = Keypair.generate()
    session = Session.of(CHAIN, "pool", 1, ASSET, [_input(k) for k in [key, Keypair.generate()]])
    events = [{**_start(session.without([])), "seq": 1}, {"type": "landed", "seq": 2}]
    reads: list[httpx.QueryParams] = []
    pushed_back = iter([429, 503] * 4)  # more push-backs than RETRIES: none is spent on them
    slept: list[float] = []
    monkeypatch.setattr("mixer.client.time.sleep", slept.append)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/join":
            return httpx.Response(201, json={"pool": "pool", "peers": 2, "starts_by": 0})
        if request.url.path.endswith("/messages"):
            return httpx.Response(202, json={"seq": 1})
        reads.append(request.url.params)
        status = next(pushed_back, 200)
        if status != 200:
            error = {"error": {"code": "too_many_polls", "message": "wait"}}
            return httpx.Response(status, json=error, headers={"Retry-After": "2"})
        after = int(request.url.params["after"])
        return httpx.Response(200, json={"events": events[after:], "next": len(events)})

    client = MixClient(
        "http://coordinator",
        None,  # type: ignore[arg-type]  # never reached: the client refuses before
        CHAIN,
        key,
        _input(key).outpoint,
        ASSET,
        transport=httpx.MockTransport(answer),
    )
    with pytest.raises(MixError) as refused:
        client.run()
    assert refused.value.code == "coordinator_deviated"  # the landed event has no txid
    assert slept == [2.0] * 8
    assert len({params["nonce"] for params in reads}) == len(reads) == 9
    for params in reads:
        signed = poll_message(
            "pool",
            key.public_key,
            int(params["after"]),
            int(params["at"]),
            bytes.fromhex(params["nonce"]),
        )
        assert params["peer"] == key.public_key.hex()
        assert verify(key.public_key, signed, bytes.fromhex(params["signature"]))
