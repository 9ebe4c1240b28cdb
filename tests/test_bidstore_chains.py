"""Orders in several matches of one clearing, partial fills and silent parties
(bidstore/service.py): the store's chains, driven by blocks fed to `BidStore.on_block` and a
clock the test moves. The ledger node itself is not needed: the store checks orders against the
outputs of the blocks it has followed (the integration tests run the same flows on a real
ledger node)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from hypothesis import given
from test_bidstore_book import T as T_BOOK
from test_bidstore_book import build, orders_strategy

from assets import Keypair, encode_transaction, txid
from assets.codec import tx_from_wire
from assets.model import Eca, Epa, Fa, Outpoint, Output, Transfer
from assets.signing import sign_transfer
from bidstore.orders import Order, OrderSide, encode_order, payment, sign_order
from bidstore.service import BidStore, BidStoreError, Limits
from bidstore.trades import chains_of
from ledger.blocks import SignedHead
from ledger.client import LedgerClient
from simulation.scenario import Scenario, pay

INTERVAL_S = 60
EPOCH = 1_700_000_000
T = 100  # the interval every order here is for
STEP_TIMEOUT_S = 30.0


@dataclass
class Clock:
    now: float = EPOCH + 10 * INTERVAL_S

    def __call__(self) -> float:
        return self.now


@dataclass
class Market:
    store: BidStore
    scenario: Scenario
    clock: Clock
    meter: Keypair = field(default_factory=Keypair.generate)
    nonces: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def block(self, *txs: Any) -> None:
        self.store.on_block(cast(SignedHead, None), [encode_transaction(tx) for tx in txs])

    def issue(self, *outputs: Output) -> list[Outpoint]:
        issue = self.scenario.issue("meter", self.meter, next(self.nonces), outputs)
        self.block(issue)
        return [Outpoint(txid(issue), n) for n in range(len(outputs))]

    def signed(self, key: Keypair, side: OrderSide, price: int, assets: list[Outpoint]) -> bytes:
        """An order of `key` for T over a fresh challenge, paying a fresh address: its wire."""
        challenge = bytes.fromhex(self.store.challenge()["challenge"])
        receive = Keypair.generate().public_key
        order = Order(side, T, price, tuple(assets), "relay", receive, key.public_key, challenge)
        return encode_order(sign_order(order, key))

    def post(self, key: Keypair, side: OrderSide, price: int, assets: list[Outpoint]) -> str:
        return str(self.store.post_order(self.signed(key, side, price, assets))["id"])

    def seller(self, power: int, price: int) -> tuple[Keypair, str]:
        key = Keypair.generate()
        (epa,) = self.issue(pay(Epa(power, T, T), key))
        return key, self.post(key, OrderSide.ASK, price, [epa])

    def buyer(self, power: int, price: int, funds: int | None = None) -> tuple[Keypair, str]:
        key = Keypair.generate()
        funds = payment(power, INTERVAL_S, price) if funds is None else funds
        eca, fa = self.issue(pay(Eca(power, T, T), key), pay(Fa(funds), key))
        return key, self.post(key, OrderSide.BID, price, [eca, fa])

    def settle(self, trade: dict[str, Any], *keys: Keypair) -> Transfer:
        """The trade's transfer as its terms give it, signed by `keys`, in a block."""
        unsigned = tx_from_wire(trade["terms"]["transfer"])
        assert isinstance(unsigned, Transfer)
        signed = sign_transfer(unsigned, keys)
        self.block(signed)
        return signed

    def trades_of(self, order_id: str) -> list[dict[str, Any]]:
        ids = self.store.order(bytes.fromhex(order_id))["trades"]
        return [self.store.trading.summary(self.store.trades[bytes.fromhex(i)]) for i in ids]

    def asks(self) -> list[dict[str, Any]]:
        return list(self.store.interval_book(T)["asks"])

    def bids(self) -> list[dict[str, Any]]:
        return list(self.store.interval_book(T)["bids"])


@pytest.fixture
def market() -> Iterator[Market]:
    scenario = Scenario(epoch=EPOCH, interval_s=INTERVAL_S)
    clock = Clock()
    ledger = LedgerClient("http://127.0.0.1:9")  # never asked: every output is indexed
    limits = Limits(max_orders_per_owner=4)
    store = BidStore(
        ledger,
        scenario.genesis,
        gate_s=0,
        limits=limits,
        clock=clock,
        wall_clock=clock,  # one clock moves both the intervals and the step timeouts
        step_timeout_s=30,
    )
    try:
        yield Market(store, scenario, clock)
    finally:
        ledger.close()


