"""The smart meter's durable storage: readings, the outbox and named state, on SQLite and
PostgreSQL."""

from __future__ import annotations

import math

from smartmeter.store import MeterStore


def test_readings_come_back_in_order_refused_ones_with_why(meter_store: MeterStore) -> None:
    first = meter_store.add_reading("sdm630", 100.0, 1_000.5, 20.25, 350.0)
    second = meter_store.add_reading("mqtt", 101.5, math.nan, None, None, "import_wh is NaN")
    third = meter_store.add_reading("sdm630", 105.0, 1_001.0, 20.25, -120.0)
    assert first < second < third
    found = meter_store.readings()
    assert [(r.source, r.at, r.import_wh, r.export_wh, r.power_w, r.problem) for r in found] == [
        ("sdm630", 100.0, 1_000.5, 20.25, 350.0, None),
        ("mqtt", 101.5, None, None, None, "import_wh is NaN"),
        ("sdm630", 105.0, 1_001.0, 20.25, -120.0, None),
    ]
    assert [r.seq for r in meter_store.readings(after=first, limit=1)] == [second]


def test_a_reopened_store_has_every_reading(meter_store_url: str) -> None:
    with MeterStore(meter_store_url) as store:
        store.add_reading("sdm630", 1.0, 2.0, 3.0, 4.0)
    with MeterStore(meter_store_url) as reopened:
        assert [r.import_wh for r in reopened.readings()] == [2.0]


def test_the_outbox_keeps_a_message_until_it_is_delivered(meter_store: MeterStore) -> None:
    assert meter_store.enqueue("bill", "m1/17", b"bill 17")
    assert not meter_store.enqueue("bill", "m1/17", b"bill 17 again")  # one message per key
    assert meter_store.enqueue("bill", "m1/18", b"bill 18")
    due = meter_store.due("bill")
    assert [(m.key, m.body, m.attempts) for m in due] == [
        ("m1/17", b"bill 17", 0),
        ("m1/18", b"bill 18", 0),
    ]
    meter_store.failed(due[0].id, "the DSO is unreachable", retry_in_s=3600)
    meter_store.delivered(due[1].id)
    assert meter_store.due("bill") == []  # the first waits for its retry, the second is done
    assert meter_store.pending("bill") == 1
    meter_store.failed(due[0].id, "again", retry_in_s=0)
    [again] = meter_store.due("bill")
    assert (again.key, again.attempts, again.last_error) == ("m1/17", 2, "again")
    assert meter_store.due("report") == []


def test_named_state_is_replaced_whole(meter_store: MeterStore) -> None:
    assert meter_store.get_state("accumulator") is None
    meter_store.put_state("accumulator", {"last": [1, 2], "open": {}})
    meter_store.put_state("accumulator", {"last": [3, 4], "open": {"7": 10}})
    assert meter_store.get_state("accumulator") == {"last": [3, 4], "open": {"7": 10}}
