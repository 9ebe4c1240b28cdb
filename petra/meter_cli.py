"""`petra meter ...`: the smart-meter daemon, its key, and the owner's calls to it."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from assets import Eca, Epa, Fa, Keypair, Output, Rejected
from assets.codec import asset_from_wire, asset_to_wire
from assets.keyfile import dump_keys, is_sealed
from petra.console import (
    PassphraseFile,
    err,
    fail,
    read_genesis,
    read_keys,
    read_passphrase,
    serve,
    warn,
    write_private,
)

METER_KEY = "meter"  # the name of the meter's key in its key file
OWNER_KEY = "owner"  # the default name of the owner's key in the wallet's key file

meter_app = typer.Typer(
    help="The smart-meter daemon: readings, issuing, deposits, bills.", no_args_is_help=True
)
out = Console(soft_wrap=True)

ApiUrl = Annotated[
    str, typer.Option("--url", help="The meter's owner API.", envvar="PETRA_METER_URL")
]
MeterId = Annotated[str, typer.Option("--meter", help="The meter's id.", envvar="PETRA_METER_ID")]
OwnerKeys = Annotated[
    Path,
    typer.Option("--keys", help="Key file holding the owner's key.", exists=True, dir_okay=False),
]
OwnerKeyName = Annotated[str, typer.Option("--key", help="The owner key's name in the file.")]
Json = Annotated[bool, typer.Option("--json", help="Print the meter's JSON answer.")]


@meter_app.command("keygen")
def keygen_command(
    out_path: Annotated[
        Path, typer.Option("--out", help="Where to write the sealed key file.")
    ] = Path("meter-keys.json"),
    name: Annotated[str, typer.Option(help="The key's name in the file.")] = METER_KEY,
    passphrase_file: PassphraseFile = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a new key, sealed with a passphrase, and print its public key.

    For a meter (the default name "meter"): the DSO authorizes this public key. For an owner
    (`--name owner`): the meter's configuration names it as `owner`."""
    if out_path.exists() and not force:
        fail(f"{out_path} exists; pass --force to overwrite it")
    passphrase = read_passphrase(passphrase_file)
    if not passphrase:
        fail(
            "give a non-empty passphrase (--passphrase-file or $PETRA_PASSPHRASE): keys are sealed"
        )
    key = Keypair.generate()
    try:
        write_private(out_path, dump_keys({name: key}, passphrase))
    except OSError as exc:
        fail(f"cannot write {out_path}: {exc.strerror}")
    typer.echo(key.public_key.hex())
    err.print(f"key {name!r} sealed in {out_path}")


@meter_app.command("run")
def run_command(
    config: Annotated[
        Path, typer.Option(help="The meter's TOML configuration.", exists=True, dir_okay=False)
    ],
    passphrase_file: PassphraseFile = None,
    log_level: Annotated[
        str, typer.Option(help="debug, info, warning or error.", case_sensitive=False)
    ] = "info",
) -> None:
    """Run the meter: read its sources, follow the ledger, bill the DSO every interval and
    serve its owner's API on loopback (docs/architecture.md, "The smart meter")."""

    from ledger.client import LedgerClient, LedgerClientError
    from smartmeter.config import ConfigError, load_config
    from smartmeter.node import MeterNode
    from smartmeter.store import MeterStoreError

    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        fail(f"--log-level must be debug, info, warning or error, not {log_level!r}")
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    try:
        settings = load_config(config)
    except ConfigError as exc:
        fail(f"{config}: {exc}")
    _, genesis = read_genesis(settings.genesis)
    keys = read_keys(settings.keys, passphrase_file)
    if not is_sealed(settings.keys.read_bytes()):
        fail(f"{settings.keys} holds its keys in clear: the meter key must be sealed")
    if METER_KEY not in keys:
        fail(f"{settings.keys} has no key named {METER_KEY!r}: make one with `petra meter keygen`")
    # A meter outlives outages: with the ledger unreachable it still reads, stores and closes
    # intervals, and its ledger index catches up later (checking every head against the genesis).
    with LedgerClient(settings.ledger, retries=0) as ledger:
        try:
            served: Any = ledger.genesis()
        except LedgerClientError as exc:
            warn(f"cannot reach the ledger at {settings.ledger} ({exc}); starting anyway")
            served = genesis
    if served != genesis:
        fail(f"the ledger at {settings.ledger} serves another chain than {settings.genesis}")
    try:
        node = MeterNode(settings, genesis, keys[METER_KEY])
    except ConfigError as exc:
        fail(f"{config}: {exc}")
    except MeterStoreError as exc:
        fail(str(exc))
    node.start()
    port = settings.api_port
    err.print(
        f"meter {settings.meter}: owner API on http://127.0.0.1:{port}/v1, "
        f"{len(settings.sources)} source(s), ledger {settings.ledger}, DSO {settings.dso}"
    )
    try:
        serve(node.app(), "127.0.0.1", port)
    finally:
        node.stop()


# ---------------------------------------------------------------- the owner's calls


def _owner(url: str, meter: str, keys: Path, key: str, passphrase_file: Path | None) -> Any:
    from smartmeter.owner_client import OwnerClient

    found = read_keys(keys, passphrase_file)
    if key not in found:
        fail(f"{keys} has no key named {key!r} (it has: {', '.join(sorted(found)) or 'none'})")
    return OwnerClient(meter, found[key], url)


