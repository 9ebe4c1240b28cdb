"""`petra dso ...`: set up and serve the DSO node, and operate it through its API."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.table import Table

from assets.keyfile import is_sealed
from dso.client import DEFAULT_URL, DsoClient, DsoClientError
from petra.console import (
    PassphraseFile,
    check_ledger_genesis,
    err,
    fail,
    read_genesis,
    read_keys,
    serve,
    warn,
    write_private,
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

Url = Annotated[str, typer.Option("--url", help="The DSO node.", envvar="PETRA_DSO_URL")]
TokenFile = Annotated[
    Path | None,
    typer.Option(
        help=f"File holding the operator token (else ${TOKEN_ENV}).", exists=True, dir_okay=False
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print the node's JSON answer.")]
FirstAhead = Annotated[int | None, typer.Option(help="First interval (default: now).")]
LastAhead = Annotated[int | None, typer.Option(help="Last interval (default: a day on).")]
FirstBack = Annotated[int | None, typer.Option(help="First interval (default: a day back).")]
LastBack = Annotated[int | None, typer.Option(help="Last interval (default: the last ended).")]
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


def _regulation_line(answer: dict[str, Any]) -> str:
    return (
        f"regulation {answer['txid']} {answer['status']} at height {answer['height']}, "
        f"in force from interval {answer['effective_from']}"
    )


# ---------------------------------------------------------------- set-up and serving


@dso_app.command("init")
def init_command(
    store: Annotated[str, typer.Option(help="SQLAlchemy URL of the DSO database.")] = (
        "sqlite:///petra-dso.sqlite"
    ),
    admin: Annotated[str, typer.Option(help="The first admin's name.")] = "admin",
    token_out: Annotated[
        Path | None, typer.Option(help="Write the admin token here (else print it).")
    ] = None,
) -> None:
    """Create the DSO database and its first admin; the token is shown this once."""
    from dso.auth import OPERATOR_NAME, Role, new_token, token_hash
    from dso.store import DsoStore, DsoStoreError, Operator

    if OPERATOR_NAME.fullmatch(admin) is None:
        fail("an operator name is 1-64 of a-z 0-9 . _ -, from a letter or digit")
    if token_out is not None:
        _writable(token_out)
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
    store: Annotated[str, typer.Option(help="SQLAlchemy URL of the DSO database.")] = (
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
    from dso.store import Conflict, DsoStore, DsoStoreError, NodeRunning, Operator

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
    try:
        database = DsoStore(store)
    except DsoStoreError as exc:
        fail(str(exc))
    try:
        with database.exclusive():
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
                database.audit(
                    conn, "recover", "local", "operator.recover", name, {"role": "admin"}
                )
    except NodeRunning:
        fail(f"a DSO node is serving {store}: stop it, then run `petra dso admin recover` again")
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


@dso_app.command("serve")
def serve_command(
    genesis: Annotated[
        Path, typer.Option(help="The genesis JSON file.", exists=True, dir_okay=False)
    ],
    keys: Annotated[
        Path,
        typer.Option(
            help="Sealed key file holding one of the genesis's DSO keys.",
            exists=True,
            dir_okay=False,
        ),
    ],
    ledger: Annotated[str, typer.Option(help="The ledger node.")] = "http://127.0.0.1:7420",
    store: Annotated[str, typer.Option(help="SQLAlchemy URL of the DSO database.")] = (
        "sqlite:///petra-dso.sqlite"
    ),
    host: Annotated[str, typer.Option(help="Address to listen on (loopback unless told).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 7430,
    docs: Annotated[bool, typer.Option(help="Serve /docs and /openapi.json.")] = False,
    book: Annotated[
        str | None, typer.Option(help="The bid store whose open orders the forecast reads.")
    ] = None,
    passphrase_file: PassphraseFile = None,
) -> None:
    """Serve the DSO admin API under /v1 (docs/dso-api.md), following the ledger."""

    from dso.api import create_app
    from dso.book import StoreBook
    from dso.service import DsoService
    from dso.store import DsoStore, DsoStoreError, NodeRunning
    from ledger.client import LedgerClient

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
    client = LedgerClient(ledger)
    try:
        database = DsoStore(store)
        order_book = StoreBook(book) if book is not None else None
        service = DsoService(database, client, genesis_doc, signing[0], book=order_book)
    except DsoStoreError as exc:
        fail(str(exc))
    if not database.operators():
        warn(f"{store} has no operator: create the first admin with `petra dso init`")
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(database.exclusive())
        except NodeRunning:
            client.close()
            database.close()
            fail(f"another DSO node (or `petra dso admin recover`) is using {store}")
        service.start()
        err.print(f"DSO node on http://{host}:{port}/v1 (database {store}, ledger {ledger})")
        try:
            serve(create_app(service, docs=docs), host, port)
        finally:
            service.close()
            client.close()
            database.close()


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
    """Authorize METER to issue with PUBLIC_KEY below its limits."""
    body = {
        "meter": meter,
        "public_key": public_key,
        "max_epa": max_epa,
        "max_eca": max_eca,
        "owner": owner,
        "time": time_,
    }
    answer = _call(url, token_file, "POST", "/meters", json=body)
    typer.echo(json.dumps(answer) if as_json else f"{meter} authorized: {_regulation_line(answer)}")


@meter_app.command("ban")
def meter_ban(
    meter: Annotated[str, typer.Argument(help="Meter id.")],
    time_: TimeOption = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: Json = False,
) -> None:
    """Ban METER: it may not issue from interval TIME+1 on."""
    answer = _call(url, token_file, "POST", f"/meters/{_segment(meter)}/ban", json={"time": time_})
    typer.echo(json.dumps(answer) if as_json else f"{meter} banned: {_regulation_line(answer)}")


@meter_app.command("list")
def meter_list(
    interval: Annotated[int | None, typer.Option(help="As in force at (default: now).")] = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: Json = False,
) -> None:
    """Every meter a regulation named, as in force at an interval."""
    answer = _call(url, token_file, "GET", "/meters", params={"interval": interval})
    if as_json:
        typer.echo(json.dumps(answer))
        return
    table = Table(title=f"meters at interval {answer['interval']}")
    for column in ("meter", "state", "max_epa W", "max_eca W", "owner", "public key"):
        table.add_column(column)
    for m in answer["meters"]:
        key = m["public_key"]
        table.add_row(
            m["meter"],
            m["state"],
            str(m["max_epa"]),
            str(m["max_eca"]),
            m["owner"] or "-",
            key[:16] + "…" if key else "-",
        )
    out.print(table)


# ---------------------------------------------------------------- tariffs and limits


@tariff_app.command("set")
def tariff_set(
    consumption: Annotated[int | None, typer.Option(help="micro-units per kWh")] = None,
    production: Annotated[int | None, typer.Option(help="micro-units per kWh")] = None,
    time_: TimeOption = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: Json = False,
) -> None:
    """Set the consumption and/or production price from interval TIME+1."""
    body = {"price_consumption": consumption, "price_production": production, "time": time_}
    answer = _call(url, token_file, "PUT", "/tariff", json=body)
    typer.echo(json.dumps(answer) if as_json else f"prices set: {_regulation_line(answer)}")


@tariff_app.command("show")
def tariff_show(
    first: FirstAhead = None,
    last: LastAhead = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: Json = False,
) -> None:
    """Prices and default limits in force, as runs of intervals."""
    answer = _call(url, token_file, "GET", "/schedule", params={"first": first, "last": last})
    if as_json:
        typer.echo(json.dumps(answer))
        return
    table = Table(title="prices (micro-units per kWh) and default limits (W)")
    for column in ("intervals", "consumption", "production", "max_epa", "max_eca"):
        table.add_column(column)
    for run in answer["runs"]:
        limits = run["default_limits"] or {}
        table.add_row(
            f"{run['first']}..{run['last']}",
            _text(run["price_consumption"]),
            _text(run["price_production"]),
            _text(limits.get("max_epa")),
            _text(limits.get("max_eca")),
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
    for regulation in answer["regulations"]:
        typer.echo(f"default limits set: {_regulation_line(regulation)}")


# ---------------------------------------------------------------- bills


@dso_app.command("bills")
def bills_command(
    first: FirstBack = None,
    last: LastBack = None,
    meter: Annotated[str | None, typer.Option(help="Only this meter's.")] = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner's.")] = None,
    status: Annotated[str | None, typer.Option(help="pending, reconciled or flagged.")] = None,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Write the bills as CSV to this file.")
    ] = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: Json = False,
) -> None:
    """Meters' interval bills and their reconciliation with the ledger."""
    params = {"first": first, "last": last, "meter": meter, "owner": owner, "status": status}
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
    table = Table(title=f"bills of intervals {answer['first']}..{answer['last']}")
    for column in ("interval", "meter", "owner", "amount", "status", "discrepancies"):
        table.add_column(column)
    for b in answer["bills"]:
        codes = " ".join(d["code"] for d in b["discrepancies"]) or "-"
        table.add_row(
            str(b["interval"]), b["meter"], b["owner"] or "-", str(b["amount"]), b["status"], codes
        )
    out.print(table)


