"""`petra wallet ask|bid|book|take|proposals|accept`: the wallet on the bid store
(wallet/market.py, docs/bidstore-api.md).

Each command reaches the store the wallet names (`petra wallet config --bidstore URL
--tor-socks PORT`), or the one `--bidstore` and `--tor-socks` give, prints for a person or the
JSON with `--json`, and says in one sentence what went wrong and what to do, with exit code 2.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.table import Table

from petra.wallet_common import Json, PassFile, WalletPath, emit, opened, out

BidStoreUrl = Annotated[
    str | None, typer.Option("--bidstore", help="The bid store (else the wallet's).")
]
TorSocks = Annotated[
    int | None,
    typer.Option(min=1, max=65535, help="Tor's SOCKS port on 127.0.0.1 (else the wallet's)."),
]
Interval = Annotated[int, typer.Option(min=0, help="The interval the order is for.")]
Power = Annotated[int, typer.Option(min=1, help="Power in W, held the whole interval.")]
Price = Annotated[int, typer.Option(min=1, help="Price in micro-units per kWh.")]


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
    if emit(as_json, placed):
        return
    if placed["moved"] is not None:
        out.print(f"gathered the order's assets in {placed['moved'][:16]}")
    out.print(
        f"{side} {power:,} W for interval {interval} at {price:,} µ/kWh posted: {placed['id']}"
    )
    for replaced in placed["replaced"]:
        out.print(f"it replaces order {replaced[:16]}")
    out.print("see what it needs from you: petra wallet proposals")


def book_command(
    interval: Annotated[
        int | None, typer.Option(min=0, help="Only this interval, in priority order.")
    ] = None,
    bidstore: BidStoreUrl = None,
    tor_socks: TorSocks = None,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """The store's open orders (anonymous), yours marked."""
    from bidstore.client import BidStoreClientError
    from petra.bidstore_cli import book_table
    from petra.console import fail
    from wallet.market import store_error

    with _market(wallet, passphrase_file, bidstore, tor_socks) as (w, store):
        mine = set(w.data().get("orders", {}))
        try:
            orders = store.open_orders(interval)
        except BidStoreClientError as exc:
            fail(store_error(exc).message)
    orders = [{**o, "mine": o["id"] in mine} for o in orders]
    if emit(as_json, {"orders": orders}):
        return
    out.print(book_table(orders, mine) if orders else "no open orders")


def take_command(
    order: Annotated[
        str,
        typer.Argument(help="The open order to take: its id, or its first digits as `book` shows."),
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
        trade = take(w, order, power, store=store)
    if emit(as_json, trade):
        return
    out.print(
        f"trade {trade['id']}: {trade['power']:,} W for interval {trade['interval']} at "
        f"{trade['price']:,} µ/kWh, {trade['payment']:,} µ; {trade['status']}"
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
    `petra wallet accept`), `wait` (the other party's turn), or how it ended."""
    from wallet.market import proposals

    with _market(wallet, passphrase_file, bidstore, tor_socks) as (w, store):
        rows = proposals(w, store=store)
    if emit(as_json, {"trades": rows}):
        return
    if not rows:
        out.print("no unfinished trades")
        return
    # the id's first 16 digits: `accept` takes them (--json has the whole id)
    table = Table("trade", "you", "interval", "power (W)", "price (µ/kWh)", "payment (µ)", "next")
    for row in rows:
        table.add_row(
            row["id"][:16],
            row["role"],
            str(row["interval"]),
            f"{row['power']:,}",
            f"{row['price']:,}",
            f"{row['payment']:,}",
            row["action"],
        )
    out.print(table)


def accept_command(
    trade: Annotated[
        str | None,
        typer.Argument(
            help="The trade: its id or its first digits, as `proposals` shows them "
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
        done = accept(w, trade, store=store)
    if emit(as_json, {"trades": done}):
        return
    if not done:
        out.print("no trade needs you now: see petra wallet proposals")
    for row in done:
        out.print(f"trade {row['id'][:16]}: {row['done']}")
