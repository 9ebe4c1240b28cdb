"""Ordering: the one interface through which transactions reach the ledger in order.

The validator never knows which sequencer feeds it. `InProcessSequencer` orders submissions
in arrival order and cuts blocks by group commit: while fewer than `max_in_flight` blocks are
being appended, once the block holds as many transactions as the last one (those answered
together come back together), or none arrived for `quiet_s`, or it has waited `linger_s`;
otherwise when the block holds `max_block` transactions or its oldest has waited
`max_wait_s`. A lone submission after a lone one never waits, and under load blocks grow by
themselves. A replicated log can stand behind the same interface later.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from ledger.ledger import BlockResult, Divergence, Ledger, Outcome
from ledger.pipeline import BlockPipeline
from service.clock import now as ledger_now

DEFAULT_MAX_BLOCK = 2_000
DEFAULT_MAX_WAIT_S = 0.05
DEFAULT_MAX_QUEUED_BLOCKS = 4
DEFAULT_MAX_IN_FLIGHT = 1  # group commit: one block appended while the next one gathers
# While the pipeline is idle, the open block waits for as many transactions as the last block
# held, unless none arrived for DEFAULT_QUIET_S or it has waited DEFAULT_LINGER_S: the clients
# answered together come back together, and a block cut at the first of them would leave the
# rest to pay a block of their own (its commit, its sync, its signed head).
DEFAULT_QUIET_S = 0.001
DEFAULT_LINGER_S = 0.003


@dataclass(eq=False)
class _Batch:
    raws: list[bytes] = field(default_factory=list)
    opened: float = field(default_factory=time.monotonic)
    last: float = 0.0  # when its latest transaction arrived
    block: Future[BlockResult] = field(default_factory=Future)


@dataclass(frozen=True, slots=True)
class Ticket:
    """A submitted transaction's place in a block; `result` waits until the block is durable."""

    block: Future[BlockResult]
    index: int

    def result(self, timeout: float | None = None) -> Outcome:
        """The outcome, once the block holding it is durable (or was refused)."""
        return self.block.result(timeout).outcomes[self.index]


class Sequencer(Protocol):
    def submit(self, raw: bytes, wait: bool = True) -> Ticket:
        """Queue `raw`; its ticket resolves once its block is durable. While the ledger is
        behind, wait for room, or with `wait` False raise `SequencerBusy`."""
        ...

    def submit_many(self, raws: Sequence[bytes], wait: bool = True) -> list[Ticket]:
        """Queue all of `raws` in order; each ticket resolves once its block is durable."""
        ...

    def problem(self) -> str | None:
        """Why the sequencer cannot order submissions now, for the node's readiness; None
        when it can."""
        ...

    def close(self) -> None:
        """Commit what is queued, then stop."""
        ...


class SequencerClosed(Exception):
    """The sequencer no longer takes submissions."""


def why_stopped(failure: BaseException | None) -> str:
    """Why a sequencer stopped (`failure`: what stopped it, None when it was closed), in one
    sentence a node's operator can act on."""
    if failure is None:
        return "the sequencer has stopped"
    if isinstance(failure, Divergence):
        return (
            f"the ledger stopped: its history diverges from the chain's other nodes "
            f"({failure.reason}); the evidence is in its log"
        )
    return f"the ledger stopped after a storage failure: {failure}"


class SequencerUnavailable(Exception):
    """The ordering service did not confirm a transaction (a replicated log without a quorum
    in time). Submitting it again is safe: the log keeps a transaction once, by its txid."""


class SequencerBusy(Exception):
    """The ledger is behind: the sequencer has no room for a submission now (back-pressure)."""


