"""Modbus TCP readers for the meters a smart-meter node polls (DESIGN.md sections 10 and 11).

Two devices are spoken to:

- an Eastron SDM630-style meter: input registers (function 0x04), each value a big-endian
  float32 in two registers (`SDM630_*` below);
- a SunSpec inverter: holding registers starting with "SunS" at 40000, 0 or 50000, then a chain
  of models (id, length, points) ending in id 0xFFFF; the reader walks the chain to the inverter
  model 101, 102 or 103 and reads W and WH with their scale factors (`SUNSPEC_*` below).

Each reader's `read()` returns a `MeterSample` or raises `DeviceUnavailable` (no connection: the
caller retries later; the reader reconnects by itself with a bounded backoff) or `BadFrame` (the
device answered, but with something no meter should say).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Self, cast

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from service.clock import now as ledger_now

FLOAT32 = ModbusTcpClient.DATATYPE.FLOAT32
UINT32 = ModbusTcpClient.DATATYPE.UINT32
INT16 = ModbusTcpClient.DATATYPE.INT16

# Eastron SDM630 input registers (0-based), each a float32 in two registers.
SDM630_VOLTAGES = (0x0000, 0x0002, 0x0004)  # L1, L2, L3 to neutral, V
SDM630_CURRENTS = (0x0006, 0x0008, 0x000A)  # L1, L2, L3, A
SDM630_TOTAL_POWER = 0x0034  # total system power, W (positive: import)
SDM630_IMPORT_KWH = 0x0048  # total import active energy, kWh
SDM630_EXPORT_KWH = 0x004A  # total export active energy, kWh

# SunSpec (0-based holding registers). The model header is (id, length); points follow it.
SUNSPEC_BASES = (40000, 0, 50000)  # where the "SunS" marker may be, in the standard's order
SUNSPEC_MARKER = (0x5375, 0x6E53)  # "SunS"
SUNSPEC_COMMON_MODEL = 1
SUNSPEC_COMMON_LENGTH = 66
SUNSPEC_END_MODEL = 0xFFFF
SUNSPEC_INVERTER_MODELS = {101: 1, 102: 2, 103: 3}  # model id -> number of phases
SUNSPEC_INVERTER_LENGTH = 50
# Point offsets inside the inverter models 101/102/103 (from the first point, after the header).
SUNSPEC_A, SUNSPEC_APH, SUNSPEC_A_SF = 0, (1, 2, 3), 4
SUNSPEC_PHV, SUNSPEC_V_SF = (8, 9, 10), 11
SUNSPEC_W, SUNSPEC_W_SF = 12, 13
SUNSPEC_WH, SUNSPEC_WH_SF = 22, 24  # WH is an acc32 over offsets 22 and 23
SUNSPEC_POINTS_READ = 25  # offsets 0..24: currents, voltages, W and WH with their scale factors
# With "SunS" at 40000 and the common model right after it, the inverter header is at 40070 and
# W is at 40084, W_SF 40085, WH 40094-40095, WH_SF 40096 (0-based). DESIGN.md section 11 says
# 40083/40084/40093/40095: one less, as if counted from a header one register earlier; we follow
# the standard's layout, which the reader discovers anyway instead of trusting fixed addresses.
SUNSPEC_NOT_IMPLEMENTED_INT16 = 0x8000
SUNSPEC_NOT_IMPLEMENTED_UINT16 = 0xFFFF
SUNSPEC_SCALE_FACTOR_RANGE = range(-10, 11)  # the standard's sunssf range
SUNSPEC_MAX_MODELS = 100  # a chain longer than this is broken, not long

DEFAULT_TIMEOUT_S = 2.0
DEFAULT_BACKOFF_INITIAL_S = 1.0
DEFAULT_BACKOFF_MAX_S = 60.0

RegisterKind = Literal["input", "holding"]


class DeviceUnavailable(Exception):
    """The device cannot be reached now (refused, timed out, dropped); try again later."""


class BadFrame(Exception):
    """The device answered with values no working meter reports; `reason` says which and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CounterWentBackwards(BadFrame):
    """An energy counter is lower than at the previous read (a reset or a replaced meter).

    Raised once; the reader then takes the new value as its baseline.
    """


