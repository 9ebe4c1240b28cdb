"""The ledger node's metrics (docs/operations.md, "What to watch"): what the sequencer decided
about each transaction, counted where it decides, each block's latency and size, and figures
read at scrape time (height, tree size, open block streams, how far a replica is behind)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import Metric

from assets import Code
from ledger.head_watch import HeadWatch
from ledger.ledger import BlockResult, Ledger
from service.clock import now as ledger_now
from service.metrics import ReadAtScrape, gauge

# Seconds from a block's first transaction arriving to the block durable: group commit cuts a
# block within `sequencer.DEFAULT_MAX_WAIT_S`, so most land in the low buckets.
BLOCK_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BLOCK_TRANSACTIONS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)  # up to DEFAULT_MAX_BLOCK


class LedgerMetrics:
    """The ledger node's figures in `registry`: `ledger` read at scrape, `streams()` the
    block streams open now, `watch()` the replica's watch of its primary (None on a primary
    or before the replica follows)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        ledger: Ledger,
        streams: Callable[[], int],
        watch: Callable[[], HeadWatch | None],
        clock: Callable[[], float] = ledger_now,
    ) -> None:
        self.ledger = ledger
        self.streams = streams
        self.watch = watch
        self.clock = clock
        self.submitted = Counter(
            "petra_ledger_transactions_submitted",
            "Transactions the sequencer ordered into a block, accepted or not.",
            registry=registry,
        )
        self.accepted = Counter(
            "petra_ledger_transactions_accepted",
            "Transactions accepted onto the ledger.",
            registry=registry,
        )
        self.rejected = Counter(
            "petra_ledger_transactions_rejected",
            "Transactions the ledger rejected, by rejection code.",
            ["code"],
            registry=registry,
        )
        for code in Code:  # every code present from the start: a rate over it is defined
            self.rejected.labels(code=code.value)
        self.block_seconds = Histogram(
            "petra_ledger_block_seconds",
            "Block latency: seconds from a block's first transaction arriving to its outcome.",
            buckets=BLOCK_SECONDS,
            registry=registry,
        )
        self.block_transactions = Histogram(
            "petra_ledger_block_transactions",
            "Transactions in each block the sequencer cut, accepted or not.",
            buckets=BLOCK_TRANSACTIONS,
            registry=registry,
        )
        registry.register(ReadAtScrape(self._read, "the ledger's height"))

    def count_block(self, result: BlockResult, latency_s: float) -> None:
        """Count what the sequencer decided about one block's transactions (its writer thread)."""
        self.submitted.inc(len(result.outcomes))
        accepted = sum(1 for outcome in result.outcomes if outcome.accepted)
        self.accepted.inc(accepted)
        for outcome in result.outcomes:
            if outcome.code is not None:
                self.rejected.labels(code=outcome.code.value).inc()
        self.block_seconds.observe(latency_s)
        self.block_transactions.observe(len(result.outcomes))

    def _read(self) -> Iterable[Metric]:
        head = self.ledger.durable_head
        height = 0 if head is None else head.header.height
        yield gauge("ledger_height", "Height of the latest durable block.", height)
        yield gauge(
            "ledger_tree_size",
            "Transactions in the Merkle log (the latest durable head's tree size).",
            0 if head is None else head.header.tree_size,
        )
        yield gauge("ledger_streams", "Block streams (server-sent events) open.", self.streams())
        if head is not None:
            yield gauge(
                "ledger_last_block_age_seconds",
                "Ledger seconds since the latest durable block's time.",
                max(0.0, self.clock() - head.header.time),
            )
        watch = self.watch()
        if watch is None:
            return
        yield gauge(
            "ledger_replica_lag_blocks",
            "Blocks the primary had, at its last answer, beyond this replica's height.",
            watch.lag(height),
        )
        silence = watch.silence_s()
        if silence is not None:
            yield gauge(
                "ledger_primary_silence_seconds",
                "Seconds since the primary last answered this replica.",
                silence,
            )
