"""The coefficient optimiser: the coefficients b_ih that maximise what the community gets from
its generation (energy self-consumed, or money), under rules its members agree on.

For steps h, members i, generation G_h and consumption C_ih (kWh per step), weights w_i >= 0
(currency units per kWh, `community.money_weights`; all 1 for ENERGY), it maximises

    sum_ih w_i min(b_ih G_h, C_ih)   subject to   sum_i b_ih = 1,   lower_i <= b_ih <= upper_i,
                                                 sum_{i in poverty} b_ih >= poverty_reserve

with variable coefficients (a row per step) or static ones (one row for every step). Each
member's term is concave and piecewise linear in its coefficient, so a greedy that fills the
most valuable pieces first is exact (docs/optimiser.md gives the argument); `solve_lp` is the
same problem as a linear programme, the reference the greedy is tested against.

Ties (many optima, always so when generation exceeds consumption) are broken towards shares
pro rata to consumption, within the rules: without rules, variable ENERGY coefficients are the
dynamic pro rata coefficients. A negative energy counts as none; a negative weight is refused
(`bad_rule`): a member whose export pays more than their tariff would want no share, which is
not what min(b G, C) models."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.intp]

ENERGY = "energy"  # maximise sum_ih A_ih, kWh
MONEY = "money"  # maximise sum_ih w_i A_ih, currency units (community.money_weights)

RULE_NAMES = ("floor", "minimum", "maximum", "fixed", "poverty_reserve")
TOLERANCE = 1e-9  # how far a coefficient or a sum of bounds may stray (float rounding)
RESIDUE = 1e-12  # a row's unplaced share below this is float rounding, not room to fill
BLOCK_CELLS = 1 << 21  # cells per block of the water-filling: bounds its memory to ~100 MB
# Energies are read to a micro-watt-hour and below a billion kWh a step: the ratios C / G the
# solvers divide by then stay far from float64's underflow and overflow.
RESOLUTION_KWH = 1e-9
LARGEST_KWH = 1e9


class RuleError(ValueError):
    """Rules that cannot hold together, or name no member of the problem: `code` is stable
    (`unknown_member`, `bad_rule`, `infeasible`), `message` names the rule and the numbers."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _share_checked(what: str, value: float) -> float:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise RuleError("bad_rule", f"{what} is {value}: a coefficient lies between 0 and 1")
    return float(value)


