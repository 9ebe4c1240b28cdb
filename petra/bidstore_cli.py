"""`petra bidstore ...`: serve the bid store (docs/bidstore-api.md), on loopback only, and
publish it as a v3 onion service through Tor; read a store's status and public book, directly
or through Tor's SOCKS port (`--tor-socks`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from petra.config import ConfiguredCommand, chosen, config_option
from petra.console import (
    LogFormat,
    LogLevel,
    MetricsHost,
    MetricsPort,
    check_ledger_genesis,
    configure_logging,
    fail,
    read_genesis,
    serve,
    write_private,
)
from petra.vocabulary import (
    bidstore_option,
    elide_all,
    format_money,
    interval_start,
    local_time,
    tor_socks_option,
)

bidstore_app = typer.Typer(
    help="The bid store: asks, bids, matching and the trade relay (DESIGN.md section 9).",
    no_args_is_help=True,
)
LOOPBACK = ("127.0.0.1", "::1", "localhost")
log = logging.getLogger("petra")
out = Console()

if TYPE_CHECKING:
    from bidstore.client import BidStoreClient
MAX_STREAMS = 16  # per rendezvous circuit: a client wanting more builds circuits, at a cost


@bidstore_app.command("serve", cls=ConfiguredCommand)
def serve_command(
    ctx: typer.Context,
    genesis: Annotated[
        Path, typer.Option(help="The genesis JSON file.", exists=True, dir_okay=False)
    ],
    config: Annotated[Path | None, config_option("bidstore")] = None,
    ledger: Annotated[str, typer.Option(help="The ledger's URL.")] = "http://127.0.0.1:7420",
    host: Annotated[
        str, typer.Option(help="The address to listen on: loopback only.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="The port to listen on.")] = 7460,
    gate_s: Annotated[
        float,
        typer.Option(min=0, help="Seconds before an interval starts that its auction clears."),
    ] = 60.0,
    step_timeout_s: Annotated[
        float,
        typer.Option(
            min=1,
            help="Seconds a trade's party has for its step (the buyer to propose, the seller to "
            "submit) before its order is let go and the other's goes on.",
        ),
    ] = 60.0,
    max_orders: Annotated[
        int, typer.Option(min=1, help="Open orders and unfinished trades per owner address.")
    ] = 16,
    rate: Annotated[
        float, typer.Option(min=0.1, help="Requests a second per TCP connection (sustained).")
    ] = 20.0,
    burst: Annotated[int, typer.Option(min=1, help="Requests per TCP connection at once.")] = 100,
    address_rate: Annotated[
        float,
        typer.Option(min=0.1, help="Requests a second per client address, loopback not counted."),
    ] = 50.0,
    address_burst: Annotated[
        int, typer.Option(min=1, help="Requests per client address at once, loopback not counted.")
    ] = 200,
    service_rate: Annotated[
        float, typer.Option(min=0.1, help="Requests a second to the whole service.")
    ] = 2000.0,
    service_burst: Annotated[
        int, typer.Option(min=1, help="Requests to the whole service at once.")
    ] = 4000,
    max_in_flight: Annotated[
        int, typer.Option(min=1, help="Requests handled at once; more are answered 503 busy.")
    ] = 256,
    onion: Annotated[
        bool, typer.Option("--onion", help="Publish the store as a v3 onion service.")
    ] = False,
    tor_control: Annotated[
        int | None, typer.Option(min=1, max=65535, help="The control port of the tor to use.")
    ] = None,
    onion_key: Annotated[
        Path | None,
        typer.Option(
            help="File keeping the onion service's key (created if missing); without it the "
            "address is new on every start.",
            dir_okay=False,
        ),
    ] = None,
    max_streams: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help=f"Streams open at once per Tor rendezvous circuit (default {MAX_STREAMS}).",
        ),
    ] = None,
    log_level: LogLevel = "info",
    log_format: LogFormat = "text",
    metrics_host: MetricsHost = "127.0.0.1",
    metrics_port: MetricsPort = 9460,
) -> None:
    """Serve the bid store under /v1 on loopback: check orders against the ledger, keep the
    book, clear call auctions at their gate, relay trade proposals. Keeps nothing on disk but
    the onion key."""
    from bidstore.api import create_app
    from bidstore.service import BidStore, Limits
    from ledger.client import LedgerClient

    configure_logging(log_level, "bidstore", log_format)
    _, genesis_doc = read_genesis(genesis)
    if host not in LOOPBACK:
        fail(f"the bid store listens on loopback only, not {host}: reach it with --onion")
    if onion and tor_control is None:
        fail("--onion needs --tor-control, the control port of a running tor")
    if not onion and (tor_control is not None or onion_key is not None or max_streams is not None):
        fail("--tor-control, --onion-key and --max-streams apply only with --onion")
    check_ledger_genesis(ledger, genesis_doc, genesis)
    client = LedgerClient(ledger)
    limits = Limits(
        max_orders_per_owner=max_orders,
        requests_per_s=rate,
        burst=burst,
        address_requests_per_s=address_rate,
        address_burst=address_burst,
        service_requests_per_s=service_rate,
        service_burst=service_burst,
        max_in_flight=max_in_flight,
    )
    store = BidStore(
        client, genesis_doc, gate_s=gate_s, step_timeout_s=step_timeout_s, limits=limits
    )
    if onion:
        assert tor_control is not None
        address = _publish(tor_control, port, onion_key, max_streams or MAX_STREAMS)
        log.info("onion service http://%s -> 127.0.0.1:%s", address, port)
    log.info(
        "bid store on http://%s:%s/v1 (ledger %s, keeping nothing on disk)", host, port, ledger
    )
    try:
        serve(
            create_app(store),
            host,
            port,
            metrics=(store.registry, metrics_host, metrics_port),
            metrics_by_default=not chosen(ctx, "metrics_port"),
        )
    finally:
        client.close()
    log.info("stopped")


def _publish(control_port: int, port: int, key_file: Path | None, max_streams: int) -> str:
    """Publish the onion service through the tor at `control_port`, at most `max_streams`
    streams open at once per rendezvous circuit; its address."""
    from stem import ControllerError  # type: ignore[import-untyped]
    from stem.connection import AuthenticationFailure  # type: ignore[import-untyped]

    from bidstore import onion

    key = None
    if key_file is not None and key_file.exists():
        try:
            key = key_file.read_text().strip()
        except OSError as exc:
            fail(f"cannot read the onion key {key_file}: {exc.strerror}")
    try:
        address, new_key = onion.publish_onion(control_port, port, key, max_streams=max_streams)
    except (ControllerError, AuthenticationFailure, OSError) as exc:
        fail(f"cannot publish the onion service through tor's control port {control_port}: {exc}")
    if key_file is not None and key is None:
        try:
            write_private(key_file, (new_key + "\n").encode())
        except OSError as exc:
            fail(f"cannot write the onion key {key_file}: {exc.strerror}")
    return address


# ---------------------------------------------------------------- reading a store

BidStoreUrl = Annotated[str, bidstore_option(", or its onion address (needs --tor-socks)")]
TorSocks = Annotated[int | None, tor_socks_option(": reach the store through Tor")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for programs: the store's answer.")]


def _ask(store: str, tor_socks: int | None, call: Callable[[BidStoreClient], Any]) -> Any:
    """`call` on a client of `store`; a refusal or an unreachable store is one sentence."""
    from bidstore.client import BidStoreClient, BidStoreClientError

    try:
        with BidStoreClient(store, tor_socks=tor_socks) as client:
            return call(client)
    except BidStoreClientError as exc:
        fail(exc.message)


@bidstore_app.command("status")
def status_command(
    store: BidStoreUrl = "http://127.0.0.1:7460", tor_socks: TorSocks = None, as_json: Json = False
) -> None:
    """The store's chain, current interval, open orders and trades, and ledger height."""
    answer = _ask(store, tor_socks, lambda client: client.status())
    if as_json:
        out.print_json(json.dumps(answer))
        return
    started = interval_start(answer["interval"], answer["epoch"], answer["interval_s"])
    out.print(
        f"interval {answer['interval']} (from {local_time(started)}, {answer['interval_s']} s), "
        f"{answer['open_orders']} open order(s), {answer['open_trades']} unfinished trade(s), "
        f"ledger block {answer['height']}"
    )


