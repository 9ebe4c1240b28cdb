"""`petra monitor ...`: serve the monitoring layer, and set up what it shows: communities,
master data, feeds, users and API keys, distributor readings (docs/monitoring.md)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.console import Console
from rich.table import Table

from petra.config import log_and_metrics
from petra.console import (
    LogFormat,
    LogLevel,
    MetricsHost,
    MetricsPort,
    configure_logging,
    fail,
    hold_store_for,
    mask_in_logs,
    serve,
    shown_store,
    warn,
)
from petra.vocabulary import json_option, money_argument

if TYPE_CHECKING:
    from monitoring.config import MonitorConfig
    from monitoring.datadis import DailyFetch
    from monitoring.mqtt_ingest import MqttIngest
    from monitoring.service import Storing
    from monitoring.store import MonitoringStore

log = logging.getLogger("petra")
out = Console(soft_wrap=True)

DEFAULT_STORE = "sqlite:///petra-monitor.sqlite"
DEFAULT_PORT = 7470

monitor_app = typer.Typer(
    help="The monitoring layer: ingestion, the emoncms-compatible APIs and the web pages.",
    no_args_is_help=True,
)
community_app = typer.Typer(help="Communities: their names, time zones and prices.")
import_app = typer.Typer(help="Master data and distributor readings from files.")
feed_app = typer.Typer(help="Feeds: what each device input measures.", no_args_is_help=True)
user_app = typer.Typer(help="People who log in to the pages, and their roles.")
key_app = typer.Typer(help="API keys for devices and dashboards (emoncms-style).")
datadis_app = typer.Typer(help="Readings from Datadis, the Spanish distributors' platform.")
for sub, name in (
    (community_app, "community"),
    (import_app, "import"),
    (feed_app, "feed"),
    (user_app, "user"),
    (key_app, "key"),
    (datadis_app, "datadis"),
):
    sub.info.no_args_is_help = True
    monitor_app.add_typer(sub, name=name)

Store = Annotated[
    str, typer.Option("--store", help="The database's SQLAlchemy URL: the monitoring database.")
]
Json = Annotated[bool, json_option()]
CommunityOption = Annotated[str, typer.Option("--community", help="The community's id.")]


@contextmanager
def opened(store: str) -> Iterator[MonitoringStore]:
    """The monitoring store at `store`, closed afterwards; a failure to open is one sentence."""
    from monitoring.store import MonitoringStore, MonitoringStoreError

    try:
        database = MonitoringStore(store)
    except MonitoringStoreError as exc:
        fail(str(exc))
    try:
        yield database
    except MonitoringStoreError as exc:  # the database failed mid-command: nothing half-done
        fail(str(exc))
    finally:
        database.close()


def _held(ctx: typer.Context, store: str, command: str) -> None:
    """Commands that change what the service caches (communities, feeds, master data) run
    while it is stopped: hold the store as the service does."""
    from monitoring.store import STORE_ROLE

    hold_store_for(ctx, store, STORE_ROLE, command)


# ---------------------------------------------------------------- serve


@monitor_app.command("serve")
def serve_command(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="The service's TOML file (docs/examples/monitor.toml); options below win.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(help=f"The database's SQLAlchemy URL (default {DEFAULT_STORE})."),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="The address to listen on (loopback unless told).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help=f"The port to listen on (default {DEFAULT_PORT})."),
    ] = None,
    docs: Annotated[bool, typer.Option(help="Serve /docs and /openapi.json.")] = False,
    log_level: LogLevel = "info",
    log_format: LogFormat = "text",
    metrics_host: MetricsHost = "127.0.0.1",
    metrics_port: MetricsPort = 9470,
) -> None:
    """Serve the monitoring pages and the emoncms-compatible APIs, and ingest what the
    configuration names: MQTT topics, Modbus devices, Datadis."""
    from monitoring.api import create_app
    from monitoring.service import MonitorService
    from monitoring.store import STORE_ROLE, MonitoringStore, MonitoringStoreError, Retention

    settings = _config(config)
    log_metrics = log_and_metrics(ctx, config, "service", settings and settings.service)
    configure_logging(log_metrics.log_level, "monitor", log_metrics.log_format)
    for password in (
        settings and settings.mqtt and settings.mqtt.password,
        settings and settings.datadis and settings.datadis.password,
    ):
        if password:
            mask_in_logs(password)
    url = store or (settings.service.store if settings else DEFAULT_STORE)
    listen = host or (settings.service.host if settings else "127.0.0.1")
    on_port = port or (settings.service.port if settings else DEFAULT_PORT)
    if listen not in ("127.0.0.1", "::1", "localhost"):
        warn(f"listening on {listen}: the pages and APIs are reachable beyond this machine")
    hold_store_for(ctx, url, STORE_ROLE, "petra monitor serve")
    retention = Retention(settings.retention.raw_days) if settings else Retention()
    try:
        database = MonitoringStore(url, retention)
    except MonitoringStoreError as exc:
        fail(str(exc))
    with ExitStack() as running:
        running.callback(database.close)
        if settings is not None:
            _apply_communities(database, settings)
        folder = config.parent if config is not None else Path.cwd()
        ingests = running.enter_context(_ingesting(database, settings, folder))
        mqtt = ingests.pop("mqtt", None)
        service = MonitorService(
            database,
            secure_cookies=settings.service.secure_cookies if settings else False,
            mqtt=cast("MqttIngest | None", mqtt),
            ingests=ingests,
        )
        log.info("monitoring on http://%s:%s/ (database %s)", listen, on_port, shown_store(url))
        serve(
            create_app(service, docs=docs),
            listen,
            on_port,
            metrics=(service.registry, log_metrics.metrics_host, log_metrics.metrics_port),
            metrics_by_default=log_metrics.metrics_by_default,
        )
    log.info("stopped")


def _config(path: Path | None) -> MonitorConfig | None:
    if path is None:
        return None
    from monitoring.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        fail(f"{path}: {exc}")


def _apply_communities(database: MonitoringStore, settings: MonitorConfig) -> None:
    for one in settings.communities:
        database.put_community(
            one.id,
            one.name,
            one.timezone,
            currency=one.currency,
            price_micro_per_kwh=one.price_micro_per_kwh,
            export_micro_per_kwh=one.export_micro_per_kwh,
            co2_g_per_kwh=one.co2_g_per_kwh,
        )


@contextmanager
def _ingesting(
    database: MonitoringStore, settings: MonitorConfig | None, config_folder: Path
) -> Iterator[dict[str, Storing]]:
    """The ingestion the configuration names, running until the block ends, and the daily
    pruning of raw samples the retention lets go; yields each ingestion by its path (`mqtt`,
    `modbus`, `datadis`), for the metrics and the readiness."""
    from monitoring.modbus_poller import ModbusPoller
    from monitoring.mqtt_ingest import MqttIngest
    from service.ticker import Ticker

    running: dict[str, Storing] = {}
    with ExitStack() as stack:
        if settings is not None and settings.mqtt is not None:
            ingest = MqttIngest(database, settings.mqtt)
            running["mqtt"] = ingest
            ingest.start()
            stack.callback(ingest.close)
            log.info("reading MQTT from %s:%s", settings.mqtt.host, settings.mqtt.port)
        if settings is not None and settings.modbus:
            poller = ModbusPoller(database, settings.modbus)
            running["modbus"] = poller
            poller.start()
            stack.callback(poller.close)
            log.info("polling %d Modbus device(s)", len(settings.modbus))
        if settings is not None and settings.datadis is not None:
            running["datadis"] = stack.enter_context(
                _datadis_daily(database, settings, config_folder)
            )
        if database.retention.raw_days is not None:
            pruning = Ticker(
                lambda: log.info("pruned %d raw samples", database.prune()), 3_600.0, "pruning"
            )
            pruning.start()
            stack.callback(pruning.stop)
        yield running


@contextmanager
def _datadis_daily(
    database: MonitoringStore, settings: MonitorConfig, folder: Path
) -> Iterator[DailyFetch]:
    """The daily Datadis fetch of `[datadis]`, its answers cached in `datadis-cache/` beside
    the configuration, in the first community's time zone (Spain's mainland by default)."""
    from monitoring.datadis import DailyFetch, DatadisClient
    from monitoring.store import zone
    from service.ticker import Ticker

    assert settings.datadis is not None
    datadis = settings.datadis
    tz = zone(settings.communities[0].timezone if settings.communities else "Europe/Madrid")
    client = DatadisClient(
        datadis.base_url, datadis.username, datadis.password, cache_dir=folder / "datadis-cache"
    )
    job = DailyFetch(client, database, datadis.supplies, datadis.hour, tz)
    ticker = Ticker(job.tick, 600.0, "Datadis fetch")
    ticker.start()
    log.info("fetching Datadis daily from %02d:00 (%s)", datadis.hour, tz.key)
    try:
        yield job
    finally:
        ticker.stop()
        client.close()


# ---------------------------------------------------------------- communities


@community_app.command("add")
def community_add(
    ctx: typer.Context,
    community_id: Annotated[str, typer.Argument(help="Its id, short: letters, digits, -.")],
    name: Annotated[str, typer.Option(help="Its name, as people know it.")],
    timezone: Annotated[
        str, typer.Option(help="Its IANA time zone: days and hours are shown in it.")
    ] = "Europe/Madrid",
    currency: Annotated[str, typer.Option(help="The currency of its prices.")] = "EUR",
    price: Annotated[
        int | None,
        typer.Option(
            parser=money_argument, help="What members pay per kWh from the grid, e.g. 0.15."
        ),
    ] = None,
    export_price: Annotated[
        int | None,
        typer.Option(parser=money_argument, help="What a kWh of surplus earns, e.g. 0.05."),
    ] = None,
    co2: Annotated[
        float | None,
        typer.Option("--co2", min=0, help="The grid's emissions, g CO2 per kWh (savings)."),
    ] = None,
    store: Store = DEFAULT_STORE,
) -> None:
    """Create COMMUNITY_ID, or change its name, time zone and prices."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", community_id):
        fail("a community's id is 1 to 64 letters, digits, '_' or '-'")
    _held(ctx, store, "petra monitor community add")
    values: dict[str, Any] = {"currency": currency}
    for key, value in (
        ("price_micro_per_kwh", price),
        ("export_micro_per_kwh", export_price),
        ("co2_g_per_kwh", co2),
    ):
        if value is not None:
            values[key] = value
    with opened(store) as database:
        try:
            database.put_community(community_id, name, timezone, **values)
        except ValueError as exc:
            fail(str(exc))
    out.print(f"community {community_id} saved ({timezone})")


