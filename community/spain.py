"""Spain's hourly sharing coefficients (RD 244/2019, Orden TED/1247/2021, DESIGN.md section 11):
the hours of a year, coefficients rounded to six decimals so each hour sums to exactly 1, the
distributor's file `<CAU>_<YEAR>.txt` and a validator that names each fault of any such file.

The file, as Som Comunitats' odoo-ce writes it: a line `CUPS;HHHH;0,xxxxxx` per supply point
and hour, hour by hour (0001 to 8760, 8784 in a leap year), every CUPS in each hour in the same
order, six decimals after a decimal comma, CRLF between lines and none after the last, ASCII
only; a fixed agreement is a line `CUPS;0,xxxxxx` per supply point. The validator reads the
bytes with numpy (a 1,000-member year is 8.76 million lines), never a regex per line."""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

MILLION = 1_000_000  # coefficients are written with six decimals: whole millionths
SUM_TOLERANCE = 1e-6  # how far a row of float coefficients may stray from 1 before rounding
HOURS = 8_760
LEAP_HOURS = 8_784
CUPS_SHAPE = re.compile(r"ES[0-9]{16}[A-Z0-9]{2,4}")  # the file's check; control letters aside
CAU_SHAPE = re.compile(r"[A-Z0-9]+")
NAME_SHAPE = re.compile(r"([A-Z0-9]+)_([0-9]{4})\.txt")
FAULT_LIMIT = 100  # faults listed one by one; the rest are counted in one `more_faults`

CUPS_MIN = 20  # ES, 16 digits, 2 to 4 letters or digits: 20 to 22 characters
KEY_WIDTH = 24  # a CUPS field's bytes kept to tell CUPS apart: three 64-bit words
HASH_FACTORS = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], np.uint64)
HOUR_WIDTH = 4  # HHHH
COEFFICIENT_WIDTH = 8  # d,dddddd
TAIL_WIDTH = len(";HHHH;d,dddddd\r\n")  # what follows the CUPS on an hourly line
CR, LF, SEMICOLON, COMMA, POINT = b"\r"[0], b"\n"[0], b";"[0], b","[0], b"."[0]
ZERO = ord("0")
HOURLY_LAYOUT = "CUPS;HHHH;0,xxxxxx"
FIXED_LAYOUT = "CUPS;0,xxxxxx"

IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]
ByteArray = NDArray[np.uint8]


def year_hours(year: int) -> int:
    """8,760, or 8,784 in a leap year."""
    return LEAP_HOURS if calendar.isleap(year) else HOURS


def hour_starts(year: int, timezone: str) -> NDArray[np.int64]:
    """The unix start of hours 1..N of `year`: hour k starts (k - 1) real hours after local
    midnight of 1 January in `timezone` (so a year always has year_hours(year) of them)."""
    first = int(datetime(year, 1, 1, tzinfo=ZoneInfo(timezone)).timestamp())
    return first + 3_600 * np.arange(year_hours(year), dtype=np.int64)


def round_coefficients(coefficients: NDArray[np.float64]) -> NDArray[np.int64]:
    """Coefficients (members,) or (hours, members), rows summing to 1, as whole millionths whose
    every row sums to exactly 1,000,000 (largest remainder; ties to the lower index)."""
    values = np.asarray(coefficients, dtype=np.float64)
    if values.ndim not in (1, 2) or values.shape[-1] < 1:
        raise ValueError("coefficients must be (members,) or (hours, members), members >= 1")
    rows = values.reshape(-1, values.shape[-1])
    if not np.isfinite(rows).all():
        raise ValueError("a coefficient is not a finite number")
    if (rows < 0).any():
        raise ValueError("a coefficient is negative")
    totals = rows.sum(axis=1, keepdims=True)
    stray = np.flatnonzero(np.abs(totals[:, 0] - 1.0) > SUM_TOLERANCE)
    if stray.size:
        raise ValueError(
            f"row {stray[0]} of the coefficients sums to {totals[stray[0], 0]!r}, not 1 "
            f"(within {SUM_TOLERANCE})"
        )
    # Scaled to sum to 1 first, a row's floors fall short of a million by 0..members units.
    scaled = rows * (MILLION / totals)
    floors = np.floor(scaled)
    remainders = np.subtract(scaled, floors, out=scaled)
    short = MILLION - floors.sum(axis=1).astype(np.int64)
    members = rows.shape[1]
    # The remainders from a row's short-th largest up each earn a unit...
    threshold = np.sort(remainders, axis=1)[
        np.arange(rows.shape[0]), np.clip(members - short, 0, members - 1)
    ]
    threshold[short == 0] = 2.0  # above any remainder
    earns = remainders >= threshold[:, None]
    # ...but where remainders tie at that threshold, only the lower indices among them do.
    over = np.flatnonzero(earns.sum(axis=1) > short)
    if over.size:
        tied = remainders[over] == threshold[over, None]
        room = short[over] - (earns[over] & ~tied).sum(axis=1)
        earns[over] &= ~tied | (np.cumsum(tied, axis=1) <= room[:, None])
    rounded = floors.astype(np.int64) + earns
    return np.asarray(rounded.reshape(values.shape), dtype=np.int64)


def file_name(cau: str, year: int) -> str:
    """`<CAU>_<YEAR>.txt`."""
    if CAU_SHAPE.fullmatch(cau) is None:
        raise ValueError(f"CAU {cau[:40]!r} must be upper-case letters and digits")
    if not 1 <= year <= 9_999:
        raise ValueError(f"year {year} must have four digits")
    return f"{cau}_{year:04d}.txt"


