"""The wallet trading on a real `petra bidstore serve` process over a real ledger node
(wallet/market.py): an ask taken and settled, an auction's trade settled, a bid the wallet
cannot fund, a trade that expires leaving the assets where they were, and the commands."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_cli import Run, petra
from test_cli import refused as refused_run
from waiting import wait_until

from assets import Eca, Epa, Fa, Transfer
from assets.model import Asset, Output
from assets.money import format_money
from assets.signing import sign_transfer
from bidstore.client import BidStoreClient
from bidstore.orders import OrderSide, payment
from simulation.scenario import pay
from wallet.keystore import KdfLevel, WalletFile
from wallet.market import accept as accept_trades
from wallet.market import place_order, proposals, take
from wallet.wallet import Services, Wallet, WalletError, new_data

from .test_bidstore import AHEAD, INTERVAL_S, Chain
from .test_bidstore import chain_fixture as chain_fixture  # its ledger node, for this module too
from .test_bidstore_client import store_url_fixture as store_url_fixture  # the store process

PASSWORD = "pw"
SETTLE_TIMEOUT_S = 30


def open_wallet(path: Path, chain: Chain, store_url: str) -> Wallet:
    """A new wallet on the chain, knowing its ledger and bid store."""
    data = new_data(chain.scenario.genesis, Services(chain.url, bidstore=store_url), time.time())
    return Wallet(WalletFile.create(path, PASSWORD.encode(), kdf=KdfLevel.INTERACTIVE, data=data))


def fund(chain: Chain, wallet: Wallet, assets: list[Asset], *, one_address: bool = False) -> None:
    """Issue `assets` to fresh addresses of `wallet` (all to one with `one_address`)."""
    keys = [wallet.new_key("address")] if one_address else []
    outputs = [pay(a, keys[0] if one_address else wallet.new_key("address")) for a in assets]
    chain.issue(outputs)
    wallet.refresh()


def held(wallet: Wallet, kind: str, state: str = "unspent") -> list[tuple[Asset, str]]:
    """The assets of `kind` the wallet holds in `state`, each with its address (hex)."""
    return [(c.asset, c.output.address.hex()) for c in wallet.coins(states=[state], kind=kind)]


def until(wallet: Wallet, trade_id: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The wallet's view of the trade (`proposals`) once `done` holds."""

    def row() -> dict[str, Any] | None:
        (found,) = [r for r in proposals(wallet) if r["id"] == trade_id] or [
            {"id": trade_id, **wallet.data()["trades"][trade_id], "action": "gone"}
        ]
        return found if done(found) else None

    return wait_until(row, SETTLE_TIMEOUT_S, f"trade {trade_id} in the wallet", interval_s=0.3)


def settled(row: dict[str, Any]) -> bool:
    return bool(row["status"] == "settled")


def test_an_ask_taken_by_a_buyer_settles(chain: Chain, store_url: str, tmp_path: Path) -> None:
    t = chain.now() + AHEAD
    seller = open_wallet(tmp_path / "seller.json", chain, store_url)
    buyer = open_wallet(tmp_path / "buyer.json", chain, store_url)
    fund(chain, seller, [Epa(1500, t, t)])
    fund(chain, buyer, [Eca(1000, t, t), Fa(10_000)])

    ask = place_order(seller, OrderSide.ASK, t, 150_000, 1000)
    assert ask["moved"] is not None  # 1500 W split into the order's 1000 W and 500 W change
    assert [a for a, _ in held(seller, "EPA", "reserved")] == [Epa(1000, t, t)]
    assert [a for a, _ in held(seller, "EPA")] == [Epa(500, t, t)]

    trade = take(buyer, ask["id"])
    due = payment(1000, INTERVAL_S, 150_000)
    assert (trade["status"], trade["role"], trade["proposer"]) == ("proposed", "buyer", "buyer")
    assert trade["payment"] == due
    (row,) = [r for r in proposals(seller) if r["id"] == trade["id"]]
    assert (row["action"], row["role"]) == ("accept", "seller")
    assert [r["action"] for r in proposals(buyer)] == ["wait"]

    (done,) = accept_trades(seller)
    assert (done["id"], done["done"]) == (trade["id"], "submitted")
    assert until(seller, trade["id"], settled)["action"] == "settled"
    assert until(buyer, trade["id"], settled)["status"] == "settled"

    seller_receive = seller.data()["orders"][ask["id"]]["receive"]
    assert sorted(held(seller, "ECA") + held(seller, "FA"), key=str) == sorted(
        [(Eca(1000, t, t), seller_receive), (Fa(due), seller_receive)], key=str
    )
    assert [a for a, _ in held(seller, "EPA")] == [Epa(500, t, t)]  # the change
    buyer_order = buyer.data()["trades"][trade["id"]]["order"]
    buyer_receive = buyer.data()["orders"][buyer_order]["receive"]
    assert held(buyer, "EPA") == [(Epa(1000, t, t), buyer_receive)]
    assert sum(a.amount for a, _ in held(buyer, "FA") if isinstance(a, Fa)) == 10_000 - due
    for wallet in (seller, buyer):
        assert wallet.coins(states=["reserved"]) == []
        assert {o["status"] for o in wallet.data()["orders"].values()} == {"done"}


