"""`petra dso ...`: set up and serve the DSO node, and operate it through its API."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.table import Table

from assets.keyfile import is_sealed
from dso.client import DEFAULT_URL, DsoClient, DsoClientError
from petra.config import ConfiguredCommand, chosen, config_option
from petra.console import (
    LogFormat,
    LogLevel,
    MetricsHost,
    MetricsPort,
    PassphraseFile,
    check_ledger_genesis,
    configure_logging,
    err,
    fail,
    hold_store_for,
    read_genesis,
    read_keys,
    serve,
    shown_store,
    warn,
    write_private,
)
from petra.vocabulary import (
    all_option,
    dso_option,
    elide_all,
    format_money,
    format_price,
    interval_label,
    json_option,
    local_time,
    meter_id_option,
    money_argument,
    resolve_prefix,
)

TOKEN_ENV = "PETRA_DSO_TOKEN"

dso_app = typer.Typer(
    help="The DSO authority node: regulation, bills, grid controller.", no_args_is_help=True
)
meter_app = typer.Typer(help="Authorize, ban and list smart meters.", no_args_is_help=True)
tariff_app = typer.Typer(help="Prices in force and setting them.", no_args_is_help=True)
limits_app = typer.Typer(help="Default MAXEPA/MAXECA limits.", no_args_is_help=True)
controller_app = typer.Typer(help="The grid controller's price proposals.", no_args_is_help=True)
operator_app = typer.Typer(help="Operators and their tokens (admins).", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
admin_app = typer.Typer(
    help="Administration on the node's database itself, while the node is stopped.",
    no_args_is_help=True,
)
dso_app.add_typer(meter_app, name="meter")
dso_app.add_typer(tariff_app, name="tariff")
dso_app.add_typer(limits_app, name="limits")
dso_app.add_typer(controller_app, name="controller")
dso_app.add_typer(operator_app, name="operator")
dso_app.add_typer(audit_app, name="audit")
dso_app.add_typer(admin_app, name="admin")

out = Console(soft_wrap=True)
log = logging.getLogger("petra")

Url = Annotated[str, dso_option()]
TokenFile = Annotated[
    Path | None,
    typer.Option(
        help=f"File holding the operator's token (else ${TOKEN_ENV}).",
        exists=True,
        dir_okay=False,
    ),
]
Json = Annotated[bool, json_option()]
FirstAhead = Annotated[
    int | None, typer.Option(help="The first interval (default: the current one).")
]
LastAhead = Annotated[
    int | None, typer.Option(help="The last interval (default: a day after the first).")
]
FirstBack = Annotated[
    int | None,
    typer.Option(help="The first interval (default: a day before the last, never below 0)."),
]
LastBack = Annotated[
    int | None, typer.Option(help="The last interval (default: the last that has ended).")
]


def _money_option(help_text: str, **kwargs: Any) -> Any:
    """An option taking money as docs/cli.md writes it (`0.15`, `0.15EUR`, `150000µ`); the
    command gets micro-units."""
    return typer.Option(parser=money_argument, metavar="AMOUNT", help=help_text, **kwargs)


TimeOption = Annotated[
    int | None,
    typer.Option(
        "--time",
        help="Regulation time: in force from interval TIME+1 (default: the current interval).",
    ),
]


def _token(token_file: Path | None) -> str:
    if token_file is not None:
        try:
            words = token_file.read_bytes().split()
        except OSError as exc:
            fail(f"cannot read the token file {token_file}: {exc.strerror}")
        raw = words[0] if words else b""
        source = str(token_file)
    else:
        raw = os.environ.get(TOKEN_ENV, "").strip().encode("utf-8", "replace")
        source = f"${TOKEN_ENV}"
    if not raw:
        fail(f"give an operator token with --token-file or ${TOKEN_ENV}")
    # An HTTP header carries printable ASCII only: anything else is not a token.
    if not raw.isascii() or not raw.decode().isprintable():
        fail(f"{source} does not hold an operator token (pdso_…)")
    return raw.decode()


def _client(url: str, token_file: Path | None) -> DsoClient:
    token = _token(token_file)
    try:
        return DsoClient(url, token)
    except httpx.InvalidURL as exc:
        fail(f"{url} is not a URL of a DSO node: {exc}")


def _request(url: str, token_file: Path | None, method: str, path: str, **kwargs: Any) -> bytes:
    """The body of the node's successful answer; one sentence and exit 2 on a refusal."""
    with _client(url, token_file) as client:
        try:
            return client.request(method, path, **kwargs).content
        except DsoClientError as exc:
            fail(f"{exc.message} ({exc.code})")