class InProcessSequencer:
    """Orders submissions from any thread into blocks, appended through a `BlockPipeline`."""

    def __init__(
        self,
        ledger: Ledger,
        max_block: int = DEFAULT_MAX_BLOCK,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        clock: Callable[[], float] = ledger_now,
        max_queued_blocks: int = DEFAULT_MAX_QUEUED_BLOCKS,
        on_block: Callable[[BlockResult], None] | None = None,
        workers: int | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        on_failure: Callable[[BaseException], None] | None = None,
        on_latency: Callable[[BlockResult, float], None] | None = None,
        quiet_s: float = DEFAULT_QUIET_S,
        linger_s: float = DEFAULT_LINGER_S,
    ) -> None:
        """`clock` gives a block its time, in ledger unix seconds (`service.clock`).
        `on_failure`: called once, from the sequencer's threads, when storage fails and the
        sequencer stops (a service exits then, so that its supervisor restarts it).
        `on_latency`: called with each block's result and its latency in seconds, from its
        first transaction arriving to the block durable (a service's metrics). `quiet_s`,
        `linger_s`: how long an idle pipeline's next block waits for the rest of the last
        block's count, from its latest arrival and from its first."""
        self.ledger = ledger
        self.max_block = max_block
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.max_queued_blocks = max_queued_blocks
        self.max_in_flight = max_in_flight
        self.quiet_s = quiet_s
        self.linger_s = linger_s
        self._in_flight = 0  # blocks handed to the pipeline and not yet settled
        self.on_block = on_block
        self.on_failure = on_failure
        self.on_latency = on_latency
        self._pipeline = BlockPipeline(ledger, workers)
        self._open = _Batch()
        self._expected = 1  # the last block's size: how many are likely to come back
        self._sealed: deque[_Batch] = deque()
        self._changed = threading.Condition()
        self._closing = False
        self._failure: BaseException | None = None
        self._last_time = ledger.time
        self._thread = threading.Thread(target=self._run, name="sequencer", daemon=True)
        self._thread.start()

    def submit(self, raw: bytes, wait: bool = True) -> Ticket:
        """Queue `raw`. While the ledger is behind, wait for room, or with `wait` False raise
        `SequencerBusy` at once (an event loop must never block here)."""
        with self._changed:
            self._await_room(wait)
            return self._queue(raw)

    def submit_many(self, raws: Sequence[bytes], wait: bool = True) -> list[Ticket]:
        """Queue every one of `raws`, in order and next to each other, or none: while the
        ledger is behind, wait for room, or with `wait` False raise `SequencerBusy` at once.
        The room asked for is that of one submission: a batch may fill further blocks."""
        with self._changed:
            self._await_room(wait)
            return [self._queue(raw) for raw in raws]

    def _await_room(self, wait: bool) -> None:
        """Return once a submission may be queued (lock held)."""
        while len(self._sealed) >= self.max_queued_blocks and not self._stopped():
            if not wait:
                raise SequencerBusy("the ledger is behind: submit again shortly")
            self._changed.wait()  # back-pressure: the ledger is behind
        if self._stopped():
            raise SequencerClosed(why_stopped(self._failure))

    def _queue(self, raw: bytes) -> Ticket:
        """Append `raw` to the open block, sealing it once full (lock held)."""
        batch = self._open
        batch.last = time.monotonic()
        if not batch.raws:
            batch.opened = batch.last
            self._changed.notify_all()  # starts the wait for this block
        batch.raws.append(raw)
        if len(batch.raws) >= self.max_block:
            self._seal()
        elif len(batch.raws) == self._expected:
            self._changed.notify_all()  # as many as the last block: an idle pipeline takes it
        return Ticket(batch.block, len(batch.raws) - 1)

    def _stopped(self) -> bool:
        return self._closing or self._failure is not None

    def _seal(self) -> None:
        """Close the open batch (lock held)."""
        self._expected = len(self._open.raws)
        self._sealed.append(self._open)
        self._open = _Batch()
        self._changed.notify_all()

    def _next_batch(self) -> _Batch | None:
        with self._changed:
            while True:
                if self._sealed:
                    batch = self._sealed.popleft()
                    self._in_flight += 1
                    self._changed.notify_all()  # room for submitters
                    return batch
                if self._open.raws:
                    now = time.monotonic()
                    left = self._open.opened + self.max_wait_s - now
                    if left <= 0 or self._closing:
                        self._seal()
                        continue
                    if self._in_flight < self.max_in_flight:
                        quiet = self._open.last + self.quiet_s - now
                        linger = self._open.opened + self.linger_s - now
                        if quiet <= 0 or linger <= 0 or len(self._open.raws) >= self._expected:
                            self._seal()
                            continue
                        left = min(left, quiet, linger)
                    self._changed.wait(left)
                elif self._closing:
                    return None
                else:
                    self._changed.wait()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            # the ledger's clock never goes backwards, whatever the wall clock does
            self._last_time = max(int(self.clock()), self._last_time)
            try:
                appended = self._pipeline.submit(batch.raws, self._last_time)
            except BaseException as exc:
                self._fail(batch, exc)
                break
            appended.add_done_callback(lambda done, b=batch: self._settle(b, done))  # type: ignore[misc]
        self._pipeline.close()

    def _settle(self, batch: _Batch, appended: Future[BlockResult]) -> None:
        with self._changed:
            self._in_flight -= 1
            self._changed.notify_all()  # a block may be cut now
        exc = appended.exception()
        if exc is not None:
            self._fail(batch, exc)
            return
        result = appended.result()
        if self.on_latency is not None:
            self.on_latency(result, time.monotonic() - batch.opened)
        if self.on_block is not None:
            self.on_block(result)
        batch.block.set_result(result)

    def _fail(self, batch: _Batch, exc: BaseException) -> None:
        """Storage failed: nothing of the block was kept; every waiting submitter is told."""
        with self._changed:
            first = self._failure is None
            self._failure = exc
            failed = [batch, *self._sealed, self._open]
            self._sealed.clear()
            self._open = _Batch()
            self._changed.notify_all()
        for waiting in failed:
            if not waiting.block.done():
                waiting.block.set_exception(exc)
        if first and self.on_failure is not None:
            self.on_failure(exc)

    def problem(self) -> str | None:
        return None  # a failure reaches the node through `on_failure`

    def close(self) -> None:
        """Commit what is queued, then stop."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join()
