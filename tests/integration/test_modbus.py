"""The Modbus readers against simulated devices over real Modbus TCP on loopback.

Time on the devices passes only through `modbus_devices.clock.advance()`, so energy counters
are checked exactly (up to float32 rounding on the SDM630), never against wall-clock sleeps.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import pytest
from pymodbus.client import ModbusTcpClient
from services.modbus import ModbusDevices

from simulation.devices import ManualClock, SimulatedSunSpecInverter
from smartmeter.modbus import (
    BadFrame,
    CounterWentBackwards,
    DeviceUnavailable,
    MeterSample,
    SunSpecReader,
)


def f32(value: float) -> float:
    """`value` rounded to float32, as an SDM630 register carries it."""
    rounded: float = struct.unpack(">f", struct.pack(">f", value))[0]
    return rounded


def kwh_as_wh(wh: float) -> float:
    """What a reader makes of `wh` served as float32 kWh."""
    return f32(wh / 1000) * 1000


@contextmanager
def raw_client(port: int) -> Iterator[ModbusTcpClient]:
    """A plain pymodbus client, to check addresses without the readers' help."""
    client = ModbusTcpClient("127.0.0.1", port=port)
    # pymodbus leaves connect() and close() unannotated.
    assert cast(Callable[[], bool], client.connect)()
    try:
        yield client
    finally:
        cast(Callable[[], None], client.close)()


# -- the SDM630 meter --


def test_meter_reader_reads_what_the_meter_serves(modbus_devices: ModbusDevices) -> None:
    modbus_devices.meter.set_profile([(0.0, 3600.0)])
    modbus_devices.meter.set_counters(import_wh=12_345.678, export_wh=987.5)

    sample = modbus_devices.meter_reader().read()

    assert sample.power_w == 3600.0
    assert sample.import_wh == kwh_as_wh(12_345.678)
    assert sample.export_wh == kwh_as_wh(987.5)
    assert sample.voltages_v == (230.0, 231.0, 229.0)
    assert sample.currents_a == tuple(f32(3600 / 3 / volts) for volts in (230.0, 231.0, 229.0))


def test_meter_registers_are_at_the_sdm630_addresses(modbus_devices: ModbusDevices) -> None:
    modbus_devices.meter.set_profile([(0.0, -1500.0)])
    modbus_devices.meter.set_counters(import_wh=4000.0, export_wh=250.0)
    with raw_client(modbus_devices.meter.port) as client:

        def input_float(address: int) -> float:
            registers = client.read_input_registers(address, count=2, device_id=1).registers
            value = client.convert_from_registers(registers, client.DATATYPE.FLOAT32)
            assert isinstance(value, float)
            return value

        assert input_float(0x0034) == -1500.0
        assert input_float(0x0048) == 4.0
        assert input_float(0x004A) == 0.25
        assert [input_float(a) for a in (0x0000, 0x0002, 0x0004)] == [230.0, 231.0, 229.0]
        assert input_float(0x0006) == f32(1500 / 3 / 230)


def test_meter_counters_follow_the_profile(modbus_devices: ModbusDevices) -> None:
    clock, meter = modbus_devices.clock, modbus_devices.meter
    start = clock()
    meter.set_profile([(start, 3600.0), (start + 2, -1800.0)])
    reader = modbus_devices.meter_reader()

    first = reader.read()
    clock.advance(2)
    second = reader.read()
    clock.advance(4)
    third = reader.read()

    assert first.import_wh == 0.0
    assert second.import_wh == pytest.approx(2.0, abs=1e-4)  # 3.6 kW for 2 s
    assert second.export_wh == 0.0
    assert third.power_w == -1800.0
    assert third.import_wh == second.import_wh
    assert third.export_wh == pytest.approx(2.0, abs=1e-4)  # 1.8 kW exported for 4 s


def test_meter_integrates_between_steps_and_reads(modbus_devices: ModbusDevices) -> None:
    clock, meter = modbus_devices.clock, modbus_devices.meter
    start = clock()
    meter.set_profile([(start, 1000.0), (start + 1, 2600.0), (start + 3, 0.0)])
    reader = modbus_devices.meter_reader()
    clock.advance(2)  # 1000 W for 1 s, then 2600 W for 1 s: 1 Wh
    assert reader.read().import_wh == pytest.approx(1.0, abs=1e-4)
    clock.advance(10)  # 2600 W for one more second, then nothing
    assert reader.read().import_wh == pytest.approx(1.0 + 2600 / 3600, abs=1e-4)


# -- the SunSpec inverter --


