"""The pages of members and the public display, logging in and out, and the static files
every page loads (DESIGN.md section 13). Thin routes over `figures` (the arithmetic),
`sharing.community_allocation` (the community's generation shared hour by hour by the
agreements in force, else the master data's shares) and `auth` (who may see what); the
store is read here through its public tables.

A member sees only their own supply points: every query below names the viewer's member id,
and a supply point that is not theirs answers 404 whether or not it exists. The public
display shows community totals only: no names, no CUPS, no member count small enough to
point at someone.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from sqlalchemy import func, select

import community
from monitoring import figures
from monitoring.agreements import Agreement, agreement_by_id
from monitoring.auth import (
    SESSION_COOKIE,
    SESSION_S,
    AddressLimiter,
    LoginRefused,
    Viewer,
    check_csrf,
    end_session,
    log_in,
    require,
    same_origin,
    session_viewer,
    start_session,
    viewer,
)
from monitoring.figures import Allocation, Slot
from monitoring.records import installations_of
from monitoring.samples import POWER
from monitoring.service import MonitorService
from monitoring.sharing import (
    COMMUNITY_AS_ONE,
    STATIC_SHARES,
    CommunityAllocation,
    Source,
    community_allocation,
)
from monitoring.store import Feed, MonitoringStore, member, supply_point, zone
from monitoring.templating import PageRoute, render
from service import ApiError

LOGIN_CSRF_COOKIE = "petra_login_csrf"
STATIC = Path(__file__).parent / "static"
PLOTLY_JS = files("plotly") / "package_data" / "plotly.min.js"
LONG_CACHE = "public, max-age=31536000, immutable"  # the URL carries plotly's version
KIOSK_REFRESH_S = 60
MIN_MEMBERS_SHOWN = 10  # fewer members than this and their count is not shown publicly
LIVE_S = 900  # a power reading older than this is not "now"
View = Literal["day", "month", "year"]
PERIOD_WORDS = {"day": "this day", "month": "this month", "year": "this year"}

FIRST_YEAR, LAST_YEAR = 2000, 2199  # no sample is older (samples.EARLIEST_S)

HOME = {"member": "/member", "manager": "/manager", "operator": "/control"}


def safe_next(target: str | None) -> str:
    """`target` when it is a path on this site, else `/` (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


# ---------------------------------------------------------------- reading the store


def own_supply_points(store: MonitoringStore, who: Viewer) -> list[dict[str, Any]]:
    """The supply points of the viewer's member, by id."""
    if who.member_id is None:
        return []
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(supply_point)
            .where(
                supply_point.c.member_id == who.member_id,
                supply_point.c.community_id == who.community_id,
            )
            .order_by(supply_point.c.id)
        )
        return [dict(r._mapping) for r in rows]


def own_supply_point(store: MonitoringStore, who: Viewer, point_id: str) -> dict[str, Any]:
    """One of the viewer's supply points, or 404 (also for one that exists but is not theirs)."""
    for point in own_supply_points(store, who):
        if point["id"] == point_id:
            return point
    raise ApiError(404, "not_found", "you have no supply point with this id")


def role_feeds(
    store: MonitoringStore, community_id: str, kind: str, role: str, point_ids: list[str] | None
) -> list[Feed]:
    """The feeds of `role` of the community's supply points of `kind` (all, or `point_ids`)."""
    query = select(supply_point.c.id).where(
        supply_point.c.community_id == community_id, supply_point.c.kind == kind
    )
    if point_ids is not None:
        query = query.where(supply_point.c.id.in_(point_ids))
    with store.engine.connect() as conn:
        points: list[str] = list(conn.scalars(query))
    return [f for f in store.feeds(supply_points=points) if f.role == role]


# ---------------------------------------------------------------- the member's figures


@dataclass(frozen=True)
class Shown:
    """The stretch a member page shows: its slots, and the pages before and after."""

    view: View
    day: date
    slots: list[Slot]
    title: str
    before: date
    after: date


def period_of(view: View, day: date, tz: ZoneInfo) -> Shown:
    """The day, month or year holding `day`, in local time of `tz`."""
    if view == "day":
        return Shown(
            view,
            day,
            figures.day_hours(day, tz),
            day.isoformat(),
            day - timedelta(days=1),
            day + timedelta(days=1),
        )
    if view == "month":
        first = day.replace(day=1)
        return Shown(
            view,
            first,
            figures.month_days(day.year, day.month, tz),
            first.strftime("%B %Y"),
            (first - timedelta(days=1)).replace(day=1),
            (first + timedelta(days=32)).replace(day=1),
        )
    first = date(day.year, 1, 1)
    return Shown(
        view,
        first,
        figures.year_months(day.year, tz),
        str(day.year),
        date(day.year - 1, 1, 1),
        date(day.year + 1, 1, 1),
    )


