"""The MQTT payload parsers of smartmeter/mqtt.py: good payloads and a table of bad ones."""

from __future__ import annotations

import json

import pytest

from smartmeter.mqtt import (
    MAX_JSON_DEPTH,
    MAX_PAYLOAD_BYTES,
    BadPayload,
    EmoncmsFormat,
    Input,
    JsonPathFormat,
    MqttSample,
    SampleFormat,
    ShellyPro3EmFormat,
    emoncms_json,
    emoncms_number,
    parse_json_path,
)

NOW = 1_700_000_000.0

EMONCMS = EmoncmsFormat(
    node="house",
    inputs={
        "import": Input("import_wh", 1000),
        "export": Input("export_wh", 1000),
        "power": Input("power_w"),
    },
)
SHELLY = ShellyPro3EmFormat(topic_prefix="shellypro3em-0cb815fc3a50")
JSON_PATH = JsonPathFormat(
    topic="tele/meter/SENSOR",
    paths={
        "$.energy.import": Input("import_wh", 1000),
        "$.energy.export": Input("export_wh", 1000),
        "$.phases[1].power": Input("power_w"),
    },
    time_path="$.ts",
)


def test_emoncms_plain_number_per_input() -> None:
    assert EMONCMS.parse("emon/house/import", b"12.5", NOW) == MqttSample(NOW, import_wh=12500.0)
    assert EMONCMS.parse("emon/house/export", b" 0\n", NOW) == MqttSample(NOW, export_wh=0.0)
    assert EMONCMS.parse("emon/house/power", b"-350", NOW) == MqttSample(NOW, power_w=-350.0)
    assert EMONCMS.parse("emon/house/power", b"1.5e3", NOW) == MqttSample(NOW, power_w=1500.0)


def test_emoncms_json_object_with_and_without_time() -> None:
    payload = b'{"import": 1.25, "export": 0.5, "power": 420, "vrms": 231.2, "time": 1699999990}'
    assert EMONCMS.parse("emon/house", payload, NOW) == MqttSample(1699999990, 1250.0, 500.0, 420)
    assert EMONCMS.parse("emon/house", b'{"power": 7}', NOW) == MqttSample(NOW, power_w=7.0)


def test_emoncms_topics_are_the_node_and_its_mapped_inputs() -> None:
    assert EMONCMS.topics() == (
        "emon/house",
        "emon/house/import",
        "emon/house/export",
        "emon/house/power",
    )


def test_shelly_pro_3em_emdata_and_em_status() -> None:
    emdata = {
        "id": 0,
        "a_total_act_energy": 1000.5,
        "a_total_act_ret_energy": 20.0,
        "total_act": 12345.67,
        "total_act_ret": 890.12,
    }
    sample = SHELLY.parse(SHELLY.emdata_topic, json.dumps(emdata).encode(), NOW)
    assert sample == MqttSample(NOW, import_wh=12345.67, export_wh=890.12)
    em = {"id": 0, "a_act_power": -600.0, "total_act_power": -1523.4, "total_current": 6.6}
    sample = SHELLY.parse(SHELLY.em_topic, json.dumps(em).encode(), NOW)
    assert sample == MqttSample(NOW, power_w=-1523.4)
    assert SHELLY.topics() == (
        "shellypro3em-0cb815fc3a50/status/emdata:0",
        "shellypro3em-0cb815fc3a50/status/em:0",
    )


def test_json_path_reads_nested_values_and_time() -> None:
    payload = {
        "ts": 1699999999.5,
        "energy": {"import": 3.5, "export": 1},
        "phases": [{"power": 1}, {"power": 250.5}],
    }
    sample = JSON_PATH.parse("tele/meter/SENSOR", json.dumps(payload).encode(), NOW)
    assert sample == MqttSample(1699999999.5, 3500.0, 1000.0, 250.5)


