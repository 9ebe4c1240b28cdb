"""The ledger state the rules read: a deterministic function of the ordered transactions.

Unspent outputs and transaction ids live in the store and are fetched a block at a time; the
small, hot part (regulation schedule, last nonces, issued power per meter) lives in memory and
is rebuilt from the store's issues and regulations at start-up.
"""

from __future__ import annotations

from collections.abc import Iterable

from assets import AssetKind, Fa, Issue, Output, Regulate
from ledger.issued import StepFunction
from ledger.schedule import MeterStatus, RegulationSchedule
from ledger.store import BlockWrite, OutputKey, OutputRow

_NOTHING_ISSUED = StepFunction()


class LedgerState:
    """Regulations, nonces and issued power, as of the last transaction applied."""

    def __init__(self) -> None:
        self.schedule = RegulationSchedule()
        self.nonces: dict[str, int] = {}
        self._issued: dict[tuple[str, AssetKind], StepFunction] = {}

    def issued(self, meter: str, kind: AssetKind) -> StepFunction:
        """Power `meter` has issued of `kind`, per interval (W). Read only."""
        return self._issued.get((meter, kind), _NOTHING_ISSUED)

    def apply_issue(self, tx: Issue) -> None:
        self.nonces[tx.meter] = tx.nonce
        for output in tx.outputs:
            asset = output.asset
            if not isinstance(asset, Fa):
                steps = self._issued.setdefault((tx.meter, asset.kind), StepFunction())
                steps.add(asset.start, asset.end, asset.power)

    def apply_regulate(self, tx: Regulate, seq: int) -> None:
        self.schedule.apply(tx, seq)


class BlockView:
    """The ledger as the next transaction of a block sees it: the store as of the previous
    block, what this block accepted so far, and the in-memory state (kept current)."""

    def __init__(
        self,
        state: LedgerState,
        known_txids: set[bytes],
        stored: dict[OutputKey, OutputRow],
    ) -> None:
        """`known_txids`: transaction ids on the ledger (at least those of the block);
        `stored`: the stored outputs among the block's inputs (`Store.prefetch`)."""
        self._state = state
        self._known = known_txids
        self._stored = stored
        self._new_txids: set[bytes] = set()
        self._new_outputs: dict[OutputKey, tuple[Output, int]] = {}  # with the creating seq
        self._spent: set[OutputKey] = set()

    def has_transaction(self, txid: bytes) -> bool:
        return txid in self._known or txid in self._new_txids

    def output(self, key: OutputKey) -> Output | None:
        found = self._new_outputs.get(key) or self._stored.get(key)
        return None if found is None else found[0]

    def created_seq(self, key: OutputKey) -> int:
        """The log position of the transaction that created output `key` (which exists)."""
        new = self._new_outputs.get(key)
        return new[1] if new is not None else self._stored[key][1]

    def is_spent(self, key: OutputKey) -> bool:
        if key in self._spent:
            return True
        stored = self._stored.get(key)
        return stored is not None and stored[2] is not None

    def meter_at(self, meter: str, interval: int) -> MeterStatus | None:
        return self._state.schedule.meter_at(meter, interval)

    def meter_pieces(
        self, meter: str, start: int, end: int
    ) -> Iterable[tuple[int, int, MeterStatus | None]]:
        return self._state.schedule.meter_pieces(meter, start, end)

    def last_nonce(self, meter: str) -> int | None:
        return self._state.nonces.get(meter)

    def issued(self, meter: str, kind: AssetKind) -> StepFunction:
        return self._state.issued(meter, kind)

    def record_block(self, block: BlockWrite) -> None:
        """A block built before this one and not yet in the store."""
        self._new_txids.update(t.txid for t in block.transactions)
        self._new_outputs.update((key, (output, seq)) for key, output, seq in block.outputs)
        self._spent.update(key for key, _, _ in block.spends)

    def record(
        self,
        txid: bytes,
        seq: int,
        created: Iterable[tuple[OutputKey, Output]],
        spent: Iterable[OutputKey],
    ) -> None:
        """An accepted transaction at log position `seq`: later ones in the block see its id,
        outputs and spends."""
        self._new_txids.add(txid)
        self._new_outputs.update((key, (output, seq)) for key, output in created)
        self._spent.update(spent)
