"""The bid store's book: bookkeeping, the call auction's properties, takes, trade terms."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assets import Eca, Epa, Fa, Keypair, Outpoint, Output, Transfer
from bidstore.book import (
    Book,
    BookEntry,
    Clearing,
    Match,
    Terms,
    check_proposal,
    leftovers,
    trade_terms,
)
from bidstore.orders import Listing, Order, OrderRefused, OrderSide, order_id, payment
from ledger.rules import check_balanced

INTERVAL_S = 900
T = 105
CHAIN = bytes(range(32))
SELLER = Keypair(bytes([1]) * 32).public_key
BUYER = Keypair(bytes([2]) * 32).public_key
SELLER_RECEIVE = bytes([11]) * 32
BUYER_RECEIVE = bytes([12]) * 32
MALLORY = bytes([13]) * 32
_serial = itertools.count()


def outpoint() -> Outpoint:
    n = next(_serial)
    return Outpoint(hashlib.sha256(n.to_bytes(8, "big")).digest(), n % 4)


def make_ask(price: int, power: int, interval: int = T, where: Outpoint | None = None) -> Listing:
    order = Order(
        OrderSide.ASK,
        interval,
        price,
        (where or outpoint(),),
        "relay",
        SELLER_RECEIVE,
        SELLER,
        bytes(32),
        bytes(64),
    )
    return Listing(
        order, order_id(order), power, 0, (Output(Epa(power, interval, interval), SELLER),)
    )


def make_bid(
    price: int, power: int, interval: int = T, funds: tuple[int, ...] | None = None
) -> Listing:
    funds = funds or (payment(power, INTERVAL_S, price),)
    order = Order(
        OrderSide.BID,
        interval,
        price,
        tuple(outpoint() for _ in range(1 + len(funds))),
        "a" * 56 + ".onion",
        BUYER_RECEIVE,
        BUYER,
        bytes(32),
        bytes(64),
    )
    inputs = (
        Output(Eca(power, interval, interval), BUYER),
        *(Output(Fa(amount), BUYER) for amount in funds),
    )
    return Listing(order, order_id(order), power, sum(funds), inputs)


def refused(code: str) -> Any:
    return pytest.raises(OrderRefused, match=f"^{code}:")


# ---------------------------------------------------------------- bookkeeping


def test_add_get_remove() -> None:
    book = Book()
    a, b = make_ask(100, 10), make_bid(120, 5, interval=T + 1)
    assert book.add(a) == () and book.add(b) == ()
    assert len(book) == 2 and book.get(a.order_id) == a
    assert book.intervals() == (T, T + 1)
    assert book.remove(a.order_id) == a
    assert book.remove(a.order_id) is None
    assert book.intervals() == (T + 1,) and len(book) == 1


def test_an_order_spending_the_same_outpoint_replaces_the_open_one() -> None:
    book = Book()
    where = outpoint()
    old, new = make_ask(100, 10, where=where), make_ask(90, 10, where=where)
    book.add(old)
    assert book.add(new) == (old,)
    assert book.get(old.order_id) is None and book.get(new.order_id) == new
    assert book.remove_spending(where) == new and len(book) == 0


def test_remove_spending_closes_a_bid_by_any_of_its_outpoints() -> None:
    book = Book()
    bid = make_bid(100, 10, funds=(500, 600))
    book.add(bid)
    assert book.remove_spending(outpoint()) is None
    assert book.remove_spending(bid.order.assets[2]) == bid
    assert book.remove_spending(bid.order.assets[0]) is None


def test_drop_passed_closes_intervals_up_to_now() -> None:
    book = Book()
    orders = [make_ask(100, 10, interval=t) for t in (T - 1, T, T + 1)]
    for listing in orders:
        book.add(listing)
    assert set(book.drop_passed(T)) == set(orders[:2])
    assert book.intervals() == (T + 1,)


def test_the_view_is_anonymous_and_in_priority_order() -> None:
    book = Book()
    a1, a2 = make_ask(110, 5), make_ask(100, 7)
    b1, b2 = make_bid(90, 3), make_bid(95, 4)
    for listing in (a1, a2, b1, b2):
        book.add(listing)
    view = book.view(T)
    assert [e.order_id for e in view] == [a2.order_id, a1.order_id, b2.order_id, b1.order_id]
    assert view[0] == BookEntry(a2.order_id, OrderSide.ASK, 7, 100, "relay")
    assert {f.name for f in dataclasses.fields(BookEntry)} == {
        "order_id",
        "side",
        "power_w",
        "price",
        "contact",
    }
    assert book.view(T + 7) == ()


# ---------------------------------------------------------------- the call auction


def test_no_crossing_no_clearing() -> None:
    book = Book()
    book.add(make_ask(120, 10))
    book.add(make_bid(100, 10))
    assert book.call_auction(T) == Clearing(T, None, 0, ())
    assert Book().call_auction(T) == Clearing(T, None, 0, ())


def test_partial_fill_and_midpoint() -> None:
    book = Book()
    cheap, dear = make_ask(100, 6), make_ask(110, 10)
    bid = make_bid(115, 9)
    for listing in (dear, bid, cheap):
        book.add(listing)
    clearing = book.call_auction(T)
    # marginal ask 110, marginal bid 115: 112.5 rounds half to even to 112
    assert clearing == Clearing(
        T,
        112,
        9,
        (Match(cheap.order_id, bid.order_id, 6, 112), Match(dear.order_id, bid.order_id, 3, 112)),
    )


@pytest.mark.parametrize(("ask", "bid", "price"), [(10, 11, 10), (11, 12, 12), (10, 13, 12)])
def test_clearing_price_rounds_half_to_even(ask: int, bid: int, price: int) -> None:
    book = Book()
    book.add(make_ask(ask, 1))
    book.add(make_bid(bid, 1))
    assert book.call_auction(T).price == price


def test_ties_go_to_the_earlier_order() -> None:
    book = Book()
    first, second = make_ask(100, 5), make_ask(100, 5)
    book.add(first)
    book.add(second)
    book.add(make_bid(100, 7))
    matches = book.call_auction(T).matches
    assert [(m.ask_id, m.power_w) for m in matches] == [(first.order_id, 5), (second.order_id, 2)]


def test_other_intervals_do_not_take_part() -> None:
    book = Book()
    book.add(make_ask(100, 5, interval=T + 1))
    book.add(make_bid(120, 5))
    assert book.call_auction(T).matches == ()


orders_strategy = st.lists(
    st.tuples(st.sampled_from(OrderSide), st.integers(1, 30), st.integers(1, 60)), max_size=25
)


def build(spec: list[tuple[OrderSide, int, int]]) -> tuple[Book, list[Listing]]:
    book = Book()
    listings = [
        make_ask(price, power) if side is OrderSide.ASK else make_bid(price, power)
        for side, price, power in spec
    ]
    for listing in listings:
        book.add(listing)
    return book, listings


def best_uniform_volume(listings: list[Listing]) -> int:
    """Independent: the most any single price lets trade, min(supply, demand) at that price."""
    best = 0
    for price in {x.order.price for x in listings}:
        supply = sum(
            x.power_w for x in listings if x.order.side is OrderSide.ASK and x.order.price <= price
        )
        demand = sum(
            x.power_w for x in listings if x.order.side is OrderSide.BID and x.order.price >= price
        )
        best = max(best, min(supply, demand))
    return best


@given(orders_strategy)
def test_auction_properties(spec: list[tuple[OrderSide, int, int]]) -> None:
    book, listings = build(spec)
    by_id = {x.order_id: x for x in listings}
    clearing = book.call_auction(T)
    # the volume is the largest a uniform price allows
    assert clearing.volume_w == best_uniform_volume(listings)
    assert clearing.volume_w == sum(m.power_w for m in clearing.matches)
    assert (clearing.price is None) == (clearing.volume_w == 0)
    sold: dict[bytes, int] = {}
    bought: dict[bytes, int] = {}
    for match in clearing.matches:
        assert match.ask_id is not None and match.bid_id is not None
        ask, bid = by_id[match.ask_id], by_id[match.bid_id]
        assert ask.order.side is OrderSide.ASK and bid.order.side is OrderSide.BID
        # every match at the clearing price, inside both limits
        assert match.price == clearing.price
        assert ask.order.price <= match.price <= bid.order.price
        assert match.power_w >= 1
        sold[match.ask_id] = sold.get(match.ask_id, 0) + match.power_w
        bought[match.bid_id] = bought.get(match.bid_id, 0) + match.power_w
    # nobody trades more than it offered; both sides move the same watts
    assert all(w <= by_id[i].power_w for i, w in sold.items())
    assert all(w <= by_id[i].power_w for i, w in bought.items())
    assert sum(sold.values()) == sum(bought.values()) == clearing.volume_w
    # idempotent, and the book is unchanged
    assert book.call_auction(T) == clearing
    assert len(book) == len(listings)


@given(orders_strategy)
def test_only_the_marginal_orders_are_partly_filled(spec: list[tuple[OrderSide, int, int]]) -> None:
    book, listings = build(spec)
    by_id = {x.order_id: x for x in listings}
    clearing = book.call_auction(T)
    for side in ("ask_id", "bid_id"):
        filled: dict[bytes, int] = {}
        for match in clearing.matches:
            key = getattr(match, side)
            filled[key] = filled.get(key, 0) + match.power_w
        partial = [i for i, w in filled.items() if w < by_id[i].power_w]
        assert len(partial) <= 1
        # priority: every order better than a matched one is matched in full
        if filled:
            last = list(filled)[-1]
            assert all(filled[i] == by_id[i].power_w for i in list(filled)[:-1])
            assert partial in ([], [last])


# ---------------------------------------------------------------- take


def test_take_an_ask_whole_or_in_part() -> None:
    book = Book()
    ask = make_ask(100, 10)
    book.add(ask)
    assert book.take(ask.order_id) == Match(ask.order_id, None, 10, 100)
    assert book.take(ask.order_id, 3) == Match(ask.order_id, None, 3, 100)


def test_take_a_bid() -> None:
    book = Book()
    bid = make_bid(130, 4)
    book.add(bid)
    assert book.take(bid.order_id, 4) == Match(None, bid.order_id, 4, 130)


def test_take_refusals() -> None:
    book = Book()
    ask = make_ask(100, 10)
    book.add(ask)
    with refused("unknown_order"):
        book.take(bytes(32))
    for power in (0, -1, 11):
        with refused("bad_power"):
            book.take(ask.order_id, power)


# ---------------------------------------------------------------- terms and proposals


@dataclasses.dataclass
class Trade:
    ask: Listing
    bid: Listing
    match: Match
    terms: Terms


def trade(power: int = 600) -> Trade:
    ask = make_ask(100_000, 1000)
    bid = make_bid(150_000, 800, funds=(20_000, 15_000))  # owes 30_000 for 800 W at its price
    match = Match(ask.order_id, bid.order_id, power, 120_000)
    return Trade(ask, bid, match, trade_terms(match, ask, bid, INTERVAL_S))


def test_trade_terms() -> None:
    t = trade()
    owed = payment(600, INTERVAL_S, 120_000)
    assert owed == 18_000
    assert t.terms.payment == owed
    assert t.terms.inputs == t.ask.order.assets + t.bid.order.assets
    assert t.terms.paid == (
        Output(Epa(600, T, T), BUYER_RECEIVE),
        Output(Eca(600, T, T), SELLER_RECEIVE),
        Output(Fa(owed), SELLER_RECEIVE),
    )
    assert t.terms.change == (
        Output(Epa(400, T, T), SELLER),
        Output(Eca(200, T, T), BUYER),
        Output(Fa(35_000 - owed), BUYER),
    )


def test_a_full_fill_has_only_fa_change() -> None:
    ask = make_ask(100_000, 800)
    bid = make_bid(150_000, 800, funds=(30_000,))
    terms = trade_terms(Match(ask.order_id, bid.order_id, 800, 150_000), ask, bid, INTERVAL_S)
    assert terms.change == ()
    check_proposal(terms.transfer(CHAIN), terms, ask, bid)


@given(
    ask_power=st.integers(1, 5000),
    bid_power=st.integers(1, 5000),
    ask_price=st.integers(1, 10**6),
    spread=st.integers(0, 10**6),
    extra_funds=st.integers(0, 10**6),
    data=st.data(),
)
def test_terms_balance_by_the_ledgers_own_rule(
    ask_power: int,
    bid_power: int,
    ask_price: int,
    spread: int,
    extra_funds: int,
    data: st.DataObject,
) -> None:
    bid_price = ask_price + spread
    ask = make_ask(ask_price, ask_power)
    bid = make_bid(
        bid_price, bid_power, funds=(payment(bid_power, INTERVAL_S, bid_price) + extra_funds,)
    )
    power = data.draw(st.integers(1, min(ask_power, bid_power)))
    price = data.draw(st.integers(ask_price, bid_price))
    terms = trade_terms(Match(ask.order_id, bid.order_id, power, price), ask, bid, INTERVAL_S)
    transfer = terms.transfer(CHAIN)
    check_balanced(ask.inputs + bid.inputs, transfer.outputs, bytes(32))
    check_proposal(transfer, terms, ask, bid)


def test_a_take_is_completed_by_the_takers_order() -> None:
    book = Book()
    ask = make_ask(100_000, 1000)
    book.add(ask)
    taker = make_bid(120_000, 500)
    match = dataclasses.replace(book.take(ask.order_id, 500), bid_id=taker.order_id)
    terms = trade_terms(match, ask, taker, INTERVAL_S)
    assert terms.price == 100_000
    check_proposal(terms.transfer(CHAIN), terms, ask, taker)


TERMS_REFUSALS = {
    "price above the bid": lambda t: (dataclasses.replace(t.match, price=150_001), t.ask, t.bid),
    "price below the ask": lambda t: (dataclasses.replace(t.match, price=99_999), t.ask, t.bid),
    "more than the bid": lambda t: (dataclasses.replace(t.match, power_w=801), t.ask, t.bid),
    "no power": lambda t: (dataclasses.replace(t.match, power_w=0), t.ask, t.bid),
    "sides swapped": lambda t: (t.match, t.bid, t.ask),
    "another ask": lambda t: (t.match, make_ask(100_000, 1000), t.bid),
    "another interval": lambda t: (
        dataclasses.replace(t.match, ask_id=None),
        make_ask(100_000, 1000, interval=T + 1),
        t.bid,
    ),
    "short funds": lambda t: (
        dataclasses.replace(t.match, bid_id=None),
        t.ask,
        make_bid(150_000, 800, funds=(100,)),
    ),
}


@pytest.mark.parametrize("case", TERMS_REFUSALS.values(), ids=TERMS_REFUSALS.keys())
def test_trade_terms_refusals(case: Any) -> None:
    match, ask, bid = case(trade())
    with refused("terms_mismatch"):
        trade_terms(match, ask, bid, INTERVAL_S)


def test_the_exact_transfer_is_accepted_in_any_order_and_with_split_change() -> None:
    t = trade()
    exact = t.terms.transfer(CHAIN)
    check_proposal(exact, t.terms, t.ask, t.bid)
    shuffled = dataclasses.replace(exact, inputs=exact.inputs[::-1], outputs=exact.outputs[::-1])
    check_proposal(shuffled, t.terms, t.ask, t.bid)
    fa_change = 35_000 - t.terms.payment
    split = dataclasses.replace(
        exact,
        outputs=(*exact.outputs[:-1], Output(Fa(1), BUYER), Output(Fa(fa_change - 1), BUYER)),
    )
    check_proposal(split, t.terms, t.ask, t.bid)


def _outputs(
    t: Trade, *replace: tuple[int, Output | None], add: tuple[Output, ...] = ()
) -> Transfer:
    outputs: list[Output | None] = list(t.terms.transfer(CHAIN).outputs)
    for index, output in replace:
        outputs[index] = output
    kept = tuple(o for o in outputs if o is not None) + add
    return Transfer(CHAIN, t.terms.inputs, kept)


# outputs of the exact transfer: 0 EPA to buyer, 1 ECA to seller, 2 FA to seller,
# 3 EPA change to seller, 4 ECA change to buyer, 5 FA change to buyer
DEVIATIONS = {
    "FA one short, kept as change": lambda t: _outputs(
        t, (2, Output(Fa(17_999), SELLER_RECEIVE)), (5, Output(Fa(17_001), BUYER))
    ),
    "FA one over": lambda t: _outputs(
        t, (2, Output(Fa(18_001), SELLER_RECEIVE)), (5, Output(Fa(16_999), BUYER))
    ),
    "less EPA to the buyer": lambda t: _outputs(
        t, (0, Output(Epa(599, T, T), BUYER_RECEIVE)), (3, Output(Epa(401, T, T), SELLER))
    ),
    "EPA to Mallory": lambda t: _outputs(t, (0, Output(Epa(600, T, T), MALLORY))),
    "FA to Mallory": lambda t: _outputs(t, (2, Output(Fa(18_000), MALLORY))),
    "ECA to the seller's owner address": lambda t: _outputs(t, (1, Output(Eca(600, T, T), SELLER))),
    "FA change to Mallory": lambda t: _outputs(t, (5, Output(Fa(17_000), MALLORY))),
    "EPA change to the buyer": lambda t: _outputs(t, (3, Output(Epa(400, T, T), BUYER))),
    "extra output": lambda t: _outputs(t, add=(Output(Fa(1), SELLER_RECEIVE),)),
    "extra change created": lambda t: _outputs(t, add=(Output(Fa(1), BUYER),)),
    "FA change kept back": lambda t: _outputs(t, (5, None)),
    "EPA change dropped": lambda t: _outputs(t, (3, None)),
    "ECA change moved to another interval": lambda t: _outputs(
        t, (4, Output(Eca(200, T + 1, T + 1), BUYER))
    ),
    "energy change spread over two intervals": lambda t: _outputs(
        t, (3, Output(Epa(200, T, T + 1), SELLER)), add=(Output(Epa(200, T, T), SELLER),)
    ),
    "zero output": lambda t: _outputs(t, add=(Output(Fa(0), BUYER),)),
    "missing input": lambda t: dataclasses.replace(
        t.terms.transfer(CHAIN), inputs=t.terms.inputs[:-1]
    ),
    "extra input": lambda t: dataclasses.replace(
        t.terms.transfer(CHAIN), inputs=(*t.terms.inputs, outpoint())
    ),
    "input twice": lambda t: dataclasses.replace(
        t.terms.transfer(CHAIN), inputs=(*t.terms.inputs, t.terms.inputs[0])
    ),
    "another input": lambda t: dataclasses.replace(
        t.terms.transfer(CHAIN), inputs=(*t.terms.inputs[:-1], outpoint())
    ),
}


@pytest.mark.parametrize("deviate", DEVIATIONS.values(), ids=DEVIATIONS.keys())
def test_check_proposal_refuses_deviations(deviate: Any) -> None:
    t = trade()
    with refused("terms_mismatch"):
        check_proposal(deviate(t), t.terms, t.ask, t.bid)


def test_a_payment_rounded_to_zero_has_no_fa_output() -> None:
    ask = make_ask(1, 1)
    bid = make_bid(1, 1, funds=(5,))
    terms = trade_terms(Match(ask.order_id, bid.order_id, 1, 1), ask, bid, INTERVAL_S)
    assert terms.payment == 0  # 900 J at 1 micro-unit per kWh
    assert not any(isinstance(o.asset, Fa) for o in terms.paid)
    check_proposal(terms.transfer(CHAIN), terms, ask, bid)


# ---------------------------------------------------------------- what orders keep


def _split(outputs: tuple[Output, ...], cuts: list[int]) -> tuple[Output, ...]:
    """`outputs` with each splittable one cut in two where `cuts` says (a wallet's choice)."""
    split: list[Output] = []
    for output, cut in zip(outputs, cuts, strict=False):
        asset = output.asset
        size = asset.amount if isinstance(asset, Fa) else asset.power
        if not 1 <= cut < size:
            split.append(output)
        elif isinstance(asset, Fa):
            split += [Output(Fa(cut), output.address), Output(Fa(size - cut), output.address)]
        else:
            kind = type(asset)
            split += [
                Output(kind(cut, asset.start, asset.end), output.address),
                Output(kind(size - cut, asset.start, asset.end), output.address),
            ]
    return (*split, *outputs[len(cuts) :])


@given(
    ask_power=st.integers(1, 5000),
    bid_power=st.integers(1, 5000),
    extra_funds=st.integers(0, 10**5),
    data=st.data(),
)
def test_leftovers_hold_exactly_what_the_trade_did_not_take(
    ask_power: int, bid_power: int, extra_funds: int, data: st.DataObject
) -> None:
    ask = make_ask(100_000, ask_power)
    bid = make_bid(
        150_000, bid_power, funds=(payment(bid_power, INTERVAL_S, 150_000) + extra_funds,)
    )
    power = data.draw(st.integers(1, min(ask_power, bid_power)))
    terms = trade_terms(Match(ask.order_id, bid.order_id, power, 120_000), ask, bid, INTERVAL_S)
    cuts = data.draw(st.lists(st.integers(0, 5000), max_size=len(terms.change)))
    outputs = data.draw(st.permutations(terms.paid + _split(terms.change, cuts)))
    transfer = Transfer(CHAIN, terms.inputs, tuple(outputs))
    check_proposal(transfer, terms, ask, bid)
    transfer_id = bytes([7]) * 32

    ask_left, bid_left = leftovers(terms, ask, bid, transfer, transfer_id)

    for listing, left, rest in (
        (ask, ask_left, ask_power - power),
        (bid, bid_left, bid_power - power),
    ):
        if rest == 0:
            assert left is None
            continue
        assert left is not None
        assert (left.order_id, left.power_w, left.order.price) == (
            listing.order_id,
            rest,
            listing.order.price,
        )
        for outpoint, output in zip(left.order.assets, left.inputs, strict=True):
            assert outpoint.txid == transfer_id
            assert transfer.outputs[outpoint.index] == output
            assert output.address == listing.order.owner
    if bid_left is not None:
        assert bid_left.funds == bid.funds - terms.payment
        assert sum(1 for o in bid_left.inputs if isinstance(o.asset, Eca)) >= 1