@dataclass(frozen=True, slots=True)
class Rules:
    """What members agreed on, each a bound on the coefficients of EVERY step:
    `floor` every member's minimum b_ih (unless fixed); `minimum` / `maximum` a member's own
    minimum and maximum b_ih (by member id, override the floor); `fixed` members whose b_ih is
    the same every step; `poverty` the members in energy poverty and `poverty_reserve` the
    least sum of their b_ih.

    A member's lower bound is their fixed share, else their own minimum, else the floor (lowered
    to their own maximum when that is below it); their upper bound is their fixed share, else
    their own maximum, else 1."""

    floor: float = 0.0
    minimum: Mapping[str, float] = field(default_factory=dict)
    maximum: Mapping[str, float] = field(default_factory=dict)
    fixed: Mapping[str, float] = field(default_factory=dict)
    poverty: frozenset[str] = frozenset()
    poverty_reserve: float = 0.0

    def bounds(self, members: Sequence[str]) -> tuple[FloatArray, FloatArray]:
        """Each member's lower and upper bound on b_ih, in the order of `members`; RuleError
        when a rule names another member, a bound lies outside [0, 1], a minimum exceeds a
        maximum, or the bounds and the reserve cannot sum to 1."""
        known = set(members)
        if len(known) != len(members):
            raise RuleError("bad_rule", "a member appears twice among the members")
        for rule, named in (
            ("minimum", self.minimum),
            ("maximum", self.maximum),
            ("fixed share", self.fixed),
            ("poverty list", self.poverty),
        ):
            for member in named:
                if member not in known:
                    raise RuleError(
                        "unknown_member",
                        f"the {rule} names {member!r}, who is not a member of this agreement",
                    )
        floor = _share_checked("the floor", self.floor)
        reserve = _share_checked("the poverty reserve", self.poverty_reserve)
        own = {
            rule: {m: _share_checked(f"{m!r}'s {rule}", v) for m, v in values.items()}
            for rule, values in (
                ("minimum", self.minimum),
                ("maximum", self.maximum),
                ("fixed share", self.fixed),
            )
        }
        for member, least in own["minimum"].items():
            most = own["maximum"].get(member, 1.0)
            if least > most:
                raise RuleError(
                    "bad_rule", f"{member!r}'s minimum {least} exceeds their maximum {most}"
                )
        for member, share in own["fixed share"].items():
            least = own["minimum"].get(member, 0.0)
            most = own["maximum"].get(member, 1.0)
            if not least <= share <= most:
                raise RuleError(
                    "bad_rule",
                    f"{member!r}'s fixed share {share} lies outside their own minimum {least} "
                    f"and maximum {most}",
                )
        if reserve > 0 and not self.poverty:
            raise RuleError(
                "bad_rule", f"the poverty reserve is {reserve} but no member is in energy poverty"
            )
        lower = np.array(
            [
                own["fixed share"].get(
                    m, own["minimum"].get(m, min(floor, own["maximum"].get(m, 1.0)))
                )
                for m in members
            ],
            dtype=np.float64,
        )
        upper = np.array(
            [own["fixed share"].get(m, own["maximum"].get(m, 1.0)) for m in members],
            dtype=np.float64,
        )
        _feasibility_checked(lower, upper, _poor(self, members), reserve)
        return lower, upper

    def check(self, members: Sequence[str], coefficients: FloatArray) -> list[str]:
        """Every breach of these rules by `coefficients` ((members,) or (steps, members)),
        one sentence each naming the step and member (empty when they all hold; a tolerance
        of 1e-9 for float rounding)."""
        lower, upper = self.bounds(members)
        rows = np.asarray(coefficients, dtype=np.float64)
        static = rows.ndim == 1
        rows = np.atleast_2d(rows)
        if rows.ndim != 2 or rows.shape[1] != len(members):
            raise ValueError(
                f"coefficients of shape {rows.shape} do not fit {len(members)} members"
            )
        low_names = [self._lower_name(m) for m in members]
        high_names = [self._upper_name(m) for m in members]
        breaches: list[tuple[int, int, str]] = []
        for step, i in zip(*np.nonzero(rows < lower - TOLERANCE), strict=True):
            breaches.append(
                (
                    int(step),
                    int(i),
                    f"member {members[i]!r} has {rows[step, i]:.9f}, below their "
                    f"{low_names[i]} of {lower[i]:.9f}",
                )
            )
        for step, i in zip(*np.nonzero(rows > upper + TOLERANCE), strict=True):
            breaches.append(
                (
                    int(step),
                    int(i),
                    f"member {members[i]!r} has {rows[step, i]:.9f}, above their "
                    f"{high_names[i]} of {upper[i]:.9f}",
                )
            )
        if self.poverty_reserve > 0:
            reserved = rows[:, _poor(self, members)].sum(axis=1)
            for step in np.flatnonzero(reserved < self.poverty_reserve - TOLERANCE):
                breaches.append(
                    (
                        int(step),
                        len(members),
                        f"the members in energy poverty have {reserved[step]:.9f} together, "
                        f"below the poverty reserve of {self.poverty_reserve:.9f}",
                    )
                )
        return [
            f"{'every step' if static else f'step {step}'}: {sentence}"
            for step, _, sentence in sorted(breaches)
        ]

    def named(self) -> list[str]:
        """The rules that are set, by name: "floor", "minimum", "maximum", "fixed",
        "poverty_reserve" (in that order)."""
        set_ = {
            "floor": self.floor > 0,
            "minimum": bool(self.minimum),
            "maximum": bool(self.maximum),
            "fixed": bool(self.fixed),
            "poverty_reserve": self.poverty_reserve > 0,
        }
        return [name for name in RULE_NAMES if set_[name]]

    def without(self, name: str) -> Rules:
        """These rules less the one called `name` (see `named`)."""
        if name == "floor":
            return replace(self, floor=0.0)
        if name == "minimum":
            return replace(self, minimum={})
        if name == "maximum":
            return replace(self, maximum={})
        if name == "fixed":
            return replace(self, fixed={})
        if name == "poverty_reserve":
            return replace(self, poverty_reserve=0.0)
        raise RuleError("bad_rule", f"there is no rule called {name!r}: one of {RULE_NAMES}")

    def _lower_name(self, member: str) -> str:
        if member in self.fixed:
            return "fixed share"
        if member in self.minimum:
            return "minimum"
        return "floor" if self.floor > 0 and member not in self.maximum else "least share"

    def _upper_name(self, member: str) -> str:
        if member in self.fixed:
            return "fixed share"
        return "maximum" if member in self.maximum else "greatest share"


