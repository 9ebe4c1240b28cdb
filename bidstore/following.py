"""What the bid store knows of the ledger from following its blocks: the unspent outputs of
every block indexed (an order's check reads them here, and asks the ledger only for an outpoint
the index does not have: newer, or spent), the outpoints seen spent lately, and what each
block's transfers close: open orders in the book, and trades (settled or failed)."""

from __future__ import annotations

import threading
from collections import OrderedDict

from assets import Rejected
from assets.codec import asset_from_wire, trusted_transaction, txid
from assets.model import Outpoint, Output, Regulate, Transfer
from bidstore.book import Book
from bidstore.errors import BidStoreError
from bidstore.orders import Order
from bidstore.trades import Trading
from ledger.blocks import SignedHead
from ledger.client import LedgerClient, LedgerClientError

SPENT_MEMORY = 100_000  # outpoints the follower saw spent, remembered against a late order


class SpentOutpoints:
    """The last `SPENT_MEMORY` outpoints the follower saw spent, oldest forgotten first."""

    def __init__(self) -> None:
        self._seen: OrderedDict[Outpoint, None] = OrderedDict()

    def __contains__(self, outpoint: object) -> bool:
        return outpoint in self._seen

    def add(self, outpoint: Outpoint) -> None:
        self._seen[outpoint] = None

    def trim(self) -> None:
        while len(self._seen) > SPENT_MEMORY:
            self._seen.popitem(last=False)


class LedgerIndex:
    """The ledger's outputs as the block follower showed them, over `ledger` for the rest;
    `on_block` closes what a block spends in `book` and `trading`. Under `lock`."""

    def __init__(
        self,
        ledger: LedgerClient,
        lock: threading.RLock,
        book: Book,
        trading: Trading,
        spent: SpentOutpoints,
    ) -> None:
        self.ledger = ledger
        self.lock = lock
        self.book = book
        self.trading = trading
        self.spent = spent
        self.unspent: dict[Outpoint, Output] = {}

    def lookup(self, outpoint: Outpoint) -> tuple[Output, bool] | None:
        """The output at `outpoint` and whether it is spent; None if the ledger has none.
        From the index, else from the ledger (503 `ledger_unavailable` if it cannot say)."""
        with self.lock:
            indexed = self.unspent.get(outpoint)
        if indexed is not None:
            return indexed, False
        try:
            found = self.ledger.output(outpoint.txid, outpoint.index)
        except LedgerClientError as exc:
            raise BidStoreError(
                503, "ledger_unavailable", f"cannot ask the ledger: {exc}"
            ) from None
        if found is None:
            return None
        try:
            output = Output(asset_from_wire(found["asset"]), bytes.fromhex(found["address"]))
        except (Rejected, KeyError, TypeError, ValueError):
            raise BidStoreError(
                503, "ledger_unavailable", "the ledger answered an output this store cannot read"
            ) from None
        return output, found.get("spent_by") is not None

    def indexed(self, order: Order) -> bool:
        """True if every asset of `order` is in the index: checking it will not ask the
        ledger, so it need not leave the event loop."""
        with self.lock:
            return all(outpoint in self.unspent for outpoint in order.assets)

    def on_block(self, _: SignedHead, raws: list[bytes]) -> None:
        """Close what the block's transfers spend: orders, and trades (settled or failed)."""
        with self.lock:
            for raw in raws:
                tx = trusted_transaction(raw)
                if isinstance(tx, Regulate):
                    continue
                tx_id = txid(tx)
                for index, output in enumerate(tx.outputs):
                    self.unspent[Outpoint(tx_id, index)] = output
                if not isinstance(tx, Transfer):
                    continue
                for outpoint in tx.inputs:
                    self.unspent.pop(outpoint, None)
                    self.spent.add(outpoint)
                    self.book.remove_spending(outpoint)
                    order_id = self.trading.held.get(outpoint)
                    if order_id is not None:
                        self.trading.spent_held(order_id, tx, tx_id)
            self.spent.trim()