def test_one_ask_against_two_bids_settles_in_turn_and_its_rest_is_listed_again(
    market: Market,
) -> None:
    seller, ask = market.seller(3000, 100_000)
    buyer1, bid1 = market.buyer(1000, 200_000)
    buyer2, bid2 = market.buyer(1500, 150_000)

    cleared = market.store.clear(T)
    assert cleared["price"] == 125_000
    (first,) = cleared["trades"]  # the second match waits for the change of the first
    assert (first["ask"], first["bid"], first["power"]) == (ask, bid1, 1000)
    assert market.asks() == market.bids() == []
    assert market.store.order(bytes.fromhex(ask))["status"] == "trading"

    settled = market.settle(first, buyer1, seller)
    assert market.store.trades[bytes.fromhex(first["id"])].status == "settled"
    _, second = market.trades_of(ask)
    assert (second["bid"], second["power"], second["price"]) == (bid2, 1500, 125_000)
    seller_change = next(n for n, o in enumerate(settled.outputs) if o.address == seller.public_key)
    change_outpoint = {"tx": txid(settled).hex(), "index": seller_change}
    assert change_outpoint in second["terms"]["inputs"]  # it spends what the first left

    market.settle(second, buyer2, seller)
    assert market.store.trades[bytes.fromhex(second["id"])].status == "settled"
    (rest,) = market.asks()  # 3000 - 1000 - 1500 W, listed again under the same id
    assert (rest["id"], rest["power"], rest["price"]) == (ask, 500, 100_000)
    assert market.store.order(bytes.fromhex(bid1))["status"] == "done"

    buyer3 = Keypair.generate()
    eca, fa = market.issue(pay(Eca(500, T, T), buyer3), pay(Fa(10_000), buyer3))
    taker = market.signed(buyer3, OrderSide.BID, 100_000, [eca, fa])
    third = market.store.take(bytes.fromhex(ask), taker, None)
    assert third["power"] == 500
    market.settle(third, buyer3, seller)
    assert market.asks() == []
    assert market.store.order(bytes.fromhex(ask))["status"] == "done"


def test_one_bid_against_two_asks_pays_each_from_its_change(market: Market) -> None:
    seller1, ask1 = market.seller(1000, 100_000)
    seller2, ask2 = market.seller(1000, 120_000)
    buyer, bid = market.buyer(2000, 200_000)

    (first,) = market.store.clear(T)["trades"]
    market.settle(first, buyer, seller1)
    _, second = market.trades_of(bid)
    assert second["ask"] == ask2
    price = second["price"]
    paid_before = payment(1000, INTERVAL_S, price)
    funds = payment(2000, INTERVAL_S, 200_000)
    fa_change = [
        c["asset"]["amount"] for c in first["terms"]["change"] if c["asset"]["kind"] == "FA"
    ]
    assert fa_change == [funds - paid_before]
    market.settle(second, buyer, seller2)
    assert market.bids() == [] and market.asks() == []
    assert market.store.order(bytes.fromhex(ask1))["status"] == "done"


def test_a_silent_buyer_is_let_go_and_the_chain_goes_on(market: Market) -> None:
    seller, ask = market.seller(3000, 100_000)
    _, bid1 = market.buyer(1000, 200_000)
    buyer2, bid2 = market.buyer(1000, 150_000)
    (first,) = market.store.clear(T)["trades"]

    market.clock.now += STEP_TIMEOUT_S - 1
    market.store.tick()
    assert market.store.trades[bytes.fromhex(first["id"])].status == "open"
    market.clock.now += 2
    market.store.tick()
    assert market.store.trades[bytes.fromhex(first["id"])].status == "abandoned"
    assert market.store.order(bytes.fromhex(bid1))["status"] == "done"  # let go, not listed

    (second,) = market.trades_of(bid2)
    assert (second["ask"], second["power"]) == (ask, 1000)
    original_epa = first["terms"]["inputs"][0]
    assert original_epa in second["terms"]["inputs"]  # nothing was spent: the same EPA
    market.settle(second, buyer2, seller)
    (rest,) = market.asks()
    assert rest["power"] == 2000


def test_a_silent_seller_is_let_go_and_the_bid_goes_back_to_the_book(market: Market) -> None:
    _, ask = market.seller(1000, 100_000)
    buyer, bid = market.buyer(1000, 150_000)
    (trade,) = market.store.clear(T)["trades"]
    unsigned = tx_from_wire(trade["terms"]["transfer"])
    assert isinstance(unsigned, Transfer)
    proposal = sign_transfer(unsigned, [buyer])
    market.clock.now += STEP_TIMEOUT_S - 1  # the buyer proposes late in its turn
    market.store.propose(bytes.fromhex(trade["id"]), encode_transaction(proposal))
    market.clock.now += STEP_TIMEOUT_S - 1  # the seller's turn began at the proposal
    market.store.tick()
    assert market.store.trades[bytes.fromhex(trade["id"])].status == "proposed"
    market.clock.now += 2
    market.store.tick()
    assert market.store.trades[bytes.fromhex(trade["id"])].status == "abandoned"
    assert [b["id"] for b in market.bids()] == [bid]
    assert market.asks() == []
    assert market.store.order(bytes.fromhex(ask))["status"] == "done"