@community_app.command("list")
def community_list(store: Store = DEFAULT_STORE, as_json: Json = False) -> None:
    """Every community, its time zone and prices."""
    from petra.vocabulary import format_price

    with opened(store) as database:
        rows = database.communities()
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("id", "name", "time zone", "price", "export price", "g CO2/kWh")
    for row in rows:
        table.add_row(
            row["id"],
            row["name"],
            row["timezone"],
            format_price(row["price_micro_per_kwh"], row["currency"]),
            format_price(row["export_micro_per_kwh"], row["currency"]),
            f"{row['co2_g_per_kwh']:g}",
        )
    out.print(table)


# ---------------------------------------------------------------- imports


@import_app.command("members")
def import_members(
    ctx: typer.Context,
    files: Annotated[
        list[Path],
        typer.Argument(
            help="CSV files (one kind each) or one Excel workbook: members, supply points, "
            "installations.",
            exists=True,
            dir_okay=False,
        ),
    ],
    community: CommunityOption,
    good_rows: Annotated[
        bool,
        typer.Option("--good-rows", help="Import the good rows of files that have bad ones too."),
    ] = False,
    store: Store = DEFAULT_STORE,
    as_json: Json = False,
) -> None:
    """Import a community's master data; every rejected row is listed with its reason, and
    nothing is imported from files with an error unless --good-rows."""
    from monitoring.masterdata import (
        MasterDataRejected,
        format_report,
        import_master_data,
        parse_master_data,
    )

    _held(ctx, store, "petra monitor import members")
    with opened(store) as database:
        try:
            parsed = parse_master_data(*files)
            report = import_master_data(database, community, parsed, good_rows_only=good_rows)
        except MasterDataRejected as rejected:
            out.print(format_report(rejected.report))
            fail(
                "nothing was imported: fix the rows above, or import the good ones with --good-rows"
            )
        except ValueError as exc:
            fail(str(exc))
    if as_json:
        out.print_json(json.dumps(_plain(report)))
    else:
        out.print(format_report(report))


