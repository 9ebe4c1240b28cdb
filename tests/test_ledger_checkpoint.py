"""The ledger's SQLite store is checkpointed beside its writer (`ledger.store._Checkpointer`),
never inside a block's commit: the connections' automatic checkpoints are off, and what blocks
write reaches the database file once enough was written, or after a while."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from waiting import wait_until

import ledger.store as store
from assets import Authorization, Fa, Keypair, encode_transaction
from ledger import Ledger
from ledger.store import Store
from simulation.scenario import Scenario, pay

BLOCKS = 30


class Blocks:
    """A ledger at `path` with a regulation and `BLOCKS` blocks of issues; `more()` appends
    one more."""

    def __init__(self, path: Path) -> None:
        self.scenario = Scenario()
        self.meter = Keypair.generate()
        self.nonces = itertools.count(1)
        self.ledger = Ledger(
            Store(f"sqlite:///{path}"), self.scenario.genesis, self.scenario.sequencer
        )
        authorize = Authorization("meter-1", self.meter.public_key, 10_000, 10_000)
        regulation = encode_transaction(self.scenario.regulate(0, authorize=[authorize]))
        assert self.ledger.append_block([regulation], self.scenario.time_in(0)).outcomes[0].accepted
        for _ in range(BLOCKS):
            self.more()

    def more(self) -> None:
        outputs = [pay(Fa(1_000), Keypair.generate()) for _ in range(20)]
        issue = self.scenario.issue("meter-1", self.meter, next(self.nonces), outputs)
        block = self.ledger.append_block([encode_transaction(issue)], self.scenario.time_in(1))
        assert block.outcomes[0].accepted


def write_blocks(path: Path) -> Ledger:
    return Blocks(path).ledger


def test_no_commit_checkpoints(tmp_path: Path) -> None:
    ledger = write_blocks(tmp_path / "l.sqlite")
    with ledger.store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    ledger.store.close()


@pytest.mark.parametrize("every", ["transactions", "seconds"])
def test_the_checkpointer_copies_the_wal_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every: str
) -> None:
    monkeypatch.setattr(store, "CHECKPOINT_EVERY_S", 0.01)
    path = tmp_path / "l.sqlite"
    ledger = write_blocks(path)  # under the default thresholds: nothing is copied back yet
    written = os.path.getsize(path)
    if every == "transactions":
        monkeypatch.setattr(store, "CHECKPOINT_TRANSACTIONS", BLOCKS)
    else:
        monkeypatch.setattr(store, "CHECKPOINT_AT_LEAST_S", 0.05)
    # the blocks are in the WAL; the database file grows once they are copied back
    wait_until(lambda: os.path.getsize(path) > written, 10, "a checkpoint")
    ledger.store.close()


def test_nothing_is_copied_back_before_the_thresholds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test above can fail: with thresholds out of reach, the file does not grow."""
    monkeypatch.setattr(store, "CHECKPOINT_EVERY_S", 0.01)
    path = tmp_path / "l.sqlite"
    ledger = write_blocks(path)
    written = os.path.getsize(path)
    with pytest.raises(pytest.fail.Exception):
        wait_until(lambda: os.path.getsize(path) > written, 0.5, "a checkpoint")
    ledger.store.close()


def test_a_checkpoint_asked_for_copies_everything_back_at_once(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = write_blocks(path)  # under the default thresholds: nothing is copied back yet
    written = os.path.getsize(path)
    ledger.store.checkpoint()
    assert os.path.getsize(path) > written
    with ledger.store.engine.connect() as conn:  # every page of the WAL is in the file
        row = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    busy, pages, copied = (int(row[0]), int(row[1]), int(row[2]))
    assert busy == 0 and pages == copied > 0
    ledger.store.close()


def wal_pages(ledger: Ledger) -> int:
    """The WAL's length in pages, as a passive checkpoint reports it."""
    with ledger.store.engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()[1])


def test_a_long_wal_starts_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past `_WAL_RESTART_PAGES`, the checkpointer also restarts the WAL (a passive checkpoint
    that copied everything lets the next writer start over too, but not one that a writer
    outran): the next block is written from its start, and the connection waits for locks as
    long as before."""
    blocks = Blocks(tmp_path / "l.sqlite")
    grown = wal_pages(blocks.ledger)
    checkpointer = blocks.ledger.store._checkpointer
    assert checkpointer is not None
    monkeypatch.setattr(store, "_WAL_RESTART_PAGES", 0)
    checkpointer.checkpoint()
    blocks.more()
    assert 0 < wal_pages(blocks.ledger) < grown
    with blocks.ledger.store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
    blocks.ledger.store.close()
