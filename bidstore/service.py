"""The bid store's service (docs/bidstore-api.md): the pure core of `bidstore.orders` and
`bidstore.book` wired to the ledger node, a clock and a lock. No web framework here.

It keeps everything in memory: challenges, the book, trades. It follows the ledger's blocks
(`BlockFollower`) to close orders whose assets are spent and to see trades settle, and a
ticker calls `tick` to drop passed intervals, expire trades and clear each interval's call
auction at its gate.

A trade is one transfer between one ask and one bid. One party proposes the transfer, signed
for its own inputs: the taker of a take, the buyer of an auction's trade. The other fetches it
with a signed request, countersigns and submits it to the ledger itself. The store sees the
transfer in a block and marks the trade settled.

Orders leave the book when they are matched and are held in a `Chain`: the matches of one
clearing that share orders (one large ask against two bids, say), made into trades one after
another, each spending the change the previous trade left to the order they share. A take is a
chain of one match. When a chain ends, what its resting orders still hold (a partial fill) is
listed again under the same order id; a taker's order fills and is forgotten. When a chain
breaks (a trade failed: an asset went elsewhere), its orders that still hold their assets go
back to the book.

`BidStore` is a thin facade over the store's domains, which share the book, the lock and the
clock, passed explicitly:
- `bidstore/intake.py`: challenges, orders and their checks, takes;
- `bidstore/trades.py`: trades and chains, proposals, settlement, step timeouts and expiry;
- `bidstore/following.py`: the index of the ledger's unspent outputs and what a block closes;
- `bidstore/auctions.py`: the book's views and each interval's call auction;
- `bidstore/errors.py` and `bidstore/limits.py`: refusals, abuse control, the interval clock.

Two clocks: interval time is ledger time (`service.clock`, accelerated in a simulation), while
challenge lifetimes, step timeouts and request budgets are wall time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from assets import Genesis, chain_id
from bidstore.auctions import Auctions
from bidstore.book import Book
from bidstore.errors import BidStoreError, decode_body, refusal
from bidstore.following import LedgerIndex, SpentOutpoints
from bidstore.intake import ChallengeDesk, Intake
from bidstore.limits import Intervals, Limits
from bidstore.metrics import BidStoreMetrics
from bidstore.orders import Challenges, Decoded, Order, OrderSide
from bidstore.trades import Trade, TradeStatus, Trading, fetch_message, trade_id_of
from ledger import HeadWatch
from ledger.block_follower import BlockFollower
from ledger.blocks import SignedHead
from ledger.client import LedgerClient
from service.clock import next_boundary, wall_seconds_until
from service.clock import now as ledger_now
from service.metrics import new_registry

__all__ = [
    "BidStore",
    "BidStoreError",
    "Limits",
    "TradeStatus",
    "decode_body",
    "fetch_message",
    "refusal",
    "trade_id_of",
]


class BidStore:
    """The bid store over the ledger node at `ledger`, for the chain of `genesis`.

    `gate_s`: an interval's call auction clears this many (ledger) seconds before the interval
    starts. `clock` returns ledger Unix seconds (`service.clock`): intervals, gates, how long
    a finished trade is kept. `wall_clock` returns wall seconds: how long a challenge lives, a
    party's step of a trade, request budgets, which must not shrink on an accelerated clock.
    Call `start` to follow the ledger and `close` to stop.

    `ledger_watch` asks the ledger its head for readiness and the lag metric (by default
    through a client of its own); `registry` holds the store's metrics (`bidstore.metrics`).
    """

    def __init__(
        self,
        ledger: LedgerClient,
        genesis: Genesis,
        *,
        gate_s: float = 60.0,
        step_timeout_s: float = 60.0,
        limits: Limits | None = None,
        clock: Callable[[], float] = ledger_now,
        wall_clock: Callable[[], float] = time.time,
        ledger_watch: HeadWatch | None = None,
    ) -> None:
        self.ledger = ledger
        self.genesis = genesis
        self.chain = chain_id(genesis)
        self.gate_s = gate_s
        self.step_timeout_s = step_timeout_s
        self.limits = limits or Limits()
        self.clock, self.wall_clock = clock, wall_clock
        self.intervals = Intervals(genesis, clock)
        self.book = Book()
        self.challenges = Challenges(
            wall_clock, ttl_s=self.limits.challenge_ttl_s, capacity=self.limits.redeemable
        )
        lock = threading.RLock()
        spent = SpentOutpoints()
        self.desk = ChallengeDesk(self.challenges, lock, self.limits)
        self.trading = Trading(
            self.book,
            genesis,
            self.intervals,
            lock,
            spent,
            self.desk.redeem,
            step_timeout_s=step_timeout_s,
            max_trades=self.limits.max_trades,
            wall_clock=wall_clock,
        )
        self.index = LedgerIndex(ledger, lock, self.book, self.trading, spent)
        self.intake = Intake(
            self.book, self.index, spent, self.trading, self.desk, self.intervals, lock, self.limits
        )
        self.auctions = Auctions(self.book, self.trading, self.intervals, lock, gate_s)
        self._lock = lock
        self.follower: BlockFollower | None = None
        if ledger_watch is None:
            ledger_watch = HeadWatch.of_node(ledger.base_url)
        self.ledger_watch = ledger_watch
        self.registry = new_registry()
        self.metrics = BidStoreMetrics(
            self.registry,
            open_orders=self.open_by_side,
            trades_entered=self.trades_entered,
            indexed=self.indexed_height,
            watch=ledger_watch,
        )

    @property
    def trades(self) -> dict[bytes, Trade]:
        """Every trade the store holds, by id (guarded by the store's lock)."""
        return self.trading.trades

    # ------------------------------------------------------------ running

    def start(self) -> None:
        """Follow the ledger's blocks from the first: their unspent outputs are the index
        orders are checked against, and their transfers close orders and trades."""
        self.follower = BlockFollower(
            self.ledger, self.genesis, self.on_block, name="bidstore-follower", stream=True
        )
        self.follower.start()
        self.ledger_watch.start()

    def close(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        self.ledger_watch.stop()

    # ------------------------------------------------------------ health and metrics

    def ledger_problem(self) -> str | None:
        """None while the store follows the ledger, heard lately and caught up (within
        `ledger.head_watch.MAX_LAG_BLOCKS` of its head), else one sentence: the readiness
        check."""
        follower = self.follower
        if follower is None:
            return "the store does not follow the ledger yet"
        if follower.problem is not None:
            return f"the store stopped following the ledger: {follower.problem}"
        if follower.last_error is not None:
            return f"the store cannot follow the ledger: {follower.last_error}"
        return self.ledger_watch.problem(follower.height)

    def indexed_height(self) -> int | None:
        """The last block the store followed; None before it follows the ledger."""
        return None if self.follower is None else self.follower.height

    def open_by_side(self) -> dict[OrderSide, int]:
        """How many open orders the book holds on each side."""
        counts = dict.fromkeys(OrderSide, 0)
        with self._lock:
            for interval in self.book.intervals():
                for entry in self.book.view(interval):
                    counts[entry.side] += 1
        return counts

    def trades_entered(self) -> dict[TradeStatus, int]:
        """How many trades entered each status since the store started."""
        with self._lock:
            return dict(self.trading.entered)

    def now_interval(self) -> int:
        """The interval the clock is in."""
        return self.intervals.now_interval()

    def interval_start(self, interval: int) -> int:
        """Unix seconds interval `interval` starts at."""
        return self.intervals.interval_start(interval)

    def seconds_to_due(self) -> float:
        """Wall seconds until the next interval starts or the next call auction's gate comes,
        whichever is sooner: when `tick` has work to do besides expiring steps."""
        now, epoch, interval_s = self.clock(), self.genesis.epoch, self.genesis.interval_s
        due = min(
            next_boundary(now, epoch, interval_s),
            next_boundary(now, epoch - self.gate_s, interval_s),
        )
        return wall_seconds_until(due, self.clock)

    def on_block(self, head: SignedHead, raws: list[bytes]) -> None:
        """Close what the block's transfers spend: orders, and trades (settled or failed)."""
        self.index.on_block(head, raws)

    def tick(self) -> None:
        """Drop passed intervals, expire and forget trades, clear auctions at their gate."""
        now = self.clock()
        current = self.now_interval()
        with self._lock:
            self.book.drop_passed(current)
            self.trading.expire(now, current)
            due = self.auctions.due(now, current)
        for interval in due:
            self.auctions.clear(interval)

    def status(self) -> dict[str, Any]:
        with self._lock:
            orders = len(self.book)
            trades = self.trading.unfinished()
        follower = self.follower
        return {
            "chain": self.chain.hex(),
            "interval": self.now_interval(),
            "interval_s": self.genesis.interval_s,
            "epoch": self.genesis.epoch,
            "currency": self.genesis.currency,
            "gate_s": self.gate_s,
            "open_orders": orders,
            "open_trades": trades,
            "height": 0 if follower is None else follower.height,
        }

    # ------------------------------------------------------------ orders

    def challenge(self, count: int = 1) -> dict[str, Any]:
        """`count` fresh challenges: `challenge` the first, `challenges` all of them."""
        return self.desk.issue(count)

    @staticmethod
    def decode(raw: bytes) -> Decoded:
        """The order in `raw` and its id, its shape and signature checked; BidStoreError if
        not. Pure."""
        return Intake.decode(raw)

    def indexed(self, order: Order) -> bool:
        """True if every asset of `order` is in the store's index: checking it will not ask
        the ledger, so it need not leave the event loop."""
        return self.index.indexed(order)

    def post_order(self, raw: bytes | Decoded) -> dict[str, Any]:
        return self.intake.post_order(raw)

    def order(self, order_id: bytes) -> dict[str, Any]:
        return self.intake.order(order_id)

    def take(self, resting_id: bytes, taker_raw: bytes, power_w: int | None) -> dict[str, Any]:
        return self.intake.take(resting_id, taker_raw, power_w)

    # ------------------------------------------------------------ the book and auctions

    def open_orders(self) -> dict[str, Any]:
        return self.auctions.open_orders()

    def interval_book(self, interval: int) -> dict[str, Any]:
        return self.auctions.interval_book(interval)

    def auction(self, interval: int) -> dict[str, Any]:
        return self.auctions.auction(interval)

    def clear(self, interval: int) -> dict[str, Any]:
        return self.auctions.clear(interval)

    # ------------------------------------------------------------ trades

    def propose(self, trade_id: bytes, raw: bytes) -> dict[str, Any]:
        return self.trading.propose(trade_id, raw)

    def fetch(
        self, trade_id: bytes, address: bytes, challenge: bytes, signature: bytes
    ) -> dict[str, Any]:
        return self.trading.fetch(trade_id, address, challenge, signature)
