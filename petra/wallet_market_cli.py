"""`petra wallet ask|bid|book|take|proposals|accept|trades`: the wallet on the bid store
(wallet/market.py, docs/bidstore-api.md).

Each command reaches the store the wallet names (`petra wallet config --bidstore URL
--tor-socks PORT`), or the one `--bidstore` and `--tor-socks` give, prints for a person or the
JSON with `--json`, and says in one sentence what went wrong and what to do, with exit code 2.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from petra.vocabulary import (
    bidstore_option,
    elide_all,
    format_money,
    format_price,
    interval_label,
    money_argument,
    resolve_prefix,
    tor_socks_option,
)
from petra.wallet_common import Json, PassFile, WalletPath, emit, opened, out, table

BidStoreUrl = Annotated[str | None, bidstore_option(" (else the wallet's)")]
TorSocks = Annotated[int | None, tor_socks_option(" (else the wallet's)")]
Interval = Annotated[int, typer.Option(min=0, help="The interval the order is for.")]
Power = Annotated[int, typer.Option(min=1, help="Power in W, held the whole interval.")]
Price = Annotated[
    int,
    typer.Option(
        parser=money_argument,
        metavar="MONEY",
        help="Money per kWh: 0.15, 0.15EUR or 150000µ (docs/cli.md, Money).",
    ),
]
JOULES_PER_KWH = 3_600_000


@contextmanager
def _market(
    wallet: Any, passphrase_file: Any, bidstore: str | None, tor_socks: int | None
) -> Iterator[tuple[Any, Any]]:
    """The opened wallet and a client of its bid store; errors in one sentence."""
    from wallet.market import connect

    with opened(wallet, passphrase_file) as w, connect(w, bidstore, tor_socks) as store:
        yield w, store


def register(app: typer.Typer) -> None:
    """Add the trading commands to `app` (the `petra wallet` app)."""
    app.command("ask")(ask_command)
    app.command("bid")(bid_command)
    app.command("book")(book_command)
    app.command("take")(take_command)
    app.command("proposals")(proposals_command)
    app.command("accept")(accept_command)
    app.command("trades")(trades_command)


def ask_command(
    interval: Interval,
    power: Power,
    price: Price,
    bidstore: BidStoreUrl = None,
    tor_socks: TorSocks = None,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """Offer EPA for sale: POWER W in INTERVAL at PRICE or more. The wallet first gathers one
    EPA of exactly that power at a fresh address if it holds none; the buyer pays a fresh
    address."""
    _place("ask", interval, power, price, bidstore, tor_socks, wallet, passphrase_file, as_json)


def bid_command(
    interval: Interval,
    power: Power,
    price: Price,
    bidstore: BidStoreUrl = None,
    tor_socks: TorSocks = None,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """Bid for EPA: POWER W in INTERVAL at PRICE or less, paid with ECA and FA the wallet first
    gathers at one fresh address if needed; the energy comes to a fresh address."""
    _place("bid", interval, power, price, bidstore, tor_socks, wallet, passphrase_file, as_json)


def _place(
    side: str,
    interval: int,
    power: int,
    price: int,
    bidstore: str | None,
    tor_socks: int | None,
    wallet: Any,
    passphrase_file: Any,
    as_json: bool,
) -> None:
    from bidstore.orders import OrderSide
    from wallet.market import place_order

    with _market(wallet, passphrase_file, bidstore, tor_socks) as (w, store):
        placed = place_order(w, OrderSide(side), interval, price, power, store=store)
        genesis = w.genesis
    if emit(as_json, placed):
        return
    if placed["moved"] is not None:
        out.print(f"gathered the order's assets in {placed['moved']}")
    out.print(
        f"{side} {power:,} W for interval {_interval(interval, genesis)} at "
        f"{format_price(price, genesis.currency)} posted: {placed['id']}"
    )
    for replaced in placed["replaced"]:
        out.print(f"it replaces order {replaced}")
    out.print("see what it needs from you: petra wallet proposals")


def book_command(
    interval: Annotated[
        int | None, typer.Option(min=0, help="The interval: only its orders, in priority order.")
    ] = None,
    bidstore: BidStoreUrl = None,
    tor_socks: TorSocks = None,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """The store's open orders (anonymous), yours marked. `take` takes an order by the first
    digits of its id, as shown."""
    from bidstore.client import BidStoreClientError
    from petra.console import fail
    from wallet.market import store_error

    with _market(wallet, passphrase_file, bidstore, tor_socks) as (w, store):
        mine = set(w.data().get("orders", {}))
        try:
            orders = store.open_orders(interval)
        except BidStoreClientError as exc:
            fail(store_error(exc).message)
        genesis = w.genesis
    orders = [{**o, "mine": o["id"] in mine} for o in orders]
    if emit(as_json, {"orders": orders}):
        return
    if not orders:
        out.print("no open orders")
        return
    ids = elide_all(o["id"] for o in orders)
    # how to reach each order's owner (`contact`) is in --json: `take` goes through the store
    book = table("order", "interval", "side", "power", "price", "yours")
    for order in orders:
        book.add_row(
            ids[order["id"]],
            _interval(order["interval"], genesis),
            order["side"],
            f"{order['power']:,} W",
            format_price(order["price"], genesis.currency),
            "yes" if order["mine"] else "",
        )
    out.print(book)


def take_command(
    order: Annotated[
        str,
        typer.Argument(help="The open order to take: its id, or its first 4 or more digits."),
    ],
    power: Annotated[
        int | None, typer.Option(min=1, help="Take only this many W (default: all of it).")
    ] = None,
    bidstore: BidStoreUrl = None,
    tor_socks: TorSocks = None,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """Take an open order at its price with an order of the other side, and propose the
    trade's transfer (the taker proposes); the other party then settles it."""
    from wallet.market import take

    with _market(wallet, passphrase_file, bidstore, tor_socks) as (w, store):
        trade = take(w, order.lower(), power, store=store, resolve=resolve_prefix)
        genesis = w.genesis
    if emit(as_json, trade):
        return
    currency = genesis.currency
    out.print(
        f"trade {trade['id']}: {trade['power']:,} W for interval "
        f"{_interval(trade['interval'], genesis)} at {format_price(trade['price'], currency)}, "
        f"{format_money(trade['payment'], currency)}; {trade['status']}"
    )
    out.print("the other party settles it; follow it with: petra wallet proposals")