def test_a_failed_trade_sends_the_waiting_orders_back_to_the_book(market: Market) -> None:
    seller, ask = market.seller(2000, 100_000)
    buyer1, bid1 = market.buyer(1000, 200_000)
    _, bid2 = market.buyer(1000, 150_000)
    (first,) = market.store.clear(T)["trades"]
    elsewhere = Transfer(
        market.scenario.chain,
        (Outpoint(bytes.fromhex(first["terms"]["inputs"][0]["tx"]), 0),),
        (pay(Epa(2000, T, T), Keypair.generate()),),
    )
    market.block(sign_transfer(elsewhere, [seller]))  # the seller sells it elsewhere
    assert market.store.trades[bytes.fromhex(first["id"])].status == "failed"
    assert [b["id"] for b in market.bids()] == [bid1, bid2]  # by price, as before
    assert market.asks() == []
    assert len(market.trades_of(bid2)) == 0
    del buyer1, ask


def test_a_waiting_order_spent_before_its_turn_is_dropped(market: Market) -> None:
    seller, ask = market.seller(2000, 100_000)
    buyer1, bid1 = market.buyer(1000, 200_000)
    buyer2, bid2 = market.buyer(1000, 150_000)
    (first,) = market.store.clear(T)["trades"]
    eca2 = market.store.trades[bytes.fromhex(first["id"])].chain.holding[bytes.fromhex(bid2)]
    gone = Transfer(
        market.scenario.chain,
        (eca2.order.assets[0],),
        (pay(eca2.inputs[0].asset, Keypair.generate()),),
    )
    market.block(sign_transfer(gone, [buyer2]))
    market.settle(first, buyer1, seller)
    assert len(market.trades_of(ask)) == 1  # no second trade: its bid is gone
    (rest,) = market.asks()
    assert rest["power"] == 1000
    del bid1


def test_held_orders_count_against_their_owner(market: Market) -> None:
    seller = Keypair.generate()
    outpoints = market.issue(*(pay(Epa(1000, T, T), seller) for _ in range(5)))
    ids = [market.post(seller, OrderSide.ASK, 100_000, [o]) for o in outpoints[:4]]
    market.buyer(1000, 150_000)
    market.store.clear(T)  # one ask is held in a trade, three stay open
    assert len(market.asks()) == 3
    with pytest.raises(BidStoreError) as refused:
        market.post(seller, OrderSide.ASK, 100_000, [outpoints[4]])
    assert refused.value.code == "too_many_orders"
    del ids


def test_an_unfinished_chain_ends_when_its_interval_begins(market: Market) -> None:
    market.seller(2000, 100_000)
    market.buyer(1000, 200_000)
    _, bid2 = market.buyer(1000, 150_000)
    (first,) = market.store.clear(T)["trades"]
    market.clock.now = EPOCH + T * INTERVAL_S
    market.store.tick()
    assert market.store.trades[bytes.fromhex(first["id"])].status == "expired"
    assert market.asks() == market.bids() == []
    assert market.store.trading.held == {} and not market.store.trading.held_by_owner
    with pytest.raises(BidStoreError):
        market.store.order(bytes.fromhex(bid2))


@given(orders_strategy)
def test_an_auctions_matches_fall_into_chains_of_shared_orders(
    spec: list[tuple[OrderSide, int, int]],
) -> None:
    book, _ = build(spec)
    matches = book.call_auction(T_BOOK).matches
    chains = chains_of(matches)
    flat = [m for c in chains for m in c]
    assert len(flat) == len(matches) and set(flat) == set(matches)  # each match once
    owner: dict[bytes | None, int] = {}
    for n, chain in enumerate(chains):
        assert [m for m in matches if m in chain] == list(chain)  # in auction order
        seen: set[bytes | None] = set()
        for k, match in enumerate(chain):
            ids = {match.ask_id, match.bid_id}
            assert k == 0 or ids & seen  # each later match shares an order with the chain
            seen |= ids
        for order in seen:
            assert owner.setdefault(order, n) == n  # no order is in two chains


def test_a_taker_proposes_and_a_silent_taker_gives_the_resting_order_back(
    market: Market,
) -> None:
    buyer, bid = market.buyer(1000, 150_000)
    seller = Keypair.generate()
    (epa,) = market.issue(pay(Epa(1000, T, T), seller))
    taker = market.signed(seller, OrderSide.ASK, 120_000, [epa])
    trade = market.store.take(bytes.fromhex(bid), taker, None)
    assert trade["proposer"] == "seller"
    unsigned = tx_from_wire(trade["terms"]["transfer"])
    assert isinstance(unsigned, Transfer)
    with pytest.raises(BidStoreError) as refused:  # the buyer does not propose a take of its bid
        market.store.propose(
            bytes.fromhex(trade["id"]), encode_transaction(sign_transfer(unsigned, [buyer]))
        )
    assert refused.value.code == "bad_signature"

    market.clock.now += STEP_TIMEOUT_S + 1
    market.store.tick()
    assert market.store.trades[bytes.fromhex(trade["id"])].status == "abandoned"
    assert [b["id"] for b in market.bids()] == [bid]  # the resting bid is open again
