"""One way to configure every role: a TOML file (`--config FILE`) for what an operator keeps,
environment variables for secrets and the log (`PETRA_PASSPHRASE`, `PETRA_LOG_LEVEL`...),
flags for overrides. The precedence is the same everywhere: flag > environment variable >
configuration file > built-in default.

`petra ledger serve`, `ledger replicate`, `dso serve`, `mixer serve` and `bidstore serve`
read their table of the file (`[ledger]`, `[replica]`, `[dso]`, `[mixer]`, `[bidstore]`)
through `config_option`: its keys are the command's long option names with `-` as `_`, each
converted by the option's own type (so the file takes what the flag takes) and handed to the
command as the option's default, which a flag or an environment variable still overrides.
The meter (`[meter]`) and the monitoring service (`[service]`) keep their own loaders; their
commands take the file's logging and metrics keys through `log_and_metrics`.

Every problem is one sentence naming the file, the table and the key; a secret is never read
from a file, and a relative path in one is taken from the file's folder, a SQLite URL's
included."""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import typer
from typer._click.core import Context, ParameterSource  # typer exports none of these three
from typer._click.exceptions import MissingParameter
from typer.core import TyperCommand, TyperOption

from petra.console import PASSPHRASE_ENV, fail

# The table each generic role reads, and the command reading it.
TABLES = {
    "ledger": "petra ledger serve",
    "replica": "petra ledger replicate",
    "dso": "petra dso serve",
    "mixer": "petra mixer serve",
    "bidstore": "petra bidstore serve",
}
# A key naming one of these words holds a secret, unless it names the file holding one.
SECRET_WORDS = ("passphrase", "password", "token", "secret")
SECRET_SOURCES = f"set ${PASSPHRASE_ENV} or give passphrase_file, a file only the service may read"
_LOADED = "petra.config"  # ctx.meta: (file or None, table) of the command being parsed


def config_option(table: str) -> Any:
    """`--config FILE` for the command reading `[table]`: eager, so the file's values become
    the other options' defaults before click reads them (flags and environment still win)."""

    def load(ctx: typer.Context, value: Path | None) -> Path | None:
        ctx.meta[_LOADED] = (value, table)
        if value is not None:
            ctx.default_map = {**(ctx.default_map or {}), **_defaults(ctx, value, table)}
        return value

    return typer.Option(
        "--config",
        help=f"The service's TOML file: its table {table} sets any option here, a flag or an "
        "environment variable wins (docs/cli.md).",
        exists=True,
        dir_okay=False,
        is_eager=True,
        callback=load,
    )


class ConfiguredCommand(TyperCommand):
    """A command taking `config_option`: a required option given neither as a flag nor in
    the file is named with both ways to give it."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except MissingParameter as exc:
            path, table = ctx.meta.get(_LOADED, (None, None))
            if exc.param is None or table is None:
                raise
            flag, key = exc.param.opts[0], _key(exc.param.opts[0])
            if path is None:
                fail(f"give {flag}, or {key} in the [{table}] table of a --config file")
            fail(f"give {flag} or {key} in [{table}] of {path}")


def chosen(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was given (flag, environment or file) rather than left at its
    built-in default."""
    return ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)


@dataclass(frozen=True, slots=True)
class LogAndMetrics:
    """Where a service's log and metrics go, once flag, environment, file and default are
    weighed: the log's level and format, the metrics' address; `metrics_by_default` when the
    port is the role's default, chosen by nobody (one in use is then a warning)."""

    log_level: str
    log_format: str
    metrics_host: str
    metrics_port: int
    metrics_by_default: bool


def log_and_metrics(ctx: typer.Context, path: Path | None, where: str, file: Any) -> LogAndMetrics:
    """For the roles with loaders of their own (the meter, the monitoring service): the
    command's `--log-level`, `--log-format`, `--metrics-host` and `--metrics-port`, each taken
    from `file` (the loaded `[where]` table of the file at `path`: its attributes of the same
    names, None when not given) when left at its built-in default (flag > environment > file >
    default), and converted by the option's own type. A bad value is one sentence naming `where`
    (`meter`, `service`) and the key."""
    options = {p.name: p for p in ctx.command.params if isinstance(p, TyperOption)}
    values = dict(ctx.params)
    taken: set[str] = set()
    for name in ("log_level", "log_format", "metrics_host", "metrics_port"):
        value = None if file is None else getattr(file, name)
        if value is None or chosen(ctx, name):
            continue
        text = _text(value)
        if text is None:
            fail(f"{path}: {where}.{name} must be one value, not a table or a list")
        values[name] = _converted(ctx, options[name], text, f"{path}: {where}.{name}")
        taken.add(name)
    return LogAndMetrics(
        log_level=values["log_level"],
        log_format=values["log_format"],
        metrics_host=values["metrics_host"],
        metrics_port=values["metrics_port"],
        metrics_by_default=not chosen(ctx, "metrics_port") and "metrics_port" not in taken,
    )


def store_given(role: str, store: str | None, config: Path | None, to: str) -> str:
    """The store a command is to `to` (migrate, copy): `--store`'s URL, else the one the
    role's configuration file names; exactly one of them, else one sentence and exit 2."""
    if (store is None) == (config is None):
        fail(f"give the store to {to}: --store URL or --config FILE (one of them)")
    if store is not None:
        return store
    assert config is not None
    try:
        return store_in_config(role, config)
    except ValueError as exc:
        fail(str(exc))


