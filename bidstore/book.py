"""The order book of the bid store (DESIGN.md section 9): open orders, matching, trade terms.

The book holds checked orders (`orders.Listing`) per interval. It never asks the ledger: the
service removes orders whose assets it sees spent (`remove_spending`) and drops intervals that
have begun (`drop_passed`). A newer order spending an outpoint of an open order replaces it:
only the owner can sign one, so this is how an owner re-prices.

Its public view is anonymous: per order the id, side, power, price and contact, never the
owner, the receive address or the outpoints.

Matching, per interval:

- `call_auction(t)`: a uniform-price call auction. Asks by price ascending, bids by price
  descending, ties by arrival. Orders are divisible to the watt. Asks and bids are paired
  greedily in that priority while the ask's price is at most the bid's, which reaches the
  largest volume any uniform price allows. The clearing price is the midpoint, rounded half
  to even, of the marginal (last matched) ask's and bid's prices, so every matched ask's price
  <= clearing price <= every matched bid's price. The book is not changed: the same book
  clears the same way again.
- `take(order_id, power_w)`: a direct take of one order at its own price; the taker's side is
  filled in once the taker's own order is checked.

A match becomes one transfer (`trade_terms`): inputs the ask's EPA and the bid's ECA and FA;
outputs EPA(power, t, t) to the bid's `receive`, ECA(power, t, t) and the FA payment to the
ask's `receive`, and change: EPA to the ask's owner, ECA and FA to the bid's owner.
`check_proposal` holds a proposed transfer against those terms before the store relays it.
Once the transfer is on the ledger, `leftovers` says what each order still holds: its change,
as a listing of the same order, which the next match of the same order spends (an order in
several matches of one clearing settles them one after another) or which is listed again.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from assets.model import Eca, Epa, Fa, Outpoint, Output, Transfer
from bidstore.orders import Listing, OrderRefused, OrderSide, payment


@dataclass(frozen=True, slots=True)
class BookEntry:
    """One open order as the public sees it: watts in its interval, micro-units per kWh."""

    order_id: bytes
    side: OrderSide
    power_w: int
    price: int
    contact: str


@dataclass(frozen=True, slots=True)
class Match:
    """`power_w` watts change hands at `price` micro-units per kWh.

    From an auction both ids are set; from a take the taker's side is None until the taker's
    order is known.
    """

    ask_id: bytes | None
    bid_id: bytes | None
    power_w: int
    price: int


@dataclass(frozen=True, slots=True)
class Clearing:
    """The outcome of an interval's call auction: price None and no matches if none cross."""

    interval: int
    price: int | None
    volume_w: int
    matches: tuple[Match, ...]


@dataclass(frozen=True, slots=True)
class Terms:
    """What the transfer of one match must do.

    `inputs` are the outpoints it spends; `paid` the outputs the parties trade (no FA when a
    tiny trade rounds its payment to 0: the ledger has no FA of 0); `change` one output per
    kind and owner (a wallet may split it further). `payment` is in micro-units.
    """

    interval: int
    power_w: int
    price: int
    payment: int
    inputs: tuple[Outpoint, ...]
    paid: tuple[Output, ...]
    change: tuple[Output, ...]

    def transfer(self, chain: bytes) -> Transfer:
        """The unsigned transfer that carries out these terms, change unsplit."""
        return Transfer(chain=chain, inputs=self.inputs, outputs=self.paid + self.change)


def _midpoint(low: int, high: int) -> int:
    """(low + high) / 2 rounded half to even."""
    half, odd = divmod(low + high, 2)
    return half + 1 if odd and half % 2 == 1 else half


