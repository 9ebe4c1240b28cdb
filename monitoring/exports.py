"""The managers' exports, pure: a range of local dates at a resolution (15 minutes, hour or
local day) becomes a table with one row per time and one column per supply point feed, in
kWh, written as CSV or as an Excel workbook.

Each row names its time twice, in the community's local time with its UTC offset (so the
hour repeated when daylight saving ends is unambiguous) and in UTC. A time with no data is
an empty cell, never a zero."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from openpyxl import Workbook  # type: ignore[import-untyped]

from monitoring.store import DAY_S, HOUR_S, QUARTER_S

RESOLUTIONS = {"15min": QUARTER_S, "hour": HOUR_S, "day": DAY_S}
# The longest range one export may cover, in local days, by period: a year of hours, a
# quarter of quarter-hours (about 9,000 rows each), ten years of days.
MAX_DAYS = {QUARTER_S: 93, HOUR_S: 366, DAY_S: 3_660}
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets would run as a formula


class ExportRefused(Exception):
    """An export that cannot be made: `code` is stable, `message` says what to change."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True, slots=True)
class ExportRange:
    """[start, end) in unix seconds: local midnight of the first date to local midnight after
    the last; `period` in seconds (DAY_S: the local day)."""

    start: int
    end: int
    period: int


@dataclass(frozen=True, slots=True)
class Column:
    """One supply point feed of the export and its heading."""

    feed_id: int
    title: str


@dataclass(frozen=True, slots=True)
class ExportTable:
    """`header`, then per row its local time, its UTC time and one kWh (or None) per column."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, str, tuple[float | None, ...]], ...]


def local_midnight(day: date, tz: ZoneInfo) -> int:
    """The unix time of the local midnight opening `day` in `tz`."""
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp())


def export_range(first: date, last: date, resolution: str, tz: ZoneInfo) -> ExportRange:
    """The range of local dates `first` to `last` (both included) at `resolution` ("15min",
    "hour" or "day"), or ExportRefused when it is backwards or too long for that resolution."""
    period = RESOLUTIONS.get(resolution)
    if period is None:
        raise ExportRefused(
            "bad_resolution",
            f"resolution {resolution[:20]!r} is not one of {', '.join(RESOLUTIONS)}",
        )
    if last < first:
        raise ExportRefused("bad_range", f"the end {last} is before the start {first}")
    days = (last - first).days + 1
    if days > MAX_DAYS[period]:
        raise ExportRefused(
            "range_too_long",
            f"{days} days at resolution {resolution} is too long: export at most "
            f"{MAX_DAYS[period]} days at a time, or choose a coarser resolution",
        )
    return ExportRange(
        local_midnight(first, tz), local_midnight(last + timedelta(days=1), tz), period
    )


def row_times(span: ExportRange, tz: ZoneInfo) -> list[int]:
    """The start (unix seconds) of every row: local midnights for days, else every whole
    quarter-hour or hour (UTC-aligned, as the store's buckets are) in the range."""
    if span.period == DAY_S:
        first = datetime.fromtimestamp(span.start, tz).date()
        times: list[int] = []
        day = first
        while (t := local_midnight(day, tz)) < span.end:
            times.append(t)
            day += timedelta(days=1)
        return times
    first_t = span.start + (-span.start) % span.period
    return list(range(first_t, span.end, span.period))


def local_iso(t: int, tz: ZoneInfo) -> str:
    """`t` as local ISO 8601 with its UTC offset, e.g. 2024-10-27T02:00:00+01:00."""
    return datetime.fromtimestamp(t, tz).isoformat()


def utc_iso(t: int) -> str:
    """`t` as UTC ISO 8601 with a Z, e.g. 2024-10-27T01:00:00Z."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def safe_text(text: str) -> str:
    """`text` as a cell no spreadsheet runs as a formula (a leading quote disarms it)."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def export_table(
    columns: Sequence[Column],
    energy_kwh: Mapping[int, Mapping[int, float]],
    times: Sequence[int],
    tz: ZoneInfo,
) -> ExportTable:
    """The table of `columns` at `times` (row starts, unix seconds), from `energy_kwh`: per
    feed id, kWh by bucket start."""
    header = ("local_time", "utc_time", *(safe_text(column.title) for column in columns))
    rows = tuple(
        (
            local_iso(t, tz),
            utc_iso(t),
            tuple(energy_kwh.get(column.feed_id, {}).get(t) for column in columns),
        )
        for t in times
    )
    return ExportTable(header, rows)


def write_csv(table: ExportTable) -> str:
    """`table` as CSV: `;` between fields, a header line, kWh with a decimal point and six
    decimals (Wh to the milli-watt-hour), empty fields where there is no data."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow(table.header)
    for local, utc, values in table.rows:
        writer.writerow([local, utc, *("" if v is None else f"{v:.6f}" for v in values)])
    return out.getvalue()


def write_xlsx(table: ExportTable, sheet: str = "energy kWh") -> bytes:
    """`table` as an Excel workbook (one sheet named `sheet`): times as text, so their UTC
    offsets survive, and kWh as numbers."""
    book = Workbook(write_only=True)
    ws = book.create_sheet(sheet)
    ws.append(list(table.header))
    for local, utc, values in table.rows:
        ws.append([local, utc, *values])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
