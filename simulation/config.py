"""A simulated community's configuration: `petra sim run [--config sim.toml]`.

Every key is optional; `DEFAULT_TOML` is the whole default written out (`petra sim run
--print-config`). Command-line overrides are dotted keys (`location.latitude`) laid over the
file before it is checked, so a value from either place is checked the same way. Every problem
is a `ConfigError` of one sentence naming the key and where it came from.

The weather is "clear" (pvlib's clear sky) or "cloudy" (the clear sky under seeded clouds,
`simulation.profiles`). There is no typical meteorological year: pvlib bundles only three of
US stations (for its own tests), none of a community's place.

Units as DESIGN.md section 3: seconds, micro-units per kWh; energies of homes in kWh a year,
PV in kWp, batteries in kWh and kW; the start is local time at the location.
"""

from __future__ import annotations

import difflib
import errno
import re
import socket
import tomllib
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from types import MappingProxyType
from typing import Any

STRATEGIES = ("forecast", "zero_intelligence", "passive")
WEATHERS = ("clear", "cloudy")
MAX_HOMES = 100_000
HOME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
POSTGRESQL_URL = re.compile(r"postgresql(\+[a-z0-9]+)?://\S+")
LOOPBACK = "127.0.0.1"

DEFAULT_TIMEZONE = "Europe/Madrid"
DEFAULT_START = datetime(2026, 6, 21, 10, 0, tzinfo=zoneinfo.ZoneInfo(DEFAULT_TIMEZONE))
DEFAULT_STRATEGIES = {"forecast": 0.4, "zero_intelligence": 0.3, "passive": 0.3}


class ConfigError(ValueError):
    """The simulation's configuration cannot be used; the message names the key, in one
    sentence."""


@dataclass(frozen=True, slots=True)
class Location:
    """Where the community is: degrees north and east, metres above sea level, and the IANA
    time zone its clocks (and the start) are read in."""

    name: str = "Crevillent, Spain"
    latitude: float = 38.249
    longitude: float = -0.809
    altitude: float = 130.0
    timezone: str = DEFAULT_TIMEZONE


@dataclass(frozen=True, slots=True)
class HomeDefaults:
    """How generated homes are drawn: means, relative standard deviations (`*_spread`), the
    fractions of homes with PV and with a battery, and the relative standard deviation of a
    home's load from one interval to the next (`noise`). Only homes with PV get a battery."""

    annual_kwh: float = 3500.0
    annual_kwh_spread: float = 0.25
    pv_share: float = 0.6
    pv_kwp: float = 3.5
    pv_kwp_spread: float = 0.2
    battery_share: float = 0.2
    battery_kwh: float = 5.0
    battery_kw: float = 2.5
    noise: float = 0.15


@dataclass(frozen=True, slots=True)
class HomeSpec:
    """One home given explicitly (a [[home]] table): kWh a year, kWp (0: no PV), kWh and kW of
    its battery (0 kWh: no battery), and its trading strategy."""

    name: str
    annual_kwh: float
    pv_kwp: float = 0.0
    battery_kwh: float = 0.0
    battery_kw: float = 0.0
    strategy: str = "passive"


def _default_strategies() -> Mapping[str, float]:
    return MappingProxyType(dict(DEFAULT_STRATEGIES))


