"""Each home's load, PV and battery over a run's intervals, drawn from the run's seed.

Every array is the mean power in W over each interval j of the run,
`[start + j * interval_s, start + (j + 1) * interval_s)`. A simulated SDM630 at the grid
connection driven by `net_w` as steps counts `net_w[j] * interval_s / 3600` Wh in interval j
(import when positive, export when negative), so the meter's measured net M_t of DESIGN.md
section 7 is `net_w[j] * interval_s` joules, up to its rounding.

- Load: the BDEW H0 standard load profile (demandlib), 15-minute values read in the local time
  of the location (no public holidays are marked, only Sundays), scaled to each home's yearly
  kWh, times a per-interval multiplicative noise of mean 1 (a gamma law, never negative).
- PV: pvlib's clear sky (Ineichen, with pvlib's Linke turbidity table) on a plane facing the
  equator and tilted by the latitude (at most 60 degrees), Hay-Davies transposition, the
  physical incidence-angle loss, the SAPM cell temperature of an open rack at 20 C air and
  1 m/s wind, PVWatts DC power and a PVWatts inverter of 96 % nominal efficiency sized to the
  array; computed every 5 minutes and averaged over each interval. Under "cloudy" weather it
  is multiplied by a clear-sky index from a seeded cloud cover, shared by the community, with a
  small per-home variation.
- Battery: a self-consumption controller (`self_consumption`): it charges only from surplus
  PV and discharges only to cover the home's own load.

The load shape and the PV shape per kWp are computed once per run and scaled per home: a
thousand homes over 96 intervals plan in a fifth of a second, once demandlib, pvlib, pandas and
scipy are loaded (about two seconds, the first time). The functions that need them import them,
so importing `simulation` does not.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from simulation.config import STRATEGIES, HomeSpec, Location, SimConfig

if TYPE_CHECKING:
    from collections.abc import Mapping

FloatArray = NDArray[np.float64]

H0_STEP_S = 900  # BDEW profiles are quarter-hour means
PV_STEP_S = 300  # PV is computed every 5 minutes and averaged over each interval
MAX_TILT_DEG = 60.0
AIR_TEMPERATURE_C = 20.0
WIND_SPEED_M_S = 1.0
GAMMA_PDC = -0.0037  # PVWatts' standard module, per kelvin
INVERTER_EFFICIENCY = 0.96
# Cloud cover: the sum of a slow (weather of the day) and a fast (passing clouds) Gauss-Markov
# process, each of half the variance, so the cover is uniform on [0, 1] at any moment.
CLOUD_CORRELATION_S = (86_400.0, 3_600.0)
HOME_CLOUD_SPREAD = 0.05  # relative deviation of a home's clear-sky index from the community's
HOME_CLOUD_CORRELATION_S = 1_800.0
BATTERY_EFFICIENCY = 0.9  # round trip, all of it lost while charging
BATTERY_SOC0 = 0.2  # state of charge at the start, a fraction of capacity
CUPS_DISTRIBUTOR = "0021"
CUPS_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


@dataclass(frozen=True, slots=True, eq=False)
class HomePlan:
    """One home of the run and its devices' mean power over each interval, W: `load_w` the
    household's consumption, `pv_w` its PV production (>= 0), `battery_w` its battery
    (charging positive). kWh a year, kWp, kWh and kW as configured or drawn."""

    name: str
    meter_id: str
    strategy: str
    annual_kwh: float
    pv_kwp: float
    battery_kwh: float
    battery_kw: float
    load_w: FloatArray
    pv_w: FloatArray
    battery_w: FloatArray

    @property
    def net_w(self) -> FloatArray:
        """The grid connection's mean power over each interval, W, import positive."""
        return self.load_w - self.pv_w + self.battery_w


