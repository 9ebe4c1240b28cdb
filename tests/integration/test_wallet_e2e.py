"""The issue's end-to-end test (DESIGN.md sections 1, 7, 8, 9): in a community of real
processes on loopback (`community.py`), a seller and a buyer go from withdraw through mix, ask,
take, settle and deposit; both meters' bills, as the DSO received them, match section 7
recomputed by hand from the ledger and the meters' measurements; and the ledger shows no link
between a meter's issue and the traded output other than through the mixer's joint transfer.
Then the same flow with the bid store an onion service on the private Tor network, reached by
both wallets only through Tor's SOCKS port.

A CoinShuffle pool needs two peers of one denomination, and in a community this small only the
seller holds EPA for the interval, only the buyer ECA and FA. So a neighbours' wallet, funded by
the neighbours' meter, holds one coin of each of the three denominations and mixes alongside:
every pool then has its two peers, and each home's coin leaves the pool at an address the
ledger cannot tell from the neighbour's.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services.mosquitto import Mosquitto
from services.tor import tor_network_fixture  # noqa: F401
from waiting import wait_until

from assets.model import Asset, Eca, Epa, Fa
from bidstore.orders import OrderSide
from simulation.scenario import pay
from simulation.tornet import TorNetwork
from wallet.keystore import KdfLevel, WalletFile
from wallet.market import accept, place_order, proposals, take
from wallet.mixing import mix
from wallet.wallet import Coin, Wallet, WalletError, new_data

from .community import (
    NEIGHBOUR_METER,
    PASSPHRASE,
    PRICE_CONSUMPTION,
    PRICE_PRODUCTION,
    Community,
    CommunityHome,
    LedgerView,
    ledger_view,
    running_community,
)

pytestmark = [pytest.mark.slow, pytest.mark.clocked]

WALLET_PASSPHRASE = b"e2e wallet"
POWER_W = 5_000  # one 1-2-5 denomination: nothing is split on either side
FA_WITHDRAWN = 1_000  # likewise; the buyer pays part of it and deposits the rest
PRICE = 200_000  # the ask's price, micro-units per kWh
JOULES_PER_KWH = 3_600_000
# Seconds between the withdrawals and the traded interval: room for the mixes, the orders and
# the deposits on a loaded machine (the store refuses orders for an interval that has begun).
AHEAD_S = 60
AHEAD_TOR_S = 120
MIX_TIMEOUT_S = 300.0
WAIT_S = 180


@pytest.fixture
def community(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Community]:
    monkeypatch.setenv("PETRA_PASSPHRASE", PASSPHRASE)
    with running_community(tmp_path, mosquitto) as running:
        yield running


@pytest.fixture
def tor_community(
    tmp_path: Path,
    mosquitto: Mosquitto,
    monkeypatch: pytest.MonkeyPatch,
    tor_network: TorNetwork,
) -> Iterator[Community]:
    monkeypatch.setenv("PETRA_PASSPHRASE", PASSPHRASE)
    with running_community(tmp_path, mosquitto, tor_network) as running:
        yield running


def open_wallet(community: Community, path: Path, home: CommunityHome | None) -> Wallet:
    """A new wallet: a home's (its key 0 the meter's owner) or, without one, a neighbour's."""
    data = new_data(community.dso.scenario.genesis, community.services(home), time.time())
    seed = None if home is None else home.seed
    file = WalletFile.create(
        path, WALLET_PASSPHRASE, kdf=KdfLevel.INTERACTIVE, seed=seed, data=data
    )
    return Wallet(file)


