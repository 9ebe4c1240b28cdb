"""Estimated hourly consumption (BDEW and seasonal variants) and last year's data moved onto
next year's calendar."""

from __future__ import annotations

import calendar
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from community import PROFILES, align_to_year, bdew_quarter_hours, estimate_hourly, hour_starts

MADRID = "Europe/Madrid"
YEAR = 2025  # Madrid's clocks skip 02:00 on 30 March and repeat it on 26 October
# Hours from local midnight of 1 January 2025: 30 March is day 88 (0-based), 26 October day 298.
SPRING_WALL = 88 * 24 + 2  # 2114: the wall hour 02:00 that does not exist
AUTUMN_WALL = 298 * 24 + 2  # 7154: the wall hour 02:00 that happens twice


def weekdays_of_hours(year: int, timezone: str) -> np.ndarray:
    """The local weekday (Monday 0) each hour of `year` starts in."""
    zone = ZoneInfo(timezone)
    return np.array(
        [datetime.fromtimestamp(int(t), zone).weekday() for t in hour_starts(year, timezone)]
    )


def months_of_hours(year: int) -> np.ndarray:
    """The month (1-12) of each hour of `year` in UTC, hour by hour from 1 January 00:00."""
    lengths = [calendar.monthrange(year, month)[1] * 24 for month in range(1, 13)]
    return np.repeat(np.arange(1, 13), lengths)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_sums_to_the_annual_consumption(profile: str) -> None:
    hourly = estimate_hourly(profile, 3_500.0, YEAR, MADRID)
    assert hourly.shape == (8_760,)
    assert np.all(hourly >= 0)
    assert hourly.sum() == pytest.approx(3_500.0, rel=1e-12)


@pytest.mark.parametrize(("year", "hours"), [(2024, 8_784), (2025, 8_760), (2100, 8_760)])
@pytest.mark.parametrize("timezone", [MADRID, "UTC", "Australia/Sydney"])
def test_a_year_has_its_hours_whatever_the_clocks_do(year: int, hours: int, timezone: str) -> None:
    hourly = estimate_hourly("h0", 1_000.0, year, timezone)
    assert hourly.shape == (hours,)
    assert hourly.sum() == pytest.approx(1_000.0, rel=1e-12)


def test_hours_follow_the_local_wall_clock_across_summer_time() -> None:
    """UTC has every wall hour once, so Madrid's hours are UTC's, one scale apart, with the
    skipped spring hour left out and the repeated autumn hour taken twice."""
    madrid = estimate_hourly("h0", 1.0, YEAR, MADRID)
    wall = estimate_hourly("h0", 1.0, YEAR, "UTC")
    scale = madrid[0] / wall[0]
    np.testing.assert_allclose(madrid[:SPRING_WALL], scale * wall[:SPRING_WALL])
    np.testing.assert_allclose(
        madrid[SPRING_WALL : AUTUMN_WALL - 1], scale * wall[SPRING_WALL + 1 : AUTUMN_WALL]
    )
    assert madrid[AUTUMN_WALL - 1] == madrid[AUTUMN_WALL]
    np.testing.assert_allclose(madrid[AUTUMN_WALL:], scale * wall[AUTUMN_WALL:])
    # 8,760 hours of the wall clock less one plus one: the scale makes up for the difference
    assert scale == pytest.approx(1 / (1 - wall[SPRING_WALL] + wall[AUTUMN_WALL]), rel=1e-12)


def test_bdew_profiles_are_a_kwh_a_year_in_quarter_hours_and_read_only() -> None:
    h0 = bdew_quarter_hours("h0", YEAR)
    assert h0.shape == (365 * 96,)
    assert h0.sum() * 0.25 / 1000 == pytest.approx(1.0)  # W per kWh a year, 15 minutes each
    assert not h0.flags.writeable
    assert bdew_quarter_hours("h0", YEAR) is h0
    assert bdew_quarter_hours("g0", 2024).shape == (366 * 96,)


def test_a_school_is_nearly_idle_in_august_and_over_christmas() -> None:
    hourly = estimate_hourly("school", 40_000.0, YEAR, "UTC")
    month = months_of_hours(YEAR)
    assert hourly[month == 8].sum() < 0.02 * 40_000  # a 10 % base load: about 1 %
    assert hourly[month == 8].max() < 0.2 * hourly[month == 10].max()
    # 2 to 6 January (days 1-5) are holidays; 8 January (day 7) a Wednesday of term
    assert hourly[24 : 6 * 24].max() < 0.2 * hourly[7 * 24 : 8 * 24].max()


