"""The ledger clock (service/clock.py): PETRA_CLOCK's format, good and malformed, the clock's
arithmetic at a fixed wall time, and for any start, speed and origin that it reads `start` at
`origin` and runs `speed` times as fast as the wall clock."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

import service.clock as clock_module
from service.clock import (
    CLOCK_ENV,
    WALL_CLOCK,
    LedgerClock,
    ledger_clock,
    next_boundary,
    parse_clock,
    wall_seconds_until,
)

READ_AT = 1_750_000_000.5


def wall_at(monkeypatch: pytest.MonkeyPatch, wall: float) -> None:
    """Make the clock module's wall clock read `wall` (and only the clock module's)."""
    monkeypatch.setattr(clock_module, "time", SimpleNamespace(time=lambda: wall))


# ------------------------------------------------------------------ PETRA_CLOCK


@pytest.mark.parametrize("text", [None, "", "   "])
def test_absent_or_empty_is_the_wall_clock(text: str | None) -> None:
    clock = parse_clock(text, READ_AT)
    assert clock == WALL_CLOCK
    assert clock.at(READ_AT) == READ_AT  # the wall clock unchanged, to the bit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("start=1700000000,speed=100", LedgerClock(1_700_000_000, READ_AT, 100)),
        (
            "start=1700000000,speed=100,origin=1750000100",
            LedgerClock(1_700_000_000, 1_750_000_100, 100),
        ),
        (" origin = 5 , speed = 0.5 , start = 7.25 ", LedgerClock(7.25, 5, 0.5)),
        ("speed=1,start=0", LedgerClock(0, READ_AT, 1)),
    ],
)
def test_a_good_clock_is_parsed(text: str, expected: LedgerClock) -> None:
    assert parse_clock(text, READ_AT) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("start=1700000000", "it has no speed"),
        ("speed=100", "it has no start"),
        ("start=1,speed=0", "speed must be above 0, not 0"),
        ("start=1,speed=-2", "speed must be above 0, not -2"),
        ("start=1,speed=fast", "speed must be a finite number, not 'fast'"),
        ("start=nan,speed=1", "start must be a finite number, not 'nan'"),
        ("start=1,speed=inf", "speed must be a finite number, not 'inf'"),
        ("start=1,speed=1,origin=", "origin must be a finite number, not ''"),
        ("start=1,speed=1,start=2", "it gives start twice"),
        ("start=1,speed=1,epoch=3", "'epoch=3' is not one of start=, speed= or origin="),
        ("start=1;speed=1", "start must be a finite number, not '1;speed=1'"),
        ("start=1,,speed=1", "'' is not one of"),
        ("100", "'100' is not one of"),
    ],
)
def test_a_malformed_clock_is_one_sentence_naming_the_variable(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_clock(text, READ_AT)
    message = str(raised.value)
    assert message.startswith(f"{CLOCK_ENV}={text!r} is malformed (")
    assert problem in message
    assert message.endswith("write start=<unix s>,speed=<factor>[,origin=<unix s>]")
    assert "\n" not in message and message.count(". ") == 0


def test_the_process_clock_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock_module, "_process_clock", None)
    monkeypatch.setenv(CLOCK_ENV, "start=1000,speed=10,origin=500")
    first = ledger_clock()
    monkeypatch.setenv(CLOCK_ENV, "start=0,speed=1")
    assert ledger_clock() is first == LedgerClock(1000, 500, 10)
    wall_at(monkeypatch, 501)
    assert clock_module.now() == 1010


def test_a_malformed_process_clock_raises_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock_module, "_process_clock", None)
    monkeypatch.setenv(CLOCK_ENV, "start=1000")
    for _ in range(2):
        with pytest.raises(ValueError, match="PETRA_CLOCK='start=1000' is malformed"):
            ledger_clock()


def test_the_origin_defaults_to_when_the_process_clock_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(clock_module, "_process_clock", None)
    monkeypatch.setenv(CLOCK_ENV, "start=1000,speed=4")
    wall_at(monkeypatch, 2000)
    assert ledger_clock() == LedgerClock(1000, 2000, 4)


def test_a_clock_refuses_a_speed_not_above_zero() -> None:
    with pytest.raises(ValueError, match="speed must be above 0"):
        LedgerClock(0, 0, 0)
    with pytest.raises(ValueError, match="finite"):
        LedgerClock(math.inf, 0, 1)


# ------------------------------------------------------------------ arithmetic


def test_now_and_seconds_until_at_a_fixed_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = LedgerClock(start=1_700_000_000, origin=1_750_000_000, speed=100)
    wall_at(monkeypatch, 1_750_000_000)
    assert clock.now() == 1_700_000_000
    assert clock.seconds_until(1_700_000_900) == 9  # a 900 s interval lasts 9 wall seconds
    assert clock.wall_seconds(900) == 9
    wall_at(monkeypatch, 1_750_000_003)
    assert clock.now() == 1_700_000_300
    assert clock.seconds_until(1_700_000_900) == 6
    assert clock.seconds_until(1_700_000_300) == 0
    assert clock.seconds_until(1_600_000_000) == 0  # past: no wait, never a negative one


def test_an_injected_clock_waits_at_the_process_speed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock_module, "_process_clock", LedgerClock(0, 0, 50))
    assert wall_seconds_until(1_000, lambda: 500) == 10
    assert wall_seconds_until(400, lambda: 500) == 0


@pytest.mark.parametrize(
    ("after", "origin", "period", "expected"),
    [
        (0, 0, 900, 900),  # at a boundary: the next one
        (899.5, 0, 900, 900),
        (950, 60, 900, 960),  # a bill closing 60 s after each interval ends
        (955, -60, 900, 1740),  # an auction's gate 60 s before each interval starts
        (-10, 0, 900, 0),
    ],
)
def test_next_boundary(after: float, origin: float, period: float, expected: float) -> None:
    assert next_boundary(after, origin, period) == expected


unix = st.floats(min_value=0, max_value=4e9, allow_nan=False)
speeds = st.floats(min_value=1e-3, max_value=1e4, allow_nan=False)


@given(start=unix, origin=unix, speed=speeds, elapsed=st.floats(min_value=0, max_value=1e6))
def test_now_is_start_at_origin_and_advances_speed_times_wall_time(
    start: float, origin: float, speed: float, elapsed: float
) -> None:
    clock = LedgerClock(start, origin, speed)
    assert clock.at(origin) == start
    wall = origin + elapsed
    # Floats hold about 16 digits: a few units in the last place of the largest term.
    slack = 8 * math.ulp(max(abs(start), abs(wall)) * max(1.0, speed))
    assert math.isclose(clock.at(wall) - start, (wall - origin) * speed, abs_tol=slack)
    assert clock.at(wall) >= clock.at(origin) - slack


@given(start=unix, origin=unix, speed=speeds, back=st.floats(min_value=0, max_value=1e9))
def test_seconds_until_a_past_time_is_zero(
    start: float, origin: float, speed: float, back: float
) -> None:
    clock = LedgerClock(start, origin, speed)
    assert clock.seconds_until(clock.now() - back) == 0
