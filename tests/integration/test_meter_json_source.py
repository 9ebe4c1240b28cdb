"""A `json` MQTT source (`SourceRunner` with `format = "json"`) against a real mosquitto.

The device's payloads carry their own time (`time_path`), so every reading's time, and so
every interval's energy, is exact; only the refused payload takes the runner's manual clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from services.mosquitto import Mosquitto
from waiting import wait_until

from simulation.devices import ManualClock
from smartmeter.config import SourceConfig
from smartmeter.energy import IntervalStatus, MeterConfig
from smartmeter.sources import SourceRunner
from smartmeter.store import MeterStore

EPOCH = 1_700_000_000
INTERVAL_S = 10
STEP_S = 5
TIMEOUT_S = 10

MEASURED = IntervalStatus.MEASURED
SUSPECT = IntervalStatus.SUSPECT


@pytest.fixture
def device(mosquitto: Mosquitto) -> Iterator[mqtt.Client]:
    """A plain paho client playing the meter, publishing at QoS 1."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def publish(device: mqtt.Client, topic: str, payload: bytes) -> None:
    device.publish(topic, payload, qos=1).wait_for_publish(TIMEOUT_S)


def json_runner(
    mosquitto: Mosquitto,
    store: MeterStore,
    clock: ManualClock,
    topic: str,
    paths: dict[str, object],
) -> SourceRunner:
    source = SourceConfig(
        "mqtt",
        mosquitto.host,
        mosquitto.port,
        0.1,
        1,
        {"format": "json", "topic": topic, "paths": paths, "time_path": "$.ts"},
        name="house",
    )
    energy = MeterConfig(interval_s=INTERVAL_S, epoch=EPOCH)
    return SourceRunner("house", source, energy, store, clock=clock)


def readings_stored(store: MeterStore, count: int) -> Callable[[], bool]:
    return lambda: len(store.source_readings("house")) >= count


def closed(store: MeterStore, last: int) -> Callable[[], bool]:
    """Whether intervals 0 to `last` are closed (an interval not closed reads as missing)."""
    return lambda: (
        IntervalStatus.MISSING
        not in [total.status for total in store.intervals(0, last, ["house"])]
    )


def test_a_json_source_turns_published_counters_into_intervals_past_a_malformed_payload(
    mosquitto: Mosquitto, meter_store: MeterStore, device: mqtt.Client
) -> None:
    topic = "test/json-source/state"
    clock = ManualClock(EPOCH + 12)  # the receive time of the malformed payload: interval 1
    paths: dict[str, object] = {
        "$.total.in_kwh": {"quantity": "import_wh", "factor": 1000},
        "$.phases[1].out_wh": "export_wh",
        "$.power": "power_w",
    }
    runner = json_runner(mosquitto, meter_store, clock, topic, paths)
    runner.start()
    try:
        assert runner.wait_connected(TIMEOUT_S), mosquitto.logs()

        def state(step: int) -> bytes:  # 2 Wh imported and 1 Wh exported every 5 s
            document = {
                "ts": EPOCH + step * STEP_S,
                "total": {"in_kwh": 4.0 + step * 0.002},
                "phases": [{"out_wh": 0}, {"out_wh": 50 + step}],
                "power": 720.0,
            }
            return json.dumps(document).encode()

        for step in range(3):  # 0, 5, 10 s
            publish(device, topic, state(step))
        publish(device, topic, b'{"total": {"in_kwh": ')
        for step in range(3, 7):  # 15 .. 30 s: after the refused payload, still counted
            publish(device, topic, state(step))

        wait_until(readings_stored(meter_store, 8), TIMEOUT_S, "eight stored readings")
        # Interval 2 closes with the reading at 30 s, the last one published.
        wait_until(closed(meter_store, 2), TIMEOUT_S, "intervals 0 to 2 to close")
    finally:
        runner.stop()

    stored = meter_store.source_readings("house")
    assert [r.problem is None for r in stored] == [True] * 3 + [False] + [True] * 4
    refused = stored[3]
    assert (refused.at, refused.import_wh, refused.export_wh, refused.power_w) == (
        EPOCH + 12,
        None,
        None,
        None,
    )
    assert refused.problem is not None and "not JSON" in refused.problem
    counted = [r for r in stored if r.problem is None]
    assert [(r.at, r.export_wh, r.power_w) for r in counted] == [
        (EPOCH + step * STEP_S, 50.0 + step, 720.0) for step in range(7)
    ]
    assert [r.import_wh for r in counted] == pytest.approx([4000.0 + step * 2 for step in range(7)])

    totals = meter_store.intervals(0, 2, ["house"])
    # 4 Wh = 14 400 J imported and 2 Wh = 7 200 J exported in each 10 s interval.
    assert [(t.import_j, t.export_j, t.net_j) for t in totals] == [(14_400, 7_200, 7_200)] * 3
    assert [t.status for t in totals] == [MEASURED, SUSPECT, MEASURED]
    assert any("not JSON" in reason for reason in totals[1].reasons)
    checkpoint = meter_store.interval_checkpoint("house")
    assert checkpoint is not None and checkpoint["seq"] == stored[-1].seq


def test_a_json_source_without_an_export_counter_counts_export_as_zero(
    mosquitto: Mosquitto, meter_store: MeterStore, device: mqtt.Client
) -> None:
    topic = "test/json-source/import-only"
    runner = json_runner(
        mosquitto,
        meter_store,
        ManualClock(EPOCH),
        topic,
        {"$.e": "import_wh", "$.missing": "power_w"},
    )
    runner.start()
    try:
        assert runner.wait_connected(TIMEOUT_S), mosquitto.logs()
        publish(device, topic, b'{"ts": 1700000000, "e": 100}')  # no $.missing: refused
        for step in range(5):  # 0 .. 20 s, 1 Wh every 5 s
            publish(
                device,
                topic,
                json.dumps({"ts": EPOCH + step * STEP_S, "e": 100 + step, "missing": 1}).encode(),
            )
        wait_until(readings_stored(meter_store, 6), TIMEOUT_S, "six stored readings")
        wait_until(closed(meter_store, 1), TIMEOUT_S, "intervals 0 and 1 to close")
    finally:
        runner.stop()

    first, *counted = meter_store.source_readings("house")
    assert first.problem is not None and "no value at $.missing" in first.problem
    assert [(r.at, r.import_wh, r.export_wh) for r in counted] == [
        (EPOCH + step * STEP_S, 100.0 + step, None) for step in range(5)
    ]
    totals = meter_store.intervals(0, 1, ["house"])
    assert [(t.import_j, t.export_j, t.net_j) for t in totals] == [(7_200, 0, 7_200)] * 2
    # Refused before the meter's first reading, it has no interval to mark.
    assert [t.status for t in totals] == [MEASURED, MEASURED]
