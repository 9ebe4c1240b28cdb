"""The DSO node's metrics (docs/operations.md, "What to watch"): bills taken in and refused,
counted where the node decides, and figures read at scrape time: bills by status (one grouped
query of its store), the ledger height its index followed and how far behind the ledger's head
that is, and the meters authorized and banned now."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select

from dso.chainstate import ChainState, IntervalClock
from dso.ledger_index import DsoLedgerIndex
from dso.store import DsoStore, bills
from ledger import HeadWatch
from service.metrics import ReadAtScrape, gauge

BILL_STATUSES = ("pending", "reconciled", "flagged")  # each present from the start, at 0
# The codes `Bills.intake_bill` refuses a bill with (`dso/bills.py`): a bounded label set.
BILL_REFUSALS = (
    "too_large",
    "malformed",
    "wrong_chain",
    "meter_unknown",
    "bad_signature",
    "interval_open",
    "bill_conflict",
)


def bills_by_status(store: DsoStore) -> dict[str, int]:
    """How many bills `store` holds in each status: one grouped query."""
    query = select(bills.c.status, func.count()).group_by(bills.c.status)
    with store.engine.connect() as conn:
        return {str(row[0]): int(row[1]) for row in conn.execute(query)}


def meters_in_force(state: ChainState, interval: int) -> tuple[int, int]:
    """(authorized, banned) meters at `interval` by the regulations indexed in `state`."""
    authorized = banned = 0
    with state.lock:
        for meter in state.schedule.meters():
            status = state.schedule.meter_at(meter, interval)
            if status is None:
                continue
            if status.banned:
                banned += 1
            elif status.public_key is not None:
                authorized += 1
    return authorized, banned


class DsoMetrics:
    """The DSO node's figures in `registry`, read from its `store`, `follower`, `state` and
    `watch` of the ledger's head; `intervals` says which interval is now."""

    def __init__(
        self,
        registry: CollectorRegistry,
        store: DsoStore,
        follower: DsoLedgerIndex,
        state: ChainState,
        intervals: IntervalClock,
        watch: HeadWatch,
    ) -> None:
        self.store = store
        self.follower = follower
        self.state = state
        self.intervals = intervals
        self.watch = watch
        self.received = Counter(
            "petra_dso_bills_received",
            "Bills taken in and stored (a bill received again is not counted twice).",
            registry=registry,
        )
        self.refused = Counter(
            "petra_dso_bill_refusals",
            "Bills refused at intake, by refusal code.",
            ["code"],
            registry=registry,
        )
        for code in BILL_REFUSALS:
            self.refused.labels(code=code)
        registry.register(ReadAtScrape(self._read_bills, "the DSO's bills by status"))
        registry.register(ReadAtScrape(self._read_ledger, "the DSO's index of the ledger"))

    def refusal(self, code: str) -> None:
        """Count a refused bill; a code outside `BILL_REFUSALS` counts as `other`, so that
        the label set stays bounded."""
        self.refused.labels(code=code if code in BILL_REFUSALS else "other").inc()

    def _read_bills(self) -> Iterable[Metric]:
        counts = dict.fromkeys(BILL_STATUSES, 0) | bills_by_status(self.store)
        family = GaugeMetricFamily(
            "petra_dso_bills", "Bills in the DSO's store, by status.", labels=["status"]
        )
        for status, count in sorted(counts.items()):
            family.add_metric([status], count)
        yield family

    def _read_ledger(self) -> Iterable[Metric]:
        height = self.follower.height
        yield gauge("dso_ledger_height", "Height of the last ledger block indexed.", height)
        yield gauge(
            "dso_ledger_lag_blocks",
            "Blocks the ledger had, at its last answer, beyond the height indexed.",
            self.watch.lag(height),
        )
        silence = self.watch.silence_s()
        if silence is not None:
            yield gauge(
                "dso_ledger_silence_seconds", "Seconds since the ledger last answered.", silence
            )
        authorized, banned = meters_in_force(self.state, self.intervals.now())
        yield gauge("dso_meters_authorized", "Meters authorized and not banned now.", authorized)
        yield gauge("dso_meters_banned", "Meters banned now.", banned)
