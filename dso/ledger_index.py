"""The DSO node's index of the ledger: it follows the ledger node block by block
(`ledger.block_follower.BlockFollower`, which checks every head) and keeps, in the DSO database,
each block's time and every transaction: the issues and regulations the schedule, the views and
the controller read, and the transfers whose outputs bills list as deposits, which billing
reconciliation reads here rather than asking the ledger node twice per deposit."""

from __future__ import annotations

from collections.abc import Callable

from assets import Epa, Genesis, Issue, Regulate
from assets import txid as transaction_id
from assets.codec import trusted_transaction
from dso.store import ChainTransaction, DsoStore
from ledger.block_follower import BlockFollower
from ledger.block_follower import FollowerStopped as FollowerStopped  # what `poll` raises
from ledger.blocks import SignedHead
from ledger.client import LedgerClient


class DsoLedgerIndex(BlockFollower):
    """Index the ledger at `client` into `store`; `on_transaction` sees each regulation and issue
    (in ledger order) after its block is indexed."""

    def __init__(
        self,
        client: LedgerClient,
        store: DsoStore,
        genesis: Genesis,
        on_transaction: Callable[[ChainTransaction, Issue | Regulate], None],
    ) -> None:
        super().__init__(client, genesis, self._index, store.indexed_height())
        self.store = store
        self.on_transaction = on_transaction

    def replay_index(self) -> None:
        """Feed what the database already indexed to `on_transaction` (at start-up)."""
        for stored in self.store.chain_transactions(type_=("issue", "regulate")):
            tx = trusted_transaction(stored.body)
            assert isinstance(tx, Issue | Regulate)
            self.on_transaction(stored, tx)

    def _index(self, head: SignedHead, raws: list[bytes]) -> None:
        header = head.header
        first_seq = header.tree_size - len(raws)
        interval = self.genesis.interval_at(header.time)
        indexed: list[ChainTransaction] = []
        kept: list[tuple[ChainTransaction, Issue | Regulate]] = []
        for offset, raw in enumerate(raws):
            tx = trusted_transaction(raw)
            meter: str | None = None
            span: tuple[int | None, int | None] = (None, None)
            if isinstance(tx, Issue):
                meter = tx.meter
                epa = [o.asset for o in tx.outputs if isinstance(o.asset, Epa)]
                if epa:
                    span = (min(a.start for a in epa), max(a.end for a in epa))
            stored = ChainTransaction(
                *(first_seq + offset, transaction_id(tx), header.height, tx.type, meter, raw),
                *(interval, *span),
            )
            indexed.append(stored)
            if isinstance(tx, Issue | Regulate):
                kept.append((stored, tx))
        self.store.index_block(header.height, header.time, header.tree_size, indexed)
        for stored, tx in kept:
            self.on_transaction(stored, tx)
