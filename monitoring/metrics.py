"""What an operator watches of the monitoring service: its metrics in the Prometheus text
format and its readiness (`/readyz`, answered without a session and naming no member's data).

The figures are read at scrape time from what the service already keeps: the samples each
ingestion path stored since the service started (the MQTT ingest's own count, `SampleTally`
for the emoncms input API), the refusals the store counts per path and reason (kept in the
database, so they count since the store was made, across restarts), the feeds, and when a
sample last arrived. A store that cannot be read drops only its figures from a scrape."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from sqlalchemy import func, select, text

from monitoring.store import feed, node
from service.health import Check
from service.metrics import ReadAtScrape, gauge

if TYPE_CHECKING:
    from monitoring.service import MonitorService

MQTT = "mqtt"  # the `via` of the samples the MQTT ingest stored
EMONCMS = "emoncms"  # the `via` of the samples posted to the emoncms input API


class SampleTally:
    """Samples stored per ingestion path (`via`) since the service started, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stored: Counter[str] = Counter()

    def add(self, via: str, count: int) -> None:
        """Count `count` samples `via` stored."""
        with self._lock:
            self._stored[via] += count

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stored)


def ingestion_metrics(service: MonitorService) -> Iterable[Metric]:
    """Samples stored per path, and the MQTT broker's link when the service ingests MQTT."""
    stored = service.samples.counts()
    if service.mqtt is not None:
        stored[MQTT] = stored.get(MQTT, 0) + service.mqtt.stored
    for via, ingest in service.ingests.items():
        stored[via] = stored.get(via, 0) + ingest.stored
    samples = CounterMetricFamily(
        "petra_monitor_samples",
        "Samples stored per ingestion path since the service started.",
        labels=["via"],
    )
    for via in sorted({EMONCMS, *stored}):
        samples.add_metric([via], stored.get(via, 0))
    yield samples
    if service.mqtt is not None:
        yield gauge(
            "monitor_broker_connected",
            "1 while the MQTT broker holds the service's subscriptions, else 0.",
            float(service.mqtt.connected),
        )


def store_metrics(service: MonitorService) -> Iterable[Metric]:
    """Refusals per path and reason, the feeds, and the age of the last sample stored."""
    refusals = CounterMetricFamily(
        "petra_monitor_refusals",
        "Messages, posts and readings refused, per ingestion path and reason code, since the "
        "store was made.",
        labels=["via", "code"],
    )
    for row in service.store.refusals():
        refusals.add_metric([row["source"], row["reason"]], row["count"])
    yield refusals
    with service.store.engine.connect() as conn:
        feeds = conn.scalar(select(func.count()).select_from(feed)) or 0
        last_seen = conn.scalar(select(func.max(node.c.last_seen)))
    yield gauge("monitor_feeds", "Feeds in the store.", feeds)
    if last_seen is not None:
        yield gauge(
            "monitor_last_sample_age_seconds",
            "Seconds since a sample last arrived by any path.",
            max(0.0, service.now() - last_seen),
        )


def register_monitor_metrics(registry: CollectorRegistry, service: MonitorService) -> None:
    """Read `service`'s figures into `registry` at each scrape."""
    registry.register(ReadAtScrape(lambda: ingestion_metrics(service), "the ingestion figures"))
    registry.register(ReadAtScrape(lambda: store_metrics(service), "the monitoring store"))


def monitor_checks(service: MonitorService) -> dict[str, Check]:
    """The service's readiness: its store answers, and its MQTT broker holds its
    subscriptions when it ingests MQTT."""
    checks: dict[str, Check] = {"store": lambda: store_problem(service)}
    if service.mqtt is not None:
        checks["broker"] = lambda: broker_problem(service)
    return checks


def store_problem(service: MonitorService) -> str | None:
    try:
        with service.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means the same to the operator
        return f"the monitoring database does not answer: {type(exc).__name__}"
    return None


def broker_problem(service: MonitorService) -> str | None:
    ingest = service.mqtt
    if ingest is None or ingest.connected:
        return None
    where = f"{ingest.settings.host}:{ingest.settings.port}"
    return f"not subscribed at the MQTT broker at {where}: samples sent over MQTT wait there"
