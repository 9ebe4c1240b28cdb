"""Allocation of generation to members (`community.allocation`) and what it is worth
(`community.savings`): an allocation never exceeds the generation nor a member's
consumption, static coefficients are per-step rows repeated, the dynamic allocation is the
upper bound of every agreement, rates stay in [0, 1], bad coefficients are refused, and money
is exact."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from community.allocation import (
    allocate,
    dynamic_coefficients,
    equal_coefficients,
    summarise,
)
from community.savings import (
    Tariff,
    co2_avoided_kg,
    member_money_micro,
    money_weights,
    savings_micro,
    trees,
)

RELATIVE = 1e-9  # float noise of a product and a sum, far below any coefficient's tolerance

energy = st.floats(-5.0, 100.0, allow_nan=False)  # negatives: meters wired backwards


@st.composite
def communities(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Generation (steps,) and consumption (steps, members), kWh, a few of them negative."""
    steps = draw(st.integers(1, 12))
    members = draw(st.integers(1, 5))
    generation = draw(arrays(float, steps, elements=energy))
    consumption = draw(arrays(float, (steps, members), elements=energy))
    return generation, consumption


def random_rows(draw: st.DrawFn, rows: int, members: int) -> np.ndarray:
    """Coefficients (rows, members), each row summing to 1, some members given nothing."""
    weights = draw(arrays(float, (rows, members), elements=st.floats(0.0, 1.0)))
    weights[:, 0] += 1e-3  # never an all-zero row
    return np.asarray(weights / weights.sum(axis=1, keepdims=True))


