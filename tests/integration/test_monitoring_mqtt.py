"""The MQTT ingest against a real mosquitto: emoncms topics, a Shelly Pro 3EM, a JSON-path
device and a PETra meter's publisher land in a real store; bad messages are counted and never
stop it; a broker outage, a store outage and an absence of the service itself lose nothing
the broker kept; and its throughput, printed (run with -s to see it)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from services.mosquitto import Mosquitto
from sqlalchemy import func, select, text
from waiting import wait_until

from monitoring.config import JsonDevice, MqttSettings, ShellyDevice
from monitoring.mqtt_ingest import MqttIngest
from monitoring.samples import COUNTER, OTHER, POWER
from monitoring.store import QUARTER_S, MonitoringStore, sample
from smartmeter.mqtt import Broker, MqttPublisher

TIMEOUT_S = 15
SHELLY = ShellyDevice("shellypro3em-0cb815fc3a50", "house3")
TASMOTA = JsonDevice(
    "tele/flat2/SENSOR", "flat2", (("power_w", "$.ENERGY.Power"), ("import", "$.ENERGY.Total"))
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MonitoringStore]:
    opened = MonitoringStore(f"sqlite:///{tmp_path / 'monitor.sqlite'}")
    yield opened
    opened.close()


def settings(mosquitto: Mosquitto, client_id: str | None = None) -> MqttSettings:
    return MqttSettings(
        host=mosquitto.host,
        port=mosquitto.port,
        client_id=client_id or f"test-{uuid.uuid4().hex[:12]}",
        shelly=(SHELLY,),
        json=(TASMOTA,),
    )


def started(ingest: MqttIngest) -> MqttIngest:
    ingest.start()
    assert ingest.wait_connected(TIMEOUT_S), "the ingest did not subscribe"
    return ingest


@pytest.fixture
def ingest(mosquitto: Mosquitto, store: MonitoringStore) -> Iterator[MqttIngest]:
    running = started(MqttIngest(store, settings(mosquitto), min_backoff_s=1, max_backoff_s=1))
    yield running
    running.close()


@pytest.fixture
def device(mosquitto: Mosquitto) -> Iterator[mqtt.Client]:
    """A plain paho client playing the devices, publishing at QoS 1."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(200)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def publish(device: mqtt.Client, topic: str, payload: str | bytes) -> None:
    device.publish(topic, payload, qos=1).wait_for_publish(TIMEOUT_S)


def value_of(store: MonitoringStore, node: str, name: str) -> Callable[[], float | None]:
    def last() -> float | None:
        feed = store.feed_named(node, name)
        return None if feed is None else feed.last_value

    return last


def refused(store: MonitoringStore, reason: str) -> int:
    for row in store.refusals():
        if (row["source"], row["reason"]) == ("mqtt", reason):
            return int(row["count"])
    return 0


def count_samples(store: MonitoringStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(sample)) or 0)


def test_every_format_lands_in_the_store_with_its_kind(
    mosquitto: Mosquitto, store: MonitoringStore, ingest: MqttIngest, device: mqtt.Client
) -> None:
    at = int(time.time()) - 120
    publish(device, "emon/emontx1/power1", "321.5")
    publish(device, "emon/emontx1", json.dumps({"vrms": 231.2, "temp1": 21.5, "time": at}))
    publish(device, f"{SHELLY.topic_prefix}/status/em:0", json.dumps({"total_act_power": -1500}))
    publish(
        device,
        f"{SHELLY.topic_prefix}/status/emdata:0",
        json.dumps({"total_act": 10_500.5, "total_act_ret": 800}),
    )
    publish(device, TASMOTA.topic, json.dumps({"ENERGY": {"Power": 412, "Total": 1502.3}}))
    meter = MqttPublisher(Broker(mosquitto.host, mosquitto.port), client_id="petra-meter1")
    with meter:
        meter.publish_node("meter1", {"grid_import_kwh": 12.5, "grid_power_w": 640.0}, at=at)
        assert meter.wait_published(TIMEOUT_S)

    wait_until(value_of(store, "meter1", "grid_power_w"), TIMEOUT_S, "the meter's power")
    wait_until(value_of(store, "flat2", "import"), TIMEOUT_S, "the JSON device's counter")
    wait_until(value_of(store, "house3", "total_act"), TIMEOUT_S, "the Shelly's counter")

    expected = {
        ("emontx1", "power1"): (321.5, POWER, "W"),
        ("emontx1", "vrms"): (231.2, OTHER, "V"),
        ("emontx1", "temp1"): (21.5, OTHER, ""),
        ("house3", "total_act_power"): (-1500.0, POWER, "W"),
        ("house3", "total_act"): (10_500.5, COUNTER, "Wh"),
        ("house3", "total_act_ret"): (800.0, COUNTER, "Wh"),
        ("flat2", "power_w"): (412.0, OTHER, ""),
        ("flat2", "import"): (1502.3, OTHER, ""),
        ("meter1", "grid_import_kwh"): (12.5, COUNTER, "kWh"),
        ("meter1", "grid_power_w"): (640.0, POWER, "W"),
    }

    def feeds_now() -> dict[tuple[str, str], tuple[float | None, str, str]]:
        return {(f.node, f.name): (f.last_value, f.kind, f.unit) for f in store.feeds()}

    # Kinds are settled just after the write that created the feeds.
    wait_until(lambda: feeds_now() == expected, TIMEOUT_S, "every feed with its kind")
    assert feeds_now() == expected
    feeds = {(f.node, f.name): f for f in store.feeds()}
    # The meter's own time is kept, and its quarter-hour is averaged from the store.
    power = feeds[("meter1", "grid_power_w")]
    assert store.samples(power.id, at, at + 1) == [(at, 640.0, False)]
    start = at - at % QUARTER_S
    assert store.averages(power.id, start, start + QUARTER_S, QUARTER_S) == [(start, 640.0)]
    assert refused(store, "bad_value") == 0


