"""Interval energy from meter counters (smartmeter/energy.py): M_t of DESIGN.md section 7."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartmeter.energy import (
    CounterReading,
    EnergyUnit,
    IntervalEnergy,
    IntervalMeter,
    IntervalStatus,
    MeterConfig,
    ReadingOutcome,
    RejectCode,
    counter_joules,
    time_us,
)

EPOCH = 1_700_000_000
CONFIG = MeterConfig(interval_s=60, epoch=EPOCH, max_gap_s=30)
WRAP_32_CENTI_KWH = 2**32 * 36_000  # a 32-bit register counting 0.01 kWh
# Twice the profile's examples: 200 in `make test`, 100 in `make check`.
PROPERTY_SETTINGS = settings(max_examples=2 * settings().max_examples, deadline=None)


def feed(
    meter: IntervalMeter,
    readings: Sequence[tuple[float, float, float]],
    unit: EnergyUnit = EnergyUnit.WH,
) -> list[ReadingOutcome]:
    """Add (seconds after EPOCH, import, export) readings in `unit`."""
    return [
        meter.add(CounterReading(EPOCH + at, imp, exp, unit, "test")) for at, imp, exp in readings
    ]


def by_interval(closed: list[IntervalEnergy]) -> dict[int, IntervalEnergy]:
    return {energy.interval: energy for energy in closed}


# ---------------------------------------------------------------- worked examples


def test_readings_on_boundaries_measure_whole_intervals() -> None:
    meter = IntervalMeter(CONFIG)
    feed(meter, [(0, 0, 0), (30, 1, 0), (60, 2, 1), (90, 4, 1), (120, 6, 3)])
    first, second = meter.close()
    assert first == IntervalEnergy(
        0, 7_200, 3_600, 3_600, IntervalStatus.MEASURED, 2, 60_000_000, ()
    )
    assert second == IntervalEnergy(
        1, 14_400, 7_200, 7_200, IntervalStatus.MEASURED, 2, 60_000_000, ()
    )
    assert meter.close() == []  # interval 2 holds the last reading: not final yet


def test_a_straddling_delta_is_split_in_time_and_conserved_exactly() -> None:
    meter = IntervalMeter(CONFIG)
    # 1 Wh = 3600 J between 57 s and 64 s: 3/7 before the boundary at 60 s, 4/7 after
    feed(meter, [(0, 0, 0), (30, 0, 0), (57, 0, 0), (64, 1, 0), (90, 1, 0), (120, 1, 0)])
    first, second = meter.close()
    assert (first.import_j, second.import_j) == (1_543, 2_057)  # 1542.86 and 2057.14 rounded
    assert first.import_j + second.import_j == 3_600
    assert first.status == second.status == IntervalStatus.MEASURED


def test_a_reset_counts_the_energy_since_the_reset_and_is_suspect() -> None:
    meter = IntervalMeter(CONFIG)
    outcomes = feed(meter, [(0, 1_000, 5), (30, 1_001, 5), (45, 0.5, 0), (60, 1.5, 0), (90, 2, 0)])
    assert outcomes[2].accepted
    assert (outcomes[2].import_j, outcomes[2].export_j) == (1_800, 0)
    assert [note.split(":")[0] for note in outcomes[2].notes] == [
        "import counter reset",
        "export counter reset",
    ]
    (interval,) = meter.close()
    assert interval.import_j == 3_600 + 1_800 + 3_600
    assert interval.status == IntervalStatus.SUSPECT
    assert any("reset" in reason for reason in interval.reasons)


def test_a_32_bit_register_wrap_gives_the_exact_delta() -> None:
    config = MeterConfig(interval_s=60, epoch=EPOCH, max_gap_s=30, wrap_at_j=WRAP_32_CENTI_KWH)
    meter = IntervalMeter(config)
    readings = [(0, 42_949_672.80, 0), (30, 42_949_672.90, 0), (50, 0.05, 0), (60, 0.10, 0)]
    outcomes = feed(meter, readings, EnergyUnit.KWH)
    assert all(outcome.accepted for outcome in outcomes)
    assert outcomes[2].import_j == 11 * 36_000  # register 4294967290 -> 5: eleven steps
    (interval,) = meter.close()
    assert interval.import_j == (10 + 11 + 5) * 36_000
    assert interval.status == IntervalStatus.MEASURED  # a wrap loses nothing
    assert any("wrapped" in reason for reason in interval.reasons)


def test_a_decrease_that_is_neither_reset_nor_wrap_is_rejected() -> None:
    config = MeterConfig(interval_s=60, epoch=EPOCH, max_gap_s=30, wrap_at_j=WRAP_32_CENTI_KWH)
    meter = IntervalMeter(config)
    outcomes = feed(meter, [(0, 100, 0), (20, 50, 0)], EnergyUnit.KWH)
    assert outcomes[1].code == RejectCode.BACKWARDS
    assert outcomes[1].reason is not None and "neither a reset" in outcomes[1].reason
    assert meter.add(CounterReading(EPOCH + 30, 43_000_000, 0, EnergyUnit.KWH)).code == (
        RejectCode.ABOVE_REGISTER
    )


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        ((40, math.nan, 0), RejectCode.NOT_A_NUMBER),
        ((40, 2, math.inf), RejectCode.NOT_A_NUMBER),
        ((math.nan, 2, 0), RejectCode.NOT_A_NUMBER),
        ((40, "2", 0), RejectCode.NOT_A_NUMBER),
        ((40, True, 0), RejectCode.NOT_A_NUMBER),
        ((40, -1.0, 0), RejectCode.NEGATIVE),
        ((40, 2, -0.5), RejectCode.NEGATIVE),
        ((40, 1_500, 0), RejectCode.IMPLAUSIBLE),  # 5.4 MJ in 10 s: 540 kW over 100 kW
        ((40, 2, 300), RejectCode.IMPLAUSIBLE),
    ],
)
def test_broken_readings_are_rejected_and_mark_the_interval_suspect(
    bad: tuple[Any, Any, Any], code: RejectCode
) -> None:
    config = MeterConfig(interval_s=60, epoch=EPOCH, max_gap_s=30, max_power_w=100_000)
    meter = IntervalMeter(config)
    feed(meter, [(0, 0, 0), (30, 1, 0)])
    at, imp, exp = bad
    outcome = meter.add(CounterReading(EPOCH + at, imp, exp, EnergyUnit.WH, "sdm630"))
    assert outcome.code == code and not outcome.accepted
    assert outcome.reason
    assert (outcome.import_j, outcome.export_j, outcome.unattributed) == (0, 0, None)
    feed(meter, [(45, 2, 0), (60, 3, 0)])  # the meter carries on
    (interval,) = meter.close()
    assert interval.import_j == 3 * 3_600
    assert interval.status == IntervalStatus.SUSPECT
    assert interval.readings == 3
    assert any(outcome.reason in reason and "sdm630" in reason for reason in interval.reasons)


def test_a_backwards_counter_is_rejected() -> None:
    meter = IntervalMeter(CONFIG)
    outcomes = feed(meter, [(0, 5_000, 0), (20, 4_999, 0), (30, 5_001, 0), (60, 5_002, 0)])
    assert outcomes[1].code == RejectCode.BACKWARDS
    (interval,) = meter.close()
    assert interval.status == IntervalStatus.SUSPECT
    assert interval.import_j == 2 * 3_600


def test_duplicate_and_out_of_order_times_are_rejected() -> None:
    meter = IntervalMeter(CONFIG)
    readings = [(0, 0, 0), (30, 0, 0), (60, 0, 0), (70, 1, 0), (70, 1, 0), (69.5, 1, 0), (90, 2, 0)]
    outcomes = feed(meter, readings)
    assert outcomes[4].code == RejectCode.DUPLICATE_TIME
    assert outcomes[5].code == RejectCode.OUT_OF_ORDER
    assert meter.add(CounterReading(EPOCH - 1, 3, 0)).code == RejectCode.BEFORE_EPOCH
    assert meter.add(CounterReading(1e300, 3, 0)).code == RejectCode.AFTER_YEAR_9999
    meter.add(CounterReading(EPOCH + 120, 3, 0))
    closed = by_interval(meter.close())
    assert closed[1].status == IntervalStatus.SUSPECT  # the rejections fell in interval 1
    assert len([r for r in closed[1].reasons if "rejected" in r]) == 4


def test_a_long_gap_leaves_missing_intervals_and_an_unattributed_remainder() -> None:
    meter = IntervalMeter(CONFIG)
    outcomes = feed(
        meter, [(0, 0, 0), (30, 1, 0), (50, 2, 1), (200, 10, 1), (230, 11, 1), (240, 12, 2)]
    )
    gap = outcomes[3].unattributed
    assert gap is not None
    assert (gap.start_us, gap.end_us) == ((EPOCH + 50) * 10**6, (EPOCH + 200) * 10**6)
    assert (gap.import_j, gap.export_j) == (8 * 3_600, 0)
    assert (meter.unattributed_import_j, meter.unattributed_export_j) == (8 * 3_600, 0)
    closed = meter.close()
    assert [c.interval for c in closed] == [0, 1, 2, 3]
    assert [c.status for c in closed] == [
        IntervalStatus.PARTIAL,
        IntervalStatus.MISSING,
        IntervalStatus.MISSING,
        IntervalStatus.PARTIAL,
    ]
    assert [c.import_j for c in closed] == [7_200, 0, 0, 7_200]
    assert [c.export_j for c in closed] == [3_600, 0, 0, 3_600]
    assert [c.covered_us for c in closed] == [50 * 10**6, 0, 0, 40 * 10**6]
    assert sum(c.import_j for c in closed) + gap.import_j == 12 * 3_600  # conserved in totals


def test_the_first_reading_inside_an_interval_leaves_it_partial() -> None:
    meter = IntervalMeter(CONFIG)
    feed(meter, [(10, 0, 0), (40, 1, 0), (60, 2, 0)])
    (interval,) = meter.close()
    assert interval.status == IntervalStatus.PARTIAL
    assert interval.covered_us == 50 * 10**6
    assert meter.add(CounterReading(EPOCH + 61, 2, 0)).accepted


def test_rejections_before_the_first_valid_reading_mark_nothing() -> None:
    meter = IntervalMeter(CONFIG)
    assert meter.add(CounterReading(EPOCH, math.nan, 0)).code == RejectCode.NOT_A_NUMBER
    assert meter.close(now=EPOCH + 10_000) == []
    assert meter.to_state()["open"] == []


def test_now_closes_intervals_with_no_reading_as_missing() -> None:
    meter = IntervalMeter(CONFIG)
    feed(meter, [(0, 0, 0), (30, 1, 0)])
    assert meter.close(now=EPOCH + 59) == []
    assert meter.close(now=EPOCH + 60) == []  # a reading by 60 s would still be 30 s after 30 s
    (first,) = meter.close(now=EPOCH + 61)
    assert (first.interval, first.status, first.import_j) == (0, IntervalStatus.PARTIAL, 3_600)
    assert [c.status for c in meter.close(now=EPOCH + 200)] == [IntervalStatus.MISSING] * 2
    assert meter.close(now=EPOCH + 200) == []
    outcome = meter.add(CounterReading(EPOCH + 210, 5, 0))
    assert outcome.unattributed is not None and outcome.unattributed.import_j == 4 * 3_600
    feed(meter, [(240, 6, 0)])
    (third,) = meter.close()
    assert (third.interval, third.status, third.import_j) == (3, IntervalStatus.PARTIAL, 3_600)


def test_close_reports_at_most_limit_intervals_per_call() -> None:
    meter = IntervalMeter(CONFIG)
    feed(meter, [(0, 0, 0), (30, 1, 0)])
    first = meter.close(now=EPOCH + 10 * 60, limit=4)
    rest = meter.close(now=EPOCH + 10 * 60, limit=4)
    assert [c.interval for c in first + rest] == list(range(8))
    assert [c.interval for c in meter.close(now=EPOCH + 10 * 60)] == [8, 9]


def test_a_late_reading_into_a_reported_interval_is_unattributed_there() -> None:
    meter = IntervalMeter(CONFIG)
    feed(meter, [(0, 0, 0), (30, 1, 0)])
    assert [c.interval for c in meter.close(now=EPOCH + 100)] == [0]
    # delivered after `now` had passed them: 30 s -> 55 s is all in interval 0, already reported
    late, straddling = feed(meter, [(55, 2, 0), (70, 3, 0)])
    assert late.unattributed is not None and late.unattributed.import_j == 3_600
    assert straddling.unattributed is not None and straddling.unattributed.import_j == 1_200
    feed(meter, [(90, 4, 0), (120, 5, 0)])
    (second,) = meter.close()
    assert (second.interval, second.status) == (1, IntervalStatus.MEASURED)
    assert second.import_j == 2_400 + 2 * 3_600


def test_state_survives_a_json_round_trip() -> None:
    meter = IntervalMeter(CONFIG)
    feed(meter, [(0, 0, 0), (30, 1, 0), (45, math.nan, 0), (50, 2, 1), (200, 10, 1)])
    state = json.loads(json.dumps(meter.to_state()))
    restored = IntervalMeter.from_state(CONFIG, state)
    assert restored.to_state() == meter.to_state()
    feed(meter, [(240, 12, 2)])
    feed(restored, [(240, 12, 2)])
    assert restored.close() == meter.close()


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: s.pop("open"),
        lambda s: s.update(v=2),
        lambda s: s.update(next_interval="3"),
        lambda s: s["last"].update(at_us=1.5),
        lambda s: s.update(open=[{"interval": 0}]),
        lambda s: s.update(interval_s=900),
        lambda s: s.update(open=[{**s["open"][0], "reasons": "x"}]),
    ],
)
def test_a_damaged_state_is_a_value_error(damage: Any) -> None:
    meter = IntervalMeter(CONFIG)
    feed(meter, [(0, 0, 0), (30, 1, 0)])
    state = meter.to_state()
    damage(state)
    with pytest.raises(ValueError):
        IntervalMeter.from_state(CONFIG, state)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"interval_s": 0},
        {"interval_s": 60, "max_gap_s": 0},
        {"interval_s": 60, "reset_below_j": -1},
        {"interval_s": 60, "wrap_at_j": 1},
        {"interval_s": 60, "max_power_w": 0},
    ],
)
def test_a_nonsense_config_is_a_value_error(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        MeterConfig(**kwargs)


def test_conversions_round_once_at_the_boundary() -> None:
    assert counter_joules(1, EnergyUnit.WH) == 3_600
    assert counter_joules(0.01, EnergyUnit.KWH) == 36_000
    assert counter_joules(42_949_672.95, EnergyUnit.KWH) == 4_294_967_295 * 36_000
    assert counter_joules(0.5 / 3_600, EnergyUnit.WH) in (0, 1)
    assert time_us(1.5) == 1_500_000
    assert time_us(EPOCH + 0.25) == EPOCH * 10**6 + 250_000


# ---------------------------------------------------------------- properties


@st.composite
def dense_readings(draw: st.DrawFn) -> list[tuple[int, int]]:
    """(microseconds after EPOCH, import Wh): a monotone counter, readings at most 30 s apart."""
    at = draw(st.integers(0, 200_000_000))
    counter = draw(st.integers(0, 10**9))
    readings = [(at, counter)]
    for _ in range(draw(st.integers(1, 60))):
        at += draw(st.integers(1, 30_000_000))
        counter += draw(st.integers(0, 5_000))
        readings.append((at, counter))
    return readings


PAPER = MeterConfig(interval_s=4, epoch=EPOCH, max_gap_s=30)  # a span covers up to 9 intervals


@pytest.mark.parametrize("config", [CONFIG, PAPER], ids=["60s", "4s"])
@PROPERTY_SETTINGS
@given(readings=dense_readings())
def test_with_no_gap_interval_imports_sum_to_the_counter_delta(
    config: MeterConfig, readings: list[tuple[int, int]]
) -> None:
    meter = IntervalMeter(config)
    for at_us, wh in readings:
        assert meter.add(CounterReading(EPOCH + at_us / 10**6, wh, 0)).accepted
    closed = meter.close() + meter.close(now=EPOCH + readings[-1][0] / 10**6 + 100)
    assert sum(c.import_j for c in closed) == (readings[-1][1] - readings[0][1]) * 3_600
    assert meter.unattributed_import_j == 0
    last_us = EPOCH * 10**6 + readings[-1][0]
    for c in closed:  # those after the last reading are missing, the others are not
        starts_before_last = EPOCH * 10**6 + c.interval * config.interval_s * 10**6 < last_us
        assert (c.status != IntervalStatus.MISSING) == starts_before_last


@PROPERTY_SETTINGS
@given(
    power_w=st.integers(1, 50_000),
    period_us=st.integers(1_000_000, 30_000_000),
    start_us=st.integers(0, 120_000_000),
    count=st.integers(2, 80),
)
def test_constant_power_gives_power_times_interval_in_each_covered_interval(
    power_w: int, period_us: int, start_us: int, count: int
) -> None:
    meter = IntervalMeter(CONFIG)
    for n in range(count):
        at_us = start_us + n * period_us
        kwh = power_w * (at_us - start_us) / 3.6e12  # the device's float register
        assert meter.add(CounterReading(EPOCH + at_us / 10**6, kwh, 0, EnergyUnit.KWH)).accepted
    for interval in meter.close():
        if interval.status == IntervalStatus.MEASURED:
            # each end of the interval is apportioned from readings rounded to the joule
            assert abs(interval.import_j - power_w * CONFIG.interval_s) <= 2
        else:  # only the first interval, if the first reading is inside it
            assert interval.status == IntervalStatus.PARTIAL
            assert interval.interval == meter.interval_of(EPOCH * 10**6 + start_us)


JUNK = st.sampled_from([math.nan, math.inf, -math.inf, -1.0, "reset", "back"])
STEP = st.tuples(
    st.integers(-2_000_000, 90_000_000),  # microseconds since the previous reading
    st.one_of(st.integers(0, 4_000), JUNK),  # import Wh increment, or junk
    st.integers(0, 2_000),  # export Wh increment
    st.booleans(),  # close after it?
    st.integers(0, 200_000_000),  # how far after the reading `now` is when closing
)
WRAPPING = MeterConfig(interval_s=60, epoch=EPOCH, max_gap_s=30, wrap_at_j=100_000 * 3_600)


def run(steps: list[tuple[int, Any, int, bool, int]], restart_at: int | None) -> list[Any]:
    """Drive a meter over `steps`, restarting it from its JSON state before step `restart_at`;
    everything it said, and at the end the final flush."""
    meter = IntervalMeter(WRAPPING)
    at_us, imp, exp = 0, 0, 0
    said: list[Any] = []
    for n, (dt_us, inc, exp_inc, closing, lag_us) in enumerate(steps):
        if n == restart_at:
            meter = IntervalMeter.from_state(WRAPPING, json.loads(json.dumps(meter.to_state())))
        at_us += dt_us
        exp += exp_inc
        value: Any
        if inc == "reset":
            imp = value = 0
        elif inc == "back":
            value = imp - 10_000
        elif isinstance(inc, int):
            imp = value = (imp + inc) % 100_000  # a register of 100 kWh in Wh
        else:
            value = inc
        said.append(meter.add(CounterReading(EPOCH + at_us / 10**6, value, exp, EnergyUnit.WH)))
        if closing:
            said.append(meter.close(now=EPOCH + (at_us + lag_us) / 10**6))
    said.append(meter.close(now=EPOCH + at_us / 10**6 + 10**6))
    said.append((meter.unattributed_import_j, meter.unattributed_export_j))
    return said


@PROPERTY_SETTINGS
@given(st.lists(STEP, max_size=40), st.integers(0, 40))
def test_a_restart_from_state_changes_nothing(
    steps: list[tuple[int, Any, int, bool, int]], restart_at: int
) -> None:
    assert run(steps, restart_at) == run(steps, None)


@PROPERTY_SETTINGS
@given(st.lists(STEP, max_size=40))
def test_intervals_are_reported_once_in_order_and_energy_is_conserved(
    steps: list[tuple[int, Any, int, bool, int]],
) -> None:
    said = run(steps, None)
    outcomes = [s for s in said if isinstance(s, ReadingOutcome)]
    reported = [c for s in said if isinstance(s, list) for c in s]
    indices = [c.interval for c in reported]
    first = indices[0] if indices else 0
    assert indices == list(range(first, first + len(indices)))
    unattributed_import, unattributed_export = said[-1]
    assert sum(c.import_j for c in reported) + unattributed_import == sum(
        o.import_j for o in outcomes
    )
    assert sum(c.export_j for c in reported) + unattributed_export == sum(
        o.export_j for o in outcomes
    )
    for c in reported:
        assert c.net_j == c.import_j - c.export_j
        assert 0 <= c.covered_us <= CONFIG.interval_s * 10**6
        assert (c.status == IntervalStatus.MISSING) == (c.covered_us == 0)
    for outcome in outcomes:
        assert outcome.accepted == (outcome.reason is None)
