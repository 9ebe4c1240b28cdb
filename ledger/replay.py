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

from ledger.ledger import BlockResult, Ledger, Outcome
from ledger.pipeline import BlockPipeline

MAX_BLOCK = 10_000  # a long run of lines without a block_time is cut into blocks this large


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    accepted: int
    rejected: int
    blocks: int


def _block_time(line: bytes) -> int | None:
    """The time of a `{"block_time": N}` line (any spacing), or None for any other line."""
    if b"block_time" not in line[:32]:
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if isinstance(value, dict) and value.keys() == {"block_time"}:
        time = value["block_time"]
        if type(time) is int:
            return time
    return None


def replay(
    ledger: Ledger,
    lines: Iterable[bytes],
    report: Callable[[Outcome], None],
    warn: Callable[[str], None],
    workers: int | None = None,
) -> ReplaySummary:
    """Replay `lines` into `ledger`, calling `report` for each transaction in input order,
    once the block holding it is durable. `workers`: processes for the static checks."""
    batch: list[bytes] = []
    clock = ledger.time
    accepted = rejected = blocks = 0
    pipeline = BlockPipeline(ledger, workers)
    in_flight: deque[Future[BlockResult]] = deque()

    def settle(block: Future[BlockResult]) -> None:
        nonlocal accepted, rejected, blocks
        result = block.result()
        blocks += result.head is not None
        for outcome in result.outcomes:
            accepted += outcome.accepted
            rejected += not outcome.accepted
            report(outcome)

    def close_block() -> None:
        if not batch:
            return
        in_flight.append(pipeline.submit(list(batch), clock))
        batch.clear()
        while in_flight and (in_flight[0].done() or len(in_flight) > 2):
            settle(in_flight.popleft())

    for number, line in enumerate(lines, start=1):
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        time = _block_time(line)
        if time is None:
            batch.append(line)
            if len(batch) >= MAX_BLOCK:
                close_block()
            continue
        close_block()
        if time < clock:
            warn(f"line {number}: block_time {time} is before {clock}; the clock stays at {clock}")
        clock = max(clock, time)
    try:
        close_block()
        while in_flight:
            settle(in_flight.popleft())
    finally:
        pipeline.close()
    return ReplaySummary(accepted, rejected, blocks)


def outcome_line(outcome: Outcome) -> str:
    """`<txid> ok`, `<txid> <code>`, or `- <code>` when no txid can be computed."""
    name = outcome.txid.hex() if outcome.txid is not None else "-"
    return f"{name} {'ok' if outcome.code is None else outcome.code}"
