"""Simulated Modbus TCP devices: an SDM630-style meter and a SunSpec inverter, on loopback.

For the tests and the simulation harness: each is a real pymodbus TCP server in a background
thread with its own asyncio loop, serving the register maps `smartmeter.modbus` reads. A power
profile (W over the device's clock, in seconds) drives each device, and the device integrates
its own energy counters from it, as a real meter does, each time it is read or changed. Give it
a `ManualClock` to make time pass only when a test says so.

Faults for tests: `stop()`/`start()` (an outage; the port stays the same), `freeze()` (the
registers stop changing), `reset_counters()`, `set_counters()`/`set_energy()` (lower values make
a counter go backwards), `override()` (serve a chosen value for a named point: NaN, 0x8000, a
broken "SunS" marker...) and `clear_faults()`.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Self, cast

from pymodbus.client import ModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from smartmeter.modbus import (
    FLOAT32,
    SDM630_CURRENTS,
    SDM630_EXPORT_KWH,
    SDM630_IMPORT_KWH,
    SDM630_TOTAL_POWER,
    SDM630_VOLTAGES,
    SUNSPEC_A,
    SUNSPEC_A_SF,
    SUNSPEC_APH,
    SUNSPEC_COMMON_LENGTH,
    SUNSPEC_COMMON_MODEL,
    SUNSPEC_END_MODEL,
    SUNSPEC_INVERTER_LENGTH,
    SUNSPEC_INVERTER_MODELS,
    SUNSPEC_MARKER,
    SUNSPEC_NOT_IMPLEMENTED_INT16,
    SUNSPEC_NOT_IMPLEMENTED_UINT16,
    SUNSPEC_PHV,
    SUNSPEC_V_SF,
    SUNSPEC_W,
    SUNSPEC_W_SF,
    SUNSPEC_WH,
    SUNSPEC_WH_SF,
    UINT32,
)

Profile = Callable[[float], float] | Sequence[tuple[float, float]]
"""Power in W over the device clock: a function of time, or (time, power) steps in time order
(the power of the last step at or before t; 0 before the first step)."""

INTEGRATION_STEP_S = 1.0  # trapezoid step for profiles given as functions
SERVER_START_TIMEOUT_S = 5.0
SUNSPEC_BLOCK_LENGTH = 2 + 2 + SUNSPEC_COMMON_LENGTH + 2 + SUNSPEC_INVERTER_LENGTH + 2
INT16_MAX = 32767


class ManualClock:
    """A clock (seconds) that only moves when told to: `advance()`."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds` (>= 0)."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._now += seconds


class PowerProfile:
    """A power profile (W over seconds) and its energy over an interval (Wh)."""

    def __init__(self, profile: Profile) -> None:
        if callable(profile):
            self._function: Callable[[float], float] | None = profile
            self._steps: list[tuple[float, float]] = []
        else:
            self._function = None
            self._steps = sorted((float(t), float(p)) for t, p in profile)

    def power_w(self, t: float) -> float:
        """Power at time t, W."""
        if self._function is not None:
            return float(self._function(t))
        power = 0.0
        for start, step_power in self._steps:
            if start > t:
                break
            power = step_power
        return power

    def _segments(self, t0: float, t1: float) -> list[tuple[float, float, float]]:
        """(start, end, mean power W) pieces of [t0, t1]: exact for steps, trapezoids else."""
        if self._function is None:
            cuts = [t0, *(t for t, _ in self._steps if t0 < t < t1), t1]
            return [(a, b, self.power_w(a)) for a, b in itertools.pairwise(cuts)]
        count = max(1, math.ceil((t1 - t0) / INTEGRATION_STEP_S))
        edges = [t0 + (t1 - t0) * i / count for i in range(count + 1)]
        return [
            (a, b, (self.power_w(a) + self.power_w(b)) / 2) for a, b in itertools.pairwise(edges)
        ]

    def energy_wh(self, t0: float, t1: float) -> tuple[float, float]:
        """Energy over [t0, t1] as (Wh while power > 0, Wh while power < 0), both >= 0."""
        forward = reverse = 0.0
        if t1 <= t0:
            return forward, reverse
        for a, b, power in self._segments(t0, t1):
            energy = power * (b - a) / 3600
            if energy > 0:
                forward += energy
            else:
                reverse -= energy
        return forward, reverse