def test_an_auctions_trade_is_proposed_by_the_buyer_and_settles(
    chain: Chain, store_url: str, tmp_path: Path
) -> None:
    t = chain.now() + AHEAD
    seller = open_wallet(tmp_path / "seller.json", chain, store_url)
    buyer = open_wallet(tmp_path / "buyer.json", chain, store_url)
    fund(chain, seller, [Epa(1000, t, t)])
    bid_funds = payment(1000, INTERVAL_S, 201_000)
    fund(chain, buyer, [Eca(1000, t, t), Fa(bid_funds)], one_address=True)

    ask = place_order(seller, OrderSide.ASK, t, 100_000, 1000)
    bid = place_order(buyer, OrderSide.BID, t, 201_000, 1000)
    assert ask["moved"] is None and bid["moved"] is None  # already what the orders spend
    with BidStoreClient(store_url) as store:
        (cleared,) = store.clear(t)["trades"]
    assert (cleared["ask"], cleared["bid"], cleared["proposer"]) == (ask["id"], bid["id"], "buyer")

    assert [r["action"] for r in proposals(seller)] == ["wait"]
    (proposed,) = accept_trades(buyer)
    assert proposed["done"] == "proposed"
    (submitted,) = accept_trades(seller, cleared["id"])
    assert submitted["done"] == "submitted"
    assert until(buyer, cleared["id"], settled)["status"] == "settled"

    assert held(buyer, "EPA") == [(Epa(1000, t, t), bid["receive"])]
    change = bid_funds - cleared["payment"]  # paid at the clearing price, below its own
    assert held(buyer, "FA") == [(Fa(change), bid["owner"])]
    assert sorted(str(a) for a, _ in held(seller, "ECA") + held(seller, "FA")) == sorted(
        [str(Eca(1000, t, t)), str(Fa(cleared["payment"]))]
    )
    assert buyer.coins(states=["reserved"]) == []


def test_a_bid_the_wallet_cannot_fund_is_refused(
    chain: Chain, store_url: str, tmp_path: Path
) -> None:
    t = chain.now() + AHEAD
    buyer = open_wallet(tmp_path / "buyer.json", chain, store_url)
    fund(chain, buyer, [Eca(1000, t, t), Fa(10), Epa(800, t, t)])
    before = buyer.data()["coins"]

    with pytest.raises(WalletError) as caught:
        place_order(buyer, OrderSide.BID, t, 150_000, 1000)
    assert caught.value.code == "not_enough"
    due = payment(1000, INTERVAL_S, 150_000)
    assert caught.value.message == (
        f"the wallet holds 0.000010 EUR of FA, not {format_money(due)}: withdraw more first"
    )
    with pytest.raises(WalletError) as caught:
        place_order(buyer, OrderSide.ASK, t, 150_000, 1000)
    assert caught.value.message == (
        f"the wallet holds 800 W of EPA for interval {t}, not 1,000: withdraw more first"
    )
    with pytest.raises(WalletError) as caught:
        place_order(buyer, OrderSide.ASK, t, 0, 800)
    assert caught.value.code == "price_out_of_range"
    assert buyer.data()["coins"] == before  # nothing moved, nothing reserved


