"""The coordinator's long polls (`mixer.polls`, `Coordinator.open_poll`): awaited on the event
loop, signed by the peer whose events they read (fresh, once), at most `POLLS_PER_PEER` open
per peer and pool; a refused poll costs the peer nothing in its run, and a timeout waits for a
message the coordinator is still taking in."""

from __future__ import annotations

import asyncio
import time

import pytest
from test_mixer_coordinator import (
    NOW,
    TIMEOUT_S,
    Clock,
    FakeLedger,
    clock,
    coordinator_of,
    join_all,
    join_body,
    ledger,
    make_wallets,
    pump,
)

from assets import Keypair
from mixer.auth import FRESH_S, poll_params
from mixer.coordinator import (
    POLLS_PER_PEER,
    Coordinator,
    MixerError,
    PollRequest,
    parse_poll,
)
from mixer.polls import long_poll

__all__ = ["clock", "ledger"]  # the fixtures of test_mixer_coordinator


def signed(
    pool: str, key: Keypair, after: int = 0, wait: float = 0, at: float = NOW
) -> PollRequest:
    query = {k: str(v) for k, v in poll_params(pool, key, after, int(at)).items()}
    return parse_poll({**query, "wait": str(wait)})


def refusal(coordinator: Coordinator, pool: str, request: PollRequest) -> tuple[int, str]:
    with pytest.raises(MixerError) as refused:
        asyncio.run(long_poll(coordinator, pool, request))
    return refused.value.status, refused.value.code


def test_a_long_poll_waits_for_the_next_event_and_no_longer(
    ledger: FakeLedger, clock: Clock
) -> None:
    coordinator = coordinator_of(ledger, clock, min_peers=2, max_peers=2)
    first, second = make_wallets(ledger, 2)
    pool = coordinator.join(join_body(first.key, first.outpoint))["pool"]

    async def scenario() -> None:
        began = time.monotonic()
        assert await long_poll(coordinator, pool, signed(pool, first.key, wait=0.2)) == (
            b'{"events":[],"next":0}'
        )
        assert time.monotonic() - began >= 0.2
        waiting = asyncio.ensure_future(
            long_poll(coordinator, pool, signed(pool, first.key, 0, 10))
        )
        await asyncio.sleep(0.1)
        began = time.monotonic()
        # the join comes from another thread, as the API's thread pool makes it
        await asyncio.to_thread(coordinator.join, join_body(second.key, second.outpoint))
        answer = await asyncio.wait_for(waiting, 5)
        assert time.monotonic() - began < 1
        assert b'"type":"start"' in answer and answer.endswith(b',"next":1}')
        closing = asyncio.ensure_future(
            long_poll(coordinator, pool, signed(pool, first.key, 1, 10))
        )
        await asyncio.sleep(0.1)
        coordinator.close()  # the service stops: waiting polls answer at once
        assert await asyncio.wait_for(closing, 5) == b'{"events":[],"next":1}'

    asyncio.run(scenario())


def test_a_read_must_be_signed_by_its_peer_fresh_and_once(ledger: FakeLedger, clock: Clock) -> None:
    coordinator = coordinator_of(ledger, clock)
    (wallet, other) = make_wallets(ledger, 2)
    pool = join_all(coordinator, [wallet, other])
    peer = wallet.key.public_key.hex()
    with pytest.raises(MixerError) as unsigned:
        parse_poll({"peer": peer, "after": "0"})
    assert (unsigned.value.status, unsigned.value.code) == (401, "unauthenticated")
    good = signed(pool, wallet.key)
    forged = [
        PollRequest(good.peer, good.after, 0, good.at, good.nonce, bytes(64)),
        PollRequest(good.peer, good.after + 1, 0, good.at, good.nonce, good.signature),
        PollRequest(other.key.public_key, 0, 0, good.at, good.nonce, good.signature),
        PollRequest(good.peer, good.after, 0, good.at, bytes(16), good.signature),
        signed("another pool", wallet.key),
    ]
    for request in forged:
        assert refusal(coordinator, pool, request) == (401, "bad_signature")
    assert refusal(coordinator, pool, signed(pool, wallet.key, at=NOW - FRESH_S - 1)) == (
        401,
        "stale_request",
    )
    assert refusal(coordinator, pool, signed(pool, Keypair.generate())) == (403, "not_a_peer")
    assert refusal(coordinator, "nope", signed("nope", wallet.key)) == (404, "not_found")
    assert asyncio.run(long_poll(coordinator, pool, good)) == b'{"events":[],"next":0}'
    assert refusal(coordinator, pool, good) == (401, "replayed_request")
    clock.now += 2 * FRESH_S
    coordinator.tick()  # the nonces of stale reads are forgotten: replays are stale anyway
    assert refusal(coordinator, pool, good) == (401, "stale_request")