def proposals_command(
    bidstore: BidStoreUrl = None,
    tor_socks: TorSocks = None,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """Your unfinished trades and what each needs from you: `propose` or `accept` (run
    `petra wallet accept` with the first digits of the trade's id), `wait` (the other party's
    turn), or how it ended. Every trade, its price and what it did to your bills: `petra
    wallet trades`."""
    from wallet.market import proposals

    with _market(wallet, passphrase_file, bidstore, tor_socks) as (w, store):
        rows = proposals(w, store=store)
        genesis = w.genesis
    if emit(as_json, {"trades": rows}):
        return
    if not rows:
        out.print("no unfinished trades")
        return
    ids = elide_all(row["id"] for row in rows)
    unfinished = table("trade", "interval", "you", "payment", "next")
    for row in rows:
        gives = "sell" if row["role"] == "seller" else "buy"
        unfinished.add_row(
            ids[row["id"]],
            _interval(row["interval"], genesis),
            f"{gives} {row['power']:,} W",
            format_money(row["payment"], genesis.currency),
            row["action"],
        )
    out.print(unfinished)


def accept_command(
    trade: Annotated[
        str | None,
        typer.Argument(
            help="The trade: its id or its first 4 or more digits, as `proposals` shows them "
            "(default: every trade that needs you)."
        ),
    ] = None,
    bidstore: BidStoreUrl = None,
    tor_socks: TorSocks = None,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """Take your step on a trade: propose its transfer if you propose it, else check the
    proposal pays you what the trade says, countersign it and submit it to the ledger."""
    from wallet.market import accept

    with _market(wallet, passphrase_file, bidstore, tor_socks) as (w, store):
        chosen = None if trade is None else trade.lower()
        done = accept(w, chosen, store=store, resolve=resolve_prefix)
    if emit(as_json, {"trades": done}):
        return
    if not done:
        out.print("no trade needs you now: see petra wallet proposals")
    for row in done:
        out.print(f"trade {row['id']}: {row['done']}")


def trades_command(
    refresh: Annotated[
        bool, typer.Option(help="Ask the ledger first (else what the wallet last saw).")
    ] = True,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """Every trade the wallet took part in, oldest first, one entry each: sold or bought,
    the interval, power, price, payment, how it stands, and what it did to your meter's bills
    (energy billed, money deposited), as far as the wallet knows. The trades' states are
    those the bid store last said: `petra wallet proposals` asks it again."""
    from wallet.market import trade_effects

    with opened(wallet, passphrase_file) as w:
        if refresh:
            w.refresh()
        rows = trade_effects(w)
        genesis = w.genesis
    if emit(as_json, {"trades": rows}):
        return
    if not rows:
        out.print("no trades yet: petra wallet book shows the open orders")
        return
    ids = elide_all(row["id"] for row in rows)
    for row in rows:
        out.print(f"{ids[row['id']]}  {trade_line(row, genesis)}")


def trade_line(row: Mapping[str, Any], genesis: Any) -> str:
    """One trade in words: what it was, how it stands and what it did to which bill of your
    meter (DESIGN.md section 7: E_t = M_t - D_EPA(t) * interval_s + W_EPA(t) * interval_s; a
    bill counts the FA deposited during its interval, and owes the FA issued)."""
    currency = genesis.currency
    sold = row["role"] == "seller"
    t = row["interval"]
    terms = (
        f"{row['power']:,} W in {_interval(t, genesis)} at "
        f"{format_price(row['price'], currency)} for {format_money(row['payment'], currency)}"
    )
    if row["status"] in ("failed", "expired", "abandoned", "forgotten"):
        return f"{'selling' if sold else 'buying'} {terms}: {row['status']}; nothing moved"
    if row["status"] != "settled" and not row["on_ledger"]:
        return f"{'selling' if sold else 'buying'} {terms}: {row['status']}, not settled yet"
    energy = _energy(row["energy_j"])
    kinds = {"FA"} if sold else {"EPA"}
    coins = [c for c in row["received"] if c["asset"]["kind"] in kinds]
    deposited = sorted({c["deposited_in"] for c in coins if c["deposited_in"] is not None})
    held = any(c["state"] != "spent" for c in coins)
    if sold:
        said = [
            f"sold {terms}: settled",
            f"the EPA sold is not deposited back, so {energy} more is billed for interval {t}",
        ]
        if deposited and not held:
            bills = ", ".join(_interval(d, genesis) for d in deposited)
            said.append(f"the payment, deposited, credits the bill of interval {bills}")
        elif held:
            said.append(
                "the payment is held, not deposited: `petra wallet deposit` credits it to the "
                "bill of the interval it lands in"
            )
        else:
            said.append("the payment was spent, not deposited: it credits no bill")
        return "; ".join(said)
    said = [f"bought {terms}: settled"]
    if coins and not held and len(deposited) == len(coins):
        said.append(f"the EPA, deposited, takes {energy} off the energy billed for interval {t}")
    elif held:
        said.append(
            f"the EPA is held, not deposited: deposited before interval {t}'s bill closes, it "
            f"takes {energy} off the energy billed for it"
        )
    else:
        said.append("the EPA was spent, not deposited: it changes no bill")
    said.append("the payment left the wallet and credits no bill")
    return "; ".join(said)


def _energy(joules: int) -> str:
    """Energy as a person reads it: kWh, or Wh under one kWh."""
    if joules >= JOULES_PER_KWH:
        return f"{joules / JOULES_PER_KWH:,.3f} kWh"
    return f"{joules / 3600:,.3f} Wh"


def _interval(index: int, genesis: Any) -> str:
    return interval_label(index, genesis.epoch, genesis.interval_s)
