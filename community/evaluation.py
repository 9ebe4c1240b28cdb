"""The honest evaluation of sharing agreements: coefficients are fixed before the year they
apply to, so each agreement is judged on the data it was optimised on (in-sample) and on the
next period's (out-of-sample), beside equal shares, shares by annual consumption, the best
static agreement and the dynamic allocation (the ideal upper bound); and a revision's changes
member by member.

The strategies, each judged by `optimiser.objective` and `allocation.summarise`:
- "equal": 1/n each; "by_consumption": pro rata to each member's consumption over the train
  period. Where such a row breaks the rules it is replaced by the nearest row that keeps them
  (Euclidean: clipped to the bounds with one shift, two when the poverty reserve binds).
- "best_static": `optimise_static` on the train period.
- "optimised": `optimise_variable` on the train period; out-of-sample, its row for step h is
  applied to step h of the test period (the test's steps correspond to the train's).
- "dynamic": pro rata to the judged period's own consumption, known only after the fact and
  free of the rules: with the energy objective, the most any agreement can achieve.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from community.allocation import Totals, allocate, dynamic_coefficients, summarise
from community.optimiser import Problem, Rules, objective, optimise_static, optimise_variable

STRATEGIES = ("equal", "by_consumption", "best_static", "optimised", "dynamic")
BISECTIONS = 200  # halvings of the shift's bracket: far below float resolution


@dataclass(frozen=True, slots=True)
class StrategyResult:
    """One strategy's figures: the objective (kWh or currency units) and totals, in-sample and,
    when a test period is given, out-of-sample (None otherwise)."""

    strategy: str
    in_sample_objective: float
    in_sample: Totals
    out_of_sample_objective: float | None
    out_of_sample: Totals | None


@dataclass(frozen=True, slots=True)
class Comparison:
    """Every strategy of STRATEGIES judged on the same members, in the order of STRATEGIES."""

    members: tuple[str, ...]
    results: tuple[StrategyResult, ...]

    def result(self, strategy: str) -> StrategyResult:
        return next(r for r in self.results if r.strategy == strategy)


def compare(
    train: Problem,
    test: Problem | None = None,
    rules: Rules = Rules(),  # noqa: B008 (frozen: a shared default cannot change)
) -> Comparison:
    """Optimise on `train` and judge every strategy on `train` and on `test` (same members,
    the next period's data already aligned to the coefficients' steps). "equal" and
    "by_consumption" are adjusted to the rules where they break them; "dynamic" ignores them."""
    members = train.members
    if test is not None:
        if test.members != members:
            raise ValueError("the test period must have the train period's members, in order")
        if test.generation.shape != train.generation.shape:
            raise ValueError(
                f"the test period has {test.generation.shape[0]} steps and the train period "
                f"{train.generation.shape[0]}: the optimised coefficients fit step by step"
            )
    equal = np.full(len(members), 1.0 / len(members))
    used = np.clip(np.asarray(train.consumption, dtype=np.float64), 0.0, None).sum(axis=0)
    by_consumption = used / used.sum() if used.sum() > 0 else equal
    agreements = {
        "equal": nearest_within_rules(equal, members, rules),
        "by_consumption": nearest_within_rules(by_consumption, members, rules),
        "best_static": optimise_static(train, rules),
        "optimised": optimise_variable(train, rules),
    }
    agreements["dynamic"] = dynamic_coefficients(train.consumption)
    results = []
    for strategy in STRATEGIES:
        judged_in = agreements[strategy]
        out_of_sample_objective, out_of_sample = None, None
        if test is not None:
            judged_out = (
                dynamic_coefficients(test.consumption) if strategy == "dynamic" else judged_in
            )
            out_of_sample_objective = objective(test, judged_out)
            out_of_sample = _totals(test, judged_out)
        results.append(
            StrategyResult(
                strategy,
                objective(train, judged_in),
                _totals(train, judged_in),
                out_of_sample_objective,
                out_of_sample,
            )
        )
    return Comparison(members, tuple(results))


def nearest_within_rules(
    row: NDArray[np.float64], members: Sequence[str], rules: Rules
) -> NDArray[np.float64]:
    """The static coefficients (members,) that keep `rules` nearest to `row` (Euclidean):
    `row` itself when it keeps them. RuleError when the rules cannot hold."""
    lower, upper = rules.bounds(members)
    if not rules.check(members, row):
        return np.asarray(row, dtype=np.float64)
    nearest = _project(row, lower, upper, 1.0)
    poor = np.array([member in rules.poverty for member in members])
    if poor.any() and nearest[poor].sum() < rules.poverty_reserve:
        # the reserve binds: the poor share exactly the reserve, the others the rest
        nearest[poor] = _project(row[poor], lower[poor], upper[poor], rules.poverty_reserve)
        nearest[~poor] = _project(
            row[~poor], lower[~poor], upper[~poor], 1.0 - rules.poverty_reserve
        )
    return nearest


def _project(
    row: NDArray[np.float64],
    lower: NDArray[np.float64],
    upper: NDArray[np.float64],
    total: float,
) -> NDArray[np.float64]:
    """The point nearest to `row` within [lower, upper] whose values sum to `total`: `row`
    shifted by one amount and clipped to the bounds, the shift found by bisection (the clipped
    sum falls as the shift grows)."""
    low, high = float(np.min(row - upper)), float(np.max(row - lower))
    for _ in range(BISECTIONS):
        shift = (low + high) / 2
        if np.clip(row - shift, lower, upper).sum() > total:
            low = shift
        else:
            high = shift
    return np.asarray(np.clip(row - (low + high) / 2, lower, upper), dtype=np.float64)


def _totals(problem: Problem, coefficients: NDArray[np.float64]) -> Totals:
    return summarise(allocate(problem.generation, problem.consumption, coefficients))


@dataclass(frozen=True, slots=True)
class MemberChange:
    """What a revision changes for one member: their mean coefficient before and after, and
    the energy it would have allocated them on the same data (kWh)."""

    member: str
    mean_before: float | None
    mean_after: float | None
    allocated_before_kwh: float
    allocated_after_kwh: float


def revision_changes(
    problem: Problem,
    before_members: Sequence[str],
    before: NDArray[np.float64],
    after: NDArray[np.float64],
) -> list[MemberChange]:
    """Member by member, the old agreement (coefficients over `before_members`, who may
    differ: members join and leave) against the new one (over `problem.members`), both
    judged on `problem`'s data. Members in the union: the new agreement's order first, then
    those who left (who consume nothing in `problem`, so their old share is surplus); a mean
    coefficient is None for a member outside that agreement."""
    left = [member for member in before_members if member not in problem.members]
    union = [*problem.members, *left]
    steps = problem.generation.shape[0]
    consumption = np.concatenate(
        [np.asarray(problem.consumption, dtype=np.float64), np.zeros((steps, len(left)))], axis=1
    )
    old = np.atleast_2d(np.asarray(before, dtype=np.float64))
    new = np.atleast_2d(np.asarray(after, dtype=np.float64))
    if old.shape[1] != len(before_members) or new.shape[1] != len(problem.members):
        raise ValueError("each agreement's coefficients must have a column per member")
    place = {member: n for n, member in enumerate(union)}
    old_union = np.zeros((old.shape[0], len(union)))
    old_union[:, [place[member] for member in before_members]] = old
    new_union = np.concatenate([new, np.zeros((new.shape[0], len(left)))], axis=1)
    allocated_before = allocate(problem.generation, consumption, old_union).allocated.sum(axis=0)
    allocated_after = allocate(problem.generation, consumption, new_union).allocated.sum(axis=0)
    mean_before = dict(zip(before_members, old.mean(axis=0).tolist(), strict=True))
    mean_after = dict(zip(problem.members, new.mean(axis=0).tolist(), strict=True))
    return [
        MemberChange(
            member,
            mean_before.get(member),
            mean_after.get(member),
            float(allocated_before[n]),
            float(allocated_after[n]),
        )
        for n, member in enumerate(union)
    ]