@dso_app.command("statement")
def statement_command(
    owner: Annotated[str, typer.Argument(help="The owner's reference.")],
    first: FirstBack = None,
    last: LastBack = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: Json = False,
) -> None:
    """What OWNER owes over a range of intervals, per meter."""
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
    for line in answer["meters"]:
        typer.echo(
            f"{line['meter']}: {line['bills']} bills, {line['amount']} micro-{answer['currency']}"
            f", {line['unsettled']} not reconciled"
        )
    typer.echo(f"total {answer['total']} micro-{answer['currency']} for {owner}")


# ---------------------------------------------------------------- controller, operators, audit


@controller_app.command("propose")
def controller_propose(
    url: Url = DEFAULT_URL, token_file: TokenFile = None, as_json: Json = False
) -> None:
    """Propose the next interval's prices from the forecast and the policy."""
    answer = _call(url, token_file, "POST", "/controller/proposals", json={})
    typer.echo(json.dumps(answer) if as_json else f"proposal {answer['id']}: {answer['reason']}")


@controller_app.command("policy")
def controller_policy(
    low_w: Annotated[int, typer.Option(help="Bottom of the net-load band, watts.")],
    high_w: Annotated[int, typer.Option(help="Top of the net-load band, watts.")],
    default_price: Annotated[int, typer.Option(help="Where an unset price starts.")],
    min_price: Annotated[int, typer.Option(help="Price floor, micro-units per kWh.")] = 0,
    max_price: Annotated[int, typer.Option(help="Price ceiling, micro-units per kWh.")] = (
        10_000_000
    ),
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
        "max_price": max_price,
        "default_price": default_price,
    }
    answer = _call(url, token_file, "PUT", "/controller", json={"policy": policy, "auto": auto})
    if as_json:
        typer.echo(json.dumps(answer))
    else:
        mode = "automatic" if answer["auto"] else "manual"
        typer.echo(f"policy set: band {low_w}..{high_w} W, {mode} mode")


