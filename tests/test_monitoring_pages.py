"""The member pages and the public display over a real store, through FastAPI's TestClient:
a member sees their own supply points and no one else's by any URL, the figures on the page
are the hourly allocation's, the public display holds nothing personal, every HTML answer
carries the security headers, and errors are pages.

`seeded_service` and `signed_in` are shared with the auth and browser tests."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from monitoring.auth import create_user
from monitoring.pages import pages_router, safe_next
from monitoring.samples import POWER, Sample
from monitoring.service import MonitorService
from monitoring.store import MonitoringStore, member, supply_point
from service import install_error_handlers

MADRID = ZoneInfo("Europe/Madrid")
DAY = datetime(2024, 6, 10, tzinfo=MADRID)
NOW = (DAY + timedelta(hours=20)).timestamp()  # 20:00 on the seeded day
PASSWORD = "correct horse battery"
ANA_CUPS, BEN_CUPS, PLANT_CUPS = (
    "ES0021000000000001AA",
    "ES0021000000000002BB",
    "ES0021000000000009GG",
)
PERSONAL = ("Ana Secreta", "Ben Oculto", "ana@example.org", "ben@example.org", ANA_CUPS, BEN_CUPS)
SUN_HOURS = range(10, 14)  # local hours with 2 kW of generation


def seed(store: MonitoringStore, days: int = 1, step_s: int = 900) -> dict[str, int]:
    """Community `sol` (Madrid): Ana (share 0.6, 1 kW all day) and Ben (share 0.4, 0.5 kW),
    a plant making 2 kW from 10:00 to 14:00, `days` days from DAY in `step_s` samples; and a
    second community `luna`. Returns the member ids by name."""
    store.put_community("sol", "Comunidad Sol", "Europe/Madrid", price_micro_per_kwh=150_000)
    store.put_community("luna", "Comunidad Luna", "Europe/Madrid")
    ids: dict[str, int] = {}
    with store.engine.begin() as conn:
        for ref, name, email in (
            ("A1", "Ana Secreta", "ana@example.org"),
            ("B2", "Ben Oculto", "ben@example.org"),
        ):
            created = conn.execute(
                member.insert().values(community_id="sol", ref=ref, name=name, email=email)
            )
            ids[name.split()[0].lower()] = int(created.inserted_primary_key[0])  # type: ignore[index]
        conn.execute(
            supply_point.insert(),
            [
                {"id": ANA_CUPS, "community_id": "sol", "member_id": ids["ana"],
                 "kind": "consumption", "share": 0.6, "label": "Casa de Ana"},
                {"id": BEN_CUPS, "community_id": "sol", "member_id": ids["ben"],
                 "kind": "consumption", "share": 0.4, "label": "Piso de Ben"},
                {"id": PLANT_CUPS, "community_id": "sol", "member_id": None,
                 "kind": "generation", "share": None, "label": "Cubierta del colegio"},
            ],
        )  # fmt: skip
    start = int(DAY.timestamp())
    meters = {"ana_meter": (ANA_CUPS, "consumption"), "ben_meter": (BEN_CUPS, "consumption"),
              "plant": (PLANT_CUPS, "generation")}  # fmt: skip
    for node in meters:
        store.set_node(node, community_id="sol")
    samples = []
    for t in range(start, start + days * 86_400, step_s):
        hour = datetime.fromtimestamp(t, MADRID).hour
        samples.append(Sample("ana_meter", "power", t, 1000.0))
        samples.append(Sample("ben_meter", "power", t, 500.0))
        samples.append(Sample("plant", "power", t, 2000.0 if hour in SUN_HOURS else 0.0))
    store.write(samples, now=start + days * 86_400)
    for node, (point, role) in meters.items():
        found = store.feed_named(node, "power")
        assert found is not None
        store.set_feed(found.id, kind=POWER, unit="W", supply_point_id=point, role=role)
    return ids


def monitoring_app(service: MonitorService) -> FastAPI:
    """The pages over `service`, as create_app serves them."""
    app = FastAPI()
    install_error_handlers(app)
    app.state.monitor = service
    app.include_router(pages_router(service))
    return app


@pytest.fixture(name="seeded_file", scope="module")
def seeded_file_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded store with its users, built once per module (Argon2 is slow on purpose)."""
    path = tmp_path_factory.mktemp("seeded") / "monitor.sqlite"
    store = MonitoringStore(f"sqlite:///{path}")
    ids = seed(store)
    create_user(store, "ana", PASSWORD, "member", member_id=ids["ana"])
    create_user(store, "ben", PASSWORD, "member", member_id=ids["ben"])
    create_user(store, "gestora", PASSWORD, "manager", community_id="sol")
    create_user(store, "gestor_luna", PASSWORD, "manager", community_id="luna")
    store.close()
    return path