def test_json_path_without_time_path_takes_the_receive_time() -> None:
    only_power = JsonPathFormat(topic="meter/power", paths={"$.w": Input("power_w")})
    assert only_power.parse("meter/power", b'{"w": 5}', NOW) == MqttSample(NOW, power_w=5.0)


def test_json_path_syntax() -> None:
    assert parse_json_path("$.a.b[0][12].c") == ("a", "b", 0, 12, "c")
    for bad in ("a.b", "$", "$.a..b", "$.a[x]", "$a"):
        with pytest.raises(ValueError):
            parse_json_path(bad)


GOOD_EMDATA = {"total_act": 1.0, "total_act_ret": 2.0}


def _json(document: object) -> bytes:
    return json.dumps(document).encode()


MALFORMED: list[tuple[str, SampleFormat, str, bytes, str]] = [
    # (id, format, topic, payload, words the reason must contain)
    ("not a number", EMONCMS, "emon/house/power", b"abc", "is not a plain decimal number"),
    ("empty", EMONCMS, "emon/house/power", b"", "is not a plain decimal number"),
    ("nan text", EMONCMS, "emon/house/power", b"nan", "is not a plain decimal number"),
    ("inf text", EMONCMS, "emon/house/power", b"inf", "is not a plain decimal number"),
    ("underscores", EMONCMS, "emon/house/power", b"1_000", "is not a plain decimal number"),
    ("overflow", EMONCMS, "emon/house/power", b"1e999", "is not a finite number"),
    ("negative counter", EMONCMS, "emon/house/import", b"-1", "is never negative"),
    ("not utf-8", EMONCMS, "emon/house/power", b"\xff\xfe1", "not UTF-8 text"),
    ("unmapped input", EMONCMS, "emon/house/vrms", b"230", "not an input mapped"),
    ("other node", EMONCMS, "emon/garage/power", b"1", "not an input mapped"),
    ("json not object", EMONCMS, "emon/house", b"[1, 2]", "an array, expected a JSON object"),
    ("json invalid", EMONCMS, "emon/house", b'{"power": ', "payload is not JSON"),
    ("json NaN", EMONCMS, "emon/house", b'{"power": NaN}', "NaN, which is not a JSON number"),
    ("json Infinity", EMONCMS, "emon/house", b'{"power": -Infinity}', "-Infinity"),
    ("json string", EMONCMS, "emon/house", b'{"power": "12"}', "the string '12', not a number"),
    ("json bool", EMONCMS, "emon/house", b'{"power": true}', "is true, not a number"),
    ("json null", EMONCMS, "emon/house", b'{"import": null}', "is null, not a number"),
    ("json huge int", EMONCMS, "emon/house", b'{"power": 1' + b"0" * 400 + b"}", "too large"),
    ("scaled overflow", EMONCMS, "emon/house", b'{"import": 1e306}', "once scaled"),
    ("json no inputs", EMONCMS, "emon/house", b'{"vrms": 230}', "none of the inputs"),
    ("json bad time", EMONCMS, "emon/house", b'{"power": 1, "time": "now"}', "'time' is"),
    ("negative time", EMONCMS, "emon/house", b'{"power": 1, "time": -5}', "never negative"),
    ("time in ms", EMONCMS, "emon/house", b'{"power": 1, "time": 1700000000000}', "millisec"),
    (
        "too deep",
        EMONCMS,
        "emon/house",
        b'{"power": 1, "x": ' + b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"}",
        f"nested deeper than {MAX_JSON_DEPTH}",
    ),
    (
        "oversized",
        EMONCMS,
        "emon/house",
        b'{"power": 1, "pad": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}',
        f"at most {MAX_PAYLOAD_BYTES}",
    ),
    (
        "shelly no total_act",
        SHELLY,
        SHELLY.emdata_topic,
        _json({"total_act_ret": 1}),
        "EMData status has no 'total_act' field",
    ),
    (
        "shelly no total_act_ret",
        SHELLY,
        SHELLY.emdata_topic,
        _json({"total_act": 1}),
        "has no 'total_act_ret'",
    ),
    (
        "shelly negative counter",
        SHELLY,
        SHELLY.emdata_topic,
        _json({**GOOD_EMDATA, "total_act_ret": -0.5}),
        "'total_act_ret' is -0.5: an energy counter (export_wh) is never negative",
    ),
    ("shelly no power", SHELLY, SHELLY.em_topic, _json({"id": 0}), "has no 'total_act_power'"),
    (
        "shelly string power",
        SHELLY,
        SHELLY.em_topic,
        _json({"total_act_power": "12"}),
        "'total_act_power' is the string '12', not a number",
    ),
    ("shelly other topic", SHELLY, "shellypro3em-x/status/em:1", b"{}", "is neither"),
    (
        "path missing",
        JSON_PATH,
        JSON_PATH.topic,
        _json({"ts": 1, "energy": {"import": 1}, "phases": [{}, {"power": 1}]}),
        "no value at $.energy.export",
    ),
    (
        "path index out of range",
        JSON_PATH,
        JSON_PATH.topic,
        _json({"ts": 1, "energy": {"import": 1, "export": 1}, "phases": [{"power": 1}]}),
        "no value at $.phases[1].power",
    ),
    (
        "path through a number",
        JSON_PATH,
        JSON_PATH.topic,
        _json({"ts": 1, "energy": 5, "phases": []}),
        "no value at $.energy.import",
    ),
    ("path missing time", JSON_PATH, JSON_PATH.topic, _json({}), "no value at $.ts"),
    (
        "path negative counter",
        JSON_PATH,
        JSON_PATH.topic,
        _json({"ts": 1, "energy": {"import": -2, "export": 1}, "phases": [{}, {"power": 1}]}),
        "$.energy.import is -2",
    ),
    ("path wrong topic", JSON_PATH, "tele/other/SENSOR", b"{}", "is not 'tele/meter/SENSOR'"),
]


