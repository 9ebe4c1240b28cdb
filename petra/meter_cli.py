"""`petra meter ...`: the smart-meter daemon, its key, and the owner's calls to it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from assets import Keypair, Output
from assets.keyfile import dump_keys, is_sealed
from petra.config import log_and_metrics
from petra.console import (
    LogFormat,
    LogLevel,
    MetricsHost,
    MetricsPort,
    PassphraseFile,
    configure_logging,
    err,
    fail,
    hold_store_for,
    read_genesis,
    read_keys,
    read_passphrase,
    serve,
    warn,
    write_private,
)
from petra.vocabulary import (
    ASSET_SYNTAX,
    asset_argument,
    format_money,
    format_price,
    json_option,
    local_time,
    meter_id_option,
    meter_option,
)

METER_KEY = "meter"  # the name of the meter's key in its key file
OWNER_KEY = "owner"  # the default name of the owner's key in the wallet's key file

meter_app = typer.Typer(
    help="The smart-meter daemon: readings, issuing, deposits, bills.", no_args_is_help=True
)
out = Console(soft_wrap=True)

ApiUrl = Annotated[str, meter_option(": its owner API")]
MeterId = Annotated[str, meter_id_option(", as the DSO authorized it")]
OwnerKeys = Annotated[
    Path,
    typer.Option(
        "--keys", help="The key file holding the owner's key.", exists=True, dir_okay=False
    ),
]
OwnerKeyName = Annotated[
    str, typer.Option("--key", help="The key's name in the file: the owner's.")
]
Json = Annotated[bool, json_option()]


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
    ctx: typer.Context,
    config: Annotated[
        Path,
        typer.Option(
            help="The meter's TOML configuration; the options below override its keys.",
            exists=True,
            dir_okay=False,
        ),
    ],
    passphrase_file: PassphraseFile = None,
    log_level: LogLevel = "info",
    log_format: LogFormat = "text",
    metrics_host: MetricsHost = "127.0.0.1",
    metrics_port: MetricsPort = 9440,
) -> None:
    """Run the meter: read its sources, follow the ledger, bill the DSO every interval and
    serve its owner's API on loopback (docs/architecture.md, "The smart meter")."""
    from sqlalchemy.engine import make_url

    from ledger.client import LedgerClient, LedgerClientError
    from smartmeter.config import ConfigError, load_config
    from smartmeter.node import MeterNode
    from smartmeter.store import MeterStoreError

    try:
        settings = load_config(config)
    except ConfigError as exc:
        fail(f"{config}: {exc}")
    log_metrics = log_and_metrics(ctx, config, "meter", settings)
    configure_logging(log_metrics.log_level, "meter", log_metrics.log_format)
    # pymodbus logs a line per failed connection; the sources say it once, in words.
    if log_metrics.log_level != "debug":
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    # Held first: before the meter replays its readings or follows the ledger.
    hold_store_for(ctx, settings.store, "meter", "petra meter run")
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
    logging.getLogger("petra").info(
        "meter %s: owner API on http://127.0.0.1:%s/v1, %d source(s), store %s, ledger %s, DSO %s",
        settings.meter,
        port,
        len(settings.sources),
        make_url(settings.store).render_as_string(hide_password=True),
        settings.ledger,
        settings.dso,
    )
    try:
        serve(
            node.app(),
            "127.0.0.1",
            port,
            metrics=(node.registry, log_metrics.metrics_host, log_metrics.metrics_port),
            metrics_by_default=log_metrics.metrics_by_default,
        )
    finally:
        node.stop()
    logging.getLogger("petra").info("stopped")


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


@meter_app.command("withdraw")
def withdraw_command(
    assets: Annotated[
        list[str],
        typer.Argument(help=f"The assets to issue, each as {ASSET_SYNTAX} (docs/cli.md)."),
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
    parsed = [asset_argument(a) for a in assets]
    answer = _ask(client, "withdraw", [Output(asset, address) for asset in parsed])
    if as_json:
        out.print_json(json.dumps(answer))
    else:
        out.print(
            f"issued {', '.join(assets)} in block {answer['height']}: "
            f"tx {answer['txid']} (nonce {answer['nonce']})"
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
    currency = answer.get("currency", "EUR")
    now = answer["interval"]
    started = answer.get("interval_start")
    when = f" ({local_time(started)})" if started is not None else ""
    out.print(f"meter {answer['meter']}, interval {now}{when}, ledger block {answer['height']}")
    out.print(
        f"credit used {format_money(answer['credit_used'], currency)} "
        f"of {format_money(answer['credit_line'], currency)}"
    )
    out.print(
        f"prices: consumption {format_price(answer['price_consumption'], currency)}, "
        f"production {format_price(answer['price_production'], currency)}"
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
    currency = answer.get("currency", "EUR")
    out.print(f"{answer['pending']} bill(s) wait for the DSO")
    for due in answer["due"]:
        bill = due["bill"]
        out.print(
            f"interval {bill['interval']}: E_t {bill['energy_j']:,} J, "
            f"B_t {format_money(bill['amount'], currency)} "
            f"({due['attempts']} attempts; {due['last_error'] or 'not sent yet'})"
        )


def _meter(meter: str) -> str:
    if not meter:
        fail("give the meter's id: --meter-id or $PETRA_METER_ID")
    return meter