def test_inverter_reader_reads_w_wh_and_phases(modbus_devices: ModbusDevices) -> None:
    modbus_devices.inverter.set_profile([(0.0, 1234.5)])  # needs W_SF = -1
    modbus_devices.inverter.set_energy(5_000_000.0)

    reader = modbus_devices.inverter_reader()
    sample = reader.read()

    assert reader.model_address == 40070
    assert sample.power_w == -1234.5
    assert sample.export_wh == 5_000_000.0
    assert sample.import_wh == 0.0
    assert sample.voltages_v == (230.0, 230.0, 230.0)
    assert sample.currents_a == (1.79, 1.79, 1.79)  # 1234.5 W / 3 / 230 V, at A_SF -2


def test_inverter_registers_are_at_the_sunspec_addresses(modbus_devices: ModbusDevices) -> None:
    modbus_devices.inverter.set_profile([(0.0, 3000.0)])
    modbus_devices.inverter.set_energy(70_000.0)
    with raw_client(modbus_devices.inverter.port) as client:
        registers = client.read_holding_registers(40000, count=124, device_id=1).registers

    def at(address: int) -> int:
        return registers[address - 40000]

    assert bytes.fromhex(f"{at(40000):04x}{at(40001):04x}") == b"SunS"
    assert (at(40002), at(40003)) == (1, 66)  # common model
    assert (at(40070), at(40071)) == (103, 50)  # three-phase inverter model
    assert (at(40084), at(40085)) == (30000, 0xFFFF)  # W, W_SF = -1
    assert (at(40094) << 16 | at(40095), at(40096)) == (70_000, 0)  # WH (acc32), WH_SF
    assert at(40122) == 0xFFFF  # end of the model chain


def test_inverter_energy_follows_the_profile(modbus_devices: ModbusDevices) -> None:
    clock = modbus_devices.clock
    modbus_devices.inverter.set_profile(lambda t: 3600.0)
    reader = modbus_devices.inverter_reader()

    before = reader.read()
    clock.advance(2)
    after = reader.read()

    assert after.export_wh - before.export_wh == 2.0  # 3.6 kW for 2 s, in whole Wh


@pytest.fixture(params=[(50000, 103), (0, 101)], ids=["base50000-m103", "base0-m101"])
def other_inverter(request: pytest.FixtureRequest) -> Iterator[SimulatedSunSpecInverter]:
    base, model = request.param
    with SimulatedSunSpecInverter(
        profile=[(0.0, 2000.0)], clock=ManualClock(), base=base, model=model
    ) as inverter:
        yield inverter


def test_inverter_discovery_at_other_bases(other_inverter: SimulatedSunSpecInverter) -> None:
    with SunSpecReader("127.0.0.1", other_inverter.port, timeout_s=1.0) as reader:
        sample = reader.read()
        assert reader.model_address == other_inverter.first_register + 70
    phases = {101: 1, 103: 3}[other_inverter.model]
    assert sample.power_w == -2000.0
    assert sample.voltages_v == (230.0,) * phases


# -- outages --


def test_meter_outage_raises_device_unavailable_then_recovers(
    modbus_devices: ModbusDevices,
) -> None:
    clock, meter = modbus_devices.clock, modbus_devices.meter
    meter.set_profile([(0.0, 3600.0)])
    backoff = ManualClock()
    reader = modbus_devices.meter_reader(backoff_initial_s=5.0, clock=backoff)
    assert reader.read().import_wh == 0.0

    meter.stop()
    with pytest.raises(DeviceUnavailable, match="unreachable"):
        reader.read()
    clock.advance(2)  # the meter still measures while unreachable
    meter.start()
    with pytest.raises(DeviceUnavailable, match=r"next attempt in 5\.0 s"):
        reader.read()  # within the backoff: no connection attempted
    backoff.advance(5)
    assert reader.read().import_wh == pytest.approx(2.0, abs=1e-4)


def test_backoff_doubles_up_to_its_bound(modbus_devices: ModbusDevices) -> None:
    backoff = ManualClock()
    reader = modbus_devices.meter_reader(backoff_initial_s=1.0, backoff_max_s=3.0, clock=backoff)
    modbus_devices.meter.stop()
    waits = []
    for _ in range(4):
        with pytest.raises(DeviceUnavailable) as raised:
            reader.read()
        waits.append(raised.value.args[0].split("next attempt in ")[1].split(" s")[0])
        backoff.advance(10)
    assert waits == ["1.0", "2.0", "3.0", "3.0"]