@import_app.command("readings")
def import_readings(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="A distributor's CSV export.", exists=True, dir_okay=False)
    ],
    timezone: Annotated[
        str, typer.Option(help="The zone its hours are in (Spain's mainland by default).")
    ] = "Europe/Madrid",
    good_rows: Annotated[
        bool, typer.Option("--good-rows", help="Import the good rows of a file with bad ones.")
    ] = False,
    store: Store = DEFAULT_STORE,
    as_json: Json = False,
) -> None:
    """Import hourly or quarter-hourly readings from a distributor's CSV export (hour-ending
    1-24, decimal comma); nothing is imported from a file with an error unless --good-rows."""
    from monitoring.distributor_csv import import_distributor_csv
    from monitoring.store import zone

    _held(ctx, store, "petra monitor import readings")
    try:
        tz = zone(timezone)
    except ValueError as exc:
        fail(str(exc))
    with opened(store) as database:
        try:
            report = import_distributor_csv(database, file, tz, good_rows_only=good_rows)
        except ValueError as exc:
            fail(str(exc))
    if as_json:
        out.print_json(json.dumps(_plain(report)))
        return
    for error in report.errors:
        out.print(f"{file.name} line {error.line}, column {error.column}: {error.message}")
    if not report.imported:
        fail(
            f"nothing was imported: {len(report.errors)} line(s) above are wrong; fix them, "
            "or import the good ones with --good-rows"
        )
    out.print(
        f"{report.readings} readings: {report.stored} samples stored, {report.replaced} "
        f"replaced, {len(report.errors)} line(s) refused"
    )


