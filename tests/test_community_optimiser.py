"""The coefficient optimiser (`community.optimiser`): on small random problems under random
feasible rules, every row sums to 1 and keeps every rule, the greedy solvers reach the linear
programme's optimum (HiGHS), variable coefficients are never worse than the best static ones,
the best static row beats any feasible one; worked examples by hand; every RuleError code; a
community of 200 members over a year."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from community.allocation import dynamic_coefficients
from community.optimiser import (
    Problem,
    RuleCost,
    RuleError,
    Rules,
    objective,
    optimise_static,
    optimise_variable,
    rule_costs,
    solve_lp,
)

# Meter readings to the Wh, often zero: ties and empty hours are the cases that matter.
KWH = st.one_of(st.just(0.0), st.integers(1, 8_000).map(lambda wh: wh / 1_000))


@st.composite
def problems(draw: st.DrawFn) -> tuple[Problem, Rules]:
    """2-8 members over 1-48 steps, ENERGY or MONEY, and rules built around a random row p
    that keeps them all (so they are feasible): minima below p, maxima above, fixed shares at
    p, a floor below every p it applies to, a reserve below the poor members' sum of p."""
    n = draw(st.integers(2, 8))
    steps = draw(st.integers(1, 48))
    members = tuple(f"m{i}" for i in range(n))
    generation = draw(arrays(np.float64, steps, elements=KWH))
    consumption = draw(arrays(np.float64, (steps, n), elements=KWH))
    weights = draw(
        st.none()
        | arrays(np.float64, n, elements=st.sampled_from([0.0, 0.05, 0.1, 0.12, 0.2, 0.3]))
    )
    parts = np.array(draw(st.lists(st.integers(1, 100), min_size=n, max_size=n)), dtype=float)
    p = parts / parts.sum()
    kinds = draw(
        st.lists(st.sampled_from(["none", "minimum", "maximum", "both", "fixed"]), min_size=n)
    )[:n]
    kinds += ["none"] * (n - len(kinds))
    fractions = draw(st.lists(st.floats(0, 1), min_size=2 * n, max_size=2 * n))
    minimum = {
        m: p[i] * fractions[i] for i, m in enumerate(members) if kinds[i] in ("minimum", "both")
    }
    maximum = {
        m: p[i] + (1 - p[i]) * fractions[n + i]
        for i, m in enumerate(members)
        if kinds[i] in ("maximum", "both")
    }
    fixed = {m: float(p[i]) for i, m in enumerate(members) if kinds[i] == "fixed"}
    floored = [p[i] for i in range(n) if kinds[i] in ("none", "maximum")]
    floor = draw(st.sampled_from([0.0, 0.5, 1.0])) * min(floored, default=0.0)
    poverty = frozenset(draw(st.sets(st.sampled_from(members), max_size=n)))
    # every member poor and the whole of p: p's sum may round to 1.0000000000000002
    reserve = min(
        1.0,
        draw(st.sampled_from([0.0, 0.5, 1.0]))
        * sum(p[i] for i, m in enumerate(members) if m in poverty),
    )
    rules = Rules(floor, minimum, maximum, fixed, poverty, reserve)
    return Problem(members, generation, consumption, weights), rules


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


def at_least(a: float, b: float) -> bool:
    """a >= b up to float rounding."""
    return a >= b - 1e-9 * (1 + abs(b))


@given(problems())
def test_every_row_sums_to_one_and_keeps_every_rule(case: tuple[Problem, Rules]) -> None:
    problem, rules = case
    variable = optimise_variable(problem, rules)
    static = optimise_static(problem, rules)
    assert variable.shape == problem.consumption.shape
    assert static.shape == (len(problem.members),)
    assert np.all(np.abs(variable.sum(axis=1) - 1) <= 1e-9)
    assert abs(static.sum() - 1) <= 1e-9
    assert rules.check(problem.members, variable) == []
    assert rules.check(problem.members, static) == []


@settings(max_examples=40, deadline=None)  # the first example imports scipy.optimize
@given(problems())
def test_the_greedy_reaches_the_linear_programmes_optimum(case: tuple[Problem, Rules]) -> None:
    problem, rules = case
    assert close(
        objective(problem, optimise_variable(problem, rules)),
        objective(problem, solve_lp(problem, rules)),
    )
    assert close(
        objective(problem, optimise_static(problem, rules)),
        objective(problem, solve_lp(problem, rules, static=True)),
    )


