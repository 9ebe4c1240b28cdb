"""The bid store's metrics (docs/operations.md): open orders by side, trades by the status they
entered and the ledger as the store follows it, read at each scrape from what the store holds;
orders posted by outcome and refusals by code, counted as they happen. Counts only: no order,
owner or asset."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bidstore.orders import OrderSide
from bidstore.trades import TradeStatus
from ledger import HeadWatch
from service.metrics import ReadAtScrape, gauge

ORDER_OUTCOMES = ("accepted", "refused")


class BidStoreMetrics:
    """The store's figures in `registry`. Read at each scrape: `open_orders` (open orders by
    side), `trades_entered` (trades that entered each status since start), `indexed` (the
    last block the store followed, None before it follows) and `watch` (the ledger's head as
    last seen)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        open_orders: Callable[[], Mapping[OrderSide, int]],
        trades_entered: Callable[[], Mapping[TradeStatus, int]],
        indexed: Callable[[], int | None],
        watch: HeadWatch,
    ) -> None:
        self.open_orders, self.trades_entered = open_orders, trades_entered
        self.indexed, self.watch = indexed, watch
        self.orders = Counter(
            "petra_bidstore_orders",
            "Orders posted, by outcome: accepted into the book or refused.",
            ["outcome"],
            registry=registry,
        )
        self.refusals = Counter(
            "petra_bidstore_refusals",
            "Requests the store refused, by error code (rate limits and busy included).",
            ["code"],
            registry=registry,
        )
        for outcome in ORDER_OUTCOMES:  # both show from the start, at 0
            self.orders.labels(outcome)
        registry.register(ReadAtScrape(self._read, "the bid store's book and trades"))

    def refused(self, code: str) -> None:
        """Count a refusal of code `code`."""
        self.refusals.labels(code).inc()

    def _read(self) -> Iterable[Metric]:
        # Named without _total: a counter family adds it, and the registry must not see the
        # name twice (the Counter above is petra_bidstore_orders_total).
        book = GaugeMetricFamily(
            "petra_bidstore_open_orders", "Open orders in the book now, by side.", labels=["side"]
        )
        counts = self.open_orders()
        for side in OrderSide:
            book.add_metric([str(side)], counts.get(side, 0))
        yield book
        trades = CounterMetricFamily(
            "petra_bidstore_trades",
            "Trades that entered each status (open: made by a take or an auction).",
            labels=["status"],
        )
        entered = self.trades_entered()
        for status in TradeStatus:
            trades.add_metric([str(status)], entered.get(status, 0))
        yield trades
        indexed = self.indexed()
        if indexed is not None:
            yield gauge(
                "bidstore_ledger_height", "The last ledger block the store followed.", indexed
            )
            yield gauge(
                "bidstore_ledger_lag_blocks",
                "Blocks the store is behind the ledger's head as last seen.",
                self.watch.lag(indexed),
            )
        age = self.watch.silence_s()
        if age is not None:
            yield gauge(
                "bidstore_ledger_contact_age_seconds",
                "Seconds since the ledger last answered the store.",
                age,
            )
