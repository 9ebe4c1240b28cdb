"""The monitoring service's configuration: one TOML file (`petra monitor serve --config
monitor.toml`); `docs/examples/monitor.toml` shows every section, commented.

Sections: `[service]` (store URL, host, port, secure cookies, log level and format, metrics
host and port), `[retention]` (raw_days), `[[community]]` (id, name, time zone, currency,
prices in EUR/kWh, CO2), `[mqtt]` with its `[[mqtt.shelly]]` and `[[mqtt.json]]` devices,
`[[modbus]]` devices, `[datadis]`.

Every path is relative to the configuration file's folder, whatever folder the service starts
in: the password files, and the `store` when it is a SQLite URL with a relative path. Every
problem is a `ConfigError` naming the key by its dotted name (`mqtt.shelly[0].node`) and what
it should be; a key the service does not read is refused, with the nearest known key
suggested. Prices are read as decimal text or numbers and kept as whole micro-units per kWh,
never floats.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Collection
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from monitoring.samples import NAME
from monitoring.store import Retention, zone
from smartmeter import parse_json_path

MICRO = 1_000_000  # micro-units of a currency in one unit
CURRENCY = re.compile(r"[A-Z]{3}")  # ISO 4217
CUPS = re.compile(r"ES\d{16}[A-Z0-9]{2,4}")  # DESIGN.md section 11
MODBUS_KINDS = ("sdm630", "sunspec")
MODBUS_PORT, MODBUS_DEVICE_ID, MODBUS_INTERVAL_S = 502, 1, 10.0
DATADIS_URL, DATADIS_HOUR = "https://datadis.es", 6  # its data of a day is complete by morning
SECTIONS = ("service", "retention", "community", "mqtt", "modbus", "datadis")
SERVICE_KEYS = (
    "store",
    "host",
    "port",
    "secure_cookies",
    "log_level",
    "log_format",
    "metrics_host",
    "metrics_port",
)
RETENTION_KEYS = ("raw_days",)
COMMUNITY_KEYS = (
    "id",
    "name",
    "timezone",
    "currency",
    "price",
    "export_price",
    "co2_g_per_kwh",
)
MQTT_KEYS = (
    "host",
    "port",
    "username",
    "password_file",
    "base_topic",
    "client_id",
    "shelly",
    "json",
)
SHELLY_KEYS = ("topic_prefix", "node")
JSON_KEYS = ("topic", "node", "inputs", "time_path")
MODBUS_KEYS = ("kind", "host", "port", "device_id", "node", "interval_s")
DATADIS_KEYS = ("username", "password_file", "supplies", "hour", "base_url")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Where the store is (a SQLAlchemy URL) and where the web service listens."""

    store: str = "sqlite:///petra-monitor.sqlite"
    host: str = "127.0.0.1"
    port: int = 7470
    secure_cookies: bool = False
    # Logging and metrics; None: not in the file, the command's flag or default.
    # `petra monitor serve` checks the words as its flags' own.
    log_level: str | None = None
    log_format: str | None = None
    metrics_host: str | None = None
    metrics_port: int | None = None


@dataclass(frozen=True, slots=True)
class CommunityConfig:
    """A community: prices in micro-units of `currency` per kWh, CO2 of grid energy in g/kWh."""

    id: str
    name: str
    timezone: str = "UTC"
    currency: str = "EUR"
    price_micro_per_kwh: int = 150_000
    export_micro_per_kwh: int = 50_000
    co2_g_per_kwh: float = 250.0


@dataclass(frozen=True, slots=True)
class ShellyDevice:
    """A Shelly Pro 3EM publishing under `topic_prefix`, stored as node `node`."""

    topic_prefix: str
    node: str