# ---------------------------------------------------------------- feeds


@feed_app.command("set")
def feed_set(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="The device's node name.")],
    name: Annotated[str, typer.Argument(help="The input's name.")],
    kind: Annotated[
        str | None,
        typer.Option(
            help="power (W, averaged), energy (kWh per interval), counter (cumulative kWh) or "
            "other."
        ),
    ] = None,
    unit: Annotated[str | None, typer.Option(help="Its unit, as shown.")] = None,
    supply_point: Annotated[
        str | None, typer.Option(help="The supply point (CUPS or POD) it measures.")
    ] = None,
    role: Annotated[
        str | None, typer.Option(help="What it is there: consumption, generation or export.")
    ] = None,
    min_ok: Annotated[
        float | None, typer.Option("--min", help="The control centre alarms below this.")
    ] = None,
    max_ok: Annotated[
        float | None, typer.Option("--max", help="The control centre alarms above this.")
    ] = None,
    store: Store = DEFAULT_STORE,
) -> None:
    """Say what input NAME of NODE measures (creating both if no data came yet)."""
    from monitoring.feeds import FeedDeclaration, declare_feed

    _held(ctx, store, "petra monitor feed set")
    declared = FeedDeclaration(node, name, kind, unit, supply_point, role, min_ok, max_ok)
    with opened(store) as database:
        try:
            feed_id = declare_feed(database, declared)
        except ValueError as exc:
            fail(str(exc))
    out.print(f"feed {feed_id}: {node}/{name} saved")