def _poor(rules: Rules, members: Sequence[str]) -> BoolArray:
    """Which of `members` are in energy poverty."""
    return np.array([m in rules.poverty for m in members], dtype=np.bool_)


def _feasibility_checked(
    lower: FloatArray, upper: FloatArray, poor: BoolArray, reserve: float
) -> None:
    """RuleError("infeasible") unless some row with lower <= b <= upper sums to 1 and gives
    the poor members at least `reserve`: their sum S must lie in [max(reserve, L_P, 1 - U_N),
    min(U_P, 1 - L_N)], which is what the four checks below ask."""
    least, most = float(lower.sum()), float(upper.sum())
    if least > 1 + TOLERANCE:
        raise RuleError(
            "infeasible",
            f"the members' least shares (floor, minimum and fixed shares) add up to "
            f"{least:.6f}, more than 1",
        )
    if most < 1 - TOLERANCE:
        raise RuleError(
            "infeasible",
            f"the members' greatest shares (maximum and fixed shares) add up to {most:.6f}, "
            "less than 1",
        )
    poor_most = float(upper[poor].sum())
    if reserve > poor_most + TOLERANCE:
        raise RuleError(
            "infeasible",
            f"the poverty reserve {reserve:.6f} is more than the members in energy poverty "
            f"({int(poor.sum())}) may have together under their maximum and fixed shares, "
            f"{poor_most:.6f}",
        )
    others_least = float(lower[~poor].sum())
    if reserve + others_least > 1 + TOLERANCE:
        raise RuleError(
            "infeasible",
            f"the poverty reserve {reserve:.6f} and the other members' least shares "
            f"{others_least:.6f} add up to more than 1",
        )


@dataclass(frozen=True, slots=True, eq=False)
class Problem:
    """What the optimiser works on: member ids, generation (steps,) and consumption (steps,
    members) in kWh per step, and `weights` (members,) for MONEY (None: ENERGY, all 1)."""

    members: tuple[str, ...]
    generation: FloatArray
    consumption: FloatArray
    weights: FloatArray | None = None


def _energies(problem: Problem) -> tuple[FloatArray, FloatArray]:
    """Generation (steps,) and consumption (steps, members), negative energy counted as none;
    ValueError when the shapes disagree or a value is not finite."""
    g = np.asarray(problem.generation, dtype=np.float64)
    c = np.asarray(problem.consumption, dtype=np.float64)
    if g.ndim != 1 or c.ndim != 2 or c.shape != (g.shape[0], len(problem.members)):
        raise ValueError(
            f"generation {g.shape} and consumption {c.shape} must be (steps,) and "
            f"(steps, {len(problem.members)} members)"
        )
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(c))):
        raise ValueError("generation and consumption must be finite")
    if max(np.abs(g).max(initial=0.0), np.abs(c).max(initial=0.0)) > LARGEST_KWH:
        raise ValueError(f"an energy above {LARGEST_KWH:.0e} kWh in one step is not a meter's")
    return np.where(g < RESOLUTION_KWH, 0.0, g), np.where(c < RESOLUTION_KWH, 0.0, c)


def _weights(problem: Problem) -> FloatArray:
    """The members' weights, all 1 for ENERGY; RuleError("bad_rule") for a negative one."""
    n = len(problem.members)
    if problem.weights is None:
        return np.ones(n)
    w = np.asarray(problem.weights, dtype=np.float64)
    if w.shape != (n,) or not np.all(np.isfinite(w)):
        raise ValueError(f"weights of shape {w.shape} must be {n} finite numbers")
    if np.any(w < 0):
        i = int(np.argmin(w))
        raise RuleError(
            "bad_rule",
            f"member {problem.members[i]!r}'s kWh is worth {w[i]} when shared: their export "
            "pays more than their tariff, and the optimiser needs weights of 0 or more",
        )
    return w


def objective(problem: Problem, coefficients: FloatArray) -> float:
    """What `coefficients` ((members,) or (steps, members)) achieve on `problem`:
    sum_ih w_i min(b_ih G_h, C_ih) (kWh, or currency units with weights)."""
    g, c = _energies(problem)
    rows = np.asarray(coefficients, dtype=np.float64)
    if rows.shape not in ((c.shape[1],), c.shape):
        raise ValueError(f"coefficients of shape {rows.shape} do not fit consumption {c.shape}")
    used = np.minimum(np.atleast_2d(rows) * g[:, None], c).sum(axis=0)
    w = np.ones(c.shape[1]) if problem.weights is None else np.asarray(problem.weights, float)
    return float(used @ w)


