"""The managers' exports (`monitoring.exports`): ranges of local dates and their limits, rows
on daylight-saving days, and the CSV and Excel files read back."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openpyxl import load_workbook  # type: ignore[import-untyped]

from monitoring.exports import (
    MAX_DAYS,
    RESOLUTIONS,
    Column,
    ExportRefused,
    export_range,
    export_table,
    row_times,
    write_csv,
    write_xlsx,
)
from monitoring.store import DAY_S, HOUR_S, QUARTER_S, zone

MADRID = zone("Europe/Madrid")


def rows_on(day: date, resolution: str) -> list[int]:
    return row_times(export_range(day, day, resolution, MADRID), MADRID)


@pytest.mark.parametrize(
    ("day", "resolution", "count"),
    [
        (date(2024, 10, 27), "hour", 25),  # summer time ends: 02:00 twice
        (date(2024, 3, 31), "hour", 23),  # summer time begins: no 02:00
        (date(2024, 6, 1), "hour", 24),
        (date(2024, 10, 27), "15min", 100),
        (date(2024, 3, 31), "15min", 92),
        (date(2024, 10, 27), "day", 1),
    ],
)
def test_rows_follow_the_local_day(day: date, resolution: str, count: int) -> None:
    assert len(rows_on(day, resolution)) == count


def test_the_repeated_hour_is_told_apart_by_its_offset() -> None:
    times = rows_on(date(2024, 10, 27), "hour")
    table = export_table([], {}, times, MADRID)
    local = [row[0] for row in table.rows]
    assert local[0] == "2024-10-27T00:00:00+02:00"
    assert local[2:4] == ["2024-10-27T02:00:00+02:00", "2024-10-27T02:00:00+01:00"]
    assert local[-1] == "2024-10-27T23:00:00+01:00"
    assert [row[1] for row in table.rows][:3] == [
        "2024-10-26T22:00:00Z",
        "2024-10-26T23:00:00Z",
        "2024-10-27T00:00:00Z",
    ]
    assert len(set(local)) == 25


@given(
    first=st.dates(date(2020, 1, 1), date(2030, 12, 31)),
    days=st.integers(0, 40),
    resolution=st.sampled_from(sorted(RESOLUTIONS)),
)
def test_rows_tile_the_range_without_gaps(first: date, days: int, resolution: str) -> None:
    span = export_range(first, first + timedelta(days=days), resolution, MADRID)
    times = row_times(span, MADRID)
    assert times[0] == span.start
    assert times == sorted(set(times))
    ends = [*times[1:], span.end]
    for start, end in zip(times, ends, strict=True):
        if span.period == DAY_S:
            assert end - start in (23 * HOUR_S, 24 * HOUR_S, 25 * HOUR_S)
        else:
            assert end - start == span.period
    if span.period == DAY_S:
        assert len(times) == days + 1


@pytest.mark.parametrize(("resolution", "period"), [("hour", HOUR_S), ("15min", QUARTER_S)])
def test_ranges_are_bounded_per_resolution(resolution: str, period: int) -> None:
    first = date(2024, 1, 1)
    longest = first + timedelta(days=MAX_DAYS[period] - 1)
    export_range(first, longest, resolution, MADRID)
    with pytest.raises(ExportRefused) as refused:
        export_range(first, longest + timedelta(days=1), resolution, MADRID)
    assert refused.value.code == "range_too_long"
    assert f"at most {MAX_DAYS[period]} days" in refused.value.message


def test_a_backwards_range_and_an_unknown_resolution_are_refused() -> None:
    with pytest.raises(ExportRefused) as backwards:
        export_range(date(2024, 5, 2), date(2024, 5, 1), "hour", MADRID)
    assert backwards.value.code == "bad_range"
    with pytest.raises(ExportRefused) as unknown:
        export_range(date(2024, 5, 1), date(2024, 5, 1), "minute", MADRID)
    assert unknown.value.code == "bad_resolution"
    assert "15min, hour, day" in unknown.value.message


def sample_table() -> tuple[list[int], list[Column]]:
    times = rows_on(date(2024, 10, 27), "hour")
    columns = [Column(1, "ES0021000000000001AB consumption"), Column(2, "=HYPERLINK(evil)")]
    return times, columns


def test_the_csv_has_a_header_semicolons_and_empty_cells_for_missing_data() -> None:
    times, columns = sample_table()
    energies = {1: {times[0]: 0.25, times[3]: 1.5}, 2: {times[3]: 0.125}}
    text = write_csv(export_table(columns, energies, times, MADRID))
    lines = list(csv.reader(io.StringIO(text), delimiter=";"))
    assert lines[0] == [
        "local_time",
        "utc_time",
        "ES0021000000000001AB consumption",
        "'=HYPERLINK(evil)",
    ]
    assert len(lines) == 1 + 25
    assert lines[1] == ["2024-10-27T00:00:00+02:00", "2024-10-26T22:00:00Z", "0.250000", ""]
    assert lines[4] == ["2024-10-27T02:00:00+01:00", "2024-10-27T01:00:00Z", "1.500000", "0.125000"]
    assert lines[2][2:] == ["", ""]
    assert text.endswith("\r\n")


def test_the_workbook_reads_back_with_numbers_and_text_times() -> None:
    times, columns = sample_table()
    energies = {1: {t: i / 4 for i, t in enumerate(times)}}
    data = write_xlsx(export_table(columns, energies, times, MADRID))
    sheet = load_workbook(io.BytesIO(data)).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == ("local_time", "utc_time", columns[0].title, "'=HYPERLINK(evil)")
    assert len(rows) == 26
    assert rows[1] == ("2024-10-27T00:00:00+02:00", "2024-10-26T22:00:00Z", 0.0, None)
    assert rows[25][2] == 6.0
    for local, utc, *_ in rows[1:]:  # the two names of each time agree
        assert datetime.fromisoformat(local) == datetime.fromisoformat(utc)