def write_hourly_file(cups: Sequence[str], millionths: NDArray[np.int64]) -> bytes:
    """The hourly file: `CUPS;HHHH;0,xxxxxx` hour by hour, every CUPS in each hour in the given
    order, CRLF between lines and none after the last; `millionths` (hours, members), each row
    summing to 1,000,000. ValueError on a bad CUPS, shape or row."""
    names = _checked_cups(cups)
    table = _checked_millionths(millionths, len(names))
    hours = table.shape[0]
    if hours not in (HOURS, LEAP_HOURS):
        raise ValueError(f"an hourly file has {HOURS} or {LEAP_HOURS} hours, not {hours}")
    # Each line is its CUPS and a tail `;HHHH;d,dddddd\r\n`; CUPS of one length side by side
    # make a regular (hours, CUPS, line) array, filled a field at a time for every hour at once.
    hour_text = _digits(np.arange(1, hours + 1), HOUR_WIDTH)[:, None, :]
    parts = []
    for first, last in _equal_runs([len(name) for name in names]):
        length = len(names[first])
        part = np.empty((hours, last - first, length + TAIL_WIDTH), dtype=np.uint8)
        text = "".join(names[first:last]).encode("ascii")
        part[:, :, :length] = np.frombuffer(text, np.uint8).reshape(last - first, length)
        tail = part[:, :, length:]
        tail[:, :, 0] = SEMICOLON
        tail[:, :, 1 : 1 + HOUR_WIDTH] = hour_text
        tail[:, :, 1 + HOUR_WIDTH] = SEMICOLON
        tail[:, :, 2 + HOUR_WIDTH : -2] = _coefficient_bytes()[table[:, first:last]]
        tail[:, :, -2:] = np.frombuffer(b"\r\n", dtype=np.uint8)
        parts.append(part.reshape(hours, -1))
    block = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    return block.reshape(-1)[:-2].tobytes()


def _equal_runs(lengths: list[int]) -> list[tuple[int, int]]:
    """The runs [first, last) of equal neighbouring lengths."""
    cuts = [i for i in range(1, len(lengths)) if lengths[i] != lengths[i - 1]]
    edges = [0, *cuts, len(lengths)]
    return list(pairwise(edges))


def write_fixed_file(cups: Sequence[str], millionths: NDArray[np.int64]) -> bytes:
    """The fixed-coefficient file: `CUPS;0,xxxxxx` a line per CUPS."""
    names = _checked_cups(cups)
    table = _checked_millionths(np.atleast_2d(millionths), len(names))
    if table.shape[0] != 1:
        raise ValueError("fixed coefficients are one row, (members,) or (1, members)")
    lines = (
        f"{name};{_coefficient_text(int(share))}"
        for name, share in zip(names, table[0], strict=True)
    )
    return "\r\n".join(lines).encode("ascii")


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault of a coefficient file: `line` (1-based, None for the whole file), a stable
    `code` and a sentence a person can act on."""

    line: int | None
    code: str
    message: str


class FileRefused(ValueError):
    """A coefficient file with faults, all of them in `faults`."""

    def __init__(self, faults: Sequence[Fault]) -> None:
        super().__init__(f"{len(faults)} faults, the first: {faults[0].message}")
        self.faults = tuple(faults)


def validate_file(
    content: bytes,
    name: str | None = None,
    year: int | None = None,
    expected_cups: Sequence[str] | None = None,
) -> list[Fault]:
    """Every fault of an hourly (or fixed) coefficient file; empty when it is sound. The year
    comes from `year`, else from `name` (`<CAU>_<YEAR>.txt`); `expected_cups` are the supply
    points that must each appear in every hour."""
    return _inspect(content, name, year, expected_cups)[0]


def read_hourly_file(
    content: bytes, name: str | None = None, year: int | None = None
) -> tuple[tuple[str, ...], NDArray[np.int64]]:
    """The CUPS (in their order) and the millionths (hours, members) of a sound hourly file;
    FileRefused with every fault otherwise."""
    faults, reading = _inspect(content, name, year, None)
    if faults:
        raise FileRefused(faults)
    if reading is None:
        raise FileRefused(
            [
                Fault(
                    None,
                    "bad_fields",
                    f"this is a fixed-coefficient file ({FIXED_LAYOUT}); an hourly file's "
                    f"lines are {HOURLY_LAYOUT}",
                )
            ]
        )
    return reading


# ------------------------------------------------------------------ writing


def _checked_cups(cups: Sequence[str]) -> list[str]:
    """The CUPS as given, each matching the file's pattern, none twice; ValueError otherwise."""
    names = [str(point) for point in cups]
    if not names:
        raise ValueError("a coefficient file needs at least one CUPS")
    for point in names:
        if CUPS_SHAPE.fullmatch(point) is None:
            raise ValueError(
                f"CUPS {point[:40]!r} must be ES, 16 digits and 2 to 4 letters or digits"
            )
    if len(set(names)) != len(names):
        twice = next(point for point in names if names.count(point) > 1)
        raise ValueError(f"CUPS {twice} is listed twice")
    return names


def _checked_millionths(millionths: NDArray[np.int64], members: int) -> IntArray:
    """Whole millionths (rows, members), none negative, each row summing to 1,000,000."""
    table = np.asarray(millionths)
    if not np.issubdtype(table.dtype, np.integer):
        raise ValueError("coefficients must be whole millionths (integers)")
    if table.ndim != 2 or table.shape[1] != members:
        raise ValueError(f"coefficients must be (hours, {members}), not {table.shape}")
    if (table < 0).any():
        raise ValueError("a coefficient is negative")
    sums = table.sum(axis=1, dtype=np.int64)
    wrong = np.flatnonzero(sums != MILLION)
    if wrong.size:
        raise ValueError(
            f"row {wrong[0]} sums to {_coefficient_text(int(sums[wrong[0]]))}, not 1,000000"
        )
    return table.astype(np.int64)


