"""The monthly settlement of a sharing agreement: for each member (supply point) and local
month, the energy they consumed, were assigned and used, their surplus, bought energy, money
and CO2, as rows and as CSV (RFC 4180: comma separated, CRLF line ends, a header)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from numpy.typing import NDArray

from community.allocation import Allocation
from community.savings import Tariff, co2_avoided_kg, savings_micro

HEADER = (
    "member",
    "month",
    "consumption_kwh",
    "assigned_kwh",
    "allocated_kwh",
    "surplus_kwh",
    "from_grid_kwh",
    "savings",
    "surplus_value",
    "co2_avoided_kg",
    "currency",
)
CENT = Decimal("0.01")
MICRO_EXPONENT = -6  # micro-units to currency units


@dataclass(frozen=True, slots=True)
class MonthLine:
    """One member's month: `month` "YYYY-MM" in the community's time zone; kWh; money in
    micro-units (savings: allocated x price; surplus: surplus x export); CO2 kg."""

    member: str
    month: str
    consumption_kwh: float
    assigned_kwh: float
    allocated_kwh: float
    surplus_kwh: float
    from_grid_kwh: float
    savings_micro: int
    surplus_micro: int
    co2_avoided_kg: float


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"{timezone!r} is not a time zone; give an IANA name such as 'Europe/Madrid'"
        ) from exc


def _month_starts(first: int, last: int, zone: ZoneInfo) -> tuple[list[str], NDArray[np.int64]]:
    """The local months from the one holding unix time `first` to the one holding `last`:
    their names "YYYY-MM" and the unix time of each one's local midnight on the 1st."""
    local = datetime.fromtimestamp(first, zone)
    end = datetime.fromtimestamp(last, zone)
    year, month = local.year, local.month
    names: list[str] = []
    starts: list[int] = []
    while (year, month) <= (end.year, end.month):
        names.append(f"{year:04d}-{month:02d}")
        starts.append(int(datetime(year, month, 1, tzinfo=zone).timestamp()))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return names, np.array(starts, dtype=np.int64)


def monthly_settlement(
    allocation: Allocation,
    members: Sequence[str],
    step_starts: NDArray[np.int64],
    timezone: str,
    tariffs: Sequence[Tariff],
    co2_g_per_kwh: float,
) -> list[MonthLine]:
    """Each member's lines, month by month in local time (steps by their unix start): the
    lines of the first member in `members` for every month that has a step, months ascending,
    then the next member's. Money rounds once per line (community.savings)."""
    steps, count = allocation.consumption.shape
    if len(members) != count or len(tariffs) != count:
        raise ValueError(
            f"the allocation has {count} members but {len(members)} names and "
            f"{len(tariffs)} tariffs were given; give one of each per member"
        )
    starts = np.asarray(step_starts, dtype=np.int64)
    if starts.shape != (steps,):
        raise ValueError(
            f"the allocation has {steps} steps but {starts.shape} step starts were given; "
            "give one unix start per step"
        )
    if not math.isfinite(co2_g_per_kwh) or co2_g_per_kwh < 0:
        raise ValueError(f"the grid factor of {co2_g_per_kwh} g/kWh must be 0 or more")
    zone = _zone(timezone)
    if steps == 0:
        return []
    names, month_starts = _month_starts(int(starts.min()), int(starts.max()), zone)
    month_of_step = np.searchsorted(month_starts, starts, side="right") - 1
    # (months, steps) indicator: one product sums every member's steps into their months.
    in_month = (month_of_step[None, :] == np.arange(len(names))[:, None]).astype(np.float64)
    consumption = in_month @ allocation.consumption
    assigned = in_month @ allocation.assigned
    allocated = in_month @ allocation.allocated
    has_steps = in_month.any(axis=1)

    lines: list[MonthLine] = []
    for i, (member, tariff) in enumerate(zip(members, tariffs, strict=True)):
        for m, month in enumerate(names):
            if not has_steps[m]:
                continue
            used = float(allocated[m, i])
            surplus = float(assigned[m, i]) - used
            lines.append(
                MonthLine(
                    member=member,
                    month=month,
                    consumption_kwh=float(consumption[m, i]),
                    assigned_kwh=float(assigned[m, i]),
                    allocated_kwh=used,
                    surplus_kwh=surplus,
                    from_grid_kwh=float(consumption[m, i]) - used,
                    savings_micro=savings_micro(used, tariff.price_micro_per_kwh),
                    surplus_micro=savings_micro(surplus, tariff.export_micro_per_kwh),
                    co2_avoided_kg=co2_avoided_kg(used, co2_g_per_kwh),
                )
            )
    return lines


def _money(micro: int) -> str:
    """Micro-units as currency units with two decimals, half to even (display only: the
    micro-unit amount is the exact one)."""
    cents = Decimal(micro).scaleb(MICRO_EXPONENT).quantize(CENT, rounding=ROUND_HALF_EVEN)
    # A few micro-units below zero round to zero cents: write "0.00", never "-0.00".
    return str(cents if cents else cents.copy_abs())


def _three_decimals(value: float) -> str:
    # + 0.0 turns a rounded -0.0 (float noise below zero) into 0.0, never "-0.000".
    return f"{round(value, 3) + 0.0:.3f}"


def settlement_csv(lines: Sequence[MonthLine], currency: str) -> str:
    """The settlement as CSV (comma separated, a header, money in currency units with two
    decimals computed from micro-units, kWh with three decimals)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    for line in lines:
        writer.writerow(
            (
                line.member,
                line.month,
                _three_decimals(line.consumption_kwh),
                _three_decimals(line.assigned_kwh),
                _three_decimals(line.allocated_kwh),
                _three_decimals(line.surplus_kwh),
                _three_decimals(line.from_grid_kwh),
                _money(line.savings_micro),
                _money(line.surplus_micro),
                _three_decimals(line.co2_avoided_kg),
                currency,
            )
        )
    return out.getvalue()
