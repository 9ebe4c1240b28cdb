"""`MqttSource` and `MqttPublisher` against a real mosquitto, including a broker outage."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from services.mosquitto import Mosquitto
from waiting import wait_until

from smartmeter.mqtt import (
    BadPayload,
    Broker,
    EmoncmsFormat,
    Input,
    JsonPathFormat,
    MqttPublisher,
    MqttSample,
    MqttSource,
    ShellyPro3EmFormat,
)

TIMEOUT_S = 10
OUTAGE_TIMEOUT_S = 20  # a disconnect noticed, then reconnection after up to max_backoff_s

EMONCMS = EmoncmsFormat(
    node="house", inputs={"import": Input("import_wh", 1000), "power": Input("power_w")}
)
SHELLY = ShellyPro3EmFormat(topic_prefix="shellypro3em-0cb815fc3a50")
JSON_PATH = JsonPathFormat(
    topic="tele/meter/SENSOR",
    paths={"$.ENERGY.Total": Input("import_wh", 1000), "$.ENERGY.Power": Input("power_w")},
    time_path="$.ts",
)


@dataclass
class Received:
    """What a source handed to its callbacks, in order, from paho's thread."""

    samples: list[tuple[str, MqttSample]] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_sample(self, topic: str, sample: MqttSample) -> None:
        with self.lock:
            self.samples.append((topic, sample))

    def on_bad_payload(self, topic: str, bad: BadPayload) -> None:
        with self.lock:
            self.bad.append((topic, bad.reason))

    def wait_samples(
        self, count: int, timeout_s: float = TIMEOUT_S
    ) -> list[tuple[str, MqttSample]]:
        wait_until(lambda: len(self.samples) >= count, timeout_s, f"{count} samples")
        with self.lock:
            return list(self.samples)


class Device:
    """A plain paho client playing a meter that publishes at QoS 1."""

    def __init__(self, broker: Mosquitto) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(TIMEOUT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def device(mosquitto: Mosquitto) -> Iterator[Device]:
    meter = Device(mosquitto)
    yield meter
    meter.close()


@pytest.fixture
def source(mosquitto: Mosquitto) -> Iterator[tuple[MqttSource, Received]]:
    received = Received()
    broker = Broker(mosquitto.host, mosquitto.port, min_backoff_s=1, max_backoff_s=2)
    meter_source = MqttSource(
        broker,
        [EMONCMS, SHELLY, JSON_PATH],
        received.on_sample,
        received.on_bad_payload,
        clock=lambda: 1_700_000_000.0,
    )
    meter_source.start()
    assert meter_source.wait_connected(TIMEOUT_S), mosquitto.logs()
    yield meter_source, received
    meter_source.close()
    assert not meter_source.connected


def test_source_parses_emoncms_shelly_and_json_path_messages(
    source: tuple[MqttSource, Received], device: Device
) -> None:
    _, received = source
    now = 1_700_000_000.0
    device.publish("emon/house/import", "1.5")
    device.publish("emon/house", '{"import": 2, "power": 300, "time": 1699999000}')
    device.publish(SHELLY.emdata_topic, json.dumps({"id": 0, "total_act": 5, "total_act_ret": 6}))
    device.publish(SHELLY.em_topic, json.dumps({"id": 0, "total_act_power": -42.5}))
    device.publish(JSON_PATH.topic, '{"ts": 1699999500, "ENERGY": {"Total": 0.25, "Power": 60}}')
    # The topics differ, so the broker may deliver them in any order.
    assert sorted(received.wait_samples(5), key=lambda item: item[0]) == [
        ("emon/house", MqttSample(1699999000, import_wh=2000.0, power_w=300.0)),
        ("emon/house/import", MqttSample(now, import_wh=1500.0)),
        (SHELLY.em_topic, MqttSample(now, power_w=-42.5)),
        (SHELLY.emdata_topic, MqttSample(now, import_wh=5.0, export_wh=6.0)),
        ("tele/meter/SENSOR", MqttSample(1699999500, import_wh=250.0, power_w=60.0)),
    ]
    assert received.bad == []


def test_bad_payloads_reach_the_error_callback_and_the_source_keeps_running(
    source: tuple[MqttSource, Received], device: Device
) -> None:
    meter_source, received = source
    device.publish("emon/house/power", b"\xff")
    device.publish("emon/house/power", "NaN")
    device.publish("emon/house/power", "12")
    assert received.wait_samples(1) == [("emon/house/power", MqttSample(1_700_000_000, power_w=12))]
    # Same topic and QoS from one client: delivered in publication order.
    assert received.bad == [
        ("emon/house/power", "payload is not UTF-8 text (invalid byte at offset 0)"),
        ("emon/house/power", "payload 'NaN' is not a plain decimal number"),
    ]
    assert meter_source.connected


@pytest.mark.slow
def test_source_reconnects_after_the_broker_restarts(
    mosquitto: Mosquitto, source: tuple[MqttSource, Received]
) -> None:
    meter_source, received = source
    try:
        mosquitto.stop(kill=True)
        wait_until(lambda: not meter_source.connected, OUTAGE_TIMEOUT_S, "the source to notice")
    finally:
        mosquitto.start()
    wait_until(lambda: meter_source.connected, OUTAGE_TIMEOUT_S, "the source to reconnect")
    meter = Device(mosquitto)
    try:
        meter.publish("emon/house/power", "77")
    finally:
        meter.close()
    assert received.wait_samples(1) == [("emon/house/power", MqttSample(1_700_000_000, power_w=77))]


def test_publisher_topics_arrive_at_a_subscriber(mosquitto: Mosquitto, device: Device) -> None:
    arrived: list[tuple[str, bytes, int]] = []
    subscribed = threading.Event()
    device.client.on_message = lambda _client, _userdata, message: arrived.append(
        (message.topic, bytes(message.payload), message.qos)
    )
    device.client.on_subscribe = lambda *_: subscribed.set()
    device.client.subscribe("emon/#", qos=1)
    assert subscribed.wait(TIMEOUT_S)

    with MqttPublisher(Broker(mosquitto.host, mosquitto.port)) as publisher:
        publisher.publish_input("meter1", "power", 1234.5)
        publisher.publish_node("meter1", {"import": 12.25, "export": 3}, at=1699999999)
        assert publisher.wait_published(TIMEOUT_S)

    wait_until(lambda: len(arrived) >= 2, TIMEOUT_S, "the published readings")
    assert sorted(arrived) == [
        ("emon/meter1", b'{"import":12.25,"export":3,"time":1699999999}', 1),
        ("emon/meter1/power", b"1234.5", 1),
    ]