def _digits(values: IntArray, width: int) -> ByteArray:
    """`values` (n,) written with `width` ASCII digits each, (n, width)."""
    places = 10 ** np.arange(width - 1, -1, -1)
    return (values[:, None] // places % 10 + ZERO).astype(np.uint8)


@cache
def _coefficient_bytes() -> ByteArray:
    """`d,dddddd` for every number of millionths 0..1,000,000, (1,000,001, 8) ASCII codes:
    writing a year's file is then one look-up per coefficient."""
    text = np.empty((MILLION + 1, COEFFICIENT_WIDTH), dtype=np.uint8)
    millionths = np.arange(MILLION + 1)
    text[:, :1] = _digits(millionths // MILLION, 1)
    text[:, 1] = COMMA
    text[:, 2:] = _digits(millionths % MILLION, COEFFICIENT_WIDTH - 2)
    text.setflags(write=False)
    return text


def _coefficient_text(millionths: int) -> str:
    """1,000000 for 1,000,000 millionths; a sign for a negative difference."""
    sign = "-" if millionths < 0 else ""
    whole, part = divmod(abs(millionths), MILLION)
    return f"{sign}{whole},{part:06d}"


# ------------------------------------------------------------------ reading


@dataclass(frozen=True, slots=True, eq=False)
class _Lines:
    """A file cut into lines at every CRLF, LF or CR: where each line starts and ends (bytes;
    the end excludes the line end)."""

    content: bytes
    data: ByteArray
    starts: IntArray
    ends: IntArray

    def text(self, line: int, start: int | None = None, end: int | None = None) -> str:
        """The line (or its bytes [start, end)) for a message: ASCII, at most 60 characters."""
        first = int(self.starts[line]) if start is None else start
        last = int(self.ends[line]) if end is None else end
        shown = self.content[first : min(last, first + 60)]
        return shown.decode("ascii", errors="backslashreplace")


@dataclass(frozen=True, slots=True, eq=False)
class _Fields:
    """Each line's fields, parsed: `shaped` lines have the kind's number of fields; the others
    are bad_fields and none of their fields counts."""

    hourly: bool
    shaped: BoolArray
    cups_end: IntArray  # the first semicolon
    hour_start: IntArray  # hourly: the hour's first byte
    value_start: IntArray  # the coefficient's first byte
    cups_number: IntArray  # a number per distinct CUPS field; -1 on a line without fields
    cups_names: list[str]  # the CUPS fields by number (hourly: the first hour's first)
    leading: int  # how many of them the first hour has
    cups_ok: BoolArray
    hour_digits_ok: BoolArray  # four digits
    hour: IntArray  # 0 unless four digits
    value_ok: BoolArray  # d,dddddd, at most 1
    value: IntArray  # millionths; 0 unless value_ok
    has_point: BoolArray  # a decimal point in the coefficient


@dataclass(frozen=True, slots=True, eq=False)
class _Found:
    """The lines (0-based) with one kind of fault, and the message for the i-th of them."""

    code: str
    lines: IntArray
    say: Callable[[int], str]


def _by_line(code: str, lines: IntArray, message: Callable[[int], str]) -> _Found:
    """Faults whose message depends on their line (0-based) alone."""
    return _Found(code, lines, lambda i: message(int(lines[i])))


def _inspect(
    content: bytes, name: str | None, year: int | None, expected_cups: Sequence[str] | None
) -> tuple[list[Fault], tuple[tuple[str, ...], IntArray] | None]:
    """Every fault of the file, and its CUPS and millionths when it is a sound hourly file."""
    summary: list[Fault] = []
    year = _year_of(name, year, summary)
    # An expected CUPS that is no CUPS at all can only be missing: a fault, not an error.
    expected = None if expected_cups is None else list(dict.fromkeys(map(str, expected_cups)))
    if not content.strip(b" \t\r\n"):
        summary.append(Fault(None, "empty", "the file is empty; write a line per CUPS and hour"))
        return summary, None
    lines, found = _split_lines(content)
    fields = _fields(lines)
    found += _field_faults(lines, fields)
    cups: tuple[str, ...] | None = None
    if fields.hourly:
        cups = _hourly_checks(lines, fields, year, expected, summary, found)
    else:
        _fixed_checks(fields, expected, summary, found)
    faults = _listing(summary, found)
    if faults or cups is None:
        return faults, None
    # Sound: every hour lists the first hour's CUPS in its order, hour after hour.
    return faults, (cups, fields.value.reshape(-1, len(cups)))


def _year_of(name: str | None, year: int | None, summary: list[Fault]) -> int | None:
    """The file's year: `year`, else the one in `name`; a bad name is a fault."""
    if name is None:
        return year
    shape = NAME_SHAPE.fullmatch(name)
    if shape is None:
        summary.append(
            Fault(
                None,
                "bad_name",
                f"the file's name {name[:60]!r} must be <CAU>_<YEAR>.txt, for example "
                "ES0021000000000001JN0FA001_2027.txt; rename it",
            )
        )
        return year
    named = int(shape.group(2))
    if year is not None and named != year:
        summary.append(
            Fault(
                None,
                "bad_name",
                f"the file's name {name!r} says {named} but its coefficients are for {year}; "
                "rename it",
            )
        )
        return year
    return named


def _split_lines(content: bytes) -> tuple[_Lines, list[_Found]]:
    """The lines, cut at every line end, and the faults of the line ends and of non-ASCII
    bytes."""
    data = np.frombuffer(content, dtype=np.uint8)
    size = data.size
    lf = np.flatnonzero(data == LF)
    paired = (data[np.maximum(lf - 1, 0)] == CR) & (lf > 0)
    if paired.all() and np.count_nonzero(data == CR) == lf.size:
        # The usual file: every line end a CRLF, nothing to sort.
        breaks, kinds, widths = lf - 1, np.zeros(lf.size, np.int8), np.full(lf.size, 2)
    else:
        cr = np.flatnonzero(data == CR)
        lone_cr = cr[(cr + 1 >= size) | (data[np.minimum(cr + 1, size - 1)] != LF)]
        breaks = np.concatenate([lf[paired] - 1, lf[~paired], lone_cr])
        kinds = np.repeat(
            np.arange(3, dtype=np.int8), [int(paired.sum()), int((~paired).sum()), lone_cr.size]
        )
        order = np.argsort(breaks, kind="stable")
        breaks, kinds = breaks[order], kinds[order]
        widths = np.where(kinds == 0, 2, 1)
    starts = np.concatenate([[0], breaks + widths]).astype(np.int64)
    ends = np.concatenate([breaks, [size]]).astype(np.int64)
    trailing = bool(starts[-1] == size)  # a line end after the last line
    if trailing:
        starts, ends = starts[:-1], ends[:-1]
    last = starts.size - 1
    found = [
        _by_line(
            "bad_line_end",
            np.flatnonzero(kinds == 1),
            lambda k: f"line {k + 1} ends with LF alone; end every line with CRLF (\\r\\n)",
        ),
        _by_line(
            "bad_line_end",
            np.flatnonzero(kinds == 2),
            lambda k: f"line {k + 1} ends with CR alone; end every line with CRLF (\\r\\n)",
        ),
        _by_line(
            "bad_line_end",
            np.array([last] if trailing else [], dtype=np.int64),
            lambda k: (
                f"line {k + 1}, the last, is followed by a line end; remove it (the "
                "distributor wants none after the last line)"
            ),
        ),
    ]
    if size and data.max() > 127:
        wide = np.flatnonzero(data > 127)
        owners = np.searchsorted(starts, wide, side="right") - 1
        first = np.flatnonzero(np.diff(owners, prepend=-1) != 0)

        def not_ascii(k: int) -> str:
            at = int(wide[first[np.searchsorted(owners[first], k)]])
            return (
                f"line {k + 1} has a byte that is not ASCII (0x{data[at]:02X} at column "
                f"{at - starts[k] + 1}); save the file as plain ASCII"
            )

        found.append(_by_line("not_ascii", owners[first], not_ascii))
    return _Lines(content, data, starts, ends), found


def _layout(lines: _Lines) -> tuple[bool, BoolArray, IntArray, IntArray, IntArray]:
    """Whether the file is hourly (most lines have 3 fields) or fixed (most have 2); which
    lines have the kind's fields; where each line's CUPS ends, its hour and its coefficient
    start (a line without the fields: its end)."""
    data, starts, ends = lines.data, lines.starts, lines.ends
    count = starts.size
    semicolons = np.count_nonzero(data == SEMICOLON)
    if semicolons in (count, 2 * count):
        # The usual file: one or two semicolons a line, at their places from the line's end.
        hourly = semicolons == 2 * count
        cups_end = ends - (len(";HHHH;0,000000") if hourly else len(";0,000000"))
        value_start = ends - COEFFICIENT_WIDTH
        where = np.maximum(cups_end, 0)
        placed = (cups_end >= starts) & (data[where] == SEMICOLON)
        if hourly:
            placed &= data[np.maximum(value_start - 1, 0)] == SEMICOLON
        if placed.all():
            return hourly, placed, cups_end, cups_end + 1, value_start
    at = np.flatnonzero(data == SEMICOLON)
    owners = np.searchsorted(starts, at, side="right") - 1
    per_line = np.bincount(owners, minlength=count)
    hourly = bool((per_line == 2).sum() >= (per_line == 1).sum())
    shaped = per_line == (2 if hourly else 1)
    if at.size == 0:
        return hourly, shaped, ends.copy(), ends.copy(), ends.copy()
    first = np.minimum(np.searchsorted(owners, np.arange(count)), at.size - 1)
    cups_end = np.where(shaped, at[first], ends)
    value_start = np.where(shaped, at[np.minimum(first + int(hourly), at.size - 1)] + 1, ends)
    hour_start = np.where(shaped & hourly, cups_end + 1, ends)
    return hourly, shaped, cups_end, hour_start, value_start


def _fields(lines: _Lines) -> _Fields:
    """Each line's fields, read from fixed-width windows onto the bytes."""
    data, starts, ends = lines.data, lines.starts, lines.ends
    hourly, shaped, cups_end, hour_start, value_start = _layout(lines)
    hour_bytes = _windows(data, hour_start, HOUR_WIDTH)
    hour_digits_ok = (
        shaped & hourly & (value_start - hour_start - 1 == HOUR_WIDTH) & _all_digits(hour_bytes)
    )
    hour = np.where(hour_digits_ok, _number(hour_bytes), 0)
    value_bytes = _windows(data, value_start, COEFFICIENT_WIDTH)
    value = _number(value_bytes[:, :1]) * MILLION + _number(value_bytes[:, 2:])
    value_ok = (
        shaped
        & (ends - value_start == COEFFICIENT_WIDTH)
        & _all_digits(value_bytes[:, :1])
        & (value_bytes[:, 1] == COMMA)
        & _all_digits(value_bytes[:, 2:])
        & (value <= MILLION)
    )
    has_point = np.zeros(starts.size, dtype=np.bool_)
    if np.count_nonzero(data == POINT):
        points = np.flatnonzero(data == POINT)
        owners = np.searchsorted(starts, points, side="right") - 1
        in_value = shaped[owners] & (points >= value_start[owners])
        has_point[owners[in_value]] = True
    length = cups_end - starts
    numbers, names, leading = _cups_numbers(data, starts, length, np.flatnonzero(shaped), hour)
    sound = np.array([CUPS_SHAPE.fullmatch(name) is not None for name in names] + [False])
    lengths = np.array([len(name) for name in names] + [0])
    # A field's number stands for its first KEY_WIDTH bytes: the length must match too.
    cups_ok = shaped & sound[numbers] & (lengths[numbers] == length)
    return _Fields(
        hourly=hourly,
        shaped=shaped,
        cups_end=cups_end,
        hour_start=hour_start,
        value_start=value_start,
        cups_number=numbers,
        cups_names=names,
        leading=leading,
        cups_ok=cups_ok,
        hour_digits_ok=hour_digits_ok,
        hour=hour,
        value_ok=value_ok,
        value=np.where(value_ok, value, 0),
        has_point=has_point,
    )


def _windows(data: ByteArray, at: IntArray, width: int) -> ByteArray:
    """The bytes [at, at + width) for each position, (positions, width), zero past the end."""
    if data.size < width:
        data = np.concatenate([data, np.zeros(width, dtype=np.uint8)])
    last = data.size - width
    rows = sliding_window_view(data, width)[np.minimum(at, last)]
    late = np.flatnonzero(at > last)
    if late.size:
        end = np.concatenate([data[last:], np.zeros(width, dtype=np.uint8)])
        rows[late] = sliding_window_view(end, width)[at[late] - last]
    return rows


def _cups_numbers(
    data: ByteArray, starts: IntArray, length: IntArray, rows: IntArray, hour: IntArray
) -> tuple[IntArray, list[str], int]:
    """A number per distinct CUPS field of the lines `rows` (-1 on the other lines), in the
    order they first appear; the fields by number (a field's first KEY_WIDTH bytes, ASCII or
    escaped); how many the first hour's lines have."""
    numbers = np.full(starts.size, -1, dtype=np.int64)
    if rows.size == 0:
        return numbers, [], 0
    field = _windows(data, starts[rows], KEY_WIDTH)
    field[:, CUPS_MIN:] *= np.arange(CUPS_MIN, KEY_WIDTH) < length[rows, None]
    keys = field.view(f"S{KEY_WIDTH}").ravel()
    hashed = field.view(np.uint64) @ HASH_FACTORS  # wraps: a 64-bit hash of the 24 bytes
    changes = np.flatnonzero(hour[rows] != hour[rows[0]])
    first_hour = int(changes[0]) if changes.size else rows.size
    numbered, firsts = _first_seen(hashed, first_hour)
    if (keys[firsts][numbered] != keys).any():  # two CUPS fields share a hash: number exactly
        numbered, firsts = _first_seen(keys, first_hour)
    numbers[rows] = numbered
    names = [key.decode("ascii", errors="backslashreplace") for key in keys[firsts].tolist()]
    return numbers, names, int(np.count_nonzero(firsts < first_hour))


def _first_seen(values: NDArray[Any], head: int) -> tuple[IntArray, IntArray]:
    """Each value numbered by the order in which it first appears, and where each number first
    appears. Most distinct values appear in the first `head` (a file's first hour): the others
    are looked up among those rather than all sorted."""
    distinct, first = np.unique(values[:head], return_index=True)
    slot = np.minimum(np.searchsorted(distinct, values), distinct.size - 1)
    strays = np.flatnonzero(distinct[slot] != values)
    _, stray_first, stray_slot = np.unique(values[strays], return_index=True, return_inverse=True)
    slot[strays] = distinct.size + stray_slot.reshape(-1)
    firsts = np.concatenate([first, strays[stray_first]])
    order = np.argsort(firsts)
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return rank[slot], firsts[order]


def _all_digits(codes: ByteArray) -> BoolArray:
    """Rows of ASCII codes that are all digits (uint8 arithmetic wraps below '0')."""
    return np.asarray(((codes - ZERO) <= 9).all(axis=1), dtype=np.bool_)


def _number(digits: ByteArray) -> IntArray:
    """The decimal number each row of ASCII digits writes (garbage for other bytes)."""
    number = np.zeros(digits.shape[0], dtype=np.int64)
    for place in range(digits.shape[1]):
        number = number * 10 + (digits[:, place] - ZERO)
    return number


def _field_faults(lines: _Lines, fields: _Fields) -> list[_Found]:
    """The faults of single lines: their fields, CUPS and coefficient (hours come later, once
    the year's hours are known)."""
    shaped = fields.shaped
    layout = HOURLY_LAYOUT if fields.hourly else FIXED_LAYOUT
    kind = "an hourly" if fields.hourly else "a fixed-coefficient"
    blank = lines.starts == lines.ends

    def bad_fields(k: int) -> str:
        if blank[k]:
            return f"line {k + 1} is empty; remove it"
        return (
            f"line {k + 1} ({lines.text(k)!r}) is not {layout}: {kind} file's lines have "
            f"{layout.count(';') + 1} fields separated by semicolons; correct it"
        )

    def bad_cups(k: int) -> str:
        cups = lines.text(k, end=int(fields.cups_end[k]))
        return (
            f"line {k + 1}{_hour_of(fields, k)}: CUPS {cups!r} must be ES, 16 digits and 2 to 4 "
            "capital letters "
            "or digits (as on the electricity bill); correct it"
        )

    def bad_separator(k: int) -> str:
        text = _value_text(lines, fields, k)
        return (
            f"line {k + 1}{_hour_of(fields, k)}: coefficient {text!r} has a decimal point; "
            f"write a decimal comma ({text.replace('.', ',')!r})"
        )

    def bad_coefficient(k: int) -> str:
        text = _value_text(lines, fields, k)
        if text.startswith("-"):
            problem = "is negative"
        elif re.fullmatch(r"[0-9],[0-9]{6}", text):
            problem = "is above 1"
        else:
            problem = "is not d,dddddd (one digit, a comma and six decimals)"
        return (
            f"line {k + 1}{_hour_of(fields, k)}: coefficient {text!r} {problem}; write a "
            "coefficient from 0,000000 to 1,000000"
        )

    return [
        _by_line("bad_fields", np.flatnonzero(~shaped), bad_fields),
        _by_line("bad_cups", np.flatnonzero(shaped & ~fields.cups_ok), bad_cups),
        _by_line("bad_separator", np.flatnonzero(shaped & fields.has_point), bad_separator),
        _by_line(
            "bad_coefficient",
            np.flatnonzero(shaped & ~fields.value_ok & ~fields.has_point),
            bad_coefficient,
        ),
    ]


def _value_text(lines: _Lines, fields: _Fields, k: int) -> str:
    return lines.text(k, start=int(fields.value_start[k]))


def _hour_of(fields: _Fields, k: int) -> str:
    return f" (hour {fields.hour[k]:04d})" if fields.hour_digits_ok[k] else ""


def _hourly_checks(
    lines: _Lines,
    fields: _Fields,
    year: int | None,
    expected: list[str] | None,
    summary: list[Fault],
    found: list[_Found],
) -> tuple[str, ...] | None:
    """The faults of an hourly file's hours and of the CUPS in each hour; the first hour's CUPS
    in their order (the file's, when no fault is found)."""
    shaped, hour = fields.shaped, fields.hour
    if year is not None:
        hours_in_year = year_hours(year)
    else:
        # Without a year, a file reaching past hour 8760 claims a leap year.
        late = fields.hour_digits_ok & (hour > HOURS) & (hour <= LEAP_HOURS)
        hours_in_year = LEAP_HOURS if late.any() else HOURS
    hour_ok = fields.hour_digits_ok & (hour >= 1) & (hour <= hours_in_year)
    year_text = "a year" if year is None else str(year)

    def bad_hour(k: int) -> str:
        text = lines.text(k, start=int(fields.hour_start[k]), end=int(fields.value_start[k]) - 1)
        if not fields.hour_digits_ok[k]:
            problem = "is not four digits"
        elif hour[k] == 0:
            problem = "is 0000 (hours are numbered from 0001)"
        else:
            problem = f"is beyond {year_text}'s {hours_in_year:,} hours"
        return f"line {k + 1}: hour {text!r} {problem}; correct it"

    found.append(_by_line("bad_hour", np.flatnonzero(shaped & ~hour_ok), bad_hour))
    timed = np.flatnonzero(shaped & hour_ok)
    if timed.size == 0:
        return None
    first_line = _first_lines(hour[timed], timed, hours_in_year + 1)  # index 0 unused
    _hour_count(lines, fields, hour_ok, first_line, hours_in_year, year, summary)
    good = timed[fields.cups_ok[timed]]
    if good.size == 0:
        _sums(fields, timed, first_line, hours_in_year, found)
        return None
    ids, names, leading = fields.cups_number, fields.cups_names, fields.leading
    # A sound file's (hour, CUPS number) rise line by line: no duplicate, no disorder.
    pairs = (hour[good] - 1) * len(names) + ids[good]
    ascending = bool((np.diff(pairs) > 0).all())
    if not ascending:
        order = np.argsort(pairs, kind="stable")
        ranked = pairs[order]
        repeated = ranked[1:] == ranked[:-1]
        _order(fields, good, ids, leading, names, np.sort(good[order[1:][repeated]]), found)
        pairs = ranked[np.concatenate([[True], ~repeated])]
    hours_of = np.bincount(pairs % len(names), minlength=len(names))
    hour_has = np.zeros(hours_in_year + 1, dtype=np.bool_)
    hour_has[pairs // len(names) + 1] = True
    _membership(
        good, ids, names, hour[good], hours_of, hour_has, first_line, expected, summary, found
    )
    _sums(fields, timed, first_line, hours_in_year, found)
    return tuple(names[:leading])


def _first_lines(numbers: IntArray, lines: IntArray, size: int) -> IntArray:
    """The first of `lines` (0-based) for each of the numbers 0..size-1 (an hour, a CUPS's),
    -1 for a number without one; `numbers` is each line's."""
    none = np.iinfo(np.int64).max
    first = np.full(size, none, dtype=np.int64)
    np.minimum.at(first, numbers, lines)
    first[first == none] = -1
    return first


def _hour_count(
    lines: _Lines,
    fields: _Fields,
    hour_ok: BoolArray,
    first_line: IntArray,
    hours_in_year: int,
    year: int | None,
    summary: list[Fault],
) -> None:
    """One fault when the file's hours are not 0001..N of its year, at the line where the first
    extra hour starts or where the first missing hour should have."""
    present = first_line[1:] >= 0
    beyond = np.flatnonzero(fields.shaped & fields.hour_digits_ok & (fields.hour > hours_in_year))
    missing = np.flatnonzero(~present) + 1
    if missing.size == 0 and beyond.size == 0:
        return
    count = int(present.sum()) + np.count_nonzero(np.bincount(fields.hour[beyond]))
    leap = " (a leap year)" if hours_in_year == LEAP_HOURS else ""
    which = "a year" if year is None else str(year)
    parts = [f"the file has {count:,} hours but {which} has {hours_in_year:,}{leap}"]
    if missing.size:
        parts.append(f"hours {_ranges(missing)} are missing")
    if beyond.size:
        parts.append(f"hours from {fields.hour[beyond].min():04d} on are beyond the year")
        line = int(beyond[0])
    else:
        following = first_line[missing[0] :]
        following = following[following >= 0]
        line = int(following[0]) if following.size else lines.starts.size - 1
    parts.append(f"write one block of lines per hour, 0001 to {hours_in_year:04d}")
    summary.append(Fault(line + 1, "hour_count", "; ".join(parts)))


def _ranges(hours: IntArray) -> str:
    """`0005, 0009-0012, 8761-8784` for sorted hours: the first eight runs."""
    breaks = np.flatnonzero(np.diff(hours) != 1)
    firsts = np.concatenate([hours[:1], hours[breaks + 1]]).tolist()
    lasts = np.concatenate([hours[breaks], hours[-1:]]).tolist()
    runs = [
        f"{a:04d}" if a == b else f"{a:04d}-{b:04d}" for a, b in zip(firsts, lasts, strict=True)
    ]
    more = f" and {len(runs) - 8} more runs" if len(runs) > 8 else ""
    return ", ".join(runs[:8]) + more


def _sums(
    fields: _Fields, timed: IntArray, first_line: IntArray, hours_in_year: int, found: list[_Found]
) -> None:
    """A fault per hour whose coefficients do not sum to exactly 1,000000, at the hour's first
    line (an hour with a coefficient that cannot be read is left to that fault)."""
    hours = fields.hour[timed]
    unread = np.bincount(hours[~fields.value_ok[timed]], minlength=hours_in_year + 1) > 0
    weights = fields.value[timed].astype(np.float64)  # whole numbers: the float sums are exact
    sums = np.rint(np.bincount(hours, weights=weights, minlength=hours_in_year + 1))
    wrong = np.flatnonzero((first_line >= 0) & ~unread & (sums != MILLION))

    def bad_sum(i: int) -> str:
        h = int(wrong[i])
        total = int(sums[h])
        return (
            f"hour {h:04d} (from line {first_line[h] + 1}): its coefficients sum to "
            f"{_coefficient_text(total)}, not 1,000000 (off by "
            f"{_coefficient_text(total - MILLION)}); correct them to sum to exactly 1"
        )

    found.append(_Found("sum", first_line[wrong], bad_sum))


def _order(
    fields: _Fields,
    good: IntArray,
    ids: IntArray,
    leading: int,
    names: list[str],
    again: IntArray,
    found: list[_Found],
) -> None:
    """Hours out of order, CUPS out of the first hour's order (the first such line of each
    hour), and the lines `again` listing a CUPS a second time in an hour."""
    hours = fields.hour[good]
    back = good[np.flatnonzero(hours[1:] < hours[:-1]) + 1]
    first_hour = int(hours[0])

    def hour_back(k: int) -> str:
        earlier = int(fields.hour[good[np.searchsorted(good, k) - 1]])
        return (
            f"line {k + 1}: hour {fields.hour[k]:04d} comes after hour {earlier:04d}; write the "
            "hours in ascending order, all the lines of an hour together"
        )

    known = good[ids[good] < leading]
    known_hours, known_ids = fields.hour[known], ids[known]
    swapped = np.flatnonzero(
        (known_hours[1:] == known_hours[:-1]) & (known_ids[1:] < known_ids[:-1])
    )
    _, first_of_hour = np.unique(known_hours[swapped + 1], return_index=True)
    swaps = known[swapped[np.sort(first_of_hour)] + 1]

    def cups_swapped(k: int) -> str:
        return (
            f"line {k + 1} (hour {fields.hour[k]:04d}): CUPS {names[ids[k]]} is out of the order "
            f"of hour {first_hour:04d}; list the CUPS in the same order in every hour"
        )

    def duplicate(k: int) -> str:
        return (
            f"line {k + 1}: CUPS {names[ids[k]]} is listed again in hour {fields.hour[k]:04d}; "
            "list each CUPS once per hour and remove the extra line"
        )

    found += [
        _by_line("order", back, hour_back),
        _by_line("order", swaps, cups_swapped),
        _by_line("duplicate", again, duplicate),
    ]


def _membership(
    good: IntArray,
    ids: IntArray,
    names: list[str],
    good_hours: IntArray,
    hours_of: IntArray,
    hour_has: BoolArray,
    first_line: IntArray,
    expected: list[str] | None,
    summary: list[Fault],
    found: list[_Found],
) -> None:
    """CUPS that do not belong (not among `expected`; without it, in no more than half of the
    file's hours, so one mistyped CUPS is one fault) and each hour lacking one that does."""
    hours_in_file = int(hour_has.sum())
    line_ids = ids[good]
    if expected is not None:
        numbers = {point: number for number, point in enumerate(names)}
        for point in expected:
            numbers.setdefault(point, len(numbers))
        names = list(numbers)
        hours_of = np.concatenate([hours_of, np.zeros(len(names) - hours_of.size, np.int64)])
        belongs = np.zeros(len(names), dtype=np.bool_)
        belongs[[numbers[point] for point in expected]] = True
    else:
        belongs = 2 * hours_of > hours_in_file
    strays = np.flatnonzero((hours_of > 0) & ~belongs)
    if strays.size:
        first = _first_lines(line_ids, good, len(names))[strays]
        order = np.argsort(first)
        strays, first = strays[order], first[order]
        lines_of = np.bincount(line_ids, minlength=len(names))

        def stray(i: int) -> str:
            point, line = strays[i], int(first[i]) + 1
            if expected is not None:
                return (
                    f"line {line}: CUPS {names[point]} ({lines_of[point]:,} lines) is not one "
                    "of the agreement's supply points; remove its lines or add it to the "
                    "agreement"
                )
            return (
                f"line {line}: CUPS {names[point]} is in only {hours_of[point]:,} of the file's "
                f"{hours_in_file:,} hours; every hour lists the same supply points: correct "
                "it, or add it to every hour"
            )

        found.append(_Found("unexpected_cups", first, stray))
    members = np.flatnonzero(belongs)
    column = np.full(len(names), -1, dtype=np.int64)
    column[members] = np.arange(members.size)
    listed = np.zeros((hour_has.size, members.size), dtype=np.bool_)
    counted = column[line_ids] >= 0
    listed[good_hours[counted], column[line_ids[counted]]] = True
    nowhere: BoolArray = ~np.any(listed, axis=0)
    summary.extend(
        Fault(
            None,
            "missing_cups",
            f"CUPS {names[members[c]]}, one of the agreement's supply points, is in none of "
            "the file's hours; add a line for it in every hour",
        )
        for c in np.flatnonzero(nowhere).tolist()
    )
    lacking_hours, lacking = np.nonzero(hour_has[:, None] & ~listed & ~nowhere[None, :])

    def missing(i: int) -> str:
        h = int(lacking_hours[i])
        return (
            f"hour {h:04d} (from line {first_line[h] + 1}) has no line for CUPS "
            f"{names[members[lacking[i]]]}; add one (0,000000 if it gets no share)"
        )

    found.append(_Found("missing_cups", first_line[lacking_hours], missing))


def _fixed_checks(
    fields: _Fields,
    expected: list[str] | None,
    summary: list[Fault],
    found: list[_Found],
) -> None:
    """A fixed-coefficient file's faults beyond single lines: a CUPS twice, CUPS not among
    `expected` or missing from the file, and coefficients not summing to exactly 1."""
    good = np.flatnonzero(fields.shaped & fields.cups_ok)
    numbers, names = fields.cups_number[good], fields.cups_names
    present, first = np.unique(numbers, return_index=True)
    again = np.ones(good.size, dtype=np.bool_)
    again[first] = False

    def duplicate(k: int) -> str:
        point = names[fields.cups_number[k]]
        return (
            f"line {k + 1}: CUPS {point} is listed again; list each CUPS once and remove the line"
        )

    found.append(_by_line("duplicate", good[again], duplicate))
    if expected is not None:
        agreement = set(expected)
        agreed = np.array([name in agreement for name in names] + [False])
        outside = good[~agreed[numbers]]

        def unexpected(k: int) -> str:
            return (
                f"line {k + 1}: CUPS {names[fields.cups_number[k]]} is not one of the "
                "agreement's supply points; remove the line or add it to the agreement"
            )

        found.append(_by_line("unexpected_cups", outside, unexpected))
        listed = {names[number] for number in present.tolist()}
        summary.extend(
            Fault(
                None,
                "missing_cups",
                f"CUPS {point} has no line; add one (0,000000 if it gets no share)",
            )
            for point in expected
            if point not in listed
        )
    shaped = np.flatnonzero(fields.shaped)
    if fields.value_ok[shaped].all():
        total = int(fields.value[shaped].sum())
        if total != MILLION:
            summary.append(
                Fault(
                    None,
                    "sum",
                    f"the coefficients sum to {_coefficient_text(total)}, not 1,000000 (off by "
                    f"{_coefficient_text(total - MILLION)}); correct them to sum to exactly 1",
                )
            )


def _listing(summary: list[Fault], found: list[_Found]) -> list[Fault]:
    """The faults in line order, the whole file's first: all of `summary` (few by nature), the
    found ones up to FAULT_LIMIT in all, and one `more_faults` counting the rest."""
    room = max(FAULT_LIMIT - len(summary), 0)
    picks: list[tuple[int, int, int]] = []  # (line, group, index in the group)
    for group, faults in enumerate(found):
        chosen = faults.lines
        indices = np.arange(chosen.size)
        if chosen.size > room:
            indices = np.argpartition(chosen, room - 1)[:room] if room else indices[:0]
        picks += [(int(chosen[i]), group, int(i)) for i in indices]
    picks = sorted(picks)[:room]
    listed = summary + [
        Fault(line + 1, found[group].code, found[group].say(i)) for line, group, i in picks
    ]
    listed.sort(key=lambda fault: -1 if fault.line is None else fault.line)
    hidden = sum(faults.lines.size for faults in found) - len(picks)
    if hidden:
        listed.append(
            Fault(
                None,
                "more_faults",
                f"and {hidden:,} more faults not listed; correct these and validate again",
            )
        )
    return listed
