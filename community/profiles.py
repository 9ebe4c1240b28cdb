"""Hourly consumption when a member has no history: the BDEW standard load profiles (household
H0, business G0-G6, farms L0-L2, demandlib) and seasonal variants for the members communities
actually have (schools, summer pools, weekend and summer homes), scaled to the annual kWh; and
last year's data moved onto next year's calendar.

The BDEW profiles are demandlib's, 15-minute values in local wall time from 1 January 00:00
(Sundays as holidays, no public holidays marked). Each seasonal variant follows a BDEW shape
while its building is in use and draws a flat base load (a share of the shape's mean power:
standby, fridges, pumps) while it is not; dates are local:

- "school": G1 (business on weekdays 8-18) in term time; 10 % base load in July, August and
  the Christmas holidays from 23 December to 6 January.
- "pool": G3 (business running all day) from 15 June to 15 September; 2 % base load otherwise.
- "weekend_home": H0 on Saturdays and Sundays and every day of August; 5 % base load otherwise.
- "summer_home": H0 in July and August; 5 % base load otherwise.

An hour's consumption is the energy of its four local wall quarter-hours: the hours of a year
are real hours from local midnight of 1 January (`spain.hour_starts`), so the hour that the
clocks skip in spring is left out and the hour they repeat in autumn counts its wall hour
twice; the year is then scaled back to the annual kWh.
"""

from __future__ import annotations

import calendar
import functools
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from community.spain import hour_starts

FloatArray = NDArray[np.float64]

PROFILES: tuple[str, ...] = (
    "h0", "g0", "g1", "g2", "g3", "g4", "g5", "g6", "l0", "l1", "l2",
    "school", "pool", "weekend_home", "summer_home",
)  # fmt: skip
BDEW_PROFILES = PROFILES[:11]
QUARTER_S = 900
QUARTERS_PER_HOUR = 4
QUARTERS_PER_DAY = 96
HOURS_PER_WEEK = 168
SECONDS_PER_WEEK = 604_800
SATURDAY = 5  # datetime.weekday()


@dataclass(frozen=True, slots=True)
class Season:
    """A seasonal variant: the BDEW `shape` on days in use, else `base` times its mean power."""

    shape: str
    base: float


SEASONS = {
    "school": Season("g1", 0.10),
    "pool": Season("g3", 0.02),
    "weekend_home": Season("h0", 0.05),
    "summer_home": Season("h0", 0.05),
}


def bdew_quarter_hours(profile: str, year: int) -> FloatArray:
    """A BDEW profile for `year` in local time, W per kWh a year, one value per quarter-hour
    from 1 January 00:00 local (demandlib; cached, read-only)."""
    if profile not in BDEW_PROFILES:
        raise ValueError(f"unknown BDEW profile {profile!r}: use one of {', '.join(BDEW_PROFILES)}")
    return _bdew_year(year)[profile]


@functools.lru_cache(maxsize=8)
def _bdew_year(year: int) -> dict[str, FloatArray]:
    """Every BDEW profile of `year`, W per kWh a year per quarter-hour (demandlib builds them
    together in about the time it takes for one)."""
    import warnings

    from demandlib import bdew  # type: ignore[import-untyped]

    # demandlib turns every warning into an error while it builds, process-wide: contain it.
    with warnings.catch_warnings():
        table = bdew.ElecSlp(year).get_scaled_power_profiles(dict.fromkeys(BDEW_PROFILES, 1.0))
    profiles = {}
    for name in BDEW_PROFILES:
        values = np.asarray(table[name].to_numpy(dtype=np.float64) * 1000)
        values.flags.writeable = False
        profiles[name] = values
    return profiles


@functools.lru_cache(maxsize=32)
def _quarter_hours(profile: str, year: int) -> FloatArray:
    """Any profile of PROFILES for `year`, W per kWh a year per local quarter-hour from
    1 January 00:00 (a year of it is 1 kWh); cached, read-only."""
    if profile in BDEW_PROFILES:
        return bdew_quarter_hours(profile, year)
    if profile not in SEASONS:
        raise ValueError(f"unknown profile {profile!r}: use one of {', '.join(PROFILES)}")
    season = SEASONS[profile]
    shape = bdew_quarter_hours(season.shape, year)
    in_use = np.repeat(_days_in_use(profile, year), QUARTERS_PER_DAY)
    values = np.where(in_use, shape, season.base * shape.mean())
    # a year of W per kWh in quarter-hours is 1 kWh: sum * 0.25 h / 1000
    scaled = np.asarray(values / (values.sum() * QUARTER_S / 3600 / 1000), dtype=np.float64)
    scaled.flags.writeable = False
    return scaled


