"""The bid store's service (docs/bidstore-api.md): the pure core of `bidstore.orders` and
`bidstore.book` wired to the ledger node, a clock and a lock. No web framework here.

It keeps everything in memory: challenges, the book, trades. It follows the ledger's blocks
(`BlockFollower`) to close orders whose assets are spent and to see trades settle, and a
ticker calls `tick` to drop passed intervals, expire trades and clear each interval's call
auction at its gate.

A trade is one transfer between one ask and one bid. Its two orders leave the book when it is
made and live in the trade; the bid's owner (the buyer) proposes the transfer, signed for its
own inputs; the ask's owner (the seller) fetches it with a signed request, countersigns and
submits it to the ledger itself. The store sees the transfer in a block and marks the trade
settled. What an order does not trade (a partial fill) comes back to its owner as change and is
not listed again: the owner posts a new order on it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from assets import Genesis, Rejected, chain_id, decode_transaction, signing_message, verify
from assets.canonical import canonical_json, parse_json
from assets.codec import (
    asset_from_wire,
    output_to_wire,
    trusted_transaction,
    tx_to_wire,
    txid,
)
from assets.model import Outpoint, Output, Regulate, Transfer
from bidstore.book import Book, BookEntry, Match, Terms, check_proposal, trade_terms
from bidstore.budget import TokenBuckets
from bidstore.orders import (
    Challenges,
    Listing,
    OrderRefused,
    OrderSide,
    check_order,
    decode_order,
)
from ledger.blocks import SignedHead
from ledger.client import LedgerClient, LedgerClientError
from ledger.follow import BlockFollower

log = logging.getLogger("petra.bidstore")

FETCH_TYPE = "bidstore-fetch"  # the signing domain of an authenticated trade fetch
KEEP_TRADES_S = 600.0  # a finished trade stays readable this long after its interval ends
SPENT_MEMORY = 100_000  # outpoints the follower saw spent, remembered against a late order


class BidStoreError(Exception):
    """A refusal with an HTTP status, a stable code and one sentence."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


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


class TradeStatus(StrEnum):
    OPEN = "open"  # made, waiting for the buyer's proposal
    PROPOSED = "proposed"  # the buyer's partly signed transfer waits for the seller
    SETTLED = "settled"  # the transfer is on the ledger
    FAILED = "failed"  # an asset of the trade was spent by another transfer
    EXPIRED = "expired"  # the interval began before the trade settled


@dataclass(frozen=True, slots=True)
class Limits:
    """Abuse control. Times in seconds; `requests_per_s` and `burst` per client address."""

    max_orders_per_owner: int = 16
    requests_per_s: float = 20.0
    burst: int = 100
    challenge_ttl_s: float = 300.0
    max_challenges: int = 100_000
    max_trades: int = 100_000


