"""The managers' pages and the control centre over the real session machinery
(`monitoring.auth`): data gaps, devices offline, amortisation checked by hand, exports, the
live stream, and the walls between communities and roles."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from openpyxl import load_workbook  # type: ignore[import-untyped]
from sqlalchemy import select

from monitoring.auth import SESSION_COOKIE, create_user, start_session
from monitoring.feeds import FeedDeclaration, declare_feed
from monitoring.manager_pages import Gap, Split, amortisation, data_gaps, value_micro
from monitoring.samples import Sample
from monitoring.service import MonitorService
from monitoring.sharing import (
    COMMUNITY_AS_ONE,
    STATIC_SHARES,
    Source,
    combine,
    master_data_coefficients,
)
from monitoring.store import (
    DAY_S,
    HOUR_S,
    MonitoringStore,
    installation,
    member,
    supply_point,
    user,
)
from service.http import DRAINING

NOW = int(datetime(2024, 6, 15, 14, 30, tzinfo=UTC).timestamp())  # 16:30 in Madrid
HOUR_NOW = NOW - NOW % HOUR_S
GAP = range(50, 54)  # hours before the current one in which the consumption meter was silent
PASSWORD = "correct horse battery"
DASH = "\N{EN DASH}"  # between the ends of a gap


def app_for(service: MonitorService) -> FastAPI:
    """The service's application: `create_app`'s once every router it includes exists, else
    the real login pages with the manager and control routers."""
    try:
        from monitoring.api import create_app
    except ImportError:
        from monitoring.control import control_router
        from monitoring.manager_pages import manager_router
        from monitoring.pages import pages_router
        from service.http import install_error_handlers

        app = FastAPI()
        install_error_handlers(app)
        app.include_router(pages_router(service))
        app.include_router(manager_router(service))
        app.include_router(control_router(service))
    else:
        app = create_app(service)
    app.state.monitor = service
    return app


def build_world(store: MonitoringStore) -> None:
    store.put_community("alpha", "Alpha", "Europe/Madrid")
    store.put_community("beta", "Beta", "Europe/Rome")
    with store.engine.begin() as conn:
        conn.execute(member.insert().values(id=1, community_id="alpha", ref="A1", name="Ana"))
        conn.execute(member.insert().values(id=2, community_id="beta", ref="B1", name="Bruno"))
        conn.execute(
            installation.insert().values(
                id="roof-a",
                community_id="alpha",
                name="School roof",
                peak_kw=20.0,
                cost_micro=18_000_000,
                commissioned="2024-06-01",
            )
        )
        for point, community_id, member_id, kind, inst in (
            ("ES0021000000000001AB", "alpha", 1, "consumption", None),
            ("ES0021000000000009GN", "alpha", None, "generation", "roof-a"),
            ("IT001E00000002", "beta", 2, "consumption", None),
        ):
            conn.execute(
                supply_point.insert().values(
                    id=point,
                    community_id=community_id,
                    member_id=member_id,
                    kind=kind,
                    installation_id=inst,
                    contracted_kw=4.6,
                )
            )
    for node, name, point, role in (
        ("meter-a", "import", "ES0021000000000001AB", "consumption"),
        ("inverter-a", "pv", "ES0021000000000009GN", "generation"),
        ("meter-b", "import", "IT001E00000002", "consumption"),
    ):
        declare_feed(store, FeedDeclaration(node, name, "energy", "kWh", point, role))
    store.set_node("inverter-a", silent_after_s=60)
    # Consumption: 1 kWh every hour of the last 7 days but the 4 hours of GAP.
    hours = [HOUR_NOW - k * HOUR_S for k in range(1, 7 * 24 + 1) if k not in GAP]
    store.write([Sample("meter-a", "import", t, 1.0) for t in hours], now=NOW)
    # Generation: 10 kWh in each of three hours today; the inverter then fell silent.
    gen = [int(datetime(2024, 6, 15, h, tzinfo=UTC).timestamp()) for h in (9, 10, 11)]
    store.write([Sample("inverter-a", "pv", t, 10.0) for t in gen], now=NOW - 3_600)
    store.write([Sample("meter-b", "import", HOUR_NOW - HOUR_S, 2.0)], now=NOW)


@pytest.fixture(name="world", scope="module")
def world_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The communities, their data and users, built once (Argon2 is slow on purpose)."""
    path = tmp_path_factory.mktemp("world") / "monitor.db"
    store = MonitoringStore(f"sqlite:///{path}")
    build_world(store)
    create_user(store, "ana-manager", PASSWORD, "manager", community_id="alpha")
    create_user(store, "bea-manager", PASSWORD, "manager", community_id="beta")
    create_user(store, "olga", PASSWORD, "operator")
    create_user(store, "ana", PASSWORD, "member", member_id=1)
    store.close()
    return path