class Book:
    """Open orders per interval, in arrival order."""

    def __init__(self) -> None:
        self._by_interval: dict[int, dict[bytes, Listing]] = {}
        self._by_id: dict[bytes, Listing] = {}
        self._spender: dict[Outpoint, bytes] = {}  # outpoint -> id of the order spending it
        self._by_owner: dict[bytes, dict[bytes, Listing]] = {}  # owner -> its open orders

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, order_id: bytes) -> Listing | None:
        return self._by_id.get(order_id)

    def owned_by(self, owner: bytes) -> tuple[Listing, ...]:
        """The open orders of `owner`, in arrival order."""
        return tuple(self._by_owner.get(owner, {}).values())

    def intervals(self) -> tuple[int, ...]:
        """The intervals with open orders, ascending."""
        return tuple(sorted(self._by_interval))

    def add(self, listing: Listing) -> tuple[Listing, ...]:
        """Open `listing`; returns the open orders it replaces (those spending its outpoints)."""
        replaced = tuple(
            removed
            for order_id in dict.fromkeys(
                self._spender[o] for o in listing.order.assets if o in self._spender
            )
            if (removed := self.remove(order_id)) is not None
        )
        self.remove(listing.order_id)  # the same order again goes to the back of the queue
        self._by_interval.setdefault(listing.order.interval, {})[listing.order_id] = listing
        self._by_id[listing.order_id] = listing
        self._by_owner.setdefault(listing.order.owner, {})[listing.order_id] = listing
        for outpoint in listing.order.assets:
            self._spender[outpoint] = listing.order_id
        return replaced

    def remove(self, order_id: bytes) -> Listing | None:
        """Close the order `order_id`; the listing, or None if it was not open."""
        listing = self._by_id.pop(order_id, None)
        if listing is None:
            return None
        interval = listing.order.interval
        del self._by_interval[interval][order_id]
        if not self._by_interval[interval]:
            del self._by_interval[interval]
        owned = self._by_owner[listing.order.owner]
        del owned[order_id]
        if not owned:
            del self._by_owner[listing.order.owner]
        for outpoint in listing.order.assets:
            del self._spender[outpoint]
        return listing

    def remove_spending(self, outpoint: Outpoint) -> Listing | None:
        """Close the order spending `outpoint` (the ledger shows it spent); None if none."""
        order_id = self._spender.get(outpoint)
        return None if order_id is None else self.remove(order_id)

    def drop_passed(self, now_interval: int) -> tuple[Listing, ...]:
        """Close every order for an interval <= `now_interval`; returns them."""
        passed = [t for t in self._by_interval if t <= now_interval]
        return tuple(
            listing
            for t in passed
            for order_id in list(self._by_interval[t])
            if (listing := self.remove(order_id)) is not None
        )

    def _in_priority(self, interval: int) -> tuple[list[Listing], list[Listing]]:
        """Asks by price ascending and bids by price descending, ties in arrival order."""
        listings = list(self._by_interval.get(interval, {}).values())
        # sorted() is stable, so equal prices keep arrival order
        asks = sorted(
            (x for x in listings if x.order.side is OrderSide.ASK), key=lambda x: x.order.price
        )
        bids = sorted(
            (x for x in listings if x.order.side is OrderSide.BID), key=lambda x: -x.order.price
        )
        return asks, bids

    def view(self, interval: int) -> tuple[BookEntry, ...]:
        """The public book of `interval`: asks then bids, each in priority order."""
        asks, bids = self._in_priority(interval)
        return tuple(
            BookEntry(x.order_id, x.order.side, x.power_w, x.order.price, x.order.contact)
            for x in itertools.chain(asks, bids)
        )

    def call_auction(self, interval: int) -> Clearing:
        """Clear `interval` at one price; see the module docstring. Changes nothing."""
        asks, bids = self._in_priority(interval)
        pieces: list[tuple[Listing, Listing, int]] = []
        a = b = 0
        ask_left = asks[0].power_w if asks else 0
        bid_left = bids[0].power_w if bids else 0
        while a < len(asks) and b < len(bids) and asks[a].order.price <= bids[b].order.price:
            power = min(ask_left, bid_left)
            pieces.append((asks[a], bids[b], power))
            ask_left -= power
            bid_left -= power
            if ask_left == 0:
                a += 1
                ask_left = asks[a].power_w if a < len(asks) else 0
            if bid_left == 0:
                b += 1
                bid_left = bids[b].power_w if b < len(bids) else 0
        if not pieces:
            return Clearing(interval, None, 0, ())
        marginal_ask, marginal_bid, _ = pieces[-1]
        price = _midpoint(marginal_ask.order.price, marginal_bid.order.price)
        matches = tuple(Match(x.order_id, y.order_id, power, price) for x, y, power in pieces)
        return Clearing(interval, price, sum(p for _, _, p in pieces), matches)

    def take(self, order_id: bytes, power_w: int | None = None) -> Match:
        """Take `power_w` watts (default: all) of the open order `order_id` at its price.

        Raises OrderRefused(`unknown_order` | `bad_power`).
        """
        listing = self._by_id.get(order_id)
        if listing is None:
            raise OrderRefused("unknown_order", f"no open order {order_id.hex()}")
        power = listing.power_w if power_w is None else power_w
        if not 1 <= power <= listing.power_w:
            raise OrderRefused(
                "bad_power", f"take between 1 and {listing.power_w} W of this order, not {power}"
            )
        is_ask = listing.order.side is OrderSide.ASK
        return Match(
            ask_id=order_id if is_ask else None,
            bid_id=None if is_ask else order_id,
            power_w=power,
            price=listing.order.price,
        )