def _ask(client: Any, method: str, *args: Any) -> Any:
    from smartmeter.owner_client import OwnerApiError

    try:
        return getattr(client, method)(*args)
    except OwnerApiError as exc:
        fail(f"the meter refused: {exc.code}: {exc.message}")
    finally:
        client.close()


_ASSET = re.compile(r"(epa|eca):(\d+)w@(-?\d+)(?:-(-?\d+))?|fa:(\d+)")


def parse_asset(text: str) -> Epa | Eca | Fa:
    """`epa:1500W@120`, `eca:800W@120-123` (intervals, inclusive) or `fa:2500000` (micro-units)."""
    match = _ASSET.fullmatch(text.strip().lower())
    if match is None:
        raise typer.BadParameter(
            f"{text!r} is not an asset: write epa:<W>W@<interval>[-<last>], "
            "eca:<W>W@<interval>[-<last>] or fa:<micro-units>"
        )
    kind, power, start, end, amount = match.groups()
    first = int(start or 0)
    last = int(end) if end is not None else first
    asset: Epa | Eca | Fa
    if amount is not None:
        asset = Fa(int(amount))
    else:
        asset = Epa(int(power), first, last) if kind == "epa" else Eca(int(power), first, last)
    try:  # the ledger's own rules: positive amounts, intervals in order, exact in JSON
        return asset_from_wire(asset_to_wire(asset))
    except Rejected as exc:
        raise typer.BadParameter(f"{text!r}: {exc.message}") from None


@meter_app.command("withdraw")
def withdraw_command(
    assets: Annotated[
        list[str],
        typer.Argument(help="epa:<W>W@<interval>[-<last>], eca:<W>W@<interval>[-<last>], fa:<µ>"),
    ],
    to: Annotated[
        str | None,
        typer.Option(help="Address (64 hex) to issue to (default: the owner key's own)."),
    ] = None,
    url: ApiUrl = "http://127.0.0.1:7440",
    meter: MeterId = "",
    keys: OwnerKeys = Path("owner-keys.json"),
    key: OwnerKeyName = OWNER_KEY,
    passphrase_file: PassphraseFile = None,
    as_json: Json = False,
) -> None:
    """Ask the meter to issue assets within its limits and the owner's credit line."""
    client = _owner(url, _meter(meter), keys, key, passphrase_file)
    try:
        address = client.owner_key.public_key if to is None else bytes.fromhex(to)
    except ValueError:
        fail(f"--to must be an address of 64 hex digits, not {to!r}")
    if len(address) != 32:
        fail("--to must be an address of 64 hex digits")
    parsed = [parse_asset(a) for a in assets]
    answer = _ask(client, "withdraw", [Output(asset, address) for asset in parsed])
    if as_json:
        out.print_json(json.dumps(answer))
    else:
        out.print(
            f"issued in block {answer['height']}: tx {answer['txid']} (nonce {answer['nonce']})"
        )


@meter_app.command("deposit-address")
def deposit_address_command(
    url: ApiUrl = "http://127.0.0.1:7440",
    meter: MeterId = "",
    keys: OwnerKeys = Path("owner-keys.json"),
    key: OwnerKeyName = OWNER_KEY,
    passphrase_file: PassphraseFile = None,
) -> None:
    """A fresh deposit address of the meter, for paying it what the owner sold or owes."""
    answer = _ask(_owner(url, _meter(meter), keys, key, passphrase_file), "deposit_address")
    typer.echo(answer["address"])


@meter_app.command("status")
def status_command(
    url: ApiUrl = "http://127.0.0.1:7440",
    meter: MeterId = "",
    keys: OwnerKeys = Path("owner-keys.json"),
    key: OwnerKeyName = OWNER_KEY,
    passphrase_file: PassphraseFile = None,
    as_json: Json = False,
) -> None:
    """The meter's view: ledger height, credit used, prices now, problems."""
    answer = _ask(_owner(url, _meter(meter), keys, key, passphrase_file), "status")
    if as_json:
        out.print_json(json.dumps(answer))
        return
    out.print(
        f"meter {answer['meter']}, interval {answer['interval']}, ledger block {answer['height']}"
    )
    out.print(f"credit used {answer['credit_used']} of {answer['credit_line']} micro-units")
    out.print(
        f"prices: consumption {answer['price_consumption']}, "
        f"production {answer['price_production']} micro-units/kWh"
    )
    for problem in ("watcher_problem", "ledger_error"):
        if answer.get(problem):
            warn(f"{problem.replace('_', ' ')}: {answer[problem]}")


@meter_app.command("bills")
def bills_command(
    url: ApiUrl = "http://127.0.0.1:7440",
    meter: MeterId = "",
    keys: OwnerKeys = Path("owner-keys.json"),
    key: OwnerKeyName = OWNER_KEY,
    passphrase_file: PassphraseFile = None,
    as_json: Json = False,
) -> None:
    """The bills the DSO has not acknowledged yet."""
    answer = _ask(_owner(url, _meter(meter), keys, key, passphrase_file), "bills")
    if as_json:
        out.print_json(json.dumps(answer))
        return
    out.print(f"{answer['pending']} bill(s) wait for the DSO")
    for due in answer["due"]:
        bill = due["bill"]
        out.print(
            f"interval {bill['interval']}: E_t {bill['energy_j']} J, "
            f"B_t {bill['amount']} micro-units "
            f"({due['attempts']} attempts; {due['last_error'] or 'not sent yet'})"
        )


def _meter(meter: str) -> str:
    if not meter:
        fail("give the meter's id: --meter or $PETRA_METER_ID")
    return meter
