"""`smartmeter.billing_loop` against a real DSO node (served over HTTP by uvicorn) over a real
ledger node: the meter closes each interval's bill, queues it durably and delivers it once."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from waiting import wait_until

from assets import Fa, Keypair, decode_bill, encode_bill, sign_bill
from dso.client import DsoClient
from ledger.client import LedgerClient
from simulation.processes import free_port
from simulation.scenario import pay
from smartmeter.billing_loop import BillSender, bill_key, close_due_bills
from smartmeter.energy import IntervalEnergy, IntervalStatus
from smartmeter.ledger_index import MeterLedgerIndex
from smartmeter.store import MeterStore, outbox

from .dso_harness import Dso, running_dso, serving

METER = "m-billing"
SEED = bytes(range(32))  # the meter's deposit seed
DELAY_S = 0.5  # closing delay: how long the sources get to close an interval
WAIT_S = 30


@dataclass
class Meter:
    """A meter authorized through the DSO node, its database and its ledger ledger_index."""

    dso: Dso
    key: Keypair
    store: MeterStore
    ledger_index: MeterLedgerIndex
    interval: int  # an interval whose bill counts an FA issue of the meter

    def close_bills(self, now: float | None = None) -> list[int]:
        scenario = self.dso.scenario
        return close_due_bills(
            store=self.store,
            ledger_index=self.ledger_index,
            chain=scenario.chain,
            meter_id=METER,
            meter_key=self.key,
            interval_s=scenario.interval_s,
            epoch=scenario.epoch,
            closing_delay_s=DELAY_S,
            now=time.time() if now is None else now,
        )

    def bill_due_at(self) -> float:
        """Unix seconds when the bill of `interval` may be closed."""
        scenario = self.dso.scenario
        return scenario.epoch + (self.interval + 1) * scenario.interval_s + DELAY_S

    def close_the_bill(self) -> None:
        """Wait until the interval's bill is due, then queue it."""
        wait_until(lambda: time.time() >= self.bill_due_at(), WAIT_S, "the bill to be due")
        assert self.close_bills() == [self.interval]


def dso_bills(dso: Dso) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = dso.ok("GET", "/bills", params={"meter": METER})["bills"]
    return found


def outbox_row(store: MeterStore, key: str) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(select(outbox).where(outbox.c.key == key)).one()


@pytest.fixture
def dso(tmp_path: Path) -> Iterator[Dso]:
    with running_dso(tmp_path) as node:
        yield node


@pytest.fixture
def meter(dso: Dso, tmp_path: Path) -> Iterator[Meter]:
    """`METER`, authorized with a key we hold and priced, with one FA issue on the ledger and
    its interval's energy stored; its ledger index has indexed the issue's block."""
    key, home = Keypair.generate(), Keypair.generate()
    dso.ok("PUT", "/tariff", json={"price_consumption": 250_000, "price_production": 60_000})
    body = {"meter": METER, "public_key": key.public_key.hex(), "max_epa": 10_000}
    answer = dso.ok("POST", "/meters", json={**body, "max_eca": 10_000, "owner": "alice"})
    dso.wait_interval(int(answer["effective_from"]))
    issued = dso.issue(METER, key, pay(Fa(5_000), home))

    store = MeterStore(f"sqlite:///{tmp_path / 'meter.sqlite'}")
    ledger_index = MeterLedgerIndex(
        LedgerClient(dso.ledger_url), store, dso.scenario.genesis, METER, SEED
    )
    ledger_index.poll()
    assert ledger_index.height >= issued.height
    [fact] = ledger_index.issues()
    energy = IntervalEnergy(
        interval=fact.interval,
        import_j=3_600_000,
        export_j=0,
        net_j=3_600_000,
        status=IntervalStatus.MEASURED,
        readings=4,
        covered_us=dso.scenario.interval_s * 1_000_000,
        reasons=(),
    )
    store.close_intervals("grid", [energy], {"fed": 4})
    yield Meter(dso, key, store, ledger_index, fact.interval)
    ledger_index.stop()
    store.close()


