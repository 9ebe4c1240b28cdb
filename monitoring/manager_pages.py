"""The managers' pages: one community at a glance (its members, supply points and feeds, data
gaps, devices offline, ingestion refusals), its installations' production and amortisation,
and its energy exported as CSV or Excel.

A manager sees exactly their own community; an operator sees any, choosing it with
`?community=`; a member is refused (403). Another community's address answers 404, as an
unknown one does, so a manager cannot even learn which communities exist.

The figures are pure functions (gaps, the split of production into self-consumed and surplus,
amortisation); the routes only read the store and render.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from fractions import Fraction
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from monitoring.alarms import silent_alarm
from monitoring.auth import Viewer, require
from monitoring.exports import (
    RESOLUTIONS,
    Column,
    ExportRefused,
    ExportTable,
    export_range,
    export_table,
    row_times,
    write_csv,
    write_xlsx,
)
from monitoring.figures import add_up, energy_kwh, self_consumed
from monitoring.samples import OTHER
from monitoring.service import MonitorService
from monitoring.store import (
    DAY_S,
    HOUR_S,
    Feed,
    MonitoringStore,
    installation,
    member,
    supply_point,
    zone,
)
from monitoring.templating import PageRoute, render
from service import ApiError

GAP_DAYS = 7  # how far back the overview looks for hours without data
MAX_GAP_DAYS = 92
RATE_WINDOW_S = 365 * DAY_S  # the payback projection runs at the last year's pace


# ---------------------------------------------------------------- pure figures


@dataclass(frozen=True, slots=True)
class Gap:
    """Hours without data of one feed: [start, end) in unix seconds, whole UTC hours."""

    start: int
    end: int

    @property
    def hours(self) -> int:
        return (self.end - self.start) // HOUR_S


def data_gaps(hours_with_data: Iterable[int], start: int, end: int) -> list[Gap]:
    """The runs of whole hours in [start, end) (both hour-aligned, unix seconds) that are not
    in `hours_with_data` (hour starts), oldest first."""
    have = set(hours_with_data)
    gaps: list[Gap] = []
    opened: int | None = None
    for hour in range(start, end, HOUR_S):
        if hour in have:
            if opened is not None:
                gaps.append(Gap(opened, hour))
                opened = None
        elif opened is None:
            opened = hour
    if opened is not None:
        gaps.append(Gap(opened, end))
    return gaps


@dataclass(frozen=True, slots=True)
class Split:
    """An installation's production in kWh: used within the community, and surplus."""

    self_consumed_kwh: Fraction
    surplus_kwh: Fraction


STATIC_SHARES = "static"  # the supply points' fixed sharing coefficients
COMMUNITY_AS_ONE = "community_as_one"  # no coefficients: the community shares everything


def community_use(
    generation: Mapping[int, float],
    consumption: Mapping[str, Mapping[int, float]],
    shares: Mapping[str, float | None],
) -> tuple[dict[int, float], str]:
    """What the community uses of its generation hour by hour (kWh by hour start), and the
    rule used: with the consumption supply points' fixed shares b_i, sum_i min(b_i G_h, C_ih)
    (DESIGN.md section 14, static); with no share set, min(G_h, sum_i C_ih), as if every
    member shared one meter. `consumption` and `shares` are by supply point."""
    if any(share is not None for share in shares.values()):
        members = [(shares.get(point) or 0.0, hours) for point, hours in consumption.items()]
        return self_consumed(generation, members), STATIC_SHARES
    total = add_up(*consumption.values())
    return {
        h: min(max(g, 0.0), max(total.get(h, 0.0), 0.0)) for h, g in generation.items()
    }, COMMUNITY_AS_ONE


def split_production(
    generation: Mapping[str, Mapping[int, float]], used: Mapping[int, float]
) -> dict[str, Split]:
    """Per installation, its production split hour by hour into self-consumed and surplus:
    the community's use `used` of hour h is shared among installations in proportion to what
    each produced in h. `generation`: kWh per hour start per installation."""
    totals: dict[int, Fraction] = defaultdict(Fraction)
    for hours in generation.values():
        for hour, kwh in hours.items():
            totals[hour] += Fraction(max(kwh, 0.0))
    out: dict[str, Split] = {}
    for name, hours in generation.items():
        mine = surplus = Fraction(0)
        for hour, kwh in hours.items():
            produced, total = Fraction(max(kwh, 0.0)), totals[hour]
            if produced == 0:
                continue
            share = produced * min(total, Fraction(max(used.get(hour, 0.0), 0.0))) / total
            mine += share
            surplus += produced - share
        out[name] = Split(mine, surplus)
    return out