def test_a_manager_s_kind_is_never_overwritten(
    mosquitto: Mosquitto, store: MonitoringStore, device: mqtt.Client
) -> None:
    with MqttIngest(store, settings(mosquitto)) as first:
        assert first.wait_connected(TIMEOUT_S)
        publish(device, "emon/n1/heat_kwh", "5")
        wait_until(value_of(store, "n1", "heat_kwh"), TIMEOUT_S, "the first value")
        feed = store.feed_named("n1", "heat_kwh")
        assert feed is not None

        def settled() -> bool:
            return (store.feed(feed.id) or feed).kind == COUNTER

        wait_until(settled, TIMEOUT_S, "its kind set on first sight")
    store.set_feed(feed.id, kind="energy", unit="MWh")

    with MqttIngest(store, settings(mosquitto)) as second:  # a new process sees it anew
        assert second.wait_connected(TIMEOUT_S)
        publish(device, "emon/n1/heat_kwh", "6")
        wait_until(lambda: value_of(store, "n1", "heat_kwh")() == 6.0, TIMEOUT_S, "the second")
        time.sleep(0.5)  # the writer's batch interval, twice: it would have set a kind by now

    again = store.feed(feed.id)
    assert again is not None and (again.kind, again.unit) == ("energy", "MWh")


def test_a_malformed_message_is_counted_and_the_next_good_one_stored(
    store: MonitoringStore, ingest: MqttIngest, device: mqtt.Client
) -> None:
    publish(device, "emon/n2/power", "not a number")
    publish(device, "emon/n2", '{"a": 1, "b": "x"}')
    publish(device, f"{SHELLY.topic_prefix}/status/em:0", b"\xff")
    publish(device, "emon/n2/power", "42")

    wait_until(value_of(store, "n2", "power"), TIMEOUT_S, "the good message")
    wait_until(lambda: refused(store, "bad_payload") == 1, TIMEOUT_S, "the Shelly's refusal")

    assert refused(store, "bad_value") == 2
    assert store.feed_named("n2", "a") is None  # nothing of a refused message is stored
    assert ingest.connected


def test_ingestion_resumes_after_the_broker_restarts(
    mosquitto: Mosquitto, store: MonitoringStore, ingest: MqttIngest
) -> None:
    try:
        mosquitto.stop()
        wait_until(lambda: not ingest.connected, TIMEOUT_S, "the ingest to notice the outage")
        time.sleep(1.5)  # a few reconnection attempts fail meanwhile
    finally:
        mosquitto.start()
    assert ingest.wait_connected(TIMEOUT_S), "the ingest did not reconnect"

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        publish(client, "emon/n3/power", "7")
        wait_until(value_of(store, "n3", "power"), TIMEOUT_S, "a value after the outage")
    finally:
        client.disconnect()
        client.loop_stop()


