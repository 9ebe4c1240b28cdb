"""The DSO node against a real ledger node: regulation, billing intake, the controller, audit."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from waiting import wait_until

from assets import (
    Bill,
    Code,
    Eca,
    Epa,
    Fa,
    Keypair,
    Outpoint,
    close_bill,
    encode_bill,
    encode_transaction,
    sign_bill,
)
from dso.controller import BookEntry
from ledger.client import LedgerRejected
from simulation.processes import start_petra, stop, wait_serving
from simulation.scenario import pay

from .dso_harness import TEST_POLICY, Dso, running_dso


@pytest.fixture
def dso(tmp_path: Path, store_url: str) -> Iterator[Dso]:
    """A DSO node whose database is SQLite, then PostgreSQL."""
    with running_dso(tmp_path, store_url) as node:
        yield node


def authorize(dso: Dso, meter: str, key: Keypair, **extra: object) -> dict[str, object]:
    body = {"meter": meter, "public_key": key.public_key.hex(), **extra}
    answer: dict[str, object] = dso.ok("POST", "/meters", json=body)
    dso.wait_interval(int(str(answer["effective_from"])))
    return answer


def test_an_authorized_meter_issues_and_a_ban_stops_it_from_the_next_interval(dso: Dso) -> None:
    key = Keypair.generate()
    answer = authorize(dso, "ES0021000000000001AB", key, max_epa=5_000, max_eca=5_000, owner="o1")
    assert answer["status"] == "accepted" and answer["by"] == "test-admin"
    now = dso.now()
    dso.issue("ES0021000000000001AB", key, pay(Epa(1_000, now + 5, now + 6), key))

    ban = dso.ok("POST", "/meters/ES0021000000000001AB/ban", "operator", json={})
    k = ban["time"]
    assert ban["effective_from"] == k + 1
    # Assets covering intervals after k are refused at once: the meter is banned there.
    with pytest.raises(LedgerRejected) as ahead:
        dso.issue("ES0021000000000001AB", key, pay(Epa(1, k + 5, k + 5), key))
    assert ahead.value.code is Code.METER_BANNED
    dso.wait_interval(k + 1)
    # From interval k+1 on the meter may issue nothing at all, not even for an earlier interval.
    with pytest.raises(LedgerRejected) as refused:
        dso.issue("ES0021000000000001AB", key, pay(Epa(1, k, k), key))
    assert refused.value.code is Code.METER_BANNED

    view = dso.ok("GET", "/meters", "auditor")
    assert view["meters"] == [
        {
            "meter": "ES0021000000000001AB",
            "public_key": key.public_key.hex(),
            "max_epa": 5_000,
            "max_eca": 5_000,
            "state": "banned",
            "owner": "o1",
            "follows_default_limits": False,
        }
    ]


def test_limits_are_enforced_by_the_ledger_and_defaults_apply(dso: Dso) -> None:
    refused = dso.call("POST", "/meters", json={"meter": "m1", "public_key": "11" * 32})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "no_default_limits"
    dso.ok("PUT", "/limits/default", json={"max_epa": 2_000, "max_eca": 3_000})
    key = Keypair.generate()
    authorize(dso, "m1", key)
    meter = dso.ok("GET", "/meters/m1")["now"]
    assert (meter["max_epa"], meter["max_eca"], meter["follows_default_limits"]) == (
        2_000,
        3_000,
        True,
    )
    t = dso.now() + 10
    dso.issue("m1", key, pay(Epa(1_999, t, t), key))
    with pytest.raises(LedgerRejected) as over:
        dso.issue("m1", key, pay(Epa(1, t, t), key))  # 2,000 is not strictly below 2,000
    assert over.value.code is Code.LIMIT_EXCEEDED

    raised = dso.ok("PUT", "/limits/default", json={"max_epa": 4_000, "max_eca": 3_000})
    assert raised["regulations"][0]["transaction"]["authorize"][0]["meter"] == "m1"
    dso.wait_interval(raised["regulations"][0]["effective_from"])
    dso.issue("m1", key, pay(Epa(2_000, t, t), key))


def test_prices_in_force_follow_the_last_regulation_before_the_interval(dso: Dso) -> None:
    now = dso.now()
    first = dso.ok("PUT", "/tariff", json={"price_consumption": 200_000, "time": now + 2})
    second = dso.ok(
        "PUT",
        "/tariff",
        json={"price_consumption": 250_000, "price_production": 60_000, "time": now + 4},
    )
    assert (first["effective_from"], second["effective_from"]) == (now + 3, now + 5)
    runs = dso.ok("GET", "/schedule", "auditor", params={"first": now, "last": now + 7})["runs"]
    assert [
        (r["first"], r["last"], r["price_consumption"], r["price_production"]) for r in runs
    ] == [
        (now, now + 2, None, None),
        (now + 3, now + 4, 200_000, None),
        (now + 5, now + 7, 250_000, 60_000),
    ]
    for t in range(now, now + 8):  # the ledger's own view agrees, interval by interval
        ledger = httpx.get(f"{dso.ledger_url}/v1/regulation/{t}").json()["prices"]
        mine = next(r for r in runs if r["first"] <= t <= r["last"])
        assert (ledger["consumption"], ledger["production"]) == (
            mine["price_consumption"],
            mine["price_production"],
        )


def test_a_time_in_the_past_is_refused_with_a_clear_error(dso: Dso) -> None:
    answer = dso.call("PUT", "/tariff", json={"price_consumption": 1, "time": dso.now() - 1})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "regulation_in_past"
    assert "the earliest is" in error["message"]
    assert dso.ok("GET", "/regulations")["regulations"] == []  # nothing was signed


def _bill(dso: Dso, meter: str, key: Keypair, interval: int, **changes: object) -> Bill:
    """The bill of `interval` a correct meter would close now, with `changes` applied."""
    height = dso.ledger.head()
    assert height is not None
    values: dict[str, object] = {
        "chain": dso.scenario.chain,
        "meter": meter,
        "interval": interval,
        "closed_height": height.header.height,
        "measured_j": 3_600_000,
        "issued_epa_w": 0,
        "deposited_epa_w": 0,
        "fa_issued": 0,
        "fa_deposited": 0,
        "price_consumption": 250_000,
        "price_production": 60_000,
        "issues": (),
        "deposits": (),
    }
    values.update(changes)
    return sign_bill(close_bill(**values, interval_s=dso.scenario.interval_s), key)  # type: ignore[arg-type]


def test_bills_are_checked_stored_once_reconciled_and_exported(dso: Dso) -> None:
    key, home = Keypair.generate(), Keypair.generate()
    dso.ok("PUT", "/tariff", json={"price_consumption": 250_000, "price_production": 60_000})
    authorize(dso, "m7", key, max_epa=10_000, max_eca=10_000, owner="alice")
    t = dso.now()
    issued = dso.issue("m7", key, pay(Epa(700, t, t + 1), home), pay(Fa(5_000), home))
    # The prosumer deposits 300 W of EPA covering t at an address of its meter.
    deposit_address = Keypair.generate()
    transfer = dso.scenario.transfer(
        [Outpoint(issued.txid, 0)],
        [pay(Epa(300, t, t + 1), deposit_address), pay(Epa(400, t, t + 1), home)],
        home,
    )
    moved = dso.ledger.submit(encode_transaction(transfer))
    dso.wait_interval(t + 1)

    good = _bill(
        dso,
        "m7",
        key,
        t,
        issued_epa_w=700,
        deposited_epa_w=300,
        fa_issued=5_000,
        issues=(issued.txid,),
        deposits=(Outpoint(moved.txid, 0),),
    )
    posted = dso.http.post("/v1/bills", content=encode_bill(good))
    assert posted.status_code == 201, posted.text
    assert (posted.json()["status"], posted.json()["discrepancies"]) == ("reconciled", [])
    again = dso.http.post("/v1/bills", content=encode_bill(good))
    assert again.status_code == 200 and again.json()["duplicate"] is True

    other = _bill(dso, "m7", key, t, measured_j=1)
    conflict = dso.http.post("/v1/bills", content=encode_bill(other))
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "bill_conflict"
    [refusal] = [e for e in dso.ok("GET", "/audit")["entries"] if e["action"] == "bill.conflict"]
    assert (refusal["actor"], refusal["outcome"]) == ("meter:m7", "bill_conflict")

    forged = sign_bill(good, Keypair.generate())
    refused = dso.http.post("/v1/bills", content=encode_bill(forged))
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "bad_signature"

    # A meter that under-reports what it issued is flagged, with the ledger's figure.
    dso.wait_interval(t + 2)
    lying = _bill(
        dso,
        "m7",
        key,
        t + 1,
        issued_epa_w=0,
        deposited_epa_w=300,
        deposits=(Outpoint(moved.txid, 0),),
    )
    flagged = dso.http.post("/v1/bills", content=encode_bill(lying)).json()
    assert flagged["status"] == "flagged"
    assert {d["code"] for d in flagged["discrepancies"]} >= {
        "issued_epa_mismatch",
        "issues_mismatch",
    }

    statement = dso.ok(
        "GET", "/statements", "auditor", params={"owner": "alice", "first": t, "last": t + 1}
    )
    assert statement["total"] == good.amount + lying.amount
    assert statement["reconciled_total"] == good.amount
    assert statement["meters"] == [
        {"meter": "m7", "bills": 2, "amount": statement["total"], "unsettled": 1}
    ]

    exported = dso.call("GET", "/bills.csv", "auditor", params={"first": t, "last": t + 1})
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["interval"], r["status"], r["amount"]) for r in rows] == [
        (str(t), "reconciled", str(good.amount)),
        (str(t + 1), "flagged", str(lying.amount)),
    ]


def test_a_bill_naming_a_deposit_the_ledger_lacks_is_flagged(dso: Dso) -> None:
    key = Keypair.generate()
    authorize(dso, "m8", key, max_epa=10_000, max_eca=10_000)
    t = dso.now()
    dso.wait_interval(t + 1)  # a bill is for an interval that has ended
    ghost = Outpoint(bytes(32), 0)
    bill = _bill(
        dso,
        "m8",
        key,
        t,
        deposited_epa_w=500,
        deposits=(ghost,),
        price_consumption=None,
        price_production=None,
    )
    answer = dso.http.post("/v1/bills", content=encode_bill(bill)).json()
    assert answer["status"] == "flagged"
    assert "deposit_unknown" in {d["code"] for d in answer["discrepancies"]}


def test_the_controller_forecasts_from_the_ledger_and_its_proposal_becomes_a_regulation(
    dso: Dso,
) -> None:
    key = Keypair.generate()
    authorize(dso, "m9", key, max_epa=100_000, max_eca=100_000)
    t = dso.now()
    dso.issue("m9", key, pay(Eca(9_000, t, t + 50), key), pay(Epa(1_000, t, t + 50), key))
    forecast = dso.ok("GET", "/forecast", "auditor", params={"first": t + 1, "last": t + 2})
    assert [f["net_load_w"] for f in forecast["intervals"]] == [8_000, 8_000]

    policy = TEST_POLICY
    auditor = dso.call("PUT", "/controller", "auditor", json={"policy": policy})
    assert auditor.status_code == 403
    dso.ok("PUT", "/controller", "operator", json={"policy": policy})
    proposal = dso.ok("POST", "/controller/proposals", "operator")
    assert proposal["price_consumption"] > 200_000 and "above" in proposal["reason"]
    regulation = dso.ok("POST", f"/controller/proposals/{proposal['id']}/accept", "operator")
    assert regulation["transaction"]["price_consumption"] == proposal["price_consumption"]
    assert regulation["effective_from"] == proposal["interval"]
    again = dso.call("POST", f"/controller/proposals/{proposal['id']}/accept", "operator")
    assert again.status_code == 409


def test_every_change_is_in_the_audit_log_and_tampering_is_found(dso: Dso) -> None:
    dso.ok("PUT", "/tariff", "operator", json={"price_consumption": 1_000})
    made = dso.ok("POST", "/operators", json={"name": "carol", "role": "auditor"})
    entries = dso.ok("GET", "/audit", "auditor")["entries"]
    logged = [(e["actor"], e["action"], e["outcome"]) for e in entries]
    # Intervals are 2 s here: when one ends before the tariff's block is cut, the ledger
    # refuses it `regulation_in_past` and the DSO signs it again for the interval then current,
    # each attempt in the log.
    retried = [
        ("test-operator", "tariff.set", "regulation_in_past"),
        ("test-operator", "tariff.set", "submitted"),
    ]
    assert logged[0] == ("test-operator", "tariff.set", "submitted")
    assert logged[1:-2] == retried * ((len(logged) - 3) // 2)
    assert logged[-2:] == [
        ("test-operator", "tariff.set", "accepted"),
        ("test-admin", "operator.create", "ok"),
    ]
    assert all(made["token"] not in str(e) for e in entries)
    assert dso.ok("GET", "/audit/verify", "auditor") == {
        "entries": len(entries),
        "intact": True,
        "problem": None,
    }
    with dso.store.engine.begin() as conn, pytest.raises(Exception, match="append-only"):
        conn.exec_driver_sql("UPDATE dso_audit_log SET actor = 'mallory' WHERE seq = 1")
    with dso.store.engine.begin() as conn:  # someone with the database drops the guard
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER dso_audit_no_update")
        else:
            conn.exec_driver_sql("DROP TRIGGER dso_audit_append_only ON dso_audit_log")
        conn.exec_driver_sql("UPDATE dso_audit_log SET actor = 'mallory' WHERE seq = 1")
    verdict = dso.ok("GET", "/audit/verify", "auditor")
    assert verdict["intact"] is False and "entry 1" in verdict["problem"]


class StandInBook:
    """The bid store's open orders, until the bid store serves its book (dso/book.py)."""

    def __init__(self, orders: list[BookEntry]) -> None:
        self.orders = orders

    def open_orders(self) -> list[BookEntry]:
        return self.orders


