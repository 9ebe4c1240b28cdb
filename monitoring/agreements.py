"""Sharing agreements in the monitoring store: each installation's agreements (static,
variable or dynamic coefficients over a stretch of local days, the rules they were optimised
under, the one they revise), their coefficients as whole millionths, and the hourly data of an
installation read from the store's aggregates as the arrays `community` works on.

An agreement is in force over the local days [first_day, end_day) of its community's time
zone, from local midnight to local midnight. Its hour k starts k real hours after local
midnight of first_day (`community.hour_starts`' rule), so a calendar year has 8,760 or 8,784
hours and a daylight-saving day 23 or 25. A variable agreement keeps one row of coefficients
per hour of the period it was saved with, also once a revision has ended it earlier (what it
planned for the revised stretch stays readable); hour k always reads row k.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import ColumnElement, Connection, select, update
from sqlalchemy.exc import SQLAlchemyError

from community import (
    DYNAMIC,
    ENERGY,
    KINDS,
    MONEY,
    STATIC,
    VARIABLE,
    Allocation,
    Rules,
    allocate,
    dynamic_coefficients,
)
from monitoring import exports
from monitoring.figures import add_up
from monitoring.records import feed_role, hourly_kwh
from monitoring.store import (
    HOUR_S,
    Feed,
    MonitoringStore,
    MonitoringStoreError,
    agreement,
    agreement_share,
    installation,
    supply_point,
    zone,
)
from monitoring.store import community as community_table

MILLION = 1_000_000  # a coefficient of 1 in whole millionths
OBJECTIVES = ("", ENERGY, MONEY)  # "": coefficients set by hand
STORED = np.dtype("<u4")  # how millionths are stored: uint32, little-endian
CONSUMPTION, GENERATION = "consumption", "generation"  # supply point kinds and feed roles
NO_RULES = Rules()  # an agreement set by hand
RULE_FIELDS = ("fixed", "floor", "maximum", "minimum", "poverty", "poverty_reserve")


class AgreementError(ValueError):
    """An agreement the store refuses: `code` is stable (`not_found`, `unknown_installation`,
    `not_a_member`, `bad_period`, `bad_coefficients`, `overlap`, and `bad_rules` from
    `rules_from_json`), `message` a sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Agreement:
    """One agreement of an installation: local days [first_day, end_day) (end_day None: open),
    its kind (community.STATIC/VARIABLE/DYNAMIC), objective (community.ENERGY/MONEY, or "" when
    set by hand), rules, the consumption supply points it shares among (in file order), and
    the agreement it revises."""

    id: int
    community_id: str
    installation_id: str
    kind: str
    first_day: date
    end_day: date | None
    objective: str
    rules: Rules
    supply_points: tuple[str, ...]
    note: str
    created: int
    replaces: int | None


# ---------------------------------------------------------------- periods


def local_midnight(day: date, timezone: str) -> int:
    """The unix time of local midnight opening `day` in `timezone` (an IANA name)."""
    return exports.local_midnight(day, zone(timezone))


def in_force_on(agreements: Sequence[Agreement], day: date) -> Agreement | None:
    """The agreement among `agreements` (newest first, as `agreements_of` lists them) whose
    local days hold `day`, or None."""
    return next(
        (a for a in agreements if a.first_day <= day and (a.end_day is None or day < a.end_day)),
        None,
    )


def period_bounds(first_day: date, end_day: date | None, timezone: str) -> tuple[int, int | None]:
    """The local days [first_day, end_day) as [start, end) unix seconds (end None: open)."""
    return (
        local_midnight(first_day, timezone),
        None if end_day is None else local_midnight(end_day, timezone),
    )


def period_hours(first_day: date, end_day: date, timezone: str) -> int:
    """How many hours the local days [first_day, end_day) hold, the rows a variable agreement
    over them needs: 24 a day, 23 or 25 on daylight-saving days, 8,760 or 8,784 a year."""
    start, end = period_bounds(first_day, end_day, timezone)
    assert end is not None
    return math.ceil((end - start) / HOUR_S)  # a zone's half-hour shift still starts an hour


# ---------------------------------------------------------------- rules