@bidstore_app.command("book")
def book_command(
    store: BidStoreUrl = "http://127.0.0.1:7460",
    tor_socks: TorSocks = None,
    interval: Annotated[
        int | None, typer.Option(min=0, help="The interval to show alone, in priority order.")
    ] = None,
    as_json: Json = False,
) -> None:
    """The public order book: every open order (anonymous: no owner, no asset), or one
    interval's asks by price ascending and bids by price descending."""
    orders = _ask(store, tor_socks, lambda client: client.open_orders(interval))
    if as_json:
        out.print_json(json.dumps({"orders": orders}))
        return
    status = _ask(store, tor_socks, lambda client: client.status()) if orders else None
    out.print(book_table(orders, status=status) if orders else "no open orders")


def book_table(
    orders: list[dict[str, Any]],
    mine: set[str] | None = None,
    status: dict[str, Any] | None = None,
) -> Table:
    """Open orders as a table a person reads at 80 columns: ids elided in the middle (any
    prefix of four digits or more is what `petra wallet take` accepts), prices in the chain's
    currency per kWh, and with `status` (the store's) each interval's local start time; with
    `mine`, a column marks the orders whose ids it holds."""
    currency = (status or {}).get("currency", "EUR")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("interval", no_wrap=True)
    table.add_column("side", no_wrap=True)
    table.add_column("W", justify="right", no_wrap=True)
    table.add_column(f"{currency}/kWh", justify="right", no_wrap=True)
    table.add_column("contact", no_wrap=True)
    table.add_column("order", no_wrap=True)
    if mine is not None:
        table.add_column("yours", no_wrap=True)
    ids = elide_all([entry["id"] for entry in orders], 13)
    contacts = elide_all([entry["contact"] for entry in orders], 13)
    for entry in orders:
        when = str(entry["interval"])
        if status is not None and "epoch" in status:
            start = interval_start(entry["interval"], status["epoch"], status["interval_s"])
            when += f" {local_time(start, with_date=False)}"
        row = [
            when,
            entry["side"],
            f"{entry['power']:,}",
            format_money(entry["price"], currency).split()[0],
            contacts[entry["contact"]],
            ids[entry["id"]],
        ]
        table.add_row(*row, *(() if mine is None else ("yes" if entry["id"] in mine else "",)))
    return table
