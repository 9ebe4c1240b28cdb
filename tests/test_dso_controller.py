"""The DSO's grid controller: hand-computed forecasts and price proposals, and properties checked
against a naive per-interval sum and against the direction the prices must move in."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assets import AssetKind, Eca, EnergyAsset, Epa
from dso.controller import (
    MAX_FORECAST_INTERVALS,
    BookEntry,
    ForecastSummary,
    IntervalForecast,
    IssuedPower,
    PricePolicy,
    forecast,
    proposals,
    propose,
    summary,
)

EPA = AssetKind.EPA
ECA = AssetKind.ECA
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)

# band -2 kW to 8 kW (10 kW wide); 10% per 10 kW beyond it, at most 5% per proposal
POLICY = PricePolicy(
    low_w=-2_000,
    high_w=8_000,
    gain_ppm=100_000,
    max_change_ppm=50_000,
    min_price=0,
    max_price=1_000_000,
    default_price=200_000,
)


def at(net_load_w: int, interval: int = 7) -> IntervalForecast:
    """A forecast whose only relevant figure is its net load."""
    return IntervalForecast(interval, 0, 0, 0, 0, 0, net_load_w)


# forecast


def test_forecast_by_hand() -> None:
    issued = [
        IssuedPower(EPA, 1_000, 8, 11),  # starts before the range
        IssuedPower(EPA, 500, 11, 20),  # ends after it
        IssuedPower(ECA, 2_000, 12, 12),
        IssuedPower(ECA, 300, 0, 5),  # entirely before it
        IssuedPower(ECA, 700, 10, 14),  # exactly the range
    ]
    deposited = [
        IssuedPower(EPA, 400, 13, 30),
        IssuedPower(ECA, 999, 10, 14),  # not billed, so not shown
    ]
    book = [
        BookEntry("ask", 250, 9, 10, 90_000),
        BookEntry("bid", 600, 14, 15, 110_000),
        BookEntry("ask", 100, 12, 13, 95_000),
    ]
    assert forecast(10, 14, issued, deposited, book) == [
        IntervalForecast(10, 1_000, 700, 0, 250, 0, -300),
        IntervalForecast(11, 1_500, 700, 0, 0, 0, -800),
        IntervalForecast(12, 500, 2_700, 0, 100, 0, 2_200),
        IntervalForecast(13, 500, 700, 400, 100, 0, 200),
        IntervalForecast(14, 500, 700, 400, 0, 600, 200),
    ]


def test_forecast_of_nothing_is_zero_and_one_interval_ranges_work() -> None:
    assert forecast(-3, -3, []) == [IntervalForecast(-3, 0, 0, 0, 0, 0, 0)]
    assert forecast(5, 5, [IssuedPower(ECA, 42, 0, 5)]) == [IntervalForecast(5, 0, 42, 0, 0, 0, 42)]


def test_forecast_accepts_generators_and_assets_from_the_ledger() -> None:
    on_ledger: list[EnergyAsset] = [Epa(100, 0, 1), Eca(30, 1, 2)]
    issued = (IssuedPower.of(asset) for asset in on_ledger)
    assert [f.net_load_w for f in forecast(0, 2, issued)] == [-100, -70, 30]


def test_forecast_range_limits() -> None:
    with pytest.raises(ValueError, match="empty: last interval 4 is before first 5"):
        forecast(5, 4, [])
    assert len(forecast(0, MAX_FORECAST_INTERVALS - 1, [])) == MAX_FORECAST_INTERVALS
    with pytest.raises(ValueError, match=r"100001 intervals; at most 100000 .* split"):
        forecast(0, MAX_FORECAST_INTERVALS, [])


def test_forecast_scales_to_many_assets_over_many_intervals() -> None:
    rng = random.Random(2017)
    issued = []
    for _ in range(100_000):
        start = rng.randint(-200, 10_200)
        issued.append(IssuedPower(rng.choice([EPA, ECA]), rng.randint(1, 5_000), start, start + 96))
    result = forecast(0, 9_999, issued)
    assert len(result) == 10_000

    def energy(kind: AssetKind) -> int:  # watt-intervals inside the range
        return sum(
            a.power * (min(a.end, 9_999) - max(a.start, 0) + 1)
            for a in issued
            if a.kind == kind and a.start <= 9_999 and a.end >= 0
        )

    assert sum(f.production_w for f in result) == energy(EPA)
    assert sum(f.consumption_w for f in result) == energy(ECA)
    t = 5_000
    assert result[t].production_w == sum(
        a.power for a in issued if a.kind == EPA and a.start <= t <= a.end
    )


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: IssuedPower(AssetKind.FA, 1, 0, 0), "EPA or ECA, not FA"),
        (lambda: IssuedPower(EPA, 0, 0, 0), "at least 1 W, not 0"),
        (lambda: IssuedPower(ECA, 5, 3, 2), r"ends \(2\) before it starts \(3\)"),
        (lambda: BookEntry("sell", 5, 0, 0, 1), "'ask' or 'bid', not 'sell'"),  # type: ignore[arg-type]
        (lambda: BookEntry("ask", -1, 0, 0, 1), "at least 1 W, not -1"),
        (lambda: BookEntry("bid", 5, 9, 8, 1), r"ends \(8\) before it starts \(9\)"),
    ],
)
def test_malformed_assets_and_orders_are_refused(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


# summary


def test_summary_by_hand() -> None:
    nets = [-300, -800, 2_200, 200, 200, 2_200]
    forecasts = [at(net, interval) for interval, net in enumerate(nets, start=10)]
    assert summary(forecasts) == ForecastSummary(
        first=10,
        last=15,
        peak_net_load_w=2_200,
        peak_interval=12,  # the earlier of two equal peaks
        lowest_net_load_w=-800,
        lowest_interval=11,
        mean_net_load_w=617,  # 3700 / 6 = 616.67
    )


def test_summary_mean_rounds_half_to_even_and_needs_a_forecast() -> None:
    assert summary([at(1), at(2)]).mean_net_load_w == 2  # 1.5
    assert summary([at(1), at(0)]).mean_net_load_w == 0  # 0.5
    assert summary([at(-1), at(-2)]).mean_net_load_w == -2  # -1.5
    with pytest.raises(ValueError, match="no forecast"):
        summary([])


# proposals


def test_above_the_band_both_prices_rise_in_proportion() -> None:
    # 4.3 kW beyond a 10 kW band is 43% of it; at 10% per band width, prices rise 4.3%
    proposal = propose(POLICY, at(12_300, interval=40), 250_000, 80_000)
    assert (proposal.price_consumption, proposal.price_production) == (260_750, 83_440)
    assert (proposal.interval, proposal.regulation_time, proposal.net_load_w) == (40, 39, 12_300)
    assert proposal.reason == (
        "net load 12.3 kW is 4.3 kW above the band's top 8.0 kW, so prices rise 4.3%: "
        "consumption 250000 -> 260750, production 80000 -> 83440 micro-units per kWh"
    )


def test_below_the_band_both_prices_fall_in_proportion() -> None:
    proposal = propose(POLICY, at(-6_000), 250_000, 80_000)  # 4 kW below: 4%
    assert (proposal.price_consumption, proposal.price_production) == (240_000, 76_800)
    assert proposal.reason.startswith(
        "net load -6.0 kW is 4.0 kW below the band's bottom -2.0 kW, so prices fall 4.0%: "
    )


@pytest.mark.parametrize("net", [-2_000, 0, 850, 8_000])
def test_inside_the_band_prices_hold(net: int) -> None:
    proposal = propose(POLICY, at(net), 250_000, 80_000)
    assert (proposal.price_consumption, proposal.price_production) == (250_000, 80_000)
    assert "inside the band -2.0 kW to 8.0 kW, so prices hold" in proposal.reason


def test_an_unset_price_starts_at_the_default() -> None:
    held = propose(POLICY, at(0), None, None)
    assert (held.price_consumption, held.price_production) == (200_000, 200_000)
    assert "consumption unset (default 200000) -> 200000" in held.reason
    raised = propose(POLICY, at(12_300), None, 80_000)
    assert raised.price_consumption == 208_600  # 200000 + 4.3%


def test_one_watt_outside_the_band_rounds_half_to_even() -> None:
    # 1 W is 10 ppm: 250000 * 10e-6 = 2.5 rounds to 2, 80000 * 10e-6 = 0.8 rounds to 1
    proposal = propose(POLICY, at(8_001), 250_000, 80_000)
    assert (proposal.price_consumption, proposal.price_production) == (250_002, 80_001)
    assert "rise under 0.1%" in proposal.reason


@pytest.mark.parametrize(
    ("net", "current", "expected"),
    [
        (110, 25, 27),  # 2.5 -> 2
        (110, 35, 39),  # 3.5 -> 4
        (-10, 25, 23),
        (-10, 35, 31),
        (110, -100, -90),  # a negative price moves by its size, in the same direction
        (-10, -100, -110),
    ],
)
def test_rounding_half_to_even_and_negative_prices(net: int, current: int, expected: int) -> None:
    policy = PricePolicy(0, 100, 1_000_000, 1_000_000, -1_000, 1_000, 0)  # 10 W beyond is 10%
    assert propose(policy, at(net), current, current).price_consumption == expected


def test_the_controller_never_stalls_on_small_or_zero_prices() -> None:
    proposal = propose(POLICY, at(8_001), 5, 0)  # 0.00005 and 0 would round to no change
    assert (proposal.price_consumption, proposal.price_production) == (6, 1)
    policy = PricePolicy(0, 0, 10_000, 50_000, -10, 10, 0)  # a set point: 1 W is the unit
    assert propose(policy, at(-1), 0, 0).price_production == -1


def test_the_change_is_capped() -> None:
    proposal = propose(POLICY, at(108_000), 250_000, 80_000)  # 100 kW beyond: 100%, capped at 5%
    assert (proposal.price_consumption, proposal.price_production) == (262_500, 84_000)
    assert "so prices rise 5.0% (the cap):" in proposal.reason


def test_prices_are_clamped_to_the_policy_bounds() -> None:
    near = propose(POLICY, at(12_300), 999_997, 1_000_000)
    assert (near.price_consumption, near.price_production) == (1_000_000, 1_000_000)
    assert "999997 -> 1000000 (ceiling)" in near.reason
    floor = propose(POLICY, at(-600_000), 3, 0)
    assert (floor.price_consumption, floor.price_production) == (2, 0)
    assert "production 0 -> 0 (floor)" in floor.reason
    policy = PricePolicy(-2_000, 8_000, 100_000, 50_000, 10, 1_000, 10)
    assert propose(policy, at(-6_000), 12, 10).price_consumption == 11  # 0.48 -> minimum step
    assert propose(policy, at(-6_000), 12, 11).price_production == 10


def test_a_price_set_outside_the_bounds_is_brought_within_them() -> None:
    proposal = propose(POLICY, at(0), 3_000_000, -5)
    assert (proposal.price_consumption, proposal.price_production) == (1_000_000, 0)
    assert "consumption 3000000 -> 1000000 (ceiling), production -5 -> 0 (floor)" in (
        proposal.reason
    )


def test_proposals_follow_the_path_of_adopted_prices() -> None:
    path = proposals(
        POLICY, [at(12_300, 1), at(12_300, 2), at(500, 3), at(-6_000, 4)], 250_000, None
    )
    assert [(p.interval, p.price_consumption, p.price_production) for p in path] == [
        (1, 260_750, 208_600),
        (2, 271_962, 217_570),  # 260750 * 4.3% = 11212.25; 208600 * 4.3% = 8969.8
        (3, 271_962, 217_570),
        (4, 261_084, 208_867),  # 271962 * 4% = 10878.48; 217570 * 4% = 8702.8
    ]
    assert proposals(POLICY, [], 1, 2) == []


def test_change_ppm_and_the_band_unit() -> None:
    assert POLICY.unit_w == 10_000
    assert POLICY.deviation_w(8_000) == 0
    assert POLICY.deviation_w(8_500) == 500
    assert POLICY.deviation_w(-2_001) == -1
    assert POLICY.change_ppm(-4_000) == 40_000
    assert POLICY.change_ppm(3) == Fraction(30)
    assert POLICY.change_ppm(10**9) == 50_000
    assert PricePolicy(5, 5, 1, 1, 0, 0, 0).unit_w == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"low_w": 9_000}, "band is upside down: low_w 9000 W is above high_w 8000 W"),
        ({"gain_ppm": 0}, "gain_ppm must be at least 1"),
        ({"max_change_ppm": 0}, "max_change_ppm must be from 1 to 1000000"),
        ({"max_change_ppm": 1_000_001}, "max_change_ppm must be from 1 to 1000000"),
        ({"min_price": 2_000_000}, "min_price 2000000 is above max_price 1000000"),
        ({"default_price": -1}, "default_price -1 must lie within min_price 0 and max_price"),
        ({"default_price": 1_000_001}, "default_price 1000001 must lie within"),
        ({"gain_ppm": 1.5}, "gain_ppm must be an integer, not 1.5"),
        ({"high_w": True}, "high_w must be an integer, not True"),
    ],
)
def test_invalid_policies_are_refused(changes: dict[str, Any], message: str) -> None:
    fields = {
        "low_w": POLICY.low_w,
        "high_w": POLICY.high_w,
        "gain_ppm": POLICY.gain_ppm,
        "max_change_ppm": POLICY.max_change_ppm,
        "min_price": POLICY.min_price,
        "max_price": POLICY.max_price,
        "default_price": POLICY.default_price,
    }
    with pytest.raises(ValueError, match=re.escape(message)):
        PricePolicy(**(fields | changes))


# properties


@st.composite
def issued_powers(draw: st.DrawFn) -> IssuedPower:
    start = draw(st.integers(-10, 25))
    return IssuedPower(
        draw(st.sampled_from([EPA, ECA])),
        draw(st.integers(1, 5_000)),
        start,
        start + draw(st.integers(0, 12)),
    )


@st.composite
def book_entries(draw: st.DrawFn) -> BookEntry:
    start = draw(st.integers(-10, 25))
    return BookEntry(
        draw(st.sampled_from(["ask", "bid"])),
        draw(st.integers(1, 5_000)),
        start,
        start + draw(st.integers(0, 12)),
        draw(st.integers(-1_000, 1_000)),
    )


@given(
    first=st.integers(-5, 15),
    length=st.integers(1, 15),
    issued=st.lists(issued_powers(), max_size=12),
    deposited=st.lists(issued_powers(), max_size=6),
    book=st.lists(book_entries(), max_size=8),
)
@PROPERTY_SETTINGS
def test_forecast_equals_the_naive_sum_per_interval(
    first: int,
    length: int,
    issued: list[IssuedPower],
    deposited: list[IssuedPower],
    book: list[BookEntry],
) -> None:
    last = first + length - 1
    expected = []
    for t in range(first, last + 1):
        production = sum(a.power for a in issued if a.kind == EPA and a.start <= t <= a.end)
        consumption = sum(a.power for a in issued if a.kind == ECA and a.start <= t <= a.end)
        expected.append(
            IntervalForecast(
                interval=t,
                production_w=production,
                consumption_w=consumption,
                deposited_production_w=sum(
                    a.power for a in deposited if a.kind == EPA and a.start <= t <= a.end
                ),
                open_asks_w=sum(o.power for o in book if o.side == "ask" and o.start <= t <= o.end),
                open_bids_w=sum(o.power for o in book if o.side == "bid" and o.start <= t <= o.end),
                net_load_w=consumption - production,
            )
        )
    assert forecast(first, last, issued, deposited, book) == expected


@st.composite
def policies(draw: st.DrawFn) -> PricePolicy:
    low = draw(st.integers(-1_000_000, 1_000_000))
    min_price = draw(st.integers(-1_000_000, 1_000_000))
    max_price = min_price + draw(st.integers(0, 10_000_000))
    return PricePolicy(
        low_w=low,
        high_w=low + draw(st.integers(0, 1_000_000)),
        gain_ppm=draw(st.integers(1, 10_000_000)),
        max_change_ppm=draw(st.integers(1, 1_000_000)),
        min_price=min_price,
        max_price=max_price,
        default_price=draw(st.integers(min_price, max_price)),
    )


@dataclass(frozen=True)
class Case:
    policy: PricePolicy
    net_load_w: int
    consumption: int | None
    production: int | None


@st.composite
def cases(draw: st.DrawFn, within_bounds: bool = True) -> Case:
    policy = draw(policies())
    # net loads near the band's edges are where sign and off-by-one mistakes live
    if draw(st.booleans()):
        net = draw(st.sampled_from([policy.low_w, policy.high_w])) + draw(st.integers(-3, 3))
    else:
        net = draw(st.integers(-3_000_000, 3_000_000))
    prices = (
        st.integers(policy.min_price, policy.max_price)
        if within_bounds
        else st.integers(-100_000_000, 100_000_000)
    )
    return Case(policy, net, draw(st.none() | prices), draw(st.none() | prices))


def _starting(case: Case, current: int | None) -> int:
    return case.policy.default_price if current is None else current


@given(cases())
@PROPERTY_SETTINGS
def test_proposals_move_prices_in_the_right_direction(case: Case) -> None:
    policy = case.policy
    proposal = propose(policy, at(case.net_load_w), case.consumption, case.production)
    moves = [
        (_starting(case, case.consumption), proposal.price_consumption),
        (_starting(case, case.production), proposal.price_production),
    ]
    for before, after in moves:
        if case.net_load_w > policy.high_w:  # too much load: discourage use, encourage supply
            assert after > before or after == before == policy.max_price
        elif case.net_load_w < policy.low_w:  # surplus: encourage use, discourage supply
            assert after < before or after == before == policy.min_price
        else:
            assert after == before


@given(cases(within_bounds=False))
@PROPERTY_SETTINGS
def test_prices_always_stay_within_the_bounds(case: Case) -> None:
    proposal = propose(case.policy, at(case.net_load_w), case.consumption, case.production)
    for price in (proposal.price_consumption, proposal.price_production):
        assert case.policy.min_price <= price <= case.policy.max_price


@given(cases())
@PROPERTY_SETTINGS
def test_the_change_never_exceeds_the_cap_plus_the_minimum_step(case: Case) -> None:
    proposal = propose(case.policy, at(case.net_load_w), case.consumption, case.production)
    for current, after in [
        (case.consumption, proposal.price_consumption),
        (case.production, proposal.price_production),
    ]:
        before = _starting(case, current)
        assert abs(after - before) <= Fraction(abs(before) * case.policy.max_change_ppm, 10**6) + 1


@given(st.lists(st.integers(-(10**6), 10**6), min_size=1, max_size=30))
@PROPERTY_SETTINGS
def test_summary_agrees_with_max_min_and_mean(nets: list[int]) -> None:
    result = summary([at(net, interval) for interval, net in enumerate(nets)])
    assert result.peak_net_load_w == max(nets) == nets[result.peak_interval]
    assert result.lowest_net_load_w == min(nets) == nets[result.lowest_interval]
    assert abs(result.mean_net_load_w - Fraction(sum(nets), len(nets))) <= Fraction(1, 2)
