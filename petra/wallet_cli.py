"""`petra wallet ...`: the prosumer's wallet (wallet/wallet.py) on the command line.

Every command opens the wallet file (`--wallet`, else $PETRA_WALLET, else
~/.petra/wallet.json) with its passphrase (`--passphrase-file`, else $PETRA_PASSPHRASE, else a
prompt), prints for a person, or the JSON with `--json`, and says in one sentence what went wrong
and what to do, with exit code 2.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from petra.console import fail, read_genesis, read_passphrase
from petra.wallet_autopilot_cli import register as register_autopilot
from petra.wallet_common import (
    Json,
    PassFile,
    WalletPath,
    emit,
    opened,
    out,
    passphrase,
    wallet_path,
)
from petra.wallet_market_cli import register as register_market

wallet_app = typer.Typer(
    help="The prosumer's wallet: keys, assets, the meter, mixing, trading and deposits.",
    no_args_is_help=True,
)
address_app = typer.Typer(help="The wallet's addresses.", no_args_is_help=True)
wallet_app.add_typer(address_app, name="address")
# ---------------------------------------------------------------- init and configuration


@wallet_app.command("init")
def init_command(
    genesis: Annotated[
        Path, typer.Option(help="The chain's genesis JSON file.", exists=True, dir_okay=False)
    ],
    ledger: Annotated[str, typer.Option(help="The ledger node.")] = "http://127.0.0.1:7420",
    meter_url: Annotated[str | None, typer.Option(help="Your meter's owner API.")] = None,
    meter_id: Annotated[str | None, typer.Option(help="Your meter's id.")] = None,
    mixer: Annotated[str | None, typer.Option(help="The mixer coordinator.")] = None,
    bidstore: Annotated[
        str | None, typer.Option(help="The bid store (its onion address with --tor-socks).")
    ] = None,
    tor_socks: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Tor's SOCKS port on 127.0.0.1.")
    ] = None,
    kdf: Annotated[
        str, typer.Option(help="Argon2id cost: interactive, moderate or sensitive.")
    ] = "moderate",
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """Create a wallet: a new master key, sealed under your passphrase. Prints the owner
    address your meter's configuration must name (`owner`)."""
    from wallet.keystore import KdfLevel, KeystoreError, WalletFile
    from wallet.wallet import Services, Wallet, new_data

    _, genesis_doc = read_genesis(genesis)
    try:
        level = KdfLevel(kdf)
    except ValueError:
        fail(f"--kdf is interactive, moderate or sensitive, not {kdf!r}")
    where = wallet_path(wallet)
    services = Services(ledger, meter_url, meter_id, mixer, bidstore, tor_socks)
    secret = passphrase(passphrase_file, confirm=True)
    if not secret:
        fail("an empty passphrase would leave the keys unprotected: choose one")
    where.parent.mkdir(parents=True, exist_ok=True)
    try:
        file = WalletFile.create(
            where, secret, kdf=level, data=new_data(genesis_doc, services, _now())
        )
    except KeystoreError as exc:
        fail(f"{where}: {exc.message}")
    owner = Wallet(file).owner_key().public_key.hex()
    if emit(as_json, {"wallet": str(where), "owner": owner}):
        return
    out.print(f"wallet created: {where}")
    out.print(f"owner address (put it in your meter's configuration as `owner`): {owner}")
    out.print("keep a backup: petra wallet backup --to FILE")


@wallet_app.command("config")
def config_command(
    ledger: Annotated[str | None, typer.Option(help="The ledger node.")] = None,
    meter_url: Annotated[str | None, typer.Option(help="Your meter's owner API.")] = None,
    meter_id: Annotated[str | None, typer.Option(help="Your meter's id.")] = None,
    mixer: Annotated[str | None, typer.Option(help="The mixer coordinator.")] = None,
    bidstore: Annotated[str | None, typer.Option(help="The bid store.")] = None,
    tor_socks: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Tor's SOCKS port on 127.0.0.1.")
    ] = None,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """Show the services the wallet talks to; change those given."""
    with opened(wallet, passphrase_file) as w:
        services = w.set_services(
            ledger=ledger,
            meter_url=meter_url,
            meter_id=meter_id,
            mixer=mixer,
            bidstore=bidstore,
            tor_socks=tor_socks,
        )
    if emit(as_json, services.to_wire()):
        return
    for name, value in services.to_wire().items():
        out.print(f"{name}: {'-' if value is None else value}")


