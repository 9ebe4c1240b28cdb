"""`petra ledger replay`: feed a JSON-lines file through the ledger's rules, in order.

Each line is a transaction or `{"block_time": UNIX_SECONDS}`, which closes the current block
and sets the clock for the lines after it. Outcomes are reported once their block is durable.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass

from assets.codec import MAX_INT
from ledger.ledger import BlockResult, Ledger, Outcome
from ledger.pipeline import BlockPipeline

MAX_BLOCK = 10_000  # a long run of lines without a block_time is cut into blocks this large


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    accepted: int
    rejected: int
    blocks: int
    resumed_after_line: int | None  # the input the store already held, when resuming
    skipped: int  # transactions of that input, not judged again


def _block_time(line: bytes) -> tuple[bool, int | None]:
    """(is it a `{"block_time": N}` line (any spacing), N if N is a valid unix time)."""
    if b"block_time" not in line[:32]:
        return False, None
    try:
        value = json.loads(line)
    except ValueError:
        return False, None
    if not isinstance(value, dict) or value.keys() != {"block_time"}:
        return False, None
    time = value["block_time"]
    return True, time if type(time) is int and 0 <= time <= MAX_INT else None


def replay(
    ledger: Ledger,
    lines: Iterable[bytes],
    report: Callable[[Outcome], None],
    warn: Callable[[str], None],
    workers: int | None = None,
    block_done: Callable[[], None] = lambda: None,
) -> ReplaySummary:
    """Replay `lines` into `ledger`, calling `report` for each transaction in input order once
    the block holding it is durable, then `block_done`. `workers`: processes for the static
    checks.

    Each block stores the number of the input line it reaches. On a store that already holds
    blocks of this input, the lines up to the last block's are skipped (their block_time lines
    still set the clock), so a replay killed and run again ends where a clean one ends.
    """
    resume_after = ledger.store.source_offset() if ledger.head is not None else None
    batch: list[bytes] = []
    last_line = 0  # the input line the batch reaches
    # a fresh ledger's first block may come before the epoch (to regulate interval 0)
    clock: int | None = None
    if ledger.head is not None and resume_after is None:
        clock = ledger.head.header.time  # a store fed by another source: carry on after it
    accepted = rejected = blocks = skipped = 0
    pipeline = BlockPipeline(ledger, workers, warm=False)
    in_flight: deque[Future[BlockResult]] = deque()

    def settle(block: Future[BlockResult]) -> None:
        nonlocal accepted, rejected, blocks
        result = block.result()
        blocks += result.head is not None
        for outcome in result.outcomes:
            accepted += outcome.accepted
            rejected += not outcome.accepted
            report(outcome)
        block_done()

    def close_block() -> None:
        nonlocal clock
        if not batch:
            return
        if clock is None:  # transactions before any block_time are at the epoch
            clock = ledger.genesis.epoch
        in_flight.append(pipeline.submit(list(batch), clock, last_line))
        batch.clear()
        while in_flight and (in_flight[0].done() or len(in_flight) > 2):
            settle(in_flight.popleft())

    try:
        for number, line in enumerate(lines, start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            is_block_time, time = _block_time(line)
            resuming = resume_after is not None and number <= resume_after
            if not is_block_time:
                if resuming:
                    skipped += 1
                    continue
                batch.append(line)
                last_line = number
                if len(batch) >= MAX_BLOCK:
                    close_block()
                continue
            if time is None:
                warn(f"line {number}: block_time must be whole unix seconds from 0 to {MAX_INT}")
                continue
            close_block()
            if clock is not None and time < clock:
                if not resuming:
                    warn(
                        f"line {number}: block_time {time} is before {clock}; "
                        f"the clock stays at {clock}"
                    )
                continue
            clock = time
        close_block()
        while in_flight:
            settle(in_flight.popleft())
    finally:
        pipeline.close()
    return ReplaySummary(accepted, rejected, blocks, resume_after, skipped)


def outcome_line(outcome: Outcome) -> str:
    """`<txid> ok`, `<txid> <code>`, or `- <code>` when no txid can be computed."""
    name = outcome.txid.hex() if outcome.txid is not None else "-"
    return f"{name} {'ok' if outcome.code is None else outcome.code}"
