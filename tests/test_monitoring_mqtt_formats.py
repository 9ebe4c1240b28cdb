"""The MQTT ingest's pure parsers: topic and payload to checked samples, or a refusal with a
reason code. No broker here (tests/integration/test_monitoring_mqtt.py has one)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring.config import JsonDevice, MqttSettings, ShellyDevice
from monitoring.mqtt_ingest import MqttRoutes, Reading, emoncms_kind
from monitoring.samples import COUNTER, OTHER, POWER, Refused, Sample

NOW = 1_750_000_000.4
SHELLY = ShellyDevice("shellypro3em-0cb815fc3a50", "house3")
TASMOTA = JsonDevice(
    "tele/flat2/SENSOR",
    "flat2",
    (("power_w", "$.ENERGY.Power"), ("import_kwh", "$.ENERGY.Total"), ("l2", "$.V[1]")),
    "$.Time",
)
ROUTES = MqttRoutes.of(MqttSettings(shelly=(SHELLY,), json=(TASMOTA,)))


def parse(topic: str, payload: bytes | str) -> list[Reading]:
    raw = payload.encode() if isinstance(payload, str) else payload
    return ROUTES.parse(topic, raw, NOW)


def samples(topic: str, payload: bytes | str) -> dict[str, Sample]:
    return {r.sample.name: r.sample for r in parse(topic, payload)}


def reason(topic: str, payload: bytes | str) -> str:
    with pytest.raises(Refused) as caught:
        parse(topic, payload)
    assert caught.value.message  # a sentence a person can act on
    return caught.value.reason


# -- emoncms --


def test_a_plain_number_is_one_input_at_arrival_time() -> None:
    (reading,) = parse("emon/house1/power1", " 1234.5\n")

    assert reading.sample == Sample("house1", "power1", int(NOW), 1234.5)
    assert reading.kind == (POWER, "W")


def test_a_json_object_is_every_input_at_its_time() -> None:
    got = samples("emon/meter1", '{"grid_import_kwh": 12.5, "grid_power_w": -300, "time": 1.7e9}')

    assert got == {
        "grid_import_kwh": Sample("meter1", "grid_import_kwh", 1_700_000_000, 12.5),
        "grid_power_w": Sample("meter1", "grid_power_w", 1_700_000_000, -300.0),
    }


@pytest.mark.parametrize(
    ("time", "unix"),
    [
        ('"2025-06-15T12:00:00Z"', 1_749_988_800),
        ('"2025-06-15T14:00:00+02:00"', 1_749_988_800),
        ("1749988800", 1_749_988_800),
    ],
)
def test_a_json_time_is_unix_seconds_or_iso_8601_with_offset(time: str, unix: int) -> None:
    got = samples("emon/n", f'{{"a": 1, "time": {time}}}')

    assert got["a"].t == unix


def test_a_json_object_without_time_takes_arrival_time() -> None:
    assert samples("emon/n", '{"a": 1}')["a"].t == int(NOW)


@pytest.mark.parametrize(
    ("topic", "payload", "code"),
    [
        ("emon/n/a", "twelve", "bad_value"),
        ("emon/n/a", "1,5", "bad_value"),
        ("emon/n/a", "nan", "bad_value"),
        ("emon/n/a", "1e400", "bad_value"),
        ("emon/n/a", "", "bad_value"),
        ("emon/n/a", b"\xff\xfe", "bad_payload"),
        ("emon/n/a", "1" * (64 * 1024 + 1), "too_large"),
        ("emon/n/a b", "1", "bad_name"),
        ("emon/" + "n" * 65 + "/a", "1", "bad_name"),
        ("emon/n", "[1, 2]", "bad_payload"),
        ("emon/n", "{", "bad_payload"),
        ("emon/n", '{"a": NaN}', "bad_value"),
        ("emon/n", '{"a": "12"}', "bad_value"),
        ("emon/n", '{"a": true}', "bad_value"),
        ("emon/n", '{"a": 1, "b": null}', "bad_value"),
        ("emon/n", '{"time": 1700000000}', "no_inputs"),
        ("emon/n", "{}", "no_inputs"),
        ("emon/n", '{"a": 1, "time": 1700000000000}', "bad_time"),
        ("emon/n", '{"a": 1, "time": 5}', "bad_time"),
        ("emon/n", '{"a": 1, "time": "2025-06-15T12:00:00"}', "bad_time"),
        ("emon/n", '{"a": 1, "time": "yesterday"}', "bad_time"),
        ("emon/n", '{"a": 1, "time": [1]}', "bad_time"),
        ("emon/n", "[" * 5000 + "]" * 5000, "bad_payload"),
        ("emon/n", '{"a": ' + "9" * 5000 + "}", "bad_payload"),
        ("emon/n/a/b", "1", "unknown_topic"),
        ("other/n", "1", "unknown_topic"),
    ],
)
def test_a_bad_message_is_refused_whole_with_its_reason(
    topic: str, payload: str, code: str
) -> None:
    assert reason(topic, payload) == code


def test_one_bad_input_refuses_the_whole_message() -> None:
    assert reason("emon/n", '{"good": 1, "bad": "x"}') == "bad_value"


def test_another_base_topic_is_followed() -> None:
    routes = MqttRoutes.of(MqttSettings(base_topic="site/emon"))

    assert routes.subscriptions() == ["site/emon/+", "site/emon/+/+"]
    (reading,) = routes.parse("site/emon/n/a", b"3", NOW)
    assert reading.sample == Sample("n", "a", int(NOW), 3.0)
    with pytest.raises(Refused):
        routes.parse("emon/n/a", b"3", NOW)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("grid_import_kwh", (COUNTER, "kWh")),
        ("pv_export_kWh", (COUNTER, "kWh")),
        ("total_wh", (COUNTER, "Wh")),
        ("grid_power_w", (POWER, "W")),
        ("power1", (POWER, "W")),
        ("vrms", (OTHER, "V")),
        ("l1_v", (OTHER, "V")),
        ("l1_a", (OTHER, "A")),
        ("temp1", None),
        ("kwh", None),
        ("pulse", None),
    ],
)
def test_emoncms_names_say_their_kind_by_convention(name: str, kind: object) -> None:
    assert emoncms_kind(name) == kind


# -- Shelly Pro 3EM --

EM = {
    "id": 0,
    "a_current": 4.029,
    "a_voltage": 236.1,
    "a_act_power": 951.2,
    "a_aprt_power": 951.9,
    "a_pf": 1,
    "b_act_power": -100.5,
    "c_act_power": None,
    "total_act_power": 850.7,
    "total_current": 4.5,
}
EMDATA = {
    "id": 0,
    "a_total_act_energy": 2000.5,
    "a_total_act_ret_energy": 0,
    "total_act": 3000.25,
    "total_act_ret": 120.0,
}


def test_a_shelly_em_status_gives_power_per_phase_and_in_total() -> None:
    readings = parse(f"{SHELLY.topic_prefix}/status/em:0", json.dumps(EM))

    got = {r.sample.name: (r.sample.value, r.kind) for r in readings}
    assert got == {
        "total_act_power": (850.7, (POWER, "W")),
        "a_act_power": (951.2, (POWER, "W")),
        "b_act_power": (-100.5, (POWER, "W")),
        "a_voltage": (236.1, (OTHER, "V")),
        "a_current": (4.029, (OTHER, "A")),
    }
    assert {(r.sample.node, r.sample.t) for r in readings} == {("house3", int(NOW))}


def test_a_shelly_emdata_status_gives_the_counters_in_wh() -> None:
    readings = parse(f"{SHELLY.topic_prefix}/status/emdata:0", json.dumps(EMDATA))

    got = {r.sample.name: (r.sample.value, r.kind) for r in readings}
    assert got == {
        "total_act": (3000.25, (COUNTER, "Wh")),
        "total_act_ret": (120.0, (COUNTER, "Wh")),
        "a_total_act_energy": (2000.5, (COUNTER, "Wh")),
        "a_total_act_ret_energy": (0.0, (COUNTER, "Wh")),
    }


@pytest.mark.parametrize(
    ("part", "status", "code"),
    [
        ("em:0", {"a_act_power": 1}, "bad_payload"),  # no total_act_power
        ("em:0", {"total_act_power": "850"}, "bad_payload"),
        ("em:0", {"total_act_power": 1, "a_act_power": "x"}, "bad_value"),
        ("emdata:0", {"total_act": -1, "total_act_ret": 0}, "bad_payload"),
        ("emdata:0", {"total_act": 1}, "bad_payload"),
        ("emdata:0", {"total_act": 1, "total_act_ret": 0, "b_total_act_energy": -5}, "bad_value"),
    ],
)
def test_a_bad_shelly_status_is_refused(part: str, status: object, code: str) -> None:
    assert reason(f"{SHELLY.topic_prefix}/status/{part}", json.dumps(status)) == code


# -- JSON paths --


def test_a_json_device_is_read_at_its_paths() -> None:
    payload = {
        "Time": "2025-06-15T14:00:00+02:00",
        "ENERGY": {"Power": 412, "Total": 1502.332},
        "V": [230.1, 229.8],
    }

    got = samples(TASMOTA.topic, json.dumps(payload))

    assert got == {
        "power_w": Sample("flat2", "power_w", 1_749_988_800, 412.0),
        "import_kwh": Sample("flat2", "import_kwh", 1_749_988_800, 1502.332),
        "l2": Sample("flat2", "l2", 1_749_988_800, 229.8),
    }
    assert {r.kind for r in parse(TASMOTA.topic, json.dumps(payload))} == {None}


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"Time": 1.7e9, "ENERGY": {"Power": 1}, "V": [1, 2]}, "missing_value"),
        ({"Time": 1.7e9, "ENERGY": {"Power": 1, "Total": 2}, "V": [1]}, "missing_value"),
        ({"Time": 1.7e9, "ENERGY": [1, 2], "V": [1, 2]}, "missing_value"),
        ({"ENERGY": {"Power": 1, "Total": 2}, "V": [1, 2]}, "missing_value"),
        ({"Time": 1.7e9, "ENERGY": {"Power": {}, "Total": 2}, "V": [1, 2]}, "bad_value"),
        ({"Time": "now", "ENERGY": {"Power": 1, "Total": 2}, "V": [1, 2]}, "bad_time"),
    ],
)
def test_a_json_device_without_a_usable_value_is_refused(payload: object, code: str) -> None:
    assert reason(TASMOTA.topic, json.dumps(payload)) == code


def test_configured_topics_take_precedence_over_the_emoncms_base() -> None:
    device = JsonDevice("emon/special", "special", (("a", "$.x"),))
    routes = MqttRoutes.of(MqttSettings(json=(device,)))

    (reading,) = routes.parse("emon/special", b'{"x": 5, "y": 6}', NOW)

    assert reading.sample == Sample("special", "a", int(NOW), 5.0)


# -- whatever arrives --

TOPICS = st.sampled_from(
    [
        "emon/n",
        "emon/n/a",
        f"{SHELLY.topic_prefix}/status/em:0",
        f"{SHELLY.topic_prefix}/status/emdata:0",
        TASMOTA.topic,
        "emon",
        "x/y/z",
    ]
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner),
    max_leaves=20,
)


@given(topic=TOPICS, payload=st.binary(max_size=300))
def test_arbitrary_bytes_give_samples_or_a_refusal_never_an_error(
    topic: str, payload: bytes
) -> None:
    try:
        readings = ROUTES.parse(topic, payload, NOW)
    except Refused as refused:
        assert refused.reason and refused.message
    else:
        assert all(isinstance(r.sample, Sample) for r in readings)


@given(topic=TOPICS, document=JSON_VALUES)
def test_arbitrary_json_gives_checked_samples_or_a_refusal(topic: str, document: object) -> None:
    payload = json.dumps(document).encode()
    try:
        readings = ROUTES.parse(topic, payload, NOW)
    except Refused as refused:
        assert refused.reason and refused.message
    else:
        assert readings
        for reading in readings:
            value = reading.sample.value
            assert isinstance(value, float) and abs(value) <= 1e15


@given(
    name=st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True),
    value=st.floats(min_value=-1e12, max_value=1e12),
)
def test_any_named_number_is_stored_as_it_was_sent(name: str, value: float) -> None:
    (reading,) = ROUTES.parse(f"emon/node/{name}", repr(value).encode(), NOW)

    assert reading.sample == Sample("node", name, int(NOW), value)