def _days_in_use(profile: str, year: int) -> NDArray[np.bool_]:
    """Whether each day of `year` (from 1 January) is a day the variant's building is in use."""
    days = np.arange(np.datetime64(f"{year}-01-01"), np.datetime64(f"{year + 1}-01-01"))
    month = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
    weekday = (np.arange(days.size) + calendar.weekday(year, 1, 1)) % 7
    summer = (month == 7) | (month == 8)
    if profile == "school":
        christmas = ((month == 12) & (day >= 23)) | ((month == 1) & (day <= 6))
        in_use = ~(summer | christmas)
    elif profile == "pool":
        in_use = ((month == 6) & (day >= 15)) | summer | ((month == 9) & (day <= 15))
    elif profile == "weekend_home":
        in_use = (weekday >= SATURDAY) | (month == 8)
    else:
        in_use = summer
    return np.asarray(in_use, dtype=np.bool_)


@functools.lru_cache(maxsize=16)
def _wall_hours(year: int, timezone: str) -> NDArray[np.int64]:
    """The local wall hour (hours from 1 January 00:00 local) each hour of `year` starts at,
    in `spain.hour_starts` order: it skips one in spring and repeats one in autumn."""
    zone = ZoneInfo(timezone)
    starts = hour_starts(year, timezone)
    offsets = np.fromiter(
        (_utc_offset_s(int(t), zone) for t in starts), dtype=np.float64, count=starts.size
    )
    wall = starts + offsets - calendar.timegm((year, 1, 1, 0, 0, 0))
    hours = np.floor_divide(wall, 3600).astype(np.int64)
    hours.flags.writeable = False
    return hours


def _utc_offset_s(unix: int, zone: ZoneInfo) -> float:
    """How far `zone`'s clocks are ahead of UTC at `unix`, s."""
    offset = datetime.fromtimestamp(unix, zone).utcoffset()
    return offset.total_seconds() if offset is not None else 0.0


def estimate_hourly(profile: str, annual_kwh: float, year: int, timezone: str) -> FloatArray:
    """A member's estimated consumption in each hour of `year` (community.hour_starts), kWh,
    summing to `annual_kwh`."""
    if not (np.isfinite(annual_kwh) and annual_kwh >= 0):
        raise ValueError(f"the annual consumption must be a number of kWh >= 0, not {annual_kwh}")
    table = _quarter_hours(profile, year)
    walls = _wall_hours(year, timezone)
    quarters = walls[:, None] * QUARTERS_PER_HOUR + np.arange(QUARTERS_PER_HOUR)
    quarters = np.clip(quarters, 0, table.size - 1)
    # the mean W per kWh a year over an hour is its Wh per kWh a year
    hourly = table[quarters].mean(axis=1)
    return np.asarray(hourly * (annual_kwh / hourly.sum()), dtype=np.float64)


def align_to_year(values: FloatArray, from_year: int, to_year: int, timezone: str) -> FloatArray:
    """Hourly values (hours of `from_year`, ...) moved onto `to_year`'s hours so weekdays match
    (each hour takes the value 364 days, a whole number of weeks, before or after), filling
    the hours that fall outside from nearest whole weeks."""
    source = np.asarray(values, dtype=np.float64)
    from_walls = _wall_hours(from_year, timezone)
    if source.ndim not in (1, 2) or source.shape[0] != from_walls.size:
        raise ValueError(
            f"values of shape {source.shape} are not the {from_walls.size} hours of {from_year}"
        )
    gap_s = calendar.timegm((to_year, 1, 1, 0, 0, 0)) - calendar.timegm((from_year, 1, 1, 0, 0, 0))
    weeks = round(gap_s / SECONDS_PER_WEEK)
    # the wall hour of from_year, counted from its 1 January, that each hour of to_year copies
    wanted = _wall_hours(to_year, timezone) + (gap_s // 3600 - weeks * HOURS_PER_WEEK)
    span = int(from_walls[-1]) + 1
    wanted = wanted + HOURS_PER_WEEK * np.ceil(np.maximum(-wanted, 0) / HOURS_PER_WEEK)
    wanted = wanted - HOURS_PER_WEEK * np.ceil(np.maximum(wanted - span + 1, 0) / HOURS_PER_WEEK)
    return np.asarray(source[_hour_of_wall(from_walls)[wanted.astype(np.int64)]])


def _hour_of_wall(walls: NDArray[np.int64]) -> NDArray[np.int64]:
    """For each wall hour of a year, the first of its hours that starts at it; a wall hour the
    clocks skip takes the hour after it."""
    span = int(walls[-1]) + 1
    first = np.full(span, walls.size, dtype=np.int64)
    np.minimum.at(first, walls, np.arange(walls.size))
    # skipped wall hours (still walls.size) take the next hour that exists
    return np.minimum.accumulate(first[::-1])[::-1]