def _call(url: str, token_file: Path | None, method: str, path: str, **kwargs: Any) -> Any:
    body = _request(url, token_file, method, path, **kwargs)
    try:
        return json.loads(body)
    except ValueError:
        fail(f"{url} answered {path} with something else than JSON: is it a DSO node?")


def _segment(value: str) -> str:
    """`value` as one URL path segment: a `/`, `?` or `#` in it must not reach another route."""
    return quote(value, safe="")


def _writable(path: Path) -> None:
    """Refuse now, before anything changes, a file that could not be written later."""
    if path.is_dir():
        fail(f"cannot write {path}: it is a folder")
    if not path.parent.is_dir():
        fail(f"cannot write {path}: the folder {path.parent} does not exist")


def _regulation_line(answer: dict[str, Any], chain: Chain) -> str:
    return (
        f"regulation {answer['txid']} {answer['status']} at height {answer['height']}, "
        f"in force from interval {chain.label(answer['effective_from'])}"
    )


@dataclass(frozen=True)
class Chain:
    """What the node says of its chain (`GET /v1/status`): how intervals map to time, the
    currency amounts are micro-units of, and how long after an interval its bills arrive."""

    epoch: int
    interval_s: int
    currency: str
    closing_delay_s: int

    def label(self, interval: int) -> str:
        """The interval with its local start time: `120 (Jun 21 10:00)`."""
        return interval_label(interval, self.epoch, self.interval_s)

    def start(self, interval: int) -> int:
        """Unix seconds the interval starts at."""
        return self.epoch + interval * self.interval_s

    def money(self, micro: int | None) -> str:
        return "-" if micro is None else format_money(micro, self.currency)

    def price(self, micro_per_kwh: int | None) -> str:
        return "-" if micro_per_kwh is None else format_price(micro_per_kwh, self.currency)


def _chain(url: str, token_file: Path | None) -> Chain:
    status = _call(url, token_file, "GET", "/status")
    return Chain(
        status["epoch"], status["interval_s"], status["currency"], status["closing_delay_s"]
    )


def _resolve(given: str, candidates: list[str], what: str) -> str:
    """`given` as the id it is, or the one candidate it is a prefix of (docs/cli.md, Ids);
    one that starts none is the node's to refuse, in its words."""
    if given in candidates or not any(c.lower().startswith(given.lower()) for c in candidates):
        return given
    return resolve_prefix(given, candidates, what)


def _meter_ids(url: str, token_file: Path | None) -> list[str]:
    """Every meter id the node knows, in force now or from a later interval."""
    listed = _call(url, token_file, "GET", "/meters")
    return sorted({m["meter"] for m in (*listed["meters"], *listed.get("pending", ()))})


# ---------------------------------------------------------------- set-up and serving


@dso_app.command("init")
def init_command(
    ctx: typer.Context,
    store: Annotated[str, typer.Option(help="The database's SQLAlchemy URL: the DSO database.")] = (
        "sqlite:///petra-dso.sqlite"
    ),
    admin: Annotated[str, typer.Option(help="The first admin's name.")] = "admin",
    token_out: Annotated[
        Path | None, typer.Option(help="Write the admin token here (else print it).")
    ] = None,
) -> None:
    """Create the DSO database and its first admin; the token is shown this once."""
    from dso.auth import OPERATOR_NAME, Role, new_token, token_hash
    from dso.store import STORE_ROLE, DsoStore, DsoStoreError, Operator

    if OPERATOR_NAME.fullmatch(admin) is None:
        fail("an operator name is 1-64 of a-z 0-9 . _ -, from a letter or digit")
    if token_out is not None:
        _writable(token_out)
    hold_store_for(ctx, store, STORE_ROLE, "petra dso init")
    try:
        database = DsoStore(store)
    except DsoStoreError as exc:
        fail(str(exc))
    try:
        if database.operators():
            fail(
                f"{store} has operators already: an admin adds more with `petra dso operator "
                "add` (with no admin left, stop the node and run `petra dso admin recover`)"
            )
        token = new_token()
        if token_out is not None:
            # Written before the admin exists: a token that cannot be kept must not lock the
            # database (a second init refuses).
            _write_token(token_out, token)
        operator = Operator(admin, Role.ADMIN.value, int(time.time()), "init", None)
        with database.writing() as conn:
            database.add_operator(conn, operator, token_hash(token))
            database.audit(conn, "init", "local", "operator.create", admin, {"role": "admin"})
    finally:
        database.close()
    if token_out is not None:
        typer.echo(f"admin {admin} created; token in {token_out}")
    else:
        typer.echo(token)