def mix_together(wallets: list[Wallet]) -> None:
    """Every wallet mixes all its coins once, all at the same time (each coin in the pool of
    its denomination); fails the test if any coin did not mix."""
    failures: dict[int, list[WalletError]] = {}

    def run(n: int) -> None:
        failures[n] = mix(wallets[n], wallets[n].coins(), 1, timeout_s=MIX_TIMEOUT_S)[1]

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(wallets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(MIX_TIMEOUT_S + 60)
    assert failures == {n: [] for n in range(len(wallets))}


def settled(wallet: Wallet, trade_id: str) -> bool:
    """Whether the trade has settled, as the wallet learns from the store and the ledger."""
    proposals(wallet)
    return bool(wallet.data()["trades"][trade_id]["status"] == "settled")


def round_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded once, half to even (DESIGN.md section 3), in integers."""
    quotient, remainder = divmod(numerator, denominator)
    if 2 * remainder > denominator or (2 * remainder == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


def by_hand(
    view: LedgerView,
    meter_id: str,
    deposits: list[bytes],
    interval: int,
    interval_s: int,
    measured_j: int,
    closed_height: int,
) -> dict[str, int]:
    """Section 7 for one interval of one meter, from the ledger as it stood at `closed_height`:
    the meter's issues, and the `deposits` (transfers paying its deposit addresses)."""

    def covers(asset: dict[str, Any]) -> bool:
        return bool(asset["kind"] == "EPA" and asset["start"] <= interval <= asset["end"])

    issued = [
        (t, o["asset"]) for t in view.issues_of(meter_id) for o in view.transactions[t]["outputs"]
    ]
    deposited = [(d.hex(), view.transactions[d.hex()]["outputs"][0]["asset"]) for d in deposits]
    on_ledger = [
        (kind, t, a)
        for kind, facts in (("issued", issued), ("deposited", deposited))
        for t, a in facts
        if view.heights[t] <= closed_height
    ]
    epa = {
        kind: sum(a["power"] for k, _, a in on_ledger if k == kind and covers(a))
        for kind in ("issued", "deposited")
    }
    fa = {
        kind: sum(
            a["amount"]
            for k, t, a in on_ledger
            if k == kind and a["kind"] == "FA" and view.intervals[t] == interval
        )
        for kind in ("issued", "deposited")
    }
    energy_j = measured_j - epa["deposited"] * interval_s + epa["issued"] * interval_s
    price = PRICE_CONSUMPTION if energy_j >= 0 else PRICE_PRODUCTION
    charge = round_half_even(energy_j * price, JOULES_PER_KWH)
    return {
        "issued_epa_w": epa["issued"],
        "deposited_epa_w": epa["deposited"],
        "fa_issued": fa["issued"],
        "fa_deposited": fa["deposited"],
        "energy_j": energy_j,
        "amount": fa["issued"] - fa["deposited"] + charge,
    }


def assert_linked_only_by_mixes(
    view: LedgerView, owners: dict[str, str], meter_id: str, trade_tx: str, traded: Epa
) -> None:
    """Every path on the ledger from `meter_id`'s issues to the trade transfer passes a joint
    transfer of the mixer (inputs of different wallets, as `owners` maps addresses to them, as
    many outputs, all of one asset); no transaction spends both an issued output and the
    traded EPA; and the trade's EPA input came straight out of a joint transfer."""

    def joint_transfer(tx_id: str) -> bool:
        tx, inputs = view.transactions[tx_id], view.inputs_of(tx_id)
        parties = {owners.get(view.outputs[i]["address"]) for i in inputs}
        kinds = {json.dumps(o["asset"], sort_keys=True) for o in tx["outputs"]}
        return (
            tx["type"] == "transfer"
            and len(inputs) == len(tx["outputs"]) >= 2
            and len(parties - {None}) >= 2
            and len(kinds) == 1
        )

    wire = {"kind": "EPA", "power": traded.power, "start": traded.start, "end": traded.end}
    outputs = view.transactions[trade_tx]["outputs"]
    (sold,) = [(trade_tx, n) for n, o in enumerate(outputs) if o["asset"] == wire]
    issues = view.issues_of(meter_id)
    issued = {(i, n) for i in issues for n in range(len(view.transactions[i]["outputs"]))}
    assert trade_tx in view.reachable(issues, lambda _: True), meter_id
    unmixed = view.reachable(issues, lambda tx_id: not joint_transfer(tx_id))
    assert trade_tx not in unmixed, meter_id
    assert any(joint_transfer(tx_id) for tx_id in unmixed), meter_id
    for tx_id in view.transactions:
        spends = set(view.inputs_of(tx_id))
        assert not (spends & issued and sold in spends), tx_id
    (epa_in,) = [i for i in view.inputs_of(trade_tx) if view.outputs[i]["asset"]["kind"] == "EPA"]
    assert joint_transfer(epa_in[0])


def trade_through_the_community(community: Community, tmp: Path, ahead_s: int) -> None:
    seller_home, buyer_home, dso = community.seller, community.buyer, community.dso
    interval_s = community.interval_s
    seller = open_wallet(community, tmp / "seller.json", seller_home)
    buyer = open_wallet(community, tmp / "buyer.json", buyer_home)
    neighbour = open_wallet(community, tmp / "neighbour.json", None)
    first = seller_home.interval_now() + 1  # every bill from here on is checked
    seller_home.wait_interval(first)
    t = seller_home.interval_now() + ahead_s // interval_s

    # withdraw: each meter issues to a fresh address of its owner's wallet
    seller.withdraw([Epa(POWER_W, t, t)])
    buyer.withdraw([Eca(POWER_W, t, t), Fa(FA_WITHDRAWN)])
    keys = [neighbour.new_key("withdrawal") for _ in range(3)]
    assets: list[Asset] = [Epa(POWER_W, t, t), Eca(POWER_W, t, t), Fa(FA_WITHDRAWN)]
    outputs = [pay(asset, key) for asset, key in zip(assets, keys, strict=True)]
    dso.issue(NEIGHBOUR_METER, community.neighbour_key, *outputs)
    neighbour.refresh()

    # mix: each coin leaves its pool at a fresh address
    mix_together([seller, buyer, neighbour])
    assert [c.origin for c in seller.coins() + buyer.coins()] == ["mix"] * 3

    # ask, take (the taker proposes), accept (the seller countersigns and submits), settle
    ask = place_order(seller, OrderSide.ASK, t, PRICE, POWER_W)
    assert ask["moved"] is None  # the mixed coin is the ask's EPA as it is
    trade = take(buyer, ask["id"])
    assert (trade["status"], trade["role"]) == ("proposed", "buyer")
    (submitted,) = accept(seller, trade["id"])
    assert submitted["done"] == "submitted"
    for party in (seller, buyer):
        wait_until(functools.partial(settled, party, trade["id"]), WAIT_S, "the trade to settle")
    trade_tx = seller.data()["trades"][trade["id"]]["txid"]
    due = trade["payment"]
    assert due == round_half_even(POWER_W * interval_s * PRICE, JOULES_PER_KWH)

    # deposit: the seller what it was paid, the buyer the energy and its unspent FA
    seller.refresh()
    buyer.refresh()

    def holding(wallet: Wallet) -> list[str]:
        return sorted(str(c.asset) for c in wallet.coins())

    assert holding(seller) == sorted([str(Eca(POWER_W, t, t)), str(Fa(due))])
    assert holding(buyer) == sorted([str(Epa(POWER_W, t, t)), str(Fa(FA_WITHDRAWN - due))])
    deposits: dict[str, list[bytes]] = {}
    for name, wallet in (("seller", seller), ("buyer", buyer)):
        coins: list[Coin] = wallet.coins()
        deposits[name] = wallet.deposit(coins)
        assert wallet.coins() == []
    last = max(t, seller_home.interval_now())
    wait_until(lambda: seller_home.interval_now() > last, ahead_s + WAIT_S, "t to end")

    # the bills: both meters deliver every interval's, and the DSO finds each reconciled
    def delivered(home: CommunityHome) -> dict[int, dict[str, Any]]:
        found = community.bills(home.meter_id, first, last)
        done = set(found) == set(range(first, last + 1))
        return found if done and all(b["status"] == "reconciled" for b in found.values()) else {}

    bills = {
        "seller": wait_until(lambda: delivered(seller_home), WAIT_S, "the seller's bills"),
        "buyer": wait_until(lambda: delivered(buyer_home), WAIT_S, "the buyer's bills"),
    }
    view = ledger_view(dso.ledger_url, interval_s, dso.scenario.epoch)
    for name, home in (("seller", seller_home), ("buyer", buyer_home)):
        with home.store() as store:
            totals = {x.interval: x for x in store.intervals(first, last, ["grid", "pv"])}
        for k in range(first, last + 1):
            bill = bills[name][k]["bill"]
            assert bills[name][k]["discrepancies"] == [], (name, k, bills[name][k])
            assert bill["measured_j"] == totals[k].net_j, (name, k)  # M_t: what it measured
            assert (bill["price_consumption"], bill["price_production"]) == (
                PRICE_CONSUMPTION,
                PRICE_PRODUCTION,
            )
            expected = by_hand(
                view,
                home.meter_id,
                deposits[name],
                k,
                interval_s,
                bill["measured_j"],
                bill["closed_height"],
            )
            assert {key: bill[key] for key in expected} == expected, (name, k)
    # In t the seller's issued EPA counts as production it sold and the buyer's deposited EPA
    # as consumption it bought: a net producer credited, a net consumer charged.
    seller_t, buyer_t = bills["seller"][t]["bill"], bills["buyer"][t]["bill"]
    assert (seller_t["issued_epa_w"], seller_t["deposited_epa_w"]) == (POWER_W, 0)
    assert (buyer_t["issued_epa_w"], buyer_t["deposited_epa_w"]) == (0, POWER_W)
    assert seller_t["energy_j"] < 0 < buyer_t["energy_j"]
    assert seller_t["amount"] < 0 < buyer_t["amount"]
    paid = {
        name: (
            sum(b["bill"]["fa_issued"] for b in bills[name].values()),
            sum(b["bill"]["fa_deposited"] for b in bills[name].values()),
        )
        for name in bills
    }
    assert paid == {"seller": (0, due), "buyer": (FA_WITHDRAWN, FA_WITHDRAWN - due)}

    # no link: from each meter's issues the trade is reached only through a joint transfer
    wallets = {"seller": seller, "buyer": buyer, "neighbour": neighbour}
    owners = {
        address: name
        for name, wallet in wallets.items()
        for address in [a["address"] for a in wallet.addresses()]
        + [wallet.owner_key().public_key.hex()]
    }
    traded = Epa(POWER_W, t, t)
    for home in (seller_home, buyer_home):
        assert_linked_only_by_mixes(view, owners, home.meter_id, trade_tx, traded)
    assert "Traceback" not in community.log_text()


def test_withdraw_mix_trade_deposit_and_the_bills(community: Community, tmp_path: Path) -> None:
    assert community.tor_socks is None
    trade_through_the_community(community, tmp_path, AHEAD_S)


@pytest.mark.tor
def test_the_same_flow_through_the_private_tor_network(
    tor_community: Community, tmp_path: Path
) -> None:
    assert tor_community.bidstore_url.endswith(".onion")
    assert tor_community.tor_socks is not None
    trade_through_the_community(tor_community, tmp_path, AHEAD_TOR_S)
