"""The book as the public reads it, and each interval's uniform-price call auction: how it
would clear now, clearing it into chains of trades, and which intervals are due at their gate
(`bidstore/book.py` holds the pure book and auction)."""

from __future__ import annotations

import threading
from typing import Any

from bidstore.book import Book, Match
from bidstore.intake import entry_wire
from bidstore.limits import Intervals
from bidstore.orders import OrderSide
from bidstore.trades import Trading, chains_of


class Auctions:
    """The call auctions of `book`; their trades are made by `trading`. An interval clears
    `gate_s` seconds before it starts."""

    def __init__(
        self,
        book: Book,
        trading: Trading,
        intervals: Intervals,
        lock: threading.RLock,
        gate_s: float,
    ) -> None:
        self.book = book
        self.trading = trading
        self.intervals = intervals
        self.lock = lock
        self.gate_s = gate_s
        self.cleared: set[int] = set()

    def open_orders(self) -> dict[str, Any]:
        """Every open order, as the DSO's forecast reads it (dso/book.py)."""
        with self.lock:
            orders = [
                {**entry_wire(entry), "interval": t, "start": t, "end": t}
                for t in self.book.intervals()
                for entry in self.book.view(t)
            ]
        return {"orders": orders}

    def interval_book(self, interval: int) -> dict[str, Any]:
        """An interval's asks and bids in priority order."""
        with self.lock:
            entries = self.book.view(interval)
        return {
            "interval": interval,
            "asks": [entry_wire(e) for e in entries if e.side is OrderSide.ASK],
            "bids": [entry_wire(e) for e in entries if e.side is OrderSide.BID],
        }

    def auction(self, interval: int) -> dict[str, Any]:
        """How interval `interval` would clear now; nothing changes."""
        with self.lock:
            clearing = self.book.call_auction(interval)
        return {
            "interval": interval,
            "price": clearing.price,
            "volume": clearing.volume_w,
            "matches": [_match_wire(m) for m in clearing.matches],
        }

    def clear(self, interval: int) -> dict[str, Any]:
        """Clear `interval`'s call auction now. Matches that share an order form a chain whose
        first trade is made now and the next ones as each settles (docs/bidstore-api.md)."""
        with self.lock:
            clearing = self.book.call_auction(interval)
            made = []
            for matches in chains_of(clearing.matches):
                ids = {i for m in matches for i in (m.ask_id, m.bid_id) if i is not None}
                listings = {i: listing for i in ids if (listing := self.book.get(i)) is not None}
                trade = self.trading.open_chain(matches, listings, relist=frozenset(ids))
                if trade is not None:
                    made.append(trade)
            self.cleared.add(interval)
        return {
            "interval": interval,
            "price": clearing.price,
            "trades": [self.trading.summary(t) for t in made],
        }

    def due(self, now: float, current: int) -> list[int]:
        """The intervals at their gate by Unix time `now` and not cleared yet; forgets the
        clearings of intervals up to `current`. Under the lock."""
        due = [
            t
            for t in self.book.intervals()
            if t not in self.cleared and self.intervals.interval_start(t) - now <= self.gate_s
        ]
        self.cleared = {t for t in self.cleared if t > current}
        return due


def _match_wire(match: Match) -> dict[str, Any]:
    return {
        "ask": None if match.ask_id is None else match.ask_id.hex(),
        "bid": None if match.bid_id is None else match.bid_id.hex(),
        "power": match.power_w,
        "price": match.price,
    }
