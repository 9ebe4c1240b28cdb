"""The sharing agreements in the managers' pages (DESIGN.md section 14): per installation the
agreement in force and every agreement; one agreement with its rules in words, its members'
coefficients, the coefficients over its period as a figure, what a revision changed for each
member, and its hourly coefficients as CSV.

The walls of the other manager pages: a manager sees their own community's agreements, an
operator any (`?community=`), a member is refused (403); another community's agreement
answers 404 exactly as one that does not exist.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse

from community import DYNAMIC, STATIC, VARIABLE, Problem, Rules, revision_changes
from monitoring.agreements import (
    Agreement,
    AgreementError,
    agreement_by_id,
    agreements_of,
    coefficients_of,
    in_force_on,
    installation_allocation,
    installation_hours,
)
from monitoring.auth import Viewer
from monitoring.exports import local_iso, local_midnight
from monitoring.manager_pages import CommunityChoice, Manager, visible_community
from monitoring.records import installations_of, supply_points_of
from monitoring.service import MonitorService
from monitoring.sharing import FloatArray, IntArray
from monitoring.store import DAY_S, HOUR_S, MonitoringStore, zone
from monitoring.templating import PageRoute, render
from service import ApiError

MILLION = 1_000_000  # stored coefficients are whole millionths
AGREEMENT_ID = re.compile(r"[0-9]{1,18}")  # what fits the store's integer ids
MAX_LINES = 20  # members drawn as lines for a static agreement (the table lists them all)
YEAR_S = 365 * DAY_S  # a revision is judged on the installation's last twelve months
WEEKS_52_S = 364 * DAY_S  # moving data by whole weeks keeps each hour's weekday
CSV_ROWS_PER_CHUNK = 500
NOT_FOUND = "there is no sharing agreement with this number in your community"


# ---------------------------------------------------------------- words


def period_words(agreement: Agreement) -> str:
    """An agreement's local days, its last one included, e.g. `2025-01-01 to 2025-12-31`."""
    if agreement.end_day is None:
        return f"from {agreement.first_day.isoformat()}, open-ended"
    last = agreement.end_day - timedelta(days=1)
    return f"{agreement.first_day.isoformat()} to {last.isoformat()}"


def percent(coefficient: float | None) -> str:
    """A coefficient as a percentage with two decimals, a dash when unknown."""
    return "—" if coefficient is None else f"{coefficient * 100:.2f} %"


def rules_in_words(rules: Rules, names: Mapping[str, str]) -> list[str]:
    """What the members agreed on, a sentence per rule set; `names` says who each supply
    point is."""

    def who(points: Sequence[str]) -> str:
        return ", ".join(names.get(point, point) for point in sorted(points))

    def each(shares: Mapping[str, float]) -> str:
        return "; ".join(f"{names.get(p, p)} {percent(b)}" for p, b in sorted(shares.items()))

    words = []
    if rules.floor > 0:
        words.append(f"Floor: every member gets at least {percent(rules.floor)} in every hour.")
    if rules.minimum:
        words.append(f"Minimums, in every hour: {each(rules.minimum)}.")
    if rules.maximum:
        words.append(f"Maximums, in every hour: {each(rules.maximum)}.")
    if rules.fixed:
        words.append(f"Fixed shares, the same in every hour: {each(rules.fixed)}.")
    if rules.poverty_reserve > 0:
        words.append(
            f"Energy-poverty reserve: at least {percent(rules.poverty_reserve)} together in "
            f"every hour for {who(sorted(rules.poverty))}."
        )
    return words or ["No rules: the coefficients were set freely."]


RULE_NAMES = {
    "floor": "floor",
    "minimum": "minimums",
    "maximum": "maximums",
    "fixed": "fixed shares",
    "poverty_reserve": "energy-poverty reserve",
}


def rules_summary(rules: Rules) -> str:
    """The rules that are set, by name, e.g. `floor, energy-poverty reserve`."""
    return ", ".join(RULE_NAMES.get(name, name) for name in rules.named()) or "none"


def objective_words(objective: str) -> str:
    return {"energy": "most energy used in the community", "money": "most money saved"}.get(
        objective, "set by hand"
    )


# ---------------------------------------------------------------- coefficients


