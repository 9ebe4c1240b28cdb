"""The meter's billing loop: close each interval's bill once the interval is over, queue it in
the meter's durable outbox, and send the queue to the DSO until the DSO has every bill.

Closing (`close_due_bills`) is idempotent: a bill is queued under the outbox key
`bill/<meter>/<interval>` once, ever, so calling it again (or after a crash between queueing
and moving the cursor) queues nothing twice. A cursor in the meter's named state (`billing/
<meter>/next`, the first interval not billed yet) keeps each call's scan short.

Which intervals are billed, once their end + `closing_delay_s` has passed (the delay is the
time the sources get to close them): every interval whose status is `measured`, `partial` or
`suspect`, with M_t = the sources' total `net_j`, because a bill must exist for every interval
(the ledger's issues and deposits count in it whatever the measurement). An interval that is
`missing` is billed only when it is final, that is when every source has stored it (a gap a
source closed as `missing`: M_t is what the others measured; the gap's energy stays
unattributed, never invented); while a source has not closed it, it waits, and so does the
cursor. The DSO's bill has no field for the status, so the DSO cannot tell a `suspect` or
`missing` interval from a measured one: the meter logs a warning for each, with its reasons.
While an interval waits, the intervals after it are still billed, but each call rebuilds and
re-signs their bills only to find them queued (the cursor cannot pass the waiting one).

Sending (`BillSender.send_due`): a 201 or a 200 (`duplicate`: the DSO has this very bill) is
a delivery; an unreachable DSO, a 5xx or a 429 is retried with exponential backoff; any other
refusal (`bad_signature`, `meter_unknown`, `interval_open`, ...) is logged and retried after
`REFUSED_RETRY_S`, since most of them mean the DSO's view of the ledger is behind; a 409
`bill_conflict` is final (the DSO keeps the first bill for the interval and only an operator
can correct it): it is logged as an error and parked, still undelivered (so `pending` counts
it and an operator sees it with its reason), never retried.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from assets import Keypair, bill_of_interval, encode_bill, sign_bill
from dso.client import DsoClient, DsoClientError
from ledger.block_follower import FollowerStopped
from ledger.client import LedgerClientError
from smartmeter.energy import IntervalStatus
from smartmeter.ledger_index import MeterLedgerIndex
from smartmeter.store import MeterStore, OutboxMessage

log = logging.getLogger(__name__)

BILL_KIND = "bill"
FIRST_RETRY_S = 1.0  # after the first failed attempt; doubled after each further one
MAX_RETRY_S = 300.0
REFUSED_RETRY_S = 900.0  # a refusal other than a conflict: the DSO's index may be behind
PARKED_S = 100 * 365 * 86_400.0  # a conflicting bill: never again, short of an operator


def bill_key(meter_id: str, interval: int) -> str:
    """The outbox key of `meter_id`'s bill for `interval`: one bill per interval, ever."""
    return f"bill/{meter_id}/{interval}"


def _cursor_name(meter_id: str) -> str:
    return f"billing/{meter_id}/next"


