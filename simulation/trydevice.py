"""`petra sim device`: one simulated Modbus TCP device on loopback, for a newcomer to point
`petra meter run` at without writing code.

The profile is a constant power, a PV system's clear-sky day (`pv:KWP`) or a BDEW household
(`home:KWH` a year), both at the simulation's default location and day, played on the wall
clock from the last local midnight there (optionally `speed` times faster), so a day
repeats and noon is noon.
"""

from __future__ import annotations

import dataclasses
import time
import zoneinfo
from collections.abc import Callable
from datetime import datetime
from threading import Event

import numpy as np

DAY_S = 86_400
STEP_S = 300  # the profile's resolution, s


def device_profile(spec: str, speed: float = 1.0) -> Callable[[float], float]:
    """Power in W as a function of unix seconds, from `spec`: `W`, `pv:KWP` or `home:KWH`.
    ValueError, one sentence, on a bad spec."""
    if speed <= 0:
        raise ValueError(f"--speed must be above 0, not {speed}")
    kind, _, value = spec.partition(":")
    if not value:
        try:
            power = float(spec)
        except ValueError:
            raise ValueError(
                f"--profile {spec!r} is not a power in W, pv:KWP or home:KWH"
            ) from None
        return lambda t: power
    try:
        size = float(value)
    except ValueError:
        raise ValueError(f"--profile {spec!r}: {value!r} is not a number") from None
    if kind not in ("pv", "home") or not size > 0:
        raise ValueError(f"--profile {spec!r} is not a power in W, pv:KWP or home:KWH (> 0)")
    day = _day_w(kind, size)
    origin = day_origin()

    def power_w(t: float) -> float:
        seconds = ((t - origin) * speed) % DAY_S
        return float(day[int(seconds // STEP_S) % len(day)])

    return power_w


def day_origin(now: float | None = None) -> float:
    """Unix seconds of the last midnight at the simulation's default location (local time):
    where the replayed day begins."""
    from simulation.config import SimConfig

    zone = zoneinfo.ZoneInfo(SimConfig().location.timezone)
    local = datetime.fromtimestamp(time.time() if now is None else now, zone)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def _day_w(kind: str, size: float) -> np.ndarray:
    """The default day's PV (kind `pv`, `size` kWp) or household load (`home`, `size` kWh a
    year) in W, every STEP_S seconds."""
    from simulation.config import HomeSpec, SimConfig
    from simulation.profiles import plan_community

    home = (
        HomeSpec("pv", annual_kwh=1.0, pv_kwp=size)
        if kind == "pv"
        else HomeSpec("home", annual_kwh=size)
    )
    default = SimConfig()
    config = dataclasses.replace(
        default,
        start=default.start.replace(hour=0, minute=0),  # the whole day, from midnight
        intervals=DAY_S // STEP_S,
        interval_s=STEP_S,
        weather="clear",
        home_specs=(home,),
    )
    plan = plan_community(config)[0]
    return np.asarray(plan.pv_w if kind == "pv" else plan.load_w, dtype=float)


def serve_device(
    kind: str,
    port: int,
    power_w: Callable[[float], float],
    stop: Event,
    say: Callable[[str], None],
) -> None:
    """Serve an `sdm630` or `sunspec` device on 127.0.0.1:`port` until `stop` is set (or
    Ctrl-C), saying where it is and how a meter reads it."""
    from simulation.devices import SimulatedSdm630, SimulatedSunSpecInverter

    device = (
        SimulatedSdm630(profile=power_w, clock=time.time, port=port)
        if kind == "sdm630"
        else SimulatedSunSpecInverter(profile=power_w, clock=time.time, port=port)
    )
    with device:
        say(f"a simulated {kind} serves Modbus TCP on 127.0.0.1:{port} (Ctrl-C stops it)")
        say(f'read it with a meter source: kind = "{kind}", host = "127.0.0.1", port = {port}')
        while not stop.wait(5):
            say(f"now {power_w(time.time()):,.0f} W")
        say(f"the simulated {kind} on 127.0.0.1:{port} stopped")
