"""The monitoring store's aggregates against the raw samples they summarise: whatever order,
lateness or repetition the samples arrive in, every 15-minute, hourly and local-day bucket
holds the count, sum, minimum and maximum of the samples it covers (DESIGN.md section 13)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitoring.samples import Refused, Sample, sample
from monitoring.store import (
    DAY_S,
    HOUR_S,
    QUARTER_S,
    MonitoringStore,
    local_day_bounds,
    local_day_start,
)

MADRID = ZoneInfo("Europe/Madrid")
# 2024-10-26 00:00 UTC: the 25-hour day of 2024-10-27 in Madrid falls inside the window.
BASE = 1_729_900_800
NOW = BASE + 30 * DAY_S


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path) -> Iterator[MonitoringStore]:
    store = MonitoringStore(f"sqlite:///{tmp_path / 'monitor.sqlite'}")
    store.put_community("valle", "Valle Solar", "Europe/Madrid")
    store.set_node("emontx", community_id="valle")
    yield store
    store.close()


def expected_buckets(
    samples: list[Sample],
) -> dict[tuple[int, int], tuple[int, float, float, float]]:
    latest: dict[int, float] = {}
    for one in samples:
        latest[one.t] = one.value  # a later sample at a time replaces the earlier one
    grouped: dict[tuple[int, int], list[float]] = defaultdict(list)
    for t, value in latest.items():
        grouped[(QUARTER_S, t - t % QUARTER_S)].append(value)
        grouped[(HOUR_S, t - t % HOUR_S)].append(value)
        grouped[(DAY_S, local_day_start(t, MADRID))].append(value)
    return {
        key: (len(values), sum(values), min(values), max(values)) for key, values in grouped.items()
    }


times = st.integers(min_value=BASE, max_value=BASE + 3 * DAY_S)
values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda v: round(v, 3))
batches = st.lists(st.lists(st.tuples(times, values), min_size=1, max_size=40), max_size=6)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=batches)
def test_aggregates_match_the_raw_samples_whatever_the_arrival_order(
    store: MonitoringStore, batches: list[list[tuple[int, float]]]
) -> None:
    with store.engine.begin() as conn:  # each example starts from an empty feed
        from monitoring.store import aggregate
        from monitoring.store import sample as sample_table

        conn.execute(aggregate.delete())
        conn.execute(sample_table.delete())
    sent: list[Sample] = []
    for batch in batches:
        samples = [sample("emontx", "power1", t, v, NOW) for t, v in batch]
        store.write(samples)
        sent.extend(samples)
    feed = store.feed_named("emontx", "power1")
    assert feed is not None or not sent
    if feed is None:
        return
    found = {}
    for period in (QUARTER_S, HOUR_S, DAY_S):
        for bucket in store.buckets([feed.id], period, BASE - DAY_S, BASE + 5 * DAY_S)[feed.id]:
            found[(period, bucket.start)] = (bucket.count, bucket.sum, bucket.min, bucket.max)
    wanted = expected_buckets(sent)
    assert found.keys() == wanted.keys()
    for key, (count, total, low, high) in wanted.items():
        got = found[key]
        assert got[0] == count and got[2] == low and got[3] == high, key
        assert got[1] == pytest.approx(total, rel=1e-9, abs=1e-6), key


def test_the_daylight_saving_days_are_23_and_25_hours_long() -> None:
    spring = int(datetime(2024, 3, 31, 12, tzinfo=MADRID).timestamp())
    autumn = int(datetime(2024, 10, 27, 12, tzinfo=MADRID).timestamp())
    start, end = local_day_bounds(spring, MADRID)
    assert end - start == 23 * HOUR_S
    start, end = local_day_bounds(autumn, MADRID)
    assert end - start == 25 * HOUR_S


def test_a_daily_bucket_is_the_local_day_and_says_how_long_it_is(store: MonitoringStore) -> None:
    autumn_midnight = int(datetime(2024, 10, 27, tzinfo=MADRID).timestamp())
    samples = [
        sample("emontx", "power1", autumn_midnight + h * HOUR_S, 100.0, NOW) for h in range(25)
    ]
    store.write(samples)
    feed = store.feed_named("emontx", "power1")
    assert feed is not None
    days = store.buckets([feed.id], DAY_S, autumn_midnight - DAY_S, autumn_midnight + 2 * DAY_S)
    assert [(b.start, b.length_s, b.count) for b in days[feed.id]] == [
        (autumn_midnight, 25 * HOUR_S, 25)
    ]


def test_averages_come_from_the_aggregates_and_from_raw_samples_below_15_minutes(
    store: MonitoringStore,
) -> None:
    start = BASE
    store.write([sample("emontx", "power1", start + i * 60, float(i), NOW) for i in range(120)])
    feed = store.feed_named("emontx", "power1")
    assert feed is not None
    hourly = store.averages(feed.id, start, start + 2 * HOUR_S, HOUR_S)
    assert hourly == [(start, sum(range(60)) / 60), (start + HOUR_S, sum(range(60, 120)) / 60)]
    five_minutes = store.averages(feed.id, start, start + 600, 300)
    assert five_minutes == [(start, 2.0), (start + 300, 7.0)]
    with pytest.raises(ValueError):
        store.averages(feed.id, start, start + 600, 0)


def test_a_replaced_sample_changes_its_buckets_and_counts_once(store: MonitoringStore) -> None:
    written = store.write([sample("emontx", "power1", BASE, 10.0, NOW)])
    assert (written.stored, written.replaced, written.new_feeds) == (1, 0, 1)
    again = store.write([sample("emontx", "power1", BASE, 30.0, NOW)])
    assert (again.stored, again.replaced) == (0, 1)
    same = store.write([sample("emontx", "power1", BASE, 30.0, NOW)])
    assert (same.stored, same.replaced) == (0, 0)
    feed = store.feed_named("emontx", "power1")
    assert feed is not None and feed.last_value == 30.0
    (bucket,) = store.buckets([feed.id], HOUR_S, BASE, BASE + HOUR_S)[feed.id]
    assert (bucket.count, bucket.sum) == (1, 30.0)


def test_a_late_sample_does_not_move_the_feeds_last_value(store: MonitoringStore) -> None:
    store.write([sample("emontx", "power1", BASE + 600, 5.0, NOW)])
    store.write([sample("emontx", "power1", BASE, 1.0, NOW)])
    feed = store.feed_named("emontx", "power1")
    assert feed is not None and (feed.last_time, feed.last_value) == (BASE + 600, 5.0)


@pytest.mark.parametrize(
    ("node", "name", "t", "value", "reason"),
    [
        ("emon tx", "power1", BASE, 1.0, "bad_name"),
        ("emontx", "power/1", BASE, 1.0, "bad_name"),
        ("", "power1", BASE, 1.0, "bad_name"),
        ("emontx", "p" * 65, BASE, 1.0, "bad_name"),
        ("emontx", "power1", 100, 1.0, "bad_time"),
        ("emontx", "power1", NOW + 2 * DAY_S, 1.0, "bad_time"),
        ("emontx", "power1", float("nan"), 1.0, "bad_time"),
        ("emontx", "power1", BASE, float("inf"), "bad_value"),
        ("emontx", "power1", BASE, float("nan"), "bad_value"),
        ("emontx", "power1", BASE, "12", "bad_value"),
        ("emontx", "power1", BASE, True, "bad_value"),
        ("emontx", "power1", BASE, 1e300, "bad_value"),
    ],
)
def test_every_refusal_has_its_code(
    node: str, name: str, t: float, value: object, reason: str
) -> None:
    with pytest.raises(Refused) as refused:
        sample(node, name, t, value, NOW)
    assert refused.value.reason == reason
    assert refused.value.message


def test_refusals_are_counted_by_source_and_reason(store: MonitoringStore) -> None:
    store.refuse("mqtt", "bad_value", "input 'p' is 'x', not a number", now=NOW)
    store.refuse("mqtt", "bad_value", "input 'q' is 'y', not a number", now=NOW + 1)
    store.refuse("input/bulk", "bad_time", "time 3 is before 2000", now=NOW)
    found = {(r["source"], r["reason"]): (r["count"], r["last_message"]) for r in store.refusals()}
    assert found == {
        ("input/bulk", "bad_time"): (1, "time 3 is before 2000"),
        ("mqtt", "bad_value"): (2, "input 'q' is 'y', not a number"),
    }


def test_retention_prunes_raw_samples_and_keeps_the_aggregates(tmp_path: Path) -> None:
    from monitoring.store import Retention

    store = MonitoringStore(f"sqlite:///{tmp_path / 'kept.sqlite'}", Retention(raw_days=7))
    try:
        store.write([sample("n1", "p", BASE + i * 60, 2.0, NOW) for i in range(60)])
        store.write([sample("n1", "p", NOW - 60, 4.0, NOW)])
        assert store.prune(now=NOW) == 60
        feed = store.feed_named("n1", "p")
        assert feed is not None
        assert store.samples(feed.id, BASE, NOW + 1) == [(NOW - 60, 4.0, False)]
        (hour,) = store.buckets([feed.id], HOUR_S, BASE, BASE + HOUR_S)[feed.id]
        assert (hour.count, hour.sum) == (60, 120.0)
    finally:
        store.close()


def test_a_write_that_fails_stores_nothing_and_the_next_one_creates_its_feed(
    store: MonitoringStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from monitoring.store import MonitoringStoreError

    real = MonitoringStore._write_feed

    def failing(*args: object, **kwargs: object) -> tuple[int, int]:
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(MonitoringStore, "_write_feed", failing)
    with pytest.raises(MonitoringStoreError):
        store.write([sample("newnode", "p", BASE, 1.0, NOW)])
    assert store.feed_named("newnode", "p") is None  # the feed rolled back with the samples
    monkeypatch.setattr(MonitoringStore, "_write_feed", real)
    written = store.write([sample("newnode", "p", BASE, 1.0, NOW)])
    assert (written.stored, written.new_feeds) == (1, 1)
    feed = store.feed_named("newnode", "p")
    assert feed is not None and store.samples(feed.id, BASE, BASE + 1) == [(BASE, 1.0, False)]


def test_a_failing_listener_does_not_undo_or_fail_a_write(store: MonitoringStore) -> None:
    heard: list[list[str]] = []

    def broken(feeds: object) -> None:
        raise RuntimeError("the live view's loop is closed")

    store.listen(broken)
    store.listen(lambda feeds: heard.append([f.name for f in feeds]))
    written = store.write([sample("emontx", "power1", BASE, 1.0, NOW)])
    assert written.stored == 1
    feed = store.feed_named("emontx", "power1")
    assert feed is not None and store.samples(feed.id, BASE, BASE + 1) == [(BASE, 1.0, False)]
    assert heard == [["power1"]]  # the listeners after the broken one still hear of it