@dataclass(frozen=True, slots=True)
class JsonDevice:
    """Any device's JSON on `topic`: inputs of node `node` as (input name, JSON path) pairs;
    `time_path`, if given, holds unix seconds or an ISO 8601 time with its offset."""

    topic: str
    node: str
    inputs: tuple[tuple[str, str], ...]
    time_path: str | None = None


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """The broker the service subscribes to, and the devices it knows by topic. emoncms
    topics under `base_topic` need no configuration: every node is taken."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    base_topic: str = "emon"
    client_id: str = "petra-monitor"  # the broker keeps this client's session while it is away
    shelly: tuple[ShellyDevice, ...] = ()
    json: tuple[JsonDevice, ...] = ()


@dataclass(frozen=True, slots=True)
class ModbusDevice:
    """A Modbus TCP device polled every `interval_s` seconds into the feeds of `node`."""

    kind: str  # sdm630 | sunspec
    host: str
    node: str
    port: int = MODBUS_PORT
    device_id: int = MODBUS_DEVICE_ID
    interval_s: float = MODBUS_INTERVAL_S


@dataclass(frozen=True, slots=True)
class DatadisConfig:
    """The Datadis account fetched daily at local `hour`; `supplies` empty: all of them."""

    username: str
    password: str = field(repr=False)
    supplies: tuple[str, ...] = ()
    hour: int = DATADIS_HOUR
    base_url: str = DATADIS_URL


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    service: ServiceConfig = field(default_factory=ServiceConfig)
    retention: Retention = field(default_factory=Retention)
    communities: tuple[CommunityConfig, ...] = ()
    mqtt: MqttSettings | None = None
    modbus: tuple[ModbusDevice, ...] = ()
    datadis: DatadisConfig | None = None


def load_config(path: Path) -> MonitorConfig:
    """The configuration in the TOML file at `path`."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse_config(document, path.parent.absolute())


def parse_config(document: dict[str, Any], base: Path) -> MonitorConfig:
    """The configuration in a parsed TOML document; relative paths are taken from `base`."""
    _known_keys(document, "", SECTIONS)
    communities = tuple(
        _community(table, f"community[{n}]")
        for n, table in enumerate(_tables(document, "community"))
    )
    ids = [one.id for one in communities]
    for one in ids:
        if ids.count(one) > 1:
            raise ConfigError(f"two communities have the id {one!r}: give each its own")
    mqtt = _section(document, "mqtt")
    datadis = _section(document, "datadis")
    return MonitorConfig(
        service=_service(_section(document, "service") or {}, base),
        retention=_retention(_section(document, "retention") or {}),
        communities=communities,
        mqtt=None if mqtt is None else _mqtt(mqtt, base),
        modbus=tuple(
            _modbus(table, f"modbus[{n}]") for n, table in enumerate(_tables(document, "modbus"))
        ),
        datadis=None if datadis is None else _datadis(datadis, base),
    )


def _service(table: dict[str, Any], base: Path) -> ServiceConfig:
    _known_keys(table, "service", SERVICE_KEYS)
    default = ServiceConfig()
    return ServiceConfig(
        store=_store(_str(table, "service", "store", default.store), base),
        host=_str(table, "service", "host", default.host),
        port=_int(table, "service", "port", 1, 65_535, default.port),
        secure_cookies=_bool(table, "service", "secure_cookies", default.secure_cookies),
        log_level=_str(table, "service", "log_level") if "log_level" in table else None,
        log_format=_str(table, "service", "log_format") if "log_format" in table else None,
        metrics_host=_str(table, "service", "metrics_host") if "metrics_host" in table else None,
        metrics_port=(
            _int(table, "service", "metrics_port", 0, 65_535, 0)
            if "metrics_port" in table
            else None
        ),
    )


def _retention(table: dict[str, Any]) -> Retention:
    _known_keys(table, "retention", RETENTION_KEYS)
    if "raw_days" not in table:
        return Retention()
    return Retention(raw_days=_int(table, "retention", "raw_days", 1, 100_000, 0))


def _community(table: dict[str, Any], where: str) -> CommunityConfig:
    _known_keys(table, where, COMMUNITY_KEYS)
    default = CommunityConfig(id="", name="")
    timezone = _str(table, where, "timezone", default.timezone)
    try:
        zone(timezone)
    except ValueError as exc:
        raise ConfigError(f"{where}.timezone: {exc}") from None
    currency = _str(table, where, "currency", default.currency)
    if CURRENCY.fullmatch(currency) is None:
        raise ConfigError(f"{where}.currency must be an ISO 4217 code such as EUR")
    co2 = _number(table, where, "co2_g_per_kwh", default.co2_g_per_kwh)
    if not 0 <= co2 <= 2_000:
        raise ConfigError(f"{where}.co2_g_per_kwh must be grams per kWh, from 0 to 2000")
    return CommunityConfig(
        id=_name(table, where, "id"),
        name=_str(table, where, "name"),
        timezone=timezone,
        currency=currency,
        price_micro_per_kwh=_price(table, where, "price", default.price_micro_per_kwh),
        export_micro_per_kwh=_price(table, where, "export_price", default.export_micro_per_kwh),
        co2_g_per_kwh=co2,
    )