def test_inverter_reader_rediscovers_after_a_restart(modbus_devices: ModbusDevices) -> None:
    inverter = modbus_devices.inverter
    inverter.set_profile([(0.0, 1000.0)])
    reader = modbus_devices.inverter_reader()
    assert reader.read().power_w == -1000.0
    inverter.stop()
    with pytest.raises(DeviceUnavailable):
        reader.read()
    inverter.start()
    assert reader.read().power_w == -1000.0


def test_kept_connection_survives_a_quick_restart(modbus_devices: ModbusDevices) -> None:
    reader = modbus_devices.meter_reader()
    reader.read()
    modbus_devices.meter.stop()
    modbus_devices.meter.start()
    assert reader.read().power_w == 0.0  # the dead connection is replaced within one read


# -- broken frames --


@pytest.mark.parametrize(
    ("point", "value", "reason"),
    [
        ("import_kwh", math.nan, "import kWh = nan"),
        ("power_w", math.inf, "total power = inf"),
        ("voltage_l2", -math.inf, "voltage L2 = -inf"),
        ("export_kwh", -0.5, "negative energy counter export kWh = -0.5"),
    ],
)
def test_meter_bad_values_are_bad_frames(
    modbus_devices: ModbusDevices, point: str, value: float, reason: str
) -> None:
    modbus_devices.meter.override(point, value)
    with pytest.raises(BadFrame, match=reason) as raised:
        modbus_devices.meter_reader().read()
    assert reason in raised.value.reason


def test_negative_counter_from_the_device(modbus_devices: ModbusDevices) -> None:
    modbus_devices.meter.set_counters(import_wh=-5.0)
    with pytest.raises(BadFrame, match="negative energy counter import kWh"):
        modbus_devices.meter_reader().read()


@pytest.mark.parametrize(
    ("point", "raw", "reason"),
    [
        ("SunS", 0x53756E54, 'no SunSpec marker "SunS" at 40000, 0, 50000'),
        ("W", 0x8000, "W \\(AC power\\) is not implemented"),
        ("W_SF", 11, "W_SF = 11 is outside -10..10"),
        ("WH_SF", 0x8000, "WH_SF is not implemented"),
        ("WH_SF", -11, "WH_SF = -11 is outside -10..10"),
        ("model_id", 120, "no inverter model 101, 102 or 103"),
        ("model_length", 10, "length 10, shorter than"),
    ],
)
def test_inverter_bad_frames(
    modbus_devices: ModbusDevices, point: str, raw: int, reason: str
) -> None:
    modbus_devices.inverter.override(point, raw)
    with pytest.raises(BadFrame, match=reason):
        modbus_devices.inverter_reader().read()


def test_counter_going_backwards_is_reported_once(modbus_devices: ModbusDevices) -> None:
    meter = modbus_devices.meter
    meter.set_counters(import_wh=10_000.0)
    reader = modbus_devices.meter_reader()
    reader.read()
    meter.reset_counters()
    with pytest.raises(CounterWentBackwards, match=r"import_wh went back from 10000\.0 to 0\.0"):
        reader.read()
    assert reader.read().import_wh == 0.0  # the new baseline


def test_inverter_counter_going_backwards(modbus_devices: ModbusDevices) -> None:
    inverter = modbus_devices.inverter
    inverter.set_energy(500.0)
    reader = modbus_devices.inverter_reader()
    assert reader.read().export_wh == 500.0
    inverter.set_energy(499.0)
    with pytest.raises(CounterWentBackwards, match="export_wh went back"):
        reader.read()


def test_frozen_meter_serves_the_same_registers(modbus_devices: ModbusDevices) -> None:
    clock, meter = modbus_devices.clock, modbus_devices.meter
    meter.set_profile([(0.0, 3600.0)])
    reader = modbus_devices.meter_reader()
    meter.freeze()
    frozen = reader.read()
    clock.advance(2)
    assert_same_reading(reader.read(), frozen)
    meter.clear_faults()
    assert reader.read().import_wh == pytest.approx(2.0, abs=1e-4)


def assert_same_reading(sample: MeterSample, other: MeterSample) -> None:
    assert (sample.import_wh, sample.export_wh, sample.power_w, sample.voltages_v) == (
        other.import_wh,
        other.export_wh,
        other.power_w,
        other.voltages_v,
    )


def test_reader_recovers_after_a_bad_frame(modbus_devices: ModbusDevices) -> None:
    reader = modbus_devices.inverter_reader()
    modbus_devices.inverter.override("SunS", 0)
    with pytest.raises(BadFrame):
        reader.read()
    modbus_devices.inverter.clear_faults()
    assert reader.read().export_wh == 0.0
