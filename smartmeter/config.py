"""The smart-meter daemon's configuration: one TOML file (`petra meter run --config meter.toml`).

```toml
[meter]
id = "ES0021000000000001AB"       # the meter id the DSO authorizes (a CUPS or POD fits)
keys = "meter-keys.json"          # sealed key file; its key named "meter" is the meter's identity
genesis = "genesis.json"
owner = "4c1f…"                   # the owner's wallet public key, 64 hex digits
ledger = "http://127.0.0.1:7420"
dso = "http://127.0.0.1:7430"
store = "sqlite:///meter.sqlite"  # readings, issues, deposit addresses, bills, the report queue
closing_delay_s = 60              # how long after an interval ends its bill is closed
credit_line = 50000000            # FA the owner may withdraw beyond what it paid, micro-units
api_port = 7440                   # the owner's local API, on loopback only
log_level = "info"                # optional: debug | info | warning | error ($PETRA_LOG_LEVEL wins)
log_format = "text"               # optional: text | json ($PETRA_LOG_FORMAT wins)
metrics_host = "127.0.0.1"        # optional: where the Prometheus metrics are served
metrics_port = 9440               # optional: 0 serves none

[publish]                         # optional: readings for the monitoring layer, emoncms-style
host = "127.0.0.1"
port = 1883
node = "meter1"                   # emon/meter1 gets {"<source>_import_kwh": ..., "time": ...}
base_topic = "emon"

[[source]]                        # one or more; their energies add up
name = "grid"                     # optional, default "<kind>-<n>": the name its data is kept under
kind = "sdm630"                   # sdm630 | sunspec | mqtt
host = "192.168.1.40"
port = 502
device_id = 1
poll_s = 5

[[source]]
kind = "mqtt"
host = "127.0.0.1"
port = 1883
format = "emoncms"                # emoncms (node, inputs) | shelly (topic) | json (topic, paths)
node = "house"                    # emoncms: emon/house/<input> and emon/house
inputs = { import_kwh = { quantity = "import_wh", factor = 1000 } }

[[source]]
kind = "mqtt"
format = "json"                   # any JSON payload, read at JSON paths
topic = "home/meter/state"
paths = { "$.total.in_kwh" = { quantity = "import_wh", factor = 1000 }, "$.power" = "power_w" }
time_path = "$.ts"                # optional: unix seconds in the payload
```

A source's `max_gap_s` (default: 60 s or three polls, whichever is longer) is the longest span
between two readings whose energy is still apportioned to intervals; a longer gap is recorded
as missing energy, never spread over the intervals it spans. Its `max_power_w` (default: no
check), if given, refuses a counter step faster than that power as implausible (a replaced
meter, a garbled register) and marks its interval suspect instead of counting it.

Every path is relative to the configuration file's folder, whatever folder the meter starts
in: the key file, the genesis, and the `store` when it is a SQLite URL with a relative path
(`sqlite:///meter.sqlite` in /etc/petra/meter.toml is /etc/petra/meter.sqlite). Every problem
is a `ConfigError` naming the key and what it should be; a key the meter does not read, at the
top, in any `[[source]]` (each kind reads its own keys) or in a table inside one, is refused
with the nearest known key suggested.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from assets.codec import MAX_INT, METER_ID

SOURCE_KINDS = ("sdm630", "sunspec", "mqtt")
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")  # a source's or publishing node's name
MQTT_FORMATS = ("emoncms", "shelly", "json")


METER_KEYS = (
    "id",
    "keys",
    "genesis",
    "owner",
    "ledger",
    "dso",
    "store",
    "closing_delay_s",
    "credit_line",
    "api_port",
    "log_level",
    "log_format",
    "metrics_host",
    "metrics_port",
)
PUBLISH_KEYS = ("host", "port", "node", "base_topic")
# The keys each kind of source reads; an MQTT source's also depend on its format.
MODBUS_SOURCE_KEYS = (
    "kind",
    "name",
    "host",
    "port",
    "device_id",
    "poll_s",
    "max_gap_s",
    "max_power_w",
)
MQTT_SOURCE_KEYS = ("kind", "name", "host", "port", "poll_s", "max_gap_s", "max_power_w", "format")
MQTT_FORMAT_KEYS = {
    "emoncms": ("node", "base_topic", "inputs"),
    "shelly": ("topic",),
    "json": ("topic", "paths", "time_path"),
}
QUANTITY_KEYS = ("quantity", "factor")  # an emoncms input's or a JSON path's table


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """Where one source of readings is, and how often to read it (Modbus) or what to follow
    (MQTT). `options` keeps the kind's own settings (topic, format, key mapping, ...)."""

    kind: str
    host: str
    port: int
    poll_s: float
    device_id: int
    options: dict[str, Any]
    name: str = "source"
    max_gap_s: int = 60
    max_power_w: int | None = None


