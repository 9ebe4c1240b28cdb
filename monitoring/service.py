"""What the monitoring service's routes share: the store, the clock, and how it is served
(whether its cookies need HTTPS). Routes are thin over it; ingestion and figures live in
their own modules."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from monitoring.store import MonitoringStore


@dataclass
class MonitorService:
    """`secure_cookies`: send session cookies with `Secure` (set it when served over HTTPS;
    plain loopback HTTP cannot carry them). `clock`: unix seconds, the test's or the wall's."""

    store: MonitoringStore
    secure_cookies: bool = False
    clock: Callable[[], float] = field(default=time.time)

    def now(self) -> float:
        return self.clock()
