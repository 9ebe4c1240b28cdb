"""Trades and the chains they are made in (see `bidstore.service`'s module doc): holding
orders out of the book, making each match of a chain a trade in turn, the relay of the
proposer's transfer to the countersigner, settlement and failure as the ledger's blocks show
them, and the step timeouts and expiry that `tick` drives.

`open_chain`, `spent_held` and `expire` expect the caller to hold the store's lock; `propose`
and `fetch` take it themselves.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from assets import Genesis, chain_id, decode_transaction, signing_message, verify
from assets.canonical import canonical_json
from assets.codec import output_to_wire, tx_to_wire
from assets.model import Outpoint, Transfer
from bidstore.book import Book, Match, Terms, check_proposal, leftovers, trade_terms
from bidstore.errors import BidStoreError, decode_body, refusal
from bidstore.limits import Intervals
from bidstore.orders import Listing, OrderRefused, OrderSide, payment

log = logging.getLogger("petra.bidstore")

FETCH_TYPE = "bidstore-fetch"  # the signing domain of an authenticated trade fetch
KEEP_TRADES_S = 600.0  # a finished trade stays readable this long after its interval ends


class TradeStatus(StrEnum):
    OPEN = "open"  # made, waiting for the buyer's proposal
    PROPOSED = "proposed"  # the buyer's partly signed transfer waits for the seller
    SETTLED = "settled"  # the transfer is on the ledger
    FAILED = "failed"  # an asset of the trade was spent by another transfer
    EXPIRED = "expired"  # the interval began before the trade settled
    ABANDONED = "abandoned"  # the party whose turn it was let `step_timeout_s` pass


UNFINISHED = (TradeStatus.OPEN, TradeStatus.PROPOSED)


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
    since: float = 0.0  # wall time the current party's turn began (made, or first proposed)
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


class Trading:
    """The trades of the store and the orders its chains hold out of `book`.

    `spent` holds the outpoints the follower saw spent (an order holding one is not listed
    again); `redeem` redeems a challenge of a trade fetch; `max_trades` bounds the trades held.
    """

    def __init__(
        self,
        book: Book,
        genesis: Genesis,
        intervals: Intervals,
        lock: threading.RLock,
        spent: Container[Outpoint],
        redeem: Callable[[bytes], bool],
        *,
        step_timeout_s: float,
        max_trades: int,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.book = book
        self.genesis = genesis
        self.chain = chain_id(genesis)
        self.intervals = intervals
        self.lock = lock
        self.spent = spent
        self.redeem = redeem
        self.step_timeout_s = step_timeout_s  # wall seconds: a party's time to act
        self.wall_clock = wall_clock
        self.max_trades = max_trades
        self.trades: dict[bytes, Trade] = {}
        # Orders out of the book in an unfinished chain: what each holds, whose outpoints they
        # are and how many each owner has.
        self.chain_of: dict[bytes, Chain] = {}  # order id -> its chain
        self.held: dict[Outpoint, bytes] = {}  # outpoint -> id of the held order spending it
        self.held_by_owner: Counter[bytes] = Counter()
        self.trades_of_order: dict[bytes, list[bytes]] = {}
        self.entered: Counter[TradeStatus] = Counter()  # trades that entered each status so far

    # ------------------------------------------------------------ chains

    def open_chain(
        self,
        matches: tuple[Match, ...],
        listings: dict[bytes, Listing],
        relist: frozenset[bytes],
        proposer: OrderSide = OrderSide.BID,
    ) -> Trade | None:
        """Hold `listings` (the orders of `matches`) out of the book in a new chain and make
        its first trade; None if no trade could be made (the orders are back in the book)."""
        if len(self.trades) >= self.max_trades:
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
        trade = Trade(trade_id, ask, bid, terms, chain, since=self.wall_clock())
        self.trades[trade_id] = trade
        self.entered[TradeStatus.OPEN] += 1
        for order_id in (ask.order_id, bid.order_id):
            self.trades_of_order.setdefault(order_id, []).append(trade_id)
        return trade

    def _hold(self, chain: Chain, listing: Listing) -> None:
        order_id = listing.order_id
        if order_id not in chain.holding:
            self.held_by_owner[listing.order.owner] += 1
        else:
            self._unguard(chain.holding[order_id])
        chain.holding[order_id] = listing
        self.chain_of[order_id] = chain
        for outpoint in listing.order.assets:
            self.held[outpoint] = order_id

    def _unguard(self, listing: Listing) -> None:
        for outpoint in listing.order.assets:
            if self.held.get(outpoint) == listing.order_id:
                del self.held[outpoint]

    def _let_go(self, chain: Chain, order_id: bytes) -> Listing | None:
        """Stop holding `order_id` in `chain`; what it held, or None."""
        listing = chain.holding.pop(order_id, None)
        if listing is None:
            return None
        self._unguard(listing)
        if self.chain_of.get(order_id) is chain:
            del self.chain_of[order_id]
        owner = listing.order.owner
        self.held_by_owner[owner] -= 1
        if self.held_by_owner[owner] <= 0:
            del self.held_by_owner[owner]
        return listing

    def _end_chain(self, chain: Chain) -> None:
        """Let go of every order `chain` holds; list again those of `chain.relist` that still
        hold unspent assets in an interval not begun (a bid only if its funds still cover its
        power at its price)."""
        current = self.intervals.now_interval()
        for order_id in list(chain.holding):
            listing = self._let_go(chain, order_id)
            assert listing is not None
            order = listing.order
            if (
                order_id in chain.relist
                and order.interval > current
                and not any(o in self.spent for o in order.assets)
                and (
                    order.side is OrderSide.ASK
                    or listing.funds
                    >= payment(listing.power_w, self.genesis.interval_s, order.price)
                )
            ):
                self.book.add(listing)

    # ------------------------------------------------------------ the parties

    def trade(self, trade_id: bytes) -> Trade:
        """The trade `trade_id`, or 404."""
        trade = self.trades.get(trade_id)
        if trade is None:
            raise BidStoreError(404, "unknown_trade", f"no trade {trade_id.hex()} is known")
        return trade

    def summary(self, trade: Trade) -> dict[str, Any]:
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
            "proposer": role(trade.proposer),
            "txid": None if trade.txid is None else trade.txid.hex(),
        }

    def propose(self, trade_id: bytes, raw: bytes) -> dict[str, Any]:
        """Take the buyer's partly signed transfer for `trade_id` to relay to the seller."""
        decoded = decode_body("transfer", decode_transaction, raw)
        tx = decoded.tx
        with self.lock:
            trade = self.trade(trade_id)
            if trade.status not in UNFINISHED:
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
                    f"the proposal must carry the proposer's ({role(trade.proposer)}'s) signature",
                )
            if trade.status is TradeStatus.OPEN:
                trade.since = self.wall_clock()  # the countersigner's turn
                self._enter(trade, TradeStatus.PROPOSED)
            trade.proposal, trade.txid = raw, decoded.txid
            return self.summary(trade)

    def fetch(
        self, trade_id: bytes, address: bytes, challenge: bytes, signature: bytes
    ) -> dict[str, Any]:
        """A trade with its proposal, for one of its two parties, who signed
        `fetch_message(trade_id, challenge)` with a fresh challenge."""
        with self.lock:
            trade = self.trade(trade_id)
            if not verify(address, fetch_message(trade_id, challenge), signature):
                raise BidStoreError(401, "bad_signature", "the signature does not verify")
            if not self.redeem(challenge):
                raise BidStoreError(
                    401, "bad_challenge", "the challenge is unknown, expired or used"
                )
            if address not in trade.parties:
                raise BidStoreError(403, "not_party", "only the trade's two parties may read it")
            summary = self.summary(trade)
            proposal = (
                None
                if trade.proposal is None
                else tx_to_wire(decode_transaction(trade.proposal).tx)
            )
        party = role(trade.ask if address == trade.ask.order.owner else trade.bid)
        return {**summary, "role": party, "proposal": proposal}

    # ------------------------------------------------------------ the ledger and the clock

    def spent_held(self, order_id: bytes, tx: Transfer, tx_id: bytes) -> None:
        """`tx` spends an asset of the held order `order_id`: the chain's current trade
        settles (or fails, if `tx` does not carry out its terms); an order waiting for a later
        match is gone."""
        chain = self.chain_of[order_id]
        trade = chain.trade
        self._settled_late(order_id, tx, tx_id)
        if trade is None or order_id not in (trade.ask.order_id, trade.bid.order_id):
            self._let_go(chain, order_id)  # spent elsewhere before its turn: its match is void
            return
        try:
            check_proposal(tx, trade.terms, trade.ask, trade.bid)
        except OrderRefused:
            self._enter(trade, TradeStatus.FAILED)
            log.info("trade %s failed: its assets went elsewhere", trade.trade_id.hex())
            self._let_go(chain, order_id)
            self._end_chain(chain)
            return
        self._enter(trade, TradeStatus.SETTLED)
        trade.txid = tx_id
        ask_left, bid_left = leftovers(trade.terms, trade.ask, trade.bid, tx, tx_id)
        for listing, left in ((trade.ask, ask_left), (trade.bid, bid_left)):
            if left is None:
                self._let_go(chain, listing.order_id)
            else:
                self._hold(chain, left)
        chain.step += 1
        self._next_trade(chain)

    def _settled_late(self, order_id: bytes, tx: Transfer, tx_id: bytes) -> None:
        """Mark settled an abandoned trade of `order_id` that `tx` carries out after all."""
        for trade_id in self.trades_of_order.get(order_id, ()):
            trade = self.trades[trade_id]
            if trade.status is TradeStatus.ABANDONED and set(tx.inputs) == set(trade.terms.inputs):
                try:
                    check_proposal(tx, trade.terms, trade.ask, trade.bid)
                except OrderRefused:
                    continue
                self._enter(trade, TradeStatus.SETTLED)
                trade.txid = tx_id

    def expire(self, now: float, current: int) -> None:
        """At ledger Unix time `now` in interval `current`: expire the unfinished trades of
        begun intervals, abandon those whose party let its step time out (by the wall clock),
        and forget finished trades `KEEP_TRADES_S` (ledger seconds) after their interval
        ended."""
        waited_since = self.wall_clock()
        for trade in list(self.trades.values()):
            interval = trade.terms.interval
            if trade.status in UNFINISHED and interval <= current:
                self._enter(trade, TradeStatus.EXPIRED)
                trade.chain.trade = None
                self._end_chain(trade.chain)
            elif trade.status in UNFINISHED and waited_since - trade.since > self.step_timeout_s:
                self._abandon(trade)
            ends = self.intervals.interval_start(interval + 1)
            if trade.status not in UNFINISHED and now > ends + KEEP_TRADES_S:
                self._forget(trade)

    def _abandon(self, trade: Trade) -> None:
        """The party whose turn it was (the proposer until it proposes, then the countersigner) let
        `step_timeout_s` pass: let its order go and go on with the chain's next match, so one
        silent party holds nobody else's order hostage. The other party's order stays held:
        in the next match, or back in the book when the chain ends."""
        self._enter(trade, TradeStatus.ABANDONED)
        late = trade.proposer if trade.proposal is None else trade.countersigner
        log.info("trade %s abandoned: the %s did not act", trade.trade_id.hex(), late.order.side)
        chain = trade.chain
        self._let_go(chain, late.order_id)
        chain.step += 1
        self._next_trade(chain)

    def _forget(self, trade: Trade) -> None:
        del self.trades[trade.trade_id]
        for order_id in (trade.ask.order_id, trade.bid.order_id):
            ids = self.trades_of_order.get(order_id, [])
            if trade.trade_id in ids:
                ids.remove(trade.trade_id)
            if not ids:
                self.trades_of_order.pop(order_id, None)

    def _enter(self, trade: Trade, status: TradeStatus) -> None:
        trade.status = status
        self.entered[status] += 1

    def unfinished(self) -> int:
        """How many trades are open or proposed."""
        return sum(1 for t in self.trades.values() if t.status in UNFINISHED)


def chains_of(matches: Iterable[Match]) -> list[tuple[Match, ...]]:
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


def role(listing: Listing) -> str:
    """The party of an order in a trade: seller (an ask) or buyer (a bid)."""
    return "seller" if listing.order.side is OrderSide.ASK else "buyer"
