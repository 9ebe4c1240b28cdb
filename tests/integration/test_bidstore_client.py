"""`BidStoreClient` against a real `petra bidstore serve` process over a real ledger node: a
whole trade (post, take, propose, fetch, countersign, submit, settled) and an auction's, the
store's refusals as `BidStoreClientError` codes, and what the client refuses by itself."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from test_cli import petra
from test_cli import refused as refused_run
from waiting import wait_until

from assets import Keypair, txid
from bidstore.client import TOR_TIMEOUT_S, BidStoreClient, BidStoreClientError, countersign
from bidstore.orders import OrderSide, payment, sign_order
from ledger.client import LedgerClient
from petra.vocabulary import elide
from simulation.processes import free_port, start_petra, stop, wait_serving

from .test_bidstore import (
    AHEAD,
    INTERVAL_S,
    Chain,
    chain_fixture,  # noqa: F401  (its ledger node, for this module too)
    funded,
)

ONION = "http://" + "a" * 56 + ".onion"


@pytest.fixture(scope="module", name="store_url")
def store_url_fixture(chain: Chain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`petra bidstore serve` over the chain's ledger, on a free loopback port: its URL."""
    log = tmp_path_factory.mktemp("bidstore-client") / "bidstore.log"
    port = free_port()
    process: subprocess.Popen[bytes] = start_petra(
        *("bidstore", "serve", "--genesis", str(chain.genesis), "--ledger", chain.url),
        *("--port", str(port), "--rate", "1000", "--burst", "1000"),
        log=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_serving(url, process, log)
        yield url
    finally:
        stop(process)


@pytest.fixture
def client(store_url: str) -> Iterator[BidStoreClient]:
    with BidStoreClient(store_url) as store:
        yield store


def wait_settled(client: BidStoreClient, trade_id: str, key: Keypair) -> dict[str, Any]:
    """The trade, read as `key`, once it is no longer `proposed`."""

    def answered() -> dict[str, Any] | None:
        trade = client.fetch_trade(trade_id, key)
        return trade if trade["status"] != "proposed" else None

    return wait_until(answered, 30, f"trade {trade_id} to leave proposed", interval_s=0.2)


def refused(code: str) -> Any:
    return pytest.raises(BidStoreClientError, match=f"^{code}: ")


# ---------------------------------------------------------------- trades


def test_a_take_is_proposed_countersigned_and_settles(chain: Chain, client: BidStoreClient) -> None:
    t = chain.now() + AHEAD
    power, price = 1000, 150_000
    parties = funded(chain, power, 1000, t)
    pay_to, energy_to = Keypair.generate().public_key, Keypair.generate().public_key
    ask = client.place(OrderSide.ASK, parties.seller, t, price, [parties.epa], pay_to)
    assert (ask["side"], ask["power"], ask["price"], ask["replaced"]) == ("ask", power, price, [])
    assert [a["id"] for a in client.interval_book(t)["asks"]] == [ask["id"]]
    assert any(o["id"] == ask["id"] for o in client.book()["orders"])
    assert client.status()["interval_s"] == INTERVAL_S

    bid = client.signed_order(
        OrderSide.BID, parties.buyer, t, 200_000, [parties.eca, parties.fa], energy_to
    )
    trade = client.take(ask["id"], bid)
    assert (trade["status"], trade["price"], trade["payment"]) == (
        "open",
        price,
        payment(power, INTERVAL_S, price),
    )
    assert client.order(ask["id"])["trades"] == [trade["id"]]
    with refused("not_proposed"):
        countersign(client.fetch_trade(trade["id"], parties.seller), parties.seller)

    proposed = client.propose_signed(trade["id"], parties.buyer)
    assert proposed["status"] == "proposed"
    with LedgerClient(chain.url) as ledger:
        submitted = client.countersign_and_submit(trade["id"], parties.seller, ledger)
        settled = wait_settled(client, trade["id"], parties.buyer)
        assert (settled["status"], settled["role"]) == ("settled", "buyer")
        assert settled["txid"] == submitted.txid.hex()
        received = ledger.unspent(energy_to)
    assert [o["asset"] for o in received] == [{"kind": "EPA", "power": power, "start": t, "end": t}]


def test_an_auction_clears_and_its_trade_settles(chain: Chain, client: BidStoreClient) -> None:
    t = chain.now() + AHEAD
    parties = funded(chain, 2000, 10_000, t)
    anyone = Keypair.generate().public_key
    ask = client.place(OrderSide.ASK, parties.seller, t, 100_000, [parties.epa], anyone)
    bid = client.place(OrderSide.BID, parties.buyer, t, 201_000, [parties.eca, parties.fa], anyone)
    assert client.auction(t)["price"] == 150_500
    (trade,) = client.clear(t)["trades"]
    assert (trade["ask"], trade["bid"]) == (ask["id"], bid["id"])

    client.propose_signed(trade["id"], parties.buyer)
    fetched = client.fetch_trade(trade["id"], parties.seller)
    assert fetched["role"] == "seller"
    signed = countersign(fetched, parties.seller)
    chain.submit(signed)
    assert wait_settled(client, trade["id"], parties.seller)["txid"] == txid(signed).hex()


def test_a_seller_taking_a_bid_proposes_and_the_buyer_countersigns(
    chain: Chain, client: BidStoreClient
) -> None:
    t = chain.now() + AHEAD
    parties = funded(chain, 600, 1000, t)
    pay_to, energy_to = Keypair.generate().public_key, Keypair.generate().public_key
    bid = client.place(
        OrderSide.BID, parties.buyer, t, 180_000, [parties.eca, parties.fa], energy_to
    )
    ask = client.signed_order(OrderSide.ASK, parties.seller, t, 150_000, [parties.epa], pay_to)
    trade = client.take(bid["id"], ask)
    assert (trade["proposer"], trade["price"]) == ("seller", 180_000)  # the taker proposes
    with refused("not_proposer"):
        client.propose_signed(trade["id"], parties.buyer)
    with refused("terms_mismatch"):  # the seller is paid elsewhere than it asked
        client.propose_signed(trade["id"], parties.seller, receive=energy_to)
    assert client.propose_signed(trade["id"], parties.seller, receive=pay_to)["status"] == (
        "proposed"
    )
    with LedgerClient(chain.url) as ledger:
        submitted = client.countersign_and_submit(trade["id"], parties.buyer, ledger, energy_to)
        settled = wait_settled(client, trade["id"], parties.seller)
    assert (settled["status"], settled["txid"]) == ("settled", submitted.txid.hex())


# ---------------------------------------------------------------- refusals


def test_the_stores_refusals_carry_its_codes(chain: Chain, client: BidStoreClient) -> None:
    t = chain.now() + AHEAD
    parties = funded(chain, 100, 100, t)
    mallory = Keypair.generate()
    unsigned = client.signed_order(
        OrderSide.ASK, mallory, t, 100_000, [parties.epa], mallory.public_key
    )
    forged = sign_order(dataclasses.replace(unsigned, owner=parties.seller.public_key), mallory)
    with pytest.raises(BidStoreClientError) as caught:
        client.post_order(forged)
    assert (caught.value.code, caught.value.status) == ("bad_signature", 401)

    with pytest.raises(BidStoreClientError) as caught:
        client.order("00" * 32)
    assert (caught.value.code, caught.value.status) == ("unknown_order", 404)
    assert caught.value.message  # the store's sentence


def test_a_proposal_that_does_not_pay_the_seller_is_not_countersigned(
    chain: Chain, client: BidStoreClient
) -> None:
    t = chain.now() + AHEAD
    parties = funded(chain, 500, 1000, t)
    anyone = Keypair.generate().public_key
    ask = client.place(OrderSide.ASK, parties.seller, t, 300_000, [parties.epa], anyone)
    bid = client.signed_order(
        OrderSide.BID, parties.buyer, t, 300_000, [parties.eca, parties.fa], anyone
    )
    trade = client.take(ask["id"], bid, power_w=300)
    client.propose_signed(trade["id"], parties.buyer)
    fetched = client.fetch_trade(trade["id"], parties.seller)
    assert countersign(fetched, parties.seller)
    # as a store that does not check proposals would relay it: the seller's change is diverted
    seller = parties.seller.public_key.hex()
    fetched["proposal"]["outputs"] = [
        {**o, "address": anyone.hex()} if o["address"] == seller else o
        for o in fetched["proposal"]["outputs"]
    ]
    with refused("terms_mismatch"):
        countersign(fetched, parties.seller)


def test_a_store_that_is_down_is_unreachable() -> None:
    with (
        BidStoreClient(f"http://127.0.0.1:{free_port()}") as down,
        pytest.raises(BidStoreClientError) as caught,
    ):
        down.status()
    assert caught.value.code == "unreachable"
    assert "petra bidstore serve" in caught.value.message


def test_an_onion_service_needs_tor() -> None:
    with pytest.raises(BidStoreClientError, match=r"^needs_tor: .*--tor-socks"):
        BidStoreClient(ONION)
    with BidStoreClient(ONION, tor_socks=free_port()) as through_tor:
        assert through_tor.timeout_s == TOR_TIMEOUT_S
        with pytest.raises(BidStoreClientError) as caught:
            through_tor.status()  # no tor listens on that port
    assert caught.value.code == "unreachable"
    assert "is tor running" in caught.value.message


def test_a_rate_limit_is_raised_with_its_retry_after() -> None:
    def limited(_: httpx.Request) -> httpx.Response:
        body = {"error": {"code": "rate_limited", "message": "too many requests"}}
        return httpx.Response(429, json=body, headers={"Retry-After": "7"})

    with (
        BidStoreClient("http://127.0.0.1:1", transport=httpx.MockTransport(limited)) as store,
        pytest.raises(BidStoreClientError) as caught,
    ):
        store.book()
    assert (caught.value.code, caught.value.status, caught.value.retry_after_s) == (
        "rate_limited",
        429,
        7,
    )


# ---------------------------------------------------------------- petra bidstore status|book


def test_the_book_and_status_commands_read_the_store(
    chain: Chain, client: BidStoreClient, store_url: str
) -> None:
    t = chain.now() + AHEAD
    parties = funded(chain, 700, 1000, t)
    ask = client.place(OrderSide.ASK, parties.seller, t, 130_000, [parties.epa], bytes(32))

    listed = petra("bidstore", "book", "--bidstore", store_url, "--interval", str(t), "--json")
    assert listed.code == 0, listed
    shown = json.loads(listed.out)["orders"]
    assert [(o["id"], o["side"], o["interval"]) for o in shown] == [(ask["id"], "ask", t)]
    table = petra("bidstore", "book", "--bidstore", store_url, "--interval", str(t))
    assert table.code == 0, table
    assert elide(ask["id"]) in table.out and "0.130000" in table.out and "EUR/kWh" in table.out
    assert max(len(line) for line in table.out.splitlines()) <= 80, table.out
    everything = json.loads(petra("bidstore", "book", "--bidstore", store_url, "--json").out)
    assert ask["id"] in {o["id"] for o in everything["orders"]}
    status = petra("bidstore", "status", "--bidstore", store_url)
    assert status.code == 0 and "open order(s)" in status.out, status


def test_the_commands_say_in_one_sentence_why_they_cannot_read_a_store() -> None:
    down = refused_run(petra("bidstore", "status", "--bidstore", f"http://127.0.0.1:{free_port()}"))
    assert "is `petra bidstore serve` running there" in down
    onion = refused_run(petra("bidstore", "book", "--bidstore", ONION))
    assert "--tor-socks" in onion