@pytest.fixture(name="service")
def service_fixture(world: Path, tmp_path: Path) -> Iterator[MonitorService]:
    """A copy of the world of its own for each test."""
    path = tmp_path / "monitor.db"
    shutil.copyfile(world, path)
    store = MonitoringStore(f"sqlite:///{path}")
    yield MonitorService(store, clock=lambda: float(NOW))
    store.close()


def session_of(service: MonitorService, username: str) -> str:
    """A real session cookie token of `username`, as logging in would start it."""
    with service.store.engine.connect() as conn:
        found = conn.scalar(select(user.c.id).where(user.c.username == username))
    assert found is not None
    return start_session(service.store, int(found), NOW)


def client_as(service: MonitorService, app: FastAPI, username: str | None) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    if username is not None:
        client.cookies.set(SESSION_COOKIE, session_of(service, username))
    return client


@pytest.fixture(name="app")
def app_fixture(service: MonitorService) -> FastAPI:
    return app_for(service)


# ---------------------------------------------------------------- pure figures


def test_gaps_are_the_runs_of_hours_without_data() -> None:
    start = 1_000 * HOUR_S
    have = [start + k * HOUR_S for k in (0, 1, 4, 5, 9)]
    assert data_gaps(have, start, start + 10 * HOUR_S) == [
        Gap(start + 2 * HOUR_S, start + 4 * HOUR_S),
        Gap(start + 6 * HOUR_S, start + 9 * HOUR_S),
    ]
    assert data_gaps([], start, start + 3 * HOUR_S) == [Gap(start, start + 3 * HOUR_S)]
    assert data_gaps(have, start, start) == []


def test_production_splits_by_the_shares_or_by_the_whole_community() -> None:
    generation = np.array([10.0, 10.0])
    consumption = np.array([[4.0, 0.0], [10.0, 2.0]])  # sp1, sp2 in each of two hours
    shares, rule = master_data_coefficients(consumption, [0.5, None])
    assert rule == STATIC_SHARES
    # min(5, 4), min(5, 10) + min(0 x 10, 2)
    assert np.minimum(shares * generation[:, None], consumption).sum(axis=1).tolist() == [4, 5]
    as_one, rule = master_data_coefficients(consumption, [None, None])
    assert rule == COMMUNITY_AS_ONE
    # min(10, 4 + 0), min(10, 10 + 2): the community as one meter
    used = np.minimum(as_one * generation[:, None], consumption).sum(axis=1)
    assert used.tolist() == pytest.approx([4.0, 10.0])


def test_a_members_use_is_capped_across_installations_and_split_by_what_each_assigned() -> None:
    # One hour, one member consuming 4 kWh: installation a assigns 6, b assigns 2; the member
    # uses 4 of the 8 assigned, so a's part is 6/8 of 4 = 3 and b's 2/8 of 4 = 1.
    hours = np.array([0], dtype=np.int64)
    consumption = np.array([[4.0]])

    def source(name: str, kwh: float) -> Source:
        return Source(
            name,
            STATIC_SHARES,
            np.array([kwh]),
            np.ones((1, 1)),
            np.zeros(1, dtype=np.int64),
            np.array([[kwh]]),
            frozenset({"sp1"}),
        )

    shared = combine(hours, ["sp1"], consumption, [source("a", 6.0), source("b", 2.0)])
    assert shared.allocated.tolist() == [[4.0]]
    a, b = shared.sources
    assert shared.self_consumed(a).tolist() == [3.0]
    assert shared.self_consumed(b).tolist() == [1.0]