def rules_to_json(rules: Rules) -> str:
    """The rules as JSON text (stored with the agreement, shown on its page): every field,
    keys sorted, indented, members of `poverty` sorted, so equal rules give equal text."""
    return json.dumps(
        {
            "floor": float(rules.floor),
            "minimum": {member: float(b) for member, b in rules.minimum.items()},
            "maximum": {member: float(b) for member, b in rules.maximum.items()},
            "fixed": {member: float(b) for member, b in rules.fixed.items()},
            "poverty": sorted(rules.poverty),
            "poverty_reserve": float(rules.poverty_reserve),
        },
        sort_keys=True,
        indent=2,
    )


def rules_from_json(text: str) -> Rules:
    """Rules from JSON text as `rules_to_json` writes it; a field left out keeps its default.
    AgreementError `bad_rules` names what is wrong."""
    try:
        found = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AgreementError(
            "bad_rules", f"the rules are not JSON: {exc.msg} at line {exc.lineno}"
        ) from None
    if not isinstance(found, dict):
        raise AgreementError(
            "bad_rules", f"the rules are a JSON object with the fields {', '.join(RULE_FIELDS)}"
        )
    unknown = sorted(set(found) - set(RULE_FIELDS))
    if unknown:
        raise AgreementError(
            "bad_rules", f"there is no rule {unknown[0]!r}: the rules are {', '.join(RULE_FIELDS)}"
        )
    return Rules(
        floor=_share(found.get("floor", 0.0), "floor"),
        minimum=_shares(found.get("minimum", {}), "minimum"),
        maximum=_shares(found.get("maximum", {}), "maximum"),
        fixed=_shares(found.get("fixed", {}), "fixed"),
        poverty=_members(found.get("poverty", [])),
        poverty_reserve=_share(found.get("poverty_reserve", 0.0), "poverty_reserve"),
    )


