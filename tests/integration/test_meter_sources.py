"""`SourceRunner` against the simulated Modbus devices and a real mosquitto, on each store back-end.

Device time passes only through `modbus_devices.clock.advance()`, and the runner is stepped by
calling `poll_once()`, so every reading's time, and so every interval's energy, is exact up to
the SDM630's float32 registers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from services.modbus import ModbusDevices
from services.mosquitto import Mosquitto
from waiting import wait_until

from simulation.devices import ManualClock
from smartmeter.config import SourceConfig
from smartmeter.energy import IntervalEnergy, IntervalStatus, MeterConfig
from smartmeter.mqtt import Broker, MqttPublisher
from smartmeter.sources import SourceRunner
from smartmeter.store import MeterStore

INTERVAL_S = 10
POLL_S = 5
WATTS = 3600.0  # 1 Wh a second: 36 kJ an interval
INTERVAL_J = 36_000
TIMEOUT_S = 10

MEASURED = IntervalStatus.MEASURED
SUSPECT = IntervalStatus.SUSPECT
MISSING = IntervalStatus.MISSING


@pytest.fixture
def runners() -> Iterator[list[SourceRunner]]:
    """Runners a test made, stopped after it."""
    made: list[SourceRunner] = []
    yield made
    for runner in made:
        runner.stop()


def aligned_epoch(clock: ManualClock) -> int:
    """Move the shared clock (other tests advance it) to a whole interval, the epoch."""
    epoch = math.ceil(clock() / INTERVAL_S) * INTERVAL_S + INTERVAL_S
    clock.advance(epoch - clock())
    return epoch


def meter_source(devices: ModbusDevices) -> SourceConfig:
    meter = devices.meter
    return SourceConfig("sdm630", meter.host, meter.port, POLL_S, meter.device_id, {})


def grid_runner(
    devices: ModbusDevices,
    store: MeterStore,
    epoch: int,
    runners: list[SourceRunner],
    max_gap_s: int = 60,
) -> SourceRunner:
    energy = MeterConfig(interval_s=INTERVAL_S, epoch=epoch, max_gap_s=max_gap_s)
    runner = SourceRunner(
        "grid",
        meter_source(devices),
        energy,
        store,
        clock=devices.clock,
        backoff_clock=devices.clock,  # the device clock times the reconnect backoff too
    )
    runners.append(runner)
    return runner


def poll_for(runner: SourceRunner, clock: ManualClock, seconds: int) -> None:
    """Poll every POLL_S of device time for `seconds`, after a poll now."""
    runner.poll_once()
    for _ in range(seconds // POLL_S):
        clock.advance(POLL_S)
        runner.poll_once()


def statuses(store: MeterStore, last: int, source: str = "grid") -> list[IntervalStatus]:
    return [total.status for total in store.intervals(0, last, [source])]


def net(store: MeterStore, last: int, source: str = "grid") -> list[int]:
    return [total.net_j for total in store.intervals(0, last, [source])]


def close_to(values: list[int], expected: list[int], joules: int = 2) -> bool:
    """Whether the energies match within `joules` each (the SDM630's float32 kWh)."""
    return len(values) == len(expected) and all(
        abs(value - want) <= joules for value, want in zip(values, expected, strict=True)
    )


# -- Modbus


def test_constant_power_gives_its_energy_in_every_interval(
    modbus_devices: ModbusDevices, meter_store: MeterStore, runners: list[SourceRunner]
) -> None:
    clock = modbus_devices.clock
    epoch = aligned_epoch(clock)
    modbus_devices.meter.set_profile([(0.0, WATTS)])
    runner = grid_runner(modbus_devices, meter_store, epoch, runners)

    poll_for(runner, clock, 4 * INTERVAL_S)

    assert statuses(meter_store, 3) == [MEASURED] * 4
    assert close_to(net(meter_store, 3), [INTERVAL_J] * 4)
    stored = meter_store.source_readings("grid")
    assert [r.at - epoch for r in stored] == [float(t) for t in range(0, 41, POLL_S)]
    assert all(r.problem is None and r.power_w == WATTS for r in stored)
    assert meter_store.interval_checkpoint("grid")["seq"] == stored[-1].seq


def test_an_outage_leaves_its_intervals_missing_and_polling_resumes(
    modbus_devices: ModbusDevices,
    meter_store: MeterStore,
    runners: list[SourceRunner],
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = modbus_devices.clock
    epoch = aligned_epoch(clock)
    modbus_devices.meter.set_profile([(0.0, WATTS)])
    runner = grid_runner(modbus_devices, meter_store, epoch, runners, max_gap_s=12)
    poll_for(runner, clock, 20)  # readings at 0..20 s

    modbus_devices.meter.stop()
    with caplog.at_level(logging.WARNING, logger="smartmeter.sources"):
        for _ in range(4):  # 25..40 s, while the reader's backoff grows to 8 s
            clock.advance(POLL_S)
            runner.poll_once()
        modbus_devices.meter.start()
        for _ in range(6):  # 45 s still in backoff; readings again from 50 s
            clock.advance(POLL_S)
            runner.poll_once()

    assert statuses(meter_store, 6) == [MEASURED] * 2 + [MISSING] * 3 + [MEASURED] * 2
    assert close_to(net(meter_store, 6), [INTERVAL_J, INTERVAL_J, 0, 0, 0, INTERVAL_J, INTERVAL_J])
    stored = meter_store.source_readings("grid")
    assert [r.at - epoch for r in stored][-4:] == [55.0, 60.0, 65.0, 70.0]
    warnings = [record.getMessage() for record in caplog.records]
    assert len([m for m in warnings if "unreachable" in m]) == 1  # once per outage
    assert len([m for m in warnings if "answers again" in m]) == 1


def test_nan_and_a_counter_going_back_are_stored_refused_and_mark_suspect(
    modbus_devices: ModbusDevices, meter_store: MeterStore, runners: list[SourceRunner]
) -> None:
    clock = modbus_devices.clock
    meter = modbus_devices.meter
    epoch = aligned_epoch(clock)
    meter.set_profile([(0.0, WATTS)])
    meter.set_counters(import_wh=2_000.0)  # over reset_below_j: going back is not a reset
    runner = grid_runner(modbus_devices, meter_store, epoch, runners)
    poll_for(runner, clock, 10)  # 0..10 s

    clock.advance(POLL_S)  # 15 s: a NaN frame
    meter.override("import_kwh", math.nan)
    runner.poll_once()
    meter.clear_faults()
    clock.advance(POLL_S)  # 20 s
    runner.poll_once()
    before, _ = meter.counters_wh
    meter.set_counters(import_wh=before - 500)  # back by 500 Wh at 20 s
    clock.advance(POLL_S)  # 25 s: the reader refuses it, then takes it as its baseline
    runner.poll_once()
    clock.advance(POLL_S)  # 30 s: the interval meter refuses it
    runner.poll_once()
    meter.set_counters(import_wh=before + 10)  # as if it had never gone back
    poll_for(runner, clock, 20)  # 30..50 s

    problems = [(r.at - epoch, r.problem) for r in meter_store.source_readings("grid") if r.problem]
    assert [at for at, _ in problems] == [15.0, 25.0, 30.0]
    assert "refused frame" in str(problems[0][1]) and "nan" in str(problems[0][1])
    assert "went back" in str(problems[1][1])
    assert "(backwards)" in str(problems[2][1])
    assert statuses(meter_store, 4) == [MEASURED, SUSPECT, SUSPECT, SUSPECT, MEASURED]
    assert close_to(net(meter_store, 4), [INTERVAL_J] * 5)
    (interval_1,) = meter_store.intervals(1, 1, ["grid"])
    assert any("nan" in reason for reason in interval_1.reasons)


def test_a_restarted_runner_continues_and_replays_a_reading_stored_before_the_crash(
    modbus_devices: ModbusDevices, meter_store: MeterStore, runners: list[SourceRunner]
) -> None:
    clock = modbus_devices.clock
    epoch = aligned_epoch(clock)
    modbus_devices.meter.set_profile([(0.0, WATTS)])
    first = grid_runner(modbus_devices, meter_store, epoch, runners)
    poll_for(first, clock, 20)  # intervals 0 and 1 closed, the reading at 20 s checkpointed
    first.stop()
    assert statuses(meter_store, 2) == [MEASURED, MEASURED, MISSING]

    clock.advance(2 * POLL_S)  # 30 s: stored, then the "crash" before it reached the meter
    import_wh, export_wh = modbus_devices.meter.counters_wh
    seq = meter_store.add_reading("grid", clock(), import_wh, export_wh, WATTS)

    second = grid_runner(modbus_devices, meter_store, epoch, runners)
    assert statuses(meter_store, 2) == [MEASURED] * 3  # replayed: it closed interval 2
    assert meter_store.interval_checkpoint("grid")["seq"] == seq
    for _ in range(2):
        clock.advance(POLL_S)
        second.poll_once()

    assert statuses(meter_store, 3) == [MEASURED] * 4
    assert close_to(net(meter_store, 3), [INTERVAL_J] * 4)


# -- MQTT


def publish_raw(mosquitto: Mosquitto, topic: str, payload: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(TIMEOUT_S)
    finally:
        client.disconnect()
        client.loop_stop()


def test_an_emoncms_source_turns_published_counters_into_intervals(
    mosquitto: Mosquitto, meter_store: MeterStore, runners: list[SourceRunner]
) -> None:
    epoch = 1_700_000_000
    clock = ManualClock(epoch + 21)  # the receive time of the malformed payload
    node = "sources-test"
    source = SourceConfig(
        "mqtt",
        mosquitto.host,
        mosquitto.port,
        0.1,
        1,
        {
            "format": "emoncms",
            "topic": f"emon/{node}",
            "node": node,
            "inputs": {"import": {"quantity": "import_wh", "factor": 1000}, "export": "export_wh"},
        },
    )
    energy = MeterConfig(interval_s=INTERVAL_S, epoch=epoch)
    runner = SourceRunner("house", source, energy, meter_store, clock=clock)
    runners.append(runner)
    runner.start()
    assert runner.wait_connected(TIMEOUT_S)

    with MqttPublisher(Broker(mosquitto.host, mosquitto.port)) as publisher:
        for step in range(5):  # 1 Wh imported and 0.5 Wh exported every 5 s
            inputs = {"import": 3.0 + step / 1000, "export": 100.0 + step / 2}
            publisher.publish_node(node, inputs, at=epoch + step * POLL_S)
        assert publisher.wait_published(TIMEOUT_S)
    publish_raw(mosquitto, f"emon/{node}", b'{"import": ')

    def settled() -> bool:
        refused = [r for r in meter_store.source_readings("house") if r.problem]
        return bool(refused) and MISSING not in statuses(meter_store, 1, "house")

    wait_until(settled, TIMEOUT_S, "two intervals and the refused payload")
    totals = meter_store.intervals(0, 1, ["house"])
    assert [(t.import_j, t.export_j, t.net_j, t.status) for t in totals] == [
        (7_200, 3_600, 3_600, MEASURED)
    ] * 2
    (refused,) = [r for r in meter_store.source_readings("house") if r.problem]
    assert refused.at == epoch + 21
    assert refused.problem is not None and "not JSON" in refused.problem


# -- totals across sources


def closed(interval: int, net_j: int, status: IntervalStatus) -> IntervalEnergy:
    return IntervalEnergy(interval, max(net_j, 0), max(-net_j, 0), net_j, status, 2, 1, ())


def test_interval_totals_add_sources_and_take_the_worst_status(meter_store: MeterStore) -> None:
    meter_store.close_intervals("grid", [closed(0, 500, MEASURED), closed(1, 700, MEASURED)], {})
    meter_store.close_intervals("solar", [closed(0, -200, IntervalStatus.PARTIAL)], {"seq": 3})

    totals = meter_store.intervals(0, 2)

    assert [(t.net_j, t.status) for t in totals] == [
        (300, IntervalStatus.PARTIAL),
        (700, MISSING),  # solar has not closed it
        (0, MISSING),
    ]
    assert totals[1].reasons == ("solar: not closed",)
    assert meter_store.interval_checkpoint("solar") == {"seq": 3}