def value_micro(split: Split, price_micro_per_kwh: int, export_micro_per_kwh: int) -> int:
    """What production is worth in micro-units: self-consumed at the retail price, surplus at
    the export price, rounded once, half to even (money is never a float)."""
    return round(
        split.self_consumed_kwh * price_micro_per_kwh + split.surplus_kwh * export_micro_per_kwh
    )


@dataclass(frozen=True, slots=True)
class Amortisation:
    """An installation's payback: `value_micro` earned of `cost_micro`; `paid` the fraction
    paid back (None without a cost); `payback_at` the projected unix time of full payback at
    the recent pace (None when paid back, without a cost, or with no recent value)."""

    cost_micro: int | None
    value_micro: int
    paid: Fraction | None
    payback_at: int | None

    @property
    def paid_percent(self) -> float | None:
        return None if self.paid is None else float(self.paid * 100)


def amortisation(
    cost_micro: int | None, value_micro: int, recent_value_micro: int, recent_s: int, now: int
) -> Amortisation:
    """The payback of an installation that cost `cost_micro` and has earned `value_micro`,
    `recent_value_micro` of it in the last `recent_s` seconds before `now` (unix seconds): at
    that pace, when the rest is earned."""
    if cost_micro is None or cost_micro <= 0:
        return Amortisation(cost_micro, value_micro, None, None)
    paid = Fraction(value_micro, cost_micro)
    if paid >= 1 or recent_value_micro <= 0 or recent_s <= 0:
        return Amortisation(cost_micro, value_micro, paid, None)
    rest_s = Fraction(cost_micro - value_micro) * recent_s / recent_value_micro
    return Amortisation(cost_micro, value_micro, paid, now + round(rest_s))


# ---------------------------------------------------------------- reading the store


def visible_community(service: MonitorService, who: Viewer, asked: str | None) -> dict[str, Any]:
    """The community `who` may see: a manager's own, an operator's choice (`asked`, else the
    first). 404 for a community that does not exist or is not theirs."""
    store = service.store
    if who.role == "manager":
        if asked not in (None, who.community_id) or who.community_id is None:
            raise ApiError(404, "not_found", "there is no such community among yours")
        found = store.community(who.community_id)
    elif asked is not None:
        found = store.community(asked)
    else:
        every = store.communities()
        found = every[0] if every else None
    if found is None:
        raise ApiError(404, "not_found", "there is no such community: import one first")
    return found


def supply_points_of(store: MonitoringStore, community_id: str) -> list[dict[str, Any]]:
    """The community's supply points with their member's name, by id."""
    query = (
        select(supply_point, member.c.name.label("member_name"), member.c.ref.label("member_ref"))
        .outerjoin(member, member.c.id == supply_point.c.member_id)
        .where(supply_point.c.community_id == community_id)
        .order_by(supply_point.c.id)
    )
    with store.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def members_of(store: MonitoringStore, community_id: str) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(member).where(member.c.community_id == community_id).order_by(member.c.ref)
        )
        return [dict(row._mapping) for row in rows]


def installations_of(store: MonitoringStore, community_id: str) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(installation)
            .where(installation.c.community_id == community_id)
            .order_by(installation.c.id)
        )
        return [dict(row._mapping) for row in rows]


def feed_role(feed: Feed, points: Mapping[str, Mapping[str, Any]]) -> str | None:
    """What a supply point feed measures: its declared role, else its supply point's kind."""
    if feed.role is not None:
        return feed.role
    point = points.get(feed.supply_point_id or "")
    return None if point is None else str(point["kind"])


def hourly_kwh(
    store: MonitoringStore, feeds: Sequence[Feed], start: int, end: int
) -> dict[int, dict[int, float]]:
    """kWh per hour start of each of `feeds` in [start, end)."""
    by_feed = store.buckets([f.id for f in feeds], HOUR_S, start, end)
    return {f.id: energy_kwh(f.kind, by_feed[f.id]) for f in feeds}


@dataclass(frozen=True, slots=True)
class FeedGaps:
    """A supply point feed, what it measures there, and its hours without data."""

    feed: Feed
    role: str | None
    gaps: tuple[Gap, ...]

    @property
    def missing_hours(self) -> int:
        return sum(gap.hours for gap in self.gaps)


def feed_gaps(store: MonitoringStore, community_id: str, now: int, days: int) -> list[FeedGaps]:
    """Per supply point feed of the community, the whole hours of the `days` days before the
    current hour (unix seconds `now`) that hold no sample, from the hourly aggregates."""
    points = {p["id"]: p for p in supply_points_of(store, community_id)}
    feeds = store.feeds(supply_points=points) if points else []
    end = now - now % HOUR_S
    start = end - days * DAY_S
    by_feed = store.buckets([f.id for f in feeds], HOUR_S, start, end)
    return [
        FeedGaps(
            f,
            feed_role(f, points),
            tuple(data_gaps((b.start for b in by_feed[f.id]), start, end)),
        )
        for f in feeds
    ]


