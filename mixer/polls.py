"""The coordinator's long polls, awaited on the event loop (docs/mixer-api.md): no thread is
held while a peer waits, so a peer holding many polls open cannot delay another's (each peer
holds at most `POLLS_PER_PEER` per pool: `Coordinator.open_poll`). A poll is woken once per
batch of events, and while it gathers messages every peer sends (`LINGER_S`) only by the event
that could end its wait (`Coordinator.linger`): N peers gathering N messages cost about N
wakes, not N squared.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from mixer.coordinator import Coordinator, PollRequest

LINGER_S = 0.025  # a poll woken by one of N broadcasts waits this long for more of them


async def long_poll(coordinator: Coordinator, pool: str, request: PollRequest) -> bytes:
    """The JSON answer to a signed read of `pool`'s events: at once if there are events for
    the peer after `request.after`, else as soon as one comes or `request.wait_s` (capped)
    has passed. A `MixerError` refuses it (`Coordinator.open_poll`)."""
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    scheduled = False  # a wake is on its way to the loop: another adds nothing until it looks

    def wake() -> None:
        nonlocal scheduled
        if scheduled:
            return
        scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(changed.set)

    deadline = coordinator.open_poll(pool, request, wake)
    ends = loop.time() + (deadline - time.monotonic())  # the deadline on the loop's clock
    linger_until: float | None = None
    try:
        while True:
            scheduled = False  # before reading: an event emitted after the read wakes it again
            changed.clear()
            view = coordinator.events_view(pool, request.peer, request.after)
            now = loop.time()
            if view.found and linger_until is None and view.more_coming:
                # Every peer sends one of these at about the same time: gather a few into
                # one answer instead of answering each (a shuffle never waits).
                linger_until = min(now + LINGER_S, ends)
                coordinator.linger(pool, wake)
            lingering = linger_until is not None and now < linger_until and view.more_coming
            if view.closed or now >= ends or (view.found and not lingering):
                return view.to_json()
            until = linger_until if view.found and linger_until is not None else ends
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(until - now):
                    await changed.wait()
    finally:
        coordinator.close_poll(pool, request.peer, wake, deadline)
