"""The DSO node, between the HTTP layer (`dso/api.py`) and the pure core: a thin facade that
wires the node's domains and runs their threads.

- `dso/operators.py`: tokens, operators and the audit log;
- `dso/regulation.py`: regulations signed with the DSO key and submitted to the ledger, the
  resubmission of pending ones, the views of meters and the schedule;
- `dso/bills.py`: bill intake, reconciliation, statements, CSV;
- `dso/grid.py`: the grid controller (forecast, policy, proposals) and its automatic loop.

They share, passed explicitly: the store, what the follower indexed (`dso/chainstate.py`: the
regulation schedule and issued assets under one lock), the follower and the interval clock.
Every change is written to the audit log in the same database transaction as the change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from assets import Genesis, Keypair, chain_id
from dso import controller
from dso.auth import Permission
from dso.bills import CLOSING_DELAY_S, Bills, IntakeResult, bill_to_wire
from dso.chainstate import ChainState, IntervalClock
from dso.errors import MAX_VIEW_INTERVALS, DsoError, Throttled
from dso.grid import BookSource, GridController
from dso.ledger_index import DsoLedgerIndex
from dso.metrics import DsoMetrics
from dso.operators import Actor, Operators
from dso.regulation import Regulation, regulation_to_wire
from dso.store import DsoStore, Operator, Proposal, RegulationRecord, StoredBill
from dso.throttle import TokenThrottle
from ledger import HeadWatch
from ledger.client import LedgerClient
from ledger.schedule import RegulationSchedule
from service.clock import now as ledger_now
from service.health import Check
from service.metrics import new_registry

__all__ = [
    "MAX_VIEW_INTERVALS",
    "Actor",
    "BookSource",
    "DsoError",
    "DsoService",
    "IntakeResult",
    "Throttled",
]

log = logging.getLogger("petra.dso")

RESUBMIT_S = 5.0  # how often pending regulations and pending bills are tried again


class DsoService:
    """The DSO node. `clock` gives ledger unix seconds (`service.clock`; tests move it)."""

    def __init__(
        self,
        store: DsoStore,
        client: LedgerClient,
        genesis: Genesis,
        dso_key: Keypair,
        *,
        book: BookSource | None = None,
        clock: Callable[[], float] = ledger_now,
        throttle: TokenThrottle | None = None,
    ) -> None:
        if dso_key.public_key not in genesis.dso_keys:
            raise ValueError("the DSO key is not one of the genesis's DSO keys")
        self.store = store
        self._client = client
        self.genesis = genesis
        self.chain = chain_id(genesis)
        self._key = dso_key
        self.clock = clock
        self.throttle = throttle or TokenThrottle()
        self.state = ChainState()
        self.intervals = IntervalClock(genesis, clock)
        store.bind_chain(self.chain)
        self.follower = DsoLedgerIndex(client, store, genesis, self.state.on_transaction)
        self.operators = Operators(store, self.throttle)
        self.regulation = Regulation(
            store, client, self.chain, dso_key, self.state, self.follower, self.intervals
        )
        self.billing = Bills(
            store, client, genesis, self.chain, self.state, self.follower, self.intervals
        )
        self.grid = GridController(
            store, self.state, self.regulation, self.follower, self.intervals, book
        )
        # The ledger's head, asked by a client of its own: a probe or scrape reads what it heard.
        self.ledger_watch = HeadWatch.of_node(client.base_url)
        self.registry = new_registry()
        self.metrics = DsoMetrics(
            self.registry, store, self.follower, self.state, self.intervals, self.ledger_watch
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def client(self) -> LedgerClient:
        """The ledger client regulations are submitted and bills checked through (the
        follower keeps the one it was made with)."""
        return self._client

    @client.setter
    def client(self, client: LedgerClient) -> None:
        self._client = self.regulation.client = self.billing.client = client

    @property
    def schedule(self) -> RegulationSchedule:
        """The regulation schedule as the follower indexed it (guarded by `state.lock`)."""
        return self.state.schedule

    @property
    def book(self) -> BookSource | None:
        """The bid store's book the forecast reads, or None."""
        return self.grid.book

    @book.setter
    def book(self, book: BookSource | None) -> None:
        self.grid.book = book

    # ------------------------------------------------------------- life cycle

    def start(self) -> None:
        """Load the index, follow the ledger, and retry what is pending, in the background."""
        self.follower.replay_index()
        self.follower.start()
        self.ledger_watch.start()
        loops = (("dso-retry", self._retry_loop), ("dso-controller", self._controller_loop))
        for name, loop in loops:
            thread = threading.Thread(target=loop, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        self.follower.stop()
        self.ledger_watch.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        self.throttle.close()

    def _retry_loop(self) -> None:
        while not self._stop.wait(RESUBMIT_S):
            self.throttle.flush()
            try:
                self.regulation.resubmit_pending()
                self.billing.reconcile_pending()
            except Exception:
                log.exception("retrying pending regulations and bills failed")

    def _controller_loop(self) -> None:
        self.grid.run(self._stop)

    # ------------------------------------------------------------- readiness

    def checks(self) -> dict[str, Check]:
        """The readiness checks: the store answers, the ledger answers and the index is caught
        up with it. Each reads what the node already knows: no call to the ledger."""
        return {"store": self._store_problem, "ledger": self._ledger_problem}

    def _store_problem(self) -> str | None:
        try:
            self.store.indexed_height()
        except SQLAlchemyError as exc:
            return f"the DSO's store does not answer: {type(exc).__name__}"
        return None

    def _ledger_problem(self) -> str | None:
        if self.follower.problem is not None:
            return f"the ledger index stopped: {self.follower.problem}"
        if self.follower.last_error is not None:
            return f"the ledger index cannot read the ledger: {self.follower.last_error}"
        return self.ledger_watch.problem(self.follower.height)

    # ------------------------------------------------------------- the node

    def now(self) -> int:
        """The interval the DSO's clock is in."""
        return self.intervals.now()

    def interval_start(self, interval: int) -> datetime:
        return self.intervals.interval_start(interval)

    def status(self) -> dict[str, Any]:
        return {
            "chain": self.chain.hex(),
            "interval": self.now(),
            "interval_s": self.genesis.interval_s,
            "epoch": self.genesis.epoch,
            "currency": self.genesis.currency,
            "closing_delay_s": CLOSING_DELAY_S,
            "dso_key": self._key.public_key.hex(),
            "indexed_height": self.follower.height,
            "follower_problem": self.follower.problem,
            "ledger_error": self.follower.last_error,
        }

    # ------------------------------------------------------------- operators and audit

    def authenticate(self, token: str | None, client: str = "local") -> Actor:
        return self.operators.authenticate(token, client)

    @staticmethod
    def require(actor: Actor, permission: Permission) -> None:
        Operators.require(actor, permission)

    def create_operator(self, actor: Actor, name: str, role: str) -> tuple[Operator, str]:
        return self.operators.create_operator(actor, name, role)

    def revoke_operator(self, actor: Actor, name: str) -> None:
        self.operators.revoke_operator(actor, name)

    def audit_entries(self, after: int, limit: int) -> list[dict[str, Any]]:
        return self.operators.audit_entries(after, limit)

    def verify_audit(self) -> dict[str, Any]:
        return self.operators.verify_audit()

    # ------------------------------------------------------------- regulation

    def authorize_meter(
        self,
        actor: Actor,
        meter: str,
        public_key: bytes,
        max_epa: int | None = None,
        max_eca: int | None = None,
        owner: str | None = None,
        time_: int | None = None,
    ) -> dict[str, Any]:
        return self.regulation.authorize_meter(
            actor, meter, public_key, max_epa, max_eca, owner, time_
        )

    def ban_meter(self, actor: Actor, meter: str, time_: int | None = None) -> dict[str, Any]:
        return self.regulation.ban_meter(actor, meter, time_)

    def set_tariff(
        self,
        actor: Actor,
        price_consumption: int | None,
        price_production: int | None,
        time_: int | None = None,
    ) -> dict[str, Any]:
        return self.regulation.set_tariff(actor, price_consumption, price_production, time_)

    def set_default_limits(
        self, actor: Actor, max_epa: int, max_eca: int, time_: int | None = None
    ) -> list[dict[str, Any]]:
        return self.regulation.set_default_limits(actor, max_epa, max_eca, time_)

    def default_limits_at(self, interval: int) -> tuple[int, int] | None:
        return self.regulation.default_limits_at(interval)

    def resubmit_pending(self) -> None:
        self.regulation.resubmit_pending()

    @staticmethod
    def regulation_to_wire(record: RegulationRecord) -> dict[str, Any]:
        return regulation_to_wire(record)

    def meters(self, interval: int | None = None) -> dict[str, Any]:
        return self.regulation.meters(interval)

    def meter(self, meter: str) -> dict[str, Any]:
        return self.regulation.meter(meter)

    def schedule_view(self, first: int, last: int) -> dict[str, Any]:
        return self.regulation.schedule_view(first, last)

    def regulations(self, status: str | None = None) -> list[dict[str, Any]]:
        return self.regulation.regulations(status)

    # ------------------------------------------------------------- bills

    def intake_bill(self, raw: bytes) -> IntakeResult:
        """Take a meter's bill in, counting it (received or refused by code) for the metrics."""
        try:
            result = self.billing.intake_bill(raw)
        except DsoError as exc:
            self.metrics.refusal(exc.code)
            raise
        if result.created:
            self.metrics.received.inc()
        return result

    def reconcile_bill(self, the_id: bytes) -> StoredBill:
        return self.billing.reconcile_bill(the_id)

    def reconcile_pending(self) -> int:
        return self.billing.reconcile_pending()

    def reconcile_all(self, actor: Actor, first: int, last: int) -> dict[str, int]:
        return self.billing.reconcile_all(actor, first, last)

    @staticmethod
    def bill_to_wire(stored: StoredBill) -> dict[str, Any]:
        return bill_to_wire(stored)

    def bills(
        self,
        first: int,
        last: int,
        meter: str | None = None,
        owner: str | None = None,
        status: str | None = None,
    ) -> list[StoredBill]:
        return self.billing.bills(first, last, meter, owner, status)

    def bill(self, the_id: bytes) -> StoredBill:
        return self.billing.bill(the_id)

    def statement(self, owner: str, first: int, last: int) -> dict[str, Any]:
        return self.billing.statement(owner, first, last)

    def bills_csv(self, found: Sequence[StoredBill]) -> str:
        return self.billing.bills_csv(found)

    # ------------------------------------------------------------- the grid controller

    def forecast(self, first: int, last: int) -> tuple[list[controller.IntervalForecast], str]:
        return self.grid.forecast(first, last)

    def policy(self) -> controller.PricePolicy | None:
        return self.grid.policy()

    def controller_settings(self) -> dict[str, Any]:
        return self.grid.settings()

    def set_controller(
        self, actor: Actor, policy: dict[str, Any] | None, auto: bool | None
    ) -> dict[str, Any]:
        return self.grid.set_controller(actor, policy, auto)

    def propose(self, actor: Actor) -> Proposal:
        return self.grid.propose(actor)

    def accept(self, actor: Actor, proposal_id: int) -> dict[str, Any]:
        return self.grid.accept(actor, proposal_id)
