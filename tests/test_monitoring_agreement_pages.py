"""The sharing agreements in the monitoring pages, over a real store and the real session
machinery (FastAPI's TestClient): the managers' list and agreement pages with their walls
between communities and roles, the hourly coefficients as CSV, a member's share and figures
from the agreements in force (their own only), and the public totals and installations' split
switched from the master data's shares to the agreements.

`build_world` and `client_as` are shared with the browser test."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from sqlalchemy import select

from community import DYNAMIC, STATIC, VARIABLE, Rules
from monitoring.agreement_pages import (
    Coefficients,
    day_hour_heatmap,
    on_data_hours,
    period_words,
    rules_in_words,
)
from monitoring.agreements import Agreement, save_agreement
from monitoring.api import create_app
from monitoring.auth import SESSION_COOKIE, create_user, start_session
from monitoring.feeds import FeedDeclaration, declare_feed
from monitoring.figures import Slot, slot_totals
from monitoring.pages import percent
from monitoring.samples import Sample
from monitoring.service import MonitorService
from monitoring.sharing import STATIC_SHARES, Source, combine
from monitoring.store import HOUR_S, MonitoringStore, installation, member, supply_point, user

MADRID = ZoneInfo("Europe/Madrid")
NOW = int(datetime(2025, 6, 7, 20, tzinfo=MADRID).timestamp())
PASSWORD = "correct horse battery"
ANA, BEN, CAI = "ES0021000000000001AA", "ES0021000000000002BB", "ES0021000000000003CC"
PLANT = "ES0021000000000009GG"
LUNA_HOME, LUNA_PLANT = "ES0021000000000011LL", "ES0021000000000019LG"
MEMBERS = (ANA, BEN, CAI)
MASTER_SHARES = {ANA: 0.5, BEN: 0.3, CAI: 0.2}
USE_KWH = {ANA: 1.0, BEN: 0.5, CAI: 2.0}  # every hour
SUN_HOURS = range(10, 14)  # local hours in which the roof makes 4 kWh
DATA_DAYS = [date(2025, 6, d) for d in range(3, 8)]  # 3 to 7 June
STATIC_ROW = [500_000, 250_000, 250_000]
SUNNY_ROW, OTHER_ROW = [250_000, 250_000, 500_000], [600_000, 200_000, 200_000]
RULES = Rules(floor=0.1, poverty=frozenset({BEN}), poverty_reserve=0.2)


def midnight(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=MADRID).timestamp())


def variable_rows(days: int) -> NDArray[np.int64]:
    """A week's rows from local midnight: SUNNY_ROW in the sun hours, OTHER_ROW elsewhere."""
    return np.array(
        [SUNNY_ROW if hour % 24 in SUN_HOURS else OTHER_ROW for hour in range(days * 24)],
        dtype=np.int64,
    )


