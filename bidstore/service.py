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
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from assets import Genesis, Rejected, chain_id, decode_transaction, signing_message, verify
from assets.canonical import canonical_json
from assets.codec import (
    asset_from_wire,
    output_to_wire,
    trusted_transaction,
    tx_to_wire,
    txid,
)
from assets.model import Outpoint, Output, Regulate, Transfer
from bidstore.book import (
    Book,
    BookEntry,
    Match,
    Terms,
    check_proposal,
    leftovers,
    trade_terms,
)
from bidstore.orders import (
    Challenges,
    ChallengesFull,
    Listing,
    Order,
    OrderRefused,
    OrderSide,
    check_order,
    decode_order,
    payment,
)
from ledger.blocks import SignedHead
from ledger.client import LedgerClient, LedgerClientError
from ledger.follow import BlockFollower

log = logging.getLogger("petra.bidstore")

FETCH_TYPE = "bidstore-fetch"  # the signing domain of an authenticated trade fetch
KEEP_TRADES_S = 600.0  # a finished trade stays readable this long after its interval ends
SPENT_MEMORY = 100_000  # outpoints the follower saw spent, remembered against a late order

Value = TypeVar("Value")


class BidStoreError(Exception):
    """A refusal with an HTTP status, a stable code and one sentence; `retry_after_s` (the
    Retry-After header) when coming back later will do."""

    def __init__(
        self, status: int, code: str, message: str, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.retry_after_s = retry_after_s


# The HTTP status of each refusal code of the pure core.
_STATUS = {
    "malformed": 400,
    "bad_power": 400,
    "bad_signature": 401,
    "bad_challenge": 401,
    "not_owner": 403,
    "unknown_order": 404,
    "unknown_asset": 409,
    "spent": 409,
    "wrong_asset": 422,
    "underfunded": 422,
    "interval_passed": 422,
    "terms_mismatch": 422,
}


def refusal(exc: OrderRefused) -> BidStoreError:
    return BidStoreError(_STATUS.get(exc.code, 400), exc.code, exc.message)


def decode_body(what: str, decode: Callable[[bytes], Value], raw: bytes) -> Value:
    """`decode(raw)` of a body an outsider sent (`what`: "order", "take", "transfer"). Any
    failure is a refusal, 400 `malformed` unless the decoder said otherwise: a gap in a decoder
    (a lone surrogate, nesting deeper than the stack) must never answer 500. Such a gap is
    logged in one line, without a traceback."""
    try:
        return decode(raw)
    except BidStoreError:
        raise
    except OrderRefused as exc:
        raise refusal(exc) from None
    except Rejected as exc:
        raise BidStoreError(400, "malformed", exc.message) from None
    except Exception as exc:
        log.warning("refused a %s the decoders let through: %s", what, type(exc).__name__)
        raise BidStoreError(400, "malformed", _unreadable(what, exc)) from None


def _unreadable(what: str, exc: Exception) -> str:
    if isinstance(exc, UnicodeError):
        return f"the {what} holds a lone surrogate (a \\ud800-\\udfff escape alone): not text"
    if isinstance(exc, RecursionError):
        return f"the {what} is nested too deep"
    return f"the {what} is not one this store can read ({type(exc).__name__})"


class TradeStatus(StrEnum):
    OPEN = "open"  # made, waiting for the buyer's proposal
    PROPOSED = "proposed"  # the buyer's partly signed transfer waits for the seller
    SETTLED = "settled"  # the transfer is on the ledger
    FAILED = "failed"  # an asset of the trade was spent by another transfer
    EXPIRED = "expired"  # the interval began before the trade settled
    ABANDONED = "abandoned"  # the party whose turn it was let `step_timeout_s` pass


@dataclass(frozen=True, slots=True)
class Limits:
    """Abuse control. Times in seconds. Request budgets (`bidstore.budget`): `requests_per_s`
    and `burst` per TCP connection (each Tor stream is one), `address_*` per client address
    other than loopback, `service_*` for all requests; `max_in_flight` handled at once.
    Challenges live `challenge_ttl_s`; `redeemable` is how many can be redeemed in that time."""

    max_orders_per_owner: int = 16
    requests_per_s: float = 20.0
    burst: int = 100
    address_requests_per_s: float = 50.0
    address_burst: int = 200
    service_requests_per_s: float = 2000.0
    service_burst: int = 4000
    max_in_flight: int = 256
    challenge_ttl_s: float = 300.0
    max_trades: int = 100_000

    @property
    def redeemable(self) -> int:
        """The most challenges redeemed within one `challenge_ttl_s`: each costs a request
        (an order, a take or a trade fetch), so no more than the service budget allows."""
        return math.ceil(self.service_requests_per_s * self.challenge_ttl_s) + self.service_burst


@dataclass(slots=True, eq=False)
class Chain:
    """Matches that share orders, made into trades one after another (see the module doc).

    `holding` maps each order the chain still holds out of the book to what it holds now (its
    change after the trades so far); `relist` names the orders whose rest goes back to the book
    when the chain ends; `proposer` the side that proposes each transfer (a take's taker, an
    auction's buyers); `trade` is the unfinished trade of `matches[step]`.
    """

    matches: tuple[Match, ...]
    holding: dict[bytes, Listing]
    relist: frozenset[bytes]
    proposer: OrderSide = OrderSide.BID
    step: int = 0
    trade: Trade | None = None


@dataclass(slots=True)
class Trade:
    """A match between two orders and the transfer that settles it."""

    trade_id: bytes
    ask: Listing
    bid: Listing
    terms: Terms
    chain: Chain = field(repr=False)
    status: TradeStatus = TradeStatus.OPEN
    proposal: bytes | None = None  # canonical transfer bytes, signed by the proposer
    since: float = 0.0  # when the current party's turn began (made, or first proposed)
    txid: bytes | None = None  # the proposal's id, and the settling transfer's once settled
    parties: tuple[bytes, bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.parties = (self.ask.order.owner, self.bid.order.owner)

    @property
    def proposer(self) -> Listing:
        """The order whose owner proposes the transfer; the other countersigns and submits."""
        return self.ask if self.chain.proposer is OrderSide.ASK else self.bid

    @property
    def countersigner(self) -> Listing:
        return self.bid if self.chain.proposer is OrderSide.ASK else self.ask


def trade_id_of(ask_id: bytes, bid_id: bytes, power_w: int, price: int) -> bytes:
    """SHA-256 of the canonical JSON {"ask", "bid", "power", "price"}, ids as hex."""
    wire = {"ask": ask_id.hex(), "bid": bid_id.hex(), "power": power_w, "price": price}
    return hashlib.sha256(canonical_json(wire)).digest()


def fetch_message(trade_id: bytes, challenge: bytes) -> bytes:
    """The bytes a party signs to read a trade: the domain and SHA-256(trade id || challenge)."""
    return signing_message(FETCH_TYPE, hashlib.sha256(trade_id + challenge).digest())


class BidStore:
    """The bid store over the ledger node at `ledger`, for the chain of `genesis`.

    `gate_s`: an interval's call auction clears this many seconds before the interval starts.
    `clock` returns Unix seconds. Call `start` to follow the ledger and `close` to stop.
    """

    def __init__(
        self,
        ledger: LedgerClient,
        genesis: Genesis,
        *,
        gate_s: float = 60.0,
        step_timeout_s: float = 60.0,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.genesis = genesis
        self.chain = chain_id(genesis)
        self.gate_s = gate_s
        self.step_timeout_s = step_timeout_s
        self.limits = limits or Limits()
        self.clock = clock
        self.book = Book()
        self.challenges = Challenges(
            clock, ttl_s=self.limits.challenge_ttl_s, capacity=self.limits.redeemable
        )
        self.trades: dict[bytes, Trade] = {}
        # Orders out of the book in an unfinished chain: what each holds, whose outpoints they
        # are and how many each owner has.
        self._chain_of: dict[bytes, Chain] = {}  # order id -> its chain
        self._held: dict[Outpoint, bytes] = {}  # outpoint -> id of the held order spending it
        self._held_by_owner: Counter[bytes] = Counter()
        self._trades_of_order: dict[bytes, list[bytes]] = {}
        self._spent: OrderedDict[Outpoint, None] = OrderedDict()
        # The unspent outputs of every block indexed: an order's check reads them here, and
        # asks the ledger only for an outpoint the index does not have (newer, or spent).
        self._unspent: dict[Outpoint, Output] = {}
        self._cleared: set[int] = set()
        self._lock = threading.RLock()
        self.follower: BlockFollower | None = None

    # ------------------------------------------------------------ running

    def start(self) -> None:
        """Follow the ledger's blocks from the first: their unspent outputs are the index
        orders are checked against, and their transfers close orders and trades."""
        self.follower = BlockFollower(
            self.ledger, self.genesis, self.on_block, name="bidstore-follower", stream=True
        )
        self.follower.start()

    def close(self) -> None:
        if self.follower is not None:
            self.follower.stop()

    def now_interval(self) -> int:
        """The interval the clock is in."""
        return int(self.clock() - self.genesis.epoch) // self.genesis.interval_s

    def interval_start(self, interval: int) -> int:
        """Unix seconds interval `interval` starts at."""
        return self.genesis.epoch + interval * self.genesis.interval_s

    # ------------------------------------------------------------ orders

    def challenge(self, count: int = 1) -> dict[str, Any]:
        """`count` fresh challenges: `challenge` the first, `challenges` all of them."""
        values = [self.challenges.issue().hex() for _ in range(count)]  # no state: no lock
        return {
            "challenge": values[0],
            "challenges": values,
            "expires_in_s": self.limits.challenge_ttl_s,
        }

    def _lookup(self, outpoint: Outpoint) -> tuple[Output, bool] | None:
        with self._lock:
            indexed = self._unspent.get(outpoint)
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

    def _redeem(self, challenge: bytes) -> bool:
        with self._lock:
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

    @staticmethod
    def decode(raw: bytes) -> Order:
        """The order in `raw`, its shape and signature checked; BidStoreError if not. Pure."""
        return decode_body("order", decode_order, raw)

    def indexed(self, order: Order) -> bool:
        """True if every asset of `order` is in the store's index: checking it will not ask
        the ledger, so it need not leave the event loop."""
        with self._lock:
            return all(outpoint in self._unspent for outpoint in order.assets)

    def _checked(self, raw: bytes | Order) -> Listing:
        """The listing of the order in `raw` (or already decoded), checked against the ledger;
        BidStoreError if not."""
        order = self.decode(raw) if isinstance(raw, bytes) else raw
        try:
            listing = check_order(
                order,
                self._lookup,
                interval_s=self.genesis.interval_s,
                now_interval=self.now_interval(),
                challenge_ok=self._redeem,
            )
        except OrderRefused as exc:
            raise refusal(exc) from None
        with self._lock:
            for outpoint in order.assets:
                if outpoint in self._spent:  # spent in a block since the ledger was asked
                    raise BidStoreError(409, "spent", f"{_where(outpoint)} is already spent")
                if outpoint in self._held:
                    raise BidStoreError(
                        409, "in_trade", f"{_where(outpoint)} is in a trade that is not finished"
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
        if kept + self._held_by_owner[owner] >= self.limits.max_orders_per_owner:
            raise BidStoreError(
                429,
                "too_many_orders",
                f"an address has at most {self.limits.max_orders_per_owner} open orders and "
                "unfinished trades",
            )

    def post_order(self, raw: bytes | Order) -> dict[str, Any]:
        """Open the order in `raw` (its canonical wire, or decoded by `decode`); what the book
        shows of it."""
        listing = self._checked(raw)
        with self._lock:
            self._check_owner_room(listing)
            gone = self.book.add(listing)
        return {
            **_entry_wire(_entry(listing)),
            "interval": listing.order.interval,
            "replaced": [x.order_id.hex() for x in gone],
        }

    def order(self, order_id: bytes) -> dict[str, Any]:
        """An order's public view: open in the book, or the ids of its trades."""
        with self._lock:
            listing = self.book.get(order_id)
            status = "open"
            trades = list(self._trades_of_order.get(order_id, ()))
            chain = self._chain_of.get(order_id)
            if listing is None and chain is not None:
                listing, status = chain.holding[order_id], "trading"
            elif listing is None and trades:
                listing, status = _listing_in(self.trades[trades[-1]], order_id), "done"
        if listing is None:
            raise BidStoreError(404, "unknown_order", f"no order {order_id.hex()} is known")
        return {
            **_entry_wire(_entry(listing)),
            "interval": listing.order.interval,
            "status": status,
            "trades": [t.hex() for t in trades],
        }

    # ------------------------------------------------------------ the book

    def open_orders(self) -> dict[str, Any]:
        """Every open order, as the DSO's forecast reads it (dso/book.py)."""
        with self._lock:
            orders = [
                {**_entry_wire(entry), "interval": t, "start": t, "end": t}
                for t in self.book.intervals()
                for entry in self.book.view(t)
            ]
        return {"orders": orders}

    def interval_book(self, interval: int) -> dict[str, Any]:
        with self._lock:
            entries = self.book.view(interval)
        return {
            "interval": interval,
            "asks": [_entry_wire(e) for e in entries if e.side is OrderSide.ASK],
            "bids": [_entry_wire(e) for e in entries if e.side is OrderSide.BID],
        }

    def auction(self, interval: int) -> dict[str, Any]:
        """How interval `interval` would clear now; nothing changes."""
        with self._lock:
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
        with self._lock:
            clearing = self.book.call_auction(interval)
            made = []
            for matches in _chains(clearing.matches):
                ids = {i for m in matches for i in (m.ask_id, m.bid_id) if i is not None}
                listings = {i: listing for i in ids if (listing := self.book.get(i)) is not None}
                trade = self._open_chain(matches, listings, relist=frozenset(ids))
                if trade is not None:
                    made.append(trade)
            self._cleared.add(interval)
        return {
            "interval": interval,
            "price": clearing.price,
            "trades": [self._trade_summary(t) for t in made],
        }

    def take(self, resting_id: bytes, taker_raw: bytes, power_w: int | None) -> dict[str, Any]:
        """Trade the open order `resting_id` at its price against the taker's signed order."""
        taker = self._checked(taker_raw)
        with self._lock:
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
                trade_terms(match, ask, bid, self.genesis.interval_s)
            except OrderRefused as exc:
                raise refusal(exc) from None
            for outpoint in taker.order.assets:  # the taker's signed take supersedes its order
                self.book.remove_spending(outpoint)
            self._check_owner_room(taker)
            listings = {ask.order_id: ask, bid.order_id: bid}
            trade = self._open_chain(
                (match,), listings, frozenset({resting_id}), proposer=taker.order.side
            )
            assert trade is not None  # its terms were checked above, under the same lock
        return self._trade_summary(trade)

    def _open_chain(
        self,
        matches: tuple[Match, ...],
        listings: dict[bytes, Listing],
        relist: frozenset[bytes],
        proposer: OrderSide = OrderSide.BID,
    ) -> Trade | None:
        """Hold `listings` (the orders of `matches`) out of the book in a new chain and make
        its first trade; None if no trade could be made (the orders are back in the book)."""
        if len(self.trades) >= self.limits.max_trades:
            raise BidStoreError(
                503, "busy", "the store holds as many trades as it can; retry in a minute", 60
            )
        chain = Chain(matches, {}, relist, proposer)
        for order_id, listing in listings.items():
            self.book.remove(order_id)
            self._hold(chain, listing)
        return self._next_trade(chain)

    def _next_trade(self, chain: Chain) -> Trade | None:
        """Make the trade of `chain.matches[chain.step]` from what its orders hold now, or end
        the chain if there is none (it was the last, or an order of it is gone)."""
        chain.trade = None
        if chain.step < len(chain.matches):
            match = chain.matches[chain.step]
            ask = chain.holding.get(match.ask_id) if match.ask_id else None
            bid = chain.holding.get(match.bid_id) if match.bid_id else None
            if ask is not None and bid is not None:
                try:
                    terms = trade_terms(match, ask, bid, self.genesis.interval_s)
                except OrderRefused as exc:  # a bid's change short of a rounding unit
                    log.info("a chained match is dropped: %s", exc.message)
                else:
                    chain.trade = self._record_trade(match, ask, bid, terms, chain)
                    return chain.trade
        self._end_chain(chain)
        return None

    def _record_trade(
        self, match: Match, ask: Listing, bid: Listing, terms: Terms, chain: Chain
    ) -> Trade:
        trade_id = trade_id_of(ask.order_id, bid.order_id, match.power_w, match.price)
        trade = Trade(trade_id, ask, bid, terms, chain, since=self.clock())
        self.trades[trade_id] = trade
        for order_id in (ask.order_id, bid.order_id):
            self._trades_of_order.setdefault(order_id, []).append(trade_id)
        return trade

    def _hold(self, chain: Chain, listing: Listing) -> None:
        order_id = listing.order_id
        if order_id not in chain.holding:
            self._held_by_owner[listing.order.owner] += 1
        else:
            self._unguard(chain.holding[order_id])
        chain.holding[order_id] = listing
        self._chain_of[order_id] = chain
        for outpoint in listing.order.assets:
            self._held[outpoint] = order_id

    def _unguard(self, listing: Listing) -> None:
        for outpoint in listing.order.assets:
            if self._held.get(outpoint) == listing.order_id:
                del self._held[outpoint]

    def _let_go(self, chain: Chain, order_id: bytes) -> Listing | None:
        """Stop holding `order_id` in `chain`; what it held, or None."""
        listing = chain.holding.pop(order_id, None)
        if listing is None:
            return None
        self._unguard(listing)
        if self._chain_of.get(order_id) is chain:
            del self._chain_of[order_id]
        owner = listing.order.owner
        self._held_by_owner[owner] -= 1
        if self._held_by_owner[owner] <= 0:
            del self._held_by_owner[owner]
        return listing

    def _end_chain(self, chain: Chain) -> None:
        """Let go of every order `chain` holds; list again those of `chain.relist` that still
        hold unspent assets in an interval not begun (a bid only if its funds still cover its
        power at its price)."""
        current = self.now_interval()
        for order_id in list(chain.holding):
            listing = self._let_go(chain, order_id)
            assert listing is not None
            order = listing.order
            if (
                order_id in chain.relist
                and order.interval > current
                and not any(o in self._spent for o in order.assets)
                and (
                    order.side is OrderSide.ASK
                    or listing.funds
                    >= payment(listing.power_w, self.genesis.interval_s, order.price)
                )
            ):
                self.book.add(listing)

    # ------------------------------------------------------------ trades

    def _trade(self, trade_id: bytes) -> Trade:
        trade = self.trades.get(trade_id)
        if trade is None:
            raise BidStoreError(404, "unknown_trade", f"no trade {trade_id.hex()} is known")
        return trade

    def _trade_summary(self, trade: Trade) -> dict[str, Any]:
        """What either party, or the taker, may see: the trade without the proposal."""
        terms = trade.terms
        return {
            "id": trade.trade_id.hex(),
            "status": str(trade.status),
            "interval": terms.interval,
            "ask": trade.ask.order_id.hex(),
            "bid": trade.bid.order_id.hex(),
            "power": terms.power_w,
            "price": terms.price,
            "payment": terms.payment,
            "terms": {
                "inputs": [{"tx": o.txid.hex(), "index": o.index} for o in terms.inputs],
                "paid": [output_to_wire(o) for o in terms.paid],
                "change": [output_to_wire(o) for o in terms.change],
                "transfer": tx_to_wire(terms.transfer(self.chain)),
            },
            "proposer": _role(trade.proposer),
            "txid": None if trade.txid is None else trade.txid.hex(),
        }

    def propose(self, trade_id: bytes, raw: bytes) -> dict[str, Any]:
        """Take the buyer's partly signed transfer for `trade_id` to relay to the seller."""
        decoded = decode_body("transfer", decode_transaction, raw)
        tx = decoded.tx
        with self._lock:
            trade = self._trade(trade_id)
            if trade.status not in (TradeStatus.OPEN, TradeStatus.PROPOSED):
                raise BidStoreError(409, "trade_closed", f"the trade is {trade.status}")
            if not isinstance(tx, Transfer):
                raise BidStoreError(422, "terms_mismatch", "a proposal is a transfer")
            if tx.chain != self.chain:
                raise BidStoreError(422, "terms_mismatch", "the transfer is for another chain")
            try:
                check_proposal(tx, trade.terms, trade.ask, trade.bid)
            except OrderRefused as exc:
                raise refusal(exc) from None
            message = signing_message(tx.type, decoded.txid)
            if not all(verify(s.public_key, message, s.signature) for s in tx.signatures):
                raise BidStoreError(401, "bad_signature", "a signature of the transfer is invalid")
            if trade.proposer.order.owner not in {s.public_key for s in tx.signatures}:
                raise BidStoreError(
                    401,
                    "bad_signature",
                    f"the proposal must carry the proposer's ({_role(trade.proposer)}'s) signature",
                )
            if trade.status is TradeStatus.OPEN:
                trade.since = self.clock()  # the countersigner's turn
            trade.proposal, trade.txid = raw, decoded.txid
            trade.status = TradeStatus.PROPOSED
            return self._trade_summary(trade)

    def fetch(
        self, trade_id: bytes, address: bytes, challenge: bytes, signature: bytes
    ) -> dict[str, Any]:
        """A trade with its proposal, for one of its two parties, who signed
        `fetch_message(trade_id, challenge)` with a fresh challenge."""
        with self._lock:
            trade = self._trade(trade_id)
            if not verify(address, fetch_message(trade_id, challenge), signature):
                raise BidStoreError(401, "bad_signature", "the signature does not verify")
            if not self._redeem(challenge):
                raise BidStoreError(
                    401, "bad_challenge", "the challenge is unknown, expired or used"
                )
            if address not in trade.parties:
                raise BidStoreError(403, "not_party", "only the trade's two parties may read it")
            summary = self._trade_summary(trade)
            proposal = (
                None
                if trade.proposal is None
                else tx_to_wire(decode_transaction(trade.proposal).tx)
            )
        role = _role(trade.ask if address == trade.ask.order.owner else trade.bid)
        return {**summary, "role": role, "proposal": proposal}

    # ------------------------------------------------------------ the ledger and the clock

    def on_block(self, _: SignedHead, raws: list[bytes]) -> None:
        """Close what the block's transfers spend: orders, and trades (settled or failed)."""
        with self._lock:
            for raw in raws:
                tx = trusted_transaction(raw)
                if isinstance(tx, Regulate):
                    continue
                tx_id = txid(tx)
                for index, output in enumerate(tx.outputs):
                    self._unspent[Outpoint(tx_id, index)] = output
                if not isinstance(tx, Transfer):
                    continue
                for outpoint in tx.inputs:
                    self._unspent.pop(outpoint, None)
                    self._spent[outpoint] = None
                    self.book.remove_spending(outpoint)
                    order_id = self._held.get(outpoint)
                    if order_id is not None:
                        self._spent_held(order_id, tx, tx_id)
            while len(self._spent) > SPENT_MEMORY:
                self._spent.popitem(last=False)

    def _spent_held(self, order_id: bytes, tx: Transfer, tx_id: bytes) -> None:
        """`tx` spends an asset of the held order `order_id`: the chain's current trade
        settles (or fails, if `tx` does not carry out its terms); an order waiting for a later
        match is gone."""
        chain = self._chain_of[order_id]
        trade = chain.trade
        self._settled_late(order_id, tx, tx_id)
        if trade is None or order_id not in (trade.ask.order_id, trade.bid.order_id):
            self._let_go(chain, order_id)  # spent elsewhere before its turn: its match is void
            return
        try:
            check_proposal(tx, trade.terms, trade.ask, trade.bid)
        except OrderRefused:
            trade.status = TradeStatus.FAILED
            log.info("trade %s failed: its assets went elsewhere", trade.trade_id.hex())
            self._let_go(chain, order_id)
            self._end_chain(chain)
            return
        trade.status, trade.txid = TradeStatus.SETTLED, tx_id
        ask_left, bid_left = leftovers(trade.terms, trade.ask, trade.bid, tx, tx_id)
        for listing, left in ((trade.ask, ask_left), (trade.bid, bid_left)):
            if left is None:
                self._let_go(chain, listing.order_id)
            else:
                self._hold(chain, left)
        chain.step += 1
        self._next_trade(chain)

    def tick(self) -> None:
        """Drop passed intervals, expire and forget trades, clear auctions at their gate."""
        now = self.clock()
        current = self.now_interval()
        with self._lock:
            self.book.drop_passed(current)
            for trade in list(self.trades.values()):
                interval = trade.terms.interval
                if trade.status in (TradeStatus.OPEN, TradeStatus.PROPOSED) and interval <= current:
                    trade.status = TradeStatus.EXPIRED
                    trade.chain.trade = None
                    self._end_chain(trade.chain)
                elif (
                    trade.status in (TradeStatus.OPEN, TradeStatus.PROPOSED)
                    and now - trade.since > self.step_timeout_s
                ):
                    self._abandon(trade)
                ends = self.interval_start(interval + 1)
                if trade.status not in (TradeStatus.OPEN, TradeStatus.PROPOSED) and (
                    now > ends + KEEP_TRADES_S
                ):
                    self._forget(trade)
            due = [
                t
                for t in self.book.intervals()
                if t not in self._cleared and self.interval_start(t) - now <= self.gate_s
            ]
            self._cleared = {t for t in self._cleared if t > current}
        for interval in due:
            self.clear(interval)

    def _settled_late(self, order_id: bytes, tx: Transfer, tx_id: bytes) -> None:
        """Mark settled an abandoned trade of `order_id` that `tx` carries out after all."""
        for trade_id in self._trades_of_order.get(order_id, ()):
            trade = self.trades[trade_id]
            if trade.status is TradeStatus.ABANDONED and set(tx.inputs) == set(trade.terms.inputs):
                try:
                    check_proposal(tx, trade.terms, trade.ask, trade.bid)
                except OrderRefused:
                    continue
                trade.status, trade.txid = TradeStatus.SETTLED, tx_id

    def _abandon(self, trade: Trade) -> None:
        """The party whose turn it was (the proposer until it proposes, then the countersigner) let
        `step_timeout_s` pass: let its order go and go on with the chain's next match, so one
        silent party holds nobody else's order hostage. The other party's order stays held:
        in the next match, or back in the book when the chain ends."""
        trade.status = TradeStatus.ABANDONED
        late = trade.proposer if trade.proposal is None else trade.countersigner
        log.info("trade %s abandoned: the %s did not act", trade.trade_id.hex(), late.order.side)
        chain = trade.chain
        self._let_go(chain, late.order_id)
        chain.step += 1
        self._next_trade(chain)

    def _forget(self, trade: Trade) -> None:
        del self.trades[trade.trade_id]
        for order_id in (trade.ask.order_id, trade.bid.order_id):
            ids = self._trades_of_order.get(order_id, [])
            if trade.trade_id in ids:
                ids.remove(trade.trade_id)
            if not ids:
                self._trades_of_order.pop(order_id, None)

    def status(self) -> dict[str, Any]:
        with self._lock:
            orders = len(self.book)
            trades = sum(
                1
                for t in self.trades.values()
                if t.status in (TradeStatus.OPEN, TradeStatus.PROPOSED)
            )
        follower = self.follower
        return {
            "chain": self.chain.hex(),
            "interval": self.now_interval(),
            "interval_s": self.genesis.interval_s,
            "gate_s": self.gate_s,
            "open_orders": orders,
            "open_trades": trades,
            "height": 0 if follower is None else follower.height,
        }


def _chains(matches: Iterable[Match]) -> list[tuple[Match, ...]]:
    """`matches` in chains, each in auction order: a match joins the chain of an order it
    shares with an earlier match. (The auction pairs greedily, so a chain is a path: each match
    shares one order with the one before it.)"""
    chains: list[list[Match]] = []
    chain_of: dict[bytes, int] = {}
    for match in matches:
        ids = [i for i in (match.ask_id, match.bid_id) if i is not None]
        joined = sorted({chain_of[i] for i in ids if i in chain_of})
        if not joined:
            chains.append([])
            joined = [len(chains) - 1]
        into = joined[0]
        for other in joined[1:]:  # two chains meet: settle one, then the other
            chains[into].extend(chains[other])
            chains[other] = []
            for moved in [i for i, k in chain_of.items() if k == other]:
                chain_of[moved] = into
        chains[into].append(match)
        chain_of.update((i, into) for i in ids)
    return [tuple(chain) for chain in chains if chain]


def _role(listing: Listing) -> str:
    return "seller" if listing.order.side is OrderSide.ASK else "buyer"


def _where(outpoint: Outpoint) -> str:
    return f"{outpoint.txid.hex()}:{outpoint.index}"


def _entry(listing: Listing) -> BookEntry:
    order = listing.order
    return BookEntry(listing.order_id, order.side, listing.power_w, order.price, order.contact)


def _entry_wire(entry: BookEntry) -> dict[str, Any]:
    return {
        "id": entry.order_id.hex(),
        "side": str(entry.side),
        "power": entry.power_w,
        "price": entry.price,
        "contact": entry.contact,
    }


def _match_wire(match: Match) -> dict[str, Any]:
    return {
        "ask": None if match.ask_id is None else match.ask_id.hex(),
        "bid": None if match.bid_id is None else match.bid_id.hex(),
        "power": match.power_w,
        "price": match.price,
    }


def _listing_in(trade: Trade, order_id: bytes) -> Listing:
    return trade.ask if trade.ask.order_id == order_id else trade.bid