def test_amortisation_projects_the_rest_at_the_recent_pace() -> None:
    worth = value_micro(Split(Fraction(3), Fraction(27)), 150_000, 50_000)
    assert worth == 3 * 150_000 + 27 * 50_000
    plan = amortisation(18_000_000, 1_800_000, 1_800_000, 1_000, 5_000)
    assert plan.paid == Fraction(1, 10)
    assert plan.payback_at == 5_000 + 9_000  # nine times as long again
    assert amortisation(1_000, 2_000, 0, 1, 0).payback_at is None  # already paid back
    assert amortisation(None, 2_000, 0, 1, 0).paid is None
    assert amortisation(10_000, 0, 0, 1_000, 0).payback_at is None  # no pace to project


# ---------------------------------------------------------------- pages


def test_the_overview_lists_gaps_offline_devices_and_supply_points(
    service: MonitorService, app: FastAPI
) -> None:
    page = client_as(service, app, "ana-manager").get("/manager")
    assert page.status_code == 200, page.text
    html = page.text
    assert "ES0021000000000001AB" in html and "ES0021000000000009GN" in html
    assert "Ana" in html
    # The gap: hours 53..50 before the current hour (16:00 Madrid): 11:00 to 15:00 two days ago.
    assert f'<li class="gap">2024-06-13 11:00 {DASH} 2024-06-13 15:00 (4 h)</li>' in html
    # The inverter has its three hours of today and nothing else in 7 days.
    assert '<td class="missing-hours">165</td>' in html
    assert f"2024-06-15 14:00 {DASH} 2024-06-15 16:00 (2 h)" in html
    assert 'data-node="inverter-a"' in html and "has sent nothing for 3600 s" in html
    assert 'data-node="meter-a"' not in html.split('id="offline"')[1].split("</section>")[0]
    assert "IT001E00000002" not in html and "meter-b" not in html and "Bruno" not in html


def test_the_installations_page_shows_production_and_amortisation(
    service: MonitorService, app: FastAPI
) -> None:
    page = client_as(service, app, "ana-manager").get("/manager/installations")
    assert page.status_code == 200, page.text
    html = page.text
    assert "School roof" in html
    assert html.count("30.0 kWh") == 4  # today, this month, this year, since commissioning
    # Hour by hour, min(10, 1) of each generating hour is used: 3 kWh, 27 kWh surplus.
    assert "3.0 kWh" in html and "27.0 kWh" in html
    assert "1.80 EUR" in html and "18.00 EUR" in html and "10.0 %" in html
    assert "the smaller of the production and its whole consumption" in html
    # 1.80 EUR in the 14 days 22 h 30 min since commissioning: 16.20 EUR more takes 9 times
    # as long again, to the 14th of September 2024 (local).
    since = NOW - int(datetime(2024, 5, 31, 22, tzinfo=UTC).timestamp())
    due = datetime.fromtimestamp(NOW + 9 * since, UTC)
    assert due.date().isoformat() in html


