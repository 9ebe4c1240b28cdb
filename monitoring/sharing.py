"""A community's generation shared among its consumption points hour by hour, as the pages
show it: each installation by its sharing agreements in force (`monitoring.agreements`, the
arithmetic in `community`), else by the master data's fixed shares, else pro rata to
consumption as if the community were one meter; every installation's shares then added up and
each member's use capped by their consumption across all of them. Read from the store's hourly
aggregates; used by the member pages, the public display and the manager's installations."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, select

from community import dynamic_coefficients
from monitoring import agreements
from monitoring.exports import local_midnight
from monitoring.figures import energy_kwh
from monitoring.records import feed_role, installations_of, supply_points_of
from monitoring.store import HOUR_S, Feed, MonitoringStore, aggregate, zone

FloatArray = NDArray[np.float64]


IntArray = NDArray[np.int64]


STATIC_SHARES = "static"  # the supply points' fixed sharing coefficients


COMMUNITY_AS_ONE = "community_as_one"  # no coefficients: the community shares everything


AGREEMENTS = "agreements"  # the installation's sharing agreements (`monitoring.agreements`)


def master_data_coefficients(
    consumption: FloatArray, shares: Sequence[float | None]
) -> tuple[FloatArray, str]:
    """How the master data shares an installation's generation among consumption points
    hour by hour: the coefficients (hours, points) and the rule. With any share set, each
    point's fixed share b_i in every hour (none for a point without one; what the shares
    leave is surplus), DESIGN.md section 14, static; with none set, pro rata to each hour's
    consumption (kWh, (hours, points)), so the points use min(G_h, sum_i C_ih) together, as if
    every member shared one meter."""
    hours, points = consumption.shape
    if any(share is not None for share in shares):
        row = np.array([share or 0.0 for share in shares], dtype=np.float64)
        return np.broadcast_to(row, (hours, points)), STATIC_SHARES
    if points == 0:
        return np.zeros((hours, 0)), COMMUNITY_AS_ONE
    return dynamic_coefficients(consumption), COMMUNITY_AS_ONE


@dataclass(frozen=True, slots=True, eq=False)
class Source:
    """One installation's generation (`installation_id` "" for the generation no installation
    holds) and how it was shared hour by hour among the community's consumption points: the
    rule, the coefficients (hours, points), the agreement in force (hours,) (0: none, the
    master data's shares stood in), what each point was assigned, b_ih x G_h (hours, points),
    and the points it shares among. Energies in kWh per hour."""

    installation_id: str
    rule: str
    generation: FloatArray
    coefficients: FloatArray
    agreement_ids: IntArray
    assigned: FloatArray
    members: frozenset[str]


@dataclass(frozen=True, slots=True, eq=False)
class CommunityAllocation:
    """A community's generation allocated hour by hour (UTC hour starts (hours,)) to its
    consumption points (by id): their consumption (hours, points), what every installation
    assigned them, and what they used of it all, min(sum_k b_kih G_kh, C_ih): a member's use
    is capped by their consumption across all installations together. kWh per hour."""

    hour_starts: IntArray
    supply_points: tuple[str, ...]
    consumption: FloatArray
    sources: tuple[Source, ...]
    assigned: FloatArray
    allocated: FloatArray

    def source(self, installation_id: str) -> Source | None:
        return next((s for s in self.sources if s.installation_id == installation_id), None)

    @property
    def generation(self) -> FloatArray:
        """The community's generation per hour, every installation's together (kWh)."""
        total = np.zeros(self.hour_starts.shape[0])
        for source in self.sources:
            total = total + source.generation
        return total

    def self_consumed(self, source: Source) -> FloatArray:
        """What the community used of `source`'s generation per hour (kWh): where a member
        used less than all installations assigned them, each installation's part of what they
        used is its part of what they were assigned."""
        with np.errstate(invalid="ignore", divide="ignore"):
            used = np.where(self.assigned > 0, self.allocated / self.assigned, 0.0)
        return np.asarray((source.assigned * used).sum(axis=1))


def combine(
    hour_starts: IntArray,
    supply_points: Sequence[str],
    consumption: FloatArray,
    sources: Sequence[Source],
) -> CommunityAllocation:
    """The allocation of every source's generation together (see CommunityAllocation)."""
    assigned = np.zeros(consumption.shape)
    for source in sources:
        assigned = assigned + source.assigned
    allocated = np.minimum(assigned, np.clip(consumption, 0.0, None))
    return CommunityAllocation(
        hour_starts, tuple(supply_points), consumption, tuple(sources), assigned, allocated
    )


@dataclass(frozen=True, slots=True)
class EnergyFeeds:
    """Where a community's energy is measured: its consumption supply points (by id), the
    feeds of each one's consumption, and the feeds of each installation's generation (key ""
    for generation supply points no installation holds)."""

    consumers: tuple[dict[str, Any], ...]
    consumption: dict[str, list[Feed]]
    generation: dict[str, list[Feed]]


def energy_feeds(store: MonitoringStore, community_id: str) -> EnergyFeeds:
    """The community's consumption and generation feeds (see EnergyFeeds)."""
    points = {p["id"]: p for p in supply_points_of(store, community_id)}
    consumption: dict[str, list[Feed]] = defaultdict(list)
    generation: dict[str, list[Feed]] = defaultdict(list)
    for f in store.feeds(supply_points=points) if points else []:
        point = points[f.supply_point_id or ""]
        role = feed_role(f, points)
        if role == "consumption" and point["kind"] == "consumption":
            consumption[point["id"]].append(f)
        elif role == "generation" and point["kind"] == "generation":
            generation[point["installation_id"] or ""].append(f)
    consumers = tuple(p for p in points.values() if p["kind"] == "consumption")
    return EnergyFeeds(consumers, dict(consumption), dict(generation))


def hour_grid(start: int, end: int) -> IntArray:
    """The whole UTC hours (their starts) that cover [start, end), unix seconds."""
    first, last = start - start % HOUR_S, end + (-end) % HOUR_S
    return np.arange(first, last, HOUR_S, dtype=np.int64)


def hourly_columns(
    store: MonitoringStore, columns: Sequence[Sequence[Feed]], hour_starts: IntArray
) -> FloatArray:
    """kWh per hour of `hour_starts` (hours,) of each column's feeds added together, (hours,
    columns); an hour without data is 0, a negative total (a meter wired backwards) none."""
    out = np.zeros((hour_starts.shape[0], len(columns)))
    if hour_starts.shape[0] == 0:
        return out
    first, last = int(hour_starts[0]), int(hour_starts[-1]) + HOUR_S
    by_feed = store.buckets([f.id for column in columns for f in column], HOUR_S, first, last)
    for j, column in enumerate(columns):
        for f in column:
            energy = energy_kwh(f.kind, by_feed[f.id])
            if energy:
                rows = (np.fromiter(energy, dtype=np.int64) - first) // HOUR_S
                np.add.at(out[:, j], rows, np.fromiter(energy.values(), dtype=np.float64))
    return np.clip(out, 0.0, None)


def first_hour(store: MonitoringStore, feeds: Sequence[Feed]) -> int | None:
    """The start of the first hourly aggregate of any of `feeds`, or None without data."""
    if not feeds:
        return None
    with store.engine.connect() as conn:
        found = conn.scalar(
            select(func.min(aggregate.c.start)).where(
                aggregate.c.feed_id.in_([f.id for f in feeds]), aggregate.c.period == HOUR_S
            )
        )
    return None if found is None else int(found)


def agreement_span(agreement: agreements.Agreement, tz: ZoneInfo) -> tuple[int, float]:
    """An agreement's period [start, end) in unix seconds (end infinite when open)."""
    start = local_midnight(agreement.first_day, tz)
    return start, math.inf if agreement.end_day is None else local_midnight(agreement.end_day, tz)


def covers(agreement: agreements.Agreement, tz: ZoneInfo, hour_starts: IntArray) -> bool:
    """Whether the agreement is in force in any of the hours `hour_starts` (ordered)."""
    if hour_starts.shape[0] == 0:
        return False
    start, end = agreement_span(agreement, tz)
    return start < int(hour_starts[-1]) + HOUR_S and end > int(hour_starts[0])


def agreement_source(
    store: MonitoringStore, installation_id: str, hour_starts: IntArray, points: Sequence[str]
) -> Source:
    """An installation's generation shared by its agreements in force over `hour_starts`
    (`monitoring.agreements.installation_allocation`), laid over the community's `points`."""
    shared = agreements.installation_allocation(
        store, installation_id, int(hour_starts[0]), int(hour_starts[-1]) + HOUR_S
    )
    hours = hour_starts.shape[0]
    found = shared.hours.hour_starts
    rows = np.clip(np.searchsorted(hour_starts, found), 0, hours - 1)
    kept = hour_starts[rows] == found
    rows = rows[kept]
    column = {point: j for j, point in enumerate(points)}
    mine = [k for k, point in enumerate(shared.hours.supply_points) if point in column]
    cols = [column[shared.hours.supply_points[k]] for k in mine]
    generation = np.zeros(hours)
    generation[rows] = shared.hours.generation[kept]
    coefficients, assigned = np.zeros((hours, len(points))), np.zeros((hours, len(points)))
    coefficients[np.ix_(rows, cols)] = shared.coefficients[kept][:, mine]
    assigned[np.ix_(rows, cols)] = shared.allocation.assigned[kept][:, mine]
    agreement_ids = np.zeros(hours, dtype=np.int64)
    agreement_ids[rows] = shared.agreement_ids[kept]
    return Source(
        installation_id,
        AGREEMENTS,
        generation,
        coefficients,
        agreement_ids,
        assigned,
        frozenset(shared.hours.supply_points),
    )


def community_allocation(
    store: MonitoringStore, community: Mapping[str, Any], start: int, end: int
) -> CommunityAllocation:
    """The community's generation over the whole hours covering [start, end) allocated to
    its consumption points: an installation with an agreement in force in that stretch by its
    agreements (`installation_allocation`); any other, and the generation no installation
    holds, by the master data (`master_data_coefficients`) among the consumption points tied
    to the installation, else among all the community's."""
    hour_starts = hour_grid(start, end)
    tz = zone(community["timezone"])
    feeds = energy_feeds(store, community["id"])
    points = tuple(p["id"] for p in feeds.consumers)
    consumption = hourly_columns(store, [feeds.consumption.get(p, []) for p in points], hour_starts)
    keys = [r["id"] for r in installations_of(store, community["id"])]
    keys += [""] if feeds.generation.get("") else []
    generation = hourly_columns(store, [feeds.generation.get(k, []) for k in keys], hour_starts)
    covered = {
        a.installation_id
        for a in agreements.agreements_of(store, community["id"])
        if covers(a, tz, hour_starts)
    }
    sources = []
    for k, key in enumerate(keys):
        if key in covered:
            sources.append(agreement_source(store, key, hour_starts, points))
            continue
        tied = [j for j, p in enumerate(feeds.consumers) if key and p["installation_id"] == key]
        pool = tied or list(range(len(points)))
        pooled, rule = master_data_coefficients(
            consumption[:, pool], [feeds.consumers[j]["share"] for j in pool]
        )
        coefficients = np.zeros(consumption.shape)
        coefficients[:, pool] = pooled
        sources.append(
            Source(
                key,
                rule,
                generation[:, k],
                coefficients,
                np.zeros(hour_starts.shape[0], dtype=np.int64),
                coefficients * generation[:, k, None],
                frozenset(points[j] for j in pool),
            )
        )
    return combine(hour_starts, points, consumption, sources)