def _price(table: dict[str, Any], where: str, key: str, default: int) -> int:
    """A price per kWh given in currency units (text or number) as whole micro-units."""
    if key not in table:
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f'{where}.{key} must be a price per kWh such as "0.15"')
    try:
        # A TOML float goes through its shortest text, so 0.15 is exactly 0.15, not its binary.
        amount = Decimal(value if isinstance(value, str) else repr(value)) * MICRO
    except InvalidOperation:
        raise ConfigError(f'{where}.{key} is {value!r}, not a price such as "0.15"') from None
    if not amount.is_finite() or amount != amount.to_integral_value() or amount < 0:
        raise ConfigError(
            f"{where}.{key} must be a price per kWh of at least 0, with at most 6 decimals"
        )
    return int(amount)


def _mqtt(table: dict[str, Any], base: Path) -> MqttSettings:
    _known_keys(table, "mqtt", MQTT_KEYS)
    default = MqttSettings()
    username = _str(table, "mqtt", "username") if "username" in table else None
    password = None
    if "password_file" in table:
        if username is None:
            raise ConfigError("mqtt.password_file needs mqtt.username: the broker's user")
        password = _secret(table, "mqtt", base)
    base_topic = _topic(table, "mqtt", "base_topic", default.base_topic)
    shelly = tuple(
        _shelly(one, f"mqtt.shelly[{n}]") for n, one in enumerate(_tables(table, "shelly", "mqtt"))
    )
    devices = tuple(
        _json_device(one, f"mqtt.json[{n}]") for n, one in enumerate(_tables(table, "json", "mqtt"))
    )
    topics = [device.topic for device in devices] + [
        f"{device.topic_prefix}/status/{part}" for device in shelly for part in ("em:0", "emdata:0")
    ]
    for topic in topics:
        if topics.count(topic) > 1:
            raise ConfigError(f"two MQTT devices read the topic {topic!r}: give each its own")
    return MqttSettings(
        host=_str(table, "mqtt", "host", default.host),
        port=_int(table, "mqtt", "port", 1, 65_535, default.port),
        username=username,
        password=password,
        base_topic=base_topic,
        client_id=_str(table, "mqtt", "client_id", default.client_id),
        shelly=shelly,
        json=devices,
    )


def _shelly(table: dict[str, Any], where: str) -> ShellyDevice:
    _known_keys(table, where, SHELLY_KEYS)
    return ShellyDevice(_topic(table, where, "topic_prefix"), _name(table, where, "node"))


def _json_device(table: dict[str, Any], where: str) -> JsonDevice:
    _known_keys(table, where, JSON_KEYS)
    inputs = table.get("inputs")
    if not isinstance(inputs, dict) or not inputs:
        raise ConfigError(f'{where}.inputs must be a table of input names and JSON paths ("$.a")')
    pairs: list[tuple[str, str]] = []
    for name in inputs:
        if NAME.fullmatch(name) is None:
            raise ConfigError(
                f"{where}.inputs.{name}: an input name is 1-64 of A-Z a-z 0-9 _ - . :"
            )
        pairs.append((name, _json_path(inputs, f"{where}.inputs", name)))
    return JsonDevice(
        topic=_topic(table, where, "topic"),
        node=_name(table, where, "node"),
        inputs=tuple(pairs),
        time_path=_json_path(table, where, "time_path") if "time_path" in table else None,
    )


def _json_path(table: dict[str, Any], where: str, key: str) -> str:
    path = _str(table, where, key)
    try:
        parse_json_path(path)
    except ValueError as exc:
        raise ConfigError(f"{where}.{key}: {exc}") from None
    return path


def _modbus(table: dict[str, Any], where: str) -> ModbusDevice:
    _known_keys(table, where, MODBUS_KEYS)
    kind = _str(table, where, "kind")
    if kind not in MODBUS_KINDS:
        raise ConfigError(f"{where}.kind must be one of {', '.join(MODBUS_KINDS)}, not {kind!r}")
    interval = _number(table, where, "interval_s", MODBUS_INTERVAL_S)
    if not 0.1 <= interval <= 3_600:
        raise ConfigError(f"{where}.interval_s must be a number of seconds from 0.1 to 3600")
    return ModbusDevice(
        kind=kind,
        host=_str(table, where, "host"),
        node=_name(table, where, "node"),
        port=_int(table, where, "port", 1, 65_535, MODBUS_PORT),
        device_id=_int(table, where, "device_id", 0, 247, MODBUS_DEVICE_ID),
        interval_s=interval,
    )