def build_world(store: MonitoringStore) -> dict[str, int]:
    """Community `sol` (Madrid): Ana, Ben and Cai on the roof `roof` (master shares 0.5, 0.3,
    0.2), each hour of 3-7 June 2025 using 1, 0.5 and 2 kWh, the roof making 4 kWh from 10:00
    to 14:00; agreement 1 static 50/25/25 % from 1 January to 4 June, agreement 2 variable
    from 5 to 11 June revising it (25/25/50 % in the sun hours, 60/20/20 % else). Community
    `luna` with one home and a dynamic agreement 3. Its users: ana (member), gestora
    (sol's manager), gestor_luna, olga (operator). Returns the agreement ids by name."""
    store.put_community("sol", "Comunidad Sol", "Europe/Madrid", price_micro_per_kwh=150_000)
    store.put_community("luna", "Comunidad Luna", "Europe/Madrid")
    with store.engine.begin() as conn:
        for member_id, community_id, name in (
            (1, "sol", "Ana Secreta"),
            (2, "sol", "Ben Oculto"),
            (3, "sol", "Cai Privado"),
            (4, "luna", "Lu Lunar"),
        ):
            conn.execute(
                member.insert().values(
                    id=member_id, community_id=community_id, ref=f"M{member_id}", name=name
                )
            )
        for installation_id, community_id, name in (
            ("roof", "sol", "School roof"),
            ("moon", "luna", "Moon roof"),
        ):
            conn.execute(
                installation.insert().values(
                    id=installation_id, community_id=community_id, name=name, peak_kw=10.0
                )
            )
        points: list[tuple[str, str, int | None, str, str, float | None]] = [
            (ANA, "sol", 1, "consumption", "roof", MASTER_SHARES[ANA]),
            (BEN, "sol", 2, "consumption", "roof", MASTER_SHARES[BEN]),
            (CAI, "sol", 3, "consumption", "roof", MASTER_SHARES[CAI]),
            (PLANT, "sol", None, "generation", "roof", None),
            (LUNA_HOME, "luna", 4, "consumption", "moon", None),
            (LUNA_PLANT, "luna", None, "generation", "moon", None),
        ]
        for point, community_id, owner, kind, installation_id, share in points:
            conn.execute(
                supply_point.insert().values(
                    id=point,
                    community_id=community_id,
                    member_id=owner,
                    kind=kind,
                    installation_id=installation_id,
                    share=share,
                    label=f"Casa {owner}" if owner else "Tejado",
                )
            )
    meters = {"ana": ANA, "ben": BEN, "cai": CAI}
    for node, point in meters.items():
        declare_feed(store, FeedDeclaration(node, "import", "energy", "kWh", point, "consumption"))
    declare_feed(store, FeedDeclaration("roof", "pv", "energy", "kWh", PLANT, "generation"))
    samples = []
    for day in DATA_DAYS:
        for t in range(midnight(day), midnight(day + timedelta(days=1)), HOUR_S):
            for node, point in meters.items():
                samples.append(Sample(node, "import", t, USE_KWH[point]))
            sunny = datetime.fromtimestamp(t, MADRID).hour in SUN_HOURS
            samples.append(Sample("roof", "pv", t, 4.0 if sunny else 0.0))
    store.write(samples, now=NOW)
    ids = {
        "static": save_agreement(
            store,
            installation_id="roof",
            kind=STATIC,
            first_day=date(2025, 1, 1),
            end_day=date(2025, 6, 5),
            supply_points=MEMBERS,
            millionths=np.array([STATIC_ROW], dtype=np.int64),
            now=NOW,
        ),
    }
    ids["variable"] = save_agreement(
        store,
        installation_id="roof",
        kind=VARIABLE,
        first_day=date(2025, 6, 5),
        end_day=date(2025, 6, 12),
        supply_points=MEMBERS,
        millionths=variable_rows(7),
        objective="energy",
        rules=RULES,
        replaces=ids["static"],
        now=NOW,
    )
    ids["dynamic"] = save_agreement(
        store,
        installation_id="moon",
        kind=DYNAMIC,
        first_day=date(2025, 1, 1),
        end_day=None,
        supply_points=(LUNA_HOME,),
        millionths=None,
        now=NOW,
    )
    create_user(store, "ana", PASSWORD, "member", member_id=1)
    create_user(store, "gestora", PASSWORD, "manager", community_id="sol")
    create_user(store, "gestor_luna", PASSWORD, "manager", community_id="luna")
    create_user(store, "olga", PASSWORD, "operator")
    return ids


@pytest.fixture(name="world", scope="module")
def world_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, dict[str, int]]]:
    """The world built once (Argon2 is slow on purpose), as a file."""
    path = tmp_path_factory.mktemp("agreements") / "monitor.sqlite"
    store = MonitoringStore(f"sqlite:///{path}")
    ids = build_world(store)
    store.close()
    yield path, ids


@pytest.fixture(name="ids")
def ids_fixture(world: tuple[Path, dict[str, int]]) -> dict[str, int]:
    return world[1]


@pytest.fixture(name="service")
def service_fixture(world: tuple[Path, dict[str, int]], tmp_path: Path) -> Iterator[MonitorService]:
    path = tmp_path / "monitor.sqlite"
    shutil.copyfile(world[0], path)
    store = MonitoringStore(f"sqlite:///{path}")
    yield MonitorService(store, clock=lambda: float(NOW))
    store.close()


