"""The DSO's batched bill intake against a real ledger node: bills arriving together are stored
in one database transaction and reconciled from the DSO's own index of the ledger, each meter
answered as if its bill had come alone; a deposit the index lacks is read from the ledger."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete

from assets import (
    Bill,
    Epa,
    Keypair,
    Outpoint,
    bill_id,
    close_bill,
    encode_bill,
    encode_transaction,
    sign_bill,
)
from dso.store import chain_transactions
from simulation.processes import free_port
from simulation.scenario import pay

from .dso_harness import Dso, running_dso, serving

pytestmark = pytest.mark.slow
LIMITS = {"max_epa": 10_000, "max_eca": 10_000}


@pytest.fixture
def dso(tmp_path: Path) -> Iterator[Dso]:
    with running_dso(tmp_path) as node:
        yield node


def _authorize(dso: Dso, meters: Sequence[tuple[str, Keypair]]) -> None:
    answers = [
        dso.ok("POST", "/meters", json={"meter": m, "public_key": k.public_key.hex(), **LIMITS})
        for m, k in meters
    ]
    dso.wait_interval(max(int(a["effective_from"]) for a in answers))


def _deposited(dso: Dso, meter: str, key: Keypair) -> tuple[int, bytes, Outpoint]:
    """`meter` issues 700 W of EPA over two intervals, its owner deposits 300 W of it: the
    interval, the issue's txid and the deposit, once the interval has ended."""
    t = dso.now()
    home, address = Keypair.generate(), Keypair.generate()
    issued = dso.issue(meter, key, pay(Epa(700, t, t + 1), home))
    transfer = dso.scenario.transfer(
        [Outpoint(issued.txid, 0)],
        [pay(Epa(300, t, t + 1), address), pay(Epa(400, t, t + 1), home)],
        home,
    )
    moved = dso.ledger.submit(encode_transaction(transfer))
    dso.wait_interval(t + 1)
    return t, issued.txid, Outpoint(moved.txid, 0)


def _bill(dso: Dso, meter: str, key: Keypair, interval: int, **changes: Any) -> Bill:
    head = dso.ledger.head()
    assert head is not None
    values: dict[str, Any] = {
        "chain": dso.scenario.chain,
        "meter": meter,
        "interval": interval,
        "closed_height": head.header.height,
        "interval_s": dso.scenario.interval_s,
        "measured_j": 1_000_000,
        "issued_epa_w": 0,
        "deposited_epa_w": 0,
        "fa_issued": 0,
        "fa_deposited": 0,
        "price_consumption": None,
        "price_production": None,
        "issues": (),
        "deposits": (),
        **changes,
    }
    return sign_bill(close_bill(**values), key)


def _no_ledger_reads(dso: Dso, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*_: object) -> None:
        raise AssertionError("reconciliation asked the ledger node")

    monkeypatch.setattr(dso.service.billing.client, "output", refused)
    monkeypatch.setattr(dso.service.billing.client, "transaction", refused)


def test_bills_arriving_together_are_answered_each_as_if_alone(
    dso: Dso, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, other_key = Keypair.generate(), Keypair.generate()
    _authorize(dso, [("mA", key), ("mB", other_key)])
    t, issue, deposit = _deposited(dso, "mA", key)
    good = _bill(
        dso,
        "mA",
        key,
        t,
        issued_epa_w=700,
        deposited_epa_w=300,
        issues=(issue,),
        deposits=(deposit,),
    )
    rival = _bill(dso, "mA", key, t, measured_j=7)
    lone = _bill(dso, "mB", other_key, t)
    _no_ledger_reads(dso, monkeypatch)

    # The first batch is held until the other bills wait behind it: they go in one batch.
    held, release = threading.Event(), threading.Event()
    intake = dso.service.billing.intake
    store_batch = intake._process

    def holding(batch: Sequence[Any]) -> Any:
        if not held.is_set():
            held.set()
            assert release.wait(30)
        return store_batch(batch)

    monkeypatch.setattr(intake, "_process", holding)
    with serving(dso, free_port()) as url, ThreadPoolExecutor(4) as pool:

        def post(bill: Bill) -> httpx.Response:
            return httpx.post(f"{url}/v1/bills", content=encode_bill(bill), timeout=30)

        first = pool.submit(post, lone)
        assert held.wait(30)
        together = [pool.submit(post, good), pool.submit(post, good)]
        while len(intake._waiting) < 2:
            threading.Event().wait(0.01)
        together.append(pool.submit(post, rival))  # behind both copies: the copies are kept
        while len(intake._waiting) < 3:
            threading.Event().wait(0.01)
        release.set()
        answers = [first.result(30), *(f.result(30) for f in together)]

    lone_answer, *copies, refused_answer = answers
    assert (lone_answer.status_code, refused_answer.status_code) == (201, 409)
    assert lone_answer.json()["status"] == "reconciled"  # mB: nothing issued, nothing deposited
    # The same bill twice in one batch: whichever came first is stored, the other a duplicate.
    stored, again = sorted((a.json() for a in copies), key=lambda a: a["duplicate"])
    assert sorted(a.status_code for a in copies) == [200, 201]
    assert (stored["status"], stored["discrepancies"], stored["duplicate"]) == (
        "reconciled",
        [],
        False,
    )
    assert (again["id"], again["status"], again["duplicate"]) == (stored["id"], "reconciled", True)
    refused = refused_answer.json()
    assert refused["error"]["code"] == "bill_conflict"
    [audited] = [e for e in dso.ok("GET", "/audit")["entries"] if e["action"] == "bill.conflict"]
    assert audited["detail"] == {"refused": bill_id(rival).hex(), "kept": stored["id"]}
    kept = dso.ok("GET", f"/bills/{stored['id']}", "auditor")
    assert (kept["status"], kept["bill"]["measured_j"]) == ("reconciled", good.measured_j)


def test_a_deposit_the_index_lacks_is_read_from_the_ledger(dso: Dso) -> None:
    key = Keypair.generate()
    _authorize(dso, [("mC", key)])
    t, issue, deposit = _deposited(dso, "mC", key)
    dso.service.follower.wait_for(dso.ledger.head().header.height, 30)  # type: ignore[union-attr]
    # As a database that indexed the transfer's block before transfers were kept.
    with dso.store.engine.begin() as conn:
        conn.execute(delete(chain_transactions).where(chain_transactions.c.txid == deposit.txid))
    reads: list[bytes] = []
    output = dso.service.billing.client.output

    def counted(txid: bytes, index: int) -> dict[str, Any] | None:
        reads.append(txid)
        return output(txid, index)

    dso.service.billing.client.output = counted  # type: ignore[method-assign]
    bill = _bill(
        dso,
        "mC",
        key,
        t,
        issued_epa_w=700,
        deposited_epa_w=300,
        issues=(issue,),
        deposits=(deposit,),
    )
    answer = dso.http.post("/v1/bills", content=encode_bill(bill))
    assert answer.status_code == 201, answer.text
    assert (answer.json()["status"], answer.json()["discrepancies"]) == ("reconciled", [])
    assert reads == [deposit.txid]