def test_a_closed_interval_is_billed_once_delivered_and_reconciled(meter: Meter) -> None:
    dso, t = meter.dso, meter.interval
    assert meter.close_bills(now=meter.bill_due_at() - 0.1) == []  # not due yet
    meter.close_the_bill()
    [queued] = meter.store.due("bill")
    assert queued.key == bill_key(METER, t)
    bill = decode_bill(queued.body)
    assert (bill.interval, bill.measured_j, bill.fa_issued) == (t, 3_600_000, 5_000)
    assert bill.amount == 5_000 + 250_000  # the FA issued plus one kWh at 0.25

    with serving(dso, free_port()) as url, DsoClient(url) as client:
        sent = BillSender(meter.store, client).send_due()
        assert (sent.delivered, sent.retrying, sent.parked) == (1, 0, 0)
    assert meter.store.pending("bill") == 0
    [stored] = wait_until(
        lambda: [b for b in dso_bills(dso) if b["status"] == "reconciled"], WAIT_S, "reconciliation"
    )
    assert (stored["interval"], stored["amount"], stored["discrepancies"]) == (
        t,
        bill.amount,
        [],
    )

    # Calling again bills nothing new and leaves nothing to send.
    assert meter.close_bills() == []
    assert meter.store.due("bill") == []

    # A different bill for the same interval is parked for good; a forged one is kept for later.
    other = sign_bill(dataclasses.replace(bill, measured_j=1), meter.key)
    forged = sign_bill(bill, Keypair.generate())
    assert meter.store.enqueue("bill", "bill/conflicting", encode_bill(other))
    assert meter.store.enqueue("bill", "bill/forged", encode_bill(forged))
    with serving(dso, free_port()) as url, DsoClient(url) as client:
        sent = BillSender(meter.store, client).send_due()
        assert (sent.delivered, sent.retrying, sent.parked) == (0, 1, 1)
    assert outbox_row(meter.store, "bill/conflicting").last_error.startswith("bill_conflict")
    assert outbox_row(meter.store, "bill/forged").last_error.startswith("bad_signature")
    assert meter.store.due("bill") == [] and meter.store.pending("bill") == 2
    assert len(dso_bills(dso)) == 1


def test_a_bill_closes_on_the_ledger_as_it_stands_not_on_a_lagging_index(
    meter: Meter, tmp_path: Path
) -> None:
    """An index that has not seen the interval's blocks (a stream that lags or is re-opening)
    catches up before the bill closes: the FA issued in the interval is billed, not lost."""
    meter.ledger_index.stop()
    index_store = MeterStore(f"sqlite:///{tmp_path / 'behind.sqlite'}")
    meter.ledger_index = MeterLedgerIndex(
        LedgerClient(meter.dso.ledger_url), index_store, meter.dso.scenario.genesis, METER, SEED
    )
    assert meter.ledger_index.height == 0  # it has read nothing yet
    meter.close_the_bill()
    index_store.close()
    [queued] = meter.store.due("bill")
    bill = decode_bill(queued.body)
    assert bill.fa_issued == 5_000
    assert bill.closed_height >= meter.ledger_index.issues()[0].height


def test_no_bill_closes_while_the_ledger_cannot_be_read(meter: Meter) -> None:
    meter.ledger_index.stop()
    meter.ledger_index = MeterLedgerIndex(
        LedgerClient(f"http://127.0.0.1:{free_port()}", timeout_s=2, retries=0),
        meter.store,
        meter.dso.scenario.genesis,
        METER,
        SEED,
    )
    wait_until(lambda: time.time() >= meter.bill_due_at(), WAIT_S, "the bill to be due")
    assert meter.close_bills() == []
    assert meter.store.due("bill") == []