def store_in_config(role: str, path: Path) -> str:
    """The store URL a role's TOML configuration at `path` names (relative SQLite paths made
    absolute against the file's folder, as the role itself reads them). ValueError, naming the
    file and the key, when the file cannot be read or names no store."""
    if role == "meter":
        from smartmeter.config import ConfigError as MeterConfigError
        from smartmeter.config import load_config as load_meter

        try:
            return load_meter(path).store
        except MeterConfigError as exc:
            raise ValueError(f"{path}: {exc}") from None
    if role == "monitor":
        from monitoring.config import ConfigError as MonitorConfigError
        from monitoring.config import load_config as load_monitor

        try:
            return load_monitor(path).service.store
        except MonitorConfigError as exc:
            raise ValueError(f"{path}: {exc}") from None
    document = _document(path)
    # A replica's store is a ledger's: `petra ledger migrate` takes either file.
    tables = ("ledger", "replica") if role == "ledger" else (role,)
    for table in tables:
        values = document.get(table)
        if isinstance(values, dict) and "store" in values:
            store = values["store"]
            if not isinstance(store, str) or not store:
                raise ValueError(f"{path}: [{table}] store must be a database's SQLAlchemy URL")
            return _store_url(store, path.parent.absolute())
    raise ValueError(f"{path} names no store: give store in its [{tables[0]}] table")


def _defaults(ctx: typer.Context, path: Path, table: str) -> dict[str, Any]:
    """The defaults `[table]` of the file at `path` gives the command `ctx` parses, by option
    name, each checked by the option's own type; one sentence and exit 2 on any problem."""
    try:
        document = _document(path)
    except ValueError as exc:
        fail(str(exc))
    for name, value in document.items():
        if not isinstance(value, dict):
            fail(f"{path}: {name} is outside any table: put it under [{table}]")
        if name not in TABLES:
            tables = [f"[{known}]" for known in TABLES]
            nearest = _nearest(f"[{name}]", tables)
            fail(f"{path}: unknown table [{name}]{nearest}: the tables are {', '.join(tables)}")
    if table not in document:
        fail(f"{path} has no [{table}] table: the options of {TABLES[table]} go there")
    options = {
        _key(flag): param
        for param in ctx.command.params
        if isinstance(param, TyperOption) and param.name != "config"
        for flag in param.opts
    }
    base = path.parent.absolute()
    defaults: dict[str, Any] = {}
    for key, value in document[table].items():
        where = f"{path}: [{table}] {key}"
        if any(word in key for word in SECRET_WORDS) and not key.endswith("_file"):
            fail(f"{where}: a secret is never read from a configuration file; {SECRET_SOURCES}")
        param = options.get(key)
        if param is None or param.name is None:
            fail(f"{where}: unknown key{_nearest(key, options)}; the keys are {', '.join(options)}")
        if param.multiple:  # an option given once per item: a list, or one value
            items = value if isinstance(value, list) else [value]
            defaults[param.name] = [_default(ctx, param, key, v, base, where) for v in items]
        else:
            defaults[param.name] = _default(ctx, param, key, value, base, where)
    return defaults


def _default(
    ctx: typer.Context, param: TyperOption, key: str, value: object, base: Path, where: str
) -> str:
    """One value of the file as the option's default, spelled as on the command line (a
    relative path, and a SQLite store's, taken from the file's folder `base`)."""
    text = _text(value)
    if text is None:
        fail(f"{where} must be one value, not a table or a list")
    items = get_args(param.type_descriptor.annotation) if param.multiple else ()
    if param.type_descriptor.is_path or items[:1] == (Path,):
        text = str(base / text)  # an absolute path stays as it is
    elif key == "store":
        text = _store_url(text, base)
    _converted(ctx, param, text, where)
    return text


def _document(path: Path) -> dict[str, Any]:
    """The TOML file at `path`; ValueError with one sentence naming it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None


def _converted(ctx: typer.Context, param: TyperOption, text: str, where: str) -> Any:
    """`text` as option `param` converts it from the command line; one sentence and exit 2,
    naming `where`, if it cannot."""
    try:
        return param.process_value(ctx, [text] if param.multiple else text)
    except typer.BadParameter as exc:
        fail(f"{where}: {_reason(text, exc.message)}")


def _reason(text: str, message: str) -> str:
    """The conversion's message about `text`, as the rest of a sentence naming the key."""
    message = message.rstrip(".")
    if message.startswith("Input should be a valid "):  # pydantic's words, as typer gives them
        return f"{text!r} is not {message.removeprefix('Input should be ').split(',')[0]}"
    if message.startswith("Input should be "):
        return f"{text!r} should be {message.removeprefix('Input should be ')}"
    return message if repr(text) in message else f"{text!r}: {message}"


def _text(value: object) -> str | None:
    """A TOML value as the command line would spell it (`true`, `7420`, `0.5`); None for a
    table or a list, which no option takes."""
    if isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _store_url(url: str, base: Path) -> str:
    """`url`, a SQLite database's relative path taken from `base`, the file's folder."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return url  # not a URL: the store names it as such when it opens it
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return url
    if Path(name).is_absolute() or name.startswith("file:") or "mode=memory" in url:
        return url
    return parsed.set(database=str(base / name)).render_as_string(hide_password=False)


def _key(flag: str) -> str:
    """A long option's key in a file: `--log-level` is `log_level`."""
    return flag.lstrip("-").replace("-", "_")


def _nearest(key: str, known: Collection[str]) -> str:
    """` (did you mean <known key>?)` for the known key most like `key`, if any is."""
    match = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""
