"""`petra bench community`: the coefficient optimiser's wall time and objective for synthetic
communities of 10, 100 and 1,000 members over a year of hours, beside the best static
agreement's, equal shares' and the dynamic allocation's, in-sample and out-of-sample.

Each size draws its own community from the seed:
- Members: mostly households (BDEW H0), some businesses (G0-G6), a few schools, summer pools,
  weekend and summer homes (`community.estimate_hourly`), their annual kWh lognormal around a
  mean per kind; each hour's consumption times a multiplicative noise of mean 1 (gamma).
- Generation: the community's plants, pvlib's clear sky per kWp (`pv_year_kwh_per_kwp`, at
  the simulation's default location) under a seeded cloud cover, sized to produce 40-60 % of
  the members' annual consumption.
- Rules: every member at least a fifth of an equal share; a few households in energy poverty
  (5 %, at least one) who together keep at least their equal shares.
- Two years: the train year (YEAR) and the test year (YEAR + 1), with their own calendars,
  noise, clouds and a small change in each member's annual kWh. The coefficients are set
  before the year they apply to, so they are optimised on the train year's data moved onto
  the test year's calendar (`community.align_to_year`, weekdays kept: in-sample) and judged on
  the test year's (out-of-sample).

The figure is `optimise_variable`'s wall time (time.perf_counter), one process; objectives
are the energy the community uses itself, kWh. Goal (issue 19): 1,000 members in under 60 s.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray
from rich.console import Console
from rich.table import Table

from community import (
    Problem,
    Rules,
    align_to_year,
    dynamic_coefficients,
    equal_coefficients,
    estimate_hourly,
    objective,
    optimise_static,
    optimise_variable,
)
from simulation.bench.ledger_http import progress_bar
from simulation.config import Location
from simulation.profiles import pv_year_kwh_per_kwp

FloatArray = NDArray[np.float64]

YEAR = 2025  # the train year; the test year is YEAR + 1, both of 8,760 hours
SIZES = (10, 100, 1_000)
GOAL_S = 60.0  # the goal for 1,000 members
# Each kind of member: its share of the members and its mean annual consumption, kWh.
MIX: dict[str, tuple[float, float]] = {
    "h0": (0.70, 3_500.0),
    "g0": (0.05, 12_000.0),
    "g1": (0.03, 9_000.0),
    "g2": (0.02, 20_000.0),
    "g3": (0.02, 25_000.0),
    "g4": (0.03, 15_000.0),
    "g5": (0.02, 18_000.0),
    "g6": (0.01, 10_000.0),
    "school": (0.02, 40_000.0),
    "pool": (0.02, 30_000.0),
    "weekend_home": (0.04, 1_500.0),
    "summer_home": (0.04, 2_000.0),
}
ANNUAL_SPREAD = 0.5  # relative standard deviation of a member's annual kWh around its kind's
YEAR_TO_YEAR = 0.05  # relative change of a member's annual kWh from one year to the next
NOISE = 0.3  # relative standard deviation of an hour's consumption around its profile
PV_SHARE = (0.4, 0.6)  # the plants produce this share of the annual consumption
FLOOR_OF_EQUAL = 0.2  # every member keeps at least this share of 1/n in every hour
POVERTY_SHARE = 0.05  # households in energy poverty
SITE = Location()  # the simulation's default: Crevillent, Spain


@dataclass(frozen=True, slots=True)
class CommunityBenchResult:
    """One community size: wall seconds of the variable and static optimisers, and the energy
    each agreement lets the community use itself (kWh), in-sample and out-of-sample."""

    members: int
    hours: int
    seconds: float
    static_seconds: float
    objective: float
    best_static_objective: float
    equal_objective: float
    dynamic_objective: float
    out_of_sample_objective: float
    best_static_out_of_sample_objective: float
    equal_out_of_sample_objective: float
    dynamic_out_of_sample_objective: float


@dataclass(frozen=True, slots=True, eq=False)
class SyntheticCommunity:
    """A drawn community: each member's profile, the plants' kWp, the rules, and its problems
    on the train year's data moved onto the test year's hours and on the test year's data."""

    profiles: tuple[str, ...]
    pv_kwp: float
    rules: Rules
    train: Problem
    test: Problem


