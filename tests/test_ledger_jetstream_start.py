"""A replicated ledger node (ledger/jetstream.py) whose NATS cluster does not answer while it
starts: refused in a sentence, as `SequencerUnavailable`, with its threads and workers
stopped (the servers themselves: tests/integration/test_ledger_jetstream.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import nats.errors
import pytest

from assets import Keypair
from ledger import JetStreamSequencer, Ledger, SequencerUnavailable, Store
from simulation.scenario import Scenario


@pytest.mark.parametrize(
    "failure",
    [nats.errors.TimeoutError(), nats.errors.NoServersError()],
    ids=["timeout", "no-servers"],
)
def test_a_cluster_that_does_not_answer_at_start_is_a_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    async def unanswered(self: JetStreamSequencer) -> None:
        raise failure

    monkeypatch.setattr(JetStreamSequencer, "_start", unanswered)
    scenario = Scenario(sequencer=Keypair.generate())
    ledger = Ledger(
        Store(f"sqlite:///{tmp_path}/node.sqlite"), scenario.genesis, scenario.sequencer
    )
    before = set(threading.enumerate())
    try:
        with pytest.raises(SequencerUnavailable) as refused:
            JetStreamSequencer(
                ledger, ["nats://127.0.0.1:1", "nats://127.0.0.1:2"], "n0", workers=1
            )
    finally:
        ledger.store.close()

    assert "the NATS cluster (nats://127.0.0.1:1, nats://127.0.0.1:2)" in str(refused.value)
    assert "did not set up this node's stream and subscriptions in time" in str(refused.value)
    assert str(failure) in str(refused.value)
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not left, left  # the event loop's thread, the feeder, the pipeline's: all stopped
