"""The monthly settlement (`community.settlement`): steps grouped by their local month (a
worked example across a month boundary in Madrid, daylight-saving months), totals kept, and
the CSV: its header, money rounded from micro-units, CRLF line ends, read back."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from fractions import Fraction
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from community.allocation import allocate, summarise
from community.savings import Tariff
from community.settlement import HEADER, MonthLine, monthly_settlement, settlement_csv

MADRID = "Europe/Madrid"
HOUR_S = 3_600


def unix(year: int, month: int, day: int, hour: int) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp())


def hourly(first: int, last: int) -> np.ndarray:
    """Unix starts of every hour from `first` up to, not including, `last`."""
    return np.arange(first, last, HOUR_S, dtype=np.int64)


ANA = Tariff(price_micro_per_kwh=150_000, export_micro_per_kwh=50_000)  # 0.15 / 0.05 EUR
BOB = Tariff(price_micro_per_kwh=200_000)


def madrid_example() -> list[MonthLine]:
    # UTC 21:00, 22:00 on 31 Jan are local 22:00, 23:00 (January); UTC 23:00 on 31 Jan and
    # 00:00 on 1 Feb are local 00:00, 01:00 on 1 Feb (February).
    starts = hourly(unix(2024, 1, 31, 21), unix(2024, 2, 1, 1))
    generation = np.array([0.0, 4.0, 6.0, 2.0])
    consumption = np.array([[1.0, 2.0], [1.0, 1.0], [2.0, 5.0], [3.0, 0.0]])
    # Equal shares: assigned [0, 2, 3, 1] each; allocated ana [0, 1, 2, 1], bob [0, 1, 3, 0].
    allocation = allocate(generation, consumption, np.array([0.5, 0.5]))
    return monthly_settlement(allocation, ["ana", "bob"], starts, MADRID, [ANA, BOB], 200.0)


def test_a_month_boundary_in_madrid_worked_by_hand() -> None:
    # ana, January: consumed 1 + 1 = 2, assigned 0 + 2 = 2, used 0 + 1 = 1, surplus 1, bought 1;
    #   savings 1 kWh x 0.15 = 150_000 micro, surplus 1 x 0.05 = 50_000, CO2 1 x 200 g = 0.2 kg
    # ana, February: consumed 2 + 3 = 5, assigned 3 + 1 = 4, used 2 + 1 = 3, surplus 1, bought 2
    # bob, January: consumed 2 + 1 = 3, assigned 2, used 1, surplus 1, bought 2; no export price
    # bob, February: consumed 5 + 0 = 5, assigned 4, used 3 + 0 = 3, surplus 1, bought 2
    assert madrid_example() == [
        MonthLine("ana", "2024-01", 2.0, 2.0, 1.0, 1.0, 1.0, 150_000, 50_000, 0.2),
        MonthLine("ana", "2024-02", 5.0, 4.0, 3.0, 1.0, 2.0, 450_000, 50_000, 0.6),
        MonthLine("bob", "2024-01", 3.0, 2.0, 1.0, 1.0, 2.0, 200_000, 0, 0.2),
        MonthLine("bob", "2024-02", 5.0, 4.0, 3.0, 1.0, 2.0, 600_000, 0, 0.6),
    ]


def test_the_worked_example_as_csv() -> None:
    text = settlement_csv(madrid_example(), "EUR")
    assert text == (
        ",".join(HEADER) + "\r\n"
        "ana,2024-01,2.000,2.000,1.000,1.000,1.000,0.15,0.05,0.200,EUR\r\n"
        "ana,2024-02,5.000,4.000,3.000,1.000,2.000,0.45,0.05,0.600,EUR\r\n"
        "bob,2024-01,3.000,2.000,1.000,1.000,2.000,0.20,0.00,0.200,EUR\r\n"
        "bob,2024-02,5.000,4.000,3.000,1.000,2.000,0.60,0.00,0.600,EUR\r\n"
    )


def test_daylight_saving_months_have_743_and_745_hours() -> None:
    # Local 1 Feb 00:00 (UTC 31 Jan 23:00) to local 1 Nov 00:00 (UTC 31 Oct 23:00), hourly;
    # one kWh consumed every hour, so each month's consumption counts its hours.
    starts = hourly(unix(2024, 1, 31, 23), unix(2024, 10, 31, 23))
    consumption = np.ones((starts.size, 1))
    allocation = allocate(np.zeros(starts.size), consumption, np.array([1.0]))
    lines = monthly_settlement(allocation, ["ana"], starts, MADRID, [ANA], 0.0)
    hours = {line.month: line.consumption_kwh for line in lines}
    assert hours["2024-02"] == 29 * 24  # a leap year's February
    assert hours["2024-03"] == 31 * 24 - 1  # summer time begins on 31 March
    assert hours["2024-04"] == 30 * 24
    assert hours["2024-10"] == 31 * 24 + 1  # summer time ends on 27 October
    assert list(hours) == [f"2024-{m:02d}" for m in range(2, 11)]


def test_months_without_steps_have_no_lines() -> None:
    starts = np.array([unix(2024, 1, 10, 12), unix(2024, 3, 10, 12)], dtype=np.int64)
    allocation = allocate(np.ones(2), np.ones((2, 2)), np.array([0.5, 0.5]))
    lines = monthly_settlement(allocation, ["b", "a"], starts, MADRID, [ANA, BOB], 0.0)
    assert [(line.member, line.month) for line in lines] == [
        ("b", "2024-01"),
        ("b", "2024-03"),
        ("a", "2024-01"),
        ("a", "2024-03"),
    ]


def test_no_steps_no_lines() -> None:
    allocation = allocate(np.zeros(0), np.zeros((0, 1)), np.array([1.0]))
    assert monthly_settlement(allocation, ["a"], np.zeros(0, np.int64), MADRID, [ANA], 0.0) == []


@st.composite
def settlements(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    members = draw(st.integers(1, 4))
    steps = draw(st.integers(1, 30))
    energy = st.floats(0.0, 100.0, allow_nan=False)
    generation = draw(arrays(float, steps, elements=energy))
    consumption = draw(arrays(float, (steps, members), elements=energy))
    weights = draw(arrays(float, members, elements=st.floats(0.01, 1.0)))
    # Steps anywhere in about a year around a summer-time change, in any order.
    offsets = draw(arrays(np.int64, steps, elements=st.integers(0, 400 * 24)))
    starts = unix(2023, 12, 15, 0) + HOUR_S * offsets
    return generation, consumption, weights / weights.sum(), starts


@given(settlements())
def test_monthly_lines_add_up_to_the_allocation(
    settlement: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    generation, consumption, coefficients, starts = settlement
    allocation = allocate(generation, consumption, coefficients)
    names = [f"m{i}" for i in range(consumption.shape[1])]
    tariffs = [Tariff(123_457, 45_679)] * len(names)
    lines = monthly_settlement(allocation, names, starts, MADRID, tariffs, 250.0)
    zone = ZoneInfo(MADRID)
    months = sorted({datetime.fromtimestamp(int(s), zone).strftime("%Y-%m") for s in starts})
    assert [(line.member, line.month) for line in lines] == [(n, m) for n in names for m in months]
    totals = summarise(allocation)
    for i, member in enumerate(totals.members):
        own = lines[i * len(months) : (i + 1) * len(months)]
        assert sum(line.consumption_kwh for line in own) == pytest.approx(member.consumption_kwh)
        assert sum(line.assigned_kwh for line in own) == pytest.approx(member.assigned_kwh)
        assert sum(line.allocated_kwh for line in own) == pytest.approx(member.allocated_kwh)
        assert sum(line.surplus_kwh for line in own) == pytest.approx(member.surplus_kwh, abs=1e-9)
        assert sum(line.from_grid_kwh for line in own) == pytest.approx(
            member.from_grid_kwh, abs=1e-9
        )
        assert sum(line.co2_avoided_kg for line in own) == pytest.approx(
            member.allocated_kwh * 0.25
        )
        # Each line rounds once, so the months' money is the total's within half a micro-unit
        # per line (plus float noise in the sums of kWh).
        exact = Fraction(member.allocated_kwh) * 123_457
        assert abs(sum(line.savings_micro for line in own) - exact) <= len(own) / 2 + 1e-3


def test_money_is_rounded_half_to_even_from_micro_units() -> None:
    def line(savings: int, surplus: int) -> MonthLine:
        return MonthLine("a", "2024-01", 0.0, 0.0, 0.0, -1e-13, 0.0, savings, surplus, 0.0)

    text = settlement_csv(
        [line(1_005_000, 1_015_000), line(2_675_001, -3_000), line(-1_234_567, 0)], "EUR"
    )
    rows = list(csv.reader(io.StringIO(text, newline="")))
    money = [(row[HEADER.index("savings")], row[HEADER.index("surplus_value")]) for row in rows]
    # 1.005 -> 1.00 and 1.015 -> 1.02 (to even); 2.675001 -> 2.68; -0.003 -> 0.00, never -0.00.
    assert money[1:] == [("1.00", "1.02"), ("2.68", "0.00"), ("-1.23", "0.00")]
    # Float noise just below zero kWh is written 0.000.
    assert {row[HEADER.index("surplus_kwh")] for row in rows[1:]} == {"0.000"}


def test_csv_is_rfc_4180() -> None:
    lines = [MonthLine('Bar "La Plaza", S.L.', "2024-01", 1.0, 1.0, 1.0, 0.0, 0.0, 1, 0, 0.0)]
    text = settlement_csv(lines, "EUR")
    assert text.count("\r\n") == 2
    assert text.endswith("\r\n")
    assert "\n" not in text.replace("\r\n", "")
    assert text.split("\r\n")[1].startswith('"Bar ""La Plaza"", S.L.",2024-01,')
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == list(HEADER)
    assert rows[1][0] == 'Bar "La Plaza", S.L.'
    assert rows[1][-1] == "EUR"
    assert settlement_csv([], "EUR") == ",".join(HEADER) + "\r\n"


def test_bad_inputs_are_refused() -> None:
    allocation = allocate(np.ones(2), np.ones((2, 2)), np.array([0.5, 0.5]))
    starts = hourly(unix(2024, 1, 1, 0), unix(2024, 1, 1, 2))
    with pytest.raises(ValueError, match="one of each per member"):
        monthly_settlement(allocation, ["a"], starts, MADRID, [ANA, BOB], 0.0)
    with pytest.raises(ValueError, match="one of each per member"):
        monthly_settlement(allocation, ["a", "b"], starts, MADRID, [ANA], 0.0)
    with pytest.raises(ValueError, match="one unix start per step"):
        monthly_settlement(allocation, ["a", "b"], starts[:1], MADRID, [ANA, BOB], 0.0)
    with pytest.raises(ValueError, match="IANA name"):
        monthly_settlement(allocation, ["a", "b"], starts, "Europe/Atlantis", [ANA, BOB], 0.0)
    with pytest.raises(ValueError, match="IANA name"):
        monthly_settlement(allocation, ["a", "b"], starts, "../etc/passwd", [ANA, BOB], 0.0)
    with pytest.raises(ValueError, match="0 or more"):
        monthly_settlement(allocation, ["a", "b"], starts, MADRID, [ANA, BOB], -1.0)
