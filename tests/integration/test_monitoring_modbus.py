"""The Modbus poller against the simulated SDM630 meter and SunSpec inverter over real Modbus
TCP on loopback: readings land as feeds with their kinds; a device that goes away is counted
once and polled again when it is back; a broken frame is counted and never stops the poller."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from services.modbus import ModbusDevices
from waiting import wait_until

from monitoring.config import ModbusDevice
from monitoring.modbus_poller import ModbusPoller
from monitoring.samples import COUNTER, OTHER, POWER
from monitoring.store import MonitoringStore

TIMEOUT_S = 10
INTERVAL_S = 0.1


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MonitoringStore]:
    opened = MonitoringStore(f"sqlite:///{tmp_path / 'monitor.sqlite'}")
    yield opened
    opened.close()


@pytest.fixture
def poller(store: MonitoringStore, modbus_devices: ModbusDevices) -> Iterator[ModbusPoller]:
    meter, inverter = modbus_devices.meter, modbus_devices.inverter
    devices = [
        ModbusDevice("sdm630", meter.host, "school", meter.port, meter.device_id, INTERVAL_S),
        ModbusDevice("sunspec", inverter.host, "pv-roof", inverter.port, 1, INTERVAL_S),
    ]
    with ModbusPoller(store, devices, backoff_initial_s=0.05, backoff_max_s=0.2) as running:
        yield running


def value_of(store: MonitoringStore, node: str, name: str) -> Callable[[], float | None]:
    def last() -> float | None:
        feed = store.feed_named(node, name)
        return None if feed is None else feed.last_value

    return last


def refused(store: MonitoringStore, reason: str) -> int:
    for row in store.refusals():
        if (row["source"], row["reason"]) == ("modbus", reason):
            return int(row["count"])
    return 0


def test_a_meter_and_an_inverter_are_polled_into_feeds_with_their_kinds(
    store: MonitoringStore, modbus_devices: ModbusDevices
) -> None:
    modbus_devices.meter.set_profile([(0.0, 3000.0)])
    modbus_devices.meter.set_counters(import_wh=12_500.0, export_wh=250.0)
    modbus_devices.inverter.set_profile([(0.0, 2000.0)])  # production, W
    modbus_devices.inverter.set_energy(40_000.0)
    meter, inverter = modbus_devices.meter, modbus_devices.inverter
    devices = [
        ModbusDevice("sdm630", meter.host, "school", meter.port, meter.device_id, INTERVAL_S),
        ModbusDevice("sunspec", inverter.host, "pv-roof", inverter.port, 1, INTERVAL_S),
    ]
    expected = {
        ("school", "power"): (3000.0, POWER, "W"),
        ("school", "import_kwh"): (12.5, COUNTER, "kWh"),
        ("school", "export_kwh"): (0.25, COUNTER, "kWh"),
        ("school", "voltage_l1"): (230.0, OTHER, "V"),
        ("school", "voltage_l2"): (231.0, OTHER, "V"),
        ("school", "voltage_l3"): (229.0, OTHER, "V"),
        ("pv-roof", "power"): (-2000.0, POWER, "W"),
        ("pv-roof", "import_kwh"): (0.0, COUNTER, "kWh"),
        ("pv-roof", "export_kwh"): (40.0, COUNTER, "kWh"),
    }

    def feeds_now() -> dict[tuple[str, str], tuple[float | None, str, str]]:
        return {
            (f.node, f.name): (f.last_value, f.kind, f.unit)
            for f in store.feeds()
            if (f.node, f.name) in expected
        }

    with ModbusPoller(store, devices):
        wait_until(lambda: feeds_now() == expected, TIMEOUT_S, "both devices' feeds")

    assert feeds_now() == expected
    currents = {f.name: f.unit for f in store.feeds() if f.name.startswith("current_")}
    assert len(currents) >= 3 and set(currents.values()) == {"A"}
    power = store.feed_named("school", "power")
    assert power is not None and power.last_time is not None
    assert abs(power.last_time - time.time()) < 5  # stamped with the poller's clock
    assert store.refusals() == []


def test_a_device_that_goes_away_is_counted_once_and_polled_again_when_back(
    store: MonitoringStore, modbus_devices: ModbusDevices, poller: ModbusPoller
) -> None:
    modbus_devices.meter.set_counters(import_wh=1_000.0)
    wait_until(lambda: value_of(store, "school", "import_kwh")() == 1.0, TIMEOUT_S, "a reading")

    modbus_devices.meter.stop()
    wait_until(lambda: refused(store, "device_unavailable") == 1, TIMEOUT_S, "the outage")
    time.sleep(20 * INTERVAL_S)  # many polls fail meanwhile, each with the backoff
    assert refused(store, "device_unavailable") == 1
    inverter_before = store.feed_named("pv-roof", "power")
    assert inverter_before is not None

    modbus_devices.meter.set_counters(import_wh=2_000.0)
    modbus_devices.meter.start()
    wait_until(lambda: value_of(store, "school", "import_kwh")() == 2.0, TIMEOUT_S, "back")
    # The inverter kept being polled through the meter's outage.
    inverter_after = store.feed_named("pv-roof", "power")
    assert inverter_after is not None and inverter_after.last_time is not None
    assert inverter_after.last_time >= (inverter_before.last_time or 0)

    modbus_devices.meter.stop()
    wait_until(lambda: refused(store, "device_unavailable") == 2, TIMEOUT_S, "a second outage")
    modbus_devices.meter.start()


def test_a_broken_frame_is_counted_and_the_poller_goes_on(
    store: MonitoringStore, modbus_devices: ModbusDevices, poller: ModbusPoller
) -> None:
    wait_until(value_of(store, "school", "voltage_l1"), TIMEOUT_S, "a first reading")
    modbus_devices.meter.override("power_w", float("nan"))
    wait_until(lambda: refused(store, "bad_frame") >= 2, TIMEOUT_S, "the broken frames")

    modbus_devices.meter.clear_faults()
    modbus_devices.meter.override("voltage_l1", 240.0)
    wait_until(lambda: value_of(store, "school", "voltage_l1")() == 240.0, TIMEOUT_S, "a new one")


def test_a_counter_that_goes_backwards_is_counted(
    store: MonitoringStore, modbus_devices: ModbusDevices, poller: ModbusPoller
) -> None:
    modbus_devices.meter.set_counters(import_wh=5_000.0)
    wait_until(lambda: value_of(store, "school", "import_kwh")() == 5.0, TIMEOUT_S, "a reading")

    modbus_devices.meter.set_counters(import_wh=100.0)

    wait_until(lambda: refused(store, "counter_went_backwards") == 1, TIMEOUT_S, "the reset")
    # The reader takes the new value as its baseline: the next reading is stored.
    wait_until(
        lambda: value_of(store, "school", "import_kwh")() == pytest.approx(0.1), TIMEOUT_S, "base"
    )
