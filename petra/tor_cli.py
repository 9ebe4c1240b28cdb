"""`petra tor ...`: a private Tor network on loopback for the simulation and the tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from petra.console import err, fail

tor_app = typer.Typer(
    help="Tor: a private network on loopback, with no internet (DESIGN.md section 11).",
    no_args_is_help=True,
)
testnet_app = typer.Typer(
    help="Start and stop a private Tor network of authorities, relays and one client.",
    no_args_is_help=True,
)
tor_app.add_typer(testnet_app, name="testnet")

NetworkDir = Annotated[
    Path, typer.Option("--dir", help="The folder of the network: keys, torrc files, logs, state.")
]


@testnet_app.command("up")
def up_command(
    directory: NetworkDir,
    authorities: Annotated[
        int, typer.Option(min=1, max=16, help="How many directory authorities.")
    ] = 3,
    relays: Annotated[int, typer.Option(min=0, max=64, help="How many exit relays.")] = 3,
    timeout_s: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for the client to bootstrap.")
    ] = 180.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for programs: the ports.")
    ] = False,
) -> None:
    """Start the network on 127.0.0.1, wait until its client has bootstrapped, print the
    client's SOCKS and control ports and leave it running; `petra tor testnet down` stops it.
    An onion service needs at least 5 authorities and relays in all."""
    from simulation import tornet

    if (directory / tornet.STATE_FILE).exists():
        fail(f"a Tor network already runs from {directory}: stop it with `petra tor testnet down`")
    network = tornet.TorNetwork(directory, authorities=authorities, relays=relays)
    if not as_json:
        err.print(
            f"starting {authorities} authorities, {relays} relays and a client in "
            + escape(str(directory))
        )
    try:
        seconds = network.up(timeout_s)
    except tornet.TorNetworkError as error:
        fail(str(error).splitlines()[0] + f" (logs under {directory})")
    if as_json:
        ports = {"socks_port": network.socks_port, "control_port": network.control_port}
        print(json.dumps({**ports, "bootstrap_s": round(seconds, 1)}))
        return
    err.print(f"bootstrapped in {seconds:.0f} s")
    print(f"socks port: {network.socks_port} (socks5://127.0.0.1:{network.socks_port})")
    print(f"control port: {network.control_port} (cookie authentication)")


@testnet_app.command("down")
def down_command(directory: NetworkDir) -> None:
    """Stop the network started from this directory, by whatever process started it."""
    from simulation import tornet

    try:
        stopped = tornet.TorNetwork.stop_in(directory)
    except tornet.TorNetworkError as error:
        fail(str(error))
    err.print(f"stopped {stopped} tor processes")
