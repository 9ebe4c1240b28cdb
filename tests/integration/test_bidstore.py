"""The bid store end to end over HTTP on loopback (docs/bidstore-api.md): a real `petra ledger
serve` process, the store served in this process through its ASGI app with its follower and
ticker running. Orders are posted on assets a meter issued on that ledger; trades are proposed,
fetched with the seller's address key, countersigned, submitted and seen to settle."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from waiting import wait_until

from assets import (
    Authorization,
    Eca,
    Epa,
    Fa,
    Keypair,
    Outpoint,
    Transfer,
    encode_transaction,
    txid,
)
from assets.codec import tx_from_wire
from assets.keyfile import dump_keys
from assets.model import Output
from assets.signing import sign_transfer
from bidstore.api import create_app
from bidstore.orders import Order, OrderSide, encode_order, payment, sign_order
from bidstore.service import BidStore, Limits, fetch_message
from dso.book import book_from_wire
from ledger.client import LedgerClient
from simulation.processes import stop
from simulation.scenario import Scenario, pay

from .nodes import authorize_now, serve_ledger

INTERVAL_S = 1
METER = "bidstore-meter"
AHEAD = 3600  # orders are for an interval an hour ahead: no test outlives it


@dataclass
class Chain:
    scenario: Scenario
    url: str
    meter: Keypair
    nonces: itertools.count[int]
    genesis: Path

    def now(self) -> int:
        return (int(time.time()) - self.scenario.epoch) // INTERVAL_S

    def issue(self, outputs: list[Output]) -> list[Outpoint]:
        """One issue by the meter; the outpoints of `outputs`, in order."""
        issue = self.scenario.issue(METER, self.meter, next(self.nonces), outputs)
        with LedgerClient(self.url) as ledger:
            ledger.submit(encode_transaction(issue))
        return [Outpoint(txid(issue), n) for n in range(len(outputs))]

    def submit(self, tx: Transfer) -> None:
        with LedgerClient(self.url) as ledger:
            ledger.submit(encode_transaction(tx))


@pytest.fixture(scope="module", name="chain")
def chain_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """A ledger node on a chain of one-second intervals, with one meter authorized."""
    tmp = tmp_path_factory.mktemp("bidstore")
    scenario = Scenario(epoch=int(time.time()) - 10 * INTERVAL_S, interval_s=INTERVAL_S)
    genesis, keys = tmp / "genesis.json", tmp / "keys.json"
    genesis.write_bytes(scenario.genesis_raw)
    keys.write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
    url, process = serve_ledger(genesis, keys, f"sqlite:///{tmp / 'ledger.sqlite'}", tmp / "l.log")
    meter = Keypair.generate()
    try:
        authorize_now(url, scenario, [Authorization(METER, meter.public_key, 10**9, 10**9)])
        yield Chain(scenario, url, meter, itertools.count(1), genesis)
    finally:
        stop(process)


@pytest.fixture
def store(chain: Chain) -> Iterator[TestClient]:
    """The bid store of the chain, its follower and ticker running."""
    ledger = LedgerClient(chain.url)
    limits = Limits(
        requests_per_s=1000,
        burst=1000,
        address_requests_per_s=1000,
        address_burst=1000,
        max_orders_per_owner=4,
    )
    service = BidStore(ledger, chain.scenario.genesis, gate_s=0, limits=limits)
    try:
        with TestClient(create_app(service), base_url="http://127.0.0.1") as client:
            yield client
    finally:
        ledger.close()


def challenge(http: httpx.Client) -> bytes:
    answer = http.post("/v1/challenges")
    assert answer.status_code == 201, answer.text
    return bytes.fromhex(answer.json()["challenge"])


def order(
    http: httpx.Client,
    key: Keypair,
    side: OrderSide,
    interval: int,
    price: int,
    assets: list[Outpoint],
    receive: bytes | None = None,
    owner: bytes | None = None,
) -> Order:
    """An order signed by `key` over a fresh challenge of the store."""
    unsigned = Order(
        side,
        interval,
        price,
        tuple(assets),
        "relay",
        receive or Keypair.generate().public_key,
        owner or key.public_key,
        challenge(http),
    )
    return sign_order(unsigned, key)


def post(http: httpx.Client, signed: Order) -> httpx.Response:
    answer: httpx.Response = http.post("/v1/orders", content=encode_order(signed))
    return answer


def refused(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code, answer.text


def fetch(http: httpx.Client, trade_id: str, key: Keypair) -> httpx.Response:
    """GET the trade, signed by `key` over a fresh challenge and the trade's id."""
    fresh = challenge(http)
    answer: httpx.Response = http.get(
        f"/v1/trades/{trade_id}", headers=fetch_headers(trade_id, key, fresh)
    )
    return answer