def _water_fill_block(
    start: FloatArray, key: FloatArray, cap: FloatArray, need: FloatArray, active: BoolArray
) -> FloatArray:
    """`_water_fill` on rows that all have room and need > 0."""
    k = np.where(active, key, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rise = np.where(active, start / k, 0.0)  # the level at which a member starts to rise
        stop = np.where(active, cap / k, 0.0)  # and the level at which it reaches its cap
    times = np.concatenate([rise, stop], axis=1)
    order = np.argsort(times, axis=1)
    times = np.take_along_axis(times, order, axis=1)
    slope = np.cumsum(np.take_along_axis(np.concatenate([k, -k], axis=1), order, axis=1), axis=1)
    slope = slope[:, :-1]  # the rate the row's sum grows at between consecutive events
    gained = np.cumsum(slope * np.diff(times, axis=1), axis=1)
    segment = (gained < need[:, None]).sum(axis=1)
    last = gained.shape[1] - 1
    short = segment > last  # need is at least all the room: every member at its cap
    at = np.minimum(segment, last)[:, None]
    before = np.where(segment > 0, np.take_along_axis(gained, np.maximum(at - 1, 0), 1)[:, 0], 0)
    rate = np.take_along_axis(slope, at, axis=1)[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        level = np.take_along_axis(times, at, axis=1)[:, 0] + (need - before) / rate
        level = np.where(short | (rate <= 0), np.inf, level)
        filled = np.maximum(start, np.minimum(level[:, None] * k, cap))
    return np.asarray(np.where(active, filled, start), dtype=np.float64)


def _water_fill(
    start: FloatArray, key: FloatArray, cap: FloatArray, budget: FloatArray
) -> FloatArray:
    """Rows b_i = max(start_i, min(t key_i, cap_i)), each row's level t chosen so that the row
    sums to `budget` (as far as the caps allow): the shares closest to pro rata to `key` that
    start from `start`. Exact: the row's sum is piecewise linear in t, its breakpoints sorted."""
    filled = np.array(start, dtype=np.float64)
    need = budget - filled.sum(axis=1)
    active = (key > 0) & (cap > start)
    rows = np.flatnonzero((need > RESIDUE) & active.any(axis=1))
    if rows.size == 0:
        return filled
    for block in np.array_split(rows, -(-rows.size * start.shape[1] // BLOCK_CELLS)):
        filled[block] = _water_fill_block(
            filled[block], key[block], cap[block], need[block], active[block]
        )
    return filled


def _spread(start: FloatArray, key: FloatArray, cap: FloatArray, budget: FloatArray) -> FloatArray:
    """What each row lacks of `budget`, spread pro rata to `key` from `start` within `cap`
    (`_water_fill`), and what that cannot place pro rata to each member's room left."""
    filled = _water_fill(start, key, cap, budget)
    rest = budget - filled.sum(axis=1)
    room = np.clip(cap - filled, 0.0, None)
    total = room.sum(axis=1)
    rows = np.flatnonzero((rest > RESIDUE) & (total > 0))
    filled[rows] += room[rows] * (np.minimum(rest[rows], total[rows]) / total[rows])[:, None]
    return filled


def _best_rows(
    generation: FloatArray,
    consumption: FloatArray,
    weights: FloatArray,
    lower: FloatArray,
    upper: FloatArray,
    budget: FloatArray,
) -> FloatArray:
    """For every step at once, the row lower <= b <= upper summing to budget_h that maximises
    sum_i w_i min(b_i G_h, C_ih): each member's useful room (up to C_ih / G_h, where every kWh
    it receives is used) filled by weight, highest first; within a weight, pro rata to C_ih;
    what no member can use, pro rata to C_ih, then to the room left."""
    steps, m = consumption.shape
    if m == 0:
        return np.zeros((steps, 0))
    start = np.broadcast_to(lower, (steps, m))
    lit = generation > 0
    ratio = consumption / np.where(lit, generation, 1.0)[:, None]
    useful = np.maximum(np.where(lit[:, None], np.minimum(upper, ratio), lower), lower)
    rank = np.unique(-weights, return_inverse=True)[1]  # rank 0: the highest weight
    by_rank = np.argsort(rank, kind="stable")
    firsts = np.flatnonzero(np.diff(rank[by_rank], prepend=-1))
    room = np.add.reduceat((useful - start)[:, by_rank], firsts, axis=1)  # (steps, weights)
    need = budget - start.sum(axis=1)
    filling = (np.cumsum(room, axis=1) < need[:, None]).sum(axis=1)  # weights filled in full
    full = rank[None, :] < filling[:, None]
    partial = rank[None, :] == filling[:, None]
    base = np.where(full, useful, start)
    filled = _water_fill(
        base, np.where(partial, consumption, 0.0), np.where(partial, useful, base), budget
    )
    return _spread(filled, consumption, np.broadcast_to(upper, (steps, m)), budget)


def _best_row(
    generation: FloatArray,
    consumption: FloatArray,
    weights: FloatArray,
    lower: FloatArray,
    upper: FloatArray,
    budget: float,
) -> FloatArray:
    """The static row lower <= b <= upper summing to `budget` that maximises
    f(b) = sum_i w_i sum_h min(b_i G_h, C_ih). Member i's term is piecewise linear in b_i with
    breakpoints C_ih / G_h and slope w_i * (G over the hours not yet saturated): its segments,
    of every member, are taken by slope, steepest first; those at the last slope taken are
    shared pro rata to annual consumption."""
    m = lower.shape[0]
    lit = generation > 0
    g = generation[lit]
    points = np.ascontiguousarray(consumption[lit].T) / g  # (members, lit steps)
    order = np.argsort(points, axis=1)
    points = np.take_along_axis(points, order, axis=1)
    # Slope up to each point: w_i times the generation of the hours it has not saturated yet.
    beyond = np.cumsum(g[order][:, ::-1], axis=1)[:, ::-1]
    slopes = np.concatenate([weights[:, None] * beyond, np.zeros((m, 1))], axis=1)
    ends = np.clip(
        np.concatenate([points, np.full((m, 1), np.inf)], axis=1), lower[:, None], upper[:, None]
    )
    lengths = np.diff(ends, axis=1, prepend=lower[:, None])
    steepest = np.argsort(-slopes, axis=None)  # ties need no order: they are shared below
    taken = np.cumsum(lengths.ravel()[steepest])
    last = int(np.searchsorted(taken, budget - lower.sum()))
    level = slopes.ravel()[steepest[last]] if last < taken.size else -np.inf
    base = lower + np.where(slopes > level, lengths, 0.0).sum(axis=1)
    tied = np.where(slopes == level, lengths, 0.0).sum(axis=1)
    annual = consumption.sum(axis=0)
    row = _spread(base[None, :], annual[None, :], (base + tied)[None, :], np.array([budget]))
    return np.asarray(row[0], dtype=np.float64)


def optimise_variable(problem: Problem, rules: Rules = Rules()) -> FloatArray:
    """The best coefficients per step (steps, members): each row sums to 1 and keeps every
    rule; among the best, each step's coefficients are as close to pro rata to that step's
    consumption as the rules allow (fair and stable ties)."""
    g, c = _energies(problem)
    w = _weights(problem)
    lower, upper = rules.bounds(problem.members)
    rows = _best_rows(g, c, w, lower, upper, np.ones(g.shape[0]))
    poor, reserve = _poor(rules, problem.members), rules.poverty_reserve
    short = np.flatnonzero(rows[:, poor].sum(axis=1) < reserve)
    if short.size:
        # The optimum's value is concave in the poor members' total S: when the best row
        # gives them less than the reserve, the best row that keeps it gives them exactly it.
        for group, budget in ((poor, reserve), (~poor, 1.0 - reserve)):
            cells = np.ix_(short, group)
            rows[cells] = _best_rows(
                g[short],
                c[cells],
                w[group],
                lower[group],
                upper[group],
                np.full(short.size, budget),
            )
    return rows


def optimise_static(problem: Problem, rules: Rules = Rules()) -> FloatArray:
    """The best static coefficients (members,): one row for every step, summing to 1 and
    keeping every rule."""
    g, c = _energies(problem)
    w = _weights(problem)
    lower, upper = rules.bounds(problem.members)
    row = _best_row(g, c, w, lower, upper, 1.0)
    poor, reserve = _poor(rules, problem.members), rules.poverty_reserve
    if row[poor].sum() < reserve:
        # As in optimise_variable: the reserve, when it binds, binds exactly.
        for group, budget in ((poor, reserve), (~poor, 1.0 - reserve)):
            row[group] = _best_row(g, c[:, group], w[group], lower[group], upper[group], budget)
    return row


def solve_lp(problem: Problem, rules: Rules = Rules(), static: bool = False) -> FloatArray:
    """The same optimum as a linear programme solved by HiGHS (scipy.optimize.linprog): the
    reference formulation, for small problems and to check the fast solvers.

    Variables b (steps x members, or members when static) and a_ih <= C_ih, the energy used;
    maximise sum w_i a_ih with a_ih <= b_ih G_h, each row of b summing to 1 within its bounds,
    the poor members' sum at least the reserve. Its size grows as steps x members: over 8,760
    hours, 10 members take HiGHS about 1 s (variable) and 10 s (static), 100 members a minute
    (variable) and 30 members over two minutes (static): beyond that, use the fast solvers."""
    # scipy.optimize takes about a second to import: only the reference needs it.
    from scipy.optimize import linprog  # type: ignore[import-untyped]
    from scipy.sparse import coo_array, csr_array, vstack  # type: ignore[import-untyped]

    g, c = _energies(problem)
    w = _weights(problem)
    lower, upper = rules.bounds(problem.members)
    steps, n = c.shape
    rows_b = 1 if static else steps
    nb = rows_b * n
    cell = np.arange(steps * n)
    b_of_cell = cell % n if static else cell  # the b variable each a_ih is bounded by
    # a_ih - G_h b_ih <= 0, one row per cell
    used = coo_array(
        (
            np.concatenate([np.ones(cell.size), -np.repeat(g, n)]),
            (np.concatenate([cell, cell]), np.concatenate([nb + cell, b_of_cell])),
        ),
        shape=(cell.size, nb + cell.size),
    )
    row_of_b = np.arange(nb) // n
    sums = coo_array((np.ones(nb), (row_of_b, np.arange(nb))), shape=(rows_b, nb + cell.size))
    upper_rows = [used]
    upper_rhs = [np.zeros(cell.size)]
    poor = np.tile(_poor(rules, problem.members), rows_b)
    if rules.poverty_reserve > 0:
        poor_b = np.flatnonzero(poor)
        upper_rows.append(
            coo_array(
                (-np.ones(poor_b.size), (row_of_b[poor_b], poor_b)), shape=(rows_b, nb + cell.size)
            )
        )
        upper_rhs.append(np.full(rows_b, -rules.poverty_reserve))
    bounds = np.concatenate(
        [
            np.column_stack([np.tile(lower, rows_b), np.tile(upper, rows_b)]),
            np.column_stack([np.zeros(cell.size), c.ravel()]),
        ]
    )
    result = linprog(
        np.concatenate([np.zeros(nb), -np.tile(w, steps)]),
        A_ub=csr_array(vstack(upper_rows)),
        b_ub=np.concatenate(upper_rhs),
        A_eq=csr_array(sums),
        b_eq=np.ones(rows_b),
        bounds=bounds,
        method="highs",
    )
    if result.status == 2:
        raise RuleError("infeasible", f"HiGHS finds these rules infeasible: {result.message}")
    if result.status != 0:
        raise RuntimeError(f"HiGHS stopped without an optimum: {result.message}")
    b = np.asarray(result.x[:nb], dtype=np.float64)
    return b if static else b.reshape(steps, n)


@dataclass(frozen=True, slots=True)
class RuleCost:
    """What one rule costs: the objective with every rule, and with every rule but this one."""

    rule: str
    with_rule: float
    without_rule: float

    @property
    def cost(self) -> float:
        return self.without_rule - self.with_rule


def rule_costs(problem: Problem, rules: Rules, static: bool = False) -> list[RuleCost]:
    """For each rule set (`rules.named()`), what the community would gain without it. A rule
    whose removal leaves the others infeasible (a member's fixed share, minimum or maximum
    that waived a floor too high for the rest) has `without_rule` NaN."""
    optimise = optimise_static if static else optimise_variable
    with_rule = objective(problem, optimise(problem, rules))
    costs = []
    for name in rules.named():
        try:
            without_rule = objective(problem, optimise(problem, rules.without(name)))
        except RuleError as error:
            if error.code != "infeasible":
                raise
            without_rule = math.nan
        costs.append(RuleCost(name, with_rule, without_rule))
    return costs