def test_an_unreachable_dso_delays_the_bill_until_it_is_back(meter: Meter) -> None:
    dso, key = meter.dso, bill_key(METER, meter.interval)
    meter.close_the_bill()
    port = free_port()
    with serving(dso, port) as url:
        pass  # the DSO node has stopped: nothing listens on `url` any more
    client = DsoClient(url, timeout_s=5)
    sender = BillSender(meter.store, client, first_retry_s=0.2, max_retry_s=0.5)
    sent = sender.send_due()
    assert (sent.delivered, sent.retrying) == (0, 1)
    row = outbox_row(meter.store, key)
    assert row.attempts == 1 and row.delivered_ms is None
    assert row.last_error.startswith("unreachable")
    wait_until(lambda: sender.send_due().retrying, WAIT_S, "a second failed attempt")
    assert outbox_row(meter.store, key).attempts == 2

    with serving(dso, port):
        wait_until(lambda: sender.send_due().delivered, WAIT_S, "the bill to be delivered")
    client.close()
    assert meter.store.pending("bill") == 0
    assert [b["interval"] for b in dso_bills(dso)] == [meter.interval]


def test_an_undelivered_bill_survives_a_restart_of_the_meter(meter: Meter, tmp_path: Path) -> None:
    meter.close_the_bill()
    meter.ledger_index.stop()
    meter.store.close()

    store = MeterStore(f"sqlite:///{tmp_path / 'meter.sqlite'}")
    meter.store = store
    meter.ledger_index = MeterLedgerIndex(
        LedgerClient(meter.dso.ledger_url), store, meter.dso.scenario.genesis, METER, SEED
    )
    assert store.pending("bill") == 1
    [queued] = store.due("bill")
    assert queued.key == bill_key(METER, meter.interval)
    assert meter.close_bills() == []  # the restarted meter does not bill the interval again
    with serving(meter.dso, free_port()) as url, DsoClient(url) as client:
        assert BillSender(store, client).send_due().delivered == 1
    assert [b["interval"] for b in dso_bills(meter.dso)] == [meter.interval]


def test_a_missing_interval_waits_for_every_source_then_is_billed_as_stored(
    meter: Meter,
) -> None:
    t, seconds = meter.interval, meter.dso.scenario.interval_s

    def energy(interval: int, net_j: int, status: IntervalStatus) -> IntervalEnergy:
        imported, exported = max(net_j, 0), max(-net_j, 0)
        reasons = () if status is IntervalStatus.MEASURED else (f"{status} for the test",)
        return IntervalEnergy(interval, imported, exported, net_j, status, 1, 0, reasons)

    meter.store.close_intervals(
        "pv",
        [energy(t, -1_000, IntervalStatus.MEASURED), energy(t + 1, -500, IntervalStatus.SUSPECT)],
        {"fed": 2},
    )
    due = meter.dso.scenario.epoch + (t + 2) * seconds + DELAY_S  # t + 1 ended, delay passed
    # Interval t + 1 is `missing` while "grid" has not closed it: it waits.
    assert meter.close_bills(now=due) == [t]
    assert meter.close_bills(now=due) == []
    # "grid" closes it as a gap: final, billed with what was measured (the bill has no status).
    meter.store.close_intervals("grid", [energy(t + 1, 0, IntervalStatus.MISSING)], {"fed": 5})
    assert meter.close_bills(now=due) == [t + 1]
    bills = {decode_bill(m.body).interval: decode_bill(m.body) for m in meter.store.due("bill")}
    assert {i: b.measured_j for i, b in bills.items()} == {t: 3_599_000, t + 1: -500}
    assert meter.close_bills(now=due + 10 * seconds) == []  # nothing stored after t + 1

    # A source dropped from the configuration holds back nothing once the sources are named.
    meter.store.close_intervals("grid", [energy(t + 2, 7, IntervalStatus.MEASURED)], {"fed": 6})
    scenario = meter.dso.scenario
    billed = close_due_bills(
        store=meter.store,
        ledger_index=meter.ledger_index,
        chain=scenario.chain,
        meter_id=METER,
        meter_key=meter.key,
        interval_s=seconds,
        epoch=scenario.epoch,
        closing_delay_s=DELAY_S,
        now=due + seconds,
        sources=["grid"],
    )
    assert billed == [t + 2]
