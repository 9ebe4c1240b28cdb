"""The smart meter's durable storage: readings, the outbox and named state, on SQLite and
PostgreSQL."""

from __future__ import annotations

import math

import pytest

from smartmeter.store import MeterStore


@pytest.fixture
def store(store_url: str) -> MeterStore:
    return MeterStore(store_url)


def test_readings_come_back_in_order_refused_ones_with_why(store: MeterStore) -> None:
    first = store.add_reading("sdm630", 100.0, 1_000.5, 20.25, 350.0)
    second = store.add_reading("mqtt", 101.5, math.nan, None, None, "import_wh is NaN")
    third = store.add_reading("sdm630", 105.0, 1_001.0, 20.25, -120.0)
    assert first < second < third
    found = store.readings()
    assert [(r.source, r.at, r.import_wh, r.export_wh, r.power_w, r.problem) for r in found] == [
        ("sdm630", 100.0, 1_000.5, 20.25, 350.0, None),
        ("mqtt", 101.5, None, None, None, "import_wh is NaN"),
        ("sdm630", 105.0, 1_001.0, 20.25, -120.0, None),
    ]
    assert [r.seq for r in store.readings(after=first, limit=1)] == [second]


def test_a_reopened_store_has_every_reading(store_url: str) -> None:
    store = MeterStore(store_url)
    store.add_reading("sdm630", 1.0, 2.0, 3.0, 4.0)
    store.close()
    assert [r.import_wh for r in MeterStore(store_url).readings()] == [2.0]


def test_the_outbox_keeps_a_message_until_it_is_delivered(store: MeterStore) -> None:
    assert store.enqueue("bill", "m1/17", b"bill 17")
    assert not store.enqueue("bill", "m1/17", b"bill 17 again")  # one message per key
    assert store.enqueue("bill", "m1/18", b"bill 18")
    due = store.due("bill")
    assert [(m.key, m.body, m.attempts) for m in due] == [
        ("m1/17", b"bill 17", 0),
        ("m1/18", b"bill 18", 0),
    ]
    store.failed(due[0].id, "the DSO is unreachable", retry_in_s=3600)
    store.delivered(due[1].id)
    assert store.due("bill") == []  # the first waits for its retry, the second is done
    assert store.pending("bill") == 1
    store.failed(due[0].id, "again", retry_in_s=0)
    [again] = store.due("bill")
    assert (again.key, again.attempts, again.last_error) == ("m1/17", 2, "again")
    assert store.due("report") == []


def test_named_state_is_replaced_whole(store: MeterStore) -> None:
    assert store.get_state("accumulator") is None
    store.put_state("accumulator", {"last": [1, 2], "open": {}})
    store.put_state("accumulator", {"last": [3, 4], "open": {"7": 10}})
    assert store.get_state("accumulator") == {"last": [3, 4], "open": {"7": 10}}
