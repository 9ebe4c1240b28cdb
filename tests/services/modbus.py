"""A simulated SDM630 meter and a SunSpec inverter on loopback, started once per session.

Use them with `from services.modbus import ModbusDevices, modbus_devices_fixture,
modbus_session_fixture  # noqa: F401` and a `modbus_devices: ModbusDevices` argument: each test
gets both devices running, fault-free, counters at 0 and idle (0 W), on one shared
`ManualClock` that only moves when the test calls `modbus_devices.clock.advance(seconds)`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from simulation.devices import ManualClock, SimulatedSdm630, SimulatedSunSpecInverter
from smartmeter.modbus import (
    DEFAULT_BACKOFF_MAX_S,
    ModbusReader,
    Sdm630Reader,
    SunSpecReader,
)

Reader = TypeVar("Reader", Sdm630Reader, SunSpecReader)


@dataclass(frozen=True)
class ModbusDevices:
    """Both simulated devices and the clock that drives their profiles."""

    clock: ManualClock
    meter: SimulatedSdm630
    inverter: SimulatedSunSpecInverter
    readers: list[ModbusReader] = field(default_factory=list)  # closed after each test

    def reset(self) -> None:
        """Both devices running, without faults, counters at 0, idle."""
        self.meter.reset()
        self.inverter.reset()

    def meter_reader(
        self,
        backoff_initial_s: float = 0.0,
        backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> Sdm630Reader:
        """A reader of the meter; no backoff unless asked, so a test never waits for one."""
        return self._reader(Sdm630Reader, self.meter, backoff_initial_s, backoff_max_s, clock)

    def inverter_reader(
        self,
        backoff_initial_s: float = 0.0,
        backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> SunSpecReader:
        """A reader of the inverter; no backoff unless asked."""
        return self._reader(SunSpecReader, self.inverter, backoff_initial_s, backoff_max_s, clock)

    def _reader(
        self,
        kind: type[Reader],
        device: SimulatedSdm630 | SimulatedSunSpecInverter,
        backoff_initial_s: float,
        backoff_max_s: float,
        clock: Callable[[], float],
    ) -> Reader:
        reader = kind(
            device.host,
            device.port,
            device.device_id,
            timeout_s=1.0,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            clock=clock,
        )
        self.readers.append(reader)
        return reader


@pytest.fixture(scope="session", name="modbus_session")
def modbus_session_fixture() -> Iterator[ModbusDevices]:
    """The two devices for the whole session, each on a free loopback port."""
    clock = ManualClock()
    meter = SimulatedSdm630(clock=clock, device_id=1)
    inverter = SimulatedSunSpecInverter(clock=clock, device_id=1, base=40000, model=103)
    try:
        meter.start()
        inverter.start()
        yield ModbusDevices(clock=clock, meter=meter, inverter=inverter)
    finally:
        meter.close()
        inverter.close()


@pytest.fixture(name="modbus_devices")
def modbus_devices_fixture(modbus_session: ModbusDevices) -> Iterator[ModbusDevices]:
    """The session's devices, reset for this test; the readers it made are closed after it."""
    modbus_session.reset()
    yield modbus_session
    while modbus_session.readers:
        modbus_session.readers.pop().close()