@pytest.fixture(name="service")
def seeded_service(seeded_file: Path, tmp_path: Path) -> Iterator[MonitorService]:
    """A fresh copy of the seeded store, its clock at NOW."""
    path = tmp_path / "monitor.sqlite"
    shutil.copyfile(seeded_file, path)
    store = MonitoringStore(f"sqlite:///{path}")
    yield MonitorService(store, clock=lambda: NOW)
    store.close()


@pytest.fixture(name="client")
def client_fixture(service: MonitorService) -> Iterator[TestClient]:
    with TestClient(monitoring_app(service), follow_redirects=False) as client:
        yield client


def login_csrf(client: TestClient) -> str:
    page = client.get("/login")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


def signed_in(client: TestClient, username: str, password: str = PASSWORD) -> TestClient:
    answer = client.post(
        "/login",
        data={"username": username, "password": password, "csrf": login_csrf(client), "next": "/"},
    )
    assert answer.status_code == 303, answer.text
    return client


def page_csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found
    return found.group(1)


# ---------------------------------------------------------------- member pages


def test_a_member_lists_only_their_own_supply_points(client: TestClient) -> None:
    signed_in(client, "ana")
    home = client.get("/")
    assert home.status_code == 303 and home.headers["location"] == "/member"
    page = client.get("/member")
    assert page.status_code == 200
    assert ANA_CUPS in page.text and "Casa de Ana" in page.text
    assert BEN_CUPS not in page.text and "Piso de Ben" not in page.text
    assert PLANT_CUPS not in page.text


def test_the_day_page_shows_the_hourly_allocation(client: TestClient) -> None:
    signed_in(client, "ana")
    page = client.get(f"/member/supply/{ANA_CUPS}", params={"view": "day", "date": "2024-06-10"})
    assert page.status_code == 200, page.text
    # Ana: 24 kWh consumed; her share 0.6 x 2 kWh in 4 sun hours = 4.8 kWh; she used
    # min(1.2, 1) = 1 kWh of it in each of those hours: 4 kWh, 0.60 EUR at 0.15 EUR/kWh.
    assert re.search(r'id="total-consumption">24\.0 kWh<', page.text)
    assert re.search(r'id="total-assigned">4\.8 kWh<', page.text)
    assert re.search(r'id="total-allocated">4\.0 kWh<', page.text)
    assert re.search(r'id="savings">0\.60 EUR<', page.text)
    assert re.search(r'id="co2">1\.0 kg<', page.text)  # 4 kWh x 250 g
    assert page.text.count('<th scope="row">') == 24
    assert '<script type="application/json" data-chart="chart">' in page.text
    assert "<script>" not in page.text  # no inline script: the CSP would refuse it


def test_month_and_year_pages_sum_hourly_allocations(client: TestClient) -> None:
    signed_in(client, "ana")
    for view, rows in (("month", 30), ("year", 12)):
        page = client.get(f"/member/supply/{ANA_CUPS}", params={"view": view, "date": "2024-06-10"})
        assert page.status_code == 200, page.text
        assert page.text.count('<th scope="row">') == rows
        assert re.search(r'id="total-allocated">4\.0 kWh<', page.text)  # not min(4.8, 24)