def test_a_trade_that_expires_leaves_the_assets_where_they_were(
    chain: Chain, store_url: str, tmp_path: Path
) -> None:
    seller = open_wallet(tmp_path / "seller.json", chain, store_url)
    buyer = open_wallet(tmp_path / "buyer.json", chain, store_url)
    t = chain.now() + 20  # soon: the trade meets its interval's start before it settles
    fund(chain, seller, [Epa(700, t, t)])
    fund(chain, buyer, [Eca(700, t, t), Fa(1000)], one_address=True)
    ask = place_order(seller, OrderSide.ASK, t, 120_000, 700)
    trade = take(buyer, ask["id"])
    assert trade["status"] == "proposed"  # the seller never countersigns

    wait_until(lambda: chain.now() > t, 60, f"interval {t} to start", interval_s=0.5)
    row = until(seller, trade["id"], lambda r: r["status"] == "expired")
    assert (row["status"], row["action"]) == ("expired", "expired")
    assert seller.data()["orders"][ask["id"]]["status"] == "done"
    assert held(seller, "EPA") == [(Epa(700, t, t), ask["owner"])]
    assert seller.coins(states=["reserved", "spent"]) == []
    until(buyer, trade["id"], lambda r: r["status"] == "expired")
    assert sorted(str(a) for a, _ in held(buyer, "ECA") + held(buyer, "FA")) == sorted(
        [str(Eca(700, t, t)), str(Fa(1000))]
    )
    assert buyer.coins(states=["reserved"]) == []


# ---------------------------------------------------------------- the commands


def wallet_petra(*args: str | int | Path) -> Run:
    """`petra wallet ARGS`, as a user runs it, with the wallet's passphrase in the environment."""
    return petra("wallet", *map(str, args), passphrase=PASSWORD)


def test_the_commands_post_list_and_refuse(chain: Chain, store_url: str, tmp_path: Path) -> None:
    t = chain.now() + AHEAD
    path = tmp_path / "seller.json"
    fund(chain, open_wallet(path, chain, store_url), [Epa(900, t, t)])
    for command in ("ask", "bid", "book", "take", "proposals", "accept"):
        shown = wallet_petra(command, "--help")
        assert shown.code == 0 and "--json" in shown.out and "--tor-socks" in shown.out, shown

    run = wallet_petra(
        *("ask", "--interval", t, "--power", 600, "--price", "120000µ", "--wallet", path, "--json")
    )
    assert run.code == 0, run
    posted = json.loads(run.out)
    assert (posted["side"], posted["power"], posted["status"]) == ("ask", 600, "open")

    listed = json.loads(wallet_petra("book", "--interval", t, "--wallet", path, "--json").out)
    assert [o["id"] for o in listed["orders"] if o["mine"]] == [posted["id"]]
    table = wallet_petra("proposals", "--wallet", path)
    assert table.code == 0 and "no unfinished trades" in table.out, table

    short = refused_run(
        wallet_petra("bid", "--interval", t, "--power", 600, "--price", "0.12", "--wallet", path)
    )
    assert "withdraw more first" in short
    down = refused_run(wallet_petra("book", "--wallet", path, "--bidstore", "http://127.0.0.1:1"))
    assert "petra bidstore serve" in down


def test_a_trade_whose_funds_go_elsewhere_fails_and_the_ask_trades_on(
    chain: Chain, store_url: str, tmp_path: Path
) -> None:
    t = chain.now() + AHEAD
    seller = open_wallet(tmp_path / "seller.json", chain, store_url)
    buyer = open_wallet(tmp_path / "buyer.json", chain, store_url)
    fund(chain, seller, [Epa(400, t, t)])
    fund(chain, buyer, [Eca(400, t, t), Fa(1000)], one_address=True)
    ask = place_order(seller, OrderSide.ASK, t, 120_000, 400)
    trade = take(buyer, ask["id"])

    (fa,) = buyer.coins(states=["reserved"], kind="FA")
    elsewhere = Transfer(buyer.chain, (fa.outpoint,), (Output(fa.asset, bytes(32)),))
    chain.submit(sign_transfer(elsewhere, [buyer.key_of(fa.output.address)]))
    row = until(seller, trade["id"], lambda r: r["status"] == "failed")
    assert row["action"] == "failed"
    # back in the book: its EPA unspent, held by the order again
    assert seller.data()["orders"][ask["id"]]["status"] == "open"
    assert held(seller, "EPA", "reserved") == [(Epa(400, t, t), ask["owner"])]
    until(buyer, trade["id"], lambda r: r["status"] == "failed")
    assert [a for a, _ in held(buyer, "ECA")] == [Eca(400, t, t)]
    assert buyer.coins(states=["reserved"]) == []
