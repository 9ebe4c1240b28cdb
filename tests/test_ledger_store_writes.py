"""How `Store.write_block` writes a block, on both back-ends: on SQLite many rows to a statement
and through one connection it keeps; a block larger than a statement holds is written whole,
and a block the database refuses part-way is not written at all."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator

import pytest
from sqlalchemy.exc import IntegrityError

import ledger.store
from assets import Authorization, Fa, Keypair, Outpoint, encode_transaction
from ledger import Ledger
from ledger.store import Store
from simulation.scenario import Scenario, pay

ISSUES = 7  # a block's issues
OUTPUTS = 3  # each issue's outputs


@dataclasses.dataclass
class Chain:
    scenario: Scenario
    meter: Keypair
    ledger: Ledger
    nonces: Iterator[int] = dataclasses.field(default_factory=lambda: itertools.count(1))

    def issues(self, count: int = ISSUES) -> list[bytes]:
        return [
            encode_transaction(
                self.scenario.issue(
                    "m",
                    self.meter,
                    next(self.nonces),
                    [pay(Fa(1 + n), Keypair.generate()) for n in range(OUTPUTS)],
                )
            )
            for _ in range(count)
        ]


@pytest.fixture
def chain(store_url: str) -> Iterator[Chain]:
    scenario, meter = Scenario(), Keypair.generate()
    made = Chain(scenario, meter, Ledger(Store(store_url), scenario.genesis, scenario.sequencer))
    regulation = scenario.regulate(0, authorize=[Authorization("m", meter.public_key, 9, 9)])
    block = made.ledger.append_block([encode_transaction(regulation)], scenario.time_in(0))
    assert block.outcomes[0].accepted
    yield made
    made.ledger.store.close()


def test_a_block_larger_than_one_statement_is_written_whole(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    # from 2 rows, 20 values a statement: 3 transactions (6 columns) or 2 outputs (8 columns)
    monkeypatch.setattr(ledger.store, "_INSERT_CHUNK", 20)
    monkeypatch.setattr(ledger.store, "_MANY_ROWS", 2)
    raws = chain.issues()
    result = chain.ledger.append_block(raws, chain.scenario.time_in(1))
    assert all(o.accepted for o in result.outcomes)

    store = chain.ledger.store
    assert [t.body for t in store.transactions_in(1, 1 + ISSUES)] == raws
    assert store.transaction_count() == 1 + ISSUES
    assert all(
        len(_outputs(store, t.txid)) == OUTPUTS for t in store.transactions_in(1, 1 + ISSUES)
    )


@pytest.mark.parametrize("many_rows", [2, ledger.store._MANY_ROWS], ids=["many", "one"])
def test_a_block_refused_part_way_leaves_nothing_and_the_next_is_written(
    chain: Chain, monkeypatch: pytest.MonkeyPatch, many_rows: int
) -> None:
    # rows many to a statement (INSERT OR FAIL: the rows before the clash stay until the
    # block's transaction is rolled back), and one to a statement
    monkeypatch.setattr(ledger.store, "_MANY_ROWS", many_rows)
    led = chain.ledger
    store = led.store
    assert led.append_block(chain.issues(), chain.scenario.time_in(1)).head is not None
    head, size = store.head(), store.transaction_count()
    built = led.build(chain.issues(), chain.scenario.time_in(2))
    # its last row repeats an id the store holds: the database refuses it after the others
    stored = store.transactions_in(1, 2)[0]
    clash = dataclasses.replace(built.write.transactions[-1], txid=stored.txid)
    built.write.transactions[-1] = clash
    with pytest.raises(IntegrityError):
        led.write(built)
    led.reload()

    assert store.head() == head
    assert store.transaction_count() == size
    assert not _outputs(store, built.write.transactions[0].txid)
    assert led.append_block(chain.issues(), chain.scenario.time_in(2)).head is not None
    assert store.transaction_count() == size + ISSUES


def _outputs(store: Store, tx_id: bytes) -> list[ledger.store.StoredOutput]:
    """The outputs `store` holds of transaction `tx_id`, spent or not (none if it holds none)."""
    return list(store.outputs([Outpoint(tx_id, n) for n in range(OUTPUTS)]).values())