# ---------------------------------------------------------------- trades


def _mismatch(message: str) -> OrderRefused:
    return OrderRefused("terms_mismatch", message)


def trade_terms(match: Match, ask: Listing, bid: Listing, interval_s: int) -> Terms:
    """The transfer `match` between `ask` and `bid` calls for; interval_s in seconds.

    Raises OrderRefused(`terms_mismatch`) if the match does not fit the two orders: other
    ids, sides or intervals, more power than either holds, a price outside their limits.
    """
    if ask.order.side is not OrderSide.ASK or bid.order.side is not OrderSide.BID:
        raise _mismatch("a trade is between an ask and a bid")
    if match.ask_id not in (None, ask.order_id) or match.bid_id not in (None, bid.order_id):
        raise _mismatch("the match names other orders")
    interval = ask.order.interval
    if bid.order.interval != interval:
        raise _mismatch(f"the ask is for interval {interval}, the bid {bid.order.interval}")
    if not 1 <= match.power_w <= min(ask.power_w, bid.power_w):
        raise _mismatch(f"{match.power_w} W is more than one of the orders holds")
    if not ask.order.price <= match.price <= bid.order.price:
        raise _mismatch(f"price {match.price} is outside the orders' limits")
    owed = payment(match.power_w, interval_s, match.price)
    if owed > bid.funds:
        raise _mismatch(f"the bid's {bid.funds} micro-units do not cover {owed}")
    power = match.power_w
    paid = (
        Output(Epa(power, interval, interval), bid.order.receive),
        Output(Eca(power, interval, interval), ask.order.receive),
    ) + ((Output(Fa(owed), ask.order.receive),) if owed else ())  # the ledger has no FA of 0
    change = tuple(
        output
        for output in (
            Output(Epa(ask.power_w - power, interval, interval), ask.order.owner),
            Output(Eca(bid.power_w - power, interval, interval), bid.order.owner),
            Output(Fa(bid.funds - owed), bid.order.owner),
        )
        if _size(output) > 0
    )
    return Terms(
        interval=interval,
        power_w=power,
        price=match.price,
        payment=owed,
        inputs=ask.order.assets + bid.order.assets,
        paid=paid,
        change=change,
    )


def _size(output: Output) -> int:
    asset = output.asset
    return asset.amount if isinstance(asset, Fa) else asset.power