def fetch_headers(trade_id: str, key: Keypair, fresh: bytes) -> dict[str, str]:
    signature = key.sign(fetch_message(bytes.fromhex(trade_id), fresh))
    return {
        "X-Petra-Address": key.public_key.hex(),
        "X-Petra-Challenge": fresh.hex(),
        "X-Petra-Signature": signature.hex(),
    }


@dataclass
class Parties:
    seller: Keypair
    buyer: Keypair
    epa: Outpoint
    eca: Outpoint
    fa: Outpoint


def funded(chain: Chain, power: int, funds: int, interval: int) -> Parties:
    """A seller holding EPA(power) and a buyer holding ECA(power) and FA(funds) for
    `interval`, from one issue on the ledger."""
    seller, buyer = Keypair.generate(), Keypair.generate()
    epa, eca, fa = chain.issue(
        [
            pay(Epa(power, interval, interval), seller),
            pay(Eca(power, interval, interval), buyer),
            pay(Fa(funds), buyer),
        ]
    )
    return Parties(seller, buyer, epa, eca, fa)


def wait_settled(http: httpx.Client, trade_id: str, key: Keypair) -> dict[str, Any]:
    """The trade, read as `key`, once it is no longer `proposed`."""

    def answered() -> dict[str, Any] | None:
        trade: dict[str, Any] = fetch(http, trade_id, key).json()
        return trade if trade["status"] != "proposed" else None

    return wait_until(answered, 30, f"trade {trade_id} to leave proposed", interval_s=0.1)


def settle(http: httpx.Client, chain: Chain, trade: dict[str, Any], parties: Parties) -> str:
    """The buyer proposes the trade's transfer, the seller fetches, countersigns and submits
    it; returns the transfer's id once the store has seen it settle the trade."""
    unsigned = tx_from_wire(trade["terms"]["transfer"])
    assert isinstance(unsigned, Transfer)
    proposal = sign_transfer(unsigned, [parties.buyer])
    answer = http.post(f"/v1/trades/{trade['id']}/proposal", content=encode_transaction(proposal))
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "proposed"

    fetched = fetch(http, trade["id"], parties.seller)
    assert fetched.status_code == 200, fetched.text
    body = fetched.json()
    assert body["role"] == "seller"
    relayed = tx_from_wire(body["proposal"])
    assert isinstance(relayed, Transfer)
    assert relayed == proposal  # the store relays the buyer's transfer unchanged
    signed = sign_transfer(relayed, [parties.seller])
    chain.submit(signed)

    settled = wait_settled(http, trade["id"], parties.buyer)
    assert settled["status"] == "settled", settled
    assert settled["txid"] == txid(signed).hex()
    return str(settled["txid"])


# ---------------------------------------------------------------- post, list, take, relay


def test_post_list_take_propose_fetch_countersign_and_settle(
    chain: Chain, store: TestClient
) -> None:
    t = chain.now() + AHEAD
    power, ask_price, bid_price = 1000, 150_000, 200_000
    parties = funded(chain, power, 1000, t)
    ask = order(store, parties.seller, OrderSide.ASK, t, ask_price, [parties.epa])
    posted = post(store, ask)
    assert posted.status_code == 201, posted.text
    ask_id = posted.json()["id"]

    book = store.get("/v1/book").json()
    mine = [o for o in book["orders"] if o["id"] == ask_id]
    assert mine == [
        {
            "id": ask_id,
            "side": "ask",
            "power": power,
            "price": ask_price,
            "contact": "relay",
            "interval": t,
            "start": t,
            "end": t,
        }
    ]
    assert any(e.side == "ask" and e.power == power for e in book_from_wire(book))  # as the DSO
    shown = store.get(f"/v1/book/{t}").json()
    assert [a["id"] for a in shown["asks"]] == [ask_id] and shown["bids"] == []
    assert parties.seller.public_key.hex() not in str(book)  # the book is anonymous

    bid = order(store, parties.buyer, OrderSide.BID, t, bid_price, [parties.eca, parties.fa])
    taken = store.post("/v1/takes", json={"order": ask_id, "taker": _wire(bid)})
    assert taken.status_code == 201, taken.text
    trade = taken.json()
    owed = payment(power, INTERVAL_S, ask_price)
    assert (trade["status"], trade["price"], trade["power"], trade["payment"]) == (
        "open",
        ask_price,
        power,
        owed,
    )
    assert store.get(f"/v1/book/{t}").json()["asks"] == []  # a traded order leaves the book
    assert store.get(f"/v1/orders/{ask_id}").json()["trades"] == [trade["id"]]

    refused(store.get(f"/v1/trades/{trade['id']}"), 401, "unauthenticated")
    refused(fetch(store, trade["id"], Keypair.generate()), 403, "not_party")
    fresh = challenge(store)
    headers = fetch_headers(trade["id"], parties.seller, fresh)
    assert store.get(f"/v1/trades/{trade['id']}", headers=headers).status_code == 200
    refused(store.get(f"/v1/trades/{trade['id']}", headers=headers), 401, "bad_challenge")

    settle(store, chain, trade, parties)
    with LedgerClient(chain.url) as ledger:
        received = ledger.unspent(bytes.fromhex(trade["terms"]["paid"][0]["address"]))
    assert [o["asset"] for o in received] == [{"kind": "EPA", "power": power, "start": t, "end": t}]