def test_exports_hold_the_communitys_feeds_in_kwh(service: MonitorService, app: FastAPI) -> None:
    client = client_as(service, app, "ana-manager")
    got = client.get("/manager/export.csv?start=2024-06-15&end=2024-06-15&resolution=hour")
    assert got.status_code == 200, got.text
    assert got.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(got.text), delimiter=";"))
    assert rows[0][2:] == [
        "ES0021000000000001AB consumption meter-a/import kWh",
        "ES0021000000000009GN generation inverter-a/pv kWh",
    ]
    assert len(rows) == 1 + 24
    at_11 = next(r for r in rows if r[0] == "2024-06-15T11:00:00+02:00")
    assert at_11 == ["2024-06-15T11:00:00+02:00", "2024-06-15T09:00:00Z", "1.000000", "10.000000"]
    book = client.get("/manager/export.xlsx?start=2024-06-15&end=2024-06-15&resolution=day")
    assert book.status_code == 200
    sheet = load_workbook(io.BytesIO(book.content)).active
    cells = list(sheet.iter_rows(values_only=True))
    assert cells[1][0] == "2024-06-15T00:00:00+02:00"
    assert cells[1][2:] == (16.0, 30.0)  # 16 hours of 1 kWh by 16:00, and the three PV hours


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("start=2024-01-01&end=2025-01-01&resolution=hour", "range_too_long"),
        ("start=2024-06-02&end=2024-06-01&resolution=day", "bad_range"),
        ("start=2024-06-01&end=2024-06-01&resolution=minute", "bad_resolution"),
    ],
)
def test_exports_refuse_ranges_they_cannot_take(
    service: MonitorService, app: FastAPI, query: str, code: str
) -> None:
    got = client_as(service, app, "ana-manager").get(f"/manager/export.csv?{query}")
    assert got.status_code == 400
    assert f'data-code="{code}"' in got.text


MANAGER_URLS = [
    "/manager?community=alpha",
    "/manager/installations?community=alpha",
    "/manager/export.csv?start=2024-06-15&end=2024-06-15&community=alpha",
    "/manager/export.xlsx?start=2024-06-15&end=2024-06-15&community=alpha",
]


@pytest.mark.parametrize("url", MANAGER_URLS)
def test_a_manager_never_reaches_another_community(
    service: MonitorService, app: FastAPI, url: str
) -> None:
    got = client_as(service, app, "bea-manager").get(url)
    assert got.status_code == 404
    assert "ES0021000000000001AB" not in got.text and "Alpha" not in got.text


def test_a_managers_own_views_hold_nothing_of_another_community(
    service: MonitorService, app: FastAPI
) -> None:
    client = client_as(service, app, "bea-manager")
    texts = [
        client.get(url).text
        for url in (
            "/manager",
            "/manager/installations",
            "/manager/export.csv?start=2024-06-01&end=2024-06-15",
            "/control",
            "/control/alarms.json",
        )
    ]
    for text in texts:
        for alpha in ("meter-a", "inverter-a", "ES0021000000000001AB", "School roof"):
            assert alpha not in text


@pytest.mark.parametrize(
    "url", [*MANAGER_URLS, "/manager", "/control", "/control/alarms.json", "/control/stream"]
)
def test_members_are_refused_and_strangers_sent_to_log_in(
    service: MonitorService, app: FastAPI, url: str
) -> None:
    assert client_as(service, app, "ana").get(url).status_code == 403
    stranger = client_as(service, app, None).get(url)
    if url.startswith("/control/"):
        assert stranger.status_code == 401
        assert stranger.json()["error"]["code"] == "unauthorized"
    else:
        assert stranger.status_code == 303
        assert stranger.headers["location"].startswith("/login?next=")


def test_an_operator_chooses_any_community(service: MonitorService, app: FastAPI) -> None:
    client = client_as(service, app, "olga")
    beta = client.get("/manager?community=beta")
    assert beta.status_code == 200 and "IT001E00000002" in beta.text
    assert '<option value="alpha"' in beta.text
    assert client.get("/manager?community=gamma").status_code == 404


def test_alarms_json_names_the_silent_inverter(service: MonitorService, app: FastAPI) -> None:
    got = client_as(service, app, "ana-manager").get("/control/alarms.json")
    assert got.status_code == 200
    alarms = got.json()["alarms"]
    assert [(a["kind"], a["node"]) for a in alarms] == [("silent", "inverter-a")]
    assert alarms[0]["since"] == NOW - 3_600 + 60


def test_the_control_page_lists_the_communitys_devices(
    service: MonitorService, app: FastAPI
) -> None:
    page = client_as(service, app, "ana-manager").get("/control")
    assert page.status_code == 200
    assert 'data-node="meter-a"' in page.text and 'data-node="inverter-a"' in page.text
    assert "<script>" not in page.text  # the CSP forbids inline scripts
    js = client_as(service, app, None).get("/static/control.js")
    assert js.status_code == 200 and "EventSource" in js.text


