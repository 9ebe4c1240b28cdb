"""`POST /v1/bills/history` of the meter's owner API (smartmeter/api.py) over a real ledger
node: every billed interval of a range, as signed for the DSO, delivered or not; ranges that
are not ranges are refused like any malformed request."""

from __future__ import annotations

from typing import Any

from assets import bill_of_interval, canonical_json, encode_bill, sign_bill
from smartmeter.billing_loop import BILL_KIND, bill_key

from .test_meter_api import Meter, body, meter, refused

__all__ = ["meter"]  # the fixture this module runs on

PATH = "/v1/bills/history"


def queue_bill(found: Meter, interval: int, measured_j: int) -> bytes:
    """Queue the meter's signed bill of `interval`, as its billing loop does; its bytes."""
    bill = bill_of_interval(
        chain=found.scenario.chain,
        meter="m1",
        interval=interval,
        interval_s=found.scenario.interval_s,
        closed_height=1,
        measured_j=measured_j,
        issues=[],
        deposits=[],
        price_consumption=250_000,
        price_production=60_000,
    )
    raw = encode_bill(sign_bill(bill, found.key))
    assert found.store.enqueue(BILL_KIND, bill_key("m1", interval), raw)
    return raw


def history(found: Meter, **fields: Any) -> Any:
    return found.http.post(PATH, content=body(PATH, found.owner, **fields))


def test_the_history_lists_every_billed_interval_in_the_range_delivered_or_not(
    meter: Meter,
) -> None:
    raws = {t: queue_bill(meter, t, 1_000 * t) for t in (3, 5, 6, 9)}
    meter.store.enqueue(BILL_KIND, bill_key("m2", 4), b'{"interval":4}')  # another meter's
    for message in meter.store.due(BILL_KIND):
        if message.key == bill_key("m1", 5):
            meter.store.delivered(message.id)

    answer = history(meter, first=4, last=9)
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert (found["first"], found["last"]) == (4, 9)
    assert [b["interval"] for b in found["bills"]] == [5, 6, 9]
    assert [canonical_json(b) for b in found["bills"]] == [raws[5], raws[6], raws[9]]
    assert found["delivered"] == [True, False, False]
    assert found["bills"][0]["measured_j"] == 5_000

    empty = history(meter, first=100, last=100 + 2_880)
    assert empty.status_code == 200, empty.text
    assert empty.json() == {"first": 100, "last": 2_980, "bills": [], "delivered": []}
    # /v1/bills still lists only what waits for the DSO
    waiting = meter.http.post("/v1/bills", content=body("/v1/bills", meter.owner)).json()
    assert waiting["pending"] == 4


def test_a_range_that_is_not_one_is_refused(meter: Meter) -> None:
    for first, last in ((5, 4), (-1, 3), (0, 2_881), (True, 3), (0, "9")):
        refused(history(meter, first=first, last=last), 400, "malformed")
    refused(history(meter, first=1), 400, "malformed")
    refused(history(meter, first=1, last=2, extra=0), 400, "malformed")
    signed_for_bills = body("/v1/bills", meter.owner, first=1, last=2)
    refused(meter.http.post(PATH, content=signed_for_bills), 400, "malformed")
    again = body(PATH, meter.owner, first=1, last=2)
    assert meter.http.post(PATH, content=again).status_code == 200
    refused(meter.http.post(PATH, content=again), 401, "replayed")
