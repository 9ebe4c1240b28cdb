"""The Datadis client against a local Datadis that enforces the real one's limits
(tests/services/datadis_fake.py), served over HTTP on loopback: login, supplies, contract,
hourly and quarter-hourly curves into a real store, and never a query asked twice in 24 h."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from services.datadis_fake import (
    API,
    HOME,
    PASSWORD,
    QUARTERS,
    USER,
    DatadisFake,
    FakeClock,
    estimated_at,
    value_at,
)

from monitoring.datadis import (
    QUERY_PAUSE_S,
    DatadisClient,
    DatadisError,
    DatadisLimited,
    fetch_into_store,
)
from monitoring.samples import ENERGY
from monitoring.store import DAY_S, MonitoringStore, supply_point
from simulation.processes import free_port

from .monitoring_harness import served

NOW = datetime(2024, 11, 15, 12, tzinfo=UTC).timestamp()
CONSUMPTION = "get-consumption-data-v2"


def utc(year: int, month: int, day: int, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp())


@pytest.fixture
def fake() -> DatadisFake:
    return DatadisFake(FakeClock(NOW))


@pytest.fixture
def url(fake: DatadisFake) -> Iterator[str]:
    with served(fake.app(), "the Datadis fake") as base:
        yield base


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MonitoringStore]:
    opened = MonitoringStore(f"sqlite:///{tmp_path / 'monitoring.db'}")
    opened.put_community("solar", "Comunidad Solar", "Europe/Madrid")
    with opened.engine.begin() as conn:
        conn.execute(
            supply_point.insert().values(id=HOME, community_id="solar", kind="consumption")
        )
    yield opened
    opened.close()


def client_of(url: str, fake: DatadisFake, cache: Path, password: str = PASSWORD) -> DatadisClient:
    return DatadisClient(url, USER, password, cache_dir=cache, clock=fake.clock)


def test_login_supplies_and_contract(url: str, fake: DatadisFake, tmp_path: Path) -> None:
    with client_of(url, fake, tmp_path / "cache") as client:
        supplies = client.supplies()
        contract = client.contract_detail(HOME, "8")
    assert [(s.cups, s.distributor_code, s.point_type) for s in supplies] == [
        (HOME, "8", 5),
        (QUARTERS, "2", 2),
    ]
    assert contract.cups == HOME and contract.contracted_power_kw == (4.6, 4.6)
    assert contract.partition_coefficient == 0.25
    assert fake.logins() == 1  # the token is reused


def test_a_wrong_password_is_refused_and_never_logged(
    url: str, fake: DatadisFake, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with (
        client_of(url, fake, tmp_path / "cache", "not the password") as client,
        pytest.raises(DatadisError) as refused,
    ):
        client.supplies()
    assert refused.value.reason == "login_refused"
    assert "not the password" not in caplog.text and PASSWORD not in caplog.text
    assert "not the password" not in repr(client)


def test_hourly_curves_with_both_daylight_saving_days_into_the_store(
    url: str, fake: DatadisFake, tmp_path: Path, store: MonitoringStore
) -> None:
    with client_of(url, fake, tmp_path / "cache") as client:
        summary = fetch_into_store(client, store, [HOME], "2024/03", "2024/03")
        october = fetch_into_store(client, store, [HOME], "2024/10", "2024/10")
    hours = 31 * 24 - 1 + 31 * 24 + 1  # March loses an hour, October gains one
    assert summary.refused == october.refused == 0
    assert summary.stored + october.stored == 4 * hours  # consumption, surplus, generation, self
    feed = store.feed_named(HOME, "consumption_kwh")
    assert feed is not None
    assert (feed.kind, feed.unit, feed.supply_point_id, feed.role) == (
        ENERGY,
        "kWh",
        HOME,
        "consumption",
    )
    surplus = store.feed_named(HOME, "surplus_kwh")
    assert surplus is not None and surplus.role == "export"
    stored = store.samples(feed.id, utc(2024, 1, 1), utc(2025, 1, 1))
    assert len(stored) == hours
    for t, value, estimated in stored:
        assert value == value_at(HOME, t) and estimated == estimated_at(t)
    # Spring: local midnight is 23:00 UTC, 02:00 is skipped; autumn: 02:00 local happens twice.
    spring = [t for t, _, _ in store.samples(feed.id, utc(2024, 3, 30, 23), utc(2024, 3, 31, 22))]
    assert spring == [utc(2024, 3, 30, 23) + 3600 * h for h in range(23)]
    autumn = [t for t, _, _ in store.samples(feed.id, utc(2024, 10, 26, 22), utc(2024, 10, 27, 23))]
    assert autumn == [utc(2024, 10, 26, 22) + 3600 * h for h in range(25)]
    days = store.buckets([feed.id], DAY_S, utc(2024, 10, 26, 22), utc(2024, 10, 27, 23))[feed.id]
    assert [(d.length_s, d.count) for d in days] == [(25 * 3600, 25)]


def test_quarter_hourly_curve(
    url: str, fake: DatadisFake, tmp_path: Path, store: MonitoringStore
) -> None:
    with client_of(url, fake, tmp_path / "cache") as client:
        curve = client.consumption(
            QUARTERS, "2", "2024/10", "2024/10", quarter_hourly=True, point_type=2
        )
    assert curve.errors == ()
    assert len(curve.readings) == 4 * (31 * 24 + 1)
    autumn = [r for r in curve.readings if utc(2024, 10, 27, 0) <= r.start < utc(2024, 10, 27, 2)]
    assert [r.start for r in autumn] == [utc(2024, 10, 27, 0) + 900 * q for q in range(8)]
    assert all(r.consumption_kwh == value_at(QUARTERS, r.start) for r in curve.readings)


def test_the_same_query_twice_is_asked_once(url: str, fake: DatadisFake, tmp_path: Path) -> None:
    with client_of(url, fake, tmp_path / "cache") as client:
        first = client.consumption(HOME, "8", "2024/10", "2024/10")
        fake.clock.advance(QUERY_PAUSE_S - 60)
        second = client.consumption(HOME, "8", "2024/10", "2024/10")
    with client_of(url, fake, tmp_path / "cache") as restarted:  # the cache is on disk
        third = restarted.consumption(HOME, "8", "2024/10", "2024/10")
    assert len(fake.queries(CONSUMPTION)) == 1
    assert (first.from_cache, second.from_cache, third.from_cache) == (False, True, True)
    assert first.readings == second.readings == third.readings
    fake.clock.advance(120)  # 24 h after it was asked: asked again
    with client_of(url, fake, tmp_path / "cache") as client:
        assert not client.consumption(HOME, "8", "2024/10", "2024/10").from_cache
    assert [c.status for c in fake.queries(CONSUMPTION)] == [200, 200]


def test_a_failed_query_is_not_repeated_within_24_hours(
    url: str, fake: DatadisFake, tmp_path: Path
) -> None:
    fake.fail[HOME] = 500
    with client_of(url, fake, tmp_path / "cache") as client:
        with pytest.raises(DatadisError) as failed:
            client.consumption(HOME, "8", "2024/10", "2024/10")
        assert failed.value.reason == "refused" and not failed.value.from_cache
        del fake.fail[HOME]
        fake.clock.advance(3_600)
        with pytest.raises(DatadisError) as remembered:
            client.consumption(HOME, "8", "2024/10", "2024/10")
        assert remembered.value.reason == "asked_recently" and remembered.value.from_cache
        assert "may be asked again after 2024-11-16 12:00 UTC" in remembered.value.message
        assert len(fake.queries(CONSUMPTION)) == 1
        fake.clock.advance(QUERY_PAUSE_S - 3_600)
        assert len(client.consumption(HOME, "8", "2024/10", "2024/10").readings) == 745
    assert [c.status for c in fake.queries(CONSUMPTION)] == [500, 200]


def test_a_429_is_surfaced_and_remembered(url: str, fake: DatadisFake, tmp_path: Path) -> None:
    with client_of(url, fake, tmp_path / "one") as client:
        client.consumption(HOME, "8", "2024/10", "2024/10")
    with client_of(url, fake, tmp_path / "other") as elsewhere:  # another cache, same account
        with pytest.raises(DatadisLimited) as limited:
            elsewhere.consumption(HOME, "8", "2024/10", "2024/10")
        assert limited.value.retry_after == NOW + QUERY_PAUSE_S
        with pytest.raises(DatadisLimited) as again:
            elsewhere.consumption(HOME, "8", "2024/10", "2024/10")
        assert again.value.from_cache
    assert [c.status for c in fake.queries(CONSUMPTION)] == [200, 429]


def test_an_expired_or_revoked_token_means_one_new_login(
    url: str, fake: DatadisFake, tmp_path: Path
) -> None:
    with client_of(url, fake, tmp_path / "cache") as client:
        client.supplies()
        fake.clock.advance(fake.token_lifetime_s)  # expired: logs in before asking
        client.contract_detail(HOME, "8")
        assert fake.logins() == 2
        fake.revoke_tokens()  # refused before its expiry: one login, the query once more
        client.contract_detail(QUARTERS, "2")
    assert fake.logins() == 3
    statuses = [c.status for c in fake.calls if c.path.startswith(API)]
    assert statuses == [200, 200, 401, 200]


def test_months_datadis_cannot_answer_are_not_asked(
    url: str, fake: DatadisFake, tmp_path: Path
) -> None:
    with client_of(url, fake, tmp_path / "cache") as client:
        for first, last in (("2022/10", "2022/11"), ("2024/10", "2024/09"), ("2024/12", "2024/12")):
            with pytest.raises(DatadisError) as refused:
                client.consumption(HOME, "8", first, last)
            assert refused.value.reason == "bad_months"
        with pytest.raises(ValueError, match="YYYY/MM"):
            client.consumption(HOME, "8", "2024-10", "2024/10")
    assert fake.calls == []


def test_fetch_counts_every_refusal(
    url: str, fake: DatadisFake, tmp_path: Path, store: MonitoringStore
) -> None:
    fake.fail[QUARTERS] = 503
    with client_of(url, fake, tmp_path / "cache") as client:
        summary = fetch_into_store(
            client, store, [HOME, QUARTERS, "ES0021000000000099XX"], "2024/10", "2024/10"
        )
        again = fetch_into_store(client, store, [HOME, QUARTERS], "2024/10", "2024/10")
    assert [(s.cups, s.refused, s.from_cache) for s in summary.supplies] == [
        (HOME, 0, False),
        (QUARTERS, 1, False),
        ("ES0021000000000099XX", 1, False),
    ]
    assert summary.stored == 4 * 745
    assert (again.stored, again.replaced, again.skipped_by_cache) == (0, 0, 2)
    counted = {(r["source"], r["reason"]): r["count"] for r in store.refusals()}
    assert counted == {
        ("datadis", "refused"): 1,
        ("datadis", "unknown_supply"): 1,
        ("datadis", "asked_recently"): 1,
    }
    assert len(fake.queries(CONSUMPTION)) == 2


def test_fetch_without_a_list_takes_every_supply_point(
    url: str, fake: DatadisFake, tmp_path: Path, store: MonitoringStore
) -> None:
    october, madrid = date(2024, 10, 1), ZoneInfo("Europe/Madrid")
    with client_of(url, fake, tmp_path / "cache") as client:
        with pytest.raises(DatadisError) as too_old:
            fetch_into_store(client, store, [], date(2022, 1, 1), october, madrid)
        assert too_old.value.reason == "bad_months" and fake.calls == []
        summary = fetch_into_store(client, store, [], october, october, madrid)
    assert [(s.cups, s.stored, s.refused) for s in summary.supplies] == [
        (HOME, 4 * 745, 0),
        (QUARTERS, 4 * 745, 0),
    ]


def test_a_query_that_never_reached_datadis_is_not_remembered(
    fake: DatadisFake, tmp_path: Path
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with (
        DatadisClient(
            nobody, USER, PASSWORD, cache_dir=tmp_path / "cache", clock=fake.clock
        ) as client,
        pytest.raises(DatadisError) as unreachable,
    ):
        client.supplies()
    assert unreachable.value.reason == "unreachable"
    assert list((tmp_path / "cache").iterdir()) == []


def test_the_daily_job_fetches_once_a_day_from_its_hour(
    url: str, fake: DatadisFake, store: MonitoringStore, tmp_path: Path
) -> None:
    from monitoring.datadis import DailyFetch

    madrid = ZoneInfo("Europe/Madrid")
    fake.clock.now = datetime(2024, 11, 15, 5, 30, tzinfo=madrid).timestamp()
    with client_of(url, fake, tmp_path / "cache") as client:
        job = DailyFetch(client, store, [HOME], hour=6, tz=madrid)
        assert job.due() is None  # 05:30: not yet
        assert fake.queries(CONSUMPTION) == []
        fake.clock.advance(3_600)  # 06:30
        summary = job.due()
        assert summary is not None and summary.stored > 0
        (query,) = fake.queries(CONSUMPTION)
        assert ("startDate", "2024/10") in query.params and ("endDate", "2024/11") in query.params
        fake.clock.advance(3 * 3_600)
        assert job.due() is None  # once a day
        fake.clock.advance(21 * 3_600)  # the next day at 06:30
        assert job.due() is not None
        assert len(fake.queries(CONSUMPTION)) == 2