def plan_community(config: SimConfig) -> list[HomePlan]:
    """Every home of the run with its profiles over the run's intervals; the same
    configuration gives the same plans."""
    draws, weather, noise = np.random.default_rng(config.seed).spawn(3)
    specs = list(config.home_specs) or draw_homes(config, draws)
    edges = config.start_unix + config.interval_s * np.arange(config.intervals + 1)
    count = len(specs)

    annual = np.array([spec.annual_kwh for spec in specs])
    shape = _h0_w_per_kwh(config.location.timezone, edges)
    load = (
        annual[:, None]
        * shape[None, :]
        * _load_noise(noise, config.home_defaults.noise, count, config.intervals)
    )

    pv_start = edges[0] // PV_STEP_S * PV_STEP_S
    pv_steps = -(-(int(edges[-1]) - pv_start) // PV_STEP_S)
    per_kwp = _pv_w_per_kwp(config.location, pv_start + PV_STEP_S * (np.arange(pv_steps) + 0.5))
    if config.weather == "cloudy":
        per_kwp = per_kwp[None, :] * _clear_sky_index(weather, count, pv_steps)
    kwp = np.array([spec.pv_kwp for spec in specs])
    pv = _interval_means(pv_start, PV_STEP_S, kwp[:, None] * per_kwp, edges)

    battery = np.zeros_like(load)
    stored = [n for n, spec in enumerate(specs) if spec.battery_kwh > 0 and spec.battery_kw > 0]
    if stored:
        capacity = np.array([specs[n].battery_kwh * 1000 for n in stored])
        battery[stored], _ = self_consumption(
            load[stored] - pv[stored],
            config.interval_s,
            capacity,
            np.array([specs[n].battery_kw * 1000 for n in stored]),
            BATTERY_EFFICIENCY,
            BATTERY_SOC0 * capacity,
        )
    for series in (load, pv, battery):
        series.flags.writeable = False  # the plans are shared: read them, never write
    return [
        HomePlan(
            name=spec.name,
            meter_id=meter_id(config.seed, n),
            strategy=spec.strategy,
            annual_kwh=spec.annual_kwh,
            pv_kwp=spec.pv_kwp,
            battery_kwh=spec.battery_kwh,
            battery_kw=spec.battery_kw,
            load_w=load[n],
            pv_w=pv[n],
            battery_w=battery[n],
        )
        for n, spec in enumerate(specs)
    ]


def draw_homes(config: SimConfig, rng: np.random.Generator) -> list[HomeSpec]:
    """`config.homes` homes drawn from `config.home_defaults`: yearly kWh and kWp lognormal
    around their means with the configured relative spread; `pv_share` of the homes (rounded)
    with PV, `battery_share` with a battery, taken among those with PV; strategies apportioned
    to their weights by largest remainders, then shuffled."""
    count, defaults = config.homes, config.home_defaults
    annual = _lognormal(rng, defaults.annual_kwh, defaults.annual_kwh_spread, count)
    kwp = _lognormal(rng, defaults.pv_kwp, defaults.pv_kwp_spread, count)
    order = rng.permutation(count)
    with_pv = set(order[: round(defaults.pv_share * count)].tolist())
    with_battery = set(order[: min(len(with_pv), round(defaults.battery_share * count))].tolist())
    strategies = rng.permutation(apportion(config.strategies, count)).tolist()
    width = max(2, len(str(count)))
    return [
        HomeSpec(
            name=f"home-{n + 1:0{width}d}",
            annual_kwh=round(float(annual[n]), 1),
            pv_kwp=round(float(kwp[n]), 2) if n in with_pv else 0.0,
            battery_kwh=defaults.battery_kwh if n in with_battery else 0.0,
            battery_kw=defaults.battery_kw if n in with_battery else 0.0,
            strategy=str(strategies[n]),
        )
        for n in range(count)
    ]


def apportion(weights: Mapping[str, float], count: int) -> list[str]:
    """`count` strategy names in proportion to `weights` (largest remainders; ties go to the
    strategy listed first in `STRATEGIES`), grouped by strategy."""
    names = [name for name in STRATEGIES if weights.get(name, 0) > 0]
    total = sum(weights[name] for name in names)
    quotas = {name: weights[name] / total * count for name in names}
    seats = {name: math.floor(quota) for name, quota in quotas.items()}
    left = count - sum(seats.values())
    for name in sorted(names, key=lambda n: seats[n] - quotas[n])[:left]:
        seats[name] += 1
    return [name for name in names for _ in range(seats[name])]


def meter_id(seed: int, index: int) -> str:
    """A CUPS-like meter id for the run's `index`-th home: ES, a distributor code, six digits
    from the seed and six from the index (unique within a run), and the two check letters of a
    Spanish CUPS (the 16 digits modulo 529)."""
    seed_digits = int.from_bytes(hashlib.blake2b(str(seed).encode(), digest_size=8).digest())
    digits = f"{CUPS_DISTRIBUTOR}{seed_digits % 10**6:06d}{index:06d}"
    quotient, remainder = divmod(int(digits) % 529, 23)
    return f"ES{digits}{CUPS_LETTERS[quotient]}{CUPS_LETTERS[remainder]}"


def self_consumption(
    net_w: ArrayLike,
    interval_s: float,
    capacity_wh: ArrayLike,
    power_w: ArrayLike,
    efficiency: float,
    soc0: ArrayLike,
) -> tuple[FloatArray, FloatArray]:
    """A battery that raises a home's self-consumption, interval by interval.

    `net_w` is the home's mean power over each interval before the battery (load - PV, W,
    last axis time; leading axes are homes, with `capacity_wh`, `power_w` and the initial
    state of charge `soc0` (Wh) broadcast over them). In an interval with surplus it charges
    with up to the surplus, `power_w` and what fills it, storing `efficiency` of that; with a
    deficit it discharges up to the deficit, `power_w` and what it holds. It never exports and
    never charges from the grid. Returns its power per interval (W, charging positive) and its
    state of charge at each interval's end (Wh)."""
    net = np.asarray(net_w, dtype=np.float64)
    capacity = np.asarray(capacity_wh, dtype=np.float64)
    power = np.asarray(power_w, dtype=np.float64)
    level = np.array(np.broadcast_to(np.asarray(soc0, dtype=np.float64), net.shape[:-1]))
    if interval_s <= 0 or not 0 < efficiency <= 1:
        raise ValueError("interval_s must be above 0 and efficiency in (0, 1]")
    if np.any(capacity < 0) or np.any(power < 0) or np.any(level < 0) or np.any(level > capacity):
        raise ValueError("capacity and power must be >= 0 and soc0 within [0, capacity]")
    hours = interval_s / 3600
    battery = np.zeros_like(net)
    soc = np.zeros_like(net)
    for k in range(net.shape[-1]):
        room = (capacity - level) / (efficiency * hours)
        charge = np.minimum(np.minimum(np.maximum(-net[..., k], 0.0), power), room)
        discharge = np.minimum(np.minimum(np.maximum(net[..., k], 0.0), power), level / hours)
        level = np.clip(level + (charge * efficiency - discharge) * hours, 0.0, capacity)
        battery[..., k] = charge - discharge
        soc[..., k] = level
    return battery, soc


def _lognormal(rng: np.random.Generator, mean: float, spread: float, count: int) -> FloatArray:
    """`count` draws of mean `mean` and relative standard deviation `spread` (> 0 always)."""
    sigma = math.sqrt(math.log1p(spread**2))
    return mean * rng.lognormal(-(sigma**2) / 2, sigma, count)


def _load_noise(rng: np.random.Generator, noise: float, homes: int, intervals: int) -> FloatArray:
    """Multiplicative noise of mean 1 and relative standard deviation `noise`, never < 0."""
    if noise == 0:
        return np.ones((homes, intervals))
    return rng.gamma(1 / noise**2, noise**2, (homes, intervals))


def _interval_means(t0: int, step_s: int, values: FloatArray, edges: NDArray[Any]) -> FloatArray:
    """The mean over each span between `edges` (unix seconds) of a function that is
    `values[..., i]` on `[t0 + i * step_s, t0 + (i + 1) * step_s)`: its exact integral is
    piecewise linear, so any interval length, finer or coarser than the step, is exact."""
    steps = values.shape[-1]
    cumulative = np.concatenate(
        [np.zeros((*values.shape[:-1], 1)), np.cumsum(values * step_s, axis=-1)], axis=-1
    )
    position = (edges - t0) / step_s
    index = np.minimum(np.floor(position).astype(np.int64), steps - 1)
    at_edges = cumulative[..., index] + (position - index) * values[..., index] * step_s
    return np.asarray(np.diff(at_edges, axis=-1) / np.diff(edges), dtype=np.float64)


def _h0_year(year: int) -> FloatArray:
    """BDEW H0 for `year` in local time, W per kWh a year, one value per quarter-hour from
    1 January 00:00 (community's, cached and read-only)."""
    from community import bdew_quarter_hours

    return bdew_quarter_hours("h0", year)


def _h0_w_per_kwh(timezone: str, edges: NDArray[Any]) -> FloatArray:
    """Mean W per kWh a year of the H0 profile over each interval between `edges`."""
    import pandas as pd  # type: ignore[import-untyped]

    first = int(edges[0]) // H0_STEP_S * H0_STEP_S
    slots = np.arange(first, int(edges[-1]), H0_STEP_S)
    local = pd.to_datetime(slots, unit="s", utc=True).tz_convert(timezone).tz_localize(None)
    first_year = int(local[0].year)
    years = range(first_year, int(local[-1].year) + 1)
    table = np.concatenate([_h0_year(year) for year in years])
    quarter = (local - pd.Timestamp(first_year, 1, 1)) // pd.Timedelta(seconds=H0_STEP_S)
    return _interval_means(first, H0_STEP_S, table[np.asarray(quarter, dtype=np.int64)], edges)


def surface(location: Location) -> tuple[float, float]:
    """The PV plane: tilt (degrees, the latitude, at most 60) and azimuth (degrees east of
    north: south in the northern hemisphere, north in the southern)."""
    tilt = min(abs(location.latitude), MAX_TILT_DEG)
    return tilt, 180.0 if location.latitude >= 0 else 0.0


def pv_year_kwh_per_kwp(
    year: int, latitude: float, longitude: float, timezone: str, *, altitude: float = 0.0
) -> FloatArray:
    """The clear-sky energy of 1 kWp in each hour of `year` (community.hour_starts: from local
    midnight of 1 January, real hours), kWh per kWp: the simulation's PV (`_pv_w_per_kwp`,
    every `PV_STEP_S`) averaged over each hour. Degrees north and east, metres above sea
    level, an IANA time zone."""
    from community import hour_starts

    site = Location(
        name=f"{latitude:.3f}, {longitude:.3f}",
        latitude=latitude,
        longitude=longitude,
        altitude=altitude,
        timezone=timezone,
    )
    starts = hour_starts(year, timezone)
    edges = np.append(starts, starts[-1] + 3600)
    pv_start = int(edges[0]) // PV_STEP_S * PV_STEP_S
    pv_steps = -(-(int(edges[-1]) - pv_start) // PV_STEP_S)
    middles = pv_start + PV_STEP_S * (np.arange(pv_steps, dtype=np.float64) + 0.5)
    per_kwp = _pv_w_per_kwp(site, middles)
    # mean W over an hour is Wh in that hour
    return _interval_means(pv_start, PV_STEP_S, per_kwp, edges) / 1000


def _pv_w_per_kwp(location: Location, times_unix: FloatArray) -> FloatArray:
    """AC power of 1 kWp under clear sky at `times_unix` (unix seconds), W."""
    import pandas as pd
    import pvlib  # type: ignore[import-untyped]

    times = pd.to_datetime(times_unix, unit="s", utc=True)
    site = pvlib.location.Location(
        location.latitude, location.longitude, "UTC", location.altitude, location.name
    )
    sun = site.get_solarposition(times)
    sky = site.get_clearsky(times, solar_position=sun)
    tilt, azimuth = surface(location)
    plane = pvlib.irradiance.get_total_irradiance(
        tilt,
        azimuth,
        sun["apparent_zenith"],
        sun["azimuth"],
        sky["dni"],
        sky["ghi"],
        sky["dhi"],
        dni_extra=pvlib.irradiance.get_extra_radiation(times),
        model="haydavies",
    )
    incidence = pvlib.irradiance.aoi(tilt, azimuth, sun["apparent_zenith"], sun["azimuth"])
    effective = plane["poa_direct"] * pvlib.iam.physical(incidence) + plane["poa_diffuse"]
    rack = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]["open_rack_glass_polymer"]
    cell = pvlib.temperature.sapm_cell(
        plane["poa_global"], AIR_TEMPERATURE_C, WIND_SPEED_M_S, **rack
    )
    dc = pvlib.pvsystem.pvwatts_dc(effective, cell, 1000.0, GAMMA_PDC)
    ac = pvlib.inverter.pvwatts(dc, 1000.0, eta_inv_nom=INVERTER_EFFICIENCY)
    return np.clip(np.nan_to_num(np.asarray(ac, dtype=np.float64)), 0.0, None)


def _clear_sky_index(rng: np.random.Generator, homes: int, steps: int) -> FloatArray:
    """Each home's clear-sky index (0-1) every `PV_STEP_S`: the community's, from a cloud cover
    through Kasten and Czeplak's 1 - 0.75 * cover^3.4, times a small per-home variation."""
    from scipy.special import ndtr  # type: ignore[import-untyped]

    weight = math.sqrt(1 / len(CLOUD_CORRELATION_S))
    latent = sum(
        weight * _gauss_markov(rng.standard_normal(steps), seconds)
        for seconds in CLOUD_CORRELATION_S
    )
    community = 1 - 0.75 * np.asarray(ndtr(latent), dtype=np.float64) ** 3.4
    wobble = _gauss_markov(rng.standard_normal((homes, steps)), HOME_CLOUD_CORRELATION_S)
    return np.clip(community * (1 + HOME_CLOUD_SPREAD * wobble), 0.0, 1.0)


def _gauss_markov(white: FloatArray, correlation_s: float) -> FloatArray:
    """A stationary first-order autoregressive series of unit variance along the last axis,
    sampled every `PV_STEP_S`, from standard normal `white` noise."""
    from scipy.signal import lfilter  # type: ignore[import-untyped]

    phi = math.exp(-PV_STEP_S / correlation_s)
    driven = white.copy()
    driven[..., 1:] *= math.sqrt(1 - phi**2)
    return np.asarray(lfilter([1.0], [1.0, -phi], driven, axis=-1), dtype=np.float64)