def _share(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AgreementError("bad_rules", f"the rule {name!r} is a number, not {value!r}")
    return float(value)


def _shares(value: Any, name: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise AgreementError("bad_rules", f"the rule {name!r} maps member ids to numbers")
    return {str(member): _share(b, f"{name}.{member}") for member, b in value.items()}


def _members(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(member, str) for member in value):
        raise AgreementError("bad_rules", "the rule 'poverty' is a list of member ids")
    return frozenset(value)


# ---------------------------------------------------------------- saving


def save_agreement(
    store: MonitoringStore,
    *,
    installation_id: str,
    kind: str,
    first_day: date,
    end_day: date | None,
    supply_points: Sequence[str],
    millionths: NDArray[np.int64] | None,
    objective: str = "",
    rules: Rules = NO_RULES,
    note: str = "",
    replaces: int | None = None,
    now: int,
) -> int:
    """Store an agreement and its coefficients, in one transaction; its id. `millionths`: (1,
    members) static, (hours of the period, members) variable, None dynamic; every row sums to
    1,000,000. An agreement that starts inside the one in force ends that one's period there
    (a revision). AgreementError when the installation, a supply point (a consumption point
    of the installation's community) or the coefficients are wrong."""
    points = tuple(supply_points)
    _check_terms(kind, objective, first_day, end_day, points)
    rows = _checked_millionths(kind, millionths, points)
    try:
        with store.engine.begin() as conn:
            community_id, timezone = _community_of(conn, installation_id, lock=True)
            outside = set(points) - set(_consumption_points(conn, community_id))
            if outside:
                raise AgreementError(
                    "not_a_member",
                    f"{min(outside)} is not a consumption supply point of community "
                    f"{community_id!r}: import it with the master data or leave it out",
                )
            if kind == VARIABLE:
                assert end_day is not None  # _check_terms
                hours = period_hours(first_day, end_day, timezone)
                if rows.shape[0] != hours:
                    raise AgreementError(
                        "bad_coefficients",
                        f"{first_day} to {end_day} holds {hours} hours in {timezone}, "
                        f"and the coefficients have {rows.shape[0]} rows: give one per hour",
                    )
            revised = _revised(conn, installation_id, first_day, end_day)
            if replaces is not None:
                _check_replaces(conn, installation_id, replaces)
            if revised is not None:
                conn.execute(
                    update(agreement)
                    .where(agreement.c.id == revised)
                    .values(end_day=first_day.isoformat())
                )
            inserted = conn.execute(
                agreement.insert().values(
                    community_id=community_id,
                    installation_id=installation_id,
                    kind=kind,
                    first_day=first_day.isoformat(),
                    end_day=None if end_day is None else end_day.isoformat(),
                    objective=objective,
                    rules=rules_to_json(rules),
                    note=note,
                    created=now,
                    replaces=revised if replaces is None else replaces,
                )
            ).inserted_primary_key
            assert inserted is not None
            agreement_id = int(inserted[0])
            by_point = np.ascontiguousarray(rows.T, dtype=STORED)  # a point's hours, one blob
            conn.execute(
                agreement_share.insert(),
                [
                    {
                        "agreement_id": agreement_id,
                        "supply_point_id": point,
                        "position": position,
                        "millionths": by_point[position].tobytes(),
                    }
                    for position, point in enumerate(points)
                ],
            )
            return agreement_id
    except SQLAlchemyError as exc:
        raise MonitoringStoreError("saving the agreement failed, nothing of it was stored") from exc


def _check_terms(
    kind: str, objective: str, first_day: date, end_day: date | None, points: tuple[str, ...]
) -> None:
    """The checks of an agreement on its own, before the store is read."""
    if kind not in KINDS:
        raise AgreementError(
            "bad_coefficients", f"an agreement is {', '.join(KINDS)}, not {kind!r}"
        )
    if objective not in OBJECTIVES:
        raise AgreementError(
            "bad_coefficients",
            f"an agreement's objective is {ENERGY}, {MONEY} or none (set by hand), "
            f"not {objective!r}",
        )
    if end_day is not None and end_day <= first_day:
        raise AgreementError(
            "bad_period",
            f"the agreement ends on {end_day}, not after its first day {first_day}: "
            "its end is the first day out of force",
        )
    if end_day is None and kind == VARIABLE:
        raise AgreementError(
            "bad_period",
            "a variable agreement needs an end day: it has one row of coefficients per hour",
        )
    if not points:
        raise AgreementError(
            "bad_coefficients", "an agreement shares among one supply point or more"
        )
    seen: set[str] = set()
    for point in points:
        if point in seen:
            raise AgreementError(
                "bad_coefficients", f"{point} is named twice: give each supply point one column"
            )
        seen.add(point)


def _checked_millionths(
    kind: str, millionths: NDArray[np.int64] | None, points: tuple[str, ...]
) -> NDArray[np.int64]:
    """The coefficients as (rows, points) whole millionths, (0, points) for dynamic, after
    checking their shape and that every row is a split of 1,000,000."""
    if kind == DYNAMIC:
        if millionths is not None:
            raise AgreementError(
                "bad_coefficients",
                "a dynamic agreement has no coefficients: they follow each hour's consumption",
            )
        return np.zeros((0, len(points)), dtype=np.int64)
    if millionths is None:
        raise AgreementError("bad_coefficients", f"a {kind} agreement needs its coefficients")
    rows = np.asarray(millionths)
    if kind == STATIC and rows.ndim == 1:
        rows = rows[None, :]
    if rows.ndim != 2 or rows.shape[1] != len(points):
        raise AgreementError(
            "bad_coefficients",
            f"coefficients of shape {rows.shape} do not fit {len(points)} supply points: "
            "give one column per point",
        )
    if kind == STATIC and rows.shape[0] != 1:
        raise AgreementError(
            "bad_coefficients",
            f"a static agreement has one row of coefficients, not {rows.shape[0]}",
        )
    if not np.issubdtype(rows.dtype, np.integer):
        raise AgreementError(
            "bad_coefficients", "coefficients are whole millionths (integers), each row 1,000,000"
        )
    negative = np.argwhere(rows < 0)
    if negative.size:
        row, column = negative[0]
        raise AgreementError(
            "bad_coefficients",
            f"row {row + 1} gives {points[column]} a negative coefficient ({rows[row, column]})",
        )
    # Bounded first, so the sums below cannot overflow.
    sums = np.minimum(rows, MILLION + 1).sum(axis=1)
    off = np.flatnonzero(sums != MILLION)
    if off.size:
        row = int(off[0])
        raise AgreementError(
            "bad_coefficients",
            f"the coefficients of row {row + 1} add up to {rows[row].sum()} millionths, "
            "not 1,000,000",
        )
    return rows.astype(np.int64)


def _community_of(conn: Connection, installation_id: str, lock: bool = False) -> tuple[str, str]:
    """The installation's community and its time zone; `lock` holds the installation's row
    until the transaction ends (PostgreSQL), so two revisions of it cannot cross."""
    query = (
        select(installation.c.community_id, community_table.c.timezone)
        .join(community_table, community_table.c.id == installation.c.community_id)
        .where(installation.c.id == installation_id)
    )
    found = conn.execute(query.with_for_update(of=installation) if lock else query).first()
    if found is None:
        raise AgreementError(
            "unknown_installation",
            f"there is no installation {installation_id!r}: import it with the master data first",
        )
    return str(found[0]), str(found[1])


def _consumption_points(conn: Connection, community_id: str) -> dict[str, dict[str, Any]]:
    """The community's consumption supply points, by id."""
    rows = conn.execute(
        select(supply_point).where(
            supply_point.c.community_id == community_id, supply_point.c.kind == CONSUMPTION
        )
    )
    return {row.id: dict(row._mapping) for row in rows}


def _meet(first: date, end: date | None, other_first: date, other_end: date | None) -> bool:
    """Whether the local days [first, end) and [other_first, other_end) share a day (None: no
    end); an empty period meets none."""
    return (end is None or (first < end and other_first < end)) and (
        other_end is None or (other_first < other_end and first < other_end)
    )


def _revised(
    conn: Connection, installation_id: str, first_day: date, end_day: date | None
) -> int | None:
    """The agreement a new one over [first_day, end_day) revises (it starts inside its
    period), or None; AgreementError `overlap` when it meets another one any other way."""
    revised = None
    rows = conn.execute(
        select(agreement.c.id, agreement.c.first_day, agreement.c.end_day).where(
            agreement.c.installation_id == installation_id
        )
    )
    for row in rows.mappings():
        agreement_id = int(row["id"])
        first = date.fromisoformat(row["first_day"])
        end = None if row["end_day"] is None else date.fromisoformat(row["end_day"])
        if first <= first_day and (end is None or first_day < end):
            revised = agreement_id  # the one in force on first_day: it ends there
        elif _meet(first, end, first_day, end_day):
            raise AgreementError(
                "overlap",
                f"agreement {agreement_id} is in force from {first} "
                + (f"to {end}" if end is not None else "with no end")
                + ": start the new one inside its period to revise it, or end it before "
                f"{first}",
            )
    return revised


def _check_replaces(conn: Connection, installation_id: str, replaces: int) -> None:
    found = conn.scalar(select(agreement.c.installation_id).where(agreement.c.id == replaces))
    if found != installation_id:
        raise AgreementError(
            "not_found", f"installation {installation_id!r} has no agreement {replaces} to revise"
        )


# ---------------------------------------------------------------- reading


def agreements_of(
    store: MonitoringStore, community_id: str, installation_id: str | None = None
) -> list[Agreement]:
    """A community's agreements (or one installation's), newest first: by first day, then
    by the order they were saved in."""
    where = agreement.c.community_id == community_id
    if installation_id is not None:
        where = where & (agreement.c.installation_id == installation_id)
    with store.engine.connect() as conn:
        return _agreements(conn, where)


def agreement_by_id(store: MonitoringStore, agreement_id: int) -> Agreement:
    """AgreementError `not_found` when there is none."""
    with store.engine.connect() as conn:
        found = _agreements(conn, agreement.c.id == agreement_id)
    if not found:
        raise AgreementError("not_found", f"there is no agreement {agreement_id}")
    return found[0]


def _agreements(conn: Connection, where: ColumnElement[bool]) -> list[Agreement]:
    points: dict[int, list[str]] = {}
    shares = conn.execute(
        select(agreement_share.c.agreement_id, agreement_share.c.supply_point_id)
        .join(agreement, agreement.c.id == agreement_share.c.agreement_id)
        .where(where)
        .order_by(agreement_share.c.agreement_id, agreement_share.c.position)
    )
    for share in shares.mappings():
        points.setdefault(share["agreement_id"], []).append(share["supply_point_id"])
    rows = conn.execute(
        select(agreement).where(where).order_by(agreement.c.first_day.desc(), agreement.c.id.desc())
    )
    return [
        Agreement(
            id=row.id,
            community_id=row.community_id,
            installation_id=row.installation_id,
            kind=row.kind,
            first_day=date.fromisoformat(row.first_day),
            end_day=None if row.end_day is None else date.fromisoformat(row.end_day),
            objective=row.objective,
            rules=rules_from_json(row.rules),
            supply_points=tuple(points.get(row.id, ())),
            note=row.note,
            created=row.created,
            replaces=row.replaces,
        )
        for row in rows
    ]


def coefficients_of(store: MonitoringStore, agreement_id: int) -> NDArray[np.int64]:
    """The stored millionths, (1, members) or (hours, members); (0, members) for dynamic."""
    with store.engine.connect() as conn:
        blobs: list[bytes] = list(
            conn.scalars(
                select(agreement_share.c.millionths)
                .where(agreement_share.c.agreement_id == agreement_id)
                .order_by(agreement_share.c.position)
            )
        )
    if not blobs:  # every agreement shares among one point or more
        raise AgreementError("not_found", f"there is no agreement {agreement_id}")
    columns = [np.frombuffer(blob, dtype=STORED) for blob in blobs]
    return np.stack(columns, axis=1).astype(np.int64)


# ---------------------------------------------------------------- hourly data


@dataclass(frozen=True, slots=True, eq=False)
class InstallationHours:
    """An installation's hourly data from the store over [start, end): the UTC hour starts
    (hours,), its generation (hours,) and its consumption supply points' consumption (hours,
    points) in kWh; an hour with no data is 0 and is counted in `missing`."""

    supply_points: tuple[str, ...]
    hour_starts: NDArray[np.int64]
    generation: NDArray[np.float64]
    consumption: NDArray[np.float64]
    missing_generation_hours: int
    missing_consumption_hours: NDArray[np.int64]  # (points,)


def installation_hours(
    store: MonitoringStore,
    installation_id: str,
    start: int,
    end: int,
    *,
    supply_points: Sequence[str] | None = None,
) -> InstallationHours:
    """The installation's hourly data over [start, end) (whole hours): the generation of its
    generation supply points' generation feeds, and the consumption of its consumption supply
    points (by id; or of `supply_points`, consumption points of its community, in that order)
    from their consumption feeds, all from the hourly aggregates."""
    if start % HOUR_S or end % HOUR_S or end < start:
        raise AgreementError(
            "bad_period",
            f"[{start}, {end}) is not a stretch of whole UTC hours: both ends are unix seconds "
            "divisible by 3600, the end not before the start",
        )
    with store.engine.connect() as conn:
        community_id = _community_of(conn, installation_id)[0]
        consumers = _consumption_points(conn, community_id)
        generators = {
            row.id: dict(row._mapping)
            for row in conn.execute(
                select(supply_point).where(
                    supply_point.c.installation_id == installation_id,
                    supply_point.c.kind == GENERATION,
                )
            )
        }
    if supply_points is None:
        points = tuple(
            sorted(p for p, row in consumers.items() if row["installation_id"] == installation_id)
        )
    else:
        points = tuple(supply_points)
        outside = set(points) - set(consumers)
        if outside:
            raise AgreementError(
                "not_a_member",
                f"{min(outside)} is not a consumption supply point of community {community_id!r}",
            )
    records = {**consumers, **generators}
    wanted = [*generators, *points]
    feeds = store.feeds(supply_points=wanted) if wanted else []
    generation_feeds: list[Feed] = []
    consumption_feeds: dict[str, list[Feed]] = {point: [] for point in points}
    for f in feeds:
        role = feed_role(f, records)
        if f.supply_point_id in generators and role == GENERATION:
            generation_feeds.append(f)
        elif f.supply_point_id in consumption_feeds and role == CONSUMPTION:
            consumption_feeds[f.supply_point_id].append(f)
    every = generation_feeds + [f for point in points for f in consumption_feeds[point]]
    kwh = hourly_kwh(store, every, start, end)
    hours = (end - start) // HOUR_S
    generation, generation_hours = _on_hours(
        add_up(*(kwh[f.id] for f in generation_feeds)), start, hours
    )
    consumption = np.zeros((hours, len(points)))
    missing = np.zeros(len(points), dtype=np.int64)
    for column, point in enumerate(points):
        consumption[:, column], present = _on_hours(
            add_up(*(kwh[f.id] for f in consumption_feeds[point])), start, hours
        )
        missing[column] = hours - present
    return InstallationHours(
        supply_points=points,
        hour_starts=np.arange(start, end, HOUR_S, dtype=np.int64),
        generation=generation,
        consumption=consumption,
        missing_generation_hours=hours - generation_hours,
        missing_consumption_hours=missing,
    )


def _on_hours(
    energy: Mapping[int, float], start: int, hours: int
) -> tuple[NDArray[np.float64], int]:
    """kWh by hour start as an array of `hours` hours from `start` (0 where none), and how
    many hours had data."""
    out = np.zeros(hours)
    if energy:
        starts = np.fromiter(energy.keys(), dtype=np.int64, count=len(energy))
        out[(starts - start) // HOUR_S] = np.fromiter(
            energy.values(), dtype=np.float64, count=len(energy)
        )
    return out, len(energy)


# ---------------------------------------------------------------- allocation


@dataclass(frozen=True, slots=True, eq=False)
class InstallationAllocation:
    """What the agreements in force allocated over a stretch: the hours' data, the coefficient
    of every point in every hour (hours, points), the agreement in force in each hour (0:
    none, the master data's fixed shares stood in) and the allocation."""

    hours: InstallationHours
    coefficients: NDArray[np.float64]
    agreement_ids: NDArray[np.int64]
    allocation: Allocation


def installation_allocation(
    store: MonitoringStore, installation_id: str, start: int, end: int
) -> InstallationAllocation:
    """Allocate the installation's generation over [start, end) by the agreements in force
    hour by hour; an hour no agreement covers uses the supply points' fixed shares from the
    master data (whatever of 1 they leave unassigned is surplus). The points are the
    installation's consumption points (by id), then those only its agreements name (by id);
    a point an agreement leaves out gets 0 in that agreement's hours."""
    with store.engine.connect() as conn:
        community_id, timezone = _community_of(conn, installation_id)
        consumers = _consumption_points(conn, community_id)
    own = sorted(p for p, row in consumers.items() if row["installation_id"] == installation_id)
    in_force = []
    for candidate in agreements_of(store, community_id, installation_id):
        first, last = period_bounds(candidate.first_day, candidate.end_day, timezone)
        if first < end and (last is None or (start < last and first < last)):
            in_force.append((candidate, first, last))
    named = {point for candidate, _, _ in in_force for point in candidate.supply_points}
    points = (*own, *sorted(named - set(own)))
    hours = installation_hours(store, installation_id, start, end, supply_points=points)
    column = {point: n for n, point in enumerate(points)}
    count = len(hours.hour_starts)
    coefficients = np.zeros((count, len(points)))
    agreement_ids = np.zeros(count, dtype=np.int64)
    for candidate, first, last in in_force:
        low = int(np.searchsorted(hours.hour_starts, first))
        high = count if last is None else int(np.searchsorted(hours.hour_starts, last))
        if low >= high:
            continue
        columns = [column[point] for point in candidate.supply_points]
        if candidate.kind == DYNAMIC:
            rows = dynamic_coefficients(hours.consumption[low:high, columns])
        else:
            stored = coefficients_of(store, candidate.id) / MILLION
            rows = (
                stored
                if candidate.kind == STATIC
                else stored[(hours.hour_starts[low:high] - first) // HOUR_S]
            )
        coefficients[low:high, columns] = rows
        agreement_ids[low:high] = candidate.id
    fallback = agreement_ids == 0
    own_shares = {point: consumers[point]["share"] or 0.0 for point in own}
    coefficients[fallback] = [own_shares.get(point, 0.0) for point in points]
    return InstallationAllocation(
        hours, coefficients, agreement_ids, _allocated(hours, coefficients, fallback)
    )


def _allocated(
    hours: InstallationHours, coefficients: NDArray[np.float64], fallback: NDArray[np.bool_]
) -> Allocation:
    """The allocation: `community.allocate` in the hours of an agreement (rows summing to 1),
    min(b x G, C) with the master data's shares elsewhere (rows summing to 1 or less)."""
    generation = np.clip(hours.generation, 0.0, None)  # a meter wired backwards gives none
    consumption = np.clip(hours.consumption, 0.0, None)
    assigned = coefficients[fallback] * generation[fallback, None]
    allocated = np.zeros_like(coefficients)
    every_assigned = np.zeros_like(coefficients)
    every_assigned[fallback] = assigned
    allocated[fallback] = np.minimum(assigned, consumption[fallback])
    covered = ~fallback
    if covered.any():
        part = allocate(generation[covered], consumption[covered], coefficients[covered])
        every_assigned[covered] = part.assigned
        allocated[covered] = part.allocated
    return Allocation(generation, consumption, every_assigned, allocated)