def client_as(service: MonitorService, username: str | None) -> TestClient:
    """A client of the whole application with a real session of `username` (None: none)."""
    client = TestClient(create_app(service), follow_redirects=False)
    if username is not None:
        with service.store.engine.connect() as conn:
            found = conn.scalar(select(user.c.id).where(user.c.username == username))
        assert found is not None
        client.cookies.set(SESSION_COOKIE, start_session(service.store, int(found), NOW))
    return client


def chart(html: str, name: str) -> dict:  # type: ignore[type-arg]
    found = re.search(rf'<script type="application/json" data-chart="{name}">(.*?)</script>', html)
    assert found, html
    return json.loads(found.group(1))  # type: ignore[no-any-return]


# ---------------------------------------------------------------- the managers' pages


def test_the_list_shows_each_installations_agreements_newest_first(
    service: MonitorService, ids: dict[str, int]
) -> None:
    page = client_as(service, "gestora").get("/manager/agreements")
    assert page.status_code == 200, page.text
    html = page.text
    assert "School roof" in html and "Moon roof" not in html
    rows = re.findall(r'<tr data-agreement="(\d+)"', html)
    assert rows == [str(ids["variable"]), str(ids["static"])]
    assert f'In force today: <a href="/manager/agreements/{ids["variable"]}' in html
    assert "2025-01-01 to 2025-06-04" in html and "2025-06-05 to 2025-06-11" in html
    assert "<td>floor, energy-poverty reserve</td>" in html  # the variable one's rules
    assert "<td>none</td>" in html  # the static one's
    revises = html.split(f'<tr data-agreement="{ids["variable"]}"')[1].split("</tr>")[0]
    assert f">#{ids['static']}</a>" in revises
    assert 'href="/manager/agreements?community=sol">Sharing agreements</a>' in html


def test_the_agreement_page_has_its_rules_members_and_coefficients(
    service: MonitorService, ids: dict[str, int]
) -> None:
    client = client_as(service, "gestora")
    page = client.get(f"/manager/agreements/{ids['variable']}")
    assert page.status_code == 200, page.text
    html = page.text
    assert "2025-06-05 to 2025-06-11" in html and "most energy used in the community" in html
    assert "Floor: every member gets at least 10.00 % in every hour." in html
    assert f"at least 20.00 % together in every hour for Ben Oculto ({BEN})" in html
    # Ana's rows: 4 sun hours of 25 % and 20 hours of 60 % a day: mean 13/24 = 54.17 %.
    ana = html.split(f'<tr data-supply-point="{ANA}">')[1].split("</tr>")[0]
    assert "Ana Secreta" in ana
    assert '<td class="mean">54.17 %</td><td>25.00 %</td><td>60.00 %</td>' in ana
    heatmap = chart(html, "coefficients")["data"][0]
    assert heatmap["type"] == "heatmap"
    assert heatmap["y"] == [f"2025-06-{d:02d}" for d in range(5, 12)]
    assert heatmap["z"][0][10] == 25.0 and heatmap["z"][0][0] == 60.0  # Ana, the first member
    cai = chart(
        client.get(f"/manager/agreements/{ids['variable']}?point={CAI}").text, "coefficients"
    )
    assert cai["data"][0]["z"][3][12] == 50.0 and cai["data"][0]["z"][3][20] == 20.0
    assert f'href="/manager/agreements/{ids["variable"]}/coefficients.csv?community=sol"' in html
    unknown = client.get(f"/manager/agreements/{ids['variable']}?point=ES0000000000000000XX")
    assert unknown.status_code == 404


