"""The smart meter's TOML configuration: what it reads, and a clear error for each mistake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from smartmeter.config import ConfigError, load_config, parse_config

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