def offline_nodes(store: MonitoringStore, community_id: str, now: float) -> list[dict[str, Any]]:
    """The community's devices silent for longer than their `silent_after_s`, each with its
    alarm's `since` and `message`."""
    out = []
    for row in store.nodes(community_id):
        alarm = silent_alarm(row, now)
        if alarm is not None:
            out.append({**row, "since": alarm.since, "message": alarm.message})
    return out


def local_start(t: int, tz: ZoneInfo, what: str) -> int:
    """The local midnight opening the day, month or year (`what`) that holds `t`."""
    day = datetime.fromtimestamp(t, tz).date()
    if what == "month":
        day = day.replace(day=1)
    elif what == "year":
        day = day.replace(month=1, day=1)
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp())


@dataclass(frozen=True, slots=True)
class Production:
    """An installation's production in kWh: this local day, month and year, and since
    commissioning (or since its first data)."""

    today: float
    month: float
    year: float
    total: float


@dataclass(frozen=True, slots=True)
class InstallationFigures:
    record: dict[str, Any]
    feeds: tuple[Feed, ...]
    production: Production
    split: Split
    amortisation: Amortisation


def commissioned_at(record: Mapping[str, Any], tz: ZoneInfo) -> int | None:
    """The local midnight of an installation's commissioning date, or None if unknown."""
    text = record.get("commissioned")
    if not text:
        return None
    return int(datetime.combine(date.fromisoformat(text), datetime.min.time(), tz).timestamp())


def installation_figures(
    store: MonitoringStore, community: Mapping[str, Any], now: int
) -> tuple[list[InstallationFigures], str | None]:
    """Each installation's production and amortisation, and the rule that split production
    into self-consumed and surplus (`community_use`), or None when no consumption data exists
    (then all production counts as surplus, valued at the export price)."""
    tz = zone(community["timezone"])
    points = {p["id"]: p for p in supply_points_of(store, community["id"])}
    feeds = store.feeds(supply_points=points) if points else []
    records = installations_of(store, community["id"])
    generation_feeds: dict[str, list[Feed]] = defaultdict(list)
    consumption_feeds: dict[str, list[Feed]] = defaultdict(list)
    for f in feeds:
        point = points[f.supply_point_id or ""]
        role = feed_role(f, points)
        if role == "generation" and point["installation_id"] is not None:
            generation_feeds[point["installation_id"]].append(f)
        elif role == "consumption":
            consumption_feeds[point["id"]].append(f)
    starts = {r["id"]: commissioned_at(r, tz) or 0 for r in records}
    earliest = min(starts.values(), default=0)
    consumption = {
        point: add_up(*hourly_kwh(store, point_feeds, earliest, now + 1).values())
        for point, point_feeds in consumption_feeds.items()
    }
    generation = {
        r["id"]: add_up(
            *hourly_kwh(store, generation_feeds[r["id"]], starts[r["id"]], now + 1).values()
        )
        for r in records
    }
    used, rule = community_use(
        add_up(*generation.values()),
        consumption,
        {point: points[point]["share"] for point in consumption},
    )
    recent_from = now - RATE_WINDOW_S
    split = split_production(generation, used)
    recent = split_production(
        {
            r: {h: v for h, v in hours.items() if h >= recent_from}
            for r, hours in generation.items()
        },
        used,
    )
    price, export_price = community["price_micro_per_kwh"], community["export_micro_per_kwh"]
    day, month, year = (local_start(now, tz, what) for what in ("day", "month", "year"))
    out = []
    for r in records:
        first = starts[r["id"]] or min(generation[r["id"]], default=now)
        daily = daily_kwh(store, generation_feeds[r["id"]], starts[r["id"]], now)
        production = Production(
            today=sum(v for t, v in daily.items() if t >= day),
            month=sum(v for t, v in daily.items() if t >= month),
            year=sum(v for t, v in daily.items() if t >= year),
            total=sum(daily.values()),
        )
        out.append(
            InstallationFigures(
                r,
                tuple(generation_feeds[r["id"]]),
                production,
                split[r["id"]],
                amortisation(
                    r["cost_micro"],
                    value_micro(split[r["id"]], price, export_price),
                    value_micro(recent[r["id"]], price, export_price),
                    now - max(first, recent_from),
                    now,
                ),
            )
        )
    return out, rule if any(consumption.values()) else None