def close_due_bills(
    *,
    store: MeterStore,
    ledger_index: MeterLedgerIndex,
    chain: bytes,
    meter_id: str,
    meter_key: Keypair,
    interval_s: int,
    epoch: int,
    closing_delay_s: float,
    now: float,
    sources: Sequence[str] | None = None,
) -> list[int]:
    """Queue the signed bill of every interval ended at least `closing_delay_s` seconds before
    `now` (unix seconds) and not billed before; the intervals billed by this call, in order.
    `sources` are the meter's configured sources (default: every source that ever stored an
    interval; pass them, or a source removed from the configuration holds back every
    `missing` interval after its last one).

    Bills count the ledger as it stands when they close: before closing any, the ledger index
    catches up with the ledger in this thread (one read when it is current), and `closed_height`
    is its height then. A block is stamped when it is made, so every block of an interval that
    ended `closing_delay_s` ago is on the ledger by then; a streamed index that lags (a loaded
    machine, a stream being re-opened) would otherwise close the bill without it, and an FA
    deposit of that interval would be counted in no bill at all. Nothing is billed while the
    ledger index has stopped on a bad block or cannot read the ledger: a bill closed on a stale
    view would leave out the interval's issues and deposits.
    """
    if ledger_index.problem is not None or ledger_index.last_error is not None:
        log.warning(
            "not closing bills: the ledger index is %s",
            f"stopped ({ledger_index.problem})"
            if ledger_index.problem
            else f"behind ({ledger_index.last_error})",
        )
        return []
    last = math.floor((now - closing_delay_s - epoch) / interval_s) - 1
    first = store.get_state(_cursor_name(meter_id))
    if first is None:
        first = store.first_interval(sources)
        if first is None:
            return []
    if last < first:
        return []
    try:
        ledger_index.poll()
    except (LedgerClientError, FollowerStopped) as exc:
        log.warning("not closing bills: the ledger index cannot catch up (%s)", exc)
        return []
    if sources is None:
        sources = store.interval_sources()
    stored_by = store.sources_per_interval(first, last, sources)
    closed_height = ledger_index.height
    billed: list[int] = []
    waiting: int | None = None
    for total in store.intervals(first, last, sources):
        t = total.interval
        if total.status is IntervalStatus.MISSING and stored_by.get(t, 0) < len(sources):
            waiting = t if waiting is None else waiting
            continue
        if total.status is not IntervalStatus.MEASURED:
            log.warning(
                "billing interval %d, %s, as measured (the bill has no status): %s",
                *(t, total.status, "; ".join(total.reasons) or "no reason given"),
            )
        prices = ledger_index.prices_at(t)
        bill = bill_of_interval(
            chain=chain,
            meter=meter_id,
            interval=t,
            interval_s=interval_s,
            closed_height=closed_height,
            measured_j=total.net_j,
            issues=ledger_index.issues(closed_height),
            deposits=ledger_index.deposits(closed_height),
            price_consumption=prices.consumption,
            price_production=prices.production,
        )
        raw = encode_bill(sign_bill(bill, meter_key))
        if store.enqueue(BILL_KIND, bill_key(meter_id, t), raw):
            billed.append(t)
    if waiting is not None:
        log.info("interval %d waits for a source to close it; billing resumes from there", waiting)
    store.put_state(_cursor_name(meter_id), last + 1 if waiting is None else waiting)
    return billed


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What one `send_due` did: how many bills the DSO now has, how many will be tried again,
    how many were parked for good (a `bill_conflict`)."""

    delivered: int = 0
    retrying: int = 0
    parked: int = 0


class BillSender:
    """Sends the queued bills in `store` to the DSO through `client`; the daemon calls
    `send_due` from its loop (one caller at a time). Retries of an unreachable DSO wait
    `first_retry_s` seconds, doubled per failed attempt up to `max_retry_s`."""

    def __init__(
        self,
        store: MeterStore,
        client: DsoClient,
        *,
        first_retry_s: float = FIRST_RETRY_S,
        max_retry_s: float = MAX_RETRY_S,
    ) -> None:
        self.store = store
        self.client = client
        self.first_retry_s = first_retry_s
        self.max_retry_s = max_retry_s
        self.delivered = 0  # bills the DSO took since this sender was made

    def send_due(self, limit: int = 100) -> SendOutcome:
        """Post each bill whose next attempt is due (at most `limit`), oldest first."""
        delivered = retrying = parked = 0
        for message in self.store.due(BILL_KIND, limit):
            try:
                self.client.post_bill(message.body)
            except DsoClientError as exc:
                if self._refused(message, exc):
                    parked += 1
                else:
                    retrying += 1
                continue
            except ValueError as exc:  # a success or refusal whose body is not JSON
                self._retry(message, f"protocol: the DSO's answer is not JSON ({exc})")
                retrying += 1
                continue
            self.store.delivered(message.id)
            delivered += 1
            self.delivered += 1
        return SendOutcome(delivered, retrying, parked)

    def _refused(self, message: OutboxMessage, exc: DsoClientError) -> bool:
        """Record the failed attempt; True if the bill is parked for good."""
        reason = f"{exc.code}: {exc.message}" if exc.message else exc.code
        if exc.status == 409 and exc.code == "bill_conflict":
            log.error(
                "the DSO holds a different bill for %s and keeps it; this one is parked, "
                "an operator must settle it: %s",
                *(message.key, reason),
            )
            self.store.failed(message.id, reason, PARKED_S)
            return True
        if exc.status == 0 or exc.status == 429 or exc.status >= 500:
            self._retry(message, reason)
        else:
            log.warning(
                "the DSO refused %s (HTTP %d), retrying in %.0f s: %s",
                *(message.key, exc.status, REFUSED_RETRY_S, reason),
            )
            self.store.failed(message.id, reason, REFUSED_RETRY_S)
        return False

    def _retry(self, message: OutboxMessage, reason: str) -> None:
        backoff = self.first_retry_s * 2.0 ** min(message.attempts, 30)
        retry_in_s = min(self.max_retry_s, backoff)
        log.info("cannot deliver %s, retrying in %.0f s: %s", message.key, retry_in_s, reason)
        self.store.failed(message.id, reason, retry_in_s)
