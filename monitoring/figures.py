"""The figures the member pages and the public display show, from the store's aggregates:
energy by feed kind, the local hours, days and months of a community's time zone, a member's
allocation summed over a stretch, and what it saves in money, CO2 and trees (the formulas live
in `community`, re-exported here). Pure: no I/O, no clock.

Allocation is hourly (`community.allocate`, DESIGN.md section 14), and only then summed over
days, months or years: a day's min(b x G, C) would overstate what a member used of their share.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from community import TREE_KG_CO2_PER_YEAR as TREE_KG_CO2_PER_YEAR  # one formula, re-exported
from community import co2_avoided_kg as co2_avoided_kg
from community import savings_micro as savings_micro
from community import trees as trees
from monitoring.samples import COUNTER, ENERGY, POWER

HOUR_S = 3_600
WS_PER_KWH = 3_600_000  # watt-seconds in a kilowatt-hour


class Aggregate(Protocol):
    """One aggregate of a feed (`monitoring.store.Bucket` is one): `start` in unix seconds,
    `length_s` its real length in seconds, and the count, sum, min and max of its samples."""

    @property
    def start(self) -> int: ...
    @property
    def length_s(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def sum(self) -> float: ...
    @property
    def min(self) -> float: ...
    @property
    def max(self) -> float: ...


def energy_kwh(kind: str, aggregates: Iterable[Aggregate]) -> dict[int, float]:
    """The energy (kWh) of each aggregate of a feed of `kind`, by its start: POWER, mean W x
    length; ENERGY, the sum of its kWh; COUNTER, the rise of a cumulative kWh register since
    the aggregate before (never negative: after a reset, only the rise within the aggregate
    counts); OTHER, none."""
    ordered = sorted(aggregates, key=lambda a: a.start)
    if kind == POWER:
        return {a.start: a.sum / a.count * a.length_s / WS_PER_KWH for a in ordered if a.count}
    if kind == ENERGY:
        return {a.start: a.sum for a in ordered}
    if kind != COUNTER:
        return {}
    energy: dict[int, float] = {}
    last: float | None = None
    for a in ordered:
        rise = a.max - last if last is not None else a.max - a.min
        energy[a.start] = rise if rise >= 0 else max(0.0, a.max - a.min)  # a reset
        last = a.max
    return energy


def add_up(*energies: Mapping[int, float]) -> dict[int, float]:
    """Several feeds' energies (kWh by start) added time by time."""
    total: dict[int, float] = {}
    for energy in energies:
        for start, kwh in energy.items():
            total[start] = total.get(start, 0.0) + kwh
    return total


# ---------------------------------------------------------------- local time


@dataclass(frozen=True, slots=True)
class Slot:
    """A stretch of local time [start, end) in unix seconds, and how a person calls it."""

    start: int
    end: int
    label: str


def _midnight(day: date, tz: ZoneInfo) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp())


def _offset(t: int, tz: ZoneInfo) -> str:
    offset = datetime.fromtimestamp(t, tz).utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}" + (f":{rest:02d}" if rest else "")


def day_hours(day: date, tz: ZoneInfo) -> list[Slot]:
    """The local hours of `day` in `tz`: 24, or 23 and 25 on daylight-saving days, whose
    labels carry the UTC offset so a repeated hour is told apart ("02:00 +02", "02:00 +01")."""
    start, end = _midnight(day, tz), _midnight(day + timedelta(days=1), tz)
    shifting = end - start != 24 * HOUR_S
    return [
        Slot(
            t,
            min(t + HOUR_S, end),
            datetime.fromtimestamp(t, tz).strftime("%H:%M")
            + (f" {_offset(t, tz)}" if shifting else ""),
        )
        for t in range(start, end, HOUR_S)
    ]


def month_days(year: int, month: int, tz: ZoneInfo) -> list[Slot]:
    """The local days of a month in `tz`, labelled by their number."""
    days = calendar.monthrange(year, month)[1]
    first = date(year, month, 1)
    return [
        Slot(
            _midnight(first + timedelta(days=i), tz),
            _midnight(first + timedelta(days=i + 1), tz),
            str(i + 1),
        )
        for i in range(days)
    ]


def year_months(year: int, tz: ZoneInfo) -> list[Slot]:
    """The local months of a year in `tz`, labelled by their abbreviated English name."""
    bounds = [_midnight(date(year, m, 1), tz) for m in range(1, 13)]
    bounds.append(_midnight(date(year + 1, 1, 1), tz))
    return [Slot(bounds[i], bounds[i + 1], calendar.month_abbr[i + 1]) for i in range(12)]


def slot_totals(
    hour_starts: NDArray[np.int64], values: NDArray[np.float64], slots: Sequence[Slot]
) -> NDArray[np.float64]:
    """Hourly `values` ((hours,) or (hours, k), by UTC hour start `hour_starts`) summed into
    `slots` (ordered, not overlapping): (slots,) or (slots, k); an hour in no slot is left out."""
    starts = np.array([s.start for s in slots], dtype=np.int64)
    ends = np.array([s.end for s in slots], dtype=np.int64)
    index = np.searchsorted(starts, hour_starts, side="right") - 1
    inside = (index >= 0) & (hour_starts < ends[np.clip(index, 0, None)])
    out = np.zeros((len(slots), *values.shape[1:]))
    np.add.at(out, index[inside], values[inside])
    return out


# ---------------------------------------------------------------- sharing


@dataclass(frozen=True, slots=True)
class Allocation:
    """A member's energy in one stretch of time (kWh): what they consumed, their share `b x
    G` of the community's generation, and what of it they used (`allocated`)."""

    consumption: float
    assigned: float
    allocated: float

    @property
    def surplus(self) -> float:
        """Their share that they did not use: exported to the grid (kWh)."""
        return self.assigned - self.allocated

    @property
    def from_grid(self) -> float:
        """What they consumed beyond their share (kWh)."""
        return self.consumption - self.allocated

    def __add__(self, other: Allocation) -> Allocation:
        return Allocation(
            self.consumption + other.consumption,
            self.assigned + other.assigned,
            self.allocated + other.allocated,
        )


NOTHING = Allocation(0.0, 0.0, 0.0)