def test_messages_sent_while_the_service_was_away_arrive_when_it_is_back(
    mosquitto: Mosquitto, store: MonitoringStore, device: mqtt.Client
) -> None:
    client_id = f"test-{uuid.uuid4().hex[:12]}"
    started(MqttIngest(store, settings(mosquitto, client_id))).close()

    at = int(time.time()) - 60
    for n in range(5):
        publish(device, "emon/n4", json.dumps({"power": n, "time": at + n}))
    again = started(MqttIngest(store, settings(mosquitto, client_id)))
    try:
        wait_until(lambda: value_of(store, "n4", "power")() == 4.0, TIMEOUT_S, "the queued ones")
    finally:
        again.close()

    feed = store.feed_named("n4", "power")
    assert feed is not None
    assert [v for _, v, _ in store.samples(feed.id, at, at + 5)] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_a_store_outage_keeps_the_batch_and_overload_is_refused_and_counted(
    mosquitto: Mosquitto, store: MonitoringStore, device: mqtt.Client
) -> None:
    at = int(time.time()) - 600
    ingest = started(MqttIngest(store, settings(mosquitto), max_pending=4))
    try:
        publish(device, "emon/n5", json.dumps({"p": -1, "time": at - 1}))
        wait_until(value_of(store, "n5", "p"), TIMEOUT_S, "the feed, before the outage")
        with store.engine.begin() as conn:  # the samples' table is away: every write fails
            conn.execute(text("ALTER TABLE mon_sample RENAME TO mon_sample_away"))
        for n in range(6):
            publish(device, "emon/n5", json.dumps({"p": n, "time": at + n}))
        wait_until(lambda: refused(store, "overloaded") == 2, TIMEOUT_S, "two overloaded")
        assert ingest.pending == 4
        time.sleep(0.5)  # the writer retries meanwhile, and fails
        assert ingest.pending == 4
        with store.engine.begin() as conn:
            conn.execute(text("ALTER TABLE mon_sample_away RENAME TO mon_sample"))
        wait_until(lambda: ingest.pending == 0, TIMEOUT_S, "the kept batch to be stored")
    finally:
        ingest.close()

    feed = store.feed_named("n5", "p")
    assert feed is not None
    assert [v for _, v, _ in store.samples(feed.id, at, at + 10)] == [0.0, 1.0, 2.0, 3.0]
    assert refused(store, "overloaded") == 2


CHUNK = 500  # messages a broker queues for one client: mosquitto drops past 1000 by default


def publish_lines(
    mosquitto: Mosquitto, ingest: MqttIngest, topic: str, lines: list[str], samples_each: int = 1
) -> None:
    """Each line a QoS 1 message to `topic`, from another process (a publisher in this one
    would share the interpreter lock with the ingest), in chunks the broker keeps whole: each
    sent once the ingest has received the one before."""
    executable = shutil.which("mosquitto_pub")
    if executable is None:
        pytest.skip("mosquitto_pub not installed: Debian's mosquitto-clients package has it")
    command = [executable, "-h", mosquitto.host, "-p", str(mosquitto.port), "-q", "1", "-t", topic]
    before = ingest.stored + ingest.pending
    with subprocess.Popen([*command, "-l"], stdin=subprocess.PIPE, text=True) as publisher:
        assert publisher.stdin is not None
        for first in range(0, len(lines), CHUNK):
            chunk = lines[first : first + CHUNK]
            publisher.stdin.write("\n".join(chunk) + "\n")
            publisher.stdin.flush()
            received = before + (first + len(chunk)) * samples_each
            wait_until(lambda: ingest.stored + ingest.pending >= received, 30, "a chunk", 0.002)  # noqa: B023
        publisher.stdin.close()
        assert publisher.wait(30) == 0


def test_throughput_of_twenty_thousand_samples_in_json_messages(
    mosquitto: Mosquitto, store: MonitoringStore, ingest: MqttIngest
) -> None:
    messages, inputs = 2_000, 10
    at = int(time.time()) - messages - 10
    lines = [
        json.dumps({**{f"in{k}": n + k for k in range(inputs)}, "time": at + n})
        for n in range(messages)
    ]
    begin = time.monotonic()
    publish_lines(mosquitto, ingest, "emon/bench", lines, inputs)
    wait_until(lambda: count_samples(store) >= messages * inputs, 60, "every sample", 0.02)
    elapsed = time.monotonic() - begin

    assert count_samples(store) == messages * inputs
    assert refused(store, "overloaded") == 0
    print(
        f"\nMQTT ingest: {messages * inputs} samples in {messages} JSON messages stored in "
        f"{elapsed:.2f} s: {messages * inputs / elapsed:,.0f} samples/s"
    )


def test_throughput_of_twenty_thousand_one_value_messages(
    mosquitto: Mosquitto, store: MonitoringStore, ingest: MqttIngest
) -> None:
    messages = 20_000
    begin = time.monotonic()
    publish_lines(mosquitto, ingest, "emon/bench/power_w", [str(n) for n in range(messages)])
    # Values of one input in one second replace one another: count what was written.
    wait_until(lambda: ingest.stored >= messages, 60, "every message", 0.02)
    elapsed = time.monotonic() - begin

    assert ingest.stored == messages
    feed = store.feed_named("bench", "power_w")
    assert feed is not None and feed.last_value == messages - 1
    print(
        f"\nMQTT ingest: {messages} one-value messages stored in {elapsed:.2f} s: "
        f"{messages / elapsed:,.0f} samples/s"
    )