@dataclass(frozen=True)
class MeterSample:
    """One reading of a meter or an inverter.

    Energies are the device's lifetime counters in Wh; `power_w` is positive while the import
    counter grows and negative while the export counter grows (an inverter producing 3 kW reads
    -3000). Voltages (V) and currents (A) are per phase, when the device reports them.
    """

    time: float  # ledger Unix seconds (`service.clock`) when the read completed
    import_wh: float
    export_wh: float
    power_w: float
    voltages_v: tuple[float, ...] | None = None
    currents_a: tuple[float, ...] | None = None


def _exception_text(response: ExceptionResponse) -> str:
    names = {
        1: "illegal function",
        2: "illegal data address",
        3: "illegal data value",
        4: "device failure",
        6: "device busy",
        10: "gateway path unavailable",
        11: "gateway target did not respond",
    }
    code = int(response.exception_code)
    return f"exception code {code} ({names.get(code, 'unknown')})"


class _ModbusLink:
    """One TCP connection to one Modbus device, reconnected with a bounded exponential backoff.

    After a failed connection the next attempt waits `backoff_initial_s`, doubling per further
    failure up to `backoff_max_s`; reads before then fail at once, without touching the network.
    """

    def __init__(
        self,
        host: str,
        port: int,
        device_id: int,
        *,
        timeout_s: float,
        backoff_initial_s: float,
        backoff_max_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.where = f"Modbus device {device_id} at {host}:{port}"
        self.device_id = device_id
        client = ModbusTcpClient(host, port=port, timeout=timeout_s, retries=0)
        self._client = client
        # pymodbus leaves connect() and close() unannotated.
        self._client_connect = cast(Callable[[], bool], client.connect)
        self._client_close = cast(Callable[[], None], client.close)
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._clock = clock
        self._delay_s = 0.0
        self._next_attempt = 0.0
        self._last_error = ""
        self.connections = 0  # how many times it (re)connected: callers re-discover on change

    def _fail(self, error: str) -> DeviceUnavailable:
        self._client_close()
        self._delay_s = min(max(self._delay_s * 2, self._backoff_initial_s), self._backoff_max_s)
        self._next_attempt = self._clock() + self._delay_s
        self._last_error = error
        return DeviceUnavailable(
            f"{self.where} is unreachable ({error}); next attempt in {self._delay_s:.1f} s: "
            "check that it is powered, on the network, and that host and port are right"
        )

    def _connect(self) -> None:
        if self._client.connected:
            return
        wait = self._next_attempt - self._clock()
        if wait > 0:
            raise DeviceUnavailable(
                f"{self.where} is unreachable ({self._last_error}); next attempt in {wait:.1f} s"
            )
        if not self._client_connect():
            raise self._fail("connection refused or timed out")
        self._delay_s = 0.0
        self.connections += 1

    def _request(self, kind: RegisterKind, address: int, count: int) -> ModbusPDU:
        if kind == "input":
            return self._client.read_input_registers(address, count=count, device_id=self.device_id)
        return self._client.read_holding_registers(address, count=count, device_id=self.device_id)

    def registers(self, kind: RegisterKind, address: int, count: int) -> list[int]:
        """`count` registers from `address` (0-based), or DeviceUnavailable / BadFrame."""
        was_connected = self._client.connected
        self._connect()
        try:
            response = self._request(kind, address, count)
        except ModbusException as error:
            if not was_connected:
                raise self._fail(str(error)) from error
            # A connection kept from an earlier read may have died with a device restart.
            self._client_close()
            self._connect()
            try:
                response = self._request(kind, address, count)
            except ModbusException as retry_error:
                raise self._fail(str(retry_error)) from retry_error
        if isinstance(response, ExceptionResponse):
            text = _exception_text(response)
            raise BadFrame(
                f"{self.where} answered {text} to reading {count} {kind} registers at "
                f"{address}: check the device id and that it is the expected device model"
            )
        registers = list(response.registers)
        if len(registers) != count:
            raise BadFrame(
                f"{self.where} returned {len(registers)} {kind} registers at {address}, "
                f"asked for {count}"
            )
        return registers

    def close(self) -> None:
        self._client_close()


def _finite(where: str, name: str, value: float) -> float:
    if math.isnan(value) or math.isinf(value):
        raise BadFrame(f"{where} reports {name} = {value}: the meter is faulty or misconfigured")
    return value


def _counter(where: str, name: str, value: float) -> float:
    _finite(where, name, value)
    if value < 0:
        raise BadFrame(f"{where} reports a negative energy counter {name} = {value}")
    return value


class ModbusReader:
    """What both readers share: the link, the sample clock and the backwards-counter check."""

    def __init__(
        self,
        host: str,
        port: int,
        device_id: int,
        *,
        timeout_s: float,
        backoff_initial_s: float,
        backoff_max_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._link = _ModbusLink(
            host,
            port,
            device_id,
            timeout_s=timeout_s,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            clock=clock,
        )
        self._last: MeterSample | None = None

    def _checked(self, sample: MeterSample) -> MeterSample:
        last, self._last = self._last, sample
        if last is None:
            return sample
        for name, before, now in (
            ("import_wh", last.import_wh, sample.import_wh),
            ("export_wh", last.export_wh, sample.export_wh),
        ):
            if now < before:
                raise CounterWentBackwards(
                    f"{self._link.where}: {name} went back from {before} to {now} Wh; "
                    "was the meter reset or replaced? The next read counts from the new value"
                )
        return sample

    def close(self) -> None:
        """Drop the connection (the next read() reconnects)."""
        self._link.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Sdm630Reader(ModbusReader):
    """Reads an Eastron SDM630-style meter over Modbus TCP (input registers, float32)."""

    def _floats(self, address: int, count: int) -> list[float]:
        """`count` big-endian float32 values from the input registers at `address`."""
        registers = self._link.registers("input", address, 2 * count)
        return [
            float(
                cast(float, ModbusTcpClient.convert_from_registers(registers[i : i + 2], FLOAT32))
            )
            for i in range(0, 2 * count, 2)
        ]

    def read(self) -> MeterSample:
        """Power (W), import and export counters (Wh), phase voltages (V) and currents (A)."""
        where = self._link.where
        phases = self._floats(SDM630_VOLTAGES[0], 6)
        (power,) = self._floats(SDM630_TOTAL_POWER, 1)
        import_kwh, export_kwh = self._floats(SDM630_IMPORT_KWH, 2)
        names = ("voltage L1", "voltage L2", "voltage L3", "current L1", "current L2", "current L3")
        for name, value in zip(names, phases, strict=True):
            _finite(where, name, value)
        return self._checked(
            MeterSample(
                time=ledger_now(),
                import_wh=_counter(where, "import kWh", import_kwh) * 1000,
                export_wh=_counter(where, "export kWh", export_kwh) * 1000,
                power_w=_finite(where, "total power", power),
                voltages_v=tuple(phases[:3]),
                currents_a=tuple(phases[3:]),
            )
        )


@dataclass(frozen=True)
class _InverterModel:
    """Where the inverter model's points start, and how many phases it has."""

    model_id: int
    points: int  # address of the first point (after the id and length header)
    phases: int


def _int16(register: int) -> int:
    return int(cast(int, ModbusTcpClient.convert_from_registers([register], INT16)))


def _scaled(value: int, sf: int) -> float:
    """value * 10**sf, dividing for negative sf so that 2300 at -1 is exactly 230.0."""
    return float(value * 10**sf) if sf >= 0 else value / 10 ** (-sf)


class SunSpecReader(ModbusReader):
    """Reads a SunSpec inverter (model 101, 102 or 103) over Modbus TCP (holding registers).

    The model chain is discovered on each new connection: the marker "SunS" at 40000, 0 or
    50000, then models until 101/102/103. An inverter only produces: export is its WH counter.
    """

    def __init__(
        self,
        host: str,
        port: int = 502,
        device_id: int = 1,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        backoff_initial_s: float = DEFAULT_BACKOFF_INITIAL_S,
        backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` (monotonic seconds) times the reconnect backoff; timeouts are in seconds."""
        super().__init__(
            host,
            port,
            device_id,
            timeout_s=timeout_s,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            clock=clock,
        )
        self._model: _InverterModel | None = None
        self._discovered_on = -1  # the link's connection count when the chain was walked

    @property
    def model_address(self) -> int | None:
        """Address of the inverter model's header (its id register), once discovered."""
        return None if self._model is None else self._model.points - 2

    def _marker_base(self) -> int:
        for base in SUNSPEC_BASES:
            try:
                if tuple(self._link.registers("holding", base, 2)) == SUNSPEC_MARKER:
                    return base
            except BadFrame:
                continue  # an exception response: nothing mapped there
        bases = ", ".join(str(base) for base in SUNSPEC_BASES)
        raise BadFrame(
            f'{self._link.where}: no SunSpec marker "SunS" at {bases}: '
            "is it a SunSpec device, with SunSpec enabled, and is the device id right?"
        )

    def _discover(self) -> _InverterModel:
        where = self._link.where
        address = self._marker_base() + 2
        for _ in range(SUNSPEC_MAX_MODELS):
            model_id, length = self._link.registers("holding", address, 2)
            if model_id == SUNSPEC_END_MODEL:
                raise BadFrame(
                    f"{where}: the SunSpec model chain has no inverter model 101, 102 or 103"
                )
            if model_id in SUNSPEC_INVERTER_MODELS:
                if length < SUNSPEC_POINTS_READ:
                    raise BadFrame(
                        f"{where}: SunSpec inverter model {model_id} at {address} has length "
                        f"{length}, shorter than the standard's {SUNSPEC_INVERTER_LENGTH}"
                    )
                return _InverterModel(model_id, address + 2, SUNSPEC_INVERTER_MODELS[model_id])
            address += 2 + length
            if address > 0xFFFF:
                break
        raise BadFrame(f"{where}: the SunSpec model chain does not end (no 0xFFFF end marker)")

    def _scale_factor(self, points: Sequence[int], offset: int, name: str) -> int:
        raw = points[offset]
        if raw == SUNSPEC_NOT_IMPLEMENTED_INT16:
            raise BadFrame(f"{self._link.where}: scale factor {name} is not implemented (0x8000)")
        value = _int16(raw)
        if value not in SUNSPEC_SCALE_FACTOR_RANGE:
            raise BadFrame(f"{self._link.where}: scale factor {name} = {value} is outside -10..10")
        return value

    def _phase_values(
        self, points: Sequence[int], offsets: Sequence[int], sf_offset: int, phases: int
    ) -> tuple[float, ...] | None:
        raw = [points[offset] for offset in offsets[:phases]]
        if SUNSPEC_NOT_IMPLEMENTED_UINT16 in raw or points[sf_offset] == 0x8000:
            return None  # optional points: a device may leave them out
        sf = _int16(points[sf_offset])
        if sf not in SUNSPEC_SCALE_FACTOR_RANGE:
            return None
        return tuple(_scaled(value, sf) for value in raw)

    def read(self) -> MeterSample:
        """AC power (W, negative: producing), WH as the export counter (Wh), phase V and A."""
        try:
            return self._checked(self._read())
        except BadFrame:
            self._model = None  # walk the chain again next time: the device may have changed
            raise

    def _read(self) -> MeterSample:
        where = self._link.where
        if self._model is None or self._discovered_on != self._link.connections:
            self._model = None
            model = self._discover()
            self._model, self._discovered_on = model, self._link.connections
        model = self._model
        points = self._link.registers("holding", model.points, SUNSPEC_POINTS_READ)
        if points[SUNSPEC_W] == SUNSPEC_NOT_IMPLEMENTED_INT16:
            raise BadFrame(f"{where}: W (AC power) is not implemented (0x8000)")
        w_sf = self._scale_factor(points, SUNSPEC_W_SF, "W_SF")
        wh_sf = self._scale_factor(points, SUNSPEC_WH_SF, "WH_SF")
        # acc32 has no "not implemented" value but 0, which a new inverter also reads.
        wh_raw = int(
            cast(
                int,
                ModbusTcpClient.convert_from_registers(points[SUNSPEC_WH : SUNSPEC_WH + 2], UINT32),
            )
        )
        power_w = _scaled(_int16(points[SUNSPEC_W]), w_sf)
        return MeterSample(
            time=ledger_now(),
            import_wh=0.0,
            export_wh=_scaled(wh_raw, wh_sf),
            power_w=-power_w if power_w else 0.0,
            voltages_v=self._phase_values(points, SUNSPEC_PHV, SUNSPEC_V_SF, model.phases),
            currents_a=self._phase_values(points, SUNSPEC_APH, SUNSPEC_A_SF, model.phases),
        )