def test_a_daylight_saving_day_has_23_or_25_rows(service: MonitorService) -> None:
    with TestClient(monitoring_app(service), follow_redirects=False) as client:
        signed_in(client, "ana")
        for day, rows in (("2024-03-31", 23), ("2024-10-27", 25)):
            page = client.get(f"/member/supply/{ANA_CUPS}", params={"date": day})
            assert page.text.count('<th scope="row">') == rows, day
        autumn = client.get(f"/member/supply/{ANA_CUPS}", params={"date": "2024-10-27"}).text
        assert "02:00 +02" in autumn and "02:00 +01" in autumn


@pytest.mark.parametrize(
    "url",
    [
        f"/member/supply/{BEN_CUPS}",
        f"/member/supply/{BEN_CUPS}?view=year&date=2024-01-01",
        f"/member/supply/{PLANT_CUPS}",
        "/member/supply/ES0000000000000000XX",
        f"/member/supply/{BEN_CUPS.lower()}",
        f"/member/supply/{ANA_CUPS}%00",
        f"/member/supply/{BEN_CUPS}?member_id=2",
    ],
)
def test_another_members_supply_point_is_not_found(client: TestClient, url: str) -> None:
    signed_in(client, "ana")
    answer = client.get(url)
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert "Piso de Ben" not in answer.text and "Ben Oculto" not in answer.text


def test_the_not_found_page_is_the_same_whether_the_point_exists_or_not(
    client: TestClient,
) -> None:
    signed_in(client, "ana")
    someone_elses = client.get(f"/member/supply/{BEN_CUPS}").text
    nobodys = client.get("/member/supply/ES0000000000000000XX").text
    assert someone_elses == nobodys


@pytest.mark.parametrize("username", ["gestora", "gestor_luna"])
def test_managers_do_not_open_member_pages(client: TestClient, username: str) -> None:
    signed_in(client, username)
    assert client.get("/member").status_code == 403
    answer = client.get(f"/member/supply/{ANA_CUPS}")
    assert answer.status_code == 403
    assert "Casa de Ana" not in answer.text


def test_pages_without_a_session_redirect_to_the_login(client: TestClient) -> None:
    answer = client.get(f"/member/supply/{ANA_CUPS}?view=month")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=%2Fmember%2Fsupply%2F" + ANA_CUPS + (
        "%3Fview%3Dmonth"
    )


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"view": "week"}, "bad_request"),
        ({"date": "2024-02-30"}, "bad_date"),
        ({"date": "0001-01-01", "view": "year"}, "bad_date"),
        ({"date": "9999-12-31"}, "bad_date"),
        ({"date": "<script>"}, "bad_date"),
        ({"date": "2024-06-10-and-more"}, "bad_request"),
    ],
)
def test_a_bad_parameter_is_a_page_not_a_traceback(
    client: TestClient, params: dict[str, str], code: str
) -> None:
    signed_in(client, "ana")
    answer = client.get(f"/member/supply/{ANA_CUPS}", params=params)
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/html")
    assert f'data-code="{code}"' in answer.text
    assert "<script>" not in answer.text and "Traceback" not in answer.text


def test_a_year_of_quarter_hours_adds_up_on_the_year_page(tmp_path: Path) -> None:
    """The year page from a year of 15-minute data (its speed is `petra bench monitor`'s)."""
    store = MonitoringStore(f"sqlite:///{tmp_path / 'year.sqlite'}")
    ids = seed(store, days=366)
    create_user(store, "ana", PASSWORD, "member", member_id=ids["ana"])
    service = MonitorService(store, clock=lambda: NOW)
    with TestClient(monitoring_app(service), follow_redirects=False) as client:
        signed_in(client, "ana")
        page = client.get(
            f"/member/supply/{ANA_CUPS}", params={"view": "year", "date": "2024-06-10"}
        )
    store.close()
    assert page.status_code == 200
    # 4 kWh a day from 10 June to 31 December 2024: 205 days.
    assert re.search(r'id="total-allocated">820\.0 kWh<', page.text)


# ---------------------------------------------------------------- the public display