@feed_app.command("import")
def feed_import(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            help="A CSV file: node, name, kind, unit, supply_point, role, min, max (a header "
            "line first; empty cells leave a setting as it is).",
            exists=True,
            dir_okay=False,
        ),
    ],
    store: Store = DEFAULT_STORE,
) -> None:
    """Say what many feeds measure at once; nothing is saved if a line is wrong."""
    from monitoring.feeds import declare_feeds, read_feed_declarations

    _held(ctx, store, "petra monitor feed import")
    try:
        declared = read_feed_declarations(file.read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as exc:
        fail(f"{file}: {exc}")
    with opened(store) as database:
        try:
            declare_feeds(database, declared)
        except ValueError as exc:
            fail(f"{file}: {exc}")
    out.print(f"{len(declared)} feeds saved")


@feed_app.command("list")
def feed_list(
    community: Annotated[
        str | None,
        typer.Option("--community", help="The community whose feeds to list (default: all)."),
    ] = None,
    store: Store = DEFAULT_STORE,
    as_json: Json = False,
) -> None:
    """Every feed, its last value and what it measures."""
    from petra.vocabulary import local_time

    with opened(store) as database:
        feeds = database.feeds(community_id=community)
    if as_json:
        out.print_json(json.dumps([_plain(f) for f in feeds]))
        return
    table = Table("id", "node", "name", "kind", "unit", "supply point", "role", "last value", "at")
    for f in feeds:
        table.add_row(
            str(f.id),
            f.node,
            f.name,
            f.kind,
            f.unit,
            f.supply_point_id or "",
            f.role or "",
            "" if f.last_value is None else f"{f.last_value:g}",
            "" if f.last_time is None else local_time(f.last_time),
        )
    out.print(table)


@monitor_app.command("refusals")
def refusals_command(store: Store = DEFAULT_STORE, as_json: Json = False) -> None:
    """What every ingestion path refused, by reason, with the last message."""
    from petra.vocabulary import local_time

    with opened(store) as database:
        rows = database.refusals()
    if as_json:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        out.print("nothing refused")
        return
    table = Table("source", "reason", "count", "last", "last message")
    for row in rows:
        table.add_row(
            row["source"],
            row["reason"],
            str(row["count"]),
            local_time(row["last_at"]),
            row["last_message"],
        )
    out.print(table)


# ---------------------------------------------------------------- users


def _new_password(password_file: Path | None) -> str:
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read a password from {password_file}: {exc}")
        return lines[0] if lines else ""
    first = typer.prompt("password", hide_input=True)
    if typer.prompt("again", hide_input=True) != first:
        fail("the two passwords differ")
    return str(first)


PasswordFile = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        help="File holding the password (its first line); else it is asked for.",
        exists=True,
        dir_okay=False,
    ),
]


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument(help="The name they log in with.")],
    role: Annotated[
        str,
        typer.Option(
            help="member (their own supply points), manager (one community) or operator "
            "(the whole service)."
        ),
    ],
    community: Annotated[
        str | None, typer.Option("--community", help="The community of a member or manager.")
    ] = None,
    member: Annotated[
        str | None, typer.Option("--member", help="A member's reference in the community.")
    ] = None,
    password_file: PasswordFile = None,
    store: Store = DEFAULT_STORE,
) -> None:
    """Let USERNAME log in to the pages with ROLE."""
    from monitoring.auth import ROLES, create_user

    if role not in ROLES:
        fail(f"--role is one of {', '.join(ROLES)}")
    if role in ("member", "manager") and community is None:
        fail(f"a {role} belongs to a community: give --community")
    if role == "member" and member is None:
        fail("a member user sees one member's data: give --member with the member's reference")
    with opened(store) as database:
        member_id = None
        if member is not None and community is not None:
            member_id = database.member_by_ref(community, member)
            if member_id is None:
                fail(f"no member {member} in community {community}: import it first")
        password = _new_password(password_file)
        try:
            create_user(
                database,
                username,
                password,
                role,
                community_id=community,
                member_id=member_id,
            )
        except ValueError as exc:
            fail(str(exc))
    out.print(f"user {username} added ({role})")


@user_app.command("passwd")
def user_passwd(
    username: Annotated[str, typer.Argument(help="The user whose password changes.")],
    password_file: PasswordFile = None,
    store: Store = DEFAULT_STORE,
) -> None:
    """Change USERNAME's password; their sessions end."""
    from monitoring.auth import set_password

    with opened(store) as database:
        password = _new_password(password_file)
        try:
            set_password(database, username, password)
        except ValueError as exc:
            fail(str(exc))
    out.print(f"password of {username} changed; their sessions ended")


@user_app.command("list")
def user_list(store: Store = DEFAULT_STORE, as_json: Json = False) -> None:
    """Every user and role (never a password)."""
    import time

    from monitoring.auth import list_users
    from petra.vocabulary import local_time

    with opened(store) as database:
        users = list_users(database)
    if as_json:
        out.print_json(json.dumps(users))
        return
    table = Table("username", "role", "community", "member", "state", "created")
    now = time.time()
    for user in users:
        if user["disabled"]:
            state = "disabled"
        elif user["locked_until"] > now:
            state = f"locked until {local_time(user['locked_until'])}"
        else:
            state = "active"
        table.add_row(
            user["username"],
            user["role"],
            user["community_id"] or "",
            "" if user["member_id"] is None else str(user["member_id"]),
            state,
            local_time(user["created"]),
        )
    out.print(table)


# ---------------------------------------------------------------- API keys


@key_app.command("create")
def key_create(
    label: Annotated[str, typer.Argument(help="What the key is for, e.g. 'emonhub at Ana's'.")],
    write: Annotated[
        bool, typer.Option("--write/--read", help="A write key posts data (and reads).")
    ] = False,
    community: Annotated[
        str | None,
        typer.Option(
            "--community", help="The community whose devices it serves (default: every one)."
        ),
    ] = None,
    store: Store = DEFAULT_STORE,
) -> None:
    """Create an API key: printed once, only its hash is kept."""
    import time

    from monitoring.keys import create_key

    with opened(store) as database:
        if community is not None and database.community(community) is None:
            fail(f"no community {community}: add it with `petra monitor community add`")
        try:
            key = create_key(database, label, "write" if write else "read", community, time.time())
        except ValueError as exc:
            fail(str(exc))
    out.print(key)


