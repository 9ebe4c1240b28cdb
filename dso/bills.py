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

from sqlalchemy import Connection

from assets import (
    MAX_BILL_BYTES,
    Bill,
    BillRejected,
    DepositFact,
    Genesis,
    IssuedFact,
    Outpoint,
    Output,
    bill_signature_valid,
    decode_bill,
    decode_bill_with_id,
)
from assets.codec import accepted_transaction, asset_from_wire
from dso import reconcile
from dso.chainstate import ChainState, IntervalClock
from dso.errors import DsoError, check_range
from dso.intake import IntakeQueue
from dso.ledger_index import DsoLedgerIndex
from dso.operators import Actor
from dso.store import ChainTransaction, DsoStore, IndexedTransaction, StoredBill, now_ms
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


@dataclass(frozen=True, slots=True)
class _Received:
    """A bill checked in the request's thread, on its way to the intake queue."""

    bill: Bill
    id: bytes
    raw: bytes


@dataclass(frozen=True, slots=True)
class _IndexFacts:
    """What the index holds for the bills of one batch: the meters' issues that may count
    (in ledger order), the transactions their deposits name, and the stored bills listing
    each of those deposits (bill id, meter, interval); `cache` keeps each body decoded once."""

    issues: dict[str, list[ChainTransaction]]
    txids: frozenset[bytes]  # the deposits' transactions of the bills reconciled
    indexed: dict[bytes, IndexedTransaction]
    listings: dict[Outpoint, list[tuple[bytes, str, int]]]
    cache: dict[bytes, tuple[Output, ...]]

    def decoded(self, txid: bytes, body: bytes) -> tuple[Output, ...]:
        """The outputs of the transaction `body` (none for a regulation): a body of the index,
        which the ledger accepted and the follower decoded, fields checked, as it indexed it."""
        if txid not in self.cache:
            self.cache[txid] = getattr(accepted_transaction(body), "outputs", ())
        return self.cache[txid]

    def outputs(self, issue: ChainTransaction) -> tuple[Output, ...]:
        return self.decoded(issue.txid, issue.body)


