"""`petra wallet ...`: the prosumer's wallet (wallet/wallet.py) on the command line.

Every command opens the wallet file (`--wallet`, else $PETRA_WALLET, else
~/.petra/wallet.json) with its passphrase (`--passphrase-file`, else $PETRA_PASSPHRASE, else a
prompt), prints for a person, or the JSON with `--json`, and says in one sentence what went wrong
and what to do, with exit code 2.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from petra.console import fail, read_genesis, read_passphrase, warn
from petra.vocabulary import (
    ASSET_SYNTAX,
    all_option,
    asset_argument,
    bidstore_option,
    elide,
    elide_all,
    format_money,
    interval_label,
    ledger_option,
    local_time,
    meter_id_option,
    meter_option,
    resolve_prefix,
    tor_socks_option,
)
from petra.wallet_agent_cli import register as register_agent
from petra.wallet_autopilot_cli import register as register_autopilot
from petra.wallet_common import (
    Json,
    PassFile,
    WalletPath,
    emit,
    opened,
    out,
    passphrase,
    table,
    wallet_path,
)
from petra.wallet_market_cli import register as register_market

METER_CLOSING_DELAY_S = 60  # smartmeter/config.py's default, when the meter does not say its own
wallet_app = typer.Typer(
    help="The prosumer's wallet: keys, assets, the meter, mixing, trading and deposits.",
    no_args_is_help=True,
)
address_app = typer.Typer(help="The wallet's addresses.", no_args_is_help=True)
wallet_app.add_typer(address_app, name="address")
MixerUrl = Annotated[str | None, typer.Option("--mixer", help="The mixer's URL.")]
BidStoreUrl = Annotated[str | None, bidstore_option(" (an onion address needs --tor-socks)")]
TorSocks = Annotated[int | None, tor_socks_option(", to reach the bid store")]
# ---------------------------------------------------------------- init and configuration


@wallet_app.command("init")
def init_command(
    genesis: Annotated[
        Path, typer.Option(help="The genesis JSON file of the chain.", exists=True, dir_okay=False)
    ],
    ledger: Annotated[str, ledger_option()] = "http://127.0.0.1:7420",
    meter: Annotated[str | None, meter_option(": your meter's owner API")] = None,
    meter_id: Annotated[str | None, meter_id_option()] = None,
    mixer: MixerUrl = None,
    bidstore: BidStoreUrl = None,
    tor_socks: TorSocks = None,
    kdf: Annotated[
        str, typer.Option(help="Argon2id cost: interactive, moderate or sensitive.")
    ] = "moderate",
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """Create a wallet: a new master key, sealed under your passphrase. Prints the owner
    address your meter's configuration must name (`owner`).

    Example: petra wallet init --genesis genesis.json --meter http://127.0.0.1:7440
    --meter-id ES0021000000000001AB"""
    from wallet.keystore import KdfLevel, KeystoreError, WalletFile
    from wallet.wallet import Services, Wallet, new_data

    _, genesis_doc = read_genesis(genesis)
    try:
        level = KdfLevel(kdf)
    except ValueError:
        fail(f"--kdf is interactive, moderate or sensitive, not {kdf!r}")
    where = wallet_path(wallet)
    services = Services(ledger, meter, meter_id, mixer, bidstore, tor_socks)
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
    ledger: Annotated[str | None, ledger_option()] = None,
    # no environment variable here: `config` with none given only shows the services
    meter: Annotated[
        str | None, typer.Option("--meter", help="The meter's URL: your meter's owner API.")
    ] = None,
    meter_id: Annotated[
        str | None, typer.Option("--meter-id", help="The meter's id, as the DSO knows it.")
    ] = None,
    mixer: MixerUrl = None,
    bidstore: BidStoreUrl = None,
    tor_socks: TorSocks = None,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """Show the services the wallet talks to; change those given."""
    with opened(wallet, passphrase_file) as w:
        services = w.set_services(
            ledger=ledger,
            meter_url=meter,
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
    """Every address of the wallet, with its purpose and label (whole addresses: --json, or
    `petra wallet address new` for one to give)."""
    with opened(wallet, passphrase_file) as w:
        owner = w.owner_key().public_key.hex()
        found = [{"address": owner, "index": 0, "purpose": "owner", "label": None}]
        found += w.addresses()
    if emit(as_json, {"addresses": found}):
        return
    shown = elide_all(entry["address"] for entry in found)
    listed = table("index", "address", "purpose", "label")
    for entry in found:
        listed.add_row(
            str(entry["index"]), shown[entry["address"]], entry["purpose"], entry["label"] or ""
        )
    out.print(listed)


@address_app.command("label")
def address_label_command(
    address: Annotated[
        str, typer.Argument(help="The address: its 64 hex digits, or the first 4 or more.")
    ],
    label: Annotated[str, typer.Argument(help="Its new label.")],
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
) -> None:
    """Label one of the wallet's addresses."""
    with opened(wallet, passphrase_file) as w:
        whole = resolve_prefix(address, [a["address"] for a in w.addresses()], "address")
        w.set_label(whole, label)


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
    show_all: Annotated[
        bool, all_option("row and the spent column, not only what is held")
    ] = False,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """What the wallet holds: per asset kind, interval and address, unspent and reserved (in
    an order, a trade or a transaction not yet confirmed), with --all also what it spent; and
    pending transactions."""
    with opened(wallet, passphrase_file) as w:
        height = w.refresh(rescan=rescan).height if refresh or rescan else None
        rows, pending = w.balance(), w.pending()
        genesis = w.genesis
    document = {"height": height, "rows": rows, "pending": [p["txid"] for p in pending]}
    if emit(as_json, document):
        return
    shown = rows if show_all else [r for r in rows if r["unspent"] or r["reserved"]]
    if not shown:
        out.print("nothing yet: withdraw from your meter, or receive at a new address")
    else:
        columns = ("kind", "interval", "address", "unspent", "reserved")
        held = table(*columns, *(("spent",) if show_all else ()))
        addresses = elide_all(r["address"] for r in shown)
        for row in shown:
            amounts = [row["unspent"], row["reserved"], *((row["spent"],) if show_all else ())]
            held.add_row(
                row["kind"],
                "-" if row["interval"] is None else _interval(row["interval"], genesis),
                addresses[row["address"]],
                *(_size(row["kind"], amount, genesis.currency) for amount in amounts),
            )
        out.print(held)
    for record in pending:
        out.print(f"pending: {record['kind']} {elide(record['txid'])} (not confirmed yet)")
    if height is not None:
        out.print(f"as of ledger block {height}")