def test_a_revision_shows_what_changed_for_each_member_on_the_last_year(
    service: MonitorService, ids: dict[str, int]
) -> None:
    html = client_as(service, "gestora").get(f"/manager/agreements/{ids['variable']}").text
    revision = html.split('id="revision"')[1].split("</section>")[0]
    # 20 sun hours of 4 kWh in the data (3 to 7 June). Before (static 50/25/25 %), each sun
    # hour: Ana min(2, 1) = 1, Ben min(1, 0.5) = 0.5, Cai min(1, 2) = 1 -> 20, 10, 20 kWh.
    # After: on 5-7 June (12 sun hours) its own rows 25/25/50 %: 1, 0.5, 2; on 3-4 June (8
    # sun hours, before its period) each member's mean 13/24, 5/24, 6/24: min(2.17, 1) = 1,
    # min(0.83, 0.5) = 0.5, min(1, 2) = 1 -> Ana 20, Ben 10, Cai 8 + 24 = 32 kWh.
    expected = {ANA: ("20.0", "20.0"), BEN: ("10.0", "10.0"), CAI: ("20.0", "32.0")}
    for point, (before, after) in expected.items():
        row = revision.split(f'<tr data-supply-point="{point}">')[1].split("</tr>")[0]
        assert f'<td class="before">{before} kWh</td><td class="after">{after} kWh</td>' in row
    cai = revision.split(f'<tr data-supply-point="{CAI}">')[1].split("</tr>")[0]
    assert "<td>25.00 %</td><td>25.00 %</td>" in cai  # the two agreements' own means


def test_the_coefficients_download_has_a_row_per_hour(
    service: MonitorService, ids: dict[str, int]
) -> None:
    client = client_as(service, "gestora")
    got = client.get(f"/manager/agreements/{ids['variable']}/coefficients.csv")
    assert got.status_code == 200, got.text
    assert got.headers["content-type"].startswith("text/csv")
    assert "attachment" in got.headers["content-disposition"]
    assert got.text.count("\r\n") == 1 + 7 * 24
    rows = list(csv.reader(io.StringIO(got.text), delimiter=";"))
    assert rows[0] == ["local_time", ANA, BEN, CAI]
    assert len(rows) == 1 + 7 * 24  # a week-long variable agreement
    assert rows[1] == ["2025-06-05T00:00:00+02:00", "0.600000", "0.200000", "0.200000"]
    assert rows[11] == ["2025-06-05T10:00:00+02:00", "0.250000", "0.250000", "0.500000"]
    assert rows[-1][0] == "2025-06-11T23:00:00+02:00"
    static = client.get(f"/manager/agreements/{ids['static']}/coefficients.csv").text
    lines = static.split("\r\n")
    # 1 January to 4 June: 155 days, one of them (30 March) of 23 hours.
    assert len(lines) - 2 == 155 * 24 - 1 and lines[-1] == ""
    assert lines[1] == "2025-01-01T00:00:00+01:00;0.500000;0.250000;0.250000"


def test_a_dynamic_agreement_has_a_page_but_no_coefficients_to_download(
    service: MonitorService, ids: dict[str, int]
) -> None:
    client = client_as(service, "gestor_luna")
    page = client.get(f"/manager/agreements/{ids['dynamic']}")
    assert page.status_code == 200 and "pro rata to each hour" in page.text
    assert "No hour of this agreement has data yet." in page.text
    assert "coefficients.csv" not in page.text
    got = client.get(f"/manager/agreements/{ids['dynamic']}/coefficients.csv")
    assert got.status_code == 404 and 'data-code="no_coefficients"' in got.text


def test_a_dynamic_agreements_coefficients_are_those_its_hours_made(
    service: MonitorService, ids: dict[str, int]
) -> None:
    declare_feed(
        service.store,
        FeedDeclaration("lu", "import", "energy", "kWh", LUNA_HOME, "consumption"),
    )
    day = midnight(date(2025, 6, 6))
    service.store.write([Sample("lu", "import", day + k * HOUR_S, 0.3) for k in range(3)], NOW)
    page = client_as(service, "gestor_luna").get(f"/manager/agreements/{ids['dynamic']}")
    home = page.text.split(f'<tr data-supply-point="{LUNA_HOME}">')[1].split("</tr>")[0]
    assert '<td class="mean">100.00 %</td>' in home  # the only member: all of every hour
    heatmap = chart(page.text, "coefficients")["data"][0]
    assert heatmap["y"] == ["2025-06-06"] and heatmap["z"][0][:4] == [100.0, 100.0, 100.0, None]