def synthetic_community(
    size: int, seed: int, year: int = YEAR, location: Location = SITE
) -> SyntheticCommunity:
    """A community of `size` members drawn from `seed` (see the module's docstring); `year` is
    the train year and `year + 1` the test year."""
    rng = np.random.default_rng([seed, size])
    kinds = list(MIX)
    shares = np.array([MIX[kind][0] for kind in kinds])
    drawn = rng.choice(len(kinds), size=size, p=shares / shares.sum())
    profiles = tuple(kinds[n] for n in drawn)
    sigma = math.sqrt(math.log1p(ANNUAL_SPREAD**2))
    annual = np.array([MIX[kind][1] for kind in profiles]) * rng.lognormal(
        -(sigma**2) / 2, sigma, size
    )
    width = len(str(size))
    members = tuple(f"member-{n + 1:0{width}d}" for n in range(size))

    next_annual = annual * rng.lognormal(-(YEAR_TO_YEAR**2) / 2, YEAR_TO_YEAR, size)
    used = _consumption(rng, drawn, annual, year, location.timezone)
    next_used = _consumption(rng, drawn, next_annual, year + 1, location.timezone)
    sun = _pv_per_kwp(year, location) * _clear_sky_index(rng, used.shape[0])
    next_sun = _pv_per_kwp(year + 1, location) * _clear_sky_index(rng, next_used.shape[0])
    pv_kwp = float(rng.uniform(*PV_SHARE) * annual.sum() / sun.sum())

    households = np.flatnonzero(drawn == kinds.index("h0"))
    poor = rng.choice(
        households, min(households.size, max(1, round(POVERTY_SHARE * size))), replace=False
    )
    rules = Rules(
        floor=FLOOR_OF_EQUAL / size,
        poverty=frozenset(members[n] for n in poor.tolist()),
        poverty_reserve=poor.size / size,
    )
    train = Problem(
        members,
        align_to_year(pv_kwp * sun, year, year + 1, location.timezone),
        align_to_year(used, year, year + 1, location.timezone),
    )
    return SyntheticCommunity(
        profiles, pv_kwp, rules, train, Problem(members, pv_kwp * next_sun, next_used)
    )


def _consumption(
    rng: np.random.Generator, kinds: NDArray[np.int64], annual: FloatArray, year: int, timezone: str
) -> FloatArray:
    """Each member's consumption in each hour of `year`, kWh (hours, members): their kind's
    profile scaled to their annual kWh, times the noise."""
    shapes = _shapes(year, timezone)
    noise = rng.gamma(1 / NOISE**2, NOISE**2, (shapes.shape[0], kinds.size))
    return np.asarray(shapes[:, kinds] * annual[None, :] * noise, dtype=np.float64)


@functools.lru_cache(maxsize=4)
def _shapes(year: int, timezone: str) -> FloatArray:
    """Each kind of MIX's hourly consumption for 1 kWh a year, (hours, kinds) in MIX's order."""
    return np.stack([estimate_hourly(kind, 1.0, year, timezone) for kind in MIX], axis=1)


@functools.lru_cache(maxsize=4)
def _pv_per_kwp(year: int, location: Location) -> FloatArray:
    """The clear-sky kWh of 1 kWp in each hour of `year` at `location`."""
    return pv_year_kwh_per_kwp(
        year, location.latitude, location.longitude, location.timezone, altitude=location.altitude
    )