def _float32(value: float) -> list[int]:
    return list(ModbusTcpClient.convert_to_registers(value, FLOAT32))


def _uint32(value: int) -> list[int]:
    return list(ModbusTcpClient.convert_to_registers(value & 0xFFFFFFFF, UINT32))


def _string(text: str, registers: int) -> list[int]:
    raw = text.encode("ascii")[: 2 * registers].ljust(2 * registers, b"\0")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


class SimulatedDevice:
    """What both devices share: the server thread, the clock, the counters and the faults.

    Counters are kept as (forward Wh, reverse Wh): energy while the profile's power is positive
    and while it is negative.
    """

    first_register = 0
    register_count = 1

    def __init__(
        self,
        *,
        profile: Profile = (),
        clock: Callable[[], float] = time.monotonic,
        device_id: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """`port` 0 takes a free port at the first start and keeps it across restarts."""
        self.host, self.port, self.device_id = host, port, device_id
        self._clock = clock
        self._state_lock = threading.Lock()
        self._profile = PowerProfile(profile)
        self._integrated_to = clock()
        self._forward_wh = self._reverse_wh = 0.0
        self._frozen: dict[int, list[int]] | None = None
        self._overrides: dict[int, list[int]] = {}
        self._server_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: ModbusTcpServer | None = None

    # -- what a subclass serves --

    def _image(self, power_w: float) -> dict[int, list[int]]:
        """Registers by start address for the current power and counters."""
        raise NotImplementedError

    # -- state, under the lock --

    def _integrate(self) -> float:
        """Bring the counters up to the clock; return the power now (W)."""
        now = self._clock()
        forward, reverse = self._profile.energy_wh(self._integrated_to, now)
        self._forward_wh += forward
        self._reverse_wh += reverse
        self._integrated_to = max(now, self._integrated_to)
        return self._profile.power_w(now)

    def registers_now(self) -> dict[int, list[int]]:
        """The register image a read would see now (faults applied), by start address."""
        with self._state_lock:
            image = self._image(self._integrate())
            if self._frozen is not None:
                image = dict(self._frozen)
            image.update(self._overrides)
            return image

    def set_profile(self, profile: Profile) -> None:
        """Follow `profile` from now on (energy so far is kept)."""
        with self._state_lock:
            self._integrate()
            self._profile = PowerProfile(profile)

    def _set_counters(self, forward_wh: float | None, reverse_wh: float | None) -> None:
        with self._state_lock:
            self._integrate()
            if forward_wh is not None:
                self._forward_wh = forward_wh
            if reverse_wh is not None:
                self._reverse_wh = reverse_wh

    def reset_counters(self) -> None:
        """Energy counters back to 0, as after a meter reset."""
        self._set_counters(0.0, 0.0)

    def freeze(self) -> None:
        """Keep serving the registers of this moment (the counters go on underneath)."""
        with self._state_lock:
            self._frozen = self._image(self._integrate())

    def _override(self, address: int, registers: list[int]) -> None:
        with self._state_lock:
            self._overrides[address] = registers

    def override_registers(self, address: int, registers: Sequence[int]) -> None:
        """Serve these raw registers at `address` until `clear_faults()`."""
        self._override(address, [register & 0xFFFF for register in registers])

    def clear_faults(self) -> None:
        """Undo freeze() and every override."""
        with self._state_lock:
            self._frozen = None
            self._overrides.clear()

    def reset(self, profile: Profile = ()) -> None:
        """Back to a fresh device: running, no faults, counters at 0, following `profile`."""
        self.clear_faults()
        with self._state_lock:
            self._profile = PowerProfile(profile)
            self._integrated_to = self._clock()
            self._forward_wh = self._reverse_wh = 0.0
        self.start()

    # -- the server --

    async def _on_access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Refresh the served registers before each request is answered."""
        for first, values in self.registers_now().items():
            offset = first - start_address
            registers[offset : offset + len(values)] = values
        return None

    async def _listen(self) -> ModbusTcpServer:
        device = SimDevice(
            id=self.device_id,
            simdata=[
                SimData(
                    address=self.first_register,
                    count=self.register_count,
                    values=0,
                    datatype=DataType.REGISTERS,
                    readonly=True,
                )
            ],
            action=self._on_access,
        )
        server = ModbusTcpServer(device, address=(self.host, self.port))
        await server.serve_forever(background=True)
        listener = cast(asyncio.Server, server.transport)
        self.port = int(listener.sockets[0].getsockname()[1])
        return server

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._server is not None

    def start(self) -> None:
        """Start serving (on the same port as before, after a stop()); no-op if running."""
        with self._server_lock:
            if self._server is not None:
                return
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name=f"modbus-{type(self).__name__}", daemon=True
                )
                self._thread.start()
            future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
            self._server = future.result(timeout=SERVER_START_TIMEOUT_S)

    def stop(self) -> None:
        """Stop serving and drop every connection (an outage); no-op if stopped."""
        with self._server_lock:
            if self._server is None or self._loop is None:
                return
            # pymodbus leaves shutdown() unannotated.
            shutdown = cast(Callable[[], Coroutine[Any, Any, None]], self._server.shutdown)
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(
                timeout=SERVER_START_TIMEOUT_S
            )
            self._server = None

    def close(self) -> None:
        """Stop serving and end the background thread."""
        self.stop()
        with self._server_lock:
            if self._loop is None or self._thread is None:
                return
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=SERVER_START_TIMEOUT_S)
            self._loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SimulatedSdm630(SimulatedDevice):
    """An Eastron SDM630-style meter: input registers 0x0000-0x004B, float32 big-endian.

    The profile's power is the total system power: positive imports, negative exports. Phase
    currents are |P| / 3 / V per phase.
    """

    register_count = SDM630_EXPORT_KWH + 2

    def __init__(
        self,
        *,
        profile: Profile = (),
        clock: Callable[[], float] = time.monotonic,
        device_id: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
        voltages_v: tuple[float, float, float] = (230.0, 231.0, 229.0),
    ) -> None:
        super().__init__(profile=profile, clock=clock, device_id=device_id, host=host, port=port)
        self.voltages_v = voltages_v
        self.points = {
            "voltage_l1": SDM630_VOLTAGES[0],
            "voltage_l2": SDM630_VOLTAGES[1],
            "voltage_l3": SDM630_VOLTAGES[2],
            "current_l1": SDM630_CURRENTS[0],
            "current_l2": SDM630_CURRENTS[1],
            "current_l3": SDM630_CURRENTS[2],
            "power_w": SDM630_TOTAL_POWER,
            "import_kwh": SDM630_IMPORT_KWH,
            "export_kwh": SDM630_EXPORT_KWH,
        }

    def _image(self, power_w: float) -> dict[int, list[int]]:
        image = {SDM630_TOTAL_POWER: _float32(power_w)}
        image[SDM630_IMPORT_KWH] = _float32(self._forward_wh / 1000)
        image[SDM630_EXPORT_KWH] = _float32(self._reverse_wh / 1000)
        for voltage_at, current_at, volts in zip(
            SDM630_VOLTAGES, SDM630_CURRENTS, self.voltages_v, strict=True
        ):
            image[voltage_at] = _float32(volts)
            image[current_at] = _float32(abs(power_w) / 3 / volts)
        return image

    def override(self, point: str, value: float) -> None:
        """Serve `value` (as float32) for a point of `points` until `clear_faults()`."""
        self._override(self.points[point], _float32(value))

    def set_counters(self, import_wh: float | None = None, export_wh: float | None = None) -> None:
        """Set the energy counters (Wh) from now on; lower or negative values are faults."""
        self._set_counters(import_wh, export_wh)

    @property
    def counters_wh(self) -> tuple[float, float]:
        """(import, export) in Wh as integrated up to now (before float32 rounding)."""
        with self._state_lock:
            self._integrate()
            return self._forward_wh, self._reverse_wh


class SimulatedSunSpecInverter(SimulatedDevice):
    """A SunSpec inverter: "SunS" at `base`, the common model (1), model 101/102/103, end.

    The profile's power is AC production in W (negative values count as no production). WH is
    served in whole Wh (WH_SF 0); W with the finest scale factor from -2 up that fits an int16.
    """

    def __init__(
        self,
        *,
        profile: Profile = (),
        clock: Callable[[], float] = time.monotonic,
        device_id: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
        base: int = 40000,
        model: int = 103,
        voltage_v: float = 230.0,
    ) -> None:
        if model not in SUNSPEC_INVERTER_MODELS:
            raise ValueError(f"model {model} is not a SunSpec inverter model (101, 102, 103)")
        super().__init__(profile=profile, clock=clock, device_id=device_id, host=host, port=port)
        self.first_register = base
        self.register_count = SUNSPEC_BLOCK_LENGTH
        self.model = model
        self.voltage_v = voltage_v
        self.model_address = base + 2 + 2 + SUNSPEC_COMMON_LENGTH  # the inverter model's id
        points = self.model_address + 2
        self.points = {
            "SunS": base,
            "model_id": self.model_address,
            "model_length": self.model_address + 1,
            "W": points + SUNSPEC_W,
            "W_SF": points + SUNSPEC_W_SF,
            "WH": points + SUNSPEC_WH,
            "WH_SF": points + SUNSPEC_WH_SF,
            "end": points + SUNSPEC_INVERTER_LENGTH,
        }

    def _image(self, power_w: float) -> dict[int, list[int]]:
        base, phases = self.first_register, SUNSPEC_INVERTER_MODELS[self.model]
        produced = max(power_w, 0.0)
        w_sf = -2
        while abs(round(produced / 10.0**w_sf)) > INT16_MAX:
            w_sf += 1
        phase_amps = round(produced / phases / self.voltage_v * 100)  # A_SF -2
        unused = SUNSPEC_NOT_IMPLEMENTED_UINT16
        points = [SUNSPEC_NOT_IMPLEMENTED_INT16] * SUNSPEC_INVERTER_LENGTH
        points[SUNSPEC_A] = phase_amps * phases
        points[SUNSPEC_A_SF] = -2 & 0xFFFF
        for phase in range(3):
            points[SUNSPEC_APH[phase]] = phase_amps if phase < phases else unused
            points[SUNSPEC_PHV[phase]] = round(self.voltage_v * 10) if phase < phases else unused
        points[SUNSPEC_V_SF] = -1 & 0xFFFF
        points[SUNSPEC_W] = round(produced / 10.0**w_sf) & 0xFFFF
        points[SUNSPEC_W_SF] = w_sf & 0xFFFF
        points[SUNSPEC_WH : SUNSPEC_WH + 2] = _uint32(round(self._forward_wh))
        points[SUNSPEC_WH_SF] = 0
        common = [
            *_string("PETra", 16),  # Mn
            *_string("SimulatedInverter", 16),  # Md
            *_string("", 8),  # Opt
            *_string("1.0", 8),  # Vr
            *_string(f"SIM{self.device_id:04d}", 16),  # SN
            self.device_id,  # DA
            0,  # Pad
        ]
        return {
            base: [*SUNSPEC_MARKER, SUNSPEC_COMMON_MODEL, SUNSPEC_COMMON_LENGTH, *common],
            self.model_address: [self.model, SUNSPEC_INVERTER_LENGTH, *points],
            self.model_address + 2 + SUNSPEC_INVERTER_LENGTH: [SUNSPEC_END_MODEL, 0],
        }

    def override(self, point: str, raw: int) -> None:
        """Serve the raw value `raw` for a point of `points` (32 bits for "SunS" and "WH")."""
        address = self.points[point]
        self._override(address, _uint32(raw) if point in {"SunS", "WH"} else [raw & 0xFFFF])

    def set_energy(self, wh: float) -> None:
        """Set the WH counter from now on; a lower value makes it go backwards."""
        self._set_counters(wh, None)

    @property
    def energy_wh(self) -> float:
        """WH as integrated up to now (before rounding to whole Wh)."""
        with self._state_lock:
            self._integrate()
            return self._forward_wh