@dataclass(slots=True)
class Trade:
    """A match between two orders and the transfer that settles it."""

    trade_id: bytes
    ask: Listing
    bid: Listing
    terms: Terms
    status: TradeStatus = TradeStatus.OPEN
    proposal: bytes | None = None  # canonical transfer bytes, signed by the buyer
    txid: bytes | None = None  # the proposal's id, and the settling transfer's once settled
    parties: tuple[bytes, bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.parties = (self.ask.order.owner, self.bid.order.owner)


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
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.genesis = genesis
        self.chain = chain_id(genesis)
        self.gate_s = gate_s
        self.limits = limits or Limits()
        self.clock = clock
        self.book = Book()
        self.challenges = Challenges(
            clock, ttl_s=self.limits.challenge_ttl_s, capacity=self.limits.max_challenges
        )
        self.buckets = TokenBuckets(clock, self.limits.requests_per_s, self.limits.burst)
        self.trades: dict[bytes, Trade] = {}
        self._trade_of: dict[Outpoint, bytes] = {}  # outpoint -> the unfinished trade using it
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

    def challenge(self) -> dict[str, Any]:
        with self._lock:
            value = self.challenges.issue()
        return {"challenge": value.hex(), "expires_in_s": self.limits.challenge_ttl_s}

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
            return self.challenges.redeem(challenge)

    def _checked(self, raw: bytes) -> Listing:
        """The listing of the order in `raw`, checked against the ledger; BidStoreError if not."""
        try:
            order = decode_order(raw)
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
                if outpoint in self._trade_of:
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
        trading = sum(
            1
            for trade in self.trades.values()
            if trade.status in (TradeStatus.OPEN, TradeStatus.PROPOSED) and owner in trade.parties
        )
        if kept + trading >= self.limits.max_orders_per_owner:
            raise BidStoreError(
                429,
                "too_many_orders",
                f"an address has at most {self.limits.max_orders_per_owner} open orders and "
                "unfinished trades",
            )

    def post_order(self, raw: bytes) -> dict[str, Any]:
        """Open the order in `raw` (its canonical wire); what the book shows of it."""
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
            trades = list(self._trades_of_order.get(order_id, ()))
            if listing is None and trades:
                listing = _listing_in(self.trades[trades[0]], order_id)
        if listing is None:
            raise BidStoreError(404, "unknown_order", f"no order {order_id.hex()} is known")
        return {
            **_entry_wire(_entry(listing)),
            "interval": listing.order.interval,
            "status": "open" if self.book.get(order_id) is not None else "trading",
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
        """Clear `interval`'s call auction now: a trade per match whose two orders are in no
        other match; orders in several matches stay in the book (docs/bidstore-api.md)."""
        with self._lock:
            clearing = self.book.call_auction(interval)
            uses: dict[bytes | None, int] = {}
            for match in clearing.matches:
                for side in (match.ask_id, match.bid_id):
                    uses[side] = uses.get(side, 0) + 1
            made = []
            for match in clearing.matches:
                if uses[match.ask_id] != 1 or uses[match.bid_id] != 1:
                    continue
                ask = self.book.get(match.ask_id) if match.ask_id else None
                bid = self.book.get(match.bid_id) if match.bid_id else None
                if ask is None or bid is None:
                    continue
                made.append(self._make_trade(match, ask, bid))
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
            ask, bid = (taker, resting) if is_ask else (resting, taker)
            for outpoint in taker.order.assets:  # the taker's signed take supersedes its order
                self.book.remove_spending(outpoint)
            self._check_owner_room(taker)
            trade = self._make_trade(match, ask, bid)
        return self._trade_summary(trade)

    def _make_trade(self, match: Match, ask: Listing, bid: Listing) -> Trade:
        """Record a trade of `match` and take its two orders out of the book (under the lock)."""
        if len(self.trades) >= self.limits.max_trades:
            raise BidStoreError(503, "busy", "the store holds as many trades as it can")
        try:
            terms = trade_terms(match, ask, bid, self.genesis.interval_s)
        except OrderRefused as exc:
            raise refusal(exc) from None
        trade_id = trade_id_of(ask.order_id, bid.order_id, match.power_w, match.price)
        trade = Trade(trade_id, ask, bid, terms)
        self.book.remove(ask.order_id)
        self.book.remove(bid.order_id)
        self.trades[trade_id] = trade
        for outpoint in terms.inputs:
            self._trade_of[outpoint] = trade_id
        for order_id in (ask.order_id, bid.order_id):
            self._trades_of_order.setdefault(order_id, []).append(trade_id)
        return trade

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
            "txid": None if trade.txid is None else trade.txid.hex(),
        }

    def propose(self, trade_id: bytes, raw: bytes) -> dict[str, Any]:
        """Take the buyer's partly signed transfer for `trade_id` to relay to the seller."""
        try:
            decoded = decode_transaction(raw)
        except Rejected as exc:
            raise BidStoreError(400, "malformed", exc.message) from None
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
            if trade.bid.order.owner not in {s.public_key for s in tx.signatures}:
                raise BidStoreError(
                    401, "bad_signature", "the proposal must carry the buyer's signature"
                )
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
            if not self.challenges.redeem(challenge):
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
        role = "seller" if address == trade.ask.order.owner else "buyer"
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
                    trade_id = self._trade_of.get(outpoint)
                    if trade_id is not None:
                        self._finish(self.trades[trade_id], tx)
            while len(self._spent) > SPENT_MEMORY:
                self._spent.popitem(last=False)

    def _finish(self, trade: Trade, tx: Transfer) -> None:
        """`tx` spends an input of `trade`: settled if it carries out the terms, else failed."""
        try:
            check_proposal(tx, trade.terms, trade.ask, trade.bid)
        except OrderRefused:
            trade.status = TradeStatus.FAILED
            log.info("trade %s failed: its assets went elsewhere", trade.trade_id.hex())
        else:
            trade.status, trade.txid = TradeStatus.SETTLED, txid(tx)
        self._release(trade)

    def _release(self, trade: Trade) -> None:
        for outpoint in trade.terms.inputs:
            if self._trade_of.get(outpoint) == trade.trade_id:
                del self._trade_of[outpoint]

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
                    self._release(trade)
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


def parse_wire(raw: bytes) -> Any:
    """Parsed JSON of a request body; BidStoreError(`malformed`) if it is not JSON."""
    try:
        return parse_json(raw)
    except Rejected as exc:
        raise BidStoreError(400, "malformed", exc.message) from None