def _datadis(table: dict[str, Any], base: Path) -> DatadisConfig:
    _known_keys(table, "datadis", DATADIS_KEYS)
    supplies = table.get("supplies", [])
    if not isinstance(supplies, list) or not all(isinstance(one, str) for one in supplies):
        raise ConfigError("datadis.supplies must be a list of CUPS (empty: all the account's)")
    for cups in supplies:
        if CUPS.fullmatch(cups) is None:
            raise ConfigError(f"datadis.supplies: {cups!r} is not a CUPS (ES, 16 digits, 2-4)")
    base_url = _str(table, "datadis", "base_url", DATADIS_URL)
    if not base_url.startswith(("https://", "http://")):
        raise ConfigError("datadis.base_url must be an http(s) URL such as https://datadis.es")
    if "password_file" not in table:
        raise ConfigError("datadis.password_file is missing: the file holding the password")
    return DatadisConfig(
        username=_str(table, "datadis", "username"),
        password=_secret(table, "datadis", base),
        supplies=tuple(supplies),
        hour=_int(table, "datadis", "hour", 0, 23, DATADIS_HOUR),
        base_url=base_url.rstrip("/"),
    )


def _secret(table: dict[str, Any], where: str, base: Path) -> str:
    """The password in the file `table["password_file"]` names (relative to `base`), its first
    line: the file keeps it out of the configuration, which is shared more widely."""
    path = base / _str(table, where, "password_file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problem = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise ConfigError(f"{where}.password_file: cannot read {path}: {problem}") from None
    if not lines or not lines[0]:
        raise ConfigError(f"{where}.password_file: {path} is empty; put the password on line 1")
    return lines[0]


def _store(url: str, base: Path) -> str:
    """`url`, a SQLite database's relative path taken from `base`, the configuration's folder."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "service.store must be an SQLAlchemy URL such as sqlite:///petra-monitor.sqlite"
        ) from None
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return url
    if Path(name).is_absolute() or name.startswith("file:") or "mode=memory" in url:
        return url
    return parsed.set(database=str(base / name)).render_as_string(hide_password=False)


def _section(document: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = document.get(name)
    if value is not None and not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return value


def _tables(document: dict[str, Any], key: str, where: str = "") -> list[dict[str, Any]]:
    """The array of tables `[[key]]` (none: empty), each checked to be a table."""
    dotted = f"{where}.{key}" if where else key
    value = document.get(key, [])
    if not isinstance(value, list) or not all(isinstance(one, dict) for one in value):
        raise ConfigError(f"{dotted} must be an array of tables: write each as [[{dotted}]]")
    return value


def _known_keys(table: dict[str, Any], where: str, known: Collection[str]) -> None:
    """ConfigError naming the first key of `table` (at `where`) the service does not read."""
    unknown = sorted(str(key) for key in table if key not in known)
    if unknown:
        prefix = f"{where}." if where else ""
        match = difflib.get_close_matches(unknown[0], list(known), n=1, cutoff=0.6)
        hint = f" (did you mean {prefix}{match[0]}?)" if match else ""
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]}{hint}: the keys are {', '.join(known)}"
        )


def _str(table: dict[str, Any], where: str, key: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if value is None:
        raise ConfigError(f"{where}.{key} is missing")
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}.{key} must be a non-empty string")
    return value


def _name(table: dict[str, Any], where: str, key: str) -> str:
    value = _str(table, where, key)
    if NAME.fullmatch(value) is None:
        raise ConfigError(f"{where}.{key} must be 1-64 of A-Z a-z 0-9 _ - . :, not {value!r}")
    return value


def _topic(table: dict[str, Any], where: str, key: str, default: str | None = None) -> str:
    value = _str(table, where, key, default)
    if any(not level or char in level for level in value.split("/") for char in "+#\0"):
        raise ConfigError(
            f"{where}.{key} must be a plain MQTT topic: no wildcard, no empty level, not {value!r}"
        )
    return value


def _int(table: dict[str, Any], where: str, key: str, low: int, high: int, default: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{where}.{key} must be a whole number from {low} to {high}")
    return int(value)


def _number(table: dict[str, Any], where: str, key: str, default: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}.{key} must be a number")
    return float(value)


def _bool(table: dict[str, Any], where: str, key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be true or false")
    return value