def test_another_communitys_agreement_is_not_found_as_an_unknown_one_is(
    service: MonitorService, ids: dict[str, int]
) -> None:
    client = client_as(service, "gestor_luna")
    nobodys = client.get("/manager/agreements/999")
    assert nobodys.status_code == 404
    for url in (
        f"/manager/agreements/{ids['variable']}",
        f"/manager/agreements/{ids['variable']}?community=sol",
        f"/manager/agreements/{ids['static']}/coefficients.csv",
    ):
        answer = client.get(url)
        assert answer.status_code == 404, url
        for secret in ("School roof", ANA, "Ana Secreta"):
            assert secret not in answer.text
    assert client.get(f"/manager/agreements/{ids['variable']}").text == nobodys.text
    assert client.get("/manager/agreements?community=sol").status_code == 404
    for odd in ("abc", "99999999999999999999", "-1", "1.0"):
        assert client.get(f"/manager/agreements/{odd}").status_code == 404, odd
    json_404 = client.get("/manager/agreements/999", headers={"accept": "application/json"})
    assert json_404.status_code == 404


def test_an_operator_sees_every_communitys_agreements(
    service: MonitorService, ids: dict[str, int]
) -> None:
    client = client_as(service, "olga")
    assert "Moon roof" in client.get("/manager/agreements?community=luna").text
    assert client.get(f"/manager/agreements/{ids['dynamic']}").status_code == 200
    assert client.get(f"/manager/agreements/{ids['variable']}").status_code == 200
    mismatched = client.get(f"/manager/agreements/{ids['variable']}?community=luna")
    assert mismatched.status_code == 404
    assert client.get("/manager/agreements?community=nowhere").status_code == 404


@pytest.mark.parametrize(
    "url",
    ["/manager/agreements", "/manager/agreements/1", "/manager/agreements/1/coefficients.csv"],
)
def test_members_are_refused_and_strangers_sent_to_log_in(
    service: MonitorService, url: str
) -> None:
    refused = client_as(service, "ana").get(url)
    assert refused.status_code == 403 and "School roof" not in refused.text
    stranger = client_as(service, None).get(url)
    assert stranger.status_code == 303 and stranger.headers["location"].startswith("/login")


# ---------------------------------------------------------------- the member's share


def member_page(service: MonitorService, point: str, view: str, day: str) -> str:
    page = client_as(service, "ana").get(
        f"/member/supply/{point}", params={"view": view, "date": day}
    )
    assert page.status_code == 200, page.text
    return str(page.text)


def total(html: str, what: str) -> str:
    found = re.search(rf'id="total-{what}">([^<]+)<', html)
    assert found
    return found.group(1)


def test_a_members_figures_follow_the_static_agreement(
    service: MonitorService, ids: dict[str, int]
) -> None:
    html = member_page(service, ANA, "day", "2025-06-04")
    # 4 June, agreement 1: b = 0.5 of G = 4 kWh in each of 4 sun hours: assigned 2, used
    # min(0.5 x 4, 1) = 1 kWh an hour, 4 kWh of 8 (the master data's 0.5 would agree here).
    assert total(html, "consumption") == "24.0 kWh"
    assert total(html, "assigned") == "8.0 kWh"
    assert total(html, "allocated") == "4.0 kWh"
    assert f"<li>your share: 50 % (static agreement #{ids['static']})</li>" in html


def test_a_members_figures_follow_the_variable_agreement(
    service: MonitorService, ids: dict[str, int]
) -> None:
    with service.store.engine.begin() as conn:  # Ana sees Cai's point as her own
        conn.execute(supply_point.update().where(supply_point.c.id == CAI).values(member_id=1))
    html = member_page(service, CAI, "day", "2025-06-06")
    # 6 June, agreement 2: Cai's 50 % of 4 kWh in each sun hour, all used (2 kWh an hour).
    assert total(html, "assigned") == "8.0 kWh" and total(html, "allocated") == "8.0 kWh"
    # Her mean that day: 4 sun hours of 50 % and 20 hours of 20 %, 6/24 = 25 %.
    assert (
        f"variable hourly coefficients, mean 25 % this day (agreement #{ids['variable']})" in html
    )