def check_proposal(transfer: Transfer, terms: Terms, ask: Listing, bid: Listing) -> None:
    """Refuse a proposed (unsigned or partly signed) transfer that does not carry out `terms`.

    It must spend exactly `terms.inputs`, contain each paid output, and send everything else
    back as change (EPA to the ask's owner, ECA and FA to the bid's owner) so that it balances
    per DESIGN.md section 5 rule 3. Chain and signatures are the ledger's to check.
    Raises OrderRefused(`terms_mismatch`).
    """
    if len(set(transfer.inputs)) != len(transfer.inputs) or set(transfer.inputs) != set(
        terms.inputs
    ):
        raise _mismatch("the transfer must spend exactly the two orders' outpoints")
    for output in transfer.outputs:
        if _size(output) < 1:
            raise _mismatch("every output carries at least 1 W or 1 micro-unit")
    rest = list(transfer.outputs)
    for output in terms.paid:
        if output not in rest:
            raise _mismatch(f"the transfer lacks {output.asset} to {output.address.hex()}")
        rest.remove(output)
    change_owner = {Epa: ask.order.owner, Eca: bid.order.owner, Fa: bid.order.owner}
    for output in rest:
        if output.address != change_owner[type(output.asset)]:
            raise _mismatch(f"{output.asset} to {output.address.hex()} is neither paid nor change")
    _check_balanced(ask.inputs + bid.inputs, transfer.outputs, terms.interval)


def _check_balanced(inputs: Iterable[Output], outputs: Iterable[Output], interval: int) -> None:
    """Rule 3 of DESIGN.md section 5 for inputs that all cover `interval` alone.

    (ledger.rules.check_balanced states it in general, but importing it loads the ledger's
    database layer, which this pure core must not.) With every input in one interval, the
    outputs balance iff each energy output covers that interval alone and each kind's sums
    agree.
    """
    totals: Counter[str] = Counter()
    for output in inputs:
        totals[output.asset.kind] += _size(output)
    for output in outputs:
        asset = output.asset
        if not isinstance(asset, Fa) and not asset.start == asset.end == interval:
            raise _mismatch(f"{asset} covers other intervals than {interval}: unbalanced")
        totals[asset.kind] -= _size(output)
    unbalanced = sorted(kind for kind, left in totals.items() if left != 0)
    if unbalanced:
        raise _mismatch(f"{', '.join(unbalanced)} inputs and outputs differ: unbalanced")


def leftovers(
    terms: Terms, ask: Listing, bid: Listing, transfer: Transfer, transfer_id: bytes
) -> tuple[Listing | None, Listing | None]:
    """What `ask` and `bid` hold once `transfer` (id `transfer_id`), which carries out `terms`
    (`check_proposal` passed), is on the ledger: each order's change outputs as a listing of
    the same order (same id, price, contact and receive address; `order.assets` the change
    outpoints, so the signature no longer covers them: the store's own record), or None for an
    order whose power is used up. The ask keeps its EPA change; the bid its ECA and FA change.
    """
    change = list(enumerate(transfer.outputs))
    for output in terms.paid:
        change.remove(next(item for item in change if item[1] == output))
    epa = [(i, o) for i, o in change if isinstance(o.asset, Epa)]
    eca = [(i, o) for i, o in change if isinstance(o.asset, Eca)]
    fa = [(i, o) for i, o in change if isinstance(o.asset, Fa)]
    return (
        _left(ask, epa, sum(_size(o) for _, o in epa), 0, transfer_id),
        _left(
            bid, eca + fa, sum(_size(o) for _, o in eca), sum(_size(o) for _, o in fa), transfer_id
        ),
    )


def _left(
    listing: Listing,
    change: Sequence[tuple[int, Output]],
    power_w: int,
    funds: int,
    transfer_id: bytes,
) -> Listing | None:
    if power_w == 0:
        return None
    assets = tuple(Outpoint(transfer_id, index) for index, _ in change)
    return Listing(
        dataclasses.replace(listing.order, assets=assets),
        listing.order_id,
        power_w,
        funds,
        tuple(output for _, output in change),
    )