def member_allocations(
    shared: CommunityAllocation, point_id: str, slots: Sequence[Slot]
) -> list[Allocation]:
    """One consumption point's consumption, share of generation and what it used of it, per
    slot (kWh); nothing for a point that is not a consumption point."""
    if point_id not in shared.supply_points:
        return [figures.NOTHING] * len(slots)
    j = shared.supply_points.index(point_id)
    columns = np.stack(
        [shared.consumption[:, j], shared.assigned[:, j], shared.allocated[:, j]], axis=1
    )
    return [
        Allocation(float(c), float(x), float(a))
        for c, x, a in figures.slot_totals(shared.hour_starts, columns, slots)
    ]


def percent(coefficient: float) -> str:
    """A coefficient as a percentage with at most two decimals, e.g. `12.5 %`."""
    return f"{round(coefficient * 100, 2):g} %"


def master_data_line(share: float | None) -> str:
    return (
        "no fixed share is set in the master data yet"
        if share is None
        else f"fixed share from the master data: {percent(share)}"
    )


def source_lines(
    source: Source,
    point: Mapping[str, Any],
    column: int,
    agreements: Mapping[int, Agreement],
    view: View,
) -> list[str]:
    """How `source` shared its generation with the point in column `column`, a sentence per
    agreement in force (in order), the master data's shares standing in between them."""
    if source.rule == STATIC_SHARES:
        return [master_data_line(point["share"])]
    if source.rule == COMMUNITY_AS_ONE:
        return ["no shares are set: pro rata to consumption, as if the community shared one meter"]
    ids, first = np.unique(source.agreement_ids, return_index=True)
    lines = []
    for agreement_id in (int(i) for i in ids[np.argsort(first)]):
        in_force = source.agreement_ids == agreement_id
        shown = agreements.get(agreement_id)
        if shown is None:  # the master data's share for this installation, as it stood in
            share = float(source.coefficients[in_force, column][0])
            unset = point["share"] is None and share == 0
            lines.append(master_data_line(None if unset else share))
        elif point["id"] not in shown.supply_points:
            lines.append(f"no share: not a member of agreement #{agreement_id}")
        elif shown.kind == community.STATIC:
            share = float(source.coefficients[in_force, column][0])
            lines.append(f"your share: {percent(share)} (static agreement #{agreement_id})")
        elif shown.kind == community.VARIABLE:
            mean = float(source.coefficients[in_force, column].mean())
            lines.append(
                f"variable hourly coefficients, mean {percent(mean)} {PERIOD_WORDS[view]} "
                f"(agreement #{agreement_id})"
            )
        else:
            lines.append(f"pro rata to consumption (dynamic agreement #{agreement_id})")
    return lines


def share_lines(
    shared: CommunityAllocation,
    point: Mapping[str, Any],
    names: Mapping[str, str],
    agreements: Mapping[int, Agreement],
    view: View,
) -> list[str]:
    """The member's share of the community's generation over the shown stretch, sentence by
    sentence, each installation's named when there are several: their own coefficients only,
    never another member's."""
    if point["id"] not in shared.supply_points or not shared.sources:
        return [master_data_line(point["share"])]
    column = shared.supply_points.index(point["id"])
    lines = []
    for source in shared.sources:
        if point["id"] not in source.members:
            continue
        named = f"{names.get(source.installation_id, 'other generation')}: "
        lines += [
            (named if len(shared.sources) > 1 else "") + line
            for line in source_lines(source, point, column, agreements, view)
        ]
    return lines or ["no share of the community's generation"]


def member_chart(slots: list[Slot], rows: list[Allocation]) -> dict[str, Any]:
    """The plotly figure of a member page: consumption beside their share of generation and
    what they used of it, per slot (kWh)."""
    labels = [s.label for s in slots]

    def bars(name: str, values: list[float], colour: str) -> dict[str, Any]:
        rounded = [round(v, 3) for v in values]
        return {"type": "bar", "name": name, "x": labels, "y": rounded, "marker": {"color": colour}}

    return {
        "data": [
            bars("Consumption", [r.consumption for r in rows], "#c0392b"),
            bars("Your share of generation", [r.assigned for r in rows], "#f1c40f"),
            bars("Used of your share", [r.allocated for r in rows], "#27ae60"),
        ],
        "layout": {
            "barmode": "group",
            "yaxis": {"title": {"text": "kWh"}},
            "margin": {"t": 30, "r": 10},
            "legend": {"orientation": "h"},
        },
    }


# ---------------------------------------------------------------- the public display