@dataclass(frozen=True, slots=True)
class SimConfig:
    """A whole run. `start` is an aware date-time in the location's time zone; the run covers
    `intervals` intervals of `interval_s` seconds from it. `speed` is ledger seconds per wall
    second. Prices are micro-units per kWh. `base_port` 0 takes free ports. `home_specs`, when
    not empty, is the community (the [[home]] tables) and `homes` is its length."""

    name: str = "Crevillent solar community"
    seed: int = 1
    homes: int = 10
    start: datetime = DEFAULT_START
    intervals: int = 24
    interval_s: int = 900
    speed: float = 120.0
    price_consumption: int = 250_000
    price_production: int = 60_000
    store: str = "sqlite"
    tor: bool = False
    mixing: bool = True
    mix_pool: int = 5
    monitor: bool = False
    report_dir: Path = Path("petra-report")
    base_port: int = 0
    location: Location = field(default_factory=Location)
    weather: str = "cloudy"
    home_defaults: HomeDefaults = field(default_factory=HomeDefaults)
    strategies: Mapping[str, float] = field(default_factory=_default_strategies)
    home_specs: tuple[HomeSpec, ...] = ()

    @property
    def start_unix(self) -> int:
        """The run's start as unix seconds (UTC)."""
        return int(self.start.timestamp())

    @property
    def duration_s(self) -> int:
        """How long the run is in ledger time, seconds."""
        return self.intervals * self.interval_s

    @property
    def end_unix(self) -> int:
        """Unix seconds at which the run's last interval ends."""
        return self.start_unix + self.duration_s

    @property
    def wall_s(self) -> float:
        """How long the run takes in wall seconds at `speed`."""
        return self.duration_s / self.speed

    def first_interval(self, epoch: int) -> int:
        """The index of the run's first interval under a genesis with this `epoch` (unix
        seconds) and the run's `interval_s`. The start must fall on one of its boundaries."""
        offset = self.start_unix - epoch
        if offset < 0 or offset % self.interval_s:
            raise ValueError(
                f"the run's start {self.start.isoformat()} is not an interval boundary at or "
                f"after the genesis epoch {epoch} with intervals of {self.interval_s} s"
            )
        return offset // self.interval_s

    def last_interval(self, epoch: int) -> int:
        """The index of the run's last interval (inclusive) under a genesis with this epoch."""
        return self.first_interval(epoch) + self.intervals - 1


DEFAULT = SimConfig()
MAX_PRICE = 10**9  # micro-units per kWh: the bid store's highest price

TOP_KEYS = (
    "name",
    "seed",
    "homes",
    "start",
    "intervals",
    "interval_s",
    "speed",
    "price_consumption",
    "price_production",
    "store",
    "tor",
    "mixing",
    "mix_pool",
    "monitor",
    "report_dir",
    "base_port",
    "weather",
    "location",
    "home_defaults",
    "strategies",
    "home",
)
LOCATION_KEYS = ("name", "latitude", "longitude", "altitude", "timezone")
HOME_DEFAULT_KEYS = (
    "annual_kwh",
    "annual_kwh_spread",
    "pv_share",
    "pv_kwp",
    "pv_kwp_spread",
    "battery_share",
    "battery_kwh",
    "battery_kw",
    "noise",
)
HOME_KEYS = ("name", "annual_kwh", "pv_kwp", "battery_kwh", "battery_kw", "strategy")
TABLES = ("location", "home_defaults", "strategies")
TEXT_KEYS = {"name", "start", "store", "report_dir", "weather", "location.name"}
TEXT_KEYS |= {"location.timezone"}

DEFAULT_TOML = """\
# A simulated energy community: `petra sim run --config sim.toml`.
# Every key is optional; a missing one takes the value shown here.

name = "Crevillent solar community"
seed = 1                      # the same seed draws the same homes, loads and clouds
homes = 10                    # how many homes are drawn when no [[home]] table is given
start = "2026-06-21T10:00"    # local time at the location
intervals = 24                # how many intervals the run covers: 10:00 to 16:00
interval_s = 900              # seconds per interval (the genesis's interval_s)
speed = 120.0                 # ledger seconds per wall second (7.5 s an interval); 1: real time
price_consumption = 250000    # micro-units per kWh taken from the grid
price_production = 60000      # micro-units per kWh fed into the grid
store = "sqlite"              # or a PostgreSQL URL, "postgresql://user@host/petra"
tor = false                   # reach the bid store over a private Tor network
mixing = true                 # mix coins (CoinShuffle) before trading them
mix_pool = 5                  # peers a mixing pool waits for
monitor = false               # also run the monitoring service, fed by the meters over MQTT
report_dir = "petra-report"   # where the run's report is written
base_port = 0                 # the services' first port; 0 takes free ports
weather = "cloudy"            # "clear" (clear sky) or "cloudy" (clear sky under seeded clouds)

[location]
name = "Crevillent, Spain"
latitude = 38.249             # degrees north
longitude = -0.809            # degrees east
altitude = 130                # metres above sea level
timezone = "Europe/Madrid"    # IANA time zone of the start and of the household clocks

[home_defaults]               # how the homes are drawn when no [[home]] table is given
annual_kwh = 3500             # mean consumption, kWh a year
annual_kwh_spread = 0.25      # its relative standard deviation between homes
pv_share = 0.6                # fraction of homes with PV
pv_kwp = 3.5                  # mean PV size, kWp
pv_kwp_spread = 0.2           # its relative standard deviation between homes
battery_share = 0.2           # fraction of homes with a battery (only homes with PV get one)
battery_kwh = 5.0             # battery capacity, kWh
battery_kw = 2.5              # battery power, kW
noise = 0.15                  # relative standard deviation of a home's load per interval

[strategies]                  # trading strategies, drawn in proportion to these weights
forecast = 0.4
zero_intelligence = 0.3
passive = 0.3

# Or list the homes yourself, one table each (then `homes` and [home_defaults] are not used):
# [[home]]
# name = "alice"
# annual_kwh = 4200           # kWh a year
# pv_kwp = 5.0                # 0: no PV
# battery_kwh = 10.0          # 0: no battery
# battery_kw = 5.0
# strategy = "forecast"       # forecast | zero_intelligence | passive
"""