def _clear_sky_index(rng: np.random.Generator, hours: int) -> FloatArray:
    """Each hour's clear-sky index (0-1) from Kasten and Czeplak's 1 - 0.75 * cover^3.4: a
    cloud cover drawn for each day, uniform on [0, 1], with an hourly wobble."""
    days = -(-hours // 24)
    cover = np.repeat(rng.uniform(0.0, 1.0, days), 24)[:hours] + rng.normal(0.0, 0.1, hours)
    return np.asarray(1 - 0.75 * np.clip(cover, 0.0, 1.0) ** 3.4, dtype=np.float64)


def bench_community(
    sizes: Sequence[int] = SIZES,
    seed: int = 1,
    progress: Callable[[str], None] = lambda _: None,
) -> list[CommunityBenchResult]:
    """Draw each size's community, time the optimisers on its train problem and judge every
    agreement on both problems; `progress` hears each step once it is done."""
    results = []
    for size in sizes:
        community = synthetic_community(size, seed)
        train, test, rules = community.train, community.test, community.rules
        progress(f"{size} members: two years drawn")
        began = time.perf_counter()
        variable = optimise_variable(train, rules)
        seconds = time.perf_counter() - began
        progress(f"{size} members: optimised hour by hour")
        began = time.perf_counter()
        static = optimise_static(train, rules)
        static_seconds = time.perf_counter() - began
        progress(f"{size} members: best static agreement optimised")
        equal = equal_coefficients(size)
        results.append(
            CommunityBenchResult(
                members=size,
                hours=int(train.generation.shape[0]),
                seconds=round(seconds, 3),
                static_seconds=round(static_seconds, 3),
                objective=round(objective(train, variable), 1),
                best_static_objective=round(objective(train, static), 1),
                equal_objective=round(objective(train, equal), 1),
                dynamic_objective=round(
                    objective(train, dynamic_coefficients(train.consumption)), 1
                ),
                out_of_sample_objective=round(objective(test, variable), 1),
                best_static_out_of_sample_objective=round(objective(test, static), 1),
                equal_out_of_sample_objective=round(objective(test, equal), 1),
                dynamic_out_of_sample_objective=round(
                    objective(test, dynamic_coefficients(test.consumption)), 1
                ),
            )
        )
        progress(f"{size} members: judged")
    return results


def run_community_bench(
    as_json: bool, console: Console, *, sizes: Sequence[int] = SIZES, seed: int = 1
) -> list[CommunityBenchResult]:
    """`bench_community` under a progress bar, then a table (or, with `as_json`, one JSON
    object `{"results": [{"members", "seconds", "objective", "best_static_objective", ...},
    ...]}` on standard output)."""
    with progress_bar("community bench", as_json, console) as bar:
        task = bar.add_task("", total=4 * len(sizes))
        results = bench_community(sizes, seed, progress=lambda _: bar.advance(task))
    if as_json:
        print(json.dumps({"results": [asdict(r) for r in results]}))
        return results
    table = Table(
        title="petra bench community",
        caption=f"MWh the community uses itself over {results[0].hours if results else 0:,} "
        f"hours with each agreement. judged in: optimised and judged on {YEAR}'s data moved onto "
        f"{YEAR + 1}'s calendar; out: the same coefficients judged on {YEAR + 1}'s data. s: "
        "the hourly optimiser's wall time, static s: the best static agreement's. dynamic: pro "
        "rata to each hour's consumption, known only after the fact (the upper bound). Goal "
        f"from the issue: 1,000 members in under {GOAL_S:.0f} s.",
    )
    for column in ("members", "judged", "s", "static s"):
        table.add_column(column, justify="right")
    for column in ("optimised", "best static", "equal", "dynamic"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            f"{r.members:,}",
            "in",
            f"{r.seconds:.2f}",
            f"{r.static_seconds:.2f}",
            *_mwh(r.objective, r.best_static_objective, r.equal_objective, r.dynamic_objective),
        )
        table.add_row(
            "",
            "out",
            "",
            "",
            *_mwh(
                r.out_of_sample_objective,
                r.best_static_out_of_sample_objective,
                r.equal_out_of_sample_objective,
                r.dynamic_out_of_sample_objective,
            ),
            end_section=True,
        )
    console.print(table)
    return results


def _mwh(*kwh: float) -> list[str]:
    return [f"{value / 1000:,.1f}" for value in kwh]
