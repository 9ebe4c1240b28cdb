"""What the monitoring service's routes share: the store, the clock, and how it is served
(whether its cookies need HTTPS); the MQTT ingestion when it runs, and the service's metrics.
Routes are thin over it; ingestion and figures live in their own modules."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry

from monitoring.metrics import SampleTally, register_monitor_metrics
from monitoring.store import MonitoringStore
from service.metrics import new_registry

if TYPE_CHECKING:
    from monitoring.mqtt_ingest import MqttIngest


class Storing(Protocol):
    """An ingestion the service runs (the Modbus poller, the daily Datadis fetch): how many
    samples it stored since start."""

    @property
    def stored(self) -> int: ...


@dataclass
class MonitorService:
    """`secure_cookies`: send session cookies with `Secure` (set it when served over HTTPS;
    plain loopback HTTP cannot carry them). `clock`: unix seconds, the test's or the wall's.
    `mqtt`: the MQTT ingestion the service runs, if its configuration has one (its broker
    link is part of the readiness, its samples of the metrics); `ingests`: the other
    ingestions it runs, by path (`modbus`, `datadis`), counted in the metrics. `registry` holds the
    service's metrics (`monitoring.metrics`); `samples` counts the samples stored by the paths
    that run inside the service's requests (the emoncms input API)."""

    store: MonitoringStore
    secure_cookies: bool = False
    clock: Callable[[], float] = field(default=time.time)
    mqtt: MqttIngest | None = None
    ingests: Mapping[str, Storing] = field(default_factory=dict)
    registry: CollectorRegistry = field(init=False, repr=False)
    samples: SampleTally = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.samples = SampleTally()
        self.registry = new_registry()
        register_monitor_metrics(self.registry, self)

    def now(self) -> float:
        return self.clock()