def load_config(
    path: Path | None, overrides: Mapping[str, Any] = MappingProxyType({})
) -> SimConfig:
    """The configuration in the TOML file at `path` (the embedded defaults when None), with
    `overrides` (dotted keys to values, from the command line) laid over it."""
    if path is None:
        document: dict[str, Any] = {}
        origin = "the default configuration"
    else:
        origin = str(path)
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not UTF-8 text: save it as UTF-8") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    overridden = _apply_overrides(document, overrides)
    return _Reader(origin, overridden).config(document)


def config_from_wire(wire: Mapping[str, Any]) -> SimConfig:
    """A configuration back from `config_to_wire` (a run record's `config`)."""
    return _Reader("the run record's configuration", set()).config(dict(wire))


def config_to_wire(config: SimConfig) -> dict[str, Any]:
    """The configuration as resolved, in plain JSON types and the TOML file's keys."""
    location, defaults = config.location, config.home_defaults
    return {
        "name": config.name,
        "seed": config.seed,
        "homes": config.homes,
        "start": config.start.isoformat(),
        "intervals": config.intervals,
        "interval_s": config.interval_s,
        "speed": config.speed,
        "price_consumption": config.price_consumption,
        "price_production": config.price_production,
        "store": config.store,
        "tor": config.tor,
        "mixing": config.mixing,
        "mix_pool": config.mix_pool,
        "monitor": config.monitor,
        "report_dir": str(config.report_dir),
        "base_port": config.base_port,
        "weather": config.weather,
        "location": {key: getattr(location, key) for key in LOCATION_KEYS},
        "home_defaults": {key: getattr(defaults, key) for key in HOME_DEFAULT_KEYS},
        "strategies": dict(config.strategies),
        "home": [{key: getattr(spec, key) for key in HOME_KEYS} for spec in config.home_specs],
    }


def check_ports_free(ports: Iterable[int]) -> None:
    """Raise `ConfigError` for the first of `ports` that cannot be bound on loopback (0 is
    skipped: it means a free port)."""
    for port in ports:
        if port == 0:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As the servers do: a port left in TIME_WAIT is free to them, a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((LOOPBACK, port))
            except OSError as exc:
                if exc.errno == errno.EACCES:
                    raise ConfigError(
                        f"port {port} on {LOOPBACK} may not be used by this user: choose a "
                        "base_port from 1024 up"
                    ) from None
                raise ConfigError(
                    f"port {port} on {LOOPBACK} is in use: stop what holds it or choose "
                    "another base_port"
                ) from None