def public_totals(store: MonitoringStore, community_id: str, now: float) -> dict[str, Any]:
    """A community's results with nothing personal in them: generation now (W) and today,
    this month (kWh), self-consumption this month (kWh, and its share of generation) as the
    agreements in force allocated it (`sharing.community_allocation`), CO2 avoided
    this month (kg, by all the community's generation) and trees, savings this month
    (micro-units), today's generation by local hour (kWh)."""
    record = store.community(community_id)
    if record is None:
        raise ApiError(404, "not_found", "there is no community with this id")
    tz = zone(record["timezone"])
    today = datetime.fromtimestamp(now, tz).date()
    hours = figures.day_hours(today, tz)
    month = figures.month_days(today.year, today.month, tz)
    shared = community_allocation(store, record, month[0].start, month[-1].end)
    generation = shared.generation
    generated_month = float(figures.slot_totals(shared.hour_starts, generation, month).sum())
    used_month = float(
        figures.slot_totals(shared.hour_starts, shared.allocated.sum(axis=1), month).sum()
    )
    today_hours = [float(v) for v in figures.slot_totals(shared.hour_starts, generation, hours)]
    with store.engine.connect() as conn:
        members = conn.scalar(
            select(func.count(member.c.id)).where(member.c.community_id == community_id)
        )
    live = [
        f.last_value
        for f in role_feeds(store, community_id, "generation", "generation", None)
        if f.kind == POWER and f.last_time is not None and f.last_time > now - LIVE_S
    ]
    co2 = figures.co2_avoided_kg(generated_month, record["co2_g_per_kwh"])
    return {
        "community": record["name"],
        "timezone": record["timezone"],
        "currency": record["currency"],
        "generation_now_w": sum(v for v in live if v is not None) if live else None,
        "generation_today_kwh": sum(today_hours),
        "generation_month_kwh": generated_month,
        "self_consumed_month_kwh": used_month,
        "self_consumption_rate": used_month / generated_month if generated_month else None,
        "co2_avoided_month_kg": co2,
        "trees": figures.trees(co2),
        "savings_month_micro": figures.savings_micro(used_month, record["price_micro_per_kwh"]),
        "members": members if (members or 0) >= MIN_MEMBERS_SHOWN else None,
        "today": {"hours": [s.label for s in hours], "kwh": [round(v, 3) for v in today_hours]},
    }


def public_chart(totals: dict[str, Any]) -> dict[str, Any]:
    """Today's generation by local hour, as a plotly figure (kWh)."""
    today = totals["today"]
    return {
        "data": [
            {
                "type": "bar",
                "name": "Generation",
                "x": today["hours"],
                "y": today["kwh"],
                "marker": {"color": "#f39c12"},
            }
        ],
        "layout": {"yaxis": {"title": {"text": "kWh"}}, "margin": {"t": 30, "r": 10}},
    }


# ---------------------------------------------------------------- routes


