"""What the DSO node keeps in memory of the ledger's regulations and issues, as its follower
(`dso/ledger_index.py`) indexes them, and the DSO's clock in intervals. Shared by the regulation,
billing and grid domains of the node; each takes them explicitly."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from assets import Eca, Epa, Genesis, Issue, Regulate
from dso import controller
from dso.store import ChainTransaction
from ledger.schedule import RegulationSchedule
from service.clock import wall_seconds_until


class ChainState:
    """The regulation schedule in force and every energy asset issued, by meter, guarded by
    `lock` (the follower's thread writes them, requests read them)."""

    def __init__(self) -> None:
        self.schedule = RegulationSchedule()
        self.issued: list[tuple[str, controller.IssuedPower]] = []
        self.lock = threading.RLock()

    def on_transaction(self, stored: ChainTransaction, tx: Issue | Regulate) -> None:
        """The follower indexed `tx`: apply a regulation, remember an issue's EPA and ECA."""
        with self.lock:
            if isinstance(tx, Regulate):
                self.schedule.apply(tx, stored.seq)
                return
            for output in tx.outputs:
                asset = output.asset
                if isinstance(asset, Epa | Eca):
                    power = controller.IssuedPower(asset.kind, asset.power, asset.start, asset.end)
                    self.issued.append((tx.meter, power))


@dataclass(frozen=True, slots=True)
class IntervalClock:
    """The intervals of `genesis` by `clock` (ledger unix seconds; tests move it)."""

    genesis: Genesis
    clock: Callable[[], float]

    def now(self) -> int:
        """The interval the DSO's clock is in."""
        return (int(self.clock()) - self.genesis.epoch) // self.genesis.interval_s

    def seconds_to_next(self) -> float:
        """Wall seconds until the next interval starts by `clock`."""
        return wall_seconds_until(self.genesis.interval_start(self.now() + 1), self.clock)

    def interval_start(self, interval: int) -> datetime:
        """When `interval` starts, in UTC."""
        return datetime.fromtimestamp(
            self.genesis.epoch + interval * self.genesis.interval_s, tz=UTC
        )