@key_app.command("list")
def key_list(store: Store = DEFAULT_STORE, as_json: Json = False) -> None:
    """Every API key's label, access and community (never the key)."""
    from monitoring.keys import list_keys
    from petra.vocabulary import local_time

    with opened(store) as database:
        keys = list_keys(database)
    if as_json:
        out.print_json(json.dumps([_plain(k) for k in keys]))
        return
    table = Table("id", "label", "access", "community", "created", "last used")
    for key in keys:
        table.add_row(
            key.id,
            key.label,
            key.access,
            key.community_id or "every community",
            local_time(key.created),
            "never" if key.last_used is None else local_time(key.last_used),
        )
    out.print(table)


@key_app.command("revoke")
def key_revoke(
    which: Annotated[
        str, typer.Argument(help="The key's id (as listed), its label, or the key itself.")
    ],
    store: Store = DEFAULT_STORE,
) -> None:
    """Revoke an API key: devices using it are refused from now on."""
    from monitoring.keys import revoke_key

    with opened(store) as database:
        try:
            revoke_key(database, which)
        except ValueError as exc:
            fail(str(exc))
    out.print("revoked")


# ---------------------------------------------------------------- Datadis


@datadis_app.command("fetch")
def datadis_fetch(
    ctx: typer.Context,
    username: Annotated[str, typer.Option(help="The Datadis user (a NIF).")],
    password_file: Annotated[
        Path,
        typer.Option(
            "--password-file",
            help="File holding the Datadis password (its first line).",
            exists=True,
            dir_okay=False,
        ),
    ],
    first: Annotated[str, typer.Option("--first-month", help="The first month, YYYY-MM.")],
    last: Annotated[
        str | None,
        typer.Option("--last-month", help="The last month, YYYY-MM (default: the first)."),
    ] = None,
    cups: Annotated[
        list[str] | None,
        typer.Option("--cups", help="A supply point (again for more; default: all)."),
    ] = None,
    timezone: Annotated[str, typer.Option(help="The supplies' time zone.")] = "Europe/Madrid",
    cache: Annotated[
        Path,
        typer.Option(
            help="Where answers are kept, so no identical query is sent twice within a day."
        ),
    ] = Path("datadis-cache"),
    base_url: Annotated[str, typer.Option(help="Datadis's address.")] = "https://datadis.es",
    store: Store = DEFAULT_STORE,
) -> None:
    """Fetch hourly consumption from Datadis into the store, within its limits (no query is
    repeated within a day, failed ones included)."""
    from monitoring.datadis import DatadisClient, DatadisError, fetch_into_store
    from monitoring.store import zone

    _held(ctx, store, "petra monitor datadis fetch")
    months = [_month(first, "--first-month"), _month(last or first, "--last-month")]
    if months[1] < months[0]:
        fail("--last-month is before --first-month")
    try:
        tz = zone(timezone)
    except ValueError as exc:
        fail(str(exc))
    try:
        lines = password_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read the Datadis password from {password_file}: {exc}")
    client = DatadisClient(base_url, username, lines[0] if lines else "", cache_dir=cache)
    with opened(store) as database:
        try:
            summary = fetch_into_store(client, database, cups or [], months[0], months[1], tz)
        except DatadisError as exc:
            fail(str(exc))
        finally:
            client.close()
    for supply in summary.supplies:
        cached = " (answered from the cache: not asked again within a day)" * supply.from_cache
        problem = f": {supply.problem}" if supply.problem else ""
        out.print(
            f"{supply.cups}: {supply.stored} stored, {supply.replaced} replaced, "
            f"{supply.refused} refused{cached}{problem}"
        )
    out.print(
        f"{len(summary.supplies)} supply point(s): {summary.stored} samples stored, "
        f"{summary.replaced} replaced, {summary.refused} refused"
    )


def _month(text: str, option: str) -> date:
    try:
        year, month = text.split("-")
        return date(int(year), int(month), 1)
    except ValueError:
        fail(f"{option} is a month as YYYY-MM, not {text!r}")


def _plain(value: Any) -> Any:
    """A dataclass or mapping as JSON-ready values."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)