@dataclass(frozen=True, slots=True)
class PublishConfig:
    """The broker the daemon publishes its readings to, as `<base_topic>/<node>` JSON."""

    host: str
    port: int
    node: str
    base_topic: str


@dataclass(frozen=True, slots=True)
class MeterConfig:
    meter: str
    keys: Path
    genesis: Path
    owner: bytes
    ledger: str
    dso: str
    store: str
    closing_delay_s: int
    credit_line: int
    api_port: int
    sources: tuple[SourceConfig, ...]
    publish: PublishConfig | None = None
    # The daemon's logging and metrics; None: not in the file, the command's flag or default.
    # `petra meter run` checks the words as its flags' own.
    log_level: str | None = None
    log_format: str | None = None
    metrics_host: str | None = None
    metrics_port: int | None = None


def load_config(path: Path) -> MeterConfig:
    """The configuration in the TOML file at `path`."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse_config(document, path.parent.absolute())


def parse_config(document: dict[str, Any], base: Path) -> MeterConfig:
    """The configuration in a parsed TOML document; relative paths are taken from `base`."""
    meter = _table(document, "meter")
    unknown = sorted(set(document) - {"meter", "source", "publish"})
    if unknown:
        raise ConfigError(
            f"unknown section {unknown[0]!r}{_nearest(unknown[0], ('meter', 'source', 'publish'))}"
            ": the sections are [meter], [publish] and [[source]]"
        )
    _known_keys(meter, "meter", METER_KEYS)
    meter_id = _str(meter, "meter.id", "id")
    if METER_ID.fullmatch(meter_id) is None:
        raise ConfigError("meter.id must be 1-64 of A-Z a-z 0-9 . _ -")
    owner_hex = _str(meter, "meter.owner", "owner")
    try:
        owner = bytes.fromhex(owner_hex)
    except ValueError:
        owner = b""
    if len(owner) != 32 or owner.hex() != owner_hex:
        raise ConfigError("meter.owner must be the owner's public key: 64 lowercase hex digits")
    sources = document.get("source", [])
    if not isinstance(sources, list) or not sources:
        raise ConfigError("give at least one [[source]]: where the meter reads its energy")
    parsed = tuple(_source(s, n) for n, s in enumerate(sources))
    names = [source.name for source in parsed]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"two sources are named {name!r}: give each its own name")
    return MeterConfig(
        meter=meter_id,
        keys=base / _str(meter, "meter.keys", "keys"),
        genesis=base / _str(meter, "meter.genesis", "genesis"),
        owner=owner,
        ledger=_str(meter, "meter.ledger", "ledger", "http://127.0.0.1:7420"),
        dso=_str(meter, "meter.dso", "dso", "http://127.0.0.1:7430"),
        store=_store(_str(meter, "meter.store", "store", "sqlite:///meter.sqlite"), base),
        closing_delay_s=_int(meter, "meter.closing_delay_s", "closing_delay_s", 0, 86_400, 60),
        credit_line=_int(meter, "meter.credit_line", "credit_line", 0, MAX_INT, 0),
        api_port=_int(meter, "meter.api_port", "api_port", 1, 65_535, 7440),
        sources=parsed,
        publish=_publish(document["publish"]) if "publish" in document else None,
        log_level=_optional_str(meter, "log_level"),
        log_format=_optional_str(meter, "log_format"),
        metrics_host=_optional_str(meter, "metrics_host"),
        metrics_port=(
            _int(meter, "meter.metrics_port", "metrics_port", 0, 65_535, 0)
            if "metrics_port" in meter
            else None
        ),
    )


def _optional_str(meter: dict[str, Any], key: str) -> str | None:
    return _str(meter, f"meter.{key}", key) if key in meter else None


def _publish(value: Any) -> PublishConfig:
    if not isinstance(value, dict):
        raise ConfigError("[publish] must be a table")
    _known_keys(value, "publish", PUBLISH_KEYS)
    node = _str(value, "publish.node", "node")
    if NAME.fullmatch(node) is None:
        raise ConfigError(
            "publish.node must be 1-32 of a-z 0-9 _ -, starting with a letter or digit"
        )
    base_topic = _str(value, "publish.base_topic", "base_topic", "emon")
    if any(c in base_topic for c in "+#\0") or base_topic.startswith("/"):
        raise ConfigError("publish.base_topic must be a plain topic, without wildcards")
    return PublishConfig(
        host=_str(value, "publish.host", "host", "127.0.0.1"),
        port=_int(value, "publish.port", "port", 1, 65_535, 1883),
        node=node,
        base_topic=base_topic,
    )


def _source(value: Any, n: int) -> SourceConfig:
    where = f"source[{n}]"
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table")
    kind = _str(value, f"{where}.kind", "kind")
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"{where}.kind must be one of {', '.join(SOURCE_KINDS)}, not {kind!r}")
    default_port = 1883 if kind == "mqtt" else 502
    common = ("kind", "name", "host", "port", "poll_s", "device_id", "max_gap_s", "max_power_w")
    options = {k: v for k, v in value.items() if k not in common}
    name = _str(value, f"{where}.name", "name", f"{kind}-{n}")
    if NAME.fullmatch(name) is None:
        raise ConfigError(
            f"{where}.name must be 1-32 of a-z 0-9 _ -, starting with a letter or digit"
        )
    if kind == "mqtt":
        if options.get("format") not in MQTT_FORMATS:
            raise ConfigError(f"{where}.format must be one of {', '.join(MQTT_FORMATS)}")
        needed = "node" if options["format"] == "emoncms" else "topic"
        if not isinstance(options.get(needed), str) or not options[needed]:
            what = "the emoncms node" if needed == "node" else "the topic it publishes under"
            raise ConfigError(f"{where}.{needed} must name {what}")
        _known_keys(value, where, MQTT_SOURCE_KEYS + MQTT_FORMAT_KEYS[options["format"]])
        for table in ("inputs", "paths"):
            quantities = value.get(table)
            for key, quantity in quantities.items() if isinstance(quantities, dict) else ():
                if isinstance(quantity, dict):
                    _known_keys(quantity, f"{where}.{table}.{key}", QUANTITY_KEYS)
    else:
        _known_keys(value, where, MODBUS_SOURCE_KEYS)
    poll = value.get("poll_s", 5)
    if isinstance(poll, bool) or not isinstance(poll, int | float) or not 0.1 <= poll <= 3600:
        raise ConfigError(f"{where}.poll_s must be a number of seconds from 0.1 to 3600")
    default_gap = max(60, math.ceil(3 * poll))
    parsed = SourceConfig(
        kind=kind,
        host=_str(value, f"{where}.host", "host", "127.0.0.1"),
        port=_int(value, f"{where}.port", "port", 1, 65_535, default_port),
        poll_s=float(poll),
        device_id=_int(value, f"{where}.device_id", "device_id", 0, 247, 1),
        options=options,
        name=name,
        max_gap_s=_int(value, f"{where}.max_gap_s", "max_gap_s", 1, 86_400, default_gap),
        max_power_w=(
            _int(value, f"{where}.max_power_w", "max_power_w", 1, 10**9, 1)
            if "max_power_w" in value
            else None
        ),
    )
    if kind == "mqtt":
        from smartmeter.sources import check_source  # sources reads configurations: import late

        try:
            check_source(parsed)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return parsed


def _store(url: str, base: Path) -> str:
    """`url`, a SQLite database's relative path taken from `base`, the configuration's folder."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "meter.store must be an SQLAlchemy URL such as sqlite:///meter.sqlite"
        ) from None
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return url
    if Path(name).is_absolute() or name.startswith("file:") or "mode=memory" in url:
        return url
    return parsed.set(database=str(base / name)).render_as_string(hide_password=False)