def test_a_weekend_home_is_used_at_weekends_and_in_august() -> None:
    hourly = estimate_hourly("weekend_home", 2_000.0, YEAR, MADRID)
    weekend = weekdays_of_hours(YEAR, MADRID) >= 5
    not_august = months_of_hours(YEAR) != 8
    outside = hourly[not_august]
    assert outside[weekend[not_august]].sum() > 0.8 * outside.sum()
    assert hourly[~not_august].sum() > 0.15 * 2_000  # every day of August


def test_a_summer_home_and_a_pool_live_in_summer() -> None:
    month = months_of_hours(YEAR)
    summer_home = estimate_hourly("summer_home", 1_500.0, YEAR, "UTC")
    assert summer_home[(month == 7) | (month == 8)].sum() > 0.75 * 1_500
    pool = estimate_hourly("pool", 25_000.0, YEAR, "UTC")
    assert pool[(month >= 7) & (month <= 8)].sum() > 0.6 * 25_000
    # a 2 % base load for 151 days against 93 days open: about 3 % of the year
    assert pool[month <= 5].sum() < 0.04 * 25_000


def test_an_unknown_profile_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"h0.*summer_home"):
        estimate_hourly("h1", 3_500.0, YEAR, MADRID)
    with pytest.raises(ValueError, match="g6"):
        bdew_quarter_hours("school", YEAR)
    with pytest.raises(ValueError, match="annual"):
        estimate_hourly("h0", -1.0, YEAR, MADRID)


@settings(max_examples=12, deadline=None)
@given(
    from_year=st.integers(2019, 2030),
    to_year=st.integers(2019, 2030),
    timezone=st.sampled_from([MADRID, "UTC", "America/New_York"]),
)
def test_aligned_values_keep_their_weekday(from_year: int, to_year: int, timezone: str) -> None:
    """A weekly pattern moved onto another year lands on the same weekdays, every hour,
    including the days beyond the old year's end filled from a week before."""
    aligned = align_to_year(
        weekdays_of_hours(from_year, timezone).astype(np.float64), from_year, to_year, timezone
    )
    np.testing.assert_array_equal(aligned, weekdays_of_hours(to_year, timezone))


def test_aligned_values_keep_the_hour_of_the_week_without_summer_time() -> None:
    # 2027 starts on a Friday, 2028 (leap) on a Saturday: 364 days on, one day later in the year
    hour_of_week = ((np.arange(8_760) // 24 + calendar.weekday(2027, 1, 1)) % 7) * 24 + (
        np.arange(8_760) % 24
    )
    aligned = align_to_year(hour_of_week.astype(np.float64), 2027, 2028, "UTC")
    expected = ((np.arange(8_784) // 24 + calendar.weekday(2028, 1, 1)) % 7) * 24 + (
        np.arange(8_784) % 24
    )
    np.testing.assert_array_equal(aligned, expected)
    assert aligned[0] == hour_of_week[24]  # 1 January 2028 is 364 days after 2 January 2027
    # 31 December 2028 less 364 days is 2 January 2028, after the end of 2027: it takes the
    # values of a week before, 26 December 2027 (both Sundays)
    np.testing.assert_array_equal(aligned[-24:], hour_of_week[-6 * 24 : -5 * 24])


def test_align_moves_every_member_and_refuses_a_wrong_length() -> None:
    members = np.stack(
        [estimate_hourly(p, 1_000.0, 2024, MADRID) for p in ("h0", "g0", "school")], axis=1
    )
    aligned = align_to_year(members, 2024, 2025, MADRID)
    assert aligned.shape == (8_760, 3)
    for n in range(3):
        np.testing.assert_array_equal(
            aligned[:, n], align_to_year(members[:, n], 2024, 2025, MADRID)
        )
    np.testing.assert_array_equal(align_to_year(members, 2024, 2024, MADRID), members)
    with pytest.raises(ValueError, match="8784 hours of 2024"):
        align_to_year(members[:-1], 2024, 2025, MADRID)