def test_a_proposal_that_pays_less_or_is_unsigned_is_refused(
    chain: Chain, store: TestClient
) -> None:
    t = chain.now() + AHEAD
    parties = funded(chain, 500, 1000, t)
    ask = post(store, order(store, parties.seller, OrderSide.ASK, t, 300_000, [parties.epa]))
    bid = order(store, parties.buyer, OrderSide.BID, t, 300_000, [parties.eca, parties.fa])
    trade = store.post("/v1/takes", json={"order": ask.json()["id"], "taker": _wire(bid)}).json()
    unsigned = tx_from_wire(trade["terms"]["transfer"])
    assert isinstance(unsigned, Transfer)
    short = tuple(
        Output(Fa(o.asset.amount - 1), o.address)
        if isinstance(o.asset, Fa) and o.address != parties.buyer.public_key
        else Output(Fa(o.asset.amount + 1), o.address)
        if isinstance(o.asset, Fa)
        else o
        for o in unsigned.outputs
    )
    cheap = sign_transfer(Transfer(unsigned.chain, unsigned.inputs, short), [parties.buyer])
    url = f"/v1/trades/{trade['id']}/proposal"
    refused(store.post(url, content=encode_transaction(cheap)), 422, "terms_mismatch")
    refused(store.post(url, content=encode_transaction(unsigned)), 401, "bad_signature")
    by_seller = sign_transfer(unsigned, [parties.seller])
    refused(store.post(url, content=encode_transaction(by_seller)), 401, "bad_signature")
    refused(store.post(url, content=b"{}"), 400, "malformed")


# ---------------------------------------------------------------- the call auction


def test_an_auction_clears_at_one_price_and_its_trade_settles(
    chain: Chain, store: TestClient
) -> None:
    t = chain.now() + AHEAD
    power = 2000
    parties = funded(chain, power, 10_000, t)
    ask = post(store, order(store, parties.seller, OrderSide.ASK, t, 100_000, [parties.epa]))
    bid_order = order(store, parties.buyer, OrderSide.BID, t, 201_000, [parties.eca, parties.fa])
    bid = post(store, bid_order)
    assert ask.status_code == bid.status_code == 201, (ask.text, bid.text)

    clearing = store.get(f"/v1/auctions/{t}").json()
    assert clearing["price"] == 150_500 and clearing["volume"] == power
    assert store.get(f"/v1/auctions/{t}").json() == clearing  # looking changes nothing
    cleared = store.post(f"/v1/auctions/{t}/clear")
    assert cleared.status_code == 200, cleared.text
    (trade,) = cleared.json()["trades"]
    assert (trade["ask"], trade["bid"], trade["price"]) == (
        ask.json()["id"],
        bid.json()["id"],
        150_500,
    )
    assert store.get(f"/v1/book/{t}").json() == {"interval": t, "asks": [], "bids": []}
    assert store.post(f"/v1/auctions/{t}/clear").json()["trades"] == []

    settle(store, chain, trade, parties)


# ---------------------------------------------------------------- refusals


def test_an_order_on_an_asset_the_poster_does_not_own_is_refused(
    chain: Chain, store: TestClient
) -> None:
    t = chain.now() + AHEAD
    parties = funded(chain, 100, 100, t)
    mallory = Keypair.generate()
    theft = order(store, mallory, OrderSide.ASK, t, 100_000, [parties.epa])
    refused(post(store, theft), 403, "not_owner")


def test_an_order_on_a_spent_asset_is_refused(chain: Chain, store: TestClient) -> None:
    t = chain.now() + AHEAD
    parties = funded(chain, 100, 100, t)
    moved = chain.scenario.transfer(
        [parties.epa], [pay(Epa(100, t, t), parties.seller)], parties.seller
    )
    chain.submit(moved)
    with LedgerClient(chain.url) as ledger:
        head = ledger.head()
    assert head is not None
    # the store knows of the spend once it has followed the ledger to its block
    wait_until(
        lambda: store.get("/v1/status").json()["height"] >= head.header.height,
        30,
        "the store to follow the ledger",
    )
    spent = order(store, parties.seller, OrderSide.ASK, t, 100_000, [parties.epa])
    refused(post(store, spent), 409, "spent")