@given(problems())
def test_variable_coefficients_are_never_worse_in_sample_than_the_best_static(
    case: tuple[Problem, Rules],
) -> None:
    problem, rules = case
    variable = objective(problem, optimise_variable(problem, rules))
    static = objective(problem, optimise_static(problem, rules))
    equal = np.full(len(problem.members), 1 / len(problem.members))
    assert at_least(variable, static)
    assert at_least(objective(problem, optimise_static(problem)), objective(problem, equal))


def scattered(room: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """`amount` placed within `room` at random: a mix of pro rata and filling a random order."""
    amount = max(amount, 0.0)
    pro_rata = room * (amount / room.sum()) if room.sum() > 0 else np.zeros_like(room)
    in_turn = np.zeros_like(room)
    for i in rng.permutation(room.size):
        in_turn[i] = min(room[i], amount - in_turn.sum())
    mix = rng.random()
    return np.asarray(mix * pro_rata + (1 - mix) * in_turn)


@given(problems(), st.integers(0, 2**32 - 1))
def test_the_best_static_row_beats_any_feasible_static_row(
    case: tuple[Problem, Rules], seed: int
) -> None:
    problem, rules = case
    rng = np.random.default_rng(seed)
    lower, upper = rules.bounds(problem.members)
    poor = np.array([m in rules.poverty for m in problem.members])
    row = lower.copy()
    row[poor] += scattered(upper[poor] - row[poor], rules.poverty_reserve - row[poor].sum(), rng)
    row += scattered(upper - row, 1 - row.sum(), rng)
    assert rules.check(problem.members, row) == []  # the random row is one the rules allow
    assert at_least(objective(problem, optimise_static(problem, rules)), objective(problem, row))


@given(problems())
def test_rules_never_gain_what_the_community_had_without_them(
    case: tuple[Problem, Rules],
) -> None:
    problem, rules = case
    for optimise in (optimise_variable, optimise_static):
        free = objective(problem, optimise(problem))
        assert at_least(free, objective(problem, optimise(problem, rules)))
    # The floor and the reserve only ever take choices away (the other rules may also waive
    # the floor for a member, so removing them can cost).
    for static in (False, True):
        for cost in rule_costs(problem, rules, static=static):
            assert cost.rule in rules.named()
            if cost.rule in ("floor", "poverty_reserve"):
                assert at_least(cost.without_rule, cost.with_rule)


@given(
    arrays(np.float64, st.tuples(st.integers(1, 48), st.integers(1, 8)), elements=KWH),
    st.data(),
)
def test_without_rules_energy_coefficients_are_the_dynamic_ones(
    consumption: np.ndarray, data: st.DataObject
) -> None:
    generation = data.draw(arrays(np.float64, consumption.shape[0], elements=KWH))
    members = tuple(f"m{i}" for i in range(consumption.shape[1]))
    rows = optimise_variable(Problem(members, generation, consumption))
    # Pro rata to consumption in every step where someone consumes, and equal shares where
    # nobody does: Austria's dynamic allocation.
    assert np.allclose(rows, dynamic_coefficients(consumption), rtol=0, atol=1e-12)


# The worked example: members a and b over three hours.
#   hour 0: G = 4, C = (3, 0)    hour 1: G = 4, C = (0, 3)    hour 2: G = 0, C = (1, 3)
EXAMPLE = Problem(
    ("a", "b"),
    np.array([4.0, 4.0, 0.0]),
    np.array([[3.0, 0.0], [0.0, 3.0], [1.0, 3.0]]),
)


def test_the_worked_example_without_rules() -> None:
    # Variable: hour 0 all to a (uses 3), hour 1 all to b (uses 3), hour 2 no generation:
    # pro rata to consumption, 1/4 and 3/4. Objective 6 kWh.
    rows = optimise_variable(EXAMPLE)
    assert np.allclose(rows, [[1.0, 0.0], [0.0, 1.0], [0.25, 0.75]])
    assert objective(EXAMPLE, rows) == pytest.approx(6.0)
    # Static: a uses min(4 b_a, 3), b uses min(4 b_b, 3); both slopes are 4 up to 3/4, so any
    # b_a in [1/4, 3/4] gives 4 kWh: the tie is shared pro rata to annual consumption 4 : 6.
    row = optimise_static(EXAMPLE)
    assert np.allclose(row, [0.4, 0.6])
    assert objective(EXAMPLE, row) == pytest.approx(4.0)
    # Equal shares: 2 kWh each.
    assert objective(EXAMPLE, np.array([0.5, 0.5])) == pytest.approx(4.0)
    assert objective(EXAMPLE, solve_lp(EXAMPLE)) == pytest.approx(6.0)
    assert objective(EXAMPLE, solve_lp(EXAMPLE, static=True)) == pytest.approx(4.0)


def test_the_worked_example_with_a_floor() -> None:
    # Floor 0.4: hour 0 gives a 0.6 (uses 2.4), hour 1 gives b 0.6 (uses 2.4): 4.8 kWh.
    # Hour 2, pro rata (0.25, 0.75) lifted to the floor: (0.4, 0.6). The best static row
    # (0.4, 0.6) keeps the floor already: it costs nothing there.
    rules = Rules(floor=0.4)
    rows = optimise_variable(EXAMPLE, rules)
    assert np.allclose(rows, [[0.6, 0.4], [0.4, 0.6], [0.4, 0.6]])
    assert objective(EXAMPLE, rows) == pytest.approx(4.8)
    assert np.allclose(optimise_static(EXAMPLE, rules), [0.4, 0.6])
    [floor] = rule_costs(EXAMPLE, rules)
    assert floor.rule == "floor"
    assert floor.with_rule == pytest.approx(4.8)
    assert floor.without_rule == pytest.approx(6.0)
    assert floor.cost == pytest.approx(1.2)
    assert rule_costs(EXAMPLE, rules, static=True)[0].cost == pytest.approx(0.0)


def test_the_worked_example_with_a_poverty_reserve() -> None:
    # a is in energy poverty with a reserve of 0.5. Hour 0 (1, 0) keeps it. Hour 1 would give
    # a nothing: a gets exactly 0.5 (useless to a, who consumes nothing), b the other 0.5
    # (uses 2). Hour 2: (0.25, 0.75) becomes (0.5, 0.5). Objective 3 + 2 = 5, the reserve
    # costs 1 kWh.
    rules = Rules(poverty=frozenset({"a"}), poverty_reserve=0.5)
    rows = optimise_variable(EXAMPLE, rules)
    assert np.allclose(rows, [[1.0, 0.0], [0.5, 0.5], [0.5, 0.5]])
    [reserve] = rule_costs(EXAMPLE, rules)
    assert reserve == RuleCost("poverty_reserve", 5.0, 6.0)


def test_money_shares_the_most_valuable_consumption_first() -> None:
    # One hour, G = 4, both consume 3; a's kWh is worth 0.20, b's 0.10. a gets its 3 kWh
    # (b_a = 3/4), b the last 1: 0.20 x 3 + 0.10 x 1 = 0.70. With energy alone, pro rata.
    problem = Problem(("a", "b"), np.array([4.0]), np.array([[3.0, 3.0]]), np.array([0.2, 0.1]))
    assert np.allclose(optimise_variable(problem), [[0.75, 0.25]])
    assert np.allclose(optimise_static(problem), [0.75, 0.25])
    assert objective(problem, optimise_variable(problem)) == pytest.approx(0.7)
    energy = Problem(problem.members, problem.generation, problem.consumption)
    assert np.allclose(optimise_variable(energy), [[0.5, 0.5]])


def test_the_objective_takes_static_and_variable_coefficients_alike() -> None:
    row = np.array([0.25, 0.75])
    # Hour 0: a min(1, 3) + b min(3, 0) = 1; hour 1: a 0 + b min(3, 3) = 3; hour 2: nothing.
    assert objective(EXAMPLE, row) == pytest.approx(4.0)
    assert objective(EXAMPLE, np.tile(row, (3, 1))) == objective(EXAMPLE, row)
    with pytest.raises(ValueError, match="do not fit"):
        objective(EXAMPLE, np.array([1.0, 0.0, 0.0]))


def test_check_names_each_breach_by_step_and_member() -> None:
    rules = Rules(floor=0.2, maximum={"b": 0.7}, poverty=frozenset({"a"}), poverty_reserve=0.25)
    rows = np.array([[0.3, 0.7], [0.1, 0.9], [0.25, 0.75]])
    assert rules.check(("a", "b"), rows) == [
        "step 1: member 'a' has 0.100000000, below their floor of 0.200000000",
        "step 1: member 'b' has 0.900000000, above their maximum of 0.700000000",
        "step 1: the members in energy poverty have 0.100000000 together, below the poverty "
        "reserve of 0.250000000",
        "step 2: member 'b' has 0.750000000, above their maximum of 0.700000000",
    ]
    assert rules.check(("a", "b"), np.array([0.3, 0.7])) == []
    assert Rules(fixed={"a": 0.5}).check(("a", "b"), np.array([0.4, 0.6])) == [
        "every step: member 'a' has 0.400000000, below their fixed share of 0.500000000"
    ]


def test_bounds_say_which_rule_wins() -> None:
    rules = Rules(
        floor=0.1,
        minimum={"b": 0.05},
        maximum={"c": 0.08, "d": 0.5},
        fixed={"e": 0.2},
    )
    lower, upper = rules.bounds(("a", "b", "c", "d", "e"))
    # a: the floor; b: its own minimum below the floor; c: a maximum below the floor lowers
    # the floor to it; d: floor and maximum; e: fixed.
    assert lower.tolist() == [0.1, 0.05, 0.08, 0.1, 0.2]
    assert upper.tolist() == [1.0, 1.0, 0.08, 0.5, 0.2]


def test_named_and_without() -> None:
    rules = Rules(
        floor=0.1,
        minimum={"a": 0.2},
        maximum={"b": 0.5},
        fixed={"c": 0.1},
        poverty=frozenset({"a"}),
        poverty_reserve=0.3,
    )
    assert rules.named() == ["floor", "minimum", "maximum", "fixed", "poverty_reserve"]
    assert Rules().named() == []
    assert Rules(poverty=frozenset({"a"})).named() == []
    for name in rules.named():
        assert rules.without(name).named() == [n for n in rules.named() if n != name]
    assert rules.without("poverty_reserve").poverty == rules.poverty
    with pytest.raises(RuleError) as refused:
        rules.without("ceiling")
    assert refused.value.code == "bad_rule"


def test_a_rule_whose_removal_breaks_the_others_costs_nan() -> None:
    # The floor 0.4 holds for three members only because c's fixed share 0.1 waives it.
    problem = Problem(("a", "b", "c"), np.array([3.0]), np.array([[1.0, 1.0, 1.0]]))
    [cost] = [
        c for c in rule_costs(problem, Rules(floor=0.4, fixed={"c": 0.1})) if c.rule == "fixed"
    ]
    assert cost.with_rule == pytest.approx(2.3)  # a, b 0.45 each, c 0.1: 1 + 1 + 0.3
    assert math.isnan(cost.without_rule)


MEMBERS = ("a", "b", "c")


@pytest.mark.parametrize(
    ("rules", "code", "words"),
    [
        (Rules(minimum={"zoe": 0.1}), "unknown_member", "the minimum names 'zoe'"),
        (Rules(maximum={"zoe": 0.1}), "unknown_member", "the maximum names 'zoe'"),
        (Rules(fixed={"zoe": 0.1}), "unknown_member", "the fixed share names 'zoe'"),
        (Rules(poverty=frozenset({"zoe"})), "unknown_member", "the poverty list names 'zoe'"),
        (Rules(floor=1.5), "bad_rule", "the floor is 1.5"),
        (Rules(floor=math.nan), "bad_rule", "the floor is nan"),
        (Rules(minimum={"a": -0.1}), "bad_rule", "'a''s minimum is -0.1"),
        (Rules(maximum={"a": 2.0}), "bad_rule", "'a''s maximum is 2.0"),
        (Rules(fixed={"a": math.inf}), "bad_rule", "'a''s fixed share is inf"),
        (Rules(poverty_reserve=-0.1), "bad_rule", "the poverty reserve is -0.1"),
        (Rules(minimum={"a": 0.5}, maximum={"a": 0.3}), "bad_rule", "minimum 0.5 exceeds"),
        (Rules(fixed={"a": 0.6}, maximum={"a": 0.5}), "bad_rule", "fixed share 0.6 lies outside"),
        (Rules(poverty_reserve=0.2), "bad_rule", "no member is in energy poverty"),
        (Rules(floor=0.4), "infeasible", "add up to 1.200000, more than 1"),
        (Rules(fixed={"a": 0.5}, minimum={"b": 0.6}), "infeasible", "1.100000, more than 1"),
        (
            Rules(maximum={"a": 0.2, "b": 0.3, "c": 0.4}),
            "infeasible",
            "greatest shares (maximum and fixed shares) add up to 0.900000, less than 1",
        ),
        (
            Rules(maximum={"a": 0.3}, poverty=frozenset({"a"}), poverty_reserve=0.5),
            "infeasible",
            "the poverty reserve 0.500000 is more than the members in energy poverty (1)",
        ),
        (
            Rules(minimum={"b": 0.6}, poverty=frozenset({"a"}), poverty_reserve=0.5),
            "infeasible",
            "the other members' least shares 0.600000 add up to more than 1",
        ),
    ],
)
def test_rules_that_cannot_hold_are_refused_with_their_numbers(
    rules: Rules, code: str, words: str
) -> None:
    with pytest.raises(RuleError) as refused:
        rules.bounds(MEMBERS)
    assert refused.value.code == code
    assert words in refused.value.message
    problem = Problem(MEMBERS, np.ones(2), np.ones((2, 3)))
    for solver in (optimise_variable, optimise_static, solve_lp):
        with pytest.raises(RuleError) as again:
            solver(problem, rules)
        assert again.value.code == code


def test_duplicate_members_and_negative_weights_are_refused() -> None:
    with pytest.raises(RuleError) as twice:
        Rules().bounds(("a", "a"))
    assert twice.value.code == "bad_rule"
    problem = Problem(("a", "b"), np.ones(2), np.ones((2, 2)), np.array([0.1, -0.02]))
    for solver in (optimise_variable, optimise_static, solve_lp):
        with pytest.raises(RuleError) as negative:
            solver(problem)
        assert negative.value.code == "bad_rule"
        assert "'b'" in negative.value.message and "-0.02" in negative.value.message


def test_shapes_that_disagree_are_refused() -> None:
    with pytest.raises(ValueError, match="must be"):
        optimise_variable(Problem(("a", "b"), np.ones(3), np.ones((3, 3))))
    with pytest.raises(ValueError, match="finite"):
        optimise_static(Problem(("a",), np.array([math.nan]), np.ones((1, 1))))


def test_two_hundred_members_over_a_year() -> None:
    # The size of a large community; the bench times 1,000. This only shows it completes,
    # keeps every rule and that variable coefficients beat the best static ones.
    rng = np.random.default_rng(19)
    hours = np.arange(8_760)
    sun = np.clip(np.sin((hours % 24 - 6) / 12 * np.pi), 0.0, None)
    members = tuple(f"m{i:03}" for i in range(200))
    problem = Problem(
        members,
        150.0 * sun * rng.uniform(0.3, 1.0, hours.size),
        rng.uniform(0.0, 1.5, (hours.size, len(members))),
        rng.uniform(0.05, 0.25, len(members)),
    )
    rules = Rules(
        floor=0.001,
        maximum={"m000": 0.0005},
        fixed={"m001": 0.002},
        poverty=frozenset(members[:20]),
        poverty_reserve=0.15,
    )
    variable = optimise_variable(problem, rules)
    static = optimise_static(problem, rules)
    assert np.all(np.abs(variable.sum(axis=1) - 1) <= 1e-9)
    assert rules.check(members, variable) == []
    assert rules.check(members, static) == []
    assert objective(problem, variable) > objective(problem, static)


@pytest.mark.parametrize(
    ("generation", "consumption"),
    [
        ([0.0], [[3.15e-285, 3.564]]),  # found by the evaluation's property test
        ([0.0, 1.0], [[0.0, 3.9140625, 1.1091764e-50], [0.0, 0.0, 0.0]]),  # by the simulation's
        ([1e-9, 2e-9], [[1e-9, 5e-9], [3e-9, 1e-9]]),
    ],
)
def test_energies_near_float_underflow_still_give_rows_summing_to_one(
    generation: list[float], consumption: list[list[float]]
) -> None:
    members = tuple("abc"[: len(consumption[0])])
    problem = Problem(members, np.array(generation), np.array(consumption))
    with np.errstate(all="raise"):
        assert optimise_static(problem).sum() == pytest.approx(1.0, abs=1e-9)
        assert np.allclose(optimise_variable(problem).sum(axis=1), 1.0, atol=1e-9)


def test_an_energy_no_meter_counts_is_refused() -> None:
    with pytest.raises(ValueError, match="kWh in one step"):
        optimise_static(Problem(("a",), np.array([1e12]), np.array([[1.0]])))