@wallet_app.command("history")
def history_command(
    wallet: WalletPath = None, passphrase_file: PassFile = None, as_json: Json = False
) -> None:
    """What the wallet did, oldest first, in this machine's local time."""
    with opened(wallet, passphrase_file) as w:
        entries = w.history()
    if emit(as_json, {"history": entries}):
        return
    for entry in entries:
        out.print(f"{local_time(entry['at'])}  {entry['kind']:<12} {entry['text']}")


# ---------------------------------------------------------------- the meter


@wallet_app.command("withdraw")
def withdraw_command(
    assets: Annotated[
        list[str] | None,
        typer.Argument(
            help=f"The assets to issue, each to a fresh address: {ASSET_SYNTAX}, e.g. "
            "epa:1000W@120 eca:500W@120-121 fa:2EUR (docs/cli.md)."
        ),
    ] = None,
    interval: Annotated[int | None, typer.Option(hidden=True)] = None,
    until: Annotated[int | None, typer.Option(hidden=True)] = None,
    epa: Annotated[list[int] | None, typer.Option(min=1, hidden=True)] = None,
    eca: Annotated[list[int] | None, typer.Option(min=1, hidden=True)] = None,
    fa: Annotated[list[int] | None, typer.Option(min=1, hidden=True)] = None,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """Have your meter issue EPA, ECA or FA, each output to a fresh address, within the
    meter's limits and your credit line."""
    from wallet.wallet import parse_amounts

    parsed = [asset_argument(a) for a in assets or []]
    old = [o for o, v in (("--epa", epa), ("--eca", eca), ("--fa", fa)) if v]
    old += [o for o, v in (("--interval", interval), ("--until", until)) if v is not None]
    if old:
        warn(
            f"`petra wallet withdraw {' '.join(old)}` is now one argument per asset, "
            "e.g. epa:1000W@120 eca:500W@120-121 fa:2EUR; the old options go in the next "
            "release"
        )
    with opened(wallet, passphrase_file) as w:
        currency = w.genesis.currency
        if epa or eca or fa:
            start = w.interval_now() + 1 if interval is None else interval
            end = start if until is None else until
            if end < start:
                fail(f"--until {end} is before --interval {start}")
            parsed += parse_amounts(epa or [], eca or [], fa or [], start, end)
        answer = w.withdraw(parsed)
    if emit(as_json, answer):
        return
    out.print(f"issued in block {answer['height']}, transaction")
    out.print(f"  {answer['txid']}")
    shown = elide_all(output["address"] for output in answer["outputs"])
    for output in answer["outputs"]:
        out.print(f"  {_asset_text(output['asset'], currency)} to {shown[output['address']]}")


@wallet_app.command("deposit")
def deposit_command(
    interval: Annotated[
        int | None,
        typer.Option(help="The interval: only EPA/ECA covering it (FA always goes)."),
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
        typer.Option(
            "--first", min=0, help="The first interval of the bills (default: 4 before now)."
        ),
    ] = None,
    last: Annotated[
        int | None,
        typer.Option(
            "--last", min=0, help="The last interval of the bills (default: the one before now)."
        ),
    ] = None,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """Your meter's bills for a period, one line per interval it billed: measured energy,
    billed energy E_t, what you owe the DSO (negative: a credit) and whether the DSO has it;
    for an interval not billed yet, when its bill comes."""
    with opened(wallet, passphrase_file) as w:
        status = w.meter_status()
        last = status["interval"] - 1 if last is None else last
        first = max(0, last - 3) if first is None else first
        if last < first:
            fail(f"--last {last} is before --first {first}")
        history = w.bill_history(first, last)
        genesis = w.genesis
    if emit(as_json, {"status": status, **history}):
        return
    currency = status.get("currency", genesis.currency)
    now = _interval(status["interval"], genesis)
    out.print(
        f"meter {status['meter']}, interval {now}: credit used "
        f"{format_money(status['credit_used'], currency)} of "
        f"{format_money(status['credit_line'], currency)}"
    )
    for bill, delivered in zip(history["bills"], history["delivered"], strict=True):
        out.print(
            f"interval {_interval(bill['interval'], genesis)}: measured "
            f"{_kwh(bill['measured_j'])}, billed E_t {_kwh(bill['energy_j'])}, owes "
            f"{format_money(bill['amount'], currency)}, "
            + ("delivered to the DSO" if delivered else "[yellow]not delivered yet[/yellow]")
        )
    billed = {bill["interval"] for bill in history["bills"]}
    waiting = [t for t in range(first, last + 1) if t not in billed]
    if waiting:
        out.print(_bill_comes(waiting, status, genesis))


def _bill_comes(waiting: list[int], status: dict[str, Any], genesis: Any) -> str:
    """When the bills of `waiting` (intervals with no bill yet) come: each interval's end
    plus the meter's closing delay (smartmeter/billing_loop.py). Later than that, the meter is
    waiting for a source or the ledger."""
    delay = status.get("closing_delay_s", METER_CLOSING_DELAY_S)
    t = waiting[-1]
    comes = genesis.epoch + (t + 1) * genesis.interval_s + delay
    which = f"interval {t}" if len(waiting) == 1 else f"intervals {waiting[0]} to {t}"
    when = local_time(comes, with_date=comes - time.time() > 12 * 3600)
    said = (
        f"no bill yet for {which}: the bill for interval {_interval(t, genesis)} comes after "
        f"{when}: its end plus the meter's closing delay of {delay} s"
    )
    if time.time() > comes:
        said += " (past: the meter may be waiting for a source or the ledger; petra meter status)"
    return said


def _interval(index: int, genesis: Any) -> str:
    """An interval with its local start time, as docs/cli.md shows intervals."""
    return interval_label(index, genesis.epoch, genesis.interval_s)


def _size(kind: str, amount: int, currency: str) -> str:
    """Watts of EPA or ECA, money of FA."""
    return format_money(amount, currency) if kind == "FA" else f"{amount:,} W"


def _kwh(joules: int) -> str:
    return f"{joules / 3_600_000:,.3f} kWh"


@wallet_app.command("mix")
def mix_command(
    kind: Annotated[str | None, typer.Option(help="Only this kind: EPA, ECA or FA.")] = None,
    interval: Annotated[
        int | None, typer.Option(help="The interval: only EPA/ECA covering it.")
    ] = None,
    rounds: Annotated[
        int, typer.Option(min=1, max=10, help="Mixing rounds per coin (the paper: several).")
    ] = 2,
    split: Annotated[
        bool, typer.Option(help="Split coins into 1-2-5 denominations first, as pools need.")
    ] = True,
    origin: Annotated[
        str,
        typer.Option(
            help="Only coins that came this way: unmixed (withdrawn, or split and not mixed "
            "yet), withdrawal, split, mix, trade, change, received, any."
        ),
    ] = "unmixed",
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Split and join even when no other wallet is waiting to mix the same coins, "
            "and wait for others until the pool's start deadline.",
        ),
    ] = False,
    timeout_s: Annotated[
        float, typer.Option(min=1, help="Seconds each coin's mix may take, rounds included.")
    ] = 600.0,
    wallet: WalletPath = None,
    passphrase_file: PassFile = None,
    as_json: Json = False,
) -> None:
    """Mix the wallet's coins through the mixer so that they reach the market from addresses
    nobody can link to your meter: each coin split into denominations, then `--rounds`
    CoinShuffle rounds, each ending at a fresh address. A round needs other wallets mixing
    equal coins at the same time: when none is waiting at the mixer, nothing is split and the
    command says so (unless `--wait`)."""
    from rich.progress import BarColumn, Progress, TextColumn

    from wallet.mixing import SPLIT_ORIGIN, mix
    from wallet.wallet import asset_text

    origins = _MIX_ORIGINS.get(origin)
    if origins is None:
        fail(f"--origin is one of {', '.join(_MIX_ORIGINS)}, not {origin!r}")
    with opened(wallet, passphrase_file) as w:
        w.refresh()
        coins = [
            c
            for c in w.coins(kind=kind, interval=interval)
            if origin == "any" or c.origin in origins
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
                alone=wait,
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
    if failed:
        out.print(
            "the coins not mixed are the wallet's own, unspent (`petra wallet balance`); "
            f"`petra wallet mix` takes them again as they are (origin {SPLIT_ORIGIN} once split, "
            "never split twice) when others mix, or with --wait; an order can spend them "
            "unmixed, linkable to your meter"
        )
    if failed and not mixed:
        raise typer.Exit(2)


# which coins `mix --origin` takes: by default those not mixed yet, split or whole
_MIX_ORIGINS = {
    "unmixed": ("withdrawal", "split"),
    **{o: (o,) for o in ("withdrawal", "split", "mix", "trade", "change", "received")},
    "any": (),
}


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
    force: Annotated[bool, typer.Option(help="Overwrite an existing wallet.")] = False,
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


def _asset_text(wire: dict[str, Any], currency: str) -> str:
    from assets.codec import asset_from_wire
    from wallet.wallet import asset_text

    return asset_text(asset_from_wire(wire), currency)


def _now() -> float:
    import time

    return time.time()


register_market(wallet_app)
register_autopilot(wallet_app)
register_agent(wallet_app)