def test_a_replayed_challenge_is_refused(chain: Chain, store: TestClient) -> None:
    t = chain.now() + AHEAD
    parties = funded(chain, 100, 100, t)
    ask = order(store, parties.seller, OrderSide.ASK, t, 100_000, [parties.epa])
    assert post(store, ask).status_code == 201
    refused(post(store, ask), 401, "bad_challenge")


def test_challenges_taken_several_at_once_are_each_good_once(
    chain: Chain, store: TestClient
) -> None:
    t = chain.now() + AHEAD
    answer = store.post("/v1/challenges", params={"count": 3})
    assert answer.status_code == 201, answer.text
    taken = answer.json()["challenges"]
    assert len(set(taken)) == 3 and answer.json()["challenge"] == taken[0]
    parties = [funded(chain, 100, 100, t) for _ in taken]
    for fresh, party in zip(taken, parties, strict=True):
        unsigned = Order(
            OrderSide.ASK,
            t,
            100_000,
            (party.epa,),
            "relay",
            Keypair.generate().public_key,
            party.seller.public_key,
            bytes.fromhex(fresh),
        )
        signed = sign_order(unsigned, party.seller)
        assert post(store, signed).status_code == 201
        refused(post(store, signed), 401, "bad_challenge")
    for count in (0, 101, "many"):
        refused(store.post("/v1/challenges", params={"count": count}), 400, "bad_request")


def test_a_forged_signature_is_refused(chain: Chain, store: TestClient) -> None:
    t = chain.now() + AHEAD
    parties = funded(chain, 100, 100, t)
    forged = order(
        store,
        Keypair.generate(),
        OrderSide.ASK,
        t,
        100_000,
        [parties.epa],
        owner=parties.seller.public_key,
    )
    refused(post(store, forged), 401, "bad_signature")


def test_an_order_whose_asset_is_spent_leaves_the_book(chain: Chain, store: TestClient) -> None:
    t = chain.now() + AHEAD
    parties = funded(chain, 100, 100, t)
    ask = post(store, order(store, parties.seller, OrderSide.ASK, t, 100_000, [parties.epa]))
    assert ask.status_code == 201
    chain.submit(
        chain.scenario.transfer(
            [parties.epa], [pay(Epa(100, t, t), parties.seller)], parties.seller
        )
    )
    wait_until(
        lambda: store.get(f"/v1/book/{t}").json()["asks"] == [],
        30,
        "the spent ask to leave the book",
        interval_s=0.1,
    )
    refused(store.get(f"/v1/orders/{ask.json()['id']}"), 404, "unknown_order")


def test_an_owner_has_a_bounded_number_of_open_orders(chain: Chain, store: TestClient) -> None:
    t = chain.now() + AHEAD
    seller = Keypair.generate()
    outpoints = chain.issue([pay(Epa(10, t, t), seller) for _ in range(5)])
    for outpoint in outpoints[:4]:
        assert (
            post(store, order(store, seller, OrderSide.ASK, t, 1000, [outpoint])).status_code == 201
        )
    refused(
        post(store, order(store, seller, OrderSide.ASK, t, 1000, [outpoints[4]])),
        429,
        "too_many_orders",
    )
    # re-pricing an open order replaces it and is not a new one
    again = post(store, order(store, seller, OrderSide.ASK, t, 2000, [outpoints[0]]))
    assert again.status_code == 201 and len(again.json()["replaced"]) == 1


def test_a_connection_over_its_request_budget_is_refused(chain: Chain) -> None:
    with LedgerClient(chain.url) as ledger:
        limits = Limits(requests_per_s=0.5, burst=3)
        service = BidStore(ledger, chain.scenario.genesis, limits=limits)
        app = create_app(service, run=False)
        http = TestClient(app, client=("127.0.0.1", 40000))
        answers = [http.get("/v1/book").status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        limited = http.get("/v1/book")
        refused(limited, 429, "rate_limited")
        assert "this connection" in limited.json()["error"]["message"]
        assert int(limited.headers["retry-after"]) >= 1
        # another connection (another Tor stream) has its own budget
        other = TestClient(app, client=("127.0.0.1", 40001))
        assert other.get("/v1/book").status_code == 200


def test_oversized_bodies_are_refused_unread(store: TestClient) -> None:
    refused(store.post("/v1/orders", content=b"x" * 5000), 413, "too_large")
    refused(store.post("/v1/takes", content=b"x" * 10_000), 413, "too_large")


def _wire(signed: Order) -> Any:
    return json.loads(encode_order(signed))
