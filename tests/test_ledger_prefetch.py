"""`Store.prefetch`, what a block's build reads in one query, against the store's own output
reads (`Store.outputs`), on both back-ends: exactly the outputs asked for, spent or not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ledger.store
from assets import (
    Authorization,
    Fa,
    Keypair,
    Outpoint,
    Transaction,
    encode_transaction,
    txid,
)
from ledger import Ledger
from ledger.store import Store
from simulation.scenario import Scenario, pay

OUTPUTS = 40  # the issue's outputs: a transfer spends one of them


@pytest.fixture
def funded(store_url: str) -> Iterator[tuple[Ledger, bytes, bytes, bytes]]:
    """A ledger holding a regulation, an issue of `OUTPUTS` outputs, and a transfer of its
    output 3; with the ids of the issue, the transfer and the regulation."""
    scenario = Scenario()
    meter, alice, bob = Keypair.generate(), Keypair.generate(), Keypair.generate()
    led = Ledger(Store(store_url), scenario.genesis, scenario.sequencer)
    regulation = scenario.regulate(0, authorize=[Authorization("m", meter.public_key, 9, 9)])
    issue = scenario.issue("m", meter, 1, [pay(Fa(10 + n), alice) for n in range(OUTPUTS)])
    spend = scenario.transfer([Outpoint(txid(issue), 3)], [pay(Fa(13), bob)], alice)
    txs: list[Transaction] = [regulation, issue, spend]
    for at, tx in enumerate(txs):
        assert led.append_block([encode_transaction(tx)], scenario.time_in(at)).outcomes[0].accepted
    yield led, txid(issue), txid(spend), txid(regulation)
    led.store.close()


def test_only_the_outputs_asked_for_are_read_with_their_spends(
    funded: tuple[Ledger, bytes, bytes, bytes],
) -> None:
    led, issue, spend, regulation = funded
    unknown = b"\x07" * 32
    known, found = led.store.prefetch(
        [unknown, spend, regulation], [(issue, 3), (issue, 5), (issue, OUTPUTS), (unknown, 0)]
    )
    # every asked txid on the ledger is known, also one asked for an index it does not have
    assert known == {issue, spend, regulation}
    assert set(found) == {(issue, 3), (issue, 5)}
    output, seq, spender, spender_id = found[(issue, 3)]
    assert (output.asset, seq) == (Fa(13), 1)  # the regulation is seq 0
    assert (spender, spender_id) == (2, spend)
    assert found[(issue, 5)][2:] == (None, None)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    indexes=st.lists(st.integers(-1, OUTPUTS + 2), max_size=12),
    chunk=st.sampled_from([2, 4, 16_000]),
)
def test_prefetch_agrees_with_the_output_reads_in_chunks_of_any_size(
    funded: tuple[Ledger, bytes, bytes, bytes],
    indexes: list[int],
    chunk: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    led, issue, spend, _ = funded
    monkeypatch.setattr(ledger.store, "_PREFETCH_CHUNK", chunk)
    wanted = [(issue, n) for n in indexes] + [(spend, 0)]
    known, found = led.store.prefetch([], wanted)
    expected = led.store.outputs({Outpoint(t, n) for t, n in wanted if n >= 0})
    assert known == ({issue} if indexes else set()) | {spend}
    assert {k: (row[0], row[1], row[2]) for k, row in found.items()} == {
        (o.txid, o.index): (s.output, s.seq, s.spent_by) for o, s in expected.items()
    }
    # the spender's id is the id of the transaction at the spender's position
    for row in found.values():
        spender = None if row[2] is None else led.store.transactions_in(row[2], row[2] + 1)[0]
        assert row[3] == (None if spender is None else spender.txid)