def test_the_forecast_reports_the_book_beside_the_ledger(dso: Dso) -> None:
    t = dso.now()
    assert dso.ok("GET", "/forecast", params={"first": t, "last": t})["book"] == "none"
    dso.service.book = StandInBook([BookEntry("ask", 800, t + 1, t + 2, 90_000)])
    answer = dso.ok("GET", "/forecast", params={"first": t + 2, "last": t + 3})
    assert answer["book"] == "read"
    assert [(f["open_asks_w"], f["open_bids_w"]) for f in answer["intervals"]] == [
        (800, 0),
        (0, 0),
    ]


def test_in_automatic_mode_the_controller_sets_the_next_prices_itself(dso: Dso) -> None:
    policy = TEST_POLICY
    dso.ok("PUT", "/controller", "operator", json={"policy": policy, "auto": True})

    # A regulation is pending until the ledger answers it.
    def answered() -> list[dict[str, Any]] | None:
        found: list[dict[str, Any]] = dso.ok("GET", "/regulations")["regulations"]
        return found if found and all(r["status"] != "pending" for r in found) else None

    done = wait_until(
        answered, 10 * dso.scenario.interval_s, "the controller's regulation", interval_s=0.2
    )
    assert [(r["by"], r["status"]) for r in done] == [("controller", "accepted")]
    # Nothing is issued: the load is inside the band, so the prices are the policy's default.
    assert done[0]["transaction"]["price_consumption"] == 200_000
    proposals = dso.ok("GET", "/controller/proposals")["proposals"]
    assert proposals[0]["status"] == "accepted"