def _write_token(path: Path, token: str) -> None:
    try:
        write_private(path, (token + "\n").encode())
    except OSError as exc:
        fail(f"cannot write the token to {path}: {exc.strerror}")


@admin_app.command("recover")
def admin_recover(
    ctx: typer.Context,
    store: Annotated[str, typer.Option(help="The database's SQLAlchemy URL: the DSO database.")] = (
        "sqlite:///petra-dso.sqlite"
    ),
    admin: Annotated[
        str | None, typer.Option(help="The new admin's name (default: recovery-<unix time>).")
    ] = None,
    token_out: Annotated[
        Path | None, typer.Option(help="Write the admin token here (else print it).")
    ] = None,
) -> None:
    """Make a new admin on the DSO database, when no admin can log in any more; run it on the
    node's machine while the node is stopped (it refuses otherwise). The token is shown once."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from dso.auth import OPERATOR_NAME, Role, new_token, token_hash
    from dso.store import STORE_ROLE, Conflict, DsoStore, DsoStoreError, Operator

    name = admin if admin is not None else f"recovery-{int(time.time())}"
    if OPERATOR_NAME.fullmatch(name) is None:
        fail("an operator name is 1-64 of a-z 0-9 . _ -, from a letter or digit")
    if token_out is not None:
        _writable(token_out)
    try:
        url = make_url(store)
    except ArgumentError:
        fail(f"{store} is not a database URL")
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        fail(f"{store} does not exist: `petra dso init` makes a new DSO database")
    # Refused while a node serves it.
    hold_store_for(ctx, store, STORE_ROLE, "petra dso admin recover")
    try:
        database = DsoStore(store)
    except DsoStoreError as exc:
        fail(str(exc))
    try:
        existing = database.operators()
        if not existing:
            fail(f"{store} has no operator yet: `petra dso init` makes the first admin")
        if any(o.name == name for o in existing):
            fail(f"an operator named {name} exists already: choose another --admin")
        token = new_token()
        if token_out is not None:
            _write_token(token_out, token)  # before the admin exists, as for init
        operator = Operator(name, Role.ADMIN.value, int(time.time()), "recover", None)
        with database.writing() as conn:
            try:
                database.add_operator(conn, operator, token_hash(token))
            except Conflict:
                fail(f"an operator named {name} exists already: choose another --admin")
            database.audit(conn, "recover", "local", "operator.recover", name, {"role": "admin"})
    finally:
        database.close()
    err.print(
        f"admin {name} created on {store} while no node served it (audit: operator.recover); "
        "start the node again and revoke the tokens you no longer trust"
    )
    if token_out is not None:
        typer.echo(f"admin {name} created; token in {token_out}")
    else:
        typer.echo(token)


@dso_app.command("serve", cls=ConfiguredCommand)
def serve_command(
    ctx: typer.Context,
    genesis: Annotated[
        Path, typer.Option(help="The genesis JSON file.", exists=True, dir_okay=False)
    ],
    keys: Annotated[
        Path,
        typer.Option(
            help="The key file, sealed, holding one of the genesis's DSO keys.",
            exists=True,
            dir_okay=False,
        ),
    ],
    config: Annotated[Path | None, config_option("dso")] = None,
    ledger: Annotated[str, typer.Option(help="The ledger's URL.")] = "http://127.0.0.1:7420",
    store: Annotated[str, typer.Option(help="The database's SQLAlchemy URL: the DSO database.")] = (
        "sqlite:///petra-dso.sqlite"
    ),
    host: Annotated[str, typer.Option(help="The address to listen on (loopback unless told).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="The port to listen on.")] = 7430,
    docs: Annotated[bool, typer.Option(help="Serve /docs and /openapi.json.")] = False,
    book: Annotated[
        str | None, typer.Option(help="The bid store whose open orders the forecast reads.")
    ] = None,
    passphrase_file: PassphraseFile = None,
    log_level: LogLevel = "info",
    log_format: LogFormat = "text",
    metrics_host: MetricsHost = "127.0.0.1",
    metrics_port: MetricsPort = 9430,
) -> None:
    """Serve the DSO admin API under /v1 (docs/dso-api.md), following the ledger."""

    from dso.api import create_app
    from dso.book import StoreBook
    from dso.service import DsoService
    from dso.store import STORE_ROLE, DsoStore, DsoStoreError
    from ledger.client import LedgerClient

    configure_logging(log_level, "dso", log_format)
    _, genesis_doc = read_genesis(genesis)
    # Read first, so a damaged file or a wrong passphrase is named as such, not as "in clear".
    found = read_keys(keys, passphrase_file)
    if not is_sealed(keys.read_bytes()):
        fail(f"{keys} holds its keys in clear: the DSO key must be sealed with a passphrase")
    signing = [k for k in found.values() if k.public_key in genesis_doc.dso_keys]
    if not signing:
        fail(f"{keys} holds none of the genesis's DSO keys: the node could not regulate")
    if host not in ("127.0.0.1", "::1", "localhost"):
        warn(f"listening on {host}: the admin API is reachable beyond this machine")
    check_ledger_genesis(ledger, genesis_doc, genesis)
    hold_store_for(ctx, store, STORE_ROLE, "petra dso serve")
    client = LedgerClient(ledger)
    try:
        database = DsoStore(store)
        order_book = StoreBook(book) if book is not None else None
        service = DsoService(database, client, genesis_doc, signing[0], book=order_book)
    except DsoStoreError as exc:
        fail(str(exc))
    if not database.operators():
        warn(f"{store} has no operator: create the first admin with `petra dso init`")
    service.start()
    shown = shown_store(store)
    log.info("DSO node on http://%s:%s/v1 (database %s, ledger %s)", host, port, shown, ledger)
    try:
        serve(
            create_app(service, docs=docs),
            host,
            port,
            metrics=(service.registry, metrics_host, metrics_port),
            metrics_by_default=not chosen(ctx, "metrics_port"),
        )
    finally:
        service.close()
        client.close()
        database.close()
    log.info("stopped")


# ---------------------------------------------------------------- meters


@meter_app.command("authorize")
def meter_authorize(
    meter: Annotated[str, typer.Argument(help="Meter id (a CUPS or POD fits).")],
    public_key: Annotated[str, typer.Option(help="The meter's Ed25519 public key, hex.")],
    max_epa: Annotated[int | None, typer.Option(help="MAXEPA, watts (default limits).")] = None,
    max_eca: Annotated[int | None, typer.Option(help="MAXECA, watts (default limits).")] = None,
    owner: Annotated[str | None, typer.Option(help="The owner's reference.")] = None,
    time_: TimeOption = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: Json = False,
) -> None:
    """Authorize METER to issue with PUBLIC_KEY below its limits.

    Like every regulation it is in force from the interval after TIME: the answer says which,
    and `petra dso meter list` shows the meter as pending until then."""
    body = {
        "meter": meter,
        "public_key": public_key,
        "max_epa": max_epa,
        "max_eca": max_eca,
        "owner": owner,
        "time": time_,
    }
    answer = _call(url, token_file, "POST", "/meters", json=body)
    if as_json:
        typer.echo(json.dumps(answer))
        return
    chain = _chain(url, token_file)
    typer.echo(f"{meter} authorized: {_regulation_line(answer, chain)}")


@meter_app.command("ban")
def meter_ban(
    meter: Annotated[str, typer.Argument(help="Meter id, or the start of one.")],
    time_: TimeOption = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: Json = False,
) -> None:
    """Ban METER: it may not issue from interval TIME+1 on."""
    meter = _resolve(meter, _meter_ids(url, token_file), "meter")
    answer = _call(url, token_file, "POST", f"/meters/{_segment(meter)}/ban", json={"time": time_})
    if as_json:
        typer.echo(json.dumps(answer))
        return
    chain = _chain(url, token_file)
    typer.echo(f"{meter} banned: {_regulation_line(answer, chain)}")


@meter_app.command("list")
def meter_list(
    interval: Annotated[
        int | None,
        typer.Option(help="The interval to show the meters as in force at (default: now)."),
    ] = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: Json = False,
) -> None:
    """List the meters a regulation named, as in force at an interval.

    A regulation is in force from the interval after its time: a meter authorized or banned
    now is listed as pending, with the interval its change takes force."""
    answer = _call(url, token_file, "GET", "/meters", params={"interval": interval})
    if as_json:
        typer.echo(json.dumps(answer))
        return
    chain = _chain(url, token_file)
    meters, pending = answer["meters"], answer.get("pending", [])
    ids = elide_all(m["meter"] for m in (*meters, *pending))
    owners = elide_all((m["owner"] for m in meters if m["owner"]), width=11)
    keys = elide_all((m["public_key"] for m in meters if m["public_key"]), width=11)
    table = Table(title=f"meters at interval {chain.label(answer['interval'])}; limits in W")
    for column in ("meter", "state", "MAXEPA", "MAXECA", "owner", "public key"):
        table.add_column(column, justify="right" if column.startswith("MAX") else "left")
    for m in meters:
        table.add_row(
            ids[m["meter"]],
            m["state"],
            str(m["max_epa"]),
            str(m["max_eca"]),
            owners[m["owner"]] if m["owner"] else "-",
            keys[m["public_key"]] if m["public_key"] else "-",
        )
    out.print(table)
    for p in pending:
        out.print(
            f"pending: {ids[p['meter']]} {p['state']} from interval "
            f"{chain.label(p['effective_from'])}",
            soft_wrap=False,
        )


# ---------------------------------------------------------------- tariffs and limits


@tariff_app.command("set")
def tariff_set(
    consumption: Annotated[
        int | None, _money_option("The price of consuming a kWh: 0.25, 0.25EUR or 250000µ.")
    ] = None,
    production: Annotated[
        int | None, _money_option("The price paid for producing a kWh, as for --consumption.")
    ] = None,
    time_: TimeOption = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: Json = False,
) -> None:
    """Set the consumption and/or production price from interval TIME+1."""
    body = {"price_consumption": consumption, "price_production": production, "time": time_}
    answer = _call(url, token_file, "PUT", "/tariff", json=body)
    if as_json:
        typer.echo(json.dumps(answer))
        return
    chain = _chain(url, token_file)
    typer.echo(f"prices set: {_regulation_line(answer, chain)}")


@tariff_app.command("show")
def tariff_show(
    first: FirstAhead = None,
    last: LastAhead = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: Json = False,
) -> None:
    """Show the prices and default limits in force, as runs of intervals."""
    answer = _call(url, token_file, "GET", "/schedule", params={"first": first, "last": last})
    if as_json:
        typer.echo(json.dumps(answer))
        return
    chain = _chain(url, token_file)
    table = Table(title="prices per kWh and default limits (MAXEPA/MAXECA W)")
    for column in ("intervals", "consumption", "production", "limits W"):
        table.add_column(column, justify="left" if column == "intervals" else "right")
    for run in answer["runs"]:
        limits = run["default_limits"]
        span = "" if run["last"] == run["first"] else f"..{run['last']}"
        table.add_row(
            chain.label(run["first"]) + span,
            chain.price(run["price_consumption"]),
            chain.price(run["price_production"]),
            "-" if limits is None else f"{limits['max_epa']}/{limits['max_eca']}",
        )
    out.print(table)


@limits_app.command("set")
def limits_set(
    max_epa: Annotated[int, typer.Option(help="Default MAXEPA, watts.")],
    max_eca: Annotated[int, typer.Option(help="Default MAXECA, watts.")],
    time_: TimeOption = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: Json = False,
) -> None:
    """Set the default limits; meters that follow them are authorized again at them."""
    body = {"max_epa": max_epa, "max_eca": max_eca, "time": time_}
    answer = _call(url, token_file, "PUT", "/limits/default", json=body)
    if as_json:
        typer.echo(json.dumps(answer))
        return
    chain = _chain(url, token_file)
    for regulation in answer["regulations"]:
        typer.echo(f"default limits set: {_regulation_line(regulation, chain)}")


# ---------------------------------------------------------------- bills


@dso_app.command("bills")
def bills_command(
    first: FirstBack = None,
    last: LastBack = None,
    meter_id: Annotated[
        str | None,
        meter_id_option(", or its start: only its bills (default: every meter's)", envvar=None),
    ] = None,
    owner: Annotated[
        str | None, typer.Option(help="The owner whose bills to show (default: everyone's).")
    ] = None,
    status: Annotated[
        str | None, typer.Option(help="Only bills in this state: pending, reconciled or flagged.")
    ] = None,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Write the bills as CSV to this file.")
    ] = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: Json = False,
) -> None:
    """List the meters' interval bills and their reconciliation with the ledger.

    A meter sends an interval's bill once the interval has ended and its closing delay has
    passed: the list says from when the bills of the range's last intervals can be there."""
    if meter_id is not None:
        meter_id = _resolve(meter_id, _meter_ids(url, token_file), "meter")
    params = {"first": first, "last": last, "meter": meter_id, "owner": owner, "status": status}
    if csv_out is not None:
        _writable(csv_out)
        body = _request(url, token_file, "GET", "/bills.csv", params=params)
        try:
            csv_out.write_bytes(body)
        except OSError as exc:
            fail(f"cannot write {csv_out}: {exc.strerror}")
        # Rows, not lines: a quoted owner may hold a line break.
        rows = list(csv.reader(io.StringIO(body.decode("utf-8", "replace"))))
        typer.echo(f"{max(len(rows) - 1, 0)} bills written to {csv_out}")
        return
    answer = _call(url, token_file, "GET", "/bills", params=params)
    if as_json:
        typer.echo(json.dumps(answer))
        return
    chain = _chain(url, token_file)
    bills = answer["bills"]
    meters = elide_all((b["meter"] for b in bills), width=11)
    owners = elide_all((b["owner"] for b in bills if b["owner"]), width=11)
    title = f"bills of intervals {chain.label(answer['first'])} to {chain.label(answer['last'])}"
    table = Table(title=title)
    for column in ("interval", "meter", "owner", "amount", "status"):
        table.add_column(column, justify="right" if column == "amount" else "left")
    for b in bills:
        table.add_row(
            chain.label(b["interval"]),
            meters[b["meter"]],
            owners[b["owner"]] if b["owner"] else "-",
            chain.money(b["amount"]),
            b["status"],
        )
    out.print(table)
    for b in bills:
        if b["discrepancies"]:
            codes = " ".join(d["code"] for d in b["discrepancies"])
            where = f"{chain.label(b['interval'])} {meters[b['meter']]}"
            out.print(f"flagged: {where}: {codes}", soft_wrap=False)
    arriving = _bills_arriving(chain, answer["first"], answer["last"])
    if arriving is not None:
        out.print(arriving, soft_wrap=False)