@dso_app.command("forecast")
def forecast_command(
    first: FirstAhead = None,
    last: LastAhead = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: Json = False,
) -> None:
    """Net load per interval, from the ledger's issued assets and the bid store's book."""
    answer = _call(url, token_file, "GET", "/forecast", params={"first": first, "last": last})
    if as_json:
        typer.echo(json.dumps(answer))
        return
    table = Table(title=f"forecast (W); book: {answer['book']}")
    for column in ("interval", "consumption", "production", "net load", "asks", "bids"):
        table.add_column(column, justify="right")
    for f in answer["intervals"]:
        table.add_row(
            str(f["interval"]),
            str(f["consumption_w"]),
            str(f["production_w"]),
            str(f["net_load_w"]),
            str(f["open_asks_w"]),
            str(f["open_bids_w"]),
        )
    out.print(table)


@controller_app.command("accept")
def controller_accept(
    proposal: Annotated[int, typer.Argument(help="The proposal's id.")],
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: Json = False,
) -> None:
    """Accept a proposal: its prices become a regulation."""
    answer = _call(url, token_file, "POST", f"/controller/proposals/{proposal}/accept", json={})
    typer.echo(json.dumps(answer) if as_json else f"accepted: {_regulation_line(answer)}")


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


def _text(value: Any) -> str:
    return "-" if value is None else str(value)