def _apply_overrides(document: dict[str, Any], overrides: Mapping[str, Any]) -> set[str]:
    """Lay the dotted `overrides` over `document`; the dotted keys they set."""
    for key, value in overrides.items():
        parts = key.split(".")
        if parts[0] == "home":
            raise ConfigError(
                "the [[home]] tables cannot be overridden on the command line: edit them in "
                "the configuration file"
            )
        if len(parts) > 2 or not all(parts):
            raise ConfigError(
                f"the override {key!r} is not a key of the configuration: give a key such as "
                "homes or location.latitude (on the command line)"
            )
        if isinstance(value, str) and key not in TEXT_KEYS:
            value = _toml_value(value)
        if len(parts) == 1:
            document[key] = value
            continue
        section, name = parts
        if section not in document and section == "strategies":
            document[section] = dict(DEFAULT_STRATEGIES)  # an override changes one weight
        table = document.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(
                f"{section} is not a table, so {key} cannot be set (in the configuration file)"
            )
        table[name] = value
    return set(overrides)


def _toml_value(text: str) -> Any:
    """A command-line value read as TOML (`3`, `41.0`, `false`), or the text itself."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


class _Reader:
    """Checks a document key by key; each error names the key and where its value came from."""

    def __init__(self, origin: str, overridden: set[str]) -> None:
        self.origin = origin
        self.overridden = overridden

    def where(self, key: str) -> str:
        """Where the value of `key` (or of a key below it) came from."""
        overridden = any(o == key or o.startswith(f"{key}.") for o in self.overridden)
        return "on the command line" if overridden else f"in {self.origin}"

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{key} {problem} ({self.where(key)})")

    def config(self, document: dict[str, Any]) -> SimConfig:
        self.known(document, TOP_KEYS, "")
        location = self.location(self.table(document, "location"))
        home_defaults = self.home_defaults(self.table(document, "home_defaults"))
        strategies = self.strategies(document.get("strategies", DEFAULT_STRATEGIES))
        home_specs = self.home_specs(document.get("home", []), home_defaults)
        homes = self.integer(document, "homes", "homes", 1, MAX_HOMES, DEFAULT.homes)
        if home_specs and "homes" in document and homes != len(home_specs):
            raise self.error(
                "homes",
                f"is {homes} but {len(home_specs)} [[home]] tables are given: drop homes or "
                f"make it {len(home_specs)}",
            )
        mixing = self.flag(document, "mixing", DEFAULT.mixing)
        mix_pool = self.integer(document, "mix_pool", "mix_pool", 0, MAX_HOMES, DEFAULT.mix_pool)
        if mixing and mix_pool < 2:
            raise self.error(
                "mix_pool", f"must be at least 2 peers when mixing is on, not {mix_pool}"
            )
        weather = self.text(document, "weather", "weather", DEFAULT.weather)
        if weather not in WEATHERS:
            raise self.error(
                "weather",
                f'must be "clear" or "cloudy", not {weather!r}',
            )
        store = self.text(document, "store", "store", DEFAULT.store)
        if store != "sqlite" and POSTGRESQL_URL.fullmatch(store) is None:
            raise self.error(
                "store", 'must be "sqlite" or a URL such as "postgresql://user@host/petra"'
            )
        config = SimConfig(
            name=self.text(document, "name", "name", DEFAULT.name),
            seed=self.integer(document, "seed", "seed", 0, 2**63 - 1, DEFAULT.seed),
            homes=len(home_specs) or homes,
            start=self.start(
                document.get("start", DEFAULT.start.replace(tzinfo=None)), location.timezone
            ),
            intervals=self.integer(document, "intervals", "intervals", 1, 10**8, DEFAULT.intervals),
            interval_s=self.integer(
                document, "interval_s", "interval_s", 1, 86_400, DEFAULT.interval_s
            ),
            speed=self.number(document, "speed", "speed", DEFAULT.speed, 0.0, None, low_open=True),
            price_consumption=self.integer(
                document,
                "price_consumption",
                "price_consumption",
                1,
                MAX_PRICE,
                DEFAULT.price_consumption,
            ),
            price_production=self.integer(
                document,
                "price_production",
                "price_production",
                1,
                MAX_PRICE,
                DEFAULT.price_production,
            ),
            store=store,
            tor=self.flag(document, "tor", DEFAULT.tor),
            mixing=mixing,
            mix_pool=mix_pool,
            monitor=self.flag(document, "monitor", DEFAULT.monitor),
            report_dir=Path(
                self.text(document, "report_dir", "report_dir", str(DEFAULT.report_dir))
            ),
            base_port=self.base_port(document.get("base_port", DEFAULT.base_port)),
            location=location,
            weather=weather,
            home_defaults=home_defaults,
            strategies=strategies,
            home_specs=home_specs,
        )
        if config.start_unix % config.interval_s:
            raise self.error(
                "start",
                f"must fall on an interval boundary (a whole number of interval_s = "
                f"{config.interval_s} s since 1970-01-01 UTC), not {config.start.isoformat()}",
            )
        if config.price_production >= config.price_consumption:
            raise self.error(
                "price_production",
                f"must be below price_consumption ({config.price_consumption:,}), not "
                f"{config.price_production:,}: the grid pays less for energy than it charges",
            )
        return config

    # -- tables --

    def known(self, table: dict[str, Any], keys: tuple[str, ...], prefix: str) -> None:
        for key in table:
            if key in keys:
                continue
            close = difflib.get_close_matches(key, keys, n=1)
            hint = (
                f"did you mean {prefix}{close[0]}?" if close else f"the keys are {', '.join(keys)}"
            )
            raise ConfigError(f"unknown key {prefix}{key} ({self.where(prefix + key)}): {hint}")

    def table(self, document: dict[str, Any], key: str) -> dict[str, Any]:
        value = document.get(key, {})
        if not isinstance(value, dict):
            raise self.error(key, f"must be a table, [{key}]")
        return value

    def location(self, table: dict[str, Any]) -> Location:
        self.known(table, LOCATION_KEYS, "location.")
        timezone = self.text(table, "location.timezone", "timezone", DEFAULT.location.timezone)
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise self.error(
                "location.timezone",
                f"must be an IANA time zone such as Europe/Madrid, not {timezone!r}",
            ) from None
        return Location(
            name=self.text(table, "location.name", "name", DEFAULT.location.name),
            latitude=self.number(
                table, "location.latitude", "latitude", DEFAULT.location.latitude, -90.0, 90.0
            ),
            longitude=self.number(
                table, "location.longitude", "longitude", DEFAULT.location.longitude, -180.0, 180.0
            ),
            altitude=self.number(
                table, "location.altitude", "altitude", DEFAULT.location.altitude, -500.0, 9000.0
            ),
            timezone=timezone,
        )

    def home_defaults(self, table: dict[str, Any]) -> HomeDefaults:
        self.known(table, HOME_DEFAULT_KEYS, "home_defaults.")

        def get(key: str, high: float | None = None) -> float:
            default = getattr(DEFAULT.home_defaults, key)
            return self.number(table, f"home_defaults.{key}", key, default, 0.0, high)

        annual_kwh = self.number(
            table,
            "home_defaults.annual_kwh",
            "annual_kwh",
            DEFAULT.home_defaults.annual_kwh,
            0.0,
            None,
            low_open=True,
        )
        return HomeDefaults(
            annual_kwh=annual_kwh,
            annual_kwh_spread=get("annual_kwh_spread", 1.0),
            pv_share=get("pv_share", 1.0),
            pv_kwp=get("pv_kwp"),
            pv_kwp_spread=get("pv_kwp_spread", 1.0),
            battery_share=get("battery_share", 1.0),
            battery_kwh=get("battery_kwh"),
            battery_kw=get("battery_kw"),
            noise=get("noise", 1.0),
        )

    def strategies(self, value: Any) -> Mapping[str, float]:
        if not isinstance(value, dict):
            raise self.error("strategies", "must be a table of weights, [strategies]")
        self.known(value, STRATEGIES, "strategies.")
        weights = {
            name: self.number(value, f"strategies.{name}", name, 0.0, 0.0, None)
            for name in STRATEGIES
            if name in value
        }
        if not any(weights.values()):
            raise self.error(
                "strategies", f"must give at least one of {', '.join(STRATEGIES)} a weight above 0"
            )
        return MappingProxyType(weights)

    def home_specs(self, value: Any, defaults: HomeDefaults) -> tuple[HomeSpec, ...]:
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            raise self.error("home", "must be a list of [[home]] tables")
        specs: list[HomeSpec] = []
        for n, table in enumerate(value):
            where = f"home[{n}]"
            self.known(table, HOME_KEYS, f"{where}.")
            if "name" not in table:
                raise self.error(f"{where}.name", "is missing: give each [[home]] a name")
            name = self.text(table, f"{where}.name", "name", "")
            if HOME_NAME.fullmatch(name) is None:
                raise self.error(
                    f"{where}.name",
                    "must be 1 to 64 letters, digits, dots, underscores or hyphens, "
                    "starting with a letter or digit",
                )
            if any(spec.name == name for spec in specs):
                raise self.error(f"{where}.name", f"repeats {name!r}: give each home its own name")
            strategy = self.text(table, f"{where}.strategy", "strategy", "passive")
            if strategy not in STRATEGIES:
                raise self.error(
                    f"{where}.strategy", f"must be one of {', '.join(STRATEGIES)}, not {strategy!r}"
                )
            specs.append(
                HomeSpec(
                    name=name,
                    annual_kwh=self.number(
                        table, f"{where}.annual_kwh", "annual_kwh", defaults.annual_kwh, 0.0, None
                    ),
                    pv_kwp=self.number(table, f"{where}.pv_kwp", "pv_kwp", 0.0, 0.0, None),
                    battery_kwh=self.number(
                        table, f"{where}.battery_kwh", "battery_kwh", 0.0, 0.0, None
                    ),
                    battery_kw=self.number(
                        table, f"{where}.battery_kw", "battery_kw", defaults.battery_kw, 0.0, None
                    ),
                    strategy=strategy,
                )
            )
        return tuple(specs)

    # -- values --

    def start(self, value: Any, timezone: str) -> datetime:
        zone = zoneinfo.ZoneInfo(timezone)
        problem = "must be a local date and time such as 2026-06-21T00:00"
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise self.error("start", f"{problem}, not {value!r}") from None
        elif isinstance(value, date) and not isinstance(value, datetime):
            value = datetime.combine(value, time())
        if not isinstance(value, datetime):
            raise self.error("start", f"{problem}, not {value!r}")
        if value.microsecond:
            raise self.error("start", f"{problem}, in whole seconds")
        if value.tzinfo is not None:
            return value.astimezone(zone)
        local = value.replace(tzinfo=zone)
        if (
            local.astimezone(zoneinfo.ZoneInfo("UTC")).astimezone(zone).replace(tzinfo=None)
            != value
        ):
            raise self.error(
                "start", f"is {value.isoformat()}, a time the clocks of {timezone} skip"
            )
        return local

    def base_port(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            value = -1
        if value != 0 and not 1024 <= value <= 65_535:
            raise self.error(
                "base_port", "must be 0 (free ports) or a whole number from 1024 to 65535"
            )
        return int(value)

    def text(self, table: dict[str, Any], key: str, name: str, default: str) -> str:
        value = table.get(name, default)
        if not isinstance(value, str) or not value:
            raise self.error(key, f"must be a non-empty string, not {_shown(value)}")
        return value

    def flag(self, table: dict[str, Any], key: str, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {_shown(value)}")
        return value

    def integer(
        self, table: dict[str, Any], key: str, name: str, low: int, high: int, default: int
    ) -> int:
        value = table.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(
                key, f"must be a whole number from {low} to {high}, not {_shown(value)}"
            )
        return int(value)

    def number(
        self,
        table: dict[str, Any],
        key: str,
        name: str,
        default: float,
        low: float,
        high: float | None,
        *,
        low_open: bool = False,
    ) -> float:
        value = table.get(name, default)
        finite = not isinstance(value, bool) and isinstance(value, int | float)
        finite = finite and abs(value) != float("inf") and value == value
        above_low = finite and (value > low if low_open else value >= low)
        if not above_low or (high is not None and value > high):
            if high is not None:
                bound = f"from {low:g} to {high:g}"
            else:
                bound = f"above {low:g}" if low_open else f"of {low:g} or more"
            raise self.error(key, f"must be a number {bound}, not {_shown(value)}")
        return float(value)


def _shown(value: Any) -> str:
    """A value for an error message, kept short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
