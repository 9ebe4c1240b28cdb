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


def write_blocks(path: Path) -> Ledger:
    """A ledger at `path` with a regulation and `BLOCKS` blocks of issues."""
    scenario = Scenario()
    meter = Keypair.generate()
    ledger = Ledger(Store(f"sqlite:///{path}"), scenario.genesis, scenario.sequencer)
    authorize = Authorization("meter-1", meter.public_key, 10_000, 10_000)
    regulation = encode_transaction(scenario.regulate(0, authorize=[authorize]))
    assert ledger.append_block([regulation], scenario.time_in(0)).outcomes[0].accepted
    nonces = itertools.count(1)
    for _ in range(BLOCKS):
        outputs = [pay(Fa(1_000), Keypair.generate()) for _ in range(20)]
        issue = encode_transaction(scenario.issue("meter-1", meter, next(nonces), outputs))
        assert ledger.append_block([issue], scenario.time_in(1)).outcomes[0].accepted
    return ledger


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