def daily_kwh(
    store: MonitoringStore, feeds: Sequence[Feed], start: int, now: int
) -> dict[int, float]:
    """kWh of `feeds` together per local day start in [start, now] (unix seconds)."""
    by_feed = store.buckets([f.id for f in feeds], DAY_S, start, now + 1)
    totals: dict[int, float] = defaultdict(float)
    for f in feeds:
        for day, kwh in energy_kwh(f.kind, by_feed[f.id]).items():
            totals[day] += kwh
    return totals


def community_export(
    store: MonitoringStore, community: Mapping[str, Any], first: date, last: date, resolution: str
) -> ExportTable:
    """The community's supply point feeds in kWh from local date `first` to `last` (included)
    at `resolution`; ExportRefused for a range the export does not take."""
    tz = zone(community["timezone"])
    span = export_range(first, last, resolution, tz)
    points = {p["id"]: p for p in supply_points_of(store, community["id"])}
    feeds = [f for f in (store.feeds(supply_points=points) if points else []) if f.kind != OTHER]
    by_feed = store.buckets([f.id for f in feeds], span.period, span.start, span.end)
    columns = [
        Column(f.id, f"{f.supply_point_id} {feed_role(f, points)} {f.node}/{f.name} kWh")
        for f in feeds
    ]
    energies = {f.id: energy_kwh(f.kind, by_feed[f.id]) for f in feeds}
    return export_table(columns, energies, row_times(span, tz), tz)


# ---------------------------------------------------------------- routes

Manager = Annotated[Viewer, Depends(require("manager", "operator"))]
CommunityChoice = Annotated[str | None, Query(max_length=64, alias="community")]


def manager_router(service: MonitorService) -> APIRouter:
    """/manager (the community at a glance), /manager/installations (production and
    amortisation), /manager/export.csv and /manager/export.xlsx."""
    router = APIRouter(route_class=PageRoute, include_in_schema=False)

    def chooser(who: Viewer) -> list[dict[str, Any]]:
        return service.store.communities() if who.role == "operator" else []

    @router.get("/manager", response_class=HTMLResponse)
    def overview(
        request: Request,
        who: Manager,
        asked: CommunityChoice = None,
        days: Annotated[int, Query(ge=1, le=MAX_GAP_DAYS)] = GAP_DAYS,
    ) -> Response:
        found = visible_community(service, who, asked)
        store, now = service.store, int(service.now())
        today = datetime.fromtimestamp(now, zone(found["timezone"])).date()
        context = {
            "shown": found,
            "communities": chooser(who),
            "members": members_of(store, found["id"]),
            "points": supply_points_of(store, found["id"]),
            "gaps": feed_gaps(store, found["id"], now, days),
            "days": days,
            "offline": offline_nodes(store, found["id"], now),
            "refusals": store.refusals(),
            "export_start": today.replace(day=1).isoformat(),
            "export_end": today.isoformat(),
            "resolutions": RESOLUTIONS,
        }
        return render(request, "manager.html", context)

    @router.get("/manager/installations", response_class=HTMLResponse)
    def installations(request: Request, who: Manager, asked: CommunityChoice = None) -> Response:
        found = visible_community(service, who, asked)
        figures, rule = installation_figures(service.store, found, int(service.now()))
        context = {
            "shown": found,
            "communities": chooser(who),
            "installations": figures,
            "rule": rule,
            "currency": found["currency"],
        }
        return render(request, "manager_installations.html", context)

    def exported(
        who: Viewer, asked: str | None, start: date, end: date, resolution: str
    ) -> tuple[dict[str, Any], ExportTable]:
        found = visible_community(service, who, asked)
        try:
            return found, community_export(service.store, found, start, end, resolution)
        except ExportRefused as refused:
            raise ApiError(400, refused.code, refused.message) from None

    @router.get("/manager/export.csv")
    def export_csv(
        who: Manager,
        start: date,
        end: date,
        resolution: Annotated[str, Query(max_length=10)] = "hour",
        asked: CommunityChoice = None,
    ) -> Response:
        found, table = exported(who, asked, start, end, resolution)
        return Response(
            write_csv(table),
            media_type="text/csv; charset=utf-8",
            headers=download(found["id"], start, end, resolution, "csv"),
        )

    @router.get("/manager/export.xlsx")
    def export_xlsx(
        who: Manager,
        start: date,
        end: date,
        resolution: Annotated[str, Query(max_length=10)] = "hour",
        asked: CommunityChoice = None,
    ) -> Response:
        found, table = exported(who, asked, start, end, resolution)
        return Response(
            write_xlsx(table),
            media_type=XLSX,
            headers=download(found["id"], start, end, resolution, "xlsx"),
        )

    return router


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def download(
    community_id: str, start: date, end: date, resolution: str, suffix: str
) -> dict[str, str]:
    """The headers of an export: a file name saying what it holds, and never cached."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in community_id)
    name = f"{safe}_{start}_{end}_{resolution}.{suffix}"
    return {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}
