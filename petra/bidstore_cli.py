"""`petra bidstore ...`: serve the bid store (docs/bidstore-api.md), on loopback only, and
publish it as a v3 onion service through Tor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from petra.console import check_ledger_genesis, err, fail, read_genesis, serve, write_private

bidstore_app = typer.Typer(
    help="The bid store: asks, bids, matching and the trade relay (DESIGN.md section 9).",
    no_args_is_help=True,
)
LOOPBACK = ("127.0.0.1", "::1", "localhost")
MAX_STREAMS = 16  # per rendezvous circuit: a client wanting more builds circuits, at a cost


@bidstore_app.command("serve")
def serve_command(
    genesis: Annotated[
        Path, typer.Option(help="The genesis JSON file.", exists=True, dir_okay=False)
    ],
    ledger: Annotated[str, typer.Option(help="The ledger node.")] = "http://127.0.0.1:7420",
    host: Annotated[str, typer.Option(help="Loopback address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 7460,
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
) -> None:
    """Serve the bid store under /v1 on loopback: check orders against the ledger, keep the
    book, clear call auctions at their gate, relay trade proposals. Keeps nothing on disk but
    the onion key."""
    from bidstore.api import create_app
    from bidstore.service import BidStore, Limits
    from ledger.client import LedgerClient

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
        err.print(f"onion service http://{address} -> 127.0.0.1:{port}")
    err.print(f"bid store on http://{host}:{port}/v1 (ledger {ledger})")
    try:
        serve(create_app(store), host, port)
    finally:
        client.close()


def _publish(control_port: int, port: int, key_file: Path | None, max_streams: int) -> str:
    """Publish the onion service through the tor at `control_port`, at most `max_streams`
    streams open at once per rendezvous circuit; its address."""
    from stem import ControllerError  # type: ignore[import-untyped]
    from stem.connection import AuthenticationFailure  # type: ignore[import-untyped]

    from bidstore.tornet import publish_onion

    key = None
    if key_file is not None and key_file.exists():
        try:
            key = key_file.read_text().strip()
        except OSError as exc:
            fail(f"cannot read the onion key {key_file}: {exc.strerror}")
    try:
        address, new_key = publish_onion(control_port, port, key, max_streams=max_streams)
    except (ControllerError, AuthenticationFailure, OSError) as exc:
        fail(f"cannot publish the onion service through tor's control port {control_port}: {exc}")
    if key_file is not None and key is None:
        try:
            write_private(key_file, (new_key + "\n").encode())
        except OSError as exc:
            fail(f"cannot write the onion key {key_file}: {exc.strerror}")
    return address
