"""The managers' pages: one community at a glance (its members, supply points and feeds, data
gaps, devices offline, ingestion refusals), its installations' production and amortisation,
and its energy exported as CSV or Excel.

A manager sees exactly their own community; an operator sees any, choosing it with
`?community=`; a member is refused (403). Another community's address answers 404, as an
unknown one does, so a manager cannot even learn which communities exist.

The figures are pure functions (gaps, the master data's coefficients, the allocation of every
installation's production together, amortisation); `community_allocation` reads the store for
them, sharing each installation's production by its agreements in force
(`monitoring.agreements`) or else by the master data, and the member pages and the public
display use it too; the routes only read the store and render.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from fractions import Fraction
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse

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
from monitoring.figures import energy_kwh
from monitoring.records import (
    feed_role,
    installations_of,
    members_of,
    supply_points_of,
)
from monitoring.samples import OTHER
from monitoring.service import MonitorService
from monitoring.sharing import (
    community_allocation,
    energy_feeds,
    first_hour,
)
from monitoring.store import (
    DAY_S,
    HOUR_S,
    Feed,
    MonitoringStore,
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
    """An installation's figures, and the rule that shared its production (AGREEMENTS,
    STATIC_SHARES or COMMUNITY_AS_ONE) in the stretch they cover."""

    record: dict[str, Any]
    feeds: tuple[Feed, ...]
    production: Production
    split: Split
    amortisation: Amortisation
    rule: str


def commissioned_at(record: Mapping[str, Any], tz: ZoneInfo) -> int | None:
    """The local midnight of an installation's commissioning date, or None if unknown."""
    text = record.get("commissioned")
    if not text:
        return None
    return int(datetime.combine(date.fromisoformat(text), datetime.min.time(), tz).timestamp())


def installation_figures(
    store: MonitoringStore, community: Mapping[str, Any], now: int
) -> tuple[list[InstallationFigures], bool]:
    """Each installation's production and amortisation, its production split hour by hour
    into self-consumed and surplus by `community_allocation` since its commissioning (or its
    first data), and whether any consumption was measured (without, all production counts
    as surplus, valued at the export price)."""
    tz = zone(community["timezone"])
    records = installations_of(store, community["id"])
    generation_feeds = energy_feeds(store, community["id"]).generation
    starts = {r["id"]: commissioned_at(r, tz) for r in records}
    firsts = {r["id"]: first_hour(store, generation_feeds.get(r["id"], [])) for r in records}
    known = [max(firsts[k] or now, starts[k] or 0) for k in firsts]
    shared = community_allocation(store, community, min(known, default=now), now + 1)
    recent_from = now - RATE_WINDOW_S
    price, export_price = community["price_micro_per_kwh"], community["export_micro_per_kwh"]
    day, month, year = (local_start(now, tz, what) for what in ("day", "month", "year"))
    out = []
    for r in records:
        source = shared.source(r["id"])
        assert source is not None  # every installation is a source of the allocation
        used, produced = shared.self_consumed(source), source.generation
        since = shared.hour_starts >= (starts[r["id"]] or 0)
        recent = since & (shared.hour_starts >= recent_from)
        first = starts[r["id"]] or firsts[r["id"]] or now
        daily = daily_kwh(store, generation_feeds.get(r["id"], []), starts[r["id"]] or 0, now)
        production = Production(
            today=sum(v for t, v in daily.items() if t >= day),
            month=sum(v for t, v in daily.items() if t >= month),
            year=sum(v for t, v in daily.items() if t >= year),
            total=sum(daily.values()),
        )
        split, recent_split = (
            Split(
                Fraction(float(used[hours].sum())), Fraction(float((produced - used)[hours].sum()))
            )
            for hours in (since, recent)
        )
        out.append(
            InstallationFigures(
                r,
                tuple(generation_feeds.get(r["id"], [])),
                production,
                split,
                amortisation(
                    r["cost_micro"],
                    value_micro(split, price, export_price),
                    value_micro(recent_split, price, export_price),
                    now - max(first, recent_from),
                    now,
                ),
                source.rule,
            )
        )
    return out, bool(np.any(shared.consumption > 0))


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
        figures, measured = installation_figures(service.store, found, int(service.now()))
        context = {
            "shown": found,
            "communities": chooser(who),
            "installations": figures,
            "consumption_measured": measured,
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