def test_a_month_names_every_agreement_in_force_and_the_master_data_between(
    service: MonitorService, ids: dict[str, int]
) -> None:
    html = member_page(service, ANA, "month", "2025-06-01")
    shares = re.findall(r"<li>([^<]+)</li>", html.split('id="shares"')[1].split("</ul>")[0])
    assert shares == [
        f"your share: 50 % (static agreement #{ids['static']})",
        f"variable hourly coefficients, mean 54.17 % this month (agreement #{ids['variable']})",
        "fixed share from the master data: 50 %",
    ]
    # 3-4 June: 8 sun hours of 1 kWh; 5-7 June: 12 sun hours of min(1, 1) = 1 kWh.
    assert total(html, "allocated") == "20.0 kWh"
    for secret in (BEN, CAI, "Ben Oculto", "Cai Privado"):
        assert secret not in html


def test_without_an_agreement_the_master_data_share_stands(service: MonitorService) -> None:
    html = member_page(service, ANA, "day", "2024-06-04")
    assert "<li>fixed share from the master data: 50 %</li>" in html


# ---------------------------------------------------------------- totals


def test_the_public_totals_follow_the_agreements(service: MonitorService) -> None:
    totals = client_as(service, None).get("/public/sol/totals.json").json()
    assert totals["generation_month_kwh"] == pytest.approx(80.0)  # 20 sun hours of 4 kWh
    # 3-4 June, static 50/25/25 %: 1 + 0.5 + 1 = 2.5 kWh in each of 8 sun hours = 20;
    # 5-7 June, variable 25/25/50 %: 1 + 0.5 + 2 = 3.5 kWh in each of 12 = 42. The master
    # data's 50/30/20 % would have given 1 + 0.5 + 0.8 = 2.3 kWh x 20 = 46.
    assert totals["self_consumed_month_kwh"] == pytest.approx(62.0)
    assert totals["self_consumption_rate"] == pytest.approx(62 / 80)
    text = json.dumps(totals)
    for secret in (ANA, BEN, "Ana Secreta", "School roof"):
        assert secret not in text


def test_the_installations_split_follows_the_agreements(service: MonitorService) -> None:
    html = client_as(service, "gestora").get("/manager/installations").text
    section = html.split('data-installation="roof"')[1].split("</section>")[0]
    assert 'data-rule="agreements"' in section
    assert "<dt>Self-consumed</dt><dd>62.0 kWh</dd>" in section
    assert "<dt>Surplus</dt><dd>18.0 kWh</dd>" in section
    # 62 kWh at 0.15 EUR and 18 kWh at the default export price 0.05 EUR: 9.30 + 0.90.
    assert "10.20 EUR" in section


# ---------------------------------------------------------------- pure pieces


def agreement(kind: str, first: date, end: date | None) -> Agreement:
    return Agreement(1, "sol", "roof", kind, first, end, "", Rules(), MEMBERS, "", 0, None)


def test_periods_and_rules_read_as_words() -> None:
    assert period_words(agreement(STATIC, date(2025, 1, 1), None)) == (
        "from 2025-01-01, open-ended"
    )
    assert period_words(agreement(STATIC, date(2025, 1, 1), date(2026, 1, 1))) == (
        "2025-01-01 to 2025-12-31"
    )
    words = rules_in_words(
        Rules(minimum={ANA: 0.05}, maximum={CAI: 0.4}, fixed={BEN: 0.125}), {ANA: "Ana"}
    )
    assert words == [
        "Minimums, in every hour: Ana 5.00 %.",
        f"Maximums, in every hour: {CAI} 40.00 %.",
        f"Fixed shares, the same in every hour: {BEN} 12.50 %.",
    ]
    assert rules_in_words(Rules(), {}) == ["No rules: the coefficients were set freely."]
    assert percent(0.125) == "12.5 %" and percent(1 / 3) == "33.33 %"