def _known_keys(table: dict[str, Any], where: str, known: Collection[str]) -> None:
    """ConfigError naming the first key of `table` (at `where`) the meter does not read."""
    unknown = sorted(str(key) for key in table if key not in known)
    if unknown:
        raise ConfigError(
            f"unknown key {where}.{unknown[0]}{_nearest(unknown[0], known, where)}: "
            f"the keys are {', '.join(known)}"
        )


def _nearest(key: str, known: Collection[str], where: str = "") -> str:
    """` (did you mean <where>.<known key>?)` for the known key most like `key`, if any is:
    one it begins or ends, else the closest by spelling."""
    match = [k for k in known if k.startswith(key) or k.endswith(key) or key.startswith(k)]
    match = match[:1] or difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    return f" (did you mean {where + '.' if where else ''}{match[0]}?)" if match else ""


def _table(document: dict[str, Any], name: str) -> dict[str, Any]:
    value = document.get(name)
    if not isinstance(value, dict):
        raise ConfigError(f"the [{name}] section is missing")
    return value


def _str(table: dict[str, Any], where: str, key: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if value is None:
        raise ConfigError(f"{where} is missing")
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string")
    return value


def _int(table: dict[str, Any], where: str, key: str, low: int, high: int, default: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{where} must be a whole number from {low} to {high}")
    return int(value)
