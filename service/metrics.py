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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("petra.service.metrics")
NAMESPACE = "petra"  # every metric's name starts with petra_


def new_registry(process: bool = True) -> CollectorRegistry:
    """A service's own registry, holding the process's figures (memory, CPU, open files)
    unless `process` is False (a part of a process whose registry holds them once:
    `labelled_registry`)."""
    registry = CollectorRegistry(auto_describe=True)
    if process:
        ProcessCollector(registry=registry)
    return registry


class Labelled(Collector):
    """The figures of several registries as one, each sample labelled `label` = the key of
    its registry in `parts`: one process serving several chains exposes each chain's figures
    under the same names, told apart by `chain`."""

    def __init__(self, label: str, parts: Mapping[str, CollectorRegistry]) -> None:
        self.label = label
        self.parts = dict(parts)

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for value, registry in self.parts.items():
            for family in registry.collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = Metric(family.name, family.documentation, family.type, family.unit)
                    families[family.name] = merged
                merged.samples.extend(
                    s._replace(labels={self.label: value, **s.labels}) for s in family.samples
                )
        return list(families.values())


def labelled_registry(label: str, parts: Mapping[str, CollectorRegistry]) -> CollectorRegistry:
    """A registry holding the process's figures once and every registry of `parts` (each
    made with `new_registry(process=False)`), its samples labelled `label` = its key."""
    registry = new_registry()
    registry.register(Labelled(label, parts))
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