def test_a_variable_agreement_is_laid_over_earlier_data_by_whole_weeks() -> None:
    first = midnight(date(2025, 6, 5))
    rows = np.arange(48 * 2, dtype=np.float64).reshape(48, 2) / 1000  # two days of rows
    found = Coefficients(first + HOUR_S * np.arange(48, dtype=np.int64), rows)
    week_52 = 364 * 24 * HOUR_S
    hours = np.array([first - week_52 + 5 * HOUR_S, first + 30 * HOUR_S, first - HOUR_S])
    laid = on_data_hours(agreement(VARIABLE, date(2025, 6, 5), None), found, hours, np.ones((3, 2)))
    assert laid[0].tolist() == rows[5].tolist()  # 52 weeks earlier, same weekday and hour
    assert laid[1].tolist() == rows[30].tolist()
    assert laid[2].tolist() == pytest.approx(rows.mean(axis=0).tolist())  # none falls inside


def test_the_heatmap_has_a_row_per_local_day_also_on_daylight_saving_days() -> None:
    first = midnight(date(2025, 10, 25))
    starts = first + HOUR_S * np.arange(24 + 25 + 24, dtype=np.int64)  # 25, 26 and 27 October
    figure = day_hour_heatmap(starts, np.full(starts.shape[0], 0.5), MADRID, "")
    z = figure["data"][0]["z"]
    assert figure["data"][0]["y"] == ["2025-10-25", "2025-10-26", "2025-10-27"]
    assert all(len(row) == 24 and None not in row for row in z)
    spring = midnight(date(2025, 3, 30))
    starts = spring + HOUR_S * np.arange(23, dtype=np.int64)
    z = day_hour_heatmap(starts, np.ones(23), MADRID, "")["data"][0]["z"]
    assert z[0][2] is None and z[0].count(None) == 1  # 02:00 does not exist that day


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 10), st.floats(0, 10), st.floats(0, 1), st.floats(0, 5), st.floats(0, 5)
        ),
        min_size=1,
        max_size=12,
    )
)
def test_what_members_use_of_several_installations_adds_up(
    hours: list[tuple[float, float, float, float, float]],
) -> None:
    """Two installations (generation g1, g2; shares b and 1 - b for the first member) and two
    members (consumption c1, c2): nobody uses more than they consume or were assigned, and
    each installation's self-consumed energy is at most its generation and adds up to all."""
    data = np.array(hours)
    g1, g2, b, c = data[:, 0], data[:, 1], data[:, 2], data[:, 3:5]
    coefficients = np.stack([b, 1 - b], axis=1)
    nobody = np.zeros(len(g1), dtype=np.int64)  # no agreement in force
    sources = [
        Source(name, STATIC_SHARES, g, coefficients, nobody, coefficients * g[:, None], set_of)
        for name, g in (("one", g1), ("two", g2))
        for set_of in [frozenset(MEMBERS[:2])]
    ]
    shared = combine(np.arange(len(g1), dtype=np.int64), MEMBERS[:2], c, sources)
    assert np.all(shared.allocated <= c + 1e-9)
    assert np.all(shared.allocated <= shared.assigned + 1e-9)
    used = [shared.self_consumed(s) for s in shared.sources]
    assert np.all(used[0] <= g1 + 1e-9) and np.all(used[1] <= g2 + 1e-9)
    assert np.allclose(used[0] + used[1], shared.allocated.sum(axis=1))


def test_slot_totals_leave_out_hours_in_no_slot() -> None:
    slots = [Slot(0, 2 * HOUR_S, "a"), Slot(3 * HOUR_S, 4 * HOUR_S, "b")]
    hours = HOUR_S * np.arange(5, dtype=np.int64)
    assert slot_totals(hours, np.arange(1.0, 6.0), slots).tolist() == [3.0, 4.0]
