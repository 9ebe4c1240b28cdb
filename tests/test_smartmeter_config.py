"""The smart meter's TOML configuration: what it reads, and a clear error for each mistake."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulation.scenario import Scenario
from smartmeter import config as config_module
from smartmeter.config import (
    ConfigError,
    PublishConfig,
    SourceConfig,
    load_config,
    parse_config,
)
from smartmeter.energy import MeterConfig as EnergyConfig
from smartmeter.mqtt import EmoncmsFormat, Input, JsonPathFormat, MqttSample
from smartmeter.node import energy_config
from smartmeter.sources import SourceRunner, sample_format
from smartmeter.store import MeterStore

OWNER = "4c" * 32
GOOD = f"""
[meter]
id = "ES0021000000000001AB"
keys = "meter-keys.json"
genesis = "genesis.json"
owner = "{OWNER}"
closing_delay_s = 30
credit_line = 50000000

[[source]]
kind = "sdm630"
host = "192.168.1.40"
device_id = 3
poll_s = 2.5

[[source]]
kind = "mqtt"
format = "shelly"
topic = "shellypro3em-1/status/emdata:0"
"""


def test_a_configuration_is_read_with_its_defaults(tmp_path: Path) -> None:
    path = tmp_path / "meter.toml"
    path.write_text(GOOD)
    config = load_config(path)
    assert (config.meter, config.owner, config.keys) == (
        "ES0021000000000001AB",
        bytes.fromhex(OWNER),
        tmp_path / "meter-keys.json",
    )
    assert (config.ledger, config.dso, config.store) == (
        "http://127.0.0.1:7420",
        "http://127.0.0.1:7430",
        f"sqlite:///{tmp_path / 'meter.sqlite'}",
    )
    assert (config.closing_delay_s, config.credit_line, config.api_port) == (30, 50_000_000, 7440)
    modbus, mqtt = config.sources
    assert (modbus.kind, modbus.host, modbus.port, modbus.device_id, modbus.poll_s) == (
        "sdm630",
        "192.168.1.40",
        502,
        3,
        2.5,
    )
    assert (mqtt.kind, mqtt.port, mqtt.options) == (
        "mqtt",
        1883,
        {"format": "shelly", "topic": "shellypro3em-1/status/emdata:0"},
    )


def _meter(**changes: Any) -> dict[str, Any]:
    meter = {"id": "m1", "keys": "k.json", "genesis": "g.json", "owner": OWNER}
    meter.update(changes)
    return {k: v for k, v in meter.items() if v is not None}


SOURCE = {"kind": "sdm630"}


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ({"source": [SOURCE]}, "the [meter] section is missing"),
        ({"meter": _meter(id=None), "source": [SOURCE]}, "meter.id is missing"),
        ({"meter": _meter(id="a b"), "source": [SOURCE]}, "meter.id must be 1-64"),
        ({"meter": _meter(owner="XY"), "source": [SOURCE]}, "meter.owner must be"),
        ({"meter": _meter(owner=OWNER.upper()), "source": [SOURCE]}, "meter.owner must be"),
        ({"meter": _meter(keys=7), "source": [SOURCE]}, "meter.keys must be a non-empty"),
        ({"meter": _meter()}, "give at least one [[source]]"),
        ({"meter": _meter(), "source": []}, "give at least one [[source]]"),
        ({"meter": _meter(credit_line=-1), "source": [SOURCE]}, "meter.credit_line must be"),
        ({"meter": _meter(api_port=True), "source": [SOURCE]}, "meter.api_port must be"),
        ({"meter": _meter(), "source": [SOURCE], "sources": []}, "unknown section 'sources'"),
        ({"meter": _meter(), "source": ["sdm630"]}, "source[0] must be a table"),
        ({"meter": _meter(), "source": [{"kind": "dlms"}]}, "source[0].kind must be one of"),
        ({"meter": _meter(), "source": [{"kind": "sdm630", "port": 0}]}, "source[0].port"),
        ({"meter": _meter(), "source": [{"kind": "sdm630", "poll_s": 0}]}, "source[0].poll_s"),
        ({"meter": _meter(), "source": [{"kind": "sunspec", "device_id": 300}]}, "device_id"),
        ({"meter": _meter(), "source": [{"kind": "mqtt", "topic": "t"}]}, "source[0].format"),
        ({"meter": _meter(), "source": [{"kind": "mqtt", "format": "json"}]}, "source[0].topic"),
        ({"meter": _meter(), "source": [{"kind": "mqtt", "format": "emoncms"}]}, "source[0].node"),
    ],
)
def test_each_mistake_is_named(document: dict[str, Any], says: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(document, tmp_path)
    assert says in str(refused.value)


def test_a_file_that_is_not_toml_or_not_there_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[meter\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


# -- source names, max_gap_s, [publish], and the refusals around them


def _document(*sources: dict[str, Any], **sections: Any) -> dict[str, Any]:
    return {"meter": _meter(), "source": list(sources), **sections}


def test_a_source_is_named_after_its_kind_and_position_unless_named(tmp_path: Path) -> None:
    config = parse_config(
        _document(
            {"kind": "sdm630"},
            {"kind": "sunspec", "name": "solar_roof-2"},
            {"kind": "mqtt", "format": "shelly", "topic": "shelly"},
        ),
        tmp_path,
    )
    assert [source.name for source in config.sources] == ["sdm630-0", "solar_roof-2", "mqtt-2"]
    assert "name" not in config.sources[1].options  # a common key, not the kind's own


@pytest.mark.parametrize(
    "name", ["Grid", "-grid", "_grid", "grid meter", "grid/1", "a" * 33, "", "gríd"]
)
def test_a_source_name_outside_the_name_rule_is_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(_document({"kind": "sdm630"}, {"kind": "sdm630", "name": name}), tmp_path)
    assert "source[1].name" in str(refused.value)


@pytest.mark.parametrize("name", ["g", "0", "grid", "a" * 32, "house_2-b"])
def test_a_source_name_inside_the_name_rule_is_kept(name: str, tmp_path: Path) -> None:
    (source,) = parse_config(_document({"kind": "sdm630", "name": name}), tmp_path).sources
    assert source.name == name


def test_two_sources_with_one_name_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="two sources are named 'grid'"):
        parse_config(
            _document({"kind": "sdm630", "name": "grid"}, {"kind": "sunspec", "name": "grid"}),
            tmp_path,
        )


def test_a_name_given_to_one_source_cannot_be_another_sources_default(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="two sources are named 'sdm630-1'"):
        parse_config(
            _document({"kind": "sdm630", "name": "sdm630-1"}, {"kind": "sdm630"}), tmp_path
        )


@pytest.mark.parametrize(
    ("poll_s", "max_gap_s"),
    [(0.1, 60), (5, 60), (20, 60), (20.1, 61), (30, 90), (3600, 10_800)],
)
def test_max_gap_defaults_to_a_minute_or_three_polls(
    poll_s: float, max_gap_s: int, tmp_path: Path
) -> None:
    (source,) = parse_config(_document({"kind": "sdm630", "poll_s": poll_s}), tmp_path).sources
    assert source.max_gap_s == max_gap_s


@given(poll_s=st.floats(min_value=0.1, max_value=3600, allow_nan=False))
def test_the_default_max_gap_spans_three_polls_and_a_minute_in_whole_seconds(
    poll_s: float,
) -> None:
    (source,) = parse_config(_document({"kind": "sdm630", "poll_s": poll_s}), Path(".")).sources
    assert isinstance(source.max_gap_s, int)
    assert source.max_gap_s >= 60 and source.max_gap_s >= 3 * poll_s
    assert source.max_gap_s == 60 or source.max_gap_s < 3 * poll_s + 1  # the least such


def test_an_explicit_max_gap_is_kept_and_checked(tmp_path: Path) -> None:
    (source,) = parse_config(
        _document({"kind": "sdm630", "poll_s": 30, "max_gap_s": 15}), tmp_path
    ).sources
    assert (source.max_gap_s, "max_gap_s" in source.options) == (15, False)
    for bad in (0, 86_401, True, 1.5, "60"):
        with pytest.raises(ConfigError, match=r"source\[0\]\.max_gap_s must be a whole number"):
            parse_config(_document({"kind": "sdm630", "max_gap_s": bad}), tmp_path)


def test_max_power_is_unchecked_unless_given_and_reaches_the_interval_meter(
    tmp_path: Path,
) -> None:
    document = _document({"kind": "sdm630"}, {"kind": "sunspec", "max_power_w": 12_000})
    unchecked, checked = parse_config(document, tmp_path).sources
    assert (unchecked.max_power_w, checked.max_power_w) == (None, 12_000)
    assert "max_power_w" not in checked.options
    genesis = Scenario(epoch=1_000, interval_s=900).genesis
    assert energy_config(genesis, checked) == EnergyConfig(
        interval_s=900, epoch=1_000, max_gap_s=checked.max_gap_s, max_power_w=12_000
    )
    for bad in (0, True, 1.5, "6000"):
        with pytest.raises(ConfigError, match=r"source\[0\]\.max_power_w must be a whole"):
            parse_config(_document({"kind": "sdm630", "max_power_w": bad}), tmp_path)


def test_without_a_publish_section_nothing_is_published(tmp_path: Path) -> None:
    assert parse_config(_document(SOURCE), tmp_path).publish is None


def test_a_publish_section_is_read_with_its_defaults(tmp_path: Path) -> None:
    assert parse_config(_document(SOURCE, publish={"node": "meter1"}), tmp_path).publish == (
        PublishConfig(host="127.0.0.1", port=1883, node="meter1", base_topic="emon")
    )
    given_all = {"host": "10.0.0.2", "port": 8883, "node": "m-2", "base_topic": "site/emon"}
    assert parse_config(_document(SOURCE, publish=given_all), tmp_path).publish == (
        PublishConfig(host="10.0.0.2", port=8883, node="m-2", base_topic="site/emon")
    )


@pytest.mark.parametrize(
    ("publish", "says"),
    [
        ("emon", "[publish] must be a table"),
        ({}, "publish.node is missing"),
        ({"node": "Meter1"}, "publish.node must be 1-32"),
        ({"node": "meter/1"}, "publish.node must be 1-32"),
        ({"node": "m", "base_topic": "emon/+"}, "publish.base_topic must be a plain topic"),
        ({"node": "m", "base_topic": "emon/#"}, "publish.base_topic must be a plain topic"),
        ({"node": "m", "base_topic": "/emon"}, "publish.base_topic must be a plain topic"),
        ({"node": "m", "base_topic": ""}, "publish.base_topic must be a non-empty string"),
        ({"node": "m", "port": 0}, "publish.port must be a whole number"),
        ({"node": "m", "host": 1}, "publish.host must be a non-empty string"),
        ({"node": "m", "topic": "emon/m"}, "unknown key publish.topic"),
    ],
)
def test_each_publish_mistake_is_named(publish: Any, says: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(_document(SOURCE, publish=publish), tmp_path)
    assert says in str(refused.value)


@pytest.mark.parametrize(
    ("document", "says"),
    [
        (_document(SOURCE, Meter={}), "unknown section 'Meter'"),
        (_document(SOURCE, publishing={"node": "m"}), "unknown section 'publishing'"),
        (
            {"meter": _meter(closing_delay=60), "source": [SOURCE]},
            "unknown key meter.closing_delay",
        ),
        ({"meter": _meter(store_url="x"), "source": [SOURCE]}, "unknown key meter.store_url"),
    ],
)
def test_unknown_sections_and_meter_keys_are_refused(
    document: dict[str, Any], says: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(document, tmp_path)
    assert says in str(refused.value)


def test_the_documented_example_is_a_valid_configuration(tmp_path: Path) -> None:
    assert config_module.__doc__ is not None
    (example,) = re.findall(r"```toml\n(.*?)```", config_module.__doc__, re.DOTALL)
    # The example abbreviates the owner's key; everything else is as documented.
    example = re.sub(r'^owner = ".*?"', f'owner = "{OWNER}"', example, flags=re.MULTILINE)
    path = tmp_path / "meter.toml"
    path.write_text(example, encoding="utf-8")

    config = load_config(path)

    assert config.publish == PublishConfig("127.0.0.1", 1883, "meter1", "emon")
    assert [(s.name, s.kind) for s in config.sources] == [
        ("grid", "sdm630"),
        ("mqtt-1", "mqtt"),
        ("mqtt-2", "mqtt"),
    ]
    emoncms, json_format = (sample_format(source) for source in config.sources[1:])
    assert isinstance(emoncms, EmoncmsFormat) and isinstance(json_format, JsonPathFormat)
    assert json_format.paths == {
        "$.total.in_kwh": Input("import_wh", 1000),
        "$.power": Input("power_w"),
    }
    assert json_format.time_path == "$.ts"


# -- a json MQTT source's options (checked when its runner is made)


def _json_source(**options: Any) -> SourceConfig:
    return SourceConfig("mqtt", "127.0.0.1", 1883, 5, 1, {"format": "json", **options})


IMPORT_KWH = {"$.total.in": {"quantity": "import_wh", "factor": 1000}}


def test_a_json_source_reads_its_paths_with_their_factors_and_time() -> None:
    source = _json_source(
        topic="home/meter",
        paths={**IMPORT_KWH, "$.meters[1].out": "export_wh", "$.p": {"quantity": "power_w"}},
        time_path="$.ts",
    )
    json_format = sample_format(source)
    payload = b'{"ts": 1700000005, "total": {"in": 1.5}, "meters": [{}, {"out": 7}], "p": -20}'
    assert json_format.topics() == ("home/meter",)
    assert json_format.parse("home/meter", payload, 1.0) == MqttSample(
        at=1_700_000_005, import_wh=1500.0, export_wh=7.0, power_w=-20.0
    )


def test_a_json_source_without_time_path_takes_the_receive_time() -> None:
    json_format = sample_format(_json_source(topic="t", paths=IMPORT_KWH))
    assert json_format.parse("t", b'{"total": {"in": 2}}', 1_700_000_123.5) == MqttSample(
        at=1_700_000_123.5, import_wh=2000.0
    )


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"topic": "t"}, "a json source's paths must map JSON paths to quantities"),
        ({"topic": "t", "paths": {}}, "a json source's paths must map JSON paths to quantities"),
        ({"topic": "t", "paths": ["$.a"]}, "a json source's paths must map JSON paths"),
        ({"topic": "t", "paths": IMPORT_KWH, "time_path": 5}, "time_path must be a JSON path"),
        ({"topic": "t", "paths": IMPORT_KWH, "time_path": "ts"}, "JSON path 'ts' must start"),
        ({"topic": "t", "paths": IMPORT_KWH, "time_path": "$"}, "names the whole payload"),
        ({"topic": "t", "paths": {"$..a": "import_wh"}}, "JSON path '$..a' is not"),
        ({"topic": "t", "paths": {"a": "import_wh"}}, "JSON path 'a' must start with '$'"),
        ({"topic": "t", "paths": {"$.a": "import_kwh"}}, "quantity must be one of"),
        ({"topic": "t", "paths": {"$.a": {"factor": 2}}}, "quantity must be one of"),
        ({"topic": "t", "paths": {"$.a": 7}}, "must be a quantity or a table"),
        ({"topic": "t", "paths": {"$.a": {"quantity": "import_wh", "factor": "k"}}}, "factor"),
        ({"topic": "t", "paths": {"$.a": {"quantity": "import_wh", "factor": 0}}}, "factor"),
        (
            {"topic": "t", "paths": {"$.a": "import_wh", "$.b": "import_wh"}},
            "two paths feed the same quantity",
        ),
        ({"topic": "home/#", "paths": IMPORT_KWH}, "json source: topic"),
    ],
)
def test_each_json_option_mistake_is_a_config_error(options: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        sample_format(_json_source(**options))
    assert says in str(refused.value)


@pytest.mark.parametrize(
    "paths",
    [
        {"$.power": "power_w"},
        {"$.power": {"quantity": "power_w", "factor": -1}},
    ],
)
def test_a_json_source_mapping_no_energy_counter_is_refused(
    paths: dict[str, Any], tmp_path: Path
) -> None:
    store = MeterStore(f"sqlite:///{tmp_path}/meter.sqlite")
    try:
        with pytest.raises(ConfigError, match="a json source must map at least one energy counter"):
            SourceRunner("house", _json_source(topic="t", paths=paths), EnergyConfig(10, 0), store)
    finally:
        store.close()


# -- keys the meter does not read, and paths relative to the configuration's folder


SHELLY = {"kind": "mqtt", "format": "shelly", "topic": "t"}
EMONCMS = {"kind": "mqtt", "format": "emoncms", "node": "house", "inputs": {"i": "import_wh"}}
JSON = {"kind": "mqtt", "format": "json", "topic": "t", "paths": {"$.a": "import_wh"}}


@pytest.mark.parametrize(
    ("document", "says"),
    [
        (
            _document({"kind": "sdm630", "poll": 3}),
            "unknown key source[0].poll (did you mean source[0].poll_s?)",
        ),
        (
            _document(SOURCE, {"kind": "sunspec", "device": 2}),
            "unknown key source[1].device (did you mean source[1].device_id?)",
        ),
        (_document({"kind": "sdm630", "topic": "t"}), "unknown key source[0].topic"),
        (_document({**SHELLY, "device_id": 1}), "unknown key source[0].device_id"),
        (_document({**SHELLY, "paths": {}}), "unknown key source[0].paths"),
        (
            _document({**EMONCMS, "base_topc": "e"}),
            "unknown key source[0].base_topc (did you mean source[0].base_topic?)",
        ),
        (_document({**EMONCMS, "topic": "e"}), "unknown key source[0].topic"),
        (
            _document({**JSON, "timepath": "$.t"}),
            "unknown key source[0].timepath (did you mean source[0].time_path?)",
        ),
        (
            _document({**JSON, "paths": {"$.a": {"quantity": "import_wh", "factr": 1000}}}),
            "unknown key source[0].paths.$.a.factr (did you mean source[0].paths.$.a.factor?)",
        ),
        (
            _document({**EMONCMS, "inputs": {"i": {"quantity": "import_wh", "unit": "kWh"}}}),
            "unknown key source[0].inputs.i.unit: the keys are quantity, factor",
        ),
        (
            {"meter": _meter(closing_delay=60), "source": [SOURCE]},
            "unknown key meter.closing_delay (did you mean meter.closing_delay_s?)",
        ),
        (
            _document(SOURCE, publish={"node": "m", "base": "emon"}),
            "unknown key publish.base (did you mean publish.base_topic?)",
        ),
        (_document(SOURCE, sources=[]), "unknown section 'sources' (did you mean source?)"),
    ],
)
def test_a_key_the_meter_does_not_read_is_refused_with_the_nearest_suggested(
    document: dict[str, Any], says: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(document, tmp_path)
    assert says in str(refused.value)


def test_each_kind_of_source_takes_every_key_it_reads(tmp_path: Path) -> None:
    common = {"host": "h", "port": 1, "poll_s": 1, "max_gap_s": 60, "max_power_w": 9}
    emoncms = {**EMONCMS, "base_topic": "e", "inputs": {"i": {"quantity": "import_wh"}}}
    json_source = {**JSON, "time_path": "$.t", "paths": {"$.a": {"quantity": "import_wh"}}}
    sources = [
        {"kind": "sdm630", "name": "a", "device_id": 2, **common},
        {"kind": "sunspec", "name": "b", "device_id": 2, **common},
        {**SHELLY, "name": "c", **common},
        {**emoncms, "name": "d", **common},
        {**json_source, "name": "e", **common},
    ]
    assert len(parse_config(_document(*sources), tmp_path).sources) == 5


@pytest.mark.parametrize(
    ("store", "beside"),
    [
        ("sqlite:///meter.sqlite", "meter.sqlite"),
        ("sqlite:///data/meter.sqlite", "data/meter.sqlite"),
        (None, "meter.sqlite"),
    ],
)
def test_a_relative_sqlite_store_is_beside_the_configuration(
    store: str | None, beside: str, tmp_path: Path
) -> None:
    config = parse_config({"meter": _meter(store=store), "source": [SOURCE]}, tmp_path)
    assert config.store == f"sqlite:///{tmp_path / beside}"


@pytest.mark.parametrize(
    "store",
    [
        "sqlite:////var/lib/petra/meter.sqlite",
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql+psycopg://petra@127.0.0.1/meter",
    ],
)
def test_other_stores_are_kept_as_given(store: str, tmp_path: Path) -> None:
    config = parse_config({"meter": _meter(store=store), "source": [SOURCE]}, tmp_path)
    assert config.store == store


def test_a_store_that_is_not_a_url_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"meter\.store must be an SQLAlchemy URL"):
        parse_config({"meter": _meter(store="meter.sqlite"), "source": [SOURCE]}, tmp_path)


def test_two_meters_started_from_one_folder_keep_their_databases_beside_their_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    homes = [tmp_path / "home-a", tmp_path / "home-b"]
    for home in homes:
        home.mkdir()
        (home / "meter.toml").write_text(
            GOOD.replace(
                'genesis = "genesis.json"',
                'genesis = "genesis.json"\nstore = "sqlite:///meter.sqlite"',
            )
        )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for home in homes:
        config = load_config(Path("..") / home.name / "meter.toml")  # a relative path, too
        assert config.keys == elsewhere / ".." / home.name / "meter-keys.json"
        MeterStore(config.store).close()
    assert all((home / "meter.sqlite").is_file() for home in homes)
    assert not list(elsewhere.iterdir())  # nothing where they were started
