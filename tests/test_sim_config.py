"""The simulation's TOML configuration: its defaults, overrides, and one clear sentence for
each mistake."""

from __future__ import annotations

import json
import socket
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from simulation.config import (
    DEFAULT_TOML,
    ConfigError,
    HomeDefaults,
    HomeSpec,
    Location,
    SimConfig,
    check_ports_free,
    config_from_wire,
    config_to_wire,
    load_config,
)

FULL = """
name = "Valencia test"
seed = 7
start = "2026-12-31T18:00"
intervals = 48
interval_s = 300
speed = 60
price_consumption = 200000
price_production = 50000
store = "postgresql://petra@127.0.0.1:5432/sim"
tor = true
mixing = false
mix_pool = 0
report_dir = "out/reports"
base_port = 20000
weather = "clear"

[location]
name = "Valencia, Spain"
latitude = 39.47
longitude = -0.38
altitude = 15
timezone = "Europe/Madrid"

[home_defaults]
annual_kwh = 4000
annual_kwh_spread = 0.1
pv_share = 0.5
pv_kwp = 4
pv_kwp_spread = 0.0
battery_share = 0.0
battery_kwh = 10
battery_kw = 5
noise = 0.0

[strategies]
forecast = 1
passive = 2

[[home]]
name = "alice"
annual_kwh = 4200
pv_kwp = 5.0
battery_kwh = 10.0
battery_kw = 5.0
strategy = "forecast"

[[home]]
name = "bob"
annual_kwh = 2500
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sim.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_defaults() -> None:
    config = load_config(None)
    assert config == SimConfig()
    assert (config.name, config.seed, config.homes, config.intervals, config.interval_s) == (
        "Crevillent solar community",
        1,
        10,
        24,
        900,
    )
    assert config.start == datetime(2026, 6, 21, 10, tzinfo=ZoneInfo("Europe/Madrid"))
    assert config.start_unix == int(datetime(2026, 6, 21, 8, tzinfo=UTC).timestamp())
    assert (config.speed, config.price_consumption, config.price_production) == (
        120.0,
        250_000,
        60_000,
    )
    assert (config.store, config.tor, config.mixing, config.mix_pool) == ("sqlite", False, True, 5)
    assert (config.report_dir, config.base_port, config.weather) == (
        Path("petra-report"),
        0,
        "cloudy",
    )
    assert config.location == Location("Crevillent, Spain", 38.249, -0.809, 130.0, "Europe/Madrid")
    assert config.home_defaults == HomeDefaults(3500, 0.25, 0.6, 3.5, 0.2, 0.2, 5.0, 2.5, 0.15)
    assert dict(config.strategies) == {"forecast": 0.4, "zero_intelligence": 0.3, "passive": 0.3}
    assert config.home_specs == ()


def test_the_embedded_toml_is_the_default(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, DEFAULT_TOML)) == load_config(None) == SimConfig()
    written = tomllib.loads(DEFAULT_TOML)
    wire = config_to_wire(SimConfig())
    assert set(written) == set(wire) - {"home"}
    for table in ("location", "home_defaults", "strategies"):
        assert set(written[table]) == set(wire[table])


def test_a_full_file_is_read_and_round_trips(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    madrid = ZoneInfo("Europe/Madrid")
    assert config.start == datetime(2026, 12, 31, 18, tzinfo=madrid)
    assert (config.homes, config.interval_s, config.speed, config.base_port) == (
        2,
        300,
        60.0,
        20000,
    )
    assert (config.store, config.tor, config.mixing, config.mix_pool) == (
        "postgresql://petra@127.0.0.1:5432/sim",
        True,
        False,
        0,
    )
    assert config.location == Location("Valencia, Spain", 39.47, -0.38, 15.0, "Europe/Madrid")
    assert config.home_defaults.noise == 0.0
    assert dict(config.strategies) == {"forecast": 1.0, "passive": 2.0}
    assert config.home_specs == (
        HomeSpec("alice", 4200.0, 5.0, 10.0, 5.0, "forecast"),
        HomeSpec("bob", 2500.0, 0.0, 0.0, 5.0, "passive"),
    )
    wire = json.loads(json.dumps(config_to_wire(config)))
    assert wire["start"] == "2026-12-31T18:00:00+01:00"
    assert config_from_wire(wire) == config


def test_overrides_lie_over_the_file(tmp_path: Path) -> None:
    config = load_config(None, {"homes": 3, "intervals": 4, "location.latitude": 41.0})
    assert (config.homes, config.intervals, config.location.latitude) == (3, 4, 41.0)
    assert config.location.longitude == -0.809
    path = write(tmp_path, 'homes = 5\nweather = "clear"\n[location]\nlatitude = 30.0\n')
    config = load_config(path, {"homes": "8", "mixing": "false", "home_defaults.noise": "0"})
    assert (config.homes, config.mixing, config.weather, config.location.latitude) == (
        8,
        False,
        "clear",
        30.0,
    )
    assert config.home_defaults.noise == 0.0
    # One weight changed; the others keep their defaults.
    weights = load_config(None, {"strategies.passive": 0}).strategies
    assert dict(weights) == {"forecast": 0.4, "zero_intelligence": 0.3, "passive": 0.0}
    assert load_config(None, {"start": "2026-01-01T06:30"}).start.hour == 6


def test_the_start_is_read_in_the_location_time_zone(tmp_path: Path) -> None:
    native = load_config(write(tmp_path, "start = 2026-06-21T08:00:00\n"))
    assert native.start == datetime(2026, 6, 21, 6, tzinfo=UTC)
    offset = load_config(None, {"start": "2026-06-21T06:00:00+00:00"})
    assert offset.start == native.start
    assert offset.start.tzinfo == ZoneInfo("Europe/Madrid")
    tokyo = load_config(None, {"location.timezone": "Asia/Tokyo"})
    assert tokyo.start == datetime(2026, 6, 21, 1, tzinfo=UTC)  # 10:00 in Tokyo


def test_the_horizon() -> None:
    config = load_config(None, {"intervals": 4})
    start = config.start_unix
    assert (config.first_interval(start), config.last_interval(start)) == (0, 3)
    assert config.first_interval(start - 10 * 900) == 10
    assert config.end_unix == start + 3600
    assert config.wall_s == 30.0  # 3600 ledger seconds at 120 times the wall clock
    with pytest.raises(ValueError, match="interval boundary"):
        config.first_interval(start - 100)
    with pytest.raises(ValueError, match="interval boundary"):
        config.first_interval(start + 900)


HOMES = '[[home]]\nname = "a"\n'

REJECTED: list[tuple[str, dict[str, Any], str, str]] = [
    # (file text, overrides, the key the message names, a fragment of the message)
    ("locaton = 3\n", {}, "locaton", "did you mean location?"),
    ("[location]\nlatitud = 3\n", {}, "location.latitud", "did you mean location.latitude?"),
    ("[home_defaults]\npv_kwh = 3\n", {}, "home_defaults.pv_kwh", "did you mean"),
    ("colour = 3\n", {}, "colour", "the keys are name, seed"),
    ("", {"intervalls": 3}, "intervalls", "did you mean intervals? "[:-1]),
    ('seed = "one"\n', {}, "seed", "whole number"),
    ("homes = 2.5\n", {}, "homes", "whole number"),
    ('tor = "yes"\n', {}, "tor", "true or false"),
    ("location = 3\n", {}, "location", "table"),
    ("[home_defaults]\npv_kwp = -1\n", {}, "home_defaults.pv_kwp", "0 or more"),
    ("[home_defaults]\nbattery_kwh = -5\n", {}, "home_defaults.battery_kwh", "0 or more"),
    ("[home_defaults]\nbattery_kw = -1\n", {}, "home_defaults.battery_kw", "0 or more"),
    (HOMES + "pv_kwp = -3.5\n", {}, "home[0].pv_kwp", "0 or more"),
    (HOMES + "battery_kwh = -1\n", {}, "home[0].battery_kwh", "0 or more"),
    ("[location]\nlatitude = 95\n", {}, "location.latitude", "from -90 to 90"),
    ("", {"location.longitude": -181.0}, "location.longitude", "from -180 to 180"),
    ("[location]\ntimezone = 'Mars/Olympus'\n", {}, "location.timezone", "IANA time zone"),
    ("speed = 0\n", {}, "speed", "above 0"),
    ("speed = -2.0\n", {}, "speed", "above 0"),
    ("speed = nan\n", {}, "speed", "above 0"),
    ("interval_s = 0\n", {}, "interval_s", "from 1"),
    ("intervals = 0\n", {}, "intervals", "from 1"),
    ("[strategies]\nforecast = -1\n", {}, "strategies.forecast", "0 or more"),
    ("[strategies]\nforecast = 0\npassive = 0\n", {}, "strategies", "above 0"),
    ("[strategies]\ngreedy = 1\n", {}, "strategies.greedy", "the keys are forecast"),
    (HOMES + "strategy = 'greedy'\n", {}, "home[0].strategy", "one of forecast"),
    ("[home_defaults]\npv_share = 1.5\n", {}, "home_defaults.pv_share", "from 0 to 1"),
    ("", {"home_defaults.battery_share": -0.1}, "home_defaults.battery_share", "from 0 to 1"),
    ("store = 'mysql://db'\n", {}, "store", "postgresql://"),
    ("store = 'postgres'\n", {}, "store", "sqlite"),
    ("mix_pool = 1\n", {}, "mix_pool", "at least 2"),
    (HOMES + HOMES, {}, "home[1].name", "repeats 'a'"),
    ("[[home]]\nannual_kwh = 3\n", {}, "home[0].name", "is missing"),
    ('[[home]]\nname = "a b"\n', {}, "home[0].name", "starting with a letter"),
    ("homes = 3\n" + HOMES, {}, "homes", "1 [[home]] tables"),
    ("weather = 'tmy'\n", {}, "weather", '"clear" or "cloudy"'),
    ("start = 'midsummer'\n", {}, "start", "2026-06-21T00:00"),
    ("start = '2026-03-29T02:30'\n", {}, "start", "skip"),
    ("base_port = 80\n", {}, "base_port", "1024"),
    ("", {"home.0.name": "x"}, "[[home]]", "edit them in the configuration file"),
    ("price_production = 300000\n", {}, "price_production", "below price_consumption"),
    ("start = '2026-06-21T09:07'\n", {}, "start", "interval boundary"),
    ("price_consumption = 0\n", {}, "price_consumption", "from 1 to 1000000000"),
    ("", {"price_production": 10**10}, "price_production", "from 1 to 1000000000"),
]


@pytest.mark.parametrize(("text", "overrides", "key", "fragment"), REJECTED)
def test_each_mistake_is_one_sentence_naming_its_key(
    tmp_path: Path, text: str, overrides: dict[str, Any], key: str, fragment: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_config(path, overrides)
    message = str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert key in message and fragment in message, message
    assert "\n" not in message and ". " not in message.replace(str(path), "")
    where = "on the command line" if overrides and key != "[[home]]" else str(path)
    assert where in message or key == "[[home]]", message


def test_mixing_off_takes_any_pool() -> None:
    assert load_config(None, {"mixing": False, "mix_pool": 0}).mix_pool == 0


def test_a_file_that_cannot_be_read_or_parsed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*missing\.toml"):
        load_config(tmp_path / "missing.toml")
    bad = write(tmp_path, 'name = "x"\nseed = \n')
    with pytest.raises(ConfigError, match=r"sim\.toml is not valid TOML: .*line 2") as raised:
        load_config(bad)
    assert "\n" not in str(raised.value)
    (tmp_path / "latin.toml").write_bytes('name = "Crevillént"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(tmp_path / "latin.toml")


def test_ports_in_use_are_named() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            free = other.getsockname()[1]
        check_ports_free([0, free])
        with pytest.raises(ConfigError, match=f"^port {taken} on 127.0.0.1 is in use"):
            check_ports_free([free, taken])


def test_free_ports_are_never_handed_out_twice() -> None:
    # A private Tor network picks 18 ports before its first tor listens: the kernel handing
    # the same free port to two of those probes made a tor exit with "address in use".
    from simulation.processes import free_port

    ports = [free_port() for _ in range(3_000)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", ports[-1]))  # and each is free
