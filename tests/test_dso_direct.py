"""`POST /v1/bills` answered by the server itself (`dso.api.DirectBills`), on a DSO node served
as `petra dso serve` serves it, by a real server in a thread of the test: every answer is the
bytes the ASGI route (`BillRoutes`) gives the same request, refusals included, and the metrics
count a bill alike whichever way it came."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from test_ledger_direct import Served, body_of, status_of
from test_metrics_ledger_dso import (  # noqa: F401 (fixtures)
    authorize_meter,
    bill_of,
    dso,
    figure,
    scenario,
    scrape,
)
from test_serving_direct import without_date

from assets import MAX_BILL_BYTES, Keypair, decode_bill, encode_bill, sign_bill
from dso.api import BILLS_PATH
from dso.api import create_app as create_dso_app
from dso.service import DsoService
from service.http import direct_routes
from simulation.scenario import Scenario

BY_APP = f"{BILLS_PATH}?by=app"  # a query string keeps a request off the direct route


@pytest.fixture
def served(dso: DsoService) -> Iterator[Served]:  # noqa: F811 (the fixture imported)
    app = create_dso_app(dso)
    assert set(direct_routes(app)) == {BILLS_PATH}
    serving = Served(app)
    yield serving
    serving.close()


@dataclass(frozen=True)
class Meter:
    """Meter m1, which the DSO's schedule authorizes: its DSO, chain and key."""

    dso: DsoService
    scenario: Scenario
    key: Keypair

    def bill(self, interval: int, key: Keypair | None = None, meter: str = "m1") -> bytes:
        return bill_of(self.scenario, meter, key or self.key, interval)


@pytest.fixture
def meter(dso: DsoService, scenario: Scenario) -> Meter:  # noqa: F811 (the fixtures imported)
    key = Keypair.generate()
    authorize_meter(dso, scenario, "m1", key)
    return Meter(dso, scenario, key)


def test_a_new_bill_and_the_same_again_are_answered_as_the_asgi_route_answers(
    served: Served, meter: Meter
) -> None:
    first, second = meter.bill(7), meter.bill(8)
    new_direct, new_by_app = served.post(BILLS_PATH, first), served.post(BY_APP, second)
    assert (status_of(new_direct), status_of(new_by_app)) == (201, 201)
    assert body_of(new_direct)["duplicate"] is False
    assert set(body_of(new_direct)) == set(body_of(new_by_app))
    again = served.post(BILLS_PATH, first)
    assert status_of(again) == 200 and body_of(again)["duplicate"] is True
    assert without_date(again) == without_date(served.post(BY_APP, first))
    assert len(meter.dso.store.bills(0, 1_000)) == 2


def test_refusals_are_the_bytes_the_asgi_route_answers_and_count_alike(
    served: Served, meter: Meter
) -> None:
    kept = meter.bill(7)
    assert status_of(served.post(BILLS_PATH, kept)) == 201
    # another bill of the same meter and interval, signed as well
    other = encode_bill(sign_bill(replace(decode_bill(kept), measured_j=1), meter.key))
    refused = {
        "bad_signature": (meter.bill(8, key=Keypair.generate()), 401),
        "meter_unknown": (meter.bill(7, meter="m2"), 401),
        "interval_open": (meter.bill(100), 422),
        "malformed": (b"{}", 400),
        "too_large": (b"x" * (MAX_BILL_BYTES + 1), 413),
        "bill_conflict": (other, 409),
    }
    for code, (raw, status) in refused.items():
        direct = served.post(BILLS_PATH, raw)
        assert status_of(direct) == status, direct
        assert body_of(direct)["error"]["code"] == code  # type: ignore[index]
        assert without_date(direct) == without_date(served.post(BY_APP, raw))
    counted = scrape(meter.dso.registry)
    for code in refused:
        assert figure(counted, "petra_dso_bill_refusals_total", code=code) == 2, code
    assert figure(counted, "petra_dso_bills_received_total") == 1


def test_an_intake_that_fails_is_answered_internal_without_its_traceback(
    served: Served, meter: Meter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(raw: bytes) -> None:
        raise RuntimeError("the database file vanished /secret/path")

    monkeypatch.setattr(meter.dso, "intake_bill", failing)
    for path in (BILLS_PATH, BY_APP):
        answer = served.post(path, meter.bill(7))
        assert status_of(answer) == 500, answer
        assert body_of(answer)["error"]["code"] == "internal"  # type: ignore[index]
        assert b"secret" not in answer and b"Traceback" not in answer
    assert status_of(served.post(BILLS_PATH, b"{}")) == 500  # the node still answers
