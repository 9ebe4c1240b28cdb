"""`ledger.block_follower.BlockFollower` against a fake ledger node (an httpx mock transport
behind the real `LedgerClient`): it hands on good blocks in order and stops, with the reason, on
a bad one; so does the smart meter's ledger index built on it."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from assets import Keypair, encode_transaction
from ledger.block_follower import BlockFollower, FollowerStopped
from ledger.blocks import BlockHeader, SignedHead
from ledger.client import LedgerClient
from simulation.scenario import Scenario
from smartmeter.ledger_index import MeterLedgerIndex
from smartmeter.store import MeterStore

Block = tuple[SignedHead, list[bytes]]


def chain_of(scenario: Scenario, length: int) -> list[Block]:
    """`length` good blocks, each holding one regulation."""
    blocks: list[Block] = []
    prev = scenario.chain
    for height in range(1, length + 1):
        raws = [encode_transaction(scenario.regulate(height))]
        header = BlockHeader(
            scenario.chain, height, prev, scenario.time_in(height), height, bytes(32)
        )
        blocks.append((SignedHead.sign(header, scenario.sequencer), raws))
        prev = header.hash
    return blocks


def fake_ledger(blocks: list[Block], asked: list[str], listed: int | None = None) -> LedgerClient:
    """A client of a node serving `blocks`; each path it is asked for goes to `asked`.
    `/v1/blocks` lists only the first `listed` (default: all); the block stream has them all,
    then a keep-alive."""

    def wire(block: Block) -> dict[str, object]:
        return {"head": block[0].to_wire(), "transactions": [r.hex() for r in block[1]]}

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/v1/blocks":
            first, limit = int(request.url.params["from"]), int(request.url.params["limit"])
            shown = blocks[:listed]
            return httpx.Response(
                200, json={"blocks": [wire(b) for b in shown][first - 1 :][:limit]}
            )
        if request.url.path == "/v1/stream/blocks":
            first = int(request.url.params["from"])
            events = [
                f"event: block\nid: {n}\ndata: {json.dumps(wire(b))}\n\n"
                for n, b in enumerate(blocks, 1)
                if n >= first
            ]
            body = "".join(events) + ": waiting\n\n"
            return httpx.Response(200, text=body, headers={"Content-Type": "text/event-stream"})
        height = int(request.url.path.rsplit("/", 1)[1])
        if 1 <= height <= len(blocks):
            return httpx.Response(200, json=wire(blocks[height - 1]))
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no"}})

    return LedgerClient("http://ledger.test", retries=0, transport=httpx.MockTransport(answer))


def resigned(block: Block, key: Keypair, **changes: object) -> Block:
    head, raws = block
    return SignedHead.sign(replace(head.header, **changes), key), raws  # type: ignore[arg-type]


def test_it_follows_good_blocks_in_order_in_its_thread() -> None:
    scenario = Scenario()
    seen: list[int] = []
    follower = BlockFollower(
        fake_ledger(chain_of(scenario, 3), []),
        scenario.genesis,
        lambda head, raws: seen.append(head.header.height),
    )
    follower.start()
    try:
        assert follower.wait_for(3, 10)
    finally:
        follower.stop()
    assert seen == [1, 2, 3] and follower.problem is None


def test_streaming_it_catches_up_by_listing_then_takes_the_streamed_blocks() -> None:
    scenario = Scenario()
    seen: list[int] = []
    asked: list[str] = []
    follower = BlockFollower(
        fake_ledger(chain_of(scenario, 5), asked, listed=2),
        scenario.genesis,
        lambda head, raws: seen.append(head.header.height),
        stream=True,
    )
    follower.start()
    try:
        assert follower.wait_for(5, 10)
    finally:
        started = time.monotonic()
        follower.stop()
        assert time.monotonic() - started < 5  # stopped at a keep-alive, not stuck in a read
    assert seen == [1, 2, 3, 4, 5] and follower.problem is None
    assert asked[0] == "/v1/blocks" and "/v1/stream/blocks" in asked
    first_stream = asked.index("/v1/stream/blocks")
    assert "/v1/blocks" in asked[:first_stream]  # the listing came first


@pytest.mark.parametrize("kept_head", [True, False], ids=["head-kept", "head-fetched"])
def test_it_resumes_after_the_given_head_or_fetches_it_again(kept_head: bool) -> None:
    scenario = Scenario()
    blocks = chain_of(scenario, 3)
    asked: list[str] = []
    seen: list[int] = []
    follower = BlockFollower(
        fake_ledger(blocks, asked),
        scenario.genesis,
        lambda head, raws: seen.append(head.header.height),
        height=2,
        previous=blocks[1][0] if kept_head else None,
    )
    assert follower.poll() == 1 and seen == [3]
    assert ("/v1/blocks/2" in asked) is not kept_head


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("prev", "block 3 does not follow block 2"),
        ("signer", "block 3's head is not signed by a sequencer key of the genesis"),
        ("chain", "block 3's head is of another chain than the genesis's"),
        ("tree", "block 3 holds 1 transactions but grows the tree from 2 to 4"),
        ("height", "asked for block 3, the ledger sent 4"),
    ],
)
def test_a_bad_block_stops_it_with_the_reason(tamper: str, reason: str) -> None:
    scenario = Scenario()
    blocks = chain_of(scenario, 3)
    key = Keypair.generate() if tamper == "signer" else scenario.sequencer
    tampering: dict[str, dict[str, object]] = {
        "prev": {"prev": bytes(32)},
        "signer": {},
        "chain": {"chain": bytes(32)},
        "tree": {"tree_size": 4},
        "height": {"height": 4},
    }
    blocks[2] = resigned(blocks[2], key, **tampering[tamper])
    seen: list[int] = []
    follower = BlockFollower(
        fake_ledger(blocks, []),
        scenario.genesis,
        lambda head, raws: seen.append(head.header.height),
    )
    with pytest.raises(FollowerStopped, match=reason):
        follower.poll()
    assert seen == [1, 2] and follower.height == 2 and follower.problem == reason
    assert not follower.wait_for(3, 0.1)
    with pytest.raises(FollowerStopped):
        follower.poll()  # it stays stopped


def test_the_meter_watcher_stops_on_a_bad_block_and_keeps_the_good_ones(tmp_path: Path) -> None:
    scenario = Scenario()
    blocks = chain_of(scenario, 3)
    blocks[2] = resigned(blocks[2], Keypair.generate())
    store = MeterStore(f"sqlite:///{tmp_path}/meter.sqlite")
    ledger_index = MeterLedgerIndex(
        fake_ledger(blocks, []), store, scenario.genesis, "m1", bytes(32)
    )
    ledger_index.start()
    try:
        assert not ledger_index.wait_for(3, 10)
    finally:
        ledger_index.stop()
    assert ledger_index.problem == "block 3's head is not signed by a sequencer key of the genesis"
    assert ledger_index.height == 2 and store.chain_head()[0] == 2
    assert [f.kind for f in store.chain_facts()] == ["regulate", "regulate"]