def pages_router(service: MonitorService) -> APIRouter:
    """Logging in and out, the member pages, the public display and the static files."""
    router = APIRouter(route_class=PageRoute, include_in_schema=False)
    limiter = AddressLimiter()
    store = service.store

    @router.get("/static/petra.css")
    def petra_css() -> Response:
        return _static("petra.css", "text/css")

    @router.get("/static/charts.js")
    def charts_js() -> Response:
        return _static("charts.js", "text/javascript")

    @router.get("/static/plotly.min.js")
    def plotly_js() -> Response:
        return FileResponse(
            str(PLOTLY_JS),
            media_type="text/javascript",
            headers={"Cache-Control": LONG_CACHE, "X-Content-Type-Options": "nosniff"},
        )

    @router.get("/login")
    def login_form(request: Request, next: str = "/") -> Response:
        token = request.cookies.get(SESSION_COOKIE)
        if token and session_viewer(store, token, service.now()):
            return RedirectResponse(safe_next(next), status_code=303)
        return _login_page(request, safe_next(next), "", "")

    @router.post("/login")
    def login(
        request: Request,
        username: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=1_024)],
        csrf: Annotated[str, Form(max_length=100)] = "",
        next: Annotated[str, Form(max_length=2_000)] = "/",
    ) -> Response:
        expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not (csrf and expected and secrets.compare_digest(csrf, expected)):
            raise ApiError(403, "bad_csrf", "this form is out of date: reload the page")
        if not same_origin(request):
            raise ApiError(403, "bad_csrf", "this form came from another site")
        address = request.client.host if request.client else "unknown"
        now = service.now()
        wait = limiter.wait_s(address, now)
        if wait:
            raise ApiError(
                429,
                "too_many_attempts",
                f"too many login attempts from your address: try again in {wait} seconds",
                {"Retry-After": str(wait)},
            )
        try:
            user_id = log_in(store, username, password, now)
        except LoginRefused as refused:
            if refused.retry_after_s is not None:
                raise ApiError(
                    429, refused.code, refused.message, {"Retry-After": str(refused.retry_after_s)}
                ) from None
            return _login_page(request, safe_next(next), username, refused.message, 401)
        answer = RedirectResponse(safe_next(next), status_code=303)
        answer.set_cookie(
            SESSION_COOKIE,
            start_session(store, user_id, now),
            max_age=SESSION_S,
            path="/",
            secure=service.secure_cookies,
            httponly=True,
            samesite="strict",
        )
        answer.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return answer

    @router.post("/logout")
    def logout(
        request: Request,
        who: Annotated[Viewer, Depends(viewer)],
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        check_csrf(request, who, csrf)
        end_session(store, request.cookies.get(SESSION_COOKIE, ""))
        answer = RedirectResponse("/login", status_code=303)
        answer.delete_cookie(SESSION_COOKIE, path="/")
        return answer

    @router.get("/")
    def home(who: Annotated[Viewer, Depends(viewer)]) -> Response:
        return RedirectResponse(HOME[who.role], status_code=303)

    @router.get("/member")
    def member_home(
        request: Request, who: Annotated[Viewer, Depends(require("member"))]
    ) -> Response:
        return render(request, "member.html", {"points": own_supply_points(store, who)})

    @router.get("/member/supply/{point_id}")
    def member_supply(
        request: Request,
        point_id: str,
        who: Annotated[Viewer, Depends(require("member"))],
        view: View = "day",
        day: Annotated[str | None, Query(alias="date", max_length=10)] = None,
    ) -> Response:
        point = own_supply_point(store, who, point_id)
        record = store.community(point["community_id"])
        assert record is not None  # a supply point's community is a foreign key
        tz = zone(record["timezone"])
        shown = period_of(view, _day(day, service.now(), tz), tz)
        start, end = shown.slots[0].start, shown.slots[-1].end
        shared = community_allocation(store, record, start, end)
        rows = member_allocations(shared, point_id, shown.slots)
        in_force = {int(i) for s in shared.sources for i in np.unique(s.agreement_ids) if i}
        names = {r["id"]: r["name"] for r in installations_of(store, record["id"])}
        shares = share_lines(
            shared,
            point,
            names,
            {i: agreement_by_id(store, i) for i in sorted(in_force)},
            shown.view,
        )
        total = sum(rows, figures.NOTHING)
        co2 = figures.co2_avoided_kg(total.allocated, record["co2_g_per_kwh"])
        context = {
            "point": point,
            "shares": shares,
            "shown": shown,
            "rows": list(zip(shown.slots, rows, strict=True)),
            "total": total,
            "savings_micro": figures.savings_micro(total.allocated, record["price_micro_per_kwh"]),
            "co2_kg": co2,
            "trees": figures.trees(co2),
            "chart": member_chart(shown.slots, rows),
            "tree_kg": figures.TREE_KG_CO2_PER_YEAR,
            "community": record,
        }
        return render(request, "member_supply.html", context)

    @router.get("/public/{community_id}")
    def public(request: Request, community_id: str, kiosk: bool = False) -> Response:
        totals = public_totals(store, community_id, service.now())
        context = {
            "totals": totals,
            "chart": public_chart(totals),
            "kiosk": kiosk,
            "refresh_s": KIOSK_REFRESH_S,
            "community_id": community_id,
        }
        return render(request, "public.html", context, private=False)

    @router.get("/public/{community_id}/totals.json")
    def public_json(community_id: str) -> Response:
        try:
            totals = public_totals(store, community_id, service.now())
        except ApiError as exc:  # a JSON route answers the JSON error shape, not a page
            return JSONResponse(
                {"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status
            )
        return JSONResponse(totals, headers={"Cache-Control": "no-cache"})

    def _login_page(
        request: Request, target: str, username: str, message: str, status: int = 200
    ) -> Response:
        token = secrets.token_urlsafe(32)
        answer = render(
            request,
            "login.html",
            {"csrf": token, "next": target, "username": username, "message": message},
            status,
        )
        answer.set_cookie(
            LOGIN_CSRF_COOKIE,
            token,
            max_age=3_600,
            path="/login",
            secure=service.secure_cookies,
            httponly=True,
            samesite="strict",
        )
        return answer

    return router


def _static(name: str, media_type: str) -> Response:
    return Response(
        (STATIC / name).read_bytes(),
        media_type=media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


def _day(text: str | None, now: float, tz: ZoneInfo) -> date:
    if text is None:
        return datetime.fromtimestamp(now, tz).date()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ApiError(400, "bad_date", f"date {text!r} is not a day as YYYY-MM-DD") from None
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise ApiError(
            400, "bad_date", f"there is no data before {FIRST_YEAR} or after {LAST_YEAR}"
        )
    return day