def test_a_regulation_made_while_the_ledger_is_down_is_kept_and_submitted_later(
    dso: Dso, tmp_path: Path
) -> None:
    stop(dso.ledger_process)
    body = {"meter": "m5", "public_key": "22" * 32, "max_epa": 1, "max_eca": 1, "owner": "eve"}
    answer = dso.call("POST", "/meters", json={**body, "time": dso.now() + 3})
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "ledger_unavailable"
    assert "kept pending" in answer.json()["error"]["message"]
    assert [r["status"] for r in dso.ok("GET", "/regulations")["regulations"]] == ["pending"]

    port = dso.ledger_url.rsplit(":", 1)[1]
    process = start_petra(
        *("ledger", "serve", "--genesis", str(tmp_path / "genesis.json")),
        *("--keys", str(tmp_path / "keys.json"), "--port", port),
        *("--store", f"sqlite:///{tmp_path / 'ledger.sqlite'}"),
        log=tmp_path / "ledger-again.log",
    )
    try:
        wait_serving(dso.ledger_url, process, tmp_path / "ledger-again.log")
        dso.service.resubmit_pending()
        [record] = dso.ok("GET", "/regulations")["regulations"]
        assert record["status"] == "accepted"
        assert dso.ledger.transaction(bytes.fromhex(record["txid"])) is not None
        # Accepted on a retry, it completes as if accepted at once: the owner is recorded
        # and the audit log has its outcome.
        assert dso.service.follower.wait_for(record["height"], 30)
        assert (
            dso.ok("GET", "/meters", params={"interval": record["time"] + 1})["meters"][0]["owner"]
            == "eve"
        )
        outcomes = [(e["action"], e["outcome"]) for e in dso.ok("GET", "/audit")["entries"]]
        assert outcomes == [("meter.authorize", "submitted"), ("meter.authorize", "accepted")]
    finally:
        stop(process)