def test_a_peer_holds_at_most_two_polls_and_a_refused_one_costs_it_nothing(
    ledger: FakeLedger, clock: Clock
) -> None:
    coordinator = coordinator_of(ledger, clock, min_peers=2, max_peers=2)
    greedy, honest = make_wallets(ledger, 2)
    pool = coordinator.join(join_body(greedy.key, greedy.outpoint))["pool"]
    coordinator.join(join_body(honest.key, honest.outpoint))
    before = coordinator.pool_state(pool)

    async def scenario() -> None:
        held = [
            asyncio.ensure_future(long_poll(coordinator, pool, signed(pool, greedy.key, 99, 30)))
            for _ in range(POLLS_PER_PEER)
        ]
        await asyncio.sleep(0.05)
        with pytest.raises(MixerError) as refused:
            await long_poll(coordinator, pool, signed(pool, greedy.key, 99, 30))
        error = refused.value
        assert (error.status, error.code) == (429, "too_many_polls")
        assert error.retry_after is not None and 1 <= error.retry_after <= 30
        # another peer's poll is not held up: it answers at once
        answer = await asyncio.wait_for(long_poll(coordinator, pool, signed(pool, honest.key)), 1)
        assert b'"type":"start"' in answer
        held[0].cancel()  # the peer hung up on one: a new one is admitted
        await asyncio.sleep(0.05)
        third = asyncio.ensure_future(
            long_poll(coordinator, pool, signed(pool, greedy.key, 99, 30))
        )
        await asyncio.sleep(0.05)
        assert not third.done()
        coordinator.close()
        await asyncio.gather(held[1], third)

    asyncio.run(scenario())
    assert coordinator.pool_state(pool) == before  # no run state was touched


def test_a_timeout_waits_for_a_message_still_being_taken_in_but_not_forever(
    ledger: FakeLedger, clock: Clock
) -> None:
    """A peer is named silent for what it did not send, not for the coordinator's delay in
    taking what it sent: while a message is between its arrival and its relay, the timeout
    waits, at most one more `timeout_s`."""
    coordinator = coordinator_of(ledger, clock, max_peers=3)
    wallets = make_wallets(ledger, 3)
    wallets[2].silent = True
    pool = join_all(coordinator, wallets)
    pump(coordinator, wallets)

    def timed_out() -> bool:
        events = coordinator.events(pool, wallets[0].key.public_key, 0)["events"]
        return any(e["type"] == "timeout" for e in events)

    with coordinator.arriving(pool):
        clock.now += TIMEOUT_S
        coordinator.tick()
        assert not timed_out()  # a message that arrived in time may yet come of it
        clock.now += TIMEOUT_S - 1
        coordinator.tick()
        assert not timed_out()
        clock.now += 1
        coordinator.tick()
        assert timed_out()  # a flood of bodies cannot put the timeout off for ever


def test_without_a_message_arriving_the_timeout_is_on_time(
    ledger: FakeLedger, clock: Clock
) -> None:
    coordinator = coordinator_of(ledger, clock, max_peers=3)
    wallets = make_wallets(ledger, 3)
    wallets[2].silent = True
    pool = join_all(coordinator, wallets)
    pump(coordinator, wallets)
    with coordinator.arriving(pool):
        pass
    clock.now += TIMEOUT_S
    coordinator.tick()
    events = coordinator.events(pool, wallets[0].key.public_key, 0)["events"]
    assert [e["type"] for e in events][-2:] == ["timeout", "start"]