def period_rows(agreement: Agreement, stored: IntArray, tz: ZoneInfo) -> IntArray:
    """A variable agreement's rows for the hours of its period: hour k reads row k, and a
    revision that ended it early leaves the rows past its end unused."""
    if agreement.end_day is None:
        return stored
    seconds = local_midnight(agreement.end_day, tz) - local_midnight(agreement.first_day, tz)
    return stored[: -(-seconds // HOUR_S)]


def a_year_after(day: date) -> date:
    """The same day a year later (1 March for 29 February)."""
    try:
        return day.replace(year=day.year + 1)
    except ValueError:
        return date(day.year + 1, 3, 1)


def static_hours(agreement: Agreement, tz: ZoneInfo) -> int:
    """The hours a static agreement's CSV lists: its period, or its first year when open."""
    first = agreement.first_day
    end = agreement.end_day or a_year_after(first)
    return -(-(local_midnight(end, tz) - local_midnight(first, tz)) // HOUR_S)


@dataclass(frozen=True, slots=True, eq=False)
class Coefficients:
    """An agreement's coefficients hour by hour (hours, members) with each hour's UTC start:
    a static agreement's one row (its first hour), a variable one's rows, a dynamic one's
    as its hours with data made them (ex post); `known` False when there are none yet."""

    hour_starts: IntArray
    rows: FloatArray

    @property
    def known(self) -> bool:
        return bool(self.rows.shape[0] > 0)


def coefficients(
    store: MonitoringStore, agreement: Agreement, tz: ZoneInfo, now: int
) -> Coefficients:
    """The agreement's coefficients (see Coefficients); a dynamic agreement's over the hours
    of its period before `now` in which its members consumed, the last year of them at most."""
    first = local_midnight(agreement.first_day, tz)
    members = len(agreement.supply_points)
    if agreement.kind != DYNAMIC:
        stored = coefficients_of(store, agreement.id)
        rows = stored if agreement.kind == STATIC else period_rows(agreement, stored, tz)
        starts = first + HOUR_S * np.arange(rows.shape[0], dtype=np.int64)
        return Coefficients(starts, rows / MILLION)
    end = now - now % HOUR_S
    if agreement.end_day is not None:
        end = min(end, local_midnight(agreement.end_day, tz))
    start = max(first - first % HOUR_S, end - YEAR_S)
    if end <= start:
        return Coefficients(np.zeros(0, dtype=np.int64), np.zeros((0, members)))
    shared = installation_allocation(store, agreement.installation_id, start, end)
    column = {point: j for j, point in enumerate(shared.hours.supply_points)}
    columns = [column[point] for point in agreement.supply_points]
    # an hour in which no member consumed has no coefficients but a convention's
    hours = (shared.agreement_ids == agreement.id) & (
        shared.hours.consumption[:, columns].sum(axis=1) > 0
    )
    return Coefficients(shared.hours.hour_starts[hours], shared.coefficients[hours][:, columns])


@dataclass(frozen=True, slots=True)
class MemberCoefficients:
    """A member of an agreement and the mean, least and greatest of their coefficient over
    its hours (None when none are known)."""

    supply_point: str
    member_name: str | None
    mean: float | None
    least: float | None
    most: float | None


def member_coefficients(
    agreement: Agreement, found: Coefficients, names: Mapping[str, str | None]
) -> list[MemberCoefficients]:
    if not found.known:
        return [
            MemberCoefficients(p, names.get(p), None, None, None) for p in agreement.supply_points
        ]
    means, least, most = found.rows.mean(axis=0), found.rows.min(axis=0), found.rows.max(axis=0)
    return [
        MemberCoefficients(p, names.get(p), float(means[j]), float(least[j]), float(most[j]))
        for j, p in enumerate(agreement.supply_points)
    ]


# ---------------------------------------------------------------- figures


def day_hour_heatmap(
    hour_starts: IntArray, coefficient: FloatArray, tz: ZoneInfo, title: str
) -> dict[str, Any]:
    """A plotly heatmap of one member's coefficient (%), local days down, hours of the day
    across; the repeated autumn hour shows its first occurrence, the skipped spring hour is
    empty."""
    days: dict[date, int] = {}
    z: list[list[float | None]] = []
    for t, b in zip(hour_starts.tolist(), coefficient.tolist(), strict=True):
        local = datetime.fromtimestamp(t, tz)
        row = days.setdefault(local.date(), len(days))
        if row == len(z):
            z.append([None] * 24)
        if z[row][local.hour] is None:
            z[row][local.hour] = round(b * 100, 2)
    return {
        "data": [
            {
                "type": "heatmap",
                "x": list(range(24)),
                "y": [d.isoformat() for d in days],
                "z": z,
                "zmin": 0,
                "colorscale": "YlGn",
                "colorbar": {"title": {"text": "%"}},
                "hovertemplate": "%{y} %{x}:00: %{z} %<extra></extra>",
            }
        ],
        "layout": {
            "title": {"text": title},
            "xaxis": {"title": {"text": "hour of the day"}, "dtick": 3},
            "yaxis": {"autorange": "reversed", "type": "category", "nticks": 13},
            "margin": {"t": 40, "r": 10},
            "height": 520,
        },
    }


def monthly_lines(
    agreement: Agreement, found: Coefficients, names: Mapping[str, str | None], tz: ZoneInfo
) -> dict[str, Any]:
    """A plotly figure of the members' mean coefficient (%) per month of the agreement's
    period (its first twelve months when open), a line each for the MAX_LINES largest."""
    first = agreement.first_day.replace(day=1)
    last = agreement.end_day or date(first.year + 1, first.month, 1)
    months = []
    month = first
    while month < last:
        months.append(month)
        month = month + timedelta(days=calendar.monthrange(month.year, month.month)[1])
    starts = np.array([local_midnight(m, tz) for m in months], dtype=np.int64)
    if found.rows.shape[0] == 1:  # static: the same row every hour
        means = np.repeat(found.rows, len(months), axis=0)
    else:
        index = np.searchsorted(starts, found.hour_starts, side="right") - 1
        inside = (index >= 0) & (index < len(months))
        sums = np.zeros((len(months), found.rows.shape[1]))
        np.add.at(sums, index[inside], found.rows[inside])
        counts = np.bincount(index[inside], minlength=len(months))[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / counts  # NaN for a month without hours
    largest = np.argsort(-np.nan_to_num(means).mean(axis=0), kind="stable")[:MAX_LINES]
    labels = [m.strftime("%Y-%m") for m in months]
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": names.get(agreement.supply_points[j]) or agreement.supply_points[j],
                "x": labels,
                "y": [None if np.isnan(v) else round(float(v) * 100, 3) for v in means[:, j]],
            }
            for j in largest
        ],
        "layout": {
            "yaxis": {"title": {"text": "coefficient %"}, "rangemode": "tozero"},
            "margin": {"t": 30, "r": 10},
            "legend": {"orientation": "h"},
        },
    }


# ---------------------------------------------------------------- revisions


def on_data_hours(
    agreement: Agreement, found: Coefficients, hour_starts: IntArray, consumption: FloatArray
) -> FloatArray:
    """The agreement's coefficients laid over other hours `hour_starts` (a year of data
    before it, say), (hours, members): static its row; dynamic pro rata to `consumption`
    (hours, members); variable the row of the same hour moved forward by whole 52-week
    steps into its period (weekdays kept), each member's mean where none falls inside."""
    if agreement.kind == STATIC:
        return np.broadcast_to(found.rows[0], (hour_starts.shape[0], found.rows.shape[1]))
    if agreement.kind == DYNAMIC:
        total = consumption.sum(axis=1, keepdims=True)
        members = consumption.shape[1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, consumption / np.where(total > 0, total, 1), 1 / members)
    first = int(found.hour_starts[0])
    steps = np.maximum(0, -(-(first - hour_starts) // WEEKS_52_S))
    row = (hour_starts + steps * WEEKS_52_S - first) // HOUR_S
    inside = row < found.rows.shape[0]
    out = np.broadcast_to(found.rows.mean(axis=0), (hour_starts.shape[0], found.rows.shape[1]))
    out = out.copy()
    out[inside] = found.rows[row[inside]]
    return out


@dataclass(frozen=True, slots=True)
class Change:
    """What a revision changed for one member: their mean coefficient before and after (None
    when not in that agreement or unknown), and what each agreement would have allocated
    them on the installation's last twelve months (kWh; None when there is no such data)."""

    supply_point: str
    member_name: str | None
    mean_before: float | None
    mean_after: float | None
    allocated_before_kwh: float | None
    allocated_after_kwh: float | None


def revision(
    store: MonitoringStore,
    agreement: Agreement,
    replaced: Agreement,
    tz: ZoneInfo,
    now: int,
    names: Mapping[str, str | None],
) -> tuple[list[Change], bool]:
    """Member by member, `agreement` against the one it replaced (`community.revision_changes`
    on the installation's data of the twelve months before `now`), and whether that data
    judged them; without generation in those months, only the mean coefficients."""
    after, before = coefficients(store, agreement, tz, now), coefficients(store, replaced, tz, now)
    end = now - now % HOUR_S
    leavers = [p for p in replaced.supply_points if p not in agreement.supply_points]
    try:
        hours = installation_hours(
            store,
            agreement.installation_id,
            end - YEAR_S,
            end,
            supply_points=[*agreement.supply_points, *leavers],
        )
    except AgreementError:  # a member's supply point is no longer a consumption point
        hours = None
    if hours is None or not np.any(hours.generation > 0):
        old = {m.supply_point: m.mean for m in member_coefficients(replaced, before, names)}
        new = {m.supply_point: m.mean for m in member_coefficients(agreement, after, names)}
        return [
            Change(p, names.get(p), old.get(p), new.get(p), None, None)
            for p in [*agreement.supply_points, *leavers]
        ], False
    column = {point: j for j, point in enumerate(hours.supply_points)}
    consumption = hours.consumption
    mine = consumption[:, [column[p] for p in agreement.supply_points]]
    theirs = consumption[:, [column[p] for p in replaced.supply_points]]
    changes = revision_changes(
        Problem(agreement.supply_points, hours.generation, mine),
        replaced.supply_points,
        on_data_hours(replaced, before, hours.hour_starts, theirs),
        on_data_hours(agreement, after, hours.hour_starts, mine),
    )
    return [
        Change(
            c.member,
            names.get(c.member),
            c.mean_before,
            c.mean_after,
            c.allocated_before_kwh,
            c.allocated_after_kwh,
        )
        for c in changes
    ], True


# ---------------------------------------------------------------- CSV


def coefficient_lines(agreement: Agreement, stored: IntArray, tz: ZoneInfo) -> Iterator[str]:
    """The CSV of an agreement's coefficients: a header `local_time;CUPS...`, then a row per
    hour of its period (a static agreement's one row repeated; an open one's first year),
    `;` between fields, six decimals, CRLF; in chunks of CSV_ROWS_PER_CHUNK rows."""
    first = local_midnight(agreement.first_day, tz)
    yield ";".join(("local_time", *agreement.supply_points)) + "\r\n"
    if agreement.kind == STATIC:
        rows, hours = stored, static_hours(agreement, tz)
    else:
        rows = period_rows(agreement, stored, tz)
        hours = rows.shape[0]
    for low in range(0, hours, CSV_ROWS_PER_CHUNK):
        high = min(hours, low + CSV_ROWS_PER_CHUNK)
        chunk = rows if rows.shape[0] == 1 else rows[low:high]
        texts = [
            ";".join(f"{v // MILLION}.{v % MILLION:06d}" for v in row) for row in chunk.tolist()
        ]
        yield "".join(
            f"{local_iso(first + k * HOUR_S, tz)};{texts[0 if len(texts) == 1 else k - low]}\r\n"
            for k in range(low, high)
        )


# ---------------------------------------------------------------- routes


def visible_agreement(
    service: MonitorService, who: Viewer, asked: str | None, agreement_id: str
) -> tuple[dict[str, Any], Agreement]:
    """The agreement numbered `agreement_id` and its community, when `who` may see it; 404,
    the same for one of another community as for none."""
    if not AGREEMENT_ID.fullmatch(agreement_id):
        raise ApiError(404, "not_found", NOT_FOUND)
    try:
        found = agreement_by_id(service.store, int(agreement_id))
    except AgreementError:
        raise ApiError(404, "not_found", NOT_FOUND) from None
    if who.role == "operator" and asked is None:
        asked = found.community_id
    community = visible_community(service, who, asked)
    if community["id"] != found.community_id:
        raise ApiError(404, "not_found", NOT_FOUND)
    return community, found


@dataclass(frozen=True, slots=True)
class InstallationAgreements:
    """An installation, the agreement in force today (None: the master data's shares), and
    all its agreements, newest first."""

    record: dict[str, Any]
    in_force: Agreement | None
    agreements: tuple[Agreement, ...]


def agreement_router(service: MonitorService) -> APIRouter:
    """/manager/agreements (per installation, its agreements), /manager/agreements/{id} (one
    agreement) and /manager/agreements/{id}/coefficients.csv."""
    router = APIRouter(route_class=PageRoute, include_in_schema=False)
    store = service.store

    def chooser(who: Viewer) -> list[dict[str, Any]]:
        return store.communities() if who.role == "operator" else []

    def names_of(community_id: str) -> dict[str, str | None]:
        return {p["id"]: p["member_name"] for p in supply_points_of(store, community_id)}

    @router.get("/manager/agreements", response_class=HTMLResponse)
    def agreements_page(request: Request, who: Manager, asked: CommunityChoice = None) -> Response:
        found = visible_community(service, who, asked)
        today = datetime.fromtimestamp(service.now(), zone(found["timezone"])).date()
        every = agreements_of(store, found["id"])
        installations = []
        for record in installations_of(store, found["id"]):
            own = tuple(a for a in every if a.installation_id == record["id"])
            installations.append(InstallationAgreements(record, in_force_on(own, today), own))
        context = {
            "shown": found,
            "communities": chooser(who),
            "installations": installations,
            "today": today,
            "period_words": period_words,
            "objective_words": objective_words,
            "rules_summary": rules_summary,
        }
        return render(request, "manager_agreements.html", context)

    @router.get("/manager/agreements/{agreement_id}", response_class=HTMLResponse)
    def agreement_page(
        request: Request,
        who: Manager,
        agreement_id: str,
        asked: CommunityChoice = None,
        point: Annotated[str | None, Query(max_length=32)] = None,
    ) -> Response:
        found, shown = visible_agreement(service, who, asked, agreement_id)
        tz, now = zone(found["timezone"]), int(service.now())
        names = names_of(found["id"])
        known = coefficients(store, shown, tz, now)
        chosen = point or shown.supply_points[0]
        if chosen not in shown.supply_points:
            raise ApiError(404, "not_found", "this agreement has no member with this supply point")
        who_is = names.get(chosen) or chosen
        if shown.kind == STATIC:
            figure: dict[str, Any] | None = monthly_lines(shown, known, names, tz)
        elif known.known:
            column = known.rows[:, shown.supply_points.index(chosen)]
            figure = day_hour_heatmap(
                known.hour_starts, column, tz, f"{who_is}: coefficient by day and hour (%)"
            )
        else:
            figure = None
        replaced = agreement_by_id(store, shown.replaces) if shown.replaces else None
        changes, judged = (
            revision(store, shown, replaced, tz, now, names) if replaced else ([], False)
        )
        context = {
            "shown": found,
            "communities": [],  # the agreement chose the community
            "agreement": shown,
            "installation": next(
                r for r in installations_of(store, found["id"]) if r["id"] == shown.installation_id
            ),
            "period": period_words(shown),
            "objective": objective_words(shown.objective),
            "rules": rules_in_words(
                shown.rules, {p: f"{n} ({p})" if n else p for p, n in names.items()}
            ),
            "members": member_coefficients(shown, known, names),
            "chosen": chosen,
            "figure": figure,
            "replaced": replaced,
            "revised_by": [
                a.id
                for a in agreements_of(store, found["id"], shown.installation_id)
                if a.replaces == shown.id
            ],
            "changes": changes,
            "judged": judged,
            "percent": percent,
            "static": STATIC,
            "variable": VARIABLE,
            "dynamic": DYNAMIC,
        }
        return render(request, "manager_agreement.html", context)

    @router.get("/manager/agreements/{agreement_id}/coefficients.csv")
    def coefficients_csv(
        who: Manager, agreement_id: str, asked: CommunityChoice = None
    ) -> Response:
        found, shown = visible_agreement(service, who, asked, agreement_id)
        if shown.kind == DYNAMIC:
            raise ApiError(
                404,
                "no_coefficients",
                "a dynamic agreement fixes no coefficients in advance: each hour's follow that "
                "hour's consumption (see the agreement's page)",
            )
        lines = coefficient_lines(shown, coefficients_of(store, shown.id), zone(found["timezone"]))
        name = f"agreement_{shown.id}_coefficients.csv"
        return StreamingResponse(
            lines,
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                "Cache-Control": "no-store",
            },
        )

    return router
