"""`InProcessSequencer`'s group commit: how it cuts blocks while one is appended and while the
pipeline is idle. Each transaction here is refused (`{}` is malformed): a block's outcomes
still show which submissions it held, and nothing else matters to the cut."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger import Ledger
from ledger.ledger import BlockResult, BuiltBlock
from ledger.sequencer import InProcessSequencer, Ticket
from ledger.store import Store
from simulation.scenario import Scenario

LONG_S = 30.0  # a wait no test reaches


class HeldLedger(Ledger):
    """A ledger whose block writes wait until `release` is set."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.release = threading.Event()
        self.release.set()
        self.writing = threading.Event()

    def write(self, block: BuiltBlock) -> BlockResult:
        self.writing.set()
        assert self.release.wait(LONG_S)
        return super().write(block)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[HeldLedger]:
    scenario = Scenario()
    held = HeldLedger(Store(f"sqlite:///{tmp_path}/l.sqlite"), scenario.genesis, scenario.sequencer)
    yield held
    held.release.set()
    held.store.close()


def sequencer(
    ledger: Ledger, quiet_s: float = LONG_S, linger_s: float = LONG_S
) -> InProcessSequencer:
    return InProcessSequencer(
        ledger, max_wait_s=LONG_S, workers=1, quiet_s=quiet_s, linger_s=linger_s
    )


def block_of(ticket: Ticket) -> int:
    """How many submissions `ticket`'s block held."""
    return len(ticket.block.result(LONG_S).outcomes)


def gather_three_behind_a_held_block(ledger: HeldLedger, seq: InProcessSequencer) -> None:
    """One block in the pipeline, held, while three more gather; then both are appended."""
    ledger.release.clear()
    first = seq.submit(b"{}")
    assert ledger.writing.wait(LONG_S)
    gathered = [seq.submit(b"{}") for _ in range(3)]
    ledger.release.set()
    assert block_of(first) == 1
    assert [block_of(t) for t in gathered] == [3, 3, 3]
    assert gathered[0].block is gathered[2].block


def test_a_lone_submission_is_cut_at_once(ledger: HeldLedger) -> None:
    seq = sequencer(ledger)
    try:
        started = time.monotonic()
        assert block_of(seq.submit(b"{}")) == 1
        assert time.monotonic() - started < LONG_S / 2  # neither quiet nor linger was waited
    finally:
        seq.close()


def test_the_idle_pipeline_waits_for_as_many_as_the_last_block(ledger: HeldLedger) -> None:
    seq = sequencer(ledger)
    try:
        gather_three_behind_a_held_block(ledger, seq)
        # The pipeline is idle: the next block waits for three, then is cut at the third.
        ledger.writing.clear()
        tickets = [seq.submit(b"{}")]
        time.sleep(0.2)
        assert not tickets[0].block.done() and not ledger.writing.is_set()
        tickets += [seq.submit(b"{}"), seq.submit(b"{}")]
        assert [block_of(t) for t in tickets] == [3, 3, 3]
    finally:
        seq.close()


@pytest.mark.parametrize("wait", ["quiet", "linger"])
def test_fewer_than_the_last_block_are_cut_after_quiet_or_linger(
    ledger: HeldLedger, wait: str
) -> None:
    bound_s = 0.3
    quiet_s, linger_s = (bound_s, LONG_S) if wait == "quiet" else (LONG_S, bound_s)
    seq = sequencer(ledger, quiet_s=quiet_s, linger_s=linger_s)
    try:
        gather_three_behind_a_held_block(ledger, seq)
        started = time.monotonic()
        assert block_of(seq.submit(b"{}")) == 1
        assert bound_s <= time.monotonic() - started < LONG_S / 2
    finally:
        seq.close()


def test_closing_cuts_what_is_open_without_waiting(ledger: HeldLedger) -> None:
    seq = sequencer(ledger)
    gather_three_behind_a_held_block(ledger, seq)
    ticket = seq.submit(b"{}")
    started = time.monotonic()
    seq.close()
    assert block_of(ticket) == 1
    assert time.monotonic() - started < LONG_S / 2