# ---------------------------------------------------------------- addresses


@address_app.command("new")
def address_new_command(
    label: Annotated[str | None, typer.Option(help="A label to remember it by.")] = None,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """A fresh address to receive at (never handed out before)."""
    with opened(wallet, passphrase_file) as w:
        key = w.new_key("address", label)
    address = key.public_key.hex()
    if not emit(as_json, {"address": address, "label": label}):
        out.print(address)


@address_app.command("list")
def address_list_command(
    wallet: WalletPath = None, passphrase_file: PassFile = None, as_json: Json = False
) -> None:
    """Every address of the wallet, with its purpose and label."""
    with opened(wallet, passphrase_file) as w:
        owner = w.owner_key().public_key.hex()
        found = [{"address": owner, "index": 0, "purpose": "owner", "label": None}]
        found += w.addresses()
    if emit(as_json, {"addresses": found}):
        return
    # one line each, so that every address is whole at any width (a table would cut it)
    for entry in found:
        label = entry["label"] or ""
        line = f"{entry['index']:>4}  {entry['address']}  {entry['purpose']:<10}  {label}"
        out.print(line.rstrip(), soft_wrap=True)


@address_app.command("label")
def address_label_command(
    address: Annotated[str, typer.Argument(help="The address (64 hex digits).")],
    label: Annotated[str, typer.Argument(help="Its new label.")],
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
) -> None:
    """Label one of the wallet's addresses."""
    with opened(wallet, passphrase_file) as w:
        w.set_label(address, label)


# ---------------------------------------------------------------- balance and history


@wallet_app.command("balance")
def balance_command(
    refresh: Annotated[
        bool, typer.Option(help="Ask the ledger first (else what the wallet last saw).")
    ] = True,
    rescan: Annotated[
        bool,
        typer.Option(
            help="Ask the ledger about every address ever handed out, even those whose "
            "coins are all spent (slower; finds a payment to an old address)."
        ),
    ] = False,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """What the wallet holds: per asset kind, interval and address, unspent, reserved (in an
    order, a trade or a transaction not yet confirmed) and spent; and pending transactions."""
    with opened(wallet, passphrase_file) as w:
        height = w.refresh(rescan=rescan).height if refresh or rescan else None
        rows, pending = w.balance(), w.pending()
    document = {"height": height, "rows": rows, "pending": [p["txid"] for p in pending]}
    if emit(as_json, document):
        return
    if not rows:
        out.print("nothing yet: withdraw from your meter, or receive at a new address")
    else:
        table = Table("kind", "interval", "address", "unspent", "reserved", "spent")
        for row in rows:
            unit = "µ" if row["kind"] == "FA" else "W"
            table.add_row(
                row["kind"],
                "-" if row["interval"] is None else str(row["interval"]),
                row["address"][:16],
                f"{row['unspent']:,} {unit}",
                f"{row['reserved']:,} {unit}",
                f"{row['spent']:,} {unit}",
            )
        out.print(table)
    for record in pending:
        out.print(f"pending: {record['kind']} {record['txid'][:16]} (not confirmed yet)")
    if height is not None:
        out.print(f"as of ledger block {height}")


@wallet_app.command("history")
def history_command(
    wallet: WalletPath = None, passphrase_file: PassFile = None, as_json: Json = False
) -> None:
    """What the wallet did, oldest first."""
    with opened(wallet, passphrase_file) as w:
        entries = w.history()
    if emit(as_json, {"history": entries}):
        return
    for entry in entries:
        when = datetime.fromtimestamp(entry["at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        out.print(f"{when}  {entry['kind']:<12} {entry['text']}")


# ---------------------------------------------------------------- the meter


@wallet_app.command("withdraw")
def withdraw_command(
    interval: Annotated[
        int | None, typer.Option(help="The interval the EPA/ECA cover (default: the next).")
    ] = None,
    until: Annotated[
        int | None, typer.Option(help="The last interval they cover (default: --interval).")
    ] = None,
    epa: Annotated[
        list[int] | None, typer.Option(min=1, help="EPA power in W; repeat for more outputs.")
    ] = None,
    eca: Annotated[
        list[int] | None, typer.Option(min=1, help="ECA power in W; repeat for more outputs.")
    ] = None,
    fa: Annotated[
        list[int] | None, typer.Option(min=1, help="FA in micro-units; repeat for more outputs.")
    ] = None,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """Have your meter issue EPA, ECA or FA, each output to a fresh address, within the
    meter's limits and your credit line."""
    from wallet.wallet import parse_amounts

    with opened(wallet, passphrase_file) as w:
        start = w.interval_now() + 1 if interval is None else interval
        end = start if until is None else until
        if end < start:
            fail(f"--until {end} is before --interval {start}")
        answer = w.withdraw(parse_amounts(epa or [], eca or [], fa or [], start, end))
    if emit(as_json, answer):
        return
    out.print(f"issued in {answer['txid'][:16]} (block {answer['height']}):")
    for output in answer["outputs"]:
        out.print(f"  {_asset_text(output['asset'])} to {output['address'][:16]}")


@wallet_app.command("deposit")
def deposit_command(
    interval: Annotated[
        int | None, typer.Option(help="Only EPA/ECA covering this interval (FA always goes).")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind: EPA, ECA or FA.")] = None,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """Pay what the wallet holds to fresh anonymous deposit addresses of your meter, one
    transfer per coin: EPA bought (or not sold), FA and ECA received, unspent FA. The meter
    counts them in its bill."""
    if kind is not None and kind not in ("EPA", "ECA", "FA"):
        fail(f"--kind is EPA, ECA or FA, not {kind!r}")
    with opened(wallet, passphrase_file) as w:
        w.refresh()
        coins = [
            c
            for c in w.coins(kind=kind)
            if interval is None or c.asset.kind == "FA" or c.asset.start <= interval <= c.asset.end
        ]
        if not coins:
            fail("nothing to deposit: the wallet holds no unspent coin of that kind")
        txids = w.deposit(coins)
    if emit(as_json, {"deposits": [t.hex() for t in txids]}):
        return
    out.print(f"deposited {len(txids)} coin(s) to your meter")


@wallet_app.command("bill")
def bill_command(
    first: Annotated[
        int | None,
        typer.Option("--from", min=0, help="The first interval (default: 4 before the current)."),
    ] = None,
    last: Annotated[
        int | None,
        typer.Option("--to", min=0, help="The last interval (default: the one before now)."),
    ] = None,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """Your meter's bills for a period, one line per interval it billed: measured energy,
    billed energy E_t, what you owe the DSO (negative: a credit) and whether the DSO has it."""
    with opened(wallet, passphrase_file) as w:
        status = w.meter_status()
        last = status["interval"] - 1 if last is None else last
        first = max(0, last - 3) if first is None else first
        if last < first:
            fail(f"--to {last} is before --from {first}")
        history = w.bill_history(first, last)
        currency = w.genesis.currency
    if emit(as_json, {"status": status, **history}):
        return
    out.print(
        f"meter {status['meter']}, interval {status['interval']}: credit used "
        f"{status['credit_used']:,} of {status['credit_line']:,} micro-units"
    )
    if not history["bills"]:
        out.print(f"no bill for intervals {first} to {last} yet")
    for bill, delivered in zip(history["bills"], history["delivered"], strict=True):
        out.print(
            f"interval {bill['interval']}: measured {_kwh(bill['measured_j'])}, "
            f"billed E_t {_kwh(bill['energy_j'])}, owes {_money(bill['amount'], currency)}, "
            + ("delivered to the DSO" if delivered else "[yellow]not delivered yet[/yellow]")
        )


def _kwh(joules: int) -> str:
    return f"{joules / 3_600_000:,.3f} kWh"


def _money(micro: int, currency: str) -> str:
    """Micro-units as whole units of `currency`, exactly, and the micro-units themselves."""
    sign = "-" if micro < 0 else ""
    whole, part = divmod(abs(micro), 1_000_000)
    return f"{sign}{whole:,}.{part:06d} {currency} ({micro:,} µ)"


@wallet_app.command("mix")
def mix_command(
    kind: Annotated[str | None, typer.Option(help="Only this kind: EPA, ECA or FA.")] = None,
    interval: Annotated[
        int | None, typer.Option(help="Only EPA/ECA covering this interval.")
    ] = None,
    rounds: Annotated[
        int, typer.Option(min=1, max=10, help="Mixing rounds per coin (the paper: several).")
    ] = 2,
    split: Annotated[
        bool, typer.Option(help="Split coins into 1-2-5 denominations first, as pools need.")
    ] = True,
    origin: Annotated[
        str, typer.Option(help="Only coins that came this way: withdrawal, mix, trade, any.")
    ] = "withdrawal",
    timeout_s: Annotated[
        float, typer.Option(min=1, help="Seconds each coin's mix may take, rounds included.")
    ] = 600.0,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """Mix the wallet's coins through the mixer so that they reach the market from addresses
    nobody can link to your meter: each coin split into denominations, then `--rounds`
    CoinShuffle rounds, each ending at a fresh address."""
    from rich.progress import BarColumn, Progress, TextColumn

    from wallet.mixing import mix
    from wallet.wallet import asset_text

    with opened(wallet, passphrase_file) as w:
        w.refresh()
        coins = [
            c
            for c in w.coins(kind=kind, interval=interval)
            if origin == "any" or c.origin == origin
        ]
        if not coins:
            fail("nothing to mix: no unspent coin matches (withdraw first, or see --origin)")
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} rounds"),
            console=Console(stderr=True),
            disable=as_json,
        ) as progress:
            tasks: dict[str, Any] = {}  # coin key -> its progress task, across rounds

            def on_split(_: Any, parts: list[Any]) -> None:
                for part in parts:
                    tasks[part.key] = progress.add_task(
                        f"mixing {asset_text(part.asset)}", total=rounds
                    )

            def on_round(before: Any, after: Any, _: int) -> None:
                task = tasks.pop(before.key)
                tasks[after.key] = task
                progress.advance(task)

            mixed, failed = mix(
                w,
                coins,
                rounds,
                denominations=split,
                timeout_s=timeout_s,
                progress=on_round,
                on_split=on_split,
            )
    document = {
        "mixed": [{"coin": c.key, "asset": asset_text(c.asset)} for c in mixed],
        "failed": [{"code": e.code, "message": e.message} for e in failed],
    }
    if emit(as_json, document):
        return
    out.print(f"{len(mixed)} coin(s) mixed {rounds} time(s)")
    for error in failed:
        out.print(f"[yellow]not mixed:[/yellow] {error.message}")
    if failed and not mixed:
        raise typer.Exit(2)


# ---------------------------------------------------------------- backup


@wallet_app.command("backup")
def backup_command(
    to: Annotated[Path, typer.Option(help="Where to write the backup.", dir_okay=False)],
    new_passphrase_file: Annotated[
        Path | None,
        typer.Option(help="Seal the backup under this file's passphrase instead.", exists=True),
    ] = None,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
) -> None:
    """Write a sealed copy of the wallet (every key derives from it)."""
    from wallet.keystore import KeystoreError

    with opened(wallet, passphrase_file) as w:
        other = None if new_passphrase_file is None else read_passphrase(new_passphrase_file)
        try:
            w.file.backup(to, other)
        except KeystoreError as exc:
            fail(f"{to}: {exc.message}")
    out.print(f"backup written: {to}")


@wallet_app.command("restore")
def restore_command(
    source: Annotated[Path, typer.Option("--from", help="The backup.", exists=True)],
    force: Annotated[bool, typer.Option(help="Replace an existing wallet.")] = False,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
) -> None:
    """Install a backup as the wallet (its passphrase is the backup's)."""
    from wallet.keystore import KeystoreError, WalletFile

    where = wallet_path(wallet)
    try:
        WalletFile.restore(source, where, passphrase(passphrase_file), force=force)
    except KeystoreError as exc:
        fail(f"{source}: {exc.message}")
    out.print(f"wallet restored: {where}")


def _asset_text(wire: dict[str, Any]) -> str:
    from assets.codec import asset_from_wire
    from wallet.wallet import asset_text

    return asset_text(asset_from_wire(wire))


def _now() -> float:
    import time

    return time.time()


register_market(wallet_app)
register_autopilot(wallet_app)
