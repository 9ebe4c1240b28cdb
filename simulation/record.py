"""What a simulated community run leaves behind: the record the metrics are computed from.

Both modes fill one `RunRecord`: the multi-process harness reads it back from the nodes (the
ledger's blocks, the DSO's bills and forecast, the bid store's trades, the coordinator's
rounds), the in-process mode from the same objects without HTTP. The devices' profiles are
what the simulated meters were driven by. Nothing in it is an agent's claim about itself:
`agents` says only which strategy each home ran, so the report can group by it.

Units as DESIGN.md section 3: watts, joules, micro-units, unix seconds, interval indices.
A record is plain data and round-trips through JSON (`to_wire` / `from_wire`), so a report can
be redrawn from `record.json` without running anything again.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

RECORD_VERSION = 1


class PlannedHome(Protocol):
    """What a record takes from a home's plan (`simulation.profiles.HomePlan`)."""

    @property
    def name(self) -> str: ...
    @property
    def meter_id(self) -> str: ...
    @property
    def strategy(self) -> str: ...
    @property
    def load_w(self) -> Iterable[float]: ...
    @property
    def pv_w(self) -> Iterable[float]: ...
    @property
    def battery_w(self) -> Iterable[float]: ...


@dataclass(frozen=True, slots=True)
class HomeRecord:
    """One home: its meter, its owner's address (key 0 of its wallet), its strategy and the
    mean power of its devices over each simulated interval, `first_interval` onwards, in W:
    `load_w` consumption of the household, `pv_w` PV production (>= 0), `battery_w` the
    battery's power (charging positive), so the grid meter's net is load - pv + battery."""

    name: str
    meter_id: str
    owner: str
    strategy: str
    load_w: list[float]
    pv_w: list[float]
    battery_w: list[float]

    @classmethod
    def of_plan(cls, plan: PlannedHome, owner: str) -> HomeRecord:
        """The record of a planned home (`simulation.profiles.HomePlan`) whose owner is
        `owner` (hex address)."""
        return cls(
            name=plan.name,
            meter_id=plan.meter_id,
            owner=owner,
            strategy=plan.strategy,
            load_w=[float(v) for v in plan.load_w],
            pv_w=[float(v) for v in plan.pv_w],
            battery_w=[float(v) for v in plan.battery_w],
        )

    def net_w(self, k: int) -> float:
        """The grid connection's mean net power in the run's k-th interval (import positive)."""
        return self.load_w[k] - self.pv_w[k] + self.battery_w[k]


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One committed transaction in ledger order: the block's height and time (the
    sequencer's clock, unix seconds) and the transaction's wire object."""

    height: int
    time: int
    tx: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Submission:
    """A transaction a node of the run submitted to the ledger: when it was sent and when the
    ledger answered it committed (wall seconds, `time.monotonic` of the submitting process is
    not comparable across processes, so these are `time.time`), and the answer's code
    (`committed` or a rejection code)."""

    kind: str  # issue, transfer, regulate
    sent: float
    answered: float
    code: str


@dataclass(frozen=True, slots=True)
class MixRound:
    """A mixing round the coordinator ran: its peers, when it began and ended (wall seconds)
    and how it ended (`done`, or the blame or timeout that ended it)."""

    peers: int
    began: float
    ended: float
    outcome: str


@dataclass(frozen=True, slots=True)
class Trade:
    """A trade the bid store agreed and the ledger settled (`settled` False if not): the
    delivery interval, watts, the price in micro-units per kWh."""

    interval: int
    power_w: int
    price: int
    settled: bool


@dataclass(frozen=True, slots=True)
class Forecast:
    """The DSO controller's forecast of the community's net load for an interval, W, read
    before the interval began."""

    interval: int
    net_w: int


@dataclass
class RunRecord:
    """A whole run. `first_interval` to `last_interval` (inclusive) are the simulated ones;
    `wall_s` is how long the run took; `mode` is `processes` or `in-process`."""

    name: str
    mode: str
    seed: int
    genesis: dict[str, Any]
    first_interval: int
    last_interval: int
    price_consumption: int
    price_production: int
    mix_pool: int  # peers a mixing pool waits for (0: no mixing)
    tor: bool
    wall_s: float
    homes: list[HomeRecord]
    ledger: list[LedgerEntry] = field(default_factory=list)
    bills: list[dict[str, Any]] = field(default_factory=list)  # the DSO's, wire objects
    reconciled: dict[str, str] = field(default_factory=dict)  # bill id hex -> DSO status
    submissions: list[Submission] = field(default_factory=list)
    mix_rounds: list[MixRound] = field(default_factory=list)
    orders: int = 0  # orders the bid store took
    trades: list[Trade] = field(default_factory=list)
    forecasts: list[Forecast] = field(default_factory=list)
    # wall seconds each home's agent worked per interval (withdraw, mix, order, trade steps,
    # deposit): what an interval must last at least for the agents to keep up; processes only
    busy_s: list[float] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # the configuration, as resolved
    complete: bool = True  # False when the run was stopped before its horizon

    @property
    def interval_s(self) -> int:
        return int(self.genesis["interval_s"])

    @property
    def epoch(self) -> int:
        return int(self.genesis["epoch"])

    @property
    def intervals(self) -> range:
        return range(self.first_interval, self.last_interval + 1)

    def to_wire(self) -> dict[str, Any]:
        return {"v": RECORD_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> RunRecord:
        if wire.get("v") != RECORD_VERSION:
            raise ValueError(f"a run record of version {RECORD_VERSION} was expected")
        body = {k: v for k, v in wire.items() if k != "v"}
        body["homes"] = [HomeRecord(**h) for h in body["homes"]]
        body["ledger"] = [LedgerEntry(**e) for e in body["ledger"]]
        body["submissions"] = [Submission(**s) for s in body["submissions"]]
        body["mix_rounds"] = [MixRound(**r) for r in body["mix_rounds"]]
        body["trades"] = [Trade(**t) for t in body["trades"]]
        body["forecasts"] = [Forecast(**f) for f in body["forecasts"]]
        return cls(**body)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_wire(), separators=(",", ":")))

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        return cls.from_wire(json.loads(path.read_text()))
