"""Orders coming in: the challenges an order signs, an order's checks against the ledger and
the store's own state (spent, held in a trade, too many per owner), posting it to the book,
its public view, and a direct take of an open order (`bidstore/orders.py` holds the pure
checks)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
from typing import Any

from bidstore.book import Book, BookEntry, trade_terms
from bidstore.errors import BidStoreError, decode_body, refusal, where
from bidstore.following import LedgerIndex, SpentOutpoints
from bidstore.limits import Intervals, Limits
from bidstore.orders import (
    Challenges,
    ChallengesFull,
    Decoded,
    Listing,
    OrderRefused,
    OrderSide,
    check_order,
    decode_order,
)
from bidstore.trades import Trade, Trading


class ChallengeDesk:
    """Fresh challenges, each redeemed once within its `challenge_ttl_s` (`limits`)."""

    def __init__(self, challenges: Challenges, lock: threading.RLock, limits: Limits) -> None:
        self.challenges = challenges
        self.lock = lock
        self.limits = limits

    def issue(self, count: int = 1) -> dict[str, Any]:
        """`count` fresh challenges: `challenge` the first, `challenges` all of them."""
        values = [self.challenges.issue().hex() for _ in range(count)]  # no state: no lock
        return {
            "challenge": values[0],
            "challenges": values,
            "expires_in_s": self.limits.challenge_ttl_s,
        }

    def redeem(self, challenge: bytes) -> bool:
        """True once for a challenge this store issued and not yet redeemed; 503 `busy` while
        the store holds as many redeemed ones as it can."""
        with self.lock:
            try:
                return self.challenges.redeem(challenge)
            except ChallengesFull as full:
                raise BidStoreError(
                    503,
                    "busy",
                    f"the store holds as many used challenges as it can; retry in "
                    f"{math.ceil(full.wait_s)} s",
                    full.wait_s,
                ) from None


class Intake:
    """Orders into `book`, checked against `index` and what `trading` holds."""

    def __init__(
        self,
        book: Book,
        index: LedgerIndex,
        spent: SpentOutpoints,
        trading: Trading,
        desk: ChallengeDesk,
        intervals: Intervals,
        lock: threading.RLock,
        limits: Limits,
    ) -> None:
        self.book = book
        self.index = index
        self.spent = spent
        self.trading = trading
        self.desk = desk
        self.intervals = intervals
        self.lock = lock
        self.limits = limits

    @staticmethod
    def decode(raw: bytes) -> Decoded:
        """The order in `raw` and its id, its shape and signature checked; BidStoreError if
        not. Pure."""
        order = decode_body("order", decode_order, raw)
        return Decoded(order, hashlib.sha256(raw).digest())

    def checked(self, raw: bytes | Decoded) -> Listing:
        """The listing of the order in `raw` (or already decoded), checked against the ledger;
        BidStoreError if not."""
        decoded = self.decode(raw) if isinstance(raw, bytes) else raw
        order = decoded.order
        try:
            listing = check_order(
                order,
                self.index.lookup,
                interval_s=self.intervals.genesis.interval_s,
                now_interval=self.intervals.now_interval(),
                challenge_ok=self.desk.redeem,
                known_id=decoded.order_id,
            )
        except OrderRefused as exc:
            raise refusal(exc) from None
        with self.lock:
            for outpoint in order.assets:
                if outpoint in self.spent:  # spent in a block since the ledger was asked
                    raise BidStoreError(409, "spent", f"{where(outpoint)} is already spent")
                if outpoint in self.trading.held:
                    raise BidStoreError(
                        409, "in_trade", f"{where(outpoint)} is in a trade that is not finished"
                    )
        return listing

    def _check_owner_room(self, listing: Listing) -> None:
        """Refuse `listing` if its owner would hold more than `max_orders_per_owner` open
        orders and unfinished trades; the orders it replaces do not count."""
        owner, assets = listing.order.owner, set(listing.order.assets)
        kept = sum(
            1
            for other in self.book.owned_by(owner)
            if other.order_id != listing.order_id and not assets & set(other.order.assets)
        )
        if kept + self.trading.held_by_owner[owner] >= self.limits.max_orders_per_owner:
            raise BidStoreError(
                429,
                "too_many_orders",
                f"an address has at most {self.limits.max_orders_per_owner} open orders and "
                "unfinished trades",
            )

    def post_order(self, raw: bytes | Decoded) -> dict[str, Any]:
        """Open the order in `raw` (its canonical wire, or decoded by `decode`); what the book
        shows of it."""
        listing = self.checked(raw)
        with self.lock:
            self._check_owner_room(listing)
            gone = self.book.add(listing)
        return {
            **entry_wire(entry_of(listing)),
            "interval": listing.order.interval,
            "replaced": [x.order_id.hex() for x in gone],
        }

    def order(self, order_id: bytes) -> dict[str, Any]:
        """An order's public view: open in the book, or the ids of its trades."""
        with self.lock:
            listing = self.book.get(order_id)
            status = "open"
            trades = list(self.trading.trades_of_order.get(order_id, ()))
            chain = self.trading.chain_of.get(order_id)
            if listing is None and chain is not None:
                listing, status = chain.holding[order_id], "trading"
            elif listing is None and trades:
                listing, status = _listing_in(self.trading.trades[trades[-1]], order_id), "done"
        if listing is None:
            raise BidStoreError(404, "unknown_order", f"no order {order_id.hex()} is known")
        return {
            **entry_wire(entry_of(listing)),
            "interval": listing.order.interval,
            "status": status,
            "trades": [t.hex() for t in trades],
        }

    def take(self, resting_id: bytes, taker_raw: bytes, power_w: int | None) -> dict[str, Any]:
        """Trade the open order `resting_id` at its price against the taker's signed order."""
        taker = self.checked(taker_raw)
        with self.lock:
            try:
                match = self.book.take(resting_id, power_w)
            except OrderRefused as exc:
                raise refusal(exc) from None
            resting = self.book.get(resting_id)
            assert resting is not None  # take() found it, under the same lock
            if taker.order.side is resting.order.side:
                raise BidStoreError(
                    422, "terms_mismatch", f"a {resting.order.side} is taken by the other side"
                )
            is_ask = taker.order.side is OrderSide.ASK
            match = dataclasses.replace(
                match,
                ask_id=taker.order_id if is_ask else match.ask_id,
                bid_id=match.bid_id if is_ask else taker.order_id,
            )
            ask, bid = (taker, resting) if is_ask else (resting, taker)
            try:  # check the terms before anything changes
                trade_terms(match, ask, bid, self.intervals.genesis.interval_s)
            except OrderRefused as exc:
                raise refusal(exc) from None
            for outpoint in taker.order.assets:  # the taker's signed take supersedes its order
                self.book.remove_spending(outpoint)
            self._check_owner_room(taker)
            listings = {ask.order_id: ask, bid.order_id: bid}
            trade = self.trading.open_chain(
                (match,), listings, frozenset({resting_id}), proposer=taker.order.side
            )
            assert trade is not None  # its terms were checked above, under the same lock
        return self.trading.summary(trade)


def entry_of(listing: Listing) -> BookEntry:
    """An order as the book shows it."""
    order = listing.order
    return BookEntry(listing.order_id, order.side, listing.power_w, order.price, order.contact)


def entry_wire(entry: BookEntry) -> dict[str, Any]:
    """A book entry as the API shows it (`bidstore.schemas.EntryView`)."""
    return {
        "id": entry.order_id.hex(),
        "side": str(entry.side),
        "power": entry.power_w,
        "price": entry.price,
        "contact": entry.contact,
    }


def _listing_in(trade: Trade, order_id: bytes) -> Listing:
    return trade.ask if trade.ask.order_id == order_id else trade.bid