@pytest.mark.parametrize(
    ("sample_format", "topic", "payload", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in MALFORMED],
)
def test_malformed_payloads_are_rejected_with_a_reason(
    sample_format: SampleFormat, topic: str, payload: bytes, reason: str
) -> None:
    with pytest.raises(BadPayload) as raised:
        sample_format.parse(topic, payload, NOW)
    assert reason in raised.value.reason


def test_nesting_at_the_limit_and_brackets_in_strings_are_accepted() -> None:
    nested = b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1)
    payload = b'{"power": 1, "x": ' + nested + b', "s": "' + b"[" * 100 + b'\\"{"}'
    assert EMONCMS.parse("emon/house", payload, NOW) == MqttSample(NOW, power_w=1.0)


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="quantity"):
        Input("energy_kwh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="factor"):
        Input("power_w", 0)
    with pytest.raises(ValueError, match="node"):
        EmoncmsFormat(node="a/b", inputs={"p": Input("power_w")})
    with pytest.raises(ValueError, match="'time'"):
        EmoncmsFormat(node="a", inputs={"time": Input("power_w")})
    with pytest.raises(ValueError, match=r"'\+'"):
        ShellyPro3EmFormat(topic_prefix="shelly/+")
    with pytest.raises(ValueError, match="same quantity"):
        JsonPathFormat(topic="t", paths={"$.a": Input("power_w"), "$.b": Input("power_w")})


def test_emoncms_payloads_for_publishing_round_trip_through_the_parser() -> None:
    assert emoncms_number(12) == b"12"
    assert emoncms_number(0.25) == b"0.25"
    payload = emoncms_json({"import": 1.5, "power": 300}, at=1699999999)
    assert json.loads(payload) == {"import": 1.5, "power": 300, "time": 1699999999}
    assert EMONCMS.parse("emon/house", payload, NOW) == MqttSample(
        1699999999, import_wh=1500.0, power_w=300.0
    )
    for bad in (float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="finite"):
            emoncms_number(bad)
    with pytest.raises(ValueError, match="'time'"):
        emoncms_json({"time": 1})