@st.composite
def agreements(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A community and coefficients for it: static (members,) or variable (steps, members)."""
    generation, consumption = draw(communities())
    steps, members = consumption.shape
    rows = random_rows(draw, draw(st.sampled_from([1, steps])), members)
    return generation, consumption, rows[0] if draw(st.booleans()) else rows


@given(agreements())
def test_an_allocation_never_exceeds_generation_nor_consumption(
    agreement: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    generation, consumption, coefficients = agreement
    result = allocate(generation, consumption, coefficients)
    g = np.clip(generation, 0, None)
    assert np.all(result.allocated >= 0)
    assert np.all(result.allocated <= np.clip(consumption, 0, None))
    assert np.all(result.allocated <= result.assigned)
    assert np.all(result.self_consumed <= g * (1 + RELATIVE))
    assert np.allclose(result.assigned.sum(axis=1), g)
    assert np.allclose(result.self_consumed + result.surplus, g)
    assert np.all(result.from_grid >= 0)


@given(agreements())
def test_static_coefficients_are_per_step_rows_repeated(
    agreement: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    generation, consumption, coefficients = agreement
    static = coefficients if coefficients.ndim == 1 else coefficients[0]
    repeated = np.tile(static, (generation.size, 1))
    one = allocate(generation, consumption, static)
    other = allocate(generation, consumption, repeated)
    assert np.array_equal(one.assigned, other.assigned)
    assert np.array_equal(one.allocated, other.allocated)


@given(communities())
def test_dynamic_coefficients_sum_to_one_and_follow_consumption(
    community: tuple[np.ndarray, np.ndarray],
) -> None:
    _, consumption = community
    rows = dynamic_coefficients(consumption)
    assert rows.shape == consumption.shape
    assert np.allclose(rows.sum(axis=1), 1.0)
    assert np.all(rows >= 0)
    used = np.clip(consumption, 0, None)
    nobody = used.sum(axis=1) == 0
    # A step in which nobody consumes shares equally; otherwise a non-consumer gets nothing.
    assert np.allclose(rows[nobody], 1.0 / consumption.shape[1])
    assert np.all(rows[~nobody][used[~nobody] == 0] == 0)


@st.composite
def with_any_coefficients(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    generation, consumption = draw(communities())
    return generation, consumption, random_rows(draw, *consumption.shape)


@given(with_any_coefficients())
def test_the_dynamic_allocation_is_the_upper_bound_of_any_coefficients(
    case: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    generation, consumption, coefficients = case
    best = np.minimum(np.clip(generation, 0, None), np.clip(consumption, 0, None).sum(axis=1))
    dynamic = allocate(generation, consumption, dynamic_coefficients(consumption))
    assert np.allclose(dynamic.self_consumed, best)
    other = allocate(generation, consumption, coefficients)
    assert np.all(other.self_consumed <= best * (1 + RELATIVE))


def in_unit_interval(rate: float | None) -> bool:
    return rate is None or -RELATIVE <= rate <= 1 + RELATIVE


@given(agreements())
def test_rates_lie_between_zero_and_one(
    agreement: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    totals = summarise(allocate(*agreement))
    assert in_unit_interval(totals.self_consumption_rate)
    assert in_unit_interval(totals.self_sufficiency_rate)
    for member in totals.members:
        assert in_unit_interval(member.self_consumption_rate)
        assert in_unit_interval(member.self_sufficiency_rate)
    assert totals.members and sum(m.allocated_kwh for m in totals.members) == pytest.approx(
        totals.self_consumed_kwh
    )


def test_a_small_community_worked_by_hand() -> None:
    # Two hours, two members, shares 0.25 / 0.75:
    # hour 0: G 8, assigned 2 and 6, consumption 1 and 10 -> allocated 1 and 6
    # hour 1: G 4, assigned 1 and 3, consumption 3 and 0 -> allocated 1 and 0
    result = allocate(
        np.array([8.0, 4.0]), np.array([[1.0, 10.0], [3.0, 0.0]]), np.array([0.25, 0.75])
    )
    assert result.allocated.tolist() == [[1.0, 6.0], [1.0, 0.0]]
    assert result.surplus.tolist() == [1.0, 3.0]
    totals = summarise(result)
    # Community: 8 of 12 kWh generated were used (2/3); they cover 8 of 14 consumed (4/7).
    assert totals.self_consumption_rate == pytest.approx(2 / 3)
    assert totals.self_sufficiency_rate == pytest.approx(4 / 7)
    first, second = totals.members
    # First member: assigned 3, used 2, consumed 4; second: assigned 9, used 6, consumed 10.
    assert (first.surplus_kwh, first.from_grid_kwh) == (1.0, 2.0)
    assert (first.self_consumption_rate, first.self_sufficiency_rate) == (2 / 3, 0.5)
    assert (second.surplus_kwh, second.from_grid_kwh) == (3.0, 4.0)
    assert (second.self_consumption_rate, second.self_sufficiency_rate) == (2 / 3, 0.6)


def test_rates_are_undefined_without_energy() -> None:
    totals = summarise(allocate(np.zeros(2), np.zeros((2, 1)), np.array([1.0])))
    assert totals.self_consumption_rate is None
    assert totals.self_sufficiency_rate is None
    assert totals.members[0].self_consumption_rate is None
    assert totals.members[0].self_sufficiency_rate is None


def test_equal_coefficients() -> None:
    assert equal_coefficients(4).tolist() == [0.25] * 4
    with pytest.raises(ValueError, match="at least one member"):
        equal_coefficients(0)


@pytest.mark.parametrize(
    ("coefficients", "message"),
    [
        (np.array([0.5, 0.4]), "add up to 0.9"),
        (np.array([[0.5, 0.5], [0.7, 0.4]]), "step 1 add up to 1.1"),
        (np.array([1.5, -0.5]), "never negative"),
        (np.array([np.nan, 1.0]), "finite"),
        (np.array([0.5, 0.25, 0.25]), "do not fit"),
        (np.full((3, 2), 0.5), "do not fit"),
        (np.full((2, 2, 1), 0.5), "do not fit"),
    ],
)
def test_bad_coefficients_are_refused(coefficients: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        allocate(np.ones(2), np.ones((2, 2)), coefficients)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="must be"):
        allocate(np.ones(3), np.ones((2, 2)), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="must be"):
        allocate(np.ones((2, 1)), np.ones((2, 2)), np.array([0.5, 0.5]))


def test_money_worked_by_hand() -> None:
    tariff = Tariff(price_micro_per_kwh=150_000, export_micro_per_kwh=40_000)
    # 2.5 kWh at 0.15 = 0.375 EUR = 375_000 micro; 0.1 kWh is not exactly 0.1 as a float, but
    # 0.1 x 150_000 rounds once to 15_000.
    assert savings_micro(2.5, 150_000) == 375_000
    assert savings_micro(0.1, 150_000) == 15_000
    # Half a micro-unit rounds to even: 0.5 kWh x 1 micro = 0.5 -> 0; 1.5 -> 2.
    assert savings_micro(0.5, 1) == 0
    assert savings_micro(1.5, 1) == 2
    # 2 kWh used at 0.15 plus 1 kWh exported at 0.04: 300_000 + 40_000.
    assert member_money_micro(2.0, 1.0, tariff) == 340_000
    # Rounded once, not per term: 0.5 + 0.5 = 1, where rounding each (to even) would give 0.
    assert member_money_micro(0.5, 0.5, Tariff(1, 1)) == 1
    assert money_weights([tariff, Tariff(200_000)]).tolist() == [0.11, 0.2]


def test_co2_and_trees_worked_by_hand() -> None:
    # 1,000 kWh at 250 g/kWh = 250 kg; 21.77 kg a tree-year -> 11.48... trees.
    assert co2_avoided_kg(1_000.0, 250.0) == 250.0
    assert trees(250.0) == pytest.approx(250 / 21.77)
    assert trees(21.77) == 1.0


def test_a_row_within_the_tolerance_never_allocates_more_than_the_generation() -> None:
    # 0.5 + 9e-7 and 0.5 add up to 1 + 9e-7: accepted, then scaled, so the community can use
    # 1,000 kWh at most, not 1,000.0009.
    result = allocate(
        np.array([1_000.0]), np.array([[2_000.0, 2_000.0]]), np.array([0.5 + 9e-7, 0.5])
    )
    assert result.self_consumed[0] == pytest.approx(1_000.0, rel=1e-12)  # not 1,000.0009
    assert result.surplus[0] > -1e-9


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_an_energy_that_is_not_a_finite_number_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        allocate(np.array([1.0, bad]), np.ones((2, 2)), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="finite"):
        allocate(np.ones(2), np.array([[1.0, bad], [1.0, 1.0]]), np.array([0.5, 0.5]))


def test_no_members_is_refused_in_words() -> None:
    with pytest.raises(ValueError, match="at least one member"):
        dynamic_coefficients(np.zeros((3, 0)))