@dataclass(frozen=True, slots=True)
class _Stored:
    """What the intake queue did with one bill: `height` is the index height it reconciled
    against (a new bill closed above it is still pending)."""

    bill: StoredBill
    created: bool
    height: int


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
        self.intake: IntakeQueue[_Received, _Stored] = IntakeQueue(self._store_batch)

    # ------------------------------------------------------------- intake

    def intake_bill(self, raw: bytes) -> IntakeResult:
        """Check a meter's signed bill, store it once, and reconcile it if the index allows.

        The checks run in the caller's thread; storing and reconciling go through the intake
        queue, which does it for every bill arriving meanwhile in one database transaction."""
        received = self._checked(raw)
        result = self.intake.put(received)
        if result.created and result.bill.closed_height > result.height:
            # The index had not reached the bill's closing height: wait for it, as briefly.
            self.follower.wait_for(received.bill.closed_height, INTAKE_INDEX_WAIT_S)
            return IntakeResult(self.reconcile_bill(received.id), created=True)
        return IntakeResult(result.bill, result.created)

    def _checked(self, raw: bytes) -> _Received:
        """The bill `raw`, checked as far as it can be without the database; DsoError if not."""
        if len(raw) > MAX_BILL_BYTES:
            raise DsoError(413, "too_large", f"a bill is at most {MAX_BILL_BYTES} bytes")
        try:
            bill, the_id = decode_bill_with_id(raw)
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
        if not bill_signature_valid(bill, status.public_key, the_id):
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
        return _Received(bill, the_id, raw)

    def _store_batch(self, batch: Sequence[_Received]) -> list[_Stored | DsoError]:
        """Store the bills of `batch` that are new, and reconcile those whose closing height
        the index has reached, in one database transaction; each one's outcome, in order.
        Under the writer's turn nothing else stores a bill, so what is read first decides
        which bills are new, duplicates or in conflict."""
        height = self.follower.height  # before the transaction: it sees this much indexed
        outcomes: list[_Stored | DsoError] = []
        with self.store.writing() as conn:
            # A bill's id hashes its meter and interval: a stored bill with its id is the one
            # stored for its (meter, interval), which holds one bill at most.
            taken = self.store.bills_of_intervals(
                conn, sorted({(r.bill.meter, r.bill.interval) for r in batch})
            )
            owners = self.store.owners_of(conn, {r.bill.meter for r in batch})
            fresh: list[tuple[_Received, StoredBill]] = []
            for received in batch:
                bill = received.bill
                first = taken.get((bill.meter, bill.interval))
                if first is not None and first.id == received.id:
                    outcomes.append(_Stored(first, False, height))
                    continue
                if first is not None:
                    outcomes.append(self._conflict(conn, bill, received.id, first))
                    continue
                stored = StoredBill(
                    id=received.id,
                    meter=bill.meter,
                    interval=bill.interval,
                    owner=owners.get(bill.meter),
                    closed_height=bill.closed_height,
                    amount=bill.amount,
                    body=received.raw,
                    received_ms=now_ms(),
                    status="pending",
                    discrepancies=[],
                )
                taken[(bill.meter, bill.interval)] = stored
                fresh.append((received, stored))
                outcomes.append(_Stored(stored, True, height))
            # Reconciled before they are written, so each bill is written once, settled.
            final = {s.id: s for s in self._reconcile_fresh(conn, fresh, height)}
            self.store.add_bills(
                conn, [(final.get(stored.id, stored), r.bill.deposits) for r, stored in fresh]
            )
        return [
            o
            if isinstance(o, DsoError)
            else _Stored(final.get(o.bill.id, o.bill), o.created, height)
            for o in outcomes
        ]

    def _reconcile_fresh(
        self, conn: Connection, fresh: Sequence[tuple[_Received, StoredBill]], height: int
    ) -> list[StoredBill]:
        """The new bills of a batch the index allows checking, reconciled within `conn` (the
        batch's bills are not written yet: the deposits they list count as listed); a bill
        whose ledger facts cannot be read now stays pending (the retry loop checks it again)."""
        ready = [(r.bill, stored) for r, stored in fresh if r.bill.closed_height <= height]
        if not ready:
            return []
        facts = self._facts(conn, [bill for bill, _ in ready])
        for received, stored in fresh:
            for outpoint in received.bill.deposits:
                if outpoint.txid in facts.txids:
                    facts.listings.setdefault(outpoint, []).append(
                        (stored.id, stored.meter, stored.interval)
                    )
        settled: list[StoredBill] = []
        for bill, stored in ready:
            try:
                found = self._discrepancies(bill, stored.id, facts)
            except LedgerClientError as exc:
                log.warning("bill %s stays pending: %s", stored.id.hex(), exc)
                continue
            settled.append(self._settled(stored, bill, found))
        return settled

    @staticmethod
    def _settled(stored: StoredBill, bill: Bill, found: list[reconcile.Discrepancy]) -> StoredBill:
        status = "flagged" if found else "reconciled"
        wire = [{"code": d.code, "message": d.message} for d in found]
        if status == "flagged":
            log.warning("bill %s of meter %s is flagged: %s", stored.id.hex(), bill.meter, wire)
        return dataclasses.replace(stored, status=status, discrepancies=wire)

    def _conflict(self, conn: Connection, bill: Bill, the_id: bytes, first: StoredBill) -> DsoError:
        """Audit a bill refused because its meter has another one, `first`, for its interval
        (the entry is kept: it commits with the batch); the meter's answer."""
        detail = {"refused": the_id.hex(), "kept": first.id.hex()}
        self.store.audit(
            conn,
            f"meter:{bill.meter}",
            "meter",
            "bill.conflict",
            bill.meter,
            detail,
            "bill_conflict",
        )
        return DsoError(
            409,
            "bill_conflict",
            f"meter {bill.meter} has another bill for interval {bill.interval}: the first one is "
            "kept; a correction needs an operator",
        )

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
            with self.store.engine.connect() as conn:
                found = self._discrepancies(bill, the_id, self._facts(conn, [bill]))
        except LedgerClientError as exc:  # checked again by the retry loop
            log.warning("bill %s stays pending: %s", the_id.hex(), exc)
            return stored
        settled = self._settled(stored, bill, found)
        self.store.set_bill_status(the_id, settled.status, settled.discrepancies)
        return settled

    def _facts(self, conn: Connection, bills: Sequence[Bill]) -> _IndexFacts:
        """What the index holds, read within `conn`, that reconciling `bills` needs (the
        caller made sure the index reached each one's closing height)."""
        issues: dict[str, list[ChainTransaction]] = {}
        for stored in self.store.issues_of(
            conn,
            sorted({b.meter for b in bills}),
            min(b.interval for b in bills),
            max(b.interval for b in bills),
            max(b.closed_height for b in bills),
        ):
            issues.setdefault(stored.meter or "", []).append(stored)
        txids = sorted({o.txid for b in bills for o in b.deposits})
        if not txids:
            return _IndexFacts(issues, frozenset(), {}, {}, {})
        indexed = self.store.indexed_transactions(conn, txids)
        listings = self.store.listings(conn, txids)
        return _IndexFacts(issues, frozenset(txids), indexed, listings, {})

    def _discrepancies(
        self, bill: Bill, the_id: bytes, facts: _IndexFacts
    ) -> list[reconcile.Discrepancy]:
        """What `bill` disagrees with, from what the index holds up to the bill's closing
        height; a deposit of a transaction the index lacks is read from the ledger."""
        t = bill.interval
        issues = [
            IssuedFact(stored.txid, stored.height, stored.interval, facts.outputs(stored))
            for stored in facts.issues.get(bill.meter, ())
            if stored.height <= bill.closed_height
            and (
                stored.interval == t
                or (
                    stored.epa_first is not None
                    and stored.epa_last is not None
                    and stored.epa_first <= t <= stored.epa_last
                )
            )
        ]
        deposits: dict[Outpoint, DepositFact | None] = {}
        claimed: dict[Outpoint, list[tuple[str, int]]] = {}
        for outpoint in bill.deposits:
            found = facts.indexed.get(outpoint.txid)
            deposits[outpoint] = (
                self._deposit(outpoint, bill.closed_height)
                if found is None
                else self._indexed_deposit(outpoint, found, facts, bill.closed_height)
            )
            others = [(m, i) for b, m, i in facts.listings.get(outpoint, ()) if b != the_id]
            if others:
                claimed[outpoint] = others
        with self.state.lock:
            prices = self.state.schedule.prices_at(t)
        return reconcile.reconcile(
            bill,
            interval_s=self.genesis.interval_s,
            issues=issues,
            deposits=deposits,
            claimed_elsewhere=claimed,
            price_consumption=prices.consumption,
            price_production=prices.production,
        )

    def _indexed_deposit(
        self, outpoint: Outpoint, found: IndexedTransaction, facts: _IndexFacts, closed_height: int
    ) -> DepositFact | None:
        """The deposit `outpoint` of a transaction the index holds, as the ledger has it."""
        outputs = facts.decoded(outpoint.txid, found.body)
        if found.height > closed_height or outpoint.index >= len(outputs):
            return None
        interval = (found.time - self.genesis.epoch) // self.genesis.interval_s
        return DepositFact(outpoint, outputs[outpoint.index].asset, found.height, interval)

    def _deposit(self, outpoint: Outpoint, closed_height: int) -> DepositFact | None:
        """The deposit `outpoint` read from the ledger node: for a transaction the index lacks
        (none such, or indexed before transfers were kept)."""
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
