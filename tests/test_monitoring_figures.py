"""The member pages' arithmetic (monitoring.figures): energy by feed kind, local hours on
daylight-saving days, and the allocation A_h = min(b x G_h, C_h) with what it saves
(DESIGN.md section 14), held to its properties with hypothesis."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from fractions import Fraction
from itertools import pairwise
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring import figures
from monitoring.samples import COUNTER, ENERGY, OTHER, POWER

MADRID = ZoneInfo("Europe/Madrid")
KOLKATA = ZoneInfo("Asia/Kolkata")
H = 3_600


@dataclass(frozen=True)
class Agg:
    start: int
    length_s: int
    count: int
    sum: float
    min: float
    max: float


kwh = st.floats(min_value=0, max_value=1e4, allow_nan=False)
signed_kwh = st.floats(min_value=-1e3, max_value=1e4, allow_nan=False)
shares = st.floats(min_value=0, max_value=1)
hours = st.lists(st.tuples(signed_kwh, signed_kwh), min_size=1, max_size=48)


# ---------------------------------------------------------------- energy by kind


@given(st.lists(st.floats(min_value=0, max_value=1e5, allow_nan=False), min_size=1, max_size=12))
def test_power_is_mean_watts_times_length(watts: list[float]) -> None:
    one = Agg(0, H, len(watts), sum(watts), min(watts), max(watts))
    assert figures.energy_kwh(POWER, [one])[0] == pytest.approx(sum(watts) / len(watts) / 1_000)


def test_energy_adds_up_and_other_is_none() -> None:
    aggs = [Agg(0, H, 4, 1.5, 0.2, 0.6), Agg(H, H, 4, 2.0, 0.5, 0.5)]
    assert figures.energy_kwh(ENERGY, aggs) == {0: 1.5, H: 2.0}
    assert figures.energy_kwh(OTHER, aggs) == {}


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1, max_size=30))
def test_a_counter_never_goes_negative_and_counts_its_rises(steps: list[float]) -> None:
    # A register rising by `steps`, reset to zero whenever it would pass 1000.
    readings, value = [], 500.0
    for step in steps:
        value = value + step if value + step < 1_000 else step
        readings.append(value)
    aggs = [Agg(i * H, H, 1, r, r, r) for i, r in enumerate(readings)]
    energy = figures.energy_kwh(COUNTER, aggs)
    assert all(v >= 0 for v in energy.values())
    assert sum(energy.values()) <= sum(steps[1:]) + 1e-6
    if all(r >= readings[0] for r in readings) and readings == sorted(readings):
        assert sum(energy.values()) == pytest.approx(readings[-1] - readings[0])


# ---------------------------------------------------------------- local time


@pytest.mark.parametrize(
    ("day", "count"),
    [(date(2024, 3, 31), 23), (date(2024, 10, 27), 25), (date(2024, 6, 10), 24)],
)
def test_madrid_days_have_23_24_or_25_hours(day: date, count: int) -> None:
    slots = figures.day_hours(day, MADRID)
    assert len(slots) == count
    assert all(b.start == a.end for a, b in pairwise(slots))
    assert slots[0].start == int(datetime(day.year, day.month, day.day, tzinfo=MADRID).timestamp())
    assert len({s.label for s in slots}) == count  # every hour told apart


def test_the_repeated_hour_carries_its_offset() -> None:
    labels = [s.label for s in figures.day_hours(date(2024, 10, 27), MADRID)]
    assert labels[2:4] == ["02:00 +02", "02:00 +01"]
    spring = [s.label for s in figures.day_hours(date(2024, 3, 31), MADRID)]
    assert spring[1:3] == ["01:00 +01", "03:00 +02"]
    assert figures.day_hours(date(2024, 6, 10), MADRID)[0].label == "00:00"


def test_months_and_years_follow_local_midnights() -> None:
    march = figures.month_days(2024, 3, MADRID)
    assert len(march) == 31 and march[30].end - march[30].start == 23 * H
    year = figures.year_months(2024, MADRID)
    assert [s.label for s in year][:2] == ["Jan", "Feb"]
    assert sum(s.end - s.start for s in year) == 366 * 24 * H  # DST hours cancel out
    assert figures.day_hours(date(2024, 6, 10), KOLKATA)[0].start % H == 1_800


@given(st.dictionaries(st.integers(0, 40 * 86_400), kwh, max_size=200))
def test_slots_keep_every_energy_inside_them(energy: dict[int, float]) -> None:
    start = int(datetime(1970, 1, 1, tzinfo=MADRID).timestamp())
    slots = [figures.Slot(start + d * 86_400, start + (d + 1) * 86_400, str(d)) for d in range(41)]
    inside = {t: v for t, v in energy.items() if slots[0].start <= t < slots[-1].end}
    starts = np.array(sorted(energy), dtype=np.int64)
    values = np.array([energy[t] for t in sorted(energy)], dtype=np.float64)
    totals = figures.slot_totals(starts, values, slots)
    assert totals.sum() == pytest.approx(sum(inside.values()))


# ---------------------------------------------------------------- savings


@given(kwh, st.integers(min_value=0, max_value=10_000_000))
def test_savings_are_exact_micro_units_rounded_once(allocated: float, price: int) -> None:
    saved = figures.savings_micro(allocated, price)
    assert isinstance(saved, int)
    assert abs(Fraction(saved) - Fraction(allocated) * price) <= Fraction(1, 2)


def test_savings_round_half_to_even() -> None:
    assert figures.savings_micro(0.5, 1) == 0 and figures.savings_micro(1.5, 1) == 2
    assert figures.savings_micro(4.0, 150_000) == 600_000


def test_co2_and_trees() -> None:
    co2 = figures.co2_avoided_kg(4.0, 250.0)
    assert co2 == pytest.approx(1.0)
    assert figures.trees(figures.TREE_KG_CO2_PER_YEAR * 3) == pytest.approx(3.0)
