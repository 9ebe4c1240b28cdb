"""Spain's coefficient file: the hours of a year across daylight saving, largest-remainder
rounding to millionths, the distributor's file `<CAU>_<YEAR>.txt` written byte by byte for a
leap year and read back, and a validator that names every fault with its code and line."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from community.spain import (
    FAULT_LIMIT,
    MILLION,
    Fault,
    FileRefused,
    file_name,
    hour_starts,
    read_hourly_file,
    round_coefficients,
    validate_file,
    write_fixed_file,
    write_hourly_file,
    year_hours,
)

# Control letters checked by hand: 0021000000000001 mod 529 = 44 = 1 * 23 + 21 -> R, K;
# ...0002 -> 45 = 1 * 23 + 22 -> R, E; ...0003 -> 46 = 2 * 23 + 0 -> W, T.
HOME = "ES0021000000000001RK"
SHOP = "ES0021000000000002RE"
SCHOOL = "ES0021000000000003WT0F"  # 22 characters: a border-point suffix
CAU = "ES0021000000000001RK0FA001"
MADRID = "Europe/Madrid"


def two_members(hours: int) -> np.ndarray:
    """HOME 0,250000 and SHOP 0,750000 each hour, except the last: HOME takes it all."""
    millionths = np.tile(np.array([[250_000, 750_000]]), (hours, 1))
    millionths[-1] = [MILLION, 0]
    return millionths


LEAP = write_hourly_file([HOME, SHOP], two_members(8_784))  # 2028
LINES = LEAP.split(b"\r\n")


def edited(changes: dict[int, bytes | None], lines: list[bytes] = LINES) -> bytes:
    """The 2028 file with some lines (1-based) replaced, or dropped where None."""
    kept = [changes.get(n + 1, line) for n, line in enumerate(lines)]
    return b"\r\n".join(line for line in kept if line is not None)


def codes_at(faults: list[Fault]) -> set[tuple[int | None, str]]:
    return {(fault.line, fault.code) for fault in faults}


# ------------------------------------------------------------------ hours of a year


def test_a_year_has_8760_hours_and_a_leap_year_8784() -> None:
    assert [year_hours(y) for y in (2024, 2027, 2028, 1900, 2000)] == [
        8_784,
        8_760,
        8_784,
        8_760,
        8_784,
    ]


def test_madrid_2024_hours_cross_both_daylight_saving_days_without_gaps() -> None:
    starts = hour_starts(2024, MADRID)
    assert starts.size == 8_784
    # Local midnight of 1 January 2024 is 23:00 UTC on 31 December 2023 (CET, UTC+1).
    assert starts[0] == int(datetime(2023, 12, 31, 23, tzinfo=UTC).timestamp())
    assert (np.diff(starts) == 3_600).all()
    assert starts[-1] + 3_600 == int(datetime(2025, 1, 1, tzinfo=ZoneInfo(MADRID)).timestamp())
    local_days = [
        datetime.fromtimestamp(int(s), ZoneInfo(MADRID)).date().isoformat() for s in starts
    ]
    assert local_days.count("2024-03-31") == 23  # 02:00 -> 03:00: one hour fewer
    assert local_days.count("2024-10-27") == 25  # 03:00 -> 02:00: one hour more
    assert local_days.count("2024-06-15") == 24


def test_a_utc_year_starts_at_midnight() -> None:
    starts = hour_starts(2027, "UTC")
    assert starts.size == 8_760
    assert starts[0] == int(datetime(2027, 1, 1, tzinfo=UTC).timestamp())


# ------------------------------------------------------------------ rounding


def test_rounding_worked_examples() -> None:
    # 1/3 each: 333333.33 floors to 999999, one unit short; equal remainders: index 0 gets it.
    assert round_coefficients(np.full(3, 1 / 3)).tolist() == [333_334, 333_333, 333_333]
    # 0.1234567 -> 123456.7 and 0.8765433 -> 876543.3: the larger remainder (0.7) earns it.
    assert round_coefficients(np.array([0.1234567, 0.8765433])).tolist() == [123_457, 876_543]
    # 1/7 each: 142857.14 floors to 999999; the first of seven equal remainders earns it.
    assert round_coefficients(np.full(7, 1 / 7)).tolist() == [142_858] + [142_857] * 6
    assert round_coefficients(np.array([[0.25, 0.75], [1.0, 0.0]])).tolist() == [
        [250_000, 750_000],
        [MILLION, 0],
    ]


@pytest.mark.parametrize(
    ("coefficients", "words"),
    [
        (np.array([0.5, -0.1, 0.6]), "negative"),
        (np.array([0.5, np.nan, 0.5]), "finite"),
        (np.array([0.5, np.inf]), "finite"),
        (np.array([0.5, 0.500002]), "sums to"),
        (np.array([[0.5, 0.5], [0.5, 0.4]]), "row 1"),
        (np.zeros((2, 2, 2)), "members"),
        (np.zeros((3, 0)), "members"),
    ],
)
def test_rounding_refuses_what_is_not_a_row_of_shares(coefficients: np.ndarray, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        round_coefficients(coefficients)


def test_rounding_tolerates_a_row_off_by_a_millionth() -> None:
    assert round_coefficients(np.array([0.5, 0.5000009])).sum() == MILLION


shares = st.integers(1, 6).flatmap(
    lambda members: hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 4), st.just(members)),
        elements=st.one_of(st.just(0.0), st.floats(1e-9, 1.0), st.just(1 / 3)),
    )
)


@given(weights=shares)
def test_rounding_sums_exactly_and_stays_within_a_millionth(weights: np.ndarray) -> None:
    assume((weights.sum(axis=1) > 0).all())
    floats = weights / weights.sum(axis=1, keepdims=True)
    rounded = round_coefficients(floats)
    assert rounded.dtype == np.int64
    assert (rounded.sum(axis=1) == MILLION).all()
    assert (np.abs(rounded - floats * MILLION) < 1 + 1e-6).all()
    # Order kept: a larger share never rounds below a smaller one; equal shares differ by at
    # most one unit, the lower index holding it.
    for row, values in zip(floats, rounded, strict=True):
        for i in range(row.size):
            for j in range(row.size):
                if row[i] > row[j]:
                    assert values[i] >= values[j]
                if row[i] == row[j] and i < j:
                    assert values[i] - values[j] in (0, 1)


distinct_shares = st.integers(1, 6).flatmap(
    lambda members: hnp.arrays(
        np.float64, (members,), elements=st.floats(1e-6, 1.0), unique=True
    ).map(lambda row: row[None, :])
)


@given(weights=distinct_shares, data=st.data())
def test_rounding_does_not_depend_on_the_members_order(
    weights: np.ndarray, data: st.DataObject
) -> None:
    floats = weights / weights.sum(axis=1, keepdims=True)
    scaled = floats / floats.sum(axis=1, keepdims=True) * MILLION
    remainders = scaled - np.floor(scaled)
    assume(all(np.unique(row).size == row.size for row in remainders))  # no ties to break
    order = np.array(data.draw(st.permutations(range(floats.shape[1]))))
    assert (round_coefficients(floats[:, order]) == round_coefficients(floats)[:, order]).all()


# ------------------------------------------------------------------ writing


def test_file_name_is_the_cau_and_the_year() -> None:
    assert file_name(CAU, 2028) == "ES0021000000000001RK0FA001_2028.txt"
    with pytest.raises(ValueError, match="CAU"):
        file_name("es-0021", 2028)


def test_a_leap_year_file_for_two_supply_points_byte_by_byte() -> None:
    assert LEAP.startswith(
        b"ES0021000000000001RK;0001;0,250000\r\nES0021000000000002RE;0001;0,750000\r\n"
    )
    assert LINES[0] == b"ES0021000000000001RK;0001;0,250000"
    assert LINES[1] == b"ES0021000000000002RE;0001;0,750000"
    assert LINES[-2] == b"ES0021000000000001RK;8784;1,000000"
    assert LINES[-1] == b"ES0021000000000002RE;8784;0,000000"
    assert len(LINES) == 2 * 8_784
    assert LEAP.count(b"\r\n") == 2 * 8_784 - 1
    assert not LEAP.endswith(b"\r\n")
    assert LEAP.count(b"\n") == LEAP.count(b"\r")  # no LF or CR alone
    assert LEAP.isascii()
    # 20-character CUPS, ";", 4, ";", 8, CRLF: 36 bytes a line, less the last line's CRLF.
    assert len(LEAP) == 2 * 8_784 * 36 - 2
    name = file_name(CAU, 2028)
    assert validate_file(LEAP, name) == []
    cups, millionths = read_hourly_file(LEAP, name)
    assert cups == (HOME, SHOP)
    assert (millionths == two_members(8_784)).all()


def test_cups_of_different_lengths_each_keep_their_bytes() -> None:
    table = np.tile(np.array([[100_000, 200_000, 700_000]]), (8_760, 1))
    content = write_hourly_file([SCHOOL, HOME, SHOP], table)
    lines = content.split(b"\r\n")
    assert lines[:3] == [
        b"ES0021000000000003WT0F;0001;0,100000",
        b"ES0021000000000001RK;0001;0,200000",
        b"ES0021000000000002RE;0001;0,700000",
    ]
    assert lines[-1] == b"ES0021000000000002RE;8760;0,700000"
    cups, millionths = read_hourly_file(content, year=2027)
    assert cups == (SCHOOL, HOME, SHOP)
    assert (millionths == table).all()


def test_a_fixed_file_is_a_line_per_supply_point() -> None:
    content = write_fixed_file([HOME, SHOP], np.array([300_000, 700_000]))
    assert content == b"ES0021000000000001RK;0,300000\r\nES0021000000000002RE;0,700000"
    assert write_fixed_file([HOME], np.array([[MILLION]])) == b"ES0021000000000001RK;1,000000"
    assert validate_file(content, expected_cups=[HOME, SHOP]) == []


@pytest.mark.parametrize(
    ("cups", "millionths", "words"),
    [
        ([HOME, "ES002100000000001RK"], two_members(8_760), "CUPS"),
        ([HOME, HOME], two_members(8_760), "twice"),
        ([HOME, SHOP], two_members(8_760)[:100], "8760"),
        ([HOME], two_members(8_760), r"\(hours, 1\)"),
        ([HOME, SHOP], two_members(8_760) + np.array([1, 0]), "sums to 1,000001"),
        ([HOME, SHOP], np.tile([[1_250_000, -250_000]], (8_760, 1)), "negative"),
        ([HOME, SHOP], two_members(8_760) / MILLION, "whole millionths"),
    ],
)
def test_writing_refuses_a_bad_cups_shape_or_row(
    cups: list[str], millionths: np.ndarray, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        write_hourly_file(cups, millionths)


cups_names = st.lists(
    st.tuples(st.integers(0, 10**16 - 1), st.sampled_from(["RK", "RE", "WT0F", "AB1", "JN"])).map(
        lambda pair: f"ES{pair[0]:016d}{pair[1]}"
    ),
    min_size=1,
    max_size=4,
    unique=True,
)


@settings(max_examples=20, deadline=None)
@given(cups=cups_names, leap=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_every_hour_of_a_written_file_sums_to_exactly_one(
    cups: list[str], leap: bool, seed: int
) -> None:
    hours = 8_784 if leap else 8_760
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(len(cups), 0.5), hours)
    weights[rng.random(weights.shape) < 0.2] = 0.0  # members with no share in some hours
    weights[weights.sum(axis=1) == 0, 0] = 1.0
    millionths = round_coefficients(weights / weights.sum(axis=1, keepdims=True))
    content = write_hourly_file(cups, millionths)
    # Parsed back by hand, not by the module under test.
    lines = content.decode("ascii").split("\r\n")
    assert len(lines) == hours * len(cups)
    totals = np.zeros(hours + 1, dtype=np.int64)
    for n, line in enumerate(lines):
        point, hour, value = line.split(";")
        assert point == cups[n % len(cups)]
        assert int(hour) == n // len(cups) + 1
        whole, decimals = value.split(",")
        totals[int(hour)] += int(whole) * MILLION + int(decimals)
    assert (totals[1:] == MILLION).all()
    # ...and the reader gives back exactly what was written.
    read_cups, read_millionths = read_hourly_file(content, year=2028 if leap else 2027)
    assert read_cups == tuple(cups)
    assert (read_millionths == millionths).all()


# ------------------------------------------------------------------ validating: refusals


def test_a_2028_file_with_8760_hours_is_refused() -> None:
    short = write_hourly_file([HOME, SHOP], two_members(8_760))
    faults = validate_file(short, file_name(CAU, 2028))
    # Hours 8761-8784 should follow the last line, 17,520.
    assert codes_at(faults) == {(17_520, "hour_count")}
    assert "8761-8784 are missing" in faults[0].message
    assert "leap year" in faults[0].message


def test_a_2027_file_with_8784_hours_is_refused() -> None:
    faults = validate_file(LEAP, year=2027)
    # Hour 8761 starts on line 2 * 8760 + 1.
    assert (17_521, "hour_count") in codes_at(faults)
    assert (17_521, "bad_hour") in codes_at(faults)
    assert {fault.code for fault in faults} == {"hour_count", "bad_hour"}


def test_a_missing_cups_in_one_hour_is_named_with_the_hour() -> None:
    # Hour 0005 is lines 9 (HOME) and 10 (SHOP); SHOP's line goes.
    faults = validate_file(edited({10: None}), year=2028)
    assert (9, "missing_cups") in codes_at(faults)
    missing = next(fault for fault in faults if fault.code == "missing_cups")
    assert "hour 0005" in missing.message
    assert SHOP in missing.message
    assert (9, "sum") in codes_at(faults)  # HOME's 0,250000 alone
    assert len(faults) == 2


def test_a_decimal_point_is_refused_on_its_line() -> None:
    faults = validate_file(edited({3: b"ES0021000000000001RK;0002;0.250000"}), year=2028)
    assert codes_at(faults) == {(3, "bad_separator")}
    assert "decimal comma" in faults[0].message


def test_an_hour_off_by_one_millionth_is_refused() -> None:
    # Hour 0003 is lines 5 and 6: 0,250001 + 0,750000 = 1,000001.
    faults = validate_file(edited({5: b"ES0021000000000001RK;0003;0,250001"}), year=2028)
    assert codes_at(faults) == {(5, "sum")}
    assert "hour 0003" in faults[0].message
    assert "1,000001" in faults[0].message
    assert "off by 0,000001" in faults[0].message


def test_lf_line_ends_are_refused_and_the_list_is_capped() -> None:
    faults = validate_file(LEAP.replace(b"\r\n", b"\n"), year=2028)
    assert faults[0] == Fault(1, "bad_line_end", faults[0].message)
    assert "LF alone" in faults[0].message
    assert len(faults) == FAULT_LIMIT + 1
    assert [fault.line for fault in faults[:FAULT_LIMIT]] == list(range(1, FAULT_LIMIT + 1))
    # 17,567 LF line ends in all, 100 listed.
    assert faults[-1].code == "more_faults"
    assert "17,467 more" in faults[-1].message


def test_a_line_end_after_the_last_line_is_refused() -> None:
    faults = validate_file(LEAP + b"\r\n", year=2028)
    assert codes_at(faults) == {(17_568, "bad_line_end")}


def test_a_cr_alone_is_refused() -> None:
    faults = validate_file(edited({2: LINES[1] + b"\r" + LINES[2]}, LINES[:2] + LINES[3:]))
    assert (2, "bad_line_end") in codes_at(faults)
    assert "CR alone" in faults[0].message


def test_a_bad_cups_is_refused_on_its_line() -> None:
    # Line 7 is HOME in hour 0004, with a digit fewer.
    faults = validate_file(edited({7: b"ES002100000000001RK;0004;0,250000"}), year=2028)
    assert (7, "bad_cups") in codes_at(faults)
    assert (7, "missing_cups") in codes_at(faults)  # hour 0004 now lacks HOME
    assert {fault.code for fault in faults} == {"bad_cups", "missing_cups"}


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"es0021000000000001RK;0002;0,250000", "bad_cups"),
        (b"ES0021000000000001RK;0002;0,250000;", "bad_fields"),
        (b"ES0021000000000001RK0002;0,250000", "bad_fields"),
        (b"", "bad_fields"),
        (b"ES0021000000000001RK;002;0,250000", "bad_hour"),
        (b"ES0021000000000001RK;00x2;0,250000", "bad_hour"),
        (b"ES0021000000000001RK;0000;0,250000", "bad_hour"),
        (b"ES0021000000000001RK;9999;0,250000", "bad_hour"),
        (b"ES0021000000000001RK;0002;0,25", "bad_coefficient"),
        (b"ES0021000000000001RK;0002;1,250000", "bad_coefficient"),
        (b"ES0021000000000001RK;0002;-0,25000", "bad_coefficient"),
        (b"ES0021000000000001RK;0002;0,250000 ", "bad_coefficient"),
        (b"ES0021000000000001RK;0002;0,25000\xc3\xa9", "not_ascii"),
    ],
)
def test_a_broken_line_is_refused_on_its_line(line: bytes, code: str) -> None:
    faults = validate_file(edited({3: line}), year=2028)
    assert (3, code) in codes_at(faults)
    fault = next(f for f in faults if f.code == code)
    assert "line 3" in fault.message


def test_each_fault_says_what_to_do() -> None:
    faults = validate_file(edited({3: b"ES0021000000000001RK;0002;1,250000"}), year=2028)
    assert "above 1" in faults[0].message
    assert "0,000000 to 1,000000" in faults[0].message


def test_a_cups_twice_in_an_hour_is_a_duplicate() -> None:
    # Hour 0003: HOME on line 5 and again on line 6 instead of SHOP.
    faults = validate_file(edited({6: b"ES0021000000000001RK;0003;0,750000"}), year=2028)
    assert (6, "duplicate") in codes_at(faults)
    assert (5, "missing_cups") in codes_at(faults)


def test_hours_out_of_order_are_refused() -> None:
    # Hours 0003 (lines 5-6) and 0004 (lines 7-8) swapped: hour 0003 comes back on line 7.
    faults = validate_file(edited({5: LINES[6], 6: LINES[7], 7: LINES[4], 8: LINES[5]}))
    assert codes_at(faults) == {(7, "order")}
    assert "hour 0003 comes after hour 0004" in faults[0].message


def test_cups_out_of_the_first_hours_order_are_refused() -> None:
    # Hour 0003 lists SHOP (line 5) before HOME (line 6).
    faults = validate_file(edited({5: LINES[5], 6: LINES[4]}), year=2028)
    assert codes_at(faults) == {(6, "order")}


def test_cups_outside_the_agreement_are_refused() -> None:
    faults = validate_file(LEAP, year=2028, expected_cups=[HOME])
    assert codes_at(faults) == {(2, "unexpected_cups")}
    assert "17,568" not in faults[0].message and "8,784 lines" in faults[0].message
    faults = validate_file(LEAP, year=2028, expected_cups=[HOME, SHOP, SCHOOL])
    assert codes_at(faults) == {(None, "missing_cups")}
    assert SCHOOL in faults[0].message


def test_one_mistyped_cups_is_one_fault_not_thousands() -> None:
    # Line 201 (HOME, hour 0101) names another, well-formed, supply point.
    faults = validate_file(edited({201: b"ES0021000000000009RK;0101;0,250000"}), year=2028)
    assert codes_at(faults) == {(201, "unexpected_cups"), (201, "missing_cups")}


def test_an_empty_file_and_a_bad_name_are_refused() -> None:
    assert codes_at(validate_file(b"")) == {(None, "empty")}
    assert codes_at(validate_file(b"\r\n")) == {(None, "empty")}
    assert codes_at(validate_file(LEAP, "coefficients.txt", 2028)) == {(None, "bad_name")}
    mismatch = validate_file(LEAP, file_name(CAU, 2027), 2028)
    assert codes_at(mismatch) == {(None, "bad_name")}
    assert "says 2027" in mismatch[0].message


def test_without_a_year_the_hours_decide_between_8760_and_8784() -> None:
    assert validate_file(LEAP) == []
    assert validate_file(write_hourly_file([HOME, SHOP], two_members(8_760))) == []


def test_a_fixed_file_is_checked_as_a_whole() -> None:
    content = write_fixed_file([HOME, SHOP], np.array([300_000, 700_000]))
    off = content.replace(b"0,700000", b"0,700001")
    assert codes_at(validate_file(off)) == {(None, "sum")}
    again = content + b"\r\nES0021000000000001RK;0,000000"
    assert codes_at(validate_file(again)) == {(3, "duplicate")}
    assert codes_at(validate_file(content, expected_cups=[HOME])) == {(2, "unexpected_cups")}
    with pytest.raises(FileRefused) as refused:
        read_hourly_file(content)
    assert refused.value.faults[0].code == "bad_fields"


def test_reading_refuses_a_file_with_faults_and_lists_them_all() -> None:
    broken = edited({3: b"ES0021000000000001RK;0002;0.250000", 6: None})
    with pytest.raises(FileRefused) as refused:
        read_hourly_file(broken, year=2028)
    assert codes_at(list(refused.value.faults)) == codes_at(validate_file(broken, year=2028))
    assert {fault.code for fault in refused.value.faults} >= {"bad_separator", "missing_cups"}


@settings(max_examples=25, deadline=None)
@given(line=st.integers(1, 2 * 8_784 - 2), step=st.sampled_from([-1, 1]))
def test_one_coefficient_off_by_a_millionth_is_one_sum_fault_on_its_hour(
    line: int, step: int
) -> None:
    old = LINES[line - 1]
    value = int(old[-8:-7]) * MILLION + int(old[-6:])
    assume(0 <= value + step <= MILLION)
    new = value + step
    text = f"{new // MILLION},{new % MILLION:06d}".encode()
    faults = validate_file(edited({line: old[:-8] + text}), year=2028)
    hour_start = line if line % 2 else line - 1  # two lines an hour: odd lines open an hour
    assert codes_at(faults) == {(hour_start, "sum")}
    assert f"hour {(line + 1) // 2:04d}" in faults[0].message


CODES = {
    "bad_name",
    "empty",
    "not_ascii",
    "bad_line_end",
    "bad_fields",
    "bad_cups",
    "bad_hour",
    "bad_separator",
    "bad_coefficient",
    "hour_count",
    "missing_cups",
    "unexpected_cups",
    "duplicate",
    "order",
    "sum",
    "more_faults",
}


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(0, len(LEAP)),
    cut=st.integers(0, 80),
    noise=st.binary(max_size=40),
    expected=st.sampled_from([None, [HOME], [HOME, SHOP, SCHOOL]]),
)
def test_any_damage_gives_faults_never_an_error(
    start: int, cut: int, noise: bytes, expected: list[str] | None
) -> None:
    damaged = LEAP[:start] + noise + LEAP[start + cut :]
    faults = validate_file(damaged, file_name(CAU, 2028), expected_cups=expected)
    lines = damaged.count(b"\n") + damaged.count(b"\r") - damaged.count(b"\r\n") + 1
    assert {fault.code for fault in faults} <= CODES
    assert all(fault.line is None or 1 <= fault.line <= lines for fault in faults)
    assert len(faults) <= FAULT_LIMIT + 1
    if damaged != LEAP and expected is None:
        assert faults or read_hourly_file(damaged, year=2028)[0] == (HOME, SHOP)


@settings(max_examples=60, deadline=None)
@given(
    content=st.binary(max_size=200)
    | st.text(alphabet="ES0123456789RK;,.\r\n", max_size=200).map(str.encode)
)
def test_any_bytes_give_faults_never_an_error(content: bytes) -> None:
    faults = validate_file(content)
    assert {fault.code for fault in faults} <= CODES
    assert faults  # no short file is a sound year


@settings(max_examples=25, deadline=None)
@given(line=st.integers(1, 2 * 8_784))
def test_a_dropped_line_is_a_missing_cups_and_a_repeated_one_a_duplicate(line: int) -> None:
    hour = (line + 1) // 2
    hour_start = 2 * hour - 1  # the hour's first line
    dropped = validate_file(edited({line: None}), year=2028)
    # Dropping the hour's first line makes the other one its first.
    assert (hour_start, "missing_cups") in codes_at(dropped)
    assert f"hour {hour:04d}" in next(f.message for f in dropped if f.code == "missing_cups")
    repeated = validate_file(edited({line: LINES[line - 1] + b"\r\n" + LINES[line - 1]}))
    assert (line + 1, "duplicate") in codes_at(repeated)
