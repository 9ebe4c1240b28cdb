"""`ReadingPublisher` against a real mosquitto: stored readings reach a subscriber as emoncms
JSON, in order, and its cursor moves only past what the broker acknowledged."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from services.mosquitto import Mosquitto
from waiting import wait_until

from smartmeter.config import PublishConfig
from smartmeter.node import PUBLISHED, ReadingPublisher
from smartmeter.store import MeterStore

TIMEOUT_S = 10
AT = 1_700_000_000.0


class Subscriber:
    """A monitoring client: every message on one topic, in the order it arrived."""

    def __init__(self, mosquitto: Mosquitto, topic: str) -> None:
        self.topic = topic
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = self._message
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(mosquitto.host, mosquitto.port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        assert subscribed.wait(TIMEOUT_S), mosquitto.logs()

    def _message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(json.loads(message.payload))

    def received(self) -> list[dict[str, Any]]:
        """Every message the broker took in before this call: the subscriber publishes a marker
        on its topic and waits for it, and the broker keeps the order of one topic's messages."""
        marker = {"marker": uuid.uuid4().hex}
        self.client.publish(self.topic, json.dumps(marker), qos=1).wait_for_publish(TIMEOUT_S)
        wait_until(lambda: marker in self.messages, TIMEOUT_S, "the subscriber's own marker")
        with self._lock:
            before = self.messages[: self.messages.index(marker)]
        return [message for message in before if "marker" not in message]

    def wait_messages(self, count: int) -> list[dict[str, Any]]:
        """The messages once `count` have arrived, and no more than those."""
        wait_until(
            lambda: len([m for m in self.messages if "marker" not in m]) >= count,
            TIMEOUT_S,
            f"{count} messages",
        )
        return self.received()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def config(mosquitto: Mosquitto) -> PublishConfig:
    """A base topic of the test's own, so no other test's messages reach its subscriber."""
    return PublishConfig(mosquitto.host, mosquitto.port, "meter1", f"test-{uuid.uuid4().hex}")


@pytest.fixture
def subscriber(mosquitto: Mosquitto, config: PublishConfig) -> Iterator[Subscriber]:
    client = Subscriber(mosquitto, f"{config.base_topic}/{config.node}")
    yield client
    client.close()


@pytest.fixture
def publishers() -> Iterator[list[ReadingPublisher]]:
    """Publishers a test made, closed after it."""
    made: list[ReadingPublisher] = []
    yield made
    for publisher in made:
        publisher.close()


def started(
    store: MeterStore, config: PublishConfig, publishers: list[ReadingPublisher]
) -> ReadingPublisher:
    publisher = ReadingPublisher(store, config, client_id=f"petra-test-{uuid.uuid4().hex}")
    publishers.append(publisher)
    publisher.start()
    return publisher


def grid(step: int) -> tuple[float, float, float, float]:
    """The grid meter's reading `step`: at, import Wh, export Wh, power W."""
    return AT + 5 * step, 1_500.0 + 250 * step, 250.0 + 10 * step, 1_200.0 + step


def grid_message(step: int) -> dict[str, float]:
    at, import_wh, export_wh, power_w = grid(step)
    return {
        "grid_import_kwh": import_wh / 1000,
        "grid_export_kwh": export_wh / 1000,
        "grid_power_w": power_w,
        "time": at,
    }


def test_stored_readings_arrive_in_order_as_emoncms_json(
    meter_store: MeterStore,
    config: PublishConfig,
    subscriber: Subscriber,
    publishers: list[ReadingPublisher],
) -> None:
    meter_store.add_reading("grid", *grid(0))
    meter_store.add_reading("solar", AT + 1, None, 3_200.0, -850.5)  # an inverter: export and power
    meter_store.add_reading("house", AT + 2, 42.0, None, None)  # a counter, no power
    meter_store.add_reading("grid", AT + 3, None, None, None, "refused frame: nan")
    last = meter_store.add_reading("grid", *grid(1))
    publisher = started(meter_store, config, publishers)

    assert publisher.publish_due(TIMEOUT_S) == 4  # messages: the refused reading is not one

    assert subscriber.wait_messages(4) == [
        grid_message(0),
        {"solar_export_kwh": 3.2, "solar_power_w": -850.5, "time": AT + 1},
        {"house_import_kwh": 0.042, "time": AT + 2},
        grid_message(1),  # the refused reading in between is not published
    ]
    assert publisher.cursor == last
    assert meter_store.get_state(PUBLISHED) == last
    assert publisher.publish_due(TIMEOUT_S) == 0  # nothing new


