"""Bills: the meters' signed interval bills taken in, checked against the ledger
(`dso/reconcile.py`, pure), and shown per owner as statements and as CSV.

A bill is checked once the follower's index reaches the ledger height it closed at; until
then, or while the ledger cannot be asked, it stays pending and `reconcile_pending` checks it
again.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from assets import (
    MAX_BILL_BYTES,
    Bill,
    BillRejected,
    DepositFact,
    Genesis,
    Issue,
    IssuedFact,
    Outpoint,
    bill_id,
    bill_signature_valid,
    decode_bill,
)
from assets.codec import asset_from_wire, trusted_transaction
from dso import reconcile
from dso.chainstate import ChainState, IntervalClock
from dso.errors import DsoError, check_range
from dso.ledger_index import DsoLedgerIndex
from dso.operators import Actor
from dso.store import Conflict, DsoStore, StoredBill, now_ms
from ledger.client import LedgerClient, LedgerClientError

log = logging.getLogger("petra.dso")

INTAKE_INDEX_WAIT_S = 2.0  # how long a new bill waits for the index to reach its height
# How long after an interval ends its bills arrive: a meter closes a bill this long after the
# interval's end (smartmeter's default `closing_delay_s`; each meter may set its own, which the
# DSO is not told).
CLOSING_DELAY_S = 60


@dataclass(frozen=True, slots=True)
class IntakeResult:
    bill: StoredBill
    created: bool  # False: the very same bill was received before


class Bills:
    """The bills of `genesis`'s chain in `store`, checked against the ledger through `client`
    and what the follower indexed (`state`, `follower`)."""

    def __init__(
        self,
        store: DsoStore,
        client: LedgerClient,
        genesis: Genesis,
        chain: bytes,
        state: ChainState,
        follower: DsoLedgerIndex,
        clock: IntervalClock,
    ) -> None:
        self.store = store
        self.client = client
        self.genesis = genesis
        self.chain = chain
        self.state = state
        self.follower = follower
        self.clock = clock

    # ------------------------------------------------------------- intake

    def intake_bill(self, raw: bytes) -> IntakeResult:
        """Check a meter's signed bill, store it once, and reconcile it if the index allows."""
        if len(raw) > MAX_BILL_BYTES:
            raise DsoError(413, "too_large", f"a bill is at most {MAX_BILL_BYTES} bytes")
        try:
            bill = decode_bill(raw)
        except BillRejected as exc:
            raise DsoError(413 if exc.code == "too_large" else 400, exc.code, exc.message) from None
        if bill.chain != self.chain:
            raise DsoError(422, "wrong_chain", "the bill is for another chain than this DSO's")
        with self.state.lock:
            status = self.state.schedule.meter_at(bill.meter, bill.interval)
        if status is None or status.public_key is None:
            raise DsoError(
                401,
                "meter_unknown",
                f"meter {bill.meter} was not authorized at interval {bill.interval} "
                f"(as of ledger height {self.follower.height})",
            )
        if not bill_signature_valid(bill, status.public_key):
            raise DsoError(
                401,
                "bad_signature",
                f"the bill is not signed by meter {bill.meter}'s key in force at interval "
                f"{bill.interval}",
            )
        if bill.interval >= self.clock.now():
            raise DsoError(
                422,
                "interval_open",
                f"interval {bill.interval} has not ended (the current one is {self.clock.now()})",
            )
        the_id = bill_id(bill)
        existing = self.store.bill(the_id)
        if existing is not None:
            return IntakeResult(existing, created=False)
        owner = self.store.meter_owner(bill.meter)
        stored = StoredBill(
            the_id,
            bill.meter,
            bill.interval,
            owner,
            bill.closed_height,
            bill.amount,
            raw,
            now_ms(),
            "pending",
            [],
        )
        try:
            with self.store.writing() as conn:
                self.store.add_bill(conn, stored, bill.deposits)
        except Conflict as exc:
            first = self.store.bill_for(bill.meter, bill.interval)
            detail = {"refused": the_id.hex(), "kept": first.id.hex() if first else None}
            with self.store.writing() as conn:  # its own transaction: the refusal is kept
                self.store.audit(
                    conn,
                    f"meter:{bill.meter}",
                    "meter",
                    "bill.conflict",
                    bill.meter,
                    detail,
                    "bill_conflict",
                )
            raise DsoError(
                409,
                "bill_conflict",
                f"{exc}: the first one is kept; a correction needs an operator",
            ) from None
        self.follower.wait_for(bill.closed_height, INTAKE_INDEX_WAIT_S)
        return IntakeResult(self.reconcile_bill(the_id), created=True)

    # ------------------------------------------------------------- reconciliation

    def reconcile_bill(self, the_id: bytes) -> StoredBill:
        """Check a stored bill against the ledger; it stays pending until the index reaches
        its closing height."""
        stored = self.store.bill(the_id)
        if stored is None:
            raise DsoError(404, "not_found", f"no bill {the_id.hex()}")
        if stored.closed_height > self.follower.height:
            return stored
        bill = decode_bill(stored.body)
        try:
            found = self._discrepancies(bill, the_id)
        except LedgerClientError as exc:  # checked again by the retry loop
            log.warning("bill %s stays pending: %s", the_id.hex(), exc)
            return stored
        status = "flagged" if found else "reconciled"
        wire = [{"code": d.code, "message": d.message} for d in found]
        self.store.set_bill_status(the_id, status, wire)
        if status == "flagged":
            log.warning("bill %s of meter %s is flagged: %s", the_id.hex(), bill.meter, wire)
        return dataclasses.replace(stored, status=status, discrepancies=wire)

    def _discrepancies(self, bill: Bill, the_id: bytes) -> list[reconcile.Discrepancy]:
        issues = [
            IssuedFact(stored.txid, stored.height, stored.interval, _issue(stored.body).outputs)
            for stored in self.store.issues_counting(bill.meter, bill.interval, bill.closed_height)
        ]
        deposits: dict[Outpoint, DepositFact | None] = {}
        for outpoint in bill.deposits:
            deposits[outpoint] = self._deposit(outpoint, bill.closed_height)
        with self.state.lock:
            prices = self.state.schedule.prices_at(bill.interval)
        return reconcile.reconcile(
            bill,
            interval_s=self.genesis.interval_s,
            issues=issues,
            deposits=deposits,
            claimed_elsewhere=self.store.claims(bill.deposits, the_id),
            price_consumption=prices.consumption,
            price_production=prices.production,
        )

    def _deposit(self, outpoint: Outpoint, closed_height: int) -> DepositFact | None:
        found = self.client.output(outpoint.txid, outpoint.index)
        tx = self.client.transaction(outpoint.txid) if found is not None else None
        if found is None or tx is None or int(tx["height"]) > closed_height:
            return None
        height = int(tx["height"])
        block_time = self.store.block_times([height]).get(height)
        if block_time is None:
            return None
        interval = (block_time - self.genesis.epoch) // self.genesis.interval_s
        return DepositFact(outpoint, asset_from_wire(found["asset"]), height, interval)

    def reconcile_pending(self) -> int:
        """Reconcile the bills whose closing height the index has reached; how many."""
        count = 0
        for stored in self.store.bills(status="pending"):
            if stored.closed_height <= self.follower.height:
                count += self.reconcile_bill(stored.id).status != "pending"
        return count

    def reconcile_all(self, actor: Actor, first: int, last: int) -> dict[str, int]:
        """Check every bill of intervals first..last again (after a ledger repair, say)."""
        check_range(first, last)
        counts = {"reconciled": 0, "flagged": 0, "pending": 0}
        for stored in self.store.bills(first, last):
            counts[self.reconcile_bill(stored.id).status] += 1
        with self.store.writing() as conn:
            self.store.audit(
                conn, actor.name, actor.role, "bills.reconcile", f"{first}-{last}", counts
            )
        return counts

    # ------------------------------------------------------------- views

    def bills(
        self,
        first: int,
        last: int,
        meter: str | None = None,
        owner: str | None = None,
        status: str | None = None,
    ) -> list[StoredBill]:
        """The bills of intervals first..last, of one meter, owner or status if given."""
        check_range(first, last)
        return self.store.bills(first, last, meter, owner, status)

    def bill(self, the_id: bytes) -> StoredBill:
        """The bill `the_id`, or 404."""
        stored = self.store.bill(the_id)
        if stored is None:
            raise DsoError(404, "not_found", f"no bill {the_id.hex()}")
        return stored

    def statement(self, owner: str, first: int, last: int) -> dict[str, Any]:
        """What `owner` owes over intervals first..last, per meter, and which bills are not
        settled yet (pending or flagged)."""
        found = self.bills(first, last, owner=owner)
        meters: dict[str, dict[str, int]] = {}
        for stored in found:
            line = meters.setdefault(stored.meter, {"bills": 0, "amount": 0, "unsettled": 0})
            line["bills"] += 1
            line["amount"] += stored.amount
            line["unsettled"] += stored.status != "reconciled"
        return {
            "owner": owner,
            "first": first,
            "last": last,
            "currency": self.genesis.currency,
            "total": sum(s.amount for s in found),
            "reconciled_total": sum(s.amount for s in found if s.status == "reconciled"),
            "meters": [{"meter": m, **v} for m, v in sorted(meters.items())],
            "bills": [bill_to_wire(s) for s in found],
        }

    def bills_csv(self, found: Sequence[StoredBill]) -> str:
        """The bills as CSV, one row each, with every figure of the bill."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for stored in found:
            bill = decode_bill(stored.body)
            writer.writerow(
                [
                    stored.id.hex(),
                    _csv_text(bill.meter),
                    _csv_text(stored.owner or ""),
                    bill.interval,
                    self.clock.interval_start(bill.interval).isoformat(),
                    bill.closed_height,
                    bill.measured_j,
                    bill.issued_epa_w,
                    bill.deposited_epa_w,
                    bill.fa_issued,
                    bill.fa_deposited,
                    bill.energy_j,
                    "" if bill.price_consumption is None else bill.price_consumption,
                    "" if bill.price_production is None else bill.price_production,
                    bill.amount,
                    stored.status,
                    " ".join(d["code"] for d in stored.discrepancies),
                ]
            )
        return out.getvalue()


def bill_to_wire(stored: StoredBill) -> dict[str, Any]:
    """A stored bill and its reconciliation as the API shows it (`dso.schemas.BillView`)."""
    return {
        "id": stored.id.hex(),
        "meter": stored.meter,
        "owner": stored.owner,
        "interval": stored.interval,
        "closed_height": stored.closed_height,
        "amount": stored.amount,
        "status": stored.status,
        "discrepancies": stored.discrepancies,
        "received_ms": stored.received_ms,
        "bill": json.loads(stored.body),
    }


CSV_COLUMNS = [
    "bill_id",
    "meter",
    "owner",
    "interval",
    "interval_start_utc",
    "closed_height",
    "measured_j",
    "issued_epa_w",
    "deposited_epa_w",
    "fa_issued",
    "fa_deposited",
    "energy_j",
    "price_consumption",
    "price_production",
    "amount",
    "status",
    "discrepancies",
]


def _csv_text(value: str) -> str:
    # A spreadsheet would run a cell starting with one of these as a formula.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _issue(body: bytes) -> Issue:
    tx = trusted_transaction(body)
    assert isinstance(tx, Issue)
    return tx
