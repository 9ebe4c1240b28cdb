"""What an operator watches of the meter daemon: its metrics in the Prometheus text format and
its readiness (`/readyz` of the owner's API).

Every figure is read at scrape time from what the daemon's parts already keep (each source
runner's `SourceFigures`, the bill sender's deliveries, the publisher's acknowledgements, the
ledger index's height, the outbox in the store), so nothing is counted twice. Counters count
since the daemon started; ages are in ledger seconds (`service.clock`: wall seconds on a
real deployment). The readiness checks read the same state: none opens a connection of its own
to the ledger or the broker."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import text

from service.health import Check
from service.metrics import ReadAtScrape, gauge
from smartmeter.billing_loop import BILL_KIND
from smartmeter.energy import IntervalStatus

if TYPE_CHECKING:
    from smartmeter.node import MeterNode


def source_metrics(node: MeterNode) -> Iterable[Metric]:
    """The sources' figures, the bills sent, the ledger followed and the publishing."""
    age = GaugeMetricFamily(
        "petra_meter_reading_age_seconds",
        "Seconds since the source last stored a reading with values (since start if none yet).",
        labels=["source"],
    )
    readings = CounterMetricFamily(
        "petra_meter_readings", "Readings with values stored per source.", labels=["source"]
    )
    errors = CounterMetricFamily(
        "petra_meter_source_errors",
        "Polls a device did not answer, frames or payloads refused, readings the interval "
        "meter refused, per source.",
        labels=["source"],
    )
    connected = GaugeMetricFamily(
        "petra_meter_source_connected",
        "1 while the source's broker (MQTT) or device (Modbus) answers, else 0.",
        labels=["source"],
    )
    intervals = CounterMetricFamily(
        "petra_meter_intervals",
        "Intervals closed per source and state (measured, partial, suspect, missing).",
        labels=["source", "state"],
    )
    now = node.clock()
    for runner in node.runners:
        figures = runner.figures()
        age.add_metric([runner.name], max(0.0, now - figures.last_reading_at))
        readings.add_metric([runner.name], figures.readings)
        errors.add_metric([runner.name], figures.errors)
        connected.add_metric([runner.name], float(figures.connected))
        for state in IntervalStatus:
            intervals.add_metric([runner.name, state.value], figures.intervals.get(state.value, 0))
    yield from (age, readings, errors, connected, intervals)
    sent = CounterMetricFamily("petra_meter_bills_sent", "Bills the DSO took (201 or duplicate).")
    sent.add_metric([], node.sender.delivered)
    yield sent
    index = node.ledger_index
    yield gauge("meter_ledger_height", "The last ledger block the meter indexed.", index.height)
    yield gauge(
        "meter_ledger_lag_blocks",
        "Blocks the ledger had, when it last answered, beyond those the meter indexed.",
        node.ledger_watch.lag(index.height),
    )
    yield gauge(
        "meter_ledger_caught_up",
        "1 while the meter follows the ledger, the ledger answered lately and the meter is "
        "at most 10 blocks behind, else 0 (the readiness's ledger check).",
        float(ledger_problem(node) is None),
    )
    if node.publisher is not None:
        published = CounterMetricFamily(
            "petra_meter_published", "Reading messages the monitoring broker acknowledged."
        )
        published.add_metric([], node.publisher.published)
        yield published
        yield gauge(
            "meter_publisher_connected",
            "1 while the publisher is connected to the monitoring broker, else 0.",
            float(node.publisher.connected),
        )


def store_metrics(node: MeterNode) -> Iterable[Metric]:
    """The figures read from the meter's database: the bills the DSO has not acknowledged."""
    yield gauge(
        "meter_bills_queued",
        "Bills in the outbox the DSO has not acknowledged (conflicting ones included).",
        node.store.pending(BILL_KIND),
    )


def register_meter_metrics(registry: CollectorRegistry, node: MeterNode) -> None:
    """Read `node`'s figures into `registry` at each scrape; a store that cannot be read drops
    only the bill queue from that scrape."""
    registry.register(ReadAtScrape(lambda: source_metrics(node), "the meter's figures"))
    registry.register(ReadAtScrape(lambda: store_metrics(node), "the meter's bill queue"))


def meter_checks(node: MeterNode) -> dict[str, Check]:
    """The meter's readiness: its store answers, it follows the ledger, its MQTT links are up
    (when it has any) and every source was read within its `max_gap_s`."""
    checks: dict[str, Check] = {
        "store": lambda: store_problem(node),
        "ledger": lambda: ledger_problem(node),
    }
    if node.publisher is not None or any(runner.follows_broker for runner in node.runners):
        checks["broker"] = lambda: broker_problem(node)
    if node.runners:
        checks["sources"] = lambda: sources_problem(node)
    return checks


def store_problem(node: MeterNode) -> str | None:
    try:
        with node.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means the same to the operator
        return f"the meter's database does not answer: {type(exc).__name__}"
    return None


def ledger_problem(node: MeterNode) -> str | None:
    index = node.ledger_index
    if index.problem is not None:
        return f"the ledger index stopped on a block it cannot accept: {index.problem}"
    if index.last_error is not None:
        return f"the ledger at {node.config.ledger} cannot be read: {index.last_error}"
    return node.ledger_watch.problem(index.height)


def broker_problem(node: MeterNode) -> str | None:
    cut_off = [
        f"source {runner.name}"
        for runner in node.runners
        if runner.follows_broker and not runner.figures().connected
    ]
    if node.publisher is not None and not node.publisher.connected:
        publish = node.publisher.config
        cut_off.append(f"the publisher to {publish.host}:{publish.port}")
    if cut_off:
        return f"not connected to the MQTT broker: {', '.join(cut_off)}"
    return None


def sources_problem(node: MeterNode) -> str | None:
    now = node.clock()
    late = []
    for runner in node.runners:
        silent_s = now - runner.figures().last_reading_at
        if silent_s > runner.source.max_gap_s:
            late.append(f"{runner.name} for {silent_s:.0f} s (max_gap_s {runner.source.max_gap_s})")
    return f"no reading from {', '.join(late)}" if late else None