def test_only_refused_readings_move_the_cursor_without_a_message(
    meter_store: MeterStore,
    config: PublishConfig,
    subscriber: Subscriber,
    publishers: list[ReadingPublisher],
) -> None:
    refused = meter_store.add_reading("grid", AT, None, None, None, "refused payload: not JSON")
    publisher = started(meter_store, config, publishers)

    publisher.publish_due(TIMEOUT_S)

    assert (publisher.cursor, meter_store.get_state(PUBLISHED)) == (refused, refused)
    assert subscriber.received() == []


def test_readings_stored_during_an_outage_are_published_once_the_broker_is_back(
    mosquitto: Mosquitto,
    meter_store: MeterStore,
    config: PublishConfig,
    subscriber: Subscriber,
    publishers: list[ReadingPublisher],
) -> None:
    first = meter_store.add_reading("grid", *grid(0))
    publisher = started(meter_store, config, publishers)
    publisher.publish_due(TIMEOUT_S)
    assert subscriber.wait_messages(1) == [grid_message(0)]
    assert publisher.cursor == first
    subscriber.close()

    # Observed, not changed: paho waits at least a second after a failed attempt, time enough
    # to restart the broker and subscribe before the publisher is back.
    failed_attempt = threading.Event()
    publisher.publisher._client.on_connect_fail = lambda *_: failed_attempt.set()
    mosquitto.stop()
    try:
        stored = [meter_store.add_reading("grid", *grid(step)) for step in range(1, 4)]
        assert publisher.publish_due(0.3) == 0
        assert publisher.publish_due(0.3) == 0  # still waiting for the same readings
        assert (publisher.cursor, meter_store.get_state(PUBLISHED)) == (first, first)
        assert failed_attempt.wait(TIMEOUT_S)
    finally:
        mosquitto.start()
    after = Subscriber(mosquitto, f"{config.base_topic}/{config.node}")
    try:
        # stored after the outage, before its turn
        stored.append(meter_store.add_reading("grid", *grid(4)))
        wait_until(
            lambda: publisher.publish_due(0.5) > 0, TIMEOUT_S, "the broker's acknowledgements"
        )
        assert publisher.cursor == stored[2]  # the batch of the outage
        assert publisher.publish_due(TIMEOUT_S) == 1
        assert publisher.cursor == stored[-1]
        assert meter_store.get_state(PUBLISHED) == stored[-1]
        assert after.wait_messages(4) == [grid_message(step) for step in range(1, 5)]
    finally:
        after.close()


def test_a_new_publisher_resumes_at_the_stored_cursor(
    meter_store: MeterStore,
    config: PublishConfig,
    subscriber: Subscriber,
    publishers: list[ReadingPublisher],
) -> None:
    meter_store.add_reading("grid", *grid(0))
    acknowledged = meter_store.add_reading("grid", *grid(1))
    first = started(meter_store, config, publishers)
    first.publish_due(TIMEOUT_S)
    assert subscriber.wait_messages(2) == [grid_message(0), grid_message(1)]
    first.close()
    publishers.remove(first)

    second = started(meter_store, config, publishers)
    assert second.cursor == acknowledged
    assert second.publish_due(TIMEOUT_S) == 0
    newest = meter_store.add_reading("grid", *grid(2))
    assert second.publish_due(TIMEOUT_S) == 1

    assert subscriber.wait_messages(3) == [grid_message(step) for step in range(3)]
    assert second.cursor == newest
