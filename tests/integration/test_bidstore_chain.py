"""An order in several matches of one clearing, settled on a real ledger node: one large ask
cleared against two bids trades with the first, then, from the change the first trade left it,
with the second; what it has left is listed again and taken (docs/bidstore-api.md, "Chains")."""

from __future__ import annotations

import dataclasses

from fastapi.testclient import TestClient

from assets import Keypair
from bidstore.orders import OrderSide, payment
from ledger.client import LedgerClient

from .test_bidstore import (
    AHEAD,
    INTERVAL_S,
    Chain,
    _wire,
    chain_fixture,
    challenge,
    fetch_headers,
    funded,
    order,
    post,
    settle,
    store,
)

__all__ = ["chain_fixture", "store"]  # the fixtures this module runs on


def test_a_large_ask_trades_with_two_bids_in_turn_and_its_rest_is_taken(
    chain: Chain, store: TestClient
) -> None:
    t = chain.now() + AHEAD
    big = funded(chain, 3000, 1, t)  # the seller's EPA(3000); its buyer is not used
    first_buyer = funded(chain, 1000, payment(1000, INTERVAL_S, 200_000), t)
    second_buyer = funded(chain, 1500, payment(1500, INTERVAL_S, 150_000), t)
    ask = post(store, order(store, big.seller, OrderSide.ASK, t, 100_000, [big.epa])).json()
    bid1 = order(
        store, first_buyer.buyer, OrderSide.BID, t, 200_000, [first_buyer.eca, first_buyer.fa]
    )
    bid2 = order(
        store, second_buyer.buyer, OrderSide.BID, t, 150_000, [second_buyer.eca, second_buyer.fa]
    )
    assert post(store, bid1).status_code == post(store, bid2).status_code == 201

    cleared = store.post(f"/v1/auctions/{t}/clear").json()
    assert cleared["price"] == 125_000
    (first,) = cleared["trades"]
    assert first["power"] == 1000
    first_txid = settle(store, chain, first, dataclasses.replace(first_buyer, seller=big.seller))

    trades = store.get(f"/v1/orders/{ask['id']}").json()["trades"]
    assert trades[0] == first["id"] and len(trades) == 2  # made once the first settled
    second = store.get(f"/v1/trades/{trades[1]}", headers=_headers(store, trades[1], big.seller))
    second_trade = second.json()
    assert second_trade["power"] == 1500 and second_trade["status"] == "open"
    # it spends the EPA change the first trade left the seller
    assert any(i["tx"] == first_txid for i in second_trade["terms"]["inputs"])
    settle(store, chain, second_trade, dataclasses.replace(second_buyer, seller=big.seller))

    rest = store.get(f"/v1/book/{t}").json()["asks"]
    assert [(a["id"], a["power"]) for a in rest] == [(ask["id"], 500)]  # listed again
    third_buyer = funded(chain, 500, payment(500, INTERVAL_S, 100_000), t)
    taker = order(
        store, third_buyer.buyer, OrderSide.BID, t, 100_000, [third_buyer.eca, third_buyer.fa]
    )
    taken = store.post("/v1/takes", json={"order": ask["id"], "taker": _wire(taker)})
    assert taken.status_code == 201, taken.text
    settle(store, chain, taken.json(), dataclasses.replace(third_buyer, seller=big.seller))

    assert store.get(f"/v1/book/{t}").json()["asks"] == []
    assert store.get(f"/v1/orders/{ask['id']}").json()["status"] == "done"
    with LedgerClient(chain.url) as ledger:  # the seller's whole EPA went to the three buyers
        assert not [o for o in ledger.unspent(big.seller.public_key) if o["asset"]["kind"] == "EPA"]


def _headers(store: TestClient, trade_id: str, key: Keypair) -> dict[str, str]:
    return fetch_headers(trade_id, key, challenge(store))
