"""Metrics in the Prometheus text format (prometheus-client), served on a port of their own.

Every service keeps its metrics in a registry of its own (`new_registry`), never the library's
global one: a process may hold several services (the simulation's in-process community, the
tests), and each must report only its own figures. The registry carries the process's own
figures too (`process_resident_memory_bytes`, `process_cpu_seconds_total`, ...).

The metrics are served on a separate port (`serve_metrics`), on loopback unless told
otherwise: what a service counts (rejections by code, pools, bills by status) is for its
operator's Prometheus, not for whoever reaches its API."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("petra.service.metrics")
NAMESPACE = "petra"  # every metric's name starts with petra_


def new_registry() -> CollectorRegistry:
    """A service's own registry, holding the process's figures (memory, CPU, open files)."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    return registry


class ReadAtScrape(Collector):
    """Gauges read from the service at each scrape instead of kept up to date as it runs:
    `read` returns the families (`GaugeMetricFamily`...) of figures the service already holds
    (a ledger's height, a pool count), so nothing is counted twice. A failed read is logged and
    leaves these figures out of that scrape rather than failing it."""

    def __init__(self, read: Callable[[], Iterable[Metric]], what: str) -> None:
        self.read = read
        self.what = what

    def collect(self) -> Iterable[Metric]:
        try:
            return list(self.read())
        except Exception as exc:  # a scrape must still answer with the other figures
            log.warning("cannot read %s for the metrics: %s", self.what, exc)
            return []


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    """One unlabelled gauge `petra_<name>` for a `ReadAtScrape`."""
    return GaugeMetricFamily(f"{NAMESPACE}_{name}", documentation, value=value)


@dataclass(slots=True)
class MetricsServer:
    """The metrics port being served: `port` is the one bound (useful when asked for 0)."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    """Serve `registry` at http://host:port/metrics from a daemon thread until `close`.
    OSError when the address is in use or not this machine's."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(host, int(server.server_address[1]), server, thread)