# ---------------------------------------------------------------- the live stream


async def read_stream(
    app: FastAPI, cookie: str, act: Any, until: int
) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
    """Open /control/stream over ASGI, call `act()` once the snapshot came, collect events
    until `until` of them came, then begin stopping the service: the events, and whether the
    stream ended by itself."""
    stopping = asyncio.Event()
    events: list[tuple[str, dict[str, Any]]] = []
    got_enough = asyncio.Event()
    buffer = ""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/control/stream",
        "raw_path": b"/control/stream",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), (b"cookie", f"{SESSION_COOKIE}={cookie}".encode())],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
        "state": {},
        DRAINING: stopping,
    }
    disconnect = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal buffer
        if message["type"] == "http.response.start":
            assert message["status"] == 200
        elif message["type"] == "http.response.body":
            buffer += message.get("body", b"").decode()
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                if block.startswith(":"):
                    continue
                lines = dict(line.split(": ", 1) for line in block.split("\n"))
                events.append((lines["event"], json.loads(lines["data"])))
                if len(events) == 1:
                    await asyncio.to_thread(act)
                if len(events) >= until:
                    got_enough.set()

    served = asyncio.ensure_future(app(scope, receive, send))
    await asyncio.wait_for(got_enough.wait(), 10)
    stopping.set()
    try:
        await asyncio.wait_for(served, 5)
        ended = True
    except TimeoutError:
        disconnect.set()
        ended = False
    return events, ended


def test_the_stream_sends_a_snapshot_then_visible_writes_and_ends_when_stopping(
    service: MonitorService, app: FastAPI
) -> None:
    cookie = session_of(service, "ana-manager")

    def write_both() -> None:
        service.store.write([Sample("meter-b", "import", HOUR_NOW, 5.0)], now=NOW)
        service.store.write([Sample("meter-a", "import", HOUR_NOW, 7.5)], now=NOW)

    events, ended = asyncio.run(read_stream(app, cookie, write_both, until=2))
    assert ended, "the stream did not end when the service began to stop"
    kind, snapshot = events[0]
    assert kind == "snapshot"
    assert [n["name"] for n in snapshot["nodes"]] == ["inverter-a", "meter-a"]
    assert [a["node"] for a in snapshot["alarms"]] == ["inverter-a"]
    assert snapshot["nodes"][1]["timezone"] == "Europe/Madrid"
    feeds = [payload for kind, payload in events[1:] if kind == "feeds"]
    assert feeds, events
    assert [(f["node"], f["last_value"]) for f in feeds[0]["feeds"]] == [("meter-a", 7.5)]
    assert all(f["node"] != "meter-b" for e in feeds for f in e["feeds"])


def test_streams_beyond_the_limit_are_refused(service: MonitorService) -> None:
    from monitoring.control import ControlHub
    from service import ApiError

    async def open_three() -> str:
        hub = ControlHub(service.store, limit=2)
        hub.open("alpha")
        kept = hub.open(None)
        with pytest.raises(ApiError) as refused:
            hub.open("beta")
        hub.close(kept)
        hub.open("beta")  # a closed stream frees its place
        return refused.value.code

    assert asyncio.run(open_three()) == "busy"


def test_a_stream_that_falls_behind_is_owed_a_snapshot(service: MonitorService) -> None:
    from monitoring.control import QUEUE_EVENTS, ControlHub

    async def flood() -> tuple[bool, int]:
        hub = ControlHub(service.store)
        listener = hub.open("alpha")
        for k in range(QUEUE_EVENTS + 5):
            listener.deliver({"feeds": [{"id": k}]})
        return listener.behind, listener.queue.qsize()

    assert asyncio.run(flood()) == (True, 1)


def test_gap_days_are_bounded(service: MonitorService, app: FastAPI) -> None:
    client = client_as(service, app, "ana-manager")
    assert client.get(f"/manager?days={10 * DAY_S}").status_code == 400
    assert client.get("/manager?days=1").status_code == 200