def test_the_public_display_has_community_totals_and_nothing_personal(client: TestClient) -> None:
    page = client.get("/public/sol")
    data = client.get("/public/sol/totals.json")
    assert page.status_code == 200 and data.status_code == 200
    for text in (page.text, data.text):
        for personal in (*PERSONAL, PLANT_CUPS, "Casa de Ana", "Piso de Ben"):
            assert personal not in text
    totals = data.json()
    assert totals["generation_today_kwh"] == pytest.approx(8.0)
    # Hourly: Ana uses 1 of her 1.2 kWh, Ben 0.5 of his 0.8: 1.5 of 2 kWh in each sun hour.
    assert totals["self_consumed_month_kwh"] == pytest.approx(6.0)
    assert totals["self_consumption_rate"] == pytest.approx(0.75)
    assert totals["members"] is None  # two members: too few to show their count
    assert totals["generation_now_w"] == 0.0  # the plant's last reading: night, 0 W
    assert "Comunidad Sol" in page.text
    assert page.headers["x-frame-options"] == "DENY"


def test_the_kiosk_refreshes_without_a_nav(client: TestClient) -> None:
    signed_in(client, "ana")
    page = client.get("/public/sol", params={"kiosk": "1"})
    assert '<meta http-equiv="refresh"' in page.text
    assert 'class="kiosk"' in page.text
    assert "<nav" not in page.text and "Log out" not in page.text


def test_an_unknown_community_is_not_found_as_page_and_as_json(client: TestClient) -> None:
    page = client.get("/public/nowhere")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    data = client.get("/public/nowhere/totals.json")
    assert data.status_code == 404 and data.json()["error"]["code"] == "not_found"


# ---------------------------------------------------------------- headers and static files


def test_every_html_answer_carries_the_security_headers(client: TestClient) -> None:
    pages = [client.get("/login"), client.get("/public/sol"), client.get("/public/nowhere")]
    signed_in(client, "ana")
    pages += [client.get("/member"), client.get(f"/member/supply/{BEN_CUPS}")]
    for answer in pages:
        headers = answer.headers
        csp = headers["content-security-policy"]
        assert csp.startswith(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
        )
        assert "script-src" not in csp  # scripts fall back to 'self': no inline script runs
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "same-origin"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] in ("no-store", "no-cache")
    assert pages[3].headers["cache-control"] == "no-store"


def test_static_files_are_served_from_the_machine(client: TestClient) -> None:
    plotly = client.get("/static/plotly.min.js")
    assert plotly.status_code == 200 and b"plotly" in plotly.content[:2000].lower()
    assert "max-age=31536000" in plotly.headers["cache-control"]
    assert client.get("/static/charts.js").text.count("Plotly.newPlot") == 1
    assert client.get("/static/petra.css").headers["content-type"].startswith("text/css")
    signed_in(client, "ana")
    page = client.get(f"/member/supply/{ANA_CUPS}").text
    assert re.findall(r'src="([^"]+)"', page) == [
        "/static/charts.js",
        re.search(r'"(/static/plotly\.min\.js\?v=[^"]+)"', page).group(1),  # type: ignore[union-attr]
    ]


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/member", "/member"),
        ("/member/supply/X?view=day", "/member/supply/X?view=day"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_the_login_returns_only_to_this_site(target: str | None, safe: str) -> None:
    assert safe_next(target) == safe


def test_a_mistyped_address_is_a_page_for_people_and_json_for_programs(tmp_path: Path) -> None:
    from monitoring.api import create_app

    store = MonitoringStore(f"sqlite:///{tmp_path / 'm.sqlite'}")
    try:
        http = TestClient(create_app(MonitorService(store)))
        page = http.get("/membr", headers={"accept": "text/html,application/xhtml+xml"})
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
        assert "no such page" in page.text and "Traceback" not in page.text
        for path, accept in (("/membr", "*/*"), ("/feed/nothing.json", "text/html")):
            answer = http.get(path, headers={"accept": accept})
            assert answer.status_code == 404
            assert answer.json()["error"]["code"] == "not_found"
    finally:
        store.close()