def _bills_arriving(chain: Chain, first: int, last: int) -> str | None:
    """The sentence saying from when the bills of the range's latest intervals arrive, if some
    of them cannot have arrived yet: a bill comes after its interval's end plus the closing
    delay (`GET /v1/status`)."""
    now = time.time()
    # The first interval whose end plus the delay is still ahead.
    waiting = max(first, int((now - chain.closing_delay_s - chain.epoch) // chain.interval_s))
    if waiting > last:
        return None
    arrives = chain.start(waiting + 1) + chain.closing_delay_s
    same_day = local_time(arrives)[:6] == local_time(now)[:6]
    after = local_time(arrives, with_date=not same_day)
    return (
        f"bills for intervals ≥ {waiting} arrive after {after}: the interval's end plus the "
        f"meters' closing delay ({chain.closing_delay_s} s by default)"
    )


@dso_app.command("statement")
def statement_command(
    owner: Annotated[str, typer.Argument(help="The owner's reference.")],
    first: FirstBack = None,
    last: LastBack = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: Json = False,
) -> None:
    """Show what OWNER owes over a range of intervals, per meter."""
    answer = _call(
        url,
        token_file,
        "GET",
        "/statements",
        params={"owner": owner, "first": first, "last": last},
    )
    if as_json:
        typer.echo(json.dumps(answer))
        return
    currency = answer["currency"]
    for line in answer["meters"]:
        typer.echo(
            f"{line['meter']}: {line['bills']} bills, {format_money(line['amount'], currency)}"
            f", {line['unsettled']} not reconciled"
        )
    typer.echo(f"total {format_money(answer['total'], currency)} for {owner}")


# ---------------------------------------------------------------- controller, operators, audit


@controller_app.command("propose")
def controller_propose(
    url: Url = DEFAULT_URL, token_file: TokenFile = None, as_json: Json = False
) -> None:
    """Propose the next interval's prices from the forecast and the policy."""
    answer = _call(url, token_file, "POST", "/controller/proposals", json={})
    if as_json:
        typer.echo(json.dumps(answer))
        return
    chain = _chain(url, token_file)
    typer.echo(
        f"proposal {answer['id']} for interval {chain.label(answer['interval'])}: "
        f"consumption {chain.price(answer['price_consumption'])}, "
        f"production {chain.price(answer['price_production'])}"
    )
    # The reason's first clause is why; its prices follow in micro-units, shown above instead.
    why = answer["reason"].partition(": consumption ")[0]
    typer.echo(f"  {why}")


@controller_app.command("policy")
def controller_policy(
    low_w: Annotated[int, typer.Option(help="Bottom of the net-load band, watts.")],
    high_w: Annotated[int, typer.Option(help="Top of the net-load band, watts.")],
    default_price: Annotated[
        int, _money_option("Where an unset price starts, per kWh: 0.2, 0.2EUR or 200000µ.")
    ],
    min_price: Annotated[int, _money_option("Price floor, per kWh.")] = 0,
    max_price: Annotated[
        int | None, _money_option("Price ceiling, per kWh.", show_default="10 EUR")
    ] = None,
    gain_ppm: Annotated[
        int, typer.Option(help="Price change, ppm, per band width of deviation.")
    ] = 100_000,
    max_change_ppm: Annotated[int, typer.Option(help="Largest change per proposal, ppm.")] = (
        50_000
    ),
    auto: Annotated[
        bool | None,
        typer.Option("--auto/--manual", help="Propose and accept once per interval by itself."),
    ] = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: Json = False,
) -> None:
    """Set the controller's price policy (and, with --auto, let it run by itself)."""
    policy = {
        "low_w": low_w,
        "high_w": high_w,
        "gain_ppm": gain_ppm,
        "max_change_ppm": max_change_ppm,
        "min_price": min_price,
        "max_price": max_price if max_price is not None else DEFAULT_MAX_PRICE,
        "default_price": default_price,
    }
    answer = _call(url, token_file, "PUT", "/controller", json={"policy": policy, "auto": auto})
    if as_json:
        typer.echo(json.dumps(answer))
        return
    chain = _chain(url, token_file)
    mode = "automatic" if answer["auto"] else "manual"
    typer.echo(f"policy set: band {low_w}..{high_w} W, {mode} mode")
    lowest = format_money(policy["min_price"], chain.currency).removesuffix(f" {chain.currency}")
    typer.echo(
        f"prices {lowest} to {chain.price(policy['max_price'])}; an unset price starts at "
        f"{chain.price(default_price)}"
    )


DEFAULT_MAX_PRICE = 10_000_000  # micro-units per kWh: the policy's default ceiling, 10 a kWh
FORECAST_FIELDS = (
    "consumption_w",
    "production_w",
    "net_load_w",
    "deposited_production_w",
    "open_asks_w",
    "open_bids_w",
)


@dso_app.command("forecast")
def forecast_command(
    first: FirstAhead = None,
    last: LastAhead = None,
    show_all: Annotated[bool, all_option("interval, those with a zero forecast too")] = False,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: Json = False,
) -> None:
    """Show the net load per interval, from the ledger's issued assets and the bid store's book.

    By default the table runs from the first interval with a forecast to the last, and says
    how many intervals of zero forecast it left out."""
    answer = _call(url, token_file, "GET", "/forecast", params={"first": first, "last": last})
    if as_json:
        typer.echo(json.dumps(answer))
        return
    chain = _chain(url, token_file)
    rows = answer["intervals"]
    if not show_all:
        busy = [n for n, f in enumerate(rows) if any(f.get(k) for k in FORECAST_FIELDS)]
        shown = rows[busy[0] : busy[-1] + 1] if busy else []
    else:
        shown = rows
    if shown:
        table = Table(title=f"forecast (W); book: {answer['book']}")
        for column in ("interval", "consumption", "production", "net load", "asks", "bids"):
            table.add_column(column, justify="left" if column == "interval" else "right")
        for f in shown:
            table.add_row(
                chain.label(f["interval"]),
                str(f["consumption_w"]),
                str(f["production_w"]),
                str(f["net_load_w"]),
                str(f["open_asks_w"]),
                str(f["open_bids_w"]),
            )
        out.print(table)
    if len(shown) < len(rows):
        left_out = len(rows) - len(shown)
        out.print(
            f"{left_out} intervals of zero forecast not shown; --all shows them", soft_wrap=False
        )


@controller_app.command("accept")
def controller_accept(
    proposal: Annotated[str, typer.Argument(help="The proposal's id, or its start.")],
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: Json = False,
) -> None:
    """Accept a proposal: its prices become a regulation."""
    listed = _call(url, token_file, "GET", "/controller/proposals")
    proposal = _resolve(proposal, [str(p["id"]) for p in listed["proposals"]], "proposal")
    answer = _call(
        url, token_file, "POST", f"/controller/proposals/{_segment(proposal)}/accept", json={}
    )
    if as_json:
        typer.echo(json.dumps(answer))
        return
    chain = _chain(url, token_file)
    typer.echo(f"accepted: {_regulation_line(answer, chain)}")


@operator_app.command("add")
def operator_add(
    name: Annotated[str, typer.Argument(help="The operator's name.")],
    role: Annotated[str, typer.Option(help="admin, operator or auditor.")],
    token_out: Annotated[
        Path | None, typer.Option(help="Write the new token here (else print it).")
    ] = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
) -> None:
    """Create an operator; their token is shown this once."""
    if token_out is not None:
        _writable(token_out)
    answer = _call(url, token_file, "POST", "/operators", json={"name": name, "role": role})
    if token_out is not None:
        try:
            write_private(token_out, (answer["token"] + "\n").encode())
        except OSError as exc:
            typer.echo(answer["token"])  # shown this once: better on the screen than lost
            fail(f"{name} was created but {token_out} cannot be written ({exc.strerror})")
        typer.echo(f"{name} ({role}) created; token in {token_out}")
    else:
        typer.echo(answer["token"])


@operator_app.command("revoke")
def operator_revoke(
    name: Annotated[str, typer.Argument(help="The operator's name.")],
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
) -> None:
    """Revoke an operator's token."""
    _call(url, token_file, "DELETE", f"/operators/{_segment(name)}")
    typer.echo(f"{name}'s token revoked")


@audit_app.command("verify")
def audit_verify(
    url: Url = DEFAULT_URL, token_file: TokenFile = None, as_json: Json = False
) -> None:
    """Check the audit log's hash chain; exit 1 if it was tampered with."""
    answer = _call(url, token_file, "GET", "/audit/verify")
    if as_json:
        typer.echo(json.dumps(answer))
    elif answer["intact"]:
        typer.echo(f"audit log intact: {answer['entries']} entries")
    else:
        typer.echo(f"audit log NOT intact: {answer['problem']}")
    if not answer["intact"]:
        raise typer.Exit(1)
