"""`petra mixer ...`: serve the mixer's coordinator (docs/mixer-api.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

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
    warn,
)

mixer_app = typer.Typer(
    help="The mixer: CoinShuffle pools of equal denominations (DESIGN.md section 8).",
    no_args_is_help=True,
)
log = logging.getLogger("petra")


@mixer_app.command("serve", cls=ConfiguredCommand)
def serve_command(
    ctx: typer.Context,
    genesis: Annotated[
        Path, typer.Option(help="The genesis JSON file.", exists=True, dir_okay=False)
    ],
    config: Annotated[Path | None, config_option("mixer")] = None,
    ledger: Annotated[str, typer.Option(help="The ledger's URL.")] = "http://127.0.0.1:7420",
    min_peers: Annotated[
        int, typer.Option(min=2, max=256, help="Peers a pool needs to start at its deadline.")
    ] = 3,
    max_peers: Annotated[
        int, typer.Option(min=2, max=256, help="Peers that start a pool at once.")
    ] = 50,
    start_s: Annotated[
        float, typer.Option(min=0.1, help="Seconds from a pool's first join to its deadline.")
    ] = 30.0,
    timeout_s: Annotated[
        float, typer.Option(min=0.1, help="Seconds a protocol step waits for silent peers.")
    ] = 10.0,
    host: Annotated[str, typer.Option(help="The address to listen on (loopback unless told).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="The port to listen on.")] = 7450,
    log_level: LogLevel = "info",
    log_format: LogFormat = "text",
    metrics_host: MetricsHost = "127.0.0.1",
    metrics_port: MetricsPort = 9450,
) -> None:
    """Serve the coordinator under /v1: form pools, relay messages, enforce timeouts, submit
    each finished transfer to the ledger. Keeps nothing on disk."""

    from assets import chain_id
    from ledger.client import LedgerClient
    from mixer.api import create_app
    from mixer.coordinator import Coordinator

    configure_logging(log_level, "mixer", log_format)
    _, genesis_doc = read_genesis(genesis)
    if min_peers > max_peers:
        fail(f"--min-peers ({min_peers}) must not exceed --max-peers ({max_peers})")
    if host not in ("127.0.0.1", "::1", "localhost"):
        warn(f"listening on {host}: the coordinator is reachable beyond this machine")
    check_ledger_genesis(ledger, genesis_doc, genesis)
    client = LedgerClient(ledger)
    coordinator = Coordinator(
        client,
        chain_id(genesis_doc),
        min_peers=min_peers,
        max_peers=max_peers,
        start_s=start_s,
        timeout_s=timeout_s,
    )
    log.info(
        "mixer coordinator on http://%s:%s/v1 (ledger %s, pools of %s to %s peers, keeping "
        "nothing on disk)",
        *(host, port, ledger, min_peers, max_peers),
    )
    try:
        serve(
            create_app(coordinator),
            host,
            port,
            metrics=(coordinator.registry, metrics_host, metrics_port),
            metrics_by_default=not chosen(ctx, "metrics_port"),
        )
    finally:
        client.close()
    log.info("stopped")
